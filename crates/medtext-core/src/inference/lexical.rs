//! A second reader of the text beside the encoder: the character n-grams of
//! its words, weighed by a linear layer, mixed into a head's scores.
//!
//! Why: the encoder reads meaning, and on categories it never saw it goes by
//! what a text resembles. ICD's chapters also follow the words themselves
//! ("-itis", "abscess", "newborn", "complication of"), which a bag of
//! character n-grams reads directly, including word forms the encoder splits
//! into pieces. Measured on ICD-10-CM categories held out from training, the
//! mix of the two beats either alone (see `models/icd10cm/CARD.md`).
//!
//! Features are those of scikit-learn's `char_wb` analyser: each
//! whitespace-separated word, lower-cased and padded with a space on each
//! side, gives its n-grams of 3 to 5 characters; an n-gram counts `1 + ln
//! count`, times its inverse document frequency, and the vector is scaled
//! to unit length. The vocabulary is the n-grams found in at least
//! [`MIN_DOCUMENT_FREQUENCY`] training texts (at most [`MAX_NGRAMS`], the
//! most frequent), so a string that is in one or two texts only never
//! becomes a feature.
//!
//! The vocabulary is stored in the pack as text: pieces of 3 to 5
//! characters of the training texts. That is why the app does not train one
//! on its users' files, and `medtext train --lexical` says so (SECURITY.md):
//! a name or a ward in three notes would be among them.
//!
//! A head with a lexical part scores each label as
//! `(1 - w) · log p_encoder + w · log p_lexical`, with `w` chosen on the
//! validation part when the pack was trained, and the temperature fitted on
//! the mix.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::{Error, Result};

/// Shortest and longest n-gram, in characters.
const NGRAM_LENGTHS: std::ops::RangeInclusive<usize> = 3..=5;

/// Texts an n-gram must occur in to be part of the vocabulary.
pub const MIN_DOCUMENT_FREQUENCY: usize = 3;

/// Most n-grams a vocabulary keeps (the most frequent), and a pack may
/// carry: bounds the memory of training and of loading a pack.
pub const MAX_NGRAMS: usize = 1 << 18;

/// Largest idf or weight a pack's n-gram head may hold. Trained ones stay
/// far below (an idf is at most `ln(texts) + 1`); a larger value could only
/// overflow a score into infinity and the probabilities into NaN.
const MAX_MAGNITUDE: f32 = 1e4;

fn within_bounds(v: f32) -> bool {
    v.is_finite() && v.abs() <= MAX_MAGNITUDE
}

/// The n-grams of `text` with their counts.
fn ngram_counts(text: &str) -> HashMap<String, u32> {
    let mut counts = HashMap::new();
    for word in text.split_whitespace() {
        let padded: Vec<char> = std::iter::once(' ')
            .chain(word.chars().flat_map(char::to_lowercase))
            .chain(std::iter::once(' '))
            .collect();
        for n in NGRAM_LENGTHS {
            // A word shorter than n counts once, whole (as scikit-learn does).
            let starts = padded.len().saturating_sub(n) + 1;
            for start in 0..starts {
                let end = (start + n).min(padded.len());
                *counts
                    .entry(padded[start..end].iter().collect())
                    .or_insert(0) += 1;
            }
            if n >= padded.len() {
                break;
            }
        }
    }
    counts
}

/// The n-grams a lexical head knows, with their inverse document frequency.
#[derive(Clone)]
pub struct Vocabulary {
    index: HashMap<String, u32>,
    idf: Vec<f32>,
}

/// A text as features: `(n-gram index, value)`, by index, unit length.
pub type SparseVector = Vec<(u32, f32)>;

