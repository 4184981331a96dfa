//! Custody of the history database key in the OS keychain.
//!
//! The key is 256 random bits created on first run and stored only in the
//! platform keychain (Secret Service on Linux, Credential Manager on Windows,
//! Keychain on macOS). It is never written to disk in clear, never logged, and
//! never sent to the web UI. Custody fails closed: if a database exists but its
//! key does not, nothing is created over it.

use std::fmt;
use std::path::Path;

use crate::{Error, Result};

/// Keychain service name under which MedText keeps its secrets.
pub const KEYCHAIN_SERVICE: &str = "MedText";

/// A 256-bit SQLCipher key. Its `Debug` output is redacted and its bytes are
/// wiped when dropped.
pub struct DatabaseKey([u8; 32]);

impl DatabaseKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<Self> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| Error::Keychain {
            problem: format!("the system random source failed: {e}"),
        })?;
        Ok(Self(bytes))
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    fn from_hex(text: &str) -> Result<Self> {
        let bytes = hex::decode(text.trim())
            .ok()
            .and_then(|v| <[u8; 32]>::try_from(v).ok());
        bytes.map(Self).ok_or_else(|| Error::Keychain {
            problem: "the stored database key is malformed (expected 64 hex digits)".into(),
        })
    }

    /// The key as SQLCipher's raw-key literal body (64 hex digits).
    pub(crate) fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for DatabaseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DatabaseKey(<redacted>)")
    }
}

impl Drop for DatabaseKey {
    fn drop(&mut self) {
        for b in self.0.iter_mut() {
            // SAFETY: `b` is a valid, aligned, exclusive reference. A volatile
            // write keeps the wipe from being optimised away.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

/// The keychain account for the database at `db_path`: one key per database
/// file, so separate data directories (tests, `MEDTEXT_DATA_DIR`) never share
/// or overwrite each other's key.
pub fn account_for(db_path: &Path) -> String {
    format!("history-database-key:{}", db_path.display())
}

/// Returns the key for the database at `db_path`, creating and storing a new
/// one only when neither the key nor the database exists yet.
pub fn database_key(db_path: &Path) -> Result<DatabaseKey> {
    let entry = entry(db_path)?;
    match entry.get_password() {
        Ok(hex) => DatabaseKey::from_hex(&hex),
        Err(keyring::Error::NoEntry) => {
            if db_path.exists() {
                return Err(Error::KeyMissing {
                    path: db_path.to_path_buf(),
                });
            }
            let key = DatabaseKey::generate()?;
            entry.set_password(&key.to_hex()).map_err(keychain_error)?;
            // Read it back: a keychain that accepts a secret but cannot return
            // it would otherwise leave a database nobody can open.
            let stored = entry.get_password().map_err(keychain_error)?;
            if stored != key.to_hex() {
                return Err(Error::Keychain {
                    problem: "the key read back from the keychain differs from the one stored"
                        .into(),
                });
            }
            Ok(key)
        }
        Err(e) => Err(keychain_error(e)),
    }
}

/// Removes the stored key for `db_path` (used when a database is deliberately
/// discarded, and by tests).
pub fn delete_database_key(db_path: &Path) -> Result<()> {
    match entry(db_path)?.delete_credential() {
        Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
        Err(e) => Err(keychain_error(e)),
    }
}

fn entry(db_path: &Path) -> Result<keyring::Entry> {
    keyring::Entry::new(KEYCHAIN_SERVICE, &account_for(db_path)).map_err(keychain_error)
}

fn keychain_error(e: keyring::Error) -> Error {
    Error::Keychain {
        problem: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_key() {
        let key = DatabaseKey::from_bytes([0xab; 32]);
        let shown = format!("{key:?}");
        assert!(!shown.to_lowercase().contains("abab"), "{shown}");
        assert_eq!(DatabaseKey::from_hex(&key.to_hex()).unwrap().0, key.0);
    }

    #[test]
    fn malformed_stored_keys_are_refused() {
        assert!(DatabaseKey::from_hex("abcd").is_err());
        assert!(DatabaseKey::from_hex(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn generated_keys_differ() {
        assert_ne!(
            DatabaseKey::generate().unwrap().0,
            DatabaseKey::generate().unwrap().0
        );
    }
}
