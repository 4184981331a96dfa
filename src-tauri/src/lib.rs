//! The MedText desktop shell: maps IPC commands onto `medtext_core` and holds
//! the loaded model and the open history as state. No domain logic lives here.

mod batch;
mod commands;
mod history;
mod state;

use tauri::Manager;

pub fn run() {
    let result = tauri::Builder::default()
        .setup(|app| {
            let resources = app.path().resource_dir().ok();
            app.manage(state::AppState::load(resources));
            Ok(())
        })
        .invoke_handler(tauri::generate_handler![
            commands::classify,
            commands::explain,
            commands::recent_history,
            commands::app_status,
            commands::about,
            commands::network_check,
            commands::set_engine_threads,
            commands::list_packs,
            commands::select_pack,
            commands::import_pack,
            commands::stage_training_file,
            commands::train_pack,
            commands::take_recovery_key,
            commands::recover_history,
            commands::lock_status,
            commands::activity,
            commands::lock_now,
            commands::unlock,
            commands::set_unlock_passphrase,
            commands::set_idle_lock_minutes,
            history::search_history,
            history::history_record,
            history::set_feedback,
            history::delete_records,
            history::export_records,
            history::history_settings,
            history::set_retention_days,
            batch::read_batch_file,
            batch::classify_batch,
            batch::save_batch_results
        ])
        .run(tauri::generate_context!());
    if let Err(error) = result {
        eprintln!("MedText could not start: {error}");
        std::process::exit(1);
    }
}
