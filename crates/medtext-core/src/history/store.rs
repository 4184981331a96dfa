//! The encrypted history: an SQLCipher database holding every saved
//! classification, opened only with the key from the OS keychain.
//!
//! Opening fails closed. An existing file that does not decrypt with the key is
//! reported and left byte-for-byte untouched; a new database is only ever
//! created where no file exists.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::config::DbConfig;
use rusqlite::types::Type;
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::history::anchor;
use crate::history::audit::{self, Action, Event};
use crate::history::escrow::{self, EscrowRecord, EscrowStatus, Escrowed};
use crate::history::keychain::{self, DatabaseKey, RecoveryKey};
use crate::history::recovery;
use crate::inference::evidence::WordEvidence;
use crate::machine::policy::Policy;
use crate::text::validation::spreadsheet_cell;
use crate::user_files::NewFile;
use crate::{
    inference::classifier::Classification, inference::classifier::LabelScore, paths, Error, Result,
};

/// File name of the history database inside the data directory.
pub const DATABASE_FILE: &str = "history.db";

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
    // 2: evidence, model hash, feedback, full-text search, audit trail
    "ALTER TABLE classifications ADD COLUMN evidence TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE classifications ADD COLUMN model_sha256 TEXT NOT NULL DEFAULT '';
    ALTER TABLE classifications ADD COLUMN feedback TEXT
        CHECK (feedback IN ('agree', 'corrected'));
    ALTER TABLE classifications ADD COLUMN corrected_label TEXT;
    ALTER TABLE classifications ADD COLUMN feedback_note TEXT;
    ALTER TABLE classifications ADD COLUMN feedback_at_ms INTEGER;
    CREATE INDEX classifications_label ON classifications(top_label);
    CREATE INDEX classifications_pack ON classifications(pack);
    CREATE VIRTUAL TABLE classifications_fts USING fts5(
        text, content='classifications', content_rowid='id',
        tokenize='unicode61 remove_diacritics 2');
    INSERT INTO classifications_fts(classifications_fts, rank) VALUES ('secure-delete', 1);
    INSERT INTO classifications_fts(classifications_fts) VALUES ('rebuild');
    CREATE TRIGGER classifications_fts_insert AFTER INSERT ON classifications BEGIN
        INSERT INTO classifications_fts(rowid, text) VALUES (new.id, new.text);
    END;
    CREATE TRIGGER classifications_fts_delete AFTER DELETE ON classifications BEGIN
        INSERT INTO classifications_fts(classifications_fts, rowid, text)
        VALUES ('delete', old.id, old.text);
    END;
    CREATE TRIGGER classifications_fts_update AFTER UPDATE OF text ON classifications BEGIN
        INSERT INTO classifications_fts(classifications_fts, rowid, text)
        VALUES ('delete', old.id, old.text);
        INSERT INTO classifications_fts(rowid, text) VALUES (new.id, new.text);
    END;",
    // The audit table is its own constant so the audit tests use exactly it.
    AUDIT_TABLE,
    // 4: settings kept with the history (retention)
    "CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);",
    // 5: keys of the local API, kept as their sha256 (see crate::history::api_keys)
    "CREATE TABLE api_keys (
        id              INTEGER PRIMARY KEY,
        name            TEXT    NOT NULL,
        key_sha256      TEXT    NOT NULL UNIQUE,
        created_at_ms   INTEGER NOT NULL,
        last_used_at_ms INTEGER,
        revoked_at_ms   INTEGER
    );
    CREATE UNIQUE INDEX api_keys_live_name ON api_keys(name) WHERE revoked_at_ms IS NULL;",
];

/// See [`crate::history::audit`].
pub(crate) const AUDIT_TABLE: &str = "CREATE TABLE audit (
        seq          INTEGER PRIMARY KEY,
        at_ms        INTEGER NOT NULL,
        os_user      TEXT    NOT NULL,
        action       TEXT    NOT NULL,
        record_ids   TEXT    NOT NULL,
        model_sha256 TEXT,
        text_sha256  TEXT,
        detail       TEXT,
        prev_hash    TEXT    NOT NULL,
        hash         TEXT    NOT NULL
    );";

/// The highest record id ever given: new ones start above it.
const LAST_RECORD_ID: &str = "SELECT max(
    coalesce((SELECT max(id) FROM classifications), 0),
    coalesce((SELECT CAST(value AS INTEGER) FROM settings WHERE name = 'last_record_id'), 0))";

/// Sets the setting ?1 to ?2.
const PUT_SETTING: &str = "INSERT INTO settings (name, value) VALUES (?1, ?2)
    ON CONFLICT(name) DO UPDATE SET value = excluded.value";

/// Most entries one page of a search returns.
pub const MAX_PAGE: usize = 500;

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
    /// The clinician's verdict, if they gave one.
    pub feedback: Option<Verdict>,
}

/// One saved classification in full, as it was classified.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryRecord {
    #[serde(flatten)]
    pub entry: HistoryEntry,
    pub text: String,
    pub evidence: Vec<WordEvidence>,
    pub model_sha256: String,
    pub feedback_detail: Option<Feedback>,
}

/// A clinician's verdict on a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The suggested label is right.
    Agree,
    /// Another label is right: see [`Feedback::corrected_label`].
    Corrected,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Self::Agree => "agree",
            Self::Corrected => "corrected",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "agree" => Some(Self::Agree),
            "corrected" => Some(Self::Corrected),
            _ => None,
        }
    }
}

/// Feedback on one record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feedback {
    pub verdict: Verdict,
    /// The right label id, with [`Verdict::Corrected`].
    pub corrected_label: Option<String>,
    pub note: Option<String>,
    #[serde(default)]
    pub at_ms: i64,
}

/// Which records a search returns. Every filter is optional; all given
/// filters must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HistoryQuery {
    /// Words that must all occur in the text (each also as a prefix:
    /// "tropon" finds "troponin"). Never interpreted as a query language.
    pub text: Option<String>,
    /// Top label id.
    pub label: Option<String>,
    pub pack: Option<String>,
    /// Inclusive bounds on when the record was saved.
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub feedback: Option<FeedbackFilter>,
    pub offset: usize,
    /// At most [`MAX_PAGE`]; 0 means 50.
    pub limit: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeedbackFilter {
    Agree,
    Corrected,
    /// No feedback given yet.
    None,
}

/// One page of a search and how many records match in all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryPage {
    pub entries: Vec<HistoryEntry>,
    /// Matching records, counted up to [`COUNT_LIMIT`].
    pub total: usize,
    /// More than `total` records match.
    pub more_than_total: bool,
}

/// Most matches a search counts exactly.
pub const COUNT_LIMIT: usize = 1_000;

pub struct HistoryStore {
    pub(crate) conn: Connection,
    pub(crate) path: PathBuf,
    /// See [`HistoryStore::take_new_recovery_key`].
    new_recovery_key: Option<RecoveryKey>,
    /// See [`HistoryStore::escrow_status`].
    escrow: EscrowStatus,
    /// The machine policy: fixes retention, allows or forbids exports and
    /// backups. Loaded by [`HistoryStore::open_in`] and
    /// [`HistoryStore::recover`] so no caller can forget it.
    policy: Policy,
    /// The history's lock file, held shared while the history is open
    /// through `open_in` or `recover` (see [`hold_history_alone`]).
    _in_use: Option<std::fs::File>,
    /// The key of the audit's text digests, once read (see
    /// [`HistoryStore::audit_text_key`]); it never changes once made.
    audit_text_key: Option<zeroize::Zeroizing<String>>,
    /// The history's id while every commit is anchored (see
    /// [`crate::history::anchor`]): set by `open_in` and `recover`, not by the plain
    /// `open` of a copy (a backup being checked has no anchor).
    anchor_history: Option<String>,
    /// See [`HistoryStore::anchor_problem`].
    anchor_problem: Option<String>,
}

/// What [`HistoryStore::open_in_mode`] accepts beyond a sound history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Everyday use: a history gone where one was kept, or one that lost
    /// committed work since its last anchor, is refused.
    Normal,
    /// `medtext audit verify`: lost work is reported by
    /// [`HistoryStore::anchor_problem`] instead of refused, and nothing is
    /// written, the anchors included.
    Inspect,
    /// `medtext audit accept-loss`: lost work is recorded in the audit trail
    /// (an `audit-loss` entry) and the anchor moves to the chain's head.
    AcceptLoss,
    /// A restore: the history may be missing (the backup replaces it at
    /// once) and its anchor is not compared.
    Restore,
}

/// The setting that holds the history's random id.
const HISTORY_ID: &str = "history_id";

/// The setting that says to which key and file the recovery key was
/// escrowed ([`Escrowed`]).
const RECOVERY_ESCROW: &str = "recovery_escrow";

impl HistoryStore {
    /// Opens (or creates) the history in `data_dir`, with its key from the OS
    /// keychain. The directory is made owner-only. If a key rotation was
    /// interrupted after the database took the new key, the new key (kept
    /// under its own keychain entry until then) opens it and becomes the key.
    ///
    /// A new history is made only on a first run: never where a history was
    /// kept before (see [`Error::HistoryMissing`]), and a history that lost
    /// committed work since its last anchor is refused
    /// ([`Error::AuditLoss`], see [`crate::history::anchor`]).
    pub fn open_in(data_dir: &Path) -> Result<Self> {
        Self::open_in_mode(data_dir, OpenMode::Normal)
    }

    /// [`HistoryStore::open_in`] with what `mode` accepts beyond it.
    pub fn open_in_mode(data_dir: &Path, mode: OpenMode) -> Result<Self> {
        let path = database_path(data_dir)?;
        let in_use = hold_history(&path)?;
        if mode != OpenMode::Restore {
            refuse_a_lost_history(&path)?;
        }
        let key = keychain::database_key(&path)?;
        let (mut store, key) = match Self::open(&path, &key) {
            Err(Error::WrongKeyOrNotADatabase { .. })
                if keychain::pending_key(&path)?.is_some() =>
            {
                let pending = keychain::pending_key(&path)?
                    .ok_or(Error::KeyMissing { path: path.clone() })?;
                let store = Self::open(&path, &pending)?;
                keychain::store_database_key(&path, &pending)?;
                keychain::delete_pending_key(&path)?;
                (store, pending)
            }
            other => (other?, key),
        };
        store.check_anchor(mode)?;
        store.policy = Policy::load()?;
        let recovery = store.ensure_recovery(&key)?;
        // Looking changes nothing; every other open escrows (or tries again).
        if mode != OpenMode::Inspect {
            store.escrow_recovery_key(&recovery)?;
        }
        // Records past the retention period go whenever any front end opens
        // the history (the app, `medtext classify --save`, `medtext serve`),
        // not only when the app starts. A restore is replaced at once.
        if matches!(mode, OpenMode::Normal | OpenMode::AcceptLoss) {
            store.apply_retention()?;
        }
        store._in_use = Some(in_use);
        Ok(store)
    }

