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
//!
//! Lab values are read the same way. A row whose abbreviation is a test with
//! a threshold (`K >5.2,hyperkalemia`, `glucose >11 mmol/L,hyperglycemia`)
//! appends its expansion after a value beyond it ("K 6.8" is read as "K 6.8
//! (hyperkalemia)"): the encoder reads numbers as words, and "6.8" says
//! nothing to it. A row with a unit applies only to values written with that
//! unit; a row without one only to values written without a unit, so "Cr 250
//! umol/L" is never taken for 250 mg/dL.
//!
//! A word can be both a test and something else: "Ca 2.1" is calcium, "breast
//! Ca" a carcinoma. A plain row written `Ca (no value),carcinoma` is read only
//! where no number follows the word (a time such as "5 yrs ago" does not
//! count), and leaves the rest to the lab rows.
//!
//! Obstetric notes write gestation as weeks of forty ("GDM at 28/40",
//! "28+3/40"). A row written `{weeks}/40,weeks gestation` reads such a week
//! count (4 to 42, perhaps with days), and not "BP 120/40". A literal row
//! wins over it, so "20/40", which is also visual acuity, can carry both
//! readings.
//!
//! Acronyms and symbols match only as written ("AS" is aortic stenosis, "as"
//! a word). A row that is a lower-case word of four letters or more ("bilat",
//! "mets") also matches with a capital first letter, as at the start of a
//! sentence, but not in other cases: "METs" on a stress test are not "mets".

use std::ops::Range;
use std::path::Path;

use crate::{tabular, Error, Result};

/// An abbreviation list: `abbreviation,expansion` rows (an abbreviation may
/// have several rows). Matching is case-sensitive ("AS" is aortic stenosis,
/// "as" is a word) and only on whole words.
#[derive(Debug, Clone)]
pub struct Abbreviations {
    /// Longest abbreviation first, so "NSTEMI" wins over "MI".
    entries: Vec<Entry>,
    /// Lab tests with their threshold rows, grouped when the list loads.
    labs: Vec<LabTest>,
    /// Rows written `{weeks}...`, read after the plain rows.
    week_rows: Vec<WeekRow>,
}

/// Stands for a gestational age in weeks at the start of a row's abbreviation.
const WEEKS: &str = "{weeks}";

/// The week counts a `{weeks}` row reads: from the first visits to the
/// latest a pregnancy runs.
const GESTATION_WEEKS: std::ops::RangeInclusive<u32> = 4..=42;

/// A row written `{weeks}/40,expansion`: `after` ("/40") directly after a
/// week count ("28", "28+3").
#[derive(Debug, Clone)]
struct WeekRow {
    after: String,
    expansions: Vec<String>,
}

/// The plain rows of one abbreviation.
#[derive(Debug, Clone)]
struct Entry {
    abbreviation: String,
    expansions: Vec<String>,
    /// The abbreviation with a capital first letter, for a word (see
    /// [`is_a_word`]): "Bilat" at the start of a sentence.
    capitalized: Option<String>,
    /// Written `NAME (no value)`: read only where no number follows, as the
    /// word then names a lab test ("Ca 2.1" is calcium, "breast Ca" is not).
    only_without_value: bool,
}

/// Whether `name` is written as a word (lower case, at least four letters:
/// "glucose", "bilat"), not as a symbol or acronym ("K", "pH", "Na", "AS"),
/// which match only as written.
fn is_a_word(name: &str) -> bool {
    name.len() >= 4 && name.bytes().all(|b| b.is_ascii_lowercase() || b == b' ')
}

/// `word` with its first letter in upper case: "bilat" to "Bilat".
fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// Marks a plain row that is read only where no number follows.
const NO_VALUE: &str = "(no value)";

/// Every row of one lab test, so a text is searched once per test.
#[derive(Debug, Clone)]
struct LabTest {
    name: String,
    /// A word ([`is_a_word`]) matches in any case: "Glucose", "GLUCOSE".
    any_case: bool,
    /// The units its rows name.
    units: Vec<String>,
    rules: Vec<LabRule>,
}

impl LabTest {
    /// The rows of `rules` grouped by test, in the list's order.
    fn group(rules: Vec<LabRule>) -> Vec<Self> {
        let mut tests: Vec<Self> = Vec::new();
        for rule in rules {
            let test = match tests.iter_mut().position(|t| t.name == rule.name) {
                Some(i) => &mut tests[i],
                None => {
                    let name = rule.name.clone();
                    tests.push(Self {
                        any_case: is_a_word(&name),
                        name,
                        units: Vec::new(),
                        rules: Vec::new(),
                    });
                    let last = tests.len() - 1;
                    &mut tests[last]
                }
            };
            test.units.extend(rule.unit.clone());
            test.rules.push(rule);
        }
        tests
    }
}

