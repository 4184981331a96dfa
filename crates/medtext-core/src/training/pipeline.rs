//! From a labelled file to a model pack: the one path that `medtext train`
//! and the app's "train your own" both take, so a pack trained in either is
//! the same pack.
//!
//! Steps: leave out repeated rows (and, if asked, texts carrying two labels),
//! check the file is trainable, embed every text once (from the on-disk cache
//! where possible), split (stratified, or by group), train the head with early
//! stopping, fit the temperature on the validation part, evaluate on the test
//! part, and write the pack with its evaluation report.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::inference::lexical::{self, LexicalHead, SparseRows, Vocabulary};
use crate::pack::archive::Staging;
use crate::pack::manifest::{
    self as pack, Architecture, Label, Pack, PackFile, Pooling, ShippedEvaluation,
};
use crate::text::abbreviations::Abbreviations;
use crate::training::embedding_cache::EmbeddingCache;
use crate::training::evaluation::{self as metrics, Metrics};
use crate::training::examples::{self as dataset, Example, Removed};
use crate::training::fit::{self as train, Fit, HeadShape, PackDraft};
use crate::training::split as split_file;
use crate::{inference::classifier::Embedder, Error, Result};

/// What to train and where to write it.
#[derive(Debug, Clone)]
pub struct TrainRequest {
    /// Where the examples came from (named in errors and the report).
    pub input: PathBuf,
    pub examples: Vec<Example>,
    /// Leave out texts that carry two labels instead of refusing the file.
    pub drop_conflicting: bool,
    pub min_per_label: usize,
    pub encoder_dir: PathBuf,
    /// Low-rank deltas for the encoder (`scripts/finetune/lora.py`); they go
    /// into the pack.
    pub encoder_adapter: Option<PathBuf>,
    pub max_tokens: usize,
    /// An abbreviation list to spell out before embedding; it goes into the
    /// pack so classification spells out the same.
    pub abbreviations: Option<PathBuf>,
    pub shape: HeadShape,
    /// `None`: the default for the head's shape.
    pub learning_rate: Option<f64>,
    pub weight_decay: f64,
    pub seed: u64,
    /// Display names by label id; ids without one are capitalised.
    pub label_displays: Vec<(String, String)>,
    /// Folder of the sentence-vector cache; `None` skips it.
    pub cache_dir: Option<PathBuf>,
    pub out: PathBuf,
    pub name: String,
    pub version: String,
    pub task: String,
    pub license: String,
    pub attribution: String,
    pub head_name: String,
    pub abstain_below: f64,
    /// Add the head to the pack already in `out` (same encoder).
    pub add_to_pack: bool,
    /// Write the split (part, label, group, and the text as the encoder
    /// reads it) to this CSV, for recipes outside MedText that must keep to
    /// it (fine-tuning the encoder on the training part only).
    pub split_out: Option<PathBuf>,
    /// Also train a head on the texts' character n-grams and mix it in, if
    /// that does better on the validation part ([`crate::inference::lexical`]).
    pub lexical: bool,
    /// Take the split from a CSV written by `split_out` instead of drawing
    /// one: a second head on the same data is then tested on the same
    /// held-out groups as the first.
    pub split_from: Option<PathBuf>,
}

/// Widest MLP hidden layer: 16 times the widest encoder MedText runs
/// (BERT-base, 768), far more than a head on a few thousand notes can use.
pub const MAX_MLP_HIDDEN: usize = 16 * 1024;

impl TrainRequest {
    /// Refuses, before any work, an argument that would make a pack that
    /// does not load (a name the loader refuses, a threshold outside 0..1)
    /// or a useless one (a learning rate of NaN trains nothing). The app
    /// and `medtext train` both come through here. Errors name the
    /// argument as `medtext train` spells it.
    pub fn validate(&self) -> Result<()> {
        let refuse = |problem: String| Err(Error::Training { problem });
        check_pack_name(&self.name)?;
        if !pack::is_safe_name(&self.head_name) {
            return refuse(format!(
                "'{}' cannot name a head: use letters, digits, '-', '_' and '.' only",
                self.head_name
            ));
        }
        if !(0.0..=1.0).contains(&self.abstain_below) {
            return refuse(format!(
                "abstain-below is a probability from 0 to 1, not {}",
                self.abstain_below
            ));
        }
        if let Some(rate) = self.learning_rate {
            if !(rate.is_finite() && rate > 0.0) {
                return refuse(format!(
                    "learning-rate must be a number above 0 (such as 0.001), not {rate}"
                ));
            }
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return refuse(format!(
                "weight-decay must be a number from 0 up (such as 0.0001), not {}",
                self.weight_decay
            ));
        }
        if let HeadShape::Mlp { hidden } = self.shape {
            if !(1..=MAX_MLP_HIDDEN).contains(&hidden) {
                return refuse(format!(
                    "mlp-hidden must be from 1 to {MAX_MLP_HIDDEN}, not {hidden}"
                ));
            }
        }
        if self.max_tokens < crate::text::tokenize::MIN_WINDOW_TOKENS {
            return refuse(format!(
                "max-tokens must be at least {} ([CLS], [SEP] and the words), not {}",
                crate::text::tokenize::MIN_WINDOW_TOKENS,
                self.max_tokens
            ));
        }
        if self.min_per_label == 0 {
            return refuse(
                "min-examples must be at least 1: a label needs an example to be learnt".into(),
            );
        }
        for (what, value) in [
            ("version", &self.version),
            ("task", &self.task),
            ("license", &self.license),
            ("attribution", &self.attribution),
        ] {
            if value.trim().is_empty() {
                return refuse(format!(
                    "{what} is empty: the pack shows it to clinicians and IT"
                ));
            }
        }
        if let Some(split_out) = &self.split_out {
            crate::user_files::refuse_existing(split_out)?;
        }
        Ok(())
    }
}

