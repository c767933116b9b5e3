//! `test-panic`: a plugin for the engine's tests, not an example. It ranks the
//! candidates least loaded first, except for a lead whose `source` is `"panic"`: then
//! it panics, as a plugin with a bug would, so tests can see what becomes of a panic
//! inside the sandbox.

use leadroute_plugin_sdk::prelude::*;

/// The plugin; see the crate docs.
#[derive(Default)]
pub struct TestPanic;

impl Plugin for TestPanic {
    type Config = ();

    fn route(&self, input: &RouteInput, _config: &()) -> Decision {
        let lead = input.lead();
        if lead.source() == Some("panic") {
            panic!("lead {} asked for a panic", lead.id());
        }
        let mut reps: Vec<Candidate> = input.candidates().collect();
        reps.sort_unstable_by(|a, b| a.cmp_least_loaded(b));
        Decision::ranked(&reps, "least loaded")
    }
}

register_plugin!(TestPanic);

#[cfg(test)]
mod tests {
    use super::*;
    use testing::{candidate, input, run};

    #[test]
    fn ranks_least_loaded_first() {
        let i = input()
            .candidate(candidate("busy").load(5))
            .candidate(candidate("idle"));
        assert_eq!(run::<TestPanic>(&i).unwrap().reps(), ["idle", "busy"]);
    }

    #[test]
    #[should_panic(expected = "asked for a panic")]
    fn panics_when_asked() {
        let i = input().source("panic").candidate(candidate("a"));
        let _ = run::<TestPanic>(&i);
    }
}
