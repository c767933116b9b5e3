//! Reading leads, recording their lifecycle, and moving them between reps.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::Engine;
use crate::actors::Decision;
use crate::actors::rep::Release;
use crate::actors::territory::{ESCALATION, Route, RouteKind, Target, Unqueue};
use crate::config::Checkpoint;
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
    /// It breached the SLA again after the territory's allowed re-routes; it goes to
    /// the escalation target and stays.
    SlaEscalation,
    /// Its rep turned away or offline before touching it (when the territory asks).
    RepAway,
    /// An operator asked.
    Manual,
}

impl ReassignReason {
    /// Every reason.
    pub const ALL: [ReassignReason; 5] = [
        ReassignReason::RepDeleted,
        ReassignReason::SlaBreach,
        ReassignReason::SlaEscalation,
        ReassignReason::RepAway,
        ReassignReason::Manual,
    ];

    /// The label recorded in history and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ReassignReason::RepDeleted => "rep_deleted",
            ReassignReason::SlaBreach => "sla_breach",
            ReassignReason::SlaEscalation => "sla_escalation",
            ReassignReason::RepAway => "rep_away",
            ReassignReason::Manual => "manual",
        }
    }

    /// Whether the lead is moving because its first-touch deadline passed.
    pub fn is_sla_breach(self) -> bool {
        matches!(
            self,
            ReassignReason::SlaBreach | ReassignReason::SlaEscalation
        )
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
    /// may assign a queued lead. Returns the lead as the change left it, history
    /// included, once durable: the answer needs no read after the change, which
    /// could fail (the store being reopened) and turn a recorded event into an error.
    pub async fn record_event(&self, id: LeadId, event: LeadEventInput) -> Result<LeadView> {
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
            Applied::Advanced {
                state,
                history,
                released,
            } => {
                self.released(id, released.as_ref(), None);
                if state.stage == Some(Stage::FirstContact) {
                    self.observe_first_touch(&state);
                }
                Ok(LeadView {
                    state: *state,
                    history,
                })
            }
            Applied::Closed {
                state,
                history,
                released,
                unqueued,
            } => {
                self.released(id, released.as_ref(), unqueued.as_ref());
                Ok(LeadView {
                    state: *state,
                    history,
                })
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
        (self.inner.probe)(Checkpoint::ReassignRead);
        // An escalated lead may go to anyone, earlier owners included: it must land.
        let exclude = match why {
            ReassignReason::SlaEscalation => Vec::new(),
            _ => [state.previous_reps.as_slice(), std::slice::from_ref(&from)].concat(),
        };
        let (reply, rx) = oneshot::channel();
        {
            let dir = self.directory();
            let entry = dir
                .territories
                .get(&state.territory)
                .ok_or_else(|| EngineError::TerritoryNotFound(state.territory.clone()))?;
            let target = match (why, &entry.territory.sla_escalation_rep) {
                (ReassignReason::SlaEscalation, Some(rep)) => Target::Rep(rep.clone()),
                (ReassignReason::SlaEscalation, None) => Target::Queue,
                _ => Target::Ranked,
            };
            entry.addr.do_send(Route {
                lead: Arc::new(state.lead.clone()),
                kind: RouteKind::Reassign {
                    from: from.clone(),
                    why,
                },
                exclude,
                target,
                reply,
            });
        }
        let reply = rx.await.map_err(|_| EngineError::ShuttingDown)??;
        match settle(reply.receipt).await {
            Ok(Applied::Reassigned) => {
                self.released(id, Some(&from), None);
                // A breach with nobody else to take the lead escalated in the actor.
                let why = if reply.decision.decided_by == ESCALATION {
                    ReassignReason::SlaEscalation
                } else {
                    why
                };
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
