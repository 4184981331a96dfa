//! IPC commands: each translates one call from the web UI into calls on
//! `medtext_core`. Errors cross the bridge as plain, patient-text-free strings.

use serde::Serialize;
use tauri::State;

use medtext_core::{Classification, HistoryEntry};

use crate::state::AppState;

/// Entries shown in the "recent" list.
const RECENT_LIMIT: usize = 10;

#[derive(Serialize)]
pub struct ClassifyResponse {
    pub classification: Classification,
    /// Id of the saved history record, or why saving failed (the result is
    /// still shown: a clinician should not lose the answer to a storage error).
    pub saved_id: Option<i64>,
    pub save_error: Option<String>,
}

#[derive(Serialize)]
pub struct AppStatus {
    pub model: Result<ModelInfo, String>,
    pub history: Result<(), String>,
    pub max_text_chars: usize,
}

#[derive(Serialize)]
pub struct ModelInfo {
    pub pack: String,
    pub version: String,
    pub head: String,
    pub task: String,
}

/// Classifies `text` off the UI thread and saves the result to the history.
#[tauri::command]
pub async fn classify(
    text: String,
    state: State<'_, AppState>,
) -> Result<ClassifyResponse, String> {
    let classifier = state.classifier.clone()?;
    let history = state.history.clone();
    tauri::async_runtime::spawn_blocking(move || {
        let classification = classifier.classify(&text).map_err(|e| e.to_string())?;
        let saved = history.and_then(|h| {
            let mut store = h.lock().map_err(|_| {
                "the history store is unavailable after an earlier failure".to_string()
            })?;
            store
                .save(&text, &classification)
                .map_err(|e| e.to_string())
        });
        let (saved_id, save_error) = match saved {
            Ok(id) => (Some(id), None),
            Err(e) => (None, Some(e)),
        };
        Ok(ClassifyResponse {
            classification,
            saved_id,
            save_error,
        })
    })
    .await
    .map_err(|_| "classification stopped unexpectedly; please try again".to_string())?
}

/// The most recent saved classifications, newest first.
#[tauri::command]
pub async fn recent_history(state: State<'_, AppState>) -> Result<Vec<HistoryEntry>, String> {
    let history = state.history.clone()?;
    tauri::async_runtime::spawn_blocking(move || {
        let store = history
            .lock()
            .map_err(|_| "the history store is unavailable after an earlier failure".to_string())?;
        store.recent(RECENT_LIMIT).map_err(|e| e.to_string())
    })
    .await
    .map_err(|_| "reading the history stopped unexpectedly".to_string())?
}

/// What loaded at start-up, for the status line.
#[tauri::command]
pub fn app_status(state: State<'_, AppState>) -> AppStatus {
    AppStatus {
        model: state.classifier.as_ref().map_err(Clone::clone).map(|c| {
            let m = &c.pack().manifest;
            ModelInfo {
                pack: m.name.clone(),
                version: m.version.clone(),
                head: c.head_spec().name.clone(),
                task: m.task.clone(),
            }
        }),
        history: state.history.as_ref().map(|_| ()).map_err(Clone::clone),
        max_text_chars: medtext_core::text::MAX_TEXT_CHARS,
    }
}
