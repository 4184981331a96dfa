//! The server: a loopback listener, one thread per connection, and the four
//! routes.
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
//!
//! Any local process can connect, key or not, so what a connection may hold
//! is bounded, each deadline counted from when it is taken up:
//!
//! - [`MAX_CONNECTIONS`] are served at once. Beyond them,
//!   [`PROBE_CONNECTIONS`] more are kept for the probes: they must send their
//!   head within [`PROBE_HEAD_TIME`], and only `GET /health`, `/ready` and
//!   `/metrics` are answered there (anything else gets 503 with
//!   `Retry-After`), so a monitor sees the server answer while clients hold
//!   every other connection. More connections wait to be accepted.
//! - The head must arrive within [`HEAD_TIME`]; the body, which is read only
//!   for a request with a valid key, within [`REQUEST_TIME`].
//! - A request without a valid key (refused, or a probe) has
//!   [`LINGER_TIME`] after its head to take its answer and for the rest of
//!   its body to be read and dropped (see `linger`): its connection is given
//!   back at most `HEAD_TIME + LINGER_TIME` after it was taken up, however
//!   slowly it sends a body it announced as 16 MB.

use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use medtext_core::history::api_keys::ApiKeyHolder;
use medtext_core::history::store::apply_retention_hourly;
use medtext_core::inference::engine::Engine;
use medtext_core::machine::policy::Policy;
use medtext_core::{Classification, HistoryStore};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::http::{self, Head, HttpError, Response, WipingReader};
use crate::metrics::{self, Gauges, Metrics};
use crate::Error;

/// Connections served at once (see the module's documentation).
pub const MAX_CONNECTIONS: usize = 32;

/// Connections kept beyond [`MAX_CONNECTIONS`] for `GET /health`, `/ready`
/// and `/metrics`.
pub const PROBE_CONNECTIONS: usize = 4;

/// Largest request body (64 texts of a long note each, JSON-escaped).
pub const MAX_BODY_BYTES: usize = 16 << 20;

/// Most texts in one request: the same as one batch call of the app.
pub const MAX_TEXTS: usize = medtext_core::inference::batch::MAX_TEXTS_PER_CALL;

/// How long a client may take to send its request line and headers: short,
/// so idle connections cannot hold the [`MAX_CONNECTIONS`] slots for long.
pub const HEAD_TIME: Duration = Duration::from_secs(2);

/// The same on a connection kept for the probes, which send a short head at
/// once.
pub const PROBE_HEAD_TIME: Duration = Duration::from_millis(500);

/// How long a client with a valid key may take to send its whole request,
/// head and body (16 MB arrive in milliseconds on loopback).
pub const REQUEST_TIME: Duration = Duration::from_secs(10);

/// How long a request without a valid key has, once its head is read, to
/// take its answer and for the rest of its body to be read and dropped.
pub const LINGER_TIME: Duration = Duration::from_millis(500);

/// How long a client with a valid key may take to take each part of its
/// answer (the results of 64 texts can be large).
const WRITE_TIME: Duration = Duration::from_secs(10);

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
    /// Connections served, and the signal that one was given back.
    slots: (Mutex<Slots>, Condvar),
    /// Connections being served, for the metrics.
    serving: AtomicUsize,
}

/// The body of `POST /v1/classify`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClassifyRequest {
    text: Option<String>,
    texts: Option<BoundedTexts>,
}

/// The `texts` list, read without making more than [`MAX_TEXTS`] strings: a
/// 16 MB body of empty strings would otherwise become millions of them.
struct BoundedTexts {
    kept: Vec<String>,
    /// How many the list held.
    total: usize,
}

impl<'de> Deserialize<'de> for BoundedTexts {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = BoundedTexts;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of texts")
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<BoundedTexts, A::Error> {
                let mut kept = Vec::new();
                while kept.len() < MAX_TEXTS {
                    match seq.next_element::<String>()? {
                        Some(text) => kept.push(text),
                        None => {
                            let total = kept.len();
                            return Ok(BoundedTexts { kept, total });
                        }
                    }
                }
                // Past the limit, only count (nothing is kept or copied).
                let mut total = kept.len();
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    total += 1;
                }
                Ok(BoundedTexts { kept, total })
            }
        }
        deserializer.deserialize_seq(Visit)
    }
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
                slots: (Mutex::new(Slots::default()), Condvar::new()),
                serving: AtomicUsize::new(0),
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
        // The store lives as long as the server: this ends with the process.
        let state = Arc::downgrade(&self.state);
        apply_retention_hourly(move || {
            let state = state.upgrade()?;
            let applied = history(&state).apply_retention();
            Some(applied)
        });
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
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(_) => {
                    // Out of file descriptors, say: wait rather than spin.
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            // With every slot taken, this connection waits for one, and the
            // next ones in the system's accept queue (the client sees a
            // slower answer, never a reset).
            let slot = Slot::take(&self.state);
            let state = Arc::clone(&self.state);
            // If the thread cannot start, the stream and the slot are dropped
            // with the closure: the client sees its connection close.
            let _ = std::thread::Builder::new()
                .name("medtext-api-conn".into())
                .spawn(move || {
                    let _serving = Serving::count(&state);
                    serve_connection(&state, stream, slot.probes_only);
                    drop(slot);
                });
        }
    }
}

