#!/usr/bin/env bash
# Runs the end-to-end tests of the real app (tests/e2e/) under Xvfb. Where the
# machine allows it they run inside a new network namespace that has nothing
# but loopback, so every test proves the app works with no network at all.
# Needs the session bus and keyring that scripts/test.sh sets up.
#
# --screenshots: also save the screenshots docs/user-guide.md shows into
# docs/screenshots/ (the tests take them at fixed moments, with made-up notes).
# Run it after changing a screen and commit the pictures; tests/user_guide.rs
# checks that the guide shows exactly the ones the tests take.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ "${1:-}" == "--screenshots" ]]; then
  shift
  export MEDTEXT_E2E_SCREENSHOTS="$PWD/docs/screenshots"
  mkdir -p "$MEDTEXT_E2E_SCREENSHOTS"
fi

run() {
  xvfb-run --auto-servernum --server-args="-screen 0 1280x900x24" \
    node --test --test-concurrency=1 tests/e2e/
}

if [[ "${1:-}" == "--offline" ]]; then
  ip link set lo up
  export MEDTEXT_E2E_OFFLINE=1
  run
elif unshare -n true 2>/dev/null; then
  exec unshare -n -- "$0" --offline
else
  echo "SKIPPED: no network namespace here (unshare -n refused); the end-to-end tests run with the network"
  run
fi
