//! `medtext bench-history`: how fast the encrypted history saves, searches
//! and opens at a realistic size, on this machine. Figures are printed, never
//! asserted: the targets (search p95 under 50 ms and opening under 300 ms
//! with 100,000 records) are checked by reading them.

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::bench::inference::{ms, percentile};
use crate::history::keychain::DatabaseKey;
use crate::history::store::{FeedbackFilter, HistoryQuery, HistoryStore, DATABASE_FILE};
use crate::{inference::classifier::Classification, inference::classifier::LabelScore, Result};

#[derive(Debug, Clone, Serialize)]
pub struct HistoryBenchReport {
    pub records: usize,
    /// One record per transaction, as the app saves a classification.
    pub insert_single_per_s: f64,
    /// 1,000 records per transaction, as a batch run saves them.
    pub insert_batch_per_s: f64,
    /// A page of 50 (with the total count) for word, label and combined queries.
    pub search_p50_ms: f64,
    pub search_p95_ms: f64,
    pub open_ms: f64,
    pub file_mb: f64,
}

/// Words for made-up notes; no patient's text.
const WORDS: &[&str] = &[
    "patient",
    "presents",
    "with",
    "chest",
    "pain",
    "dyspnoea",
    "fever",
    "cough",
    "troponin",
    "raised",
    "ecg",
    "st",
    "elevation",
    "history",
    "of",
    "hypertension",
    "diabetes",
    "smoker",
    "pneumonia",
    "consolidation",
    "right",
    "lower",
    "lobe",
    "antibiotics",
    "started",
    "fracture",
    "wrist",
    "fall",
    "cast",
    "headache",
    "vomiting",
    "ct",
    "head",
    "normal",
    "discharged",
    "follow",
    "up",
    "clinic",
    "weeks",
    "abdominal",
    "tenderness",
    "appendicitis",
    "surgery",
    "renal",
    "colic",
    "stone",
    "ultrasound",
    "anaemia",
    "ferritin",
    "low",
    "iron",
    "tablets",
    "stroke",
    "weakness",
    "left",
    "arm",
    "thrombolysis",
    "sepsis",
    "lactate",
    "fluids",
];
const LABELS: &[&str] = &[
    "I20-I25", "J09-J18", "S60-S69", "K35-K38", "N20-N23", "D50-D53",
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as usize
    }
}

fn note(rng: &mut Rng) -> String {
    let len = 40 + rng.next() % 80;
    (0..len)
        .map(|_| WORDS[rng.next() % WORDS.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

fn classification(rng: &mut Rng) -> Classification {
    let label = |id: &str, probability| LabelScore {
        id: id.into(),
        display: id.into(),
        probability,
    };
    let top = LABELS[rng.next() % LABELS.len()];
    Classification {
        pack: "icd10cm".into(),
        pack_version: "0.1.0".into(),
        head: "chapter".into(),
        model_sha256: "0".repeat(64),
        top: label(top, 0.8),
        probabilities: vec![label(top, 0.8), label("R00-R99", 0.2)],
        needs_review: false,
        windows: 1,
        tokens: 100,
        evidence: Vec::new(),
    }
}

/// Fills a history with `records` made-up records in `dir` and times it.
pub fn run(dir: &Path, records: usize) -> Result<HistoryBenchReport> {
    let path = dir.join(DATABASE_FILE);
    let key = DatabaseKey::from_bytes([0x42; 32]);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut store = HistoryStore::open(&path, &key)?;
    // Every commit anchored, as in the app (see crate::history::anchor): the anchor
    // file's flush is part of what a save costs.
    store.renew_history_id()?;
    store.anchor_commits()?;

    let single = records.min(500);
    let started = Instant::now();
    for _ in 0..single {
        let (text, c) = (note(&mut rng), classification(&mut rng));
        store.save(&text, &c)?;
    }
    let insert_single_per_s = single as f64 / started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut remaining = records - single;
    while remaining > 0 {
        let n = remaining.min(1000);
        let batch: Vec<(String, Classification)> = (0..n)
            .map(|_| (note(&mut rng), classification(&mut rng)))
            .collect();
        let items: Vec<(&str, &Classification)> =
            batch.iter().map(|(t, c)| (t.as_str(), c)).collect();
        store.save_many(&items)?;
        remaining -= n;
    }
    let insert_batch_per_s = (records - single) as f64 / started.elapsed().as_secs_f64().max(1e-9);

    let mut timings = Vec::new();
    for i in 0..300 {
        let word = WORDS[rng.next() % WORDS.len()];
        let other = WORDS[rng.next() % WORDS.len()];
        let label = LABELS[rng.next() % LABELS.len()].to_string();
        let query = match i % 4 {
            0 => HistoryQuery {
                text: Some(word.into()),
                ..HistoryQuery::default()
            },
            1 => HistoryQuery {
                text: Some(format!("{word} {other}")),
                ..HistoryQuery::default()
            },
            2 => HistoryQuery {
                label: Some(label),
                offset: 50 * (rng.next() % 20),
                ..HistoryQuery::default()
            },
            _ => HistoryQuery {
                text: Some(word.into()),
                label: Some(label),
                feedback: Some(FeedbackFilter::None),
                ..HistoryQuery::default()
            },
        };
        let started = Instant::now();
        store.search(&query)?;
        timings.push(ms(started));
    }
    timings.sort_by(f64::total_cmp);
    drop(store);

    let started = Instant::now();
    let reopened = HistoryStore::open(&path, &key)?;
    let open_ms = ms(started);
    drop(reopened);
    let file_mb = std::fs::metadata(&path).map_or(0.0, |m| m.len() as f64 / 1e6);
    Ok(HistoryBenchReport {
        records,
        insert_single_per_s,
        insert_batch_per_s,
        search_p50_ms: percentile(&timings, 0.5),
        search_p95_ms: percentile(&timings, 0.95),
        open_ms,
        file_mb,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_run_reports_every_figure() {
        let dir = tempfile::tempdir().unwrap();
        let r = run(dir.path(), 600).unwrap();
        assert_eq!(r.records, 600);
        for figure in [
            r.insert_single_per_s,
            r.insert_batch_per_s,
            r.search_p50_ms,
            r.search_p95_ms,
            r.open_ms,
            r.file_mb,
        ] {
            assert!(figure.is_finite() && figure > 0.0, "{r:?}");
        }
        assert!(r.search_p95_ms >= r.search_p50_ms);
        let store = HistoryStore::open(
            &dir.path().join(DATABASE_FILE),
            &DatabaseKey::from_bytes([0x42; 32]),
        )
        .unwrap();
        assert_eq!(store.count().unwrap(), 600);
    }
}
