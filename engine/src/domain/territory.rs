//! Territories: which regions they own, who works them, how they pick a rep.

use serde::{Deserialize, Serialize};

use super::{RegionCode, RepId, TerritoryId, check_text};
use crate::error::ValidationError;

/// First-touch SLA when a territory does not set one: 30 minutes, past which a lead's
/// chance to convert falls off.
pub const DEFAULT_FIRST_TOUCH_SLA_SECS: u64 = 1800;

/// SLA re-routes a lead gets before it goes to the escalation target, by default.
pub const DEFAULT_SLA_MAX_REROUTES: u32 = 2;

/// Most SLA re-routes a territory may allow before escalating.
pub const MAX_SLA_REROUTES: u32 = 10;

/// Largest `plugin_config` accepted, as JSON text.
pub const MAX_PLUGIN_CONFIG_BYTES: usize = 16 * 1024;

/// The strategies compiled into the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuiltinStrategy {
    /// Lowest load relative to capacity and weight; ties go to the rep idle longest.
    LeastLoaded,
    /// Weighted fair rotation.
    RoundRobin,
    /// Industry skill first, senior tier for big buyers, then least loaded.
    Rules,
}

impl BuiltinStrategy {
    /// The name used in `decided_by` (`builtin:NAME`) and in configuration.
    pub fn name(self) -> &'static str {
        match self {
            BuiltinStrategy::LeastLoaded => "least_loaded",
            BuiltinStrategy::RoundRobin => "round_robin",
            BuiltinStrategy::Rules => "rules",
        }
    }
}

/// How a territory decides.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StrategySpec {
    /// A built-in strategy.
    Builtin(BuiltinStrategy),
    /// A plugin; `version: None` follows the plugin's active version.
    Plugin {
        /// Plugin name.
        name: String,
        /// Pinned version, if any.
        version: Option<u32>,
    },
}

/// A plugin version that runs beside a territory's strategy on live traffic: its pick
/// is compared with the rep actually chosen, and never affects the decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowSpec {
    /// Plugin name.
    pub plugin: String,
    /// The version to run; always pinned, so the comparison is against one module.
    pub version: u32,
}

/// A territory as configured by sales operations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Territory {
    /// Client-chosen id.
    pub id: TerritoryId,
    /// Display name.
    pub name: String,
    /// Region prefixes the territory owns.
    pub regions: Vec<RegionCode>,
    /// Whether unmatched leads land here.
    pub default: bool,
    /// How a rep is picked.
    pub strategy: StrategySpec,
    /// Strategy configuration as JSON text (bincode cannot hold a JSON value).
    pub plugin_config: String,
    /// Seconds an assigned rep has to record first contact.
    pub first_touch_sla_secs: u64,
    /// SLA re-routes before a breach escalates instead.
    pub sla_max_reroutes: u32,
    /// Where an escalated lead goes: this rep if it has room, else the queue.
    pub sla_escalation_rep: Option<RepId>,
    /// Whether a rep turning away or offline re-routes its untouched leads at once.
    pub sla_reroute_when_away: bool,
    /// A plugin version run beside the strategy for comparison, if any.
    pub shadow: Option<ShadowSpec>,
}

impl Territory {
    /// Why a lead with `region` is this territory's when none of its own regions
    /// covers it: it is the default. `None` when one of them does (or, for a territory
    /// that is not the default, always).
    pub fn default_note(&self, region: Option<&str>) -> Option<String> {
        if !self.default {
            return None;
        }
        match region {
            None => Some("default territory (the lead has no region)".into()),
            Some(r) if !super::region::covers(&self.regions, r) => Some(format!(
                "default territory (region {r} is none of its regions)"
            )),
            Some(_) => None,
        }
    }

    /// Parses `plugin_config`; it was validated on the way in, so this only fails on a
    /// corrupted store.
    pub fn plugin_config_value(&self) -> serde_json::Value {
        serde_json::from_str(&self.plugin_config).unwrap_or(serde_json::Value::Null)
    }
}

