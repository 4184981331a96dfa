//! What the shell keeps between commands: the engine (the model pack in use
//! behind its inference worker) and the history. A part that fails to load
//! keeps its error so every command can say exactly what is wrong instead of
//! the app refusing to open.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Instant;

use medtext_core::history::store::apply_retention_hourly;
use medtext_core::inference::engine::Engine;
use medtext_core::machine::idle_lock::IdleLock;
use medtext_core::machine::policy::{Policy, UnlockMethod};
use medtext_core::training::pipeline::StagedFile;
use medtext_core::{machine::logging, paths, HistoryStore};

/// Locks a mutex of the app's state, or says which part is unusable after a
/// panic poisoned it (the one message every command gives for that).
pub trait LockOr<T> {
    fn lock_or(&self, what: &str) -> Result<MutexGuard<'_, T>, String>;
}

impl<T> LockOr<T> for Mutex<T> {
    fn lock_or(&self, what: &str) -> Result<MutexGuard<'_, T>, String> {
        self.lock()
            .map_err(|_| format!("{what} is unavailable after an earlier failure"))
    }
}

pub struct AppState {
    /// The machine policy, or why it is unusable: then every command
    /// refuses with that message (the app does not run without its policy).
    pub policy: Result<Policy, String>,
    /// Where this run logs, or why it cannot.
    pub log_file: Result<PathBuf, String>,
    /// Locks the app after the idle time; see [`AppState::guard`].
    pub lock: Mutex<IdleLock>,
    pub engine: Arc<Engine>,
    /// The open history, or why it did not open (until a recovery opens it).
    history: RwLock<Result<Arc<Mutex<HistoryStore>>, String>>,
    /// The file handed over for "train your own", until training takes it.
    pub training_file: Mutex<Option<StagedFile>>,
    /// The recovery key of a history created at this start, until the UI
    /// has shown it once (for IT to escrow).
    pub new_recovery_key: Mutex<Option<String>>,
    /// The start-up integrity check of the history: `None` while it runs.
    pub integrity: Arc<Mutex<Option<Result<(), String>>>>,
}

impl AppState {
    pub fn load(resource_dir: Option<PathBuf>) -> Self {
        let policy = Policy::load().map_err(|e| {
            eprintln!("MedText cannot start: {e}");
            e.to_string()
        });
        let log_settings = policy
            .as_ref()
            .map(Policy::log_settings)
            .unwrap_or_default();
        let log_file = paths::log_dir()
            .and_then(|dir| logging::init("app", &dir, log_settings))
            .map_err(|e| e.to_string());
        // Training and batch files a crash left staged (an hour old at least:
        // younger ones may be another window's).
        if let Ok(dir) = paths::data_dir() {
            for sub in ["training", "batch"] {
                StagedFile::sweep(&dir.join(sub), std::time::Duration::from_secs(3600));
            }
        }
        let mut candidates: Vec<PathBuf> =
            resource_dir.into_iter().map(|d| d.join("models")).collect();
        // A development build runs from the source tree: use its models/.
        if cfg!(debug_assertions) {
            candidates.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models"));
        }
        let models_dir = paths::models_dir(&candidates);
        let engine = Arc::new(Engine::start(
            &models_dir,
            medtext_core::pack::manifest::DEFAULT_PACK,
            None,
        ));
        let mut new_recovery_key = None;
        let history = policy
            .clone()
            .map_err(|_| medtext_core::Error::Engine("the machine policy is unusable".into()))
            .and_then(|_| paths::data_dir())
            .and_then(|dir| HistoryStore::open_in(&dir))
            .map(|mut store| {
                new_recovery_key = store.take_new_recovery_key().map(|k| k.to_text());
                Arc::new(Mutex::new(store))
            })
            .map_err(|e| e.logged("open_history").to_string());
        // What the history keeps for the lock: the idle time, whether a
        // passphrase is set, and the wrong attempts of earlier runs.
        let saved = history.as_ref().ok().and_then(|store| {
            let store = store.lock().ok()?;
            Some((
                store.idle_lock_minutes().ok().flatten(),
                matches!(store.unlock_passphrase_hash(), Ok(Some(_))),
                store.unlock_failures().unwrap_or(0),
            ))
        });
        let idle_minutes = match saved {
            Some((minutes, _, _)) => minutes,
            None => policy.as_ref().ok().and_then(|p| p.idle_lock_minutes),
        };
        // With a way to unlock set up, the app starts locked: otherwise
        // closing a locked window and starting it again would open it.
        let can_unlock = match &policy {
            Ok(p) if p.unlock_method() == UnlockMethod::Os => {
                medtext_core::machine::os_auth::AVAILABLE
            }
            _ => saved.is_some_and(|(_, has_passphrase, _)| has_passphrase),
        };
        let mut lock = IdleLock::new(idle_minutes, Instant::now());
        if can_unlock {
            lock.lock();
        }
        if let Some((_, _, failures)) = saved {
            lock.resume_failures(failures, Instant::now());
        }
        // Last: the integrity check holds the store while it reads the whole
        // file, and the reads above must not wait for it.
        let integrity = Arc::new(Mutex::new(None));
        if let Ok(store) = &history {
            start_background_work(store, &integrity);
        }
        Self {
            policy,
            log_file,
            lock: Mutex::new(lock),
            engine,
            history: RwLock::new(history),
            training_file: Mutex::new(None),
            new_recovery_key: Mutex::new(new_recovery_key),
            integrity,
        }
    }
}

