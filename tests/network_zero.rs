//! Network-zero, checkable in the dependency tree: no HTTP client, web
//! socket, updater, telemetry or crash reporter is built into the app or the
//! CLI, on any desktop platform MedText ships for. A crate that appears here
//! is a reason to stop and look, not to add to an allow-list.

use std::collections::BTreeSet;
use std::process::Command;

/// Crates (or name prefixes, ending in '*') that talk to networks.
const BANNED: &[&str] = &[
    "reqwest",
    "hyper",
    "h2",
    "h3",
    "ureq",
    "isahc",
    "surf",
    "curl",
    "curl-sys",
    "attohttpc",
    "minreq",
    "hf-hub",
    "tungstenite",
    "tokio-tungstenite",
    "async-tungstenite",
    "rustls",
    "native-tls",
    "openssl",
    "socket2",
    "mio",
    "trust-dns*",
    "hickory*",
    "sentry*",
    "opentelemetry*",
    "tracing-opentelemetry",
    "self_update",
    "self-replace",
    "tauri-plugin-updater",
    "tauri-plugin-http",
    "tauri-plugin-websocket",
    "tauri-plugin-upload",
    "minidumper",
    "crash-handler",
    "breakpad*",
];

const DESKTOP_TARGETS: &[&str] = &[
    "x86_64-unknown-linux-gnu",
    "aarch64-unknown-linux-gnu",
    "x86_64-pc-windows-msvc",
    "x86_64-apple-darwin",
    "aarch64-apple-darwin",
];

fn banned(name: &str) -> bool {
    BANNED.iter().any(|b| match b.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == *b,
    })
}

/// Names of every package the app and the CLI are built from on `target`:
/// normal dependencies with the features a build of them turns on (`cargo
/// tree`; `cargo metadata` would unify in what tests and build scripts use).
fn shipped_packages(target: &str) -> BTreeSet<String> {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--locked",
            "--target",
            target,
            "--edges",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
            "-p",
            "medtext-app",
            "-p",
            "medtext-cli",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn no_network_crate_is_built_into_the_app_or_the_cli_on_any_desktop() {
    for target in DESKTOP_TARGETS {
        let packages = shipped_packages(target);
        assert!(
            packages.contains("tauri") && packages.contains("rusqlite"),
            "{target}: the walk found the real tree"
        );
        let found: Vec<&String> = packages.iter().filter(|p| banned(p)).collect();
        assert!(
            found.is_empty(),
            "{target}: network crates in the build: {found:?}"
        );
    }
}

#[test]
fn the_check_recognises_what_it_bans() {
    assert!(banned("reqwest") && banned("sentry-core") && banned("hickory-resolver"));
    assert!(!banned("tauri") && !banned("openssl-sys") && !banned("hyperlocal-not-a-thing"));
}
