//! IPC commands of the History screen: search, open, feedback, delete,
//! export. Each is one call on `medtext_core::HistoryStore`, behind the lock
//! check of [`AppState::with_history`].

use std::path::PathBuf;

use serde::Serialize;
use tauri::State;

use medtext_core::history::store::{
    ExportFormat, Feedback, HistoryPage, HistoryQuery, HistoryRecord,
};

use crate::state::AppState;

/// One page of the history matching `query` (text, label, pack, dates,
/// feedback; `offset` and `limit` for paging), newest first.
#[tauri::command]
pub async fn search_history(
    query: HistoryQuery,
    state: State<'_, AppState>,
) -> Result<HistoryPage, String> {
    state.with_history(move |store| store.search(&query)).await
}

/// One record in full, as it was classified (an audited view).
#[tauri::command]
pub async fn history_record(id: i64, state: State<'_, AppState>) -> Result<HistoryRecord, String> {
    state.with_history(move |store| store.record(id)).await
}

/// The clinician's verdict on a record: agree, or the right label, and a note.
#[tauri::command]
pub async fn set_feedback(
    id: i64,
    feedback: Feedback,
    state: State<'_, AppState>,
) -> Result<(), String> {
    state
        .with_history(move |store| store.set_feedback(id, &feedback))
        .await
}

/// Deletes the records `ids`; returns how many went.
#[tauri::command]
pub async fn delete_records(ids: Vec<i64>, state: State<'_, AppState>) -> Result<usize, String> {
    state.with_history(move |store| store.delete(&ids)).await
}

#[derive(Serialize)]
pub struct Exported {
    pub path: PathBuf,
    pub records: usize,
}

/// Writes the records `ids` as CSV or JSON into the user's Downloads folder
/// (the file is not encrypted: the screen says so before and after), unless
/// the machine policy forbids exports. Returns where it went.
#[tauri::command]
pub async fn export_records(
    ids: Vec<i64>,
    format: ExportFormat,
    state: State<'_, AppState>,
) -> Result<Exported, String> {
    let folder = medtext_core::paths::export_dir().map_err(|e| e.to_string())?;
    state
        .with_history(move |store| {
            let out = medtext_core::paths::new_export_path(&folder, format.as_str())?;
            let records = store.export_records(&ids, format, &out)?;
            Ok(Exported { path: out, records })
        })
        .await
}

#[derive(Serialize)]
pub struct HistorySettings {
    /// Records older than this many days are deleted at every start.
    pub retention_days: Option<u32>,
    /// The retention period is fixed by the machine policy.
    pub retention_managed: bool,
    pub records: i64,
    pub path: PathBuf,
}

/// What the Settings screen shows about the history.
#[tauri::command]
pub async fn history_settings(state: State<'_, AppState>) -> Result<HistorySettings, String> {
    state
        .with_history(|store| {
            Ok(HistorySettings {
                retention_days: store.retention_days()?,
                retention_managed: store.policy().retention_days.is_some(),
                records: store.count()?,
                path: store.path().to_path_buf(),
            })
        })
        .await
}

/// Sets how long records are kept (`None`: until deleted) and deletes the
/// ones already older; refused when IT fixed it. Returns how many went.
#[tauri::command]
pub async fn set_retention_days(
    days: Option<u32>,
    state: State<'_, AppState>,
) -> Result<usize, String> {
    state
        .with_history(move |store| {
            store.set_retention_days(days)?;
            store.apply_retention()
        })
        .await
}
