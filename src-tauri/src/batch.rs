//! IPC commands of the Batch screen. The screen reads a folder of `.txt`
//! files itself, or hands a CSV/JSONL file over as raw bytes to be read
//! here; it then sends the texts in parts of at most
//! [`batch::MAX_TEXTS_PER_CALL`], so it can show progress and stop between
//! parts when the user cancels.

use std::path::PathBuf;

use tauri::State;
use zeroize::Zeroizing;

use medtext_core::inference::batch::{self, BatchRow};
use medtext_core::training::pipeline::StagedFile;

use crate::state::{AppState, LockOr};

/// Reads the texts of a CSV or JSONL file sent as the raw request body
/// (`x-file-kind`: `csv` or `jsonl`; `x-text-column`: the column or key).
#[tauri::command]
pub async fn read_batch_file(
    request: tauri::ipc::Request<'_>,
    state: State<'_, AppState>,
) -> Result<Vec<String>, String> {
    state.guard()?;
    let tauri::ipc::InvokeBody::Raw(bytes) = request.body() else {
        return Err("the batch file must be sent as raw bytes".into());
    };
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let kind = match header("x-file-kind").as_deref() {
        Some("jsonl") => "jsonl",
        _ => "csv",
    };
    let column = header("x-text-column").unwrap_or_else(|| "text".into());
    let dir = medtext_core::paths::data_dir()
        .map_err(|e| e.to_string())?
        .join("batch");
    // Kept owner-only under a random name while it is read, then removed.
    let staged = StagedFile::write_limited(
        &dir,
        kind,
        bytes,
        medtext_core::tabular::MAX_DATA_FILE_BYTES,
        "batch files",
    )
    .map_err(fail)?;
    let texts = tauri::async_runtime::spawn_blocking(move || {
        medtext_core::training::examples::read_texts(staged.path(), &column)
    })
    .await
    .map_err(|_| "reading the batch file stopped unexpectedly".to_string())?
    .map_err(fail)?;
    if texts.len() > batch::MAX_TEXTS_PER_FILE {
        return Err(format!(
            "the file has {} texts; a batch may have at most {}: split it",
            texts.len(),
            batch::MAX_TEXTS_PER_FILE
        ));
    }
    Ok(texts)
}

/// Classifies one part of a batch: `names[i]` is where `texts[i]` came from.
/// Each text gets its own row, so one bad text does not stop the rest; with
/// `save`, the results go to the history too.
#[tauri::command]
pub async fn classify_batch(
    names: Vec<String>,
    texts: Vec<String>,
    save: bool,
    state: State<'_, AppState>,
) -> Result<Vec<BatchRow>, String> {
    let texts: Vec<Zeroizing<String>> = texts.into_iter().map(Zeroizing::new).collect();
    if texts.len() > batch::MAX_TEXTS_PER_CALL || names.len() != texts.len() {
        return Err(format!(
            "send at most {} texts, each with its name, per call",
            batch::MAX_TEXTS_PER_CALL
        ));
    }
    let policy = state.guard()?.clone();
    let worker = state.engine.worker().map_err(fail)?;
    let history = if save { Some(state.history()?) } else { None };
    tauri::async_runtime::spawn_blocking(move || {
        // Texts over this machine's limit (or empty) fail alone, unsent.
        let checked: Vec<Result<(), String>> = texts
            .iter()
            .map(|t| policy.check_text(t).map_err(|e| e.to_string()))
            .collect();
        let sendable: Vec<String> = texts
            .iter()
            .zip(&checked)
            .filter(|(_, ok)| ok.is_ok())
            .map(|(t, _)| String::clone(t))
            .collect();
        let mut outcomes = worker.classify(sendable).map_err(fail)?.into_iter();
        let mut rows = Vec::with_capacity(names.len());
        let mut to_save = Vec::new();
        for ((name, text), check) in names.into_iter().zip(&texts).zip(checked) {
            match check {
                Err(problem) => rows.push(BatchRow::failed(name, problem)),
                Ok(()) => {
                    let outcome = outcomes
                        .next()
                        .unwrap_or_else(|| Err(medtext_core::Error::Engine("no result".into())));
                    if let Ok(c) = &outcome {
                        to_save.push((rows.len(), text, c.clone()));
                    }
                    rows.push(BatchRow::from_outcome(name, &outcome));
                }
            }
        }
        if let Some(history) = history {
            let mut store = history.lock_or("the history store")?;
            let items: Vec<(&str, &medtext_core::Classification)> = to_save
                .iter()
                .map(|(_, text, c)| (text.as_str(), c))
                .collect();
            let ids = store.save_many(&items).map_err(fail)?;
            for ((row, _, _), id) in to_save.iter().zip(ids) {
                rows[*row].saved_id = Some(id);
            }
        }
        Ok(rows)
    })
    .await
    .map_err(|_| "the batch stopped unexpectedly; please try again".to_string())?
}

/// Saves the batch's results (names, labels, confidences; no texts) as CSV
/// in the Downloads folder, unless the machine policy forbids exports.
#[tauri::command]
pub async fn save_batch_results(
    rows: Vec<BatchRow>,
    state: State<'_, AppState>,
) -> Result<PathBuf, String> {
    let policy = state.guard()?.clone();
    let folder = medtext_core::paths::export_dir().map_err(fail)?;
    tauri::async_runtime::spawn_blocking(move || batch::save_results(&rows, &folder, &policy))
        .await
        .map_err(|_| "saving the results stopped unexpectedly".to_string())?
        .map_err(fail)
}

fn fail(error: medtext_core::Error) -> String {
    error.logged("batch").to_string()
}
