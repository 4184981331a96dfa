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
//!                              # escrowed to it, not shown (crate::escrow)
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

use crate::escrow::EscrowPolicy;
use crate::logging::LogSettings;
use crate::signing::SignerKey;
use crate::text::MAX_TEXT_CHARS;
use crate::{Error, Result};

/// The largest `[api] max_tokens_per_request`: what the most texts of the
/// longest length a request may send could hold (a token is at least one
/// character).
pub const MAX_API_TOKENS_PER_REQUEST: usize = crate::batch::MAX_TEXTS_PER_CALL * MAX_TEXT_CHARS;

/// Names another policy file, in debug builds only: tests need one, and a
/// released MedText must not let a user point it at a file of their own.
pub const POLICY_FILE_ENV: &str = "MEDTEXT_POLICY_FILE";

/// What unlocking the app after an idle lock asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnlockMethod {
    /// The app passphrase the user set (kept as an Argon2id hash).
    Passphrase,
    /// The signed-in OS account's password (see [`crate::os_auth`]).
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
    /// [`crate::escrow`]), and where the escrow files go.
    pub recovery_escrow: Option<EscrowPolicy>,
}

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
        let ranged = |value: &Option<Spanned<u32>>, min: u32, max: u32, what: &str| {
            within(value, min, max, what, &at)
        };
        let max_text_chars = within(
            &file.input.max_text_chars,
            1,
            MAX_TEXT_CHARS,
            "input.max_text_chars",
            &at,
        )?;
        let api_max_tokens_per_request = within(
            &file.api.max_tokens_per_request,
            1,
            MAX_API_TOKENS_PER_REQUEST,
            "api.max_tokens_per_request",
            &at,
        )?;
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
            idle_lock_minutes: ranged(&file.lock.idle_minutes, 1, 1440, "lock.idle_minutes")?,
            unlock: file.lock.unlock,
            retention_days: ranged(
                &file.history.retention_days,
                1,
                36_500,
                "history.retention_days",
            )?,
            allow_export: file.history.allow_export,
            allow_backup: file.history.allow_backup,
            max_text_chars,
            allowed_pack_signers,
            log_keep_days: ranged(&file.logs.keep_days, 1, 3650, "logs.keep_days")?,
            log_max_file_mb: ranged(&file.logs.max_file_mb, 1, 1024, "logs.max_file_mb")?,
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
        crate::text::validate_within(text, self.max_text_chars())
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
        let mut out = Vec::new();
        let mut add = |key: &'static str, value: Option<String>| {
            if let Some(value) = value {
                out.push(ManagedSetting { key, value });
            }
        };
        add(
            "lock.idle_minutes",
            self.idle_lock_minutes.map(|v| v.to_string()),
        );
        add(
            "lock.unlock",
            self.unlock.map(|m| {
                match m {
                    UnlockMethod::Passphrase => "passphrase",
                    UnlockMethod::Os => "os",
                }
                .to_string()
            }),
        );
        add(
            "history.retention_days",
            self.retention_days.map(|v| v.to_string()),
        );
        add(
            "history.allow_export",
            self.allow_export.map(|v| v.to_string()),
        );
        add(
            "history.allow_backup",
            self.allow_backup.map(|v| v.to_string()),
        );
        add(
            "input.max_text_chars",
            self.max_text_chars.map(|v| v.to_string()),
        );
        add(
            "packs.allowed_signers",
            self.allowed_pack_signers.as_ref().map(|keys| {
                keys.iter()
                    .map(SignerKey::to_text)
                    .collect::<Vec<_>>()
                    .join(", ")
            }),
        );
        add("logs.keep_days", self.log_keep_days.map(|v| v.to_string()));
        add(
            "logs.max_file_mb",
            self.log_max_file_mb.map(|v| v.to_string()),
        );
        add("api.allow", self.allow_local_api.map(|v| v.to_string()));
        add(
            "api.max_tokens_per_request",
            self.api_max_tokens_per_request.map(|v| v.to_string()),
        );
        let escrow = self.recovery_escrow.as_ref();
        add(
            "recovery.escrow_public_key",
            escrow.map(|e| e.key.to_string()),
        );
        add(
            "recovery.escrow_dir",
            escrow.and_then(|e| e.dir.as_ref().map(|d| d.display().to_string())),
        );
        out
    }
}

/// The value of an optional key, refused on its line when outside `min..=max`.
fn within<T: PartialOrd + Copy + std::fmt::Display>(
    value: &Option<Spanned<T>>,
    min: T,
    max: T,
    what: &str,
    at: &impl Fn(usize, String) -> Error,
) -> Result<Option<T>> {
    match value {
        Some(v) if !(min..=max).contains(v.get_ref()) => Err(at(
            v.span().start,
            format!("{what} must be between {min} and {max}"),
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
            crate::signing::generate_key(&tempfile::tempdir().unwrap().path().join("k")).unwrap();
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
        assert_eq!(escrow.dir(), crate::escrow::default_dir());
        assert_eq!(
            crate::escrow::default_dir(),
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
