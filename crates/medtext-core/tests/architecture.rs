//! The invariants `ARCHITECTURE.md` states about the core's wings, checked
//! against the source: which wing may import which, and that the code map
//! names every wing and every crate. Read from the files' `use` paths, not
//! from the compiler, so a new import that breaks a rule fails here with the
//! file and the line.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const WINGS: [&str; 8] = [
    "text",
    "pack",
    "encoder",
    "inference",
    "training",
    "history",
    "machine",
    "bench",
];

/// (importing wing, imported wing, why the import is forbidden)
const FORBIDDEN: [(&str, &str, &str); 9] = [
    (
        "text",
        "pack",
        "text/ is the first step and depends on no wing",
    ),
    (
        "text",
        "inference",
        "text/ is the first step and depends on no wing",
    ),
    (
        "text",
        "history",
        "text/ is the first step and depends on no wing",
    ),
    (
        "text",
        "machine",
        "text/ is the first step and depends on no wing",
    ),
    (
        "encoder",
        "inference",
        "an encoder is a forward pass, nothing more",
    ),
    (
        "encoder",
        "history",
        "an encoder is a forward pass, nothing more",
    ),
    (
        "history",
        "encoder",
        "the history stores results; it never runs a model",
    ),
    (
        "history",
        "training",
        "the history stores results; it never trains",
    ),
    (
        "inference",
        "history",
        "classifying never reads or writes the history",
    ),
];

fn core_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The wing a file belongs to: its folder under src/, or its own name.
fn wing_of(file: &Path) -> String {
    let relative = file.strip_prefix(core_src()).unwrap();
    let first = relative.components().next().unwrap();
    first
        .as_os_str()
        .to_string_lossy()
        .trim_end_matches(".rs")
        .to_string()
}

/// (line number, wing) for every `crate::WING` path in the file's code: not
/// in comments, and not in its test module (tests may borrow fixtures).
fn imports(file: &Path) -> Vec<(usize, String)> {
    let source = std::fs::read_to_string(file).unwrap();
    let mut found = Vec::new();
    for (index, line) in source.lines().enumerate() {
        let code = line.trim_start();
        if code.starts_with("#[cfg(test)]") {
            break;
        }
        if code.starts_with("//") {
            continue;
        }
        for (at, _) in code.match_indices("crate::") {
            let rest = &code[at + "crate::".len()..];
            let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
                let group = group.split('}').next().unwrap_or("");
                group.split(',').map(str::trim).collect()
            } else {
                vec![rest]
            };
            for name in names {
                let wing: String = name
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if WINGS.contains(&wing.as_str()) {
                    found.push((index + 1, wing));
                }
            }
        }
    }
    found
}

fn all_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    rust_files(&core_src(), &mut files);
    files.sort();
    files
}

#[test]
fn no_wing_imports_one_it_must_not() {
    let mut broken = Vec::new();
    for file in all_files() {
        let from = wing_of(&file);
        for (line, to) in imports(&file) {
            if let Some((_, _, why)) = FORBIDDEN.iter().find(|(a, b, _)| *a == from && *b == to) {
                broken.push(format!(
                    "{}:{line}: {from}/ imports {to}/ ({why})",
                    file.display()
                ));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "ARCHITECTURE.md invariants broken:\n{}",
        broken.join("\n")
    );
}

#[test]
fn training_and_bench_are_leaves_that_no_other_wing_imports() {
    let mut broken = Vec::new();
    for file in all_files() {
        let from = wing_of(&file);
        for (line, to) in imports(&file) {
            let leaf = to == "bench" || (to == "training" && from != "bench");
            if leaf && from != to {
                broken.push(format!("{}:{line}: {from} imports {to}/", file.display()));
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn no_module_imports_a_sibling_through_the_crate_root() {
    let root_reexports = [
        "Classifier",
        "Classification",
        "LabelScore",
        "Embedder",
        "HistoryStore",
        "HistoryEntry",
    ];
    let mut broken = Vec::new();
    for file in all_files().iter().filter(|f| !f.ends_with("lib.rs")) {
        let source = std::fs::read_to_string(file).unwrap();
        for (index, line) in source.lines().enumerate() {
            for name in root_reexports {
                let direct = format!("crate::{name}");
                let grouped = line.contains("crate::{")
                    && line
                        .split("crate::{")
                        .nth(1)
                        .is_some_and(|g| g.split(['}', ',']).any(|n| n.trim() == name));
                let at_word_end = line.split(&direct).nth(1).is_some_and(|after| {
                    !after.starts_with(|c: char| c.is_alphanumeric() || c == '_')
                });
                if grouped || (line.contains(&direct) && at_word_end) {
                    broken.push(format!(
                        "{}:{}: {name} through the crate root",
                        file.display(),
                        index + 1
                    ));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "import from the defining module instead:\n{}",
        broken.join("\n")
    );
}

#[test]
fn every_wing_has_a_module_doc_and_the_code_map_names_every_wing_and_crate() {
    let map = std::fs::read_to_string(repo_root().join("ARCHITECTURE.md")).unwrap();
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let folders: BTreeSet<String> = std::fs::read_dir(core_src())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let wings: BTreeSet<String> = WINGS.iter().map(|w| w.to_string()).collect();
    assert_eq!(
        folders, wings,
        "WINGS here must list every folder of crates/medtext-core/src"
    );
    for wing in WINGS {
        let module = core_src().join(wing).join("mod.rs");
        let doc = std::fs::read_to_string(&module).unwrap();
        assert!(
            doc.starts_with("//!"),
            "{} opens with a module doc",
            module.display()
        );
        assert!(
            map.contains(&format!("`{wing}/`")),
            "ARCHITECTURE.md has a paragraph on `{wing}/`"
        );
    }
    for entry in std::fs::read_dir(repo_root().join("crates")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let path = format!("`crates/{name}/`");
        assert!(map.contains(&path), "ARCHITECTURE.md names {path}");
        assert!(
            readme.contains(&path),
            "README's What is where names {path}"
        );
    }
    assert!(
        map.matches("Architecture invariant").count() >= 6,
        "invariants are stated"
    );
}

#[test]
fn the_import_reader_sees_single_and_grouped_paths() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x.rs");
    std::fs::write(
        &file,
        "use crate::history::store::X;\nuse crate::{error, inference::worker, text};\n// crate::bench\n#[cfg(test)]\nuse crate::training;\n",
    )
    .unwrap();
    let seen: Vec<String> = imports(&file).into_iter().map(|(_, w)| w).collect();
    assert_eq!(seen, ["history", "inference", "text"]);
}
