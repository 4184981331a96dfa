//! The machine policy: settings IT fixes for every user of a workstation.
//!
//! A TOML file at a fixed, admin-only place ([`machine_policy_path`]):
//!
//! ```toml
//! [lock]
//! idle_minutes = 5            # lock the app after this long without input
//! unlock = "passphrase"       # what unlocking asks for
//!
//! [history]
//! retention_days = 90         # records older than this are deleted
//! allow_export = false        # unencrypted CSV/JSON exports
//! allow_backup = true         # encrypted backups
//!
//! [input]
//! max_text_chars = 20000      # longest text classified (at most 100000)
//!
//! [packs]
//! allowed_signers = ["ed25519:…"]   # only packs signed by these install
//!
//! [logs]
//! keep_days = 14
//! max_file_mb = 10
//!
//! [api]
//! allow = false               # the loopback API of `medtext serve`
//! max_tokens_per_request = 50000   # most tokens in one request's texts
//!
//! [recovery]
//! escrow_public_key = "age1…"  # IT's age X25519 key: the recovery key is
//!                              # escrowed to it, not shown (crate::history::escrow)
//! escrow_dir = "/var/lib/medtext/escrow"   # where (this is Linux's default)
//! ```
//!
//! Every key is optional; a key that is present is *managed*: the user sees
//! it and cannot change it. A file that does not parse, has an unknown key or
//! an out-of-range value stops MedText with the line named, because silently
//! ignoring a policy would leave a machine less protected than IT believes.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::history::escrow::EscrowPolicy;
use crate::machine::logging::LogSettings;
use crate::pack::signing::SignerKey;
use crate::text::validation::MAX_TEXT_CHARS;
use crate::{Error, Result};

/// The largest `[api] max_tokens_per_request`: what the most texts of the
/// longest length a request may send could hold (a token is at least one
/// character).
pub const MAX_API_TOKENS_PER_REQUEST: usize =
    crate::inference::batch::MAX_TEXTS_PER_CALL * MAX_TEXT_CHARS;

/// Names another policy file, in debug builds only: tests need one, and a
/// released MedText must not let a user point it at a file of their own.
pub const POLICY_FILE_ENV: &str = "MEDTEXT_POLICY_FILE";

/// What unlocking the app after an idle lock asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnlockMethod {
    /// The app passphrase the user set (kept as an Argon2id hash).
    Passphrase,
    /// The signed-in OS account's password (see [`crate::machine::os_auth`]).
    Os,
}

/// The policy in force. `None` everywhere means "not managed".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// The file it came from, if any.
    pub source: Option<PathBuf>,
    pub idle_lock_minutes: Option<u32>,
    pub unlock: Option<UnlockMethod>,
    pub retention_days: Option<u32>,
    pub allow_export: Option<bool>,
    pub allow_backup: Option<bool>,
    pub max_text_chars: Option<usize>,
    pub allowed_pack_signers: Option<Vec<SignerKey>>,
    pub log_keep_days: Option<u32>,
    pub log_max_file_mb: Option<u32>,
    pub allow_local_api: Option<bool>,
    /// Most tokens the texts of one local API request may hold (all texts
    /// together, as tokenized for the pack in use): the inference worker
    /// shares its time between requests, but each request still costs its
    /// tokens, and IT may want a single program's calls kept short.
    pub api_max_tokens_per_request: Option<usize>,
    /// IT's key to escrow each history's recovery key to (see
    /// [`crate::history::escrow`]), and where the escrow files go.
    pub recovery_escrow: Option<EscrowPolicy>,
}

/// What a policy key holds: what the admin guide states and the parser checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// A whole number from `min` to `max`, both included.
    Integer { min: u64, max: u64 },
    /// `true` or `false`.
    Boolean,
    /// One of these strings.
    OneOf(&'static [&'static str]),
    /// A list of at least one pack signer key (`ed25519:` and 64 hex digits).
    SignerKeys,
    /// A string of the form described.
    Text(&'static str),
}

/// One key of the policy file, described once: the parser takes its range
/// from here, the managed-settings list its name, and the admin guide's
/// policy table (`docs/admin-guide.md`) is tested against [`KEYS`], so the
/// guide cannot drift from what MedText accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyDoc {
    /// `section.key`, as the settings screen and `medtext doctor` show it.
    pub name: &'static str,
    pub kind: KeyKind,
    /// What applies while the key is absent (the setting is then the user's).
    pub default: &'static str,
    /// A value the parser accepts, written as TOML.
    pub example: &'static str,
    /// What the key does once IT sets it.
    pub effect: &'static str,
}

impl KeyDoc {
    /// The `[section]` the key sits in.
    pub fn section(&self) -> &'static str {
        self.name.split_once('.').map_or("", |(section, _)| section)
    }

    /// The key's name inside its section.
    pub fn key(&self) -> &'static str {
        self.name.split_once('.').map_or(self.name, |(_, key)| key)
    }
}

