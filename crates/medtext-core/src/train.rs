//! Training heads on frozen encoder vectors.
//!
//! The head trained here is a nearest-centroid (Rocchio) classifier: each
//! label's weight row is the normalised mean of its training vectors, so the
//! logit is the cosine similarity to each label's centre. It needs no
//! optimiser, is deterministic, and its one free parameter, the softmax
//! temperature, is fitted on a validation split so the probabilities are
//! calibrated.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::pack::{
    encoder_hashes, sha256_file, Architecture, EncoderSpec, HeadKind, HeadSpec, Label, Manifest,
    Pooling, ShippedEvaluation, MANIFEST_FORMAT,
};
use crate::{Error, Result};

/// Example indices of a stratified train / validation / test split.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    pub train: Vec<usize>,
    pub validation: Vec<usize>,
    pub test: Vec<usize>,
}

/// Splits each class separately (so every split keeps the class balance),
/// shuffled with `seed`: the same inputs and seed always give the same split.
pub fn stratified_split(labels: &[usize], validation: f64, test: f64, seed: u64) -> Split {
    let mut by_class: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, &l) in labels.iter().enumerate() {
        by_class.entry(l).or_default().push(i);
    }
    let mut classes: Vec<_> = by_class.into_iter().collect();
    classes.sort_unstable_by_key(|(c, _)| *c);
    let mut rng = SplitMix64(seed);
    let mut split = Split {
        train: vec![],
        validation: vec![],
        test: vec![],
    };
    for (_, mut members) in classes {
        for i in (1..members.len()).rev() {
            let j = (rng.next() % (i as u64 + 1)) as usize;
            members.swap(i, j);
        }
        let n = members.len() as f64;
        let n_test = (n * test).round() as usize;
        let n_val = (n * validation).round() as usize;
        split.test.extend_from_slice(&members[..n_test]);
        split
            .validation
            .extend_from_slice(&members[n_test..n_test + n_val]);
        split.train.extend_from_slice(&members[n_test + n_val..]);
    }
    for part in [&mut split.train, &mut split.validation, &mut split.test] {
        part.sort_unstable();
    }
    split
}

/// The per-label centroid rows `[labels][hidden]`, each of unit length.
pub fn centroids(
    vectors: &[Vec<f32>],
    labels: &[usize],
    rows: &[usize],
    n_labels: usize,
) -> Result<Vec<Vec<f32>>> {
    let hidden = vectors.first().map(Vec::len).unwrap_or(0);
    let mut sums = vec![vec![0f32; hidden]; n_labels];
    let mut counts = vec![0usize; n_labels];
    for &r in rows {
        counts[labels[r]] += 1;
        for (s, v) in sums[labels[r]].iter_mut().zip(&vectors[r]) {
            *s += v;
        }
    }
    if let Some(empty) = counts.iter().position(|&c| c == 0) {
        return Err(Error::Training {
            problem: format!("label #{empty} has no training examples"),
        });
    }
    Ok(sums
        .into_iter()
        .map(|s| {
            let norm = s.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            s.into_iter().map(|v| v / norm).collect()
        })
        .collect())
}

/// Softmax of `logits / temperature`.
pub fn softmax(logits: &[f32], temperature: f64) -> Vec<f32> {
    let scaled: Vec<f64> = logits.iter().map(|&l| f64::from(l) / temperature).collect();
    let max = scaled.iter().copied().fold(f64::MIN, f64::max);
    let exps: Vec<f64> = scaled.iter().map(|s| (s - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|e| (e / sum) as f32).collect()
}

/// Cosine logits of one vector against the centroid rows.
pub fn logits(weights: &[Vec<f32>], vector: &[f32]) -> Vec<f32> {
    weights
        .iter()
        .map(|w| w.iter().zip(vector).map(|(a, b)| a * b).sum())
        .collect()
}

/// The temperature that minimises the negative log-likelihood of `truth`
/// under `softmax(logits / T)`, searched on a fine logarithmic grid (the NLL
/// is smooth and one-dimensional, so a grid is exact enough and never diverges).
pub fn fit_temperature(logits: &[Vec<f32>], truth: &[usize]) -> f64 {
    let nll = |t: f64| -> f64 {
        logits
            .iter()
            .zip(truth)
            .map(|(l, &y)| -f64::from(softmax(l, t)[y].max(1e-12)).ln())
            .sum()
    };
    (0..=400)
        .map(|i| 10f64.powf(-3.0 + 3.5 * f64::from(i) / 400.0)) // 0.001 ..= ~3.16
        .map(|t| (t, nll(t)))
        .fold((1.0, f64::INFINITY), |best, cur| {
            if cur.1 < best.1 {
                cur
            } else {
                best
            }
        })
        .0
}

/// Everything needed to write a pack around a trained linear head.
pub struct PackDraft<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub task: &'a str,
    pub license: &'a str,
    pub attribution: &'a str,
    pub encoder_dir: &'a Path,
    pub architecture: Architecture,
    pub max_tokens: usize,
    pub head_name: &'a str,
    pub labels: Vec<Label>,
    pub weights: Vec<Vec<f32>>,
    pub temperature: f64,
    pub abstain_below: f64,
    pub evaluation: Option<ShippedEvaluation>,
}

