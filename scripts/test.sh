#!/usr/bin/env bash
# Runs every test: formatting, lints, Rust unit and integration tests, the UI's
# type check and tests, and the end-to-end test of the real app. Installs what
# it needs first. Tests that touch the keychain run against a real Secret
# Service (gnome-keyring in a private D-Bus session with a scratch HOME); the
# end-to-end test drives the real app under Xvfb through tauri-driver.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"

scripts/setup.sh --test
# The keychain tests get a scratch HOME below; keep the toolchain where it is.
export CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}" RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}"
export PATH="$CARGO_HOME/bin:$PATH"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"

step() { echo; echo "==> $*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

# The UI is built before any Rust compile: the app embeds ui/dist at build time.
step "UI type check, tests and build"
npm --prefix ui run typecheck
npm --prefix ui test
npm --prefix ui run build
npm --prefix ui run size
# Every screen and error state in headless Chromium with the IPC mocked,
# checked with axe-core; screenshots land in ui/page-tests/screenshots/.
npm --prefix ui run test:pages

step "cargo deny check licenses bans sources"
cargo deny --locked check licenses bans sources

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

# The app is built with the feature `tauri build` adds (it serves ui/dist
# instead of the dev server); the tests use the same features so they reuse
# this build instead of compiling Tauri a second time.
export APP_FEATURES="tauri/custom-protocol"
step "build the app and the CLI"
cargo build --workspace --features "$APP_FEATURES"

step "Rust tests and the end-to-end test, with a real keychain and display"
SCRATCH="$(mktemp -d)"
# gnome-keyring and the desktop portal may still hold files under the scratch
# HOME for a moment after the bus closes: cleaning up is best effort.
trap 'rm -rf "$SCRATCH" 2>/dev/null || true' EXIT
mkdir -p "$SCRATCH/home"
export MEDTEXT_APP_BIN="$TARGET/debug/medtext-app"
export MEDTEXT_CLI_BIN="$TARGET/debug/medtext"
export TAURI_DRIVER_BIN="$(command -v tauri-driver)"
HOME="$SCRATCH/home" scripts/with-test-keyring.sh bash -c '
  set -euo pipefail
  cargo test --workspace --features "$APP_FEATURES"
  scripts/e2e.sh
'

# The release path: build (CI's faster profile), sign, verify, refuse
# tampering, package twice to the same bytes, install on a clean Debian root.
step "release, verification and install test"
scripts/test-release.sh --profile release-ci