pub const IDLE_MINUTES: KeyDoc = KeyDoc {
    name: "lock.idle_minutes",
    kind: KeyKind::Integer { min: 1, max: 1440 },
    default: "each user chooses (off until they turn it on)",
    example: "5",
    effect: "locks the app after this many minutes without input; users cannot change it or turn it off. With `unlock = \"passphrase\"` a user who has no passphrase yet is asked to choose one",
};
pub const UNLOCK: KeyDoc = KeyDoc {
    name: "lock.unlock",
    kind: KeyKind::OneOf(&["passphrase", "os"]),
    default: "`\"passphrase\"`",
    example: "\"os\"",
    effect: "what unlocking asks for: the app's own unlock passphrase, or the signed-in account's password (`\"os\"`, through PAM service `medtext`; Linux only). Under `\"os\"` no app passphrase can be set, and the app starts locked",
};
pub const RETENTION_DAYS: KeyDoc = KeyDoc {
    name: "history.retention_days",
    kind: KeyKind::Integer { min: 1, max: 36_500 },
    default: "each user chooses (records kept until deleted)",
    example: "90",
    effect: "records older than this are deleted (overwritten) when the app starts and every hour while it runs; users cannot change the period",
};
pub const ALLOW_EXPORT: KeyDoc = KeyDoc {
    name: "history.allow_export",
    kind: KeyKind::Boolean,
    default: "`true`",
    example: "false",
    effect: "`false` refuses unencrypted CSV/JSON exports of the history, in the app and with `medtext history export`",
};
pub const ALLOW_BACKUP: KeyDoc = KeyDoc {
    name: "history.allow_backup",
    kind: KeyKind::Boolean,
    default: "`true`",
    example: "true",
    effect: "`false` refuses `medtext backup` and `medtext restore`",
};
pub const MAX_TEXT_CHARS_KEY: KeyDoc = KeyDoc {
    name: "input.max_text_chars",
    kind: KeyKind::Integer {
        min: 1,
        max: MAX_TEXT_CHARS as u64,
    },
    default: "`100000`",
    example: "20000",
    effect: "the longest text classified, in characters; a longer one is refused with a message saying so (app, CLI, batch and local API)",
};
pub const ALLOWED_SIGNERS: KeyDoc = KeyDoc {
    name: "packs.allowed_signers",
    kind: KeyKind::SignerKeys,
    default: "any pack installs; a signature that comes with one is still checked",
    // A key whose secret was thrown away: copied into a real policy, it
    // admits no pack at all rather than one someone could sign.
    example: "[\"ed25519:001bb0aa1bd398ac5f31acf7518514ee7ca00ea2d48d4076e6f8d621f1382ce4\"]",
    effect: "only pack archives signed by one of these keys (`medtext pack keygen` prints them) can be imported",
};
pub const LOG_KEEP_DAYS: KeyDoc = KeyDoc {
    name: "logs.keep_days",
    kind: KeyKind::Integer { min: 1, max: 3650 },
    default: "`30`",
    example: "14",
    effect: "log files older than this are deleted when MedText starts",
};
pub const LOG_MAX_FILE_MB: KeyDoc = KeyDoc {
    name: "logs.max_file_mb",
    kind: KeyKind::Integer { min: 1, max: 1024 },
    default: "`10`",
    example: "10",
    effect: "a log file is rotated at this size; at most 20 rotated files are kept per program",
};
pub const API_ALLOW: KeyDoc = KeyDoc {
    name: "api.allow",
    kind: KeyKind::Boolean,
    default: "`true`",
    example: "false",
    effect: "`false` stops `medtext serve` (the loopback API) before it opens the history",
};
pub const API_MAX_TOKENS: KeyDoc = KeyDoc {
    name: "api.max_tokens_per_request",
    kind: KeyKind::Integer {
        min: 1,
        max: MAX_API_TOKENS_PER_REQUEST as u64,
    },
    default: "no cap beyond the request limits (64 texts, 16 MB)",
    example: "50000",
    effect: "a local API request whose texts hold more tokens, all together, is refused with 413 before any inference",
};

