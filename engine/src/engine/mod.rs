//! The [`Engine`] handle: the in-process API the server and tests use.
//!
//! - `mod.rs`: opening (recovery, threads, actors), settling and shutdown.
//! - `admission.rs`: the limits on work in flight; past them calls are refused at once.
//! - `intake.rs`: routing new leads, batches and simulations.
//! - `leads.rs`: reading leads, lifecycle events, reassignment.
//! - `admin.rs`: reps and territories.
//! - `plugins.rs`: plugin uploads, versions, activation, deletion and simulation.
//! - `sla.rs`: first-touch deadlines: re-routing, escalation, touch metrics.
//! - `webhooks.rs`: webhook subscriptions and the outbox the dispatcher reads.
//! - `replay.rs`: stored decisions run through a plugin version, nothing committed.
//! - `backup.rs`: online backups of the whole store.
//!
//! Threads: the caller's (any async runtime), one actor thread (actix), and the
//! store's committer. A route costs one hop to the actor thread and one wait for
//! the group commit.

mod admin;
mod admission;
mod audit;
mod backup;
mod intake;
mod leads;
mod plugins;
mod replay;
mod sla;
mod webhooks;

pub use backup::{Backup, prune_backups};
pub use intake::{RouteOutcome, RouteStatus, Simulation, Timings};
pub use leads::{LeadView, ReassignReason};
pub use replay::{
    DEFAULT_REPLAY_LIMIT, MAX_REPLAY_LIMIT, REPLAY_SAMPLE, ReplayDifference, ReplayOptions,
    ReplayReport,
};
pub use sla::SlaSweep;
pub use webhooks::{DEFAULT_DEAD_LETTER_PAGE, DeadLetterPage, MAX_DEAD_LETTER_PAGE};

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use actix::prelude::*;
use actix::{ArbiterHandle, System};
use tokio::sync::{Semaphore, SemaphorePermit, oneshot};

use crate::actors::RepSnapshot;
use crate::actors::rep::{RepActor, Snapshot};
use crate::actors::territory::{AddMember, Queued, Settle, TerritoryActor};
use crate::clock::Clock;
use crate::config::EngineConfig;
use crate::domain::{
    EventKind, LeadId, LeadState, LeadStatus, OutboxEvent, RegionTable, Rep, RepId, StrategySpec,
    Territory, TerritoryId,
};
use crate::error::{EngineError, Result};
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::plugins::{PluginStrategy, Registry, Trial};
use crate::sla::SlaIndex;
use crate::store::Store;
use crate::store::audit::audit;
use crate::store::commit::{Change, Committer, settle};
use crate::strategy::{self, Strategy};

/// Most calls in flight at once; shutdown waits for all of them.
const MAX_IN_FLIGHT: u32 = 1 << 20;

/// A handle to a running engine; cheap to clone, shareable across threads.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct RepEntry {
    addr: Addr<RepActor>,
    rep: Arc<Rep>,
}

struct TerritoryEntry {
    addr: Addr<TerritoryActor>,
    territory: Arc<Territory>,
}

/// Who is where: actor addresses and the region table. Read on every route.
#[derive(Default)]
struct Directory {
    reps: HashMap<RepId, RepEntry>,
    territories: HashMap<TerritoryId, TerritoryEntry>,
    regions: RegionTable,
}

struct Inner {
    store: Store,
    committer: Arc<Committer>,
    directory: RwLock<Directory>,
    arbiter: ArbiterHandle,
    system: System,
    threads: Mutex<Vec<JoinHandle<()>>>,
    metrics: Metrics,
    clock: Arc<dyn Clock>,
    ids: Mutex<ulid::Generator>,
    /// Serializes configuration changes so checks and writes cannot interleave.
    admin: tokio::sync::Mutex<()>,
    /// One permit per call in flight; shutdown takes them all.
    gate: Semaphore,
    /// The bound on leads and admin writes in flight.
    admission: admission::Admission,
    /// The start-up audit, started once the actors run.
    audit: std::sync::OnceLock<audit::StartupAudit>,
    /// Installed routing plugins and their sandbox.
    plugins: Arc<Registry>,
    /// First-touch deadlines, kept by the committer.
    sla: Arc<SlaIndex>,
    /// One SLA sweep at a time.
    sla_sweep: tokio::sync::Mutex<()>,
    /// Which events are written, and the signal that new ones are durable.
    outbox: Arc<Outbox>,
    /// Set while a replay runs; only one may (`replay.rs`).
    replay_running: Arc<std::sync::atomic::AtomicBool>,
    /// Set while a backup is written; only one may (`backup.rs`).
    backup_running: Arc<std::sync::atomic::AtomicBool>,
    /// Most bytes of writes a backup's read may capture.
    backup_capture_bytes: u64,
    /// Told when background work reaches a [`Checkpoint`](crate::config::Checkpoint).
    probe: crate::config::Probe,
}

