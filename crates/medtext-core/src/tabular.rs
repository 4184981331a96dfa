//! Data files read by column: CSV with a header row, within one size
//! ceiling. Training, evaluation, batches, splits and the lists of labels
//! and abbreviations all read through here, so every wing refuses an
//! oversized file the same way.

use std::path::Path;

use crate::user_files::Limit;
use crate::{Error, Result};

/// [`FILE_LIMIT`] in bytes: also the largest file the app stages to train
/// on or to classify as a batch.
pub const MAX_DATA_FILE_BYTES: usize = 256 * 1024 * 1024;

/// The most read of a data file (training, evaluation, a batch, a split, a
/// list of labels or abbreviations): the size of file the app accepts for
/// training (a CSV of 256 MB holds several hundred thousand notes). Its rows
/// are kept in memory, so a larger one is refused before it is read.
pub const FILE_LIMIT: Limit = Limit {
    bytes: MAX_DATA_FILE_BYTES as u64,
    what: "a data file",
    advice: "split it into smaller files",
};

pub type CsvReader = csv::Reader<std::io::Cursor<Vec<u8>>>;

/// Reads a CSV file that has a header row (within [`FILE_LIMIT`]).
pub fn open_csv(path: &Path) -> Result<CsvReader> {
    let bytes = FILE_LIMIT.read_file(path).map_err(|e| match e {
        Error::Io { source, .. } => Error::Dataset {
            path: path.to_path_buf(),
            problem: format!("cannot open: {source}"),
        },
        other => other,
    })?;
    Ok(csv::Reader::from_reader(std::io::Cursor::new(bytes)))
}
