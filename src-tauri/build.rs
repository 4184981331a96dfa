fn main() {
    // Capabilities live under src-tauri/ while tauri.conf.json sits at the
    // repository root beside the manifest (see the root Cargo.toml).
    //
    // Declaring the app's commands makes Tauri generate one permission per
    // command (`allow-classify`, ...) and deny any command a capability does
    // not grant, so src-tauri/capabilities/ is the complete list of what the
    // web UI may call.
    let attributes = tauri_build::Attributes::new()
        .capabilities_path_pattern("src-tauri/capabilities/**/*")
        .app_manifest(tauri_build::AppManifest::new().commands(&[
            "classify",
            "explain",
            "recent_history",
            "app_status",
            "about",
            "network_check",
            "set_engine_threads",
            "list_packs",
            "select_pack",
            "import_pack",
            "stage_training_file",
            "train_pack",
            "take_recovery_key",
            "recover_history",
            "lock_status",
            "activity",
            "lock_now",
            "unlock",
            "set_unlock_passphrase",
            "set_idle_lock_minutes",
            "search_history",
            "history_record",
            "set_feedback",
            "delete_records",
            "export_records",
            "history_settings",
            "set_retention_days",
            "read_batch_file",
            "classify_batch",
            "save_batch_results",
        ]));
    // A custom capabilities path is not watched by tauri-build itself.
    println!("cargo:rerun-if-changed=src-tauri/capabilities");
    if let Err(error) = tauri_build::try_build(attributes) {
        panic!("tauri-build failed: {error:#}");
    }
}
