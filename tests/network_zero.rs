//! Network-zero, checkable in the dependency tree: no HTTP client, web
//! socket, updater, telemetry or crash reporter is built into the app or the
//! CLI, on any desktop platform MedText ships for. A crate that appears here
//! is a reason to stop and look, not to add to an allow-list.

use std::collections::BTreeSet;
use std::process::Command;

/// The crates that talk to networks: `[bans] deny` of `deny.toml`, the list
/// `cargo deny check bans` enforces too (one list, two checks: cargo-deny
/// over the whole graph, this test over what the app and the CLI build).
fn banned_crates() -> BTreeSet<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deny.toml");
    let text = std::fs::read_to_string(path).expect("deny.toml reads");
    let deny: toml::Table = toml::from_str(&text).expect("deny.toml parses");
    let list = deny["bans"]["deny"]
        .as_array()
        .expect("[bans] deny is a list");
    list.iter()
        .map(|entry| {
            entry["crate"]
                .as_str()
                .expect("each entry names a crate")
                .to_string()
        })
        .collect()
}

const DESKTOP_TARGETS: &[&str] = &[
    "x86_64-unknown-linux-gnu",
    "aarch64-unknown-linux-gnu",
    "x86_64-pc-windows-msvc",
    "x86_64-apple-darwin",
    "aarch64-apple-darwin",
];

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
    let banned = banned_crates();
    for target in DESKTOP_TARGETS {
        let packages = shipped_packages(target);
        assert!(
            packages.contains("tauri") && packages.contains("rusqlite"),
            "{target}: the walk found the real tree"
        );
        let found: Vec<&String> = packages.intersection(&banned).collect();
        assert!(
            found.is_empty(),
            "{target}: network crates in the build: {found:?}"
        );
    }
}

#[test]
fn the_ban_list_is_read_from_deny_toml() {
    let banned = banned_crates();
    for name in [
        "reqwest",
        "hyper",
        "sentry-core",
        "hickory-resolver",
        "tauri-plugin-updater",
    ] {
        assert!(banned.contains(name), "{name} is banned");
    }
    for name in ["tauri", "openssl-sys", "rusqlite"] {
        assert!(!banned.contains(name), "{name} is what MedText is built on");
    }
}
