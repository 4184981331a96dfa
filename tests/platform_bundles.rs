//! The Windows and macOS bundle configurations (`tauri.windows.conf.json`,
//! `tauri.macos.conf.json`), which cannot be built on this Linux CI, checked
//! against the configuration schema of the Tauri CLI that would build them
//! (`ui/node_modules/@tauri-apps/cli/config.schema.json`, from `npm ci`):
//! each is merged over `tauri.conf.json` as the CLI merges it, and every key
//! must exist where it is written and every value have a type the schema
//! allows. The files they name (signing script, entitlements, models) must
//! be in the repository.
//!
//! The schema checker below knows the JSON Schema keywords that schema uses
//! (`$ref`, `allOf`, `anyOf`, `oneOf`, `type`, `enum`, `const`,
//! `properties`, `additionalProperties`, `required`, `items`); the last test
//! shows it refuses a misspelt key and a wrong value.

use std::path::Path;

use serde_json::{json, Map, Value};

fn read_json(relative: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the Tauri CLI's schema comes with `npm --prefix ui ci`)",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn schema() -> Value {
    read_json("ui/node_modules/@tauri-apps/cli/config.schema.json")
}

/// `patch` applied to `base` as a JSON Merge Patch (RFC 7396), the way the
/// Tauri CLI lays a platform file over `tauri.conf.json`.
fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(base), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    base.remove(key);
                } else {
                    merge(base.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        (base, patch) => *base = patch.clone(),
    }
}

/// `schema` with every `$ref` into `#/definitions/` followed.
fn resolve<'a>(mut schema: &'a Value, root: &'a Value) -> &'a Value {
    while let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let name = reference
            .strip_prefix("#/definitions/")
            .unwrap_or_else(|| panic!("unexpected $ref {reference}"));
        schema = &root["definitions"][name];
    }
    schema
}

fn has_type(value: &Value, name: &str) -> bool {
    match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => value.is_i64() || value.is_u64(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        other => panic!("unexpected schema type {other}"),
    }
}

/// What is wrong with `value` at `path` against `schema` (empty: it fits).
fn problems(value: &Value, schema: &Value, root: &Value, path: &str) -> Vec<String> {
    let schema = resolve(schema, root);
    let mut found = Vec::new();
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for part in all {
            found.extend(problems(value, part, root, path));
        }
    }
    for (keyword, exactly_one) in [("anyOf", false), ("oneOf", true)] {
        if let Some(options) = schema.get(keyword).and_then(Value::as_array) {
            let outcomes: Vec<Vec<String>> = options
                .iter()
                .map(|option| problems(value, option, root, path))
                .collect();
            let fitting = outcomes.iter().filter(|p| p.is_empty()).count();
            if fitting == 0 || (exactly_one && fitting > 1) {
                found.push(format!(
                    "{path}: {fitting} of the {keyword} options fit ({})",
                    outcomes.concat().join("; ")
                ));
            }
        }
    }
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(one)) => vec![one.as_str()],
        Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !types.is_empty() && !types.iter().any(|t| has_type(value, t)) {
        found.push(format!("{path}: {value} is not {}", types.join(" or ")));
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            found.push(format!("{path}: {value} is not one of {allowed:?}"));
        }
    }
    if let Some(constant) = schema.get("const") {
        if constant != value {
            found.push(format!("{path}: {value} is not {constant}"));
        }
    }
    if let Value::Object(map) = value {
        found.extend(object_problems(map, schema, root, path));
    }
    if let (Value::Array(items), Some(item_schema)) = (value, schema.get("items")) {
        for (i, item) in items.iter().enumerate() {
            found.extend(problems(item, item_schema, root, &format!("{path}[{i}]")));
        }
    }
    found
}

