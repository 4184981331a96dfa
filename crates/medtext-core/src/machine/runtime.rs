//! Process-wide settings for the inference runtime, applied once at start-up
//! by each binary before any thread is spawned, and the memory allocator
//! every MedText binary uses.

/// Candle allocates a fresh buffer for every tensor op. glibc's allocator
/// returns large buffers to the kernel and faults them in again on the next
/// pass, which cost about a third of a forward pass; mimalloc keeps them for
/// reuse. Declared here, once, so the app, the CLI and the tests all run on
/// the allocator the figures were measured with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::OnceLock;

use crate::{Error, Result};

/// `mi_option_purge_delay` in mimalloc's `mi_option_e` (v2 and v3): how
/// long freed memory is kept before it goes back to the OS.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keep freed memory this long (mimalloc's default is 10 ms). Consecutive
/// forward passes then reuse it instead of faulting it in again (measured:
/// 256 tokens p50 36-43 ms at 10 ms, 28 ms kept), and an idle app still
/// gives it back within seconds.
const PURGE_DELAY_MS: std::ffi::c_long = 1000;

/// Environment variable Candle (and rayon) read for the number of worker
/// threads used by matrix multiplications.
const THREADS_ENV: &str = "RAYON_NUM_THREADS";

/// Tunes the allocator and fixes the number of inference threads (see
/// below). Call it first thing in `main`: it sets an environment variable,
/// which is only sound while the process has a single thread.
///
/// Fixes the number of inference threads: `threads` if given, else an explicit
/// `RAYON_NUM_THREADS` the user set, else the number of CPUs available to this
/// process.
///
/// Why: with the variable unset, Candle works the CPU count out again on every
/// matrix multiplication (dozens per forward pass), which costs milliseconds
/// on short notes. Call this first thing in `main`: it sets an environment
/// variable, which is only sound while the process has a single thread.
///
/// Refuses a `threads` or `RAYON_NUM_THREADS` outside 1 to [`MAX_THREADS`],
/// rather than start a thousand threads because a digit was repeated.
pub fn configure(threads: Option<usize>) -> Result<usize> {
    // SAFETY: sets one integer option of the allocator; any value is valid.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    configure_threads(threads)
}

/// The thread pool every forward and backward pass runs on, sized by
/// [`configure`] (or the CPUs available, when a program never calls it).
///
/// Why a pool of our own, entered with `install`: when the calling thread is
/// not a pool thread, it does the serial work between parallel ops while the
/// pool's threads spin waiting for more, so three threads fight over two
/// cores (measured: 18 % idle and 256-token latency erratic between 28 and
/// 55 ms). Inside `install` the caller's work runs on a pool thread.
pub fn pool() -> Result<&'static rayon::ThreadPool> {
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    if let Some(pool) = POOL.get() {
        return Ok(pool);
    }
    let threads = threads_from_env(std::env::var_os(THREADS_ENV))?.unwrap_or_else(every_cpu);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("medtext-inference-{i}"))
        .build()
        .map_err(|e| Error::Engine(format!("cannot start {threads} inference threads: {e}")))?;
    Ok(POOL.get_or_init(|| pool))
}

/// The file in the data directory that keeps the user's choice of inference
/// threads (not patient data, and needed before the keychain is opened).
const ENGINE_SETTINGS_FILE: &str = "engine.json";

/// Most inference threads MedText runs, whoever chooses: the app's
/// setting, `--threads`, `RAYON_NUM_THREADS` or the CPU count.
///
/// Why 64: inference is CPU-bound, so threads beyond the cores only take
/// turns on them (measured on 2 cores: a third thread made latency erratic,
/// see [`pool`]), and each layer is one fork-join whose rows are split
/// across the threads: past 64, a MiniLM layer (384 wide) is cut into
/// slivers of a few rows and the joins cost more than they save. A desktop
/// workstation has fewer cores than that.
pub const MAX_THREADS: usize = 64;

/// One thread per CPU available to this process, at most [`MAX_THREADS`].
fn every_cpu() -> usize {
    std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(MAX_THREADS)
}

/// The thread count `RAYON_NUM_THREADS` asks for (`value`; `None` when it
/// is unset or empty), refused unless it is a number from 1 to
/// [`MAX_THREADS`].
fn threads_from_env(value: Option<std::ffi::OsString>) -> Result<Option<usize>> {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    value
        .to_str()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| (1..=MAX_THREADS).contains(n))
        .map(Some)
        .ok_or_else(|| {
            Error::Engine(format!(
                "{THREADS_ENV} is '{}': set it to a number of inference threads from 1 to {MAX_THREADS}, or unset it to use every CPU",
                value.to_string_lossy()
            ))
        })
}

