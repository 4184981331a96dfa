//! The project's own benchmark: latency by input length, batch throughput,
//! pack load time and peak memory, measured on the real encoder.
//!
//! Figures are printed, never asserted: speed targets are read off this
//! output, not enforced by timed tests.

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::text::tokenize::Window;
use crate::{inference::classifier::Classifier, Result};

/// Input lengths (tokens, special tokens included) measured at batch 1.
pub const LENGTHS: [usize; 4] = [32, 128, 256, 512];

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Median latency at batch 1, by token count.
    pub p50_ms: std::collections::BTreeMap<String, f64>,
    /// 95th-percentile latency at batch 1, by token count.
    pub p95_ms: std::collections::BTreeMap<String, f64>,
    /// Sequences per second, batches of 32 windows of 128 tokens.
    pub batch32x128_per_s: f64,
    /// Median time to classify a 256-token note with word evidence (the
    /// whole cost a clinician waits for: classification, then one forward
    /// and one backward pass).
    pub evidence_256_ms: f64,
    /// Opening and verifying the pack and loading its weights.
    pub load_ms: f64,
    /// Peak resident memory of this process (VmHWM), where the OS reports it.
    pub peak_rss_mb: Option<f64>,
}

/// How many timed runs to make at each length.
#[derive(Debug, Clone, Copy)]
pub struct BenchPlan {
    pub iterations: usize,
    pub batch_rounds: usize,
}

/// Loads the pack and measures it. Each length is one window of exactly that
/// many tokens, even past the pack's own window size, so the figures compare
/// directly with other engines fed the same ids.
pub fn run(models_dir: &Path, pack: &str, plan: BenchPlan) -> Result<BenchReport> {
    let started = Instant::now();
    let classifier = Classifier::load(models_dir, pack, None)?;
    let load_ms = ms(started);
    let embedder = classifier.embedder();
    let mut p50_ms = std::collections::BTreeMap::new();
    let mut p95_ms = std::collections::BTreeMap::new();
    for &len in &LENGTHS {
        let window = synthetic_window(len);
        embedder.embed_windows(std::slice::from_ref(&window))?; // warm-up
        let mut times = Vec::with_capacity(plan.iterations);
        for _ in 0..plan.iterations {
            let t = Instant::now();
            classifier.window_probabilities(std::slice::from_ref(&window))?;
            times.push(ms(t));
        }
        times.sort_by(f64::total_cmp);
        p50_ms.insert(len.to_string(), percentile(&times, 0.50));
        p95_ms.insert(len.to_string(), percentile(&times, 0.95));
    }
    let batch: Vec<Window> = (0..32).map(|i| synthetic_window_seeded(128, i)).collect();
    classifier.window_probabilities(&batch)?; // warm-up
    let t = Instant::now();
    for _ in 0..plan.batch_rounds {
        classifier.window_probabilities(&batch)?;
    }
    let batch32x128_per_s = (32 * plan.batch_rounds) as f64 / t.elapsed().as_secs_f64();
    let note = note_of_tokens(&classifier, 256)?;
    classifier.classify_with_evidence(&note)?; // warm-up
    let mut times = Vec::with_capacity(plan.batch_rounds);
    for _ in 0..plan.batch_rounds {
        let t = Instant::now();
        classifier.classify_with_evidence(&note)?;
        times.push(ms(t));
    }
    times.sort_by(f64::total_cmp);
    Ok(BenchReport {
        p50_ms,
        p95_ms,
        batch32x128_per_s,
        evidence_256_ms: percentile(&times, 0.5),
        load_ms,
        peak_rss_mb: peak_rss_mb(),
    })
}

pub(crate) fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

/// Nearest-rank percentile of sorted samples.
pub(crate) fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn synthetic_window(len: usize) -> Window {
    synthetic_window_seeded(len, 0)
}

/// `[CLS]`, `len - 2` ordinary WordPiece ids, `[SEP]` (BERT uncased ids):
/// the same ids on every run and in the comparison script.
fn synthetic_window_seeded(len: usize, seed: u32) -> Window {
    let mut ids = Vec::with_capacity(len);
    ids.push(101);
    ids.extend(
        (0..len.saturating_sub(2) as u32).map(|i| 2000 + (i * 7919 + seed * 104_729) % 20_000),
    );
    ids.push(102);
    ids
}

/// A made-up clinical note, repeated to length; no patient's text.
const NOTE: &str = "67-year-old man with hypertension and type 2 diabetes presents with \
    chest pain radiating to the left arm, shortness of breath and diaphoresis. Troponin \
    elevated, ECG with ST depression in the lateral leads; started on aspirin and heparin. ";

/// The note cut so that it is exactly `tokens` tokens with `[CLS]` and `[SEP]`.
fn note_of_tokens(classifier: &Classifier, tokens: usize) -> Result<String> {
    let body = tokens.saturating_sub(2).max(1);
    let long = NOTE.repeat(body / 20 + 1);
    let tokenized = classifier.embedder().tokenize(&long)?;
    let end = tokenized
        .char_offsets
        .get(body - 1)
        .map_or(usize::MAX, |&(_, end)| end);
    Ok(long.chars().take(end).collect())
}

/// Peak resident set size in MB from `/proc/self/status` (Linux only).
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 10.0);
        assert_eq!(percentile(&v, 0.95), 19.0);
        assert_eq!(percentile(&[3.0], 0.95), 3.0);
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn synthetic_windows_have_the_asked_length_and_special_tokens() {
        for len in LENGTHS {
            let w = synthetic_window(len);
            assert_eq!(w.len(), len);
            assert_eq!((w[0], w[len - 1]), (101, 102));
        }
        assert_ne!(
            synthetic_window_seeded(128, 1),
            synthetic_window_seeded(128, 2)
        );
    }
}