/// Writes `head.safetensors` and `manifest.json` into `out_dir`, with the
/// encoder referenced by a path relative to the pack and every hash filled in.
pub fn write_pack(out_dir: &Path, draft: PackDraft<'_>) -> Result<PathBuf> {
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let head_file = format!("{}.safetensors", draft.head_name);
    let head_path = out_dir.join(&head_file);
    let rows = draft.weights.len();
    let hidden = draft.weights.first().map(Vec::len).unwrap_or(0);
    let flat: Vec<f32> = draft.weights.into_iter().flatten().collect();
    let mut tensors = HashMap::new();
    tensors.insert(
        "weight".to_string(),
        Tensor::from_vec(flat, (rows, hidden), &Device::Cpu)?,
    );
    tensors.insert(
        "bias".to_string(),
        Tensor::zeros(rows, candle_core::DType::F32, &Device::Cpu)?,
    );
    candle_core::safetensors::save(&tensors, &head_path)?;

    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        name: draft.name.into(),
        version: draft.version.into(),
        task: draft.task.into(),
        license: draft.license.into(),
        attribution: draft.attribution.into(),
        encoder: EncoderSpec {
            path: relative_path(out_dir, draft.encoder_dir)?,
            architecture: draft.architecture,
            pooling: Pooling::Mean,
            max_tokens: draft.max_tokens,
            sha256: encoder_hashes(draft.encoder_dir)?,
        },
        heads: vec![HeadSpec {
            name: draft.head_name.into(),
            kind: HeadKind::Linear,
            sha256: sha256_file(&head_path)?,
            file: PathBuf::from(head_file),
            temperature: draft.temperature,
            abstain_below: draft.abstain_below,
            labels: draft.labels,
            evaluation: draft.evaluation,
        }],
    };
    manifest.write(out_dir)
}

/// `to` expressed relative to the directory `from` (both must exist).
fn relative_path(from: &Path, to: &Path) -> Result<PathBuf> {
    let from = from.canonicalize().map_err(|e| Error::io(from, e))?;
    let to = to.canonicalize().map_err(|e| Error::io(to, e))?;
    let common = from
        .components()
        .zip(to.components())
        .take_while(|(a, b)| a == b)
        .count();
    let mut rel = PathBuf::new();
    for _ in from.components().skip(common) {
        rel.push("..");
    }
    for part in to.components().skip(common) {
        rel.push(part);
    }
    Ok(rel)
}

/// A small, fast, seedable generator (SplitMix64): enough for shuffling, and
/// the same sequence on every platform.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::tests::write_tiny_pack;
    use crate::pack::Pack;
    use crate::Classifier;

    #[test]
    fn split_is_stratified_disjoint_complete_and_seeded() {
        let labels: Vec<usize> = (0..100).map(|i| usize::from(i % 4 == 0)).collect(); // 25 of class 1
        let s = stratified_split(&labels, 0.1, 0.2, 7);
        let mut all: Vec<usize> = s
            .train
            .iter()
            .chain(&s.validation)
            .chain(&s.test)
            .copied()
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert_eq!(s.test.iter().filter(|&&i| labels[i] == 1).count(), 5);
        assert_eq!(s.test.len(), 20);
        assert_eq!(s, stratified_split(&labels, 0.1, 0.2, 7));
        assert_ne!(s.test, stratified_split(&labels, 0.1, 0.2, 8).test);
    }

    #[test]
    fn centroids_are_unit_means_and_missing_labels_are_refused() {
        let v = vec![vec![1.0, 0.0], vec![0.0, 1.0], vec![1.0, 1.0]];
        let c = centroids(&v, &[0, 0, 1], &[0, 1, 2], 2).unwrap();
        let s = 0.5f32.sqrt();
        assert!((c[0][0] - s).abs() < 1e-6 && (c[0][1] - s).abs() < 1e-6);
        assert!(centroids(&v, &[0, 0, 0], &[0, 1, 2], 2).is_err());
    }

    #[test]
    fn fitted_temperature_sharpens_confident_correct_logits() {
        // Logits that are always right: the best temperature is small (sharp).
        let logits = vec![vec![0.9, 0.1]; 20];
        let truth = vec![0; 20];
        assert!(fit_temperature(&logits, &truth) < 0.05);
        // Logits right only half the time: a flat distribution (large T) is best.
        let mixed: Vec<usize> = (0..20).map(|i| i % 2).collect();
        assert!(fit_temperature(&logits, &mixed) > 1.0);
    }

    #[test]
    fn a_written_pack_opens_and_classifies() {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_pack(dir.path());
        let encoder_dir = dir.path().join("encoders/tiny");
        let labels: Vec<Label> = ["a", "b"]
            .iter()
            .map(|l| Label {
                id: l.to_string(),
                display: l.to_uppercase(),
            })
            .collect();
        let out = dir.path().join("trained");
        write_pack(
            &out,
            PackDraft {
                name: "trained",
                version: "0.1.0",
                task: "test",
                license: "Apache-2.0",
                attribution: "test",
                encoder_dir: &encoder_dir,
                architecture: Architecture::Bert,
                max_tokens: 10,
                head_name: "category",
                labels,
                weights: vec![vec![1.0; 8], vec![-1.0; 8]],
                temperature: 0.5,
                abstain_below: 0.6,
                evaluation: None,
            },
        )
        .unwrap();
        let pack = Pack::open(&out).unwrap();
        assert_eq!(
            pack.manifest.encoder.path,
            PathBuf::from("../encoders/tiny")
        );
        let c = Classifier::from_pack(pack, None).unwrap();
        let r = c.classify("fever and cough").unwrap();
        assert_eq!(r.probabilities.len(), 2);
    }
}
