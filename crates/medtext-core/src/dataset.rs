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
    /// What the example belongs to when whole groups must stay together in
    /// one split part (an ICD category and all its codes and terms).
    pub group: Option<String>,
}

/// The columns (CSV) or keys (JSON Lines) to read.
#[derive(Debug, Clone, Copy)]
pub struct Columns<'a> {
    pub text: &'a str,
    pub label: &'a str,
    pub group: Option<&'a str>,
}

/// Fewest examples of each label a training file must have: fewer cannot be
/// split into train, validation and test parts that each say something.
pub const MIN_PER_LABEL: usize = 5;

/// Reads labelled examples from a CSV file with a header row, or from JSON
/// Lines (`.jsonl`, `.ndjson`: one object per line) where `text_field` and
/// `label_field` name the keys.
pub fn read_labelled(path: &Path, columns: Columns) -> Result<Vec<Example>> {
    let is_jsonl = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("jsonl") || e.eq_ignore_ascii_case("ndjson"));
    if is_jsonl {
        read_jsonl(path, columns)
    } else {
        read_csv(path, columns)
    }
}

fn read_jsonl(path: &Path, columns: Columns) -> Result<Vec<Example>> {
    let bad = |problem: String| Error::Dataset {
        path: path.to_path_buf(),
        problem,
    };
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let mut examples = Vec::new();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let row = i + 1;
        let line = std::str::from_utf8(line)
            .map_err(|_| bad(format!("row {row} is not UTF-8: save the file as UTF-8")))?;
        if line.trim().is_empty() {
            continue;
        }
        // serde_json's message could quote the text: only its position is kept.
        let value: serde_json::Value = serde_json::from_str(line).map_err(|e| {
            bad(format!(
                "row {row} is not valid JSON (column {})",
                e.column()
            ))
        })?;
        let field = |name: &str| match value.get(name) {
            Some(serde_json::Value::String(s)) => Ok(s.clone()),
            Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
            _ => Err(bad(format!("row {row} has no text or number '{name}'"))),
        };
        let example = Example {
            text: field(columns.text)?,
            label: field(columns.label)?.trim().to_string(),
            group: columns.group.map(field).transpose()?,
        };
        if example.text.trim().is_empty() || example.label.is_empty() {
            return Err(bad(format!("row {row} has an empty text or label")));
        }
        examples.push(example);
    }
    if examples.is_empty() {
        return Err(bad("the file has no data rows".into()));
    }
    Ok(examples)
}

/// Checks that `examples` can train a head: at least two labels, at least
/// `min_per_label` examples of each ([`MIN_PER_LABEL`] unless there is a
/// reason), and no text given two different labels. Errors name the rows
/// (1-based) and labels, never the text.
pub fn check_training_set(path: &Path, examples: &[Example], min_per_label: usize) -> Result<()> {
    let bad = |problem: String| Error::Dataset {
        path: path.to_path_buf(),
        problem,
    };
    let mut counts: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for e in examples {
        *counts.entry(&e.label).or_default() += 1;
    }
    if counts.len() < 2 {
        return Err(bad(format!(
            "every row has the label '{}': a classifier needs at least two labels",
            counts.keys().next().unwrap_or(&"")
        )));
    }
    let thin: Vec<String> = counts
        .iter()
        .filter(|(_, &n)| n < min_per_label)
        .map(|(label, n)| format!("'{label}' ({n})"))
        .collect();
    if !thin.is_empty() {
        return Err(bad(format!(
            "these labels have fewer than {min_per_label} examples: {}; add examples or merge them",
            thin.join(", ")
        )));
    }
    let mut first_seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (i, e) in examples.iter().enumerate() {
        let key = e.text.trim();
        match first_seen.get(key) {
            Some(&j) if examples[j].label != e.label => {
                return Err(bad(format!(
                    "rows {} and {} have the same text but different labels ('{}' and '{}'): keep one",
                    j + 1,
                    i + 1,
                    examples[j].label,
                    e.label
                )));
            }
            Some(_) => {}
            None => {
                first_seen.insert(key, i);
            }
        }
    }
    Ok(())
}

/// What [`deduplicate`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Removed {
    /// Rows repeating an earlier row's text and label.
    pub duplicates: usize,
    /// Rows whose text appears with more than one label (all of them).
    pub conflicting: usize,
}

/// Keeps the first of rows with the same (trimmed) text and label, so no
/// text lands in both the training and the test part; with
/// `drop_conflicting`, also removes every row of a text that carries two
/// different labels (otherwise [`check_training_set`] refuses the file).
pub fn deduplicate(examples: Vec<Example>, drop_conflicting: bool) -> (Vec<Example>, Removed) {
    let mut labels: std::collections::HashMap<String, std::collections::BTreeSet<String>> =
        std::collections::HashMap::new();
    for e in &examples {
        labels
            .entry(e.text.trim().to_string())
            .or_default()
            .insert(e.label.clone());
    }
    let mut seen = std::collections::HashSet::new();
    let mut removed = Removed::default();
    let kept = examples
        .into_iter()
        .filter(|e| {
            let text = e.text.trim();
            if drop_conflicting && labels.get(text).is_some_and(|l| l.len() > 1) {
                removed.conflicting += 1;
                return false;
            }
            if !seen.insert((text.to_string(), e.label.clone())) {
                removed.duplicates += 1;
                return false;
            }
            true
        })
        .collect();
    (kept, removed)
}

