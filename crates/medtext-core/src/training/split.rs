//! The train / validation / test split of a training run as a CSV file, so
//! that work done outside MedText (fine-tuning the encoder on a GPU) keeps to
//! the same held-out part, and a second head can be tested on the same
//! held-out groups as the first.
//!
//! Columns: `part` (`train`, `validation` or `test`), `label`, `group`
//! (empty without groups) and `text`, the text as the encoder reads it
//! (abbreviations spelled out). The file holds the training data's texts, so
//! it is written only where the user asks.

use std::collections::HashMap;
use std::path::Path;

use crate::text::abbreviations::Abbreviations;
use crate::training::examples::Example;
use crate::training::fit::Split;
use crate::{Error, Result};

const PARTS: [&str; 3] = ["train", "validation", "test"];

/// Writes `split` of `examples` to `path`, a new file (see
/// [`crate::user_files::NewFile`]).
pub fn write(
    path: &Path,
    examples: &[Example],
    split: &Split,
    abbreviations: Option<&Abbreviations>,
) -> Result<()> {
    let fail = |e: csv::Error| Error::io(path, std::io::Error::other(e.to_string()));
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["part", "label", "group", "text"])
        .map_err(fail)?;
    for (part, rows) in PARTS
        .iter()
        .zip([&split.train, &split.validation, &split.test])
    {
        for &row in rows {
            let e = &examples[row];
            let text = abbreviations.map_or_else(|| e.text.clone(), |a| a.expand(&e.text).text);
            w.write_record([
                part,
                e.label.as_str(),
                e.group.as_deref().unwrap_or(""),
                &text,
            ])
            .map_err(fail)?;
        }
    }
    let bytes = w
        .into_inner()
        .map_err(|e| Error::io(path, std::io::Error::other(e.to_string())))?;
    let mut file = crate::user_files::NewFile::create(path)?;
    file.write_all(&bytes)?;
    file.place()
}

/// The split that `path` (written by [`write`], perhaps for another label
/// column) gives `examples`: by group where the examples have groups, else
/// by text (as the encoder reads it). Every example must be in the file.
pub fn read(
    path: &Path,
    examples: &[Example],
    abbreviations: Option<&Abbreviations>,
) -> Result<Split> {
    let bad = |problem: String| Error::Dataset {
        path: path.to_path_buf(),
        problem,
    };
    let mut reader = crate::tabular::open_csv(path)?;
    let headers = reader.headers().map_err(|e| bad(e.to_string()))?.clone();
    let column = |name: &str| {
        headers.iter().position(|h| h == name).ok_or_else(|| {
            bad(format!(
                "no '{name}' column: write the file with --write-split"
            ))
        })
    };
    let by_group = examples.iter().all(|e| e.group.is_some());
    let (part_at, key_at) = (
        column("part")?,
        column(if by_group { "group" } else { "text" })?,
    );
    let mut part_of: HashMap<String, usize> = HashMap::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| bad(format!("row {}: {e}", i + 2)))?;
        let part = record.get(part_at).unwrap_or_default();
        let index = PARTS.iter().position(|p| *p == part).ok_or_else(|| {
            bad(format!(
                "row {}: part {} is not train, validation or test",
                i + 2,
                crate::training::examples::cell_for_message(part)
            ))
        })?;
        let key = record.get(key_at).unwrap_or_default().to_string();
        if *part_of.entry(key).or_insert(index) != index {
            return Err(bad(format!(
                "row {}: the same {} is in two parts",
                i + 2,
                if by_group { "group" } else { "text" }
            )));
        }
    }
    let mut split = Split {
        train: vec![],
        validation: vec![],
        test: vec![],
    };
    for (row, e) in examples.iter().enumerate() {
        let key = match (&e.group, abbreviations) {
            (Some(group), _) if by_group => group.clone(),
            (_, Some(a)) => a.expand(&e.text).text,
            _ => e.text.clone(),
        };
        let part = part_of.get(&key).ok_or_else(|| {
            bad(format!(
                "row {} of the training data (counted among the rows kept) is not in the split file{}",
                row + 1,
                if by_group { " (its group is missing)" } else { "" }
            ))
        })?;
        [&mut split.train, &mut split.validation, &mut split.test][*part].push(row);
    }
    if split.train.is_empty() || split.validation.is_empty() || split.test.is_empty() {
        return Err(bad(
            "the split leaves the training, validation or test part empty".into(),
        ));
    }
    Ok(split)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(text: &str, label: &str, group: Option<&str>) -> Example {
        Example {
            text: text.into(),
            label: label.into(),
            group: group.map(str::to_string),
        }
    }

    #[test]
    fn a_written_split_reads_back_for_another_label_column_by_group() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("split.csv");
        let chapter = vec![
            example("a one", "A", Some("g1")),
            example("a two", "A", Some("g1")),
            example("b one", "B", Some("g2")),
            example("c one", "C", Some("g3")),
        ];
        let split = Split {
            train: vec![0, 1],
            validation: vec![2],
            test: vec![3],
        };
        write(&path, &chapter, &split, None).unwrap();
        // The block head: other labels, one row fewer, the same groups.
        let block = vec![
            example("a two", "A1", Some("g1")),
            example("b one", "B1", Some("g2")),
            example("c one", "C1", Some("g3")),
        ];
        let read_back = read(&path, &block, None).unwrap();
        assert_eq!(read_back.train, vec![0]);
        assert_eq!(read_back.validation, vec![1]);
        assert_eq!(read_back.test, vec![2]);
    }

    #[test]
    fn texts_are_written_as_the_encoder_reads_them_and_unknown_rows_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("abbreviations.csv");
        std::fs::write(
            &list,
            "abbreviation,expansion\nCHF,congestive heart failure\n",
        )
        .unwrap();
        let abbreviations = Abbreviations::load(&list).unwrap();
        let path = dir.path().join("split.csv");
        let examples = vec![
            example("h/o CHF", "I", None),
            example("fall", "S", None),
            example("rash", "L", None),
        ];
        let split = Split {
            train: vec![0],
            validation: vec![1],
            test: vec![2],
        };
        write(&path, &examples, &split, Some(&abbreviations)).unwrap();
        let written = std::fs::read_to_string(&path).unwrap();
        assert!(
            written.contains("train,I,,h/o CHF (congestive heart failure)"),
            "{written}"
        );

        let same = read(&path, &examples, Some(&abbreviations)).unwrap();
        assert_eq!(same, split);
        let other = vec![example("fall", "S", None), example("cough", "J", None)];
        let err = read(&path, &other, Some(&abbreviations))
            .unwrap_err()
            .to_string();
        assert!(err.contains("row 2 of the training data"), "{err}");
        assert!(!err.contains("cough"), "{err}");
    }
}
