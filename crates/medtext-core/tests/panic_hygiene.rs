//! A panic never puts patient text on screen, in a log or in a core dump.
//!
//! Rust's own panic messages quote data: slicing a string at a bad index
//! prints the string. The child process below sets up logging the way the
//! app and the CLI do, then panics on exactly such a slice of a note; the
//! test reads everything the child left (stdout, stderr, the log folder, its
//! temporary folder) and looks for the note.

use std::path::{Path, PathBuf};
use std::process::Command;

const CHILD_DIR: &str = "MEDTEXT_PANIC_CHILD_DIR";
const MARKER: &str = "Wqxpanicmarker9031";

#[test]
#[ignore = "the child process of a_panic_on_a_note_leaves_no_trace_of_it"]
fn panicking_child() {
    let dir = PathBuf::from(std::env::var_os(CHILD_DIR).expect("started by the test"));
    medtext_core::machine::logging::init("app", &dir.join("logs"), Default::default()).unwrap();
    #[cfg(target_os = "linux")]
    {
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
        let core = limits
            .lines()
            .find(|l| l.starts_with("Max core file size"))
            .unwrap();
        assert_eq!(core.split_whitespace().nth(4), Some("0"), "{core}");
        println!("core dumps off");
    }
    let note = format!("é {MARKER} chest pain");
    // Byte 1 is inside 'é': this panics, quoting the note.
    let cut = std::hint::black_box(1);
    println!("{}", &note[cut..]);
}

#[test]
fn a_panic_on_a_note_leaves_no_trace_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "panicking_child", "--ignored", "--nocapture"])
        .env(CHILD_DIR, dir.path())
        .env("TMPDIR", &tmp)
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the child should have panicked");
    if cfg!(target_os = "linux") {
        assert!(stdout.contains("core dumps off"), "{stdout}\n{stderr}");
    }
    // The user is told where, not what.
    assert!(
        stderr.contains("internal error in crates/medtext-core/tests/panic_hygiene.rs"),
        "{stderr}"
    );
    assert!(!stderr.contains(MARKER), "{stderr}");
    assert!(!stdout.contains(MARKER), "{stdout}");
    let log = std::fs::read_to_string(dir.path().join("logs/app.log")).unwrap();
    assert!(log.contains("\"panic\""), "{log}");
    assert!(!log.contains(MARKER), "{log}");
    let mut leaks = Vec::new();
    scan(dir.path(), &mut leaks);
    assert!(leaks.is_empty(), "the note is in {leaks:?}");
}

fn scan(dir: &Path, leaks: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            scan(&path, leaks);
        } else if std::fs::read(&path)
            .unwrap()
            .windows(MARKER.len())
            .any(|w| w == MARKER.as_bytes())
        {
            leaks.push(path);
        }
    }
}
