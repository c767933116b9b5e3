//! The audit trail: every event of a lead, in order, with the why.

use serde::{Deserialize, Serialize};

use super::{Outcome, RepId, Stage, TerritoryId};
use crate::clock::UnixMillis;

/// One candidate as it stood when a decision was made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CandidateSnapshot {
    /// The rep.
    pub rep: RepId,
    /// Its open leads at that moment.
    pub load: u32,
    /// Its capacity at that moment.
    pub capacity: u32,
}

/// Something that happened to a lead.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryEvent {
    /// A rep got the lead.
    Routed {
        /// The territory that decided.
        territory: TerritoryId,
        /// The rep chosen.
        rep: RepId,
        /// `builtin:NAME` or `plugin:NAME@VERSION`.
        decided_by: String,
        /// The strategy's explanation.
        reason: String,
        /// Every candidate considered, with its load.
        candidates: Vec<CandidateSnapshot>,
        /// Why the territory's fallback decided instead of its strategy, if it did.
        fallback: Option<String>,
        /// Whether the lead waited in the queue first.
        from_queue: bool,
        /// Microseconds spent deciding.
        decide_micros: u32,
        /// Microseconds spent reserving capacity.
        reserve_micros: u32,
    },
    /// No rep had capacity; the lead waits in its territory's queue.
    Queued {
        /// The territory.
        territory: TerritoryId,
        /// Why.
        reason: String,
    },
    /// The same contact arrived again while this lead was open.
    Duplicate {
        /// Which keys matched (`phone`, `email`, `external_id`).
        matched: Vec<String>,
        /// Source of the repeat.
        source: Option<String>,
    },
    /// First contact.
    Touched,
    /// A stage was reached.
    Stage {
        /// Which.
        stage: Stage,
    },
    /// The lead moved from one rep to another (or back to the queue).
    Reassigned {
        /// The previous rep.
        from: RepId,
        /// The new rep; `None` when the lead went back to the queue.
        to: Option<RepId>,
        /// Why (`rep_deleted`, `sla_breach`, …).
        why: String,
    },
    /// The lead closed.
    Closed {
        /// Won or lost.
        outcome: Outcome,
    },
    /// The territory's shadow plugin version would have picked another rep than the
    /// one chosen (recorded with the routing it shadowed; agreement is only counted).
    ShadowDisagreed {
        /// The shadow plugin.
        plugin: String,
        /// Its version.
        version: u32,
        /// The rep actually chosen.
        chosen: RepId,
        /// The shadow's first ranked rep that had room; `None` when it ranked none of
        /// them.
        shadow_pick: Option<RepId>,
        /// The shadow's explanation.
        reason: String,
    },
}

/// A history event with its time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// When it happened.
    pub at: UnixMillis,
    /// What happened.
    pub event: HistoryEvent,
}
