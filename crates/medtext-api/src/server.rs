//! The server: a loopback listener, one thread per connection (at most
//! [`MAX_CONNECTIONS`]; more wait to be accepted), and the four routes.
//!
//! - `GET /health`: the process answers (always 200).
//! - `GET /ready`: 200 once the model pack is loaded, 503 before or when it
//!   could not be, with the reason.
//! - `GET /metrics`: Prometheus text (see [`crate::metrics`]).
//! - `POST /v1/classify`: `{"text": …}` or `{"texts": […]}` with
//!   `Authorization: Bearer KEY`; answers what `medtext classify --json`
//!   prints, or `{"results": […]}` for `texts`.
//!
//! It binds 127.0.0.1 only, and refuses requests whose `Host` is not this
//! machine or that come from a web page (`Origin`), so a site the user visits
//! cannot reach it through the browser (DNS rebinding). Nothing of a
//! request's body is logged, counted by content or sent back in an error.

use std::io::{BufReader, Read as _};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use medtext_core::engine::Engine;
use medtext_core::policy::Policy;
use medtext_core::{Classification, HistoryStore};
use serde::Deserialize;

use crate::http::{self, Head, HttpError, Response};
use crate::metrics::{self, Gauges, Metrics};
use crate::Error;

/// Connections served at once; more wait in the accept queue.
pub const MAX_CONNECTIONS: usize = 32;

/// Largest request body (64 texts of a long note each, JSON-escaped).
pub const MAX_BODY_BYTES: usize = 16 << 20;

/// Most texts in one request: the same as one batch call of the app.
pub const MAX_TEXTS: usize = medtext_core::batch::MAX_TEXTS_PER_CALL;

/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What `medtext serve` serves.
pub struct Config {
    pub models_dir: PathBuf,
    pub pack: String,
    pub head: Option<String>,
    /// 0 lets the system choose a free port ([`Server::local_addr`] tells it).
    pub port: u16,
    pub policy: Policy,
}

/// A bound server, not yet serving.
pub struct Server {
    listener: TcpListener,
    state: Arc<State>,
    load: Option<(PathBuf, String, Option<String>)>,
}

struct State {
    /// The history: API keys and the audit trail.
    store: Mutex<HistoryStore>,
    /// Set once the loading thread has tried the pack.
    engine: OnceLock<Engine>,
    policy: Policy,
    metrics: Metrics,
    port: u16,
    /// Connections being served, and the signal that one ended.
    connections: (Mutex<usize>, Condvar),
}

/// The body of `POST /v1/classify`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClassifyRequest {
    text: Option<String>,
    texts: Option<Vec<String>>,
}

