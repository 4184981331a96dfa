//! Structured logs that anyone may read without learning about a patient.
//!
//! Logs are JSON lines in the platform log directory ([`paths::log_dir`]),
//! one file per program (`app.log`, `cli.log`), rotated by size and deleted
//! after a number of days that IT sets in the machine policy.
//!
//! Why they cannot leak patient text: every event is written at a call site
//! with named fields that are numbers, hashes of model files or fixed words
//! (`event = "classify", chars = 812, ms = 41`), never a message built from
//! input; errors are logged by their [`crate::Error::kind`], not their
//! message, because messages name files and a file name can name a patient;
//! and a panic is logged by its source location only, because Rust's own
//! panic messages can quote the data they failed on (slicing a string at a
//! bad index prints the string).

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{paths, Result};

/// How long logs are kept and how large one file may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogSettings {
    pub keep_days: u32,
    pub max_file_bytes: u64,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            keep_days: 30,
            max_file_bytes: 10 << 20,
        }
    }
}

/// Rotated files kept at most, whatever their age: bounds the disk a log
/// can take to about `(MAX_ROTATED + 1) * max_file_bytes`.
const MAX_ROTATED: usize = 20;

/// Starts logging for `program` (`"app"` or `"cli"`) into `dir`, removes
/// logs older than the settings allow, and installs the panic hook and the
/// core-dump guard of [`install_crash_guards`]. Returns the log file's path.
///
/// Call once, first thing: a second call in the same process keeps the
/// first subscriber.
pub fn init(program: &str, dir: &Path, settings: LogSettings) -> Result<PathBuf> {
    install_crash_guards();
    paths::ensure_private_dir(dir)?;
    let log = RotatingLog::open(dir, program, settings)?;
    let path = log.path();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_target(false)
        .with_current_span(false)
        .with_span_list(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || log.clone())
        .finish();
    // Already set (a test that starts twice): the first one stays.
    let _ = tracing::subscriber::set_global_default(subscriber);
    tracing::info!(
        event = "start",
        program,
        version = env!("CARGO_PKG_VERSION"),
        pid = std::process::id()
    );
    Ok(path)
}

/// Replaces the default panic hook with one that logs and prints where the
/// panic happened but never its message, and stops the OS from writing core
/// dumps: a core dump is the process's memory, patient text included.
pub fn install_crash_guards() {
    #[cfg(unix)]
    // SAFETY: setrlimit only reads the struct we pass; lowering our own
    // limit cannot fail in a way that matters (we ignore the result).
    unsafe {
        let none = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &none);
    }
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_else(|| "unknown".into());
        let thread = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_string();
        tracing::error!(event = "panic", location = %location, thread = %thread);
        let _ = writeln!(
            io::stderr(),
            "MedText hit an internal error in {location} (thread {thread}). Its details are not \
             shown because they could contain patient text. Please report the location to IT."
        );
    }));
}

/// Deletes rotated logs of every program older than `keep_days`, and the
/// oldest beyond [`MAX_ROTATED`] per program.
pub fn remove_expired(dir: &Path, keep_days: u32) -> Result<usize> {
    let cutoff = SystemTime::now()
        .checked_sub(Duration::from_secs(u64::from(keep_days) * 86_400))
        .unwrap_or(UNIX_EPOCH);
    let entries = std::fs::read_dir(dir).map_err(|e| crate::Error::io(dir, e))?;
    let mut rotated: Vec<(String, SystemTime, PathBuf)> = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(program) = rotated_program(&name) else {
            continue;
        };
        let modified = entry
            .metadata()
            .and_then(|m| m.modified())
            .unwrap_or(UNIX_EPOCH);
        rotated.push((program.to_string(), modified, entry.path()));
    }
    // Newest first within each program, so the ones past the cap come last.
    rotated.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    let mut removed = 0;
    let mut seen = 0;
    let mut program = String::new();
    for (name, modified, path) in rotated {
        if name != program {
            program = name;
            seen = 0;
        }
        seen += 1;
        if (modified < cutoff || seen > MAX_ROTATED) && std::fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

/// `app-1764100000000.log` → `app`.
fn rotated_program(file_name: &str) -> Option<&str> {
    let stem = file_name.strip_suffix(".log")?;
    let (program, stamp) = stem.rsplit_once('-')?;
    (!program.is_empty() && !stamp.is_empty() && stamp.bytes().all(|b| b.is_ascii_digit()))
        .then_some(program)
}

/// The current log file of one program, moved aside when it grows past the
/// limit. Cloned into every event's writer; the lock makes each event one
/// whole line even when threads log at once.
#[derive(Clone)]
struct RotatingLog {
    inner: Arc<Mutex<LogFile>>,
}

struct LogFile {
    dir: PathBuf,
    program: String,
    settings: LogSettings,
    file: File,
    written: u64,
}

impl RotatingLog {
    fn open(dir: &Path, program: &str, settings: LogSettings) -> Result<Self> {
        remove_expired(dir, settings.keep_days)?;
        let path = dir.join(format!("{program}.log"));
        let file = paths::open_private_append(&path)?;
        let written = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Self {
            inner: Arc::new(Mutex::new(LogFile {
                dir: dir.to_path_buf(),
                program: program.to_string(),
                settings,
                file,
                written,
            })),
        })
    }

    fn path(&self) -> PathBuf {
        match self.inner.lock() {
            Ok(log) => log.current_path(),
            Err(poisoned) => poisoned.into_inner().current_path(),
        }
    }
}

