//! Text in, calibrated label probabilities out: tokenizer → encoder → pooling
//! → head, over as many windows as the text needs.

use std::path::Path;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::encoder::{bert::BertEncoder, distilbert::DistilBertEncoder, Encoder};
use crate::head::LinearHead;
use crate::pack::{Architecture, HeadKind, HeadSpec, Pack, Pooling};
use crate::pool::mean_pool_normalized;
use crate::tokenize::{TextTokenizer, Tokenized, Window};
use crate::{text, Error, Result};

/// Windows encoded together in one forward pass: enough to amortise the
/// per-call overhead, small enough to bound memory on a long note.
const WINDOWS_PER_BATCH: usize = 8;

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
    /// The most probable label.
    pub top: LabelScore,
    /// Every label, most probable first.
    pub probabilities: Vec<LabelScore>,
    /// True when the top probability is below the head's abstain threshold.
    pub needs_review: bool,
    /// Windows the text was split into (1 for anything that fits the model).
    pub windows: usize,
    pub tokens: usize,
}

/// Tokenizer + encoder + pooling: text to unit sentence vectors, one per
/// window. Shared by classification and head training, so a head is trained on
/// exactly the vectors it will see.
pub struct Embedder {
    tokenizer: TextTokenizer,
    encoder: Box<dyn Encoder>,
}

impl Embedder {
    /// Loads the encoder in `dir` (`config.json`, `model.safetensors`,
    /// `tokenizer.json`) with windows of at most `max_tokens`.
    pub fn load(dir: &Path, architecture: Architecture, max_tokens: usize) -> Result<Self> {
        let encoder: Box<dyn Encoder> = match architecture {
            Architecture::Bert => Box::new(BertEncoder::load(dir)?),
            Architecture::Distilbert => Box::new(DistilBertEncoder::load(dir)?),
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
        Ok(Self { tokenizer, encoder })
    }

    pub fn hidden_size(&self) -> usize {
        self.encoder.hidden_size()
    }

    /// Tokenizes `text` into windows.
    pub fn tokenize(&self, text: &str) -> Result<Tokenized> {
        self.tokenizer.tokenize(text)
    }

    /// Unit vectors `[windows, hidden]` for a batch of windows, padded to the
    /// longest.
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
        mean_pool_normalized(&hidden, &mask)
    }

    /// One unit vector for a whole text: the normalised mean of its windows.
    pub fn embed_text(&self, text: &str) -> Result<Vec<f32>> {
        text::validate(text)?;
        let tokenized = self.tokenize(text)?;
        let mut sum = vec![0f32; self.hidden_size()];
        for batch in tokenized.windows.chunks(WINDOWS_PER_BATCH) {
            for row in self.embed_windows(batch)?.to_vec2::<f32>()? {
                for (s, v) in sum.iter_mut().zip(row) {
                    *s += v;
                }
            }
        }
        let norm = sum.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        Ok(sum.into_iter().map(|v| v / norm).collect())
    }
}

/// A loaded pack with one head, ready to classify.
pub struct Classifier {
    pack: Pack,
    head_spec: HeadSpec,
    embedder: Embedder,
    head: LinearHead,
}

impl Classifier {
    /// Loads the pack `pack_name` (a name inside `models_dir`, or a path) with
    /// its head `head` (the first head when `None`).
    pub fn load(models_dir: &Path, pack_name: &str, head: Option<&str>) -> Result<Self> {
        let pack = Pack::find(models_dir, pack_name)?;
        Self::from_pack(pack, head)
    }

    pub fn from_pack(pack: Pack, head: Option<&str>) -> Result<Self> {
        let head_spec = pack.head(head)?.clone();
        let spec = &pack.manifest.encoder;
        match spec.pooling {
            Pooling::Mean => {}
        }
        let embedder = Embedder::load(&pack.encoder_dir(), spec.architecture, spec.max_tokens)?;
        let head = match head_spec.kind {
            HeadKind::Linear => LinearHead::load(
                &pack.dir.join(&head_spec.file),
                embedder.hidden_size(),
                head_spec.labels.len(),
            )?,
        };
        Ok(Self {
            pack,
            head_spec,
            embedder,
            head,
        })
    }

    pub fn pack(&self) -> &Pack {
        &self.pack
    }

    pub fn head_spec(&self) -> &HeadSpec {
        &self.head_spec
    }

    /// Classifies `text`. A text longer than the model's window is split into
    /// overlapping windows; their probabilities are averaged, so every part of
    /// the note counts and none is silently cut.
    pub fn classify(&self, text: &str) -> Result<Classification> {
        text::validate(text)?;
        let tokenized = self.embedder.tokenize(text)?;
        let mut sums = vec![0f32; self.head_spec.labels.len()];
        for batch in tokenized.windows.chunks(WINDOWS_PER_BATCH) {
            for row in self.window_probabilities(batch)? {
                for (s, p) in sums.iter_mut().zip(row) {
                    *s += p;
                }
            }
        }
        let n = tokenized.windows.len() as f32;
        let mut probabilities: Vec<LabelScore> = self
            .head_spec
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
        let top = probabilities[0].clone();
        Ok(Classification {
            pack: self.pack.manifest.name.clone(),
            pack_version: self.pack.manifest.version.clone(),
            head: self.head_spec.name.clone(),
            needs_review: f64::from(top.probability) < self.head_spec.abstain_below,
            top,
            probabilities,
            windows: tokenized.windows.len(),
            tokens: tokenized.tokens,
        })
    }

    pub fn embedder(&self) -> &Embedder {
        &self.embedder
    }

    /// Probabilities for each window of one batch.
    pub fn window_probabilities(&self, windows: &[Window]) -> Result<Vec<Vec<f32>>> {
        let pooled = self.embedder.embed_windows(windows)?;
        Ok(self
            .head
            .probabilities(&pooled, self.head_spec.temperature)?
            .to_vec2::<f32>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::tests::{write_tiny_pack, write_tiny_pack_with, TINY_LABELS};

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

    #[test]
    fn empty_text_is_refused_before_any_work() {
        let dir = tempfile::tempdir().unwrap();
        let c = tiny_classifier(dir.path());
        assert!(matches!(c.classify("   "), Err(Error::EmptyText)));
    }
}
