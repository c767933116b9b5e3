//! `TerritoryActor`: one territory's members view, strategy and capacity queue.
//!
//! Routing in a territory is strictly one lead at a time, in arrival order: requests
//! wait in an inbox while a reservation is in flight, and the queue of leads waiting
//! for capacity is always served before new arrivals. Reservation is asynchronous
//! (a message to each ranked rep in turn), so the actor keeps serving view updates,
//! inspections and simulations meanwhile.
//!
//! Each decision is turned into a store [`Change`] and submitted before the next one
//! is made, so the committer applies a territory's decisions in the order they were
//! taken.
//!
//! A territory with a shadow plugin version asks it too, on the same candidates, after
//! its own strategy has ranked. The shadow's pick (its first ranked rep that had room
//! when reservation was tried) is compared with the rep actually reserved: agreement
//! is counted, a disagreement is added to the lead's history in the same commit as
//! the routing. A failing shadow is counted by reason and otherwise ignored: it never
//! touches the decision, the plugin's circuit breaker or the history.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;

use super::rep::{Release, RepActor, RepSnapshot, Reserve};
use crate::clock::Clock;
use crate::domain::{
    CandidateSnapshot, HistoryEntry, HistoryEvent, Lead, LeadId, LeadState, LeadStatus, RepId,
    Territory,
};
use crate::engine::ReassignReason;
use crate::error::{EngineError, Result};
use crate::metrics::Metrics;
use crate::plugins::{Trial, TrialOutcome};
use crate::store::commit::{Applied, Change, Committer, Reassignment, Receipt, settle};
use crate::strategy::{Candidate, Strategy};

/// Where a decision put the lead.
#[derive(Clone, Debug, PartialEq)]
pub enum Placement {
    /// With this rep.
    Rep(RepId),
    /// In the territory's queue.
    Queued,
}

/// A routing decision, as recorded in the lead's history.
#[derive(Clone, Debug)]
pub struct Decision {
    /// Where the lead went.
    pub placement: Placement,
    /// `builtin:NAME` or `plugin:NAME@VERSION`.
    pub decided_by: String,
    /// The strategy's explanation (or why the lead was queued).
    pub reason: String,
    /// Why a fallback decided, if one did.
    pub fallback: Option<String>,
    /// Every candidate considered, with its load then.
    pub candidates: Vec<CandidateSnapshot>,
    /// Time spent ranking.
    pub decide: Duration,
    /// Time spent reserving capacity.
    pub reserve: Duration,
}

/// What a simulation would decide; nothing is reserved or stored.
#[derive(Clone, Debug)]
pub struct SimulatedDecision {
    /// Ranked reps, best first.
    pub ranking: Vec<RepId>,
    /// Whether the lead would wait in the queue (older leads waiting, or nobody with room).
    pub would_queue: bool,
    /// `builtin:NAME` or `plugin:NAME@VERSION`.
    pub decided_by: String,
    /// The strategy's explanation.
    pub reason: String,
    /// Why a fallback would decide instead of the configured strategy, if it would.
    pub fallback: Option<String>,
    /// Every candidate considered.
    pub candidates: Vec<CandidateSnapshot>,
    /// Time spent ranking.
    pub decide: Duration,
}

/// A territory's state at one moment.
#[derive(Clone, Debug)]
pub struct TerritorySnapshot {
    /// Its configuration.
    pub territory: Arc<Territory>,
    /// Leads waiting, oldest first.
    pub queue: Vec<LeadId>,
    /// Members as the territory sees them.
    pub members: Vec<RepSnapshot>,
}

/// Why a lead is being routed.
#[derive(Clone, Debug)]
pub(crate) enum RouteKind {
    /// A new lead from intake, with its de-duplication keys.
    New { keys: Vec<String> },
    /// An assigned lead moving away from `from`.
    Reassign { from: RepId, why: ReassignReason },
}

/// `decided_by` of a decision made by an SLA escalation.
pub(crate) const ESCALATION: &str = "sla_escalation";

/// Who a routed lead may go to.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Target {
    /// The members with room, as the strategy ranks them.
    Ranked,
    /// Only this rep (an SLA escalation target); the queue if it has no room.
    Rep(RepId),
    /// The queue (an SLA escalation with no target rep).
    Queue,
}

