//! Numerical parity with PyTorch. The fixtures under `fixtures/parity/` were
//! written by `scripts/reference/make_parity_fixtures.py` (transformers +
//! torch): tiny random BERT and DistilBERT sequence classifiers with their
//! last hidden states and logits for fixed, partly padded token ids, and the
//! real all-MiniLM-L6-v2's pooled embeddings for a few clinical sentences.
//! Candle must agree to within 1e-4.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use medtext_core::encoder::{bert, distilbert, Encoder};
use medtext_core::inference::head::{Head, SequenceClassificationHead};
use medtext_core::inference::pooling::{cls_pool, mean_pool_normalized};
use medtext_core::pack::manifest::Architecture;

const TOLERANCE: f32 = 1e-4;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/parity")
        .join(name)
}

fn reference(dir: &Path) -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu).unwrap()
}

fn ids(t: &Tensor) -> Tensor {
    t.to_dtype(DType::U32).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Hidden states of real tokens (padding rows are never read) and logits.
fn check_sequence_classifier(name: &str, encoder: &dyn Encoder, architecture: Architecture) {
    let dir = fixture(name);
    let r = reference(&dir);
    let (input_ids, mask) = (ids(&r["input_ids"]), ids(&r["attention_mask"]));
    let hidden = encoder.forward(&input_ids, &mask).unwrap();
    let mask_f = mask.to_dtype(DType::F32).unwrap().unsqueeze(2).unwrap();
    let hidden_diff = max_abs_diff(
        &hidden.broadcast_mul(&mask_f).unwrap(),
        &r["last_hidden_state"].broadcast_mul(&mask_f).unwrap(),
    );
    assert!(
        hidden_diff < TOLERANCE,
        "{name}: hidden states differ by {hidden_diff}"
    );

    let head = SequenceClassificationHead::load(
        &dir.join("model.safetensors"),
        architecture,
        encoder.hidden_size(),
        3,
    )
    .unwrap();
    let logits = head.logits(&cls_pool(&hidden).unwrap()).unwrap();
    let logits_diff = max_abs_diff(&logits, &r["logits"]);
    assert!(
        logits_diff < TOLERANCE,
        "{name}: logits differ by {logits_diff}"
    );
    eprintln!("{name}: hidden max diff {hidden_diff:e}, logits max diff {logits_diff:e}");
}

#[test]
fn tiny_bert_matches_pytorch() {
    let encoder = bert::load(&fixture("bert"), None).unwrap();
    check_sequence_classifier("bert", &encoder, Architecture::Bert);
}

#[test]
fn tiny_distilbert_matches_pytorch() {
    let encoder = distilbert::load(&fixture("distilbert"), None).unwrap();
    check_sequence_classifier("distilbert", &encoder, Architecture::Distilbert);
}

/// The real default encoder, when `models/fetch-encoder.sh` has fetched it
/// (CI always does). Token ids come from the fixture, so this checks the
/// forward pass; `minilm_tokenization_matches` checks the tokenizer.
#[test]
fn minilm_embeddings_match_pytorch() {
    let Some(encoder_dir) = minilm_dir() else {
        return;
    };
    let encoder = bert::load(&encoder_dir, None).unwrap();
    let r = reference(&fixture("minilm"));
    let (input_ids, mask) = (ids(&r["input_ids"]), ids(&r["attention_mask"]));
    let hidden = encoder.forward(&input_ids, &mask).unwrap();
    let pooled = mean_pool_normalized(&hidden, &mask).unwrap();
    let diff = max_abs_diff(&pooled, &r["embeddings"]);
    assert!(diff < TOLERANCE, "MiniLM embeddings differ by {diff}");
    eprintln!("minilm: pooled embedding max diff {diff:e}");
}

#[test]
fn minilm_tokenization_matches() {
    let Some(encoder_dir) = minilm_dir() else {
        return;
    };
    let tokenizer = medtext_core::text::tokenize::TextTokenizer::from_file(
        &encoder_dir.join("tokenizer.json"),
        256,
    )
    .unwrap();
    let sentences: Vec<String> = serde_json::from_str(
        &std::fs::read_to_string(fixture("minilm").join("sentences.json")).unwrap(),
    )
    .unwrap();
    let r = reference(&fixture("minilm"));
    let expected = ids(&r["input_ids"]).to_vec2::<u32>().unwrap();
    let lengths = ids(&r["attention_mask"])
        .sum(1)
        .unwrap()
        .to_vec1::<u32>()
        .unwrap();
    assert_eq!(sentences.len(), expected.len());
    for ((sentence, row), length) in sentences.iter().zip(expected).zip(lengths) {
        let windows = tokenizer.tokenize(sentence).unwrap().windows;
        assert_eq!(windows, vec![row[..length as usize].to_vec()]);
    }
}

fn minilm_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/encoders/all-minilm-l6-v2");
    if dir.join("model.safetensors").exists() {
        Some(dir)
    } else {
        eprintln!("skipped: run models/fetch-encoder.sh to fetch all-MiniLM-L6-v2");
        None
    }
}
