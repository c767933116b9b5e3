//! Dry runs: `POST /admin/simulate` shows the decision for a lead without making it.

use leadroute_engine::Simulation;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{CandidateView, LeadBody, RouteStatusView, fallback_fields, micros};

/// A plugin version to decide with instead of the territory's own strategy.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PluginRef {
    /// The plugin's name.
    pub name: String,
    /// The version; absent or null means the active one.
    #[serde(default)]
    pub version: Option<u32>,
}

/// The body of `POST /admin/simulate`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SimulateBody {
    /// The lead, as for `POST /v1/leads`.
    #[serde(deserialize_with = "crate::extract::object")]
    pub lead: LeadBody,
    /// Decide in this territory instead of the one the lead's region resolves to.
    #[serde(default)]
    pub territory_id: Option<String>,
    /// Decide with this plugin version instead of the territory's strategy.
    #[serde(default, deserialize_with = "crate::extract::optional_object")]
    pub plugin: Option<PluginRef>,
}

/// Where the time of a simulated decision went, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct SimulationTimings {
    /// Ranking by the strategy.
    pub decide_us: u64,
}

/// The decision routing would make now. Nothing was stored and no load was taken.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct SimulationView {
    /// The territory that would decide.
    pub territory_id: String,
    /// `assigned` or `queued`: what routing would do now (`duplicate` when the lead
    /// repeats an open one, which routing would answer without deciding).
    pub status: RouteStatusView,
    /// The rep that would get the lead; null when it would queue.
    pub rep_id: Option<String>,
    /// Reps in the strategy's order of preference, best first.
    pub ranking: Vec<String>,
    /// `builtin:NAME` or `plugin:NAME@VERSION`.
    pub decided_by: String,
    /// The strategy's explanation.
    pub reason: String,
    /// Why a fallback would decide instead of the strategy (a plugin failure, an open
    /// circuit), if it would: a code such as `plugin_trap`, as in a route's outcome.
    pub fallback: Option<String>,
    /// The fallback's detail for humans: the reason, the plugin version and what
    /// happened.
    pub fallback_detail: Option<String>,
    /// The open lead this one would duplicate, if any.
    pub duplicate_of: Option<String>,
    /// Every candidate considered, with its load now.
    pub candidates: Vec<CandidateView>,
    /// Where the time went.
    pub timings: SimulationTimings,
}

impl From<Simulation> for SimulationView {
    fn from(s: Simulation) -> Self {
        let d = s.decision;
        let (fallback, fallback_detail) = fallback_fields(d.fallback);
        let rep_id = if d.would_queue {
            None
        } else {
            d.ranking.first().map(ToString::to_string)
        };
        let status = match (&s.duplicate_of, &rep_id) {
            (Some(_), _) => RouteStatusView::Duplicate,
            (None, Some(_)) => RouteStatusView::Assigned,
            (None, None) => RouteStatusView::Queued,
        };
        SimulationView {
            territory_id: s.territory_id.to_string(),
            status,
            rep_id,
            ranking: d.ranking.iter().map(ToString::to_string).collect(),
            decided_by: d.decided_by,
            reason: d.reason,
            fallback,
            fallback_detail,
            duplicate_of: s.duplicate_of.map(|l| l.to_string()),
            candidates: d.candidates.into_iter().map(Into::into).collect(),
            timings: SimulationTimings {
                decide_us: micros(d.decide),
            },
        }
    }
}
