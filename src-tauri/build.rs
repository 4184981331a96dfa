fn main() {
    // Capabilities live under src-tauri/ while tauri.conf.json sits at the
    // repository root beside the manifest (see the root Cargo.toml).
    let attributes =
        tauri_build::Attributes::new().capabilities_path_pattern("src-tauri/capabilities/**/*");
    if let Err(error) = tauri_build::try_build(attributes) {
        panic!("tauri-build failed: {error:#}");
    }
}
