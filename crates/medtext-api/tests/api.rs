//! The local API in-process, over real sockets, on the real default pack
//! (MiniLM from the registry: run models/fetch-encoder.sh first;
//! scripts/test.sh does) and a real SQLCipher history.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use common::{classify, key, metric, models, request, send_raw, start, wait_ready, CANCER};
use medtext_api::{Config, Server};
use medtext_core::policy::Policy;
use medtext_core::HistoryStore;

/// Words that must never come back in an error, a log or the audit trail.
const MARKER: &str = "Zebulon-Quartermain-4471";

#[test]
fn classifies_for_a_valid_key_only_and_audits_every_call_without_its_text() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, api_key) = start(dir.path(), "medical-abstracts", Policy::default());
    assert!(addr.ip().is_loopback(), "{addr}");

    let health = request(addr, "GET", "/health", &[], "");
    assert_eq!(
        (health.status, health.json()["status"].clone()),
        (200, "ok".into())
    );
    let ready = wait_ready(addr);
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.json()["pack"], "medical-abstracts");

    // No key, a wrong key, another scheme: 401, and nothing classified.
    let body = serde_json::json!({ "text": CANCER });
    let none = request(addr, "POST", "/v1/classify", &[], &body.to_string());
    assert_eq!(none.status, 401);
    assert!(
        none.head.contains("WWW-Authenticate: Bearer"),
        "{}",
        none.head
    );
    assert!(none.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("api-key create"));
    let wrong = format!("mtk_{}", "ab".repeat(32));
    assert_eq!(classify(addr, &wrong, &body).status, 401);
    let basic = request(
        addr,
        "POST",
        "/v1/classify",
        &["Authorization: Basic eDp5"],
        "{}",
    );
    assert_eq!(basic.status, 401);
    assert_eq!(metric(addr, "medtext_auth_failures_total"), 3.0);

    // One text: what `medtext classify --json` prints.
    let one = classify(addr, &api_key, &body);
    assert_eq!(one.status, 200, "{}", one.body);
    assert!(one.head.contains("Content-Type: application/json"));
    assert!(one.head.contains("Cache-Control: no-store"));
    let one = one.json();
    assert_eq!(one["top"]["id"], "neoplasms");
    assert_eq!(one["probabilities"].as_array().unwrap().len(), 5);
    assert_eq!(one["pack"], "medical-abstracts");

    // Several: one result each, in order, the same as one at a time.
    let other = "Acute ischemic stroke of the left middle cerebral artery territory with aphasia.";
    let many = classify(
        addr,
        &api_key,
        &serde_json::json!({ "texts": [CANCER, other, MARKER] }),
    );
    assert_eq!(many.status, 200, "{}", many.body);
    let results = many.json()["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 3);
    assert_eq!(results[0]["top"], one["top"]);
    let alone = classify(addr, &api_key, &serde_json::json!({ "text": other })).json();
    assert_eq!(results[1]["top"]["id"], alone["top"]["id"]);
    let p = |v: &serde_json::Value| v["top"]["probability"].as_f64().unwrap();
    assert!((p(&results[1]) - p(&alone)).abs() < 1e-4);

    // Bad input: its own status, the offending item named, the text never quoted.
    let empty = classify(
        addr,
        &api_key,
        &serde_json::json!({ "texts": ["fine", "  "] }),
    );
    assert_eq!(empty.status, 422);
    assert!(empty.body.contains("texts[1]"), "{}", empty.body);
    let shape = classify(addr, &api_key, &serde_json::json!({ "text": [MARKER] }));
    assert_eq!(shape.status, 400);
    assert!(!shape.body.contains(MARKER), "{}", shape.body);
    let auth = format!("Authorization: Bearer {api_key}");
    let not_json = request(
        addr,
        "POST",
        "/v1/classify",
        &[&auth],
        &format!("{{{MARKER}"),
    );
    assert_eq!(not_json.status, 400);
    assert!(!not_json.body.contains(MARKER), "{}", not_json.body);
    // Read as JSON whatever the Content-Type (curl -d sends a form type).
    let form = serde_json::json!({ "text": CANCER }).to_string();
    let typed = "Content-Type: application/x-www-form-urlencoded";
    let as_form = request(addr, "POST", "/v1/classify", &[&auth, typed], &form);
    assert_eq!(as_form.status, 200, "{}", as_form.body);
    assert_eq!(as_form.json()["top"], one["top"]);

    assert_eq!(metric(addr, "medtext_classified_texts_total"), 6.0);
    assert_eq!(
        metric(
            addr,
            "medtext_http_requests_total{route=\"/v1/classify\",code=\"200\"}"
        ),
        4.0
    );

    // Every call is in the audit trail with its key's name, never its text.
    let reader = HistoryStore::open(&dir.path().join("history.db"), &key()).unwrap();
    let entries = reader.audit_entries().unwrap();
    let calls: Vec<_> = entries
        .iter()
        .filter(|e| e.action == "api-classify")
        .collect();
    let details: Vec<_> = calls.iter().map(|e| e.detail.clone().unwrap()).collect();
    assert_eq!(
        details,
        [
            "key=lab bridge texts=1",
            "key=lab bridge texts=3",
            "key=lab bridge texts=1",
            "key=lab bridge texts=1"
        ]
    );
    assert!(calls
        .iter()
        .all(|e| e.model_sha256.as_deref().is_some_and(|m| m.len() == 64)));
    assert!(calls.iter().all(|e| e.text_sha256.is_none()));
    let dump = serde_json::to_string(&entries).unwrap();
    assert!(!dump.contains(MARKER) && !dump.contains("Adenocarcinoma"));
    assert!(reader.integrity_problems().unwrap().is_empty());
    let listed = reader.api_keys().unwrap();
    assert!(listed[0].last_used_at_ms.is_some());
    drop(reader);

    // Revoked from another connection (as `medtext api-key revoke` does):
    // refused at once.
    let mut admin = HistoryStore::open(&dir.path().join("history.db"), &key()).unwrap();
    admin.revoke_api_key("lab bridge").unwrap();
    assert_eq!(classify(addr, &api_key, &body).status, 401);
}

