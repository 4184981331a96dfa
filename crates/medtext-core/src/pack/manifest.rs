//! Model packs: a folder with a `manifest.json` that names the encoder, the
//! heads on top of it, their labels, and the sha256 of every file.
//!
//! Opening a pack verifies every hash before any weight is read, so a damaged
//! or swapped file is refused with its name instead of giving wrong answers.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::text::abbreviations::Abbreviations;
use crate::user_files::Limit;
use crate::{Error, Result};

/// Most bytes of a pack's manifest or an encoder's `config.json`: they are
/// a few kilobytes, and a FIFO or a huge file in their place must not fill
/// memory.
pub const JSON_FILE_LIMIT: Limit = Limit {
    bytes: 16 << 20,
    what: "a pack manifest or an encoder config",
    advice: "check that this folder holds a MedText pack or a Hugging Face export",
};

/// The manifest or config at `path` as text, read within
/// [`JSON_FILE_LIMIT`].
pub(crate) fn read_json_file(path: &Path) -> Result<String> {
    String::from_utf8(JSON_FILE_LIMIT.read_file(path)?)
        .map_err(|_| Error::pack(path, "is not UTF-8 text"))
}

/// The manifest format this build reads.
pub const MANIFEST_FORMAT: u32 = 1;

/// The pack the app and the CLI use when none is named.
pub const DEFAULT_PACK: &str = "medical-abstracts";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub name: String,
    pub version: String,
    pub task: String,
    pub license: String,
    pub attribution: String,
    pub encoder: EncoderSpec,
    pub heads: Vec<HeadSpec>,
    /// Clinicians' abbreviations spelled out before tokenizing, for every
    /// head (see [`crate::text::abbreviations`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abbreviations: Option<PackFile>,
}

/// A file inside the pack with its sha256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackFile {
    pub file: PathBuf,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderSpec {
    /// Folder with `config.json`, `model.safetensors`, `tokenizer.json`,
    /// relative to the pack (encoders are shared between packs).
    pub path: PathBuf,
    pub architecture: Architecture,
    pub pooling: Pooling,
    /// Longest window fed to the encoder, special tokens included.
    pub max_tokens: usize,
    /// sha256 of each encoder file, by file name.
    pub sha256: std::collections::BTreeMap<String, String>,
    /// Low-rank deltas added to the encoder's weights at load (a fine-tuned
    /// encoder without a second copy of it; see [`crate::encoder::adapter`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<PackFile>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// BERT and its smaller relatives (MiniLM, BioBERT, PubMedBERT, ...).
    Bert,
    /// DistilBERT.
    Distilbert,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// Mean of the real tokens, L2-normalised (sentence-transformers encoders).
    Mean,
    /// The `[CLS]` token (fine-tuned sequence-classification checkpoints).
    Cls,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadSpec {
    pub name: String,
    pub kind: HeadKind,
    pub file: PathBuf,
    pub sha256: String,
    /// Calibration temperature the logits are divided by.
    pub temperature: f64,
    /// Below this top probability the result is flagged for review.
    pub abstain_below: f64,
    pub labels: Vec<Label>,
    /// The figures the head was shipped with, on held-out data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<ShippedEvaluation>,
    /// A character n-gram head mixed into this one ([`crate::inference::lexical`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lexical: Option<LexicalSpec>,
}

/// A head's character n-gram part: its file, and its weight in the mix of
/// the two heads' log-probabilities (between 0 and 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LexicalSpec {
    pub file: PathBuf,
    pub sha256: String,
    pub weight: f64,
}

/// How well a head did on held-out data when it was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShippedEvaluation {
    /// What it was measured on, in words.
    pub dataset: String,
    pub n: usize,
    pub accuracy: f64,
    pub macro_f1: f64,
    /// Expected calibration error after temperature scaling ...
    pub ece: f64,
    /// ... and before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ece_before_calibration: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeadKind {
    /// `weight` and `bias` in a file of its own, on the pooled vector.
    Linear,
    /// `hidden.*` then ReLU then `output.*`, in a file of its own.
    Mlp,
    /// The pooler/pre-classifier and classifier inside a Hugging Face
    /// `*ForSequenceClassification` checkpoint.
    #[serde(rename = "sequence-classification")]
    SequenceClassification,
}

