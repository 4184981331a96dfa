//! Process-wide settings for the inference runtime, applied once at start-up
//! by each binary before any thread is spawned.

/// Environment variable Candle (and rayon) read for the number of worker
/// threads used by matrix multiplications.
const THREADS_ENV: &str = "RAYON_NUM_THREADS";

/// Fixes the number of inference threads: `threads` if given, else an explicit
/// `RAYON_NUM_THREADS` the user set, else the number of CPUs available to this
/// process.
///
/// Why: with the variable unset, Candle works the CPU count out again on every
/// matrix multiplication (dozens per forward pass), which costs milliseconds
/// on short notes. Call this first thing in `main`: it sets an environment
/// variable, which is only sound while the process has a single thread.
pub fn configure_threads(threads: Option<usize>) -> usize {
    let chosen = threads
        .filter(|&n| n > 0)
        .or_else(|| {
            std::env::var(THREADS_ENV)
                .ok()
                .and_then(|v| v.parse().ok())
                .filter(|&n: &usize| n > 0)
        })
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    std::env::set_var(THREADS_ENV, chosen.to_string());
    chosen
}