fn object_problems(
    map: &Map<String, Value>,
    schema: &Value,
    root: &Value,
    path: &str,
) -> Vec<String> {
    let mut found = Vec::new();
    let properties = schema.get("properties").and_then(Value::as_object);
    for (key, value) in map {
        let at = format!("{path}.{key}");
        match (
            properties.and_then(|p| p.get(key)),
            schema.get("additionalProperties"),
        ) {
            (Some(property), _) => found.extend(problems(value, property, root, &at)),
            (None, Some(Value::Bool(false))) => {
                found.push(format!("{at}: no such key in the schema"))
            }
            (None, Some(other @ Value::Object(_))) => {
                found.extend(problems(value, other, root, &at))
            }
            (None, _) => {}
        }
    }
    for required in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !map.contains_key(required) {
            found.push(format!("{path}: the required key {required} is missing"));
        }
    }
    found
}

/// `tauri.conf.json` with `platform_file` laid over it.
fn merged(platform_file: &str) -> Value {
    let mut config = read_json("tauri.conf.json");
    merge(&mut config, &read_json(platform_file));
    config
}

#[test]
fn the_windows_and_macos_configurations_fit_the_tauri_cli_schema() {
    let schema = schema();
    for file in ["tauri.windows.conf.json", "tauri.macos.conf.json"] {
        let found = problems(&merged(file), &schema, &schema, "$");
        assert!(found.is_empty(), "{file}:\n{}", found.join("\n"));
    }
}

#[test]
fn windows_builds_an_offline_msi_a_per_machine_nsis_installer_and_signs_them() {
    let windows = &read_json("tauri.windows.conf.json")["bundle"]["windows"];
    assert_eq!(windows["webviewInstallMode"]["type"], "offlineInstaller");
    assert_eq!(windows["nsis"]["installMode"], "perMachine");
    let args = windows["signCommand"]["args"].as_array().unwrap();
    assert!(args.contains(&json!("%1")), "{args:?}");
    let script = args
        .iter()
        .filter_map(Value::as_str)
        .find(|a| a.ends_with(".ps1"))
        .expect("the signing script");
    assert!(Path::new(env!("CARGO_MANIFEST_DIR")).join(script).is_file());
}

#[test]
fn macos_signs_with_the_hardened_runtime_and_the_committed_entitlements() {
    let mac = &read_json("tauri.macos.conf.json")["bundle"]["macOS"];
    assert_eq!(mac["hardenedRuntime"], true);
    assert!(mac["signingIdentity"]
        .as_str()
        .unwrap()
        .starts_with("Developer ID Application"));
    let entitlements = mac["entitlements"].as_str().unwrap();
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(entitlements)).unwrap();
    // No hardened-runtime exception and no network entitlement (SECURITY.md, threat 1).
    assert!(text.contains("<dict/>"), "{text}");
}

#[test]
fn both_bundle_the_same_models_and_the_command_line_tool() {
    let windows = &read_json("tauri.windows.conf.json")["bundle"];
    let mac = &read_json("tauri.macos.conf.json")["bundle"];
    assert_eq!(windows["resources"], mac["resources"]);
    assert_eq!(windows["externalBin"], json!(["binaries/medtext"]));
    assert_eq!(mac["externalBin"], windows["externalBin"]);
    for source in windows["resources"].as_object().unwrap().keys() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(source);
        assert!(
            path.join("manifest.json").is_file() || path.join("config.json").is_file(),
            "{source} is not a pack or an encoder (the encoder comes from models/fetch-encoder.sh)"
        );
    }
}

#[test]
fn the_schema_check_refuses_a_misspelt_key_and_a_wrong_value() {
    let schema = schema();
    let mut config = merged("tauri.windows.conf.json");
    config["bundle"]["windows"]["webviewInstalMode"] = json!({"type": "offlineInstaller"});
    let found = problems(&config, &schema, &schema, "$").join("\n");
    assert!(found.contains("webviewInstalMode: no such key"), "{found}");

    let mut config = merged("tauri.windows.conf.json");
    config["bundle"]["windows"]["nsis"]["installMode"] = json!("everyone");
    assert!(!problems(&config, &schema, &schema, "$").is_empty());

    let mut config = merged("tauri.macos.conf.json");
    config["bundle"]["macOS"]["hardenedRuntime"] = json!("yes");
    assert!(!problems(&config, &schema, &schema, "$").is_empty());
}