    /// Compares the chain with the anchor kept beside the database, then
    /// anchors every commit from here on (see [`crate::history::anchor`]). Nothing is
    /// written before the comparison: a refused history keeps its files as
    /// they were, write-ahead log included, for whoever restores it.
    fn check_anchor(&mut self, mode: OpenMode) -> Result<()> {
        let kept = match mode {
            OpenMode::Restore => None,
            _ => anchor::read_file(&self.path)?,
        };
        let id = self.setting(HISTORY_ID)?;
        let problem = match (&kept, &id) {
            (None, _) => None,
            (Some(_), None) => Some(
                "the history's id is gone although its anchor names one (the file was put back from an older copy, or the work that set the id was lost)"
                    .to_string(),
            ),
            // The anchor of a history this one replaced (a restore).
            (Some(kept), Some(id)) if kept.history != *id => None,
            (Some(kept), Some(_)) => self.lost_since(kept)?,
        };
        let accepted = match (problem, mode) {
            (None, _) => None,
            (Some(problem), OpenMode::Normal) => {
                self.keep_files_as_they_are();
                return Err(Error::AuditLoss {
                    path: self.path.clone(),
                    problem,
                });
            }
            (Some(problem), OpenMode::Inspect) => {
                self.keep_files_as_they_are();
                self.anchor_problem = Some(problem);
                return Ok(());
            }
            (Some(problem), OpenMode::AcceptLoss | OpenMode::Restore) => Some(problem),
        };
        if mode == OpenMode::Inspect {
            // Looking changes nothing, the anchors included.
            return Ok(());
        }
        let history = match id {
            Some(id) => id,
            None => {
                let id = anchor::new_history_id()?;
                self.put_unaudited_setting(HISTORY_ID, id.clone())?;
                id
            }
        };
        self.anchor_history = Some(history);
        match accepted {
            Some(problem) => {
                self.audit_only(Action::AuditLoss, problem.clone())?;
                self.anchor_problem = Some(problem);
                Ok(())
            }
            None => self.anchor_head(),
        }
    }

