//! The routing outcome of a lead, and batches of them.

use leadroute_engine::domain::CandidateSnapshot;
use leadroute_engine::{RouteOutcome, RouteStatus, Timings};
use serde::de::{Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::{LeadBody, fallback_fields, micros};
use crate::error::ErrorBody;
use crate::routes::MAX_BATCH;

/// What happened to a lead at intake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RouteStatusView {
    /// A rep has it (201).
    Assigned,
    /// It waits for capacity (202).
    Queued,
    /// It repeats an open lead; nothing new was stored (200).
    Duplicate,
}

impl From<RouteStatus> for RouteStatusView {
    fn from(s: RouteStatus) -> Self {
        match s {
            RouteStatus::Assigned => RouteStatusView::Assigned,
            RouteStatus::Queued => RouteStatusView::Queued,
            RouteStatus::Duplicate => RouteStatusView::Duplicate,
        }
    }
}

/// A candidate rep as it stood when a decision was made.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, ToSchema)]
pub struct CandidateView {
    /// The rep.
    pub rep_id: String,
    /// Its open leads at that moment.
    pub load: u32,
    /// Its capacity at that moment.
    pub capacity: u32,
}

impl From<CandidateSnapshot> for CandidateView {
    fn from(c: CandidateSnapshot) -> Self {
        CandidateView {
            rep_id: c.rep.to_string(),
            load: c.load,
            capacity: c.capacity,
        }
    }
}

/// Where the time of one route went, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize, Serialize, ToSchema)]
pub struct TimingsView {
    /// Validation and de-duplication.
    pub dedupe_us: u64,
    /// Ranking by the strategy.
    pub decide_us: u64,
    /// Reserving capacity with the rep.
    pub reserve_us: u64,
    /// Waiting for the durable commit.
    pub commit_us: u64,
    /// Intake to durable answer.
    pub total_us: u64,
}

impl From<Timings> for TimingsView {
    fn from(t: Timings) -> Self {
        TimingsView {
            dedupe_us: micros(t.dedupe),
            decide_us: micros(t.decide),
            reserve_us: micros(t.reserve),
            commit_us: micros(t.commit),
            total_us: micros(t.total),
        }
    }
}

/// The durable outcome of routing one lead.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[schema(example = json!({
    "lead_id": "01JDQ3ZK8W5M6V2N4R7T9XAB3C", "status": "assigned", "rep_id": "rep-07",
    "territory_id": "east-sh", "decided_by": "builtin:rules",
    "reason": "skilled in hospital-lab; least loaded", "fallback": null, "fallback_detail": null, "duplicate_of": null,
    "candidates": [{"rep_id": "rep-07", "load": 3, "capacity": 20}],
    "timings": {"dedupe_us": 4, "decide_us": 2, "reserve_us": 1, "commit_us": 310, "total_us": 330}
}))]
pub struct RouteOutcomeView {
    /// The new lead; for a duplicate, the existing one.
    pub lead_id: String,
    /// `assigned`, `queued` or `duplicate`.
    pub status: RouteStatusView,
    /// The owning rep; null while queued.
    pub rep_id: Option<String>,
    /// The territory.
    pub territory_id: String,
    /// `builtin:NAME` or `plugin:NAME@VERSION`; null for duplicates.
    pub decided_by: Option<String>,
    /// Why.
    pub reason: String,
    /// Why a fallback decided instead of the strategy, as a code: `plugin_fuel_exhausted`,
    /// `plugin_timeout`, `plugin_trap`, `plugin_no_preference`, … (see the README).
    pub fallback: Option<String>,
    /// The fallback's detail for humans: the reason, the plugin version and what
    /// happened, e.g. `out_of_fuel: plugin:vip-tier@3: …`.
    pub fallback_detail: Option<String>,
    /// For duplicates, the open lead this one repeats.
    pub duplicate_of: Option<String>,
    /// Candidates considered, with their load then.
    pub candidates: Vec<CandidateView>,
    /// Where the time went.
    pub timings: TimingsView,
}

impl From<RouteOutcome> for RouteOutcomeView {
    fn from(o: RouteOutcome) -> Self {
        let (fallback, fallback_detail) = fallback_fields(o.fallback);
        RouteOutcomeView {
            lead_id: o.lead_id.to_string(),
            status: o.status.into(),
            rep_id: o.rep_id.map(String::from),
            territory_id: o.territory_id.to_string(),
            decided_by: o.decided_by,
            reason: o.reason,
            fallback,
            fallback_detail,
            duplicate_of: o.duplicate_of.map(|l| l.to_string()),
            candidates: o.candidates.into_iter().map(Into::into).collect(),
            timings: o.timings.into(),
        }
    }
}

/// `POST /v1/leads/batch`: up to 1000 leads. Each lead is checked on its own, so one
/// bad lead fails only its own slot.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    /// The leads, each as for `POST /v1/leads`.
    #[schema(value_type = Vec<LeadBody>, max_items = 1000)]
    pub leads: BatchLeads,
}

/// The leads of a batch as they came, each kept as its JSON text until it is parsed on
/// its own. Past [`MAX_BATCH`] they are counted, not kept: parsed into JSON values, a
/// body of a million tiny leads would take a hundred times its size in memory before
/// the count could refuse it.
#[derive(Debug, Default)]
pub struct BatchLeads {
    /// The first [`MAX_BATCH`] leads, in order (all of them within the limit).
    pub kept: Vec<Box<RawValue>>,
    /// How many leads the batch holds.
    pub total: usize,
}

impl<'de> Deserialize<'de> for BatchLeads {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Leads;
        impl<'de> Visitor<'de> for Leads {
            type Value = BatchLeads;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of leads")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<BatchLeads, A::Error> {
                let mut leads = BatchLeads::default();
                loop {
                    let more = if leads.kept.len() < MAX_BATCH {
                        seq.next_element::<Box<RawValue>>()?
                            .map(|lead| leads.kept.push(lead))
                    } else {
                        seq.next_element::<IgnoredAny>()?.map(drop)
                    };
                    if more.is_none() {
                        return Ok(leads);
                    }
                    leads.total += 1;
                }
            }
        }
        deserializer.deserialize_seq(Leads)
    }
}

/// One slot of a batch answer: an outcome or an error.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(untagged)]
pub enum BatchItem {
    /// The lead was routed (or recognised as a duplicate).
    Outcome(RouteOutcomeView),
    /// The lead was rejected; nothing was stored for it.
    Error(ErrorBody),
}

/// The answer to a batch: one item per lead, in order.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct BatchResults {
    /// One per lead, in input order.
    pub results: Vec<BatchItem>,
}