impl Architecture {
    /// Reads the architecture from the `model_type` of an encoder's `config.json`.
    pub fn detect(encoder_dir: &Path) -> Result<Self> {
        let path = encoder_dir.join("config.json");
        let text = read_json_file(&path)?;
        let config: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::pack(&path, format!("not valid JSON: {e}")))?;
        match config.get("model_type").and_then(|v| v.as_str()) {
            Some("bert") => Ok(Self::Bert),
            Some("distilbert") => Ok(Self::Distilbert),
            other => Err(Error::pack(
                &path,
                format!(
                    "unsupported model_type {}; MedText runs bert and distilbert encoders",
                    other.map_or("(none)".to_string(), |t| format!("{t:?}"))
                ),
            )),
        }
    }
}

/// A label: a stable id (stored in history, used by tools) and the name shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Label {
    pub id: String,
    pub display: String,
}

/// An opened, verified model pack.
#[derive(Debug, Clone)]
pub struct Pack {
    pub dir: PathBuf,
    pub manifest: Manifest,
    /// Where the encoder's files are: `dir` joined with the manifest's
    /// encoder path, unless the pack was opened with another (an import
    /// checks a pack before its encoder is in place).
    encoder_dir: PathBuf,
}

impl Pack {
    /// Reads `dir/manifest.json`, checks it, and verifies the sha256 of every
    /// file it names.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with_encoder(dir, None)
    }

    /// [`Pack::open`], with the encoder's files taken from `encoder_dir`
    /// instead of the place the manifest names.
    pub fn open_with_encoder(dir: &Path, encoder_dir: Option<&Path>) -> Result<Self> {
        let manifest = Manifest::read(dir)?;
        let pack = Self {
            dir: dir.to_path_buf(),
            encoder_dir: encoder_dir
                .map_or_else(|| dir.join(&manifest.encoder.path), Path::to_path_buf),
            manifest,
        };
        pack.verify_hashes()?;
        Ok(pack)
    }

    /// Opens the pack called `name` inside `models_dir`, or the folder `name`
    /// itself when it is a path to a pack.
    pub fn find(models_dir: &Path, name: &str) -> Result<Self> {
        let as_path = Path::new(name);
        if as_path.join("manifest.json").is_file() {
            return Self::open(as_path);
        }
        let dir = models_dir.join(name);
        if !dir.join("manifest.json").is_file() {
            return Err(Error::PackNotFound {
                name: name.to_string(),
                dir: models_dir.to_path_buf(),
            });
        }
        Self::open(&dir)
    }

    pub fn encoder_dir(&self) -> PathBuf {
        self.encoder_dir.clone()
    }

    /// The pack's abbreviation list, if it has one.
    pub fn abbreviations(&self) -> Result<Option<Abbreviations>> {
        self.manifest
            .abbreviations
            .as_ref()
            .map(|a| Abbreviations::load(&self.dir.join(&a.file)))
            .transpose()
    }

    /// The head called `name`, or the first head when `name` is `None`.
    pub fn head(&self, name: Option<&str>) -> Result<&HeadSpec> {
        let heads = &self.manifest.heads;
        match name {
            None => heads.first(),
            Some(n) => heads.iter().find(|h| h.name == n),
        }
        .ok_or_else(|| {
            let known: Vec<String> = heads.iter().map(|h| format!("{:?}", h.name)).collect();
            Error::pack(
                &self.dir,
                format!(
                    "no head named {:?}; this pack has: {}",
                    name.unwrap_or_default(),
                    known.join(", ")
                ),
            )
        })
    }
}

impl Manifest {
    /// Reads and checks `dir/manifest.json` (no file hashes yet).
    pub fn read(dir: &Path) -> Result<Self> {
        let manifest_path = dir.join("manifest.json");
        let text = read_json_file(&manifest_path)?;
        Self::parse(&text, &manifest_path)
    }