/// A connection being served, counted for the metrics while it lives (also
/// if its thread panics).
struct Serving<'a>(&'a State);

impl<'a> Serving<'a> {
    fn count(state: &'a State) -> Self {
        state.serving.fetch_add(1, Ordering::SeqCst);
        Self(state)
    }
}

impl Drop for Serving<'_> {
    fn drop(&mut self) {
        self.0.serving.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Connections being served: of the [`MAX_CONNECTIONS`], and of the
/// [`PROBE_CONNECTIONS`].
#[derive(Default)]
struct Slots {
    any: usize,
    probes: usize,
}

/// A connection's place; given back when dropped, also if its thread
/// panics.
struct Slot {
    state: Arc<State>,
    /// One of the [`PROBE_CONNECTIONS`]: it answers the probes only.
    probes_only: bool,
}

impl Slot {
    /// One of the [`MAX_CONNECTIONS`] if one is free, else one of the
    /// [`PROBE_CONNECTIONS`]; waits while none is.
    fn take(state: &Arc<State>) -> Self {
        let (slots, freed) = &state.slots;
        let mut taken = slots.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let probes_only = if taken.any < MAX_CONNECTIONS {
                taken.any += 1;
                false
            } else if taken.probes < PROBE_CONNECTIONS {
                taken.probes += 1;
                true
            } else {
                taken = freed.wait(taken).unwrap_or_else(|e| e.into_inner());
                continue;
            };
            return Self {
                state: Arc::clone(state),
                probes_only,
            };
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let (slots, freed) = &self.state.slots;
        let mut taken = slots.lock().unwrap_or_else(|e| e.into_inner());
        if self.probes_only {
            taken.probes -= 1;
        } else {
            taken.any -= 1;
        }
        freed.notify_one();
    }
}

fn serve_connection(state: &State, stream: TcpStream, probes_only: bool) {
    let started = Instant::now();
    let _ = stream.set_write_timeout(Some(WRITE_TIME));
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let head_time = if probes_only {
        PROBE_HEAD_TIME
    } else {
        HEAD_TIME
    };
    let mut reader = WipingReader::new(Deadline {
        stream: read_half,
        until: started + head_time,
    });
    let mut writer = stream;
    // What to read and throw away after answering (see `linger`).
    let mut unread = 0;
    let (route, key, response) = match http::read_head(&mut reader) {
        Ok(None) => return,
        Ok(Some(head)) => {
            // Only a request with a valid key has its body read.
            reader.get_mut().until = started + REQUEST_TIME;
            unread = head.content_length().unwrap_or(0).min(MAX_BODY_BYTES);
            let route = metrics::route_label(&head.path);
            let mut key = None;
            let response = if probes_only && !is_probe(&head) {
                Err(try_again(format!(
                    "all {MAX_CONNECTIONS} connections are busy: try again shortly"
                )))
            } else {
                respond(state, &head, &mut reader, &mut writer, &mut key)
            }
            .unwrap_or_else(|e| Response::error(&e));
            (route, key.map(|k: ApiKeyHolder| k.name), response)
        }
        Err(e) => ("other", None, Response::error(&e)),
    };
    // A request without a valid key has LINGER_TIME from here to take its
    // answer and for the rest of its body to be drained: it must not keep
    // its connection. One with a key has WRITE_TIME per write, then
    // LINGER_TIME.
    let refused_until = Instant::now() + LINGER_TIME;
    if key.is_none() {
        let _ = writer.set_write_timeout(Some(LINGER_TIME));
    }
    let _ = response.write_to(&mut writer);
    state.metrics.request(route, response.status);
    tracing::info!(
        event = "api_request",
        route,
        status = response.status,
        key = key.as_deref().unwrap_or("-"),
        ms = started.elapsed().as_millis() as u64
    );
    let until = match key {
        Some(_) => Instant::now() + LINGER_TIME,
        None => refused_until,
    };
    linger(&mut writer, reader, unread, until);
}

/// Whether a request is one the [`PROBE_CONNECTIONS`] answer.
fn is_probe(head: &Head) -> bool {
    head.method == "GET" && matches!(head.path.as_str(), "/health" | "/ready" | "/metrics")
}

/// Closes gently: a body the server did not read (a refused request) would
/// otherwise make the system reset the connection, and a client that sends
/// its whole body before reading (Python's urllib and requests do) would
/// lose the response. So the rest of a body up to [`MAX_BODY_BYTES`] is
/// read and thrown away, until `until` (a body sent at loopback speed is
/// drained in milliseconds; one trickled in is cut off).
fn linger(
    writer: &mut TcpStream,
    mut reader: WipingReader<Deadline>,
    unread: usize,
    until: Instant,
) {
    let _ = writer.shutdown(Shutdown::Write);
    reader.get_mut().until = until;
    reader.discard(unread.max(64 << 10));
}

/// The reading half of a connection, which gives up at `until` however
/// slowly the bytes trickle in (a per-read timeout alone would let a client
/// that sends a byte every few seconds hold a connection for hours).
struct Deadline {
    stream: TcpStream,
    until: Instant,
}

impl std::io::Read for Deadline {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
}

fn respond(
    state: &State,
    head: &Head,
    reader: &mut WipingReader<Deadline>,
    writer: &mut TcpStream,
    key: &mut Option<ApiKeyHolder>,
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
                open_connections: state.serving.load(Ordering::SeqCst),
            }),
        )),
        ("POST", "/v1/classify") => {
            let holder = key.insert(authorize(state, head)?);
            classify(state, head, reader, writer, holder)
        }
        (_, "/health" | "/ready" | "/metrics") => Err(not_allowed(head, "GET")),
        (_, "/v1/classify") => Err(not_allowed(head, "POST")),
        _ => Err(HttpError::new(
            404,
            "no such endpoint: this API serves GET /health, GET /ready, GET /metrics and POST /v1/classify",
        )),
    }
}

