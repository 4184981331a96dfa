#!/usr/bin/env bash
# Runs a command inside a private D-Bus session with a real, unlocked
# gnome-keyring (the Secret Service the tests use), under a scratch HOME
# that the caller gives as $HOME.
#
#   HOME=/tmp/scratch scripts/with-test-keyring.sh cargo test --workspace
#
# gnome-keyring-daemon can abort when many short-lived clients connect and
# disconnect (an upstream race, GNOME/gnome-keyring#196), and the test suite
# starts hundreds of `medtext` processes. The bus would then start a new
# daemon with the login keyring locked, and every later test would fail. So
# this session's bus does not start the keyring by itself; a watchdog starts
# it again, unlocked, within a fifth of a second, and MedText tries a call
# again when its keychain service went away (crates/medtext-core/src/history/keychain.rs).
# Each restart is reported on standard error.
set -euo pipefail
[[ $# -gt 0 ]] || { echo "usage: HOME=DIR $0 COMMAND [ARG...]" >&2; exit 2; }

if [[ -z "${MEDTEXT_TEST_KEYRING_INSIDE:-}" ]]; then
  # Every session service the system has, except the keyring's own.
  SERVICES="$HOME/.medtext-test-bus/services"
  mkdir -p "$SERVICES"
  for service in /usr/share/dbus-1/services/*.service; do
    [[ -e "$service" ]] || continue
    grep -q '^Name=org.freedesktop.secrets$' "$service" && continue
    grep -q 'gnome-keyring-daemon' "$service" && continue
    ln -sf "$service" "$SERVICES/"
  done
  sed -e "s#<standard_session_servicedirs */>#<servicedir>$SERVICES</servicedir>#" \
    /usr/share/dbus-1/session.conf >"$HOME/.medtext-test-bus/session.conf"
  export MEDTEXT_TEST_KEYRING_INSIDE=1
  exec dbus-run-session --config-file="$HOME/.medtext-test-bus/session.conf" -- "$0" "$@"
fi

start_keyring() {
  echo -n medtext-test | gnome-keyring-daemon --unlock --components=secrets >/dev/null
}
start_keyring
(
  while sleep 0.2; do
    # Asks the bus (not the keyring) whether anyone holds the Secret Service name.
    if ! dbus-send --session --print-reply --dest=org.freedesktop.DBus / \
      org.freedesktop.DBus.NameHasOwner string:org.freedesktop.secrets 2>/dev/null |
      grep -q 'boolean true'; then
      echo "with-test-keyring.sh: gnome-keyring-daemon stopped; starting it again, unlocked" >&2
      start_keyring || true
    fi
  done
) &
WATCHDOG=$!
trap 'kill "$WATCHDOG" 2>/dev/null || true' EXIT
"$@"
