//! `rules`: the rule set of a distributor's sales team (the demo organisation's).
//!
//! 1. Reps skilled in the lead's industry first.
//! 2. For a big buyer (`purchase_amount` at or above `vip_threshold`), senior reps first.
//! 3. Then least loaded.
//!
//! Skill beats seniority: a hospital-lab lead is better served by a junior who knows
//! hospital labs than by a senior who does not.

use super::least_loaded;
use super::{Candidate, Ranking, Strategy};
use crate::domain::Lead;
use crate::error::ValidationError;

/// `vip_threshold` when the territory's configuration does not set one.
pub const DEFAULT_VIP_THRESHOLD: f64 = 100_000.0;

/// The rule set; see the module docs.
#[derive(Debug, Clone)]
pub struct Rules {
    vip_threshold: f64,
}

impl Rules {
    /// Reads `vip_threshold` from a territory's `plugin_config`.
    pub fn from_config(config: &serde_json::Value) -> Result<Self, ValidationError> {
        let vip_threshold = match config.get("vip_threshold") {
            None | Some(serde_json::Value::Null) => DEFAULT_VIP_THRESHOLD,
            Some(v) => v
                .as_f64()
                .filter(|t| t.is_finite() && *t >= 0.0)
                .ok_or_else(|| {
                    ValidationError::field(
                        "plugin_config.vip_threshold",
                        "must be a non-negative number",
                    )
                })?,
        };
        Ok(Self { vip_threshold })
    }
}

impl Strategy for Rules {
    fn decided_by(&self) -> String {
        "builtin:rules".into()
    }

    fn rank(&self, lead: &Lead, candidates: &[Candidate<'_>]) -> Ranking {
        let industry = lead.industry.as_deref();
        let vip = lead.purchase_amount >= self.vip_threshold;
        let skilled = |c: &Candidate<'_>| industry.is_some_and(|i| c.skills.iter().any(|s| s == i));
        let senior = |c: &Candidate<'_>| vip && c.tier == "senior";
        let mut order: Vec<usize> = (0..candidates.len()).collect();
        order.sort_by(|&a, &b| {
            let (a, b) = (&candidates[a], &candidates[b]);
            skilled(b)
                .cmp(&skilled(a))
                .then_with(|| senior(b).cmp(&senior(a)))
                .then_with(|| least_loaded::compare(a, b))
        });
        let reason = match order.first().map(|&i| &candidates[i]) {
            None => "no candidates".into(),
            Some(c) => {
                let mut parts = Vec::with_capacity(3);
                if skilled(c) {
                    parts.push(format!("skilled in {}", industry.unwrap_or_default()));
                }
                if senior(c) {
                    parts.push(format!("senior for purchase >= {}", self.vip_threshold));
                }
                parts.push(format!("least loaded {}/{}", c.load, c.capacity));
                format!("rules: {}", parts.join(", "))
            }
        };
        Ranking::new(order, reason)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    fn rules() -> Rules {
        Rules::from_config(&serde_json::json!({})).unwrap()
    }

    #[test]
    fn skill_first_then_least_loaded() {
        let mut skilled = rep("skilled", 5, 10);
        skilled.skills = vec!["hospital-lab".into()];
        let reps = [rep("idle", 0, 10), skilled];
        let c = view(&reps);
        let r = rules().rank(&lead(Some("hospital-lab"), 0.0), &c);
        assert_eq!(ids(&r, &c), ["skilled", "idle"]);
        assert_eq!(
            r.reason,
            "rules: skilled in hospital-lab, least loaded 5/10"
        );
    }

    #[test]
    fn big_buyers_go_to_seniors() {
        let mut senior = rep("senior", 5, 10);
        senior.tier = "senior".into();
        let reps = [rep("junior", 0, 10), senior];
        let c = view(&reps);
        let r = rules().rank(&lead(None, 100_000.0), &c);
        assert_eq!(ids(&r, &c), ["senior", "junior"]);
        // Below the threshold, tier does not matter.
        let r = rules().rank(&lead(None, 99_999.0), &c);
        assert_eq!(ids(&r, &c), ["junior", "senior"]);
    }

    #[test]
    fn skill_beats_seniority() {
        let mut senior = rep("senior", 0, 10);
        senior.tier = "senior".into();
        let mut skilled = rep("skilled", 3, 10);
        skilled.skills = vec!["imaging".into()];
        let reps = [senior, skilled];
        let c = view(&reps);
        let r = rules().rank(&lead(Some("imaging"), 500_000.0), &c);
        assert_eq!(ids(&r, &c), ["skilled", "senior"]);
    }

    #[test]
    fn the_threshold_comes_from_config() {
        let r = Rules::from_config(&serde_json::json!({"vip_threshold": 10})).unwrap();
        let mut senior = rep("senior", 5, 10);
        senior.tier = "senior".into();
        let reps = [rep("junior", 0, 10), senior];
        let c = view(&reps);
        assert_eq!(
            ids(&r.rank(&lead(None, 10.0), &c), &c),
            ["senior", "junior"]
        );
        let err = Rules::from_config(&serde_json::json!({"vip_threshold": "lots"})).unwrap_err();
        assert_eq!(err.field, "plugin_config.vip_threshold");
    }
}
