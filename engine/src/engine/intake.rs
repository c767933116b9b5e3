//! Intake: routing new leads, one at a time or in batches, and simulations.
//!
//! A route runs in two halves. `begin` is synchronous: validate, look the contact keys
//! up among open leads, resolve the territory, and hand the lead to its territory.
//! `finish` awaits the decision and its durable commit. A batch begins every lead
//! before finishing any, so its commits share flushes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::Engine;
use crate::actors::rep::Release;
use crate::actors::territory::{Route, RouteKind, RouteReply, Simulate, Target, Unqueue};
use crate::actors::{Decision, Placement, SimulatedDecision};
use crate::dedupe;
use crate::domain::{CandidateSnapshot, Lead, LeadId, LeadInput, RepId, TerritoryId};
use crate::error::{EngineError, Result};
use crate::store::commit::{Applied, Change, Receipt, settle};

/// What happened to a lead at intake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteStatus {
    /// A rep has it.
    Assigned,
    /// It waits for capacity.
    Queued,
    /// It repeats an open lead; nothing new was stored.
    Duplicate,
}

impl RouteStatus {
    /// Every status.
    pub const ALL: [RouteStatus; 3] = [
        RouteStatus::Assigned,
        RouteStatus::Queued,
        RouteStatus::Duplicate,
    ];

    /// The label used in metrics and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteStatus::Assigned => "assigned",
            RouteStatus::Queued => "queued",
            RouteStatus::Duplicate => "duplicate",
        }
    }
}

/// Time spent in each stage of one route.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Timings {
    /// Validation and de-duplication check.
    pub dedupe: Duration,
    /// Ranking.
    pub decide: Duration,
    /// Reserving capacity with reps.
    pub reserve: Duration,
    /// Waiting for the durable commit.
    pub commit: Duration,
    /// Intake to durable answer.
    pub total: Duration,
}

/// The durable outcome of routing one lead.
#[derive(Clone, Debug)]
pub struct RouteOutcome {
    /// The new lead, or for a duplicate the existing one.
    pub lead_id: LeadId,
    /// What happened.
    pub status: RouteStatus,
    /// The owning rep (for a duplicate, the existing lead's).
    pub rep_id: Option<RepId>,
    /// The territory.
    pub territory_id: TerritoryId,
    /// `builtin:NAME` or `plugin:NAME@VERSION`; `None` for duplicates.
    pub decided_by: Option<String>,
    /// Why.
    pub reason: String,
    /// Why a fallback decided, if one did.
    pub fallback: Option<String>,
    /// For duplicates, the lead this one repeats.
    pub duplicate_of: Option<LeadId>,
    /// Candidates considered, with their load then.
    pub candidates: Vec<CandidateSnapshot>,
    /// Where the time went.
    pub timings: Timings,
}

/// What a simulation would do with a lead.
#[derive(Clone, Debug)]
pub struct Simulation {
    /// The territory that would decide.
    pub territory_id: TerritoryId,
    /// The open lead it would duplicate, if any.
    pub duplicate_of: Option<LeadId>,
    /// The decision.
    pub decision: SimulatedDecision,
}

/// A route between its two halves.
enum Begun {
    /// The index says it repeats `of`; the hit is being recorded.
    Duplicate {
        lead: Arc<Lead>,
        keys: Vec<String>,
        receipt: Receipt,
    },
    /// Its territory is deciding.
    Routing {
        lead: Arc<Lead>,
        territory: TerritoryId,
        reply: oneshot::Receiver<Result<RouteReply>>,
    },
}

struct InFlight {
    begun: Begun,
    started: Instant,
    dedupe: Duration,
}

impl Engine {
    /// Routes one lead. `Ok` means the outcome is durable.
    /// Past the limit on leads in flight it answers [`EngineError::Overloaded`] at once.
    pub async fn route(&self, input: LeadInput) -> Result<RouteOutcome> {
        let _permit = self.enter()?;
        let _admitted = self.admit_leads(1)?;
        let flight = self.begin(&input)?;
        self.finish(flight).await
    }

