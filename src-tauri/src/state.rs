//! What the shell keeps between commands: the engine (the model pack in use
//! behind its inference worker) and the history. A part that fails to load
//! keeps its error so every command can say exactly what is wrong instead of
//! the app refusing to open.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use medtext_core::engine::Engine;
use medtext_core::training::StagedFile;
use medtext_core::{paths, HistoryStore};

pub struct AppState {
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
        let mut candidates: Vec<PathBuf> =
            resource_dir.into_iter().map(|d| d.join("models")).collect();
        // A development build runs from the source tree: use its models/.
        if cfg!(debug_assertions) {
            candidates.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models"));
        }
        let models_dir = paths::models_dir(&candidates);
        let engine = Arc::new(Engine::start(
            &models_dir,
            medtext_core::pack::DEFAULT_PACK,
            None,
        ));
        let mut new_recovery_key = None;
        let history = paths::data_dir()
            .and_then(|dir| HistoryStore::open_in(&dir))
            .and_then(|mut store| {
                new_recovery_key = store.take_new_recovery_key().map(|k| k.to_text());
                // Records past the retention period go at every start.
                store.apply_retention()?;
                Ok(Arc::new(Mutex::new(store)))
            })
            .map_err(|e| e.to_string());
        let integrity = Arc::new(Mutex::new(None));
        if let Ok(store) = &history {
            check_integrity_in_background(Arc::clone(store), Arc::clone(&integrity));
        }
        Self {
            engine,
            history: RwLock::new(history),
            training_file: Mutex::new(None),
            new_recovery_key: Mutex::new(new_recovery_key),
            integrity,
        }
    }
}

impl AppState {
    /// The open history, or why it is not open.
    pub fn history(&self) -> Result<Arc<Mutex<HistoryStore>>, String> {
        self.history
            .read()
            .map_err(|_| "the history store is unavailable after an earlier failure".to_string())?
            .clone()
    }

    /// Opens the history with its recovery key (after the keychain entry was
    /// lost) and uses it from now on.
    pub fn recover_history(&self, recovery_key: &str) -> Result<(), String> {
        let store = paths::data_dir()
            .and_then(|dir| HistoryStore::recover(&dir, recovery_key))
            .map_err(|e| e.to_string())?;
        let store = Arc::new(Mutex::new(store));
        check_integrity_in_background(Arc::clone(&store), Arc::clone(&self.integrity));
        *self.history.write().map_err(|_| {
            "the history store is unavailable after an earlier failure".to_string()
        })? = Ok(store);
        Ok(())
    }
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
