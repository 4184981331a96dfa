//! What the API tests share: a server on a free port over a new history,
//! and a client that speaks just enough HTTP to talk to it.

#![allow(dead_code)] // Each test file uses its own part of this.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use medtext_api::{Config, Server};
use medtext_core::history::keychain::DatabaseKey;
use medtext_core::machine::policy::Policy;
use medtext_core::HistoryStore;

pub const CANCER: &str =
    "Adenocarcinoma of the colon with liver metastases treated with chemotherapy.";

pub fn key() -> DatabaseKey {
    DatabaseKey::from_bytes([42; 32])
}

pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// A connection to the server that gives up reading after a minute.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream
}

/// Sends `raw` as it is and reads the reply to the end (the server closes).
pub fn send_raw(addr: SocketAddr, raw: &[u8]) -> Reply {
    let mut stream = connect(addr);
    stream.write_all(raw).unwrap();
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).unwrap();
    let text = String::from_utf8(bytes).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Reply {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

pub fn request(addr: SocketAddr, method: &str, path: &str, headers: &[&str], body: &str) -> Reply {
    let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for h in headers {
        raw.push_str(h);
        raw.push_str("\r\n");
    }
    if !body.is_empty() || method == "POST" {
        raw.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    raw.push_str("\r\n");
    raw.push_str(body);
    send_raw(addr, raw.as_bytes())
}

pub fn classify(addr: SocketAddr, key: &str, body: &serde_json::Value) -> Reply {
    let auth = format!("Authorization: Bearer {key}");
    request(
        addr,
        "POST",
        "/v1/classify",
        &[&auth, "Content-Type: application/json"],
        &body.to_string(),
    )
}

pub fn models() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models")
}

/// A server on a free port over a new history in `dir`, serving `pack`;
/// returns its address and a key named "lab bridge".
pub fn start(dir: &Path, pack: &str, policy: Policy) -> (SocketAddr, String) {
    let mut store = HistoryStore::open(&dir.join("history.db"), &key()).unwrap();
    let api_key = store.create_api_key("lab bridge").unwrap().to_string();
    let server = Server::bind(
        Config {
            models_dir: models(),
            pack: pack.into(),
            head: None,
            port: 0,
            policy,
        },
        store,
    )
    .unwrap();
    let addr = server.local_addr().unwrap();
    std::thread::spawn(move || server.run());
    (addr, api_key)
}

pub fn wait_ready(addr: SocketAddr) -> Reply {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let reply = request(addr, "GET", "/ready", &[], "");
        if reply.status != 503 || reply.json()["status"] != "loading" || Instant::now() > deadline {
            return reply;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn metric(addr: SocketAddr, series: &str) -> f64 {
    let text = request(addr, "GET", "/metrics", &[], "").body;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.parse().unwrap())
}
