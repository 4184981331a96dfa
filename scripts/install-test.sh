#!/usr/bin/env bash
# Proves a MedText .deb on a clean machine: makes a clean Debian 12 root with
# mmdebstrap, installs the package with `apt-get install ./…` (so Debian
# resolves its dependencies), then, with the network cut off (unshare -n), as
# an ordinary user with a real keychain (gnome-keyring in a D-Bus session):
#
#   1. medtext --version, medtext doctor, medtext classify --save, medtext
#      audit verify, and the app started under Xvfb with a screenshot saved;
#   2. upgrade: IT edits the PAM conffile and writes a policy, the same build
#      repackaged as a higher version is installed: every record is still
#      there, the audit chain verifies, IT's edits are kept;
#   3. remove keeps every user's history and keys; purge deletes the
#      package's conffiles and still keeps IT's policy and the users' data.
#
# Usage: scripts/install-test.sh DEB
# Needs root, mmdebstrap and unshare. Downloads Debian packages (cached in
# $MEDTEXT_INSTALL_TEST_DIR/apt-cache for the next run). The screenshot and
# logs land in $MEDTEXT_INSTALL_TEST_DIR/out (default /var/tmp/medtext-install-test).
set -euo pipefail

[[ $# -eq 1 && -f "$1" ]] || { echo "usage: $0 DEB (see the comment at its top)" >&2; exit 2; }
[[ $EUID -eq 0 ]] || { echo "error: run as root (it builds a Debian root with mmdebstrap and chroot)" >&2; exit 2; }
if ! command -v mmdebstrap >/dev/null; then
  echo "==> installing mmdebstrap"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null
fi
DEB="$(realpath "$1")"
WORK="${MEDTEXT_INSTALL_TEST_DIR:-/var/tmp/medtext-install-test}"
ROOTFS="$WORK/root"
CACHE="$WORK/apt-cache"
OUT="$WORK/out"
SUITE=bookworm
MIRRORS=(
  "deb http://deb.debian.org/debian $SUITE main"
  "deb http://deb.debian.org/debian $SUITE-updates main"
  "deb http://deb.debian.org/debian-security $SUITE-security main"
)
# What the test itself uses inside the root (not what MedText needs: the
# package's own dependencies come from its Depends and Recommends).
TEST_TOOLS=(dbus dbus-daemon xvfb xauth x11-utils x11-apps netpbm iproute2 procps)

step() { echo; echo "==> $*"; }
trap 'echo "INSTALL TEST FAILED at line $LINENO: $BASH_COMMAND" >&2' ERR
fail() { echo "INSTALL TEST FAILED: $*" >&2; exit 1; }

rm -rf "$ROOTFS" "$OUT"
mkdir -p "$CACHE" "$OUT"

step "a clean Debian $SUITE root"
# Reuses the .debs of the last run (apt checks each against the signed
# archive index before it installs it).
mmdebstrap --quiet --variant=apt --skip=download/empty --skip=essential/unlink \
  --setup-hook='mkdir -p "$1/var/cache/apt/archives"' \
  --setup-hook="sync-in '$CACHE' /var/cache/apt/archives/" \
  --customize-hook="sync-out /var/cache/apt/archives '$CACHE'" \
  "$SUITE" "$ROOTFS" "${MIRRORS[@]}"
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"

# Runs a command in the root, with /proc, /sys, /dev and a fresh /tmp and
# /run mounted in a private mount namespace (gone when it ends). --offline
# also gives it a network namespace with nothing but loopback.
in_root() {
  local net=()
  if [[ "$1" == "--offline" ]]; then net=(--net); shift; fi
  unshare --mount --fork "${net[@]}" -- bash -euo pipefail -c '
    root="$1" cache="$2"; shift 2
    mount -t proc proc "$root/proc"
    mount --rbind /sys "$root/sys"
    mount --rbind /dev "$root/dev"
    mount -t tmpfs tmpfs "$root/tmp"
    mount -t tmpfs tmpfs "$root/run"
    mount --bind "$cache" "$root/var/cache/apt/archives"
    ip link set lo up 2>/dev/null || true
    exec chroot "$root" "$@"' in_root "$ROOTFS" "$CACHE" "$@"
}

# Runs a script as the clinician, offline, in a D-Bus session with an
# unlocked gnome-keyring: the real Secret Service, as on a desktop.
as_clinician() {
  in_root --offline setpriv --reuid=clinician --regid=clinician --init-groups \
    env -i HOME=/home/clinician USER=clinician LOGNAME=clinician PATH=/usr/bin:/bin \
    XDG_RUNTIME_DIR=/tmp/runtime-clinician LANG=C.UTF-8 \
    bash -euo pipefail -c '
      mkdir -p -m 700 "$XDG_RUNTIME_DIR"
      exec dbus-run-session -- bash -euo pipefail -c "
        echo -n clinician-keyring | gnome-keyring-daemon --unlock --components=secrets >/dev/null
        $1"' as_clinician "$1"
}

step "install $(basename "$DEB") with apt-get, dependencies from Debian"
cp "$DEB" "$ROOTFS/tmp-medtext.deb"
in_root env DEBIAN_FRONTEND=noninteractive bash -c '
  apt-get update -qq
  apt-get install -y -qq /tmp-medtext.deb >/var/log/medtext-install.log
  apt-get install -y -qq '"${TEST_TOOLS[*]}"' >>/var/log/medtext-install.log
  useradd --create-home --shell /bin/bash clinician'
rm "$ROOTFS/tmp-medtext.deb"
in_root dpkg-query -W -f='${Package} ${Version} ${Status}\n' medtext | tee "$OUT/installed.txt"
grep -q "install ok installed" "$OUT/installed.txt" || fail "medtext is not installed"
for f in /usr/bin/medtext /usr/bin/medtext-app /usr/share/man/man1/medtext.1.gz \
  /usr/share/bash-completion/completions/medtext /usr/share/applications/org.medtext.desktop.desktop \
  /usr/share/metainfo/org.medtext.desktop.metainfo.xml /etc/pam.d/medtext /etc/medtext/policy.toml.example \
  /usr/lib/MedText/models/medical-abstracts/manifest.json \
  /usr/lib/MedText/models/encoders/all-minilm-l6-v2/model.safetensors; do
  [[ -e "$ROOTFS$f" ]] || fail "the package did not install $f"
done
[[ "$(stat -c %a "$ROOTFS/var/lib/medtext/escrow")" == 1733 ]] || fail "/var/lib/medtext/escrow is not mode 1733"

step "offline, as a clinician: version, doctor, classify --save, audit verify"
as_clinician '
  medtext --version
  medtext doctor
  medtext classify --save --json "Crushing chest pain radiating to the left arm, ST elevation in V2-V4, troponin raised."
  medtext classify --save "Adenocarcinoma of the sigmoid colon with two of fourteen lymph nodes involved."
  medtext audit verify
  echo "records: $(medtext history --json | grep -c "\"created_at_ms\"")"
' >"$OUT/first-run.log" 2>&1 || { cat "$OUT/first-run.log"; fail "the first run as a clinician failed (above)"; }
cat "$OUT/first-run.log"
grep -qx "records: 2" "$OUT/first-run.log" || fail "the history does not hold the 2 records saved"

step "offline: the app under Xvfb, with a screenshot"
as_clinician '
  Xvfb :77 -screen 0 1280x860x24 -nolisten tcp >/tmp/xvfb.log 2>&1 &
  export DISPLAY=:77
  for i in $(seq 50); do xdpyinfo >/dev/null 2>&1 && break; sleep 0.2; done
  medtext-app >/tmp/app.log 2>&1 &
  app=$!
  for i in $(seq 60); do xwininfo -root -tree | grep -q "\"MedText\"" && break; sleep 0.5; done
  xwininfo -root -tree | grep -q "\"MedText\"" || { cat /tmp/app.log; echo "no MedText window"; exit 1; }
  sleep 6
  kill -0 $app || { cat /tmp/app.log; echo "the app exited"; exit 1; }
  xwd -root -silent | xwdtopnm 2>/dev/null | pnmtopng >/tmp/medtext-installed.png
  kill $app
  cp /tmp/medtext-installed.png /home/clinician/
' || fail "the app did not start and stay up under Xvfb (above)"
cp "$ROOTFS/home/clinician/medtext-installed.png" "$OUT/app-installed.png"
[[ "$(stat -c %s "$OUT/app-installed.png")" -gt 10000 ]] || fail "the screenshot is empty"

step "upgrade: IT's edits to the PAM file and the policy survive a newer version"
echo "# edited by IT" >>"$ROOTFS/etc/pam.d/medtext"
printf '[history]\nretention_days = 365\n' >"$ROOTFS/etc/medtext/policy.toml"
VERSION="$(dpkg-deb -f "$DEB" Version)"
NEXT="$VERSION+upgradetest1"
REPACK="$WORK/repack"
rm -rf "$REPACK"
mkdir -p "$REPACK"
dpkg-deb -R "$DEB" "$REPACK/tree"
sed -i "s/^Version: .*/Version: $NEXT/" "$REPACK/tree/DEBIAN/control"
dpkg-deb --root-owner-group -Zxz --build "$REPACK/tree" "$ROOTFS/tmp-medtext-next.deb" >/dev/null
in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq /tmp-medtext-next.deb >>"$OUT/upgrade.log"
rm -rf "$REPACK" "$ROOTFS/tmp-medtext-next.deb"
in_root dpkg-query -W -f='${Version}' medtext | grep -qx "$NEXT" || fail "the upgrade to $NEXT did not install"
grep -q "^# edited by IT$" "$ROOTFS/etc/pam.d/medtext" || fail "the upgrade overwrote IT's /etc/pam.d/medtext"
grep -q "^retention_days = 365$" "$ROOTFS/etc/medtext/policy.toml" || fail "the upgrade changed IT's policy"
as_clinician '
  medtext --version
  medtext doctor
  medtext audit verify
  echo "records: $(medtext history --json | grep -c "\"created_at_ms\"")"
