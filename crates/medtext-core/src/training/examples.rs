//! Labelled text files for training and evaluation.

use std::path::Path;

use crate::tabular::{open_csv, FILE_LIMIT};
use crate::{Error, Result};

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

/// How an error message names a cell of the user's file (a label, a part).
/// Labels are quoted so that the user can find them; a cell long enough to be
/// a note, as when the label column is really the text column, is described
/// by its length instead, so that patient text does not reach the message.
pub fn cell_for_message(value: &str) -> String {
    const MOST_CHARS: usize = 40;
    const MOST_WORDS: usize = 4;
    let chars = value.chars().count();
    if chars <= MOST_CHARS
        && value.split_whitespace().count() <= MOST_WORDS
        && !value.chars().any(char::is_control)
    {
        format!("'{value}'")
    } else {
        format!("a value of {chars} characters")
    }
}

/// Reads labelled examples from a CSV file with a header row, or from JSON
/// Lines (`.jsonl`, `.ndjson`: one object per line) where `text_field` and
/// `label_field` name the keys.
pub fn read_labelled(path: &Path, columns: Columns) -> Result<Vec<Example>> {
    examples(path, columns, read_fields(path, &field_names(columns))?)
}

/// Reads the texts of a file to classify in a batch: the column (CSV) or key
/// (JSON Lines) `text`. Errors name the row, never the text.
pub fn read_texts(path: &Path, text: &str) -> Result<Vec<String>> {
    let rows = read_fields(path, &[text])?;
    rows.into_iter()
        .map(|(row, mut fields)| {
            let text = fields.pop().unwrap_or_default();
            if !crate::text::validation::has_content(&text) {
                Err(Error::Dataset {
                    path: path.to_path_buf(),
                    problem: format!("row {row} has an empty text (or only invisible characters)"),
                })
            } else {
                Ok(text)
            }
        })
        .collect()
}

fn field_names<'a>(columns: Columns<'a>) -> Vec<&'a str> {
    let mut names = vec![columns.text, columns.label];
    names.extend(columns.group);
    names
}

/// Rows of (text, label, group) fields into examples, refusing empty ones.
fn examples(path: &Path, columns: Columns, rows: Vec<Row>) -> Result<Vec<Example>> {
    rows.into_iter()
        .map(|(row, fields)| {
            let mut fields = fields.into_iter();
            let example = Example {
                text: fields.next().unwrap_or_default(),
                label: fields.next().unwrap_or_default().trim().to_string(),
                group: columns.group.and(fields.next()),
            };
            if !crate::text::validation::has_content(&example.text) || example.label.is_empty() {
                return Err(Error::Dataset {
                    path: path.to_path_buf(),
                    problem: format!(
                        "row {row} has an empty text (or only invisible characters) or label"
                    ),
                });
            }
            Ok(example)
        })
        .collect()
}

/// A data row's 1-based number (as errors name it) and its fields.
type Row = (usize, Vec<String>);

/// The fields `names` of every data row, in that order, from a CSV file with
/// a header row or from JSON Lines (by the file's extension). Refuses a
/// missing column or key, a row that does not parse, and a file with no rows.
fn read_fields(path: &Path, names: &[&str]) -> Result<Vec<Row>> {
    let is_jsonl = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("jsonl") || e.eq_ignore_ascii_case("ndjson"));
    let rows = if is_jsonl {
        jsonl_fields(path, names)?
    } else {
        csv_fields(path, names)?
    };
    if rows.is_empty() {
        return Err(Error::Dataset {
            path: path.to_path_buf(),
            problem: "the file has no data rows".into(),
        });
    }
    Ok(rows)
}

