//! Key custody against the real OS keychain (Secret Service on Linux).
//!
//! scripts/test.sh runs these inside a private D-Bus session with an unlocked
//! gnome-keyring; run bare, they fail with the keychain's own error.

use medtext_core::history::keychain::{self, database_key, delete_database_key};
use medtext_core::history::store::DATABASE_FILE;
use medtext_core::{Error, HistoryStore};

#[test]
fn the_key_is_created_once_and_returned_the_same_afterwards() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(DATABASE_FILE);
    let first = database_key(&db).expect("a Secret Service must be running (see scripts/test.sh)");
    let second = database_key(&db).unwrap();
    // Equal keys open the same database; compare through SQLCipher itself.
    HistoryStore::open(&db, &first).unwrap();
    drop(HistoryStore::open(&db, &second).unwrap());
    delete_database_key(&db).unwrap();
}

#[test]
fn a_missing_key_for_an_existing_database_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let canonical = dir.path().canonicalize().unwrap();
    let db = canonical.join(DATABASE_FILE);
    {
        let store = HistoryStore::open_in(&canonical).expect("a Secret Service must be running");
        assert_eq!(store.count().unwrap(), 0);
    }
    let before = std::fs::read(&db).unwrap();
    delete_database_key(&db).unwrap();
    let err = HistoryStore::open_in(&canonical)
        .err()
        .expect("must refuse");
    assert!(matches!(err, Error::KeyMissing { .. }), "{err:?}");
    assert!(err.to_string().contains("left untouched"), "{err}");
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "the database was modified"
    );
    // No key was quietly created either.
    assert!(matches!(database_key(&db), Err(Error::KeyMissing { .. })));
}

#[test]
fn history_survives_reopening_through_the_keychain() {
    let dir = tempfile::tempdir().unwrap();
    let canonical = dir.path().canonicalize().unwrap();
    let classification = classification();
    HistoryStore::open_in(&canonical)
        .unwrap()
        .save("NSTEMI, troponin up", &classification)
        .unwrap();
    let store = HistoryStore::open_in(&canonical).unwrap();
    assert_eq!(store.recent(5).unwrap()[0].top.id, "I20-I25");
    assert!(keychain::account_for(&canonical.join(DATABASE_FILE))
        .contains(&*canonical.to_string_lossy()));
    delete_database_key(&canonical.join(DATABASE_FILE)).unwrap();
}

/// A two-label result to save.
fn classification() -> medtext_core::Classification {
    let label = |id: &str, probability| medtext_core::LabelScore {
        id: id.into(),
        display: id.into(),
        probability,
    };
    medtext_core::Classification {
        pack: "p".into(),
        pack_version: "1".into(),
        head: "h".into(),
        model_sha256: "m".repeat(64),
        top: label("I20-I25", 0.9),
        probabilities: vec![label("I20-I25", 0.9), label("J09-J18", 0.1)],
        needs_review: false,
        windows: 1,
        evidence: Vec::new(),
        tokens: 9,
    }
}

/// A data directory with a history holding one record; returns (dir,
/// canonical dir, db path, the recovery key shown at first run).
fn history_with_a_record() -> (
    tempfile::TempDir,
    std::path::PathBuf,
    std::path::PathBuf,
    String,
) {
    let dir = tempfile::tempdir().unwrap();
    let canonical = dir.path().canonicalize().unwrap();
    let db = canonical.join(DATABASE_FILE);
    let classification = classification();
    let mut store = HistoryStore::open_in(&canonical).expect("a Secret Service must be running");
    store.save("a note", &classification).unwrap();
    let recovery = store
        .take_new_recovery_key()
        .expect("shown at first run")
        .to_text();
    assert!(store.take_new_recovery_key().is_none(), "shown once");
    drop(store);
    assert!(HistoryStore::open_in(&canonical)
        .unwrap()
        .take_new_recovery_key()
        .is_none());
    (dir, canonical, db, recovery)
}