    /// Closing must not checkpoint the write-ahead log into the database:
    /// a refused history is left as it was found.
    fn keep_files_as_they_are(&self) {
        let _ = self
            .conn
            .set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true);
    }

    /// What the chain lost since `kept` was anchored, if anything.
    fn lost_since(&self, kept: &anchor::Anchor) -> Result<Option<String>> {
        let found: Option<String> = self
            .conn
            .query_row("SELECT hash FROM audit WHERE seq = ?1", [kept.seq], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| store_error(&self.path, e))?;
        let head = self.chain_head()?.map_or(0, |(seq, _)| seq);
        Ok(match found {
            Some(hash) if hash == kept.hash => None,
            Some(_) => Some(format!(
                "audit entry {} is not the one committed (the trail was rewritten, or the file was put back from another copy)",
                kept.seq
            )),
            None => Some(format!(
                "the audit trail ends at entry {head}, but entry {} was committed (entries {} to {} and the records they audit are gone: the write-ahead log was damaged or removed, or the file was put back from an older copy)",
                kept.seq,
                head + 1,
                kept.seq
            )),
        })
    }

    /// The newest audit entry's sequence number and hash.
    fn chain_head(&self) -> Result<Option<(i64, String)>> {
        self.conn
            .query_row(
                "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| store_error(&self.path, e))
    }

    /// Writes the chain's head to the anchor file and the system log. The
    /// commit is on disk already: a failure here is logged, not returned,
    /// so no caller takes a saved record for a lost one.
    fn anchor_head(&self) -> Result<()> {
        let Some(history) = &self.anchor_history else {
            return Ok(());
        };
        let written = anchor::write_file(&self.path, || {
            Ok(self.chain_head()?.map(|(seq, hash)| anchor::Anchor {
                history: history.clone(),
                seq,
                hash,
            }))
        });
        match written {
            Ok(Some(head)) => anchor::send_to_system_log(&head),
            Ok(None) => {}
            Err(e) => tracing::warn!(event = "audit_anchor_not_written", error = e.kind()),
        }
        Ok(())
    }

    /// When opened with [`OpenMode::Inspect`]: what the history lost since
    /// its last anchor, if anything; with [`OpenMode::AcceptLoss`], the loss
    /// just recorded in the audit trail.
    pub fn anchor_problem(&self) -> Option<&str> {
        self.anchor_problem.as_deref()
    }

    /// The history's random id, which its anchors carry (see
    /// [`crate::history::anchor`]).
    pub fn history_id(&self) -> Result<Option<String>> {
        self.setting(HISTORY_ID)
    }

    /// Gives this history a new random id. A restored history gets one
    /// before it takes the old one's place: it starts a new line of
    /// anchors, and the replaced history's anchor is not compared with it.
    pub(crate) fn renew_history_id(&mut self) -> Result<()> {
        self.put_unaudited_setting(HISTORY_ID, anchor::new_history_id()?)
    }

    /// Anchors every commit from here on under the history's id (a store
    /// opened with the plain [`HistoryStore::open`] does not).
    pub(crate) fn anchor_commits(&mut self) -> Result<()> {
        self.anchor_history = self.setting(HISTORY_ID)?;
        Ok(())
    }

    /// Starts a new, empty history in `data_dir` where the old one is gone
    /// (the file deleted or emptied) and no copy of it can be put back. The
    /// old recovery file and anchor are kept aside under a dated name
    /// (the escrowed recovery key still opens the old recovery file), and
    /// the old recovery key leaves the keychain; the next open makes the new
    /// history. Refused while the history is there or open elsewhere.
    pub fn start_new(data_dir: &Path) -> Result<Vec<PathBuf>> {
        let path = database_path(data_dir)?;
        let _alone = hold_history_alone(&path)?;
        if !history_is_gone(&path)? {
            return Err(Error::Store {
                path,
                problem: "the history is there: nothing to start over (delete records with `medtext history delete`)".into(),
            });
        }
        let stamp = now_ms();
        let mut kept = Vec::new();
        for old in [recovery::file_for(&path), anchor::file_for(&path)] {
            if old.exists() {
                let mut name = old.file_name().unwrap_or_default().to_os_string();
                name.push(format!(".retired-{stamp}"));
                let aside = old.with_file_name(name);
                std::fs::rename(&old, &aside).map_err(|e| Error::io(&old, e))?;
                kept.push(aside);
            }
        }
        keychain::delete_recovery_key(&path)?;
        Ok(kept)
    }

    /// Makes sure the history has a recovery key in the keychain and a
    /// recovery file holding `key` (rewritten after a rotation, finished or
    /// interrupted), and returns the recovery key. A recovery key made now
    /// (first run) is kept for [`HistoryStore::take_new_recovery_key`] to
    /// show once, unless it is escrowed.
    fn ensure_recovery(&mut self, key: &DatabaseKey) -> Result<RecoveryKey> {
        match keychain::recovery_key(&self.path)? {
            Some(recovery) => {
                let holds_key = recovery::read(&self.path, &recovery)
                    .is_ok_and(|stored| stored.to_hex() == key.to_hex());
                if !holds_key {
                    recovery::write(&self.path, &recovery, key)?;
                }
                Ok(recovery)
            }
            None => {
                let recovery = RecoveryKey::generate()?;
                recovery::write(&self.path, &recovery, key)?;
                keychain::store_recovery_key(&self.path, &recovery)?;
                self.new_recovery_key = Some(recovery.clone());
                Ok(recovery)
            }
        }
    }

    /// Escrows `recovery` to IT when the policy names IT's key and this
    /// history does not record it as escrowed to that key already (see
    /// [`crate::history::escrow`]). Escrowed, a new key is not shown. A file that
    /// cannot be written fails safe: the key is shown as without escrow,
    /// [`HistoryStore::escrow_status`] says why, and the next open tries
    /// again. Neither the log nor the status ever holds the key.
    fn escrow_recovery_key(&mut self, recovery: &RecoveryKey) -> Result<()> {
        let Some(policy) = self.policy.recovery_escrow.clone() else {
            self.escrow = EscrowStatus::NotManaged;
            return Ok(());
        };
        let recorded = self
            .setting(RECOVERY_ESCROW)?
            .and_then(|json| serde_json::from_str::<Escrowed>(&json).ok())
            .filter(|escrowed| escrowed.covers(&policy, recovery));
        if let Some(escrowed) = recorded {
            self.escrow = EscrowStatus::Written {
                file: escrowed.file,
            };
            return Ok(());
        }
        let history_id = self.setting(HISTORY_ID)?.unwrap_or_default();
        let record = EscrowRecord::new(recovery, &history_id, &self.path);
        match escrow::write(&policy, &record) {
            Ok(file) => {
                let escrowed = Escrowed::new(&policy, recovery, file.clone());
                let json = serde_json::to_string(&escrowed).map_err(|e| Error::Escrow {
                    problem: format!("the escrow cannot be recorded: {e}"),
                })?;
                self.put_unaudited_setting(RECOVERY_ESCROW, json)?;
                tracing::info!(event = "recovery_key_escrowed");
                self.new_recovery_key = None;
                self.escrow = EscrowStatus::Written { file };
            }
            Err(e) => {
                tracing::warn!(event = "recovery_key_not_escrowed", error = e.kind());
                self.escrow = EscrowStatus::NotWritten {
                    reason: match e {
                        Error::Escrow { problem } => problem,
                        other => other.to_string(),
                    },
                };
            }
        }
        Ok(())
    }

    /// The recovery key made when this history was set up, once, unless it
    /// was escrowed: the app shows it at first run for IT to keep.
    pub fn take_new_recovery_key(&mut self) -> Option<RecoveryKey> {
        self.new_recovery_key.take()
    }

    /// Whether the recovery key is escrowed to IT, as of the last open
    /// (which tries again where it failed before). An open to inspect
    /// ([`OpenMode::Inspect`]) does not look: it reports `NotManaged`.
    pub fn escrow_status(&self) -> &EscrowStatus {
        &self.escrow
    }

    /// Opens the history in `data_dir` with its recovery key when the
    /// keychain entry is lost or wrong, and puts the database key and the
    /// recovery key back in the keychain. Nothing is stored unless the keys
    /// open the database.
    pub fn recover(data_dir: &Path, recovery_text: &str) -> Result<Self> {
        let path = database_path(data_dir)?;
        if !path.exists() {
            return Err(Error::Store {
                path,
                problem: "there is no history database to recover".into(),
            });
        }
        let recovery_key = RecoveryKey::parse(recovery_text)?;
        let key = recovery::read(&path, &recovery_key)?;
        let in_use = hold_history(&path)?;
        let mut store = Self::open(&path, &key)?;
        store._in_use = Some(in_use);
        store.policy = Policy::load()?;
        keychain::store_database_key(&path, &key)?;
        keychain::store_recovery_key(&path, &recovery_key)?;
        // After the keys are back: a history that also lost work is then
        // refused like any other, and `medtext audit accept-loss` can open it.
        store.check_anchor(OpenMode::Normal)?;
        store.escrow_recovery_key(&recovery_key)?;
        Ok(store)
    }

    /// Re-encrypts the database with a new random key (`PRAGMA rekey`),
    /// keeps the new key in the keychain and in the recovery file (the
    /// recovery key stays the same). Crash-safe: the new key is stored under
    /// a pending keychain entry before the database uses it, and
    /// [`HistoryStore::open_in`] finishes an interrupted rotation.
    pub fn rotate_key(&mut self) -> Result<()> {
        let current = keychain::database_key(&self.path)?;
        let key = DatabaseKey::generate()?;
        keychain::store_pending_key(&self.path, &key)?;
        if let Err(e) = self.rekey_pages(&key) {
            // The file kept its key (a second connection read it): go on
            // with that, and forget the new one. If the old key does not
            // open it either, the pending key stays for `open_in` to try.
            self.reopen(&current)?;
            keychain::delete_pending_key(&self.path)?;
            return Err(e);
        }
        // The file has the new key from here: keep it (and the recovery
        // file) before anything else can fail.
        keychain::store_database_key(&self.path, &key)?;
        keychain::delete_pending_key(&self.path)?;
        self.ensure_recovery(&key)?;
        self.after_rekey()
    }

    /// Re-encrypts every page with `key` and records it in the audit trail.
    /// The caller keeps the key: [`HistoryStore::rotate_key`] does so in the
    /// keychain. On an error nothing more is written through this
    /// connection, whose keys are then unsure: reopen the store (as
    /// `rotate_key` does).
    pub fn rekey(&mut self, key: &DatabaseKey) -> Result<()> {
        self.rekey_pages(key)?;
        self.after_rekey()
    }

    /// Re-encrypts every page with `key` and checks, through a second
    /// connection, that the file now opens with it.
    fn rekey_pages(&mut self, key: &DatabaseKey) -> Result<()> {
        let path = self.path.clone();
        // SQLCipher re-encrypts in rollback-journal mode: leave WAL for the
        // rekey (checkpointing everything into the file first), then return.
        self.conn
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode = DELETE;")
            .map_err(|e| store_error(&path, e))?;
        self.conn
            .execute_batch(&format!("PRAGMA rekey = \"x'{}'\";", key.to_hex()))
            .map_err(|e| store_error(&path, e))?;
        confirm_key(&path, key)
    }

    /// Back to the write-ahead log, and the rotation in the audit trail.
    fn after_rekey(&mut self) -> Result<()> {
        self.conn
            .execute_batch("PRAGMA journal_mode = WAL;")
            .map_err(|e| store_error(&self.path, e))?;
        self.in_transaction(|tx| audit::append(tx, Action::KeyRotation, Event::default(), now_ms()))
    }

    /// Closes this connection and opens the file again with `key`.
    fn reopen(&mut self, key: &DatabaseKey) -> Result<()> {
        let placeholder = Connection::open_in_memory().map_err(|e| store_error(&self.path, e))?;
        // Closed before the new one opens: it may hold the rekey's keys.
        drop(std::mem::replace(&mut self.conn, placeholder));
        self.conn = Self::open(&self.path, key)?.conn;
        Ok(())
    }

    /// Opens the database at `path` with `key`, creating it only if no file is
    /// there.
    pub fn open(path: &Path, key: &DatabaseKey) -> Result<Self> {
        Self::open_raw(path, &key.to_hex())
    }

    /// [`HistoryStore::open`] with SQLCipher's raw key literal body: 64 hex
    /// digits of key, or 96 with the file's salt (backups).
    pub(crate) fn open_raw(path: &Path, key_hex: &str) -> Result<Self> {
        let exists = path.exists();
        if exists && is_empty_file(path)? {
            // An empty file is what a first run leaves when it is stopped
            // before the database is set up: nothing can have been saved
            // (records go to the write-ahead log only after the header is
            // written), so it is set up now. An empty file beside a log that
            // holds data is damage, and is reported.
            let wal = PathBuf::from(format!("{}-wal", path.display()));
            if wal.exists() && !is_empty_file(&wal)? {
                return Err(Error::WrongKeyOrNotADatabase {
                    path: path.to_path_buf(),
                });
            }
        }
        let flags = if exists {
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX
        } else {
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
        };
        let conn = Connection::open_with_flags(path, flags).map_err(|e| store_error(path, e))?;
        // Raw 256-bit key: no passphrase derivation needed, the key is random.
        conn.execute_batch(&format!("PRAGMA key = \"x'{key_hex}'\";"))
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
             PRAGMA foreign_keys = ON;
             PRAGMA temp_store = MEMORY;",
        )
        .map_err(|e| store_error(path, e))?;
        restrict_to_owner(path)?;
        let mut store = Self {
            conn,
            path: path.to_path_buf(),
            new_recovery_key: None,
            escrow: EscrowStatus::NotManaged,
            policy: Policy::default(),
            _in_use: None,
            audit_text_key: None,
            anchor_history: None,
            anchor_problem: None,
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

    /// Saves a classification of `text` with its audit entry, in one
    /// transaction; returns the new record's id once both are on disk.
    pub fn save(&mut self, text: &str, c: &Classification) -> Result<i64> {
        Ok(self.save_many(&[(text, c)])?[0])
    }

    /// Saves many classifications (a batch) in one transaction, each with
    /// its audit entry: all are on disk when this returns, or none is.
    pub fn save_many(&mut self, items: &[(&str, &Classification)]) -> Result<Vec<i64>> {
        let encoded = items
            .iter()
            .map(|(_, c)| {
                let probabilities = serde_json::to_string(&c.probabilities)?;
                let evidence = serde_json::to_string(&c.evidence)?;
                Ok((probabilities, evidence))
            })
            .collect::<serde_json::Result<Vec<_>>>()
            .map_err(|e| Error::Store {
                path: self.path.clone(),
                problem: format!("cannot encode a result: {e}"),
            })?;
        let now = now_ms();
        let text_key = self.audit_text_key()?;
        self.in_transaction(|tx| {
            let mut ids = Vec::with_capacity(items.len());
            // Ids are never given twice, even after the newest record was
            // deleted: a stale id (in the app, a script, the audit trail)
            // must not name another patient's record. The highest id ever
            // given is kept in the settings.
            let mut id: i64 = tx.query_row(LAST_RECORD_ID, [], |r| r.get(0))?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO classifications
                 (id, created_at_ms, text, pack, pack_version, head, top_label, top_probability,
                  needs_review, probabilities, windows, evidence, model_sha256)
                 VALUES (?13, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?;
            for ((text, c), (probabilities, evidence)) in items.iter().zip(&encoded) {
                id += 1;
                insert.execute(params![
                    now,
                    text,
                    c.pack,
                    c.pack_version,
                    c.head,
                    c.top.id,
                    f64::from(c.top.probability),
                    c.needs_review,
                    probabilities,
                    c.windows as i64,
                    evidence,
                    c.model_sha256,
                    id,
                ])?;
                audit::append(
                    tx,
                    Action::Classify,
                    Event {
                        record_ids: &[id],
                        model_sha256: Some(&c.model_sha256),
                        text_sha256: Some(audit::text_digest(text_key.as_bytes(), text)),
                        detail: None,
                    },
                    now,
                )?;
                ids.push(id);
            }
            tx.execute(PUT_SETTING, ["last_record_id", &id.to_string()])?;
            Ok(ids)
        })
    }

    /// Runs `work` in a transaction: committed when it succeeds, rolled back
    /// (nothing written) when it fails. It takes the write lock at once: a
    /// transaction that reads first (the audit trail's last entry) and then
    /// writes would fail at once with "database is locked" while another
    /// process (the CLI beside the app) writes, instead of waiting for it.
    pub(crate) fn in_transaction<T>(
        &mut self,
        work: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| store_error(&path, e))?;
        let value = work(&tx).map_err(|e| store_error(&path, e))?;
        tx.commit().map_err(|e| store_error(&path, e))?;
        self.anchor_head()?;
        Ok(value)
    }

    /// The record `id` in full; the view is audited.
    pub fn record(&mut self, id: i64) -> Result<HistoryRecord> {
        let record = self.load_record(id)?;
        let model = record.model_sha256.clone();
        self.in_transaction(|tx| {
            audit::append(
                tx,
                Action::View,
                Event {
                    record_ids: &[id],
                    model_sha256: Some(&model),
                    ..Event::default()
                },
                now_ms(),
            )
        })?;
        Ok(record)
    }

    fn load_record(&self, id: i64) -> Result<HistoryRecord> {
        self.conn
            .query_row(
                &format!(
                    "SELECT {ENTRY_COLUMNS}, c.text, c.evidence, c.model_sha256, c.corrected_label,
                            c.feedback_note, c.feedback_at_ms
                     FROM classifications c WHERE c.id = ?1"
                ),
                params![id],
                record_from_row,
            )
            .optional()
            .map_err(|e| store_error(&self.path, e))?
            .ok_or(Error::RecordNotFound { id })
    }

    /// Writes the records `ids` to `out`, a new file, as CSV or JSON for
    /// research, and records the export (with the ids) in the audit trail.
    /// The file is NOT encrypted: the caller must say so. It is complete or
    /// absent (see [`NewFile`]); returns how many records it holds.
    pub fn export_records(
        &mut self,
        ids: &[i64],
        format: ExportFormat,
        out: &Path,
    ) -> Result<usize> {
        self.policy.check_export()?;
        let mut file = NewFile::create(out)?;
        let records = ids
            .iter()
            .map(|&id| self.load_record(id))
            .collect::<Result<Vec<_>>>()?;
        let bytes = match format {
            ExportFormat::Json => {
                serde_json::to_vec_pretty(&records).map_err(|e| Error::Store {
                    path: self.path.clone(),
                    problem: format!("cannot encode the export: {e}"),
                })?
            }
            ExportFormat::Csv => records_csv(&records).map_err(|e| Error::Store {
                path: self.path.clone(),
                problem: format!("cannot encode the export: {e}"),
            })?,
        };
        file.write_all(&bytes)?;
        let exported: Vec<i64> = records.iter().map(|r| r.entry.id).collect();
        let detail = format!("format={} rows={}", format.as_str(), exported.len());
        audited_place(file, || {
            self.in_transaction(|tx| {
                audit::append(
                    tx,
                    Action::Export,
                    Event {
                        record_ids: &exported,
                        detail: Some(detail),
                        ..Event::default()
                    },
                    now_ms(),
                )
            })
        })?;
        Ok(exported.len())
    }

    /// Ids of every record matching `query` (all pages), newest first.
    pub fn matching_ids(&self, query: &HistoryQuery) -> Result<Vec<i64>> {
        let mut ids = Vec::new();
        let mut page_query = HistoryQuery {
            offset: 0,
            limit: MAX_PAGE,
            ..query.clone()
        };
        loop {
            let page = self.search(&page_query)?;
            if page.entries.is_empty() {
                return Ok(ids);
            }
            page_query.offset += page.entries.len();
            ids.extend(page.entries.iter().map(|e| e.id));
        }
    }

    /// Adds the word evidence of record `id`, computed after the record was
    /// saved (the app shows a result at once and its evidence a moment later).
    pub fn set_evidence(&mut self, id: i64, evidence: &[WordEvidence]) -> Result<()> {
        let json = serde_json::to_string(evidence).map_err(|e| Error::Store {
            path: self.path.clone(),
            problem: format!("cannot encode evidence: {e}"),
        })?;
        let changed = self
            .conn
            .execute(
                "UPDATE classifications SET evidence = ?1 WHERE id = ?2",
                params![json, id],
            )
            .map_err(|e| store_error(&self.path, e))?;
        if changed == 0 {
            return Err(Error::RecordNotFound { id });
        }
        Ok(())
    }

    /// Records `feedback` on record `id` (replacing earlier feedback).
    pub fn set_feedback(&mut self, id: i64, feedback: &Feedback) -> Result<()> {
        if feedback.verdict == Verdict::Corrected
            && feedback
                .corrected_label
                .as_deref()
                .is_none_or(|l| l.trim().is_empty())
        {
            return Err(Error::Store {
                path: self.path.clone(),
                problem: "a correction needs the right label".into(),
            });
        }
        let now = now_ms();
        let changed = self.in_transaction(|tx| {
            let changed = tx.execute(
                "UPDATE classifications SET feedback = ?1, corrected_label = ?2,
                     feedback_note = ?3, feedback_at_ms = ?4 WHERE id = ?5",
                params![
                    feedback.verdict.as_str(),
                    feedback.corrected_label,
                    feedback.note,
                    now,
                    id
                ],
            )?;
            if changed == 1 {
                audit::append(
                    tx,
                    Action::Feedback,
                    Event {
                        record_ids: &[id],
                        detail: Some(format!("verdict={}", feedback.verdict.as_str())),
                        ..Event::default()
                    },
                    now,
                )?;
            }
            Ok(changed)
        })?;
        if changed == 0 {
            return Err(Error::RecordNotFound { id });
        }
        Ok(())
    }

    /// Deletes the records `ids` (those that exist); returns how many.
    /// `secure_delete` overwrites their bytes in the file.
    pub fn delete(&mut self, ids: &[i64]) -> Result<usize> {
        let now = now_ms();
        self.in_transaction(|tx| {
            let mut deleted = Vec::new();
            for &id in ids {
                if tx.execute("DELETE FROM classifications WHERE id = ?1", [id])? == 1 {
                    deleted.push(id);
                }
            }
            if !deleted.is_empty() {
                audit::append(
                    tx,
                    Action::Delete,
                    Event {
                        record_ids: &deleted,
                        ..Event::default()
                    },
                    now,
                )?;
            }
            Ok(deleted.len())
        })
    }

    /// Deletes every record; returns how many.
    pub fn delete_all(&mut self) -> Result<usize> {
        self.delete_where(Action::Delete, "1 = 1", [], "all".into())
    }

    /// Deletes the records saved before `cutoff_ms` (the retention period);
    /// returns how many.
    pub fn purge_older_than(&mut self, cutoff_ms: i64) -> Result<usize> {
        self.delete_where(
            Action::RetentionPurge,
            "created_at_ms < ?1",
            [cutoff_ms],
            format!("before_ms={cutoff_ms}"),
        )
    }

    fn delete_where<const N: usize>(
        &mut self,
        action: Action,
        condition: &str,
        values: [i64; N],
        detail: String,
    ) -> Result<usize> {
        let now = now_ms();
        self.in_transaction(|tx| {
            let deleted = tx.execute(
                &format!("DELETE FROM classifications WHERE {condition}"),
                rusqlite::params_from_iter(values),
            )?;
            if deleted > 0 {
                audit::append(
                    tx,
                    action,
                    Event {
                        detail: Some(format!("{detail} rows={deleted}")),
                        ..Event::default()
                    },
                    now,
                )?;
            }
            Ok(deleted)
        })
    }

    /// The records matching `query`, newest first (by id: records are
    /// numbered as they are saved), one page at a time.
    pub fn search(&self, query: &HistoryQuery) -> Result<HistoryPage> {
        let mut conditions: Vec<String> = Vec::new();
        let mut values: Vec<rusqlite::types::Value> = Vec::new();
        let mut bind = |condition: &str, value: rusqlite::types::Value| {
            values.push(value);
            conditions.push(condition.replace('?', &format!("?{}", values.len())));
        };
        // With words, the full-text index drives the query newest first and
        // stops at the page: a word in every record costs no more than a
        // rare one. CROSS JOIN keeps SQLite from looping over the other
        // filters outside and probing the index once per record instead.
        let (source, newest_first) = match query.text.as_deref().and_then(fts_query) {
            Some(fts) => {
                bind("classifications_fts MATCH ?", fts.into());
                (
                    "classifications_fts CROSS JOIN classifications c ON c.id = classifications_fts.rowid",
                    "classifications_fts.rowid DESC",
                )
            }
            None => ("classifications c", "c.id DESC"),
        };
        if let Some(label) = &query.label {
            bind("c.top_label = ?", label.clone().into());
        }
        if let Some(pack) = &query.pack {
            bind("c.pack = ?", pack.clone().into());
        }
        if let Some(from) = query.from_ms {
            bind("c.created_at_ms >= ?", from.into());
        }
        if let Some(to) = query.to_ms {
            bind("c.created_at_ms <= ?", to.into());
        }
        match query.feedback {
            Some(FeedbackFilter::Agree) => conditions.push("c.feedback = 'agree'".into()),
            Some(FeedbackFilter::Corrected) => conditions.push("c.feedback = 'corrected'".into()),
            Some(FeedbackFilter::None) => conditions.push("c.feedback IS NULL".into()),
            None => {}
        }
        let filter = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        // Counting every match of a common word is most of a search's cost,
        // and nobody pages through more than this: beyond it the total says
        // "at least".
        let counted: i64 = self
            .conn
            .query_row(
                &format!(
                    "SELECT count(*) FROM (SELECT 1 FROM {source} {filter} LIMIT {})",
                    COUNT_LIMIT + 1
                ),
                rusqlite::params_from_iter(values.iter()),
                |r| r.get(0),
            )
            .map_err(|e| store_error(&self.path, e))?;
        let limit = match query.limit {
            0 => 50,
            n => n.min(MAX_PAGE),
        };
        let mut page_values = values;
        page_values.push((limit as i64).into());
        page_values.push((query.offset as i64).into());
        let n = page_values.len();
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {ENTRY_COLUMNS} FROM {source} {filter}
                 ORDER BY {newest_first} LIMIT ?{} OFFSET ?{n}",
                n - 1
            ))
            .map_err(|e| store_error(&self.path, e))?;
        let entries = stmt
            .query_map(
                rusqlite::params_from_iter(page_values.iter()),
                entry_from_row,
            )
            .map_err(|e| store_error(&self.path, e))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| store_error(&self.path, e))?;
        let counted = usize::try_from(counted).unwrap_or_default();
        Ok(HistoryPage {
            entries,
            total: counted.min(COUNT_LIMIT),
            more_than_total: counted > COUNT_LIMIT,
        })
    }

    /// The machine policy this history follows.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Makes this history follow `policy` (the one [`HistoryStore::open_in`]
    /// loaded, or another in tests).
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }

    /// How long records are kept: `None` keeps them until deleted. The
    /// machine policy's period, when it sets one, wins over the user's.
    pub fn retention_days(&self) -> Result<Option<u32>> {
        if let Some(days) = self.policy.retention_days {
            return Ok(Some(days));
        }
        Ok(self.setting("retention_days")?.and_then(|v| v.parse().ok()))
    }

    /// Sets how long records are kept (`None`: until deleted); audited.
    pub fn set_retention_days(&mut self, days: Option<u32>) -> Result<()> {
        self.policy
            .check_unmanaged(self.policy.retention_days.is_some(), "the retention period")?;
        if days == Some(0) {
            return Err(Error::Store {
                path: self.path.clone(),
                problem: "a retention period must be at least one day".into(),
            });
        }
        self.put_setting("retention_days", days.map(|d| d.to_string()), true)
    }

    /// Minutes without use before the app locks: the machine policy's, else
    /// the user's (`None`: no idle lock).
    pub fn idle_lock_minutes(&self) -> Result<Option<u32>> {
        if let Some(minutes) = self.policy.idle_lock_minutes {
            return Ok(Some(minutes));
        }
        Ok(self
            .setting("idle_lock_minutes")?
            .and_then(|v| v.parse().ok()))
    }

    /// Sets the idle lock time (`None`: off); audited.
    pub fn set_idle_lock_minutes(&mut self, minutes: Option<u32>) -> Result<()> {
        self.policy.check_unmanaged(
            self.policy.idle_lock_minutes.is_some(),
            "the idle lock time",
        )?;
        if minutes.is_some_and(|m| !(1..=1440).contains(&m)) {
            return Err(Error::Store {
                path: self.path.clone(),
                problem: "the idle lock time must be between 1 and 1440 minutes".into(),
            });
        }
        self.put_setting("idle_lock_minutes", minutes.map(|m| m.to_string()), true)
    }

    /// The Argon2id hash of the unlock passphrase, if one was set.
    pub fn unlock_passphrase_hash(&self) -> Result<Option<String>> {
        self.setting("unlock_passphrase")
    }

    /// Sets the unlock passphrase (kept as its Argon2id hash); audited
    /// without the hash.
    pub fn set_unlock_passphrase(&mut self, passphrase: &str) -> Result<()> {
        let hash = crate::machine::idle_lock::hash_passphrase(passphrase)?;
        self.put_setting("unlock_passphrase", Some(hash), false)
    }

    /// The history's key for the audit's text digests
    /// ([`audit::text_digest`]), made the first time one is needed and then
    /// kept in memory. It stays inside the encrypted history (and its
    /// backups): never shown, never exported.
    fn audit_text_key(&mut self) -> Result<zeroize::Zeroizing<String>> {
        if let Some(key) = &self.audit_text_key {
            return Ok(key.clone());
        }
        let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut_slice()).map_err(|e| Error::Store {
            path: self.path.clone(),
            problem: format!("the operating system gave no random bytes: {e}"),
        })?;
        let candidate = zeroize::Zeroizing::new(hex::encode(bytes.as_slice()));
        // Another process (the app beside the CLI) may have made it first:
        // whichever was written is the key.
        let key = self.in_transaction(|tx| {
            tx.execute(
                "INSERT OR IGNORE INTO settings (name, value) VALUES ('audit_text_key', ?1)",
                [candidate.as_str()],
            )?;
            tx.query_row(
                "SELECT value FROM settings WHERE name = 'audit_text_key'",
                [],
                |r| r.get::<_, String>(0),
            )
            .map(zeroize::Zeroizing::new)
        })?;
        self.audit_text_key = Some(key.clone());
        Ok(key)
    }

    /// The highest record id this history ever gave.
    pub(crate) fn last_record_id(&self) -> Result<i64> {
        self.conn
            .query_row(LAST_RECORD_ID, [], |r| r.get(0))
            .map_err(|e| store_error(&self.path, e))
    }

    /// Makes new record ids start above `id` too (a restore keeps those of
    /// the history it replaced from coming back).
    pub(crate) fn keep_ids_above(&mut self, id: i64) -> Result<()> {
        let highest = self.last_record_id()?.max(id);
        self.put_unaudited_setting("last_record_id", highest.to_string())
    }

    /// Forgets the unlock passphrase and the count of wrong attempts (`medtext
    /// key reset-lock`, for a forgotten passphrase); audited.
    pub fn reset_unlock(&mut self) -> Result<()> {
        self.put_setting("unlock_passphrase", None, false)?;
        self.set_unlock_failures(0)
    }

    /// Wrong unlock attempts in a row, as last kept (see
    /// [`crate::machine::idle_lock::IdleLock::resume_failures`]).
    pub fn unlock_failures(&self) -> Result<u32> {
        Ok(self
            .setting("unlock_failures")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// Keeps the count of wrong unlock attempts.
    pub fn set_unlock_failures(&mut self, failures: u32) -> Result<()> {
        self.put_unaudited_setting("unlock_failures", failures.to_string())
    }

    /// Writes a value the history keeps for itself (a counter, a mark), not
    /// a setting anyone changes: not audited.
    fn put_unaudited_setting(&mut self, name: &str, value: String) -> Result<()> {
        self.conn
            .execute(PUT_SETTING, [name, &value])
            .map(|_| ())
            .map_err(|e| store_error(&self.path, e))
    }

    fn setting(&self, name: &str) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT value FROM settings WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| store_error(&self.path, e))
    }

    /// Writes (or with `None` removes) a setting and audits the change, with
    /// its value when `audit_value`.
    fn put_setting(&mut self, name: &str, value: Option<String>, audit_value: bool) -> Result<()> {
        let detail = match (&value, audit_value) {
            (Some(v), true) => format!("{name}={v}"),
            (None, _) => format!("{name}=off"),
            (Some(_), false) => format!("{name} changed"),
        };
        self.in_transaction(|tx| {
            match &value {
                Some(v) => tx.execute(PUT_SETTING, [name, v.as_str()])?,
                None => tx.execute("DELETE FROM settings WHERE name = ?1", [name])?,
            };
            audit::append(
                tx,
                Action::SettingsChange,
                Event {
                    detail: Some(detail),
                    ..Event::default()
                },
                now_ms(),
            )
        })
    }

    /// Deletes the records older than the retention period, if one is set;
    /// returns how many. Every everyday open runs it, and long-running front
    /// ends run it again every hour ([`apply_retention_hourly`]).
    pub fn apply_retention(&mut self) -> Result<usize> {
        match self.retention_days()? {
            Some(days) => self.purge_older_than(now_ms() - i64::from(days) * 24 * 60 * 60 * 1000),
            None => Ok(0),
        }
    }

    /// The audit trail, oldest first.
    pub fn audit_entries(&self) -> Result<Vec<audit::Entry>> {
        audit::entries(&self.conn).map_err(|e| store_error(&self.path, e))
    }

    /// Copies the whole database into the new SQLCipher file at `path`
    /// keyed with `key_hex` (see [`HistoryStore::open_raw`]), schema version
    /// included. The caller creates `path` first, empty and owner-only: the
    /// connection may not create files (it opened an existing database
    /// without SQLITE_OPEN_CREATE), and an empty file opens as an empty
    /// database.
    pub(crate) fn export_to(&self, path: &Path, key_hex: &str) -> Result<()> {
        let fail = |e| store_error(path, e);
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(fail)?;
        let target = path.to_string_lossy();
        self.conn
            .execute(
                "ATTACH DATABASE ?1 AS export KEY ?2",
                params![target, format!("x'{key_hex}'")],
            )
            .map_err(fail)?;
        let exported = self
            .conn
            .query_row("SELECT sqlcipher_export('export')", [], |_| Ok(()))
            .and_then(|()| {
                self.conn
                    .pragma_update(Some("export"), "user_version", version)
            });
        let detached = self.conn.execute_batch("DETACH DATABASE export;");
        exported.map_err(fail)?;
        detached.map_err(fail)
    }

    /// Records an action that touches no single record.
    pub(crate) fn audit_only(&mut self, action: Action, detail: String) -> Result<()> {
        self.in_transaction(|tx| {
            audit::append(
                tx,
                action,
                Event {
                    detail: Some(detail),
                    ..Event::default()
                },
                now_ms(),
            )
        })
    }

    /// Writes the audit trail to `out`, a new file, as JSON Lines (one entry
    /// per line, oldest first) and records the export in the trail; returns
    /// how many entries were written. The file is complete or absent (see
    /// [`NewFile`]).
    pub fn export_audit(&mut self, out: &Path) -> Result<usize> {
        let mut file = NewFile::create(out)?;
        let entries = self.audit_entries()?;
        let mut lines = String::new();
        for entry in &entries {
            let line = serde_json::to_string(entry).map_err(|e| Error::Store {
                path: self.path.clone(),
                problem: format!("cannot encode an audit entry: {e}"),
            })?;
            lines.push_str(&line);
            lines.push('\n');
        }
        file.write_all(lines.as_bytes())?;
        audited_place(file, || {
            self.audit_only(
                Action::Export,
                format!("audit-log entries={}", entries.len()),
            )
        })?;
        Ok(entries.len())
    }

    /// Checks every page's authentication code (`cipher_integrity_check`)
    /// and the database structure (`integrity_check`); the problems found,
    /// empty when the file is sound.
    pub fn integrity_problems(&self) -> Result<Vec<String>> {
        let rows = |sql: &str| -> Result<Vec<String>> {
            let mut stmt = self
                .conn
                .prepare(sql)
                .map_err(|e| store_error(&self.path, e))?;
            let found = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(|e| store_error(&self.path, e))?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(|e| store_error(&self.path, e))?;
            Ok(found)
        };
        let mut problems = rows("PRAGMA cipher_integrity_check")?;
        problems.extend(
            rows("PRAGMA integrity_check")?
                .into_iter()
                .filter(|r| r != "ok"),
        );
        Ok(problems)
    }

    /// The `limit` most recent entries, newest first.
    pub fn recent(&self, limit: usize) -> Result<Vec<HistoryEntry>> {
        Ok(self
            .search(&HistoryQuery {
                limit,
                ..HistoryQuery::default()
            })?
            .entries)
    }

    /// Number of saved classifications.
    pub fn count(&self) -> Result<i64> {
        self.conn
            .query_row("SELECT count(*) FROM classifications", [], |r| r.get(0))
            .map_err(|e| store_error(&self.path, e))
    }
}