#[derive(serde::Serialize, serde::Deserialize)]
struct EngineSettings {
    threads: Option<usize>,
}

/// The inference threads the user chose (`None`: one per CPU), read from
/// `data_dir`; a missing or unreadable file means no choice.
pub fn saved_threads(data_dir: &std::path::Path) -> Option<usize> {
    let text = std::fs::read_to_string(data_dir.join(ENGINE_SETTINGS_FILE)).ok()?;
    serde_json::from_str::<EngineSettings>(&text)
        .ok()?
        .threads
        .filter(|n| (1..=MAX_THREADS).contains(n))
}

/// Keeps the user's choice of inference threads for the next start.
pub fn save_threads(data_dir: &std::path::Path, threads: Option<usize>) -> Result<()> {
    if threads.is_some_and(|n| !(1..=MAX_THREADS).contains(&n)) {
        return Err(Error::Engine(format!(
            "choose between 1 and {MAX_THREADS} inference threads"
        )));
    }
    crate::paths::ensure_private_dir(data_dir)?;
    let path = data_dir.join(ENGINE_SETTINGS_FILE);
    let json = serde_json::to_string(&EngineSettings { threads })
        .map_err(|e| Error::Engine(format!("cannot encode the engine settings: {e}")))?;
    std::fs::write(&path, json).map_err(|e| Error::io(&path, e))
}

fn configure_threads(threads: Option<usize>) -> Result<usize> {
    let chosen = match threads {
        Some(n) if !(1..=MAX_THREADS).contains(&n) => {
            return Err(Error::Engine(format!(
                "{n} inference threads asked for: choose from 1 to {MAX_THREADS}"
            )))
        }
        Some(n) => n,
        None => threads_from_env(std::env::var_os(THREADS_ENV))?.unwrap_or_else(every_cpu),
    };
    std::env::set_var(THREADS_ENV, chosen.to_string());
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chosen_thread_count_is_kept_for_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(saved_threads(dir.path()), None);
        save_threads(dir.path(), Some(3)).unwrap();
        assert_eq!(saved_threads(dir.path()), Some(3));
        save_threads(dir.path(), None).unwrap();
        assert_eq!(saved_threads(dir.path()), None);
        assert!(save_threads(dir.path(), Some(0)).is_err());
        assert!(save_threads(dir.path(), Some(MAX_THREADS + 1)).is_err());
        std::fs::write(dir.path().join(ENGINE_SETTINGS_FILE), "{\"threads\": 9999}").unwrap();
        assert_eq!(
            saved_threads(dir.path()),
            None,
            "an edited file cannot ask for more"
        );
    }

    #[test]
    fn a_thread_count_outside_1_to_the_maximum_is_refused() {
        let env = |v: &str| threads_from_env(Some(v.into()));
        assert_eq!(env("8").unwrap(), Some(8));
        assert_eq!(env(&MAX_THREADS.to_string()).unwrap(), Some(MAX_THREADS));
        assert_eq!(threads_from_env(Some("".into())).unwrap(), None);
        assert_eq!(threads_from_env(None).unwrap(), None);
        for bad in ["0", "1000", "lots", "-1", "65"] {
            let err = env(bad).unwrap_err().to_string();
            assert!(
                err.contains(&format!("RAYON_NUM_THREADS is '{bad}'")),
                "{err}"
            );
        }
        for bad in [0, MAX_THREADS + 1, 1000] {
            assert!(configure_threads(Some(bad)).is_err(), "{bad}");
        }
        assert!((1..=MAX_THREADS).contains(&every_cpu()));
    }

    /// Guards the option index against a mimalloc upgrade that renumbers it:
    /// the purge delay is the only option whose default is 10.
    #[test]
    fn the_purge_delay_option_is_the_one_we_set() {
        // SAFETY: reads and writes one integer option.
        unsafe {
            let before = libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY);
            assert!(
                before == 10 || before == PURGE_DELAY_MS,
                "option 15 is {before}"
            );
            configure(Some(1)).unwrap();
            assert_eq!(
                libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY),
                PURGE_DELAY_MS
            );
        }
    }
}
