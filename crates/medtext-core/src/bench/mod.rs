//! The project's own benchmarks: classification speed and memory
//! ([`inference`], `medtext bench`) and the history at scale ([`history`],
//! `medtext bench-history`). Figures are printed, never asserted.

pub mod history;
pub mod inference;
