//! Tokenization, kept apart from the forward pass.
//!
//! Padding and truncation baked into a `tokenizer.json` are switched off: the
//! default encoder ships with both fixed at 128, which would silently cut long
//! notes. Instead a text is tokenized whole and split into overlapping windows
//! that each fit the model, so no part of a note is ever dropped.

use std::path::{Path, PathBuf};

use tokenizers::Tokenizer;

use crate::text::abbreviations::Expanded;
use crate::user_files::Limit;
use crate::{Error, Result};

/// Most bytes of a `tokenizer.json`: MiniLM's is 0.7 MB, large multilingual
/// vocabularies about 20 MB.
const TOKENIZER_LIMIT: Limit = Limit {
    bytes: 64 << 20,
    what: "a tokenizer.json",
    advice: "check that this folder holds a MedText pack or a Hugging Face export",
};

/// The token ids of one window, special tokens included.
pub type Window = Vec<u32>;

/// A text cut into model-sized windows.
#[derive(Debug, Clone, PartialEq)]
pub struct Tokenized {
    pub windows: Vec<Window>,
    /// Tokens in the text, special tokens excluded.
    pub tokens: usize,
    /// For each window, the index of its first token after `[CLS]` among
    /// the text's tokens: window `w` holds tokens
    /// `window_starts[w] .. window_starts[w] + windows[w].len() - 2`.
    pub window_starts: Vec<usize>,
    /// Where each token came from: `[start, end)` in characters (Unicode
    /// scalar values) of the original text.
    pub char_offsets: Vec<(usize, usize)>,
    /// The word each token belongs to (the pre-tokenizer's words: runs of
    /// letters and digits, and each punctuation mark on its own).
    pub word_ids: Vec<Option<u32>>,
    /// Tokens of the text itself; any after them come from expansions
    /// appended by an abbreviation list ([`Tokenized::credit_expansions`]).
    pub original_tokens: usize,
}

impl Tokenized {
    /// Points each token of an appended expansion at the abbreviation it
    /// stands for (the brackets and separators at nothing: an empty span), so
    /// evidence lands on what the clinician wrote.
    pub fn credit_expansions(&mut self, expanded: &Expanded) {
        self.original_tokens = self
            .char_offsets
            .iter()
            .take_while(|(start, _)| *start < expanded.original_chars)
            .count();
        let appended = self.original_tokens..;
        for (offsets, word) in self.char_offsets[appended.clone()]
            .iter_mut()
            .zip(&mut self.word_ids[appended])
        {
            *offsets = expanded
                .source_of(offsets.0)
                .map_or((0, 0), |r| (r.start, r.end));
            *word = None;
        }
    }
}

/// Fewest tokens in a window, `[CLS]` and `[SEP]` included: fewer leave too
/// few words per window to classify anything.
pub const MIN_WINDOW_TOKENS: usize = 8;

/// A WordPiece/BPE tokenizer from a `tokenizer.json`, plus the windowing rule.
pub struct TextTokenizer {
    inner: Tokenizer,
    path: PathBuf,
    cls_id: u32,
    sep_id: u32,
    /// Longest window, special tokens included.
    max_tokens: usize,
}

