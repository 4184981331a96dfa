//! The bodies of MedText's fuzz targets, one per reader of untrusted input.
//!
//! `fuzz/` (cargo-fuzz, nightly, run by `scripts/fuzz.sh`) calls these with
//! libFuzzer's inputs; `tests/corpus.rs` calls them on stable with every
//! committed corpus file, so CI re-checks each input a fuzzer ever kept.
//! Each target must never panic: a panic is the bug the fuzzer reports. The
//! files they write live in one scratch folder per process, reused across
//! inputs so a target runs thousands of times a second.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use medtext_core::machine::policy::Policy;
use medtext_core::pack::manifest::Pack;
use medtext_core::text::abbreviations::Abbreviations;
use medtext_core::text::tokenize::TextTokenizer;
use medtext_core::training::examples::{self as dataset, Columns};

/// A fuzz target: runs one input, panics only on a bug.
pub type Target = fn(&[u8]);

/// The fuzz targets by name (the folder names under `fuzz/corpus/`).
pub const TARGETS: &[(&str, Target)] = &[
    ("manifest", manifest),
    ("archive", archive),
    ("dataset", dataset),
    ("policy", policy),
    ("tokenizer", tokenizer),
    ("http_request", http_request),
];

fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a scratch folder for fuzzing"))
        .path()
}

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A pack's `manifest.json`: parsing, every check on names, paths, heads
/// and labels, up to opening the encoder it names.
pub fn manifest(data: &[u8]) {
    let dir = scratch().join("manifest-pack");
    std::fs::create_dir_all(&dir).expect("scratch pack folder");
    std::fs::write(dir.join("manifest.json"), data).expect("scratch manifest");
    let _ = Pack::open(&dir);
}

/// A pack archive being imported: tar parsing, member paths and types,
/// sizes, hashes. Whatever it installs is removed again.
pub fn archive(data: &[u8]) {
    let models = scratch().join("archive-models");
    std::fs::create_dir_all(&models).expect("scratch models folder");
    let origin = std::path::Path::new("fuzz.tar");
    let _ = medtext_core::pack::archive::import(data, origin, None, &models, None);
    // Import must never write outside the models folder; clear it for the next input.
    let _ = std::fs::remove_dir_all(&models);
}

/// A labelled training or evaluation file, read both as CSV and as JSON
/// Lines, then checked as a training set.
pub fn dataset(data: &[u8]) {
    for name in ["data.csv", "data.jsonl"] {
        let file = scratch().join(name);
        std::fs::write(&file, data).expect("scratch data file");
        let columns = Columns {
            text: "text",
            label: "label",
            group: None,
        };
        if let Ok(examples) = dataset::read_labelled(&file, columns) {
            let _ = dataset::check_training_set(&file, &examples, dataset::MIN_PER_LABEL);
            let _ = dataset::deduplicate(examples, false);
        }
    }
}

/// The machine policy file.
pub fn policy(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(policy) = Policy::parse(text, Path::new("policy.toml")) {
            let _ = policy.managed();
            let _ = policy.check_text(text);
        }
    }
}

/// The tokenizer entry point on any text: the real MiniLM tokenizer with
/// short windows (so splitting and overlap are exercised), after the ICD
/// pack's abbreviation expansion. Windows must stay within the limit and
/// every offset inside the text.
pub fn tokenizer(data: &[u8]) {
    static LOADED: OnceLock<(TextTokenizer, Abbreviations)> = OnceLock::new();
    let (tokenizer, abbreviations) = LOADED.get_or_init(|| {
        let models = repository().join("models");
        (
            TextTokenizer::from_file(&models.join("encoders/all-minilm-l6-v2/tokenizer.json"), 32)
                .expect("the MiniLM tokenizer (run models/fetch-encoder.sh)"),
            Abbreviations::load(&models.join("icd10cm/abbreviations.csv"))
                .expect("the ICD pack's abbreviations"),
        )
    });
    let text = String::from_utf8_lossy(data);
    let expanded = abbreviations.expand(&text);
    let chars = expanded.text.chars().count();
    for (appended, source) in &expanded.sources {
        assert!(appended.end <= chars && source.end <= expanded.original_chars);
    }
    if let Ok(tokenized) = tokenizer.tokenize(&expanded.text) {
        assert!(tokenized.windows.iter().all(|w| w.len() <= 32));
        assert!(tokenized
            .char_offsets
            .iter()
            .all(|&(s, e)| s <= e && e <= chars));
    }
}

/// A request to the local API (`medtext serve`): the head as read from the
/// socket, its body length and the body as far as it is there.
pub fn http_request(data: &[u8]) {
    use medtext_api::http;
    let mut reader = data;
    if let Ok(Some(head)) = http::read_head(&mut reader) {
        let _ = head.expects_continue();
        if let Ok(length) = head.content_length() {
            let available = reader.len();
            let _ = http::read_body(&mut reader, length.min(available));
        }
    }
}