impl Engine {
    /// Opens the store in `config.data_dir` and starts the committer and one actor per
    /// rep and territory. The store's audit then runs in the background; see
    /// [`Engine::startup_audit`].
    pub fn open(config: EngineConfig) -> Result<Engine> {
        let started = std::time::Instant::now();
        let store = Store::open_with_lock_wait(&config.data_dir, config.store_lock_wait)?;
        let opened = started.elapsed();
        let metrics = Metrics::new();
        // What routing needs is read straight from the records that hold it. The
        // deadlines load, and the audit runs, once the engine serves (`audit.rs`).
        let sla = Arc::new(SlaIndex::default());
        let outbox = Arc::new(Outbox::new(&store.webhooks()?));
        let indexed = started.elapsed();
        // Before the actors: territories bound to plugins need them compiled.
        let plugins = Arc::new(Registry::open(
            &store,
            config.plugin_limits.clone(),
            metrics.clone(),
            config.probe.clone(),
        )?);
        let compiled = started.elapsed();
        let (committer, commit_thread) = Committer::start(
            store.clone(),
            config.durability,
            sla.clone(),
            outbox.clone(),
            metrics.clone(),
            config.data_sync.clone(),
        )?;
        let committer = Arc::new(committer);
        {
            // An opened circuit is news for webhooks; nobody waits for its commit.
            let (committer, clock) = (committer.clone(), config.clock.clone());
            plugins.on_circuit_open(Box::new(move |name, failure| {
                let mut event = OutboxEvent::new(EventKind::PluginCircuitOpen, clock.now());
                event.plugin = Some(name.to_string());
                event.reason = Some(failure.to_string());
                drop(committer.submit(Change::Event(Box::new(event))));
            }));
        }

        let (tx, rx) = std::sync::mpsc::channel();
        let actor_thread = std::thread::Builder::new()
            .name("leadroute-actors".into())
            .spawn(move || {
                let system = System::new();
                system.block_on(async {
                    let _ = tx.send((System::current(), Arbiter::current()));
                });
                if let Err(e) = system.run() {
                    tracing::error!(error = %e, "actor system failed");
                }
            })
            .map_err(|e| EngineError::Internal(format!("cannot start actor thread: {e}")))?;
        let (system, arbiter) = rx
            .recv()
            .map_err(|_| EngineError::Internal("actor system did not start".into()))?;

        let engine = Engine {
            inner: Arc::new(Inner {
                store,
                committer,
                directory: RwLock::new(Directory::default()),
                arbiter,
                system,
                threads: Mutex::new(vec![actor_thread, commit_thread]),
                metrics,
                clock: config.clock,
                ids: Mutex::new(ulid::Generator::new()),
                audit: std::sync::OnceLock::new(),
                admin: tokio::sync::Mutex::new(()),
                gate: Semaphore::new(MAX_IN_FLIGHT as usize),
                admission: admission::Admission::new(config.max_in_flight_leads),
                plugins,
                sla,
                sla_sweep: tokio::sync::Mutex::new(()),
                outbox,
                replay_running: Arc::default(),
                backup_running: Arc::default(),
                backup_capture_bytes: config.backup_capture_bytes,
                probe: config.probe,
            }),
        };
        engine.boot_actors()?;
        engine.inner.metrics.startup_audit_running.set(1);
        let audit = audit::StartupAudit::start(
            engine.inner.store.clone(),
            Arc::downgrade(&engine.inner),
            engine.inner.probe.clone(),
        )?;
        let _ = engine.inner.audit.set(audit);
        // Start-up time grows with the store; say where it went.
        tracing::info!(
            store_ms = opened.as_millis() as u64,
            outbox_ms = (indexed - opened).as_millis() as u64,
            plugins_ms = (compiled - indexed).as_millis() as u64,
            actors_ms = (started.elapsed() - compiled).as_millis() as u64,
            "engine recovered"
        );
        Ok(engine)
    }

