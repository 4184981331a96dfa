//! Stamps the build with its commit and date for `medtext --version`, so IT
//! can tell exactly which build a workstation runs.
//!
//! The date is the commit's (or `SOURCE_DATE_EPOCH`'s), never the clock's:
//! two builds of one commit stay byte for byte the same. A build from a
//! source archive without `.git` says "unknown" unless `MEDTEXT_GIT_COMMIT`
//! and `SOURCE_DATE_EPOCH` are given.

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
    // (Only files that exist: cargo runs this again every build for one
    // that does not.)
    if let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        let mut watched = vec![format!("{git_dir}/HEAD"), format!("{git_dir}/packed-refs")];
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watched.push(format!("{git_dir}/{branch}"));
        }
        for file in watched.iter().filter(|f| std::path::Path::new(f).exists()) {
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
