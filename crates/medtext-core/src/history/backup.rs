//! Encrypted backups of the history, and restoring from one.
//!
//! A backup is itself an SQLCipher database, keyed not from the keychain but
//! from a passphrase the user gives, through Argon2id (memory-hard, so a
//! stolen backup resists guessing). The Argon2 salt is the 16-byte salt that
//! SQLCipher keeps at the start of every database file, so a backup is one
//! ordinary file and needs nothing beside it.
//!
//! Both directions are checked before they are reported as done: a backup is
//! opened with the passphrase and compared with the history; a restore is
//! opened and checked before it replaces anything, and the history it
//! replaces is kept beside it.

use std::path::{Path, PathBuf};

use argon2::{Algorithm, Argon2, Params, Version};

use crate::history::audit::Action;
use crate::history::keychain::DatabaseKey;
use crate::history::store::HistoryStore;
use crate::user_files::{Limit, NewFile};
use crate::{Error, Result};

/// Argon2id cost: 64 MiB, 3 passes, 1 lane (above OWASP's minimum of
/// 19 MiB and 2 passes). Part of the backup format: changing it needs a
/// new format version.
const ARGON2_MEMORY_KIB: u32 = 64 * 1024;
const ARGON2_PASSES: u32 = 3;

/// Shortest passphrase accepted for a new backup.
pub const MIN_PASSPHRASE_CHARS: usize = 12;

/// The key and salt that open a backup with `passphrase`.
pub(crate) struct BackupKey {
    pub(crate) key: DatabaseKey,
    pub(crate) salt: [u8; 16],
}

impl BackupKey {
    /// Derives the key from `passphrase` with Argon2id and `salt`.
    pub(crate) fn derive(passphrase: &str, salt: [u8; 16]) -> Result<Self> {
        let params = Params::new(ARGON2_MEMORY_KIB, ARGON2_PASSES, 1, Some(32)).map_err(|e| {
            Error::Backup {
                problem: format!("Argon2 parameters: {e}"),
            }
        })?;
        let mut key = [0u8; 32];
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(passphrase.as_bytes(), &salt, &mut key)
            .map_err(|e| Error::Backup {
                problem: format!("cannot derive the key: {e}"),
            })?;
        let derived = Self {
            key: DatabaseKey::from_bytes(key),
            salt,
        };
        key.fill(0);
        Ok(derived)
    }

    /// A new random salt for a new backup.
    pub(crate) fn new_for(passphrase: &str) -> Result<Self> {
        if passphrase.chars().count() < MIN_PASSPHRASE_CHARS {
            return Err(Error::Backup {
                problem: format!(
                    "the passphrase must have at least {MIN_PASSPHRASE_CHARS} characters"
                ),
            });
        }
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(|e| Error::Backup {
            problem: format!("no randomness for the salt: {e}"),
        })?;
        Self::derive(passphrase, salt)
    }

    /// The key of the backup `file` (at `path`): its salt is the file's
    /// first 16 bytes, and nothing more is read.
    fn for_file(mut file: &std::fs::File, path: &Path, passphrase: &str) -> Result<Self> {
        let mut salt = [0u8; 16];
        std::io::Read::read_exact(&mut file, &mut salt).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => Error::Backup {
                problem: format!("{} is too short to be a MedText backup", path.display()),
            },
            _ => Error::io(path, e),
        })?;
        Self::derive(passphrase, salt)
    }

    /// SQLCipher's raw key-and-salt literal body (96 hex digits).
    pub(crate) fn sql_literal(&self) -> String {
        format!("{}{}", self.key.to_hex(), hex::encode(self.salt))
    }
}

/// What a finished backup or restore holds.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BackupReport {
    pub path: PathBuf,
    pub records: i64,
    /// For a restore: where the history it replaced was kept.
    pub replaced_kept_at: Option<PathBuf>,
}

impl HistoryStore {
    /// Writes an encrypted backup of the whole history to `out`, a new file
    /// (see [`NewFile`]), keyed from `passphrase`; checks that it opens,
    /// holds every record and is small enough to restore before reporting
    /// it done, and audits it.
    pub fn backup(&mut self, out: &Path, passphrase: &str) -> Result<BackupReport> {
        self.policy().check_backup()?;
        let file = NewFile::create(out)?;
        let key = BackupKey::new_for(passphrase)?;
        let partial = file.path();
        self.export_to(partial, &key.sql_literal())?;
        let copy = HistoryStore::open_raw(partial, &key.sql_literal())?;
        let records = check_copy(&copy, self.count()?)?;
        drop(copy);
        let size = std::fs::metadata(partial)
            .map_err(|e| Error::io(partial, e))?
            .len();
        BACKUP_LIMIT.check(size, out).map_err(|_| Error::Backup {
            problem: format!(
                "the backup would be larger than `medtext restore` reads ({size} bytes); delete old records (`medtext history purge`) and try again"
            ),
        })?;
        crate::history::store::audited_place(file, || {
            self.audit_only(Action::Backup, format!("records={records}"))
        })?;
        Ok(BackupReport {
            path: out.to_path_buf(),
            records,
            replaced_kept_at: None,
        })
    }
}