#[test]
fn refuses_other_hosts_web_pages_wrong_methods_and_oversized_requests() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, api_key) = start(dir.path(), "medical-abstracts", Policy::default());
    let auth = format!("Authorization: Bearer {api_key}");

    // DNS rebinding: a page whose name resolves to 127.0.0.1.
    let rebound = send_raw(addr, b"GET /health HTTP/1.1\r\nHost: evil.example\r\n\r\n");
    assert_eq!(rebound.status, 403);
    let page = request(
        addr,
        "POST",
        "/v1/classify",
        &[&auth, "Origin: https://evil.example"],
        "{}",
    );
    assert_eq!(page.status, 403);

    let get = request(addr, "GET", "/v1/classify", &[], "");
    assert_eq!(get.status, 405);
    assert_eq!(request(addr, "DELETE", "/health", &[], "").status, 405);
    assert_eq!(request(addr, "GET", "/v2/anything", &[], "").status, 404);
    assert_eq!(send_raw(addr, b"GET /health HTTP/2\r\n\r\n").status, 505);
    assert_eq!(send_raw(addr, b"nonsense\r\n\r\n").status, 400);

    // A body over the limit is refused from its Content-Length, unread.
    let huge = send_raw(
        addr,
        format!(
            "POST /v1/classify HTTP/1.1\r\n{auth}\r\nContent-Length: {}\r\n\r\n",
            medtext_api::server::MAX_BODY_BYTES + 1
        )
        .as_bytes(),
    );
    assert_eq!(huge.status, 413);
    let chunked = send_raw(
        addr,
        format!(
            "POST /v1/classify HTTP/1.1\r\n{auth}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(chunked.status, 501);
    let too_many = vec!["x"; medtext_api::server::MAX_TEXTS + 1];
    let reply = classify(addr, &api_key, &serde_json::json!({ "texts": too_many }));
    assert_eq!(reply.status, 413);

    // A client that waits for "100 Continue" gets it, then its answer.
    let body = serde_json::json!({ "text": CANCER }).to_string();
    wait_ready(addr);
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        stream,
        "POST /v1/classify HTTP/1.1\r\n{auth}\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    let mut interim = [0u8; 25];
    stream.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(body.as_bytes()).unwrap();
    let mut rest = String::new();
    stream.read_to_string(&mut rest).unwrap();
    assert!(rest.starts_with("HTTP/1.1 200 OK\r\n"), "{rest}");
}

#[test]
fn a_pack_that_does_not_load_leaves_it_healthy_but_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, api_key) = start(dir.path(), "no-such-pack", Policy::default());
    assert_eq!(request(addr, "GET", "/health", &[], "").status, 200);
    let ready = wait_ready(addr);
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["status"], "unavailable");
    assert!(ready.json()["reason"]
        .as_str()
        .unwrap()
        .contains("no-such-pack"));
    let reply = classify(addr, &api_key, &serde_json::json!({ "text": CANCER }));
    assert_eq!(reply.status, 503);
    assert_eq!(metric(addr, "medtext_model_ready"), 0.0);
}

#[test]
fn a_policy_that_turns_the_api_off_stops_it_before_it_listens() {
    let dir = tempfile::tempdir().unwrap();
    let policy = Policy::parse(
        "[api]\nallow = false\n",
        Path::new("/etc/medtext/policy.toml"),
    )
    .unwrap();
    let store = HistoryStore::open(&dir.path().join("history.db"), &key()).unwrap();
    let refused = Server::bind(
        Config {
            models_dir: models(),
            pack: "medical-abstracts".into(),
            head: None,
            port: 0,
            policy,
        },
        store,
    );
    let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.contains("medtext serve") && message.contains("policy"),
        "{message}"
    );
}