    /// Parses and checks a manifest's JSON; `manifest_path` names it in
    /// errors.
    pub(crate) fn parse(text: &str, manifest_path: &Path) -> Result<Self> {
        // serde's messages may quote the values they failed on: Error shows
        // problems escaped (text::printable).
        let manifest: Manifest = serde_json::from_str(text)
            .map_err(|e| Error::pack(manifest_path, format!("invalid manifest: {e}")))?;
        manifest.check(manifest_path)?;
        Ok(manifest)
    }

    /// The encoder's folder name when it is shared through the models
    /// directory (`../encoders/<name>`), `None` otherwise.
    pub fn shared_encoder(&self) -> Option<&str> {
        shared_encoder_name(&self.encoder.path)
    }

    /// Whether the encoder is the pack folder itself or a folder inside it.
    pub fn encoder_inside(&self) -> bool {
        self.encoder.path == Path::new(".") || is_inside(&self.encoder.path)
    }

    fn check(&self, manifest_path: &Path) -> Result<()> {
        let m = self;
        let bad = |problem: String| Err(Error::pack(manifest_path, problem));
        if m.format != MANIFEST_FORMAT {
            return bad(format!(
                "manifest format {} is not supported by this MedText (it reads format {MANIFEST_FORMAT})",
                m.format
            ));
        }
        if !is_safe_name(&m.name) {
            return bad(format!(
                "pack name {:?} is not a plain folder name (letters, digits, '-', '_', '.')",
                m.name
            ));
        }
        if m.heads.is_empty() {
            return bad("the pack has no heads".into());
        }
        // In any letter case: on Windows and macOS "A.safetensors" and
        // "a.safetensors" are one file.
        let mut files: Vec<String> = m
            .pack_files()
            .map(|(file, _)| file.to_string_lossy().to_lowercase())
            .collect();
        files.sort_unstable();
        if let Some(twice) = files.windows(2).find(|w| w[0] == w[1]) {
            return bad(format!(
                "{:?} is named twice: each head, list and adapter needs its own file",
                twice[0]
            ));
        }
        for required in ["config.json", "model.safetensors", "tokenizer.json"] {
            if !m.encoder.sha256.contains_key(required) {
                return bad(format!("encoder.sha256 has no entry for {required}"));
            }
        }
        // Each entry is a file that is read and hashed: one naming a file
        // elsewhere (`../`, `/etc/...`) would be read, and a matching hash
        // would tell the pack's author what it holds.
        for file in m.encoder.sha256.keys() {
            if !is_inside(Path::new(file)) {
                return bad(format!(
                    "encoder.sha256 entry {file:?} is not a file name inside the encoder folder"
                ));
            }
        }
        for (what, file) in [
            ("abbreviations", &m.abbreviations),
            ("encoder adapter", &m.encoder.adapter),
        ] {
            if let Some(file) = file {
                if !is_inside(&file.file) {
                    return bad(format!(
                        "{what} file {:?} is not a path inside the pack",
                        file.file
                    ));
                }
            }
        }
        for head in &m.heads {
            if !is_inside(&head.file) {
                return bad(format!(
                    "head {:?} file {:?} is not a path inside the pack",
                    head.name, head.file
                ));
            }
            if head.labels.len() < 2 {
                return bad(format!("head {:?} needs at least two labels", head.name));
            }
            let mut ids: Vec<&str> = head.labels.iter().map(|l| l.id.as_str()).collect();
            ids.sort_unstable();
            if ids.windows(2).any(|w| w[0] == w[1]) {
                return bad(format!("head {:?} has duplicate label ids", head.name));
            }
            if let Some(lexical) = &head.lexical {
                if !is_inside(&lexical.file) {
                    return bad(format!(
                        "head {:?} lexical file {:?} is not a path inside the pack",
                        head.name, lexical.file
                    ));
                }
                if !(lexical.weight > 0.0 && lexical.weight < 1.0) {
                    return bad(format!(
                        "head {:?} has a lexical weight outside 0..1",
                        head.name
                    ));
                }
            }
            if !(head.temperature.is_finite() && head.temperature > 0.0) {
                return bad(format!(
                    "head {:?} has a non-positive temperature",
                    head.name
                ));
            }
            if !(0.0..=1.0).contains(&head.abstain_below) {
                return bad(format!(
                    "head {:?} has abstain_below outside 0..1",
                    head.name
                ));
            }
        }
        Ok(())
    }
}

