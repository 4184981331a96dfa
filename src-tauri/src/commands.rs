//! IPC commands: each translates one call from the web UI into calls on
//! `medtext_core`. Errors cross the bridge as plain, patient-text-free strings.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tauri::ipc::Channel;
use tauri::State;

use medtext_core::inference::evidence::WordEvidence;
use medtext_core::machine::policy::{ManagedSetting, UnlockMethod};
use medtext_core::pack::manifest::PackIdentity;
use medtext_core::training::fit::HeadShape;
use medtext_core::training::pipeline::{self as training, Progress, TrainOutcome, TrainRequest};
use medtext_core::{
    machine::network, training::examples as dataset, Classification, HistoryEntry, HistoryStore,
};
use zeroize::Zeroizing;

use crate::state::{AppState, LockOr};

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
    /// The machine policy: where it was read and what it fixes, or why MedText
    /// refuses to run.
    pub policy: Result<PolicyStatus, String>,
    pub lock: LockStatus,
    pub log_file: Result<PathBuf, String>,
    pub version: &'static str,
    /// Inference threads the engine runs on.
    pub threads: Option<usize>,
    /// The threads chosen in Settings for the next start (`None`: one per CPU).
    pub threads_chosen: Option<usize>,
    pub cpus: usize,
}

#[derive(Serialize)]
pub struct PolicyStatus {
    pub source: Option<PathBuf>,
    pub managed: Vec<ManagedSetting>,
}

#[derive(Serialize)]
pub struct LockStatus {
    pub locked: bool,
    pub idle_minutes: Option<u32>,
    /// The idle time is fixed by the machine policy.
    pub idle_managed: bool,
    pub has_passphrase: bool,
    /// What unlocking asks for (the machine policy's choice).
    pub method: UnlockMethod,
    /// With the `os` method: whose password.
    pub os_user: Option<String>,
}

/// Logs a core error by its kind and gives the user its message.
fn fail(error: medtext_core::Error) -> String {
    error.logged("app").to_string()
}

#[derive(Serialize)]
pub struct ModelInfo {
    pub pack: String,
    pub version: String,
    pub head: String,
    pub task: String,
}

