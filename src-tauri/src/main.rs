// Hide the console window on Windows release builds.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

fn main() {
    // No core dumps, before any process of the web view starts: they inherit
    // the limit, and their memory holds the note being typed.
    medtext_core::machine::logging::install_crash_guards();
    // Before any thread exists: see medtext_core::machine::runtime. The user's choice
    // of threads (Settings) applies from the next start.
    let threads = medtext_core::paths::data_dir()
        .ok()
        .and_then(|dir| medtext_core::machine::runtime::saved_threads(&dir));
    // A RAYON_NUM_THREADS outside 1 to 64 stops the app, as it stops the CLI.
    if let Err(e) = medtext_core::machine::runtime::configure(threads) {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
    medtext_app::run();
}
