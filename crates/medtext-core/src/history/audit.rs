//! The audit trail: one entry for every classification, view, feedback,
//! export, deletion and key change, kept in the same encrypted database and
//! written in the same transaction as the action it records, so an action
//! and its entry are committed together or not at all.
//!
//! Entries never hold patient text: a record id, the model's hash and a
//! keyed hash of the input text ([`text_digest`]) identify what happened. Each entry's hash covers
//! its own fields and the previous entry's hash, so editing, removing or
//! reordering an entry breaks the chain where it happened, and
//! [`verify`] names the entry.

use hmac::{Hmac, Mac};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first entry.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Classify,
    View,
    Feedback,
    Delete,
    RetentionPurge,
    Export,
    KeyRotation,
    Backup,
    Restore,
    SettingsChange,
    ApiKeyCreate,
    ApiKeyRevoke,
    /// Texts classified through the local API (`medtext serve`); not saved.
    ApiClassify,
    /// Committed entries found missing at open (see [`crate::history::anchor`]),
    /// recorded by `medtext audit accept-loss` so the trail says so.
    AuditLoss,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Classify => "classify",
            Self::View => "view",
            Self::Feedback => "feedback",
            Self::Delete => "delete",
            Self::RetentionPurge => "retention-purge",
            Self::Export => "export",
            Self::KeyRotation => "key-rotation",
            Self::Backup => "backup",
            Self::Restore => "restore",
            Self::SettingsChange => "settings-change",
            Self::ApiKeyCreate => "api-key-create",
            Self::ApiKeyRevoke => "api-key-revoke",
            Self::ApiClassify => "api-classify",
            Self::AuditLoss => "audit-loss",
        }
    }
}

/// An action about to be recorded.
#[derive(Debug, Clone, Default)]
pub struct Event<'a> {
    pub record_ids: &'a [i64],
    pub model_sha256: Option<&'a str>,
    /// See [`text_digest`].
    pub text_sha256: Option<String>,
    /// Non-identifying detail ("format=csv", "rows=12"); never text.
    pub detail: Option<String>,
}

/// One entry as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: i64,
    pub at_ms: i64,
    pub os_user: String,
    pub action: String,
    pub record_ids: Vec<i64>,
    pub model_sha256: Option<String>,
    /// The text's HMAC-SHA256 under the history's own key ([`text_digest`]);
    /// a plain sha256 in entries written before MedText keyed it.
    pub text_sha256: Option<String>,
    pub detail: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

impl Entry {
    /// The hash this entry must carry: sha256 over its fields (in a fixed
    /// JSON encoding) and the previous entry's hash.
    fn expected_hash(&self) -> String {
        let fields = serde_json::json!([
            self.seq,
            self.at_ms,
            self.os_user,
            self.action,
            self.record_ids,
            self.model_sha256,
            self.text_sha256,
            self.detail,
            self.prev_hash,
        ]);
        hex::encode(Sha256::digest(fields.to_string().as_bytes()))
    }
}

