//! The guides against the files they point at: every screenshot
//! `docs/user-guide.md` shows exists, is one the end-to-end test takes
//! (`snap("name")` in `tests/e2e/app.e2e.test.mjs`, saved by
//! `scripts/e2e.sh --screenshots` into `docs/screenshots/`), and every one it
//! takes is shown; and every relative link of the README and the guides
//! leads to a file that is there.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The largest screenshot kept in the repository.
const MAX_SCREENSHOT_BYTES: u64 = 200 * 1024;

/// Every markdown link target in `text` (images included), with its text.
fn links(text: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for (i, _) in text.match_indices("](") {
        let label_start = text[..i].rfind('[').map_or(i, |s| s + 1);
        let rest = &text[i + 2..];
        if let Some(end) = rest.find(')') {
            found.push((text[label_start..i].to_string(), rest[..end].to_string()));
        }
    }
    found
}

/// The screenshots the user guide shows, by name (without `.png`).
fn shown_screenshots() -> BTreeSet<String> {
    links(&read("docs/user-guide.md"))
        .into_iter()
        .filter_map(|(alt, target)| {
            let name = target.strip_prefix("screenshots/")?.strip_suffix(".png")?;
            assert!(!alt.trim().is_empty(), "{target} needs a description");
            Some(name.to_string())
        })
        .collect()
}

/// The screenshots the end-to-end test takes: its `snap("name")` calls.
fn taken_screenshots() -> BTreeSet<String> {
    let source = read("tests/e2e/app.e2e.test.mjs");
    source
        .split("snap(\"")
        .skip(1)
        .filter_map(|rest| rest.split_once('"').map(|(name, _)| name.to_string()))
        .collect()
}

#[test]
fn the_user_guide_shows_every_screenshot_the_end_to_end_test_takes_and_no_other() {
    let shown = shown_screenshots();
    let taken = taken_screenshots();
    assert!(taken.len() >= 5, "{taken:?}");
    assert_eq!(
        shown, taken,
        "docs/user-guide.md must show exactly the screenshots tests/e2e/app.e2e.test.mjs takes"
    );
    let e2e = read("scripts/e2e.sh");
    assert!(
        e2e.contains("--screenshots") && e2e.contains("docs/screenshots"),
        "scripts/e2e.sh --screenshots saves them into docs/screenshots"
    );
}

#[test]
fn every_screenshot_the_guide_shows_is_committed_small_and_nothing_else_is_there() {
    let folder = root().join("docs/screenshots");
    let on_disk: BTreeSet<String> = std::fs::read_dir(&folder)
        .unwrap_or_else(|e| panic!("{}: {e}", folder.display()))
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let shown: BTreeSet<String> = shown_screenshots()
        .into_iter()
        .map(|name| format!("{name}.png"))
        .collect();
    assert_eq!(on_disk, shown, "files in docs/screenshots/");
    for name in &shown {
        let path = folder.join(name);
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
            "{name} is not a PNG"
        );
        assert!(
            (bytes.len() as u64) <= MAX_SCREENSHOT_BYTES,
            "{name} is {} bytes; keep screenshots under {MAX_SCREENSHOT_BYTES}",
            bytes.len()
        );
    }
}

#[test]
fn every_relative_link_of_the_readme_and_the_guides_leads_to_a_file() {
    for document in ["README.md", "docs/admin-guide.md", "docs/user-guide.md"] {
        let base = Path::new(document).parent().unwrap_or(Path::new(""));
        for (_, target) in links(&read(document)) {
            let path = target.split('#').next().unwrap_or_default();
            if path.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            assert!(
                root().join(base).join(path).exists(),
                "{document} links to {target}, which is not there"
            );
        }
    }
}

#[test]
fn the_link_reader_sees_images_and_links() {
    let found = links("see ![a picture](screenshots/x.png) and [the guide](admin-guide.md#top).");
    assert_eq!(
        found,
        [
            ("a picture".to_string(), "screenshots/x.png".to_string()),
            ("the guide".to_string(), "admin-guide.md#top".to_string())
        ]
    );
}
