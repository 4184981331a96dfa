//! Text in, calibrated label probabilities out: tokenizer → encoder → pooling
//! → head, over as many windows as the text needs.

use std::path::Path;

use candle_core::{Device, Tensor, Var, D};
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::encoder::{bert, distilbert, Encoder};
use crate::inference::evidence::{words_from_window_scores, WordEvidence};
use crate::inference::head::{
    calibrated_probabilities, Head, LinearHead, MlpHead, SequenceClassificationHead,
};
use crate::inference::lexical::{self, LexicalHead};
use crate::inference::pooling::{cls_pool, mean_pool_normalized};
use crate::pack::manifest::{Architecture, HeadKind, HeadSpec, Pack, Pooling};
use crate::text::abbreviations::Abbreviations;
use crate::text::tokenize::{TextTokenizer, Tokenized, Window};
use crate::{text::validation as text, Error, Result};

/// Path points of integrated gradients for evidence: as many as fit
/// [`EVIDENCE_TOKENS`] tokens per window, from 2 to 8. Plain gradient ×
/// input (one point) was noisy: on a chest-pain note its strongest "word"
/// was the patient's name, split into rare word pieces. All points go in one
/// batched forward and backward pass, whose memory grows with points ×
/// tokens: eight points on a 256-token window took 670 ms and 1.1 GB.
fn evidence_steps(window_tokens: usize) -> usize {
    (EVIDENCE_TOKENS / window_tokens.max(1)).clamp(2, 8)
}

const EVIDENCE_TOKENS: usize = 512;

/// Tokens (padding included) in one forward pass of [`Classifier::classify_batch`]:
/// 32 windows of 256, whose activations take about 50 MB.
pub const TOKENS_PER_BATCH: usize = 8192;

/// Cuts windows sorted by length into consecutive groups whose padded size
/// (count × longest) stays within `budget`; a window longer than the budget
/// gets a group of its own.
fn length_groups<'a, T>(
    sorted: &'a [(T, &'a Window)],
    budget: usize,
) -> Vec<&'a [(T, &'a Window)]> {
    let mut groups = Vec::new();
    let mut start = 0;
    for end in 1..=sorted.len() {
        let longest = sorted[end - 1].1.len();
        if end - start > 1 && (end - start) * longest > budget {
            groups.push(&sorted[start..end - 1]);
            start = end - 1;
        }
    }
    if start < sorted.len() {
        groups.push(&sorted[start..]);
    }
    groups
}

/// One label with its probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelScore {
    pub id: String,
    pub display: String,
    pub probability: f32,
}

/// The result of classifying one text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Classification {
    pub pack: String,
    pub pack_version: String,
    pub head: String,
    /// Identifies exactly what made this result: sha256 over the sha256 of
    /// the encoder's weights, its adapter, the head, the head's n-gram part
    /// and its weight, the abbreviation list, and the head's temperature
    /// (kept with history records and audit entries).
    #[serde(default)]
    pub model_sha256: String,
    /// The most probable label.
    pub top: LabelScore,
    /// Every label, most probable first.
    pub probabilities: Vec<LabelScore>,
    /// True when the top probability is below the head's abstain threshold.
    pub needs_review: bool,
    /// Windows the text was split into (1 for anything that fits the model).
    pub windows: usize,
    pub tokens: usize,
    /// The words of the text with how much each drove the top label; empty
    /// unless asked for ([`Classifier::classify_with_evidence`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<WordEvidence>,
}

/// Tokenizer + encoder + pooling: text to unit sentence vectors, one per
/// window. Shared by classification and head training, so a head is trained on
/// exactly the vectors it will see.
pub struct Embedder {
    tokenizer: TextTokenizer,
    encoder: Box<dyn Encoder>,
    pooling: Pooling,
    /// Spelled out before tokenizing, when the pack carries a list.
    abbreviations: Option<Abbreviations>,
}

impl Embedder {
    /// Loads the encoder in `dir` (`config.json`, `model.safetensors`,
    /// `tokenizer.json`), with `adapter`'s deltas added to its weights, and
    /// windows of at most `max_tokens`.
    pub fn load(
        dir: &Path,
        adapter: Option<&Path>,
        architecture: Architecture,
        pooling: Pooling,
        max_tokens: usize,
    ) -> Result<Self> {
        let encoder: Box<dyn Encoder> = match architecture {
            Architecture::Bert => Box::new(bert::load(dir, adapter)?),
            Architecture::Distilbert => Box::new(distilbert::load(dir, adapter)?),
        };
        if max_tokens > encoder.max_positions() {
            return Err(Error::pack(
                dir,
                format!(
                    "max_tokens {max_tokens} exceeds the encoder's {} positions",
                    encoder.max_positions()
                ),
            ));
        }
        let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json"), max_tokens)?;
        Ok(Self {
            tokenizer,
            encoder,
            pooling,
            abbreviations: None,
        })
    }

    /// Spells out the abbreviations of `list` in every text before
    /// tokenizing (see [`crate::text::abbreviations`]).
    pub fn with_abbreviations(mut self, list: Option<Abbreviations>) -> Self {
        self.abbreviations = list;
        self
    }

    pub fn hidden_size(&self) -> usize {
        self.encoder.hidden_size()
    }

