#!/usr/bin/env bash
# Builds the release of the commit checked out (HEAD) into dist/:
#
#   dist/medtext_<version>_amd64.deb   the app, the `medtext` CLI, man pages,
#                                      completions, the bundled packs and encoder
#   dist/THIRD-PARTY-NOTICES           licences of everything the build links
#   dist/sbom/*.cdx.json               CycloneDX: the Rust crates and npm packages
#   dist/SHA256SUMS, SHA256SUMS.asc    checksums and IT's detached OpenPGP signature
#
# Usage: scripts/release.sh --key KEY [--profile release|release-ci]
#   --key KEY        the OpenPGP key (fingerprint or user id in $GNUPGHOME) that
#                    signs SHA256SUMS; IT's release key, never one in this repository
#   --profile P      the Cargo profile (default `release`: thin LTO, one codegen
#                    unit). CI uses `release-ci` (no LTO) to stay inside its time;
#                    published builds use `release`.
#
# The build never sees this working tree: it runs in a fresh export of the
# commit (`git archive HEAD`) at a fixed path, with paths remapped, the dates
# taken from the commit (SOURCE_DATE_EPOCH) and the locked dependencies, so two
# builds of one commit give the same .deb (docs/admin-guide.md, "Reproducible
# builds"). Uncommitted changes are not in a release.
#
# Environment: MEDTEXT_RELEASE_ROOT (default /var/tmp/medtext-release) holds the
# export and its Cargo target folder; SOURCE_DATE_EPOCH overrides the commit's date.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO="$PWD"

KEY=""
PROFILE="release"
while (($#)); do
  case "$1" in
    --key) KEY="${2:?--key needs a key id}"; shift 2 ;;
    --profile) PROFILE="${2:?--profile needs a name}"; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
if [[ -z "$KEY" ]]; then
  echo "error: no signing key: pass --key with IT's OpenPGP release key (see docs/admin-guide.md)" >&2
  exit 2
fi
case "$PROFILE" in
  release | release-ci) ;;
  *) echo "error: --profile must be release or release-ci, not '$PROFILE'" >&2; exit 2 ;;
esac
# Fail before a half-hour build, not after it.
if ! gpg --batch --list-secret-keys "$KEY" >/dev/null 2>&1; then
  echo "error: no secret key '$KEY' in ${GNUPGHOME:-~/.gnupg}: import IT's release key first" >&2
  exit 1
fi

step() { echo; echo "==> $*"; }
export CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}"
export PATH="$CARGO_HOME/bin:$PATH"

COMMIT="$(git rev-parse --short=12 HEAD)"
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct HEAD)}"
export MEDTEXT_GIT_COMMIT="$COMMIT"
if [[ -n "$(git status --porcelain --untracked-files=no)" ]]; then
  echo "warning: the working tree has uncommitted changes; the release is of commit $COMMIT without them" >&2
fi

ROOT="${MEDTEXT_RELEASE_ROOT:-/var/tmp/medtext-release}"
SRC="$ROOT/src"
export CARGO_TARGET_DIR="$ROOT/target"

step "export commit $COMMIT to $SRC"
rm -rf "$SRC"
mkdir -p "$SRC" "$CARGO_TARGET_DIR"
git archive --format=tar HEAD | tar -x -C "$SRC"
# The encoder weights are fetched, never committed: reuse this checkout's
# verified copy if it has one, else fetch.
if [[ -d models/encoders ]]; then
  cp -a models/encoders "$SRC/models/"
fi
"$SRC/models/fetch-encoder.sh"

step "UI packages and build"
npm --prefix "$SRC/ui" ci --no-audit --no-fund --loglevel=error
npm --prefix "$SRC/ui" run build

step "cargo build --profile $PROFILE (the app and the CLI)"
# Remapped paths keep the build folder, the registry and the target folder
# out of the binaries (panic locations, file!()); with one fixed export path
# the flags are the same on every build, so Cargo's cache stays valid.
export RUSTFLAGS="--remap-path-prefix=$SRC=/usr/src/medtext --remap-path-prefix=$CARGO_HOME=/usr/src/cargo --remap-path-prefix=$CARGO_TARGET_DIR=/usr/src/target"
(cd "$SRC" && cargo build --locked --profile "$PROFILE" \
  --features tauri/custom-protocol -p medtext-app -p medtext-cli)
BIN="$CARGO_TARGET_DIR/$PROFILE"
