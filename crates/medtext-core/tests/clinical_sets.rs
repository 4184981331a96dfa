//! The clinical test sets of the ICD-10-CM pack (`scripts/icd10cm/`) are
//! only a measure if every label they give is one the pack's heads can
//! answer: a mistyped range ("I30-I52" for `I30-I5A`) would count as an
//! error of the model on every evaluation, and nobody would see why.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Label ids of each head of the shipped `icd10cm` manifest, by head name.
fn head_labels() -> Vec<(String, BTreeSet<String>)> {
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo().join("models/icd10cm/manifest.json")).unwrap(),
    )
    .unwrap();
    manifest["heads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|head| {
            let labels = head["labels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["id"].as_str().unwrap().to_string())
                .collect();
            (head["name"].as_str().unwrap().to_string(), labels)
        })
        .collect()
}

#[test]
fn every_clinical_statement_is_labelled_with_ids_the_heads_know() {
    let heads = head_labels();
    assert_eq!(heads.len(), 2);
    let mut sets: Vec<PathBuf> = std::fs::read_dir(repo().join("scripts/icd10cm"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("clinical-statements") && n.ends_with(".csv"))
        })
        .collect();
    sets.sort();
    assert!(sets.len() >= 5, "{sets:?}");
    for set in sets {
        let mut reader = csv::Reader::from_path(&set).unwrap();
        let columns = reader.headers().unwrap().clone();
        let mut rows = 0;
        for (i, row) in reader.records().enumerate() {
            let row = row.unwrap();
            assert!(
                !row[0].trim().is_empty(),
                "{}: row {} has no text",
                set.display(),
                i + 2
            );
            for (head, labels) in &heads {
                let column = columns.iter().position(|c| c == head).unwrap();
                assert!(
                    labels.contains(&row[column]),
                    "{}: row {} gives {head} {:?}, which is not a label of the pack",
                    set.display(),
                    i + 2,
                    &row[column]
                );
            }
            // A block lies in its chapter: "I20-I25" in "I00-I99".
            let range = |column: &str| {
                let at = columns.iter().position(|c| c == column).unwrap();
                let (first, last) = row[at].split_once('-').unwrap_or((&row[at], &row[at]));
                (first.to_string(), last.to_string())
            };
            let ((chapter_first, chapter_last), (block_first, block_last)) =
                (range("chapter"), range("block"));
            assert!(
                chapter_first <= block_first && block_last <= chapter_last,
                "{}: row {}: block {block_first}-{block_last} is not in chapter {chapter_first}-{chapter_last}",
                set.display(),
                i + 2
            );
            rows += 1;
        }
        assert!(rows >= 30, "{}: {rows} rows", set.display());
    }
}
