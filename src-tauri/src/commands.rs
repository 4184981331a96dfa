//! IPC commands: each translates one call from the web UI into calls on
//! `medtext_core`. Errors cross the bridge as plain, patient-text-free strings.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tauri::ipc::Channel;
use tauri::State;

use medtext_core::train::HeadShape;
use medtext_core::training::{self, Progress, TrainOutcome, TrainRequest};
use medtext_core::{dataset, Classification, HistoryEntry};

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
    /// The start-up integrity check: `None` while it runs.
    pub history_integrity: Option<Result<(), String>>,
    pub max_text_chars: usize,
}

#[derive(Serialize)]
pub struct ModelInfo {
    pub pack: String,
    pub version: String,
    pub head: String,
    pub task: String,
}

/// Classifies `text` with word evidence on the inference worker and saves
/// the result to the history.
#[tauri::command]
pub async fn classify(
    text: String,
    state: State<'_, AppState>,
) -> Result<ClassifyResponse, String> {
    let worker = state.engine.worker().map_err(|e| e.to_string())?;
    let history = state.history();
    tauri::async_runtime::spawn_blocking(move || {
        let classification = worker
            .classify_with_evidence(text.clone())
            .map_err(|e| e.to_string())?;
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
    let history = state.history()?;
    tauri::async_runtime::spawn_blocking(move || {
        let store = history
            .lock()
            .map_err(|_| "the history store is unavailable after an earlier failure".to_string())?;
        store.recent(RECENT_LIMIT).map_err(|e| e.to_string())
    })
    .await
    .map_err(|_| "reading the history stopped unexpectedly".to_string())?
}

/// What is loaded, for the status line.
#[tauri::command]
pub fn app_status(state: State<'_, AppState>) -> AppStatus {
    AppStatus {
        model: model_info(&state),
        history: state.history().map(|_| ()),
        history_integrity: state.integrity.lock().ok().and_then(|r| r.clone()),
        max_text_chars: medtext_core::text::MAX_TEXT_CHARS,
    }
}

fn model_info(state: &AppState) -> Result<ModelInfo, String> {
    let worker = state.engine.worker().map_err(|e| e.to_string())?;
    let c = worker.classifier();
    let m = &c.pack().manifest;
    Ok(ModelInfo {
        pack: m.name.clone(),
        version: m.version.clone(),
        head: c.head_spec().name.clone(),
        task: m.task.clone(),
    })
}

#[derive(Serialize)]
pub struct PackChoice {
    /// The pack's folder name, what `select_pack` takes.
    pub pack: String,
    pub version: String,
    pub task: String,
    pub heads: Vec<HeadChoice>,
}

#[derive(Serialize)]
pub struct HeadChoice {
    pub name: String,
    pub labels: usize,
}

#[derive(Serialize)]
pub struct PackList {
    pub packs: Vec<PackChoice>,
    /// Folders that hold a manifest but do not open, with the reason.
    pub broken: Vec<String>,
}

/// The installed packs and their heads, for the model picker.
#[tauri::command]
pub async fn list_packs(state: State<'_, AppState>) -> Result<PackList, String> {
    let models_dir = state.engine.models_dir().to_path_buf();
    tauri::async_runtime::spawn_blocking(move || {
        let mut list = PackList {
            packs: Vec::new(),
            broken: Vec::new(),
        };
        for pack in medtext_core::pack::installed(&models_dir) {
            match pack {
                Ok(p) => list.packs.push(PackChoice {
                    pack: p
                        .dir
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    version: p.manifest.version.clone(),
                    task: p.manifest.task.clone(),
                    heads: p
                        .manifest
                        .heads
                        .iter()
                        .map(|h| HeadChoice {
                            name: h.name.clone(),
                            labels: h.labels.len(),
                        })
                        .collect(),
                }),
                Err(e) => list.broken.push(e.to_string()),
            }
        }
        list
    })
    .await
    .map_err(|_| "listing the model packs stopped unexpectedly".to_string())
}

/// Switches to `pack` / `head`. If it does not load, the pack in use stays
/// and the error says which file is wrong and how.
#[tauri::command]
pub async fn select_pack(
    pack: String,
    head: Option<String>,
    state: State<'_, AppState>,
) -> Result<ModelInfo, String> {
    let engine = Arc::clone(&state.engine);
    // Loading takes a moment (hashes, weights): off the UI thread.
    tauri::async_runtime::spawn_blocking(move || {
        engine
            .switch(&pack, head.as_deref())
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|_| "loading the model pack stopped unexpectedly".to_string())??;
    model_info(&state)
}

/// Receives a training file as the raw request body (its kind, `csv` or
/// `jsonl`, in the `x-file-kind` header) and keeps it, owner-only in the data
/// directory, for `train_pack`. A file staged earlier is removed.
#[tauri::command]
pub async fn stage_training_file(
    request: tauri::ipc::Request<'_>,
    state: State<'_, AppState>,
) -> Result<(), String> {
    let tauri::ipc::InvokeBody::Raw(bytes) = request.body() else {
        return Err("the training file must be sent as raw bytes".into());
    };
    let kind = request
        .headers()
        .get("x-file-kind")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("csv");
    let dir = medtext_core::paths::data_dir()
        .map_err(|e| e.to_string())?
        .join("training");
    let staged = medtext_core::training::StagedFile::write(&dir, &format!("upload.{kind}"), bytes)
        .map_err(|e| e.to_string())?;
    *state
        .training_file
        .lock()
        .map_err(|_| "training is unavailable after an earlier failure".to_string())? =
        Some(staged);
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrainOptions {
    pub name: String,
    pub text_column: String,
    pub label_column: String,
    pub head_kind: HeadKindChoice,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeadKindChoice {
    Linear,
    Mlp,
}

/// Trains a new pack from the staged file on the default pack's encoder,
/// reporting progress on `on_progress`, and installs it under `name`. The
/// evaluation comes back so the clinician sees it before choosing the pack.
#[tauri::command]
pub async fn train_pack(
    options: TrainOptions,
    on_progress: Channel<Progress>,
    state: State<'_, AppState>,
) -> Result<TrainOutcome, String> {
    let staged = state
        .training_file
        .lock()
        .map_err(|_| "training is unavailable after an earlier failure".to_string())?
        .take()
        .ok_or("choose a training file first")?;
    let models_dir = state.engine.models_dir().to_path_buf();
    tauri::async_runtime::spawn_blocking(move || {
        let columns = dataset::Columns {
            text: &options.text_column,
            label: &options.label_column,
            group: None,
        };
        let examples = dataset::read_labelled(staged.path(), columns).map_err(|e| e.to_string())?;
        let cache_dir = medtext_core::paths::data_dir()
            .map(|d| d.join("cache"))
            .ok();
        let request = TrainRequest {
            input: PathBuf::from("your training file"),
            examples,
            drop_conflicting: false,
            min_per_label: dataset::MIN_PER_LABEL,
            encoder_dir: PathBuf::new(),
            max_tokens: 256,
            abbreviations: None,
            shape: match options.head_kind {
                HeadKindChoice::Linear => HeadShape::Linear,
                HeadKindChoice::Mlp => HeadShape::Mlp { hidden: 256 },
            },
            learning_rate: None,
            weight_decay: 1e-4,
            seed: 42,
            label_displays: Vec::new(),
            cache_dir,
            out: PathBuf::new(),
            name: options.name.clone(),
            version: "0.1.0".into(),
            task: "Trained on this workstation from a local labelled file".into(),
            license: "Local: trained from this site's own data".into(),
            attribution: "Trained in MedText; encoder all-MiniLM-L6-v2, Apache-2.0".into(),
            head_name: "category".into(),
            abstain_below: 0.5,
            add_to_pack: false,
        };
        // A closed window drops the channel: training still finishes.
        let mut report = |p: Progress| {
            let _ = on_progress.send(p);
        };
        training::train_new_pack(&models_dir, &options.name, request, &mut report)
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|_| "training stopped unexpectedly".to_string())?
}

/// The recovery key of a history created at this start, once: the UI shows
/// it for IT to escrow. Later calls return nothing.
#[tauri::command]
pub fn take_recovery_key(state: State<'_, AppState>) -> Option<String> {
    state
        .new_recovery_key
        .lock()
        .ok()
        .and_then(|mut key| key.take())
}

/// Opens the history with the recovery key the user typed, when its key
/// is missing from the keychain; both keys go back into the keychain.
#[tauri::command]
pub async fn recover_history(
    recovery_key: String,
    state: State<'_, AppState>,
) -> Result<(), String> {
    state.recover_history(&recovery_key)
}