    /// Routes many leads; results come back in input order. Their commits share
    /// flushes, so a batch costs far less than the same leads one by one. The batch
    /// is admitted whole or not at all: past the limit on leads in flight every lead
    /// is answered [`EngineError::Overloaded`] and none is routed.
    pub async fn route_batch(&self, inputs: &[LeadInput]) -> Vec<Result<RouteOutcome>> {
        let _permit = match self.enter() {
            Ok(p) => p,
            Err(_) => {
                return inputs
                    .iter()
                    .map(|_| Err(EngineError::ShuttingDown))
                    .collect();
            }
        };
        let _admitted = match self.admit_leads(inputs.len()) {
            Ok(p) => p,
            Err(e) => return inputs.iter().map(|_| Err(refusal_copy(&e))).collect(),
        };
        let begun: Vec<Result<InFlight>> = inputs.iter().map(|i| self.begin(i)).collect();
        let mut results = Vec::with_capacity(begun.len());
        for flight in begun {
            results.push(match flight {
                Ok(flight) => self.finish(flight).await,
                Err(e) => Err(e),
            });
        }
        results
    }

    /// Shows what routing `input` would decide, in `territory` or the one its region
    /// resolves to. Nothing is reserved or stored.
    pub async fn simulate(
        &self,
        input: &LeadInput,
        territory: Option<&TerritoryId>,
    ) -> Result<Simulation> {
        self.simulate_with(input, territory, None).await
    }

    /// Like [`Engine::simulate`], optionally ranking with plugin `(name, version)`
    /// (`None` = its active version) and the territory's `plugin_config` instead of the
    /// territory's own strategy: how would this version decide? Plugin statistics and
    /// circuit breakers are left alone.
    pub async fn simulate_with(
        &self,
        input: &LeadInput,
        territory: Option<&TerritoryId>,
        plugin: Option<(&str, Option<u32>)>,
    ) -> Result<Simulation> {
        let _permit = self.enter()?;
        let lead = Arc::new(input.validate(self.next_lead_id(), self.now())?);
        let duplicate_of = self
            .inner
            .store
            .duplicate_of(&dedupe::keys(&lead))
            .map(|(id, _)| id);
        let (territory_id, addr, config) = {
            let dir = self.directory();
            let id = match territory {
                Some(t) => t.clone(),
                None => self.resolve(&dir, &lead)?,
            };
            let entry = dir
                .territories
                .get(&id)
                .ok_or_else(|| EngineError::TerritoryNotFound(id.clone()))?;
            (id, entry.addr.clone(), entry.territory.clone())
        };
        let strategy = match plugin {
            Some((name, version)) => Some(self.plugin_strategy_for(name, version, &config)?),
            None => None,
        };
        let decision = addr
            .send(Simulate(lead, strategy))
            .await
            .map_err(|_| EngineError::ShuttingDown)?;
        Ok(Simulation {
            territory_id,
            duplicate_of,
            decision,
        })
    }

    fn resolve(&self, dir: &super::Directory, lead: &Lead) -> Result<TerritoryId> {
        dir.regions
            .resolve(lead.region.as_deref())
            .cloned()
            .ok_or_else(|| EngineError::NoTerritory {
                region: lead.region.clone(),
            })
    }

    fn begin(&self, input: &LeadInput) -> Result<InFlight> {
        let started = Instant::now();
        self.inner.metrics.leads_received.inc();
        let lead = Arc::new(input.validate(self.next_lead_id(), self.now())?);
        let keys = dedupe::keys(&lead);
        let begun = match self.inner.store.duplicate_of(&keys) {
            Some((of, matched)) => {
                let receipt = self.inner.committer.submit(Change::Duplicate {
                    of,
                    matched,
                    source: lead.source.clone(),
                    at: lead.received_at,
                });
                Begun::Duplicate {
                    lead,
                    keys,
                    receipt,
                }
            }
            None => self.send_route(lead, keys)?,
        };
        let dedupe = started.elapsed();
        self.inner
            .metrics
            .route_stage_duration
            .with_label_values(&["dedupe"])
            .observe(dedupe.as_secs_f64());
        Ok(InFlight {
            begun,
            started,
            dedupe,
        })
    }

    fn send_route(&self, lead: Arc<Lead>, keys: Vec<String>) -> Result<Begun> {
        let (reply, rx) = oneshot::channel();
        let dir = self.directory();
        let territory = self.resolve(&dir, &lead)?;
        let entry = dir
            .territories
            .get(&territory)
            .ok_or_else(|| EngineError::TerritoryNotFound(territory.clone()))?;
        entry.addr.do_send(Route {
            lead: lead.clone(),
            kind: RouteKind::New { keys },
            exclude: Vec::new(),
            target: Target::Ranked,
            reply,
        });
        Ok(Begun::Routing {
            lead,
            territory,
            reply: rx,
        })
    }

