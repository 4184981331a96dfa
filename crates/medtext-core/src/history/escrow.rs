//! Escrow of the recovery key to IT.
//!
//! Showing each workstation's recovery key once and asking its clinician to
//! give it to IT loses keys, or leaves them on sticky notes, across hundreds
//! of workstations. When the machine policy names IT's age X25519 public key
//! (`[recovery] escrow_public_key`), the recovery key is instead encrypted to
//! that key and written to the escrow folder, where IT's tools collect it.
//! Only IT's identity, kept off the workstations, opens it: with
//! `medtext key escrow-open` or the standard `age -d`.
//!
//! The file, `<host>-<user>-<history id>.age`, is a binary age file with one
//! X25519 recipient, holding an [`EscrowRecord`] as JSON. It is written under
//! a name of its own, flushed and linked into place whole
//! ([`NewFile`]), owner-only, and it never replaces a file: in the shared
//! folder (Linux: root's, mode 1733) every user drops files that nobody else
//! can list or read, and a collector never picks up half a file.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::history::keychain::RecoveryKey;
use crate::text::validation::printable;
use crate::user_files::{Limit, NewFile};
use crate::{Error, Result};

/// The `format` of the record inside an escrow file.
pub const FORMAT: &str = "medtext-recovery-escrow/1";

/// The policy's `[recovery]` section: IT's key, and the folder if not the
/// default one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscrowPolicy {
    pub key: age::x25519::Recipient,
    pub dir: Option<PathBuf>,
}

impl EscrowPolicy {
    /// Reads IT's public key as the policy gives it. The refusal never
    /// repeats the value: it may be a secret key pasted by mistake.
    pub fn parse_key(text: &str) -> std::result::Result<age::x25519::Recipient, String> {
        let text = text.trim();
        if text.to_ascii_uppercase().starts_with("AGE-SECRET-KEY-") {
            return Err("holds a secret key (AGE-SECRET-KEY-1…), which must never be on a workstation: put IT's public key (age1…) here, and make IT a new identity, since this one is exposed".into());
        }
        age::x25519::Recipient::from_str(text).map_err(|e| {
            format!("is not an age X25519 public key (age1…, as `age-keygen -y IDENTITY_FILE` prints it): {e}")
        })
    }

    /// Where escrow files are written.
    pub fn dir(&self) -> PathBuf {
        self.dir.clone().unwrap_or_else(default_dir)
    }
}

/// The escrow folder when the policy names none: beside IT's other
/// machine-wide MedText files (on Linux, where packages keep state).
pub fn default_dir() -> PathBuf {
    crate::machine::policy::machine_path("/var/lib/medtext/escrow", "escrow")
}

/// What an escrow file holds: the recovery key and what it opens.
#[derive(Serialize, Deserialize)]
pub struct EscrowRecord {
    /// [`FORMAT`].
    pub format: String,
    /// As people type it ([`RecoveryKey::to_text`]).
    pub recovery_key: String,
    /// The history's random id (see [`crate::history::anchor`]) when the key was
    /// escrowed.
    pub history_id: String,
    /// The history database the key opens, on `host`.
    pub history: PathBuf,
    pub host: String,
    pub user: String,
    /// "YYYY-MM-DD HH:MM UTC".
    pub created: String,
    pub created_ms: i64,
    pub medtext_version: String,
}

impl EscrowRecord {
    /// The record of `key`, which opens `history` (id `history_id`), made
    /// now on this machine by this user.
    pub fn new(key: &RecoveryKey, history_id: &str, history: &Path) -> Self {
        let created_ms = crate::history::store::now_ms();
        Self {
            format: FORMAT.into(),
            recovery_key: key.to_text(),
            history_id: history_id.into(),
            history: history.to_path_buf(),
            host: host_name(),
            // The account from the user database where there is one (not
            // `$USER`, which anyone sets), else as the audit names it.
            user: crate::machine::os_auth::current_user()
                .unwrap_or_else(|_| crate::history::audit::os_user()),
            created: crate::history::store::utc_minute(created_ms),
            created_ms,
            medtext_version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

impl Drop for EscrowRecord {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.recovery_key);
    }
}

impl std::fmt::Debug for EscrowRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EscrowRecord")
            .field("recovery_key", &"<redacted>")
            .field("history_id", &self.history_id)
            .field("host", &self.host)
            .field("user", &self.user)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

/// Whether this history's recovery key is in IT's hands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum EscrowStatus {
    /// The policy names no escrow key: the key is shown to the user once.
    NotManaged,
    /// Escrowed to the policy's key, in `file` (IT may have collected it
    /// since).
    Written { file: PathBuf },
    /// The policy names a key but the file could not be written: the key
    /// was shown to the user instead, and every start tries again.
    NotWritten { reason: String },
}

