//! `vip-tier`: purchase-amount bands decide which rep tier a lead deserves.
//!
//! `plugin_config`:
//! ```json
//! {"bands": [{"min_amount": 500000, "tier": "principal"},
//!            {"min_amount": 100000, "tier": "senior"}],
//!  "strict": false}
//! ```
//! The highest band whose `min_amount` the lead's purchase amount reaches names the
//! wanted tier. Reps of that tier come first, least loaded among them; the others
//! follow, least loaded, unless `strict`, in which case they are left out. A lead
//! below every band, or (strict) with no rep of its tier, gets no preference: the
//! territory's fallback decides.

use leadroute_plugin_sdk::prelude::*;

/// The plugin; see the crate docs.
#[derive(Default)]
pub struct VipTier;

/// One purchase-amount band.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Band {
    /// Smallest purchase amount in the band.
    pub min_amount: f64,
    /// Tier that serves it.
    pub tier: String,
}

/// `plugin_config`; see the crate docs.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Bands, in any order.
    pub bands: Vec<Band>,
    /// Leave out reps of other tiers.
    #[serde(default)]
    pub strict: bool,
}

impl Plugin for VipTier {
    type Config = Config;

    fn check_config(config: &Config) -> Result<(), String> {
        if config.bands.is_empty() {
            return Err("bands must name at least one band".into());
        }
        for (i, band) in config.bands.iter().enumerate() {
            if !(band.min_amount.is_finite() && band.min_amount >= 0.0) {
                return Err(format!(
                    "bands[{i}].min_amount must be a non-negative number"
                ));
            }
            if band.tier.is_empty() {
                return Err(format!("bands[{i}].tier must not be empty"));
            }
        }
        Ok(())
    }

    fn route(&self, input: &RouteInput, config: &Config) -> Decision {
        let amount = input.lead().purchase_amount();
        let Some(band) = config
            .bands
            .iter()
            .filter(|b| amount >= b.min_amount)
            .max_by(|a, b| a.min_amount.total_cmp(&b.min_amount))
        else {
            return Decision::no_preference(format!(
                "vip-tier: purchase {amount} is below every band"
            ));
        };
        let wanted = |c: &Candidate| c.tier().eq_ignore_ascii_case(&band.tier);
        let mut order: Vec<Candidate> = input
            .candidates()
            .filter(|c| !config.strict || wanted(c))
            .collect();
        if order.is_empty() {
            return Decision::no_preference(format!("vip-tier: no {} rep has room", band.tier));
        }
        // The id breaks every tie, so an unstable (allocation-free) sort is exact.
        order.sort_unstable_by(|a, b| {
            wanted(b)
                .cmp(&wanted(a))
                .then_with(|| a.cmp_least_loaded(b))
        });
        let reason = format!(
            "vip-tier: purchase {amount} >= {} wants {}",
            band.min_amount, band.tier
        );
        Decision::ranked(&order, reason)
    }
}

register_plugin!(VipTier);

#[cfg(test)]
mod tests {
    use super::*;
    use testing::{candidate, input, run};

    fn org() -> testing::Input {
        input()
            .config(serde_json::json!({"bands": [
                {"min_amount": 100000, "tier": "senior"},
                {"min_amount": 500000, "tier": "principal"}
            ]}))
            .candidate(candidate("j").tier("junior"))
            .candidate(candidate("s").tier("senior").load(3))
            .candidate(candidate("p").tier("principal").load(9))
    }

    #[test]
    fn the_highest_band_reached_wins() {
        let d = run::<VipTier>(&org().purchase_amount(600_000.0)).unwrap();
        assert_eq!(d.reps(), ["p", "j", "s"]);
        assert_eq!(
            d.reason(),
            "vip-tier: purchase 600000 >= 500000 wants principal"
        );
        let d = run::<VipTier>(&org().purchase_amount(100_000.0)).unwrap();
        assert_eq!(d.reps(), ["s", "j", "p"]);
    }

    #[test]
    fn small_buyers_get_no_preference() {
        let d = run::<VipTier>(&org().purchase_amount(10.0)).unwrap();
        assert!(d.is_no_preference(), "{d:?}");
    }

    #[test]
    fn strict_leaves_other_tiers_out() {
        let mut i = org().purchase_amount(200_000.0);
        i.plugin_config["strict"] = true.into();
        assert_eq!(run::<VipTier>(&i).unwrap().reps(), ["s"]);
        i.candidates.retain(|c| c.id != "s");
        assert!(run::<VipTier>(&i).unwrap().is_no_preference());
    }

    #[test]
    fn config_is_checked() {
        let err = run::<VipTier>(&input()).unwrap_err();
        assert!(err.contains("missing field `bands`"), "{err}");
        let err = run::<VipTier>(&input().config(serde_json::json!({"bands": []}))).unwrap_err();
        assert_eq!(err, "plugin_config: bands must name at least one band");
        let bad = serde_json::json!({"bands": [{"min_amount": -5, "tier": "x"}]});
        let err = run::<VipTier>(&input().config(bad)).unwrap_err();
        assert_eq!(
            err,
            "plugin_config: bands[0].min_amount must be a non-negative number"
        );
    }
}
