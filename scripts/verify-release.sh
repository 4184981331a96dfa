#!/usr/bin/env bash
# What IT runs before deploying a release: checks that SHA256SUMS carries a
# good signature by IT's release key, that every file it lists has its
# checksum, and that the folder holds nothing it does not list.
#
# Usage: scripts/verify-release.sh DIST KEY
#   DIST  the release folder (dist/ from scripts/release.sh, as copied to IT)
#   KEY   IT's OpenPGP public key, as a file (armored or binary); nothing
#         from any keyring of this machine is trusted
#
# Exits 0 and prints "release verified" only when all of that holds. Needs
# gpgv (Debian's gpgv package), gpg (to read an armored key) and sha256sum.
set -euo pipefail

fail() { echo "VERIFICATION FAILED: $*" >&2; exit 1; }

[[ $# -eq 2 ]] || { echo "usage: $0 DIST KEY (see the comment at its top)" >&2; exit 2; }
DIST="$1"
KEY="$2"
[[ -d "$DIST" ]] || fail "$DIST is not a folder"
[[ -f "$KEY" ]] || fail "no public key file $KEY"
[[ -f "$DIST/SHA256SUMS" ]] || fail "$DIST/SHA256SUMS is missing"
[[ -f "$DIST/SHA256SUMS.asc" ]] || fail "$DIST/SHA256SUMS.asc (the signature) is missing"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
# gpgv trusts exactly the keys in the keyring it is given: make one that
# holds only IT's key.
export GNUPGHOME="$WORK/gnupg"
mkdir -m 700 "$GNUPGHOME"
gpg --batch --quiet --import "$KEY" 2>"$WORK/import.log" ||
  fail "$KEY is not an OpenPGP public key: $(cat "$WORK/import.log")"
gpg --batch --export >"$WORK/trusted.gpg"
[[ -s "$WORK/trusted.gpg" ]] || fail "$KEY holds no public key"

echo "==> signature of SHA256SUMS"
if ! gpgv --keyring "$WORK/trusted.gpg" --status-fd 3 "$DIST/SHA256SUMS.asc" "$DIST/SHA256SUMS" \
  3>"$WORK/status" 2>"$WORK/gpgv.log"; then
  cat "$WORK/gpgv.log" >&2
  fail "SHA256SUMS is not signed by the key in $KEY (a wrong key, or SHA256SUMS was changed)"
fi
grep -q '^\[GNUPG:\] VALIDSIG ' "$WORK/status" || fail "gpgv reported no valid signature"
grep '^\[GNUPG:\] VALIDSIG ' "$WORK/status" | awk '{ print "    good signature by key " $3 }'

echo "==> checksums"
# Paths must be plain names inside DIST: a listed "../x" or "/x" would check
# a file outside the release.
if grep -Ev '^[0-9a-f]{64}  [A-Za-z0-9._+-][A-Za-z0-9._+/-]*$' "$DIST/SHA256SUMS" | grep -q . ||
  grep -Eq '(^|/)\.\.(/|$)' <(cut -c67- "$DIST/SHA256SUMS"); then
  fail "SHA256SUMS has a line that is not '<sha256>  <file in the release>'"
fi
(cd "$DIST" && sha256sum --check --strict --quiet SHA256SUMS) ||
  fail "a file does not match its checksum (above): it was changed or damaged"

echo "==> nothing unlisted"
(cd "$DIST" && find . -type f ! -name SHA256SUMS ! -name SHA256SUMS.asc -printf '%P\n' | LC_ALL=C sort) >"$WORK/present"
cut -c67- "$DIST/SHA256SUMS" | LC_ALL=C sort >"$WORK/listed"
unlisted="$(comm -23 "$WORK/present" "$WORK/listed")"
[[ -z "$unlisted" ]] || fail "files in $DIST that SHA256SUMS does not list: $unlisted"
grep -q '\.deb$' "$WORK/listed" || fail "SHA256SUMS lists no .deb"

echo "release verified: $(wc -l <"$WORK/listed") files, signed by the key in $KEY"
