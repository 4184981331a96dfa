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

use crate::audit::Action;
use crate::keychain::DatabaseKey;
use crate::store::HistoryStore;
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

    /// The key of the backup at `path`: its salt is the file's first 16 bytes.
    pub(crate) fn for_file(path: &Path, passphrase: &str) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let salt: [u8; 16] = bytes
            .get(..16)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| Error::Backup {
                problem: format!("{} is too short to be a MedText backup", path.display()),
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
    /// Writes an encrypted backup of the whole history to `out` (which must
    /// not exist yet), keyed from `passphrase`; checks that it opens and
    /// holds every record before reporting it done, and audits it.
    pub fn backup(&mut self, out: &Path, passphrase: &str) -> Result<BackupReport> {
        self.policy().check_backup()?;
        if out.exists() {
            return Err(Error::Backup {
                problem: format!("{} already exists; choose a new file name", out.display()),
            });
        }
        let key = BackupKey::new_for(passphrase)?;
        let partial = partial_path(out);
        let _ = std::fs::remove_file(&partial);
        let written = self.export_to(&partial, &key.sql_literal()).and_then(|()| {
            let copy = HistoryStore::open_raw(&partial, &key.sql_literal())?;
            check_copy(&copy, self.count()?)
        });
        let records = match written {
            Ok(records) => records,
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                return Err(e);
            }
        };
        crate::store::audited_rename(&partial, out, || {
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
    crate::policy::Policy::load()?.check_backup()?;
    let key = BackupKey::for_file(backup, passphrase)?;
    // Read from a private copy: opening a database writes to it (its log,
    // its mode, an older schema's migration), and the backup is IT's file,
    // perhaps read-only, that must stay as it was.
    let copy = PrivateCopy::of(backup, data_dir)?;
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
    let current = HistoryStore::open_in_mode(data_dir, crate::store::OpenMode::Restore)?;
    let live = current.path().to_path_buf();
    let live_key = crate::keychain::database_key(&live)?;
    let last_id = current.last_record_id()?;
    drop(current);
    // Nobody else may have it open while it is replaced: an app writing to
    // the old file's log would lose what it writes.
    let _alone = crate::store::hold_history_alone(&live)?;
    // The backup's rows, re-encrypted with the history's own key.
    let incoming = partial_path(&live);
    let _ = std::fs::remove_file(&incoming);
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
        crate::store::DATABASE_FILE,
        crate::store::now_ms()
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
    fn of(backup: &Path, dir: &Path) -> Result<Self> {
        crate::paths::ensure_private_dir(dir)?;
        let copy = Self(dir.join("restore-source.partial"));
        copy.remove();
        let mut from = std::fs::File::open(backup).map_err(|e| Error::io(backup, e))?;
        let mut to = crate::paths::create_new_private_file(&copy.0)?;
        std::io::copy(&mut from, &mut to).map_err(|e| Error::io(&copy.0, e))?;
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
        let c = crate::store::tests::sample("I20-I25");
        for i in 0..20 {
            live.save(&format!("Zebrafinch note {i} troponin"), &c)
                .unwrap();
        }
        let out = dir.path().join("backup.mtb");
        let passphrase = "correct horse battery staple";
        let report = live.backup(&out, passphrase).unwrap();
        assert_eq!(report.records, 20);
        assert!(!dir.path().join("backup.mtb.partial").exists());
        // An existing file is never overwritten.
        let err = live.backup(&out, passphrase).err().unwrap().to_string();
        assert!(err.contains("already exists"), "{err}");

        let bytes = std::fs::read(&out).unwrap();
        assert!(!bytes.windows(10).any(|w| w == b"Zebrafinch"));
        assert!(!bytes.windows(15).any(|w| w == b"SQLite format 3"));
        // The right passphrase opens it, with search working; the salt is
        // the file's first bytes.
        let opened = BackupKey::for_file(&out, passphrase).unwrap();
        assert_eq!(&bytes[..16], &opened.salt);
        let copy = HistoryStore::open_raw(&out, &opened.sql_literal()).unwrap();
        let found = copy
            .search(&crate::store::HistoryQuery {
                text: Some("zebrafinch tropon".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(found.total, 20);
        // A wrong one does not.
        let wrong = BackupKey::for_file(&out, "correct horse battery stapl").unwrap();
        assert!(matches!(
            HistoryStore::open_raw(&out, &wrong.sql_literal()),
            Err(Error::WrongKeyOrNotADatabase { .. })
        ));
        // Every file the history, its search index, a rotation and a backup
        // leave in the folder is free of the text (nothing spills to
        // temporary files: temp_store is memory).
        live.search(&crate::store::HistoryQuery {
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