/// The HMAC-SHA256 of a text under `key`, for entries that must identify
/// an input without holding it. Keyed, because a plain hash of a short text
/// ("HIV positive", a name and a diagnosis) lets whoever reads an audit
/// export test guesses against it. The key is random per history and kept
/// inside it: only someone who can open the history (or a backup of it) can
/// test guesses, and for records still there they could read the text
/// anyway. For deleted records they still can; that is the limit of it.
pub fn text_digest(key: &[u8], text: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(text.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The operating-system user acting, as the environment names them.
pub(crate) fn os_user() -> String {
    ["USER", "USERNAME", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}

/// Appends an entry for `action` inside the caller's transaction.
pub(crate) fn append(
    conn: &Connection,
    action: Action,
    event: Event<'_>,
    at_ms: i64,
) -> rusqlite::Result<()> {
    let last: Option<(i64, String)> = conn
        .query_row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (prev_seq, prev_hash) = last.unwrap_or((0, GENESIS.to_string()));
    let mut entry = Entry {
        seq: prev_seq + 1,
        at_ms,
        os_user: os_user(),
        action: action.as_str().to_string(),
        record_ids: event.record_ids.to_vec(),
        model_sha256: event.model_sha256.map(str::to_string),
        text_sha256: event.text_sha256,
        detail: event.detail,
        prev_hash,
        hash: String::new(),
    };
    entry.hash = entry.expected_hash();
    conn.execute(
        "INSERT INTO audit (seq, at_ms, os_user, action, record_ids, model_sha256, text_sha256,
                            detail, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            entry.seq,
            entry.at_ms,
            entry.os_user,
            entry.action,
            serde_json::json!(entry.record_ids).to_string(),
            entry.model_sha256,
            entry.text_sha256,
            entry.detail,
            entry.prev_hash,
            entry.hash,
        ],
    )?;
    Ok(())
}

/// Every entry, oldest first.
pub(crate) fn entries(conn: &Connection) -> rusqlite::Result<Vec<Entry>> {
    let mut stmt = conn.prepare(
        "SELECT seq, at_ms, os_user, action, record_ids, model_sha256, text_sha256, detail,
                prev_hash, hash
         FROM audit ORDER BY seq",
    )?;
    let rows = stmt.query_map([], |r| {
        let ids: String = r.get(4)?;
        Ok(Entry {
            seq: r.get(0)?,
            at_ms: r.get(1)?,
            os_user: r.get(2)?,
            action: r.get(3)?,
            // A damaged list is reported by verify (the hash will not match).
            record_ids: serde_json::from_str(&ids).unwrap_or_default(),
            model_sha256: r.get(5)?,
            text_sha256: r.get(6)?,
            detail: r.get(7)?,
            prev_hash: r.get(8)?,
            hash: r.get(9)?,
        })
    })?;
    rows.collect()
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verification {
    pub entries: usize,
    /// Empty when the chain is whole.
    pub problems: Vec<String>,
}

/// Walks the chain and names every entry that was edited, removed or moved.
pub fn verify(entries: &[Entry]) -> Verification {
    let mut problems = Vec::new();
    let mut previous: Option<&Entry> = None;
    for entry in entries {
        let expected_seq = previous.map_or(1, |p| p.seq + 1);
        if entry.seq > expected_seq {
            let missing = if entry.seq - expected_seq == 1 {
                format!("entry {expected_seq} is missing")
            } else {
                format!("entries {expected_seq} to {} are missing", entry.seq - 1)
            };
            problems.push(format!("{missing}: removed from the audit trail"));
        }
        if entry.hash != entry.expected_hash() {
            problems.push(format!(
                "entry {} ({}) was edited or moved: its hash does not match its contents",
                entry.seq, entry.action
            ));
        } else {
            let prev_hash = previous.map_or(GENESIS, |p| p.hash.as_str());
            if entry.prev_hash != prev_hash && entry.seq == expected_seq {
                problems.push(format!(
                    "entry {} ({}) does not follow entry {}: entries were removed, inserted or reordered",
                    entry.seq,
                    entry.action,
                    entry.seq - 1
                ));
            }
        }
        previous = Some(entry);
    }
    Verification {
        entries: entries.len(),
        problems,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The entries of a whole chain of `n`.
    pub(crate) fn chain_of(n: i64) -> Vec<Entry> {
        entries(&chain(n)).unwrap()
    }

    /// Renumbers and re-hashes `entries` into a chain that verifies, as
    /// someone holding the database key could after editing them.
    pub(crate) fn rehash(entries: &mut [Entry]) {
        let mut prev = GENESIS.to_string();
        for (i, e) in entries.iter_mut().enumerate() {
            e.seq = i as i64 + 1;
            e.prev_hash = prev;
            e.hash = e.expected_hash();
            prev = e.hash.clone();
        }
    }

    fn chain(n: i64) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(crate::history::store::AUDIT_TABLE)
            .unwrap();
        for i in 0..n {
            let ids = [i];
            let event = Event {
                record_ids: &ids,
                model_sha256: Some("abc"),
                text_sha256: Some(text_digest(b"key", "note")),
                detail: None,
            };
            append(&conn, Action::Classify, event, 1_000 + i).unwrap();
        }
        conn
    }

    #[test]
    fn the_text_digest_is_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            text_digest(b"Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_whole_chain_verifies() {
        let conn = chain(5);
        let v = verify(&entries(&conn).unwrap());
        assert_eq!(v.entries, 5);
        assert!(v.problems.is_empty(), "{:?}", v.problems);
    }

    #[test]
    fn an_edited_entry_is_named() {
        let conn = chain(5);
        conn.execute("UPDATE audit SET record_ids = '[99]' WHERE seq = 3", [])
            .unwrap();
        let v = verify(&entries(&conn).unwrap());
        assert_eq!(v.problems.len(), 1, "{:?}", v.problems);
        assert!(v.problems[0].starts_with("entry 3 (classify) was edited"));
    }

    #[test]
    fn a_removed_entry_is_named() {
        let conn = chain(5);
        conn.execute("DELETE FROM audit WHERE seq = 2", []).unwrap();
        let v = verify(&entries(&conn).unwrap());
        assert_eq!(
            v.problems,
            ["entry 2 is missing: removed from the audit trail"]
        );
        conn.execute("DELETE FROM audit WHERE seq IN (3, 4)", [])
            .unwrap();
        let v = verify(&entries(&conn).unwrap());
        assert_eq!(
            v.problems,
            ["entries 2 to 4 are missing: removed from the audit trail"]
        );
    }

    #[test]
    fn reordered_entries_are_named() {
        let conn = chain(5);
        // Swap the contents of entries 2 and 3, keeping their numbers.
        conn.execute_batch(
            "UPDATE audit SET seq = -2 WHERE seq = 2;
             UPDATE audit SET seq = 2 WHERE seq = 3;
             UPDATE audit SET seq = 3 WHERE seq = -2;",
        )
        .unwrap();
        let v = verify(&entries(&conn).unwrap());
        assert!(
            v.problems.iter().any(|p| p.starts_with("entry 2 ")),
            "{:?}",
            v.problems
        );
        assert!(
            v.problems.iter().any(|p| p.starts_with("entry 3 ")),
            "{:?}",
            v.problems
        );
    }

    #[test]
    fn a_re_hashed_entry_still_breaks_the_link_to_the_next() {
        // Someone edits entry 2 and fixes its hash: entry 3 no longer follows.
        let conn = chain(4);
        let mut all = entries(&conn).unwrap();
        all[1].detail = Some("tampered".into());
        all[1].hash = all[1].expected_hash();
        let v = verify(&all);
        assert_eq!(v.problems.len(), 1, "{:?}", v.problems);
        assert!(v.problems[0].starts_with("entry 3 (classify) does not follow entry 2"));
    }
}
