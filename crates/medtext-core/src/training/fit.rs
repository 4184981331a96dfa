//! Training heads on frozen encoder vectors: a linear layer or a small MLP,
//! fitted with candle-nn's AdamW on class-weighted (capped) cross-entropy
//! with early stopping on a validation split, then calibrated by fitting the
//! soft-max temperature on that same split. Seeded throughout, so the same
//! data and seed give the same head.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};

use crate::inference::lexical::{LexicalHead, SparseRows};
use crate::pack::manifest::{
    encoder_hashes, is_safe_name, sha256_file, Architecture, EncoderSpec, HeadKind, HeadSpec,
    Label, LexicalSpec, Manifest, PackFile, Pooling, ShippedEvaluation, MANIFEST_FORMAT,
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
        shuffle(&mut members, &mut rng);
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

/// Like [`stratified_split`], but whole groups go to one part: `groups[i]`
/// names example `i`'s group (an ICD category with all its codes and
/// terms), so the test part measures how well the head generalises to
/// groups it never saw, not how well it remembers them. Groups are split
/// per label (a group takes the label of its first example); a label keeps
/// at least one group for training.
pub fn grouped_split(
    labels: &[usize],
    groups: &[String],
    validation: f64,
    test: f64,
    seed: u64,
) -> Split {
    let mut group_label: HashMap<&str, usize> = HashMap::new();
    let mut group_rows: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, (g, &l)) in groups.iter().zip(labels).enumerate() {
        group_label.entry(g).or_insert(l);
        group_rows.entry(g).or_default().push(i);
    }
    let mut by_label: HashMap<usize, Vec<&str>> = HashMap::new();
    for (g, l) in &group_label {
        by_label.entry(*l).or_default().push(g);
    }
    let mut labels_sorted: Vec<_> = by_label.into_iter().collect();
    labels_sorted.sort_unstable_by_key(|(l, _)| *l);
    let mut rng = SplitMix64(seed);
    let mut split = Split {
        train: vec![],
        validation: vec![],
        test: vec![],
    };
    for (_, mut members) in labels_sorted {
        members.sort_unstable();
        let mut order: Vec<usize> = (0..members.len()).collect();
        shuffle(&mut order, &mut rng);
        let n = members.len() as f64;
        let mut n_test = (n * test).round() as usize;
        let mut n_val = (n * validation).round() as usize;
        while n_test + n_val >= members.len() && n_test + n_val > 0 {
            if n_val > 0 {
                n_val -= 1;
            } else {
                n_test -= 1;
            }
        }
        for (rank, &m) in order.iter().enumerate() {
            let part = if rank < n_test {
                &mut split.test
            } else if rank < n_test + n_val {
                &mut split.validation
            } else {
                &mut split.train
            };
            part.extend_from_slice(&group_rows[members[m]]);
        }
    }
    for part in [&mut split.train, &mut split.validation, &mut split.test] {
        part.sort_unstable();
    }
    split
}

