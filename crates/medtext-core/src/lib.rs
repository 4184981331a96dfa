//! MedText's domain: model packs, tokenization, inference, the encrypted
//! history store and its keychain custody.
//!
//! This crate knows nothing of Tauri so that the desktop app, the `medtext`
//! command-line tool and the tests all run exactly the same code.

pub mod abbreviations;
pub mod anchor;
pub mod api_keys;
pub mod archive;
pub mod audit;
pub mod backup;
pub mod batch;
pub mod bench;
pub mod classifier;
pub mod dataset;
pub mod embedding_cache;
pub mod encoder;
pub mod engine;
pub mod error;
pub mod escrow;
pub mod evidence;
pub mod head;
pub mod history_bench;
pub mod keychain;
pub mod lexical;
pub mod lock;
pub mod logging;
pub mod metrics;
pub mod network;
pub mod os_auth;
pub mod pack;
pub mod paths;
pub mod policy;
pub mod pool;
pub mod recovery;
pub mod runtime;
pub mod signing;
pub mod split_file;
pub mod store;
pub mod text;
pub mod tokenize;
pub mod train;
pub mod training;
pub mod user_files;
pub mod worker;

pub use classifier::{Classification, Classifier, Embedder, LabelScore};
pub use error::{Error, Result};
pub use store::{HistoryEntry, HistoryStore};