/// What the history keeps to know that its recovery key was escrowed: to
/// which key, in which file, and which recovery key it was (a 64-bit digest:
/// enough to tell keys apart, nothing of a 256-bit random key). A history
/// restored from another machine's backup, or given a new recovery key,
/// then does not pass for escrowed.
#[derive(Serialize, Deserialize)]
pub(crate) struct Escrowed {
    recipient: String,
    key_check: String,
    pub file: PathBuf,
}

impl Escrowed {
    pub fn new(policy: &EscrowPolicy, key: &RecoveryKey, file: PathBuf) -> Self {
        Self {
            recipient: policy.key.to_string(),
            key_check: key_check(key),
            file,
        }
    }

    /// Whether this says `key` is escrowed to `policy`'s key.
    pub fn covers(&self, policy: &EscrowPolicy, key: &RecoveryKey) -> bool {
        self.recipient == policy.key.to_string() && self.key_check == key_check(key)
    }
}

fn key_check(key: &RecoveryKey) -> String {
    use sha2::{Digest, Sha256};
    let mut digest = Sha256::new();
    digest.update(b"medtext recovery key escrow check\0");
    digest.update(Zeroizing::new(key.to_hex()).as_bytes());
    hex::encode(&digest.finalize()[..8])
}

/// Most files of one history's key in the folder (`…-2.age` and on): one
/// more per new escrow key IT names, or per setting the history could not
/// keep.
const MAX_COPIES: usize = 100;

/// Writes `record` encrypted to `policy`'s key as a new file in its folder
/// and returns its path. Nothing is created when the folder is missing:
/// IT makes it, with permissions that keep users out of each other's files.
pub(crate) fn write(policy: &EscrowPolicy, record: &EscrowRecord) -> Result<PathBuf> {
    let dir = policy.dir();
    let fail = |problem: String| Error::Escrow { problem };
    let plain = Zeroizing::new(
        serde_json::to_vec_pretty(record)
            .map_err(|e| fail(format!("the record cannot be written: {e}")))?,
    );
    let sealed = age::encrypt(&policy.key, &plain)
        .map_err(|e| fail(format!("the record cannot be encrypted: {e}")))?;
    let stem = format!(
        "{}-{}-{}",
        file_safe(&record.host),
        file_safe(&record.user),
        file_safe(&record.history_id)
    );
    for copy in 1..=MAX_COPIES {
        let name = match copy {
            1 => format!("{stem}.age"),
            n => format!("{stem}-{n}.age"),
        };
        let target = dir.join(name);
        let placed = NewFile::create(&target).and_then(|mut file| {
            file.write_all(&sealed)?;
            file.place()
        });
        match placed {
            Ok(()) => return Ok(target),
            Err(Error::OutputExists { .. }) => continue,
            Err(Error::Io { source, .. }) => {
                return Err(fail(format!(
                    "cannot write a file in {}: {source}; IT should make that folder writable for every user (Linux: root's, mode 1733)",
                    dir.display()
                )))
            }
            Err(e) => return Err(e),
        }
    }
    Err(fail(format!(
        "{} holds {MAX_COPIES} escrow files of this history already; IT should collect them",
        dir.display()
    )))
}

/// `text` as a part of a file name: letters, digits, `.`, `_` and `-` (no
/// leading `.` or `-`), at most 64 characters.
fn file_safe(text: &str) -> String {
    let safe: String = text
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '_' | '-' => c,
            _ => '_',
        })
        .take(64)
        .collect();
    let safe = safe.trim_start_matches(['.', '-']);
    if safe.is_empty() {
        "unknown".into()
    } else {
        safe.into()
    }
}