' >"$OUT/after-upgrade.log" 2>&1 || { cat "$OUT/after-upgrade.log"; fail "the run after the upgrade failed (above)"; }
cat "$OUT/after-upgrade.log"
grep -qx "records: 2" "$OUT/after-upgrade.log" || fail "records were lost in the upgrade"

# A user can drop a file in the escrow folder (mode 1733), as MedText does.
as_clinician 'echo test >/var/lib/medtext/escrow/install-test.age' || fail "a user cannot write to the escrow folder"

step "remove keeps the users' data; purge deletes the conffiles, not IT's policy or the users' data"
in_root env DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq medtext >>"$OUT/remove.log"
[[ ! -e "$ROOTFS/usr/bin/medtext" ]] || fail "remove left /usr/bin/medtext"
[[ -f "$ROOTFS/etc/pam.d/medtext" ]] || fail "remove deleted a conffile (only purge should)"
[[ -s "$ROOTFS/home/clinician/.local/share/MedText/history.db" ]] || fail "remove touched the user's history"
in_root env DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq medtext >>"$OUT/remove.log"
[[ ! -e "$ROOTFS/etc/pam.d/medtext" && ! -e "$ROOTFS/etc/medtext/policy.toml.example" ]] ||
  fail "purge left the package's conffiles"
[[ -f "$ROOTFS/etc/medtext/policy.toml" ]] || fail "purge deleted IT's policy"
[[ -s "$ROOTFS/home/clinician/.local/share/MedText/history.db" ]] || fail "purge touched the user's history"
[[ -f "$ROOTFS/var/lib/medtext/escrow/install-test.age" ]] || fail "purge deleted an escrowed recovery key"
# The keychain entries live in the user's login keyring, which no package touches.
[[ -n "$(find "$ROOTFS/home/clinician/.local/share/keyrings" -name '*.keyring' 2>/dev/null)" ]] ||
  fail "the user's keyring is gone"

# The root is kept when a check fails, for a look inside; gone when all pass.
rm -rf "$ROOTFS"
echo
echo "install test passed: $(cat "$OUT/installed.txt"); screenshot $OUT/app-installed.png"