impl AppState {
    /// What every command that shows or takes patient text asks first: the
    /// policy is usable and the app is not locked (which also counts as use).
    pub fn guard(&self) -> Result<&Policy, String> {
        let policy = self.policy.as_ref().map_err(Clone::clone)?;
        self.lock
            .lock_or("the lock")?
            .check(Instant::now())
            .map_err(|e| e.to_string())?;
        Ok(policy)
    }

    /// The open history, or why it is not open.
    pub fn history(&self) -> Result<Arc<Mutex<HistoryStore>>, String> {
        self.history
            .read()
            .map_err(|_| "the history store is unavailable after an earlier failure".to_string())?
            .clone()
    }

    /// Runs `work` on the open history, off the UI thread, after the lock
    /// check: what every history command does.
    pub async fn with_history<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut HistoryStore) -> medtext_core::Result<T> + Send + 'static,
    ) -> Result<T, String> {
        self.guard()?;
        let history = self.history()?;
        tauri::async_runtime::spawn_blocking(move || {
            let mut store = history.lock_or("the history store")?;
            work(&mut store).map_err(|e| e.logged("history").to_string())
        })
        .await
        .map_err(|_| "the history command stopped unexpectedly; please try again".to_string())?
    }

    /// Opens the history with its recovery key (after the keychain entry was
    /// lost) and uses it from now on.
    pub fn recover_history(&self, recovery_key: &str) -> Result<(), String> {
        let store = paths::data_dir()
            .and_then(|dir| HistoryStore::recover(&dir, recovery_key))
            .map_err(|e| e.to_string())?;
        // The idle time the user set is in the history that just opened.
        if let (Ok(Some(minutes)), Ok(mut lock)) = (store.idle_lock_minutes(), self.lock.lock()) {
            lock.set_idle_minutes(Some(minutes));
        }
        let store = Arc::new(Mutex::new(store));
        start_background_work(&store, &self.integrity);
        *self.history.write().map_err(|_| {
            "the history store is unavailable after an earlier failure".to_string()
        })? = Ok(store);
        Ok(())
    }
}

/// What runs beside an opened history: its integrity check once, and the
/// retention period every hour (not only at start: the app may stay open
/// for weeks, and records must not outlive what IT set).
fn start_background_work(
    store: &Arc<Mutex<HistoryStore>>,
    integrity: &Arc<Mutex<Option<Result<(), String>>>>,
) {
    check_integrity_in_background(Arc::clone(store), Arc::clone(integrity));
    let store = Arc::downgrade(store);
    // Ends when a recovery replaced this store: its own thread took over.
    apply_retention_hourly(move || {
        let history = store.upgrade()?;
        let mut open = history.lock().ok()?;
        Some(open.apply_retention())
    });
}

/// Runs both integrity checks (every page's authentication code, then the
/// structure) off the start-up path: on a large history they read the whole
/// file, and the window should not wait for that.
fn check_integrity_in_background(
    store: Arc<Mutex<HistoryStore>>,
    outcome: Arc<Mutex<Option<Result<(), String>>>>,
) {
    std::thread::spawn(move || {
        let result = match store.lock() {
            Ok(store) => match store.integrity_problems() {
                Ok(problems) if problems.is_empty() => Ok(()),
                Ok(problems) => Err(format!(
                    "the history failed its integrity check ({}); restore it from a backup",
                    problems.join("; ")
                )),
                Err(e) => Err(e.to_string()),
            },
            Err(_) => Err("the history store is unavailable after an earlier failure".into()),
        };
        if let Ok(mut slot) = outcome.lock() {
            *slot = Some(result);
        }
    });
}
