//! Replay: stored routing decisions run through a plugin version, to see what it
//! would have changed. Nothing is stored, reserved or counted.
//!
//! Each `routed` history entry holds every candidate with its load and capacity at
//! decision time; that is the input rebuilt for the version. What the history does
//! not hold is taken as well as it can be:
//! - skills, tier and weight are the reps' *current* ones (a rep deleted since has
//!   none, tier `""`, weight 1);
//! - `last_assigned_at` is rebuilt from the replayed decisions themselves, so ties
//!   broken by idle time are exact once every rep has been assigned within the
//!   replayed window, and may differ before that;
//! - `plugin_config` is the territory's current one; decisions of territories that no
//!   longer exist are skipped;
//! - `now` is the decision's own time.
//!
//! The version's pick is its first ranked rep. A live decision whose first choice
//! refused the reservation (a view a moment stale) can therefore show up as a change.
//!
//! Cost: a replay reads up to [`MAX_REPLAY_LIMIT`] leads with their histories and
//! makes a plugin call per decision, seconds of one core, on a thread of its own. So
//! only one runs at a time (another is refused with
//! [`EngineError::ReplayInProgress`]), and one whose caller goes away (the client
//! hangs up, the request future is dropped) stops at its next lead or decision and
//! gives its place back.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;
use tokio::sync::oneshot;

use super::{Engine, Slot};
use crate::clock::UnixMillis;
use crate::config::{Checkpoint, Probe};
use crate::domain::{HistoryEvent, LeadId, Rep, RepId, Territory, TerritoryId};
use crate::error::{EngineError, Result, ValidationError};
use crate::plugins::{FailureReason, Trial, TrialOutcome, not_found};
use crate::store::Store;
use crate::strategy::Candidate;

/// Leads replayed when the caller does not say.
pub const DEFAULT_REPLAY_LIMIT: u32 = 1000;
/// Most leads one replay examines.
pub const MAX_REPLAY_LIMIT: u32 = 100_000;
/// Most differences a report lists; all of them are counted.
pub const REPLAY_SAMPLE: usize = 100;

/// What to replay.
#[derive(Clone, Debug, Default)]
pub struct ReplayOptions {
    /// Only leads of this territory.
    pub territory: Option<TerritoryId>,
    /// The newest this many leads (1..=[`MAX_REPLAY_LIMIT`]);
    /// [`DEFAULT_REPLAY_LIMIT`] when `None`.
    pub limit: Option<u32>,
}

/// One decision the version would have taken differently.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReplayDifference {
    /// The lead.
    pub lead_id: LeadId,
    /// The territory that decided.
    pub territory_id: TerritoryId,
    /// When the decision was taken.
    pub at: UnixMillis,
    /// The rep the lead actually got.
    pub actual_rep: RepId,
    /// Who decided it (`builtin:NAME` or `plugin:NAME@VERSION`).
    pub actual_decided_by: String,
    /// The version's pick.
    pub replayed_rep: RepId,
    /// The version's explanation.
    pub replayed_reason: String,
}

/// What a replay found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReplayReport {
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
    /// Decisions where the version failed (nothing to compare).
    pub failures: u64,
    /// The same, by reason.
    pub failures_by_reason: BTreeMap<FailureReason, u64>,
    /// Decisions of territories that no longer exist, not replayed.
    pub skipped: u64,
    /// The first [`REPLAY_SAMPLE`] differences, oldest first.
    pub sample: Vec<ReplayDifference>,
}

