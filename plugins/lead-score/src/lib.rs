//! `lead-score`: a small logistic model scores the lead; reps are ranked by how well
//! their tier fits that score.
//!
//! `plugin_config`:
//! ```json
//! {"bias": -2.0,
//!  "weights": {"employees": 0.004, "budget_k": 0.01, "purchase_amount": 0.00001,
//!              "source:ads": -0.5},
//!  "tier_levels": {"junior": 0.0, "senior": 1.0},
//!  "load_weight": 0.3}
//! ```
//! `p = 1 / (1 + e^-(bias + Σ weight × feature))`. A feature is a numeric (or boolean,
//! as 0/1) lead attribute of that name, `purchase_amount`, or `source:NAME` (1 when
//! the lead came from NAME); a missing feature counts as 0. A rep's fit is
//! `1 - |p - level(tier)| - load_weight × relative load`; tiers not listed have level
//! 0.5. Hot leads go to the tiers with high levels, cold ones to low levels.

use std::collections::BTreeMap;

use leadroute_plugin_sdk::prelude::*;

/// The plugin; see the crate docs.
#[derive(Default)]
pub struct LeadScore;

/// `plugin_config`; see the crate docs.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Intercept.
    #[serde(default)]
    pub bias: f64,
    /// Feature name → coefficient.
    pub weights: BTreeMap<String, f64>,
    /// Tier → the score it is meant for, in [0, 1].
    #[serde(default = "default_levels")]
    pub tier_levels: BTreeMap<String, f64>,
    /// How much relative load subtracts from the fit.
    #[serde(default)]
    pub load_weight: f64,
}

fn default_levels() -> BTreeMap<String, f64> {
    [("junior".to_string(), 0.0), ("senior".to_string(), 1.0)].into()
}

/// The model's probability that the lead is hot.
pub fn score(lead: &Lead, config: &Config) -> f64 {
    // The attributes are JSON text: parse them once, and only if a weight needs them.
    let needs_attributes = config
        .weights
        .keys()
        .any(|k| k != "purchase_amount" && !k.starts_with("source:"));
    let attributes: serde_json::Value = if needs_attributes {
        lead.attributes().unwrap_or_default()
    } else {
        serde_json::Value::Null
    };
    let source = lead.source();
    let feature = |name: &str| -> f64 {
        if name == "purchase_amount" {
            return lead.purchase_amount();
        }
        if let Some(wanted) = name.strip_prefix("source:") {
            return f64::from(u8::from(source == Some(wanted)));
        }
        match attributes.get(name) {
            Some(serde_json::Value::Number(n)) => n.as_f64().unwrap_or(0.0),
            Some(serde_json::Value::Bool(b)) => f64::from(u8::from(*b)),
            _ => 0.0,
        }
    };
    let z = config.bias
        + config
            .weights
            .iter()
            .map(|(k, w)| w * feature(k))
            .sum::<f64>();
    1.0 / (1.0 + (-z).exp())
}

impl Plugin for LeadScore {
    type Config = Config;

    fn check_config(config: &Config) -> Result<(), String> {
        if !config.bias.is_finite() {
            return Err("bias must be a number".into());
        }
        if let Some((k, _)) = config.weights.iter().find(|(_, w)| !w.is_finite()) {
            return Err(format!("weights.{k} must be a number"));
        }
        if let Some((k, _)) = config
            .tier_levels
            .iter()
            .find(|(_, l)| !(l.is_finite() && (0.0..=1.0).contains(*l)))
        {
            return Err(format!("tier_levels.{k} must be between 0 and 1"));
        }
        if !(config.load_weight.is_finite() && config.load_weight >= 0.0) {
            return Err("load_weight must be a non-negative number".into());
        }
        Ok(())
    }

    fn route(&self, input: &RouteInput, config: &Config) -> Decision {
        let p = score(&input.lead(), config);
        let level = |c: &Candidate| config.tier_levels.get(c.tier()).copied().unwrap_or(0.5);
        let fit = |c: &Candidate| {
            1.0 - (p - level(c)).abs() - config.load_weight * c.relative_load().min(1.0)
        };
        let mut order: Vec<(f64, Candidate)> = input.candidates().map(|c| (fit(&c), c)).collect();
        // The id breaks every tie, so an unstable (allocation-free) sort is exact.
        order.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp_least_loaded(&b.1)));
        let Some((best_fit, best)) = order.first() else {
            return Decision::no_preference("no candidates");
        };
        let reason = format!("lead-score: p={p:.2}, {} fits {best_fit:.2}", best.tier());
        Decision::ranked(order.iter().map(|(_, c)| c), reason)
    }
}

register_plugin!(LeadScore);

#[cfg(test)]
mod tests {
    use super::*;
    use testing::{candidate, input, run};

    fn org(attributes: serde_json::Value) -> testing::Input {
        input()
            .attributes(attributes)
            .config(serde_json::json!({"bias": -2.0, "weights": {"employees": 0.01, "source:ads": -1.0}}))
            .candidate(candidate("j").tier("junior"))
            .candidate(candidate("s").tier("senior"))
    }

    #[test]
    fn the_model_is_logistic() {
        let config: Config =
            serde_json::from_value(serde_json::json!({"bias": 0.0, "weights": {}})).unwrap();
        assert_eq!(input().with_view(|v| score(&v.lead(), &config)), 0.5);
        let config: Config = serde_json::from_value(
            serde_json::json!({"bias": -1.0, "weights": {"vip": 2.0, "purchase_amount": 0.001}}),
        )
        .unwrap();
        let lead = input()
            .attributes(serde_json::json!({"vip": true}))
            .purchase_amount(1000.0);
        let expected = 1.0 / (1.0 + (-2.0f64).exp());
        let p = lead.with_view(|v| score(&v.lead(), &config));
        assert!((p - expected).abs() < 1e-12);
    }

    #[test]
    fn hot_leads_go_senior_and_cold_ones_junior() {
        let hot = run::<LeadScore>(&org(serde_json::json!({"employees": 1000}))).unwrap();
        assert_eq!(hot.reps(), ["s", "j"]);
        assert_eq!(hot.reason(), "lead-score: p=1.00, senior fits 1.00");
        let cold = run::<LeadScore>(&org(serde_json::json!({"employees": 3}))).unwrap();
        assert_eq!(cold.reps(), ["j", "s"]);
    }

    #[test]
    fn non_numeric_attributes_count_as_zero() {
        let d = run::<LeadScore>(&org(serde_json::json!({"employees": "many"}))).unwrap();
        assert_eq!(d.reps(), ["j", "s"]);
    }

    #[test]
    fn config_is_checked() {
        let bad = serde_json::json!({"weights": {}, "tier_levels": {"senior": 3}});
        let err = run::<LeadScore>(&input().config(bad)).unwrap_err();
        assert_eq!(
            err,
            "plugin_config: tier_levels.senior must be between 0 and 1"
        );
    }
}
