//! Just enough HTTP/1.1 for a loopback JSON API, on the standard library.
//!
//! Why not an HTTP crate: the app and the CLI link no networking crate at all
//! (`tests/network_zero.rs` checks the dependency tree), and a server that
//! answers four routes on 127.0.0.1, one request per connection, needs little
//! of HTTP. What it does take, it bounds: the request head is at most
//! [`MAX_HEAD_BYTES`] in at most [`MAX_HEADERS`] lines, bodies need a
//! `Content-Length` (no chunked encoding), and every connection closes after
//! its response.
//!
//! Errors never repeat what the client sent: a request's body may be patient
//! text, and its head is nothing a client needs echoed back.

use std::io::{BufRead, Read, Write};

use zeroize::Zeroizing;

/// Longest request line plus headers.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Most header lines in one request.
pub const MAX_HEADERS: usize = 64;

/// A request's line and headers, read before its body.
#[derive(Clone, PartialEq, Eq)]
pub struct Head {
    pub method: String,
    /// The path without its query string.
    pub path: String,
    headers: Vec<(String, String)>,
}

/// Header names only: values hold the API key, and a `{:?}` in a log line
/// must never write it.
impl std::fmt::Debug for Head {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Head")
            .field("method", &self.method)
            .field("path", &self.path)
            .field(
                "headers",
                &self.headers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Why a request could not be served, as the status, message and headers
/// sent back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    pub status: u16,
    pub message: String,
    pub headers: Vec<(&'static str, String)>,
}

impl HttpError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    /// Adds a header the client needs to act on the error (`Allow`,
    /// `Retry-After`, `WWW-Authenticate`).
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

impl Head {
    /// The value of header `name` (case-insensitive); the first if repeated.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body's length: 0 without a `Content-Length`. A chunked body is
    /// refused, as are lengths that disagree or are not a number.
    pub fn content_length(&self) -> Result<usize, HttpError> {
        if self.header("transfer-encoding").is_some() {
            return Err(HttpError::new(
                501,
                "chunked request bodies are not accepted: send the body with a Content-Length",
            ));
        }
        let mut lengths = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.as_str());
        let Some(first) = lengths.next() else {
            return Ok(0);
        };
        if lengths.any(|other| other != first) {
            return Err(HttpError::new(
                400,
                "the request has two different Content-Length headers",
            ));
        }
        if first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit()) {
            return Err(HttpError::new(400, "Content-Length is not a number"));
        }
        first.parse().map_err(|_| {
            HttpError::new(413, "Content-Length is larger than any body this API takes")
        })
    }

    /// Whether the client waits for "100 Continue" before sending its body.
    pub fn expects_continue(&self) -> bool {
        self.header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    }
}

/// Reads one request head. `Ok(None)` when the connection closed before
/// sending anything (a health checker that only connects).
pub fn read_head(reader: &mut impl BufRead) -> Result<Option<Head>, HttpError> {
    let mut budget = MAX_HEAD_BYTES;
    let Some(request_line) = read_line(reader, &mut budget)? else {
        return Ok(None);
    };
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::new(
            400,
            "the request line is not \"METHOD /path HTTP/1.1\"",
        ));
    };
    if method.is_empty() || !method.bytes().all(is_token_byte) {
        return Err(HttpError::new(
            400,
            "the request method is not a valid token",
        ));
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(HttpError::new(505, "only HTTP/1.1 and HTTP/1.0 are served"));
    }
    if !target.starts_with('/') {
        return Err(HttpError::new(
            400,
            "the request target must be a path such as /v1/classify",
        ));
    }
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    let mut headers = Vec::new();
    loop {
        let Some(line) = read_line(reader, &mut budget)? else {
            return Err(HttpError::new(
                400,
                "the connection closed inside the request head",
            ));
        };
        if line.is_empty() {
            break;
        }
        if headers.len() == MAX_HEADERS {
            return Err(HttpError::new(
                431,
                format!("more than {MAX_HEADERS} header lines"),
            ));
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(HttpError::new(400, "a header line has no ':'"));
        };
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            // Also refuses folded lines, which start with white space.
            return Err(HttpError::new(400, "a header name is not a valid token"));
        }
        headers.push((
            name.to_string(),
            value.trim_matches([' ', '\t']).to_string(),
        ));
    }
    // RFC 9112 3.2: exactly one Host in HTTP/1.1, at most one in 1.0.
    let hosts = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("host"))
        .count();
    if hosts > 1 || (hosts == 0 && version == "HTTP/1.1") {
        return Err(HttpError::new(
            400,
            "an HTTP/1.1 request needs exactly one Host header",
        ));
    }
    Ok(Some(Head {
        method: method.to_string(),
        path: path.to_string(),
        headers,
    }))
}

