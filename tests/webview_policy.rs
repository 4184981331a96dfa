//! The webview's lock-down, checked in the files that set it: a strict
//! Content-Security-Policy (nothing remote, no eval, the network only as
//! Tauri's IPC), no asset protocol, no devtools feature, and a capability
//! that grants the main window exactly the app's own commands.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn config() -> Value {
    serde_json::from_str(&read("tauri.conf.json")).unwrap()
}

#[test]
fn the_content_security_policy_allows_nothing_remote() {
    let config = config();
    let csp = config["app"]["security"]["csp"]
        .as_object()
        .expect("a CSP is set");
    assert_eq!(csp["default-src"], "'self'");
    assert_eq!(csp["script-src"], "'self'");
    assert_eq!(csp["object-src"], "'none'");
    assert_eq!(csp["connect-src"], "ipc: http://ipc.localhost");
    for (directive, value) in csp {
        let value = value.as_str().unwrap();
        assert!(
            !value.contains("unsafe-eval") && !value.contains("unsafe-inline"),
            "{directive}: {value}"
        );
        for source in value.split_whitespace() {
            let remote = source.starts_with("http") || source.starts_with("ws") || source == "*";
            assert!(
                !remote || source == "http://ipc.localhost",
                "{directive} allows {source}"
            );
        }
    }
    assert_eq!(config["app"]["security"]["freezePrototype"], true);
    assert!(
        config["app"]["security"]["assetProtocol"]["enable"] != true,
        "the asset protocol is off"
    );
    assert_eq!(config["app"]["withGlobalTauri"], false);
}

#[test]
fn no_devtools_feature_is_built_in() {
    let manifest = read("Cargo.toml");
    let tauri_line = manifest
        .lines()
        .find(|l| l.trim_start().starts_with("tauri ="))
        .expect("tauri is a dependency");
    assert!(!tauri_line.contains("devtools"), "{tauri_line}");
}

#[test]
fn the_main_window_may_call_exactly_the_app_s_own_commands() {
    let capability: Value =
        serde_json::from_str(&read("src-tauri/capabilities/main.json")).unwrap();
    assert_eq!(capability["windows"], serde_json::json!(["main"]));
    let granted: BTreeSet<String> = capability["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    // The commands the shell registers: the paths listed in lib.rs's
    // `generate_handler![module::name, ...]`.
    let lib = read("src-tauri/src/lib.rs");
    let handler = lib
        .split("generate_handler![")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .expect("lib.rs registers its commands with generate_handler!");
    let registered: BTreeSet<String> = handler
        .split(',')
        .map(str::trim)
        .filter(|path| !path.is_empty())
        .map(|path| {
            let name = path.rsplit("::").next().unwrap_or(path);
            format!("allow-{}", name.replace('_', "-"))
        })
        .collect();
    assert!(registered.len() >= 5, "{registered:?}");
    assert_eq!(
        granted, registered,
        "capability grants differ from the commands"
    );
}
