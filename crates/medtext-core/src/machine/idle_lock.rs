//! The idle lock: after a period without use the app hides every patient
//! text and asks for the unlock passphrase before showing anything again.
//!
//! The decision lives here, not in the web UI: the shell asks
//! [`IdleLock::check`] before every command that returns patient text, so a
//! UI that failed to notice the time still gets nothing back. The passphrase
//! is kept only as an Argon2id hash (in the encrypted history's settings).

use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use crate::{Error, Result};

/// Shortest unlock passphrase accepted.
pub const MIN_PASSPHRASE_CHARS: usize = 8;

/// Whether the app is locked, and when it was last used.
#[derive(Debug)]
pub struct IdleLock {
    idle_after: Option<Duration>,
    last_activity: Instant,
    locked: bool,
    /// Wrong unlock attempts in a row, and when the next may be tried.
    failures: u32,
    retry_after: Option<Instant>,
}

/// Wrong attempts allowed before each further one must wait.
const FREE_ATTEMPTS: u32 = 5;

impl IdleLock {
    /// A lock that engages after `idle_minutes` without activity (`None`:
    /// only when asked to).
    pub fn new(idle_minutes: Option<u32>, now: Instant) -> Self {
        Self {
            idle_after: idle_minutes.map(|m| Duration::from_secs(u64::from(m) * 60)),
            last_activity: now,
            locked: false,
            failures: 0,
            retry_after: None,
        }
    }

    pub fn set_idle_minutes(&mut self, idle_minutes: Option<u32>) {
        self.idle_after = idle_minutes.map(|m| Duration::from_secs(u64::from(m) * 60));
    }

    pub fn idle_minutes(&self) -> Option<u32> {
        self.idle_after
            .map(|d| u32::try_from(d.as_secs() / 60).unwrap_or(u32::MAX))
    }

    /// Records use of the app (a key press, a click) unless it is locked.
    pub fn touch(&mut self, now: Instant) {
        if !self.is_locked(now) {
            self.last_activity = now;
        }
    }

    /// Locks now (the user's "Lock" button).
    pub fn lock(&mut self) {
        self.locked = true;
    }

    /// Whether the app is locked at `now`: asked to, or idle too long.
    pub fn is_locked(&mut self, now: Instant) -> bool {
        if let Some(idle_after) = self.idle_after {
            if now.saturating_duration_since(self.last_activity) >= idle_after {
                self.locked = true;
            }
        }
        self.locked
    }

    /// Fails with [`Error::Locked`] while locked, else counts as activity.
    pub fn check(&mut self, now: Instant) -> Result<()> {
        if self.is_locked(now) {
            return Err(Error::Locked);
        }
        self.last_activity = now;
        Ok(())
    }

    /// Unlocks if `passphrase` matches `stored_hash` (from
    /// [`hash_passphrase`]).
    pub fn unlock(&mut self, passphrase: &str, stored_hash: &str, now: Instant) -> Result<()> {
        self.unlock_with(|| verify_passphrase(passphrase, stored_hash), now)
    }

    /// Unlocks if `check` (the passphrase, or the OS account's password)
    /// succeeds. After [`FREE_ATTEMPTS`] wrong attempts in a row each further
    /// one waits, 30 s doubling up to 16 min, so guessing at the keyboard is
    /// slow.
    pub fn unlock_with(&mut self, check: impl FnOnce() -> Result<()>, now: Instant) -> Result<()> {
        if let Some(until) = self.retry_after.filter(|&until| now < until) {
            return Err(Error::Unlock {
                problem: format!(
                    "too many wrong attempts: try again in {} s",
                    until.saturating_duration_since(now).as_secs().max(1)
                ),
            });
        }
        match check() {
            Ok(()) => {
                self.locked = false;
                self.last_activity = now;
                self.failures = 0;
                self.retry_after = None;
                Ok(())
            }
            Err(e) => {
                self.failures = self.failures.saturating_add(1);
                self.retry_after = wait_after(self.failures).map(|wait| now + wait);
                Err(e)
            }
        }
    }

    /// Wrong unlock attempts in a row, for the caller to keep: a restart
    /// must not give a guesser five free attempts again.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Takes up the count kept from an earlier run: past the free attempts,
    /// the next one waits as it would have then (counted from `now`).
    pub fn resume_failures(&mut self, failures: u32, now: Instant) {
        self.failures = failures;
        self.retry_after = wait_after(failures).map(|wait| now + wait);
    }
}

/// How long the attempt after `failures` wrong ones in a row must wait:
/// nothing for the first [`FREE_ATTEMPTS`], then 30 s doubling up to 16 min.
fn wait_after(failures: u32) -> Option<Duration> {
    (failures >= FREE_ATTEMPTS)
        .then(|| Duration::from_secs(30u64 << (failures - FREE_ATTEMPTS).min(5)))
}

