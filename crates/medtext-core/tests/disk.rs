//! The history on a full disk and on a read-only file system, on real tmpfs
//! mounts. Mounting needs root (CI runs as root); without it these tests say
//! so and do nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

use medtext_core::history::keychain::DatabaseKey;
use medtext_core::history::store::{HistoryQuery, DATABASE_FILE};
use medtext_core::{history::audit, Classification, Error, HistoryStore, LabelScore};

/// A tmpfs mounted on a fresh folder, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
            return None;
        }
        Some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn remount(&self, options: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(self.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "remount {options}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn classification() -> Classification {
    let label = LabelScore {
        id: "a".into(),
        display: "A".into(),
        probability: 1.0,
    };
    Classification {
        pack: "p".into(),
        pack_version: "1".into(),
        head: "h".into(),
        model_sha256: "m".repeat(64),
        top: label.clone(),
        probabilities: vec![label],
        needs_review: false,
        windows: 1,
        tokens: 3,
        evidence: Vec::new(),
    }
}

fn key() -> DatabaseKey {
    DatabaseKey::from_bytes([0x33; 32])
}

fn all_ids(store: &HistoryStore) -> Vec<i64> {
    store.matching_ids(&HistoryQuery::default()).unwrap()
}

fn database_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn a_full_disk_fails_the_save_clearly_and_loses_nothing_committed() {
    let Some(fs) = Tmpfs::mount("1m") else {
        return;
    };
    let db = fs.path().join(DATABASE_FILE);
    let mut store = HistoryStore::open(&db, &key()).unwrap();
    let mut saved = Vec::new();
    let failure = loop {
        match store.save(
            &format!("note {} {}", saved.len(), "x".repeat(500)),
            &classification(),
        ) {
            Ok(id) => saved.push(id),
            Err(e) => break e,
        }
        assert!(saved.len() < 10_000, "the disk never filled");
    };
    let message = failure.to_string();
    assert!(
        matches!(failure, Error::Store { .. }) && message.contains("disk is full"),
        "{failure:?}"
    );
    assert!(
        !message.contains("xxxxxxxx"),
        "the error quotes the text: {message}"
    );
    assert!(saved.len() > 10, "only {} records fitted", saved.len());
    eprintln!(
        "{} records fitted before the disk was full: {message}",
        saved.len()
    );
    // The failed save left nothing half-written: the store still answers.
    assert_eq!(all_ids(&store).len(), saved.len());
    drop(store);

    // With space again, every committed record is there, whole.
    fs.remount("size=8m");
    let store = HistoryStore::open(&db, &key()).unwrap();
    let mut ids = all_ids(&store);
    ids.sort_unstable();
    assert_eq!(ids, saved);
    assert_eq!(store.integrity_problems().unwrap(), Vec::<String>::new());
    let verification = audit::verify(&store.audit_entries().unwrap());
    assert!(
        verification.problems.is_empty(),
        "{:?}",
        verification.problems
    );
    assert_eq!(verification.entries, saved.len());
}

#[test]
fn a_read_only_file_system_is_reported_and_the_files_are_left_as_they_are() {
    let Some(fs) = Tmpfs::mount("8m") else {
        return;
    };
    let db = fs.path().join(DATABASE_FILE);
    {
        let mut store = HistoryStore::open(&db, &key()).unwrap();
        for i in 0..20 {
            store.save(&format!("note {i}"), &classification()).unwrap();
        }
    }
    let before = database_files(fs.path());
    fs.remount("ro");
    let mut outcome = HistoryStore::open(&db, &key()).map(|_| ());
    if outcome.is_ok() {
        // Opened for reading: a save must then fail clearly.
        let mut store = HistoryStore::open(&db, &key()).unwrap();
        outcome = store.save("note", &classification()).map(|_| ());
    }
    let err = outcome.expect_err("a read-only file system cannot take a save");
    let message = err.to_string();
    assert!(
        message.contains("read-only") || message.contains("writable"),
        "{message}"
    );
    assert_eq!(database_files(fs.path()), before, "files changed");
    fs.remount("rw");
    assert_eq!(
        HistoryStore::open(&db, &key()).unwrap().count().unwrap(),
        20
    );
}