/// Replaces the history in `data_dir` with the backup at `backup`, opened
/// with `passphrase`, keeping the current history's key. The backup is
/// checked (it opens, both integrity checks pass) before anything is
/// replaced; the history it replaces is kept beside it as
/// `history.db.before-restore-<time>`, still encrypted with its key.
pub fn restore(data_dir: &Path, backup: &Path, passphrase: &str) -> Result<BackupReport> {
    crate::machine::policy::Policy::load()?.check_backup()?;
    let file = open_backup(backup)?;
    let key = BackupKey::for_file(&file, backup, passphrase)?;
    // Read from a private copy: opening a database writes to it (its log,
    // its mode, an older schema's migration), and the backup is IT's file,
    // perhaps read-only, that must stay as it was.
    let copy = PrivateCopy::of(file, backup, data_dir)?;
    let source = HistoryStore::open_raw(&copy.0, &key.sql_literal()).map_err(|e| match e {
        Error::WrongKeyOrNotADatabase { .. } => Error::Backup {
            problem: format!(
                "{} does not open with that passphrase (or is not a MedText backup)",
                backup.display()
            ),
        },
        other => other,
    })?;
    let records = check_copy(&source, source.count()?)?;
    // The history being replaced may be gone or have lost work: that is
    // what a restore is for.
    let current = HistoryStore::open_in_mode(data_dir, crate::history::store::OpenMode::Restore)?;
    let live = current.path().to_path_buf();
    let live_key = crate::history::keychain::database_key(&live)?;
    let last_id = current.last_record_id()?;
    drop(current);
    // Nobody else may have it open while it is replaced: an app writing to
    // the old file's log would lose what it writes.
    let _alone = crate::history::store::hold_history_alone(&live)?;
    // The backup's rows, re-encrypted with the history's own key.
    let incoming = partial_path(&live);
    // MedText's own name in its own folder: what a crash left there.
    let _ = std::fs::remove_file(&incoming);
    crate::paths::create_new_private_file(&incoming)?;
    let copied = source
        .export_to(&incoming, &live_key.to_hex())
        .and_then(|()| {
            let mut copy = HistoryStore::open(&incoming, &live_key)?;
            copy.renew_history_id()?;
            check_copy(&copy, records)
        });
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&incoming);
        return Err(e);
    }
    let kept = live.with_file_name(format!(
        "{}.before-restore-{}",
        crate::history::store::DATABASE_FILE,
        crate::history::store::now_ms()
    ));
    // With every connection closed the log is empty; none may meet the new file.
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", live.display()));
    }
    // The old file is kept under a second name first, then the new one
    // takes its place in one rename: at no moment is there no history.
    std::fs::hard_link(&live, &kept)
        .or_else(|_| std::fs::copy(&live, &kept).map(|_| ()))
        .map_err(|e| Error::io(&kept, e))?;
    if let Err(e) = std::fs::rename(&incoming, &live) {
        // Nothing replaced: the history is as it was, without a second name.
        let _ = std::fs::remove_file(&kept);
        let _ = std::fs::remove_file(&incoming);
        return Err(Error::io(&live, e));
    }
    let mut restored = HistoryStore::open(&live, &live_key)?;
    restored.anchor_commits()?;
    // Ids the replaced history gave after the backup must not come back.
    restored.keep_ids_above(last_id)?;
    restored.audit_only(Action::Restore, format!("records={records}"))?;
    Ok(BackupReport {
        path: live,
        records,
        replaced_kept_at: Some(kept),
    })
}

/// Checks that a copy opens whole and holds `expected` records.
fn check_copy(copy: &HistoryStore, expected: i64) -> Result<i64> {
    let problems = copy.integrity_problems()?;
    if !problems.is_empty() {
        return Err(Error::Backup {
            problem: format!(
                "the copy failed its integrity checks: {}",
                problems.join("; ")
            ),
        });
    }
    let records = copy.count()?;
    if records != expected {
        return Err(Error::Backup {
            problem: format!("the copy holds {records} records, expected {expected}"),
        });
    }
    Ok(records)
}

/// A copy of a backup in the private data folder, removed (with the log
/// SQLite keeps beside it) when dropped.
struct PrivateCopy(PathBuf);

impl PrivateCopy {
    /// Copies the rest of `from` (the backup at `backup`, its salt read),
    /// within [`BACKUP_LIMIT`].
    fn of(mut from: std::fs::File, backup: &Path, dir: &Path) -> Result<Self> {
        crate::paths::ensure_private_dir(dir)?;
        let copy = Self(dir.join("restore-source.partial"));
        copy.remove();
        let mut to = crate::paths::create_new_private_file(&copy.0)?;
        std::io::Seek::rewind(&mut from).map_err(|e| Error::io(backup, e))?;
        BACKUP_LIMIT.copy(from, backup, &mut to, &copy.0)?;
        Ok(copy)
    }

