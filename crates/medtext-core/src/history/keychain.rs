//! Custody of the history database key in the OS keychain.
//!
//! The key is 256 random bits created on first run and stored only in the
//! platform keychain (Secret Service on Linux, Credential Manager on Windows,
//! Keychain on macOS). It is never written to disk in clear, never logged, and
//! never sent to the web UI. Custody fails closed: if a database exists but its
//! key does not, nothing is created over it.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use crate::{Error, Result};

/// Keychain service name under which MedText keeps its secrets.
pub const KEYCHAIN_SERVICE: &str = "MedText";

/// 256 secret bits: `Debug` output redacted, wiped when dropped.
struct Secret([u8; 32]);

impl Secret {
    fn generate() -> Result<Self> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| Error::Keychain {
            problem: format!("the system random source failed: {e}"),
        })?;
        Ok(Self(bytes))
    }

    fn from_hex(text: &str, what: &str) -> Result<Self> {
        let bytes = hex::decode(text.trim())
            .ok()
            .and_then(|v| <[u8; 32]>::try_from(v).ok());
        bytes.map(Self).ok_or_else(|| Error::Keychain {
            problem: format!("the stored {what} is malformed (expected 64 hex digits)"),
        })
    }

    fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// A 256-bit SQLCipher key: it never leaves the keychain and this process
/// (never shown, never sent to the web UI).
pub struct DatabaseKey(Secret);

impl DatabaseKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<Self> {
        Secret::generate().map(Self)
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Secret(bytes))
    }

    fn from_hex(text: &str) -> Result<Self> {
        Secret::from_hex(text, "database key").map(Self)
    }

    /// The key as SQLCipher's raw-key literal body (64 hex digits).
    pub(crate) fn to_hex(&self) -> String {
        self.0.to_hex()
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0 .0
    }
}

impl fmt::Debug for DatabaseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DatabaseKey(<redacted>)")
    }
}

/// The recovery key: a second random secret that unlocks a copy of the
/// database key kept beside the database (see [`crate::history::recovery`]).
/// Escrowed to IT where the policy names IT's key (see [`crate::history::escrow`]),
/// else shown once when the history is created for the user to give IT; it
/// survives key rotation. Whoever holds it can read the history.
pub struct RecoveryKey(Secret);

impl RecoveryKey {
    pub fn generate() -> Result<Self> {
        Secret::generate().map(Self)
    }

    fn from_hex(text: &str) -> Result<Self> {
        Secret::from_hex(text, "recovery key").map(Self)
    }

    pub(crate) fn to_hex(&self) -> String {
        self.0.to_hex()
    }

    /// Written for people: 52 Crockford base32 digits and 4 check digits,
    /// in groups of four ("7K2M-…").
    pub fn to_text(&self) -> String {
        let bytes = &self.0 .0;
        let mut digits = base32(bytes);
        digits.push_str(&base32(&check_bytes(bytes))[..4]);
        digits
            .as_bytes()
            .chunks(4)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join("-")
    }

    /// Reads a recovery key as [`RecoveryKey::to_text`] writes it; spaces,
    /// dashes and case do not matter, and O/I/L read as 0/1/1.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |problem: &str| Error::Keychain {
            problem: format!("that recovery key {problem}; check it against the escrowed copy"),
        };
        let digits: Vec<u8> = text
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .map(|c| match c.to_ascii_uppercase() {
                'O' => Some(0),
                'I' | 'L' => Some(1),
                c => CROCKFORD
                    .iter()
                    .position(|&d| d as char == c)
                    .map(|p| p as u8),
            })
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| bad("has a character that is not in it"))?;
        if digits.len() != 56 {
            return Err(bad(
                "has the wrong length (56 characters without the dashes)",
            ));
        }
        let mut bytes = [0u8; 32];
        let (mut acc, mut bits, mut at) = (0u32, 0u32, 0usize);
        for &d in &digits[..52] {
            acc = (acc << 5) | u32::from(d);
            bits += 5;
            if bits >= 8 && at < 32 {
                bits -= 8;
                bytes[at] = (acc >> bits) as u8;
                at += 1;
            }
        }
        let key = Self(Secret(bytes));
        let expected = base32(&check_bytes(&key.0 .0));
        let check: String = digits[52..]
            .iter()
            .map(|&d| CROCKFORD[usize::from(d)] as char)
            .collect();
        if check != expected[..4] {
            return Err(bad("does not check out (a character is mistyped)"));
        }
        Ok(key)
    }
}

/// A copy is wiped when dropped, like the original: the store keeps one to
/// show and hands the other to the escrow.
impl Clone for RecoveryKey {
    fn clone(&self) -> Self {
        Self(Secret(self.0 .0))
    }
}

impl fmt::Debug for RecoveryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecoveryKey(<redacted>)")
    }
}

/// Crockford's base32 digits: no I, L, O or U, so nothing reads as another.
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

