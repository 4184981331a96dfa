#!/usr/bin/env bash
# Runs several fine-tuning set-ups side by side on a lent GPU machine, within
# its limits: 64 MiB carried up with each call, at most 8 files brought back,
# 10 minutes a call. Written after session 7 lost two adapters to a hand-typed
# archive step; this way every adapter, report and log comes back in one file.
#
#   device-batch.sh prepare ENCODER_DIR SPLIT_DIR CARRY_DIR
#       Here. Packs the encoder (transport.py) and copies the splits
#       SPLIT_DIR/split-TASK.csv, gzipped, into CARRY_DIR (give it as `carry`).
#   device-batch.sh run CARRY_DIR SECONDS NAME=ARGS...
#       There, from the repository root. Rebuilds the encoder, then runs one
#       lora.py per NAME at once, each with COMMON, one --task per name in TASKS
#       (the first selects the epoch), ARGS and --time-limit SECONDS. Writes
#       $OUT/runs.tar: NAME.safetensors, NAME.json and NAME.log for each.
#
# Environment: TASKS (default "chapter block"); COMMON (default: the session-7
# ICD-10-CM recipe below); OUT (set by the device machine).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
TASKS="${TASKS:-chapter block}"
COMMON="${COMMON:---max-tokens 128 --batch 128 --rank 16 --alpha 32 --lr 1e-3 --epochs 6 --probe first}"

usage() {
  sed -n '/^#   device-batch.sh prepare/,/^# Environment/p' "$0" >&2
  exit 2
}

prepare() {
  [[ $# -eq 3 ]] || usage
  local encoder="$1" splits="$2" carry="$3" task
  mkdir -p "$carry"
  local packed=()
  for task in $TASKS; do
    [[ -f "$splits/split-$task.csv" ]] || { echo "no $splits/split-$task.csv (TASKS is \"$TASKS\")" >&2; exit 1; }
    gzip -9 -n -c "$splits/split-$task.csv" > "$carry/split-$task.csv.gz"
    packed+=("$carry/split-$task.csv.gz")
  done
  cp "$encoder/config.json" "$encoder/tokenizer.json" "$carry/"
  python3 "$here/transport.py" pack "$encoder" "$carry/encoder16.safetensors" "${packed[@]}"
  du -sh "$carry"
}

run() {
  [[ $# -ge 3 ]] || usage
  local carry="$1" seconds="$2" task name args
  shift 2
  : "${OUT:?OUT must name the folder whose files come back}"
  # Every job is checked before anything starts, so a typo stops nothing half-way.
  for job in "$@"; do
    [[ "${job%%=*}" =~ ^[A-Za-z0-9_-]+$ && "$job" == *=* ]] || { echo "bad job \"$job\": NAME=ARGS" >&2; exit 2; }
  done
  local encoder=/tmp/medtext-encoder runs=/tmp/medtext-runs
  rm -rf "$runs" && mkdir -p "$runs"
  python3 "$here/transport.py" unpack "$carry/encoder16.safetensors" "$carry" "$encoder"
  local tasks=()
  for task in $TASKS; do tasks+=(--task "$task=$carry/split-$task.csv.gz"); done
  local threads=$(($(nproc) / $#))
  ((threads > 0)) || threads=1
  local pids=()
  for job in "$@"; do
    name="${job%%=*}"
    args="${job#*=}"
    # shellcheck disable=SC2086 # COMMON and ARGS are word lists
    OMP_NUM_THREADS=$threads python3 "$here/lora.py" --encoder "$encoder" "${tasks[@]}" $COMMON $args \
      --time-limit "$seconds" --out "$runs/$name.safetensors" --report "$runs/$name.json" \
      > "$runs/$name.log" 2>&1 &
    pids+=($!)
  done
  local failed=0
  for pid in "${pids[@]}"; do wait "$pid" || failed=$((failed + 1)); done
  tar -C "$runs" -cf "$OUT/runs.tar" .
  for log in "$runs"/*.log; do echo "== $(basename "$log" .log)"; grep -E "^kept|rror" "$log" || tail -n 3 "$log"; done
  echo "$failed of $# runs failed; $(du -h "$OUT/runs.tar" | cut -f1) in runs.tar"
  ((failed == 0))
}

case "${1:-}" in
  prepare) shift && prepare "$@" ;;
  run) shift && run "$@" ;;
  *) usage ;;
esac