/// `name >low [<high] [unit],expansion`: see the module's comment.
#[derive(Debug, Clone)]
struct LabRule {
    name: String,
    /// The value must be above this...
    above: Option<f64>,
    /// ...and below this.
    below: Option<f64>,
    unit: Option<String>,
    /// One element, so it can be handed on as a slice like abbreviations'.
    expansion: [String; 1],
    /// The row of the list it came from, for messages.
    row: usize,
}

/// Refuses two rows of one test and unit that would both read the same value
/// with different meanings ("Ca <8.5 >4" and "Ca >2.6 <5" both take 4.5).
fn check_lab_windows(labs: &[LabRule]) -> std::result::Result<(), String> {
    for (i, a) in labs.iter().enumerate() {
        for b in &labs[i + 1..] {
            let same_reading = a.name == b.name
                && a.unit.as_deref().map(str::to_ascii_lowercase)
                    == b.unit.as_deref().map(str::to_ascii_lowercase)
                && a.expansion != b.expansion;
            let low = a.above.unwrap_or(f64::MIN).max(b.above.unwrap_or(f64::MIN));
            let high = a.below.unwrap_or(f64::MAX).min(b.below.unwrap_or(f64::MAX));
            if same_reading && low < high {
                return Err(format!(
                    "rows {} and {} both read a {} value between {low} and {high}, with different meanings",
                    a.row, b.row, a.name
                ));
            }
        }
    }
    Ok(())
}

impl LabRule {
    /// Reads `K >5.2`, `glucose <3.9 mmol/L` or `Ca >2.6 <4.5` (a second
    /// bound keeps a rule to values of one unit when none is written);
    /// `None` for a plain abbreviation (no word starts with '<' or '>').
    fn parse(
        abbreviation: &str,
        expansion: &str,
        row: usize,
    ) -> Option<std::result::Result<Self, String>> {
        let words: Vec<&str> = abbreviation.split_whitespace().collect();
        let at = words.iter().position(|w| w.starts_with(['<', '>']))?;
        let mut rule = Self {
            name: words[..at].join(" "),
            above: None,
            below: None,
            unit: None,
            expansion: [expansion.to_string()],
            row,
        };
        for word in &words[at..] {
            let (bound, number) = if let Some(n) = word.strip_prefix('>') {
                (&mut rule.above, n)
            } else if let Some(n) = word.strip_prefix('<') {
                (&mut rule.below, n)
            } else if rule.unit.is_none() {
                rule.unit = Some(word.to_string());
                continue;
            } else {
                return Some(Err(LAB_ROW.to_string()));
            };
            let number = number.parse().ok().filter(|t: &f64| t.is_finite());
            match (number, bound.is_none(), rule.unit.is_none()) {
                (Some(n), true, true) => *bound = Some(n),
                _ => return Some(Err(LAB_ROW.to_string())),
            }
        }
        if rule.name.is_empty() {
            return Some(Err(LAB_ROW.to_string()));
        }
        if let (Some(low), Some(high)) = (rule.above, rule.below) {
            if high <= low {
                return Some(Err(format!(
                    "no value is above {low} and below {high}: {LAB_ROW}"
                )));
            }
        }
        Some(Ok(rule))
    }