/// Refuses a pack name that the pack loader would refuse (it names a
/// folder).
fn check_pack_name(name: &str) -> Result<()> {
    if pack::is_safe_name(name) {
        Ok(())
    } else {
        Err(Error::Training {
            problem: format!(
                "'{name}' cannot name a pack: use letters, digits, '-', '_' and '.' only"
            ),
        })
    }
}

/// Where training is, for a progress bar.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Progress {
    Embedding {
        done: usize,
        total: usize,
        from_cache: usize,
        eta_s: f64,
    },
    /// Early stopping may end training before `max_epochs`: the ETA is an
    /// upper bound.
    Training {
        epoch: usize,
        max_epochs: usize,
        validation_loss: f64,
        eta_s: f64,
    },
}

/// What training produced.
#[derive(Debug, Clone, Serialize)]
pub struct TrainOutcome {
    pub manifest: PathBuf,
    pub report: PathBuf,
    pub removed_duplicates: usize,
    pub removed_conflicting: usize,
    pub best_epoch: usize,
    pub epochs: usize,
    pub temperature: f64,
    /// On the test part, calibrated.
    pub test: Metrics,
    /// On the validation part (which chose the epoch and the temperature).
    pub validation: Metrics,
    pub test_ece_before_calibration: f64,
    /// What became of the n-gram part asked for, in a sentence; `None`
    /// when none was asked for.
    pub lexical: Option<String>,
}

