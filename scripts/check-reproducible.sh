#!/usr/bin/env bash
# Builds the release of HEAD twice, the second time from an empty Cargo
# target folder, and compares the two .deb files byte for byte (`make
# reproducible`). On a difference it names the files inside the packages
# that differ. CI checks only that packaging the same build twice gives the
# same .deb (scripts/test-release.sh); this is the long version.
#
# Usage: scripts/check-reproducible.sh --key KEY [--profile release|release-ci]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="${MEDTEXT_RELEASE_ROOT:-/var/tmp/medtext-release}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

scripts/release.sh "$@"
cp dist/medtext_*_amd64.deb "$WORK/first.deb"
# The first build's cache is put back afterwards, whatever happens.
rm -rf "$ROOT/target.first"
mv "$ROOT/target" "$ROOT/target.first"
restore() { rm -rf "$ROOT/target"; mv "$ROOT/target.first" "$ROOT/target"; rm -rf "$WORK"; }
trap restore EXIT
scripts/release.sh "$@"
cp dist/medtext_*_amd64.deb "$WORK/second.deb"

first="$(sha256sum "$WORK/first.deb" | cut -d' ' -f1)"
second="$(sha256sum "$WORK/second.deb" | cut -d' ' -f1)"
if [[ "$first" == "$second" ]]; then
  echo "reproducible: both builds give $first"
  exit 0
fi
echo "NOT reproducible: $first vs $second; files that differ:"
# Both unpacked trees are kept beside the release build for a closer look.
KEEP="$ROOT/differ"
rm -rf "$KEEP"; mkdir -p "$KEEP/first" "$KEEP/second"
dpkg-deb -R "$WORK/first.deb" "$KEEP/first"
dpkg-deb -R "$WORK/second.deb" "$KEEP/second"
diff -rq "$KEEP/first" "$KEEP/second" || true
echo "(both unpacked in $KEEP)"
exit 1
