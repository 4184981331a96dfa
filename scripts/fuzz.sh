#!/usr/bin/env bash
# Fuzzes every reader of untrusted input for a fixed time each (default 60 s;
# FUZZ_SECONDS=600 for a longer run): the pack manifest, pack archives, the
# labelled files for training and evaluation, the machine policy, the
# tokenizer and the local API's request reader. Needs a nightly toolchain and
# cargo-fuzz:
#   rustup toolchain install nightly && cargo install cargo-fuzz
# Seeds come from fuzz/corpus/<target> (committed, small); new inputs go to
# fuzz/corpus-new/<target> (not committed: copy a few that matter into the
# corpus, which CI replays on stable through crates/medtext-fuzz). A crash is
# saved under fuzz/artifacts/<target>/ and fails the script.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SECONDS_EACH="${FUZZ_SECONDS:-60}"
TARGETS=(${FUZZ_TARGETS:-manifest archive dataset policy tokenizer http_request})
[[ -f models/encoders/all-minilm-l6-v2/tokenizer.json ]] || models/fetch-encoder.sh

cd fuzz
for target in "${TARGETS[@]}"; do
  mkdir -p "corpus-new/$target"
  echo "==> fuzzing $target for ${SECONDS_EACH}s"
  cargo +nightly fuzz run "$target" "corpus-new/$target" "corpus/$target" -- \
    -max_total_time="$SECONDS_EACH" -rss_limit_mb=4096 -max_len=65536 -print_final_stats=1
done
echo "no crash in ${#TARGETS[@]} targets x ${SECONDS_EACH}s"