fn jsonl_fields(path: &Path, names: &[&str]) -> Result<Vec<Row>> {
    let bad = |problem: String| Error::Dataset {
        path: path.to_path_buf(),
        problem,
    };
    let bytes = FILE_LIMIT.read_file(path)?;
    let mut rows = Vec::new();
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
        let fields = names
            .iter()
            .map(|&name| match value.get(name) {
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
                _ => Err(bad(format!("row {row} has no text or number '{name}'"))),
            })
            .collect::<Result<Vec<_>>>()?;
        rows.push((row, fields));
    }
    Ok(rows)
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
            "every row has the label {}: a classifier needs at least two labels",
            cell_for_message(counts.keys().next().unwrap_or(&""))
        )));
    }
    // A label column with a value for every other row holds text, not labels:
    // say so without quoting any of it. (With one example a label allowed,
    // as for ICD blocks, nothing below quotes a label either.)
    if min_per_label > 1 && counts.len() > (examples.len() / 2).max(20) {
        return Err(bad(format!(
            "the label column has {} different values in {} rows: it looks like text, not labels; check which column holds the labels",
            counts.len(),
            examples.len()
        )));
    }
    const MOST_NAMED: usize = 10;
    let thin: Vec<String> = counts
        .iter()
        .filter(|(_, &n)| n < min_per_label)
        .map(|(label, n)| format!("{} ({n})", cell_for_message(label)))
        .collect();
    if !thin.is_empty() {
        let more = match thin.len().saturating_sub(MOST_NAMED) {
            0 => String::new(),
            n => format!(" and {n} more"),
        };
        return Err(bad(format!(
            "these labels have fewer than {min_per_label} examples: {}{more}; add examples or merge them",
            thin[..thin.len().min(MOST_NAMED)].join(", ")
        )));
    }
    let mut first_seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (i, e) in examples.iter().enumerate() {
        let key = e.text.trim();
        match first_seen.get(key) {
            Some(&j) if examples[j].label != e.label => {
                return Err(bad(format!(
                    "rows {} and {} have the same text but different labels ({} and {}): keep one",
                    j + 1,
                    i + 1,
                    cell_for_message(&examples[j].label),
                    cell_for_message(&e.label)
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

/// Why the first row has no column `name`. The row's cells are not listed:
/// in a file without a header row they are the first note. Only a cell that
/// is `name` but for case or spaces is named, as it is the user's own word.
fn missing_column(name: &str, headers: &csv::StringRecord) -> String {
    let near = headers
        .iter()
        .position(|h| h.trim().eq_ignore_ascii_case(name.trim()));
    let hint = match near {
        Some(i) => format!(
            "; column {} is named {}: names must match exactly",
            i + 1,
            cell_for_message(&headers[i])
        ),
        None => String::from(
            "; the file's first row must hold the column names (for example text,label), and the names given must match them exactly",
        ),
    };
    format!(
        "no column '{name}' in the first row ({} columns){hint}",
        headers.len()
    )
}

fn csv_fields(path: &Path, names: &[&str]) -> Result<Vec<Row>> {
    let bad = |problem: String| Error::Dataset {
        path: path.to_path_buf(),
        problem,
    };
    let mut reader = open_csv(path)?;
    let headers = reader
        .headers()
        .map_err(|e| bad(format!("cannot read the header row: {e}")))?
        .clone();
    let at: Vec<usize> = names
        .iter()
        .map(|name| {
            headers
                .iter()
                .position(|h| h == *name)
                .ok_or_else(|| bad(missing_column(name, &headers)))
        })
        .collect::<Result<_>>()?;
    reader
        .records()
        .enumerate()
        .map(|(i, record)| {
            let record =
                record.map_err(|_| bad(format!("row {} is not valid CSV or not UTF-8", i + 1)))?;
            let fields = at
                .iter()
                .map(|&a| record.get(a).unwrap_or_default().to_string())
                .collect();
            Ok((i + 1, fields))
        })
        .collect()
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
    fn texts_for_a_batch_come_from_csv_or_json_lines_and_empty_rows_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("b.csv");
        std::fs::write(&csv, "id,note\n1,\"chest pain, radiating\"\n2,cough\n").unwrap();
        assert_eq!(
            read_texts(&csv, "note").unwrap(),
            ["chest pain, radiating", "cough"]
        );
        assert!(read_texts(&csv, "text")
            .unwrap_err()
            .to_string()
            .contains("no column 'text'"));
        let jsonl = dir.path().join("b.jsonl");
        std::fs::write(&jsonl, "{\"text\":\"fever\"}\n\n{\"text\":\"  \"}\n").unwrap();
        let err = read_texts(&jsonl, "text").unwrap_err().to_string();
        assert!(err.contains("row 3 has an empty text"), "{err}");
    }

    #[test]
    fn reads_named_columns_and_reports_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.csv");
        std::fs::write(&path, "label,text\n1,\"chest pain, radiating\"\n2,cough\n").unwrap();
        let rows = read_labelled(&path, TEXT_LABEL).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].text, "chest pain, radiating");
        assert_eq!(rows[1].label, "2");
        let err = read_labelled(
            &path,
            Columns {
                text: "note",
                ..TEXT_LABEL
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("no column 'note'") && err.contains("(2 columns)"),
            "{err}"
        );
        let err = read_labelled(
            &path,
            Columns {
                text: "Text",
                ..TEXT_LABEL
            },
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("column 2 is named 'text'"), "{err}");
    }

    /// The error of reading `csv` as a labelled file with columns text, label.
    fn refusal(csv: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.csv");
        std::fs::write(&path, csv).unwrap();
        read_labelled(&path, TEXT_LABEL).unwrap_err().to_string()
    }

    #[test]
    fn a_file_without_a_header_row_is_refused_without_quoting_its_first_note() {
        let err = refusal("Jane Roe has crushing chest pain since noon,cardio\ncough,resp\n");
        assert!(err.contains("no column 'text'"), "{err}");
        assert!(!err.contains("Jane") && !err.contains("cardio"), "{err}");
    }

    #[test]
    fn a_label_column_that_holds_text_is_refused_without_quoting_it() {
        // The refusal of `n` rows whose labels are `label(i)`.
        let refusal = |n: usize, label: &dyn Fn(usize) -> String| {
            let rows: Vec<Example> = (0..n)
                .map(|i| Example {
                    text: format!("row {i}"),
                    label: label(i),
                    group: None,
                })
                .collect();
            check_training_set(Path::new("d.csv"), &rows, MIN_PER_LABEL)
                .unwrap_err()
                .to_string()
        };
        let err = refusal(40, &|i| format!("Jane Roe {i}"));
        assert!(err.contains("40 different values in 40 rows"), "{err}");
        assert!(!err.contains("Jane"), "{err}");
        // Fewer, but long: described by their length.
        let err = refusal(4, &|i| {
            format!("patient seen in clinic today with cough {}", i % 2)
        });
        assert!(err.contains("a value of 41 characters (2)"), "{err}");
        assert!(!err.contains("patient"), "{err}");
    }

    #[test]
    fn empty_rows_are_refused_without_quoting_text() {
        let err = refusal("label,text\n1,secret words\n,\n");
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