/// A buffered reader whose buffer is wiped when it is dropped. The buffer
/// holds the start of every request body, which is patient text, and the
/// standard library's `BufReader` leaves what it held in freed memory.
pub struct WipingReader<R> {
    inner: R,
    buffer: Zeroizing<Vec<u8>>,
    /// `buffer[start..end]` is read from `inner` and not yet consumed.
    start: usize,
    end: usize,
}

impl<R: Read> WipingReader<R> {
    /// Buffers 8 KiB at a time, as `BufReader` does.
    pub fn new(inner: R) -> Self {
        Self::with_capacity(8 * 1024, inner)
    }

    pub fn with_capacity(capacity: usize, inner: R) -> Self {
        Self {
            inner,
            buffer: Zeroizing::new(vec![0; capacity.max(1)]),
            start: 0,
            end: 0,
        }
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Reads and drops up to `most` bytes, through the wiped buffer only
    /// (`std::io::copy` would pass them through a stack buffer of its own).
    /// Stops at the end of input or at the first error.
    pub fn discard(&mut self, mut most: usize) {
        while most > 0 {
            let Ok(available) = self.fill_buf() else {
                return;
            };
            if available.is_empty() {
                return;
            }
            let taken = available.len().min(most);
            self.consume(taken);
            most -= taken;
        }
    }
}

impl<R: Read> Read for WipingReader<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        // A read at least as large as the buffer goes straight to the
        // caller's (wiped) memory when nothing is buffered, as in `BufReader`.
        if self.start == self.end && out.len() >= self.buffer.len() {
            return self.inner.read(out);
        }
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: Read> BufRead for WipingReader<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        if self.start == self.end {
            self.end = self.inner.read(&mut self.buffer)?;
            self.start = 0;
        }
        Ok(&self.buffer[self.start..self.end])
    }

    fn consume(&mut self, amount: usize) {
        self.start = (self.start + amount).min(self.end);
    }
}

/// Reads exactly `length` body bytes, into memory wiped when dropped: also
/// on a body cut short, whose first part is still patient text.
pub fn read_body(reader: &mut impl Read, length: usize) -> Result<Zeroizing<Vec<u8>>, HttpError> {
    let mut body = Zeroizing::new(vec![0; length]);
    reader.read_exact(&mut body).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => {
            HttpError::new(400, "the body is shorter than its Content-Length")
        }
        _ => read_failed(&e),
    })?;
    Ok(body)
}

/// One line of the head without its line end, charged to `budget`; `None`
/// at a clean end of input before the line starts.
fn read_line(reader: &mut impl BufRead, budget: &mut usize) -> Result<Option<String>, HttpError> {
    let mut line = Vec::new();
    // One byte over the budget tells a line that is too long from one that fits.
    let read = reader
        .take(*budget as u64 + 1)
        .read_until(b'\n', &mut line)
        .map_err(|e| read_failed(&e))?;
    if read == 0 {
        return Ok(None);
    }
    if read > *budget {
        return Err(HttpError::new(
            431,
            format!("the request head is over {MAX_HEAD_BYTES} bytes"),
        ));
    }
    *budget -= read;
    if line.pop() != Some(b'\n') {
        return Err(HttpError::new(
            400,
            "the connection closed inside the request head",
        ));
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line)
        .map(Some)
        .map_err(|_| HttpError::new(400, "the request head is not UTF-8 text"))
}

fn read_failed(e: &std::io::Error) -> HttpError {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            HttpError::new(408, "the request did not arrive in time")
        }
        _ => HttpError::new(400, "the request could not be read"),
    }
}