#[test]
fn the_recovery_key_opens_the_history_when_the_keychain_entry_is_lost_even_after_rotation() {
    let (_dir, canonical, db, recovery) = history_with_a_record();
    HistoryStore::open_in(&canonical)
        .unwrap()
        .rotate_key()
        .unwrap();
    assert_eq!(
        HistoryStore::open_in(&canonical).unwrap().count().unwrap(),
        1
    );
    assert!(keychain::pending_key(&db).unwrap().is_none());
    // The keychain entry is lost: the history fails closed.
    delete_database_key(&db).unwrap();
    assert!(matches!(
        HistoryStore::open_in(&canonical),
        Err(Error::KeyMissing { .. })
    ));
    // A wrong recovery key opens nothing and stores nothing.
    let wrong = keychain::RecoveryKey::generate().unwrap().to_text();
    let err = HistoryStore::recover(&canonical, &wrong)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("does not open"), "{err}");
    assert!(
        matches!(database_key(&db), Err(Error::KeyMissing { .. })),
        "a key was stored"
    );
    // The escrowed recovery key, from before the rotation, still works.
    let recovered = HistoryStore::recover(&canonical, &recovery).unwrap();
    assert_eq!(recovered.count().unwrap(), 1);
    drop(recovered);
    assert_eq!(
        HistoryStore::open_in(&canonical).unwrap().count().unwrap(),
        1
    );
    assert_eq!(
        keychain::recovery_key(&db).unwrap().unwrap().to_text(),
        recovery
    );
    keychain::delete_all_keys(&db).unwrap();
}

#[test]
fn a_rotation_interrupted_after_the_rekey_is_finished_on_the_next_open() {
    let (_dir, canonical, db, recovery) = history_with_a_record();
    // The steps of rotate_key up to a crash just after the database took
    // the new key, before the main keychain entry was replaced.
    let new_key = keychain::DatabaseKey::generate().unwrap();
    keychain::store_pending_key(&db, &new_key).unwrap();
    HistoryStore::open_in(&canonical)
        .unwrap()
        .rekey(&new_key)
        .unwrap();
    // The main entry still holds the old key; opening finishes the rotation,
    // recovery file included.
    let store = HistoryStore::open_in(&canonical).unwrap();
    assert_eq!(store.count().unwrap(), 1);
    drop(store);
    assert!(keychain::pending_key(&db).unwrap().is_none());
    delete_database_key(&db).unwrap();
    assert_eq!(
        HistoryStore::recover(&canonical, &recovery)
            .unwrap()
            .count()
            .unwrap(),
        1
    );
    keychain::delete_all_keys(&db).unwrap();
}

#[test]
fn a_restore_replaces_the_history_keeps_the_old_one_and_refuses_a_wrong_passphrase() {
    let (_dir, canonical, db, _) = history_with_a_record();
    let backup = canonical.join("backup.mtb");
    let passphrase = "a long enough passphrase";
    HistoryStore::open_in(&canonical)
        .unwrap()
        .backup(&backup, passphrase)
        .unwrap();
    // More happens after the backup; then the history is restored from it.
    let mut store = HistoryStore::open_in(&canonical).unwrap();
    let given_after_backup = store.save("a later note", &classification()).unwrap();
    store.delete_all().unwrap();
    assert_eq!(store.count().unwrap(), 0);
    drop(store);
    let before = std::fs::read(&db).unwrap();
    let err =
        medtext_core::history::backup::restore(&canonical, &backup, "not the passphrase at all")
            .err()
            .unwrap()
            .to_string();
    assert!(err.contains("does not open with that passphrase"), "{err}");
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "a failed restore changed the history"
    );

    // The backup is IT's file: a restore reads it and leaves it as it was.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&backup, std::fs::Permissions::from_mode(0o444)).unwrap();
    }
    let backup_bytes = std::fs::read(&backup).unwrap();
    // Not while another MedText has the history open.
    let app = HistoryStore::open_in(&canonical).unwrap();
    let err = medtext_core::history::backup::restore(&canonical, &backup, passphrase)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("another MedText has the history open"),
        "{err}"
    );
    assert_eq!(std::fs::read(&db).unwrap(), before);
    drop(app);

    let report = medtext_core::history::backup::restore(&canonical, &backup, passphrase).unwrap();
    assert_eq!(report.records, 1);
    assert_eq!(std::fs::read(&backup).unwrap(), backup_bytes);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&backup).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o444, "the restore changed the backup's mode");
    }
    assert!(!canonical.join("restore-source.partial").exists());
    let kept = report.replaced_kept_at.unwrap();
    assert!(kept.exists());
    let mut store = HistoryStore::open_in(&canonical).unwrap();
    assert_eq!(store.count().unwrap(), 1);
    // The id given after the backup does not come back.
    let next = store.save("after the restore", &classification()).unwrap();
    assert!(
        next > given_after_backup,
        "{next} after {given_after_backup}"
    );
    store.delete(&[next]).unwrap();
    let actions: Vec<String> = store
        .audit_entries()
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    // The backup was taken before its own audit entry was written; the
    // entries after it stay in the replaced history, which is kept. Then the
    // note saved and deleted above.
    assert_eq!(actions, ["classify", "restore", "classify", "delete"]);
    assert!(
        medtext_core::history::audit::verify(&store.audit_entries().unwrap())
            .problems
            .is_empty()
    );
    // The replaced history is still there, under the same key.
    let key = database_key(&db).unwrap();
    assert_eq!(HistoryStore::open(&kept, &key).unwrap().count().unwrap(), 0);
    keychain::delete_all_keys(&db).unwrap();
}