/// Classifies `text` on the inference worker and saves the result to the
/// history. Word evidence takes ten to twenty times longer than the label
/// itself, so it is not computed here: the UI shows the result at once and
/// asks [`explain`] for the evidence next.
#[tauri::command]
pub async fn classify(
    text: String,
    state: State<'_, AppState>,
) -> Result<ClassifyResponse, String> {
    let text = Zeroizing::new(text);
    // The limits are enforced here, whatever the UI checked.
    state.guard()?.check_text(&text).map_err(fail)?;
    let worker = state.engine.worker().map_err(fail)?;
    let history = state.history();
    tauri::async_runtime::spawn_blocking(move || {
        let classification = worker
            .classify(vec![String::clone(&text)])
            .map_err(fail)?
            .pop()
            .ok_or("the engine returned no result; please try again")?
            .map_err(fail)?;
        let saved = history.and_then(|h| {
            let mut store = h.lock_or("the history store")?;
            store.save(&text, &classification).map_err(fail)
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

/// The word evidence for `text`'s top label (integrated gradients), kept
/// with its history record `saved_id` when there is one.
#[tauri::command]
pub async fn explain(
    text: String,
    saved_id: Option<i64>,
    state: State<'_, AppState>,
) -> Result<Vec<WordEvidence>, String> {
    let text = Zeroizing::new(text);
    state.guard()?.check_text(&text).map_err(fail)?;
    let worker = state.engine.worker().map_err(fail)?;
    let history = state.history();
    tauri::async_runtime::spawn_blocking(move || {
        let evidence = worker
            .classify_with_evidence(String::clone(&text))
            .map_err(fail)?
            .evidence;
        if let (Some(id), Ok(history)) = (saved_id, history) {
            let mut store = history.lock_or("the history store")?;
            store.set_evidence(id, &evidence).map_err(fail)?;
        }
        Ok(evidence)
    })
    .await
    .map_err(|_| "finding the evidence stopped unexpectedly".to_string())?
}

/// The most recent saved classifications, newest first.
#[tauri::command]
pub async fn recent_history(state: State<'_, AppState>) -> Result<Vec<HistoryEntry>, String> {
    state.guard()?;
    let history = state.history()?;
    tauri::async_runtime::spawn_blocking(move || {
        let store = history.lock_or("the history store")?;
        store.recent(RECENT_LIMIT).map_err(fail)
    })
    .await
    .map_err(|_| "reading the history stopped unexpectedly".to_string())?
}

/// What is loaded, for the status line.
#[tauri::command]
pub fn app_status(state: State<'_, AppState>) -> AppStatus {
    let policy = state.policy.as_ref().map(|p| PolicyStatus {
        source: p.source.clone(),
        managed: p.managed(),
    });
    AppStatus {
        model: model_info(&state),
        history: state.history().map(|_| ()),
        history_integrity: state.integrity.lock().ok().and_then(|r| r.clone()),
        max_text_chars: state
            .policy
            .as_ref()
            .map_or(medtext_core::text::validation::MAX_TEXT_CHARS, |p| {
                p.max_text_chars()
            }),
        policy: policy.map_err(Clone::clone),
        lock: lock_state(&state),
        log_file: state.log_file.clone(),
        version: env!("CARGO_PKG_VERSION"),
        threads: medtext_core::machine::runtime::pool()
            .ok()
            .map(|p| p.current_num_threads()),
        threads_chosen: medtext_core::paths::data_dir()
            .ok()
            .and_then(|dir| medtext_core::machine::runtime::saved_threads(&dir)),
        cpus: std::thread::available_parallelism().map_or(1, usize::from),
    }
}

/// What the About box shows: this build and every pack it can run, named
/// as `medtext --version` names them, so IT can match a workstation to a
/// release and each result to its model.
#[derive(Serialize)]
pub struct About {
    pub version: &'static str,
    pub commit: &'static str,
    pub build_date: &'static str,
    /// Each pack in the models folder, or why it does not open.
    pub packs: Vec<Result<PackIdentity, String>>,
}

/// The About box's facts. Every pack's files are hashed to check them (a
/// moment for the encoders), so this runs off the UI thread and only when
/// the About box is opened.
#[tauri::command]
pub async fn about(state: State<'_, AppState>) -> Result<About, String> {
    let models_dir = state.engine.models_dir().to_path_buf();
    tauri::async_runtime::spawn_blocking(move || About {
        version: medtext_build_info::VERSION,
        commit: medtext_build_info::COMMIT,
        build_date: medtext_build_info::DATE,
        packs: medtext_core::pack::manifest::identities(&models_dir)
            .into_iter()
            .map(|pack| pack.map_err(|e| e.to_string()))
            .collect(),
    })
    .await
    .map_err(|_| "reading the model packs stopped unexpectedly".to_string())
}

/// The running app's own check that none of its sockets (nor its webview's)
/// reaches beyond this machine, as one sentence. A command of its own, not
/// part of the status the UI polls: it reads every process's `/proc` entry.
#[tauri::command]
pub async fn network_check() -> Result<String, String> {
    tauri::async_runtime::spawn_blocking(|| {
        network::check_own_sockets().and_then(|report| {
            if report.beyond_loopback.is_empty() {
                Ok(report.statement())
            } else {
                Err(report.statement())
            }
        })
    })
    .await
    .map_err(|_| "the network check stopped unexpectedly".to_string())?
}

/// Whether the app is locked, and how the lock is set up. Polled by the UI:
/// it is how the screen learns that the idle time ran out.
#[tauri::command]
pub fn lock_status(state: State<'_, AppState>) -> LockStatus {
    lock_state(&state)
}

fn lock_state(state: &AppState) -> LockStatus {
    let (locked, idle_minutes) = match state.lock.lock() {
        Ok(mut lock) => (lock.is_locked(Instant::now()), lock.idle_minutes()),
        Err(_) => (true, None),
    };
    let history = state.history().ok();
    let has_passphrase = history
        .as_ref()
        .and_then(|h| h.lock().ok()?.unlock_passphrase_hash().ok().flatten())
        .is_some();
    let method = unlock_method(state);
    LockStatus {
        locked,
        idle_minutes,
        idle_managed: state
            .policy
            .as_ref()
            .is_ok_and(|p| p.idle_lock_minutes.is_some()),
        has_passphrase,
        method,
        os_user: (method == UnlockMethod::Os)
            .then(|| medtext_core::machine::os_auth::current_user().ok())
            .flatten(),
    }
}

fn unlock_method(state: &AppState) -> UnlockMethod {
    state
        .policy
        .as_ref()
        .map_or(UnlockMethod::Passphrase, |p| p.unlock_method())
}

/// The user is at the keyboard (the UI reports input now and then): the
/// idle time starts again, unless the app is already locked.
#[tauri::command]
pub fn activity(state: State<'_, AppState>) {
    if let Ok(mut lock) = state.lock.lock() {
        lock.touch(Instant::now());
    }
}

/// Locks the app now (the Lock button).
#[tauri::command]
pub fn lock_now(state: State<'_, AppState>) {
    if let Ok(mut lock) = state.lock.lock() {
        lock.lock();
    }
    tracing::info!(event = "lock", reason = "user");
}

/// Unlocks with the unlock passphrase, or the OS account's password when
/// the machine policy says so.
#[tauri::command]
pub async fn unlock(passphrase: String, state: State<'_, AppState>) -> Result<(), String> {
    let passphrase = Zeroizing::new(passphrase);
    let method = unlock_method(&state);
    let hash = match method {
        UnlockMethod::Passphrase => Some(
            state
                .history()?
                .lock_or("the history store")?
                .unlock_passphrase_hash()
                .map_err(fail)?
                .ok_or("no unlock passphrase is set: set one first")?,
        ),
        UnlockMethod::Os => None,
    };
    let check = || match &hash {
        Some(hash) => medtext_core::machine::idle_lock::verify_passphrase(&passphrase, hash),
        None => medtext_core::machine::os_auth::current_user()
            .and_then(|user| medtext_core::machine::os_auth::verify(&user, &passphrase)),
    };
    // The lock is let go before the history is taken (set_unlock_passphrase
    // takes them the other way round).
    let (outcome, failures) = {
        let mut lock = state.lock.lock_or("the lock")?;
        let outcome = lock.unlock_with(check, Instant::now());
        (outcome, lock.failures())
    };
    if let Ok(history) = state.history() {
        keep_unlock_failures(&mut *history.lock_or("the history store")?, failures);
    }
    outcome.map_err(fail)?;
    tracing::info!(event = "unlock");
    Ok(())
}

/// Keeps the count of wrong attempts in the history, so that a restart does
/// not give a guesser free attempts again. A failure to keep it is logged,
/// not shown: the unlock itself was decided.
fn keep_unlock_failures(store: &mut HistoryStore, failures: u32) {
    if let Err(e) = store.set_unlock_failures(failures) {
        e.logged("keep_unlock_failures");
    }
}

/// Sets the unlock passphrase: the first time freely, after that only with
/// the current one.
#[tauri::command]
pub async fn set_unlock_passphrase(
    current: Option<String>,
    passphrase: String,
    state: State<'_, AppState>,
) -> Result<(), String> {
    let (current, passphrase) = (current.map(Zeroizing::new), Zeroizing::new(passphrase));
    // No lock check: a first passphrase is what a locked app without one
    // needs, and changing one needs the current one.
    state.policy.as_ref().map_err(Clone::clone)?;
    // Under the OS method a passphrase would be a second way in.
    if unlock_method(&state) == UnlockMethod::Os {
        return Err("this machine's policy unlocks MedText with the computer account's password: there is no unlock passphrase to set".into());
    }
    let history = state.history()?;
    let mut store = history.lock_or("the history store")?;
    if let Some(hash) = store.unlock_passphrase_hash().map_err(fail)? {
        let current = current.ok_or("give the current unlock passphrase to change it")?;
        // Through the lock, so guesses here wait as they do at the lock
        // screen (and the right one unlocks, as it would there).
        let (outcome, failures) = {
            let mut lock = state.lock.lock_or("the lock")?;
            let outcome = lock.unlock_with(
                || medtext_core::machine::idle_lock::verify_passphrase(&current, &hash),
                Instant::now(),
            );
            (outcome, lock.failures())
        };
        keep_unlock_failures(&mut store, failures);
        outcome.map_err(fail)?;
    }
    store.set_unlock_passphrase(&passphrase).map_err(fail)
}

/// Sets the idle lock time in minutes (`None`: off), unless IT fixed it.
/// An unlock passphrase must exist first, or nobody could unlock.
#[tauri::command]
pub async fn set_idle_lock_minutes(
    minutes: Option<u32>,
    state: State<'_, AppState>,
) -> Result<LockStatus, String> {
    state.guard()?;
    {
        let history = state.history()?;
        let mut store = history.lock_or("the history store")?;
        if minutes.is_some()
            && unlock_method(&state) == UnlockMethod::Passphrase
            && store.unlock_passphrase_hash().map_err(fail)?.is_none()
        {
            return Err("set an unlock passphrase before turning the idle lock on".into());
        }
        store.set_idle_lock_minutes(minutes).map_err(fail)?;
        let effective = store.idle_lock_minutes().map_err(fail)?;
        if let Ok(mut lock) = state.lock.lock() {
            lock.set_idle_minutes(effective);
        }
    }
    Ok(lock_state(&state))
}

fn model_info(state: &AppState) -> Result<ModelInfo, String> {
    let worker = state.engine.worker().map_err(fail)?;
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
    pub license: String,
    pub attribution: String,
    pub heads: Vec<HeadChoice>,
    /// The pack's `CARD.md` (intended use, data, figures, weak classes),
    /// shown as plain text.
    pub card: Option<String>,
}

#[derive(Serialize)]
pub struct HeadChoice {
    pub name: String,
    pub labels: usize,
    /// Label ids with their display names, for filters and corrections.
    pub label_names: Vec<(String, String)>,
    pub evaluation: Option<medtext_core::pack::manifest::ShippedEvaluation>,
}

/// Largest model card shown: a card is a page of text, not a book.
const MAX_CARD_BYTES: u64 = 256 * 1024;

fn read_card(dir: &std::path::Path) -> Option<String> {
    let path = dir.join("CARD.md");
    let size = std::fs::metadata(&path).ok()?.len();
    if size > MAX_CARD_BYTES {
        return Some(format!("(CARD.md is {size} bytes, too long to show here)"));
    }
    std::fs::read_to_string(path).ok()
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
        for pack in medtext_core::pack::manifest::installed(&models_dir) {
            match pack {
                Ok(p) => list.packs.push(PackChoice {
                    pack: p
                        .dir
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    version: p.manifest.version.clone(),
                    task: p.manifest.task.clone(),
                    license: p.manifest.license.clone(),
                    attribution: p.manifest.attribution.clone(),
                    heads: p
                        .manifest
                        .heads
                        .iter()
                        .map(|h| HeadChoice {
                            name: h.name.clone(),
                            labels: h.labels.len(),
                            label_names: h
                                .labels
                                .iter()
                                .map(|l| (l.id.clone(), l.display.clone()))
                                .collect(),
                            evaluation: h.evaluation.clone(),
                        })
                        .collect(),
                    card: read_card(&p.dir),
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
            .map_err(fail)
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
    state.guard()?;
    let tauri::ipc::InvokeBody::Raw(bytes) = request.body() else {
        return Err("the training file must be sent as raw bytes".into());
    };
    let kind = request
        .headers()
        .get("x-file-kind")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("csv");
    let dir = medtext_core::paths::data_dir()
        .map_err(fail)?
        .join("training");
    let staged =
        medtext_core::training::pipeline::StagedFile::write(&dir, &format!("upload.{kind}"), bytes)
            .map_err(fail)?;
    *state.training_file.lock_or("training")? = Some(staged);
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
    state.guard()?;
    let staged = state
        .training_file
        .lock_or("training")?
        .take()
        .ok_or("choose a training file first")?;
    let models_dir = state.engine.models_dir().to_path_buf();
    tauri::async_runtime::spawn_blocking(move || {
        let columns = dataset::Columns {
            text: &options.text_column,
            label: &options.label_column,
            group: None,
        };
        let examples = dataset::read_labelled(staged.path(), columns).map_err(fail)?;
        let request = TrainRequest {
            input: PathBuf::from("your training file"),
            examples,
            drop_conflicting: false,
            min_per_label: dataset::MIN_PER_LABEL,
            encoder_dir: PathBuf::new(),
            max_tokens: 256,
            abbreviations: None,
            encoder_adapter: None,
            shape: match options.head_kind {
                HeadKindChoice::Linear => HeadShape::Linear,
                HeadKindChoice::Mlp => HeadShape::Mlp { hidden: 256 },
            },
            learning_rate: None,
            weight_decay: 1e-4,
            seed: 42,
            label_displays: Vec::new(),
            // No vector cache: the file is patient text, and vectors derived from
            // it would stay on disk, unencrypted, after the file is gone.
            cache_dir: None,
            out: PathBuf::new(),
            name: options.name.clone(),
            version: "0.1.0".into(),
            task: "Trained on this workstation from a local labelled file".into(),
            license: "Local: trained from this site's own data".into(),
            attribution: "Trained in MedText; encoder all-MiniLM-L6-v2, Apache-2.0".into(),
            head_name: "category".into(),
            abstain_below: 0.5,
            add_to_pack: false,
            split_out: None,
            split_from: None,
            // Not on users' files: its vocabulary would carry pieces of the
            // notes, in plain text, inside the pack (crate::lexical).
            lexical: false,
        };
        // A closed window drops the channel: training still finishes.
        let mut report = |p: Progress| {
            let _ = on_progress.send(p);
        };
        training::train_new_pack(&models_dir, &options.name, request, &mut report).map_err(fail)
    })
    .await
    .map_err(|_| "training stopped unexpectedly".to_string())?
}

/// The recovery key of a history created at this start, once: the UI shows
/// it for IT to escrow. Later calls return nothing.
#[tauri::command]
pub fn take_recovery_key(state: State<'_, AppState>) -> Option<String> {
    state.guard().ok()?;
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

#[derive(Serialize)]
pub struct ImportedPack {
    pub pack: String,
    pub version: String,
    /// Who signed the archive, when it was signed.
    pub signer: Option<String>,
}

/// Installs a pack archive sent as the raw request body, with the text of
/// its `.sig` file in the `x-signature` header when there is one. Every
/// path, hash and head is checked, and the signature against the machine
/// policy's signers, before anything is installed.
#[tauri::command]
pub async fn import_pack(
    request: tauri::ipc::Request<'_>,
    state: State<'_, AppState>,
) -> Result<ImportedPack, String> {
    let policy = state.guard()?.clone();
    let tauri::ipc::InvokeBody::Raw(bytes) = request.body() else {
        return Err("the pack archive must be sent as raw bytes".into());
    };
    let bytes = bytes.clone();
    let signature = request
        .headers()
        .get("x-signature")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let models_dir = state.engine.models_dir().to_path_buf();
    tauri::async_runtime::spawn_blocking(move || {
        let (pack, signer) = medtext_core::pack::archive::import(
            bytes.as_slice(),
            std::path::Path::new("the imported archive"),
            signature.as_deref(),
            &models_dir,
            policy.allowed_pack_signers.as_deref(),
        )
        .map_err(fail)?;
        Ok(ImportedPack {
            pack: pack.manifest.name.clone(),
            version: pack.manifest.version.clone(),
            signer: signer.map(|s| s.to_text()),
        })
    })
    .await
    .map_err(|_| "importing the pack stopped unexpectedly".to_string())?
}

/// Keeps the number of inference threads for the next start (`None`: one
/// per CPU); the pool in use cannot change size while it runs.
#[tauri::command]
pub fn set_engine_threads(threads: Option<usize>) -> Result<(), String> {
    let dir = medtext_core::paths::data_dir().map_err(fail)?;
    medtext_core::machine::runtime::save_threads(&dir, threads).map_err(fail)
}
