#!/usr/bin/env bash
# Installs what is needed, then builds and opens the MedText app (a development
# build that uses this checkout's models/ and a UI served on 127.0.0.1 only).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
exec ui/node_modules/.bin/tauri dev
