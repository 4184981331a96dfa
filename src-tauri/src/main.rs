// Hide the console window on Windows release builds.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

fn main() {
    // Before any thread exists: see medtext_core::runtime. The user's choice
    // of threads (Settings) applies from the next start.
    let threads = medtext_core::paths::data_dir()
        .ok()
        .and_then(|dir| medtext_core::runtime::saved_threads(&dir));
    medtext_core::runtime::configure(threads);
    medtext_app::run();
}
