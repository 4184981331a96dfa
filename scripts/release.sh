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

step() { echo; echo "==> $*"; }
export CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}"
export PATH="$CARGO_HOME/bin:$PATH"
scripts/setup.sh --release
# Fail before a half-hour build, not after it.
if ! gpg --batch --list-secret-keys "$KEY" >/dev/null 2>&1; then
  echo "error: no secret key '$KEY' in ${GNUPGHOME:-~/.gnupg}: import IT's release key first" >&2
  exit 1
fi

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

VERSION="$(python3 -c 'import tomllib; print(tomllib.load(open("Cargo.toml", "rb"))["workspace"]["package"]["version"])')"
CONF_VERSION="$(python3 -c 'import json; print(json.load(open("tauri.conf.json"))["version"])')"
if [[ "$VERSION" != "$CONF_VERSION" ]]; then
  echo "error: Cargo.toml says version $VERSION but tauri.conf.json says $CONF_VERSION: make them agree" >&2
  exit 1
fi
# The software centre shows the newest <release>; it must be this one.
if ! grep -q "<release version=\"$VERSION\"" "$SRC/packaging/linux/org.medtext.desktop.metainfo.xml"; then
  echo "error: packaging/linux/org.medtext.desktop.metainfo.xml has no <release version=\"$VERSION\">: add one" >&2
  exit 1
fi
DIST="$REPO/dist"
DEB="$DIST/medtext_${VERSION}_amd64.deb"
rm -rf "$DIST"
mkdir -p "$DIST/sbom"

step "THIRD-PARTY-NOTICES and the licence check"
# cargo-about fails on a licence that packaging/about.toml does not accept.
(cd "$SRC" && cargo about generate --locked --workspace --fail \
  -c packaging/about.toml packaging/about.hbs -o "$ROOT/crates-notices.txt")
python3 "$SRC/packaging/notices.py" --ui "$SRC/ui" --crates "$ROOT/crates-notices.txt" \
  --header "$SRC/packaging/notices-header.txt" --version "$VERSION" --commit "$COMMIT" \
  >"$DIST/THIRD-PARTY-NOTICES"

