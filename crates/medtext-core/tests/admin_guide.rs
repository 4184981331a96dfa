//! `docs/admin-guide.md` against the code it describes, so the guide cannot
//! drift: its policy table is exactly [`policy::KEYS`] (which the parser's
//! own tests hold to what it accepts), its example policy parses, and its
//! troubleshooting table has a row for every error a user can see: every
//! variant of the core's and the local API's error enums, each marked by a
//! hidden `<!-- Error::Variant -->` anchor in its row (the messages hold
//! paths and numbers, so the anchor, not the text, is what is matched).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use medtext_core::machine::policy::{KeyKind, Policy, KEYS};

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(relative: &str) -> String {
    let path = repository().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn guide() -> String {
    read("docs/admin-guide.md")
}

/// The guide's text between `<!-- NAME:begin -->` and `<!-- NAME:end -->`.
fn part(guide: &str, name: &str) -> String {
    let (begin, end) = (
        format!("<!-- {name}:begin -->"),
        format!("<!-- {name}:end -->"),
    );
    let start = guide
        .find(&begin)
        .unwrap_or_else(|| panic!("docs/admin-guide.md has no {begin}"))
        + begin.len();
    let stop = guide[start..]
        .find(&end)
        .unwrap_or_else(|| panic!("docs/admin-guide.md has no {end}"));
    guide[start..start + stop].trim().to_string()
}

fn kind_text(kind: &KeyKind) -> String {
    match kind {
        KeyKind::Integer { min, max } => format!("integer, {min} to {max}"),
        KeyKind::Boolean => "`true` or `false`".into(),
        KeyKind::OneOf(values) => values
            .iter()
            .map(|v| format!("`\"{v}\"`"))
            .collect::<Vec<_>>()
            .join(" or "),
        KeyKind::SignerKeys => "list of `\"ed25519:<64 hex digits>\"`, at least one".into(),
        KeyKind::Text(what) => format!("string: {what}"),
    }
}

/// The policy table as the guide must show it.
fn policy_table() -> String {
    let mut table = String::from("| key | type | when absent | effect |\n|---|---|---|---|\n");
    for key in KEYS {
        table.push_str(&format!(
            "| `[{}]` `{}` | {} | {} | {} |\n",
            key.section(),
            key.key(),
            kind_text(&key.kind),
            key.default,
            key.effect
        ));
    }
    table
}

#[test]
fn the_policy_table_is_the_parsers_key_table() {
    let expected = policy_table();
    assert!(
        part(&guide(), "policy-keys") == expected.trim(),
        "the policy table in docs/admin-guide.md is not policy::KEYS; put this between its policy-keys markers:\n\n{expected}"
    );
}

#[test]
fn the_guides_example_policy_parses_and_sets_every_key() {
    let example = part(&guide(), "policy-example");
    let toml = example
        .strip_prefix("```toml")
        .and_then(|t| t.strip_suffix("```"))
        .expect("the policy example is one ```toml block");
    let parsed = Policy::parse(toml, Path::new("docs/admin-guide.md"))
        .unwrap_or_else(|e| panic!("the guide's example policy: {e}"));
    let set: Vec<&str> = parsed.managed().iter().map(|m| m.key).collect();
    let every: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
    assert_eq!(set, every, "the example sets every key the parser accepts");
}

/// The variants of `pub enum Error` in the Rust file at `relative`, less
/// those that only wrap another error transparently (their messages are
/// that error's).
fn error_variants(relative: &str) -> Vec<String> {
    let source = read(relative);
    let body = source
        .split_once("pub enum Error {")
        .and_then(|(_, rest)| rest.split_once("\n}"))
        .map(|(body, _)| body)
        .unwrap_or_else(|| panic!("{relative} has no `pub enum Error`"));
    let mut variants = Vec::new();
    let mut transparent = false;
    for line in body.lines() {
        let Some(item) = line.strip_prefix("    ").filter(|l| !l.starts_with(' ')) else {
            continue;
        };
        if item.starts_with("#[error(transparent)]") {
            transparent = true;
        } else if item.starts_with(|c: char| c.is_ascii_uppercase()) {
            let name: String = item
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            if !std::mem::take(&mut transparent) {
                variants.push(name);
            }
        }
    }
    assert!(variants.len() > 2, "{relative}: {variants:?}");
    variants
}

/// Every error a user can see, as the anchors name them.
fn user_visible_errors() -> BTreeSet<String> {
    let core = error_variants("crates/medtext-core/src/error.rs")
        .into_iter()
        .map(|v| format!("Error::{v}"));
    let api = error_variants("crates/medtext-api/src/lib.rs")
        .into_iter()
        .map(|v| format!("api::Error::{v}"));
    core.chain(api).collect()
}

/// The `<!-- …Error::… -->` anchors in `text`.
fn anchors(text: &str) -> BTreeSet<String> {
    text.split("<!-- ")
        .skip(1)
        .filter_map(|rest| rest.split_once(" -->").map(|(name, _)| name.trim()))
        .filter(|name| name.contains("Error::"))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_troubleshooting_table_has_a_row_for_every_error_a_user_can_see() {
    let table = part(&guide(), "troubleshooting");
    let rows = anchors(&table);
    let errors = user_visible_errors();
    let missing: Vec<_> = errors.difference(&rows).collect();
    let stale: Vec<_> = rows.difference(&errors).collect();
    assert!(
        missing.is_empty(),
        "docs/admin-guide.md's troubleshooting table has no row for {missing:?}: add one with its message, cause and what to do, anchored <!-- Error::Variant -->"
    );
    assert!(
        stale.is_empty(),
        "docs/admin-guide.md's troubleshooting table has rows for errors that no longer exist: {stale:?}"
    );
    // Each anchor sits in a table row of its own.
    for anchor in &rows {
        let marker = format!("<!-- {anchor} -->");
        let row = table
            .lines()
            .find(|l| l.contains(&marker))
            .unwrap_or_default();
        assert!(
            row.starts_with('|') && row.matches(" | ").count() >= 2,
            "{anchor}: {row}"
        );
        assert_eq!(table.matches(&marker).count(), 1, "{anchor}");
    }
}

#[test]
fn the_anchor_reader_finds_what_a_row_would_be_missing() {
    // The test above can fail: a table that lost one row names it.
    let errors = user_visible_errors();
    let one = errors.iter().next().unwrap().clone();
    let table = errors
        .iter()
        .skip(1)
        .map(|e| format!("| <!-- {e} --> message | cause | fix |"))
        .collect::<Vec<_>>()
        .join("\n");
    let missing: Vec<String> = errors.difference(&anchors(&table)).cloned().collect();
    assert_eq!(missing, vec![one]);
}
