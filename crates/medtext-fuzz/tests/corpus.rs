//! Replays every committed fuzz corpus input (`fuzz/corpus/<target>/`)
//! through its target on stable Rust: the short, CI version of fuzzing.
//! `scripts/fuzz.sh` runs the fuzzers themselves for a fixed time.

use std::path::PathBuf;

#[test]
fn every_corpus_input_runs_without_a_panic() {
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    for (name, target) in medtext_fuzz::TARGETS {
        let dir = corpus.join(name);
        let inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        assert!(!inputs.is_empty(), "no corpus for {name}");
        for input in inputs {
            let data = std::fs::read(&input).unwrap();
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{name} panicked on {}", input.display());
        }
        println!("{name}: ran its corpus");
    }
}