impl HeadSpec {
    /// The head's files with their sha256: its weights, and its lexical part.
    pub fn files(&self) -> impl Iterator<Item = (&Path, &str)> {
        std::iter::once((self.file.as_path(), self.sha256.as_str())).chain(
            self.lexical
                .iter()
                .map(|l| (l.file.as_path(), l.sha256.as_str())),
        )
    }
}

impl Manifest {
    /// Every file of the pack itself (not the encoder's) with its sha256:
    /// heads, their lexical parts, the abbreviation list, the adapter.
    pub fn pack_files(&self) -> impl Iterator<Item = (&Path, &str)> {
        self.heads.iter().flat_map(HeadSpec::files).chain(
            [&self.abbreviations, &self.encoder.adapter]
                .into_iter()
                .flatten()
                .map(|f| (f.file.as_path(), f.sha256.as_str())),
        )
    }
}

impl Pack {
    fn verify_hashes(&self) -> Result<()> {
        let encoder_dir = self.encoder_dir();
        for (file, expected) in &self.manifest.encoder.sha256 {
            verify_file(&encoder_dir, Path::new(file), expected)?;
        }
        for (file, sha256) in self.manifest.pack_files() {
            verify_file(&self.dir, file, sha256)?;
        }
        Ok(())
    }
}

impl Manifest {
    /// The model hash of `head` (what every result and audit entry names as
    /// `model_sha256`): the encoder's weights and adapter, the head's file,
    /// its n-gram part and weight, the abbreviation list and the
    /// temperature, all from the manifest's own hashes, so it is known
    /// without loading anything.
    pub fn model_sha256(&self, head: &HeadSpec) -> String {
        let encoder = &self.encoder;
        // The adapter changes the encoder: it is part of its identity.
        let encoder_weights = encoder
            .sha256
            .get("model.safetensors")
            .map_or("", String::as_str)
            .to_string()
            + encoder.adapter.as_ref().map_or("", |a| a.sha256.as_str());
        let lexical = head
            .lexical
            .as_ref()
            .map_or(String::new(), |l| format!(":{}:{}", l.sha256, l.weight));
        // What the text is read with, and how the scores are scaled.
        let reading = format!(
            ":{}:t={}",
            self.abbreviations
                .as_ref()
                .map_or("", |a| a.sha256.as_str()),
            head.temperature
        );
        hex::encode(Sha256::digest(format!(
            "{encoder_weights}:{}{lexical}{reading}",
            head.sha256
        )))
    }

    /// Writes the manifest as `dir/manifest.json`.
    pub fn write(&self, dir: &Path) -> Result<PathBuf> {
        let path = dir.join("manifest.json");
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::pack(&path, format!("cannot encode the manifest: {e}")))?;
        std::fs::write(&path, text + "\n").map_err(|e| Error::io(&path, e))?;
        Ok(path)
    }
}

/// Every pack in `models_dir` (each folder with a `manifest.json`), sorted
/// by folder name; a pack that fails to open is listed with its error.
pub fn installed(models_dir: &Path) -> Vec<Result<Pack>> {
    let Ok(entries) = std::fs::read_dir(models_dir) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("manifest.json").is_file())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !n.starts_with('.'))
        })
        .collect();
    dirs.sort();
    dirs.iter().map(|d| Pack::open(d)).collect()
}

/// A pack as `medtext --version` and the app's About box name it, so IT
/// can tell exactly which model a workstation runs: its name, version, and
/// each head's model hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackIdentity {
    pub name: String,
    pub version: String,
    pub heads: Vec<HeadIdentity>,
}

/// A head and its model hash ([`Manifest::model_sha256`]: the one every
/// result and audit entry carries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeadIdentity {
    pub name: String,
    pub model_sha256: String,
}

/// [`installed`], each pack named by its [`PackIdentity`]. Every pack is
/// opened, so its files are verified: the hashes shown are those of the
/// files that are there, not only those the manifest promises.
pub fn identities(models_dir: &Path) -> Vec<Result<PackIdentity>> {
    installed(models_dir)
        .into_iter()
        .map(|pack| {
            pack.map(|pack| {
                let m = pack.manifest;
                PackIdentity {
                    heads: m
                        .heads
                        .iter()
                        .map(|head| HeadIdentity {
                            name: head.name.clone(),
                            model_sha256: m.model_sha256(head),
                        })
                        .collect(),
                    name: m.name,
                    version: m.version,
                }
            })
        })
        .collect()
}