fn not_allowed(head: &Head, allowed: &'static str) -> HttpError {
    HttpError::new(405, format!("{} takes {allowed} requests only", head.path))
        .with_header("Allow", allowed)
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

/// The request's API key, or 401.
fn authorize(state: &State, head: &Head) -> Result<ApiKeyHolder, HttpError> {
    let refused = |message: &str| {
        state.metrics.auth_failure();
        HttpError::new(401, message).with_header("WWW-Authenticate", "Bearer")
    };
    let Some(presented) = head.header("authorization").and_then(|v| {
        let (scheme, key) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
    }) else {
        return Err(refused(
            "send Authorization: Bearer KEY (`medtext api-key create --name NAME` makes a key)",
        ));
    };
    match history(state).api_key(presented) {
        Ok(Some(holder)) => Ok(holder),
        Ok(None) => Err(refused("the API key is not valid, or it was revoked")),
        Err(e) => Err(HttpError::new(500, e.to_string())),
    }
}

/// The history. A thread that panicked while holding it cannot have left it
/// half-written (every write is one transaction), so the lock is taken over
/// rather than leaving the server answering 500 until someone restarts it.
fn history(state: &State) -> std::sync::MutexGuard<'_, HistoryStore> {
    state.store.lock().unwrap_or_else(|e| e.into_inner())
}

/// A 503 worth retrying soon.
fn try_again(message: impl Into<String>) -> HttpError {
    HttpError::new(503, message).with_header("Retry-After", "1")
}

fn classify(
    state: &State,
    head: &Head,
    reader: &mut WipingReader<Deadline>,
    writer: &mut TcpStream,
    key: &ApiKeyHolder,
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
    let body = http::read_body(reader, length)?;
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
        try_again("the model pack is still loading: try again when GET /ready answers 200")
    })?;
    let worker = engine
        .worker()
        .map_err(|e| HttpError::new(503, e.to_string()))?;
    let count = texts.len();
    let prepared = worker.prepare(&texts[..]).map_err(core_error)?;
    drop(texts);
    if let Some(most) = state.policy.api_max_tokens_per_request {
        let tokens = prepared.tokens();
        if tokens > most {
            return Err(HttpError::new(
                413,
                format!(
                    "the texts hold {tokens} tokens; this machine's policy allows at most {most} tokens per request ([api] max_tokens_per_request): send fewer or shorter texts"
                ),
            ));
        }
    }
    let results: Vec<Classification> = worker
        .classify_prepared(prepared)
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
    history(state)
        .record_api_classify(key, count, &model)
        .map_err(|e| match e {
            medtext_core::Error::ApiKey { .. } => {
                HttpError::new(401, format!("{e}: no result is given"))
                    .with_header("WWW-Authenticate", "Bearer")
            }
            _ => HttpError::new(
                500,
                format!("the audit entry could not be written, so no result is given: {e}"),
            ),
        })?;
    state.metrics.classified(count, started.elapsed());
    let value = match (single, results.first()) {
        (true, Some(only)) => serde_json::to_value(only),
        _ => serde_json::to_value(&results).map(|r| serde_json::json!({"results": r})),
    }
    .map_err(|_| HttpError::new(500, "the result could not be written as JSON"))?;
    Ok(Response::json(200, &value))
}