    /// Starts territory actors (with their restored queues), then rep actors.
    fn boot_actors(&self) -> Result<()> {
        let store = &self.inner.store;
        let mut dir = self.directory_mut();
        for territory in store.territories()? {
            let strategy = self.strategy_for(&territory).unwrap_or_else(|e| {
                tracing::error!(territory = %territory.id, error = %e,
                    "territory strategy unavailable; using least_loaded");
                Box::new(strategy::LeastLoaded)
            });
            let shadow = self.shadow_for(&territory).unwrap_or_else(|e| {
                tracing::error!(territory = %territory.id, error = %e,
                    "territory shadow plugin unavailable; running without it");
                None
            });
            let mut queue = VecDeque::new();
            for (seq, lead) in store.queue(&territory.id)? {
                // An entry that is not the queued lead's place is left for the audit.
                let Some(state) = store.lead(lead)?.filter(|s| {
                    s.status == LeadStatus::Queued
                        && s.queue_seq == Some(seq)
                        && s.territory == territory.id
                }) else {
                    continue;
                };
                queue.push_back(queued_entry(store, state)?);
            }
            dir.regions
                .assign(&territory.id, &territory.regions, territory.default)
                .map_err(EngineError::TerritoryConflict)?;
            let territory = Arc::new(territory);
            let addr = self.start_territory(territory.clone(), strategy, shadow, queue);
            dir.territories
                .insert(territory.id.clone(), TerritoryEntry { addr, territory });
        }
        for record in store.rep_records()? {
            let rep = Arc::new(record.rep);
            let addr = self.start_rep(&dir, rep.clone(), record.load, record.last_assigned_at);
            dir.reps.insert(rep.id.clone(), RepEntry { addr, rep });
        }
        Ok(())
    }

    /// Builds the strategy a territory names. A plugin must be installed (and a pinned
    /// version exist); its `plugin_config` may name the built-in fallback.
    fn strategy_for(&self, territory: &Territory) -> Result<Box<dyn Strategy>> {
        let config = territory.plugin_config_value();
        match &territory.strategy {
            StrategySpec::Builtin(which) => Ok(strategy::builtin(*which, &config)?),
            StrategySpec::Plugin { name, version } => {
                let entry = self
                    .inner
                    .plugins
                    .get(name)
                    .ok_or_else(|| EngineError::UnknownPlugin(name.clone()))?;
                if let Some(v) = version
                    && entry.version(Some(*v)).is_none()
                {
                    return Err(EngineError::UnknownPlugin(format!("{name}@{v}")));
                }
                Ok(Box::new(PluginStrategy::new(
                    self.inner.plugins.clone(),
                    name.clone(),
                    *version,
                    territory.id.clone(),
                    &config,
                    self.inner.clock.clone(),
                )?))
            }
        }
    }

    /// Binds a territory's shadow plugin version, if it names one. An unknown plugin
    /// is [`EngineError::UnknownPlugin`]; an unknown version of a known one is a
    /// validation error on `shadow.version` listing the versions there are.
    fn shadow_for(&self, territory: &Territory) -> Result<Option<Trial>> {
        let Some(spec) = &territory.shadow else {
            return Ok(None);
        };
        let info = self
            .inner
            .plugins
            .info(&spec.plugin)
            .map_err(|_| EngineError::UnknownPlugin(spec.plugin.clone()))?;
        if !info.versions.iter().any(|v| v.version == spec.version) {
            let have: Vec<String> = info
                .versions
                .iter()
                .map(|v| v.version.to_string())
                .collect();
            return Err(crate::error::ValidationError::field(
                "shadow.version",
                format!(
                    "plugin {} has no version {} (it has {})",
                    spec.plugin,
                    spec.version,
                    have.join(", ")
                ),
            )
            .into());
        }
        Ok(Some(Trial::new(
            self.inner.plugins.clone(),
            &spec.plugin,
            spec.version,
            territory.id.clone(),
            &territory.plugin_config_value(),
        )?))
    }

