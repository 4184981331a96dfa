//! The local API under concurrent load: many clients at once, single texts
//! and batches mixed, while the inference worker serves the requests that
//! wait together in one batch. Every answer must be the one its own text
//! gets alone (a batch that mixed clients' results up would hand one
//! patient's label to another), nothing may be refused or go uncounted, and
//! every answered request must be on the audit trail.
//!
//! Short in CI (3 s, 8 clients); `make load` runs it for
//! `MEDTEXT_LOAD_SECONDS` (default there: 300) with `MEDTEXT_LOAD_CLIENTS`.

mod common;

use std::time::{Duration, Instant};

use common::{classify, key, metric, start, wait_ready, CANCER};
use medtext_core::machine::policy::Policy;
use medtext_core::{history::audit, HistoryStore};

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Texts of different lengths; the last is long enough for several windows.
fn texts() -> Vec<String> {
    let mut texts: Vec<String> = [
        CANCER,
        "Acute ischemic stroke of the left middle cerebral artery territory with aphasia.",
        "Community-acquired pneumonia in an elderly patient; blood cultures grew pneumococcus.",
        "Chronic hepatitis C with cirrhosis.",
        "Randomised trial of beta blockers after myocardial infarction in patients with reduced ejection fraction.",
    ]
    .map(String::from)
    .to_vec();
    texts.push(
        "Patients with type 2 diabetes and chronic kidney disease were followed for five years; "
            .repeat(40),
    );
    texts
}

struct ClientTally {
    requests: usize,
    texts: usize,
    busy: usize,
}

#[test]
fn concurrent_clients_each_get_their_own_texts_results() {
    let seconds = setting("MEDTEXT_LOAD_SECONDS", 3);
    let clients = setting("MEDTEXT_LOAD_CLIENTS", 8) as usize;
    let dir = tempfile::tempdir().unwrap();
    let (addr, api_key) = start(dir.path(), "medical-abstracts", Policy::default());
    assert_eq!(wait_ready(addr).status, 200);

    let texts = texts();
    // What each text gets when it is classified alone.
    let reference: Vec<(serde_json::Value, f64)> = texts
        .iter()
        .map(|t| {
            let v = classify(addr, &api_key, &serde_json::json!({ "text": t })).json();
            (
                v["top"]["id"].clone(),
                v["top"]["probability"].as_f64().unwrap(),
            )
        })
        .collect();

    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let tallies: Vec<ClientTally> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..clients)
            .map(|client| {
                let (texts, reference, api_key) = (&texts, &reference, &api_key);
                scope.spawn(move || {
                    let mut tally = ClientTally {
                        requests: 0,
                        texts: 0,
                        busy: 0,
                    };
                    let mut turn = client;
                    while Instant::now() < deadline {
                        // Every third request is a batch of three texts.
                        let picks: Vec<usize> = if turn % 3 == 0 {
                            (turn..turn + 3).map(|i| i % texts.len()).collect()
                        } else {
                            vec![turn % texts.len()]
                        };
                        turn += 1;
                        let body = match picks.as_slice() {
                            [one] => serde_json::json!({ "text": texts[*one] }),
                            many => serde_json::json!({
                                "texts": many.iter().map(|&i| &texts[i]).collect::<Vec<_>>()
                            }),
                        };
                        let reply = classify(addr, api_key, &body);
                        if reply.status == 503 {
                            assert!(reply.head.contains("Retry-After"), "{}", reply.head);
                            tally.busy += 1;
                            std::thread::sleep(Duration::from_millis(10));
                            continue;
                        }
                        assert_eq!(reply.status, 200, "{}", reply.body);
                        let v = reply.json();
                        let results = match picks.len() {
                            1 => vec![v],
                            _ => v["results"].as_array().unwrap().clone(),
                        };
                        assert_eq!(results.len(), picks.len());
                        for (&i, r) in picks.iter().zip(&results) {
                            assert_eq!(r["top"]["id"], reference[i].0, "text {i}");
                            let p = r["top"]["probability"].as_f64().unwrap();
                            assert!((p - reference[i].1).abs() < 1e-3, "text {i}: {p}");
                        }
                        tally.requests += 1;
                        tally.texts += picks.len();
                    }
                    tally
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let requests: usize = tallies.iter().map(|t| t.requests).sum();
    let classified: usize = tallies.iter().map(|t| t.texts).sum();
    let busy: usize = tallies.iter().map(|t| t.busy).sum();
    println!(
        "{clients} clients for {elapsed:.1} s: {requests} requests answered ({:.1}/s), {classified} texts ({:.1}/s), {busy} refused as busy",
        requests as f64 / elapsed,
        classified as f64 / elapsed
    );
    assert!(
        requests >= clients,
        "each client should be answered at least once"
    );
    // Below the connection limit, nothing is turned away.
    if clients <= medtext_api::server::MAX_CONNECTIONS {
        assert_eq!(busy, 0);
    }
    assert_eq!(
        metric(addr, "medtext_classified_texts_total"),
        (classified + texts.len()) as f64
    );

    // One audit entry per answered request, and the chain is whole.
    let reader = HistoryStore::open(&dir.path().join("history.db"), &key()).unwrap();
    let entries = reader.audit_entries().unwrap();
    let calls = entries
        .iter()
        .filter(|e| e.action == "api-classify")
        .count();
    assert_eq!(calls, requests + texts.len());
    assert!(audit::verify(&entries).problems.is_empty());
    assert!(reader.integrity_problems().unwrap().is_empty());
}
