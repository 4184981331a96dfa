//! Stamps the build with its commit and date for `medtext --version` and the
//! app's About box, so IT can tell exactly which build a workstation runs.
//!
//! The date is the commit's (or `SOURCE_DATE_EPOCH`'s), never the clock's:
//! two builds of one commit stay byte for byte the same. A build from a
//! source archive without `.git` (the release build exports the tree with
//! `git archive`) says "unknown" unless `MEDTEXT_GIT_COMMIT` and
//! `SOURCE_DATE_EPOCH` are given.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    println!("cargo:rerun-if-env-changed=MEDTEXT_GIT_COMMIT");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    // A new commit or checkout changes HEAD or the branch it points at.
    // `--git-path` finds each where it is: in a linked worktree HEAD is the
    // worktree's own, the branches are the main repository's. (Only files
    // that exist: cargo runs this again every build for one that does not.)
    let mut refs = vec!["HEAD".to_string(), "packed-refs".to_string()];
    refs.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for name in refs {
        let Some(file) = git(&["rev-parse", "--path-format=absolute", "--git-path", &name]) else {
            continue;
        };
        if std::path::Path::new(&file).exists() {
            println!("cargo:rerun-if-changed={file}");
        }
    }
    let commit = std::env::var("MEDTEXT_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    let date = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .or_else(|| git(&["log", "-1", "--format=%ct"]))
        .and_then(|s| s.trim().parse::<i64>().ok())
        .and_then(|secs| time::OffsetDateTime::from_unix_timestamp(secs).ok())
        .map_or_else(|| "unknown".into(), |t| t.date().to_string());
    println!("cargo:rustc-env=MEDTEXT_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=MEDTEXT_BUILD_DATE={date}");
}