/// The answer to [`Route`]: the decision, and the receipt of its durable commit.
pub(crate) struct RouteReply {
    pub decision: Decision,
    pub receipt: Receipt,
}

/// Routes a lead; the reply arrives on `reply` once decided (not yet durable).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Route {
    pub lead: Arc<Lead>,
    pub kind: RouteKind,
    /// Reps that must not get the lead (earlier owners).
    pub exclude: Vec<RepId>,
    /// Who may get the lead.
    pub target: Target,
    pub reply: oneshot::Sender<Result<RouteReply>>,
}

/// Ranks reps for a lead without reserving or storing anything; with a strategy of
/// its own, ranks with that one instead of the territory's (trying a plugin version).
#[derive(Message)]
#[rtype(result = "SimulatedDecision")]
pub(crate) struct Simulate(pub Arc<Lead>, pub Option<Box<dyn Strategy>>);

/// A member's state changed.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct MemberChanged(pub RepSnapshot);

/// A rep joined the territory.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct AddMember(pub Addr<RepActor>, pub RepSnapshot);

/// A rep left the territory.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct RemoveMember(pub RepId);

/// New configuration, strategy and shadow.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Reconfigure(pub Arc<Territory>, pub Box<dyn Strategy>, pub Option<Trial>);

/// A lead a store repair put at the back of the queue.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Enqueue(pub Queued);

/// A queued lead left the queue another way (closed).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Unqueue(pub LeadId);

/// Answers once the territory is idle: nothing routing, nothing uncommitted.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Settle(pub oneshot::Sender<()>);

/// Reads the current state.
#[derive(Message)]
#[rtype(result = "TerritorySnapshot")]
pub(crate) struct Inspect;

struct Member {
    /// Shared, not cloned: cloning an actix `Addr` allocates a sender of its own, and
    /// a plan holds one address per ranked rep.
    addr: Arc<Addr<RepActor>>,
    snap: RepSnapshot,
}

/// A lead waiting for capacity.
pub(crate) struct Queued {
    pub lead: Arc<Lead>,
    pub exclude: Vec<RepId>,
}

/// What the in-flight reservation is for.
enum Job {
    Route(Route),
    Drain(LeadId),
}

/// A ranked plan, ready for reservation.
struct Plan {
    order: Vec<(RepId, Arc<Addr<RepActor>>)>,
    decided_by: String,
    reason: String,
    fallback: Option<String>,
    candidates: Vec<CandidateSnapshot>,
    decide: Duration,
    /// The shadow version's ranking of the same candidates, if it ran and answered.
    shadow: Option<ShadowPlan>,
}

/// What the shadow version would have done.
struct ShadowPlan {
    plugin: String,
    version: u32,
    order: Vec<RepId>,
    reason: String,
}

/// See the module docs.
pub(crate) struct TerritoryActor {
    territory: Arc<Territory>,
    strategy: Box<dyn Strategy>,
    shadow: Option<Trial>,
    members: BTreeMap<RepId, Member>,
    queue: VecDeque<Queued>,
    inbox: VecDeque<Route>,
    busy: bool,
    uncommitted: usize,
    settle_waiters: Vec<oneshot::Sender<()>>,
    committer: Arc<Committer>,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
}

impl TerritoryActor {
    pub(crate) fn new(
        territory: Arc<Territory>,
        strategy: Box<dyn Strategy>,
        shadow: Option<Trial>,
        queue: VecDeque<Queued>,
        committer: Arc<Committer>,
        clock: Arc<dyn Clock>,
        metrics: Metrics,
    ) -> Self {
        let actor = TerritoryActor {
            territory,
            strategy,
            shadow,
            members: BTreeMap::new(),
            queue,
            inbox: VecDeque::new(),
            busy: false,
            uncommitted: 0,
            settle_waiters: Vec::new(),
            committer,
            clock,
            metrics,
        };
        actor.export_queue_depth();
        actor
    }

    fn export_queue_depth(&self) {
        self.metrics
            .queue_depth
            .with_label_values(&[self.territory.id.as_str()])
            .set(self.queue.len() as i64);
    }

