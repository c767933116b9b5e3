//! Reading leads, recording their lifecycle, and moving them between reps.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::Engine;
use crate::actors::Decision;
use crate::actors::rep::Release;
use crate::actors::territory::{Route, RouteKind, Unqueue};
use crate::domain::{
    HistoryEntry, LeadEventInput, LeadId, LeadState, LeadStatus, RepId, Stage, TerritoryId,
};
use crate::error::{EngineError, Result};
use crate::store::commit::{Applied, Change, settle};

/// Why a lead moves to another rep; a closed set, so it can label metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReassignReason {
    /// Its rep is being deleted.
    RepDeleted,
    /// Its rep did not touch it within the territory's first-touch SLA.
    SlaBreach,
    /// An operator asked.
    Manual,
}

impl ReassignReason {
    /// The label recorded in history and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ReassignReason::RepDeleted => "rep_deleted",
            ReassignReason::SlaBreach => "sla_breach",
            ReassignReason::Manual => "manual",
        }
    }
}

/// A lead with its full history.
#[derive(Clone, Debug)]
pub struct LeadView {
    /// Current state.
    pub state: LeadState,
    /// Every event, oldest first.
    pub history: Vec<HistoryEntry>,
}

impl Engine {
    /// Reads a lead and its history.
    pub fn lead(&self, id: LeadId) -> Result<Option<LeadView>> {
        let Some(state) = self.inner.store.lead(id)? else {
            return Ok(None);
        };
        let history = self.inner.store.history(id)?;
        Ok(Some(LeadView { state, history }))
    }

    /// Records a lifecycle event. Closing (or signing) frees the rep's load, which
    /// may assign a queued lead. Returns the lead's new state once durable.
    pub async fn record_event(&self, id: LeadId, event: LeadEventInput) -> Result<LeadState> {
        let _permit = self.enter()?;
        let _admitted = self.admit_leads(1)?;
        let at = self.now();
        let change = match event {
            LeadEventInput::Touched => Change::Advance {
                lead: id,
                stage: Stage::FirstContact,
                touched: true,
                at,
            },
            LeadEventInput::Stage { stage } => Change::Advance {
                lead: id,
                stage,
                touched: false,
                at,
            },
            LeadEventInput::Closed { outcome } => Change::Close {
                lead: id,
                outcome,
                at,
            },
        };
        match settle(self.inner.committer.submit(change)).await? {
            Applied::Advanced { state, released } => {
                self.released(id, released.as_ref(), None);
                Ok(*state)
            }
            Applied::Closed {
                state,
                released,
                unqueued,
            } => {
                self.released(id, released.as_ref(), unqueued.as_ref());
                Ok(*state)
            }
            other => Err(EngineError::Internal(format!("event answered {other:?}"))),
        }
    }

    /// Tells the actors that a durable change freed a rep's load or a queue slot.
    fn released(&self, lead: LeadId, rep: Option<&RepId>, queue: Option<&TerritoryId>) {
        let dir = self.directory();
        if let Some(e) = rep.and_then(|r| dir.reps.get(r)) {
            e.addr.do_send(Release { lead });
        }
        if let Some(e) = queue.and_then(|t| dir.territories.get(t)) {
            e.addr.do_send(Unqueue(lead));
        }
    }

    /// Moves an assigned lead to another rep of its territory (never one that owned it
    /// before), or back to the queue when nobody has room. `why` is recorded and
    /// counted in `leadroute_reassignments_total{reason}`.
    pub async fn reassign(&self, id: LeadId, why: ReassignReason) -> Result<Decision> {
        let _permit = self.enter()?;
        let _admitted = self.admit_leads(1)?;
        self.reassign_inner(id, why).await
    }

    pub(super) async fn reassign_inner(&self, id: LeadId, why: ReassignReason) -> Result<Decision> {
        let state = self
            .inner
            .store
            .lead(id)?
            .ok_or(EngineError::LeadNotFound(id))?;
        let from = match (state.status, &state.rep) {
            (LeadStatus::Assigned, Some(rep)) => rep.clone(),
            (LeadStatus::Closed(_), _) => return Err(EngineError::LeadClosed(id)),
            _ => return Err(EngineError::LeadNotAssigned(id)),
        };
        let mut exclude = state.previous_reps.clone();
        exclude.push(from.clone());
        let (reply, rx) = oneshot::channel();
        {
            let dir = self.directory();
            let entry = dir
                .territories
                .get(&state.territory)
                .ok_or_else(|| EngineError::TerritoryNotFound(state.territory.clone()))?;
            entry.addr.do_send(Route {
                lead: Arc::new(state.lead.clone()),
                kind: RouteKind::Reassign {
                    from: from.clone(),
                    why: why.as_str().to_string(),
                },
                exclude,
                reply,
            });
        }
        let reply = rx.await.map_err(|_| EngineError::ShuttingDown)??;
        match settle(reply.receipt).await {
            Ok(Applied::Reassigned) => {
                self.released(id, Some(&from), None);
                self.inner
                    .metrics
                    .reassignments
                    .with_label_values(&[why.as_str()])
                    .inc();
                Ok(reply.decision)
            }
            Ok(other) => {
                self.undo_placement(id, &state.territory, &reply.decision);
                Err(EngineError::Internal(format!(
                    "reassign answered {other:?}"
                )))
            }
            Err(e) => {
                self.undo_placement(id, &state.territory, &reply.decision);
                Err(e)
            }
        }
    }
}