impl TextTokenizer {
    /// Loads `tokenizer.json`, overriding any padding and truncation it carries.
    pub fn from_file(path: &Path, max_tokens: usize) -> Result<Self> {
        let problem = |problem: String| Error::Tokenizer {
            path: path.to_path_buf(),
            problem,
        };
        let bytes = TOKENIZER_LIMIT.read_file(path)?;
        let mut inner =
            Tokenizer::from_bytes(bytes).map_err(|e| problem(format!("cannot load: {e}")))?;
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| problem(format!("cannot switch truncation off: {e}")))?;
        let special = |token: &str| {
            inner
                .token_to_id(token)
                .ok_or_else(|| problem(format!("the vocabulary has no {token} token")))
        };
        let cls_id = special("[CLS]")?;
        let sep_id = special("[SEP]")?;
        if max_tokens < MIN_WINDOW_TOKENS {
            return Err(problem(format!(
                "max_tokens {max_tokens} is too small for a useful window"
            )));
        }
        Ok(Self {
            inner,
            path: path.to_path_buf(),
            cls_id,
            sep_id,
            max_tokens,
        })
    }

    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Tokenizes `text` and splits it into windows of at most `max_tokens`
    /// (with `[CLS]` and `[SEP]`), consecutive windows overlapping by a quarter
    /// so that a phrase cut at one window's edge is whole in the next.
    pub fn tokenize(&self, text: &str) -> Result<Tokenized> {
        let encoding = self
            .inner
            .encode_char_offsets(text, false)
            // The tokenizers error may quote the input: it is dropped, not shown.
            .map_err(|_| Error::Tokenizer {
                path: self.path.clone(),
                problem: "cannot tokenize the text".into(),
            })?;
        let ids = encoding.get_ids();
        let (windows, window_starts) = self.windows(ids);
        Ok(Tokenized {
            windows,
            window_starts,
            tokens: ids.len(),
            char_offsets: encoding.get_offsets().to_vec(),
            word_ids: encoding.get_word_ids().to_vec(),
            original_tokens: ids.len(),
        })
    }

    fn windows(&self, ids: &[u32]) -> (Vec<Window>, Vec<usize>) {
        let body = self.max_tokens - 2;
        let step = body - body / 4;
        let mut windows = Vec::new();
        let mut starts = Vec::new();
        let mut start = 0;
        loop {
            let end = (start + body).min(ids.len());
            let mut window = Vec::with_capacity(end - start + 2);
            window.push(self.cls_id);
            window.extend_from_slice(&ids[start..end]);
            window.push(self.sep_id);
            windows.push(window);
            starts.push(start);
            if end == ids.len() {
                break;
            }
            start += step;
        }
        (windows, starts)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A tiny BERT-style WordPiece tokenizer, with padding and truncation baked
    /// in exactly as the registry's MiniLM tokenizer has them, so the override
    /// is tested too.
    pub(crate) fn tiny_tokenizer_json(vocab: &[&str]) -> String {
        let vocab: serde_json::Map<String, serde_json::Value> = vocab
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), serde_json::Value::from(i)))
            .collect();
        serde_json::json!({
            "version": "1.0",
            "truncation": {"direction": "Right", "max_length": 4, "strategy": "LongestFirst", "stride": 0},
            "padding": {"strategy": {"Fixed": 16}, "direction": "Right", "pad_to_multiple_of": null,
                         "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"},
            "added_tokens": [],
            "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                            "strip_accents": null, "lowercase": true},
            "pre_tokenizer": {"type": "BertPreTokenizer"},
            "post_processor": null,
            "decoder": null,
            "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                       "max_input_chars_per_word": 100, "vocab": vocab}
        })
        .to_string()
    }

    pub(crate) const TINY_VOCAB: &[&str] = &[
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "chest", "pain", "fever", "cough", "tumor", "##s",
        "patient", "with", "and", ".",
    ];

    pub(crate) fn tiny_tokenizer(dir: &Path, max_tokens: usize) -> TextTokenizer {
        let path = dir.join("tokenizer.json");
        std::fs::write(&path, tiny_tokenizer_json(TINY_VOCAB)).unwrap();
        TextTokenizer::from_file(&path, max_tokens).unwrap()
    }

    #[test]
    fn short_text_is_one_window_with_special_tokens_and_no_padding() {
        let dir = tempfile::tempdir().unwrap();
        let tok = tiny_tokenizer(dir.path(), 16);
        let t = tok.tokenize("Patient with chest pain and tumors.").unwrap();
        // patient with chest pain and tumor ##s .
        assert_eq!(t.tokens, 8);
        assert_eq!(t.windows, vec![vec![2, 10, 11, 4, 5, 12, 8, 9, 13, 3]]);
        assert_eq!(t.window_starts, vec![0]);
    }

    #[test]
    fn tokens_know_their_characters_and_words() {
        let dir = tempfile::tempdir().unwrap();
        let tok = tiny_tokenizer(dir.path(), 16);
        // "é" is two bytes but one character: offsets count characters.
        let t = tok.tokenize("é tumors.").unwrap();
        // [UNK] tumor ##s .
        assert_eq!(t.char_offsets, vec![(0, 1), (2, 7), (7, 8), (8, 9)]);
        assert_eq!(t.word_ids, vec![Some(0), Some(1), Some(1), Some(2)]);
    }

    #[test]
    fn long_text_is_split_into_overlapping_windows_covering_every_token() {
        let dir = tempfile::tempdir().unwrap();
        let tok = tiny_tokenizer(dir.path(), 10); // body 8, step 6
        let text = (0..20).map(|_| "fever").collect::<Vec<_>>().join(" ");
        let t = tok.tokenize(&text).unwrap();
        assert_eq!(t.tokens, 20);
        let bodies: Vec<usize> = t.windows.iter().map(|w| w.len() - 2).collect();
        assert_eq!(bodies, vec![8, 8, 8]); // starts 0, 6, 12 -> ends 8, 14, 20
        assert_eq!(t.window_starts, vec![0, 6, 12]);
        for w in &t.windows {
            assert_eq!((w[0], *w.last().unwrap()), (2, 3));
            assert!(w.len() <= 10);
        }
    }

    #[test]
    fn missing_special_tokens_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        std::fs::write(&path, tiny_tokenizer_json(&["[UNK]", "a"])).unwrap();
        let err = TextTokenizer::from_file(&path, 16).err().unwrap();
        assert!(err.to_string().contains("[CLS]"), "{err}");
    }

    #[test]
    fn unreadable_tokenizer_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        std::fs::write(&path, "{not json").unwrap();
        let err = TextTokenizer::from_file(&path, 16).err().unwrap();
        assert!(err.to_string().contains("tokenizer.json"), "{err}");
    }
}
