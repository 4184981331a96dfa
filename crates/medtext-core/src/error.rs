//! The one error type of the core.
//!
//! Messages never contain the text being classified: they name files, sizes and
//! what to do next, so they are safe to log and to show. Paths and problems
//! that may hold names from a pack, an archive or a signature file are shown
//! through [`printable`], so such a name cannot drive the terminal.

use std::path::{Path, PathBuf};

use crate::text::validation::printable;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the text is empty, or only white space and invisible characters (such as NUL or zero-width spaces): type or paste a note to classify")]
    EmptyText,

    #[error(
        "the text is {chars} characters long, over the limit of {limit}: split it into parts and classify each"
    )]
    TextTooLong { chars: usize, limit: usize },

    #[error("{input} is larger than {limit}, the most {what} may be: {advice}")]
    InputTooLarge {
        input: PathBuf,
        limit: String,
        what: &'static str,
        advice: &'static str,
    },

    #[error("{path} already exists: MedText does not replace a file; choose a new file name")]
    OutputExists { path: PathBuf },

    #[error("the input is not valid UTF-8 text (first invalid byte at offset {offset}): save it as UTF-8 and try again")]
    InvalidUtf8 { offset: usize },

    #[error("model pack {}: {}", shown(.path), printable(.problem))]
    Pack { path: PathBuf, problem: String },

    #[error("no model pack named '{}' in {}: run `models/fetch-encoder.sh`, or set MEDTEXT_MODELS_DIR to the folder that holds the packs", printable(.name), shown(.dir))]
    PackNotFound { name: String, dir: PathBuf },

    #[error("tokenizer {}: {}", shown(.path), printable(.problem))]
    Tokenizer { path: PathBuf, problem: String },

    #[error("the model cannot run on this input: {0}")]
    ModelInput(String),

    #[error("the engine is busy: {capacity} requests are already waiting. Try again in a moment, or send texts together in one batch")]
    Busy { capacity: usize },

    #[error("{0}")]
    Engine(String),

    #[error("inference failed: {0}")]
    Inference(#[from] candle_core::Error),

    #[error("the history database {path} could not be opened with its key from the OS keychain: the key is wrong or the file is not a MedText database. The file was left untouched; restore it from a backup or move it aside to start a new history")]
    WrongKeyOrNotADatabase { path: PathBuf },

    #[error("the history database {path} exists but its key is missing from the OS keychain. The file was left untouched and no new database was created; restore the keychain entry, or move the file aside to start a new history")]
    KeyMissing { path: PathBuf },

    #[error("the history database {path} is missing or empty, yet {kept} show that a history was kept here: it was deleted or damaged. Nothing was changed and no new history was made. Put the file back from a backup of the folder, or restore a MedText backup with `medtext restore FILE`; if there is no copy, `medtext history start-new --confirm` starts an empty history and keeps the old recovery file aside")]
    HistoryMissing { path: PathBuf, kept: String },

    #[error("the history database {path} has lost work that was reported saved: {problem}. Nothing was changed. Restore the history from a backup (`medtext restore FILE`) or put back the folder's files from a copy; if there is none, `medtext audit accept-loss` records the loss in the audit trail and opens the history as it is")]
    AuditLoss { path: PathBuf, problem: String },

    #[error("OS keychain: {problem}. Check that a keyring (Secret Service, Credential Manager or Keychain) is running and unlocked")]
    Keychain { problem: String },

    #[error("history database {path}: {problem}")]
    Store { path: PathBuf, problem: String },

    #[error("the history database {path} is damaged ({problem}). It was left untouched; restore it from a backup, or move it aside to start a new history")]
    Damaged { path: PathBuf, problem: String },

    #[error("backup: {problem}")]
    Backup { problem: String },

    #[error("there is no history record {id}: it may have been deleted")]
    RecordNotFound { id: i64 },

    #[error("{}: {source}", shown(.path))]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("data file {path}: {problem}")]
    Dataset { path: PathBuf, problem: String },

    #[error("training failed: {problem}")]
    Training { problem: String },

    #[error("no data directory could be determined for this user: set MEDTEXT_DATA_DIR")]
    NoDataDir,

    #[error("machine policy {path}, line {line}: {problem}. MedText does not start until IT fixes or removes this file")]
    Policy {
        path: PathBuf,
        line: usize,
        problem: String,
    },

    #[error(
        "{what} is not allowed on this machine: the MedText policy set by IT ({path}) decides it"
    )]
    ManagedByPolicy { what: String, path: PathBuf },

    #[error("pack signature {}: {}", shown(.path), printable(.problem))]
    Signature { path: PathBuf, problem: String },

    #[error("the file is {mb} MB; {what} may be at most {limit_mb} MB")]
    FileTooLarge {
        what: String,
        mb: usize,
        limit_mb: usize,
    },

    #[error("MedText is locked after a period without use: unlock it to go on")]
    Locked,

    #[error("unlock: {problem}")]
    Unlock { problem: String },

    #[error("API key: {problem}")]
    ApiKey { problem: String },

    #[error("recovery key escrow: {}", printable(.problem))]
    Escrow { problem: String },
}