/// Every file of the history in `dir`, by name, with its bytes.
fn history_files(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn a_deleted_or_emptied_history_is_refused_never_replaced_by_an_empty_one() {
    let (_dir, canonical, db, _) = history_with_a_record();
    for damage in ["deleted", "emptied"] {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
        }
        if damage == "emptied" {
            std::fs::write(&db, b"").unwrap();
        }
        let before = history_files(&canonical);
        let err = HistoryStore::open_in(&canonical)
            .err()
            .expect("must refuse");
        assert!(
            matches!(err, Error::HistoryMissing { .. }),
            "{damage}: {err:?}"
        );
        let message = err.to_string();
        for what in ["recovery file", "medtext restore", "start-new"] {
            assert!(message.contains(what), "{damage}: {message}");
        }
        assert_eq!(
            history_files(&canonical),
            before,
            "{damage}: a file was changed"
        );
    }
    // Deliberately, with the old recovery file kept aside: a new history.
    let kept = HistoryStore::start_new(&canonical).unwrap();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(kept.iter().all(|p| p.exists()));
    let mut store = HistoryStore::open_in(&canonical).unwrap();
    assert_eq!(store.count().unwrap(), 0);
    assert!(
        store.take_new_recovery_key().is_some(),
        "a new recovery key is shown"
    );
    // Not over a history that is there.
    drop(store);
    assert!(HistoryStore::start_new(&canonical).is_err());
    keychain::delete_all_keys(&db).unwrap();
}

#[test]
fn a_first_run_stopped_half_way_is_set_up_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let canonical = dir.path().canonicalize().unwrap();
    let db = canonical.join(DATABASE_FILE);
    // Stopped after the key was stored and the file made, before the
    // database was set up: nothing can have been saved yet.
    database_key(&db).unwrap();
    std::fs::write(&db, b"").unwrap();
    let mut store = HistoryStore::open_in(&canonical).unwrap();
    store.save("a note", &classification()).unwrap();
    assert_eq!(store.count().unwrap(), 1);
    drop(store);
    keychain::delete_all_keys(&db).unwrap();
}

#[test]
fn a_restore_puts_back_a_deleted_history() {
    let (_dir, canonical, db, _) = history_with_a_record();
    let backup = canonical.join("backup.mtb");
    HistoryStore::open_in(&canonical)
        .unwrap()
        .backup(&backup, "a long enough passphrase")
        .unwrap();
    std::fs::remove_file(&db).unwrap();
    assert!(HistoryStore::open_in(&canonical).is_err());
    let report =
        medtext_core::history::backup::restore(&canonical, &backup, "a long enough passphrase")
            .unwrap();
    assert_eq!(report.records, 1);
    let store = HistoryStore::open_in(&canonical).unwrap();
    assert_eq!(store.count().unwrap(), 1);
    assert!(
        medtext_core::history::audit::verify(&store.audit_entries().unwrap())
            .problems
            .is_empty()
    );
    drop(store);
    keychain::delete_all_keys(&db).unwrap();
}

