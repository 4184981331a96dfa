#!/usr/bin/env bash
# The release path end to end, as CI runs it (scripts/test.sh): a throwaway
# signing key stands in for IT's; scripts/release.sh builds dist/;
# scripts/verify-release.sh accepts it and refuses a tampered file, an
# unlisted file and a wrong key; a second release of the same commit must
# give the same bytes; scripts/install-test.sh proves the .deb on a clean
# Debian root (install, offline use, upgrade, remove, purge).
#
# Usage: scripts/test-release.sh [--profile release|release-ci]
# (default release-ci: CI's faster build of the same code; see release.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PROFILE="release-ci"
[[ "${1:-}" == "--profile" ]] && PROFILE="${2:?--profile needs a name}"

step() { echo; echo "==> $*"; }
fail() { echo "RELEASE TEST FAILED: $*" >&2; exit 1; }

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
# A key made for this run only; a release key is never in the repository.
export GNUPGHOME="$WORK/gnupg"
mkdir -m 700 "$GNUPGHOME"
gpg --batch --quiet --passphrase '' --quick-gen-key "MedText CI test key <ci@medtext.invalid>" ed25519 sign 1d
gpg --batch --armor --export ci@medtext.invalid >"$WORK/it-release-key.asc"

step "scripts/release.sh --profile $PROFILE"
scripts/release.sh --key ci@medtext.invalid --profile "$PROFILE"
DEB="$(ls dist/medtext_*_amd64.deb)"
FIRST="$(sha256sum "$DEB" | cut -d' ' -f1)"

step "scripts/verify-release.sh accepts the release"
scripts/verify-release.sh dist "$WORK/it-release-key.asc"

expect_refused() {
  local what="$1" dist="$2" key="$3"
  if scripts/verify-release.sh "$dist" "$key" >"$WORK/refused.log" 2>&1; then
    cat "$WORK/refused.log"
    fail "verify-release.sh accepted $what"
  fi
  grep -q "VERIFICATION FAILED" "$WORK/refused.log" || fail "no clear failure for $what"
  echo "refused, as it should be: $what ($(grep "VERIFICATION FAILED" "$WORK/refused.log"))"
}
step "scripts/verify-release.sh refuses tampering and a wrong key"
cp -r dist "$WORK/tampered"
printf 'x' >>"$WORK/tampered/$(basename "$DEB")"
expect_refused "a changed .deb" "$WORK/tampered" "$WORK/it-release-key.asc"
rm -rf "$WORK/tampered"; cp -r dist "$WORK/tampered"
# One hex digit of the first checksum changed.
first="$(head -c1 "$WORK/tampered/SHA256SUMS")"
sed -i "1s/^./$([[ "$first" == 0 ]] && echo 1 || echo 0)/" "$WORK/tampered/SHA256SUMS"
expect_refused "a changed SHA256SUMS" "$WORK/tampered" "$WORK/it-release-key.asc"
rm -rf "$WORK/tampered"; cp -r dist "$WORK/tampered"
cp "$DEB" "$WORK/tampered/medtext_9.9.9_amd64.deb"
expect_refused "an unlisted extra .deb" "$WORK/tampered" "$WORK/it-release-key.asc"
GNUPGHOME="$WORK/gnupg" gpg --batch --quiet --passphrase '' --quick-gen-key "Someone else <x@medtext.invalid>" ed25519 sign 1d
gpg --batch --armor --export x@medtext.invalid >"$WORK/wrong-key.asc"
expect_refused "a signature checked against the wrong key" dist "$WORK/wrong-key.asc"

step "a second release of the same commit gives the same .deb"
cp -r dist "$WORK/first-dist"
scripts/release.sh --key ci@medtext.invalid --profile "$PROFILE" >"$WORK/second.log" 2>&1 ||
  { cat "$WORK/second.log"; fail "the second release.sh failed"; }
SECOND="$(sha256sum "$DEB" | cut -d' ' -f1)"
# Everything but the signature (OpenPGP signatures carry their time) must
# be the same bytes. On a difference the files inside that differ are
# listed, and both unpacked packages are kept for a closer look.
if [[ "$FIRST" == "$SECOND" ]] && diff -r -x SHA256SUMS.asc "$WORK/first-dist" dist; then
  echo "same .deb twice: $FIRST"
else
  KEEP="${MEDTEXT_RELEASE_ROOT:-/var/tmp/medtext-release}/differ"
  rm -rf "$KEEP"; mkdir -p "$KEEP/first" "$KEEP/second"
  dpkg-deb -R "$WORK/first-dist/$(basename "$DEB")" "$KEEP/first"
  dpkg-deb -R "$DEB" "$KEEP/second"
  diff -rq "$KEEP/first" "$KEEP/second" || true
  fail "two releases of one commit differ ($FIRST vs $SECOND); both unpacked in $KEEP"
fi

step "scripts/install-test.sh on a clean Debian root"
SUDO=""; [[ $EUID -ne 0 ]] && SUDO="sudo"
$SUDO scripts/install-test.sh "$DEB"
