//! The recovery file: a copy of the database key, kept beside the database
//! (`history.db.recovery`) in a small SQLCipher file keyed with the recovery
//! key. The database key itself is never shown to anyone; the recovery key
//! is shown once for IT to escrow. When the keychain entry is lost, the
//! recovery key opens this file, the database key inside opens the history,
//! and both go back into the keychain. Rotating the database key rewrites
//! the file with the new key under the same recovery key, so the escrowed
//! copy stays valid.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use crate::history::keychain::{DatabaseKey, RecoveryKey};
use crate::{Error, Result};

/// `history.db` → `history.db.recovery`.
pub fn file_for(db_path: &Path) -> PathBuf {
    let mut name = db_path.file_name().unwrap_or_default().to_os_string();
    name.push(".recovery");
    db_path.with_file_name(name)
}

/// Writes (or replaces) the recovery file of `db_path`: complete or not at
/// all (written beside it, then renamed), owner-only.
pub(crate) fn write(db_path: &Path, recovery: &RecoveryKey, key: &DatabaseKey) -> Result<()> {
    let target = file_for(db_path);
    let partial = target.with_extension("recovery-partial");
    let _ = std::fs::remove_file(&partial);
    let fail = |e: rusqlite::Error| Error::Store {
        path: target.clone(),
        problem: format!("cannot write the recovery file: {e}"),
    };
    {
        let conn = Connection::open(&partial).map_err(fail)?;
        conn.execute_batch(&format!(
            "PRAGMA key = \"x'{}'\";
             CREATE TABLE database_key (key BLOB NOT NULL);",
            recovery.to_hex()
        ))
        .map_err(fail)?;
        conn.execute(
            "INSERT INTO database_key (key) VALUES (?1)",
            [key.bytes().as_slice()],
        )
        .map_err(fail)?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io(&partial, e))?;
    }
    std::fs::rename(&partial, &target).map_err(|e| Error::io(&target, e))
}

/// The database key in the recovery file of `db_path`, opened with `recovery`.
pub(crate) fn read(db_path: &Path, recovery: &RecoveryKey) -> Result<DatabaseKey> {
    let path = file_for(db_path);
    if !path.is_file() {
        return Err(Error::Store {
            path,
            problem: "there is no recovery file beside the history; restore it from a backup of the folder".into(),
        });
    }
    let wrong = || Error::Keychain {
        problem: format!(
            "that recovery key does not open {}: it belongs to another history",
            path.display()
        ),
    };
    let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|_| wrong())?;
    conn.execute_batch(&format!("PRAGMA key = \"x'{}'\";", recovery.to_hex()))
        .map_err(|_| wrong())?;
    let bytes: Vec<u8> = conn
        .query_row("SELECT key FROM database_key", [], |r| r.get(0))
        .map_err(|_| wrong())?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| Error::Store {
        path: path.clone(),
        problem: "the recovery file holds a malformed key".into(),
    })?;
    Ok(DatabaseKey::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recovery_file_gives_back_the_key_only_to_its_recovery_key() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("history.db");
        let recovery = RecoveryKey::generate().unwrap();
        let key = DatabaseKey::generate().unwrap();
        write(&db, &recovery, &key).unwrap();
        assert_eq!(read(&db, &recovery).unwrap().to_hex(), key.to_hex());
        let other = RecoveryKey::generate().unwrap();
        let err = read(&db, &other).err().unwrap().to_string();
        assert!(err.contains("does not open"), "{err}");
        // Replaced after a rotation: the same recovery key gives the new key.
        let rotated = DatabaseKey::generate().unwrap();
        write(&db, &recovery, &rotated).unwrap();
        assert_eq!(read(&db, &recovery).unwrap().to_hex(), rotated.to_hex());
        // The file is encrypted: the key bytes are not in it.
        let bytes = std::fs::read(file_for(&db)).unwrap();
        assert!(!bytes.windows(32).any(|w| w == rotated.bytes()));
        assert!(!file_for(&db).with_extension("recovery-partial").exists());
    }
}