impl LogFile {
    fn current_path(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.program))
    }

    fn rotate(&mut self) -> io::Result<()> {
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let current = self.current_path();
        std::fs::rename(
            &current,
            self.dir.join(format!("{}-{stamp}.log", self.program)),
        )?;
        self.file = paths::open_private_append(&current).map_err(io::Error::other)?;
        self.written = 0;
        let _ = remove_expired(&self.dir, self.settings.keep_days);
        Ok(())
    }
}

impl Write for RotatingLog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut log = self
            .inner
            .lock()
            .map_err(|_| io::Error::other("log lock poisoned"))?;
        if log.written > 0 && log.written + buf.len() as u64 > log.settings.max_file_bytes {
            // A log that cannot rotate keeps writing where it is.
            let _ = log.rotate();
        }
        log.file.write_all(buf)?;
        log.written += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.inner.lock() {
            Ok(mut log) => log.file.flush(),
            Err(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_names_are_recognised_and_nothing_else() {
        assert_eq!(rotated_program("app-1764100000000.log"), Some("app"));
        assert_eq!(rotated_program("cli-1.log"), Some("cli"));
        assert_eq!(rotated_program("app.log"), None);
        assert_eq!(rotated_program("notes-draft.log"), None);
        assert_eq!(rotated_program("history.db"), None);
    }

    #[test]
    fn a_full_log_is_rotated_and_old_or_surplus_ones_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let settings = LogSettings {
            keep_days: 1,
            max_file_bytes: 100,
        };
        let mut log = RotatingLog::open(dir.path(), "app", settings).unwrap();
        for _ in 0..3 {
            log.write_all(&[b'x'; 60]).unwrap();
            // Rotated names carry milliseconds: keep them apart.
            std::thread::sleep(Duration::from_millis(2));
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(names.contains(&"app.log".to_string()));
        assert_eq!(
            std::fs::metadata(dir.path().join("app.log")).unwrap().len(),
            60
        );

        // One rotated file aged past the limit goes; an unrelated file stays.
        let old = dir.path().join("app-5.log");
        std::fs::write(&old, "old").unwrap();
        let two_days_ago = SystemTime::now() - Duration::from_secs(2 * 86_400);
        File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(two_days_ago)
            .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "keep").unwrap();
        assert_eq!(remove_expired(dir.path(), 1).unwrap(), 1);
        assert!(!old.exists());
        assert!(dir.path().join("notes.txt").exists());

        // Past the count cap the oldest go even if young.
        for i in 0..(MAX_ROTATED + 3) {
            std::fs::write(dir.path().join(format!("cli-{i}.log")), "x").unwrap();
            let f = File::options()
                .write(true)
                .open(dir.path().join(format!("cli-{i}.log")))
                .unwrap();
            f.set_modified(SystemTime::now() - Duration::from_secs(1000 - i as u64))
                .unwrap();
        }
        assert_eq!(remove_expired(dir.path(), 1).unwrap(), 3);
        assert!(!dir.path().join("cli-0.log").exists());
        assert!(dir
            .path()
            .join(format!("cli-{}.log", MAX_ROTATED + 2))
            .exists());
    }
}
