//! Territories: the body of `PUT /admin/territories/{territory_id}` and the view with
//! members' load and queue depth.

use leadroute_engine::TerritorySnapshot;
use leadroute_engine::domain::{
    BuiltinStrategy, ShadowSpec, StrategyInput, StrategySpec, TerritoryInput,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::RepStatusView;
use crate::error::AppError;

/// The strategies compiled into the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BuiltinView {
    /// Lowest load relative to capacity; ties go to the rep idle longest.
    LeastLoaded,
    /// Weighted fair rotation.
    RoundRobin,
    /// Industry skill first, senior tier for big buyers (`plugin_config.vip_threshold`),
    /// then least loaded.
    Rules,
}

impl From<BuiltinView> for BuiltinStrategy {
    fn from(b: BuiltinView) -> Self {
        match b {
            BuiltinView::LeastLoaded => BuiltinStrategy::LeastLoaded,
            BuiltinView::RoundRobin => BuiltinStrategy::RoundRobin,
            BuiltinView::Rules => BuiltinStrategy::Rules,
        }
    }
}

impl From<BuiltinStrategy> for BuiltinView {
    fn from(b: BuiltinStrategy) -> Self {
        match b {
            BuiltinStrategy::LeastLoaded => BuiltinView::LeastLoaded,
            BuiltinStrategy::RoundRobin => BuiltinView::RoundRobin,
            BuiltinStrategy::Rules => BuiltinView::Rules,
        }
    }
}

/// How a territory picks a rep: `{"builtin": NAME}` or `{"plugin": NAME, "version": N |
/// null}` (null follows the plugin's active version). Exactly one of `builtin` and
/// `plugin`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StrategyBody {
    /// A built-in strategy.
    #[serde(default)]
    pub builtin: Option<BuiltinView>,
    /// A plugin's name.
    #[serde(default)]
    pub plugin: Option<String>,
    /// The plugin version to pin; absent or null follows the active version.
    #[serde(default)]
    pub version: Option<u32>,
}

impl StrategyBody {
    fn into_input(self) -> Result<StrategyInput, AppError> {
        match (self.builtin, self.plugin, self.version) {
            (Some(builtin), None, None) => Ok(StrategyInput::Builtin {
                builtin: builtin.into(),
            }),
            (None, Some(plugin), version) => Ok(StrategyInput::Plugin { plugin, version }),
            (Some(_), None, Some(_)) => Err(AppError::invalid(
                "invalid_field",
                "strategy.version",
                "`version` goes with `plugin`, not with `builtin`",
            )),
            _ => Err(AppError::invalid(
                "invalid_field",
                "strategy",
                "give exactly one of {\"builtin\": NAME} or {\"plugin\": NAME, \"version\": N}",
            )),
        }
    }
}

/// A plugin version run beside the territory's strategy on live traffic: its pick is
/// compared with the rep chosen (`leadroute_plugin_shadow_total{plugin,agree}`), a
/// disagreement is written to the lead's history (`shadow_disagreed`), and it never
/// changes a decision.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShadowBody {
    /// The plugin's name.
    pub plugin: String,
    /// The version to run (must exist; always pinned).
    pub version: u32,
}

impl From<ShadowBody> for ShadowSpec {
    fn from(b: ShadowBody) -> Self {
        ShadowSpec {
            plugin: b.plugin,
            version: b.version,
        }
    }
}

impl From<&ShadowSpec> for ShadowBody {
    fn from(s: &ShadowSpec) -> Self {
        ShadowBody {
            plugin: s.plugin.clone(),
            version: s.version,
        }
    }
}

/// A territory as sent to `PUT /admin/territories/{territory_id}`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "name": "Shanghai", "regions": ["CN-SH"], "default": true,
    "strategy": {"builtin": "rules"}, "plugin_config": {"vip_threshold": 200000},
    "first_touch_sla_secs": 1800
}))]
pub struct TerritoryBody {
    /// Display name.
    pub name: String,
    /// Region prefixes it owns (no overlap with another territory's).
    #[serde(default)]
    pub regions: Vec<String>,
    /// Whether leads with no or an unmatched region land here (one territory at most).
    #[serde(default)]
    pub default: bool,
    /// `{"builtin": "least_loaded"}` when absent.
    #[serde(default, deserialize_with = "crate::extract::optional_object")]
    pub strategy: Option<StrategyBody>,
    /// Strategy configuration, a JSON object (at most 16 KiB).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub plugin_config: Option<serde_json::Value>,
    /// Seconds a rep has for first contact before the lead is re-routed (60–2592000;
    /// 1800 when absent).
    #[serde(default)]
    pub first_touch_sla_secs: Option<u64>,
    /// SLA re-routes a lead gets before the next breach escalates it (0–10; 2 when
    /// absent).
    #[serde(default)]
    pub sla_max_reroutes: Option<u32>,
    /// Rep an escalated lead goes to when it has room; absent: the territory's queue
    /// (the next rep with room, no further deadline).
    #[serde(default)]
    pub sla_escalation_rep: Option<String>,
    /// Re-route a rep's untouched leads as soon as it turns away or offline.
    #[serde(default)]
    pub sla_reroute_when_away: bool,
    /// `{"plugin": NAME, "version": N}` to run beside the strategy; absent or null for
    /// none.
    #[serde(default, deserialize_with = "crate::extract::optional_object")]
    pub shadow: Option<ShadowBody>,
}