impl Engine {
    /// Runs the stored routing decisions of the newest leads through version
    /// `version` of plugin `name` and reports what would have changed; see the module
    /// docs for how each decision's input is rebuilt. Nothing is stored and the
    /// plugin's statistics are left alone.
    ///
    /// Only one replay runs at a time: while one does, this is refused at once with
    /// [`EngineError::ReplayInProgress`] (after the input is checked). Dropping the
    /// returned future stops the replay at its next lead or decision; the next replay
    /// is admitted once that one has stopped.
    pub async fn replay(
        &self,
        name: &str,
        version: u32,
        options: ReplayOptions,
    ) -> Result<ReplayReport> {
        let _permit = self.enter()?;
        let limit = options.limit.unwrap_or(DEFAULT_REPLAY_LIMIT);
        if !(1..=MAX_REPLAY_LIMIT).contains(&limit) {
            return Err(ValidationError::field(
                "limit",
                format!("must be between 1 and {MAX_REPLAY_LIMIT}"),
            )
            .into());
        }
        let entry = self
            .inner
            .plugins
            .get(name)
            .ok_or_else(|| not_found(name, Some(version)))?;
        if entry.version(Some(version)).is_none() {
            return Err(not_found(name, Some(version)));
        }
        let (reps, territories) = {
            let dir = self.directory();
            if let Some(t) = &options.territory
                && !dir.territories.contains_key(t)
            {
                return Err(EngineError::TerritoryNotFound(t.clone()));
            }
            let reps: HashMap<RepId, Arc<Rep>> = dir
                .reps
                .iter()
                .map(|(id, e)| (id.clone(), e.rep.clone()))
                .collect();
            let territories: HashMap<TerritoryId, Arc<Territory>> = dir
                .territories
                .iter()
                .map(|(id, e)| (id.clone(), e.territory.clone()))
                .collect();
            (reps, territories)
        };
        // The one replay allowed to run; given back on the replay's thread once it stops.
        let slot = Slot::take(&self.inner.replay_running, EngineError::ReplayInProgress)?;
        let cancel = Arc::new(AtomicBool::new(false));
        let probe = self.inner.probe.clone();
        let job = Job {
            store: self.inner.store.clone(),
            registry: self.inner.plugins.clone(),
            plugin: name.to_string(),
            version,
            territory: options.territory,
            limit: limit as usize,
            reps,
            territories,
            cancel: cancel.clone(),
            probe: probe.clone(),
        };
        // Up to 100000 leads of plugin calls: seconds of work, kept off the caller's
        // async thread without assuming a particular runtime.
        let (tx, rx) = oneshot::channel();
        let ended = probe.clone();
        std::thread::Builder::new()
            .name("leadroute-replay".into())
            .spawn(move || {
                let report = job.run();
                // The place goes back before the answer: a caller that starts another
                // replay as soon as it has this one's report must be admitted.
                drop(slot);
                ended(Checkpoint::ReplayEnded);
                let _ = tx.send(report);
            })
            .map_err(|e| EngineError::Internal(format!("cannot start replay: {e}")))?;
        let mut waiting = CancelOnDrop {
            cancel,
            probe,
            answered: false,
        };
        let report = rx.await;
        // Answered either way: a thread that died is not a caller that went away.
        waiting.answered = true;
        report.map_err(|_| EngineError::Internal("replay thread died".into()))?
    }
}

/// Lives in the caller's future while it waits for the report. Dropped before the
/// answer (the client hung up, the request was aborted), it tells the replay's
/// thread to stop: no one is left to read what it finds.
struct CancelOnDrop {
    cancel: Arc<AtomicBool>,
    probe: Probe,
    answered: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if !self.answered {
            self.cancel.store(true, Ordering::Release);
            (self.probe)(Checkpoint::ReplayCancelled);
        }
    }
}

/// Everything a replay needs, owned, so it can run on its own thread.
struct Job {
    store: Store,
    registry: Arc<crate::plugins::Registry>,
    plugin: String,
    version: u32,
    territory: Option<TerritoryId>,
    limit: usize,
    reps: HashMap<RepId, Arc<Rep>>,
    territories: HashMap<TerritoryId, Arc<Territory>>,
    /// Set when the caller went away; checked before every lead and decision.
    cancel: Arc<AtomicBool>,
    probe: Probe,
}

/// A candidate as rebuilt from history, owning what `Candidate` borrows.
struct Rebuilt {
    id: RepId,
    load: u32,
    capacity: u32,
    weight: f64,
    skills: Vec<String>,
    tier: String,
    last_assigned_at: Option<UnixMillis>,
}

impl Job {
    /// Called before each lead read and each decision run: the points where a replay
    /// nobody waits for any more stops. The error it stops with reaches no one.
    fn step(&self) -> Result<()> {
        (self.probe)(Checkpoint::ReplayStep);
        if self.cancel.load(Ordering::Acquire) {
            return Err(EngineError::Internal(
                "replay cancelled: its caller went away".into(),
            ));
        }
        Ok(())
    }

