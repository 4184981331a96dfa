//! Crash safety of the history: a child process saves records in a loop and
//! is killed with SIGKILL at random moments, over and over (on start-up, in
//! the middle of a transaction, between two). Afterwards the database must
//! open, pass both integrity checks, hold every record the child reported as
//! committed, and its audit chain must verify.
//!
//! A second test does the same through the anchored open of the app and the
//! CLI (see `medtext_core::history::anchor`): a kill between a commit and its anchor
//! must never make the next open report a loss.
//!
//! CI runs 200 kills; `MEDTEXT_CRASH_KILLS=5000 cargo test --test crash`
//! (`make soak`) runs the long version.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use medtext_core::history::keychain::DatabaseKey;
use medtext_core::history::store::{HistoryQuery, DATABASE_FILE};
use medtext_core::{history::audit, Classification, HistoryStore, LabelScore};

const CHILD_DB: &str = "MEDTEXT_CRASH_CHILD_DB";
const CHILD_ANCHORED: &str = "MEDTEXT_CRASH_CHILD_ANCHORED";
const KEY: [u8; 32] = [0x5a; 32];

fn classification(n: u64) -> Classification {
    let label = |id: &str, p: f32| LabelScore {
        id: id.into(),
        display: id.into(),
        probability: p,
    };
    Classification {
        pack: "crash-test".into(),
        pack_version: "1".into(),
        head: "h".into(),
        model_sha256: format!("{n:064}"),
        top: label("a", 0.8),
        probabilities: vec![label("a", 0.8), label("b", 0.2)],
        needs_review: false,
        windows: 1,
        tokens: 10,
        evidence: Vec::new(),
    }
}

/// The child: saves records until it is killed, printing each committed id.
#[test]
#[ignore = "the child process of records_reported_committed_survive_kill_9_at_random_moments"]
fn crash_writer_child() {
    let db = std::env::var_os(CHILD_DB).expect("started by the crash test");
    let db = Path::new(&db);
    // Anchored: opened as the app and the CLI open it, key from the keychain.
    let mut store = if std::env::var_os(CHILD_ANCHORED).is_some() {
        HistoryStore::open_in(db.parent().expect("a data folder"))
    } else {
        HistoryStore::open(db, &DatabaseKey::from_bytes(KEY))
    }
    .expect("the child opens the database");
    for n in 0.. {
        let text = format!(
            "record {n}: a note long enough to span a few cells {}",
            "x".repeat((n % 7) as usize * 300)
        );
        let id = store.save(&text, &classification(n)).expect("save");
        // Reported only after `save` returned: the record is committed.
        println!("committed {id}");
    }
}

/// A small deterministic generator for the kill delays.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Every record id in the history, page by page.
fn stored_ids(store: &HistoryStore) -> Vec<i64> {
    let mut stored = Vec::new();
    loop {
        let page = store
            .search(&HistoryQuery {
                limit: 500,
                offset: stored.len(),
                ..HistoryQuery::default()
            })
            .unwrap();
        if page.entries.is_empty() {
            return stored;
        }
        stored.extend(page.entries.into_iter().map(|e| e.id));
    }
}

/// Starts the child on `db` (anchored: opened with `open_in`), kills it
/// with SIGKILL after `delay`, and returns the ids it reported committed.
fn run_child_until_killed(db: &Path, anchored: bool, delay: Duration) -> Vec<i64> {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--exact",
            "crash_writer_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DB, db)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if anchored {
        command.env(CHILD_ANCHORED, "1");
    }
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| {
                l.strip_prefix("committed ")
                    .and_then(|id| id.parse::<i64>().ok())
            })
            .collect::<Vec<_>>()
    });
    std::thread::sleep(delay);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader.join().unwrap()
}

/// Every audited commit is anchored after it (see medtext_core::history::anchor): a
/// kill between a commit and its anchor, or during the anchor's write, must
/// never make the next open report a loss, and nothing reported committed
/// may be lost.
#[test]
fn a_kill_9_between_a_commit_and_its_anchor_never_looks_like_a_loss() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().canonicalize().unwrap();
    let db = data.join(DATABASE_FILE);
    let mut committed: Vec<i64> = Vec::new();
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    for _ in 0..40 {
        // Long enough to be past the keychain and into saving.
        let delay = Duration::from_millis(40 + next(&mut rng) % 120);
        committed.extend(run_child_until_killed(&db, true, delay));
        let store = HistoryStore::open_in(&data).expect("no loss reported after a kill");
        drop(store);
    }
    assert!(!committed.is_empty(), "the child never got to saving");
    let store = HistoryStore::open_in(&data).unwrap();
    let stored = stored_ids(&store);
    let missing: Vec<&i64> = committed.iter().filter(|id| !stored.contains(id)).collect();
    assert!(missing.is_empty(), "committed but lost: {missing:?}");
    assert!(audit::verify(&store.audit_entries().unwrap())
        .problems
        .is_empty());
    println!(
        "40 kills with anchors: {} records reported committed, {} stored, no loss reported",
        committed.len(),
        stored.len()
    );
    drop(store);
    medtext_core::history::keychain::delete_all_keys(&db).unwrap();
}

#[test]
fn records_reported_committed_survive_kill_9_at_random_moments() {
    let kills: u32 = std::env::var("MEDTEXT_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(DATABASE_FILE);
    let mut committed: Vec<i64> = Vec::new();
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..kills {
        // From "still starting" to "many records in".
        let delay = Duration::from_millis(next(&mut rng) % 60);
        committed.extend(run_child_until_killed(&db, false, delay));
    }
    assert!(
        committed.len() > kills as usize,
        "the child committed only {} records in {kills} runs: the test did not exercise writing",
        committed.len()
    );

    let store = HistoryStore::open(&db, &DatabaseKey::from_bytes(KEY)).unwrap();
    assert_eq!(store.integrity_problems().unwrap(), Vec::<String>::new());
    let stored = stored_ids(&store);
    let missing: Vec<&i64> = committed.iter().filter(|id| !stored.contains(id)).collect();
    assert!(missing.is_empty(), "committed but lost: {missing:?}");
    let entries = store.audit_entries().unwrap();
    let verification = audit::verify(&entries);
    assert!(
        verification.problems.is_empty(),
        "{:?}",
        verification.problems
    );
    // One classify entry per stored record, written in the same transaction.
    assert_eq!(entries.len(), stored.len());
    println!(
        "{kills} kills: {} records reported committed, {} stored, all intact",
        committed.len(),
        stored.len()
    );
}
