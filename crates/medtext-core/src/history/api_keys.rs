//! Keys for the local API (`medtext serve`): who may classify through it.
//!
//! A key is 256 random bits, shown once when it is made and kept only as its
//! sha256 in the encrypted history, so neither the database nor a backup of
//! it gives a working key away. Keys are named so the audit trail can say
//! which one classified what, and so IT can revoke one without the others.
//! Making, revoking and every use of a key are audited; a use is one entry
//! per request, with the number of texts and the model's hash, never the
//! texts themselves.

use rusqlite::{params, OptionalExtension};
use serde::Serialize;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::history::audit::{self, Action, Event};
use crate::history::store::{now_ms, store_error};
use crate::{history::store::HistoryStore, Error, Result};

/// Every key starts with this, so a key found in a script or a log is
/// recognisable as MedText's.
pub const KEY_PREFIX: &str = "mtk_";

/// Random bytes in a key.
const KEY_BYTES: usize = 32;

/// Longest key name.
const MAX_NAME_CHARS: usize = 64;

/// The key a request came with, once it is known to be active.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyHolder {
    id: i64,
    /// The key's name, as the audit trail shows it.
    pub name: String,
}

/// A key as listed: never the key itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKeyInfo {
    pub name: String,
    pub created_at_ms: i64,
    pub last_used_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
}

