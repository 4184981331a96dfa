#!/usr/bin/env bash
# Installs what MedText needs to build, run and test on Debian: system packages,
# the UI's npm packages, the default encoder, and (with --test) tauri-driver.
# Safe to run again: every step skips what is already there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# --release: also what scripts/release.sh needs; --test: that and what the
# tests need.
WANT_TEST=0 WANT_RELEASE=0
case "${1:-}" in
  --test) WANT_TEST=1 WANT_RELEASE=1 ;;
  --release) WANT_RELEASE=1 ;;
esac

# libpam0g-dev: the idle lock can unlock with the OS account's password (PAM).
PKGS=(build-essential pkg-config curl file unzip python3 libssl-dev libdbus-1-dev
  libwebkit2gtk-4.1-dev libxdo-dev libayatana-appindicator3-dev librsvg2-dev libpam0g-dev)
# A machine that has its own Node.js or pip (not Debian's) keeps them.
command -v npm >/dev/null || PKGS+=(nodejs npm)
command -v pip3 >/dev/null || python3 -m pip --version >/dev/null 2>&1 || PKGS+=(python3-pip)
if (( WANT_TEST )); then
  # libglib2.0-bin: gdbus, with which the end-to-end test removes a keychain entry.
  # strace: the test that no socket is opened beyond loopback and Unix sockets.
  # iproute2: loopback inside the network namespace the end-to-end tests run in.
  # chromium: the UI's page tests (playwright-core drives Debian's browser; nothing is downloaded).
  PKGS+=(xvfb xauth webkit2gtk-driver dbus dbus-x11 gnome-keyring libglib2.0-bin strace iproute2 chromium)
  # scripts/install-test.sh: the clean Debian root.
  PKGS+=(mmdebstrap)
fi
if (( WANT_RELEASE )); then
  # scripts/release.sh and verify-release.sh: Debian's packaging tools,
  # OpenPGP, and the AppStream and desktop-entry validators.
  PKGS+=(dpkg-dev gnupg gpgv appstream desktop-file-utils)
fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if (( ${#missing[@]} )); then
  echo "==> installing Debian packages: ${missing[*]}"
  SUDO=""; [[ $EUID -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [[ ! -d ui/node_modules ]] || [[ ui/package-lock.json -nt ui/node_modules/.package-lock.json ]]; then
  echo "==> installing UI packages (npm ci)"
  npm --prefix ui ci --no-audit --no-fund --loglevel=error
fi

echo "==> default encoder"
models/fetch-encoder.sh

# Cargo tools the tests and the release use, at pinned versions.
install_tool() {
  local name="$1" version="$2"; shift 2
  if ! cargo install --list | grep -qx "$name v$version:"; then
    echo "==> installing $name $version"
    cargo install --locked "$name" --version "$version" "$@"
  fi
}
if (( WANT_TEST )); then
  install_tool tauri-driver 2.1.0
  install_tool cargo-deny 0.20.2
fi
if (( WANT_RELEASE )); then
  install_tool cargo-about 0.9.3 --features cli
  install_tool cargo-cyclonedx 0.5.9
fi