    fn start_territory(
        &self,
        territory: Arc<Territory>,
        strategy: Box<dyn Strategy>,
        shadow: Option<Trial>,
        queue: VecDeque<Queued>,
    ) -> Addr<TerritoryActor> {
        let committer = self.inner.committer.clone();
        let clock = self.inner.clock.clone();
        let metrics = self.inner.metrics.clone();
        metrics.start_territory_series(territory.id.as_str());
        TerritoryActor::start_in_arbiter(&self.inner.arbiter, move |_| {
            TerritoryActor::new(
                territory, strategy, shadow, queue, committer, clock, metrics,
            )
        })
    }

    /// Starts a rep's actor and introduces it to its territories.
    fn start_rep(
        &self,
        dir: &Directory,
        rep: Arc<Rep>,
        load: u32,
        last_assigned_at: Option<u64>,
    ) -> Addr<RepActor> {
        let territories: Vec<Addr<TerritoryActor>> = rep
            .territories
            .iter()
            .filter_map(|t| dir.territories.get(t).map(|e| e.addr.clone()))
            .collect();
        let clock = self.inner.clock.clone();
        let metrics = self.inner.metrics.clone();
        let (actor_rep, actor_territories) = (rep.clone(), territories.clone());
        let addr = RepActor::start_in_arbiter(&self.inner.arbiter, move |_| {
            RepActor::new(
                actor_rep,
                load,
                last_assigned_at,
                actor_territories,
                clock,
                metrics,
            )
        });
        let snap = RepSnapshot {
            rep,
            load,
            last_assigned_at,
            retiring: false,
            version: 0,
        };
        for territory in territories {
            territory.do_send(AddMember(addr.clone(), snap.clone()));
        }
        addr
    }

