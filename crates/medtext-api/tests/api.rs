//! The local API in-process, over real sockets, on the real default pack
//! (MiniLM from the registry: run models/fetch-encoder.sh first;
//! scripts/test.sh does) and a real SQLCipher history.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    classify, connect, key, metric, models, request, send_raw, start, wait_ready, CANCER,
};
use medtext_api::{Config, Server};
use medtext_core::machine::policy::Policy;
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

    // A client that waits for "100 Continue" gets it, then its answer.
    let waiting = serde_json::json!({ "text": CANCER }).to_string();
    let mut stream = connect(addr);
    write!(
        stream,
        "POST /v1/classify HTTP/1.1\r\nHost: {addr}\r\n{auth}\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        waiting.len()
    )
    .unwrap();
    let mut interim = [0u8; 25];
    stream.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(waiting.as_bytes()).unwrap();
    let mut rest = String::new();
    stream.read_to_string(&mut rest).unwrap();
    assert!(rest.starts_with("HTTP/1.1 200 OK\r\n"), "{rest}");

    // Revoked from another connection (as `medtext api-key revoke` does):
    // refused at once.
    let mut admin = HistoryStore::open(&dir.path().join("history.db"), &key()).unwrap();
    admin.revoke_api_key("lab bridge").unwrap();
    assert_eq!(classify(addr, &api_key, &body).status, 401);
}

/// What is refused before any model is needed: these checks run on a server
/// whose pack does not exist.
#[test]
fn refuses_other_hosts_web_pages_wrong_methods_and_oversized_requests() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, api_key) = start(dir.path(), "no-such-pack", Policy::default());
    assert_eq!(wait_ready(addr).status, 503);
    let auth = format!("Authorization: Bearer {api_key}");
    let raw = |text: String| send_raw(addr, text.as_bytes());

    // DNS rebinding: a page whose name resolves to 127.0.0.1; and web pages.
    let rebound = raw("GET /health HTTP/1.1\r\nHost: evil.example\r\n\r\n".into());
    assert_eq!(rebound.status, 403);
    let port = addr.port() + 1;
    let other_port = raw(format!(
        "GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    ));
    assert_eq!(other_port.status, 403);
    for origin in ["Origin: https://evil.example", "Origin: null"] {
        let page = request(addr, "POST", "/v1/classify", &[&auth, origin], "{}");
        assert_eq!(page.status, 403, "{origin}");
    }
    assert_eq!(
        request(addr, "GET", "/health", &["Origin: null"], "").status,
        403
    );
    // HTTP/1.1 needs exactly one Host.
    assert_eq!(raw("GET /health HTTP/1.1\r\n\r\n".into()).status, 400);
    assert_eq!(
        request(addr, "GET", "/health", &["Host: localhost"], "").status,
        400
    );

    let get = request(addr, "GET", "/v1/classify", &[], "");
    assert_eq!(get.status, 405);
    assert!(get.head.contains("\r\nAllow: POST"), "{}", get.head);
    let delete = request(addr, "DELETE", "/health", &[], "");
    assert_eq!(delete.status, 405);
    assert!(delete.head.contains("\r\nAllow: GET"), "{}", delete.head);
    assert_eq!(request(addr, "GET", "/v2/anything", &[], "").status, 404);
    assert_eq!(raw("GET /health HTTP/2\r\n\r\n".into()).status, 505);
    assert_eq!(raw("nonsense\r\n\r\n".into()).status, 400);

    // The scheme's name is case-insensitive; the key is checked first.
    let lower = format!("Authorization: bearer {api_key}");
    let not_ready = request(addr, "POST", "/v1/classify", &[&lower], "{\"text\": \"x\"}");
    assert_eq!(not_ready.status, 503);
    assert!(
        !not_ready.head.contains("Retry-After"),
        "a missing pack is not worth a retry"
    );
    let host = format!("Host: {addr}");
    let no_length = raw(format!(
        "POST /v1/classify HTTP/1.1\r\n{host}\r\n{auth}\r\n\r\n"
    ));
    assert_eq!(no_length.status, 411);
    // A body over the limit is refused from its Content-Length, unread.
    let huge = raw(format!(
        "POST /v1/classify HTTP/1.1\r\n{host}\r\n{auth}\r\nContent-Length: {}\r\n\r\n",
        medtext_api::server::MAX_BODY_BYTES + 1
    ));
    assert_eq!(huge.status, 413);
    let chunked = raw(format!(
        "POST /v1/classify HTTP/1.1\r\n{host}\r\n{auth}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ));
    assert_eq!(chunked.status, 501);
    let too_many = vec!["x"; medtext_api::server::MAX_TEXTS + 1];
    let reply = classify(addr, &api_key, &serde_json::json!({ "texts": too_many }));
    assert_eq!(reply.status, 413);

    // A refused request with a large body, sent whole before the answer is
    // read (as urllib and requests do), still gets its answer, not a reset.
    let big = serde_json::json!({ "text": "x".repeat(4 << 20) }).to_string();
    let wrong = format!("mtk_{}", "cd".repeat(32));
    let wrong_auth = format!("Authorization: Bearer {wrong}");
    let refused = request(addr, "POST", "/v1/classify", &[&wrong_auth], &big);
    assert_eq!(refused.status, 401);
    assert!(refused.head.contains("WWW-Authenticate: Bearer"));

    // With a wrong key, a client waiting for "100 Continue" gets the 401
    // instead, and never sends its body.
    let mut stream = connect(addr);
    write!(
        stream,
        "POST /v1/classify HTTP/1.1\r\n{host}\r\nAuthorization: Bearer {wrong}\r\nExpect: 100-continue\r\nContent-Length: 20\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 401 "), "{answer}");
}

/// More clients than connection slots: a probe is still answered at once,
/// on a connection kept for probes, where anything else is told to retry;
/// with those taken too, clients wait to be accepted, never reset.
#[test]
fn connections_beyond_the_limit_answer_probes_and_then_wait_for_a_slot() {
    use medtext_api::server::{MAX_CONNECTIONS, PROBE_CONNECTIONS};
    let dir = tempfile::tempdir().unwrap();
    let (addr, api_key) = start(dir.path(), "no-such-pack", Policy::default());
    // Idle connections take every slot until their 2 s for a head runs out.
    let idle: Vec<TcpStream> = (0..MAX_CONNECTIONS)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    assert_eq!(request(addr, "GET", "/health", &[], "").status, 200);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "the probe waited {:?} for a slot",
        started.elapsed()
    );
    let busy = classify(addr, &api_key, &serde_json::json!({ "text": CANCER }));
    assert_eq!(busy.status, 503);
    assert!(busy.head.contains("Retry-After"), "{}", busy.head);
    assert!(busy.body.contains("busy"), "{}", busy.body);
    // Idle on the probes' connections too: the next probe waits until their
    // half second for a head runs out.
    let idle_probes: Vec<TcpStream> = (0..PROBE_CONNECTIONS)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    let started = Instant::now();
    assert_eq!(request(addr, "GET", "/health", &[], "").status, 200);
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "it did not wait"
    );
    // The idle ones were answered 408 and closed.
    for mut stream in idle.into_iter().chain(idle_probes) {
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    }
    // Their threads end once they see the close; then only the metrics
    // request itself is open.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut open = metric(addr, "medtext_open_connections");
    while open != 1.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        open = metric(addr, "medtext_open_connections");
    }
    assert_eq!(open, 1.0);
}

