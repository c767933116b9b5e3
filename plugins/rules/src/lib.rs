//! `rules` as a plugin: the same rule set as the engine's built-in `rules` strategy
//! (`engine/src/strategy/rules.rs`), so native and wasm can be compared on identical
//! work.
//!
//! 1. Reps skilled in the lead's industry first.
//! 2. For a big buyer (`purchase_amount` at or above `vip_threshold`), senior reps first.
//! 3. Then least loaded (relative load, then longest idle, then id).

use leadroute_plugin_sdk::prelude::*;

/// `vip_threshold` when `plugin_config` does not set one; the built-in's default.
pub const DEFAULT_VIP_THRESHOLD: f64 = 100_000.0;

/// The plugin; see the crate docs.
#[derive(Default)]
pub struct Rules;

/// `plugin_config`: `{"vip_threshold": 100000}` (optional).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Purchase amount from which senior reps come first.
    #[serde(default = "default_threshold")]
    pub vip_threshold: f64,
}

fn default_threshold() -> f64 {
    DEFAULT_VIP_THRESHOLD
}

impl Plugin for Rules {
    type Config = Config;

    fn check_config(config: &Config) -> Result<(), String> {
        if config.vip_threshold.is_finite() && config.vip_threshold >= 0.0 {
            Ok(())
        } else {
            Err("vip_threshold must be a non-negative number".into())
        }
    }

    fn route(&self, input: &RouteInput, config: &Config) -> Decision {
        let lead = input.lead();
        let industry = lead.industry();
        let vip = lead.purchase_amount() >= config.vip_threshold;
        let skilled = |c: &Candidate| industry.is_some_and(|i| c.has_skill(i));
        let senior = |c: &Candidate| vip && c.tier() == "senior";
        // Sort keys are read once per candidate rather than in the comparator, which a
        // sort calls ~2 log n times per candidate: in wasm, under fuel, that is most of
        // the cost. The key is the built-in's order: skilled, senior, then least loaded
        // (relative load, longest idle, id). The id makes it total, so an unstable,
        // allocation-free sort gives exactly the built-in's ranking.
        let mut order: Vec<(SortKey, Candidate)> = input
            .candidates()
            .map(|c| {
                let key = (
                    !skilled(&c),
                    !senior(&c),
                    c.relative_load(),
                    c.last_assigned_at(),
                    c.id(),
                );
                (key, c)
            })
            .collect();
        order.sort_unstable_by(|(a, _), (b, _)| {
            (a.0, a.1)
                .cmp(&(b.0, b.1))
                .then_with(|| a.2.total_cmp(&b.2))
                .then_with(|| (a.3, a.4).cmp(&(b.3, b.4)))
        });
        let Some((_, best)) = order.first() else {
            return Decision::no_preference("no candidates");
        };
        let mut parts = Vec::with_capacity(3);
        if skilled(best) {
            parts.push(format!("skilled in {}", industry.unwrap_or_default()));
        }
        if senior(best) {
            parts.push(format!("senior for purchase >= {}", config.vip_threshold));
        }
        parts.push(format!("least loaded {}/{}", best.load(), best.capacity()));
        let reason = format!("rules: {}", parts.join(", "));
        Decision::ranked(order.iter().map(|(_, c)| c), reason)
    }
}

/// Not skilled, not senior, relative load, last assigned, id: ascending is best first.
type SortKey<'a> = (bool, bool, f64, Option<u64>, &'a str);

register_plugin!(Rules);

#[cfg(test)]
mod tests {
    use super::*;
    use testing::{candidate, input, run};

    #[test]
    fn skill_first_then_least_loaded() {
        let i = input()
            .industry("hospital-lab")
            .candidate(candidate("idle"))
            .candidate(candidate("skilled").load(5).skills(&["hospital-lab"]));
        let d = run::<Rules>(&i).unwrap();
        assert_eq!(d.reps(), ["skilled", "idle"]);
        assert_eq!(
            d.reason(),
            "rules: skilled in hospital-lab, least loaded 5/10"
        );
    }

    #[test]
    fn big_buyers_go_to_seniors_from_the_threshold() {
        let reps = input()
            .candidate(candidate("junior"))
            .candidate(candidate("senior").load(5).tier("senior"));
        let d = run::<Rules>(&reps.clone().purchase_amount(100_000.0)).unwrap();
        assert_eq!(d.reps(), ["senior", "junior"]);
        let d = run::<Rules>(&reps.clone().purchase_amount(99_999.0)).unwrap();
        assert_eq!(d.reps(), ["junior", "senior"]);
        let d = run::<Rules>(
            &reps
                .purchase_amount(500.0)
                .config(serde_json::json!({"vip_threshold": 500})),
        )
        .unwrap();
        assert_eq!(d.reps(), ["senior", "junior"]);
        assert_eq!(
            d.reason(),
            "rules: senior for purchase >= 500, least loaded 5/10"
        );
    }

    #[test]
    fn ties_go_to_the_longest_idle_then_the_id() {
        let i = input()
            .candidate(candidate("recent").last_assigned_at(2_000))
            .candidate(candidate("older").last_assigned_at(1_000))
            .candidate(candidate("never-b"))
            .candidate(candidate("never-a"));
        assert_eq!(
            run::<Rules>(&i).unwrap().reps(),
            ["never-a", "never-b", "older", "recent"]
        );
    }

    #[test]
    fn bad_config_is_reported() {
        let err =
            run::<Rules>(&input().config(serde_json::json!({"vip_threshold": -1}))).unwrap_err();
        assert_eq!(
            err,
            "plugin_config: vip_threshold must be a non-negative number"
        );
        let err = run::<Rules>(&input().config(serde_json::json!({"vip": 1}))).unwrap_err();
        assert!(err.contains("unknown field `vip`"), "{err}");
    }
}