step "the Debian package"
STAGE="$ROOT/stage"
rm -rf "$STAGE"
umask 022
install -Dm755 "$BIN/medtext-app" "$STAGE/usr/bin/medtext-app"
install -Dm755 "$BIN/medtext" "$STAGE/usr/bin/medtext"
# Tauri's resource folder for an app in /usr/bin is /usr/lib/<productName>;
# the CLI looks there too (crates/medtext-cli, models_dir).
MODELS="$STAGE/usr/lib/MedText/models"
mkdir -p "$MODELS/encoders"
cp -r "$SRC/models/medical-abstracts" "$SRC/models/icd10cm" "$MODELS/"
cp -r "$SRC/models/encoders/all-minilm-l6-v2" "$MODELS/encoders/"
# Man pages and completions, from the CLI's own definition of its arguments.
MAN="$STAGE/usr/share/man/man1"
mkdir -p "$MAN"
"$BIN/medtext" generate man "$MAN"
gzip -9n "$MAN"/*.1
install -Dm644 <("$BIN/medtext" generate complete bash) "$STAGE/usr/share/bash-completion/completions/medtext"
install -Dm644 <("$BIN/medtext" generate complete zsh) "$STAGE/usr/share/zsh/vendor-completions/_medtext"
install -Dm644 <("$BIN/medtext" generate complete fish) "$STAGE/usr/share/fish/vendor_completions.d/medtext.fish"
install -Dm644 "$SRC/packaging/linux/org.medtext.desktop.desktop" "$STAGE/usr/share/applications/org.medtext.desktop.desktop"
install -Dm644 "$SRC/packaging/linux/org.medtext.desktop.metainfo.xml" "$STAGE/usr/share/metainfo/org.medtext.desktop.metainfo.xml"
for size in 32x32 64x64 128x128; do
  install -Dm644 "$SRC/icons/$size.png" "$STAGE/usr/share/icons/hicolor/$size/apps/medtext.png"
done
install -Dm644 "$SRC/icons/128x128@2x.png" "$STAGE/usr/share/icons/hicolor/256x256/apps/medtext.png"
install -Dm644 "$SRC/icons/icon.png" "$STAGE/usr/share/icons/hicolor/512x512/apps/medtext.png"
install -Dm644 "$SRC/packaging/pam.d/medtext" "$STAGE/etc/pam.d/medtext"
install -Dm644 "$SRC/packaging/policy.toml.example" "$STAGE/etc/medtext/policy.toml.example"
# Recovery-key escrow drop box: anyone may add a file, only root may list or read.
install -d -m1733 "$STAGE/var/lib/medtext/escrow"
DOC="$STAGE/usr/share/doc/medtext"
install -Dm644 "$SRC/packaging/deb/copyright" "$DOC/copyright"
install -Dm644 "$DIST/THIRD-PARTY-NOTICES" "$DOC/THIRD-PARTY-NOTICES"
install -Dm644 "$SRC/LICENSE" "$DOC/LICENSE"

mkdir -p "$STAGE/DEBIAN"
# Every file under /etc is IT's once installed: an upgrade keeps their edits.
(cd "$STAGE" && find etc -type f -printf '/%p\n' | LC_ALL=C sort) >"$STAGE/DEBIAN/conffiles"
# Library dependencies as Debian computes them, from the binaries' links.
SHLIBS="$ROOT/shlibs"
rm -rf "$SHLIBS"
mkdir -p "$SHLIBS/debian"
printf 'Source: medtext\n\nPackage: medtext\nArchitecture: amd64\n' >"$SHLIBS/debian/control"
DEPENDS="$(cd "$SHLIBS" && dpkg-shlibdeps -O -e"$STAGE/usr/bin/medtext-app" -e"$STAGE/usr/bin/medtext" 2>/dev/null |
  sed -n 's/^shlibs:Depends=//p')"
[[ -n "$DEPENDS" ]] || { echo "error: dpkg-shlibdeps found no dependencies" >&2; exit 1; }
INSTALLED_KB="$(du -sk --apparent-size --exclude=DEBIAN "$STAGE" | cut -f1)"
sed -e "s/@VERSION@/$VERSION/" -e "s/@DEPENDS@/$DEPENDS/" -e "s/@INSTALLED_KB@/$INSTALLED_KB/" \
  "$SRC/packaging/deb/control.in" >"$STAGE/DEBIAN/control"
(cd "$STAGE" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z |
  xargs -0 md5sum) >"$STAGE/DEBIAN/md5sums"
chmod 644 "$STAGE/DEBIAN/conffiles" "$STAGE/DEBIAN/control" "$STAGE/DEBIAN/md5sums"
# Same dates for every file, and one compressor thread (xz's output depends
# on its thread count): the same commit gives the same .deb.
find "$STAGE" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
dpkg-deb --root-owner-group -Zxz --threads-max=1 --build "$STAGE" "$DEB"
appstreamcli validate --no-net "$STAGE/usr/share/metainfo/org.medtext.desktop.metainfo.xml"
desktop-file-validate "$STAGE/usr/share/applications/org.medtext.desktop.desktop"

step "SBOM (CycloneDX)"
(cd "$SRC" && cargo cyclonedx --format json --spec-version 1.5 --target x86_64-unknown-linux-gnu \
  --override-filename medtext.cdx)
cp "$SRC/medtext.cdx.json" "$DIST/sbom/medtext-app.crates.cdx.json"
cp "$SRC/crates/medtext-cli/medtext.cdx.json" "$DIST/sbom/medtext-cli.crates.cdx.json"
(cd "$SRC/ui" && npm sbom --omit dev --sbom-format cyclonedx --sbom-type application) >"$DIST/sbom/ui.npm.cdx.json"
# Dates and serial numbers from the commit, not the clock or a random draw.
python3 "$SRC/packaging/sbom_fix.py" "$COMMIT" "$SOURCE_DATE_EPOCH" "$DIST"/sbom/*.cdx.json

step "checksums and IT's signature"
(cd "$DIST" && find . -type f -printf '%P\n' | LC_ALL=C sort | xargs sha256sum) >"$ROOT/SHA256SUMS"
mv "$ROOT/SHA256SUMS" "$DIST/SHA256SUMS"
gpg --batch --yes --local-user "$KEY" --armor --detach-sign --output "$DIST/SHA256SUMS.asc" "$DIST/SHA256SUMS"

step "done: $DIST"
ls -l "$DIST" "$DIST/sbom"
echo "$(sha256sum "$DEB" | cut -d' ' -f1)  $(basename "$DEB") ($(du -h "$DEB" | cut -f1)) of commit $COMMIT, SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH"