    fn update_view(&mut self, snap: RepSnapshot) {
        if let Some(member) = self.members.get_mut(&snap.rep.id)
            && snap.version >= member.snap.version
        {
            member.snap = snap;
        }
    }

    fn any_room(&self) -> bool {
        self.members.values().any(|m| m.snap.has_room())
    }

    /// Ranks the members with room for `lead` with the territory's strategy, and its
    /// shadow's ranking beside it.
    fn plan(&self, lead: &Lead, exclude: &[RepId]) -> Plan {
        self.plan_with(&*self.strategy, lead, exclude, false)
    }

    /// Plans a route to its target: ranked by the strategy, or an escalation's.
    fn plan_route(&self, route: &Route) -> Plan {
        let (member, reason) = match &route.target {
            Target::Ranked => return self.plan(&route.lead, &route.exclude),
            Target::Rep(rep) => (
                self.members.get(rep).filter(|m| m.snap.has_room()),
                format!("escalated to {rep}"),
            ),
            Target::Queue => (None, "escalated to the queue".to_string()),
        };
        Plan {
            order: member
                .map(|m| vec![(m.snap.rep.id.clone(), m.addr.clone())])
                .unwrap_or_default(),
            decided_by: ESCALATION.into(),
            reason,
            fallback: None,
            candidates: member
                .map(|m| {
                    vec![CandidateSnapshot {
                        rep: m.snap.rep.id.clone(),
                        load: m.snap.load,
                        capacity: m.snap.rep.capacity,
                    }]
                })
                .unwrap_or_default(),
            decide: Duration::ZERO,
            shadow: None,
        }
    }

    /// The territory's first-touch SLA in milliseconds.
    fn sla_ms(&self) -> u64 {
        self.territory.first_touch_sla_secs.saturating_mul(1000)
    }

    /// Ranks the members with room for `lead` with `strategy`; `dry` for simulations,
    /// which run no shadow. A plugin strategy that fails has already let its fallback
    /// rank, so the plan is as good as a built-in's and says why in `fallback`.
    fn plan_with(
        &self,
        strategy: &dyn Strategy,
        lead: &Lead,
        exclude: &[RepId],
        dry: bool,
    ) -> Plan {
        let started = Instant::now();
        let members: Vec<&Member> = self
            .members
            .values()
            .filter(|m| m.snap.has_room() && !exclude.contains(&m.snap.rep.id))
            .collect();
        let candidates: Vec<Candidate<'_>> = members
            .iter()
            .map(|m| Candidate {
                id: &m.snap.rep.id,
                load: m.snap.load,
                capacity: m.snap.rep.capacity,
                weight: m.snap.rep.weight,
                skills: &m.snap.rep.skills,
                tier: &m.snap.rep.tier,
                last_assigned_at: m.snap.last_assigned_at,
            })
            .collect();
        let ranking = if dry {
            strategy.rank_dry(lead, &candidates)
        } else {
            strategy.rank(lead, &candidates)
        };
        let order: Vec<_> = ranking
            .order
            .iter()
            .filter_map(|&i| members.get(i))
            .map(|m| (m.snap.rep.id.clone(), m.addr.clone()))
            .collect();
        let decide = started.elapsed();
        // Only a decision that will be reserved is worth shadowing; the shadow's time
        // is not the decision's.
        let shadow = match &self.shadow {
            Some(trial) if !dry && !order.is_empty() => self.run_shadow(trial, lead, &candidates),
            _ => None,
        };
        let snapshot = candidates
            .iter()
            .map(|c| CandidateSnapshot {
                rep: c.id.clone(),
                load: c.load,
                capacity: c.capacity,
            })
            .collect();
        Plan {
            order,
            decided_by: ranking.decided_by.unwrap_or_else(|| strategy.decided_by()),
            reason: self.explain(lead, ranking.reason),
            fallback: ranking.fallback,
            candidates: snapshot,
            decide,
            shadow,
        }
    }

    /// `reason`, after the note that `lead` is here because this is the default
    /// territory, when it is: a lead from outside every territory's regions should
    /// not read as one of this territory's own.
    fn explain(&self, lead: &Lead, reason: String) -> String {
        match self.territory.default_note(lead.region.as_deref()) {
            Some(note) => format!("{note}; {reason}"),
            None => reason,
        }
    }

