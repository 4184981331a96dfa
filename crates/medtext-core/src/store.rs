//! The encrypted history: an SQLCipher database holding every saved
//! classification, opened only with the key from the OS keychain.
//!
//! Opening fails closed. An existing file that does not decrypt with the key is
//! reported and left byte-for-byte untouched; a new database is only ever
//! created where no file exists.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::types::Type;
use rusqlite::{params, Connection, ErrorCode, OpenFlags};
use serde::{Deserialize, Serialize};

use crate::keychain::{self, DatabaseKey};
use crate::{paths, Classification, Error, LabelScore, Result};

/// File name of the history database inside the data directory.
pub const DATABASE_FILE: &str = "history.db";

/// Characters of the text kept in list views; the full text stays in the row.
const PREVIEW_CHARS: usize = 160;

/// Schema migrations, applied in order; `PRAGMA user_version` records how many
/// have run. Never edit a released entry: append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: classifications
    "CREATE TABLE classifications (
        id            INTEGER PRIMARY KEY,
        created_at_ms INTEGER NOT NULL,
        text          TEXT    NOT NULL,
        pack          TEXT    NOT NULL,
        pack_version  TEXT    NOT NULL,
        head          TEXT    NOT NULL,
        top_label     TEXT    NOT NULL,
        top_probability REAL  NOT NULL,
        needs_review  INTEGER NOT NULL,
        probabilities TEXT    NOT NULL,
        windows       INTEGER NOT NULL
    );
    CREATE INDEX classifications_created ON classifications(created_at_ms);",
];

/// One saved classification, as shown in the history list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub id: i64,
    pub created_at_ms: i64,
    /// The start of the text, for recognising the entry in a list.
    pub preview: String,
    pub pack: String,
    pub pack_version: String,
    pub head: String,
    pub top: LabelScore,
    pub needs_review: bool,
    pub probabilities: Vec<LabelScore>,
}

pub struct HistoryStore {
    conn: Connection,
    path: PathBuf,
}

impl HistoryStore {
    /// Opens (or creates) the history in `data_dir`, with its key from the OS
    /// keychain. The directory is made owner-only.
    pub fn open_in(data_dir: &Path) -> Result<Self> {
        paths::ensure_private_dir(data_dir)?;
        let data_dir = data_dir
            .canonicalize()
            .map_err(|e| Error::io(data_dir, e))?;
        let path = data_dir.join(DATABASE_FILE);
        let key = keychain::database_key(&path)?;
        Self::open(&path, &key)
    }