impl Server {
    /// Binds 127.0.0.1:`port`. The store holds the API keys and receives an
    /// audit entry for every classify request.
    pub fn bind(config: Config, store: HistoryStore) -> Result<Self, Error> {
        config.policy.check_local_api()?;
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, config.port)).map_err(|source| {
            Error::Bind {
                port: config.port,
                source,
            }
        })?;
        let port = listener.local_addr().map_err(Error::Listen)?.port();
        Ok(Self {
            listener,
            state: Arc::new(State {
                store: Mutex::new(store),
                engine: OnceLock::new(),
                policy: config.policy,
                metrics: Metrics::default(),
                port,
                connections: (Mutex::new(0), Condvar::new()),
            }),
            load: Some((config.models_dir, config.pack, config.head)),
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.listener.local_addr().map_err(Error::Listen)
    }

    /// Loads the pack in the background (`/ready` says when it is done) and
    /// serves until the process ends.
    pub fn run(mut self) -> Result<(), Error> {
        if let Some((models_dir, pack, head)) = self.load.take() {
            let state = Arc::clone(&self.state);
            std::thread::Builder::new()
                .name("medtext-api-load".into())
                .spawn(move || {
                    let _ = state
                        .engine
                        .set(Engine::start(&models_dir, &pack, head.as_deref()));
                })
                .map_err(Error::Thread)?;
        }
        loop {
            // At most MAX_CONNECTIONS are served at once; the next waits in
            // the system's accept queue until one ends (the client sees a
            // slower answer, never a reset).
            let slot = Slot::take(&self.state);
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(_) => {
                    // Out of file descriptors, say: wait rather than spin.
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            let state = Arc::clone(&self.state);
            // If the thread cannot start, the stream and the slot are dropped
            // with the closure: the client sees its connection close.
            let _ = std::thread::Builder::new()
                .name("medtext-api-conn".into())
                .spawn(move || {
                    serve_connection(&state, stream);
                    drop(slot);
                });
        }
    }
}

/// One of the [`MAX_CONNECTIONS`] connections; given back when dropped, also
/// if its thread panics.
struct Slot(Arc<State>);

impl Slot {
    fn take(state: &Arc<State>) -> Self {
        let (count, freed) = &state.connections;
        let mut open = count.lock().unwrap_or_else(|e| e.into_inner());
        while *open >= MAX_CONNECTIONS {
            open = freed.wait(open).unwrap_or_else(|e| e.into_inner());
        }
        *open += 1;
        Self(Arc::clone(state))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let (count, freed) = &self.0.connections;
        let mut open = count.lock().unwrap_or_else(|e| e.into_inner());
        *open -= 1;
        freed.notify_one();
    }
}

fn serve_connection(state: &State, stream: TcpStream) {
    let started = Instant::now();
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let _ = stream.set_write_timeout(Some(READ_TIMEOUT));
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut writer = stream;
    let (route, key, response) = match http::read_head(&mut reader) {
        Ok(None) => return,
        Ok(Some(head)) => {
            let route = metrics::route_label(&head.path);
            let mut key = None;
            let response = respond(state, &head, &mut reader, &mut writer, &mut key)
                .unwrap_or_else(|e| Response::error(&e));
            (route, key, response)
        }
        Err(e) => ("other", None, Response::error(&e)),
    };
    let _ = response.write_to(&mut writer);
    state.metrics.request(route, response.status);
    tracing::info!(
        event = "api_request",
        route,
        status = response.status,
        key = key.as_deref().unwrap_or("-"),
        ms = started.elapsed().as_millis() as u64
    );
    linger(&mut writer, reader);
}

/// Closes gently: a body the server did not read (a refused request) would
/// otherwise make the system reset the connection, and the client could lose
/// the response it was sent.
fn linger(writer: &mut TcpStream, mut reader: BufReader<TcpStream>) {
    let _ = writer.shutdown(Shutdown::Write);
    let _ = reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(500)));
    let _ = std::io::copy(&mut (&mut reader).take(1 << 20), &mut std::io::sink());
}

fn respond(
    state: &State,
    head: &Head,
    reader: &mut BufReader<TcpStream>,
    writer: &mut TcpStream,
    key: &mut Option<String>,
) -> Result<Response, HttpError> {
    check_origin(state, head)?;
    match (head.method.as_str(), head.path.as_str()) {
        ("GET", "/health") => Ok(Response::json(200, &serde_json::json!({"status": "ok"}))),
        ("GET", "/ready") => Ok(ready(state)),
        ("GET", "/metrics") => Ok(Response::text(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            state.metrics.render(&Gauges {
                ready: state.engine.get().is_some_and(|e| e.worker().is_ok()),
                open_connections: *state.connections.0.lock().unwrap_or_else(|e| e.into_inner()),
            }),
        )),
        ("POST", "/v1/classify") => {
            let name = authorize(state, head)?;
            *key = Some(name.clone());
            classify(state, head, reader, writer, &name)
        }
        (_, "/health" | "/ready" | "/metrics") => Err(not_allowed(head, "GET")),
        (_, "/v1/classify") => Err(not_allowed(head, "POST")),
        _ => Err(HttpError::new(
            404,
            "no such endpoint: this API serves GET /health, GET /ready, GET /metrics and POST /v1/classify",
        )),
    }
}

fn not_allowed(head: &Head, allowed: &str) -> HttpError {
    HttpError::new(405, format!("{} takes {allowed} requests only", head.path))
}

/// Refuses requests addressed to another host name (a page whose name was
/// made to resolve to 127.0.0.1) or sent by a web page.
fn check_origin(state: &State, head: &Head) -> Result<(), HttpError> {
    if head
        .header("host")
        .is_some_and(|h| !host_is_ours(h, state.port))
    {
        return Err(HttpError::new(
            403,
            format!(
                "this API answers requests for 127.0.0.1:{} only",
                state.port
            ),
        ));
    }
    if head.header("origin").is_some() {
        return Err(HttpError::new(
            403,
            "requests from web pages are refused: call the API from a program on this machine",
        ));
    }
    Ok(())
}

