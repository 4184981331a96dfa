// Hide the console window on Windows release builds.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

fn main() {
    // Before any thread exists: see medtext_core::runtime.
    medtext_core::runtime::configure(None);
    medtext_app::run();
}