/// Local processes without a key that announce a large body and trickle
/// it in, more of them than there are connection slots, cannot hold the
/// slots: each is answered and closed soon after it connects, and a health
/// probe is answered meanwhile.
#[test]
fn clients_without_a_key_cannot_hold_the_connection_slots() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _) = start(dir.path(), "no-such-pack", Policy::default());
    let trickling: Vec<_> = (0..medtext_api::server::MAX_CONNECTIONS + 12)
        .map(|_| {
            std::thread::spawn(move || {
                let connected = Instant::now();
                let mut stream = TcpStream::connect(addr).unwrap();
                write!(
                    stream,
                    "POST /v1/classify HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 16000000\r\n\r\n"
                )
                .unwrap();
                // A byte every 50 ms until the server closes the connection
                // (a write then fails), for at most 20 s.
                while connected.elapsed() < Duration::from_secs(20) {
                    std::thread::sleep(Duration::from_millis(50));
                    if stream.write_all(b"x").is_err() {
                        break;
                    }
                }
                connected.elapsed()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let probe = Instant::now();
    let health = request(addr, "GET", "/health", &[], "");
    assert_eq!(health.status, 200);
    assert!(
        probe.elapsed() < Duration::from_secs(3),
        "/health took {:?} while the slots were held",
        probe.elapsed()
    );
    for client in trickling {
        let held = client.join().unwrap();
        assert!(
            held < Duration::from_secs(4),
            "a connection without a key was held for {held:?}"
        );
    }
}

/// `[api] max_tokens_per_request`: a request whose texts hold more tokens
/// is refused with 413 once tokenized, before any inference, without
/// quoting them; a smaller one is served.
#[test]
fn a_request_over_the_policys_token_cap_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let policy = Policy::parse(
        "[api]\nmax_tokens_per_request = 40\n",
        Path::new("/etc/medtext/policy.toml"),
    )
    .unwrap();
    let (addr, api_key) = start(dir.path(), "medical-abstracts", policy);
    assert_eq!(wait_ready(addr).status, 200);
    let one = classify(addr, &api_key, &serde_json::json!({ "text": CANCER }));
    assert_eq!(one.status, 200, "{}", one.body);
    let tokens = one.json()["tokens"].as_u64().unwrap();
    assert!(tokens > 10 && tokens <= 40, "{tokens}");
    // Each text fits; together they do not.
    let many = serde_json::json!({ "texts": [CANCER, MARKER, CANCER, CANCER] });
    let refused = classify(addr, &api_key, &many);
    assert_eq!(refused.status, 413, "{}", refused.body);
    let message = refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("40 tokens") && message.contains("policy"),
        "{message}"
    );
    assert!(!message.contains(MARKER) && !message.contains("Adenocarcinoma"));
    // Only the one request was classified, and only it is audited.
    assert_eq!(metric(addr, "medtext_classified_texts_total"), 1.0);
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