/// The columns [`entry_from_row`] reads, in its order. List views show the
/// first 160 characters of the text; the full text stays in the row.
const ENTRY_COLUMNS: &str = "c.id, c.created_at_ms, substr(c.text, 1, 160), c.pack,
    c.pack_version, c.head, c.needs_review, c.probabilities, c.top_label, c.feedback";

fn entry_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<HistoryEntry> {
    let probabilities: Vec<LabelScore> = serde_json::from_str(&r.get::<_, String>(7)?)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(7, Type::Text, Box::new(e)))?;
    let top_label: String = r.get(8)?;
    let top = probabilities
        .iter()
        .find(|l| l.id == top_label)
        .cloned()
        .ok_or_else(|| rusqlite::Error::InvalidColumnType(8, "top_label".into(), Type::Text))?;
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
        feedback: r
            .get::<_, Option<String>>(9)?
            .as_deref()
            .and_then(Verdict::parse),
    })
}

fn record_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<HistoryRecord> {
    let entry = entry_from_row(r)?;
    let evidence: String = r.get(11)?;
    let feedback_detail = entry
        .feedback
        .map(|verdict| -> rusqlite::Result<Feedback> {
            Ok(Feedback {
                verdict,
                corrected_label: r.get(13)?,
                note: r.get(14)?,
                at_ms: r.get::<_, Option<i64>>(15)?.unwrap_or_default(),
            })
        })
        .transpose()?;
    Ok(HistoryRecord {
        entry,
        text: r.get(10)?,
        evidence: serde_json::from_str(&evidence)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(11, Type::Text, Box::new(e)))?,
        model_sha256: r.get(12)?,
        feedback_detail,
    })
}