pub const ESCROW_PUBLIC_KEY: KeyDoc = KeyDoc {
    name: "recovery.escrow_public_key",
    kind: KeyKind::Text("IT's age X25519 recipient, `\"age1…\"`"),
    default: "no escrow: the app shows each new recovery key once, for the user to give to IT",
    // A recipient whose identity was thrown away: nobody can open what is
    // encrypted to it.
    example: "\"age13xc78h0m85642x69dr9t8la4u0yhrmk736y5gwfttchuu55d94mqc4q3qc\"",
    effect: "each history's recovery key is written, encrypted to this key, to `<escrow_dir>/<host>-<user>-<history id>.age`, and the recovery-key dialog is not shown; a failed write shows the dialog and is tried again at every start. A secret key (`AGE-SECRET-KEY-…`) here is refused without being echoed",
};
pub const ESCROW_DIR: KeyDoc = KeyDoc {
    name: "recovery.escrow_dir",
    kind: KeyKind::Text("an absolute folder path, only with `escrow_public_key`"),
    default: "`/var/lib/medtext/escrow` (Linux), `%ProgramData%\\MedText\\escrow` (Windows), `/Library/Application Support/MedText/escrow` (macOS)",
    example: "\"/var/lib/medtext/escrow\"",
    effect: "where escrowed recovery keys are written; MedText never creates it. Every user must be able to create files there and none to read the others' (the package makes the Linux default `root:root`, mode 1733)",
};

/// Every key the policy file accepts, in the order of the file and of
/// [`Policy::managed`].
pub const KEYS: &[KeyDoc] = &[
    IDLE_MINUTES,
    UNLOCK,
    RETENTION_DAYS,
    ALLOW_EXPORT,
    ALLOW_BACKUP,
    MAX_TEXT_CHARS_KEY,
    ALLOWED_SIGNERS,
    LOG_KEEP_DAYS,
    LOG_MAX_FILE_MB,
    API_ALLOW,
    API_MAX_TOKENS,
    ESCROW_PUBLIC_KEY,
    ESCROW_DIR,
];