/// The JSON form of a strategy in requests: `{"builtin": NAME}` or
/// `{"plugin": NAME, "version": N | null}`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(untagged)]
pub enum StrategyInput {
    /// `{"builtin": "least_loaded"}`
    Builtin {
        /// The built-in's name.
        builtin: BuiltinStrategy,
    },
    /// `{"plugin": "vip-tier", "version": 3}`
    Plugin {
        /// Plugin name.
        plugin: String,
        /// Pinned version; absent or null follows the active version.
        #[serde(default)]
        version: Option<u32>,
    },
}

impl From<&StrategySpec> for StrategyInput {
    fn from(spec: &StrategySpec) -> Self {
        match spec {
            StrategySpec::Builtin(b) => StrategyInput::Builtin { builtin: *b },
            StrategySpec::Plugin { name, version } => StrategyInput::Plugin {
                plugin: name.clone(),
                version: *version,
            },
        }
    }
}

/// The body clients send to create or replace a territory.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TerritoryInput {
    /// Display name.
    pub name: String,
    /// Region prefixes.
    #[serde(default)]
    pub regions: Vec<String>,
    /// Whether unmatched leads land here.
    #[serde(default)]
    pub default: bool,
    /// `{"builtin": "least_loaded"}` when absent.
    #[serde(default)]
    pub strategy: Option<StrategyInput>,
    /// Strategy configuration.
    #[serde(default)]
    pub plugin_config: Option<serde_json::Value>,
    /// Seconds to first touch; 1800 when absent.
    #[serde(default)]
    pub first_touch_sla_secs: Option<u64>,
    /// SLA re-routes before escalation; 2 when absent.
    #[serde(default)]
    pub sla_max_reroutes: Option<u32>,
    /// Rep that escalated leads go to; the queue when absent.
    #[serde(default)]
    pub sla_escalation_rep: Option<String>,
    /// Re-route a rep's untouched leads as soon as it turns away or offline.
    #[serde(default)]
    pub sla_reroute_when_away: bool,
    /// `{"plugin": NAME, "version": N}` to run beside the strategy; none when absent.
    #[serde(default)]
    pub shadow: Option<ShadowSpec>,
}

impl TerritoryInput {
    /// Validates the input into a [`Territory`] with the given id.
    pub fn validate(self, id: TerritoryId) -> Result<Territory, ValidationError> {
        let name = check_text("name", &self.name, 200)?;
        if self.regions.len() > 1024 {
            return Err(ValidationError::field("regions", "at most 1024 regions"));
        }
        let mut regions = Vec::with_capacity(self.regions.len());
        for (i, r) in self.regions.iter().enumerate() {
            let r = RegionCode::parse(&format!("regions[{i}]"), r)?;
            if !regions.contains(&r) {
                regions.push(r);
            }
        }
        let strategy = match self.strategy {
            None => StrategySpec::Builtin(BuiltinStrategy::LeastLoaded),
            Some(StrategyInput::Builtin { builtin }) => StrategySpec::Builtin(builtin),
            Some(StrategyInput::Plugin { plugin, version }) => {
                let name = super::check_tag("strategy.plugin", &plugin)?;
                StrategySpec::Plugin { name, version }
            }
        };
        let plugin_config = match self.plugin_config {
            None => "{}".to_string(),
            Some(v) if v.is_object() => v.to_string(),
            Some(_) => {
                return Err(ValidationError::field(
                    "plugin_config",
                    "must be a JSON object",
                ));
            }
        };
        if plugin_config.len() > MAX_PLUGIN_CONFIG_BYTES {
            return Err(ValidationError::field(
                "plugin_config",
                format!("must be at most {MAX_PLUGIN_CONFIG_BYTES} bytes of JSON"),
            ));
        }
        let sla = self
            .first_touch_sla_secs
            .unwrap_or(DEFAULT_FIRST_TOUCH_SLA_SECS);
        if !(60..=30 * 24 * 3600).contains(&sla) {
            return Err(ValidationError::field(
                "first_touch_sla_secs",
                "must be between 60 and 2592000 (30 days)",
            ));
        }
        let sla_max_reroutes = self.sla_max_reroutes.unwrap_or(DEFAULT_SLA_MAX_REROUTES);
        if sla_max_reroutes > MAX_SLA_REROUTES {
            return Err(ValidationError::field(
                "sla_max_reroutes",
                format!("must be at most {MAX_SLA_REROUTES}"),
            ));
        }
        let sla_escalation_rep = self
            .sla_escalation_rep
            .map(|r| {
                RepId::new(&r).map_err(|e| ValidationError::field("sla_escalation_rep", e.message))
            })
            .transpose()?;
        let shadow = match self.shadow {
            None => None,
            Some(ShadowSpec { plugin, version }) => Some(ShadowSpec {
                plugin: super::check_tag("shadow.plugin", &plugin)?,
                version,
            }),
        };
        Ok(Territory {
            id,
            name,
            regions,
            default: self.default,
            strategy,
            plugin_config,
            first_touch_sla_secs: sla,
            sla_max_reroutes,
            sla_escalation_rep,
            sla_reroute_when_away: self.sla_reroute_when_away,
            shadow,
        })
    }
}