/// Export file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    Csv,
    Json,
}

impl ExportFormat {
    /// The file extension, also the name used in audit entries.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Json => "json",
        }
    }
}

/// The records as CSV; the cells people typed are made safe for a
/// spreadsheet ([`spreadsheet_cell`]).
fn records_csv(records: &[HistoryRecord]) -> std::result::Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "id",
        "created_at_ms",
        "text",
        "top_label",
        "top_probability",
        "needs_review",
        "pack",
        "pack_version",
        "head",
        "model_sha256",
        "feedback",
        "corrected_label",
        "feedback_note",
    ])?;
    for r in records {
        let e = &r.entry;
        let feedback = r.feedback_detail.as_ref();
        w.write_record([
            e.id.to_string(),
            e.created_at_ms.to_string(),
            spreadsheet_cell(&r.text).into_owned(),
            spreadsheet_cell(&e.top.id).into_owned(),
            e.top.probability.to_string(),
            e.needs_review.to_string(),
            e.pack.clone(),
            e.pack_version.clone(),
            e.head.clone(),
            r.model_sha256.clone(),
            feedback.map_or("", |f| f.verdict.as_str()).to_string(),
            feedback
                .and_then(|f| f.corrected_label.as_deref())
                .map_or_else(String::new, |l| spreadsheet_cell(l).into_owned()),
            feedback
                .and_then(|f| f.note.as_deref())
                .map_or_else(String::new, |n| spreadsheet_cell(n).into_owned()),
        ])?;
    }
    w.into_inner().map_err(|e| e.into_error().into())
}

/// The words of `text` as an FTS5 query that can only mean "all of these
/// words, each as a prefix": every word is quoted, so quotes, `*`, `NEAR`,
/// `OR`, column filters and the like are searched for, never obeyed.
fn fts_query(text: &str) -> Option<String> {
    let words: Vec<String> = text
        .split_whitespace()
        .map(|w| format!("\"{}\"*", w.replace('"', "\"\"")))
        .collect();
    (!words.is_empty()).then(|| words.join(" "))
}

