//! Batch results: what the app's Batch screen shows for each text, and the
//! CSV it saves. The file holds names, labels and confidences, never the
//! texts, and is still an export: the machine policy may forbid it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::machine::policy::Policy;
use crate::text::validation::spreadsheet_cell;
use crate::{inference::classifier::Classification, paths, Error, Result};

/// Most texts one batch call classifies: the screen sends a long batch in
/// parts, so progress shows and Cancel takes effect between parts.
pub const MAX_TEXTS_PER_CALL: usize = 64;

/// Most texts one batch file may hold.
pub const MAX_TEXTS_PER_FILE: usize = 100_000;

/// The outcome for one text of a batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchRow {
    /// The file name or row number the text came from.
    pub name: String,
    pub label_id: Option<String>,
    pub label: Option<String>,
    pub probability: Option<f32>,
    pub needs_review: bool,
    pub saved_id: Option<i64>,
    /// Why this text has no result (empty, too long, not UTF-8).
    pub error: Option<String>,
}

impl BatchRow {
    pub fn from_outcome(name: String, outcome: &Result<Classification>) -> Self {
        match outcome {
            Ok(c) => Self {
                name,
                label_id: Some(c.top.id.clone()),
                label: Some(c.top.display.clone()),
                probability: Some(c.top.probability),
                needs_review: c.needs_review,
                saved_id: None,
                error: None,
            },
            Err(e) => Self::failed(name, e.to_string()),
        }
    }

    pub fn failed(name: String, error: String) -> Self {
        Self {
            name,
            label_id: None,
            label: None,
            probability: None,
            needs_review: false,
            saved_id: None,
            error: Some(error),
        }
    }
}

/// Writes `rows` as CSV to a new file in `folder` (unless `policy` forbids
/// exports), whole or not at all, and returns its path.
pub fn save_results(rows: &[BatchRow], folder: &Path, policy: &Policy) -> Result<PathBuf> {
    policy.check_export()?;
    let out = paths::new_export_path(folder, "csv")?;
    let fail = |e: csv::Error| Error::io(&out, std::io::Error::other(e.to_string()));
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "name",
        "label_id",
        "label",
        "probability",
        "needs_review",
        "history_id",
        "error",
    ])
    .map_err(fail)?;
    for r in rows {
        let cell = |value: Option<&str>| spreadsheet_cell(value.unwrap_or("")).into_owned();
        w.write_record([
            cell(Some(&r.name)).as_str(),
            &cell(r.label_id.as_deref()),
            &cell(r.label.as_deref()),
            &r.probability.map(|p| format!("{p:.4}")).unwrap_or_default(),
            if r.needs_review { "yes" } else { "no" },
            &r.saved_id.map(|id| id.to_string()).unwrap_or_default(),
            &cell(r.error.as_deref()),
        ])
        .map_err(fail)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| Error::io(&out, std::io::Error::other(e.to_string())))?;
    let mut file = crate::user_files::NewFile::create(&out)?;
    file.write_all(&bytes)?;
    file.place()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_saved_as_csv_without_texts_unless_the_policy_forbids() {
        let dir = tempfile::tempdir().unwrap();
        let rows = [
            BatchRow {
                name: "a, b.txt".into(),
                label_id: Some("neoplasms".into()),
                label: Some("Neoplasms".into()),
                probability: Some(0.91234),
                needs_review: false,
                saved_id: Some(7),
                error: None,
            },
            BatchRow::failed("row 2".into(), "the text is empty".into()),
        ];
        let out = save_results(&rows, dir.path(), &Policy::default()).unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        assert_eq!(
            text,
            "name,label_id,label,probability,needs_review,history_id,error\n\
             \"a, b.txt\",neoplasms,Neoplasms,0.9123,no,7,\n\
             row 2,,,,no,,the text is empty\n"
        );
        let closed =
            Policy::parse("[history]\nallow_export = false\n", Path::new("p.toml")).unwrap();
        assert!(matches!(
            save_results(&rows, dir.path(), &closed),
            Err(Error::ManagedByPolicy { .. })
        ));
    }
}