/// Trains a head on `request`'s examples and writes the pack, reporting
/// progress through `progress`.
pub fn train_pack(
    request: TrainRequest,
    progress: &mut dyn FnMut(Progress),
) -> Result<TrainOutcome> {
    request.validate()?;
    let (examples, removed) = dataset::deduplicate(request.examples, request.drop_conflicting);
    dataset::check_training_set(&request.input, &examples, request.min_per_label)?;
    let mut label_ids: Vec<String> = examples.iter().map(|e| e.label.clone()).collect();
    label_ids.sort();
    label_ids.dedup();
    let truth: Vec<usize> = examples
        .iter()
        .map(|e| label_ids.binary_search(&e.label).unwrap_or_default())
        .collect();

    let architecture = Architecture::detect(&request.encoder_dir)?;
    let abbreviations = request
        .abbreviations
        .as_deref()
        .map(Abbreviations::load)
        .transpose()?;
    let abbreviations_sha = request
        .abbreviations
        .as_deref()
        .map(pack::sha256_file)
        .transpose()?;
    let groups: Option<Vec<String>> = examples
        .iter()
        .map(|e| e.group.clone())
        .collect::<Option<Vec<_>>>();
    let split = match (&request.split_from, &groups) {
        (Some(path), _) => split_file::read(path, &examples, abbreviations.as_ref())?,
        (None, Some(groups)) => train::grouped_split(&truth, groups, 0.1, 0.2, request.seed),
        (None, None) => train::stratified_split(&truth, 0.1, 0.2, request.seed),
    };
    // A split from a file may leave a label without training rows (the
    // train_head check would only give its index).
    let mut trained = vec![false; label_ids.len()];
    for &row in &split.train {
        trained[truth[row]] = true;
    }
    if let Some(label) = label_ids
        .iter()
        .zip(&trained)
        .find(|(_, t)| !**t)
        .map(|(id, _)| id)
    {
        return Err(Error::Training {
            problem: format!(
                "label {} has no examples in the training part of the split; give it more examples, or draw the split with this label column",
                crate::training::examples::cell_for_message(label)
            ),
        });
    }
    if let Some(path) = &request.split_out {
        split_file::write(path, &examples, &split, abbreviations.as_ref())?;
    }
    let embedder = Embedder::load(
        &request.encoder_dir,
        request.encoder_adapter.as_deref(),
        architecture,
        Pooling::Mean,
        request.max_tokens,
    )?
    .with_abbreviations(abbreviations);
    let mut cache = match &request.cache_dir {
        None => None,
        Some(dir) => {
            // The vectors depend on the encoder, the window and what is
            // spelled out before embedding.
            let identity = format!(
                "{:?}|max_tokens={}|mean|abbreviations={}{}",
                pack::encoder_hashes(&request.encoder_dir)?,
                request.max_tokens,
                abbreviations_sha.as_deref().unwrap_or("none"),
                match &request.encoder_adapter {
                    Some(adapter) => format!("|adapter={}", pack::sha256_file(adapter)?),
                    None => String::new(),
                }
            );
            Some(EmbeddingCache::open(
                dir,
                &identity,
                embedder.hidden_size(),
            )?)
        }
    };
    let vectors = embed_all(
        &embedder,
        &request.input,
        &examples,
        cache.as_mut(),
        progress,
    )?;
    if let Some(c) = cache.as_mut() {
        c.save()?;
    }

    let defaults = Fit::new(request.shape, request.seed);
    let max_epochs = defaults.max_epochs;
    let started = Instant::now();
    let head = train::train_head(
        vectors.as_slice(),
        &truth,
        &split,
        label_ids.len(),
        Fit {
            learning_rate: request.learning_rate.unwrap_or(defaults.learning_rate),
            weight_decay: request.weight_decay,
            ..defaults
        },
        |epoch, validation_loss| {
            let per_epoch = started.elapsed().as_secs_f64() / epoch as f64;
            progress(Progress::Training {
                epoch,
                max_epochs,
                validation_loss,
                eta_s: per_epoch * max_epochs.saturating_sub(epoch) as f64,
            })
        },
    )?;

    let truth_of = |rows: &[usize]| -> Vec<usize> { rows.iter().map(|&r| truth[r]).collect() };
    let validation_truth = truth_of(&split.validation);
    let test_truth = truth_of(&split.test);
    let evaluate = |logits: &[Vec<f32>], truth: &[usize], t: f64| {
        let probs: Vec<Vec<f32>> = logits.iter().map(|l| train::softmax(l, t)).collect();
        metrics::evaluate(&label_ids, &probs, truth)
    };
    let mut validation_logits = head.logits(vectors.as_slice(), &split.validation)?;
    let mut test_logits = head.logits(vectors.as_slice(), &split.test)?;
    let mut lexical_left_out = None;
    let lexical = if request.lexical {
        let texts: Vec<String> = examples
            .iter()
            .map(|e| embedder.spelled_out(&e.text).into_owned())
            .collect();
        match train_lexical_part(
            &texts,
            &truth,
            &split,
            label_ids.len(),
            request.seed,
            &validation_logits,
            &|logits| evaluate(logits, &validation_truth, 1.0).macro_f1,
            progress,
        )? {
            Ok(part) => Some(part),
            Err(why) => {
                lexical_left_out = Some(why);
                None
            }
        }
    } else {
        None
    };
    if let Some(part) = &lexical {
        validation_logits = lexical::mix_rows(&validation_logits, &part.validation, part.weight);
        test_logits = lexical::mix_rows(&test_logits, &part.test, part.weight);
    }
    let temperature = train::fit_temperature(&validation_logits, &validation_truth);
    let uncalibrated = evaluate(&test_logits, &test_truth, 1.0);
    let calibrated = evaluate(&test_logits, &test_truth, temperature);
    // For choosing between training set-ups (encoder adapters, head kinds)
    // without looking at the test part.
    let validation = evaluate(&validation_logits, &validation_truth, temperature);

    let labels = label_ids
        .iter()
        .map(|id| Label {
            id: id.clone(),
            display: request
                .label_displays
                .iter()
                .find(|(known, _)| known == id)
                .map_or_else(|| capitalised(id), |(_, d)| d.clone()),
        })
        .collect();
    let file_name = |path: &Path| {
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let split_kind = match (&request.split_from, groups.is_some()) {
        (Some(path), true) => format!(
            "the split by group in {} (test groups never seen in training)",
            file_name(path)
        ),
        (Some(path), false) => format!("the split in {}", file_name(path)),
        (None, true) => format!(
            "a 70/10/20 split by group (test groups never seen in training), seed {}",
            request.seed
        ),
        (None, false) => format!("a stratified 70/10/20 split, seed {}", request.seed),
    };
    let input_name = file_name(&request.input);
    let manifest = train::write_pack(
        &request.out,
        PackDraft {
            name: &request.name,
            version: &request.version,
            task: &request.task,
            license: &request.license,
            attribution: &request.attribution,
            encoder_dir: &request.encoder_dir,
            architecture,
            max_tokens: request.max_tokens,
            head_name: &request.head_name,
            labels,
            head: &head,
            lexical: lexical.as_ref().map(|part| (&part.head, part.weight)),
            temperature,
            abstain_below: request.abstain_below,
            add_to_existing: request.add_to_pack,
            abbreviations: request
                .abbreviations
                .as_deref()
                .map(|path| copy_into_pack(path, &request.out, "abbreviations.csv"))
                .transpose()?,
            adapter: request
                .encoder_adapter
                .as_deref()
                .map(|path| copy_into_pack(path, &request.out, "encoder-adapter.safetensors"))
                .transpose()?,
            evaluation: Some(ShippedEvaluation {
                dataset: format!("{input_name}: the test part of {split_kind}"),
                n: calibrated.n,
                accuracy: calibrated.accuracy,
                macro_f1: calibrated.macro_f1,
                ece: calibrated.ece,
                ece_before_calibration: Some(uncalibrated.ece),
            }),
        },
    )?;

    let report_path = request
        .out
        .join(format!("evaluation-{}.json", request.head_name));
    let lexical_summary = match (&lexical, lexical_left_out) {
        (Some(part), _) => Some(format!(
            "n-gram part kept at weight {:.1}: {} n-grams of the training texts, stored as text in {}-lexical.safetensors",
            part.weight,
            part.head.vocabulary_len(),
            request.head_name
        )),
        (None, Some(why)) => Some(format!("n-gram part left out: {why}")),
        (None, None) => None,
    };
    let report = serde_json::json!({
        "method": format!(
            "{} head on mean-pooled encoder vectors (AdamW, cross-entropy weighted by inverse label frequency capped at {} times the median label's weight, early stopping at epoch {} of {}){}, temperature fitted on validation",
            match request.shape { HeadShape::Linear => "linear".to_string(), HeadShape::Mlp { hidden } => format!("MLP ({hidden} hidden)") },
            train::MAX_CLASS_WEIGHT_OVER_MEDIAN,
            head.best_epoch,
            head.epochs,
            match (&lexical, lexical_left_out) {
                (Some(part), _) => format!(
                    ", mixed with a linear head on {} character n-grams (the same training, epoch {} of {}) at weight {:.1}, chosen on validation",
                    part.head.vocabulary_len(), part.best_epoch, part.epochs, part.weight
                ),
                (None, Some(why)) => format!(", without the character n-gram head asked for: {why}"),
                (None, None) => String::new(),
            }
        ),
        "seed": request.seed,
        "split": {"kind": split_kind, "train": split.train.len(), "validation": split.validation.len(), "test": split.test.len()},
        "left_out": {"repeated": removed.duplicates, "conflicting": removed.conflicting},
        "temperature": temperature,
        "test": calibrated,
        "test_ece_before_calibration": uncalibrated.ece,
        // The headline figures only: the test part carries the full table.
        "validation": {
            "n": validation.n,
            "accuracy": validation.accuracy,
            "macro_f1": validation.macro_f1,
            "ece": validation.ece,
        },
    });
    let text = serde_json::to_string_pretty(&report).map_err(|e| Error::Training {
        problem: format!("cannot write the evaluation report: {e}"),
    })?;
    std::fs::write(&report_path, text + "\n").map_err(|e| Error::io(&report_path, e))?;
    let Removed {
        duplicates,
        conflicting,
    } = removed;
    Ok(TrainOutcome {
        manifest,
        report: report_path,
        removed_duplicates: duplicates,
        removed_conflicting: conflicting,
        best_epoch: head.best_epoch,
        epochs: head.epochs,
        temperature,
        test: calibrated,
        validation,
        test_ece_before_calibration: uncalibrated.ece,
        lexical: lexical_summary,
    })
}

/// Trains a new pack called `name` into `models_dir`, on the encoder of the
/// default pack. The pack is written into a staging folder beside the others
/// and renamed into place only when it is complete, so a failed or cancelled
/// run leaves nothing behind; an existing pack is never replaced.
pub fn train_new_pack(
    models_dir: &Path,
    name: &str,
    mut request: TrainRequest,
    progress: &mut dyn FnMut(Progress),
) -> Result<TrainOutcome> {
    check_pack_name(name)?;
    let target = models_dir.join(name);
    if target.exists() {
        return Err(Error::Training {
            problem: format!("a pack named '{name}' is already installed: choose another name"),
        });
    }
    request.encoder_dir = Pack::find(models_dir, pack::DEFAULT_PACK)?.encoder_dir();
    request.name = name.to_string();
    // At the same depth as the final folder, so the encoder path that
    // `write_pack` records stays right after the rename.
    let staging = Staging::new(models_dir)?;
    request.out = staging.dir.clone();
    let mut outcome = train_pack(request, progress)?;
    std::fs::rename(&staging.dir, &target).map_err(|e| Error::io(&target, e))?;
    outcome.manifest = target.join("manifest.json");
    if let Some(report) = outcome.report.file_name() {
        outcome.report = target.join(report);
    }
    Ok(outcome)
}

/// A training file handed over by the app as bytes, kept owner-only in the
/// data directory while it is trained on and removed when dropped.
pub struct StagedFile {
    path: PathBuf,
}

impl StagedFile {
    /// Writes `bytes` into `dir`, keeping the extension of `file_name`
    /// (`.jsonl`/`.ndjson` are read as JSON Lines, anything else as CSV).
    pub fn write(dir: &Path, file_name: &str, bytes: &[u8]) -> Result<Self> {
        let extension = Path::new(file_name)
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .filter(|e| e == "jsonl" || e == "ndjson")
            .unwrap_or_else(|| "csv".into());
        Self::write_limited(
            dir,
            &extension,
            bytes,
            crate::tabular::MAX_DATA_FILE_BYTES,
            "training files",
        )
    }

    /// Writes `bytes` (at most `limit`; `what` names the kind of file in the
    /// error) owner-only into `dir` under a random name ending `.extension`.
    pub fn write_limited(
        dir: &Path,
        extension: &str,
        bytes: &[u8],
        limit: usize,
        what: &str,
    ) -> Result<Self> {
        if bytes.len() > limit {
            return Err(Error::FileTooLarge {
                what: what.to_string(),
                mb: bytes.len() / (1024 * 1024),
                limit_mb: limit / (1024 * 1024),
            });
        }
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).map_err(|e| Error::Training {
            problem: format!("no randomness for a file name: {e}"),
        })?;
        crate::paths::ensure_private_dir(dir)?;
        let path = dir.join(format!("staged-{}.{extension}", hex::encode(random)));
        let staged = Self { path };
        let mut file = crate::paths::create_new_private_file(&staged.path)?;
        std::io::Write::write_all(&mut file, bytes).map_err(|e| Error::io(&staged.path, e))?;
        Ok(staged)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the staged files in `dir` older than `age`: what a crash left
    /// behind (a staged file is patient text outside the encrypted
    /// history). Younger ones may belong to another window at work.
    pub fn sweep(dir: &Path, age: std::time::Duration) -> usize {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        let now = std::time::SystemTime::now();
        entries
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.file_name().to_string_lossy().starts_with("staged-"))
            .filter(|entry| {
                entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|modified| now.duration_since(modified).is_ok_and(|d| d >= age))
            })
            .filter(|entry| std::fs::remove_file(entry.path()).is_ok())
            .count()
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Sentence vectors for every example: from the cache where it has them,
/// the rest computed in length-grouped batches.
fn embed_all(
    embedder: &Embedder,
    input: &Path,
    examples: &[Example],
    mut cache: Option<&mut EmbeddingCache>,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<Vec<f32>>> {
    const TEXTS_PER_STEP: usize = 256;
    let mut vectors: Vec<Option<Vec<f32>>> = examples
        .iter()
        .map(|e| cache.as_ref().and_then(|c| c.get(&e.text)).cloned())
        .collect();
    let missing: Vec<usize> = (0..examples.len())
        .filter(|&i| vectors[i].is_none())
        .collect();
    let from_cache = examples.len() - missing.len();
    let started = Instant::now();
    progress(Progress::Embedding {
        done: 0,
        total: missing.len(),
        from_cache,
        eta_s: f64::NAN,
    });
    for (step, rows) in missing.chunks(TEXTS_PER_STEP).enumerate() {
        let texts: Vec<&str> = rows.iter().map(|&r| examples[r].text.as_str()).collect();
        let computed = embedder.embed_texts(&texts).map_err(|e| Error::Dataset {
            path: input.to_path_buf(),
            problem: format!(
                "rows {}-{} (counted among the rows kept): {e}",
                rows[0] + 1,
                rows[rows.len() - 1] + 1
            ),
        })?;
        for (&r, v) in rows.iter().zip(computed) {
            if let Some(c) = cache.as_deref_mut() {
                c.insert(&examples[r].text, v.clone());
            }
            vectors[r] = Some(v);
        }
        let done = ((step + 1) * TEXTS_PER_STEP).min(missing.len());
        let per_text = started.elapsed().as_secs_f64() / done as f64;
        progress(Progress::Embedding {
            done,
            total: missing.len(),
            from_cache,
            eta_s: per_text * (missing.len() - done) as f64,
        });
    }
    Ok(vectors.into_iter().flatten().collect())
}

/// A head's lexical part ([`crate::inference::lexical`]), trained and weighed.
struct LexicalPart {
    head: LexicalHead,
    weight: f64,
    /// Log-probabilities `[rows][labels]` of the validation and test parts.
    validation: Vec<Vec<f32>>,
    test: Vec<Vec<f32>>,
    best_epoch: usize,
    epochs: usize,
}

/// Weights of the lexical part tried; the validation part chooses.
const LEXICAL_WEIGHTS: [f64; 6] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6];

/// Largest n-gram head trained (labels × n-grams): 64 MB of weights, about
/// 256 MB with their gradients and the optimiser's two moments.
const MAX_LEXICAL_PARAMETERS: usize = 16 << 20;

/// Trains a linear head on the character n-grams of `texts` (as the encoder
/// reads them), the same way as the encoder's head, and chooses its weight in
/// the mix by `validation_macro_f1` of the mixed validation logits. The inner
/// `Err` says why there is none: no weight beats the encoder's head alone,
/// the training texts share too few n-grams, or too many labels and n-grams.
#[allow(clippy::too_many_arguments)]
fn train_lexical_part(
    texts: &[String],
    truth: &[usize],
    split: &train::Split,
    n_labels: usize,
    seed: u64,
    validation_logits: &[Vec<f32>],
    validation_macro_f1: &dyn Fn(&[Vec<f32>]) -> f64,
    progress: &mut dyn FnMut(Progress),
) -> Result<std::result::Result<LexicalPart, &'static str>> {
    let training_texts: Vec<&str> = split.train.iter().map(|&r| texts[r].as_str()).collect();
    // From the training part only: the held-out parts must not shape it.
    let vocabulary = Vocabulary::build(&training_texts);
    if vocabulary.is_empty() {
        return Ok(Err("the training texts share too few character n-grams"));
    }
    if vocabulary
        .len()
        .checked_mul(n_labels)
        .is_none_or(|parameters| parameters > MAX_LEXICAL_PARAMETERS)
    {
        return Ok(Err("too many labels and n-grams to train it"));
    }
    let rows = SparseRows {
        width: vocabulary.len(),
        rows: texts.iter().map(|t| vocabulary.features(t)).collect(),
    };
    let fit = Fit::new(HeadShape::Linear, seed);
    let max_epochs = fit.max_epochs;
    let started = Instant::now();
    let trained = train::train_head(
        &rows,
        truth,
        split,
        n_labels,
        fit,
        |epoch, validation_loss| {
            let per_epoch = started.elapsed().as_secs_f64() / epoch as f64;
            progress(Progress::Training {
                epoch,
                max_epochs,
                validation_loss,
                eta_s: per_epoch * max_epochs.saturating_sub(epoch) as f64,
            })
        },
    )?;
    let log_probabilities = |rows_of: &[usize]| -> Result<Vec<Vec<f32>>> {
        Ok(trained
            .logits(&rows, rows_of)?
            .iter()
            .map(|l| lexical::log_softmax(l))
            .collect())
    };
    let validation = log_probabilities(&split.validation)?;
    let mut best = (0.0, validation_macro_f1(validation_logits));
    for weight in LEXICAL_WEIGHTS {
        let f1 = validation_macro_f1(&lexical::mix_rows(validation_logits, &validation, weight));
        if f1 > best.1 {
            best = (weight, f1);
        }
    }
    if best.0 == 0.0 {
        return Ok(Err("no weight of it did better on validation"));
    }
    let tensor = |name: &str| {
        trained.tensors.get(name).ok_or_else(|| Error::Training {
            problem: format!("the trained n-gram head has no '{name}'"),
        })
    };
    let head = LexicalHead::new(
        vocabulary,
        tensor("weight")?.to_vec2::<f32>()?,
        tensor("bias")?.to_vec1::<f32>()?,
    );
    Ok(Ok(LexicalPart {
        head,
        weight: best.0,
        validation,
        test: log_probabilities(&split.test)?,
        best_epoch: trained.best_epoch,
        epochs: trained.epochs,
    }))
}