impl Vocabulary {
    /// The n-grams of at least [`MIN_DOCUMENT_FREQUENCY`] of `texts` (the
    /// [`MAX_NGRAMS`] most frequent), in sorted order (so the same texts give
    /// the same vocabulary), with a smoothed idf: `ln((1 + texts) / (1 +
    /// frequency)) + 1`.
    pub fn build<S: AsRef<str>>(texts: &[S]) -> Self {
        let mut frequency: BTreeMap<String, usize> = BTreeMap::new();
        for text in texts {
            for ngram in ngram_counts(text.as_ref()).into_keys() {
                *frequency.entry(ngram).or_insert(0) += 1;
            }
        }
        frequency.retain(|_, f| *f >= MIN_DOCUMENT_FREQUENCY);
        if frequency.len() > MAX_NGRAMS {
            let mut counts: Vec<usize> = frequency.values().copied().collect();
            counts.sort_unstable_by(|a, b| b.cmp(a));
            let least = counts[MAX_NGRAMS - 1];
            // Ties at the boundary: the first in sorted order.
            let mut ties_kept = MAX_NGRAMS - counts.iter().filter(|&&c| c > least).count();
            frequency.retain(|_, f| match (*f).cmp(&least) {
                std::cmp::Ordering::Greater => true,
                std::cmp::Ordering::Equal if ties_kept > 0 => {
                    ties_kept -= 1;
                    true
                }
                _ => false,
            });
        }
        let n = texts.len() as f64;
        let (index, idf) = frequency
            .into_iter()
            .enumerate()
            .map(|(i, (ngram, f))| {
                let idf = ((1.0 + n) / (1.0 + f as f64)).ln() + 1.0;
                ((ngram, i as u32), idf as f32)
            })
            .unzip();
        Self { index, idf }
    }

    pub fn len(&self) -> usize {
        self.idf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.idf.is_empty()
    }

    /// The features of `text` (empty when none of its n-grams is known).
    pub fn features(&self, text: &str) -> SparseVector {
        let mut features: SparseVector = ngram_counts(text)
            .into_iter()
            .filter_map(|(ngram, count)| {
                let i = *self.index.get(&ngram)?;
                Some((i, (1.0 + (count as f32).ln()) * self.idf[i as usize]))
            })
            .collect();
        features.sort_unstable_by_key(|&(i, _)| i);
        let norm = features.iter().map(|(_, v)| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            for (_, v) in &mut features {
                *v /= norm;
            }
        }
        features
    }

    /// The n-grams in index order, one per line (an n-gram never holds a
    /// line break: words are split on whitespace).
    fn to_lines(&self) -> Vec<u8> {
        let mut ngrams = vec![""; self.index.len()];
        for (ngram, &i) in &self.index {
            ngrams[i as usize] = ngram;
        }
        ngrams.join("\n").into_bytes()
    }

    /// The vocabulary [`Vocabulary::to_lines`] wrote, with its idf values:
    /// as many distinct lines as values, each value finite.
    fn from_lines(bytes: &[u8], idf: Vec<f32>) -> std::result::Result<Self, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "its n-grams are not UTF-8")?;
        // Counted before the map is built (the file itself is read whole).
        let lines = if text.is_empty() {
            0
        } else {
            text.split('\n').count()
        };
        if lines == 0 {
            return Err("it has no n-grams".into());
        }
        if lines != idf.len() || lines > MAX_NGRAMS {
            return Err(format!(
                "it has {lines} n-grams and {} idf values (at most {MAX_NGRAMS} of each)",
                idf.len()
            ));
        }
        if !idf.iter().all(|v| within_bounds(*v)) {
            return Err(format!(
                "its idf values are not all finite numbers within ±{MAX_MAGNITUDE}"
            ));
        }
        let index: HashMap<String, u32> = text
            .split('\n')
            .enumerate()
            .map(|(i, ngram)| (ngram.to_string(), i as u32))
            .collect();
        if index.len() != lines {
            return Err("an n-gram is listed twice".into());
        }
        Ok(Self { index, idf })
    }
}

/// Sparse feature vectors, turned into dense rows a batch at a time (a dense
/// matrix of a whole training set would take gigabytes).
pub struct SparseRows {
    pub width: usize,
    pub rows: Vec<SparseVector>,
}

impl SparseRows {
    /// The rows `rows` as a dense `[rows, width]` tensor.
    pub fn dense(&self, rows: &[usize]) -> Result<Tensor> {
        let mut flat = vec![0f32; rows.len() * self.width];
        for (out, &r) in rows.iter().enumerate() {
            for &(i, v) in &self.rows[r] {
                flat[out * self.width + i as usize] = v;
            }
        }
        Ok(Tensor::from_vec(
            flat,
            (rows.len(), self.width),
            &Device::Cpu,
        )?)
    }
}

