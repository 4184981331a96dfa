//! MedText's local API: what `medtext serve` runs. A small HTTP/1.1 server on
//! 127.0.0.1 that lets programs on the workstation (a lab system's bridge, a
//! script) classify through the same core and model packs as the app, with a
//! key per program and every call in the audit trail.
//!
//! Kept out of `medtext-core` because it is a front end, like the app and the
//! CLI; kept out of the CLI so its tests run the server in-process.

pub mod http;
pub mod metrics;
pub mod server;

pub use server::{Config, Server};

/// Why the server could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on 127.0.0.1:{port}: {source} (is another program using the port? choose another with --port)")]
    Bind {
        port: u16,
        #[source]
        source: std::io::Error,
    },

    #[error("the listening socket failed: {0}")]
    Listen(#[source] std::io::Error),

    #[error("cannot start a thread: {0}")]
    Thread(#[source] std::io::Error),

    #[error(transparent)]
    Core(#[from] medtext_core::Error),
}