    /// Whether `reading` is beyond this rule's threshold. A value the text
    /// itself bounds counts only when the bound settles it: "TSH <0.01" is
    /// below 0.3, "eGFR >30" is not known to be below 60.
    fn holds(&self, reading: &Reading<'_>) -> bool {
        let value = reading.value;
        match (reading.bound, self.above, self.below) {
            (None, above, below) => {
                above.is_none_or(|low| value > low) && below.is_none_or(|high| value < high)
            }
            (Some('<'), None, Some(high)) => value <= high,
            (Some('>'), Some(low), None) => value >= low,
            _ => false,
        }
    }
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

const LAB_ROW: &str =
    "a lab row is written `name >number [<number] [unit]`, such as `K >5.2` or `glucose <3.9 mmol/L`";

impl Abbreviations {
    /// Reads an `abbreviation,expansion` CSV; a bad row is named.
    pub fn load(path: &Path) -> Result<Self> {
        let bad = |problem: String| Error::pack(path, problem);
        let mut reader = tabular::open_csv(path)?;
        let headers = reader
            .headers()
            .map_err(|e| bad(format!("cannot read the header row: {e}")))?
            .clone();
        if headers.iter().collect::<Vec<_>>() != ["abbreviation", "expansion"] {
            return Err(bad(
                "the header row must be exactly: abbreviation,expansion".into(),
            ));
        }
        let mut entries: Vec<Entry> = Vec::new();
        let mut labs = Vec::new();
        let mut week_rows: Vec<WeekRow> = Vec::new();
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
            if let Some(rule) = LabRule::parse(abbreviation, expansion, row) {
                labs.push(rule.map_err(|problem| bad(format!("row {row}: {problem}")))?);
                continue;
            }
            if abbreviation.contains(WEEKS) {
                let after = abbreviation
                    .strip_prefix(WEEKS)
                    .filter(|after| !after.trim().is_empty() && !after.contains(WEEKS))
                    .ok_or_else(|| {
                        bad(format!(
                            "row {row}: {WEEKS} must start the abbreviation and something must follow it, as in `{WEEKS}/40,weeks gestation`"
                        ))
                    })?;
                match week_rows.iter_mut().find(|w| w.after == after) {
                    Some(w) => w.expansions.push(expansion.to_string()),
                    None => week_rows.push(WeekRow {
                        after: after.to_string(),
                        expansions: vec![expansion.to_string()],
                    }),
                }
                continue;
            }
            let (abbreviation, only_without_value) = match abbreviation.strip_suffix(NO_VALUE) {
                Some(name) if !name.trim().is_empty() => (name.trim(), true),
                Some(_) => {
                    return Err(bad(format!(
                        "row {row}: {NO_VALUE} needs the abbreviation before it, as in `Ca {NO_VALUE},carcinoma`"
                    )))
                }
                None => (abbreviation, false),
            };
            match entries.iter_mut().find(|e| e.abbreviation == abbreviation) {
                Some(entry) if entry.only_without_value != only_without_value => {
                    return Err(bad(format!(
                        "row {row}: write {abbreviation} with {NO_VALUE} on all of its rows or on none"
                    )))
                }
                Some(entry) => entry.expansions.push(expansion.to_string()),
                None => entries.push(Entry {
                    capitalized: is_a_word(abbreviation).then(|| capitalize(abbreviation)),
                    abbreviation: abbreviation.to_string(),
                    expansions: vec![expansion.to_string()],
                    only_without_value,
                }),
            }
        }
        check_lab_windows(&labs).map_err(bad)?;
        if entries.is_empty() && labs.is_empty() && week_rows.is_empty() {
            return Err(bad("the list has no abbreviations".into()));
        }
        entries.sort_by(|a, b| {
            b.abbreviation
                .len()
                .cmp(&a.abbreviation.len())
                .then_with(|| a.abbreviation.cmp(&b.abbreviation))
        });
        Ok(Self {
            entries,
            labs: LabTest::group(labs),
            week_rows,
        })
    }

