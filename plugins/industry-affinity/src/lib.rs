//! `industry-affinity`: weighted matching of the lead's industry to rep skills.
//!
//! `plugin_config`:
//! ```json
//! {"affinity": {"hospital-lab": {"clinic": 0.6, "pharma": 0.3}},
//!  "exact_match": 1.0, "load_weight": 0.5, "min_score": 0.1}
//! ```
//! A rep's affinity is its best skill's weight for the lead's industry: `exact_match`
//! for the industry itself, else `affinity[industry][skill]`, else 0. Its score is
//! affinity minus `load_weight` times its relative load, so a near-full specialist can
//! lose to an idle neighbour. Reps scoring below `min_score` are left out; if that is
//! everyone, or the lead has no industry, the fallback decides.

use std::collections::BTreeMap;

use leadroute_plugin_sdk::prelude::*;

/// The plugin; see the crate docs.
#[derive(Default)]
pub struct IndustryAffinity;

/// `plugin_config`; see the crate docs.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// industry → skill → weight in [0, 1].
    #[serde(default)]
    pub affinity: BTreeMap<String, BTreeMap<String, f64>>,
    /// Weight of a skill equal to the industry.
    #[serde(default = "one")]
    pub exact_match: f64,
    /// How much relative load (0..1) subtracts from the score.
    #[serde(default = "half")]
    pub load_weight: f64,
    /// Lowest score still ranked.
    #[serde(default)]
    pub min_score: f64,
}

fn one() -> f64 {
    1.0
}

fn half() -> f64 {
    0.5
}

fn weight_ok(w: f64) -> bool {
    w.is_finite() && (0.0..=1.0).contains(&w)
}

impl Plugin for IndustryAffinity {
    type Config = Config;

    fn check_config(config: &Config) -> Result<(), String> {
        for (industry, skills) in &config.affinity {
            for (skill, w) in skills {
                if !weight_ok(*w) {
                    return Err(format!(
                        "affinity.{industry}.{skill} must be between 0 and 1"
                    ));
                }
            }
        }
        if !weight_ok(config.exact_match) {
            return Err("exact_match must be between 0 and 1".into());
        }
        if !(config.load_weight.is_finite() && config.load_weight >= 0.0) {
            return Err("load_weight must be a non-negative number".into());
        }
        if !config.min_score.is_finite() {
            return Err("min_score must be a number".into());
        }
        Ok(())
    }

    fn route(&self, input: &RouteInput, config: &Config) -> Decision {
        let Some(industry) = input.lead().industry() else {
            return Decision::no_preference("industry-affinity: lead has no industry");
        };
        let related = config.affinity.get(industry);
        let mut scored: Vec<(f64, Option<&str>, Candidate)> = input
            .candidates()
            .map(|c| {
                let (a, via) = affinity(&c, industry, related, config.exact_match);
                (a - config.load_weight * c.relative_load().min(1.0), via, c)
            })
            .filter(|(score, _, _)| *score >= config.min_score)
            .collect();
        // The id breaks every tie, so an unstable (allocation-free) sort is exact.
        scored
            .sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.2.cmp_least_loaded(&b.2)));
        let Some(&(score, via, _)) = scored.first() else {
            return Decision::no_preference(format!(
                "industry-affinity: no rep scores {} for {industry}",
                config.min_score
            ));
        };
        let reason = match via {
            Some(skill) => format!("industry-affinity: {industry} via {skill}, score {score:.2}"),
            None => format!("industry-affinity: no skill matches {industry}, score {score:.2}"),
        };
        Decision::ranked(scored.iter().map(|(_, _, c)| c), reason)
    }
}

/// A rep's best skill weight for `industry`, and the skill that gave it.
fn affinity<'a>(
    c: &Candidate<'a>,
    industry: &str,
    related: Option<&BTreeMap<String, f64>>,
    exact_match: f64,
) -> (f64, Option<&'a str>) {
    c.skills()
        .filter_map(|s| {
            let w = if s == industry {
                Some(exact_match)
            } else {
                related.and_then(|r| r.get(s)).copied()
            };
            w.map(|w| (w, Some(s)))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .unwrap_or((0.0, None))
}

register_plugin!(IndustryAffinity);

#[cfg(test)]
mod tests {
    use super::*;
    use testing::{candidate, input, run};

    fn lab_lead() -> testing::Input {
        input()
            .industry("hospital-lab")
            .config(serde_json::json!({"affinity": {"hospital-lab": {"clinic": 0.6}}}))
    }

    #[test]
    fn exact_beats_related_beats_unrelated() {
        let i = lab_lead()
            .candidate(candidate("none"))
            .candidate(candidate("related").skills(&["clinic"]))
            .candidate(candidate("exact").skills(&["hospital-lab", "clinic"]));
        let d = run::<IndustryAffinity>(&i).unwrap();
        assert_eq!(d.reps(), ["exact", "related", "none"]);
        assert_eq!(
            d.reason(),
            "industry-affinity: hospital-lab via hospital-lab, score 1.00"
        );
    }

    #[test]
    fn load_can_outweigh_affinity() {
        // exact at 10/10: 1.0 - 0.5 = 0.5; related idle: 0.6.
        let i = lab_lead()
            .candidate(candidate("exact").skills(&["hospital-lab"]).load(10))
            .candidate(candidate("related").skills(&["clinic"]));
        assert_eq!(
            run::<IndustryAffinity>(&i).unwrap().reps(),
            ["related", "exact"]
        );
    }

    #[test]
    fn min_score_filters_and_no_industry_defers() {
        let mut i = lab_lead()
            .candidate(candidate("none"))
            .candidate(candidate("related").skills(&["clinic"]));
        i.plugin_config["min_score"] = 0.5.into();
        assert_eq!(run::<IndustryAffinity>(&i).unwrap().reps(), ["related"]);
        i.lead.industry = None;
        assert!(run::<IndustryAffinity>(&i).unwrap().is_no_preference());
    }

    #[test]
    fn weights_are_checked() {
        let bad = serde_json::json!({"affinity": {"a": {"b": 2.0}}});
        let err = run::<IndustryAffinity>(&input().config(bad)).unwrap_err();
        assert_eq!(err, "plugin_config: affinity.a.b must be between 0 and 1");
    }
}