/// The texts of a classify body, and whether it gave one `text`. JSON errors
/// are reported by position and kind only: serde's own messages quote the
/// offending value, which may be patient text.
fn parse_request(body: &[u8]) -> Result<(Zeroizing<Vec<String>>, bool), HttpError> {
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
    // Wiped when dropped, on every path.
    let text = request.text.map(|t| Zeroizing::new(vec![t]));
    let texts = request.texts.map(|t| (Zeroizing::new(t.kept), t.total));
    match (text, texts) {
        (Some(text), None) => Ok((text, true)),
        (None, Some((_, 0))) => Err(HttpError::new(
            422,
            "texts is empty: send at least one text",
        )),
        (None, Some((_, total))) if total > MAX_TEXTS => Err(HttpError::new(
            413,
            format!("{total} texts in one request; at most {MAX_TEXTS}: send them in parts"),
        )),
        (None, Some((texts, _))) => Ok((texts, false)),
        _ => Err(HttpError::new(
            400,
            format!("give exactly one of text and texts: {SHAPE}"),
        )),
    }
}

fn core_error(e: medtext_core::Error) -> HttpError {
    use medtext_core::Error as E;
    match &e {
        E::EmptyText | E::TextTooLong { .. } | E::InvalidUtf8 { .. } | E::ModelInput(_) => {
            HttpError::new(422, e.to_string())
        }
        E::Busy { .. } => try_again(e.to_string()),
        // The worker stopped: retrying will not help until a restart.
        E::Engine(_) => HttpError::new(503, e.to_string()),
        _ => HttpError::new(500, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_that_trickles_in_is_cut_off_at_its_deadline() {
        use std::io::Write as _;
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let client = std::thread::spawn(move || {
            let mut stream = TcpStream::connect(addr).unwrap();
            // One byte every 50 ms: each read is quick, the request is not.
            for b in b"GET /health HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n" {
                if stream.write_all(&[*b]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let (stream, _) = listener.accept().unwrap();
        let started = Instant::now();
        let mut reader = WipingReader::new(Deadline {
            stream,
            until: started + Duration::from_millis(400),
        });
        let error = http::read_head(&mut reader).unwrap_err();
        assert_eq!(error.status, 408);
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(reader);
        client.join().unwrap();
    }

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
        let (one, single) = parse_request(br#"{"text": "chest pain"}"#).unwrap();
        assert_eq!(
            (one.as_slice(), single),
            (&["chest pain".to_string()][..], true)
        );
        let (two, single) = parse_request(br#"{"texts": ["a", "b"]}"#).unwrap();
        assert_eq!(
            (two.as_slice(), single),
            (&["a".to_string(), "b".to_string()][..], false)
        );
        assert_eq!(parse_request(br#"{"texts": []}"#).unwrap_err().status, 422);
        assert_eq!(parse_request(b"{}").unwrap_err().status, 400);
        let many = serde_json::json!({ "texts": vec!["x"; MAX_TEXTS + 1] }).to_string();
        assert_eq!(parse_request(many.as_bytes()).unwrap_err().status, 413);
        // A list far over the limit is counted, not built: the message has
        // the count, and a malformed element past the limit is still found.
        let bomb = format!("{{\"texts\": [{}\"\"]}}", "\"\",".repeat(1_000_000));
        let e = parse_request(bomb.as_bytes()).unwrap_err();
        assert_eq!(e.status, 413);
        assert!(e.message.starts_with("1000001 texts"), "{}", e.message);
        let broken = format!("{{\"texts\": [{}\"\", ]}}", "\"\",".repeat(100));
        assert_eq!(parse_request(broken.as_bytes()).unwrap_err().status, 400);
    }
}