    /// Asks the shadow version to rank the same candidates; a failure is counted and
    /// yields nothing to compare.
    fn run_shadow(
        &self,
        trial: &Trial,
        lead: &Lead,
        candidates: &[Candidate<'_>],
    ) -> Option<ShadowPlan> {
        match trial.run(lead, candidates, self.clock.now()) {
            TrialOutcome::Ranked { order, reason } => Some(ShadowPlan {
                plugin: trial.plugin().to_string(),
                version: trial.version(),
                order: order
                    .into_iter()
                    .filter_map(|i| candidates.get(i).map(|c| c.id.clone()))
                    .collect(),
                reason,
            }),
            TrialOutcome::Failed(failure) => {
                self.metrics
                    .plugin_shadow_failures
                    .with_label_values(&[trial.plugin(), failure.reason.as_str()])
                    .inc();
                tracing::debug!(plugin = trial.plugin(), version = trial.version(),
                    %failure, "shadow plugin run failed; not compared");
                None
            }
        }
    }

    /// Compares the shadow's pick with the rep reserved: its first ranked rep that
    /// did not refuse the reservation (reps the reservation never reached had room as
    /// far as anyone knows). Counts the verdict; a disagreement becomes history.
    fn judge_shadow(
        &self,
        shadow: Option<ShadowPlan>,
        chosen: &RepId,
        refused: &[RepId],
        at: u64,
    ) -> Option<HistoryEntry> {
        let shadow = shadow?;
        let pick = shadow.order.into_iter().find(|r| !refused.contains(r));
        let agree = pick.as_ref() == Some(chosen);
        self.metrics
            .plugin_shadow
            .with_label_values(&[shadow.plugin.as_str(), if agree { "true" } else { "false" }])
            .inc();
        (!agree).then(|| HistoryEntry {
            at,
            event: HistoryEvent::ShadowDisagreed {
                plugin: shadow.plugin,
                version: shadow.version,
                chosen: chosen.clone(),
                shadow_pick: pick,
                reason: shadow.reason,
            },
        })
    }

    /// Serves the queue, then the inbox, until a reservation is in flight or there is
    /// nothing left to do.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        while !self.busy {
            if self.any_room()
                && let Some((id, plan)) = self.first_servable()
            {
                self.start(ctx, Job::Drain(id), plan);
                return;
            }
            let Some(mut route) = self.inbox.pop_front() else {
                break;
            };
            if !self.queue.is_empty() && !self.any_room() {
                // Older leads are waiting: capacity goes to them first.
                let reason = format!("{} older lead(s) waiting for capacity", self.queue.len());
                self.enqueue(route, None, reason);
                continue;
            }
            // Nothing waits, or what waits cannot use the room there is (every rep with
            // room had those leads before): this lead need not wait behind them.
            let mut plan = self.plan_route(&route);
            if plan.order.is_empty() && self.escalate_instead(&mut route) {
                plan = self.plan_route(&route);
            }
            if plan.order.is_empty() {
                let reason = match route.target {
                    Target::Ranked => "no rep has capacity".into(),
                    _ => plan.reason.clone(),
                };
                self.enqueue(route, Some(plan), reason);
                continue;
            }
            self.start(ctx, Job::Route(route), plan);
            return;
        }
        self.check_settled();
    }

    /// The oldest queued lead some rep with room may take (one that never had it),
    /// planned. Leads only their earlier owners have room for are passed over, so they
    /// never hold up the leads behind them.
    fn first_servable(&self) -> Option<(LeadId, Plan)> {
        self.queue.iter().find_map(|q| {
            let eligible = self
                .members
                .values()
                .any(|m| m.snap.has_room() && !q.exclude.contains(&m.snap.rep.id));
            if !eligible {
                return None;
            }
            let plan = self.plan(&q.lead, &q.exclude);
            (!plan.order.is_empty()).then_some((q.lead.id, plan))
        })
    }

    /// An SLA re-route with no other rep to go to escalates instead: to the escalation
    /// rep, or the queue open to every rep. Returns whether it did.
    fn escalate_instead(&self, route: &mut Route) -> bool {
        let RouteKind::Reassign { why, .. } = &mut route.kind else {
            return false;
        };
        if *why != ReassignReason::SlaBreach {
            return false;
        }
        *why = ReassignReason::SlaEscalation;
        route.target = match &self.territory.sla_escalation_rep {
            Some(rep) => Target::Rep(rep.clone()),
            None => Target::Queue,
        };
        route.exclude.clear();
        true
    }

    /// Reserves with the planned reps in order; continues in [`Self::finish`].
    fn start(&mut self, ctx: &mut Context<Self>, job: Job, mut plan: Plan) {
        self.busy = true;
        let lead = match &job {
            Job::Route(r) => r.lead.id,
            Job::Drain(id) => *id,
        };
        let order = std::mem::take(&mut plan.order);
        let started = Instant::now();
        let reserve = async move {
            let mut refused = Vec::new();
            for (_, addr) in order {
                match addr.send(Reserve { lead }).await {
                    Ok(Ok(snap)) => return (Some((snap, addr)), refused),
                    Ok(Err(snap)) => refused.push(snap),
                    Err(_) => {} // the rep was removed meanwhile
                }
            }
            (None, refused)
        };
        ctx.spawn(
            reserve
                .into_actor(self)
                .map(move |(reserved, refused), act, ctx| {
                    act.busy = false;
                    let refused_ids: Vec<RepId> =
                        refused.iter().map(|s| s.rep.id.clone()).collect();
                    for snap in refused {
                        act.update_view(snap);
                    }
                    act.finish(ctx, job, plan, reserved, &refused_ids, started.elapsed());
                    act.pump(ctx);
                }),
        );
    }

    fn finish(
        &mut self,
        ctx: &mut Context<Self>,
        job: Job,
        mut plan: Plan,
        reserved: Option<(RepSnapshot, Arc<Addr<RepActor>>)>,
        refused: &[RepId],
        reserve: Duration,
    ) {
        let Some((snap, rep_addr)) = reserved else {
            match job {
                Job::Route(route) => {
                    self.enqueue(route, Some(plan), "every ranked rep was full".into())
                }
                Job::Drain(_) => {} // views were corrected; the queue waits for news
            }
            return;
        };
        let rep = snap.rep.id.clone();
        self.update_view(snap.clone());
        // The rep stamped the reservation; the store records the same instant, so
        // memory and store agree on `last_assigned_at` across a restart.
        let now = snap.last_assigned_at.unwrap_or_else(|| self.clock.now());
        let from_queue = matches!(job, Job::Drain(_));
        let disagreed = self.judge_shadow(plan.shadow.take(), &rep, refused, now);
        let decision = Decision {
            placement: Placement::Rep(rep.clone()),
            decided_by: plan.decided_by,
            reason: plan.reason,
            fallback: plan.fallback,
            candidates: plan.candidates,
            decide: plan.decide,
            reserve,
        };
        let routed = HistoryEntry {
            at: now,
            event: routed_event(&self.territory, &decision, from_queue),
        };
        match job {
            Job::Route(route) => {
                self.strategy.on_assigned(&rep, snap.rep.weight);
                let change = match route.kind {
                    RouteKind::New { keys } => Change::Intake {
                        state: Box::new(new_state(&route.lead, &self.territory, Some(rep), now)),
                        keys,
                        history: [Some(routed), disagreed].into_iter().flatten().collect(),
                        sla_ms: self.sla_ms(),
                    },
                    RouteKind::Reassign { from, why } => Change::Reassign(Reassignment {
                        lead: route.lead.id,
                        history: [
                            Some(HistoryEntry {
                                at: now,
                                event: HistoryEvent::Reassigned {
                                    from: from.clone(),
                                    to: Some(rep),
                                    why: why.as_str().to_string(),
                                },
                            }),
                            Some(routed),
                            disagreed,
                        ]
                        .into_iter()
                        .flatten()
                        .collect(),
                        from,
                        to: Some(snap.rep.id.clone()),
                        at: now,
                        why,
                        sla_ms: self.sla_ms(),
                    }),
                };
                let receipt = self.committer.submit(change);
                let _ = route.reply.send(Ok(RouteReply { decision, receipt }));
            }
            Job::Drain(lead) => {
                let Some(pos) = self.queue.iter().position(|q| q.lead.id == lead) else {
                    // Closed while we reserved: give the capacity back.
                    rep_addr.do_send(Release { lead });
                    return;
                };
                let queued = self.queue.remove(pos);
                self.export_queue_depth();
                self.strategy.on_assigned(&rep, snap.rep.weight);
                let receipt = self.committer.submit(Change::AssignQueued {
                    lead,
                    territory: self.territory.id.clone(),
                    rep,
                    at: now,
                    history: [Some(routed), disagreed].into_iter().flatten().collect(),
                    sla_ms: self.sla_ms(),
                });
                self.uncommitted += 1;
                ctx.spawn(settle(receipt).into_actor(self).map(move |result, act, ctx| {
                    act.uncommitted -= 1;
                    match result {
                        // Closed meanwhile, or not queued here after all (the re-route
                        // that queued it was refused): it is not in the store's queue,
                        // and putting it back would drain it again and again.
                        Ok(Applied::NotQueued)
                        | Err(EngineError::LeadClosed(_) | EngineError::LeadNotFound(_)) => {
                            rep_addr.do_send(Release { lead });
                        }
                        Ok(_) => {}
                        // Not stored, so still queued in the store: back to the front.
                        Err(e) => {
                            tracing::warn!(%lead, error = %e, "queued lead's assignment not stored");
                            rep_addr.do_send(Release { lead });
                            if let Some(queued) = queued {
                                act.queue.push_front(queued);
                                act.export_queue_depth();
                            }
                        }
                    }
                    act.pump(ctx);
                }));
            }
        }
    }

    /// Queues a routed lead and submits that fact.
    fn enqueue(&mut self, route: Route, plan: Option<Plan>, reason: String) {
        let reason = match route.target {
            Target::Ranked => self.explain(&route.lead, reason),
            _ => reason,
        };
        let now = self.clock.now();
        let queued = HistoryEntry {
            at: now,
            event: HistoryEvent::Queued {
                territory: self.territory.id.clone(),
                reason: reason.clone(),
            },
        };
        let change = match route.kind {
            RouteKind::New { keys } => Change::Intake {
                state: Box::new(new_state(&route.lead, &self.territory, None, now)),
                keys,
                history: vec![queued],
                sla_ms: self.sla_ms(),
            },
            RouteKind::Reassign { from, why } => Change::Reassign(Reassignment {
                lead: route.lead.id,
                history: vec![
                    HistoryEntry {
                        at: now,
                        event: HistoryEvent::Reassigned {
                            from: from.clone(),
                            to: None,
                            why: why.as_str().to_string(),
                        },
                    },
                    queued,
                ],
                from,
                to: None,
                at: now,
                why,
                sla_ms: self.sla_ms(),
            }),
        };
        self.queue.push_back(Queued {
            lead: route.lead.clone(),
            exclude: route.exclude,
        });
        self.export_queue_depth();
        let receipt = self.committer.submit(change);
        let (candidates, decide, decided_by, fallback) = match plan {
            Some(p) => (p.candidates, p.decide, p.decided_by, p.fallback),
            None => (Vec::new(), Duration::ZERO, self.strategy.decided_by(), None),
        };
        let decision = Decision {
            placement: Placement::Queued,
            decided_by,
            reason,
            fallback,
            candidates,
            decide,
            reserve: Duration::ZERO,
        };
        let _ = route.reply.send(Ok(RouteReply { decision, receipt }));
    }

    fn check_settled(&mut self) {
        if !self.busy && self.inbox.is_empty() && self.uncommitted == 0 {
            for waiter in self.settle_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
    }
}