    /// `text` as the heads read it: with the expansions of its
    /// abbreviations appended, when the pack carries a list.
    pub fn spelled_out<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        match &self.abbreviations {
            None => text.into(),
            Some(list) => list.expand(text).text.into(),
        }
    }

    /// Tokenizes `text` into windows.
    pub fn tokenize(&self, text: &str) -> Result<Tokenized> {
        match &self.abbreviations {
            None => self.tokenizer.tokenize(text),
            Some(list) => {
                let expanded = list.expand(text);
                let mut tokenized = self.tokenizer.tokenize(&expanded.text)?;
                tokenized.credit_expansions(&expanded);
                Ok(tokenized)
            }
        }
    }

    /// Pooled vectors `[windows, hidden]` for a batch of windows, padded to the
    /// longest (unit length with mean pooling).
    pub fn embed_windows(&self, windows: &[Window]) -> Result<Tensor> {
        let longest = windows.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(windows.len() * longest);
        let mut mask = Vec::with_capacity(windows.len() * longest);
        for w in windows {
            ids.extend_from_slice(w);
            ids.extend(std::iter::repeat_n(0u32, longest - w.len()));
            mask.extend(std::iter::repeat_n(1u32, w.len()));
            mask.extend(std::iter::repeat_n(0u32, longest - w.len()));
        }
        let shape = (windows.len(), longest);
        let ids = Tensor::from_vec(ids, shape, &Device::Cpu)?;
        let mask = Tensor::from_vec(mask, shape, &Device::Cpu)?;
        let hidden = self.encoder.forward(&ids, &mask)?;
        self.pool(&hidden, &mask)
    }

    fn pool(&self, hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
        match self.pooling {
            Pooling::Mean => mean_pool_normalized(hidden, mask),
            Pooling::Cls => cls_pool(hidden),
        }
    }

    /// Integrated gradients for one window, along the straight path from
    /// all-zero word embeddings to the real ones in `steps` equal steps
    /// (right Riemann sum): `e · mean_k ∇target(k/steps · e)` for each
    /// token's word embedding `e`. `target` maps the pooled vectors of the
    /// `steps` path points, `[steps, hidden]`, to one scalar (their sum of the
    /// quantity explained). With `steps == 1` this is plain gradient × input.
    /// All steps run as one batch: one forward and one backward pass.
    fn token_attributions(
        &self,
        window: &Window,
        steps: usize,
        target: impl Fn(&Tensor) -> Result<Tensor> + Sync,
    ) -> Result<Vec<f32>> {
        let steps = steps.max(1);
        // Same pool as the forward pass; see runtime::pool.
        crate::machine::runtime::pool()?.install(|| {
            let ids = Tensor::new(window.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
            let word = self.encoder.word_embeddings(&ids)?;
            let alphas: Vec<f32> = (1..=steps).map(|k| k as f32 / steps as f32).collect();
            let alphas = Tensor::from_vec(alphas, (steps, 1, 1), &Device::Cpu)?;
            let path = Var::from_tensor(&word.broadcast_mul(&alphas)?)?;
            let mask = ids.ones_like()?.repeat((steps, 1))?;
            let hidden = self
                .encoder
                .forward_from_word_embeddings(path.as_tensor(), &mask)?;
            let gradients = target(&self.pool(&hidden, &mask)?)?.backward()?;
            let gradient = gradients.get(path.as_tensor()).ok_or_else(|| {
                Error::ModelInput("the prediction does not depend on the input tokens".into())
            })?;
            let mean_gradient = gradient.mean_keepdim(0)?;
            Ok((mean_gradient * word)?.sum(2)?.get(0)?.to_vec1::<f32>()?)
        })
    }

    /// One unit vector per text, the normalised mean of its windows' pooled
    /// vectors; windows of all texts grouped by length under
    /// [`TOKENS_PER_BATCH`] tokens per forward pass, so short texts (code
    /// titles, one-line statements) go many at a time.
    pub fn embed_texts<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Vec<f32>>> {
        let tokenized = texts
            .iter()
            .map(|t| self.read(t.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        let windows = tokenized
            .iter()
            .enumerate()
            .flat_map(|(i, t)| t.windows.iter().map(move |w| (i, w)))
            .collect();
        let mut sums = vec![vec![0f32; self.hidden_size()]; texts.len()];
        self.pool_in_length_groups(windows, |rows_of, pooled| {
            accumulate(&mut sums, rows_of, pooled.to_vec2::<f32>()?);
            Ok(())
        })?;
        Ok(sums.into_iter().map(normalised).collect())
    }

    /// Validates and tokenizes `text`.
    fn read(&self, text: &str) -> Result<Tokenized> {
        text::validate(text)?;
        self.tokenize(text)
    }

    /// Pools `windows`, each with the index of the text it belongs to, in
    /// groups sorted by length, at most [`TOKENS_PER_BATCH`] padded tokens
    /// each, and hands `each` the text index of every row with the group's
    /// pooled vectors `[rows, hidden]`.
    fn pool_in_length_groups(
        &self,
        mut windows: Vec<(usize, &Window)>,
        mut each: impl FnMut(&[usize], &Tensor) -> Result<()>,
    ) -> Result<()> {
        windows.sort_by_key(|(_, w)| w.len());
        for group in length_groups(&windows, TOKENS_PER_BATCH) {
            let batch: Vec<Window> = group.iter().map(|(_, w)| (*w).clone()).collect();
            let rows_of: Vec<usize> = group.iter().map(|(text, _)| *text).collect();
            each(&rows_of, &self.embed_windows(&batch)?)?;
        }
        Ok(())
    }
}

/// The one item of a one-text call (`Error::EmptyText` cannot happen: every
/// call here passes exactly one text).
fn only<T>(mut items: Vec<T>) -> Result<T> {
    items.pop().ok_or(Error::EmptyText)
}

/// Adds each row to the sums of the text it belongs to.
fn accumulate(sums: &mut [Vec<f32>], rows_of: &[usize], rows: Vec<Vec<f32>>) {
    for (&text, row) in rows_of.iter().zip(rows) {
        for (s, v) in sums[text].iter_mut().zip(row) {
            *s += v;
        }
    }
}

/// `v` scaled to unit length (left as is when it is all zeros).
fn normalised(v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.into_iter().map(|x| x / norm).collect()
}

/// A text on its way through the heads: read (validated, tokenized, its
/// n-gram parts scored) by [`Classifier::begin`], run a slice of windows at
/// a time by [`Classifier::advance`], summed up by [`Classifier::finish`].
///
/// A text's result is the mean of its windows' probabilities, so it does not
/// depend on which passes its windows ran in: a batch runs them all at once,
/// the inference worker a few of every request per round, so that one
/// request with long notes cannot hold it (see [`crate::inference::worker`]). The text
/// itself is not kept; its token ids, which spell it out, are wiped when
/// this is dropped.
pub(crate) struct Pending {
    tokenized: Tokenized,
    heads: Vec<HeadSums>,
    /// Windows run so far: the first `done` of `tokenized.windows`.
    done: usize,
}

/// What a [`Pending`] text holds for one head.
struct HeadSums {
    head: usize,
    /// The log-probabilities of the head's n-gram part for the whole text,
    /// mixed into every window's scores (`None`: the head has none).
    lexical: Option<Vec<f32>>,
    /// The sum of the probabilities of the windows run so far.
    sums: Vec<f32>,
}

impl Pending {
    /// Tokens in the text, as in [`Classification::tokens`].
    pub(crate) fn tokens(&self) -> usize {
        self.tokenized.tokens
    }

    /// The windows not run yet, in order.
    pub(crate) fn windows_left(&self) -> &[Window] {
        self.tokenized.windows.get(self.done..).unwrap_or_default()
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.tokenized.windows.zeroize();
    }
}

/// A loaded pack, ready to classify with any of its heads.
pub struct Classifier {
    pack: Pack,
    embedder: Embedder,
    /// Every head of the pack, loaded and checked; they share the encoder,
    /// so one forward pass feeds them all.
    heads: Vec<LoadedHead>,
    /// The head `classify` answers with.
    selected: usize,
}

struct LoadedHead {
    spec: HeadSpec,
    head: Box<dyn Head>,
    /// The character n-gram part and its weight ([`crate::inference::lexical`]).
    lexical: Option<(LexicalHead, f64)>,
    /// See [`Classification::model_sha256`].
    model_sha256: String,
}

impl Classifier {
    /// Loads the pack `pack_name` (a name inside `models_dir`, or a path) with
    /// its head `head` (the first head when `None`).
    pub fn load(models_dir: &Path, pack_name: &str, head: Option<&str>) -> Result<Self> {
        let pack = Pack::find(models_dir, pack_name)?;
        Self::from_pack(pack, head)
    }

    /// Loads the encoder and every head of `pack` (so a pack with one bad
    /// head is refused whole), answering with `head` (the first when `None`).
    pub fn from_pack(pack: Pack, head: Option<&str>) -> Result<Self> {
        let started = std::time::Instant::now();
        let selected_name = pack.head(head)?.name.clone();
        let spec = &pack.manifest.encoder;
        let adapter = spec.adapter.as_ref().map(|a| pack.dir.join(&a.file));
        let embedder = Embedder::load(
            &pack.encoder_dir(),
            adapter.as_deref(),
            spec.architecture,
            spec.pooling,
            spec.max_tokens,
        )?
        .with_abbreviations(pack.abbreviations()?);
        let hidden = embedder.hidden_size();
        let heads = pack
            .manifest
            .heads
            .iter()
            .map(|head_spec| {
                let path = pack.dir.join(&head_spec.file);
                let labels = head_spec.labels.len();
                let head: Box<dyn Head> = match head_spec.kind {
                    HeadKind::Linear => Box::new(LinearHead::load(&path, hidden, labels)?),
                    HeadKind::Mlp => Box::new(MlpHead::load(&path, hidden, labels)?),
                    HeadKind::SequenceClassification => Box::new(SequenceClassificationHead::load(
                        &path,
                        spec.architecture,
                        hidden,
                        labels,
                    )?),
                };
                let lexical = head_spec
                    .lexical
                    .as_ref()
                    .map(|l| {
                        LexicalHead::load(&pack.dir.join(&l.file), labels).map(|h| (h, l.weight))
                    })
                    .transpose()?;
                Ok(LoadedHead {
                    spec: head_spec.clone(),
                    head,
                    lexical,
                    model_sha256: pack.manifest.model_sha256(head_spec),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let selected = heads
            .iter()
            .position(|h| h.spec.name == selected_name)
            .unwrap_or(0);
        tracing::info!(
            event = "pack_load",
            pack = %pack.manifest.name,
            version = %pack.manifest.version,
            head = %selected_name,
            model_sha256 = heads.get(selected).map_or("", |h| h.model_sha256.as_str()),
            ms = started.elapsed().as_secs_f64() * 1000.0
        );
        Ok(Self {
            pack,
            embedder,
            heads,
            selected,
        })
    }

    pub fn pack(&self) -> &Pack {
        &self.pack
    }

    pub fn head_spec(&self) -> &HeadSpec {
        &self.heads[self.selected].spec
    }

    /// Classifies `text`. A text longer than the model's window is split into
    /// overlapping windows; their probabilities are averaged, so every part of
    /// the note counts and none is silently cut.
    pub fn classify(&self, text: &str) -> Result<Classification> {
        self.classify_batch(&[text])?
            .pop()
            .unwrap_or(Err(Error::EmptyText))
    }

    /// [`Classifier::classify`], plus the evidence for the top label: every
    /// word of the text with its share in the decision (see [`crate::inference::evidence`]).
    pub fn classify_with_evidence(&self, text: &str) -> Result<Classification> {
        let mut pending = self.begin(text)?;
        self.run_to_end(&mut [&mut pending])?;
        let mut classification = self.finish(&pending)?;
        let top = self
            .head_spec()
            .labels
            .iter()
            .position(|l| l.id == classification.top.id)
            .unwrap_or(0);
        let head = &self.heads[self.selected];
        // The n-gram part is the same at every path point: the evidence is
        // the encoder's, the words as it read them.
        let lexical = pending
            .heads
            .first()
            .and_then(|h| h.lexical.as_deref())
            .map(|row| Tensor::from_slice(row, (1, row.len()), &Device::Cpu))
            .transpose()?;
        // Summed over the path points of integrated gradients.
        let log_p_top = |pooled: &Tensor| -> Result<Tensor> {
            let scores = self.head_scores(self.selected, pooled, lexical.as_ref())?;
            let logits = (scores / head.spec.temperature)?;
            Ok(candle_nn::ops::log_softmax(&logits, D::Minus1)?
                .narrow(1, top, 1)?
                .sum_all()?)
        };
        let started = std::time::Instant::now();
        let window_scores = pending
            .tokenized
            .windows
            .iter()
            .map(|w| {
                self.embedder
                    .token_attributions(w, evidence_steps(w.len()), log_p_top)
            })
            .collect::<Result<Vec<_>>>()?;
        classification.evidence = words_from_window_scores(&pending.tokenized, &window_scores);
        tracing::info!(
            event = "evidence",
            windows = pending.tokenized.windows.len(),
            ms = started.elapsed().as_secs_f64() * 1000.0
        );
        Ok(classification)
    }

    /// Classifies several texts together, the way a batch job should run:
    /// every window of every text is sorted by length and cut into groups of
    /// at most [`TOKENS_PER_BATCH`] tokens (padded), so one forward pass
    /// serves many texts and short windows are not padded to the length of
    /// long ones. The outer error is an engine failure; each text gets its
    /// own result, so one empty text does not fail the others.
    pub fn classify_batch<S: AsRef<str>>(
        &self,
        texts: &[S],
    ) -> Result<Vec<Result<Classification>>> {
        let mut pending: Vec<Result<Pending>> =
            texts.iter().map(|t| self.begin(t.as_ref())).collect();
        let mut read: Vec<&mut Pending> = pending.iter_mut().flatten().collect();
        self.run_to_end(&mut read)?;
        Ok(pending.into_iter().map(|p| self.finish(&p?)).collect())
    }

    /// Classifies `text` with every head of the pack from one forward pass
    /// (an ICD pack's chapter and block, say), in manifest order.
    pub fn classify_every_head(&self, text: &str) -> Result<Vec<Classification>> {
        let all: Vec<usize> = (0..self.heads.len()).collect();
        let mut pending = self.begin_with(text, &all)?;
        self.run_to_end(&mut [&mut pending])?;
        self.finish_heads(&pending)
    }

    /// Reads `text` for the head `classify` answers with: everything done
    /// before the encoder runs (see [`Pending`]).
    pub(crate) fn begin(&self, text: &str) -> Result<Pending> {
        self.begin_with(text, &[self.selected])
    }

    /// Reads `text` for each head in `heads`.
    fn begin_with(&self, text: &str, heads: &[usize]) -> Result<Pending> {
        let tokenized = self.embedder.read(text)?;
        let heads = heads
            .iter()
            .map(|&h| HeadSums {
                head: h,
                lexical: self.heads[h].lexical.as_ref().map(|(lexical, _)| {
                    lexical.log_probabilities(&self.embedder.spelled_out(text))
                }),
                sums: vec![0f32; self.heads[h].spec.labels.len()],
            })
            .collect();
        Ok(Pending {
            tokenized,
            heads,
            done: 0,
        })
    }

    /// Runs every window left of `texts`.
    fn run_to_end(&self, texts: &mut [&mut Pending]) -> Result<()> {
        let mut work: Vec<(&mut Pending, usize)> = texts
            .iter_mut()
            .map(|p| {
                let left = p.windows_left().len();
                (&mut **p, left)
            })
            .collect();
        self.advance(&mut work)
    }

    /// Runs the next `n` windows of each text `(text, n)`, all texts' windows
    /// in one set of forward passes grouped by length (see
    /// [`Classifier::classify_batch`]), and adds their probabilities to each
    /// text's sums. The texts must have been read for the same heads.
    pub(crate) fn advance(&self, work: &mut [(&mut Pending, usize)]) -> Result<()> {
        let started = std::time::Instant::now();
        let Some(((first, _), rest)) = work.split_first() else {
            return Ok(());
        };
        let heads: Vec<usize> = first.heads.iter().map(|h| h.head).collect();
        if rest
            .iter()
            .any(|(p, _)| !p.heads.iter().map(|h| h.head).eq(heads.iter().copied()))
        {
            return Err(Error::Engine(
                "texts read for different heads cannot run together".into(),
            ));
        }
        let windows: Vec<(usize, &Window)> = work
            .iter()
            .enumerate()
            .flat_map(|(i, (p, n))| p.windows_left().iter().take(*n).map(move |w| (i, w)))
            .collect();
        let (count, window_tokens) = (
            windows.len(),
            windows.iter().map(|(_, w)| w.len()).sum::<usize>(),
        );
        // added[slot][text][label], a slot per head.
        let mut added: Vec<Vec<Vec<f32>>> = first
            .heads
            .iter()
            .map(|h| vec![vec![0f32; h.sums.len()]; work.len()])
            .collect();
        self.embedder
            .pool_in_length_groups(windows, |rows_of, pooled| {
                for (slot, &h) in heads.iter().enumerate() {
                    let lexical =
                        self.lexical_rows(h, rows_of.iter().map(|&i| &work[i].0.heads[slot]))?;
                    accumulate(
                        &mut added[slot],
                        rows_of,
                        self.head_probabilities(h, pooled, lexical.as_ref())?,
                    );
                }
                Ok(())
            })?;
        for (slot, per_text) in added.into_iter().enumerate() {
            for ((p, _), sums) in work.iter_mut().zip(per_text) {
                for (s, a) in p.heads[slot].sums.iter_mut().zip(sums) {
                    *s += a;
                }
            }
        }
        for (p, n) in work.iter_mut() {
            p.done = (p.done + *n).min(p.tokenized.windows.len());
        }
        // Sizes and timings only: never text or labels (see crate::machine::logging).
        tracing::info!(
            event = "classify",
            texts = work.len(),
            windows = count,
            window_tokens,
            heads = heads.len(),
            ms = started.elapsed().as_secs_f64() * 1000.0
        );
        Ok(())
    }

    /// The classification of a text read by [`Classifier::begin`] whose
    /// windows have all run.
    pub(crate) fn finish(&self, pending: &Pending) -> Result<Classification> {
        only(self.finish_heads(pending)?)
    }

    /// One classification per head the text was read for, once its windows
    /// have all run.
    fn finish_heads(&self, pending: &Pending) -> Result<Vec<Classification>> {
        if !pending.windows_left().is_empty() {
            return Err(Error::Engine(
                "a text was summed up before all its windows ran".into(),
            ));
        }
        Ok(pending
            .heads
            .iter()
            .map(|h| self.summarise(h.head, &pending.tokenized, &h.sums))
            .collect())
    }

    /// The n-gram rows `[rows, labels]` of head `h` for the texts of a group
    /// of windows, one per window; `None` for a head without an n-gram part.
    fn lexical_rows<'a>(
        &self,
        h: usize,
        rows: impl ExactSizeIterator<Item = &'a HeadSums>,
    ) -> Result<Option<Tensor>> {
        if self.heads[h].lexical.is_none() {
            return Ok(None);
        }
        let count = rows.len();
        let values: Vec<f32> = rows
            .flat_map(|r| r.lexical.iter().flatten().copied())
            .collect();
        let labels = self.heads[h].spec.labels.len();
        Ok(Some(Tensor::from_vec(
            values,
            (count, labels),
            &Device::Cpu,
        )?))
    }

    /// Head `h`'s scores for pooled window vectors, before the temperature:
    /// its logits, or their mix with the n-gram part's rows `lexical` (one
    /// per window, or one for all).
    fn head_scores(&self, h: usize, pooled: &Tensor, lexical: Option<&Tensor>) -> Result<Tensor> {
        let head = &self.heads[h];
        let logits = head.head.logits(pooled)?;
        match (&head.lexical, lexical) {
            (Some((_, weight)), Some(rows)) => lexical::mix(&logits, rows, *weight),
            _ => Ok(logits),
        }
    }

    /// Calibrated probabilities `[window][label]` of head `h` for pooled
    /// window vectors (see [`Classifier::head_scores`]).
    fn head_probabilities(
        &self,
        h: usize,
        pooled: &Tensor,
        lexical: Option<&Tensor>,
    ) -> Result<Vec<Vec<f32>>> {
        let scores = self.head_scores(h, pooled, lexical)?;
        Ok(calibrated_probabilities(&scores, self.heads[h].spec.temperature)?.to_vec2::<f32>()?)
    }

    /// The classification of one text from the sum of its windows'
    /// probabilities: their mean, every label sorted, the abstain check.
    fn summarise(&self, h: usize, tokenized: &Tokenized, sums: &[f32]) -> Classification {
        let spec = &self.heads[h].spec;
        let n = tokenized.windows.len().max(1) as f32;
        let mut probabilities: Vec<LabelScore> = spec
            .labels
            .iter()
            .zip(sums)
            .map(|(label, s)| LabelScore {
                id: label.id.clone(),
                display: label.display.clone(),
                probability: s / n,
            })
            .collect();
        probabilities.sort_by(|a, b| b.probability.total_cmp(&a.probability));
        // A pack is refused at load unless its head has at least one label.
        let top = probabilities
            .first()
            .cloned()
            .unwrap_or_else(|| LabelScore {
                id: String::new(),
                display: String::new(),
                probability: 0.0,
            });
        Classification {
            pack: self.pack.manifest.name.clone(),
            pack_version: self.pack.manifest.version.clone(),
            head: spec.name.clone(),
            model_sha256: self.heads[h].model_sha256.clone(),
            // A NaN (from a damaged head) needs review too.
            needs_review: f64::from(top.probability).is_nan()
                || f64::from(top.probability) < spec.abstain_below,
            top,
            probabilities,
            windows: tokenized.windows.len(),
            tokens: tokenized.tokens,
            evidence: Vec::new(),
        }
    }

    pub fn embedder(&self) -> &Embedder {
        &self.embedder
    }

    /// Probabilities for each window of one batch, from the encoder's part
    /// of the head alone (the n-gram part reads whole texts, not windows):
    /// for timing the encoder, and for tests. For a head with an n-gram part
    /// they are not what `classify` gives, and the head's temperature, fitted
    /// on the mix, does not calibrate them.
    pub fn window_probabilities(&self, windows: &[Window]) -> Result<Vec<Vec<f32>>> {
        let pooled = self.embedder.embed_windows(windows)?;
        self.head_probabilities(self.selected, &pooled, None)
    }

    /// The encoder part's logits `[window][label]`, before the temperature:
    /// what tests rebuild a mixed head from, exactly (a probability that
    /// underflows to 0 would lose the logit).
    #[cfg(test)]
    pub(crate) fn window_logits(&self, windows: &[Window]) -> Result<Vec<Vec<f32>>> {
        let pooled = self.embedder.embed_windows(windows)?;
        let logits = self.heads[self.selected].head.logits(&pooled)?;
        Ok(logits.to_vec2::<f32>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::manifest::tests::{write_tiny_pack, write_tiny_pack_with, TINY_LABELS};

    fn tiny_classifier(root: &Path) -> Classifier {
        write_tiny_pack(root);
        Classifier::load(root, "tiny-pack", None).unwrap()
    }

    #[test]
    fn classification_has_every_label_sorted_and_summing_to_one() {
        let dir = tempfile::tempdir().unwrap();
        let c = tiny_classifier(dir.path());
        let r = c.classify("Patient with fever and cough.").unwrap();
        assert_eq!(r.pack, "tiny-pack");
        assert_eq!(r.head, "chapter");
        assert_eq!(r.windows, 1);
        assert_eq!(r.probabilities.len(), TINY_LABELS.len());
        let sum: f32 = r.probabilities.iter().map(|l| l.probability).sum();
        assert!((sum - 1.0).abs() < 1e-5, "{sum}");
        assert!(r
            .probabilities
            .windows(2)
            .all(|w| w[0].probability >= w[1].probability));
        assert_eq!(r.top, r.probabilities[0]);
        assert_eq!(r.needs_review, r.top.probability < 0.5);
        // Same input, same answer.
        assert_eq!(c.classify("Patient with fever and cough.").unwrap(), r);
    }

    #[test]
    fn a_long_note_uses_several_windows_and_matches_averaging_them() {
        let dir = tempfile::tempdir().unwrap();
        let c = tiny_classifier(dir.path()); // max_tokens 10: body 8, step 6
        let text =
            "fever cough chest pain tumor fever cough chest pain tumor fever cough chest pain";
        let r = c.classify(text).unwrap();
        assert_eq!(r.tokens, 14);
        assert_eq!(r.windows, 2);
        let windows = c.embedder.tokenize(text).unwrap().windows;
        let each: Vec<Vec<f32>> = windows
            .iter()
            .map(|w| {
                c.window_probabilities(std::slice::from_ref(w))
                    .unwrap()
                    .remove(0)
            })
            .collect();
        for label in &r.probabilities {
            let i = TINY_LABELS
                .iter()
                .position(|(id, _)| *id == label.id)
                .unwrap();
            let mean = (each[0][i] + each[1][i]) / 2.0;
            assert!((label.probability - mean).abs() < 1e-5);
        }
    }

    #[test]
    fn a_distilbert_pack_classifies_too() {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_pack_with(dir.path(), Architecture::Distilbert);
        let c = Classifier::load(dir.path(), "tiny-pack", None).unwrap();
        let r = c.classify("fever and cough").unwrap();
        let sum: f32 = r.probabilities.iter().map(|l| l.probability).sum();
        assert!((sum - 1.0).abs() < 1e-5);
    }

    /// Turns a tiny encoder folder into a Hugging Face
    /// `*ForSequenceClassification` export: prefixed names, the
    /// pooler/pre-classifier and classifier, `architectures` and `id2label`.
    fn make_hf_checkpoint(
        dir: &Path,
        architecture: Architecture,
        classifier_weight: Vec<f32>,
        classifier_bias: [f32; 3],
    ) {
        use std::collections::HashMap;
        let weights = dir.join("model.safetensors");
        let (prefix, pre, arch_name) = match architecture {
            Architecture::Bert => (
                "bert.",
                "bert.pooler.dense",
                "BertForSequenceClassification",
            ),
            Architecture::Distilbert => {
                ("", "pre_classifier", "DistilBertForSequenceClassification")
            }
        };
        let dev = Device::Cpu;
        let mut tensors: HashMap<String, Tensor> = candle_core::safetensors::load(&weights, &dev)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (format!("{prefix}{k}"), v))
            .collect();
        tensors.insert(
            format!("{pre}.weight"),
            Tensor::randn(0f32, 0.5, (8, 8), &dev).unwrap(),
        );
        tensors.insert(
            format!("{pre}.bias"),
            Tensor::randn(0f32, 0.5, 8, &dev).unwrap(),
        );
        tensors.insert(
            "classifier.weight".into(),
            Tensor::from_vec(classifier_weight, (3, 8), &dev).unwrap(),
        );
        tensors.insert(
            "classifier.bias".into(),
            Tensor::new(&classifier_bias, &dev).unwrap(),
        );
        candle_core::safetensors::save(&tensors, &weights).unwrap();
        let config_path = dir.join("config.json");
        let mut config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
        config["architectures"] = serde_json::json!([arch_name]);
        config["id2label"] = serde_json::json!({"0": "NEGATIVE", "1": "NEUTRAL", "2": "POSITIVE"});
        std::fs::write(&config_path, config.to_string()).unwrap();
    }

    #[test]
    fn an_imported_checkpoint_uses_its_own_classifier_and_labels() {
        for architecture in [Architecture::Bert, Architecture::Distilbert] {
            let root = tempfile::tempdir().unwrap();
            write_tiny_pack_with(root.path(), architecture);
            let dir = root.path().join("encoders/tiny");
            // A zero classifier leaves only its bias: the answer is known exactly.
            make_hf_checkpoint(&dir, architecture, vec![0.0; 24], [2.0, 0.0, -1.0]);
            crate::pack::manifest::import_sequence_classifier(&dir, "sentiment", "MIT", "test")
                .unwrap();
            let c = Classifier::load(root.path(), dir.to_str().unwrap(), None).unwrap();
            let r = c.classify("fever and cough").unwrap();
            let z: f32 = [2f32, 0.0, -1.0].iter().map(|v| v.exp()).sum();
            let ids: Vec<&str> = r.probabilities.iter().map(|l| l.id.as_str()).collect();
            assert_eq!(ids, ["NEGATIVE", "NEUTRAL", "POSITIVE"], "{architecture:?}");
            for (label, logit) in r.probabilities.iter().zip([2f32, 0.0, -1.0]) {
                assert!(
                    (label.probability - logit.exp() / z).abs() < 1e-6,
                    "{architecture:?}: {r:?}"
                );
            }
            // The checkpoint is its own encoder: it travels as one archive.
            let archive = root.path().join("sentiment.tar");
            let pack = crate::pack::manifest::Pack::open(&dir).unwrap();
            crate::pack::archive::write_archive(&pack, &archive, false).unwrap();
            let elsewhere = root.path().join("elsewhere");
            crate::pack::archive::import_file(&archive, &elsewhere, None).unwrap();
            let moved = Classifier::load(&elsewhere, "sentiment", None).unwrap();
            assert_eq!(
                moved.classify("fever and cough").unwrap().probabilities,
                r.probabilities
            );
        }
    }

    #[test]
    fn a_bert_checkpoint_head_is_tanh_pooler_then_classifier_on_cls() {
        let root = tempfile::tempdir().unwrap();
        write_tiny_pack_with(root.path(), Architecture::Bert);
        let dir = root.path().join("encoders/tiny");
        let classifier_weight: Vec<f32> = (0..24)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) / 4.0)
            .collect();
        make_hf_checkpoint(
            &dir,
            Architecture::Bert,
            classifier_weight.clone(),
            [0.1, -0.2, 0.3],
        );
        crate::pack::manifest::import_sequence_classifier(&dir, "sentiment", "MIT", "test")
            .unwrap();
        let c = Classifier::load(root.path(), dir.to_str().unwrap(), None).unwrap();
        let r = c.classify("chest pain").unwrap();

        // The same computation written out by hand on the [CLS] vector.
        let window = c.embedder.tokenize("chest pain").unwrap().windows.remove(0);
        let cls = c
            .embedder
            .embed_windows(&[window])
            .unwrap()
            .to_vec2::<f32>()
            .unwrap()
            .remove(0);
        let t =
            candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
        let pw = t["bert.pooler.dense.weight"].to_vec2::<f32>().unwrap();
        let pb = t["bert.pooler.dense.bias"].to_vec1::<f32>().unwrap();
        let pooled: Vec<f32> = (0..8)
            .map(|o| (pw[o].iter().zip(&cls).map(|(w, x)| w * x).sum::<f32>() + pb[o]).tanh())
            .collect();
        let logits: Vec<f32> = (0..3)
            .map(|o| {
                classifier_weight[o * 8..o * 8 + 8]
                    .iter()
                    .zip(&pooled)
                    .map(|(w, x)| w * x)
                    .sum::<f32>()
                    + [0.1, -0.2, 0.3][o]
            })
            .collect();
        let z: f32 = logits.iter().map(|l| l.exp()).sum();
        for (i, id) in ["NEGATIVE", "NEUTRAL", "POSITIVE"].iter().enumerate() {
            let got = r
                .probabilities
                .iter()
                .find(|l| l.id == *id)
                .unwrap()
                .probability;
            assert!(
                (got - logits[i].exp() / z).abs() < 1e-5,
                "{id}: {got} vs {}",
                logits[i].exp() / z
            );
        }
    }

    #[test]
    fn a_checkpoint_that_is_not_a_classifier_is_refused_on_import() {
        let root = tempfile::tempdir().unwrap();
        write_tiny_pack(root.path());
        let err = crate::pack::manifest::import_sequence_classifier(
            &root.path().join("encoders/tiny"),
            "x",
            "MIT",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("ForSequenceClassification"), "{err}");
    }

    #[test]
    fn empty_text_is_refused_before_any_work() {
        let dir = tempfile::tempdir().unwrap();
        let c = tiny_classifier(dir.path());
        assert!(matches!(c.classify("   "), Err(Error::EmptyText)));
    }

    /// The single window of `text`, its attention mask and its word
    /// embeddings, for checking attributions by hand.
    fn probe(c: &Classifier, text: &str) -> (Window, Tensor, Tensor) {
        let window = c.embedder.tokenize(text).unwrap().windows[0].clone();
        let ids = Tensor::new(window.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let mask = ids.ones_like().unwrap();
        let word = c.embedder.encoder.word_embeddings(&ids).unwrap();
        (window, mask, word)
    }

    /// `target` of the pooled output for the given word embeddings.
    fn target_at(
        c: &Classifier,
        target: &dyn Fn(&Tensor) -> Result<Tensor>,
        word: &Tensor,
        mask: &Tensor,
    ) -> f32 {
        let hidden = c
            .embedder
            .encoder
            .forward_from_word_embeddings(word, mask)
            .unwrap();
        target(&c.embedder.pool(&hidden, mask).unwrap())
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// Log-probability of label `label` of the first head, summed over rows.
    fn log_p(c: &Classifier, label: usize) -> impl Fn(&Tensor) -> Result<Tensor> + Sync + '_ {
        move |pooled: &Tensor| {
            let logits = c.heads[0].head.logits(pooled)?;
            Ok(candle_nn::ops::log_softmax(&logits, D::Minus1)?
                .narrow(1, label, 1)?
                .sum_all()?)
        }
    }

    /// Gradient × input of a token is the derivative of the target along the
    /// token's own embedding: checked against a finite difference, which also
    /// proves every op on the way has a working gradient.
    #[test]
    fn token_attributions_are_the_derivative_along_each_embedding() {
        let dir = tempfile::tempdir().unwrap();
        let c = tiny_classifier(dir.path());
        let (window, mask, word) = probe(&c, "patient with chest pain");
        let target = log_p(&c, 1);
        let scores = c.embedder.token_attributions(&window, 1, &target).unwrap();
        assert_eq!(scores.len(), window.len());

        let target_with_token_scaled = |token: usize, scale: f32| -> f32 {
            let mut factors = vec![1f32; window.len()];
            factors[token] = scale;
            let factors = Tensor::from_vec(factors, (1, window.len(), 1), &Device::Cpu).unwrap();
            target_at(&c, &target, &word.broadcast_mul(&factors).unwrap(), &mask)
        };
        let eps = 1e-2;
        let mut largest = 0f32;
        for (token, score) in scores.iter().enumerate() {
            let numeric = (target_with_token_scaled(token, 1.0 + eps)
                - target_with_token_scaled(token, 1.0 - eps))
                / (2.0 * eps);
            assert!(
                (numeric - score).abs() < 1e-3 + 0.02 * score.abs(),
                "token {token}: gradient x input {score}, finite difference {numeric}"
            );
            largest = largest.max(score.abs());
        }
        assert!(largest > 1e-4, "all attributions are zero: {scores:?}");
    }

    /// Integrated gradients are complete: the attributions add up to the
    /// change in the target from all-zero word embeddings to the real ones.
    #[test]
    fn integrated_gradients_add_up_to_the_change_along_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let c = tiny_classifier(dir.path());
        let (window, mask, word) = probe(&c, "patient with chest pain");
        let target = log_p(&c, 2);
        // Many points: the right Riemann sum's error shrinks as 1/points.
        let scores = c
            .embedder
            .token_attributions(&window, 512, &target)
            .unwrap();
        let change = target_at(&c, &target, &word, &mask)
            - target_at(&c, &target, &word.zeros_like().unwrap(), &mask);
        let total: f32 = scores.iter().sum();
        // The scale of the attributions themselves: their sum may cancel out.
        let scale: f32 = scores.iter().map(|s| s.abs()).sum();
        assert!(
            (total - change).abs() < 0.02 * scale + 1e-4,
            "attributions sum to {total} (scale {scale}), the target changed by {change}"
        );
        assert!(
            (total - change).abs() < 0.05 * change.abs() + 1e-3,
            "attributions sum to {total}, the target changed by {change}"
        );
    }

    #[test]
    fn evidence_covers_the_words_of_the_text_and_leaves_the_result_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let c = tiny_classifier(dir.path());
        let text = "Patient with chest pain and tumors.";
        let plain = c.classify(text).unwrap();
        let explained = c.classify_with_evidence(text).unwrap();
        assert!(plain.evidence.is_empty());
        assert_eq!(explained.top, plain.top);
        let spans: Vec<&str> = explained
            .evidence
            .iter()
            .map(|w| &text[w.start..w.end])
            .collect();
        assert_eq!(
            spans,
            ["Patient", "with", "chest", "pain", "and", "tumors", "."]
        );
        let strongest = explained
            .evidence
            .iter()
            .map(|w| w.score.abs())
            .fold(0f32, f32::max);
        assert!((strongest - 1.0).abs() < 1e-6, "{:?}", explained.evidence);
    }

    #[test]
    fn a_long_note_gets_evidence_for_every_word_across_its_windows() {
        let dir = tempfile::tempdir().unwrap();
        let c = tiny_classifier(dir.path()); // max_tokens 10
        let text = "fever cough ".repeat(30);
        let explained = c.classify_with_evidence(&text).unwrap();
        assert!(explained.windows > 1);
        assert_eq!(explained.evidence.len(), 60);
        assert!(explained.evidence.iter().all(|w| w.score.is_finite()));
    }

    #[test]
    fn a_batch_gives_each_text_what_it_gets_alone() {
        let dir = tempfile::tempdir().unwrap();
        let c = tiny_classifier(dir.path()); // max_tokens 10
        let texts = [
            "fever",
            "chest pain and cough",
            "   ",
            "fever cough chest pain tumor fever cough chest pain tumor fever cough",
            "patient with tumors.",
        ];
        let batch = c.classify_batch(&texts).unwrap();
        assert_eq!(batch.len(), texts.len());
        for (text, result) in texts.iter().zip(&batch) {
            match (c.classify(text), result) {
                (Ok(alone), Ok(together)) => {
                    assert_eq!(alone.windows, together.windows);
                    for (a, b) in alone.probabilities.iter().zip(&together.probabilities) {
                        assert_eq!(a.id, b.id);
                        assert!((a.probability - b.probability).abs() < 1e-5);
                    }
                }
                (Err(Error::EmptyText), Err(Error::EmptyText)) => {}
                (alone, together) => panic!("{text:?}: {alone:?} vs {together:?}"),
            }
        }
        assert!(matches!(batch[2], Err(Error::EmptyText)));
        assert!(batch[3].as_ref().unwrap().windows > 1);
    }

    #[test]
    fn length_groups_stay_within_the_token_budget() {
        let windows: Vec<Window> = [2, 3, 3, 4, 8, 20].iter().map(|&n| vec![0; n]).collect();
        let sorted: Vec<(usize, &Window)> = windows.iter().enumerate().collect();
        let sizes: Vec<usize> = length_groups(&sorted, 10).iter().map(|g| g.len()).collect();
        // [2,3,3] pads to 9; [4,8] would pad to 16 so 4 alone, 8 alone, 20 alone.
        assert_eq!(sizes, vec![3, 1, 1, 1]);
        assert_eq!(sizes.iter().sum::<usize>(), windows.len());
        assert!(length_groups::<usize>(&[], 10).is_empty());
    }

    #[test]
    fn one_pass_feeds_every_head_and_each_matches_its_own_classifier() {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_pack(dir.path());
        let text = "patient with fever and cough";
        let every = Classifier::load(dir.path(), "tiny-pack", None)
            .unwrap()
            .classify_every_head(text)
            .unwrap();
        let heads: Vec<&str> = every.iter().map(|c| c.head.as_str()).collect();
        assert_eq!(heads, ["chapter", "urgency"]);
        for c in &every {
            let alone = Classifier::load(dir.path(), "tiny-pack", Some(&c.head))
                .unwrap()
                .classify(text)
                .unwrap();
            assert_eq!(alone.top.id, c.top.id);
            for (a, b) in alone.probabilities.iter().zip(&c.probabilities) {
                assert!((a.probability - b.probability).abs() < 1e-6);
            }
        }
        assert_eq!(every[1].probabilities.len(), 2);
    }

    #[test]
    fn embedding_many_texts_at_once_equals_one_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let c = tiny_classifier(dir.path());
        let texts = ["fever", "chest pain and cough", &"tumor fever ".repeat(12)];
        let together = c.embedder.embed_texts(&texts).unwrap();
        for (text, v) in texts.iter().zip(&together) {
            let alone = c.embedder.embed_texts(&[text]).unwrap().remove(0);
            for (a, b) in alone.iter().zip(v) {
                assert!((a - b).abs() < 1e-5);
            }
        }
        assert!(c.embedder.embed_texts(&["ok", " "]).is_err());
    }
}
