//! First-touch SLA enforcement: re-route leads whose rep did not touch them in time,
//! escalate the ones that keep missing, and count how fast leads are touched.
//!
//! Deadlines are set and cleared by the committer, in the same transaction as the
//! assignment or touch (see [`crate::sla`]). Nothing here runs by itself: the server
//! calls [`Engine::enforce_sla`] on a timer (every second from the start, so
//! deadlines that passed while the process was down fire as soon as the background
//! start-up work has loaded them), and tests call it after moving a manual clock.

use futures_util::stream::{self, StreamExt};

use super::{Engine, ReassignReason};
use crate::actors::territory::ESCALATION;
use crate::domain::{LeadId, LeadState, LeadStatus, RepId, RepStatus};
use crate::error::{EngineError, Result};

/// Most leads taken from the index per round of a sweep.
const SWEEP_ROUND: usize = 1024;

/// Re-routes running at once in a sweep: enough to fill a commit group.
const SWEEP_CONCURRENCY: usize = 64;

/// What one SLA sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlaSweep {
    /// Leads re-routed to another rep (or back to the queue) after a breach.
    pub rerouted: usize,
    /// Leads sent to their territory's escalation target.
    pub escalated: usize,
    /// Leads touched, moved or closed between the deadline and the re-route.
    pub skipped: usize,
}

impl Engine {
    /// Re-routes every assigned lead whose first-touch deadline has passed, as of the
    /// engine's clock. A lead that already used its territory's `sla_max_reroutes`
    /// goes to the escalation target instead and gets no further deadline. One sweep
    /// runs at a time; a second caller waits for it.
    pub async fn enforce_sla(&self) -> Result<SlaSweep> {
        let _permit = self.enter()?;
        let _one_at_a_time = self.inner.sla_sweep.lock().await;
        let mut sweep = SlaSweep::default();
        loop {
            let now = self.now();
            let due = self.inner.sla.due(now, SWEEP_ROUND);
            if due.is_empty() {
                break;
            }
            let mut breaches = Vec::with_capacity(due.len());
            for &(lead, _) in &due {
                breaches.push(self.breach(lead));
            }
            let results: Vec<_> = stream::iter(breaches)
                .buffer_unordered(SWEEP_CONCURRENCY)
                .collect()
                .await;
            let before = sweep;
            for result in results {
                match result? {
                    Breach::Rerouted => sweep.rerouted += 1,
                    Breach::Escalated => sweep.escalated += 1,
                    Breach::Skipped => sweep.skipped += 1,
                }
            }
            // Each lead taken either moved (new deadline or none) or was found not due
            // any more; a round that changed nothing would only repeat itself.
            if sweep.rerouted == before.rerouted && sweep.escalated == before.escalated {
                break;
            }
        }
        self.inner
            .metrics
            .sla_pending
            .set(self.inner.sla.len() as i64);
        Ok(sweep)
    }

    /// Handles one lead whose deadline passed.
    async fn breach(&self, lead: LeadId) -> Result<Breach> {
        let Some(state) = self.inner.store.lead(lead)? else {
            return Ok(Breach::Skipped);
        };
        if state.status != LeadStatus::Assigned || state.stage.is_some() {
            return Ok(Breach::Skipped);
        }
        let breaches = self.inner.store.sla(lead)?.map_or(0, |s| s.breaches);
        let max = self
            .directory()
            .territories
            .get(&state.territory)
            .map_or(0, |e| e.territory.sla_max_reroutes);
        let why = if breaches >= max {
            ReassignReason::SlaEscalation
        } else {
            ReassignReason::SlaBreach
        };
        match self.reassign_inner(lead, why).await {
            Ok(decision) => {
                let territory = [state.territory.as_str()];
                let m = &self.inner.metrics;
                m.sla_breaches.with_label_values(&territory).inc();
                // Also an escalation when no other rep could take it.
                let escalated =
                    why == ReassignReason::SlaEscalation || decision.decided_by == ESCALATION;
                tracing::info!(%lead, rep = ?state.rep, escalated,
                    "first-touch deadline missed; lead re-routed");
                if escalated {
                    m.sla_escalations.with_label_values(&territory).inc();
                    Ok(Breach::Escalated)
                } else {
                    Ok(Breach::Rerouted)
                }
            }
            Err(
                EngineError::SlaNotBreached(_)
                | EngineError::LeadClosed(_)
                | EngineError::LeadNotAssigned(_),
            ) => Ok(Breach::Skipped),
            Err(e) => Err(e),
        }
    }

    /// Re-routes the untouched leads of a rep that turned away or offline, in the
    /// territories that ask for it (`sla_reroute_when_away`). Returns how many moved.
    pub(super) async fn reroute_away(&self, rep: &RepId, status: RepStatus) -> Result<usize> {
        if status == RepStatus::Available {
            return Ok(0);
        }
        let mut moved = 0;
        for lead in self.inner.store.open_leads_of(rep)? {
            let Some(state) = self.inner.store.lead(lead)? else {
                continue;
            };
            let asks = self
                .directory()
                .territories
                .get(&state.territory)
                .is_some_and(|e| e.territory.sla_reroute_when_away);
            if !asks || state.stage.is_some() || state.rep.as_ref() != Some(rep) {
                continue;
            }
            match self.reassign_inner(lead, ReassignReason::RepAway).await {
                Ok(_) => moved += 1,
                Err(EngineError::LeadClosed(_) | EngineError::LeadNotAssigned(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(moved)
    }

    /// Counts a first touch: time from the assignment, and whether it beat the SLA.
    pub(super) fn observe_first_touch(&self, state: &LeadState) {
        let (Some(assigned), Some(touched)) = (state.assigned_at, state.touched_at) else {
            return;
        };
        let elapsed = touched.saturating_sub(assigned);
        let m = &self.inner.metrics;
        m.first_touch.observe(elapsed as f64 / 1000.0);
        let sla_ms = self
            .directory()
            .territories
            .get(&state.territory)
            .map(|e| e.territory.first_touch_sla_secs.saturating_mul(1000));
        if sla_ms.is_some_and(|sla| elapsed <= sla) {
            m.touched_within_sla
                .with_label_values(&[state.territory.as_str()])
                .inc();
        }
        m.sla_pending.set(self.inner.sla.len() as i64);
    }

    /// The lead's current first-touch deadline, if it is assigned and untouched.
    pub fn sla_deadline(&self, lead: LeadId) -> Option<crate::clock::UnixMillis> {
        self.inner.sla.deadline(lead)
    }
}

enum Breach {
    Rerouted,
    Escalated,
    Skipped,
}