/// A history in a new folder with records 2 and 3 committed only to its
/// write-ahead log, as a crash leaves it: the files copied while the
/// history that wrote them is still open, the key stored for the copy.
/// Returns (the folder, its canonical path, the copy's database).
fn crashed_with_records_in_the_log() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf)
{
    let (_source_dir, source, source_db, _) = history_with_a_record();
    let mut store = HistoryStore::open_in(&source).unwrap();
    store.save("second note", &classification()).unwrap();
    store.save("third note", &classification()).unwrap();
    let wal = std::fs::metadata(format!("{}-wal", source_db.display())).unwrap();
    assert!(wal.len() > 0, "the records must be in the log");
    let dir = tempfile::tempdir().unwrap();
    let canonical = dir.path().canonicalize().unwrap();
    for name in [
        "history.db",
        "history.db-wal",
        "history.db.anchor",
        "history.db.recovery",
    ] {
        std::fs::copy(source.join(name), canonical.join(name)).unwrap();
    }
    let db = canonical.join(DATABASE_FILE);
    keychain::store_database_key(&db, &database_key(&source_db).unwrap()).unwrap();
    drop(store);
    keychain::delete_all_keys(&source_db).unwrap();
    (dir, canonical, db)
}

#[test]
fn records_lost_from_a_damaged_write_ahead_log_are_reported_not_opened_quietly() {
    let wal_of = |db: &std::path::Path| std::path::PathBuf::from(format!("{}-wal", db.display()));
    // SQLite may leave an empty log where there was none: the same to it.
    let log = |db: &std::path::Path| std::fs::read(wal_of(db)).ok().filter(|b| !b.is_empty());
    type Damage = fn(&std::path::Path);
    let damages: [(&str, Damage); 3] = [
        ("removed", |wal| std::fs::remove_file(wal).unwrap()),
        ("truncated", |wal| {
            let len = std::fs::metadata(wal).unwrap().len();
            let file = std::fs::OpenOptions::new().write(true).open(wal).unwrap();
            file.set_len(len - 100).unwrap();
        }),
        ("last frame flipped", |wal| {
            let mut bytes = std::fs::read(wal).unwrap();
            let at = bytes.len() - 10;
            bytes[at] ^= 0xff;
            std::fs::write(wal, bytes).unwrap();
        }),
    ];
    for (what, damage) in damages {
        let (_dir, canonical, db) = crashed_with_records_in_the_log();
        // Undamaged, the crashed copy opens with all three records.
        {
            let (_d, sound, sound_db) = crashed_with_records_in_the_log();
            assert_eq!(HistoryStore::open_in(&sound).unwrap().count().unwrap(), 3);
            keychain::delete_all_keys(&sound_db).unwrap();
        }
        damage(&wal_of(&db));
        let before = std::fs::read(&db).unwrap();
        let log_before = log(&db);
        let err = HistoryStore::open_in(&canonical).err().expect(what);
        assert!(matches!(err, Error::AuditLoss { .. }), "{what}: {err:?}");
        let message = err.to_string();
        assert!(message.contains("reported saved"), "{what}: {message}");
        assert!(message.contains("but entry"), "{what}: {message}");
        assert_eq!(
            std::fs::read(&db).unwrap(),
            before,
            "{what}: the file was changed"
        );
        assert_eq!(log(&db), log_before, "{what}: the log was changed");
        // Shown, not refused, to `audit verify`.
        let inspected =
            HistoryStore::open_in_mode(&canonical, medtext_core::history::store::OpenMode::Inspect)
                .unwrap();
        assert!(inspected.anchor_problem().is_some(), "{what}");
        drop(inspected);
        assert!(
            HistoryStore::open_in(&canonical).is_err(),
            "{what}: inspecting accepted it"
        );
        if what == "removed" {
            // Accepted on purpose: the loss is in the trail, which verifies.
            let accepted = HistoryStore::open_in_mode(
                &canonical,
                medtext_core::history::store::OpenMode::AcceptLoss,
            )
            .unwrap();
            assert!(accepted.anchor_problem().is_some());
            drop(accepted);
            let store = HistoryStore::open_in(&canonical).unwrap();
            let entries = store.audit_entries().unwrap();
            assert_eq!(entries.last().unwrap().action, "audit-loss");
            assert!(medtext_core::history::audit::verify(&entries)
                .problems
                .is_empty());
            assert_eq!(store.count().unwrap(), 1);
        }
        keychain::delete_all_keys(&db).unwrap();
    }
}