pub(crate) fn store_error(path: &Path, e: rusqlite::Error) -> Error {
    if e.sqlite_error_code() == Some(ErrorCode::DatabaseCorrupt) {
        return Error::Damaged {
            path: path.to_path_buf(),
            problem: e.to_string(),
        };
    }
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

/// Puts the finished `file` in place once `audit` has recorded it: no file
/// leaves the history without its audit entry. If the entry cannot be
/// written, or placing fails (then the entry stays, and the error says the
/// file is not there), the file is removed.
pub(crate) fn audited_place(file: NewFile, audit: impl FnOnce() -> Result<()>) -> Result<()> {
    audit()?;
    file.place()
}

/// The lock file beside the database `db`. Every process that has the
/// history open (the app, a `medtext` command) holds it shared; one that
/// replaces the file (a restore) must hold it alone.
fn lock_path(db: &Path) -> PathBuf {
    db.with_extension("lock")
}

/// Holds the history's lock file shared (waiting while a restore runs).
fn hold_history(db: &Path) -> Result<std::fs::File> {
    let path = lock_path(db);
    let file = paths::create_private_file(&path)?;
    file.lock_shared().map_err(|e| Error::io(&path, e))?;
    Ok(file)
}

/// Holds the history's lock file alone, or says who has the history open.
pub(crate) fn hold_history_alone(db: &Path) -> Result<std::fs::File> {
    let path = lock_path(db);
    // Write access, not append: Windows locks only a file opened for it.
    let file = paths::create_private_file(&path)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Store {
            path: db.to_path_buf(),
            problem: "another MedText has the history open (the app, or a medtext command): close it, then try again".into(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
    }
}

/// Checks, through a second connection, that `key` opens every page of the
/// file at `path`. SQLCipher answers a rekey with success even when
/// rewriting the pages failed and was rolled back (a full disk, a lock held
/// by another process), so only reading the file with the new key tells.
fn confirm_key(path: &Path, key: &DatabaseKey) -> Result<()> {
    let unfinished = || {
        Error::Store {
        path: path.to_path_buf(),
        problem: "the re-encryption with the new key did not finish (is the disk full, or is another MedText using the history?); the history keeps its old key".into(),
    }
    };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| store_error(path, e))?;
    conn.execute_batch(&format!("PRAGMA key = \"x'{}'\";", key.to_hex()))
        .map_err(|e| store_error(path, e))?;
    let mut check = conn
        .prepare("PRAGMA cipher_integrity_check")
        .map_err(|_| unfinished())?;
    let problems = check
        .query_map([], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(|_| unfinished())?;
    let readable = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        })
        .is_ok();
    if problems.is_empty() && readable {
        Ok(())
    } else {
        Err(unfinished())
    }
}

/// Refuses to make a new history where one was kept: the database file is
/// missing or empty, but its recovery file, its audit anchor or its
/// recovery key is still there. A first run leaves none of those until the
/// history is set up (the recovery file and key are made once the database
/// opens, and no record can be saved before), so a first run stopped half
/// way is set up again; anything later is a lost history, which must be
/// put back, not silently replaced by an empty one.
fn refuse_a_lost_history(path: &Path) -> Result<()> {
    if !history_is_gone(path)? {
        return Ok(());
    }
    let mut kept = Vec::new();
    if recovery::file_for(path).exists() {
        kept.push("its recovery file");
    }
    if anchor::file_for(path).exists() {
        kept.push("its audit anchor");
    }
    if keychain::recovery_key(path)?.is_some() {
        kept.push("its recovery key in the keychain");
    }
    if kept.is_empty() {
        return Ok(());
    }
    Err(Error::HistoryMissing {
        path: path.to_path_buf(),
        kept: kept.join(" and "),
    })
}

/// Whether the database file is missing or empty (what a first run and a
/// deleted or emptied history both look like).
fn history_is_gone(path: &Path) -> Result<bool> {
    Ok(!path.exists() || is_empty_file(path)?)
}

/// `data_dir/history.db`, the directory created owner-only and resolved (the
/// keychain entry is named by the full path).
fn database_path(data_dir: &Path) -> Result<PathBuf> {
    paths::ensure_private_dir(data_dir)?;
    let data_dir = data_dir
        .canonicalize()
        .map_err(|e| Error::io(data_dir, e))?;
    Ok(data_dir.join(DATABASE_FILE))
}