impl TerritoryBody {
    /// Converts into the engine's input; the engine validates the rest.
    pub fn into_input(self) -> Result<TerritoryInput, AppError> {
        Ok(TerritoryInput {
            name: self.name,
            regions: self.regions,
            default: self.default,
            strategy: self.strategy.map(StrategyBody::into_input).transpose()?,
            plugin_config: self.plugin_config,
            first_touch_sla_secs: self.first_touch_sla_secs,
            sla_max_reroutes: self.sla_max_reroutes,
            sla_escalation_rep: self.sla_escalation_rep,
            sla_reroute_when_away: self.sla_reroute_when_away,
            shadow: self.shadow.map(Into::into),
        })
    }
}

/// A territory's strategy, in the same form it is configured.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(untagged)]
pub enum StrategyView {
    /// `{"builtin": NAME}`
    Builtin {
        /// The built-in.
        builtin: BuiltinView,
    },
    /// `{"plugin": NAME, "version": N | null}`
    Plugin {
        /// The plugin's name.
        plugin: String,
        /// The pinned version; null follows the active version.
        version: Option<u32>,
    },
}

impl From<&StrategySpec> for StrategyView {
    fn from(s: &StrategySpec) -> Self {
        match s {
            StrategySpec::Builtin(b) => StrategyView::Builtin {
                builtin: (*b).into(),
            },
            StrategySpec::Plugin { name, version } => StrategyView::Plugin {
                plugin: name.clone(),
                version: *version,
            },
        }
    }
}

/// A member rep as its territory sees it.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct MemberView {
    /// The rep.
    pub rep_id: String,
    /// Display name.
    pub name: String,
    /// Whether it takes new leads.
    pub status: RepStatusView,
    /// Open leads.
    pub load: u32,
    /// Most open leads.
    pub capacity: u32,
    /// Whether it can take one more lead now.
    pub has_room: bool,
}

/// A territory with its members' load and its queue depth.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct TerritoryView {
    /// The territory's id.
    pub territory_id: String,
    /// Display name.
    pub name: String,
    /// Region prefixes it owns, upper-cased.
    pub regions: Vec<String>,
    /// Whether unmatched leads land here.
    pub default: bool,
    /// How it picks a rep.
    pub strategy: StrategyView,
    /// Strategy configuration.
    #[schema(value_type = Object)]
    pub plugin_config: serde_json::Value,
    /// Seconds to first touch before re-routing.
    pub first_touch_sla_secs: u64,
    /// SLA re-routes before escalation.
    pub sla_max_reroutes: u32,
    /// Where escalated leads go; null: the queue.
    pub sla_escalation_rep: Option<String>,
    /// Whether a rep turning away or offline re-routes its untouched leads.
    pub sla_reroute_when_away: bool,
    /// The shadow plugin version, or null.
    pub shadow: Option<ShadowBody>,
    /// Leads waiting for capacity.
    pub queue_depth: usize,
    /// Member reps, by id.
    pub members: Vec<MemberView>,
}

impl From<TerritorySnapshot> for TerritoryView {
    fn from(s: TerritorySnapshot) -> Self {
        let t = &s.territory;
        let mut members: Vec<MemberView> = s
            .members
            .iter()
            .map(|m| MemberView {
                rep_id: m.rep.id.to_string(),
                name: m.rep.name.clone(),
                status: m.rep.status.into(),
                load: m.load,
                capacity: m.rep.capacity,
                has_room: m.has_room(),
            })
            .collect();
        members.sort_by(|a, b| a.rep_id.cmp(&b.rep_id));
        TerritoryView {
            territory_id: t.id.to_string(),
            name: t.name.clone(),
            regions: t.regions.iter().map(|r| r.as_str().to_string()).collect(),
            default: t.default,
            strategy: (&t.strategy).into(),
            plugin_config: t.plugin_config_value(),
            first_touch_sla_secs: t.first_touch_sla_secs,
            sla_max_reroutes: t.sla_max_reroutes,
            sla_escalation_rep: t.sla_escalation_rep.as_ref().map(|r| r.to_string()),
            sla_reroute_when_away: t.sla_reroute_when_away,
            shadow: t.shadow.as_ref().map(Into::into),
            queue_depth: s.queue.len(),
            members,
        }
    }
}