/// Sizes only: the n-grams are pieces of training texts.
impl std::fmt::Debug for Vocabulary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Vocabulary({} n-grams)", self.len())
    }
}

/// A trained lexical head: its vocabulary and a linear layer on it.
#[derive(Debug, Clone)]
pub struct LexicalHead {
    vocabulary: Vocabulary,
    /// `[labels][n-grams]`.
    weight: Vec<Vec<f32>>,
    bias: Vec<f32>,
}

impl LexicalHead {
    pub fn new(vocabulary: Vocabulary, weight: Vec<Vec<f32>>, bias: Vec<f32>) -> Self {
        Self {
            vocabulary,
            weight,
            bias,
        }
    }

    /// Log-probabilities of each label for `text`, as the head reads it
    /// (abbreviations already spelled out).
    pub fn log_probabilities(&self, text: &str) -> Vec<f32> {
        let features = self.vocabulary.features(text);
        let logits: Vec<f32> = self
            .weight
            .iter()
            .zip(&self.bias)
            .map(|(w, b)| {
                b + features
                    .iter()
                    .map(|&(i, v)| w[i as usize] * v)
                    .sum::<f32>()
            })
            .collect();
        log_softmax(&logits)
    }

    pub fn vocabulary_len(&self) -> usize {
        self.vocabulary.len()
    }

    /// Writes the head as safetensors: `ngrams` (the vocabulary as UTF-8
    /// lines), `idf`, `weight` `[labels, n-grams]` and `bias`.
    pub fn save(&self, path: &Path) -> Result<()> {
        if self.vocabulary.is_empty() {
            return Err(Error::Training {
                problem: "an n-gram head needs at least one n-gram".into(),
            });
        }
        let dev = Device::Cpu;
        let ngrams = self.vocabulary.to_lines();
        let rows = self.weight.len();
        let flat: Vec<f32> = self.weight.iter().flatten().copied().collect();
        let tensors: HashMap<String, Tensor> = [
            ("ngrams", Tensor::new(ngrams, &dev)?),
            ("idf", Tensor::new(self.vocabulary.idf.as_slice(), &dev)?),
            (
                "weight",
                Tensor::from_vec(flat, (rows, self.vocabulary.len()), &dev)?,
            ),
            ("bias", Tensor::new(self.bias.as_slice(), &dev)?),
        ]
        .into_iter()
        .map(|(name, t)| (name.to_string(), t))
        .collect();
        candle_core::safetensors::save(&tensors, path)?;
        Ok(())
    }

    /// Reads a head written by [`LexicalHead::save`] for `labels` labels.
    pub fn load(path: &Path, labels: usize) -> Result<Self> {
        let bad = |problem: String| Error::pack(path, format!("lexical head: {problem}"));
        let tensors = candle_core::safetensors::load(path, &Device::Cpu)?;
        let get = |name: &str| {
            tensors
                .get(name)
                .ok_or_else(|| bad(format!("it has no '{name}' tensor")))
        };
        let (idf, weight, bias) = (get("idf")?, get("weight")?, get("bias")?);
        // Shapes first: nothing is built from a file that does not fit.
        let width = idf
            .dims1()
            .map_err(|_| bad(format!("idf has the shape {:?}, not one row", idf.dims())))?;
        if weight.dims() != [labels, width] || bias.dims() != [labels] {
            return Err(bad(format!(
                "weight {:?} and bias {:?} do not fit {labels} labels and {width} n-grams",
                weight.dims(),
                bias.dims()
            )));
        }
        let idf = idf.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let ngrams = get("ngrams")?
            .to_vec1::<u8>()
            .map_err(|_| bad("its n-grams are not one row of bytes".into()))?;
        let vocabulary = Vocabulary::from_lines(&ngrams, idf).map_err(bad)?;
        let weight = weight.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        let bias = bias.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        if !weight
            .iter()
            .flatten()
            .chain(&bias)
            .all(|v| within_bounds(*v))
        {
            return Err(bad(format!(
                "its weights are not all finite numbers within ±{MAX_MAGNITUDE}"
            )));
        }
        Ok(Self {
            vocabulary,
            weight,
            bias,
        })
    }
}