    /// `text` with the expansions of the abbreviations it contains appended,
    /// in the order they occur, each expansion once.
    pub fn expand(&self, text: &str) -> Expanded {
        let mut found: Vec<(Range<usize>, &[String])> = Vec::new();
        // Bytes already taken by a (longer) abbreviation: a per-byte mark
        // keeps this linear in the text, however many matches a long note has.
        let mut taken = vec![false; text.len()];
        for entry in &self.entries {
            let forms = std::iter::once(&entry.abbreviation).chain(&entry.capitalized);
            for form in forms {
                for (start, _) in text.match_indices(form.as_str()) {
                    let end = start + form.len();
                    if !taken[start..end].contains(&true)
                        && stands_alone(text, start..end)
                        && !(entry.only_without_value && number_follows(text, end))
                    {
                        taken[start..end].fill(true);
                        found.push((start..end, &entry.expansions[..]));
                    }
                }
            }
        }
        // After the plain rows, so that a literal "20/40" row wins.
        for row in &self.week_rows {
            for (at, _) in text.match_indices(row.after.as_str()) {
                let Some(start) = week_count_before(text, at) else {
                    continue;
                };
                let end = at + row.after.len();
                if !taken[start..end].contains(&true)
                    && stands_alone(text, start..end)
                    && !counts_something_else(text, start..end)
                {
                    taken[start..end].fill(true);
                    found.push((start..end, &row.expansions[..]));
                }
            }
        }
        // Lab values may overlap an abbreviation ("Hb" in "Hb 7.2"): both count.
        found.extend(self.lab_findings(text));
        found.sort_by_key(|(r, _)| r.start);

        let original_chars = text.chars().count();
        let mut expanded = Expanded {
            text: text.to_string(),
            original_chars,
            sources: Vec::new(),
        };
        let mut appended_chars = original_chars;
        let mut seen: Vec<&str> = Vec::new();
        // Characters before each finding, counted once along the text.
        let (mut counted_bytes, mut counted_chars) = (0, 0);
        for (bytes, expansions) in found {
            if expansions.iter().all(|e| seen.contains(&e.as_str())) {
                continue;
            }
            counted_chars += text[counted_bytes..bytes.start].chars().count();
            counted_bytes = bytes.start;
            let abbreviation_chars = counted_chars..counted_chars + text[bytes].chars().count();
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

impl Abbreviations {
    /// Every lab value in `text` beyond a threshold of the list: the span
    /// from the test's name to its value (and unit), and what it means.
    fn lab_findings(&self, text: &str) -> Vec<(Range<usize>, &[String])> {
        // Same byte offsets as `text`: only ASCII letters change.
        let lowered = text.to_ascii_lowercase();
        let mut found = Vec::new();
        for test in &self.labs {
            let haystack = if test.any_case {
                lowered.as_str()
            } else {
                text
            };
            for (start, _) in haystack.match_indices(test.name.as_str()) {
                let end = start + test.name.len();
                if !stands_alone(text, start..end) || names_a_specimen(&lowered[..start]) {
                    continue;
                }
                let Some(reading) = read_value(text, end, &test.units) else {
                    continue;
                };
                for rule in &test.rules {
                    let unit_matches = match (&rule.unit, reading.unit) {
                        (Some(wanted), Some(written)) => wanted.eq_ignore_ascii_case(written),
                        (None, None) => true,
                        _ => false,
                    };
                    if unit_matches && rule.holds(&reading) {
                        found.push((start..reading.end, &rule.expansion[..]));
                    }
                }
            }
        }
        found
    }
}

/// Whether the words before a test's name say it was measured in something
/// other than blood ("urine Na", "CSF glucose", "ionised Ca"), where the
/// blood limits do not apply.
fn names_a_specimen(before: &str) -> bool {
    const SPECIMENS: &[&str] = &[
        "urine", "urinary", "csf", "pleural", "fluid", "ascitic", "ionised", "ionized", "stool",
        "sweat", "vaginal", "spot",
    ];
    before
        .split_whitespace()
        .rev()
        .take(2)
        .any(|w| SPECIMENS.contains(&w.trim_matches(|c: char| !c.is_alphanumeric())))
}

/// Tokens after a number that make it a dose or a count, not a
/// concentration: "vitamin K 10 mg", "K 40 mEq PO".
const DOSES: &[&str] = &[
    "g", "mg", "mcg", "ug", "\u{b5}g", "ml", "l", "meq", "mmol", "iu", "units", "unit", "x",
    "times", "tabs",
];

/// Tokens after a number that make it a time: "breast Ca 5 yrs ago".
const TIMES: &[&str] = &[
    "y", "yr", "yrs", "year", "years", "d", "day", "days", "h", "hr", "hrs", "hour", "hours", "wk",
    "wks", "week", "weeks", "mo", "month", "months", "min", "ago",
];

/// The word after a number, lower-cased ("mg" in "600 mg daily" or "600mg").
fn word_after_number(after: &str) -> String {
    after
        .trim_start()
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("")
        .to_lowercase()
}

/// Whether a number follows the word ending at byte `end`, as it does after
/// a lab test's name ("Ca 2.4", "Ca: 10mg/dL", "Ca++ 1.1", "Ca 600 mg"),
/// whether or not a lab row reads it. A time ("breast Ca 5 yrs ago") is
/// not such a number.
fn number_follows(text: &str, end: usize) -> bool {
    let rest = text[end..].trim_start_matches('+').trim_start();
    let rest = rest.strip_prefix([':', '=']).unwrap_or(rest).trim_start();
    let rest = rest.strip_prefix(['<', '>']).unwrap_or(rest);
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0 && !TIMES.contains(&word_after_number(&rest[digits..]).as_str())
}

/// A number written after a lab test's name.
struct Reading<'a> {
    value: f64,
    /// '<' or '>' when the text bounds the value ("TSH <0.01", "eGFR >30").
    bound: Option<char>,
    /// One of the units the list knows for the test, if one follows.
    unit: Option<&'a str>,
    /// Byte offset after the number (and unit).
    end: usize,
}

/// The value after a test's name ending at byte `from`: an optional '+'
/// ("K+ 6.1"), white space, an optional ':' or '=', an optional '<' or '>'
/// ("TSH <0.01"), then the number (thousands may be grouped: "CK 45,000"),
/// then perhaps a unit, attached ("9.4%") or after one space. `None` when no
/// number follows, or when what follows makes it something else: a decimal
/// comma, a range or a ratio ("Ca 19-9", "20/hpf"), a dose or a time.
fn read_value<'a>(text: &str, from: usize, units: &'a [String]) -> Option<Reading<'a>> {
    let rest = &text[from..];
    let after_name = rest.strip_prefix('+').unwrap_or(rest).trim_start();
    let after_sign = after_name
        .strip_prefix([':', '='])
        .unwrap_or(after_name)
        .trim_start();
    let bound = after_sign.chars().next().filter(|c| matches!(c, '<' | '>'));
    let number_text = after_sign.strip_prefix(['<', '>']).unwrap_or(after_sign);
    // `number_text` is a suffix of `text`, so this is where it starts.
    let number_start = text.len() - number_text.len();
    let (value, length) = read_number(number_text)?;
    let mut end = number_start + length;
    let tail = &text[end..];
    let range_or_ratio = tail.starts_with('/')
        || tail
            .strip_prefix('-')
            .is_some_and(|t| t.starts_with(|c: char| c.is_ascii_digit()));
    if range_or_ratio {
        return None;
    }
    let listed = |written: Option<&str>| {
        units.iter().map(String::as_str).find(|unit| {
            written.is_some_and(|w| {
                w.get(..unit.len())
                    .is_some_and(|w| w.eq_ignore_ascii_case(unit))
            })
        })
    };
    let spaced = tail.strip_prefix(' ');
    let unit = listed(Some(tail)).or_else(|| listed(spaced));
    match unit {
        Some(unit) => {
            end += tail.find(|c: char| c != ' ').unwrap_or(0) + unit.len();
            if text[end..].starts_with(|c: char| c.is_alphanumeric()) {
                return None;
            }
        }
        // A number that runs on into letters ("3x", "2nd", "10mg") is not a level.
        None if tail.starts_with(|c: char| c.is_alphanumeric()) => return None,
        None => {
            let next = spaced
                .unwrap_or("")
                .split([' ', ',', ';', ')', '.'])
                .next()
                .unwrap_or("")
                .to_lowercase();
            if DOSES.contains(&next.as_str()) || TIMES.contains(&next.as_str()) {
                return None;
            }
        }
    }
    Some(Reading {
        value,
        bound,
        unit,
        end,
    })
}

