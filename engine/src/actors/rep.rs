//! `RepActor`: the only owner of one rep's load, capacity and status.
//!
//! Capacity is reserved here and nowhere else, one message at a time, so no
//! interleaving of territories can push a rep over capacity. Every change is
//! published to the rep's territories so their views stay close to the truth; a
//! stale view costs a refused reservation, never an over-assignment.

use std::sync::Arc;

use actix::prelude::*;

use super::territory::{MemberChanged, TerritoryActor};
use crate::clock::{Clock, UnixMillis};
use crate::domain::{LeadId, Rep, RepStatus};
use crate::metrics::Metrics;

/// A rep's state at one moment.
#[derive(Clone, Debug)]
pub struct RepSnapshot {
    /// Configuration.
    pub rep: Arc<Rep>,
    /// Open leads, including reservations not yet durable.
    pub load: u32,
    /// When the rep last got a lead.
    pub last_assigned_at: Option<UnixMillis>,
    /// Being deleted: takes no new leads whatever its status.
    pub retiring: bool,
    /// Increases with every change, so territories can ignore out-of-order news.
    pub version: u64,
}

impl RepSnapshot {
    /// Whether the rep can take one more lead now.
    pub fn has_room(&self) -> bool {
        !self.retiring && self.rep.status == RepStatus::Available && self.load < self.rep.capacity
    }
}

/// Takes one unit of load for `lead` if the rep has room. `Err` carries the current
/// state so the asking territory can correct its view.
#[derive(Message)]
#[rtype(result = "Result<RepSnapshot, RepSnapshot>")]
pub(crate) struct Reserve {
    pub lead: LeadId,
}

/// Gives back one unit of load (lead closed, moved, or its commit failed).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Release {
    pub lead: LeadId,
}

/// Corrects the load by what a store repair changed in the stored load (the start-up
/// audit found it wrong). A difference, not a value: leads reserved meanwhile stay
/// counted.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct AdjustLoad(pub i64);

/// New configuration and territory membership.
#[derive(Message)]
#[rtype(result = "RepSnapshot")]
pub(crate) struct Reconfigure {
    pub rep: Arc<Rep>,
    pub territories: Vec<Addr<TerritoryActor>>,
}

/// Stops (or resumes, with `false`) taking leads ahead of deletion.
#[derive(Message)]
#[rtype(result = "RepSnapshot")]
pub(crate) struct Retire(pub bool);

/// Reads the current state.
#[derive(Message)]
#[rtype(result = "RepSnapshot")]
pub(crate) struct Snapshot;

/// Stops the actor.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Stop;

/// See the module docs.
pub(crate) struct RepActor {
    rep: Arc<Rep>,
    load: u32,
    last_assigned_at: Option<UnixMillis>,
    retiring: bool,
    version: u64,
    territories: Vec<Addr<TerritoryActor>>,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
}

impl RepActor {
    pub(crate) fn new(
        rep: Arc<Rep>,
        load: u32,
        last_assigned_at: Option<UnixMillis>,
        territories: Vec<Addr<TerritoryActor>>,
        clock: Arc<dyn Clock>,
        metrics: Metrics,
    ) -> Self {
        let actor = RepActor {
            rep,
            load,
            last_assigned_at,
            retiring: false,
            version: 0,
            territories,
            clock,
            metrics,
        };
        actor.export_gauges();
        actor
    }

    fn snapshot(&self) -> RepSnapshot {
        RepSnapshot {
            rep: self.rep.clone(),
            load: self.load,
            last_assigned_at: self.last_assigned_at,
            retiring: self.retiring,
            version: self.version,
        }
    }

    fn export_gauges(&self) {
        let id = self.rep.id.as_str();
        self.metrics
            .rep_load
            .with_label_values(&[id])
            .set(i64::from(self.load));
        self.metrics
            .rep_capacity
            .with_label_values(&[id])
            .set(i64::from(self.rep.capacity));
    }

    /// Records a change and tells every territory of the rep about it.
    fn publish(&mut self) -> RepSnapshot {
        self.version += 1;
        self.export_gauges();
        let snap = self.snapshot();
        for territory in &self.territories {
            territory.do_send(MemberChanged(snap.clone()));
        }
        snap
    }
}

impl Actor for RepActor {
    type Context = Context<Self>;

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        let id = self.rep.id.as_str();
        let _ = self.metrics.rep_load.remove_label_values(&[id]);
        let _ = self.metrics.rep_capacity.remove_label_values(&[id]);
    }
}

impl Handler<Reserve> for RepActor {
    type Result = Result<RepSnapshot, RepSnapshot>;

    /// Takes capacity only if the rep is available, not retiring and under capacity.
    fn handle(&mut self, msg: Reserve, _ctx: &mut Context<Self>) -> Self::Result {
        if !self.snapshot().has_room() {
            return Err(self.snapshot());
        }
        self.load += 1;
        self.last_assigned_at = Some(self.clock.now());
        tracing::trace!(rep = %self.rep.id, lead = %msg.lead, load = self.load, "reserved");
        Ok(self.publish())
    }
}

impl Handler<Release> for RepActor {
    type Result = ();

    /// Frees one unit of load; territories hear of it and drain their queues.
    fn handle(&mut self, msg: Release, _ctx: &mut Context<Self>) {
        if self.load == 0 {
            tracing::error!(rep = %self.rep.id, lead = %msg.lead, "release with no load held");
            return;
        }
        self.load -= 1;
        self.publish();
    }
}

impl Handler<AdjustLoad> for RepActor {
    type Result = ();

    fn handle(&mut self, msg: AdjustLoad, _ctx: &mut Context<Self>) {
        let load = (i64::from(self.load) + msg.0).clamp(0, i64::from(u32::MAX));
        self.load = u32::try_from(load).unwrap_or(u32::MAX);
        self.publish();
    }
}

impl Handler<Reconfigure> for RepActor {
    type Result = MessageResult<Reconfigure>;

    /// Applies new configuration; load is kept. Raised capacity or a return to
    /// `available` reaches the territories at once.
    fn handle(&mut self, msg: Reconfigure, _ctx: &mut Context<Self>) -> Self::Result {
        self.rep = msg.rep;
        self.territories = msg.territories;
        MessageResult(self.publish())
    }
}

impl Handler<Retire> for RepActor {
    type Result = MessageResult<Retire>;

    fn handle(&mut self, msg: Retire, _ctx: &mut Context<Self>) -> Self::Result {
        self.retiring = msg.0;
        MessageResult(self.publish())
    }
}

impl Handler<Snapshot> for RepActor {
    type Result = MessageResult<Snapshot>;

    fn handle(&mut self, _msg: Snapshot, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.snapshot())
    }
}

impl Handler<Stop> for RepActor {
    type Result = ();

    fn handle(&mut self, _msg: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