/// Whether a `Host` header names this machine (and, if it has one, this port).
fn host_is_ours(host: &str, port: u16) -> bool {
    let (name, host_port) = match host.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once(']') {
            Some((ip, "")) => (ip, None),
            Some((ip, tail)) => match tail.strip_prefix(':') {
                Some(p) => (ip, Some(p)),
                None => return false,
            },
            None => return false,
        },
        None => match host.split_once(':') {
            Some((name, p)) => (name, Some(p)),
            None => (host, None),
        },
    };
    let name_ours = name == "127.0.0.1" || name == "::1" || name.eq_ignore_ascii_case("localhost");
    name_ours && host_port.is_none_or(|p| p == port.to_string())
}

fn ready(state: &State) -> Response {
    let Some(engine) = state.engine.get() else {
        return Response::json(503, &serde_json::json!({"status": "loading"}))
            .with_header("Retry-After", "1");
    };
    match engine.worker() {
        Ok(worker) => {
            let c = worker.classifier();
            Response::json(
                200,
                &serde_json::json!({
                    "status": "ready",
                    "pack": c.pack().manifest.name,
                    "pack_version": c.pack().manifest.version,
                    "head": c.head_spec().name,
                }),
            )
        }
        Err(e) => Response::json(
            503,
            &serde_json::json!({"status": "unavailable", "reason": e.to_string()}),
        ),
    }
}

/// The name of the request's API key, or 401.
fn authorize(state: &State, head: &Head) -> Result<String, HttpError> {
    let refused = |message: &str| {
        state.metrics.auth_failure();
        HttpError::new(401, message)
    };
    let Some(presented) = head.header("authorization").and_then(|v| {
        let (scheme, key) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
    }) else {
        return Err(refused(
            "send Authorization: Bearer KEY (`medtext api-key create --name NAME` makes a key)",
        ));
    };
    let store = state.store.lock().map_err(|_| internal("the history"))?;
    match store.api_key_name(presented) {
        Ok(Some(name)) => Ok(name),
        Ok(None) => Err(refused("the API key is not valid, or it was revoked")),
        Err(e) => Err(HttpError::new(500, e.to_string())),
    }
}

fn internal(what: &str) -> HttpError {
    HttpError::new(
        500,
        format!("{what} is unavailable after an earlier failure: restart `medtext serve`"),
    )
}

fn classify(
    state: &State,
    head: &Head,
    reader: &mut BufReader<TcpStream>,
    writer: &mut TcpStream,
    key: &str,
) -> Result<Response, HttpError> {
    // The body is read as JSON whatever its Content-Type says: `curl -d` and
    // urllib send form types by default. (A web page cannot use the type to
    // slip past the checks: it needs the Authorization header and an Origin.)
    let started = Instant::now();
    let length = head.content_length()?;
    if head.header("content-length").is_none() {
        return Err(HttpError::new(411, "send the body with a Content-Length"));
    }
    if length > MAX_BODY_BYTES {
        return Err(HttpError::new(
            413,
            format!("the body is over {} MB", MAX_BODY_BYTES >> 20),
        ));
    }
    if head.expects_continue() {
        std::io::Write::write_all(writer, b"HTTP/1.1 100 Continue\r\n\r\n")
            .map_err(|_| HttpError::new(400, "the connection closed"))?;
    }
    // The body is patient text: wiped when dropped, like the worker's inputs.
    let body = zeroize::Zeroizing::new(http::read_body(reader, length)?);
    let (texts, single) = parse_request(&body)?;
    for (i, text) in texts.iter().enumerate() {
        state.policy.check_text(text).map_err(|e| {
            let at = if single {
                "text".to_string()
            } else {
                format!("texts[{i}]")
            };
            HttpError::new(422, format!("{at}: {e}"))
        })?;
    }
    let engine = state.engine.get().ok_or_else(|| {
        HttpError::new(
            503,
            "the model pack is still loading: try again when GET /ready answers 200",
        )
    })?;
    let worker = engine
        .worker()
        .map_err(|e| HttpError::new(503, e.to_string()))?;
    let count = texts.len();
    let results: Vec<Classification> = worker
        .classify(texts)
        .map_err(core_error)?
        .into_iter()
        .collect::<medtext_core::Result<_>>()
        .map_err(core_error)?;
    // The audit entry is written before the answer is sent: a request that
    // cannot be audited gets no result.
    let model = results
        .first()
        .map(|c| c.model_sha256.clone())
        .unwrap_or_default();
    state
        .store
        .lock()
        .map_err(|_| internal("the history"))?
        .record_api_classify(key, count, &model)
        .map_err(|e| {
            HttpError::new(
                500,
                format!("the audit entry could not be written, so no result is given: {e}"),
            )
        })?;
    state.metrics.classified(count, started.elapsed());
    let value = if single {
        serde_json::to_value(&results[0])
    } else {
        serde_json::to_value(&results).map(|r| serde_json::json!({"results": r}))
    }
    .map_err(|_| HttpError::new(500, "the result could not be written as JSON"))?;
    Ok(Response::json(200, &value))
}

