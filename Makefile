# Long versions of the tests that run short in CI (scripts/test.sh).
# Each needs what scripts/test.sh installs; run `./scripts/test.sh` once first.

.PHONY: soak crash fuzz

# Everything long.
soak: crash

# 5,000 SIGKILLs of a process writing to the history (CI runs 200).
crash:
	MEDTEXT_CRASH_KILLS=5000 cargo test -p medtext-core --test crash -- --nocapture

# Every fuzz target for FUZZ_SECONDS each (default 60); needs nightly and
# cargo-fuzz (see scripts/fuzz.sh). CI replays the committed corpus instead.
fuzz:
	scripts/fuzz.sh
