//! What the shell keeps between commands: the engine (the model pack in use
//! behind its inference worker) and the history. A part that fails to load
//! keeps its error so every command can say exactly what is wrong instead of
//! the app refusing to open.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use medtext_core::engine::Engine;
use medtext_core::training::StagedFile;
use medtext_core::{paths, HistoryStore};

pub struct AppState {
    pub engine: Arc<Engine>,
    pub history: Result<Arc<Mutex<HistoryStore>>, String>,
    /// The file handed over for "train your own", until training takes it.
    pub training_file: Mutex<Option<StagedFile>>,
    /// The recovery key of a history created at this start, until the UI
    /// has shown it once (for IT to escrow).
    pub new_recovery_key: Mutex<Option<String>>,
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
            .map(|mut store| {
                new_recovery_key = store.take_new_recovery_key().map(|k| k.to_text());
                Arc::new(Mutex::new(store))
            })
            .map_err(|e| e.to_string());
        Self {
            engine,
            history,
            training_file: Mutex::new(None),
            new_recovery_key: Mutex::new(new_recovery_key),
        }
    }
}
