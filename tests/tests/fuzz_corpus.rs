//! Replays every saved input of the fuzz targets (`fuzz/corpus/<target>/`, seeds and
//! anything fuzzing found worth keeping, crashes included once fixed) through the same
//! checks, so CI guards them on stable Rust without running a fuzzer.

use std::path::PathBuf;

use leadroute_tests::fuzz;

fn replay(target: &str, check: &dyn Fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "{} holds no inputs", dir.display());
    for input in inputs {
        let data = std::fs::read(&input).unwrap();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&data)));
        assert!(outcome.is_ok(), "{} fails its check", input.display());
    }
}

#[test]
fn lead_intake_corpus() {
    replay("lead_intake", &fuzz::lead_intake);
}

#[test]
fn plugin_answer_corpus() {
    replay("plugin_answer", &fuzz::plugin_answer);
}

#[test]
fn plugin_upload_corpus() {
    replay("plugin_upload", &fuzz::plugin_upload);
}

#[test]
fn lead_events_corpus() {
    // An engine of its own, so its store is removed afterwards.
    let harness = fuzz::LeadEvents::new();
    replay("lead_events", &|data| harness.check(data));
}
