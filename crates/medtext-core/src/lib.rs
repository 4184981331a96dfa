//! MedText's domain: model packs, tokenization, inference, training, the
//! encrypted history and the machine it runs on.
//!
//! This crate knows nothing of Tauri, HTTP or the terminal, so that the
//! desktop app, the `medtext` command-line tool, the local API and the tests
//! all run exactly the same code. Front ends only translate.
//!
//! # Code map
//!
//! The crate is six wings and a few shared modules; `ARCHITECTURE.md` at the
//! repository root has the whole map and its invariants.
//!
//! - [`text`]: what a text must be before it is classified, and how it
//!   becomes tokens (abbreviations expanded, the tokenizer applied).
//! - [`pack`]: model packs on disk: the manifest, pack archives, signatures.
//! - [`encoder`]: our own fast transformer encoders (BERT, DistilBERT).
//! - [`inference`]: the classifier and its heads, evidence, and the worker
//!   thread and engine every front end classifies through.
//! - [`training`]: from a labelled file to a new pack, and its evaluation.
//! - [`history`]: the SQLCipher history, its key in the OS keychain, the
//!   audit chain, backups, API keys and escrow.
//! - [`machine`]: what the workstation imposes: IT's policy, the idle lock,
//!   OS authentication, the network guard, logging and threads.
//! - [`bench`]: the project's own benchmarks (figures printed, never asserted).
//!
//! Shared by every wing: [`error`] (the one error enum), [`paths`] (where
//! data and models live), [`tabular`] (CSV data files by column) and [`user_files`] (reading and writing files the
//! user names, with ceilings).

pub mod bench;
pub mod encoder;
pub mod error;
pub mod history;
pub mod inference;
pub mod machine;
pub mod pack;
pub mod paths;
pub mod tabular;
pub mod text;
pub mod training;
pub mod user_files;

pub use error::{Error, Result};
pub use history::store::{HistoryEntry, HistoryStore};
pub use inference::classifier::{Classification, Classifier, Embedder, LabelScore};