    fn run(self) -> Result<ReplayReport> {
        let report = self.replay();
        if self.cancel.load(Ordering::Acquire) {
            tracing::info!(plugin = %self.plugin, version = self.version,
                "replay stopped: its caller went away");
        }
        report
    }

    fn replay(&self) -> Result<ReplayReport> {
        let leads = self.store.recent_leads(self.limit, |state| {
            self.step()?;
            Ok(self
                .territory
                .as_ref()
                .is_none_or(|t| &state.territory == t))
        })?;
        let mut report = ReplayReport {
            plugin: self.plugin.clone(),
            version: self.version,
            leads_examined: 0,
            decisions_examined: 0,
            decisions_changed: 0,
            failures: 0,
            failures_by_reason: BTreeMap::new(),
            skipped: 0,
            sample: Vec::new(),
        };
        // Every decision of the window, in the order it was taken, so idle times can
        // be rebuilt as they were.
        let mut decisions = Vec::new();
        for state in &leads {
            self.step()?;
            report.leads_examined += 1;
            for entry in self.store.history(state.lead.id)? {
                if let HistoryEvent::Routed { .. } = entry.event {
                    decisions.push((entry.at, state, entry.event));
                }
            }
        }
        decisions.sort_by_key(|(at, ..)| *at);
        let mut trials: HashMap<TerritoryId, Trial> = HashMap::new();
        let mut last_assigned: HashMap<RepId, UnixMillis> = HashMap::new();
        for (at, state, event) in decisions {
            let HistoryEvent::Routed {
                territory,
                rep,
                decided_by,
                candidates,
                ..
            } = event
            else {
                continue;
            };
            if !trials.contains_key(&territory)
                && let Some(t) = self.territories.get(&territory)
            {
                let trial = Trial::new(
                    self.registry.clone(),
                    &self.plugin,
                    self.version,
                    territory.clone(),
                    &t.plugin_config_value(),
                )?;
                trials.insert(territory.clone(), trial);
            }
            self.step()?;
            let Some(trial) = trials.get(&territory) else {
                report.skipped += 1;
                last_assigned.insert(rep, at);
                continue;
            };
            let rebuilt: Vec<Rebuilt> = candidates
                .iter()
                .map(|c| {
                    let current = self.reps.get(&c.rep);
                    Rebuilt {
                        id: c.rep.clone(),
                        load: c.load,
                        capacity: c.capacity,
                        weight: current.map_or(1.0, |r| r.weight),
                        skills: current.map(|r| r.skills.clone()).unwrap_or_default(),
                        tier: current.map(|r| r.tier.clone()).unwrap_or_default(),
                        last_assigned_at: last_assigned.get(&c.rep).copied(),
                    }
                })
                .collect();
            let view: Vec<Candidate<'_>> = rebuilt
                .iter()
                .map(|r| Candidate {
                    id: &r.id,
                    load: r.load,
                    capacity: r.capacity,
                    weight: r.weight,
                    skills: &r.skills,
                    tier: &r.tier,
                    last_assigned_at: r.last_assigned_at,
                })
                .collect();
            report.decisions_examined += 1;
            match trial.run(&state.lead, &view, at) {
                TrialOutcome::Failed(failure) => {
                    report.failures += 1;
                    *report.failures_by_reason.entry(failure.reason).or_default() += 1;
                }
                TrialOutcome::Ranked { order, reason } => {
                    let pick = order.first().and_then(|&i| view.get(i)).map(|c| c.id);
                    if let Some(pick) = pick
                        && pick != &rep
                    {
                        report.decisions_changed += 1;
                        if report.sample.len() < REPLAY_SAMPLE {
                            report.sample.push(ReplayDifference {
                                lead_id: state.lead.id,
                                territory_id: territory.clone(),
                                at,
                                actual_rep: rep.clone(),
                                actual_decided_by: decided_by,
                                replayed_rep: pick.clone(),
                                replayed_reason: reason,
                            });
                        }
                    }
                }
            }
            last_assigned.insert(rep, at);
        }
        Ok(report)
    }
}