fn key_sha256(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Checks a key name: 1 to 64 letters, digits, spaces, dots, dashes or
/// underscores, so it reads plainly in the audit trail and in a table.
fn check_name(name: &str) -> Result<()> {
    let fine = |c: char| c.is_ascii_alphanumeric() || matches!(c, ' ' | '.' | '-' | '_');
    if name.trim().is_empty() || name.chars().count() > MAX_NAME_CHARS || !name.chars().all(fine) {
        return Err(Error::ApiKey {
            problem: format!(
                "a key's name is 1 to {MAX_NAME_CHARS} letters, digits, spaces, dots, dashes or underscores, such as \"lab-integration\""
            ),
        });
    }
    Ok(())
}

/// Whether `presented` has the form of a key at all (checked before the
/// database is asked).
fn looks_like_key(presented: &str) -> bool {
    presented.strip_prefix(KEY_PREFIX).is_some_and(|rest| {
        rest.len() == 2 * KEY_BYTES && rest.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

/// The audit entry for making or revoking the key `name`.
fn audit_key_change(
    tx: &rusqlite::Transaction<'_>,
    action: Action,
    name: &str,
    at_ms: i64,
) -> rusqlite::Result<()> {
    let detail = Some(format!("name={name}"));
    audit::append(
        tx,
        action,
        Event {
            detail,
            ..Event::default()
        },
        at_ms,
    )
}

impl HistoryStore {
    /// Makes a key named `name` and returns it: the only time it is shown.
    /// Audited with its name.
    pub fn create_api_key(&mut self, name: &str) -> Result<Zeroizing<String>> {
        check_name(name)?;
        let mut random = Zeroizing::new([0u8; KEY_BYTES]);
        getrandom::fill(random.as_mut_slice()).map_err(|e| Error::ApiKey {
            problem: format!("the operating system gave no random bytes: {e}"),
        })?;
        let key = Zeroizing::new(format!("{KEY_PREFIX}{}", hex::encode(random.as_slice())));
        let hash = key_sha256(&key);
        let made = self.in_transaction(|tx| {
            let taken: bool = tx.query_row(
                "SELECT count(*) > 0 FROM api_keys WHERE name = ?1 AND revoked_at_ms IS NULL",
                [name],
                |r| r.get(0),
            )?;
            if taken {
                return Ok(false);
            }
            let at = now_ms();
            tx.execute(
                "INSERT INTO api_keys (name, key_sha256, created_at_ms) VALUES (?1, ?2, ?3)",
                params![name, hash, at],
            )?;
            audit_key_change(tx, Action::ApiKeyCreate, name, at)?;
            Ok(true)
        })?;
        if !made {
            return Err(Error::ApiKey {
                problem: format!(
                    "a key named \"{name}\" already exists: revoke it first (`medtext api-key revoke --name \"{name}\"`) or choose another name"
                ),
            });
        }
        Ok(key)
    }

    /// Revokes the key named `name`: it stops working at once, also for a
    /// `medtext serve` already running. Audited.
    pub fn revoke_api_key(&mut self, name: &str) -> Result<()> {
        let revoked = self.in_transaction(|tx| {
            let at = now_ms();
            let changed = tx.execute(
                "UPDATE api_keys SET revoked_at_ms = ?2 WHERE name = ?1 AND revoked_at_ms IS NULL",
                params![name, at],
            )?;
            if changed > 0 {
                audit_key_change(tx, Action::ApiKeyRevoke, name, at)?;
            }
            Ok(changed > 0)
        })?;
        if !revoked {
            return Err(Error::ApiKey {
                problem: format!(
                    "no active key is named \"{name}\" (`medtext api-key list` shows them)"
                ),
            });
        }
        Ok(())
    }

    /// Every key made here, revoked ones too, oldest first.
    pub fn api_keys(&self) -> Result<Vec<ApiKeyInfo>> {
        let list = || -> rusqlite::Result<Vec<ApiKeyInfo>> {
            let mut statement = self.conn.prepare(
                "SELECT name, created_at_ms, last_used_at_ms, revoked_at_ms
                 FROM api_keys ORDER BY id",
            )?;
            let rows = statement.query_map([], |r| {
                Ok(ApiKeyInfo {
                    name: r.get(0)?,
                    created_at_ms: r.get(1)?,
                    last_used_at_ms: r.get(2)?,
                    revoked_at_ms: r.get(3)?,
                })
            })?;
            rows.collect()
        };
        list().map_err(|e| store_error(&self.path, e))
    }

    /// The active key `presented`, or `None` when it is not one (unknown,
    /// revoked, or not a key at all).
    pub fn api_key(&self, presented: &str) -> Result<Option<ApiKeyHolder>> {
        if !looks_like_key(presented) {
            return Ok(None);
        }
        self.conn
            .query_row(
                "SELECT id, name FROM api_keys WHERE key_sha256 = ?1 AND revoked_at_ms IS NULL",
                [key_sha256(presented)],
                |r| {
                    Ok(ApiKeyHolder {
                        id: r.get(0)?,
                        name: r.get(1)?,
                    })
                },
            )
            .optional()
            .map_err(|e| store_error(&self.path, e))
    }

    /// Records that `key` classified `texts` texts with the model
    /// `model_sha256`: its last use, and an audit entry, in one transaction.
    /// Fails, recording nothing, if the key was revoked since it was looked
    /// up: the caller then gives no result.
    pub fn record_api_classify(
        &mut self,
        key: &ApiKeyHolder,
        texts: usize,
        model_sha256: &str,
    ) -> Result<()> {
        let recorded = self.in_transaction(|tx| {
            let at = now_ms();
            let still_active = tx.execute(
                "UPDATE api_keys SET last_used_at_ms = ?2 WHERE id = ?1 AND revoked_at_ms IS NULL",
                params![key.id, at],
            )? == 1;
            if still_active {
                audit::append(
                    tx,
                    Action::ApiClassify,
                    Event {
                        model_sha256: Some(model_sha256),
                        detail: Some(format!("key={} texts={texts}", key.name)),
                        ..Event::default()
                    },
                    at,
                )?;
            }
            Ok(still_active)
        })?;
        if !recorded {
            return Err(Error::ApiKey {
                problem: format!("the key \"{}\" was revoked", key.name),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::keychain::DatabaseKey;

    fn store() -> (tempfile::TempDir, HistoryStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = HistoryStore::open(&dir.path().join("h.db"), &DatabaseKey::from_bytes([7; 32]))
            .unwrap();
        (dir, store)
    }

    #[test]
    fn a_key_works_until_it_is_revoked_and_only_its_hash_is_kept() {
        let (dir, mut store) = store();
        let key = store.create_api_key("lab integration").unwrap();
        assert!(key.starts_with(KEY_PREFIX) && key.len() == KEY_PREFIX.len() + 64);
        let holder = store.api_key(&key).unwrap().unwrap();
        assert_eq!(holder.name, "lab integration");
        // A different key of the right form, and things that are not keys.
        let other = format!("{KEY_PREFIX}{}", "0".repeat(64));
        for wrong in [
            other.as_str(),
            "",
            "mtk_",
            &key[..key.len() - 1],
            &key.to_uppercase(),
        ] {
            assert_eq!(store.api_key(wrong).unwrap(), None, "{wrong}");
        }
        // The key itself is nowhere in the database, only its sha256.
        let stored: String = store
            .conn
            .query_row("SELECT key_sha256 FROM api_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!(stored, key_sha256(&key));
        assert_ne!(stored, key.as_str());

        store.record_api_classify(&holder, 3, "abc").unwrap();
        let listed = store.api_keys().unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].last_used_at_ms.is_some() && listed[0].revoked_at_ms.is_none());

        store.revoke_api_key("lab integration").unwrap();
        assert_eq!(store.api_key(&key).unwrap(), None);
        // A request that looked its key up before the revocation is not
        // recorded (and gets no result).
        let late = store.record_api_classify(&holder, 1, "abc").unwrap_err();
        assert!(late.to_string().contains("revoked"), "{late}");
        let again = store
            .revoke_api_key("lab integration")
            .unwrap_err()
            .to_string();
        assert!(again.contains("no active key"), "{again}");
        // The name is free again once revoked, with a new key.
        let second = store.create_api_key("lab integration").unwrap();
        assert_ne!(second.as_str(), key.as_str());
        // The old key's late use does not count as the new key's.
        assert!(store.record_api_classify(&holder, 1, "abc").is_err());
        assert_eq!(store.api_keys().unwrap()[1].last_used_at_ms, None);
        assert_eq!(store.api_keys().unwrap().len(), 2);

        let actions: Vec<String> = store
            .audit_entries()
            .unwrap()
            .into_iter()
            .map(|e| format!("{} {}", e.action, e.detail.unwrap_or_default()))
            .collect();
        assert_eq!(
            actions,
            [
                "api-key-create name=lab integration",
                "api-classify key=lab integration texts=3",
                "api-key-revoke name=lab integration",
                "api-key-create name=lab integration",
            ]
        );
        assert!(store.integrity_problems().unwrap().is_empty());
        drop(dir);
    }

    #[test]
    fn names_are_checked_and_a_live_name_is_not_given_twice() {
        let (_dir, mut store) = store();
        for bad in ["", "   ", "a\nb", "naïve", &"x".repeat(65), "rm -rf; \"x\""] {
            let e = store.create_api_key(bad).unwrap_err().to_string();
            assert!(e.contains("letters, digits"), "{bad}: {e}");
        }
        store.create_api_key("ward-3").unwrap();
        let e = store.create_api_key("ward-3").unwrap_err().to_string();
        assert!(e.contains("already exists") && e.contains("revoke"), "{e}");
        assert_eq!(store.api_keys().unwrap().len(), 1);
    }
}