/// This machine's name, for the escrow file and its record.
fn host_name() -> String {
    #[cfg(unix)]
    {
        let mut buffer = [0u8; 256];
        // SAFETY: gethostname writes at most `buffer.len()` bytes into
        // `buffer`, which is ours.
        if unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) } == 0 {
            let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
            return String::from_utf8_lossy(&buffer[..end]).into_owned();
        }
        "unknown".into()
    }
    #[cfg(not(unix))]
    {
        std::env::var("COMPUTERNAME").unwrap_or_else(|_| "unknown".into())
    }
}

/// The most read of an identity file: a few keys and comments.
const IDENTITY_LIMIT: Limit = Limit {
    bytes: 64 << 10,
    what: "an age identity file",
    advice: "give the file `age-keygen` wrote, with its AGE-SECRET-KEY-1… line",
};

/// The most read of an escrow file: a record is well under a kilobyte.
const ESCROW_FILE_LIMIT: Limit = Limit {
    bytes: 64 << 10,
    what: "an escrow file",
    advice: "give a `.age` file MedText wrote in the escrow folder",
};

/// Opens `escrow_file` with the identities in `identity_file` (IT's, on
/// IT's machine) and checks the record inside.
pub fn open(identity_file: &Path, escrow_file: &Path) -> Result<EscrowRecord> {
    let identities = read_identities(identity_file)?;
    let sealed = ESCROW_FILE_LIMIT.read_file(escrow_file)?;
    let fail = |what: &str| Error::Escrow {
        problem: format!("{} {what}", escrow_file.display()),
    };
    let decryptor = age::Decryptor::new_buffered(&sealed[..]).map_err(|_| {
        fail("is not an age-encrypted file: give a `.age` file from the escrow folder")
    })?;
    let reader = decryptor
        .decrypt(identities.iter().map(|i| i as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => Error::Escrow {
                problem: format!(
                    "this escrow file was not encrypted to that key: {} does not open with the identity in {}; use the identity whose public key the policy names (recovery.escrow_public_key)",
                    escrow_file.display(),
                    identity_file.display()
                ),
            },
            _ => fail("is damaged: its age header does not authenticate"),
        })?;
    let mut plain = Zeroizing::new(Vec::new());
    reader
        .take(ESCROW_FILE_LIMIT.bytes)
        .read_to_end(&mut plain)
        .map_err(|_| fail("is damaged: its contents do not authenticate"))?;
    let record: EscrowRecord = serde_json::from_slice(&plain)
        .map_err(|_| fail("opens, but holds no MedText escrow record"))?;
    if record.format != FORMAT {
        return Err(fail(&format!(
            "holds a record of format '{}', which this MedText does not know ({FORMAT}): open it with the MedText version that wrote it ({})",
            printable(&record.format),
            printable(&record.medtext_version)
        )));
    }
    RecoveryKey::parse(&record.recovery_key).map_err(|_| fail("holds a malformed recovery key"))?;
    Ok(record)
}