    /// Opens the database at `path` with `key`, creating it only if no file is
    /// there.
    pub fn open(path: &Path, key: &DatabaseKey) -> Result<Self> {
        let exists = path.exists();
        let flags = if exists {
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX
        } else {
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
        };
        if exists
            && std::fs::metadata(path)
                .map_err(|e| Error::io(path, e))?
                .len()
                == 0
        {
            // SQLite would happily turn an empty file into a fresh database;
            // an empty file where history should be is damage to report.
            return Err(Error::WrongKeyOrNotADatabase {
                path: path.to_path_buf(),
            });
        }
        let conn = Connection::open_with_flags(path, flags).map_err(|e| store_error(path, e))?;
        // Raw 256-bit key: no passphrase derivation needed, the key is random.
        conn.execute_batch(&format!("PRAGMA key = \"x'{}'\";", key.to_hex()))
            .map_err(|e| store_error(path, e))?;
        // The first read is where a wrong key or a non-database shows.
        if let Err(e) = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        }) {
            return Err(match e.sqlite_error_code() {
                Some(ErrorCode::NotADatabase) => Error::WrongKeyOrNotADatabase {
                    path: path.to_path_buf(),
                },
                _ => store_error(path, e),
            });
        }
        conn.execute_batch(
            "PRAGMA secure_delete = ON;
             PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = ON;",
        )
        .map_err(|e| store_error(path, e))?;
        if !exists {
            restrict_to_owner(path)?;
        }
        let mut store = Self {
            conn,
            path: path.to_path_buf(),
        };
        store.migrate()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn migrate(&mut self) -> Result<()> {
        let path = self.path.clone();
        let version: usize = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
            .map_err(|e| store_error(&path, e))?
            .try_into()
            .unwrap_or(usize::MAX);
        if version > MIGRATIONS.len() {
            return Err(Error::Store {
                path,
                problem: format!(
                    "the database is at schema version {version}, newer than this MedText understands ({}); update MedText",
                    MIGRATIONS.len()
                ),
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = self.conn.transaction().map_err(|e| store_error(&path, e))?;
            tx.execute_batch(sql).map_err(|e| store_error(&path, e))?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(|e| store_error(&path, e))?;
            tx.commit().map_err(|e| store_error(&path, e))?;
        }
        Ok(())
    }

    /// Saves a classification of `text`; returns the new record's id once it is
    /// committed to disk.
    pub fn save(&mut self, text: &str, c: &Classification) -> Result<i64> {
        let probabilities = serde_json::to_string(&c.probabilities).map_err(|e| Error::Store {
            path: self.path.clone(),
            problem: format!("cannot encode probabilities: {e}"),
        })?;
        self.conn
            .execute(
                "INSERT INTO classifications
                 (created_at_ms, text, pack, pack_version, head, top_label, top_probability,
                  needs_review, probabilities, windows)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    now_ms(),
                    text,
                    c.pack,
                    c.pack_version,
                    c.head,
                    c.top.id,
                    f64::from(c.top.probability),
                    c.needs_review,
                    probabilities,
                    c.windows as i64,
                ],
            )
            .map_err(|e| store_error(&self.path, e))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// The `limit` most recent entries, newest first.
    pub fn recent(&self, limit: usize) -> Result<Vec<HistoryEntry>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, created_at_ms, substr(text, 1, ?2), pack, pack_version, head,
                        needs_review, probabilities, top_label
                 FROM classifications ORDER BY created_at_ms DESC, id DESC LIMIT ?1",
            )
            .map_err(|e| store_error(&self.path, e))?;
        let rows = stmt
            .query_map(params![limit as i64, PREVIEW_CHARS as i64], |r| {
                let probabilities: Vec<LabelScore> = serde_json::from_str(&r.get::<_, String>(7)?)
                    .map_err(|e| {
                        rusqlite::Error::FromSqlConversionFailure(7, Type::Text, Box::new(e))
                    })?;
                let top_label: String = r.get(8)?;
                let top = probabilities
                    .iter()
                    .find(|l| l.id == top_label)
                    .cloned()
                    .ok_or_else(|| {
                        rusqlite::Error::InvalidColumnType(8, "top_label".into(), Type::Text)
                    })?;
                Ok(HistoryEntry {
                    id: r.get(0)?,
                    created_at_ms: r.get(1)?,
                    preview: r.get(2)?,
                    pack: r.get(3)?,
                    pack_version: r.get(4)?,
                    head: r.get(5)?,
                    needs_review: r.get(6)?,
                    top,
                    probabilities,
                })
            })
            .map_err(|e| store_error(&self.path, e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| store_error(&self.path, e))
    }

    /// Number of saved classifications.
    pub fn count(&self) -> Result<i64> {
        self.conn
            .query_row("SELECT count(*) FROM classifications", [], |r| r.get(0))
            .map_err(|e| store_error(&self.path, e))
    }
}

fn store_error(path: &Path, e: rusqlite::Error) -> Error {
    let problem = match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => {
            "the disk is full: free some space and try again; nothing was lost".to_string()
        }
        Some(ErrorCode::ReadOnly) => "the file is read-only: check its permissions".to_string(),
        Some(ErrorCode::CannotOpen) => {
            "the file cannot be opened: check the folder exists and is writable".to_string()
        }
        // SQLite's messages name tables and columns, never bound values.
        _ => e.to_string(),
    };
    Error::Store {
        path: path.to_path_buf(),
        problem,
    }
}