/// One managed setting, for the settings screen and `medtext doctor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ManagedSetting {
    pub key: &'static str,
    pub value: String,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    lock: LockSection,
    #[serde(default)]
    history: HistorySection,
    #[serde(default)]
    input: InputSection,
    #[serde(default)]
    packs: PacksSection,
    #[serde(default)]
    logs: LogsSection,
    #[serde(default)]
    api: ApiSection,
    #[serde(default)]
    recovery: RecoverySection,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LockSection {
    idle_minutes: Option<Spanned<u32>>,
    unlock: Option<UnlockMethod>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistorySection {
    retention_days: Option<Spanned<u32>>,
    allow_export: Option<bool>,
    allow_backup: Option<bool>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputSection {
    max_text_chars: Option<Spanned<usize>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PacksSection {
    allowed_signers: Option<Vec<Spanned<String>>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogsSection {
    keep_days: Option<Spanned<u32>>,
    max_file_mb: Option<Spanned<u32>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiSection {
    allow: Option<bool>,
    max_tokens_per_request: Option<Spanned<usize>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecoverySection {
    escrow_public_key: Option<Spanned<String>>,
    escrow_dir: Option<Spanned<String>>,
}

/// The policy file a test named with [`POLICY_FILE_ENV`] (debug builds only).
fn test_policy_file() -> Option<PathBuf> {
    if !cfg!(debug_assertions) {
        return None;
    }
    std::env::var_os(POLICY_FILE_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Where IT puts the policy on this OS.
pub fn machine_policy_path() -> PathBuf {
    if let Some(path) = test_policy_file() {
        return path;
    }
    machine_path("/etc/medtext/policy.toml", "policy.toml")
}

/// `name` in MedText's machine-wide folder, IT's and not the user's:
/// `%ProgramData%\MedText` on Windows, `/Library/Application Support/MedText`
/// on macOS. Linux spreads them as its file system layout wants: `linux`.
pub(crate) fn machine_path(linux: &str, name: &str) -> PathBuf {
    if cfg!(windows) {
        let base = std::env::var_os("ProgramData").unwrap_or_else(|| r"C:\ProgramData".into());
        PathBuf::from(base).join("MedText").join(name)
    } else if cfg!(target_os = "macos") {
        PathBuf::from("/Library/Application Support/MedText").join(name)
    } else {
        PathBuf::from(linux)
    }
}

/// The most read of a policy file: a page of settings is a few hundred bytes.
const POLICY_LIMIT: crate::user_files::Limit = crate::user_files::Limit {
    bytes: 1 << 20,
    what: "a machine policy",
    advice: "IT should give it only the settings it fixes; MedText does not start until then",
};

impl Policy {
    /// The machine policy, or the empty policy when there is no file.
    pub fn load() -> Result<Self> {
        let path = machine_policy_path();
        match std::fs::File::open(&path) {
            Ok(file) => {
                let bytes = POLICY_LIMIT.read(file, &path)?;
                check_not_user_writable(&path)?;
                // A test's own file (debug builds only) belongs to whoever runs
                // the tests; the real one must not belong to the user.
                if test_policy_file().is_none() {
                    check_owner(&path)?;
                }
                let text = String::from_utf8(bytes).map_err(|e| Error::Policy {
                    path: path.clone(),
                    line: line_of(
                        &String::from_utf8_lossy(e.as_bytes()),
                        e.utf8_error().valid_up_to(),
                    ),
                    problem: "the file is not UTF-8 text".into(),
                })?;
                Self::parse(&text, &path)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Parses and checks policy `text` read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let at = |offset: usize, problem: String| Error::Policy {
            path: path.to_path_buf(),
            line: line_of(text, offset),
            problem,
        };
        let file: PolicyFile = toml::from_str(text).map_err(|e| {
            let offset = e.span().map(|s| s.start).unwrap_or(0);
            at(offset, e.message().trim().to_string())
        })?;
        let max_text_chars = within(&file.input.max_text_chars, &MAX_TEXT_CHARS_KEY, &at)?;
        let api_max_tokens_per_request =
            within(&file.api.max_tokens_per_request, &API_MAX_TOKENS, &at)?;
        let allowed_pack_signers = match &file.packs.allowed_signers {
            Some(list) if list.is_empty() => {
                return Err(at(
                    0,
                    "packs.allowed_signers is empty: list at least one key, or remove it to allow unsigned packs".into(),
                ))
            }
            Some(list) => Some(
                list.iter()
                    .map(|key| {
                        SignerKey::parse(key.get_ref()).map_err(|problem| {
                            at(key.span().start, format!("packs.allowed_signers: {problem}"))
                        })
                    })
                    .collect::<Result<Vec<_>>>()?,
            ),
            None => None,
        };
        let recovery_escrow = escrow_policy(&file.recovery, &at)?;
        Ok(Self {
            source: Some(path.to_path_buf()),
            idle_lock_minutes: within(&file.lock.idle_minutes, &IDLE_MINUTES, &at)?,
            unlock: file.lock.unlock,
            retention_days: within(&file.history.retention_days, &RETENTION_DAYS, &at)?,
            allow_export: file.history.allow_export,
            allow_backup: file.history.allow_backup,
            max_text_chars,
            allowed_pack_signers,
            log_keep_days: within(&file.logs.keep_days, &LOG_KEEP_DAYS, &at)?,
            log_max_file_mb: within(&file.logs.max_file_mb, &LOG_MAX_FILE_MB, &at)?,
            allow_local_api: file.api.allow,
            api_max_tokens_per_request,
            recovery_escrow,
        })
    }

    /// The longest text this machine classifies.
    pub fn max_text_chars(&self) -> usize {
        self.max_text_chars.unwrap_or(MAX_TEXT_CHARS)
    }

    /// How unlocking works here: the policy's method, else the passphrase.
    pub fn unlock_method(&self) -> UnlockMethod {
        self.unlock.unwrap_or(UnlockMethod::Passphrase)
    }

    /// Checks `text` against the machine's limit (and the core's own checks).
    pub fn check_text(&self, text: &str) -> Result<()> {
        crate::text::validation::validate_within(text, self.max_text_chars())
    }

    /// Refuses unencrypted exports when IT turned them off.
    pub fn check_export(&self) -> Result<()> {
        self.check_allowed(
            self.allow_export,
            "exporting the history as an unencrypted file",
        )
    }

    /// Refuses backups when IT turned them off.
    pub fn check_backup(&self) -> Result<()> {
        self.check_allowed(self.allow_backup, "making or restoring a backup")
    }

    /// Refuses to start the local API (`medtext serve`) when IT turned it off.
    pub fn check_local_api(&self) -> Result<()> {
        self.check_allowed(
            self.allow_local_api,
            "serving the local API (`medtext serve`)",
        )
    }

    /// Refuses to change a setting IT fixed.
    pub fn check_unmanaged(&self, managed: bool, what: &str) -> Result<()> {
        self.check_allowed(Some(!managed), &format!("changing {what}"))
    }

    fn check_allowed(&self, allowed: Option<bool>, what: &str) -> Result<()> {
        match allowed {
            Some(false) => Err(Error::ManagedByPolicy {
                what: what.to_string(),
                path: self.source.clone().unwrap_or_else(machine_policy_path),
            }),
            _ => Ok(()),
        }
    }

    pub fn log_settings(&self) -> LogSettings {
        let default = LogSettings::default();
        LogSettings {
            keep_days: self.log_keep_days.unwrap_or(default.keep_days),
            max_file_bytes: self
                .log_max_file_mb
                .map(|mb| u64::from(mb) << 20)
                .unwrap_or(default.max_file_bytes),
        }
    }

    /// Every managed setting with its value, in the file's order.
    pub fn managed(&self) -> Vec<ManagedSetting> {
        let number = |v: Option<u32>| v.map(|v| v.to_string());
        let flag = |v: Option<bool>| v.map(|v| v.to_string());
        let unlock = self.unlock.map(|m| {
            match m {
                UnlockMethod::Passphrase => "passphrase",
                UnlockMethod::Os => "os",
            }
            .to_string()
        });
        let escrow = self.recovery_escrow.as_ref();
        let escrow_dir = escrow.and_then(|e| e.dir.as_ref().map(|d| d.display().to_string()));
        let signers = self.allowed_pack_signers.as_ref().map(|keys| {
            keys.iter()
                .map(SignerKey::to_text)
                .collect::<Vec<_>>()
                .join(", ")
        });
        [
            (IDLE_MINUTES, number(self.idle_lock_minutes)),
            (UNLOCK, unlock),
            (RETENTION_DAYS, number(self.retention_days)),
            (ALLOW_EXPORT, flag(self.allow_export)),
            (ALLOW_BACKUP, flag(self.allow_backup)),
            (
                MAX_TEXT_CHARS_KEY,
                self.max_text_chars.map(|v| v.to_string()),
            ),
            (ALLOWED_SIGNERS, signers),
            (LOG_KEEP_DAYS, number(self.log_keep_days)),
            (LOG_MAX_FILE_MB, number(self.log_max_file_mb)),
            (API_ALLOW, flag(self.allow_local_api)),
            (
                API_MAX_TOKENS,
                self.api_max_tokens_per_request.map(|v| v.to_string()),
            ),
            (ESCROW_PUBLIC_KEY, escrow.map(|e| e.key.to_string())),
            (ESCROW_DIR, escrow_dir),
        ]
        .into_iter()
        .filter_map(|(key, value)| {
            value.map(|value| ManagedSetting {
                key: key.name,
                value,
            })
        })
        .collect()
    }
}

/// The value of an optional integer key, refused on its line when outside
/// the range its [`KeyDoc`] gives.
fn within<T: Copy + std::fmt::Display>(
    value: &Option<Spanned<T>>,
    key: &KeyDoc,
    at: &impl Fn(usize, String) -> Error,
) -> Result<Option<T>>
where
    u64: TryFrom<T>,
{
    let KeyKind::Integer { min, max } = key.kind else {
        return Ok(value.as_ref().map(|v| *v.get_ref()));
    };
    match value {
        Some(v) if !u64::try_from(*v.get_ref()).is_ok_and(|n| (min..=max).contains(&n)) => Err(at(
            v.span().start,
            format!("{} must be between {min} and {max}", key.name),
        )),
        Some(v) => Ok(Some(*v.get_ref())),
        None => Ok(None),
    }
}

/// The `[recovery]` section: IT's escrow key, checked, and an absolute
/// folder if it names one.
fn escrow_policy(
    section: &RecoverySection,
    at: &impl Fn(usize, String) -> Error,
) -> Result<Option<EscrowPolicy>> {
    let Some(key) = &section.escrow_public_key else {
        return match &section.escrow_dir {
            Some(dir) => Err(at(
                dir.span().start,
                "recovery.escrow_dir is set without recovery.escrow_public_key: add IT's public key (age1…), or remove escrow_dir".into(),
            )),
            None => Ok(None),
        };
    };
    let parsed = EscrowPolicy::parse_key(key.get_ref()).map_err(|problem| {
        at(
            key.span().start,
            format!("recovery.escrow_public_key {problem}"),
        )
    })?;
    let dir =
        match &section.escrow_dir {
            Some(dir) if !Path::new(dir.get_ref()).is_absolute() => return Err(at(
                dir.span().start,
                "recovery.escrow_dir must be an absolute path (such as /var/lib/medtext/escrow)"
                    .into(),
            )),
            Some(dir) => Some(PathBuf::from(dir.get_ref())),
            None => None,
        };
    Ok(Some(EscrowPolicy { key: parsed, dir }))
}

/// A policy anyone can edit is no policy: refuse one that users other than
/// its owner may write.
fn check_not_user_writable(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| Error::io(path, e))?
            .permissions()
            .mode();
        if mode & 0o022 != 0 {
            return Err(Error::Policy {
                path: path.to_path_buf(),
                line: 1,
                problem: format!(
                    "the file can be changed by other users (mode {:o}); make it writable by its owner only",
                    mode & 0o777
                ),
            });
        }
    }
    let _ = path;
    Ok(())
}

/// Refuses a policy file that the account running MedText owns, or whose
/// folder it owns or everyone may write: that user could then change or
/// replace what IT decided. (Root may change anything anyway.)
fn check_owner(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let folder = path.parent().unwrap_or(Path::new("/"));
        let file = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        let dir = std::fs::metadata(folder).map_err(|e| Error::io(folder, e))?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let user = unsafe { libc::geteuid() };
        if let Some(problem) = ownership_problem(file.uid(), dir.uid(), dir.mode(), user) {
            return Err(Error::Policy {
                path: path.to_path_buf(),
                line: 1,
                problem,
            });
        }
    }
    let _ = path;
    Ok(())
}

/// What is wrong with who owns the policy file and its folder, for `user`.
#[cfg_attr(not(unix), allow(dead_code))]
fn ownership_problem(file_uid: u32, dir_uid: u32, dir_mode: u32, user: u32) -> Option<String> {
    const FIX: &str =
        "make root (or another administrator account) the owner of the file and its folder";
    if user == 0 {
        return None;
    }
    if file_uid == user {
        return Some(format!(
            "the file belongs to the account running MedText, which could change it; {FIX}"
        ));
    }
    if dir_uid == user {
        return Some(format!(
            "its folder belongs to the account running MedText, which could replace the file; {FIX}"
        ));
    }
    let everyone_writes = dir_mode & 0o002 != 0 && dir_mode & 0o1000 == 0;
    if everyone_writes {
        return Some(format!(
            "every user can write in its folder and so replace the file; {FIX}"
        ));
    }
    None
}

fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Policy> {
        Policy::parse(text, Path::new("/etc/medtext/policy.toml"))
    }

    fn line_and_problem(text: &str) -> (usize, String) {
        match parse(text) {
            Err(Error::Policy { line, problem, .. }) => (line, problem),
            other => panic!("expected a policy error, got {other:?}"),
        }
    }

    #[test]
    fn an_empty_file_manages_nothing() {
        let policy = parse("# nothing yet\n").unwrap();
        assert!(policy.managed().is_empty());
        assert_eq!(policy.max_text_chars(), MAX_TEXT_CHARS);
        assert!(policy.check_export().is_ok());
        assert_eq!(policy.log_settings(), LogSettings::default());
    }

    #[test]
    fn every_setting_is_read_and_listed_as_managed() {
        let key =
            crate::pack::signing::generate_key(&tempfile::tempdir().unwrap().path().join("k"))
                .unwrap();
        let escrow = age::x25519::Identity::generate().to_public();
        let text = format!(
            "[lock]\nidle_minutes = 5\nunlock = \"passphrase\"\n[history]\nretention_days = 90\n\
             allow_export = false\nallow_backup = true\n[input]\nmax_text_chars = 2000\n\
             [packs]\nallowed_signers = [\"{}\"]\n[logs]\nkeep_days = 7\nmax_file_mb = 2\n[api]\nallow = false\n\
             max_tokens_per_request = 5000\n[recovery]\nescrow_public_key = \"{escrow}\"\n\
             escrow_dir = \"/srv/escrow\"\n",
            key.to_text()
        );
        let policy = parse(&text).unwrap();
        assert_eq!(policy.idle_lock_minutes, Some(5));
        assert_eq!(policy.unlock, Some(UnlockMethod::Passphrase));
        assert_eq!(policy.retention_days, Some(90));
        assert_eq!(policy.allowed_pack_signers, Some(vec![key]));
        assert_eq!(policy.max_text_chars(), 2000);
        assert_eq!(
            policy.log_settings(),
            LogSettings {
                keep_days: 7,
                max_file_bytes: 2 << 20
            }
        );
        assert_eq!(policy.api_max_tokens_per_request, Some(5000));
        assert_eq!(
            policy.recovery_escrow,
            Some(EscrowPolicy {
                key: escrow.clone(),
                dir: Some(PathBuf::from("/srv/escrow"))
            })
        );
        assert_eq!(policy.managed().len(), 13);
        let api = policy.check_local_api().unwrap_err().to_string();
        assert!(
            api.contains("medtext serve") && api.contains("policy.toml"),
            "{api}"
        );
        assert!(parse("").unwrap().check_local_api().is_ok());
        let os = parse("[lock]\nunlock = \"os\"\n").unwrap();
        assert_eq!(os.unlock_method(), UnlockMethod::Os);
        assert_eq!(parse("").unwrap().unlock_method(), UnlockMethod::Passphrase);
        let export = policy.check_export().unwrap_err().to_string();
        assert!(
            export.contains("not allowed") && export.contains("policy.toml"),
            "{export}"
        );
        assert!(policy.check_backup().is_ok());
        assert!(policy.check_text(&"a".repeat(2001)).is_err());
        assert!(policy.check_text(&"a".repeat(2000)).is_ok());
    }

    #[test]
    fn mistakes_are_reported_on_their_line() {
        let (line, problem) = line_and_problem("[lock]\nidle_minutes = 5\nidle_minuts = 3\n");
        assert_eq!(line, 3);
        assert!(problem.contains("idle_minuts"), "{problem}");

        let (line, problem) = line_and_problem("[history]\n\nretention_days = 0\n");
        assert_eq!(line, 3);
        assert!(problem.contains("between 1 and"), "{problem}");

        let (line, _) = line_and_problem("[lock]\nidle_minutes = \"five\"\n");
        assert_eq!(line, 2);

        let (line, problem) = line_and_problem(
            "[input]\nmax_text_chars = 100\n[packs]\nallowed_signers = [\"ed25519:00\"]\n",
        );
        assert_eq!(line, 4);
        assert!(problem.contains("64 hex"), "{problem}");

        let (line, _) = line_and_problem("[lock\nidle_minutes = 5\n");
        assert_eq!(line, 1);

        let (line, problem) = line_and_problem("[lock]\nunlock = \"fingerprint\"\n");
        assert_eq!(line, 2);
        assert!(
            problem.contains("fingerprint") || problem.contains("variant"),
            "{problem}"
        );

        let (_, problem) = line_and_problem("[input]\nmax_text_chars = 100001\n");
        assert!(problem.contains("100000"), "{problem}");
    }

    /// The names the parser accepts where `text` has an unknown one: serde
    /// lists them in its message ("expected one of `a`, `b`").
    fn accepted_names(text: &str) -> Vec<String> {
        let (_, problem) = line_and_problem(text);
        let (_, expected) = problem
            .split_once("expected")
            .unwrap_or_else(|| panic!("no list of accepted names in {problem:?}"));
        let mut names: Vec<String> = expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect();
        names.sort();
        names
    }

    /// A policy that sets `key` (and what it needs: an escrow folder is
    /// only taken with an escrow key).
    fn with_key(key: &KeyDoc, value: &str) -> Result<Policy> {
        let needed = if key.name == ESCROW_DIR.name {
            format!(
                "{} = {}\n",
                ESCROW_PUBLIC_KEY.key(),
                ESCROW_PUBLIC_KEY.example
            )
        } else {
            String::new()
        };
        parse(&format!(
            "[{}]\n{needed}{} = {value}\n",
            key.section(),
            key.key()
        ))
    }

    #[test]
    fn the_key_table_lists_exactly_what_the_parser_accepts() {
        let mut sections: Vec<&str> = KEYS.iter().map(KeyDoc::section).collect();
        sections.dedup();
        let mut sorted = sections.clone();
        sorted.sort();
        assert_eq!(accepted_names("[no_such_section]\n"), sorted);
        for section in sections {
            let mut documented: Vec<&str> = KEYS
                .iter()
                .filter(|k| k.section() == section)
                .map(KeyDoc::key)
                .collect();
            documented.sort();
            assert_eq!(
                accepted_names(&format!("[{section}]\nno_such_key = 1\n")),
                documented,
                "[{section}]"
            );
        }
    }

    #[test]
    fn every_key_parses_its_example_and_is_listed_as_managed_in_the_table_order() {
        let mut text = String::new();
        let mut section = "";
        for key in KEYS {
            if key.section() != section {
                section = key.section();
                text.push_str(&format!("[{section}]\n"));
            }
            text.push_str(&format!("{} = {}\n", key.key(), key.example));
        }
        let policy = parse(&text).unwrap();
        let listed: Vec<&str> = policy.managed().iter().map(|m| m.key).collect();
        let table: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
        assert_eq!(listed, table);
    }

    #[test]
    fn every_key_accepts_its_kind_and_refuses_anything_else() {
        for key in KEYS {
            let ok = |value: &str| {
                assert!(
                    with_key(key, value).is_ok(),
                    "{} = {value} is refused",
                    key.name
                )
            };
            let refused = |value: &str| {
                assert!(
                    with_key(key, value).is_err(),
                    "{} = {value} is accepted",
                    key.name
                )
            };
            ok(key.example);
            match key.kind {
                KeyKind::Integer { min, max } => {
                    ok(&min.to_string());
                    ok(&max.to_string());
                    refused(&(max + 1).to_string());
                    if let Some(below) = min.checked_sub(1) {
                        refused(&below.to_string());
                    }
                    refused("\"5\"");
                }
                KeyKind::Boolean => {
                    ok("true");
                    ok("false");
                    refused("1");
                    refused("\"yes\"");
                }
                KeyKind::OneOf(values) => {
                    values.iter().for_each(|v| ok(&format!("\"{v}\"")));
                    refused("\"something-else\"");
                }
                KeyKind::Text(_) => refused("1"),
                KeyKind::SignerKeys => {
                    refused("[]");
                    refused("[\"ed25519:00\"]");
                    refused("\"ed25519:001bb0aa1bd398ac5f31acf7518514ee7ca00ea2d48d4076e6f8d621f1382ce4\"");
                }
            }
        }
    }

    #[test]
    fn the_documented_defaults_are_what_applies_without_a_policy() {
        let none = Policy::default();
        let shows = |key: &KeyDoc, value: String| {
            assert!(
                key.default.contains(&value),
                "{}: {:?} does not say {value}",
                key.name,
                key.default
            )
        };
        shows(&MAX_TEXT_CHARS_KEY, none.max_text_chars().to_string());
        assert_eq!(none.unlock_method(), UnlockMethod::Passphrase);
        shows(&UNLOCK, "\"passphrase\"".into());
        let logs = none.log_settings();
        shows(&LOG_KEEP_DAYS, logs.keep_days.to_string());
        shows(&LOG_MAX_FILE_MB, (logs.max_file_bytes >> 20).to_string());
        for (key, allowed) in [
            (ALLOW_EXPORT, none.check_export()),
            (ALLOW_BACKUP, none.check_backup()),
            (API_ALLOW, none.check_local_api()),
        ] {
            assert!(allowed.is_ok(), "{}", key.name);
            shows(&key, "true".into());
        }
    }

    #[test]
    fn the_api_token_cap_is_read_within_its_range() {
        let policy = parse("[api]\nmax_tokens_per_request = 5000\n").unwrap();
        let managed = policy.managed();
        assert_eq!(
            managed
                .iter()
                .find(|m| m.key == "api.max_tokens_per_request")
                .map(|m| m.value.as_str()),
            Some("5000")
        );
        assert!(parse("").unwrap().managed().is_empty());
        let (line, problem) = line_and_problem("[api]\nallow = true\nmax_tokens_per_request = 0\n");
        assert_eq!(line, 3);
        assert!(problem.contains("between 1 and"), "{problem}");
    }

    #[test]
    fn the_escrow_key_and_folder_are_checked_on_their_lines() {
        let key = age::x25519::Identity::generate();
        let public = key.to_public().to_string();
        let policy = parse(&format!("[recovery]\nescrow_public_key = \"{public}\"\n")).unwrap();
        let escrow = policy.recovery_escrow.as_ref().unwrap();
        assert_eq!(escrow.dir(), crate::history::escrow::default_dir());
        assert_eq!(
            crate::history::escrow::default_dir(),
            PathBuf::from("/var/lib/medtext/escrow")
        );
        let managed = policy.managed();
        assert_eq!(managed.len(), 1);
        assert_eq!(managed[0].key, "recovery.escrow_public_key");
        assert_eq!(managed[0].value, public);
        assert_eq!(parse("").unwrap().recovery_escrow, None);

        let (line, problem) = line_and_problem(
            "[lock]\nidle_minutes = 5\n[recovery]\nescrow_public_key = \"age1xyz\"\n",
        );
        assert_eq!(line, 4);
        assert!(
            problem.contains("not an age X25519 public key"),
            "{problem}"
        );

        use age::secrecy::ExposeSecret;
        let secret = key.to_string().expose_secret().to_string();
        let (line, problem) =
            line_and_problem(&format!("[recovery]\n\nescrow_public_key = \"{secret}\"\n"));
        assert_eq!(line, 3);
        assert!(
            problem.contains("secret key") && !problem.contains(&secret),
            "{problem}"
        );

        let (line, problem) = line_and_problem(&format!(
            "[recovery]\nescrow_public_key = \"{public}\"\nescrow_dir = \"escrow\"\n"
        ));
        assert_eq!(line, 3);
        assert!(problem.contains("absolute"), "{problem}");

        let (line, problem) = line_and_problem("[recovery]\nescrow_dir = \"/srv/escrow\"\n");
        assert_eq!(line, 2);
        assert!(
            problem.contains("without recovery.escrow_public_key"),
            "{problem}"
        );

        let (line, problem) = line_and_problem("[recovery]\nescrow_key = \"age1\"\n");
        assert_eq!(line, 2);
        assert!(problem.contains("escrow_key"), "{problem}");
    }

    #[test]
    fn a_policy_the_user_owns_or_can_replace_is_refused() {
        // uid 1000 runs MedText; root (0) or an admin (500) owns the file.
        assert_eq!(ownership_problem(0, 0, 0o755, 1000), None);
        assert_eq!(ownership_problem(500, 0, 0o755, 1000), None);
        // Sticky, like /tmp: others cannot replace a file they do not own.
        assert_eq!(ownership_problem(0, 0, 0o1777, 1000), None);
        let own_file = ownership_problem(1000, 0, 0o755, 1000).unwrap();
        assert!(
            own_file.contains("file belongs") && own_file.contains("root"),
            "{own_file}"
        );
        let own_dir = ownership_problem(0, 1000, 0o755, 1000).unwrap();
        assert!(own_dir.contains("folder belongs"), "{own_dir}");
        let open_dir = ownership_problem(0, 0, 0o777, 1000).unwrap();
        assert!(open_dir.contains("every user"), "{open_dir}");
        // Root may change anything: nothing to refuse.
        assert_eq!(ownership_problem(0, 0, 0o777, 0), None);
    }

    #[test]
    fn a_policy_others_can_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.toml");
        std::fs::write(&path, "").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(check_not_user_writable(&path).is_err());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(check_not_user_writable(&path).is_ok());
    }
}