fn routed_event(territory: &Territory, d: &Decision, from_queue: bool) -> HistoryEvent {
    let Placement::Rep(rep) = &d.placement else {
        unreachable!("only assignments are recorded as routed")
    };
    HistoryEvent::Routed {
        territory: territory.id.clone(),
        rep: rep.clone(),
        decided_by: d.decided_by.clone(),
        reason: d.reason.clone(),
        candidates: d.candidates.clone(),
        fallback: d.fallback.clone(),
        from_queue,
        decide_micros: micros(d.decide),
        reserve_micros: micros(d.reserve),
    }
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

fn new_state(lead: &Lead, territory: &Territory, rep: Option<RepId>, now: u64) -> LeadState {
    LeadState {
        lead: lead.clone(),
        status: if rep.is_some() {
            LeadStatus::Assigned
        } else {
            LeadStatus::Queued
        },
        territory: territory.id.clone(),
        assigned_at: rep.as_ref().map(|_| now),
        rep,
        stage: None,
        touched_at: None,
        closed_at: None,
        previous_reps: Vec::new(),
        queue_seq: None,
        repeats: 0,
        last_repeat_at: None,
    }
}

impl Actor for TerritoryActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // A restored queue may be servable at once.
        self.pump(ctx);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        let _ = self
            .metrics
            .queue_depth
            .remove_label_values(&[self.territory.id.as_str()]);
    }
}

