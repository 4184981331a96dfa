# Long versions of the tests that run short in CI (scripts/test.sh).
# Each needs what scripts/test.sh installs; run `./scripts/test.sh` once first.

.PHONY: soak crash load fuzz reproducible

# Everything long.
soak: crash load

# 5,000 SIGKILLs of a process writing to the history (CI runs 200).
crash:
	MEDTEXT_CRASH_KILLS=5000 cargo test -p medtext-core --test crash -- --nocapture

# The local API under 16 concurrent clients for 5 minutes (CI: 8 for 3 s).
load:
	MEDTEXT_LOAD_SECONDS=300 MEDTEXT_LOAD_CLIENTS=16 cargo test -p medtext-api --test load -- --nocapture

# Every fuzz target for FUZZ_SECONDS each (default 60); needs nightly and
# cargo-fuzz (see scripts/fuzz.sh). CI replays the committed corpus instead.
fuzz:
	scripts/fuzz.sh

# Two release builds of HEAD, the second from an empty target folder, compared
# byte for byte (CI compares two packagings of one build). Needs a signing key:
# make reproducible KEY=it-release@example.org
reproducible:
	scripts/check-reproducible.sh --key $(KEY)