/// Softmax of `logits / temperature`.
pub fn softmax(logits: &[f32], temperature: f64) -> Vec<f32> {
    let scaled: Vec<f64> = logits.iter().map(|&l| f64::from(l) / temperature).collect();
    let max = scaled.iter().copied().fold(f64::MIN, f64::max);
    let exps: Vec<f64> = scaled.iter().map(|s| (s - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|e| (e / sum) as f32).collect()
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

/// The shape of a head to train on frozen encoder vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadShape {
    Linear,
    /// One hidden ReLU layer of this width.
    Mlp {
        hidden: usize,
    },
}

/// Optimiser settings; the defaults suit a few thousand to tens of
/// thousands of sentence vectors.
#[derive(Debug, Clone, Copy)]
pub struct Fit {
    pub shape: HeadShape,
    pub seed: u64,
    pub max_epochs: usize,
    /// Epochs without a better validation loss before training stops.
    pub patience: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub batch_size: usize,
}

impl Fit {
    pub fn new(shape: HeadShape, seed: u64) -> Self {
        Self {
            shape,
            seed,
            max_epochs: 300,
            patience: 15,
            learning_rate: match shape {
                HeadShape::Linear => 1e-2,
                HeadShape::Mlp { .. } => 5e-4,
            },
            weight_decay: 1e-4,
            batch_size: 64,
        }
    }
}

/// A trained head: its tensors under the names the pack loaders read
/// (`weight`/`bias`, or `hidden.*`/`output.*`), and how training went.
pub struct TrainedHead {
    pub kind: HeadKind,
    pub tensors: HashMap<String, Tensor>,
    /// Epochs run, and the one whose weights were kept.
    pub epochs: usize,
    pub best_epoch: usize,
    pub best_validation_loss: f64,
}

impl TrainedHead {
    /// Raw logits `[rows][labels]` for the rows `rows` of `features`.
    pub fn logits(
        &self,
        features: &(impl Features + ?Sized),
        rows: &[usize],
    ) -> Result<Vec<Vec<f32>>> {
        let mut logits = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(rows_at_once(features.width())) {
            logits.extend(self.forward(&features.batch(chunk)?)?.to_vec2::<f32>()?);
        }
        Ok(logits)
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let get = |name: &str| {
            self.tensors.get(name).ok_or_else(|| Error::Training {
                problem: format!("the trained head has no '{name}'"),
            })
        };
        Ok(match self.kind {
            HeadKind::Mlp => affine(
                &affine(x, get("hidden.weight")?, get("hidden.bias")?)?.relu()?,
                get("output.weight")?,
                get("output.bias")?,
            )?,
            _ => affine(x, get("weight")?, get("bias")?)?,
        })
    }
}

/// `x · Wᵀ + b`, PyTorch's layout, as the pack's heads compute it.
fn affine(x: &Tensor, weight: &Tensor, bias: &Tensor) -> candle_core::Result<Tensor> {
    x.matmul(&weight.t()?)?.broadcast_add(bias)
}

/// What a head is trained on: one row of inputs per example, handed over
/// as dense `[rows, width]` tensors a batch at a time.
pub trait Features {
    fn width(&self) -> usize;
    fn batch(&self, rows: &[usize]) -> Result<Tensor>;
}

/// Sentence vectors.
impl Features for [Vec<f32>] {
    fn width(&self) -> usize {
        self.first().map(Vec::len).unwrap_or(0)
    }

    fn batch(&self, rows: &[usize]) -> Result<Tensor> {
        let flat: Vec<f32> = rows.iter().flat_map(|&r| self[r].iter().copied()).collect();
        Ok(Tensor::from_vec(
            flat,
            (rows.len(), self.width()),
            &Device::Cpu,
        )?)
    }
}

/// Character n-grams ([`crate::inference::lexical`]).
impl Features for SparseRows {
    fn width(&self) -> usize {
        self.width
    }

    fn batch(&self, rows: &[usize]) -> Result<Tensor> {
        self.dense(rows)
    }
}

/// Rows scored at once outside training (validation loss, logits): as many
/// as keep a dense batch of `width` features within 64 MB, at most 512.
fn rows_at_once(width: usize) -> usize {
    ((16 << 20) / width.max(1)).clamp(1, 512)
}

/// How much more than the median label a rare label may weigh in the loss.
pub(crate) const MAX_CLASS_WEIGHT_OVER_MEDIAN: f32 = 10.0;

/// Loss weight of each label: inverse frequency (`total / (labels × count)`,
/// so a rare label counts as much as a common one), capped at
/// `MAX_CLASS_WEIGHT_OVER_MEDIAN` times the median label's weight.
///
/// Why the cap: a label with a handful of examples among thousands (ICD-10-CM
/// chapter U00-U85 has 14 training rows of 44,000) otherwise weighs about 100
/// times the median chapter, and the head then puts it on unrelated text now
/// and then. Where that label has no test rows, two such predictions in
/// 13,000 add a label with F1 0 to the macro average; and each is a
/// nonsensical suggestion to a clinician.
fn class_weights(counts: &[usize]) -> Vec<f32> {
    let total: usize = counts.iter().sum();
    let inverse: Vec<f32> = counts
        .iter()
        .map(|&c| total as f32 / (counts.len() as f32 * c.max(1) as f32))
        .collect();
    let mut sorted = inverse.clone();
    sorted.sort_by(f32::total_cmp);
    let cap = sorted.get(sorted.len() / 2).copied().unwrap_or(1.0) * MAX_CLASS_WEIGHT_OVER_MEDIAN;
    inverse.into_iter().map(|w| w.min(cap)).collect()
}

/// Trains a head with AdamW on cross-entropy weighted by capped inverse class
/// frequency (`class_weights`), in mini-batches shuffled with `fit.seed`, and
/// keeps the weights of the epoch with the lowest validation loss, stopping
/// after `fit.patience` epochs without improvement. Initialisation is seeded
/// too: the same data and seed give the same head.
pub fn train_head(
    vectors: &(impl Features + ?Sized),
    truth: &[usize],
    split: &Split,
    n_labels: usize,
    fit: Fit,
    mut progress: impl FnMut(usize, f64),
) -> Result<TrainedHead> {
    let hidden = vectors.width();
    let mut counts = vec![0usize; n_labels];
    for &r in &split.train {
        counts[truth[r]] += 1;
    }
    if let Some(empty) = counts.iter().position(|&c| c == 0) {
        return Err(Error::Training {
            problem: format!("label #{empty} has no training examples after the split"),
        });
    }
    if split.validation.is_empty() {
        return Err(Error::Training {
            problem: "the validation part is empty: add examples".into(),
        });
    }
    let class_weights = Tensor::new(class_weights(&counts), &Device::Cpu)?;

    let mut rng = SplitMix64(fit.seed ^ 0x5EED);
    let mut init = |rows: usize, cols: usize| -> Result<Var> {
        // Uniform in ±1/√fan-in, PyTorch's default for linear layers.
        let bound = 1.0 / (cols as f64).sqrt();
        let values: Vec<f32> = (0..rows * cols)
            .map(|_| ((rng.next() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * bound)
            .map(|v| v as f32)
            .collect();
        Ok(Var::from_tensor(&Tensor::from_vec(
            values,
            (rows, cols),
            &Device::Cpu,
        )?)?)
    };
    let zeros = |n: usize| -> Result<Var> { Ok(Var::zeros(n, DType::F32, &Device::Cpu)?) };
    let (kind, named): (HeadKind, Vec<(&str, Var)>) = match fit.shape {
        HeadShape::Linear => (
            HeadKind::Linear,
            vec![
                ("weight", init(n_labels, hidden)?),
                ("bias", zeros(n_labels)?),
            ],
        ),
        HeadShape::Mlp { hidden: width } => (
            HeadKind::Mlp,
            vec![
                ("hidden.weight", init(width, hidden)?),
                ("hidden.bias", zeros(width)?),
                ("output.weight", init(n_labels, width)?),
                ("output.bias", zeros(n_labels)?),
            ],
        ),
    };
    let snapshot = |named: &[(&str, Var)]| -> Result<HashMap<String, Tensor>> {
        named
            .iter()
            .map(|(n, v)| Ok((n.to_string(), v.as_tensor().copy()?)))
            .collect()
    };
    let mut head = TrainedHead {
        kind,
        tensors: snapshot(&named)?,
        epochs: 0,
        best_epoch: 0,
        best_validation_loss: f64::INFINITY,
    };
    let mut optimizer = AdamW::new(
        named.iter().map(|(_, v)| v.clone()).collect(),
        ParamsAdamW {
            lr: fit.learning_rate,
            weight_decay: fit.weight_decay,
            ..Default::default()
        },
    )?;
    let labels_of = |rows: &[usize]| -> Result<Tensor> {
        let ids: Vec<u32> = rows.iter().map(|&r| truth[r] as u32).collect();
        Ok(Tensor::new(ids, &Device::Cpu)?)
    };
    let mut order = split.train.clone();
    for epoch in 1..=fit.max_epochs {
        shuffle(&mut order, &mut rng);
        for batch in order.chunks(fit.batch_size.max(1)) {
            let live = TrainedHead {
                kind,
                tensors: named
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.as_tensor().clone()))
                    .collect(),
                epochs: 0,
                best_epoch: 0,
                best_validation_loss: 0.0,
            };
            let logits = live.forward(&vectors.batch(batch)?)?;
            let loss = weighted_cross_entropy(&logits, &labels_of(batch)?, &class_weights)?;
            optimizer.backward_step(&loss)?;
        }
        let current = TrainedHead {
            kind,
            tensors: snapshot(&named)?,
            epochs: epoch,
            best_epoch: epoch,
            best_validation_loss: 0.0,
        };
        let (mut loss_sum, mut weight_sum) = (0f64, 0f64);
        for chunk in split.validation.chunks(rows_at_once(hidden)) {
            let logits = current.forward(&vectors.batch(chunk)?)?;
            let (loss, weight) = weighted_loss_sum(&logits, &labels_of(chunk)?, &class_weights)?;
            loss_sum += f64::from(loss.to_scalar::<f32>()?);
            weight_sum += weight;
        }
        let validation_loss = loss_sum / weight_sum;
        progress(epoch, validation_loss);
        head.epochs = epoch;
        if validation_loss < head.best_validation_loss {
            head.tensors = current.tensors;
            head.best_epoch = epoch;
            head.best_validation_loss = validation_loss;
        } else if epoch - head.best_epoch >= fit.patience {
            break;
        }
    }
    Ok(head)
}

/// Mean cross-entropy, each example weighted by its class's weight.
fn weighted_cross_entropy(
    logits: &Tensor,
    labels: &Tensor,
    class_weights: &Tensor,
) -> candle_core::Result<Tensor> {
    let (loss, weight) = weighted_loss_sum(logits, labels, class_weights)?;
    loss / weight
}

/// The summed cross-entropy, each example weighted by its class's weight,
/// and the sum of those weights.
fn weighted_loss_sum(
    logits: &Tensor,
    labels: &Tensor,
    class_weights: &Tensor,
) -> candle_core::Result<(Tensor, f64)> {
    let log_p = candle_nn::ops::log_softmax(logits, candle_core::D::Minus1)?;
    let picked = log_p.gather(&labels.unsqueeze(1)?, 1)?.squeeze(1)?;
    let weights = class_weights.index_select(labels, 0)?;
    let total = f64::from(weights.sum_all()?.to_scalar::<f32>()?);
    Ok(((picked * &weights)?.sum_all()?.neg()?, total))
}

fn shuffle(items: &mut [usize], rng: &mut SplitMix64) {
    for i in (1..items.len()).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

/// Everything needed to write a pack around a trained head.
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
    pub head: &'a TrainedHead,
    /// A character n-gram head mixed in at this weight.
    pub lexical: Option<(&'a LexicalHead, f64)>,
    pub temperature: f64,
    pub abstain_below: f64,
    pub evaluation: Option<ShippedEvaluation>,
    /// The abbreviation list (already inside `out_dir`) the head was
    /// trained with.
    pub abbreviations: Option<PackFile>,
    /// The encoder adapter (already inside `out_dir`) the vectors came from.
    pub adapter: Option<PackFile>,
    /// Add the head to the pack already in the output folder (replacing a
    /// head of the same name) instead of writing a new pack.
    pub add_to_existing: bool,
}

/// Writes `head.safetensors` and `manifest.json` into `out_dir`, with the
/// encoder referenced by a path relative to the pack and every hash filled in.
pub fn write_pack(out_dir: &Path, draft: PackDraft<'_>) -> Result<PathBuf> {
    if !is_safe_name(draft.head_name) {
        return Err(Error::Training {
            problem: format!(
                "'{}' cannot name a head: use letters, digits, '-', '_' and '.' only",
                draft.head_name
            ),
        });
    }
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let head_file = format!("{}.safetensors", draft.head_name);
    let lexical_file = format!("{}-lexical.safetensors", draft.head_name);
    let encoder = EncoderSpec {
        path: relative_path(out_dir, draft.encoder_dir)?,
        architecture: draft.architecture,
        pooling: Pooling::Mean,
        max_tokens: draft.max_tokens,
        sha256: encoder_hashes(draft.encoder_dir)?,
        adapter: draft.adapter,
    };
    // Everything about the pack already there is checked before anything
    // is written into it.
    let existing = if draft.add_to_existing && out_dir.join("manifest.json").is_file() {
        let manifest = Manifest::read(out_dir)?;
        // Another head on the same encoder: one forward pass will feed both.
        if manifest.encoder.sha256 != encoder.sha256
            || manifest.encoder.adapter != encoder.adapter
            || manifest.encoder.max_tokens != encoder.max_tokens
            || manifest.abbreviations != draft.abbreviations
        {
            return Err(Error::Training {
                problem: format!(
                    "the pack in {} uses another encoder, encoder adapter, window size or abbreviation list; a head can only join a pack that embeds text the same way",
                    out_dir.display()
                ),
            });
        }
        // A file of another head (or the head a head is named after) must
        // not be overwritten, in any letter case.
        let others = manifest
            .pack_files()
            .filter(|(file, _)| {
                !manifest
                    .heads
                    .iter()
                    .filter(|h| h.name == draft.head_name)
                    .any(|h| h.files().any(|(own, _)| own == *file))
            })
            .map(|(file, _)| file.to_path_buf())
            .collect::<Vec<_>>();
        let same = |f: &Path, name: &str| f.to_string_lossy().eq_ignore_ascii_case(name);
        if let Some(taken) = others
            .iter()
            .find(|f| same(f, &head_file) || same(f, &lexical_file))
        {
            return Err(Error::Training {
                problem: format!(
                    "the pack in {} already has a file {}: give the head another name",
                    out_dir.display(),
                    taken.display()
                ),
            });
        }
        Some(manifest)
    } else {
        None
    };
    let head_path = out_dir.join(&head_file);
    candle_core::safetensors::save(&draft.head.tensors, &head_path)?;
    let lexical_path = out_dir.join(&lexical_file);
    let lexical = match draft.lexical {
        Some((lexical, weight)) => {
            lexical.save(&lexical_path)?;
            Some(LexicalSpec {
                sha256: sha256_file(&lexical_path)?,
                file: PathBuf::from(lexical_file),
                weight,
            })
        }
        None => {
            // A head replaced by one without an n-gram part leaves no file.
            if lexical_path.is_file() {
                std::fs::remove_file(&lexical_path).map_err(|e| Error::io(&lexical_path, e))?;
            }
            None
        }
    };

    let head = HeadSpec {
        name: draft.head_name.into(),
        kind: draft.head.kind,
        sha256: sha256_file(&head_path)?,
        file: PathBuf::from(head_file),
        temperature: draft.temperature,
        abstain_below: draft.abstain_below,
        labels: draft.labels,
        evaluation: draft.evaluation,
        lexical,
    };
    let manifest = if let Some(mut manifest) = existing {
        manifest.heads.retain(|h| h.name != head.name);
        manifest.heads.push(head);
        manifest
    } else {
        Manifest {
            format: MANIFEST_FORMAT,
            name: draft.name.into(),
            version: draft.version.into(),
            task: draft.task.into(),
            license: draft.license.into(),
            attribution: draft.attribution.into(),
            encoder,
            heads: vec![head],
            abbreviations: draft.abbreviations,
        }
    };
    manifest.write(out_dir)
}

/// `to` expressed relative to the directory `from`, lexically: links are
/// not followed, so a pack beside `encoders/` records `../encoders/<name>`
/// (what an archive may carry) even when `encoders` is a link elsewhere.
fn relative_path(from: &Path, to: &Path) -> Result<PathBuf> {
    let from = lexical(&std::path::absolute(from).map_err(|e| Error::io(from, e))?);
    let to = lexical(&std::path::absolute(to).map_err(|e| Error::io(to, e))?);
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

/// `path` with `.` dropped and each `..` taking away the name before it.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
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

    #[test]
    fn a_pack_beside_the_shared_encoders_points_at_them_whatever_the_links() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("elsewhere/encoders/minilm");
        std::fs::create_dir_all(&real).unwrap();
        let models = dir.path().join("models");
        std::fs::create_dir_all(models.join("new-pack")).unwrap();
        std::fs::create_dir_all(models.join("default")).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(
            dir.path().join("elsewhere/encoders"),
            models.join("encoders"),
        )
        .unwrap();
        let encoder = models.join("default/../encoders/minilm");
        assert_eq!(
            relative_path(&models.join("new-pack"), &encoder).unwrap(),
            PathBuf::from("../encoders/minilm")
        );
    }
    use crate::inference::classifier::Classifier;
    use crate::pack::manifest::tests::write_tiny_pack;
    use crate::pack::manifest::Pack;

    #[test]
    fn rare_labels_weigh_more_but_at_most_ten_times_the_median() {
        // 1,000 / (4 × count): 0.5, 0.63, 2.5 and 250 before the cap.
        let w = class_weights(&[500, 399, 100, 1]);
        assert_eq!(w[0], 0.5);
        assert_eq!(w[2], 2.5);
        // The median weight (the upper middle one) is 2.5: the cap is 25.
        assert_eq!(w[3], 25.0);
        // Balanced labels all weigh 1.
        assert_eq!(class_weights(&[10, 10, 10]), vec![1.0, 1.0, 1.0]);
    }

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

    /// Points around `centres` (hidden 4), `per_class` each, seeded.
    fn clusters(
        centres: &[[f32; 4]],
        per_class: usize,
        spread: f32,
    ) -> (Vec<Vec<f32>>, Vec<usize>) {
        let mut rng = SplitMix64(3);
        let mut noise = || ((rng.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0 * spread;
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for (class, c) in centres.iter().enumerate() {
            for _ in 0..per_class {
                x.push(c.iter().map(|v| v + noise()).collect());
                y.push(class);
            }
        }
        (x, y)
    }

    fn accuracy(head: &TrainedHead, x: &[Vec<f32>], y: &[usize], rows: &[usize]) -> f64 {
        let logits = head.logits(x, rows).unwrap();
        let right = logits
            .iter()
            .zip(rows)
            .filter(|(l, &r)| {
                let best = l
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map(|(i, _)| i);
                best == Some(y[r])
            })
            .count();
        right as f64 / rows.len() as f64
    }

    #[test]
    fn a_linear_head_learns_separable_classes_the_same_way_every_time() {
        let (x, y) = clusters(
            &[[1., 0., 0., 0.], [0., 1., 0., 0.], [0., 0., 1., 0.]],
            40,
            0.3,
        );
        let split = stratified_split(&y, 0.2, 0.2, 1);
        let fit = Fit::new(HeadShape::Linear, 9);
        let mut epochs_seen = 0;
        let head = train_head(x.as_slice(), &y, &split, 3, fit, |epoch, loss| {
            epochs_seen = epoch;
            assert!(loss.is_finite());
        })
        .unwrap();
        assert_eq!(head.kind, HeadKind::Linear);
        assert_eq!(head.tensors["weight"].dims(), [3, 4]);
        assert_eq!(epochs_seen, head.epochs);
        assert!(accuracy(&head, &x, &y, &split.test) > 0.95);
        let again = train_head(x.as_slice(), &y, &split, 3, fit, |_, _| {}).unwrap();
        assert_eq!(
            head.tensors["weight"].to_vec2::<f32>().unwrap(),
            again.tensors["weight"].to_vec2::<f32>().unwrap()
        );
    }

    #[test]
    fn an_mlp_head_learns_what_a_linear_one_cannot() {
        // XOR: class 1 where exactly one of the first two coordinates is high.
        let (x, y4) = clusters(
            &[
                [0., 0., 0., 0.],
                [1., 1., 0., 0.],
                [1., 0., 0., 0.],
                [0., 1., 0., 0.],
            ],
            40,
            0.2,
        );
        let y: Vec<usize> = y4.iter().map(|&c| usize::from(c >= 2)).collect();
        let split = stratified_split(&y, 0.2, 0.2, 1);
        let linear = train_head(
            x.as_slice(),
            &y,
            &split,
            2,
            Fit::new(HeadShape::Linear, 1),
            |_, _| {},
        )
        .unwrap();
        let mlp = train_head(
            x.as_slice(),
            &y,
            &split,
            2,
            Fit::new(HeadShape::Mlp { hidden: 16 }, 1),
            |_, _| {},
        )
        .unwrap();
        assert_eq!(mlp.kind, HeadKind::Mlp);
        assert!(accuracy(&linear, &x, &y, &split.test) < 0.8);
        assert!(accuracy(&mlp, &x, &y, &split.test) > 0.95);
    }

    #[test]
    fn training_stops_when_validation_loss_stops_improving_and_keeps_the_best_epoch() {
        // Overlapping classes: the validation loss bottoms out early.
        let (x, y) = clusters(&[[1., 0., 0., 0.], [0.8, 0.2, 0., 0.]], 60, 1.0);
        let split = stratified_split(&y, 0.3, 0.2, 1);
        let fit = Fit::new(HeadShape::Mlp { hidden: 32 }, 4);
        let mut losses = Vec::new();
        let head = train_head(x.as_slice(), &y, &split, 2, fit, |_, loss| {
            losses.push(loss)
        })
        .unwrap();
        assert!(
            head.epochs < fit.max_epochs,
            "ran all {} epochs",
            head.epochs
        );
        assert_eq!(head.epochs - head.best_epoch, fit.patience);
        let best = losses.iter().copied().fold(f64::INFINITY, f64::min);
        assert_eq!(head.best_validation_loss, best);
        assert_eq!(losses[head.best_epoch - 1], best);
    }

    #[test]
    fn grouped_split_keeps_groups_whole_and_every_label_in_training() {
        // Label 0: groups a..j (3 rows each); label 1: one group only.
        let mut labels = Vec::new();
        let mut groups = Vec::new();
        for g in "abcdefghij".chars() {
            for _ in 0..3 {
                labels.push(0);
                groups.push(g.to_string());
            }
        }
        labels.extend([1, 1]);
        groups.extend(["z".to_string(), "z".to_string()]);
        let s = grouped_split(&labels, &groups, 0.1, 0.2, 5);
        let part_of = |i: usize| {
            [&s.train, &s.validation, &s.test]
                .iter()
                .position(|p| p.contains(&i))
                .unwrap()
        };
        for i in 0..labels.len() {
            for j in 0..labels.len() {
                if groups[i] == groups[j] {
                    assert_eq!(part_of(i), part_of(j), "group {} split", groups[i]);
                }
            }
        }
        assert_eq!(s.test.len(), 6); // 2 of 10 groups
        assert_eq!(s.validation.len(), 3);
        assert!(
            s.train.contains(&30) && s.train.contains(&31),
            "the lone group trains"
        );
        assert_eq!(s, grouped_split(&labels, &groups, 0.1, 0.2, 5));
    }

    #[test]
    fn a_label_missing_from_the_training_part_is_refused() {
        let (x, y) = clusters(&[[1., 0., 0., 0.], [0., 1., 0., 0.]], 10, 0.1);
        let split = Split {
            train: (0..10).collect(),
            validation: vec![10, 11],
            test: vec![],
        };
        let err = train_head(
            x.as_slice(),
            &y,
            &split,
            2,
            Fit::new(HeadShape::Linear, 1),
            |_, _| {},
        );
        assert!(matches!(err, Err(Error::Training { .. })));
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
        let (x, y) = clusters(&[[1., 0., 0., 0.], [0., 1., 0., 0.]], 10, 0.1);
        let x: Vec<Vec<f32>> = x.into_iter().map(|v| [v.clone(), v].concat()).collect(); // hidden 8
        let split = stratified_split(&y, 0.2, 0.2, 1);
        let head = train_head(
            x.as_slice(),
            &y,
            &split,
            2,
            Fit::new(HeadShape::Mlp { hidden: 4 }, 1),
            |_, _| {},
        )
        .unwrap();
        let draft = |head_name: &'static str, add_to_existing: bool| PackDraft {
            name: "trained",
            version: "0.1.0",
            task: "test",
            license: "Apache-2.0",
            attribution: "test",
            encoder_dir: &encoder_dir,
            architecture: Architecture::Bert,
            max_tokens: 10,
            head_name,
            labels: labels.clone(),
            head: &head,
            lexical: None,
            temperature: 0.5,
            abstain_below: 0.6,
            evaluation: None,
            add_to_existing,
            abbreviations: None,
            adapter: None,
        };
        write_pack(&out, draft("category", false)).unwrap();
        let pack = Pack::open(&out).unwrap();
        assert_eq!(
            pack.manifest.encoder.path,
            PathBuf::from("../encoders/tiny")
        );
        let c = Classifier::from_pack(pack, None).unwrap();
        let r = c.classify("fever and cough").unwrap();
        assert_eq!(r.probabilities.len(), 2);

        // A second head joins the same pack; the same name again replaces it.
        write_pack(&out, draft("second", true)).unwrap();
        write_pack(&out, draft("second", true)).unwrap();
        let c = Classifier::load(dir.path(), "trained", None).unwrap();
        let every = c.classify_every_head("fever and cough").unwrap();
        let heads: Vec<&str> = every.iter().map(|r| r.head.as_str()).collect();
        assert_eq!(heads, ["category", "second"]);
        // A head with an n-gram part; a head named after its file is
        // refused before anything is written; replaced by a head without
        // one, its file goes.
        let vocabulary = crate::inference::lexical::Vocabulary::build(&["fever cough"; 3]);
        let n = vocabulary.len();
        let lexical = LexicalHead::new(vocabulary, vec![vec![0.5; n], vec![-0.5; n]], vec![0.0; 2]);
        let with_ngrams = PackDraft {
            lexical: Some((&lexical, 0.3)),
            ..draft("second", true)
        };
        write_pack(&out, with_ngrams).unwrap();
        // One pass feeds both heads; the one with an n-gram part gives what
        // it gives alone.
        let every = Classifier::load(dir.path(), "trained", None)
            .unwrap()
            .classify_every_head("fever and cough")
            .unwrap();
        let alone = Classifier::load(dir.path(), "trained", Some("second"))
            .unwrap()
            .classify("fever and cough")
            .unwrap();
        assert_eq!(every[1].head, "second");
        for (a, b) in every[1].probabilities.iter().zip(&alone.probabilities) {
            assert_eq!(a.id, b.id);
            assert!((a.probability - b.probability).abs() < 1e-6);
        }
        let ngrams_file = out.join("second-lexical.safetensors");
        let before = std::fs::read(&ngrams_file).unwrap();
        let err = write_pack(&out, draft("second-lexical", true))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("already has a file second-lexical.safetensors"),
            "{err}"
        );
        assert_eq!(std::fs::read(&ngrams_file).unwrap(), before);
        Pack::open(&out).unwrap();
        write_pack(&out, draft("second", true)).unwrap();
        assert!(!ngrams_file.exists());
        Pack::open(&out).unwrap();

        // Without add_to_existing the pack is written anew.
        write_pack(&out, draft("only", false)).unwrap();
        assert_eq!(Pack::open(&out).unwrap().manifest.heads.len(), 1);
    }
}
