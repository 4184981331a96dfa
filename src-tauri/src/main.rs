// Hide the console window on Windows release builds.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

/// The same allocator as the CLI, for the same reason: Candle's per-op
/// buffers are reused instead of being faulted in again on every pass.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // Before any thread exists: see medtext_core::runtime.
    medtext_core::runtime::configure_threads(None);
    medtext_app::run();
}