impl From<&Territory> for TerritoryInput {
    fn from(t: &Territory) -> Self {
        TerritoryInput {
            name: t.name.clone(),
            regions: t.regions.iter().map(|r| r.to_string()).collect(),
            default: t.default,
            strategy: Some(StrategyInput::from(&t.strategy)),
            plugin_config: Some(t.plugin_config_value()),
            first_touch_sla_secs: Some(t.first_touch_sla_secs),
            sla_max_reroutes: Some(t.sla_max_reroutes),
            sla_escalation_rep: t.sla_escalation_rep.as_ref().map(|r| r.to_string()),
            sla_reroute_when_away: t.sla_reroute_when_away,
            shadow: t.shadow.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Territory, String> {
        let input: TerritoryInput = serde_json::from_str(json).map_err(|e| e.to_string())?;
        input
            .validate(TerritoryId::new("t").unwrap())
            .map_err(|e| e.field)
    }

    #[test]
    fn strategy_forms_parse() {
        let t = parse(r#"{"name":"A","strategy":{"builtin":"rules"}}"#).unwrap();
        assert_eq!(t.strategy, StrategySpec::Builtin(BuiltinStrategy::Rules));
        let t = parse(r#"{"name":"A","strategy":{"plugin":"vip-tier","version":3}}"#).unwrap();
        assert_eq!(
            t.strategy,
            StrategySpec::Plugin {
                name: "vip-tier".into(),
                version: Some(3)
            }
        );
        let t = parse(r#"{"name":"A"}"#).unwrap();
        assert_eq!(
            t.strategy,
            StrategySpec::Builtin(BuiltinStrategy::LeastLoaded)
        );
        assert_eq!(t.first_touch_sla_secs, DEFAULT_FIRST_TOUCH_SLA_SECS);
        assert_eq!(t.shadow, None);
        let t = parse(r#"{"name":"A","shadow":{"plugin":"vip-tier","version":2}}"#).unwrap();
        assert_eq!(
            t.shadow,
            Some(ShadowSpec {
                plugin: "vip-tier".into(),
                version: 2
            })
        );
        assert!(parse(r#"{"name":"A","strategy":{"builtin":"fastest"}}"#).is_err());
    }

    #[test]
    fn bad_fields_are_named() {
        assert_eq!(
            parse(r#"{"name":"A","regions":["CN","C N"]}"#).unwrap_err(),
            "regions[1]"
        );
        assert_eq!(
            parse(r#"{"name":"A","plugin_config":[1]}"#).unwrap_err(),
            "plugin_config"
        );
        assert_eq!(
            parse(r#"{"name":"A","first_touch_sla_secs":1}"#).unwrap_err(),
            "first_touch_sla_secs"
        );
        assert_eq!(
            parse(r#"{"name":"A","shadow":{"plugin":"a b","version":1}}"#).unwrap_err(),
            "shadow.plugin"
        );
        assert!(parse(r#"{"name":"A","shadow":{"plugin":"p"}}"#).is_err());
        assert!(
            parse(r#"{"name":"A","colour":"red"}"#)
                .unwrap_err()
                .contains("unknown field")
        );
    }
}