/// A number at the start of `text`: digits with an optional decimal point, or
/// digits grouped in thousands ("45,000"); its value and length in bytes.
/// `None` for a decimal comma ("2,8"), which this cannot tell from a list.
fn read_number(text: &str) -> Option<(f64, usize)> {
    let bytes = text.as_bytes();
    let digits = |from: usize| {
        bytes[from..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
    };
    let whole = digits(0);
    if whole == 0 {
        return None;
    }
    let mut length = whole;
    let mut plain = text[..whole].to_string();
    // Thousands: groups of exactly three digits after commas.
    while whole <= 3
        && bytes.get(length) == Some(&b',')
        && bytes.get(length + 1).is_some_and(u8::is_ascii_digit)
    {
        if digits(length + 1) != 3 {
            return None;
        }
        plain.push_str(&text[length + 1..length + 4]);
        length += 4;
    }
    if bytes.get(length) == Some(&b',') && bytes.get(length + 1).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    if length == whole && bytes.get(length) == Some(&b'.') {
        let fraction = digits(length + 1);
        if fraction > 0 {
            plain.push_str(&text[length..length + 1 + fraction]);
            length += 1 + fraction;
        }
    }
    plain.parse().ok().map(|value| (value, length))
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

/// Where the gestational age that ends at byte `end` starts: one or two
/// digits of weeks within [`GESTATION_WEEKS`], perhaps followed by `+` and a
/// day (0 to 6), as in "28/40" and "28+3/40".
fn week_count_before(text: &str, end: usize) -> Option<usize> {
    let before = &text[..end];
    let weeks_end = match before.strip_suffix(|c: char| ('0'..='6').contains(&c)) {
        Some(rest) if rest.ends_with('+') => rest.len() - 1,
        _ => end,
    };
    let digits = before[..weeks_end]
        .bytes()
        .rev()
        .take_while(u8::is_ascii_digit)
        .count();
    let start = weeks_end - digits;
    let weeks: u32 = before[start..weeks_end].parse().ok()?;
    // "28+7/40" is no week count: a day is 0 to 6, and 7 is not weeks.
    let after_a_plus = before[..start].ends_with('+');
    (digits <= 2 && GESTATION_WEEKS.contains(&weeks) && !after_a_plus).then_some(start)
}

/// Whether the words around a fraction out of forty at `bytes` say it
/// counts something other than weeks: "12/40 lymph nodes", "LN 12/40",
/// "score 30/40", or a combination tablet's doses ("Vytorin 10/40 mg").
fn counts_something_else(text: &str, bytes: Range<usize>) -> bool {
    const COUNTED: &[&str] = &["node", "nodes", "ln", "lns", "lymph", "cores", "points"];
    const SCORES: &[&str] = &["score", "scored", "scores", "mmse", "moca", "ace"];
    let before = text[..bytes.start]
        .split_whitespace()
        .next_back()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        })
        .unwrap_or_default();
    let after = word_after_number(&text[bytes.end..]);
    COUNTED.contains(&after.as_str())
        || DOSES.contains(&after.as_str())
        || COUNTED.contains(&before.as_str())
        || SCORES.contains(&before.as_str())
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
    fn words_match_in_lower_case_or_capitalised_and_acronyms_only_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.csv");
        let list =
            "abbreviation,expansion\nhaematuria,hematuria\nAS,aortic stenosis\non RA,on room air\n";
        std::fs::write(&path, list).unwrap();
        let l = Abbreviations::load(&path).unwrap();
        assert!(l.expand("Haematuria, frank").text.ends_with("(hematuria)"));
        assert_eq!(l.expand("haeMATURIA").text, "haeMATURIA");
        // "METs" on a stress test are not metastases.
        let shipped = shipped();
        assert_eq!(shipped.expand("10 METs achieved").text, "10 METs achieved");
        assert!(shipped
            .expand("Mets to liver")
            .text
            .ends_with("(secondary malignant neoplasm)"));
        assert_eq!(l.expand("as before").text, "as before");
        assert_eq!(l.expand("severe AS").text, "severe AS (aortic stenosis)");
        // A phrase row reads the abbreviation in its context only.
        assert_eq!(
            l.expand("sats 86% on RA").text,
            "sats 86% on RA (on room air)"
        );
        assert_eq!(l.expand("seropositive RA").text, "seropositive RA");
    }

    #[test]
    fn offsets_count_characters_not_bytes() {
        let e = list().expand("é MI");
        assert_eq!(e.source_of(e.text.chars().count() - 2), Some(2..4));
    }

    const LABS: &str =
        "abbreviation,expansion\nHb,hemoglobin\nHb <12,anemia\nK >5.2,hyperkalemia\n\
        glucose >11 mmol/L,hyperglycemia\nK <3.5,hypokalemia\nHb <120 g/L,anemia\n\
        glucose >11 <40,hyperglycemia\nHbA1c >6.4 %,diabetes range\nTSH <0.4,suppressed TSH\n\
        Ca >2.6 <4.5,hypercalcemia\nCr >120 <2000 \u{b5}mol/L,renal impairment\n";

    fn labs() -> Abbreviations {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abbreviations.csv");
        std::fs::write(&path, LABS).unwrap();
        Abbreviations::load(&path).unwrap()
    }

    /// What `text` has appended, without the brackets.
    fn appended(list: &Abbreviations, text: &str) -> String {
        let e = list.expand(text);
        e.text[text.len()..]
            .trim_start_matches(" (")
            .trim_end_matches(')')
            .to_string()
    }

    #[test]
    fn lab_values_beyond_a_threshold_are_read_as_what_they_mean() {
        let l = labs();
        let e = l.expand("K 6.8 with peaked T waves");
        assert_eq!(e.text, "K 6.8 with peaked T waves (hyperkalemia)");
        // The evidence of "hyperkalemia" goes to "K 6.8".
        assert_eq!(e.source_of(e.text.find("hyper").unwrap()), Some(0..5));
        assert_eq!(
            appended(&l, "K+ 2.9, K: 3.1, K=6"),
            "hypokalemia; hyperkalemia"
        );
        assert_eq!(appended(&l, "Hb 7.2, MCV 68"), "hemoglobin; anemia");
        assert_eq!(appended(&l, "Hb 13.5"), "hemoglobin");
        assert_eq!(appended(&l, "TSH <0.01"), "suppressed TSH");
        assert_eq!(appended(&l, "HbA1c 9.4%, then HbA1c 7 %"), "diabetes range");
        // A unit decides which row applies; no row, no reading.
        assert_eq!(appended(&l, "Hb 95 g/L"), "hemoglobin; anemia");
        assert_eq!(appended(&l, "Hb 135 g/L"), "hemoglobin");
        assert_eq!(appended(&l, "glucose 32 mmol/L"), "hyperglycemia");
        assert_eq!(appended(&l, "glucose 32"), "hyperglycemia");
        assert_eq!(appended(&l, "glucose 320 mg/dL"), "");
        assert_eq!(appended(&l, "HbA1c 53 mmol/mol"), "");
        assert_eq!(appended(&l, "Cr 250 \u{b5}mol/L"), "renal impairment");
        assert_eq!(appended(&l, "Cr 250"), "");
        // A second bound keeps a unitless rule to one unit's values.
        assert_eq!(appended(&l, "Ca 3.1"), "hypercalcemia");
        assert_eq!(appended(&l, "Ca 9.5"), "");
        // Not values: no number, a number running into letters, a name
        // inside a word.
        for text in ["K is fine", "K 2nd", "CKD 4", "TSH.", "Hb", "Hb 7x"] {
            assert_eq!(appended(&l, text).replace("hemoglobin", ""), "", "{text}");
        }
    }

    /// The ICD pack's own list, as shipped.
    fn shipped() -> Abbreviations {
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let shipped = repo.join("models/icd10cm/abbreviations.csv");
        let source = repo.join("scripts/icd10cm/abbreviations.csv");
        assert_eq!(
            std::fs::read(&shipped).unwrap(),
            std::fs::read(&source).unwrap(),
            "the pack's list must be the one in scripts/ (models/regenerate.sh --write copies it)"
        );
        Abbreviations::load(&shipped).unwrap()
    }

    #[test]
    fn the_shipped_lab_rows_read_levels_and_leave_doses_ranges_and_other_fluids_alone() {
        let l = shipped();
        let lab_part = |text: &str| {
            let e = l.expand(text);
            let original = e.original_chars;
            e.sources
                .iter()
                .filter(|(_, source)| {
                    // Lab readings span the name, a space and the value
                    // (abbreviations such as "FT4" are one word).
                    text.chars()
                        .skip(source.start)
                        .take(source.len())
                        .any(char::is_whitespace)
                })
                .map(|(appended, _)| {
                    e.text
                        .chars()
                        .skip(appended.start)
                        .take(appended.len())
                        .collect::<String>()
                })
                .inspect(|_| assert!(original <= e.text.chars().count()))
                .collect::<Vec<_>>()
                .join("; ")
        };
        for (text, expected) in [
            ("K 6.8 with peaked T waves", "hyperkalemia"),
            ("K 5.2", ""),
            ("K 3.5", ""),
            ("K+ 3.1", "hypokalemia"),
            ("Na 121, confused", "hyponatremia"),
            ("Potassium 6.1", "hyperkalemia"),
            ("Glucose 2.4 mmol/L", "hypoglycemia"),
            ("glucose 45", ""),
            ("glucose 250", "hyperglycemia"),
            ("Ca 3.1", "hypercalcemia"),
            ("Ca 4.7", "hypocalcemia"),
            ("Ca 2,8", ""),
            ("Ca 19-9 120", ""),
            ("breast Ca 5 yrs ago", ""),
            ("TSH <0.01", "hyperthyroidism"),
            ("metformin if eGFR >30", ""),
            ("eGFR 24", "reduced kidney function"),
            ("plt >50 for LP", ""),
            ("plt 18", "thrombocytopenia"),
            ("plt 50,000", "thrombocytopenia"),
            ("CK 45,000 after a long lie", "rhabdomyolysis"),
            ("WBC 7,000", ""),
            ("WBC 20-50/hpf in urine", ""),
            ("urine Na 180", ""),
            ("vitamin K 10 mg IV", ""),
            ("K 40 mEq PO", ""),
            ("Hb 7.2 g/dL", "anemia"),
            ("Hb 72", "anemia"),
            ("Hb 135 g/L", ""),
            ("FT4 1.2 ng/dL", ""),
            ("pH 7.21", "acidosis"),
            ("urine pH 6.5", ""),
            ("HbA1c 53", "diabetes mellitus"),
        ] {
            assert_eq!(lab_part(text), expected, "{text}");
        }
    }

    #[test]
    fn a_long_note_full_of_matches_gets_each_expansion_once_from_its_first_place() {
        let l = shipped();
        let note = "é SOB, K 6.8; ".repeat(7_000);
        let e = l.expand(&note);
        let appended: Vec<String> = e
            .sources
            .iter()
            .map(|(a, _)| e.text.chars().skip(a.start).take(a.len()).collect())
            .collect();
        assert_eq!(appended, ["shortness of breath", "dyspnea", "hyperkalemia"]);
        // Each is credited to the first place it stands, counted in characters.
        let firsts: Vec<Range<usize>> = e.sources.iter().map(|(_, s)| s.clone()).collect();
        assert_eq!(firsts, [2..5, 2..5, 7..12]);
    }

    #[test]
    fn two_rows_that_read_one_value_two_ways_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.csv");
        let list = "abbreviation,expansion\nCa >2.6 <5,hypercalcemia\nCa <8.5 >4,hypocalcemia\n";
        std::fs::write(&path, list).unwrap();
        let err = Abbreviations::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("rows 2 and 3") && err.contains("between 4 and 5"),
            "{err}"
        );
        // With a unit each, or the same meaning, they may overlap.
        let fine = "abbreviation,expansion\nHb <12,anemia\nHb <120 >30,anemia\nHb <12 g/dL,low\n";
        std::fs::write(&path, fine).unwrap();
        assert!(Abbreviations::load(&path).is_ok());
    }

    #[test]
    fn a_no_value_row_is_read_only_where_no_value_follows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.csv");
        let list = "abbreviation,expansion\nCa (no value),carcinoma\nCa >2.6 <4.5,hypercalcemia\n";
        std::fs::write(&path, list).unwrap();
        let l = Abbreviations::load(&path).unwrap();
        let appended = |text: &str| {
            let e = l.expand(text);
            e.text[text.len()..].to_string()
        };
        assert_eq!(appended("L breast Ca, ER+"), " (carcinoma)");
        assert_eq!(appended("h/o Ca colon, Ca 2.4 mmol/L"), " (carcinoma)");
        assert_eq!(
            appended("Ca 3.1, known breast Ca"),
            " (hypercalcemia; carcinoma)"
        );
        // A number follows: calcium, high or not, a dose or in any unit; a
        // time is not such a number.
        assert_eq!(appended("Ca 3.1"), " (hypercalcemia)");
        for calcium in [
            "Ca: 2.3",
            "Ca 600 mg daily",
            "Ca 2.4mmol/L",
            "Ca++ 1.1",
            "Ca 2,45",
        ] {
            assert_eq!(appended(calcium), "", "{calcium}");
        }
        assert_eq!(appended("breast Ca 5 yrs ago"), " (carcinoma)");
        // The shipped list reads "Ca" both ways.
        let shipped = shipped();
        assert!(shipped.expand("prostate Ca").text.ends_with("(carcinoma)"));
        assert!(!shipped.expand("Ca 2.9").text.contains("carcinoma"));
        // The mark goes on every row of an abbreviation or on none.
        for (rows, problem) in [
            (
                "Ca (no value),carcinoma\nCa,calcium\n",
                "row 3: write Ca with (no value)",
            ),
            (
                " (no value),x\n",
                "row 2: (no value) needs the abbreviation",
            ),
        ] {
            std::fs::write(&path, format!("abbreviation,expansion\n{rows}")).unwrap();
            let err = Abbreviations::load(&path).unwrap_err().to_string();
            assert!(err.contains(problem), "{err}");
        }
    }

    #[test]
    fn a_weeks_row_reads_gestation_written_as_weeks_of_forty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.csv");
        let list = "abbreviation,expansion\n{weeks}/40,weeks gestation\n\
            20/40,visual acuity\n20/40,weeks gestation\n";
        std::fs::write(&path, list).unwrap();
        let l = Abbreviations::load(&path).unwrap();
        let e = l.expand("GDM at 28/40, diet");
        assert_eq!(e.text, "GDM at 28/40, diet (weeks gestation)");
        // The evidence goes to the whole week count.
        assert_eq!(e.source_of(e.text.find("weeks").unwrap()), Some(7..12));
        let e = l.expand("G2P1 28+3/40");
        assert_eq!(e.source_of(e.text.find("weeks").unwrap()), Some(5..12));
        for text in [
            "8/40 miscarriage",
            "(36/40)",
            "at 42/40",
            "28/40, nodes clear",
        ] {
            assert_eq!(appended(&l, text), "weeks gestation", "{text}");
        }
        // Blood pressure, counts out of range, other fractions, a day past six.
        for text in [
            "BP 120/40",
            "2/40",
            "43/40",
            "28/400",
            "x28/40",
            "1/28/40",
            "28/40x",
            "28+7/40",
            "12/40 lymph nodes positive",
            "12/40 LNs",
            "nodes 12/40 positive",
            "Vytorin 10/40 mg",
            "Caduet 5/40mg daily",
            "score 30/40",
            "MoCA: 24/40",
        ] {
            assert_eq!(l.expand(text).text, text);
        }
        // The literal row wins and carries both readings.
        assert_eq!(
            appended(&l, "VA 20/40 OD"),
            "visual acuity; weeks gestation"
        );
        assert_eq!(
            appended(&shipped(), "GDM at 28/40"),
            "gestational diabetes mellitus; weeks gestation"
        );
        for (rows, problem) in [
            (
                "x{weeks}/40,a\n",
                "row 2: {weeks} must start the abbreviation",
            ),
            ("{weeks},a\n", "row 2: {weeks} must start"),
            ("{weeks}/{weeks},a\n", "row 2: {weeks} must start"),
        ] {
            std::fs::write(&path, format!("abbreviation,expansion\n{rows}")).unwrap();
            let err = Abbreviations::load(&path).unwrap_err().to_string();
            assert!(err.contains(problem), "{err}");
        }
    }

    #[test]
    fn a_broken_lab_row_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.csv");
        for row in [
            "K >abc",
            "K >5 <6 <7",
            ">5",
            "K >5 mmol/L <7",
            "K >5 mmol/L extra",
        ] {
            std::fs::write(&path, format!("abbreviation,expansion\nCHF,x\n{row},y\n")).unwrap();
            let err = Abbreviations::load(&path).unwrap_err().to_string();
            assert!(
                err.contains("row 3") && err.contains("lab row"),
                "{row}: {err}"
            );
        }
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