/// The X25519 identities in an age identity file: `AGE-SECRET-KEY-1…`
/// lines, with blank lines and `#` comments between them. A refusal names
/// the line, never its content (a secret).
fn read_identities(path: &Path) -> Result<Vec<age::x25519::Identity>> {
    let bytes = Zeroizing::new(IDENTITY_LIMIT.read_file(path)?);
    let fail = |problem: String| Error::Escrow {
        problem: format!("identity file {}: {problem}", path.display()),
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| fail("it is not text".into()))?;
    let mut identities = Vec::new();
    for (at, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let identity = age::x25519::Identity::from_str(line).map_err(|_| {
            fail(if line.starts_with("age1") {
                format!("line {} is a public key (age1…): give the identity file that holds its secret (AGE-SECRET-KEY-1…)", at + 1)
            } else {
                format!(
                    "line {} is not an age X25519 identity (AGE-SECRET-KEY-1…)",
                    at + 1
                )
            })
        })?;
        identities.push(identity);
    }
    if identities.is_empty() {
        return Err(fail(
            "it holds no identity (an AGE-SECRET-KEY-1… line, as `age-keygen` writes it)".into(),
        ));
    }
    Ok(identities)
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;

    struct It {
        identity: age::x25519::Identity,
        policy: EscrowPolicy,
        identity_file: PathBuf,
    }

    fn it(dir: &Path, name: &str) -> It {
        let identity = age::x25519::Identity::generate();
        let identity_file = dir.join(name);
        std::fs::write(
            &identity_file,
            format!(
                "# created: today\n# public key: {}\n{}\n",
                identity.to_public(),
                identity.to_string().expose_secret()
            ),
        )
        .unwrap();
        let policy = EscrowPolicy {
            key: identity.to_public(),
            dir: Some(dir.join("escrow")),
        };
        std::fs::create_dir_all(policy.dir()).unwrap();
        It {
            identity,
            policy,
            identity_file,
        }
    }

    #[test]
    fn an_escrow_file_opens_with_it_s_identity_only() {
        let dir = tempfile::tempdir().unwrap();
        let it_dept = it(dir.path(), "it.key");
        let other = it(dir.path(), "other.key");
        let key = RecoveryKey::generate().unwrap();
        let record = EscrowRecord::new(&key, "0123abcd", Path::new("/home/jo/history.db"));
        let file = write(&it_dept.policy, &record).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.ends_with(&format!("-{}-0123abcd.age", file_safe(&record.user))),
            "{name}"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Encrypted: neither the key nor the record's words are in it.
        let bytes = std::fs::read(&file).unwrap();
        assert!(bytes.starts_with(b"age-encryption.org/v1\n"));
        let shown = String::from_utf8_lossy(&bytes);
        assert!(!shown.contains(&key.to_text()) && !shown.contains("recovery_key"));
        // Nothing but the file is left in the folder.
        assert_eq!(
            std::fs::read_dir(file.parent().unwrap()).unwrap().count(),
            1
        );

        let opened = open(&it_dept.identity_file, &file).unwrap();
        assert_eq!(opened.recovery_key, key.to_text());
        assert_eq!(opened.history_id, "0123abcd");
        assert_eq!(opened.history, Path::new("/home/jo/history.db"));
        assert_eq!(opened.host, record.host);
        assert_eq!(opened.medtext_version, env!("CARGO_PKG_VERSION"));
        assert!(opened.created.ends_with(" UTC"));
        assert!(!format!("{opened:?}").contains(&key.to_text()));
        // The plain age API opens it too (what `age -d` does).
        let plain = age::decrypt(&it_dept.identity, &bytes).unwrap();
        assert!(String::from_utf8(plain).unwrap().contains(FORMAT));

        let wrong = open(&other.identity_file, &file).unwrap_err().to_string();
        assert!(
            wrong.contains("this escrow file was not encrypted to that key"),
            "{wrong}"
        );
        assert!(!wrong.contains("AGE-SECRET-KEY"), "{wrong}");
    }

    #[test]
    fn a_second_escrow_never_replaces_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let it_dept = it(dir.path(), "it.key");
        let first = RecoveryKey::generate().unwrap();
        let second = RecoveryKey::generate().unwrap();
        let path = Path::new("/h/history.db");
        let a = write(&it_dept.policy, &EscrowRecord::new(&first, "id", path)).unwrap();
        let b = write(&it_dept.policy, &EscrowRecord::new(&second, "id", path)).unwrap();
        assert_ne!(a, b);
        assert!(
            b.to_string_lossy().ends_with("-id-2.age"),
            "{}",
            b.display()
        );
        let opened = |f: &Path| {
            open(&it_dept.identity_file, f)
                .unwrap()
                .recovery_key
                .clone()
        };
        assert_eq!(opened(&a), first.to_text());
        assert_eq!(opened(&b), second.to_text());
    }

    #[test]
    fn a_missing_folder_is_reported_not_made() {
        let dir = tempfile::tempdir().unwrap();
        let mut it_dept = it(dir.path(), "it.key");
        let missing = dir.path().join("no-such-folder");
        it_dept.policy.dir = Some(missing.clone());
        let key = RecoveryKey::generate().unwrap();
        let err = write(
            &it_dept.policy,
            &EscrowRecord::new(&key, "id", Path::new("/h")),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("no-such-folder") && err.contains("cannot write"),
            "{err}"
        );
        assert!(!err.contains(&key.to_text()), "{err}");
        assert!(!missing.exists());
    }

    #[test]
    fn wrong_inputs_to_open_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let it_dept = it(dir.path(), "it.key");
        let key = RecoveryKey::generate().unwrap();
        let file = write(
            &it_dept.policy,
            &EscrowRecord::new(&key, "id", Path::new("/h")),
        )
        .unwrap();
        let public = dir.path().join("public.txt");
        std::fs::write(&public, format!("{}\n", it_dept.policy.key)).unwrap();
        let err = open(&public, &file).unwrap_err().to_string();
        assert!(err.contains("line 1 is a public key"), "{err}");
        let empty = dir.path().join("empty.key");
        std::fs::write(&empty, "# nothing\n\n").unwrap();
        let err = open(&empty, &file).unwrap_err().to_string();
        assert!(err.contains("holds no identity"), "{err}");
        let garbled = dir.path().join("garbled.key");
        std::fs::write(&garbled, "# c\nAGE-SECRET-KEY-1NOTAKEY\n").unwrap();
        let err = open(&garbled, &file).unwrap_err().to_string();
        assert!(
            err.contains("line 2 is not an age X25519 identity"),
            "{err}"
        );
        assert!(!err.contains("NOTAKEY"), "{err}");

        let not_age = dir.path().join("notes.txt");
        std::fs::write(&not_age, "hello").unwrap();
        let err = open(&it_dept.identity_file, &not_age)
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not an age-encrypted file"), "{err}");
        // Another age file, to IT's key, that MedText did not write.
        let foreign = dir.path().join("foreign.age");
        std::fs::write(
            &foreign,
            age::encrypt(&it_dept.policy.key, b"{\"hello\": 1}").unwrap(),
        )
        .unwrap();
        let err = open(&it_dept.identity_file, &foreign)
            .unwrap_err()
            .to_string();
        assert!(err.contains("holds no MedText escrow record"), "{err}");
        // A flipped byte in the payload.
        let mut bytes = std::fs::read(&file).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let damaged = dir.path().join("damaged.age");
        std::fs::write(&damaged, bytes).unwrap();
        let err = open(&it_dept.identity_file, &damaged)
            .unwrap_err()
            .to_string();
        assert!(err.contains("is damaged"), "{err}");
    }

    #[test]
    fn policy_keys_are_checked_without_being_repeated() {
        let identity = age::x25519::Identity::generate();
        let public = identity.to_public().to_string();
        assert_eq!(
            EscrowPolicy::parse_key(&format!(" {public} ")).unwrap(),
            identity.to_public()
        );
        let secret = identity.to_string().expose_secret().to_string();
        let err = EscrowPolicy::parse_key(&secret).unwrap_err();
        assert!(
            err.contains("secret key") && !err.contains(&secret),
            "{err}"
        );
        let err = EscrowPolicy::parse_key("age1notakey").unwrap_err();
        assert!(err.contains("not an age X25519 public key"), "{err}");
        assert!(EscrowPolicy::parse_key("ed25519:00").is_err());
    }

    #[test]
    fn names_become_safe_file_name_parts() {
        assert_eq!(file_safe("ws-12.ward3"), "ws-12.ward3");
        assert_eq!(file_safe("../../etc/passwd"), "_.._etc_passwd");
        assert_eq!(file_safe("DOMAIN\\jo smith"), "DOMAIN_jo_smith");
        assert_eq!(file_safe("-rf"), "rf");
        assert_eq!(file_safe(".."), "unknown");
        assert_eq!(file_safe(""), "unknown");
        assert_eq!(file_safe("é"), "_");
        assert_eq!(file_safe(&"x".repeat(300)).len(), 64);
        assert!(!host_name().is_empty());
    }

    #[test]
    fn the_escrow_mark_tells_keys_and_escrow_keys_apart() {
        let dir = tempfile::tempdir().unwrap();
        let it_dept = it(dir.path(), "it.key");
        let other = it(dir.path(), "other.key");
        let key = RecoveryKey::generate().unwrap();
        let mark = Escrowed::new(&it_dept.policy, &key, PathBuf::from("/x.age"));
        assert!(mark.covers(&it_dept.policy, &key));
        assert!(!mark.covers(&other.policy, &key));
        assert!(!mark.covers(&it_dept.policy, &RecoveryKey::generate().unwrap()));
        let json = serde_json::to_string(&mark).unwrap();
        assert!(!json.contains(&key.to_text()) && !json.contains(&key.to_hex()));
    }
}