fn base32(bytes: &[u8]) -> String {
    let mut out = String::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(CROCKFORD[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(CROCKFORD[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

fn check_bytes(key: &[u8; 32]) -> [u8; 3] {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(key);
    [digest[0], digest[1], digest[2]]
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
    match retried(|| entry.get_password()) {
        Ok(hex) => DatabaseKey::from_hex(&hex),
        Err(keyring::Error::NoEntry) => {
            if db_path.exists() {
                return Err(Error::KeyMissing {
                    path: db_path.to_path_buf(),
                });
            }
            let key = DatabaseKey::generate()?;
            store_verified(&entry, &key)?;
            Ok(key)
        }
        Err(e) => Err(keychain_error(e)),
    }
}

/// The key being rotated in, kept under its own account until the database
/// and the main entry both use it (see `HistoryStore::rotate_key`).
pub fn pending_key(db_path: &Path) -> Result<Option<DatabaseKey>> {
    let entry = pending_entry(db_path)?;
    match retried(|| entry.get_password()) {
        Ok(hex) => DatabaseKey::from_hex(&hex).map(Some),
        Err(keyring::Error::NoEntry) => Ok(None),
        Err(e) => Err(keychain_error(e)),
    }
}

pub fn store_pending_key(db_path: &Path, key: &DatabaseKey) -> Result<()> {
    store_verified(&pending_entry(db_path)?, key)
}

pub(crate) fn delete_pending_key(db_path: &Path) -> Result<()> {
    delete(pending_entry(db_path)?)
}

/// Stores `key` as the key of the database at `db_path`, replacing any.
pub fn store_database_key(db_path: &Path, key: &DatabaseKey) -> Result<()> {
    store_verified(&entry(db_path)?, key)
}

/// Writes `key` and reads it back: a keychain that accepts a secret but
/// cannot return it would otherwise leave a database nobody can open.
fn store_verified(entry: &keyring::Entry, key: &DatabaseKey) -> Result<()> {
    retried(|| entry.set_password(&key.to_hex())).map_err(keychain_error)?;
    let stored = retried(|| entry.get_password()).map_err(keychain_error)?;
    if stored != key.to_hex() {
        return Err(Error::Keychain {
            problem: "the key read back from the keychain differs from the one stored".into(),
        });
    }
    Ok(())
}

/// The recovery key of the database at `db_path`, kept in the keychain so
/// it can be shown again on demand and survives key rotation.
pub fn recovery_key(db_path: &Path) -> Result<Option<RecoveryKey>> {
    let entry = recovery_entry(db_path)?;
    match retried(|| entry.get_password()) {
        Ok(hex) => RecoveryKey::from_hex(&hex).map(Some),
        Err(keyring::Error::NoEntry) => Ok(None),
        Err(e) => Err(keychain_error(e)),
    }
}

pub(crate) fn store_recovery_key(db_path: &Path, key: &RecoveryKey) -> Result<()> {
    let entry = recovery_entry(db_path)?;
    retried(|| entry.set_password(&key.to_hex())).map_err(keychain_error)?;
    if retried(|| entry.get_password()).map_err(keychain_error)? != key.to_hex() {
        return Err(Error::Keychain {
            problem: "the recovery key read back from the keychain differs from the one stored"
                .into(),
        });
    }
    Ok(())
}

/// Removes the recovery key of `db_path` from the keychain (its history is
/// gone and a new one starts: see `HistoryStore::start_new`).
pub(crate) fn delete_recovery_key(db_path: &Path) -> Result<()> {
    delete(recovery_entry(db_path)?)
}

fn recovery_entry(db_path: &Path) -> Result<keyring::Entry> {
    keyring::Entry::new(
        KEYCHAIN_SERVICE,
        &format!("history-recovery-key:{}", db_path.display()),
    )
    .map_err(keychain_error)
}

fn pending_entry(db_path: &Path) -> Result<keyring::Entry> {
    keyring::Entry::new(
        KEYCHAIN_SERVICE,
        &format!("{}:pending", account_for(db_path)),
    )
    .map_err(keychain_error)
}

/// Removes the stored database key for `db_path` (used when a database is
/// deliberately discarded, and by tests).
pub fn delete_database_key(db_path: &Path) -> Result<()> {
    delete(entry(db_path)?)
}

/// Removes every keychain entry of `db_path`: its key, recovery key and
/// any pending key.
pub fn delete_all_keys(db_path: &Path) -> Result<()> {
    delete(entry(db_path)?)?;
    delete(recovery_entry(db_path)?)?;
    delete(pending_entry(db_path)?)
}

fn delete(entry: keyring::Entry) -> Result<()> {
    match retried(|| entry.delete_credential()) {
        Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
        Err(e) => Err(keychain_error(e)),
    }
}

fn entry(db_path: &Path) -> Result<keyring::Entry> {
    keyring::Entry::new(KEYCHAIN_SERVICE, &account_for(db_path)).map_err(keychain_error)
}

/// How long to wait before each new try of a keychain call whose keychain
/// service went away mid-call.
const RETRY_AFTER: [Duration; 3] = [
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_millis(1000),
];

/// Runs a keychain call again when the keychain service went away during it.
///
/// Why: gnome-keyring-daemon can abort when short-lived clients connect and
/// disconnect quickly (an upstream race, GNOME/gnome-keyring#196), and the
/// session bus or systemd starts it again a moment later. Without a retry
/// the call in flight fails with "Message recipient disconnected", and a
/// clinician sees a keychain error for a keychain that is fine. Every call
/// retried here is idempotent (read, write the same value, delete).
fn retried<T>(call: impl Fn() -> keyring::Result<T>) -> keyring::Result<T> {
    let mut result = call();
    for pause in RETRY_AFTER {
        match &result {
            Err(e) if service_went_away(e) => {
                std::thread::sleep(pause);
                result = call();
            }
            _ => break,
        }
    }
    result
}

/// Whether `e` says the keychain service vanished or is being started again,
/// rather than refusing or lacking the entry.
fn service_went_away(e: &keyring::Error) -> bool {
    let message = match e {
        keyring::Error::PlatformFailure(inner) | keyring::Error::NoStorageAccess(inner) => {
            inner.to_string()
        }
        _ => return false,
    };
    [
        "disconnected from message bus",
        "NoReply",
        "Did not receive a reply",
        "ServiceUnknown",
        "was not provided by any .service files",
    ]
    .iter()
    .any(|sign| message.contains(sign))
}

fn keychain_error(e: keyring::Error) -> Error {
    Error::Keychain {
        problem: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform_failure(message: &str) -> keyring::Error {
        keyring::Error::PlatformFailure(message.to_string().into())
    }

    #[test]
    fn a_call_whose_keychain_service_went_away_is_tried_again() {
        let tries = std::cell::Cell::new(0);
        let result = retried(|| {
            tries.set(tries.get() + 1);
            if tries.get() < 3 {
                Err(platform_failure(
                    "DBus error: Message recipient disconnected from message bus without replying",
                ))
            } else {
                Ok("key")
            }
        });
        assert_eq!(result.ok(), Some("key"));
        assert_eq!(tries.get(), 3);
    }

    #[test]
    fn a_refusal_or_a_missing_entry_is_not_tried_again() {
        for error in [
            || keyring::Error::NoEntry,
            || platform_failure("DBus error: the collection is locked"),
        ] {
            let tries = std::cell::Cell::new(0);
            let result: keyring::Result<()> = retried(|| {
                tries.set(tries.get() + 1);
                Err(error())
            });
            assert!(result.is_err());
            assert_eq!(tries.get(), 1);
        }
    }

    #[test]
    fn a_service_that_stays_away_fails_after_the_last_try() {
        let tries = std::cell::Cell::new(0);
        let result: keyring::Result<()> = retried(|| {
            tries.set(tries.get() + 1);
            Err(platform_failure(
                "org.freedesktop.DBus.Error.ServiceUnknown",
            ))
        });
        assert!(result.is_err());
        assert_eq!(tries.get(), 1 + RETRY_AFTER.len());
    }

    #[test]
    fn debug_output_never_shows_the_key() {
        let key = DatabaseKey::from_bytes([0xab; 32]);
        let shown = format!("{key:?}");
        assert!(!shown.to_lowercase().contains("abab"), "{shown}");
        assert_eq!(
            DatabaseKey::from_hex(&key.to_hex()).unwrap().bytes(),
            key.bytes()
        );
        let recovery = RecoveryKey(Secret([0xab; 32]));
        assert!(!format!("{recovery:?}").to_lowercase().contains("abab"));
    }

    #[test]
    fn malformed_stored_keys_are_refused() {
        assert!(DatabaseKey::from_hex("abcd").is_err());
        assert!(DatabaseKey::from_hex(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn a_recovery_key_reads_back_and_catches_typos() {
        for _ in 0..50 {
            let key = RecoveryKey::generate().unwrap();
            let written = key.to_text();
            assert_eq!(written.len(), 56 + 13);
            assert_eq!(RecoveryKey::parse(&written).unwrap().to_hex(), key.to_hex());
            // Case, spaces and look-alike letters do not matter.
            let relaxed = written.to_lowercase().replace('-', " ").replace('0', "o");
            assert_eq!(RecoveryKey::parse(&relaxed).unwrap().to_hex(), key.to_hex());
            // One digit changed is caught by the check digits.
            let mut chars: Vec<char> = written.chars().collect();
            chars[5] = if chars[5] == 'A' { 'B' } else { 'A' };
            let typo: String = chars.into_iter().collect();
            let err = RecoveryKey::parse(&typo).err().unwrap().to_string();
            assert!(err.contains("does not check out"), "{err}");
        }
        assert!(RecoveryKey::parse("ABCD-EFGH").is_err());
        assert!(RecoveryKey::parse(&"U".repeat(56)).is_err());
    }

    #[test]
    fn generated_keys_differ() {
        assert_ne!(
            DatabaseKey::generate().unwrap().to_hex(),
            DatabaseKey::generate().unwrap().to_hex()
        );
    }
}