impl Handler<Route> for TerritoryActor {
    type Result = ();

    /// Takes the lead into the inbox; it is decided in arrival order.
    fn handle(&mut self, msg: Route, ctx: &mut Context<Self>) {
        self.inbox.push_back(msg);
        self.pump(ctx);
    }
}

impl Handler<Simulate> for TerritoryActor {
    type Result = MessageResult<Simulate>;

    fn handle(&mut self, msg: Simulate, _ctx: &mut Context<Self>) -> Self::Result {
        let strategy = msg.1.as_deref().unwrap_or(&*self.strategy);
        let plan = self.plan_with(strategy, &msg.0, &[], true);
        MessageResult(SimulatedDecision {
            would_queue: plan.order.is_empty() || !self.queue.is_empty(),
            ranking: plan.order.into_iter().map(|(id, _)| id).collect(),
            decided_by: plan.decided_by,
            reason: plan.reason,
            fallback: plan.fallback,
            candidates: plan.candidates,
            decide: plan.decide,
        })
    }
}

impl Handler<MemberChanged> for TerritoryActor {
    type Result = ();

    /// Updates the view; freed capacity drains the queue at once.
    fn handle(&mut self, msg: MemberChanged, ctx: &mut Context<Self>) {
        self.update_view(msg.0);
        self.pump(ctx);
    }
}