/// A name that is safe as a single folder name on every OS.
pub(crate) fn is_safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A relative path that stays inside its folder: only plain components, so
/// no `..`, no root, no drive prefix.
pub(crate) fn is_inside(path: &Path) -> bool {
    path.components().next().is_some()
        && path
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

/// `<name>` for an encoder path of exactly `../encoders/<name>`.
fn shared_encoder_name(path: &Path) -> Option<&str> {
    let mut parts = path.components();
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (
            Some(std::path::Component::ParentDir),
            Some(std::path::Component::Normal(encoders)),
            Some(std::path::Component::Normal(name)),
            None,
        ) if encoders == "encoders" => name.to_str().filter(|n| is_safe_name(n)),
        _ => None,
    }
}

/// The files every encoder folder holds, hashed for a manifest.
pub fn encoder_hashes(encoder_dir: &Path) -> Result<std::collections::BTreeMap<String, String>> {
    ["config.json", "model.safetensors", "tokenizer.json"]
        .iter()
        .map(|file| Ok((file.to_string(), sha256_file(&encoder_dir.join(file))?)))
        .collect()
}

/// Makes a pack of a Hugging Face `BertForSequenceClassification` or
/// `DistilBertForSequenceClassification` folder exactly as exported
/// (`config.json`, `model.safetensors`, `tokenizer.json`): writes a
/// `manifest.json` beside them with their hashes and the labels of the
/// config's `id2label`, so a model fine-tuned elsewhere is used as it is.
pub fn import_sequence_classifier(
    dir: &Path,
    name: &str,
    license: &str,
    attribution: &str,
) -> Result<PathBuf> {
    let config_path = dir.join("config.json");
    let text = read_json_file(&config_path)?;
    let config: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::pack(&config_path, format!("not valid JSON: {e}")))?;
    let bad = |problem: String| Err(Error::pack(&config_path, problem));
    let is_classifier = config["architectures"].as_array().is_some_and(|a| {
        a.iter().any(|v| {
            v.as_str()
                .is_some_and(|s| s.ends_with("ForSequenceClassification"))
        })
    });
    if !is_classifier {
        return bad("not a *ForSequenceClassification checkpoint (see \"architectures\")".into());
    }
    let architecture = Architecture::detect(dir)?;
    let Some(id2label) = config["id2label"].as_object() else {
        return bad("no id2label map".into());
    };
    let mut labels = Vec::with_capacity(id2label.len());
    for index in 0..id2label.len() {
        match id2label.get(&index.to_string()).and_then(|v| v.as_str()) {
            Some(label) => labels.push(Label {
                id: label.to_string(),
                display: label.to_string(),
            }),
            None => return bad(format!("id2label has no label for index {index}")),
        }
    }
    let max_positions = config["max_position_embeddings"].as_u64().unwrap_or(512) as usize;
    let sha256 = encoder_hashes(dir)?;
    let weights_sha = sha256["model.safetensors"].clone();
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        name: name.into(),
        version: "imported".into(),
        task: format!("{name} (imported sequence classifier)"),
        license: license.into(),
        attribution: attribution.into(),
        encoder: EncoderSpec {
            path: PathBuf::from("."),
            architecture,
            pooling: Pooling::Cls,
            max_tokens: max_positions.min(512),
            sha256,
            adapter: None,
        },
        heads: vec![HeadSpec {
            name: "classifier".into(),
            kind: HeadKind::SequenceClassification,
            file: PathBuf::from("model.safetensors"),
            sha256: weights_sha,
            temperature: 1.0,
            abstain_below: 0.5,
            labels,
            evaluation: None,
            lexical: None,
        }],
        abbreviations: None,
    };
    manifest.write(dir)
}