    async fn finish(&self, mut flight: InFlight) -> Result<RouteOutcome> {
        if let Begun::Duplicate {
            lead,
            keys,
            receipt,
        } = flight.begun
        {
            match settle(receipt).await {
                Ok(applied) => return Ok(self.duplicate(applied, flight.dedupe, flight.started)),
                // The earlier lead closed meanwhile: this one is new after all.
                Err(EngineError::LeadClosed(_) | EngineError::LeadNotFound(_)) => {
                    flight.begun = self.send_route(lead, keys)?;
                }
                Err(e) => return Err(e),
            }
        }
        let Begun::Routing {
            lead,
            territory,
            reply,
        } = flight.begun
        else {
            unreachable!("duplicates returned above")
        };
        let RouteReply { decision, receipt } =
            reply.await.map_err(|_| EngineError::ShuttingDown)??;
        let commit_started = Instant::now();
        let applied = settle(receipt).await;
        let commit = commit_started.elapsed();
        let stage = |name: &str, d: Duration| {
            self.inner
                .metrics
                .route_stage_duration
                .with_label_values(&[name])
                .observe(d.as_secs_f64())
        };
        stage("decide", decision.decide);
        stage("reserve", decision.reserve);
        stage("commit", commit);
        match applied {
            Ok(Applied::Intake) => {
                let timings = Timings {
                    dedupe: flight.dedupe,
                    decide: decision.decide,
                    reserve: decision.reserve,
                    commit,
                    total: flight.started.elapsed(),
                };
                Ok(self.routed(lead.id, territory, decision, timings))
            }
            Ok(applied @ Applied::Duplicate { .. }) => {
                // Another lead with the same contact committed first.
                self.undo_placement(lead.id, &territory, &decision);
                Ok(self.duplicate(applied, flight.dedupe, flight.started))
            }
            Ok(other) => {
                self.undo_placement(lead.id, &territory, &decision);
                Err(EngineError::Internal(format!("intake answered {other:?}")))
            }
            Err(e) => {
                self.undo_placement(lead.id, &territory, &decision);
                Err(e)
            }
        }
    }

    /// Gives back what a decision took in memory when its commit did not happen.
    pub(super) fn undo_placement(
        &self,
        lead: LeadId,
        territory: &TerritoryId,
        decision: &Decision,
    ) {
        let dir = self.directory();
        match &decision.placement {
            Placement::Rep(rep) => {
                if let Some(e) = dir.reps.get(rep) {
                    e.addr.do_send(Release { lead });
                }
            }
            Placement::Queued => {
                if let Some(e) = dir.territories.get(territory) {
                    e.addr.do_send(Unqueue(lead));
                }
            }
        }
    }

    fn routed(
        &self,
        lead_id: LeadId,
        territory_id: TerritoryId,
        decision: Decision,
        timings: Timings,
    ) -> RouteOutcome {
        let (status, rep_id) = match decision.placement {
            Placement::Rep(rep) => (RouteStatus::Assigned, Some(rep)),
            Placement::Queued => (RouteStatus::Queued, None),
        };
        self.count(&territory_id, status, timings.total);
        RouteOutcome {
            lead_id,
            status,
            rep_id,
            territory_id,
            decided_by: Some(decision.decided_by),
            reason: decision.reason,
            fallback: decision.fallback,
            duplicate_of: None,
            candidates: decision.candidates,
            timings,
        }
    }

    fn duplicate(&self, applied: Applied, dedupe: Duration, started: Instant) -> RouteOutcome {
        let Applied::Duplicate {
            of,
            rep,
            territory,
            matched,
        } = applied
        else {
            unreachable!("only called with a duplicate receipt")
        };
        let timings = Timings {
            dedupe,
            total: started.elapsed(),
            ..Timings::default()
        };
        self.count(&territory, RouteStatus::Duplicate, timings.total);
        RouteOutcome {
            lead_id: of,
            status: RouteStatus::Duplicate,
            rep_id: rep,
            territory_id: territory,
            decided_by: None,
            reason: format!("same {} as open lead {of}", matched.join(" and ")),
            fallback: None,
            duplicate_of: Some(of),
            candidates: Vec::new(),
            timings,
        }
    }

    fn count(&self, territory: &TerritoryId, status: RouteStatus, total: Duration) {
        let m = &self.inner.metrics;
        m.leads_routed
            .with_label_values(&[territory.as_str(), status.as_str()])
            .inc();
        m.route_duration.observe(total.as_secs_f64());
    }
}

/// The same refusal again, for every lead of a refused batch.
fn refusal_copy(e: &EngineError) -> EngineError {
    match e {
        EngineError::Overloaded {
            what,
            in_flight,
            limit,
        } => EngineError::Overloaded {
            what,
            in_flight: *in_flight,
            limit: *limit,
        },
        _ => EngineError::ShuttingDown,
    }
}
