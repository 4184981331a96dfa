//! What `GET /metrics` reports, in the Prometheus text format: counts and
//! timings only. Labels come from fixed sets (the routes, the status codes
//! this API sends), so no request can add a series or put its own words in
//! one.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Upper bounds of the classify latency histogram, in seconds.
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The routes requests are counted under; anything else is "other".
pub const ROUTES: &[&str] = &["/health", "/ready", "/metrics", "/v1/classify"];

/// The route label for `path`.
pub fn route_label(path: &str) -> &'static str {
    ROUTES
        .iter()
        .copied()
        .find(|r| *r == path)
        .unwrap_or("other")
}

#[derive(Default)]
struct Histogram {
    /// Count at or under each bound of [`BUCKETS`].
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

pub struct Metrics {
    started: SystemTime,
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    texts: AtomicU64,
    auth_failures: AtomicU64,
    classify_seconds: Mutex<Histogram>,
}

/// State that is read when the metrics are, not counted.
pub struct Gauges {
    pub ready: bool,
    pub open_connections: usize,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            started: SystemTime::now(),
            requests: Mutex::default(),
            texts: AtomicU64::default(),
            auth_failures: AtomicU64::default(),
            classify_seconds: Mutex::new(Histogram {
                counts: vec![0; BUCKETS.len()],
                ..Histogram::default()
            }),
        }
    }
}

impl Metrics {
    /// Counts one answered request.
    pub fn request(&self, route: &'static str, status: u16) {
        if let Ok(mut requests) = self.requests.lock() {
            *requests.entry((route, status)).or_default() += 1;
        }
    }

    /// Counts a successful classify request of `texts` texts that took `took`.
    pub fn classified(&self, texts: usize, took: Duration) {
        self.texts.fetch_add(texts as u64, Ordering::Relaxed);
        if let Ok(mut h) = self.classify_seconds.lock() {
            let seconds = took.as_secs_f64();
            for (count, bound) in h.counts.iter_mut().zip(BUCKETS) {
                if seconds <= *bound {
                    *count += 1;
                }
            }
            h.sum += seconds;
            h.count += 1;
        }
    }

    /// Counts a request refused for a missing or wrong key.
    pub fn auth_failure(&self) {
        self.auth_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Everything, in the Prometheus text exposition format 0.0.4.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        family(
            "medtext_http_requests_total",
            "counter",
            "HTTP requests answered, by route and status code.",
        );
        if let Ok(requests) = self.requests.lock() {
            for ((route, status), n) in requests.iter() {
                let _ = writeln!(
                    out,
                    "medtext_http_requests_total{{route=\"{route}\",code=\"{status}\"}} {n}"
                );
            }
        }
        let mut single = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        single(
            "medtext_classified_texts_total",
            "counter",
            "Texts classified through POST /v1/classify.",
            self.texts.load(Ordering::Relaxed).to_string(),
        );
        single(
            "medtext_auth_failures_total",
            "counter",
            "Requests refused for a missing, unknown or revoked API key.",
            self.auth_failures.load(Ordering::Relaxed).to_string(),
        );
        single(
            "medtext_model_ready",
            "gauge",
            "1 when a model pack is loaded and classifying.",
            u8::from(gauges.ready).to_string(),
        );
        single(
            "medtext_open_connections",
            "gauge",
            "Connections being served now.",
            gauges.open_connections.to_string(),
        );
        let started = self
            .started
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        single(
            "medtext_process_start_time_seconds",
            "gauge",
            "When this server started, in seconds since the Unix epoch.",
            format!("{started:.3}"),
        );
        let name = "medtext_classify_request_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time to answer a successful POST /v1/classify.\n# TYPE {name} histogram"
        );
        if let Ok(h) = self.classify_seconds.lock() {
            for (bound, count) in BUCKETS.iter().zip(&h.counts) {
                let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
            }
            let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "{name}_sum {}", h.sum);
            let _ = writeln!(out, "{name}_count {}", h.count);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
            .parse()
            .unwrap()
    }

    #[test]
    fn counts_and_the_histogram_add_up() {
        let m = Metrics::default();
        m.request("/v1/classify", 200);
        m.request("/v1/classify", 200);
        m.request(route_label("/v1/other"), 404);
        m.auth_failure();
        m.classified(3, Duration::from_millis(30));
        m.classified(1, Duration::from_secs(20));
        let text = m.render(&Gauges {
            ready: true,
            open_connections: 2,
        });
        let requests = "medtext_http_requests_total";
        assert_eq!(
            value(
                &text,
                &format!("{requests}{{route=\"/v1/classify\",code=\"200\"}}")
            ),
            2.0
        );
        assert_eq!(
            value(
                &text,
                &format!("{requests}{{route=\"other\",code=\"404\"}}")
            ),
            1.0
        );
        assert_eq!(value(&text, "medtext_classified_texts_total"), 4.0);
        assert_eq!(value(&text, "medtext_auth_failures_total"), 1.0);
        assert_eq!(value(&text, "medtext_model_ready"), 1.0);
        assert_eq!(value(&text, "medtext_open_connections"), 2.0);
        let h = "medtext_classify_request_duration_seconds";
        assert_eq!(value(&text, &format!("{h}_bucket{{le=\"0.025\"}}")), 0.0);
        assert_eq!(value(&text, &format!("{h}_bucket{{le=\"0.05\"}}")), 1.0);
        assert_eq!(value(&text, &format!("{h}_bucket{{le=\"10\"}}")), 1.0);
        assert_eq!(value(&text, &format!("{h}_bucket{{le=\"+Inf\"}}")), 2.0);
        assert_eq!(value(&text, &format!("{h}_count")), 2.0);
        assert!((value(&text, &format!("{h}_sum")) - 20.03).abs() < 1e-9);
        // Every series belongs to a family declared with HELP and TYPE.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = name
                .strip_suffix("_bucket")
                .or(name.strip_suffix("_sum"))
                .or(name.strip_suffix("_count"))
                .unwrap_or(name);
            assert!(text.contains(&format!("# TYPE {family} ")), "{line}");
        }
    }
}