    fn remove(&self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
    }
}

impl Drop for PrivateCopy {
    fn drop(&mut self) {
        self.remove();
    }
}

/// The most read of a backup: about ten million typical records (1.5 KB
/// each with their index), far beyond a workstation's history. A backup is
/// checked against it when it is written, so every backup made restores.
pub const BACKUP_LIMIT: Limit = Limit {
    bytes: 16 << 30,
    what: "a MedText backup",
    advice: "MedText never writes a backup this large; check that this is the file `medtext backup` wrote",
};

/// Opens the backup at `path`, refusing what cannot be one before reading
/// it: a device or a pipe (`/dev/zero` never ends; a backup is a file that
/// `medtext backup` wrote) or a file over [`BACKUP_LIMIT`]. The copy is
/// bounded too, for a file that grows while it is read.
fn open_backup(path: &Path) -> Result<std::fs::File> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let metadata = file.metadata().map_err(|e| Error::io(path, e))?;
    if !metadata.is_file() {
        return Err(Error::Backup {
            problem: format!(
                "{} is not a regular file: give the file that `medtext backup` wrote",
                path.display()
            ),
        });
    }
    BACKUP_LIMIT.check(metadata.len(), path)?;
    Ok(file)
}

fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_depends_on_passphrase_and_salt_and_short_passphrases_are_refused() {
        let a = BackupKey::derive("correct horse battery", [1; 16]).unwrap();
        let b = BackupKey::derive("correct horse battery", [1; 16]).unwrap();
        let c = BackupKey::derive("correct horse battery", [2; 16]).unwrap();
        let d = BackupKey::derive("correct horse batterz", [1; 16]).unwrap();
        assert_eq!(a.sql_literal(), b.sql_literal());
        assert_ne!(a.sql_literal(), c.sql_literal());
        assert_ne!(a.sql_literal(), d.sql_literal());
        assert!(a.sql_literal().ends_with(&"01".repeat(16)));
        let err = BackupKey::new_for("short").err().unwrap().to_string();
        assert!(err.contains("at least 12 characters"), "{err}");
    }

    #[test]
    fn a_backup_opens_only_with_its_passphrase_holds_everything_and_no_plaintext() {
        let dir = tempfile::tempdir().unwrap();
        let key = DatabaseKey::from_bytes([7; 32]);
        let mut live = HistoryStore::open(&dir.path().join("history.db"), &key).unwrap();
        let c = crate::history::store::tests::sample("I20-I25");
        for i in 0..20 {
            live.save(&format!("Zebrafinch note {i} troponin"), &c)
                .unwrap();
        }
        let out = dir.path().join("backup.mtb");
        let passphrase = "correct horse battery staple";
        let report = live.backup(&out, passphrase).unwrap();
        assert_eq!(report.records, 20);
        let partial = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains("partial")
            })
            .count();
        assert_eq!(partial, 0, "a partial file was left");
        // An existing file is never overwritten.
        let err = live.backup(&out, passphrase).err().unwrap().to_string();
        assert!(err.contains("already exists"), "{err}");

        let bytes = std::fs::read(&out).unwrap();
        assert!(!bytes.windows(10).any(|w| w == b"Zebrafinch"));
        assert!(!bytes.windows(15).any(|w| w == b"SQLite format 3"));
        // The right passphrase opens it, with search working; the salt is
        // the file's first bytes.
        let key_of = |passphrase| BackupKey::for_file(&open_backup(&out)?, &out, passphrase);
        let opened = key_of(passphrase).unwrap();
        assert_eq!(&bytes[..16], &opened.salt);
        let copy = HistoryStore::open_raw(&out, &opened.sql_literal()).unwrap();
        let found = copy
            .search(&crate::history::store::HistoryQuery {
                text: Some("zebrafinch tropon".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(found.total, 20);
        // A wrong one does not.
        let wrong = key_of("correct horse battery stapl").unwrap();
        assert!(matches!(
            HistoryStore::open_raw(&out, &wrong.sql_literal()),
            Err(Error::WrongKeyOrNotADatabase { .. })
        ));
        // Every file the history, its search index, a rotation and a backup
        // leave in the folder is free of the text (nothing spills to
        // temporary files: temp_store is memory).
        live.search(&crate::history::store::HistoryQuery {
            text: Some("zebrafinch".into()),
            ..Default::default()
        })
        .unwrap();
        live.rekey(&DatabaseKey::from_bytes([8; 32])).unwrap();
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(10).any(|w| w == b"Zebrafinch"),
                "{} holds the text",
                path.display()
            );
        }
        let actions: Vec<String> = live
            .audit_entries()
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect();
        assert!(actions.ends_with(&["backup".to_string(), "key-rotation".to_string()]));
    }
}