fn restrict_to_owner(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io(path, e))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET_NOTE: &str =
        "Zebrafinch Quixotic: 71yo M with NSTEMI, troponin 4.2, s/p PCI to LAD.";

    fn sample(top: &str) -> Classification {
        let probs = vec![
            LabelScore {
                id: top.into(),
                display: "Top".into(),
                probability: 0.7,
            },
            LabelScore {
                id: "other".into(),
                display: "Other".into(),
                probability: 0.3,
            },
        ];
        Classification {
            pack: "p".into(),
            pack_version: "1".into(),
            head: "h".into(),
            top: probs[0].clone(),
            probabilities: probs,
            needs_review: false,
            windows: 1,
            tokens: 12,
            evidence: Vec::new(),
        }
    }

    fn key(b: u8) -> DatabaseKey {
        DatabaseKey::from_bytes([b; 32])
    }

    fn files_of(db: &Path) -> Vec<u8> {
        let mut all = Vec::new();
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let p = PathBuf::from(format!("{}{suffix}", db.display()));
            if let Ok(bytes) = std::fs::read(p) {
                all.extend(bytes);
            }
        }
        all
    }

    #[test]
    fn saved_entries_come_back_newest_first_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join(DATABASE_FILE);
        {
            let mut s = HistoryStore::open(&db, &key(1)).unwrap();
            s.save("first note", &sample("I00-I99")).unwrap();
            s.save(SECRET_NOTE, &sample("I20-I25")).unwrap();
        }
        let s = HistoryStore::open(&db, &key(1)).unwrap();
        assert_eq!(s.count().unwrap(), 2);
        let recent = s.recent(10).unwrap();
        assert_eq!(recent[0].top.id, "I20-I25");
        assert_eq!(recent[0].probabilities.len(), 2);
        assert!(SECRET_NOTE.starts_with(&recent[0].preview));
        assert_eq!(recent[1].preview, "first note");
        assert_eq!(s.recent(1).unwrap().len(), 1);
    }

    #[test]
    fn the_file_on_disk_holds_no_plaintext() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join(DATABASE_FILE);
        let mut s = HistoryStore::open(&db, &key(2)).unwrap();
        s.save(SECRET_NOTE, &sample("I20-I25")).unwrap();
        // Check while open (WAL present) and after closing (checkpointed).
        let needles: [&[u8]; 3] = [b"Zebrafinch", b"troponin", b"SQLite format 3"];
        let open_bytes = files_of(&db);
        drop(s);
        let closed_bytes = files_of(&db);
        for bytes in [open_bytes, closed_bytes] {
            assert!(bytes.len() > 1000);
            for needle in needles {
                assert!(!bytes.windows(needle.len()).any(|w| w == needle));
            }
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&db).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "database readable by others: {mode:o}");
        }
    }

    #[test]
    fn a_wrong_key_fails_clearly_and_leaves_the_file_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join(DATABASE_FILE);
        HistoryStore::open(&db, &key(3))
            .unwrap()
            .save(SECRET_NOTE, &sample("x"))
            .unwrap();
        let before = std::fs::read(&db).unwrap();
        let err = HistoryStore::open(&db, &key(4)).err().unwrap();
        assert!(
            matches!(err, Error::WrongKeyOrNotADatabase { .. }),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(
            message.contains("left untouched") && message.contains(DATABASE_FILE),
            "{message}"
        );
        assert_eq!(std::fs::read(&db).unwrap(), before);
        // The right key still opens it with the record intact.
        assert_eq!(
            HistoryStore::open(&db, &key(3)).unwrap().count().unwrap(),
            1
        );
    }

    #[test]
    fn random_bytes_and_empty_files_are_not_replaced_by_a_new_database() {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in [
            (
                "random.db",
                (0..8192u32)
                    .map(|i| (i * 7919 % 251) as u8)
                    .collect::<Vec<_>>(),
            ),
            ("empty.db", vec![]),
        ] {
            let db = dir.path().join(name);
            std::fs::write(&db, &content).unwrap();
            let err = HistoryStore::open(&db, &key(5)).err().unwrap();
            assert!(
                matches!(err, Error::WrongKeyOrNotADatabase { .. }),
                "{name}: {err:?}"
            );
            assert_eq!(std::fs::read(&db).unwrap(), content, "{name} was modified");
        }
    }

    #[test]
    fn a_database_from_a_newer_medtext_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join(DATABASE_FILE);
        {
            let s = HistoryStore::open(&db, &key(6)).unwrap();
            s.conn.pragma_update(None, "user_version", 99).unwrap();
        }
        let err = HistoryStore::open(&db, &key(6)).err().unwrap().to_string();
        assert!(err.contains("schema version 99"), "{err}");
    }
}