fn is_empty_file(path: &Path) -> Result<bool> {
    Ok(std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len()
        == 0)
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

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// How often a long-running front end applies the retention period again.
pub const RETENTION_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Applies the retention period every [`RETENTION_EVERY`] on a thread of its
/// own, until `apply` returns `None` (the history it reaches is gone).
///
/// Why: the app and `medtext serve` may run for weeks, and records must not
/// outlive what IT set; opening the history covers only their start.
pub fn apply_retention_hourly(mut apply: impl FnMut() -> Option<Result<usize>> + Send + 'static) {
    let started = std::thread::Builder::new()
        .name("medtext-retention".into())
        .spawn(move || loop {
            std::thread::sleep(RETENTION_EVERY);
            match apply() {
                None => return,
                Some(Err(e)) => {
                    e.logged("retention");
                }
                Some(Ok(_)) => {}
            }
        });
    if started.is_err() {
        // Every open still applies the period; only the hourly pass is lost.
        tracing::warn!(event = "error", operation = "retention", kind = "thread");
    }
}

/// `ms` since 1970 as "YYYY-MM-DD HH:MM UTC" (the epoch itself for a time
/// out of the calendar's range, which no clock gives).
pub fn utc_minute(ms: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute()
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn times_are_shown_to_the_minute_in_utc_across_leap_days() {
        assert_eq!(utc_minute(0), "1970-01-01 00:00 UTC");
        assert_eq!(
            utc_minute(951_782_400_000 + 61 * 60_000 + 59_999),
            "2000-02-29 01:01 UTC"
        );
        assert_eq!(utc_minute(1_709_251_199_000), "2024-02-29 23:59 UTC");
        assert_eq!(utc_minute(-60_000), "1969-12-31 23:59 UTC");
    }

    const SECRET_NOTE: &str =
        "Zebrafinch Quixotic: 71yo M with NSTEMI, troponin 4.2, s/p PCI to LAD.";

    pub(crate) fn sample(top: &str) -> Classification {
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
            model_sha256: "m".repeat(64),
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
    fn random_bytes_and_a_truncated_database_are_refused_and_left_as_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let random: Vec<u8> = (0..8192u32).map(|i| (i * 7919 % 251) as u8).collect();
        let truncated = {
            let db = dir.path().join("whole.db");
            let mut s = HistoryStore::open(&db, &key(5)).unwrap();
            for i in 0..200 {
                s.save(&format!("note {i} {}", "words ".repeat(50)), &sample("x"))
                    .unwrap();
            }
            drop(s);
            let bytes = std::fs::read(&db).unwrap();
            bytes[..bytes.len() / 2].to_vec()
        };
        for (name, content) in [("random.db", random), ("truncated.db", truncated)] {
            let db = dir.path().join(name);
            std::fs::write(&db, &content).unwrap();
            let err = HistoryStore::open(&db, &key(5)).err().unwrap();
            assert!(
                matches!(
                    err,
                    Error::WrongKeyOrNotADatabase { .. } | Error::Damaged { .. }
                ),
                "{name}: {err:?}"
            );
            assert_eq!(std::fs::read(&db).unwrap(), content, "{name} was modified");
        }
    }

    #[test]
    fn an_empty_file_left_by_a_stopped_first_run_is_set_up_unless_a_log_holds_data() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join(DATABASE_FILE);
        std::fs::write(&db, b"").unwrap();
        let mut s = HistoryStore::open(&db, &key(16)).unwrap();
        s.save("note", &sample("x")).unwrap();
        drop(s);
        assert_eq!(
            HistoryStore::open(&db, &key(16)).unwrap().count().unwrap(),
            1
        );

        let other = dir.path().join("other.db");
        let wal = dir.path().join("other.db-wal");
        std::fs::write(&other, b"").unwrap();
        std::fs::write(&wal, b"frames of committed records").unwrap();
        let err = HistoryStore::open(&other, &key(16)).err().unwrap();
        assert!(
            matches!(err, Error::WrongKeyOrNotADatabase { .. }),
            "{err:?}"
        );
        assert_eq!(std::fs::read(&other).unwrap(), b"");
        assert_eq!(std::fs::read(&wal).unwrap(), b"frames of committed records");
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

    fn store(dir: &Path, b: u8) -> HistoryStore {
        HistoryStore::open(&dir.join(DATABASE_FILE), &key(b)).unwrap()
    }

    fn ids(page: &HistoryPage) -> Vec<i64> {
        page.entries.iter().map(|e| e.id).collect()
    }

    fn text_query(text: &str) -> HistoryQuery {
        HistoryQuery {
            text: Some(text.into()),
            ..HistoryQuery::default()
        }
    }

    #[test]
    fn a_database_from_every_earlier_version_is_migrated_with_its_records() {
        for version in 1..MIGRATIONS.len() {
            let dir = tempfile::tempdir().unwrap();
            let db = dir.path().join(DATABASE_FILE);
            {
                // A database as that version of MedText left it.
                let conn = Connection::open(&db).unwrap();
                conn.execute_batch(&format!("PRAGMA key = \"x'{}'\";", key(9).to_hex()))
                    .unwrap();
                for sql in &MIGRATIONS[..version] {
                    conn.execute_batch(sql).unwrap();
                }
                conn.pragma_update(None, "user_version", version as i64)
                    .unwrap();
                conn.execute(
                    "INSERT INTO classifications (created_at_ms, text, pack, pack_version, head,
                         top_label, top_probability, needs_review, probabilities, windows)
                     VALUES (1000, 'old troponin note', 'p', '1', 'h', 'I20-I25', 0.7, 0,
                         '[{\"id\":\"I20-I25\",\"display\":\"Top\",\"probability\":0.7}]', 1)",
                    [],
                )
                .unwrap();
            }
            let mut s = HistoryStore::open(&db, &key(9)).unwrap();
            let version_now: i64 = s
                .conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap();
            assert_eq!(version_now, MIGRATIONS.len() as i64);
            // The old record is found by its words and opens whole.
            let page = s.search(&text_query("tropon")).unwrap();
            assert_eq!(page.total, 1, "from version {version}");
            let record = s.record(page.entries[0].id).unwrap();
            assert_eq!(record.text, "old troponin note");
            assert!(record.evidence.is_empty());
            assert_eq!(record.entry.feedback, None);
            s.save("new note", &sample("x")).unwrap();
            assert_eq!(s.count().unwrap(), 2);
            assert!(audit::verify(&s.audit_entries().unwrap())
                .problems
                .is_empty());
        }
    }

    #[test]
    fn search_combines_words_labels_dates_feedback_and_pages() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(dir.path(), 10);
        let a = s
            .save("chest pain, troponin raised", &sample("I20-I25"))
            .unwrap();
        let b = s
            .save("troponin normal, pleuritic pain", &sample("J00-J99"))
            .unwrap();
        let c = s
            .save("fracture of the left wrist", &sample("S00-T88"))
            .unwrap();
        // Newest first; every word must match, each as a prefix.
        assert_eq!(ids(&s.search(&text_query("troponin")).unwrap()), [b, a]);
        assert_eq!(ids(&s.search(&text_query("tropon pleur")).unwrap()), [b]);
        assert_eq!(ids(&s.search(&text_query("PAIN")).unwrap()), [b, a]);
        let by_label = HistoryQuery {
            label: Some("I20-I25".into()),
            ..HistoryQuery::default()
        };
        assert_eq!(ids(&s.search(&by_label).unwrap()), [a]);
        s.set_feedback(
            c,
            &Feedback {
                verdict: Verdict::Corrected,
                corrected_label: Some("M00-M99".into()),
                note: Some("old injury".into()),
                at_ms: 0,
            },
        )
        .unwrap();
        s.set_feedback(
            a,
            &Feedback {
                verdict: Verdict::Agree,
                corrected_label: None,
                note: None,
                at_ms: 0,
            },
        )
        .unwrap();
        let with = |feedback| HistoryQuery {
            feedback: Some(feedback),
            ..HistoryQuery::default()
        };
        assert_eq!(ids(&s.search(&with(FeedbackFilter::Agree)).unwrap()), [a]);
        assert_eq!(
            ids(&s.search(&with(FeedbackFilter::Corrected)).unwrap()),
            [c]
        );
        assert_eq!(ids(&s.search(&with(FeedbackFilter::None)).unwrap()), [b]);
        let record = s.record(c).unwrap();
        assert_eq!(record.entry.feedback, Some(Verdict::Corrected));
        let detail = record.feedback_detail.unwrap();
        assert_eq!(detail.corrected_label.as_deref(), Some("M00-M99"));
        assert_eq!(detail.note.as_deref(), Some("old injury"));
        assert!(detail.at_ms > 0);
        // Dates are inclusive bounds.
        let created = record.entry.created_at_ms;
        let since = HistoryQuery {
            from_ms: Some(created + 1),
            ..HistoryQuery::default()
        };
        assert!(s.search(&since).unwrap().entries.iter().all(|e| e.id != c));
        let upto = HistoryQuery {
            to_ms: Some(created),
            ..HistoryQuery::default()
        };
        assert!(ids(&s.search(&upto).unwrap()).contains(&c));
        // Paging: the total counts every match, a page holds `limit`.
        let page = |offset| HistoryQuery {
            limit: 2,
            offset,
            ..HistoryQuery::default()
        };
        let first = s.search(&page(0)).unwrap();
        assert_eq!((first.total, ids(&first)), (3, vec![c, b]));
        assert_eq!(ids(&s.search(&page(2)).unwrap()), [a]);
        assert!(s.search(&page(3)).unwrap().entries.is_empty());
    }

    #[test]
    fn query_syntax_in_a_search_is_searched_for_never_obeyed() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(dir.path(), 11);
        let quoted = s
            .save("pt O'Brien said \"it hurts\"", &sample("x"))
            .unwrap();
        s.save("another note entirely", &sample("x")).unwrap();
        for payload in [
            "\"",
            "\"\"\"",
            "*",
            "NEAR(a b)",
            "a OR b",
            "text: note",
            "'; DROP TABLE classifications; --",
            "^note",
            "note AND",
            "(",
            "{text}:note",
        ] {
            let page = s.search(&text_query(payload));
            assert!(page.is_ok(), "{payload}: {page:?}");
        }
        assert_eq!(s.count().unwrap(), 2);
        assert_eq!(ids(&s.search(&text_query("O'Brien")).unwrap()), [quoted]);
        assert_eq!(
            ids(&s.search(&text_query("\"it hurts\"")).unwrap()),
            [quoted]
        );
        // "OR" is a word to find, not an operator: nothing has all of these.
        assert!(s
            .search(&text_query("O'Brien OR another"))
            .unwrap()
            .entries
            .is_empty());
        // Labels are bound values too.
        let injected = HistoryQuery {
            label: Some("x' OR '1'='1".into()),
            ..HistoryQuery::default()
        };
        assert!(s.search(&injected).unwrap().entries.is_empty());
    }

    #[test]
    fn feedback_needs_a_record_and_a_correction_needs_its_label() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(dir.path(), 12);
        let id = s.save("note", &sample("x")).unwrap();
        let corrected = Feedback {
            verdict: Verdict::Corrected,
            corrected_label: None,
            note: None,
            at_ms: 0,
        };
        assert!(s.set_feedback(id, &corrected).is_err());
        let agree = Feedback {
            verdict: Verdict::Agree,
            ..corrected
        };
        assert!(matches!(
            s.set_feedback(id + 100, &agree),
            Err(Error::RecordNotFound { .. })
        ));
        assert!(matches!(
            s.record(id + 100),
            Err(Error::RecordNotFound { .. })
        ));
    }

    /// The terms of the full-text index, from an `fts5vocab` view of it.
    fn indexed_terms(s: &HistoryStore) -> Vec<String> {
        s.conn
            .execute_batch(
                "CREATE VIRTUAL TABLE IF NOT EXISTS temp.terms USING fts5vocab(main, classifications_fts, row);",
            )
            .unwrap();
        let mut stmt = s.conn.prepare("SELECT term FROM temp.terms").unwrap();
        let terms = stmt.query_map([], |r| r.get(0)).unwrap();
        terms.map(|t| t.unwrap()).collect()
    }

    #[test]
    fn deleted_records_leave_no_trace_in_search_or_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join(DATABASE_FILE);
        let mut s = store(dir.path(), 13);
        let secret = s.save(SECRET_NOTE, &sample("I20-I25")).unwrap();
        let kept = s
            .save("unremarkable follow-up", &sample("Z00-Z99"))
            .unwrap();
        let other = s.save("third note", &sample("Z00-Z99")).unwrap();
        assert!(indexed_terms(&s).contains(&"zebrafinch".to_string()));
        assert_eq!(s.delete(&[secret, secret + 1000]).unwrap(), 1);
        assert!(s
            .search(&text_query("Zebrafinch"))
            .unwrap()
            .entries
            .is_empty());
        assert!(!indexed_terms(&s).contains(&"zebrafinch".to_string()));
        assert!(matches!(
            s.record(secret),
            Err(Error::RecordNotFound { .. })
        ));
        assert_eq!(
            ids(&s.search(&HistoryQuery::default()).unwrap()),
            [other, kept]
        );
        // Retention: records saved before the cut-off go.
        let cutoff = s.record(other).unwrap().entry.created_at_ms + 1;
        assert_eq!(s.purge_older_than(cutoff).unwrap(), 2);
        assert_eq!(s.count().unwrap(), 0);
        s.save("after the purge", &sample("x")).unwrap();
        assert_eq!(s.delete_all().unwrap(), 1);
        let actions: Vec<String> = s
            .audit_entries()
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect();
        assert_eq!(
            actions,
            [
                "classify",
                "classify",
                "classify",
                "delete",
                "view",
                "retention-purge",
                "classify",
                "delete"
            ]
        );
        drop(s);
        let bytes = files_of(&db);
        assert!(!bytes.windows(10).any(|w| w == b"Zebrafinch"));
    }

    #[test]
    fn the_audit_text_digest_is_keyed_by_the_history() {
        use sha2::{Digest, Sha256};
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(dir.path(), 14);
        let c = sample("I20-I25");
        s.save(SECRET_NOTE, &c).unwrap();
        s.save(SECRET_NOTE, &c).unwrap();
        let digests: Vec<String> = s
            .audit_entries()
            .unwrap()
            .into_iter()
            .filter_map(|e| e.text_sha256)
            .collect();
        // The same text gives the same digest in one history...
        assert_eq!(digests.len(), 2);
        assert_eq!(digests[0], digests[1]);
        let key: String = s
            .conn
            .query_row(
                "SELECT value FROM settings WHERE name = 'audit_text_key'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(key.len(), 64);
        assert_eq!(digests[0], audit::text_digest(key.as_bytes(), SECRET_NOTE));
        // ...but not its plain sha256, nor the digest of another history, so
        // a reader of an audit export cannot test guesses against it.
        assert_ne!(
            digests[0],
            hex::encode(Sha256::digest(SECRET_NOTE.as_bytes()))
        );
        let other_dir = tempfile::tempdir().unwrap();
        let mut other = store(other_dir.path(), 14);
        other.save(SECRET_NOTE, &c).unwrap();
        let other_digest = other.audit_entries().unwrap()[0].text_sha256.clone();
        assert_ne!(other_digest.as_deref(), Some(digests[0].as_str()));
    }

    #[test]
    fn every_action_is_audited_without_text_and_the_chain_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(dir.path(), 14);
        let c = sample("I20-I25");
        let id = s.save(SECRET_NOTE, &c).unwrap();
        s.record(id).unwrap();
        let entries = s.audit_entries().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].action, "classify");
        assert_eq!(entries[0].record_ids, [id]);
        assert_eq!(
            entries[0].model_sha256.as_deref(),
            Some(c.model_sha256.as_str())
        );
        assert_eq!(entries[0].text_sha256.as_deref().map(str::len), Some(64));
        assert_eq!(entries[1].action, "view");
        let all = serde_json::to_string(&entries).unwrap();
        assert!(!all.contains("Zebrafinch") && !all.contains("troponin"));
        assert!(audit::verify(&entries).problems.is_empty());
        // Editing an entry in the file is caught and named.
        s.conn
            .execute("UPDATE audit SET action = 'export' WHERE seq = 2", [])
            .unwrap();
        let problems = audit::verify(&s.audit_entries().unwrap()).problems;
        assert_eq!(problems.len(), 1);
        assert!(problems[0].starts_with("entry 2 "), "{problems:?}");
    }

    #[test]
    fn an_export_whose_audit_entry_fails_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("export.csv");
        let new_file = || {
            let mut file = NewFile::create(&out).unwrap();
            file.write_all(b"id,text\n").unwrap();
            let partial = file.path().to_path_buf();
            (file, partial)
        };
        let (file, partial) = new_file();
        let refused = audited_place(file, || Err(Error::Locked));
        assert!(matches!(refused, Err(Error::Locked)));
        assert!(!out.exists() && !partial.exists());
        let (file, partial) = new_file();
        audited_place(file, || Ok(())).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"id,text\n");
        assert!(!partial.exists());
    }

    #[test]
    fn a_deleted_record_id_is_never_given_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(dir.path(), 17);
        let first = s.save("first", &sample("x")).unwrap();
        let newest = s.save("second", &sample("x")).unwrap();
        s.delete(&[newest]).unwrap();
        let next = s.save("third", &sample("x")).unwrap();
        assert!(next > newest, "{next} after {newest}");
        s.delete_all().unwrap();
        drop(s);
        let mut s = store(dir.path(), 17);
        assert!(s.save("fourth", &sample("x")).unwrap() > next);
        assert!(first < newest);
    }

    #[test]
    fn a_second_process_writing_makes_an_audited_action_wait_not_fail() {
        let dir = tempfile::tempdir().unwrap();
        let mut app = store(dir.path(), 17);
        let id = app.save("first", &sample("x")).unwrap();
        let cli = store(dir.path(), 17);
        // The CLI holds the write lock for a moment (as a long delete would).
        cli.conn
            .execute_batch("BEGIN IMMEDIATE; DELETE FROM classifications WHERE id = -1;")
            .unwrap();
        // Viewing a record is audited: the audit entry reads the trail's
        // last entry before it writes.
        let viewing = std::thread::spawn(move || app.record(id).map(|_| app));
        std::thread::sleep(std::time::Duration::from_millis(300));
        cli.conn.execute_batch("COMMIT;").unwrap();
        let app = viewing.join().unwrap().unwrap();
        let last = app.audit_entries().unwrap().pop().map(|e| e.action);
        assert_eq!(last.as_deref(), Some("view"));
        assert!(audit::verify(&app.audit_entries().unwrap())
            .problems
            .is_empty());
    }

    #[test]
    fn a_rekeyed_database_opens_only_with_the_new_key_and_keeps_every_row() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join(DATABASE_FILE);
        let mut s = store(dir.path(), 17);
        for i in 0..50 {
            s.save(&format!("note {i} {SECRET_NOTE}"), &sample("x"))
                .unwrap();
        }
        s.rekey(&key(18)).unwrap();
        s.save("after the rekey", &sample("x")).unwrap();
        // What the rekey checks before the new key is kept.
        confirm_key(&db, &key(18)).unwrap();
        let unfinished = confirm_key(&db, &key(17)).unwrap_err().to_string();
        assert!(unfinished.contains("keeps its old key"), "{unfinished}");
        drop(s);
        assert!(matches!(
            HistoryStore::open(&db, &key(17)),
            Err(Error::WrongKeyOrNotADatabase { .. })
        ));
        let s = HistoryStore::open(&db, &key(18)).unwrap();
        assert_eq!(s.count().unwrap(), 51);
        assert_eq!(s.integrity_problems().unwrap(), Vec::<String>::new());
        let entries = s.audit_entries().unwrap();
        assert_eq!(entries[50].action, "key-rotation");
        assert!(audit::verify(&entries).problems.is_empty());
        let bytes = files_of(&db);
        assert!(!bytes.windows(10).any(|w| w == b"Zebrafinch"));
    }

    #[test]
    fn an_export_holds_the_selected_records_whole_and_is_audited() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(dir.path(), 19);
        let a = s
            .save(
                "text, with \"quotes\"\nand a second line",
                &sample("I20-I25"),
            )
            .unwrap();
        s.save("not exported", &sample("x")).unwrap();
        let c = s.save("third", &sample("J00-J99")).unwrap();
        let csv_out = dir.path().join("export.csv");
        assert_eq!(
            s.export_records(&[a, c], ExportFormat::Csv, &csv_out)
                .unwrap(),
            2
        );
        let mut reader = csv::Reader::from_path(&csv_out).unwrap();
        let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(&rows[0][2], "text, with \"quotes\"\nand a second line");
        assert_eq!(&rows[1][3], "J00-J99");
        let json_out = dir.path().join("export.json");
        s.export_records(&[c], ExportFormat::Json, &json_out)
            .unwrap();
        let json: Vec<HistoryRecord> =
            serde_json::from_slice(&std::fs::read(&json_out).unwrap()).unwrap();
        assert_eq!(json[0].text, "third");
        assert!(matches!(
            s.export_records(&[a, 999], ExportFormat::Csv, &dir.path().join("x.csv")),
            Err(Error::RecordNotFound { id: 999 })
        ));
        assert!(!dir.path().join("x.csv").exists());
        let entries = s.audit_entries().unwrap();
        let exports: Vec<&audit::Entry> = entries.iter().filter(|e| e.action == "export").collect();
        assert_eq!(exports.len(), 2);
        assert_eq!(exports[0].record_ids, [a, c]);
        assert_eq!(exports[0].detail.as_deref(), Some("format=csv rows=2"));
        assert_eq!(s.matching_ids(&HistoryQuery::default()).unwrap().len(), 3);
        #[cfg(unix)]
        for out in [&csv_out, &json_out] {
            // Owner-only whatever the umask.
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(out).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", out.display());
        }
        // An existing file is never replaced, and a file beside it with the
        // name a partial export might have is not MedText's to remove.
        let before = std::fs::read(&json_out).unwrap();
        let beside = json_out.with_extension("partial");
        std::fs::write(&beside, "someone's file").unwrap();
        let err = s
            .export_records(&[a], ExportFormat::Json, &json_out)
            .unwrap_err()
            .to_string();
        assert!(err.contains("already exists"), "{err}");
        assert_eq!(std::fs::read(&json_out).unwrap(), before);
        assert_eq!(std::fs::read(&beside).unwrap(), b"someone's file");
        // A note that starts like a formula is a text in a spreadsheet.
        let formula = s.save("=HYPERLINK(\"x\") pt", &sample("x")).unwrap();
        let out = dir.path().join("formula.csv");
        s.export_records(&[formula], ExportFormat::Csv, &out)
            .unwrap();
        let row = csv::Reader::from_path(&out)
            .unwrap()
            .records()
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(&row[2], "'=HYPERLINK(\"x\") pt");
    }

    /// The bug this catches: only the app applied retention, at its start, so
    /// records saved by `medtext classify --save` or `medtext serve` outlived
    /// IT's period until the app next started.
    #[test]
    fn every_open_of_the_history_applies_its_retention_period() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().canonicalize().unwrap();
        let mut s = HistoryStore::open_in(&data).expect("a Secret Service must be running");
        let old = s.save("old note", &sample("x")).unwrap();
        let new = s.save("new note", &sample("x")).unwrap();
        s.conn
            .execute(
                "UPDATE classifications SET created_at_ms = created_at_ms - 40 * 86400000 WHERE id = ?1",
                [old],
            )
            .unwrap();
        s.set_retention_days(Some(30)).unwrap();
        drop(s);
        // Looking (`medtext audit verify`) deletes nothing.
        let inspected = HistoryStore::open_in_mode(&data, OpenMode::Inspect).unwrap();
        assert_eq!(inspected.count().unwrap(), 2);
        drop(inspected);
        // What the CLI, the local API and the app all do first.
        let s = HistoryStore::open_in(&data).unwrap();
        assert_eq!(s.matching_ids(&HistoryQuery::default()).unwrap(), [new]);
        drop(s);
        keychain::delete_all_keys(&data.join(DATABASE_FILE)).unwrap();
    }

    #[test]
    fn retention_is_a_setting_that_purges_old_records_and_is_audited() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(dir.path(), 20);
        let old = s.save("old note", &sample("x")).unwrap();
        let new = s.save("new note", &sample("x")).unwrap();
        s.conn
            .execute(
                "UPDATE classifications SET created_at_ms = created_at_ms - 40 * 86400000 WHERE id = ?1",
                [old],
            )
            .unwrap();
        assert_eq!(s.retention_days().unwrap(), None);
        assert_eq!(s.apply_retention().unwrap(), 0);
        assert!(s.set_retention_days(Some(0)).is_err());
        s.set_retention_days(Some(30)).unwrap();
        assert_eq!(s.retention_days().unwrap(), Some(30));
        assert_eq!(s.apply_retention().unwrap(), 1);
        assert_eq!(s.matching_ids(&HistoryQuery::default()).unwrap(), [new]);
        s.set_retention_days(None).unwrap();
        assert_eq!(s.retention_days().unwrap(), None);
        let details: Vec<Option<String>> = s
            .audit_entries()
            .unwrap()
            .into_iter()
            .filter(|e| e.action == "settings-change")
            .map(|e| e.detail)
            .collect();
        assert_eq!(
            details,
            [
                Some("retention_days=30".into()),
                Some("retention_days=off".into())
            ]
        );
    }

    #[test]
    fn the_machine_policy_fixes_retention_and_can_forbid_export_and_backup() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(dir.path(), 21);
        let old = s.save("old note", &sample("x")).unwrap();
        s.conn
            .execute(
                "UPDATE classifications SET created_at_ms = created_at_ms - 10 * 86400000 WHERE id = ?1",
                [old],
            )
            .unwrap();
        s.set_retention_days(Some(365)).unwrap();
        s.set_policy(
            Policy::parse(
                "[history]\nretention_days = 7\nallow_export = false\nallow_backup = false\n",
                Path::new("/etc/medtext/policy.toml"),
            )
            .unwrap(),
        );
        assert_eq!(s.retention_days().unwrap(), Some(7));
        let refused = s.set_retention_days(Some(400)).unwrap_err();
        assert!(
            matches!(refused, Error::ManagedByPolicy { .. }),
            "{refused}"
        );
        assert_eq!(s.apply_retention().unwrap(), 1);

        let id = s.save("new note", &sample("x")).unwrap();
        let out = dir.path().join("out.csv");
        let export = s
            .export_records(&[id], ExportFormat::Csv, &out)
            .unwrap_err();
        assert!(matches!(export, Error::ManagedByPolicy { .. }), "{export}");
        assert!(!out.exists());
        let backup = s
            .backup(&dir.path().join("b.mtbak"), "a long passphrase")
            .unwrap_err();
        assert!(matches!(backup, Error::ManagedByPolicy { .. }), "{backup}");
        assert!(!dir.path().join("b.mtbak").exists());
    }

    #[test]
    fn evidence_added_after_saving_is_kept_with_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(dir.path(), 23);
        let id = s.save("chest pain", &sample("x")).unwrap();
        assert!(s.record(id).unwrap().evidence.is_empty());
        let words = [WordEvidence {
            start: 0,
            end: 5,
            score: 1.0,
        }];
        s.set_evidence(id, &words).unwrap();
        assert_eq!(s.record(id).unwrap().evidence, words);
        assert!(matches!(
            s.set_evidence(id + 100, &words),
            Err(Error::RecordNotFound { .. })
        ));
    }

    #[test]
    fn wrong_unlock_attempts_are_counted_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(dir.path(), 17);
        assert_eq!(s.unlock_failures().unwrap(), 0);
        s.set_unlock_failures(6).unwrap();
        drop(s);
        let mut s = store(dir.path(), 17);
        assert_eq!(s.unlock_failures().unwrap(), 6);
        s.set_unlock_passphrase("night shift 42").unwrap();
        s.reset_unlock().unwrap();
        assert_eq!(s.unlock_failures().unwrap(), 0);
        assert_eq!(s.unlock_passphrase_hash().unwrap(), None);
    }

    #[test]
    fn lock_settings_are_kept_with_the_passphrase_only_as_a_hash() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(dir.path(), 22);
        assert_eq!(s.idle_lock_minutes().unwrap(), None);
        s.set_idle_lock_minutes(Some(10)).unwrap();
        assert_eq!(s.idle_lock_minutes().unwrap(), Some(10));
        assert!(s.set_idle_lock_minutes(Some(0)).is_err());
        s.set_unlock_passphrase("night shift 42").unwrap();
        let hash = s.unlock_passphrase_hash().unwrap().unwrap();
        crate::machine::idle_lock::verify_passphrase("night shift 42", &hash).unwrap();
        let details: Vec<String> = s
            .audit_entries()
            .unwrap()
            .into_iter()
            .filter_map(|e| e.detail)
            .collect();
        assert_eq!(
            details,
            ["idle_lock_minutes=10", "unlock_passphrase changed"]
        );
        s.set_policy(
            Policy::parse("[lock]\nidle_minutes = 3\n", Path::new("policy.toml")).unwrap(),
        );
        assert_eq!(s.idle_lock_minutes().unwrap(), Some(3));
        assert!(matches!(
            s.set_idle_lock_minutes(None),
            Err(Error::ManagedByPolicy { .. })
        ));
    }

    #[test]
    fn integrity_checks_pass_on_a_sound_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(dir.path(), 15);
        s.save("note", &sample("x")).unwrap();
        assert_eq!(s.integrity_problems().unwrap(), Vec::<String>::new());
    }
}
