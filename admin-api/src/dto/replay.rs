//! Replays: the options of `POST /admin/plugins/{name}/versions/{version}/replay` and
//! the report.

use std::collections::BTreeMap;

use leadroute_engine::{ReplayDifference, ReplayReport};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::rfc3339;

/// Which stored decisions to replay. Every field is optional; `{}` replays the newest
/// 1000 leads of every territory.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"territory_id": "east-sh", "limit": 5000}))]
pub struct ReplayBody {
    /// Only leads of this territory.
    #[serde(default)]
    pub territory_id: Option<String>,
    /// The newest this many leads, 1–100000 (1000 when absent).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// One decision the version would have taken differently.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct ReplayDifferenceView {
    /// The lead.
    pub lead_id: String,
    /// The territory that decided.
    pub territory_id: String,
    /// When the decision was taken (RFC 3339).
    pub at: String,
    /// The rep the lead actually got.
    pub actual_rep_id: String,
    /// Who decided it (`builtin:NAME` or `plugin:NAME@VERSION`).
    pub actual_decided_by: String,
    /// The version's pick: its first ranked rep.
    pub replayed_rep_id: String,
    /// The version's explanation.
    pub replayed_reason: String,
}

impl From<ReplayDifference> for ReplayDifferenceView {
    fn from(d: ReplayDifference) -> Self {
        ReplayDifferenceView {
            lead_id: d.lead_id.to_string(),
            territory_id: d.territory_id.to_string(),
            at: rfc3339(d.at),
            actual_rep_id: d.actual_rep.to_string(),
            actual_decided_by: d.actual_decided_by,
            replayed_rep_id: d.replayed_rep.to_string(),
            replayed_reason: d.replayed_reason,
        }
    }
}

/// What a replay found. Nothing was stored and the plugin's statistics are unchanged.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[schema(example = json!({"plugin": "vip-tier", "version": 2, "leads_examined": 1000,
    "decisions_examined": 1012, "decisions_changed": 87, "failures": 0,
    "failures_by_reason": {}, "skipped": 0, "sample": []}))]
pub struct ReplayView {
    /// The plugin replayed.
    pub plugin: String,
    /// Its version.
    pub version: u32,
    /// Leads whose history was read.
    pub leads_examined: u64,
    /// Routing decisions run through the version (a reassigned lead has several).
    pub decisions_examined: u64,
    /// Decisions where the version picks another rep.
    pub decisions_changed: u64,
    /// Decisions where the version failed (not compared).
    pub failures: u64,
    /// The same, by failure reason (`trap`, `out_of_fuel`, `plugin_error`, …).
    pub failures_by_reason: BTreeMap<String, u64>,
    /// Decisions of territories deleted since, not replayed.
    pub skipped: u64,
    /// The first 100 differences, oldest first.
    pub sample: Vec<ReplayDifferenceView>,
}

impl From<ReplayReport> for ReplayView {
    fn from(r: ReplayReport) -> Self {
        ReplayView {
            plugin: r.plugin,
            version: r.version,
            leads_examined: r.leads_examined,
            decisions_examined: r.decisions_examined,
            decisions_changed: r.decisions_changed,
            failures: r.failures,
            failures_by_reason: r
                .failures_by_reason
                .into_iter()
                .map(|(k, v)| (k.as_str().to_string(), v))
                .collect(),
            skipped: r.skipped,
            sample: r.sample.into_iter().map(Into::into).collect(),
        }
    }
}
