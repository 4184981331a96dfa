//! Clinicians' shorthand spelled out for the encoder.
//!
//! Clinicians write "pt c/o SOB, h/o CHF"; the encoder learnt general English
//! and the ICD heads learnt code titles, and neither has seen "NSTEMI" or
//! "s/p". A pack may carry a list of abbreviations with their expansions.
//! Before tokenizing, every abbreviation found in a text has its expansion
//! appended in brackets: "h/o CHF" becomes "h/o CHF (personal history of;
//! congestive heart failure)".
//!
//! Why append rather than replace: every character of the original text stays
//! where it was, so evidence offsets still point into what the clinician
//! wrote, and the abbreviation itself is still seen. Evidence earned by an
//! expansion is credited back to the abbreviation it came from.

use std::ops::Range;
use std::path::Path;

use crate::{dataset, Error, Result};

/// An abbreviation list: `abbreviation,expansion` rows (an abbreviation may
/// have several rows). Matching is case-sensitive ("AS" is aortic stenosis,
/// "as" is a word) and only on whole words.
#[derive(Debug, Clone)]
pub struct Abbreviations {
    /// Longest abbreviation first, so "NSTEMI" wins over "MI".
    entries: Vec<(String, Vec<String>)>,
}

/// A text with the expansions of its abbreviations appended.
#[derive(Debug, Clone, PartialEq)]
pub struct Expanded {
    pub text: String,
    /// Length of the original text in characters: everything after it was
    /// appended.
    pub original_chars: usize,
    /// For each appended expansion, its characters in `text` and the
    /// characters of the abbreviation it expands in the original text.
    pub sources: Vec<(Range<usize>, Range<usize>)>,
}

impl Abbreviations {
    /// Reads an `abbreviation,expansion` CSV; a bad row is named.
    pub fn load(path: &Path) -> Result<Self> {
        let bad = |problem: String| Error::pack(path, problem);
        let mut reader = dataset::open_csv(path)?;
        let headers = reader
            .headers()
            .map_err(|e| bad(format!("cannot read the header row: {e}")))?
            .clone();
        if headers.iter().collect::<Vec<_>>() != ["abbreviation", "expansion"] {
            return Err(bad(
                "the header row must be exactly: abbreviation,expansion".into(),
            ));
        }
        let mut entries: Vec<(String, Vec<String>)> = Vec::new();
        for (i, record) in reader.records().enumerate() {
            let row = i + 2;
            let record = record.map_err(|e| bad(format!("row {row}: {e}")))?;
            let (abbreviation, expansion) = match (record.get(0), record.get(1)) {
                (Some(a), Some(e)) if !a.trim().is_empty() && !e.trim().is_empty() => {
                    (a.trim(), e.trim())
                }
                _ => {
                    return Err(bad(format!(
                        "row {row}: needs an abbreviation and an expansion"
                    )))
                }
            };
            match entries.iter_mut().find(|(a, _)| a == abbreviation) {
                Some((_, expansions)) => expansions.push(expansion.to_string()),
                None => entries.push((abbreviation.to_string(), vec![expansion.to_string()])),
            }
        }
        if entries.is_empty() {
            return Err(bad("the list has no abbreviations".into()));
        }
        entries.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        Ok(Self { entries })
    }

    /// `text` with the expansions of the abbreviations it contains appended,
    /// in the order they occur, each expansion once.
    pub fn expand(&self, text: &str) -> Expanded {
        let mut found: Vec<(Range<usize>, &[String])> = Vec::new();
        for (abbreviation, expansions) in &self.entries {
            for (start, _) in text.match_indices(abbreviation.as_str()) {
                let end = start + abbreviation.len();
                let overlaps = found.iter().any(|(r, _)| r.start < end && start < r.end);
                if !overlaps && stands_alone(text, start..end) {
                    found.push((start..end, expansions));
                }
            }
        }
        found.sort_by_key(|(r, _)| r.start);

        let original_chars = text.chars().count();
        let mut expanded = Expanded {
            text: text.to_string(),
            original_chars,
            sources: Vec::new(),
        };
        let mut appended_chars = original_chars;
        let mut seen: Vec<&str> = Vec::new();
        for (bytes, expansions) in found {
            let abbreviation_chars = char_range(text, bytes);
            for expansion in expansions {
                if seen.contains(&expansion.as_str()) {
                    continue;
                }
                let separator = if seen.is_empty() { " (" } else { "; " };
                seen.push(expansion);
                expanded.text.push_str(separator);
                appended_chars += separator.chars().count();
                let length = expansion.chars().count();
                expanded.text.push_str(expansion);
                expanded.sources.push((
                    appended_chars..appended_chars + length,
                    abbreviation_chars.clone(),
                ));
                appended_chars += length;
            }
        }
        if !seen.is_empty() {
            expanded.text.push(')');
        }
        expanded
    }
}