/// RFC 9110 token characters, for methods and header names.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A response to write: status, headers and body.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// A JSON response.
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        Self {
            status,
            headers: vec![("Content-Type", "application/json".into())],
            body: value.to_string().into_bytes(),
        }
    }

    /// `{"error": {"status": …, "message": …}}`, with the error's headers.
    pub fn error(error: &HttpError) -> Self {
        let mut response = Self::json(
            error.status,
            &serde_json::json!({"error": {"status": error.status, "message": error.message}}),
        );
        response.headers.extend(error.headers.iter().cloned());
        response
    }

    /// A plain-text response with `content_type`.
    pub fn text(status: u16, content_type: &str, body: String) -> Self {
        Self {
            status,
            headers: vec![("Content-Type", content_type.to_string())],
            body: body.into_bytes(),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Writes the response; the connection closes after it.
    pub fn write_to(&self, out: &mut impl Write) -> std::io::Result<()> {
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!(
            "Content-Length: {}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n",
            self.body.len()
        ));
        out.write_all(head.as_bytes())?;
        out.write_all(&self.body)?;
        out.flush()
    }
}

/// The reason phrase of each status this API sends.
fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        422 => "Unprocessable Content",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Result<Option<Head>, HttpError> {
        read_head(&mut raw.as_bytes())
    }

    /// Gives at most `step` bytes per read, as a socket gives what arrived.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = self.step.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn the_wiping_reader_reads_what_a_bufreader_reads() {
        let body: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut request = b"POST /v1/classify HTTP/1.1\r\nHost: 127.0.0.1:1\r\n".to_vec();
        request.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        request.extend_from_slice(&body);
        request.extend_from_slice(b"TAIL");
        for (step, capacity) in [(1, 8), (3, 8192), (700, 64), (100_000, 8192), (8192, 8192)] {
            let mut reader = WipingReader::with_capacity(
                capacity,
                Trickle {
                    data: &request,
                    step,
                },
            );
            let parsed = read_head(&mut reader).unwrap().unwrap();
            assert_eq!(parsed.content_length().unwrap(), body.len(), "step {step}");
            // A small read, then the rest of the body in one large read.
            let mut first = [0; 5];
            reader.read_exact(&mut first).unwrap();
            let rest = read_body(&mut reader, body.len() - 5).unwrap();
            assert_eq!(
                [&first[..], &rest[..]].concat(),
                body,
                "step {step}, capacity {capacity}"
            );
            let mut tail = Vec::new();
            reader.read_to_end(&mut tail).unwrap();
            assert_eq!(tail, b"TAIL");
        }
    }

    #[test]
    fn discarding_stops_at_the_count_or_the_end_of_input() {
        let data: Vec<u8> = (0..=255).collect();
        let mut reader = WipingReader::with_capacity(
            16,
            Trickle {
                data: &data,
                step: 7,
            },
        );
        reader.discard(100);
        let mut next = [0; 1];
        reader.read_exact(&mut next).unwrap();
        assert_eq!(next[0], 100);
        reader.discard(10_000);
        assert_eq!(reader.read(&mut next).unwrap(), 0);
    }

    fn status(raw: &str) -> u16 {
        head(raw).unwrap_err().status
    }

    #[test]
    fn a_request_head_is_read_with_its_headers_and_without_the_query() {
        let raw = "POST /v1/classify?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\
                   authorization:  Bearer abc \r\nContent-Length: 12\r\n\r\n{\"text\":\"a\"}";
        let mut reader = raw.as_bytes();
        let h = read_head(&mut reader).unwrap().unwrap();
        assert_eq!(
            (h.method.as_str(), h.path.as_str()),
            ("POST", "/v1/classify")
        );
        assert_eq!(h.header("AUTHORIZATION"), Some("Bearer abc"));
        assert_eq!(h.content_length(), Ok(12));
        assert!(!h.expects_continue());
        assert_eq!(
            read_body(&mut reader, 12).unwrap().as_slice(),
            b"{\"text\":\"a\"}"
        );
        // Bare line feeds are taken too, as most servers do.
        let lf = head("GET /health HTTP/1.0\nExpect: 100-continue\n\n")
            .unwrap()
            .unwrap();
        assert_eq!(lf.path, "/health");
        assert!(lf.expects_continue());
        assert_eq!(lf.content_length(), Ok(0));
        assert_eq!(head("").unwrap(), None);
    }

    #[test]
    fn malformed_or_oversized_heads_get_their_own_status() {
        assert_eq!(status("GET /health\r\n\r\n"), 400);
        assert_eq!(status("GET  /health HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status("GET /health HTTP/2\r\n\r\n"), 505);
        assert_eq!(status("GET http://example.org/ HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status("G(T /health HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(
            status("GET /health HTTP/1.1\r\nHost 127.0.0.1\r\n\r\n"),
            400
        );
        assert_eq!(
            status("GET /health HTTP/1.1\r\nA: b\r\n folded\r\n\r\n"),
            400
        );
        assert_eq!(status("GET /health HTTP/1.1\r\nA: b\r\n"), 400);
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_HEAD_BYTES));
        assert_eq!(status(&long), 431);
        assert_eq!(status("GET /health HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(
            status("GET /health HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"),
            400
        );
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: y\r\n")).collect();
        assert_eq!(status(&format!("GET / HTTP/1.1\r\n{many}\r\n")), 431);
        let not_utf8 = b"GET /\xff HTTP/1.1\r\n\r\n";
        assert_eq!(read_head(&mut &not_utf8[..]).unwrap_err().status, 400);
    }

    /// A short fuzz run on every build (the long one is `make fuzz`):
    /// seed requests with random bytes flipped, inserted and removed must
    /// never make the reader panic, and a head it accepts must have a path.
    #[test]
    fn mangled_requests_never_panic_the_reader() {
        let seeds: [&[u8]; 3] = [
            b"POST /v1/classify HTTP/1.1\r\nHost: 127.0.0.1:8765\r\nContent-Length: 16\r\n\r\n{\"text\": \"copd\"}",
            b"GET /metrics HTTP/1.0\nExpect: 100-continue\nTransfer-Encoding: chunked\n\n",
            "GET /\u{e9}t\u{e9} HTTP/1.1\r\nHost: [::1]\r\n\r\n".as_bytes(),
        ];
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..20_000 {
            let mut bytes = seeds[round % seeds.len()].to_vec();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % (bytes.len() + 1);
                match next() % 3 {
                    0 if at < bytes.len() => bytes[at] = next() as u8,
                    1 => bytes.insert(
                        at,
                        [b'\r', b'\n', b':', b' ', next() as u8][next() as usize % 5],
                    ),
                    _ if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ => {}
                }
            }
            let mut reader = &bytes[..];
            if let Ok(Some(head)) = read_head(&mut reader) {
                assert!(head.path.starts_with('/'));
                let _ = head.expects_continue();
                if let Ok(length) = head.content_length() {
                    let _ = read_body(&mut reader, length.min(1 << 16));
                }
            }
        }
    }

    #[test]
    fn debug_output_never_shows_a_header_value() {
        let raw = "POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer mtk_secret\r\n\r\n";
        let shown = format!("{:?}", head(raw).unwrap().unwrap());
        assert!(
            shown.contains("Authorization") && !shown.contains("mtk_secret"),
            "{shown}"
        );
    }

    #[test]
    fn body_lengths_are_checked() {
        let with = |headers: &str| {
            head(&format!(
                "POST / HTTP/1.1\r\nHost: localhost\r\n{headers}\r\n"
            ))
            .unwrap()
            .unwrap()
            .content_length()
        };
        assert_eq!(with("Content-Length: 5\r\nContent-Length: 5\r\n"), Ok(5));
        assert_eq!(
            with("Content-Length: 5\r\nContent-Length: 6\r\n")
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(with("Content-Length: -1\r\n").unwrap_err().status, 400);
        assert_eq!(with("Content-Length: \r\n").unwrap_err().status, 400);
        assert_eq!(
            with("Content-Length: 99999999999999999999999\r\n")
                .unwrap_err()
                .status,
            413
        );
        assert_eq!(
            with("Transfer-Encoding: chunked\r\n").unwrap_err().status,
            501
        );
        let short = read_body(&mut &b"abc"[..], 5).unwrap_err();
        assert_eq!(short.status, 400);
    }

    #[test]
    fn a_response_has_its_length_and_closes_the_connection() {
        let mut out = Vec::new();
        Response::error(&HttpError::new(404, "no such endpoint").with_header("Allow", "GET"))
            .write_to(&mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 404 Not Found\r\n"), "{head}");
        assert!(head.contains("\r\nAllow: GET\r\n") && head.contains("\r\nConnection: close"));
        assert!(head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["status"], 404);
        assert_eq!(v["error"]["message"], "no such endpoint");
    }
}