/// The Argon2id hash of a new unlock passphrase, as a PHC string.
pub fn hash_passphrase(passphrase: &str) -> Result<String> {
    if passphrase.chars().count() < MIN_PASSPHRASE_CHARS {
        return Err(Error::Unlock {
            problem: format!(
                "the unlock passphrase needs at least {MIN_PASSPHRASE_CHARS} characters"
            ),
        });
    }
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| Error::Unlock {
        problem: format!("no randomness from the OS: {e}"),
    })?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| Error::Unlock {
        problem: e.to_string(),
    })?;
    Argon2::default()
        .hash_password(passphrase.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Unlock {
            problem: e.to_string(),
        })
}

/// Checks `passphrase` against a hash from [`hash_passphrase`].
pub fn verify_passphrase(passphrase: &str, stored_hash: &str) -> Result<()> {
    let hash = PasswordHash::new(stored_hash).map_err(|_| Error::Unlock {
        problem: "the stored unlock passphrase is damaged; forget it with `medtext key reset-lock` and set a new one".into(),
    })?;
    Argon2::default()
        .verify_password(passphrase.as_bytes(), &hash)
        .map_err(|_| Error::Unlock {
            problem: "that is not the unlock passphrase".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_engages_after_the_idle_time_and_activity_postpones_it() {
        let start = Instant::now();
        let minute = Duration::from_secs(60);
        let mut lock = IdleLock::new(Some(5), start);
        assert!(lock.check(start + 4 * minute).is_ok());
        // Activity at minute 4 moves the deadline to minute 9.
        assert!(!lock.is_locked(start + 8 * minute));
        assert!(matches!(lock.check(start + 9 * minute), Err(Error::Locked)));
        // Once locked, activity does not unlock it.
        lock.touch(start + 9 * minute);
        assert!(lock.is_locked(start + 9 * minute));
    }

    #[test]
    fn a_count_kept_from_an_earlier_run_makes_the_next_attempt_wait() {
        let start = Instant::now();
        let mut lock = IdleLock::new(None, start);
        lock.lock();
        lock.resume_failures(FREE_ATTEMPTS, start);
        let refused = lock.unlock_with(|| Ok(()), start + Duration::from_secs(29));
        assert!(
            matches!(&refused, Err(Error::Unlock { problem }) if problem.contains("too many wrong attempts")),
            "{refused:?}"
        );
        assert!(lock
            .unlock_with(|| Ok(()), start + Duration::from_secs(30))
            .is_ok());
        assert_eq!(lock.failures(), 0);
        // Fewer than the free attempts: no wait.
        lock.resume_failures(FREE_ATTEMPTS - 1, start);
        assert!(lock.unlock_with(|| Ok(()), start).is_ok());
    }

    #[test]
    fn repeated_wrong_attempts_must_wait_and_a_success_resets_the_count() {
        let start = Instant::now();
        let mut lock = IdleLock::new(None, start);
        lock.lock();
        let wrong = || {
            Err(Error::Unlock {
                problem: "wrong".into(),
            })
        };
        for _ in 0..FREE_ATTEMPTS {
            assert!(
                matches!(lock.unlock_with(wrong, start), Err(Error::Unlock { problem }) if problem == "wrong")
            );
        }
        // The right answer too must wait now.
        let waiting = lock.unlock_with(|| Ok(()), start + Duration::from_secs(10));
        assert!(
            matches!(&waiting, Err(Error::Unlock { problem }) if problem.contains("try again in 20 s")),
            "{waiting:?}"
        );
        assert!(lock.is_locked(start));
        lock.unlock_with(|| Ok(()), start + Duration::from_secs(30))
            .unwrap();
        assert!(!lock.is_locked(start + Duration::from_secs(30)));
        lock.lock();
        assert!(
            matches!(lock.unlock_with(wrong, start + Duration::from_secs(31)), Err(Error::Unlock { problem }) if problem == "wrong")
        );
    }

    #[test]
    fn only_the_right_passphrase_unlocks() {
        let start = Instant::now();
        let hash = hash_passphrase("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(!hash.contains("correct horse"));
        let mut lock = IdleLock::new(None, start);
        assert!(!lock.is_locked(start + Duration::from_secs(86_400)));
        lock.lock();
        let wrong = lock.unlock("wrong horse", &hash, start).unwrap_err();
        assert!(wrong.to_string().contains("not the unlock passphrase"));
        assert!(lock.is_locked(start));
        lock.unlock("correct horse", &hash, start).unwrap();
        assert!(!lock.is_locked(start));
        assert!(hash_passphrase("short").is_err());
        assert!(verify_passphrase("x", "not a hash").is_err());
    }
}