/// A path as messages show it (see [`printable`]).
fn shown(path: &Path) -> String {
    printable(&path.to_string_lossy())
}

impl Error {
    /// A stable, text-free name for the kind of error: what logs record
    /// instead of the message, which may name a file.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::EmptyText => "empty_text",
            Error::TextTooLong { .. } => "text_too_long",
            Error::InvalidUtf8 { .. } => "invalid_utf8",
            Error::InputTooLarge { .. } => "input_too_large",
            Error::OutputExists { .. } => "output_exists",
            Error::Pack { .. } => "pack",
            Error::PackNotFound { .. } => "pack_not_found",
            Error::Tokenizer { .. } => "tokenizer",
            Error::ModelInput(_) => "model_input",
            Error::Busy { .. } => "busy",
            Error::Engine(_) => "engine",
            Error::Inference(_) => "inference",
            Error::WrongKeyOrNotADatabase { .. } => "wrong_key",
            Error::KeyMissing { .. } => "key_missing",
            Error::HistoryMissing { .. } => "history_missing",
            Error::AuditLoss { .. } => "audit_loss",
            Error::Keychain { .. } => "keychain",
            Error::Store { .. } => "store",
            Error::Damaged { .. } => "damaged",
            Error::Backup { .. } => "backup",
            Error::RecordNotFound { .. } => "record_not_found",
            Error::Io { .. } => "io",
            Error::Dataset { .. } => "dataset",
            Error::Training { .. } => "training",
            Error::NoDataDir => "no_data_dir",
            Error::Policy { .. } => "policy",
            Error::ManagedByPolicy { .. } => "managed_by_policy",
            Error::Signature { .. } => "signature",
            Error::FileTooLarge { .. } => "file_too_large",
            Error::Locked => "locked",
            Error::Unlock { .. } => "unlock",
            Error::ApiKey { .. } => "api_key",
            Error::Escrow { .. } => "escrow",
        }
    }

    /// Logs this error by its kind (never its message) as part of
    /// `operation`, and hands it on.
    pub fn logged(self, operation: &'static str) -> Self {
        tracing::warn!(event = "error", operation, kind = self.kind());
        self
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn pack(path: impl Into<PathBuf>, problem: impl Into<String>) -> Self {
        Error::Pack {
            path: path.into(),
            problem: problem.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_pack_and_file_errors_cannot_drive_the_terminal() {
        let name = PathBuf::from("pack/\u{1b}]0;title\u{7}");
        for error in [
            Error::pack(&name, "member \u{1b}[2J"),
            Error::io(&name, std::io::Error::other("x")),
            Error::Signature {
                path: name.clone(),
                problem: "\u{9b}31m".into(),
            },
        ] {
            let message = error.to_string();
            assert!(
                !message.contains(['\u{1b}', '\u{7}', '\u{9b}']),
                "{message:?}"
            );
            assert!(message.contains("\\u{1b}"), "{message:?}");
        }
    }
}
