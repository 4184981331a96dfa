//! Key custody against the real OS keychain (Secret Service on Linux).
//!
//! scripts/test.sh runs these inside a private D-Bus session with an unlocked
//! gnome-keyring; run bare, they fail with the keychain's own error.

use medtext_core::keychain::{self, database_key, delete_database_key};
use medtext_core::store::DATABASE_FILE;
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
    let classification = medtext_core::Classification {
        pack: "p".into(),
        pack_version: "1".into(),
        head: "h".into(),
        model_sha256: "m".repeat(64),
        top: medtext_core::LabelScore {
            id: "I20-I25".into(),
            display: "Ischaemic heart diseases".into(),
            probability: 0.9,
        },
        probabilities: vec![
            medtext_core::LabelScore {
                id: "I20-I25".into(),
                display: "Ischaemic heart diseases".into(),
                probability: 0.9,
            },
            medtext_core::LabelScore {
                id: "J09-J18".into(),
                display: "Influenza and pneumonia".into(),
                probability: 0.1,
            },
        ],
        needs_review: false,
        windows: 1,
        evidence: Vec::new(),
        tokens: 9,
    };
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