/// sha256 of a file, hex-encoded, streamed so large weights are not read whole.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Checks the sha256 of `file` in `dir`. Errors name the folder and, escaped,
/// the manifest's entry.
fn verify_file(dir: &Path, file: &Path, expected: &str) -> Result<()> {
    let path = dir.join(file);
    if !path.is_file() {
        return Err(Error::pack(
            dir,
            format!("{file:?} is missing (for the default encoder run models/fetch-encoder.sh)"),
        ));
    }
    let actual = sha256_file(&path)?;
    if !actual.eq_ignore_ascii_case(expected) {
        return Err(Error::pack(
            dir,
            format!("{file:?}: sha256 mismatch: the manifest expects {expected:?}, the file has {actual}; the file is damaged or was replaced"),
        ));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::encoder::bert::tests::write_tiny_bert;
    use crate::encoder::distilbert::tests::write_tiny_distilbert;
    use crate::inference::head::tests::write_head;
    use crate::text::tokenize::tests::{tiny_tokenizer_json, TINY_VOCAB};

    pub(crate) const TINY_LABELS: [(&str, &str); 3] = [
        ("I00-I99", "Diseases of the circulatory system"),
        ("J00-J99", "Diseases of the respiratory system"),
        ("C00-D49", "Neoplasms"),
    ];

    /// Writes a complete tiny pack: `root/encoders/tiny` and `root/tiny-pack`.
    pub(crate) fn write_tiny_pack(root: &Path) -> PathBuf {
        write_tiny_pack_with(root, Architecture::Bert)
    }

    /// A random MLP head: `inputs` → `width` → `labels`.
    pub(crate) fn write_mlp_head(path: &Path, inputs: usize, width: usize, labels: usize) {
        let dev = candle_core::Device::Cpu;
        let rand = |shape: &[usize]| candle_core::Tensor::randn(0f32, 0.5, shape, &dev).unwrap();
        let tensors: std::collections::HashMap<String, candle_core::Tensor> = [
            ("hidden.weight", rand(&[width, inputs])),
            ("hidden.bias", rand(&[width])),
            ("output.weight", rand(&[labels, width])),
            ("output.bias", rand(&[labels])),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        candle_core::safetensors::save(&tensors, path).unwrap();
    }

    pub(crate) fn write_tiny_pack_with(root: &Path, architecture: Architecture) -> PathBuf {
        let enc = root.join("encoders/tiny");
        std::fs::create_dir_all(&enc).unwrap();
        match architecture {
            Architecture::Bert => write_tiny_bert(&enc, TINY_VOCAB.len()),
            Architecture::Distilbert => write_tiny_distilbert(&enc, TINY_VOCAB.len()),
        }
        std::fs::write(enc.join("tokenizer.json"), tiny_tokenizer_json(TINY_VOCAB)).unwrap();
        let pack = root.join("tiny-pack");
        std::fs::create_dir_all(&pack).unwrap();
        write_head(
            &pack.join("head.safetensors"),
            &(0..3)
                .map(|i| (0..8).map(|j| ((i * 8 + j) as f32).sin()).collect())
                .collect::<Vec<_>>(),
            &[0.1, -0.1, 0.0],
        );
        write_mlp_head(&pack.join("urgency.safetensors"), 8, 4, 2);
        let sha = |p: PathBuf| sha256_file(&p).unwrap();
        let manifest = serde_json::json!({
            "format": 1, "name": "tiny-pack", "version": "0.0.1", "task": "test",
            "license": "Apache-2.0", "attribution": "generated by the test",
            "encoder": {
                "path": "../encoders/tiny", "architecture": architecture, "pooling": "mean", "max_tokens": 10,
                "sha256": {
                    "config.json": sha(enc.join("config.json")),
                    "model.safetensors": sha(enc.join("model.safetensors")),
                    "tokenizer.json": sha(enc.join("tokenizer.json")),
                }
            },
            "heads": [{
                "name": "chapter", "kind": "linear", "file": "head.safetensors",
                "sha256": sha(pack.join("head.safetensors")), "temperature": 1.0, "abstain_below": 0.5,
                "labels": TINY_LABELS.iter().map(|(id, d)| serde_json::json!({"id": id, "display": d})).collect::<Vec<_>>()
            }, {
                "name": "urgency", "kind": "mlp", "file": "urgency.safetensors",
                "sha256": sha(pack.join("urgency.safetensors")), "temperature": 2.0, "abstain_below": 0.6,
                "labels": [{"id": "routine", "display": "Routine"}, {"id": "urgent", "display": "Urgent"}]
            }]
        });
        std::fs::write(
            pack.join("manifest.json"),
            serde_json::to_string_pretty(&manifest).unwrap(),
        )
        .unwrap();
        pack
    }

    #[test]
    fn a_tiny_pack_opens_and_finds_its_head() {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_pack(dir.path());
        let pack = Pack::find(dir.path(), "tiny-pack").unwrap();
        assert_eq!(pack.head(None).unwrap().name, "chapter");
        assert_eq!(pack.head(Some("chapter")).unwrap().labels.len(), 3);
        let err = pack.head(Some("block")).unwrap_err().to_string();
        assert!(
            err.contains("no head named \"block\"") && err.contains("chapter"),
            "{err}"
        );
    }

    #[test]
    fn identities_name_each_heads_model_hash_and_each_pack_that_does_not_open() {
        let dir = tempfile::tempdir().unwrap();
        let pack_dir = write_tiny_pack(dir.path());
        let manifest = Manifest::read(&pack_dir).unwrap();
        let hash = |head: usize| manifest.model_sha256(&manifest.heads[head]);
        assert_eq!(
            identities(dir.path())
                .into_iter()
                .map(Result::unwrap)
                .collect::<Vec<_>>(),
            [PackIdentity {
                name: "tiny-pack".into(),
                version: "0.0.1".into(),
                heads: vec![
                    HeadIdentity {
                        name: "chapter".into(),
                        model_sha256: hash(0),
                    },
                    HeadIdentity {
                        name: "urgency".into(),
                        model_sha256: hash(1),
                    },
                ],
            }]
        );
        assert_ne!(hash(0), hash(1));
        // A damaged head: its hash is not shown as if it were the shipped one.
        std::fs::write(pack_dir.join("urgency.safetensors"), b"damaged").unwrap();
        let err = identities(dir.path())
            .pop()
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(err.contains("sha256 mismatch"), "{err}");
    }

    #[test]
    fn a_manifest_config_or_tokenizer_past_its_limit_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let pack = write_tiny_pack(dir.path());
        let encoder = dir.path().join("encoders/tiny");
        // Sparse files one byte past each limit: read whole, they would
        // take that much memory.
        let oversized = |file: &Path, limit: u64| {
            let kept = file.with_extension("kept");
            std::fs::rename(file, &kept).unwrap();
            std::fs::File::create(file)
                .unwrap()
                .set_len(limit + 1)
                .unwrap();
            kept
        };
        type Reader<'a> = &'a dyn Fn() -> Result<()>;
        let readers: [(PathBuf, u64, Reader); 3] = [
            (pack.join("manifest.json"), JSON_FILE_LIMIT.bytes, &|| {
                Manifest::read(&pack).map(|_| ())
            }),
            (encoder.join("config.json"), JSON_FILE_LIMIT.bytes, &|| {
                Architecture::detect(&encoder).map(|_| ())
            }),
            (encoder.join("tokenizer.json"), 64 << 20, &|| {
                crate::text::tokenize::TextTokenizer::from_file(&encoder.join("tokenizer.json"), 16)
                    .map(|_| ())
            }),
        ];
        for (file, limit, read) in readers {
            let kept = oversized(&file, limit);
            let err = read().err().unwrap().to_string();
            assert!(err.contains("is larger than"), "{}: {err}", file.display());
            std::fs::rename(&kept, &file).unwrap();
        }
        crate::inference::classifier::Classifier::load(dir.path(), "tiny-pack", None).unwrap();
    }

    #[test]
    fn a_changed_weight_file_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let pack = write_tiny_pack(dir.path());
        let weights = dir.path().join("encoders/tiny/model.safetensors");
        let mut bytes = std::fs::read(&weights).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&weights, bytes).unwrap();
        let err = Pack::open(&pack).unwrap_err().to_string();
        assert!(
            err.contains("model.safetensors") && err.contains("sha256 mismatch"),
            "{err}"
        );
    }

    #[test]
    fn a_lexical_part_outside_the_pack_out_of_range_or_on_a_named_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pack = write_tiny_pack(dir.path());
        let original = std::fs::read_to_string(pack.join("manifest.json")).unwrap();
        for (lexical, problem) in [
            (
                serde_json::json!({"file": "../x.safetensors", "sha256": "00", "weight": 0.3}),
                "lexical file \"../x.safetensors\" is not a path inside the pack",
            ),
            (
                serde_json::json!({"file": "l.safetensors", "sha256": "00", "weight": 0.0}),
                "lexical weight outside 0..1",
            ),
            (
                serde_json::json!({"file": "l.safetensors", "sha256": "00", "weight": 1.0}),
                "lexical weight outside 0..1",
            ),
            (
                serde_json::json!({"file": "HEAD.safetensors", "sha256": "00", "weight": 0.3}),
                "\"head.safetensors\" is named twice",
            ),
        ] {
            let mut manifest: serde_json::Value = serde_json::from_str(&original).unwrap();
            manifest["heads"][0]["lexical"] = lexical;
            std::fs::write(pack.join("manifest.json"), manifest.to_string()).unwrap();
            let err = Pack::open(&pack).unwrap_err().to_string();
            assert!(err.contains(problem), "{err}");
        }
    }

    #[test]
    fn encoder_hash_entries_outside_the_encoder_folder_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let pack = write_tiny_pack(dir.path());
        // A file the pack must never read, with its true hash: without the
        // check, the pack opens and so proves the file's content.
        let outside = dir.path().join("outside.txt");
        std::fs::write(&outside, b"not the pack's").unwrap();
        let outside_sha = sha256_file(&outside).unwrap();
        let original = std::fs::read_to_string(pack.join("manifest.json")).unwrap();
        for entry in [
            "../../outside.txt".to_string(),
            outside.to_string_lossy().into_owned(),
            "\u{1b}[2J/../../../outside.txt".to_string(),
        ] {
            let mut manifest: serde_json::Value = serde_json::from_str(&original).unwrap();
            manifest["encoder"]["sha256"][&entry] = serde_json::json!(outside_sha);
            std::fs::write(pack.join("manifest.json"), manifest.to_string()).unwrap();
            let err = Pack::open(&pack).unwrap_err().to_string();
            assert!(
                err.contains(&format!("encoder.sha256 entry {entry:?}")) && err.contains("inside"),
                "{err}"
            );
            assert!(!err.contains('\u{1b}'), "{err:?}");
        }
    }

    #[test]
    fn a_missing_file_and_an_unknown_pack_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let pack = write_tiny_pack(dir.path());
        std::fs::remove_file(pack.join("head.safetensors")).unwrap();
        let err = Pack::open(&pack).unwrap_err().to_string();
        assert!(
            err.contains("head.safetensors") && err.contains("missing"),
            "{err}"
        );
        let err = Pack::find(dir.path(), "nope").unwrap_err().to_string();
        assert!(err.contains("no model pack named 'nope'"), "{err}");
    }

    #[test]
    fn the_architecture_is_detected_from_the_encoder_config() {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_pack_with(dir.path(), Architecture::Distilbert);
        let enc = dir.path().join("encoders/tiny");
        assert_eq!(
            Architecture::detect(&enc).unwrap(),
            Architecture::Distilbert
        );
        let cfg = std::fs::read_to_string(enc.join("config.json")).unwrap();
        std::fs::write(enc.join("config.json"), cfg.replace("distilbert", "gpt2")).unwrap();
        let err = Architecture::detect(&enc).unwrap_err().to_string();
        assert!(err.contains("unsupported model_type \"gpt2\""), "{err}");
    }

    #[test]
    fn an_unsupported_architecture_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pack = write_tiny_pack(dir.path());
        let m = std::fs::read_to_string(pack.join("manifest.json")).unwrap();
        std::fs::write(
            pack.join("manifest.json"),
            m.replace("\"bert\"", "\"gpt2\""),
        )
        .unwrap();
        let err = Pack::open(&pack).unwrap_err().to_string();
        assert!(
            err.contains("manifest.json") && err.contains("gpt2"),
            "{err}"
        );
    }
}