/// A head's scores with a lexical part: `(1 - weight) · log_softmax(encoder
/// logits) + weight · lexical log-probabilities`, row by row. `lexical` is
/// `[rows, labels]`, or `[1, labels]` for every row.
pub fn mix(encoder_logits: &Tensor, lexical: &Tensor, weight: f64) -> Result<Tensor> {
    let encoder = candle_nn::ops::log_softmax(encoder_logits, candle_core::D::Minus1)?;
    Ok(((encoder * (1.0 - weight))?.broadcast_add(&(lexical * weight)?))?)
}

/// [`mix`] for plain rows, as training and evaluation hold them.
pub fn mix_rows(encoder_logits: &[Vec<f32>], lexical: &[Vec<f32>], weight: f64) -> Vec<Vec<f32>> {
    let weight = weight as f32;
    encoder_logits
        .iter()
        .zip(lexical)
        .map(|(e, l)| {
            log_softmax(e)
                .into_iter()
                .zip(l)
                .map(|(x, y)| (1.0 - weight) * x + weight * y)
                .collect()
        })
        .collect()
}

/// `logits - ln Σ exp(logits)`, computed without overflow.
pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let log_sum = logits.iter().map(|l| (l - max).exp()).sum::<f32>().ln() + max;
    logits.iter().map(|l| l - log_sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ngrams_are_those_of_padded_lower_case_words() {
        let counts = ngram_counts("Ab abc");
        // " ab " gives " ab", "ab " (n = 3) and " ab " (n = 4, the whole
        // padded word, after which longer n-grams are not counted).
        assert_eq!(counts.get(" ab"), Some(&2));
        assert_eq!(counts.get(" ab "), Some(&1));
        assert_eq!(counts.get(" abc "), Some(&1));
        assert_eq!(counts.get("bc "), Some(&1));
        assert!(!counts.keys().any(|k| k.contains('A')));
        // A one-letter word: " a " is its only n-gram.
        assert_eq!(
            ngram_counts("a").into_iter().collect::<Vec<_>>(),
            vec![(" a ".to_string(), 1)]
        );
    }

    #[test]
    fn the_vocabulary_keeps_ngrams_of_enough_texts_and_features_have_unit_length() {
        let texts = ["acute cystitis", "chronic cystitis", "cystitis", "otitis"];
        let v = Vocabulary::build(&texts);
        assert!(v.index.contains_key("itis "));
        assert!(!v.index.contains_key("cute"), "in one text only");
        let f = v.features("Interstitial cystitis");
        let norm: f32 = f.iter().map(|(_, x)| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-5);
        assert!(f.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(v.features("zzz").is_empty());
        // Rarer n-grams weigh more.
        let itis = v.idf[v.index["itis "] as usize];
        let cyst = v.idf[v.index[" cyst"] as usize];
        assert!(cyst > itis);
    }

    #[test]
    fn a_saved_head_loads_and_scores_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let v = Vocabulary::build(&["otitis media", "otitis externa", "otitis", "media"]);
        let n = v.len();
        let weight = vec![(0..n).map(|i| i as f32 / n as f32).collect(), vec![0.5; n]];
        let head = LexicalHead::new(v, weight, vec![0.1, -0.1]);
        let path = dir.path().join("l.safetensors");
        head.save(&path).unwrap();
        let loaded = LexicalHead::load(&path, 2).unwrap();
        let a = head.log_probabilities("acute otitis media");
        assert_eq!(a, loaded.log_probabilities("acute otitis media"));
        let total: f32 = a.iter().map(|x| x.exp()).sum();
        assert!((total - 1.0).abs() < 1e-5);
        let err = LexicalHead::load(&path, 3).unwrap_err().to_string();
        assert!(err.contains("do not fit 3 labels"), "{err}");
    }

    #[test]
    fn a_crafted_head_file_is_refused_before_it_can_index_out_of_range() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.safetensors");
        let dev = Device::Cpu;
        let write = |ngrams: &str, idf: Vec<f32>, weight: Vec<f32>| {
            let n = idf.len();
            let tensors: HashMap<String, Tensor> = [
                (
                    "ngrams",
                    Tensor::new(ngrams.as_bytes().to_vec(), &dev).unwrap(),
                ),
                ("idf", Tensor::new(idf, &dev).unwrap()),
                ("weight", Tensor::from_vec(weight, (1, n), &dev).unwrap()),
                ("bias", Tensor::new(vec![0f32], &dev).unwrap()),
            ]
            .into_iter()
            .map(|(k, t)| (k.to_string(), t))
            .collect();
            candle_core::safetensors::save(&tensors, &path).unwrap();
            LexicalHead::load(&path, 1)
                .map(|_| ())
                .unwrap_err()
                .to_string()
        };
        // Three lines, two distinct: the last index would pass the idf.
        let err = write(" ab\n ab\nab ", vec![1.0; 3], vec![0.0; 3]);
        assert!(err.contains("listed twice"), "{err}");
        let err = write(" ab\nab ", vec![1.0; 3], vec![0.0; 3]);
        assert!(err.contains("2 n-grams and 3 idf values"), "{err}");
        let err = write(" ab\nab ", vec![1.0, f32::NAN], vec![0.0; 2]);
        assert!(err.contains("not all finite"), "{err}");
        let err = write(" ab\nab ", vec![1.0; 2], vec![0.0, f32::INFINITY]);
        assert!(err.contains("not all finite"), "{err}");
        let err = write(" ab\nab ", vec![1.0; 2], vec![0.0, 1e30]);
        assert!(err.contains("within"), "{err}");
        let err = write("", vec![], vec![]);
        assert!(err.contains("no n-grams"), "{err}");
        let many = MAX_NGRAMS + 1;
        let lines: Vec<String> = (0..many).map(|i| i.to_string()).collect();
        let err = write(&lines.join("\n"), vec![1.0; many], vec![0.0; many]);
        assert!(err.contains("at most 262144"), "{err}");
    }

    #[test]
    fn a_vocabulary_keeps_the_most_frequent_ngrams_up_to_its_limit() {
        // More distinct n-grams than the limit, each in three texts...
        let big = (0..MAX_NGRAMS / 3 + 10)
            .map(|i| format!("{:x}", i * 7919 + 100_000))
            .collect::<Vec<_>>()
            .join(" ");
        let mut candidates: Vec<String> = ngram_counts(&big).into_keys().collect();
        candidates.sort();
        assert!(candidates.len() > MAX_NGRAMS + 100);
        // ... and the last in sorted order in a fourth text too.
        let last = candidates[candidates.len() - 1].clone();
        let word = big
            .split(' ')
            .find(|w| ngram_counts(w).contains_key(&last))
            .unwrap()
            .to_string();
        let fourth: Vec<String> = ngram_counts(&word).into_keys().collect();
        let v = Vocabulary::build(&[big.clone(), big.clone(), big, word]);
        assert_eq!(v.len(), MAX_NGRAMS);
        // The more frequent one is kept however late it sorts; among the
        // ties, the first in sorted order.
        assert!(v.index.contains_key(&last));
        assert!(v.index.contains_key(&candidates[0]));
        let dropped = candidates[MAX_NGRAMS + 50..]
            .iter()
            .find(|c| !fourth.contains(c))
            .unwrap();
        assert!(!v.index.contains_key(dropped));
    }

    #[test]
    fn mixing_weighs_the_two_log_probabilities() {
        let encoder = vec![vec![2.0f32, 0.0]];
        let lexical = vec![vec![(0.1f32).ln(), (0.9f32).ln()]];
        let mixed = mix_rows(&encoder, &lexical, 0.25);
        let log_p0 = 2.0 - (2.0f32.exp() + 1.0).ln();
        assert!((mixed[0][0] - (0.75 * log_p0 + 0.25 * 0.1f32.ln())).abs() < 1e-5);
        let t = mix(
            &Tensor::new(encoder, &Device::Cpu).unwrap(),
            &Tensor::new(lexical, &Device::Cpu).unwrap(),
            0.25,
        )
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
        assert!((t[0][0] - mixed[0][0]).abs() < 1e-5 && (t[0][1] - mixed[0][1]).abs() < 1e-5);
    }
}