    fn directory(&self) -> std::sync::RwLockReadGuard<'_, Directory> {
        self.inner
            .directory
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn directory_mut(&self) -> std::sync::RwLockWriteGuard<'_, Directory> {
        self.inner
            .directory
            .write()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Admits one call, or refuses it while shutting down.
    fn enter(&self) -> Result<SemaphorePermit<'_>> {
        self.inner
            .gate
            .try_acquire()
            .map_err(|_| EngineError::ShuttingDown)
    }

    fn now(&self) -> u64 {
        self.inner.clock.now()
    }

    fn next_lead_id(&self) -> LeadId {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(self.now());
        let mut ids = self.inner.ids.lock().unwrap_or_else(|e| e.into_inner());
        let id = ids
            .generate_from_datetime(at)
            .unwrap_or_else(|_| ulid::Ulid::from_datetime(at));
        LeadId::from_ulid(id)
    }

    /// The engine's metrics registry, for `/metrics`.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Whether the store takes writes. False after a write failed (disk full, read-only,
    /// I/O error) until the committer has seen the disk take writes again and reopened
    /// the store; meanwhile every change is refused with
    /// [`EngineError::StoreUnavailable`] and reads keep working.
    pub fn store_writable(&self) -> bool {
        !self.inner.committer.failing()
    }

    /// After a write failure, has the store try to write again now instead of at its
    /// next automatic attempt (one a second), and answers whether it takes writes.
    /// True at once when it never stopped; false while the disk still refuses, and
    /// for good once only a restart can mend it ([`Engine::store_needs_restart`]).
    pub async fn retry_store(&self) -> bool {
        self.inner.committer.retry().await.unwrap_or(false)
    }

    /// Whether the store failed in a way only a restart mends: a commit failed after
    /// sled may have written it (its sync to the device failed, or a large commit
    /// failed half-way), so memory (loads, queues) and store may disagree. Changes stay
    /// refused with [`EngineError::StoreUnavailable`] until the process restarts;
    /// reads keep working.
    pub fn store_needs_restart(&self) -> bool {
        self.inner.committer.halted()
    }

    /// Waits until every decision taken so far is durable and every queue has been
    /// served as far as capacity allows: no routing in flight anywhere.
    pub async fn settle(&self) -> Result<()> {
        loop {
            let before = self.inner.committer.submitted();
            let (reps, territories) = {
                let dir = self.directory();
                let reps: Vec<_> = dir.reps.values().map(|e| e.addr.clone()).collect();
                let territories: Vec<_> =
                    dir.territories.values().map(|e| e.addr.clone()).collect();
                (reps, territories)
            };
            // Reps first: their pending news then sits in the territories' mailboxes,
            // ahead of the settle request.
            for rep in reps {
                let _ = rep.send(Snapshot).await;
            }
            for territory in territories {
                let (tx, rx) = oneshot::channel();
                territory.do_send(Settle(tx));
                let _ = rx.await;
            }
            settle(self.inner.committer.submit(Change::Barrier)).await?;
            if self.inner.committer.submitted() == before + 1 {
                return Ok(());
            }
        }
    }

    /// Checks the store's invariants and that the actors agree with it. Returns every
    /// violation found (empty when healthy). Call after [`Engine::settle`].
    pub async fn check_invariants(&self) -> Result<Vec<String>> {
        let mut problems: Vec<String> = audit(&self.inner.store)?
            .iter()
            .map(ToString::to_string)
            .collect();
        for snap in self.reps().await? {
            let stored = self
                .inner
                .store
                .rep_record(&snap.rep.id)?
                .map_or(0, |r| r.load);
            if stored != snap.load {
                problems.push(format!(
                    "rep {} holds load {} in memory but {} in the store",
                    snap.rep.id, snap.load, stored
                ));
            }
        }
        for t in self.territories().await? {
            let stored: Vec<LeadId> = self
                .inner
                .store
                .queue(&t.territory.id)?
                .into_iter()
                .map(|(_, id)| id)
                .collect();
            if stored != t.queue {
                problems.push(format!(
                    "territory {} queue in memory {:?} differs from the store {:?}",
                    t.territory.id, t.queue, stored
                ));
            }
        }
        Ok(problems)
    }

    /// The store's directory.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.inner.store.dir
    }

    /// Stops accepting calls, waits for those in flight, makes everything durable and
    /// stops the threads. Other handles get `ShuttingDown` afterwards.
    pub async fn shutdown(&self) -> Result<()> {
        let permits = self
            .inner
            .gate
            .acquire_many(MAX_IN_FLIGHT)
            .await
            .map_err(|_| EngineError::ShuttingDown)?;
        permits.forget();
        self.inner.gate.close();
        let settled = self.settle().await;
        self.inner.stop_threads();
        settled
    }
}

/// The one run allowed of some work (a replay, a backup): taken from its flag, given
/// back when dropped.
struct Slot(Arc<std::sync::atomic::AtomicBool>);

impl Slot {
    /// Takes the slot, or answers `busy` while another run holds it.
    fn take(running: &Arc<std::sync::atomic::AtomicBool>, busy: EngineError) -> Result<Slot> {
        use std::sync::atomic::Ordering;
        running
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .map_err(|_| busy)?;
        Ok(Slot(running.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::Release);
    }
}

/// A queued lead as its territory actor holds it.
fn queued_entry(store: &Store, state: LeadState) -> Result<Queued> {
    // An escalated lead may go to anyone, as when it was queued.
    let escalated = store.sla(state.lead.id)?.is_some_and(|s| s.escalated);
    let exclude = if escalated {
        Vec::new()
    } else {
        state.previous_reps
    };
    Ok(Queued {
        lead: Arc::new(state.lead),
        exclude,
    })
}

impl Inner {
    fn stop_threads(&self) {
        if let Some(audit) = self.audit.get() {
            audit.stop();
        }
        self.system.stop();
        self.committer.stop();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for thread in threads {
            let _ = thread.join();
        }
    }
}

impl Drop for Inner {
    /// Without a shutdown, in-flight work is abandoned (acknowledged work is durable
    /// already); the threads still stop so the store can be reopened.
    fn drop(&mut self) {
        self.stop_threads();
    }
}