impl Handler<AddMember> for TerritoryActor {
    type Result = ();

    fn handle(&mut self, msg: AddMember, ctx: &mut Context<Self>) {
        let AddMember(addr, snap) = msg;
        self.members.insert(
            snap.rep.id.clone(),
            Member {
                addr: Arc::new(addr),
                snap,
            },
        );
        self.pump(ctx);
    }
}

impl Handler<RemoveMember> for TerritoryActor {
    type Result = ();

    fn handle(&mut self, msg: RemoveMember, _ctx: &mut Context<Self>) {
        self.members.remove(&msg.0);
    }
}

impl Handler<Reconfigure> for TerritoryActor {
    type Result = ();

    /// Takes effect for the next decision; one in flight finishes as planned.
    fn handle(&mut self, msg: Reconfigure, ctx: &mut Context<Self>) {
        self.territory = msg.0;
        self.strategy = msg.1;
        self.shadow = msg.2;
        self.pump(ctx);
    }
}

impl Handler<Enqueue> for TerritoryActor {
    type Result = ();

    fn handle(&mut self, msg: Enqueue, ctx: &mut Context<Self>) {
        if !self.queue.iter().any(|q| q.lead.id == msg.0.lead.id) {
            self.queue.push_back(msg.0);
        }
        self.export_queue_depth();
        self.pump(ctx);
    }
}

impl Handler<Unqueue> for TerritoryActor {
    type Result = ();

    fn handle(&mut self, msg: Unqueue, ctx: &mut Context<Self>) {
        self.queue.retain(|q| q.lead.id != msg.0);
        self.export_queue_depth();
        self.pump(ctx);
    }
}

impl Handler<Settle> for TerritoryActor {
    type Result = ();

    fn handle(&mut self, msg: Settle, _ctx: &mut Context<Self>) {
        self.settle_waiters.push(msg.0);
        self.check_settled();
    }
}

impl Handler<Inspect> for TerritoryActor {
    type Result = MessageResult<Inspect>;

    fn handle(&mut self, _msg: Inspect, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(TerritorySnapshot {
            territory: self.territory.clone(),
            queue: self.queue.iter().map(|q| q.lead.id).collect(),
            members: self.members.values().map(|m| m.snap.clone()).collect(),
        })
    }
}