/// The texts of a classify body, and whether it gave one `text`. JSON errors
/// are reported by position and kind only: serde's own messages quote the
/// offending value, which may be patient text.
fn parse_request(body: &[u8]) -> Result<(Vec<String>, bool), HttpError> {
    const SHAPE: &str = "send {\"text\": \"…\"} or {\"texts\": [\"…\", …]}";
    let request: ClassifyRequest = serde_json::from_slice(body).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Data => "is JSON of the wrong shape",
            serde_json::error::Category::Eof => "ends too soon",
            _ => "is not valid JSON (or not UTF-8)",
        };
        HttpError::new(
            400,
            format!(
                "the body {what} at line {}, column {}: {SHAPE}",
                e.line(),
                e.column()
            ),
        )
    })?;
    match (request.text, request.texts) {
        (Some(text), None) => Ok((vec![text], true)),
        (None, Some(texts)) if texts.is_empty() => Err(HttpError::new(
            422,
            "texts is empty: send at least one text",
        )),
        (None, Some(texts)) if texts.len() > MAX_TEXTS => Err(HttpError::new(
            413,
            format!(
                "{} texts in one request; at most {MAX_TEXTS}: send them in parts",
                texts.len()
            ),
        )),
        (None, Some(texts)) => Ok((texts, false)),
        _ => Err(HttpError::new(
            400,
            format!("give exactly one of text and texts: {SHAPE}"),
        )),
    }
}

fn core_error(e: medtext_core::Error) -> HttpError {
    use medtext_core::Error as E;
    let status = match &e {
        E::EmptyText | E::TextTooLong { .. } | E::InvalidUtf8 { .. } | E::ModelInput(_) => 422,
        E::Busy { .. } | E::Engine(_) => 503,
        _ => 500,
    };
    HttpError::new(status, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_machine_and_port_are_taken_as_host() {
        for ours in [
            "127.0.0.1:8080",
            "127.0.0.1",
            "localhost:8080",
            "LocalHost",
            "[::1]:8080",
            "[::1]",
        ] {
            assert!(host_is_ours(ours, 8080), "{ours}");
        }
        for other in [
            "127.0.0.1:8081",
            "evil.example:8080",
            "localhost.evil.example:8080",
            "127.0.0.1.nip.io:8080",
            "[::1]x",
            "[::1",
            "::1:8080",
            "",
            "127.0.0.1:8080:1",
        ] {
            assert!(!host_is_ours(other, 8080), "{other}");
        }
    }

    #[test]
    fn a_wrong_body_is_described_without_quoting_it() {
        let marker = "PATIENT-MARKER-7731";
        for body in [
            format!("{{\"text\": [\"{marker}\"]}}"),
            format!("{{\"texts\": \"{marker}\"}}"),
            format!("{{\"{marker}\": 1}}"),
            format!("{{\"text\": \"{marker}"),
            marker.to_string(),
            format!("{{\"text\": \"{marker}\", \"texts\": [\"{marker}\"]}}"),
        ] {
            let e = parse_request(body.as_bytes()).unwrap_err();
            assert_eq!(e.status, 400, "{body}");
            assert!(!e.message.contains(marker), "{body}: {}", e.message);
            assert!(e.message.contains("{\"text\""), "{}", e.message);
        }
        let not_utf8 = parse_request(b"{\"text\": \"\xff\"}").unwrap_err();
        assert_eq!(not_utf8.status, 400);
    }

    #[test]
    fn one_text_or_a_bounded_list_is_taken() {
        assert_eq!(
            parse_request(br#"{"text": "chest pain"}"#).unwrap(),
            (vec!["chest pain".to_string()], true)
        );
        assert_eq!(
            parse_request(br#"{"texts": ["a", "b"]}"#).unwrap(),
            (vec!["a".to_string(), "b".to_string()], false)
        );
        assert_eq!(parse_request(br#"{"texts": []}"#).unwrap_err().status, 422);
        assert_eq!(parse_request(b"{}").unwrap_err().status, 400);
        let many = serde_json::json!({ "texts": vec!["x"; MAX_TEXTS + 1] }).to_string();
        assert_eq!(parse_request(many.as_bytes()).unwrap_err().status, 413);
    }
}