/// Copies a file the pack needs (abbreviation list, encoder adapter) into
/// the pack as `name`.
fn copy_into_pack(source: &Path, out: &Path, name: &str) -> Result<PackFile> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let file = PathBuf::from(name);
    let target = out.join(&file);
    if source.canonicalize().ok() != target.canonicalize().ok() {
        std::fs::copy(source, &target).map_err(|e| Error::io(&target, e))?;
    }
    Ok(PackFile {
        sha256: pack::sha256_file(&target)?,
        file,
    })
}

/// "neoplasms" -> "Neoplasms": a display name for a label id that has none.
fn capitalised(id: &str) -> String {
    let mut chars = id.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::classifier::Classifier;
    use crate::pack::manifest::tests::write_tiny_pack;

    /// Forty examples of two labels in the tiny vocabulary.
    fn examples() -> Vec<Example> {
        let words = ["patient", "with", "and", "."];
        (0..40)
            .map(|i| {
                let (text, label) = if i % 2 == 0 {
                    ("chest pain", "cardiac")
                } else {
                    ("fever cough", "respiratory")
                };
                Example {
                    text: format!("{} {text} {}", words[i % 4], words[(i / 4) % 4]),
                    label: label.into(),
                    group: None,
                }
            })
            .collect()
    }

    /// A models folder whose default pack is the tiny one.
    fn models_dir(root: &Path) -> PathBuf {
        let tiny = write_tiny_pack(root);
        std::fs::rename(tiny, root.join(pack::DEFAULT_PACK)).unwrap();
        root.to_path_buf()
    }

    fn request(examples: Vec<Example>, abbreviations: Option<PathBuf>) -> TrainRequest {
        TrainRequest {
            input: PathBuf::from("mine.csv"),
            examples,
            drop_conflicting: false,
            min_per_label: dataset::MIN_PER_LABEL,
            encoder_dir: PathBuf::new(),
            max_tokens: 10,
            abbreviations,
            encoder_adapter: None,
            shape: HeadShape::Linear,
            learning_rate: None,
            weight_decay: 1e-4,
            seed: 7,
            label_displays: vec![("cardiac".into(), "Heart".into())],
            cache_dir: None,
            out: PathBuf::new(),
            name: "mine".into(),
            version: "0.1.0".into(),
            task: "test".into(),
            license: "local".into(),
            attribution: "test".into(),
            head_name: "category".into(),
            abstain_below: 0.5,
            add_to_pack: false,
            split_out: None,
            split_from: None,
            lexical: false,
        }
    }

    fn staging_folders(models: &Path) -> usize {
        std::fs::read_dir(models)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".staging-")
            })
            .count()
    }

    #[test]
    fn a_new_pack_is_trained_evaluated_and_installed_whole() {
        let dir = tempfile::tempdir().unwrap();
        let models = models_dir(dir.path());
        let mut steps = Vec::new();
        let outcome = train_new_pack(&models, "mine", request(examples(), None), &mut |p| {
            steps.push(p)
        })
        .unwrap();
        assert_eq!(outcome.manifest, models.join("mine/manifest.json"));
        assert!(outcome.report.is_file());
        // 16 distinct texts (24 repeats left out), a fifth of them tested.
        assert_eq!(outcome.removed_duplicates, 24);
        assert_eq!(outcome.test.n, 4);
        assert!(matches!(
            steps.first(),
            Some(Progress::Embedding {
                done: 0,
                total: 16,
                ..
            })
        ));
        assert!(steps
            .iter()
            .any(|p| matches!(p, Progress::Training { epoch: 1, .. })));
        assert_eq!(staging_folders(&models), 0);

        let c = Classifier::load(&models, "mine", None).unwrap();
        let labels: Vec<(&str, &str)> = c
            .head_spec()
            .labels
            .iter()
            .map(|l| (l.id.as_str(), l.display.as_str()))
            .collect();
        assert_eq!(
            labels,
            [("cardiac", "Heart"), ("respiratory", "Respiratory")]
        );
        let shipped = c.head_spec().evaluation.clone().unwrap();
        assert_eq!(shipped.macro_f1, outcome.test.macro_f1);

        // The name is taken now: refused, and the pack is untouched.
        let manifest = std::fs::read(models.join("mine/manifest.json")).unwrap();
        let err = train_new_pack(&models, "mine", request(examples(), None), &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("already installed"), "{err}");
        assert_eq!(
            std::fs::read(models.join("mine/manifest.json")).unwrap(),
            manifest
        );
    }

    #[test]
    fn a_split_file_that_leaves_a_label_untrained_is_refused_naming_the_label() {
        let dir = tempfile::tempdir().unwrap();
        let models = models_dir(dir.path());
        let split = dir.path().join("split.csv");
        let mut rows = vec!["part,label,group,text".to_string()];
        let mut seen = std::collections::HashSet::new();
        for (i, e) in examples().into_iter().enumerate() {
            if seen.insert(e.text.clone()) {
                let part = match (e.label.as_str(), i % 3) {
                    ("cardiac", _) => "test",
                    (_, 0) => "validation",
                    _ => "train",
                };
                rows.push(format!("{part},{},,{}", e.label, e.text));
            }
        }
        std::fs::write(&split, rows.join("\n")).unwrap();
        let mut from_file = request(examples(), None);
        from_file.split_from = Some(split);
        let err = train_new_pack(&models, "mine", from_file, &mut |_| {})
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("label 'cardiac' has no examples in the training part"),
            "{err}"
        );
        assert!(!models.join("mine").exists());
    }

    #[test]
    fn a_bad_name_or_file_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let models = models_dir(dir.path());
        for name in ["../up", ".hidden", "a/b", ""] {
            let err = train_new_pack(&models, name, request(examples(), None), &mut |_| {})
                .unwrap_err()
                .to_string();
            assert!(err.contains("cannot name a pack"), "{name}: {err}");
        }
        let one_label: Vec<Example> = examples()
            .into_iter()
            .filter(|e| e.label == "cardiac")
            .collect();
        let err = train_new_pack(&models, "mine", request(one_label, None), &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("at least two labels"), "{err}");
        assert!(!models.join("mine").exists());
        assert_eq!(staging_folders(&models), 0);
    }

    #[test]
    fn arguments_that_would_make_a_broken_or_useless_pack_are_refused_before_training() {
        let dir = tempfile::tempdir().unwrap();
        let models = models_dir(dir.path());
        type Change = fn(&mut TrainRequest);
        let cases: [(Change, &str); 11] = [
            (|r| r.head_name = "a/b".into(), "cannot name a head"),
            (|r| r.abstain_below = 7.0, "abstain-below"),
            (|r| r.abstain_below = f64::NAN, "abstain-below"),
            (|r| r.learning_rate = Some(f64::NAN), "learning-rate"),
            (|r| r.learning_rate = Some(-0.1), "learning-rate"),
            (|r| r.weight_decay = f64::INFINITY, "weight-decay"),
            (|r| r.shape = HeadShape::Mlp { hidden: 0 }, "mlp-hidden"),
            (|r| r.max_tokens = 2, "max-tokens"),
            (|r| r.min_per_label = 0, "min-examples"),
            (|r| r.task = " ".into(), "task"),
            (|r| r.version = String::new(), "version"),
        ];
        for (change, problem) in cases {
            let mut bad = request(examples(), None);
            change(&mut bad);
            let mut progressed = false;
            let err = train_new_pack(&models, "mine", bad, &mut |_| progressed = true)
                .unwrap_err()
                .to_string();
            assert!(err.contains(problem), "{problem}: {err}");
            assert!(!progressed, "{problem}: training started");
            assert!(!models.join("mine").exists());
        }
        assert_eq!(staging_folders(&models), 0);
    }

    /// Changes the last byte of pack `pack`'s file `file` and checks that
    /// loading the pack is refused, naming the file.
    fn refused_once_damaged(models: &Path, pack: &str, file: &Path) {
        let path = models.join(pack).join(file);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        std::fs::write(&path, bytes).unwrap();
        let err = Classifier::load(models, pack, None)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains(&*file.to_string_lossy()) && err.contains("sha256 mismatch"),
            "{err}"
        );
    }

    #[test]
    fn a_pack_trained_with_an_encoder_adapter_applies_it_at_load_and_verifies_it() {
        let dir = tempfile::tempdir().unwrap();
        let models = models_dir(dir.path());
        let dev = candle_core::Device::Cpu;
        let a = candle_core::Tensor::randn(0f32, 0.5, (2, 8), &dev).unwrap();
        let b = candle_core::Tensor::randn(0f32, 0.5, (8, 2), &dev).unwrap();
        let layer = "encoder.layer.0.attention.self.query";
        let adapter = dir.path().join("adapter.safetensors");
        candle_core::safetensors::save(
            &std::collections::HashMap::from([
                (format!("{layer}.lora_a"), a.clone()),
                (format!("{layer}.lora_b"), b.clone()),
            ]),
            &adapter,
        )
        .unwrap();
        let mut adapted_request = request(examples(), None);
        adapted_request.encoder_adapter = Some(adapter);
        train_new_pack(&models, "adapted", adapted_request, &mut |_| {}).unwrap();
        train_new_pack(&models, "plain", request(examples(), None), &mut |_| {}).unwrap();
        let adapted = Classifier::load(&models, "adapted", None).unwrap();
        assert!(adapted.pack().manifest.encoder.adapter.is_some());
        assert!(models.join("adapted/encoder-adapter.safetensors").is_file());

        // The same vectors as an encoder whose weight already holds W + B·A.
        let shared = adapted.pack().encoder_dir();
        let merged = dir.path().join("merged");
        std::fs::create_dir_all(&merged).unwrap();
        for file in ["config.json", "tokenizer.json"] {
            std::fs::copy(shared.join(file), merged.join(file)).unwrap();
        }
        let mut weights =
            candle_core::safetensors::load(shared.join("model.safetensors"), &dev).unwrap();
        let key = format!("{layer}.weight");
        let w = (&weights[&key] + b.matmul(&a).unwrap()).unwrap();
        weights.insert(key, w);
        candle_core::safetensors::save(&weights, merged.join("model.safetensors")).unwrap();
        let spec = &adapted.pack().manifest.encoder;
        let by_hand = Embedder::load(
            &merged,
            None,
            spec.architecture,
            spec.pooling,
            spec.max_tokens,
        )
        .unwrap();
        let text = ["patient with chest pain"];
        let expected = by_hand.embed_texts(&text).unwrap();
        let got = adapted.embedder().embed_texts(&text).unwrap();
        let max_diff = |x: &[f32], y: &[f32]| {
            x.iter()
                .zip(y)
                .map(|(p, q)| (p - q).abs())
                .fold(0f32, f32::max)
        };
        assert!(max_diff(&got[0], &expected[0]) < 1e-5);
        let plain = Classifier::load(&models, "plain", None).unwrap();
        let unadapted = plain.embedder().embed_texts(&text).unwrap();
        assert!(max_diff(&got[0], &unadapted[0]) > 1e-3);

        // A replaced adapter is refused, named, before any text is read.
        refused_once_damaged(&models, "adapted", Path::new("encoder-adapter.safetensors"));
    }

    #[test]
    fn a_pack_trained_with_abbreviations_spells_them_out_when_classifying() {
        let dir = tempfile::tempdir().unwrap();
        let models = models_dir(dir.path());
        let list = dir.path().join("list.csv");
        std::fs::write(&list, "abbreviation,expansion\nFC,fever cough\n").unwrap();
        train_new_pack(
            &models,
            "short",
            request(examples(), Some(list)),
            &mut |_| {},
        )
        .unwrap();
        train_new_pack(&models, "plain", request(examples(), None), &mut |_| {}).unwrap();
        let short = Classifier::load(&models, "short", None).unwrap();
        assert!(short.pack().manifest.abbreviations.is_some());
        assert!(models.join("short/abbreviations.csv").is_file());
        // The list changes what the encoder sees: "FC" is read as
        // "FC (fever cough)". (Vectors, not probabilities: the tiny random
        // model's probabilities can saturate at 1 and 0.)
        let plain = Classifier::load(&models, "plain", None).unwrap();
        let vector = |c: &Classifier, text: &str| c.embedder().embed_texts(&[text]).unwrap();
        let expanded = vector(&short, "patient FC");
        let written_out = vector(&plain, "patient FC (fever cough)");
        let max_diff = expanded[0]
            .iter()
            .zip(&written_out[0])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(max_diff < 1e-5, "{max_diff}");
        assert_ne!(vector(&plain, "patient FC"), written_out);
        // Evidence stays on the text as written: no span beyond it.
        let evidence = short.classify_with_evidence("patient FC").unwrap().evidence;
        assert!(evidence.iter().all(|w| w.end <= "patient FC".len()));
        assert!(evidence.iter().any(|w| (w.start, w.end) == (8, 10)));
    }

    /// Texts the tiny encoder cannot tell apart (its vocabulary has none of
    /// the words that decide the label: they all read as `[UNK]`), whose
    /// character n-grams can.
    fn examples_only_words_tell_apart() -> Vec<Example> {
        let words = [
            ("cardiomyopathy", "cardiac"),
            ("tachycardia", "cardiac"),
            ("pneumonitis", "respiratory"),
            ("bronchiolitis", "respiratory"),
        ];
        (0..80)
            .map(|i| {
                let (word, label) = words[i % 4];
                Example {
                    text: format!("patient with {word} x{i}"),
                    label: label.into(),
                    group: None,
                }
            })
            .collect()
    }

    #[test]
    fn a_lexical_part_is_kept_where_it_helps_and_used_when_classifying() {
        let dir = tempfile::tempdir().unwrap();
        let models = models_dir(dir.path());
        let plain = train_new_pack(
            &models,
            "plain",
            request(examples_only_words_tell_apart(), None),
            &mut |_| {},
        )
        .unwrap();
        let mut with_words = request(examples_only_words_tell_apart(), None);
        with_words.lexical = true;
        let mixed = train_new_pack(&models, "mixed", with_words, &mut |_| {}).unwrap();
        assert!(
            mixed.test.macro_f1 > 0.9 && mixed.test.macro_f1 > plain.test.macro_f1,
            "{} against {}",
            mixed.test.macro_f1,
            plain.test.macro_f1
        );
        let report = std::fs::read_to_string(&mixed.report).unwrap();
        assert!(report.contains("character n-grams"), "{report}");

        let c = Classifier::load(&models, "mixed", None).unwrap();
        let spec = c.head_spec().lexical.clone().unwrap();
        assert!(spec.weight > 0.0 && spec.weight < 1.0);
        assert!(Classifier::load(&models, "plain", None)
            .unwrap()
            .head_spec()
            .lexical
            .is_none());
        for (text, label) in [
            ("patient with tachycardia", "cardiac"),
            ("patient with bronchiolitis", "respiratory"),
        ] {
            assert_eq!(c.classify(text).unwrap().top.id, label, "{text}");
            let explained = c.classify_with_evidence(text).unwrap();
            assert_eq!(explained.top.id, label);
            assert!(!explained.evidence.is_empty());
        }
        // Together, each text is mixed with its own n-gram row.
        let texts = [
            "patient with tachycardia",
            &"patient with bronchiolitis and cough ".repeat(20),
        ];
        let together = c.classify_batch(&texts).unwrap();
        for (text, got) in texts.iter().zip(together) {
            let (got, alone) = (got.unwrap(), c.classify(text).unwrap());
            assert_eq!(got.windows, alone.windows);
            for (g, a) in got.probabilities.iter().zip(&alone.probabilities) {
                assert!((g.probability - a.probability).abs() < 1e-5, "{g:?} {a:?}");
            }
        }

        // A replaced n-gram head is refused, named.
        assert_eq!(spec.file, Path::new("category-lexical.safetensors"));
        refused_once_damaged(&models, "mixed", &spec.file);
    }

    #[test]
    fn a_mixed_head_gives_what_its_two_parts_say_on_the_spelled_out_text() {
        let dir = tempfile::tempdir().unwrap();
        let models = models_dir(dir.path());
        let list = dir.path().join("list.csv");
        std::fs::write(&list, "abbreviation,expansion\nTC,tachycardia\n").unwrap();
        let mut with_words = request(examples_only_words_tell_apart(), Some(list));
        with_words.lexical = true;
        train_new_pack(&models, "mixed", with_words, &mut |_| {}).unwrap();
        let c = Classifier::load(&models, "mixed", None).unwrap();
        let spec = c.head_spec().clone();
        let part = spec.lexical.clone().unwrap();
        let lexical =
            LexicalHead::load(&models.join("mixed").join(&part.file), spec.labels.len()).unwrap();

        let text = "patient with TC";
        let windows = c.embedder().tokenize(text).unwrap().windows;
        assert_eq!(windows.len(), 1);
        // The encoder's part, as logits: rebuilding them from probabilities
        // (T · ln p) fails when the encoder is so sure that a probability
        // underflows to 0.
        let t = spec.temperature;
        let logits = c.window_logits(&windows).unwrap().remove(0);
        let read = lexical.log_probabilities("patient with TC (tachycardia)");
        let expected = train::softmax(&lexical::mix_rows(&[logits], &[read], part.weight)[0], t);
        let got = c.classify(text).unwrap();
        for (label, e) in spec.labels.iter().zip(expected) {
            let g = got
                .probabilities
                .iter()
                .find(|p| p.id == label.id)
                .unwrap()
                .probability;
            assert!((g - e).abs() < 1e-4, "{}: {g} against {e}", label.id);
        }
        // Only the expansion's n-grams say "cardiac".
        assert_eq!(got.top.id, "cardiac");
    }

    #[test]
    fn staged_files_a_crash_left_are_swept_and_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        let left = dir.path().join("staged-0011223344556677.csv");
        std::fs::write(&left, "note,label\n").unwrap();
        let other = dir.path().join("notes.csv");
        std::fs::write(&other, "kept").unwrap();
        let young = StagedFile::write(dir.path(), "b.csv", b"x").unwrap();
        // Only files at least this old go: the one just staged stays.
        assert_eq!(
            StagedFile::sweep(dir.path(), std::time::Duration::from_secs(3600)),
            0
        );
        assert_eq!(StagedFile::sweep(dir.path(), std::time::Duration::ZERO), 2);
        assert!(!left.exists() && !young.path().exists() && other.exists());
        assert_eq!(
            StagedFile::sweep(&dir.path().join("absent"), std::time::Duration::ZERO),
            0
        );
    }

    #[test]
    fn a_staged_file_is_private_and_removed_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let staged = StagedFile::write(dir.path(), "notes.JSONL", b"{}").unwrap();
        let path = staged.path().to_path_buf();
        assert_eq!(path.extension().unwrap(), "jsonl");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        drop(staged);
        assert!(!path.exists());
        let csv = StagedFile::write(dir.path(), "../../etc/passwd", b"a").unwrap();
        assert_eq!(csv.path().parent().unwrap(), dir.path());
        assert_eq!(csv.path().extension().unwrap(), "csv");
    }
}
