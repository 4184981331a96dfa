//! Labelled text files for training and evaluation.

use std::path::Path;

use crate::{Error, Result};

pub type CsvReader = csv::Reader<std::fs::File>;

/// Opens a CSV file that has a header row.
pub fn open_csv(path: &Path) -> Result<CsvReader> {
    csv::Reader::from_path(path).map_err(|e| Error::Dataset {
        path: path.to_path_buf(),
        problem: format!("cannot open: {e}"),
    })
}

/// One labelled example.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub text: String,
    pub label: String,
}

/// Reads a CSV file with a header row; `text_column` and `label_column` name
/// the columns to use. Row numbers in errors are 1-based data rows; the text
/// itself is never quoted in an error.
pub fn read_csv(path: &Path, text_column: &str, label_column: &str) -> Result<Vec<Example>> {
    let bad = |problem: String| Error::Dataset {
        path: path.to_path_buf(),
        problem,
    };
    let mut reader = open_csv(path)?;
    let headers = reader
        .headers()
        .map_err(|e| bad(format!("cannot read the header row: {e}")))?
        .clone();
    let column = |name: &str| {
        headers.iter().position(|h| h == name).ok_or_else(|| {
            bad(format!(
                "no column '{name}'; the columns are: {}",
                headers.iter().collect::<Vec<_>>().join(", ")
            ))
        })
    };
    let (text_at, label_at) = (column(text_column)?, column(label_column)?);
    let mut examples = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record =
            record.map_err(|_| bad(format!("row {} is not valid CSV or not UTF-8", i + 1)))?;
        let field = |at: usize| record.get(at).unwrap_or_default().to_string();
        let example = Example {
            text: field(text_at),
            label: field(label_at).trim().to_string(),
        };
        if example.text.trim().is_empty() || example.label.is_empty() {
            return Err(bad(format!("row {} has an empty text or label", i + 1)));
        }
        examples.push(example);
    }
    if examples.is_empty() {
        return Err(bad("the file has no data rows".into()));
    }
    Ok(examples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_named_columns_and_reports_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.csv");
        std::fs::write(&path, "label,text\n1,\"chest pain, radiating\"\n2,cough\n").unwrap();
        let rows = read_csv(&path, "text", "label").unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].text, "chest pain, radiating");
        assert_eq!(rows[1].label, "2");
        let err = read_csv(&path, "note", "label").unwrap_err().to_string();
        assert!(
            err.contains("no column 'note'") && err.contains("label, text"),
            "{err}"
        );
    }

    #[test]
    fn empty_rows_are_refused_without_quoting_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.csv");
        std::fs::write(&path, "label,text\n1,secret words\n,\n").unwrap();
        let err = read_csv(&path, "text", "label").unwrap_err().to_string();
        assert!(err.contains("row 2") && !err.contains("secret"), "{err}");
    }
}