/// Reads a CSV file with a header row; `text_column` and `label_column` name
/// the columns to use. Row numbers in errors are 1-based data rows; the text
/// itself is never quoted in an error.
pub fn read_csv(path: &Path, columns: Columns) -> Result<Vec<Example>> {
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
    let (text_at, label_at) = (column(columns.text)?, column(columns.label)?);
    let group_at = columns.group.map(column).transpose()?;
    let mut examples = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record =
            record.map_err(|_| bad(format!("row {} is not valid CSV or not UTF-8", i + 1)))?;
        let field = |at: usize| record.get(at).unwrap_or_default().to_string();
        let example = Example {
            text: field(text_at),
            label: field(label_at).trim().to_string(),
            group: group_at.map(field),
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

    const TEXT_LABEL: Columns = Columns {
        text: "text",
        label: "label",
        group: None,
    };
    const NOTE_Y: Columns = Columns {
        text: "note",
        label: "y",
        group: None,
    };

    #[test]
    fn reads_named_columns_and_reports_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.csv");
        std::fs::write(&path, "label,text\n1,\"chest pain, radiating\"\n2,cough\n").unwrap();
        let rows = read_csv(&path, TEXT_LABEL).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].text, "chest pain, radiating");
        assert_eq!(rows[1].label, "2");
        let err = read_csv(
            &path,
            Columns {
                text: "note",
                ..TEXT_LABEL
            },
        )
        .unwrap_err()
        .to_string();
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
        let err = read_csv(&path, TEXT_LABEL).unwrap_err().to_string();
        assert!(err.contains("row 2") && !err.contains("secret"), "{err}");
    }

    fn examples(rows: &[(&str, &str)]) -> Vec<Example> {
        rows.iter()
            .map(|(t, l)| Example {
                text: t.to_string(),
                label: l.to_string(),
                group: None,
            })
            .collect()
    }

    #[test]
    fn json_lines_are_read_by_key_and_bad_rows_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.jsonl");
        std::fs::write(
            &path,
            "{\"note\": \"chest pain\", \"y\": \"I20-I25\"}\n\n{\"note\": \"cough\", \"y\": 7}\n",
        )
        .unwrap();
        let rows = read_labelled(&path, NOTE_Y).unwrap();
        assert_eq!(rows, examples(&[("chest pain", "I20-I25"), ("cough", "7")]));

        std::fs::write(
            &path,
            b"{\"note\": \"ok\", \"y\": \"a\"}\n{\"note\": \"secret \xff\", \"y\": \"b\"}\n",
        )
        .unwrap();
        let err = read_labelled(&path, NOTE_Y).unwrap_err().to_string();
        assert!(err.contains("row 2") && err.contains("UTF-8"), "{err}");

        std::fs::write(&path, "{\"note\": \"secret words\"\n").unwrap();
        let err = read_labelled(&path, NOTE_Y).unwrap_err().to_string();
        assert!(err.contains("row 1") && !err.contains("secret"), "{err}");

        std::fs::write(&path, "{\"text\": \"secret words\", \"y\": \"a\"}\n").unwrap();
        let err = read_labelled(&path, NOTE_Y).unwrap_err().to_string();
        assert!(err.contains("row 1") && err.contains("'note'"), "{err}");
    }

    #[test]
    fn a_training_set_needs_two_labels_enough_rows_and_consistent_labels() {
        let path = Path::new("train.csv");
        let many = |label: &'static str, n: usize| -> Vec<(String, &'static str)> {
            (0..n)
                .map(|i| (format!("{label} note {i}"), label))
                .collect()
        };
        let as_examples = |rows: Vec<(String, &str)>| -> Vec<Example> {
            rows.into_iter()
                .map(|(t, l)| Example {
                    text: t,
                    label: l.to_string(),
                    group: None,
                })
                .collect()
        };
        let good = as_examples([many("a", 5), many("b", 6)].concat());
        check_training_set(path, &good, MIN_PER_LABEL).unwrap();

        let one = as_examples(many("a", 9));
        let err = check_training_set(path, &one, MIN_PER_LABEL)
            .unwrap_err()
            .to_string();
        assert!(err.contains("two labels"), "{err}");

        let thin = as_examples([many("a", 5), many("b", 2)].concat());
        let err = check_training_set(path, &thin, MIN_PER_LABEL)
            .unwrap_err()
            .to_string();
        assert!(err.contains("'b' (2)"), "{err}");

        let mut conflicting = good.clone();
        conflicting.push(Example {
            text: " a note 3 ".into(),
            label: "b".into(),
            group: None,
        });
        let err = check_training_set(path, &conflicting, MIN_PER_LABEL)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("rows 4 and 12") && !err.contains("note 3"),
            "{err}"
        );
        // The same text with the same label twice is only a duplicate: fine.
        let mut repeated = good.clone();
        repeated.push(good[0].clone());
        check_training_set(path, &repeated, MIN_PER_LABEL).unwrap();
    }

    #[test]
    fn duplicates_are_dropped_and_conflicts_on_request() {
        let rows = examples(&[("a", "x"), ("a ", "x"), ("b", "x"), ("b", "y"), ("c", "y")]);
        let (kept, removed) = deduplicate(rows.clone(), false);
        assert_eq!(kept.len(), 4);
        assert_eq!(
            removed,
            Removed {
                duplicates: 1,
                conflicting: 0
            }
        );
        let (kept, removed) = deduplicate(rows, true);
        let texts: Vec<&str> = kept.iter().map(|e| e.text.as_str()).collect();
        assert_eq!(texts, ["a", "c"]);
        assert_eq!(
            removed,
            Removed {
                duplicates: 1,
                conflicting: 2
            }
        );
    }
}