impl Expanded {
    /// The characters of the original text that the appended character at
    /// `char_index` stands for: its abbreviation, or `None` for the brackets
    /// and separators around expansions.
    pub fn source_of(&self, char_index: usize) -> Option<Range<usize>> {
        self.sources
            .iter()
            .find(|(appended, _)| appended.contains(&char_index))
            .map(|(_, original)| original.clone())
    }
}

/// Whether the match at `bytes` is a whole word: a letter or digit at either
/// end of the abbreviation must not continue into a neighbouring letter,
/// digit or '/' ("MI" not in "MIND", "o" not in "h/o").
fn stands_alone(text: &str, bytes: Range<usize>) -> bool {
    let joins = |c: char| c.is_alphanumeric() || c == '/';
    let matched = &text[bytes.clone()];
    let before_ok = !matched.starts_with(char::is_alphanumeric)
        || !text[..bytes.start].chars().next_back().is_some_and(joins);
    let after_ok = !matched.ends_with(char::is_alphanumeric)
        || !text[bytes.end..].chars().next().is_some_and(joins);
    before_ok && after_ok
}

fn char_range(text: &str, bytes: Range<usize>) -> Range<usize> {
    let start = text[..bytes.start].chars().count();
    start..start + text[bytes].chars().count()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const LIST: &str = "abbreviation,expansion\nCHF,congestive heart failure\nSOB,shortness of breath\nSOB,dyspnea\nMI,myocardial infarction\nNSTEMI,non-ST elevation myocardial infarction\nh/o,personal history of\nL,left\n#,fracture\n";

    fn list() -> Abbreviations {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abbreviations.csv");
        std::fs::write(&path, LIST).unwrap();
        Abbreviations::load(&path).unwrap()
    }

    #[test]
    fn expansions_are_appended_in_text_order_and_keep_the_original() {
        let e = list().expand("pt c/o SOB, h/o CHF");
        assert_eq!(
            e.text,
            "pt c/o SOB, h/o CHF (shortness of breath; dyspnea; personal history of; congestive heart failure)"
        );
        assert_eq!(e.original_chars, 19);
        assert!(e.text.starts_with("pt c/o SOB, h/o CHF"));
        // "congestive heart failure" stands for "CHF" at characters 16..19.
        let at = e.text.find("congestive").unwrap();
        assert_eq!(e.source_of(at), Some(16..19));
        // The bracket itself stands for nothing.
        assert_eq!(e.source_of(19 + 1), None);
    }

    #[test]
    fn only_whole_words_match_and_the_longest_abbreviation_wins() {
        let l = list();
        assert_eq!(
            l.expand("MIND the gap, SOBER, CHFs").text,
            "MIND the gap, SOBER, CHFs"
        );
        let e = l.expand("NSTEMI");
        assert_eq!(e.text, "NSTEMI (non-ST elevation myocardial infarction)");
        // "L" is laterality on its own, not inside "L5" or "LAD".
        assert_eq!(l.expand("L5 LAD").text, "L5 LAD");
        assert!(l.expand("L knee").text.ends_with("(left)"));
        // Symbols match where they stand: "#NOF" is a fracture.
        assert!(l.expand("#NOF").text.ends_with("(fracture)"));
    }

    #[test]
    fn offsets_count_characters_not_bytes() {
        let e = list().expand("é MI");
        assert_eq!(e.source_of(e.text.chars().count() - 2), Some(2..4));
    }

    #[test]
    fn a_text_without_abbreviations_is_unchanged() {
        let e = list().expand("chest pain");
        assert_eq!(e.text, "chest pain");
        assert!(e.sources.is_empty());
    }

    #[test]
    fn a_bad_list_names_the_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.csv");
        std::fs::write(
            &path,
            "abbreviation,expansion\nCHF,congestive heart failure\nSOB,\n",
        )
        .unwrap();
        let err = Abbreviations::load(&path).unwrap_err().to_string();
        assert!(err.contains("row 3"), "{err}");
        std::fs::write(&path, "abbr,meaning\nCHF,x\n").unwrap();
        let err = Abbreviations::load(&path).unwrap_err().to_string();
        assert!(err.contains("abbreviation,expansion"), "{err}");
    }
}
