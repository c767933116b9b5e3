//! The committer: the single writer, and group commit.
//!
//! Every durable change is a [`Change`] submitted to one thread. It drains whatever is
//! waiting (a *group*), applies the group in sled transactions across all trees (one
//! per 64 changes, so each change is atomic), flushes once (plus `fdatasync` in power
//! durability), and only then answers each submitter. One flush thus serves every
//! commit that waited for it.
//!
//! Because this thread is the only writer and applies changes in submission order,
//! it is also where rules that span actors are enforced: a lead has at most one open
//! assignment, stored load equals open assignments, stages follow each other, and
//! no two open leads share a contact key. Each change is validated against the
//! store before it writes anything, so a rejected change leaves no trace.

use std::collections::HashMap;
use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus::Histogram;
use sled::transaction::{TransactionalTree, UnabortableTransactionError};
use sled::{IVec, Transactional};
use tokio::sync::oneshot;

use super::audit::{Finding, Repaired, repair_confirmed};
use super::backup::{Captured, Tail};
use super::codec::{
    Assignment, CorruptRecord, LeadKeys, PluginRecord, Record, RepRecord, SlaRecord, decode, encode,
};
use super::{
    ASSIGNMENTS, CURSORS, Durability, HISTORY, LEAD_KEYS, LEADS, OUTBOX, PLUGINS, QUEUE, REP_LEADS,
    REPS, SLA, Store, TERRITORIES, WEBHOOKS, compound_key, history_key, plugin_wasm_key,
};
use crate::clock::UnixMillis;
use crate::config::DataSync;
use crate::dedupe;
use crate::domain::{
    EventKind, HistoryEntry, HistoryEvent, LeadId, LeadState, LeadStatus, OutboxEvent, Outcome,
    REPEATS_IN_HISTORY, Rep, RepId, Stage, Territory, TerritoryId, Webhook, WebhookId,
};
use crate::engine::ReassignReason;
use crate::error::{EngineError, Result};
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::sla::SlaIndex;

/// Most changes in one group; bounds the latency of a group.
const MAX_GROUP: usize = 1024;

/// Most changes in one sled transaction; a larger group is applied in several, then
/// flushed once. sled's epoch collector cannot free the node versions a transaction
/// replaces before it ends: with one transaction for a whole group of batch intake
/// (hundreds of changes), this thread, the bottleneck, freed a group's worth at a
/// time. In transactions of 64 the freeing moves to sled's I/O threads on the other
/// core. Batch intake took 12–41% more leads/s with about 350k leads stored, 6–12%
/// with 700k (`benches/README.md`, "One transaction per group, or several").
const MAX_TRANSACTION: usize = 64;

/// While the store is failing, how often the committer checks whether it can write
/// again. Changes arriving meanwhile are refused at once, not held.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// Bytes written (and synced, then removed) to check that the disk takes writes again
/// before sled is reopened: a few of sled's 512 KiB log segments.
const PROBE_BYTES: usize = 4 << 20;

/// A durable change, validated and applied by the committer.
#[derive(Debug)]
pub(crate) enum Change {
    /// A new lead, assigned (`state.rep` set) or queued.
    Intake {
        state: Box<LeadState>,
        keys: Vec<String>,
        history: Vec<HistoryEntry>,
        /// The territory's first-touch SLA, for the deadline of an assigned lead.
        sla_ms: u64,
    },
    /// A queued lead gets a rep.
    AssignQueued {
        lead: LeadId,
        territory: TerritoryId,
        rep: RepId,
        at: UnixMillis,
        history: Vec<HistoryEntry>,
        sla_ms: u64,
    },
    /// An assigned lead moves to another rep, or back to its territory's queue.
    Reassign(Reassignment),
    /// A stage was reached (`touched` = reported as `touched`).
    Advance {
        lead: LeadId,
        stage: Stage,
        touched: bool,
        at: UnixMillis,
    },
    /// The lead closed.
    Close {
        lead: LeadId,
        outcome: Outcome,
        at: UnixMillis,
    },
    /// A repeat of an open lead arrived.
    Duplicate {
        of: LeadId,
        matched: Vec<String>,
        source: Option<String>,
        at: UnixMillis,
    },
    /// Create or replace a rep (its stored load is kept).
    PutRep(Box<Rep>),
    /// Delete a rep without open leads.
    DeleteRep(RepId),
    /// Create or replace a territory.
    PutTerritory(Box<Territory>),
    /// Store a plugin's record and, for an upload, the new version's module.
    PutPlugin {
        record: Box<PluginRecord>,
        wasm: Option<(u32, Vec<u8>)>,
    },
    /// Delete a plugin: its record and every module.
    DeletePlugin(String),
    /// Create or replace a webhook subscription; a new one starts after every event
    /// written so far.
    PutWebhook(Box<Webhook>),
    /// Delete a webhook subscription and its cursor.
    DeleteWebhook(WebhookId),
    /// An event that is not part of a lead's change (a plugin's circuit opened).
    Event(Box<OutboxEvent>),
    /// Nothing; answered once everything submitted before it is durable.
    Barrier,
}

/// An assigned lead moving from `from` to `to` (`None`: back to the queue).
#[derive(Debug)]
pub(crate) struct Reassignment {
    pub lead: LeadId,
    pub from: RepId,
    pub to: Option<RepId>,
    pub at: UnixMillis,
    pub history: Vec<HistoryEntry>,
    pub why: ReassignReason,
    /// The territory's first-touch SLA, for the new rep's deadline.
    pub sla_ms: u64,
}

/// What an applied change did.
#[derive(Debug)]
pub(crate) enum Applied {
    /// The lead is stored, assigned or queued.
    Intake,
    /// The lead was a repeat of `of`; nothing new was stored but the hit.
    Duplicate {
        of: LeadId,
        rep: Option<RepId>,
        territory: TerritoryId,
        matched: Vec<String>,
    },
    /// The queued lead is assigned.
    Assigned,
    /// The lead a queue drain meant to assign was no longer queued there (a re-route
    /// that queued it was refused, or it moved on); nothing was written.
    NotQueued,
    /// The lead moved to another rep or back to the queue.
    Reassigned,
    /// The stage was recorded; `released` if it closed the lead. `history` is the
    /// lead's whole history as the change left it (filled in by `fill_histories`),
    /// so the caller answers without reading the store after the change is durable.
    Advanced {
        state: Box<LeadState>,
        history: Vec<HistoryEntry>,
        released: Option<RepId>,
    },
    /// The lead closed, freeing `released`'s load or its place in `unqueued`;
    /// `history` as for `Advanced`.
    Closed {
        state: Box<LeadState>,
        history: Vec<HistoryEntry>,
        released: Option<RepId>,
        unqueued: Option<TerritoryId>,
    },
    /// The rep is stored with its load.
    RepStored { created: bool, load: u32 },
    /// The territory is stored.
    TerritoryStored { created: bool },
    /// The webhook is stored.
    WebhookStored { created: bool },
    /// Done, nothing to report.
    Done,
}

/// The answer to one submitted change, once it is durable (or rejected): read it with
/// [`settle`].
pub(crate) struct Receipt {
    answer: oneshot::Receiver<Answer>,
    /// `leadroute_store_answer_wait_seconds`, observed by [`settle`].
    answer_wait: Histogram,
}

/// What the committer sends back for one change.
struct Answer {
    result: Result<Applied>,
    /// When it was sent: the wait from here to the caller reading it is the wake-up's,
    /// a measure of how long the caller's thread waited for a CPU.
    sent: Instant,
}

/// Sends `result` back to whoever submitted the change.
fn answer(reply: oneshot::Sender<Answer>, result: Result<Applied>) {
    let _ = reply.send(Answer {
        result,
        sent: Instant::now(),
    });
}

struct Pending {
    change: Change,
    reply: oneshot::Sender<Answer>,
    /// When it was submitted, for `commit_wait`.
    queued: Instant,
}

enum Msg {
    Commit(Box<Pending>),
    /// Check audit findings again and repair those that still hold, between groups.
    Repair(Box<RepairJob>),
    /// Load the next chunk of stored deadlines into the index, between groups.
    LoadDeadlines(Box<LoadJob>),
    /// A backup begins reading the trees: capture every write from now on, up to
    /// `limit` bytes (see [`Capture::keep`]).
    BackupStart {
        limit: u64,
        /// Raised once the capture is dropped before its end (a failed commit, the
        /// limit passed, the committer stopping): the read can stop at once.
        lost: Arc<AtomicBool>,
        reply: oneshot::Sender<Result<()>>,
    },
    /// A backup has read the trees: hand over what was captured and stop capturing
    /// (`None`: the backup was given up, just stop).
    BackupEnd(Option<oneshot::Sender<Result<Tail>>>),
    /// After a failure, try to write again now rather than at the next retry; the
    /// answer is whether the store takes writes.
    Retry(oneshot::Sender<bool>),
    /// Finish what was submitted before, flush, and exit.
    Stop,
}

struct RepairJob {
    findings: Vec<Finding>,
    reply: oneshot::Sender<Result<Repaired>>,
}

/// The writes of a backup's read, kept between its `BackupStart` and `BackupEnd`.
struct Capture {
    writes: Vec<Captured>,
    /// What `writes` takes: its keys, values and entries.
    bytes: u64,
    /// Most bytes to keep: past it the writes are dropped, the read is told to stop
    /// (`lost`), and the backup fails, rather than the memory being spent.
    limit: u64,
    /// Set once `limit` was passed; nothing more is kept.
    overflowed: bool,
    /// Raised when the capture is dropped before it is handed over, or overflows.
    lost: Arc<AtomicBool>,
    /// The committer's time on the backup so far: commits wait that long.
    held: Duration,
}

impl Drop for Capture {
    fn drop(&mut self) {
        // Handed over, the read is done and no longer looks; dropped before, it is
        // told to stop.
        self.lost.store(true, Ordering::SeqCst);
    }
}

impl Capture {
    /// Keeps a transaction's writes, or drops them all once past the limit.
    fn keep(&mut self, writes: Vec<Captured>) {
        if self.overflowed {
            return;
        }
        // Each entry's own size too: a small key with no value costs more than it holds.
        self.bytes += writes
            .iter()
            .map(|w| {
                (std::mem::size_of::<Captured>()
                    + w.key.len()
                    + w.value.as_ref().map_or(0, |v| v.len())) as u64
            })
            .sum::<u64>();
        if self.bytes > self.limit {
            self.overflowed = true;
            self.lost.store(true, Ordering::SeqCst);
            self.writes = Vec::new();
        } else {
            self.writes.extend(writes);
        }
    }
}

struct LoadJob {
    after: Option<LeadId>,
    reply: oneshot::Sender<Result<Option<LeadId>>>,
}

/// Stored deadlines loaded per [`Committer::load_deadlines`] call: a few milliseconds
/// of the committer's time, so commits wait no longer than that.
const DEADLINES_PER_CHUNK: usize = 8192;

/// Handle to the committer thread.
pub(crate) struct Committer {
    tx: mpsc::Sender<Msg>,
    submitted: std::sync::atomic::AtomicU64,
    failing: Arc<AtomicBool>,
    halted: Arc<AtomicBool>,
    answer_wait: Histogram,
}

impl Committer {
    /// Starts the committer thread.
    pub(crate) fn start(
        store: Store,
        durability: Durability,
        sla: Arc<SlaIndex>,
        outbox: Arc<Outbox>,
        metrics: Metrics,
        data_sync: DataSync,
    ) -> Result<(Committer, JoinHandle<()>)> {
        let data_file = match durability {
            Durability::Power => Some(store.data_file()?),
            Durability::Process => None,
        };
        let (tx, rx) = mpsc::channel::<Msg>();
        let answer_wait = metrics.answer_wait.clone();
        let failing = Arc::new(AtomicBool::new(false));
        let halted = Arc::new(AtomicBool::new(false));
        let state = State {
            store,
            durability,
            data_sync,
            metrics,
            failing: failing.clone(),
            halted: halted.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("leadroute-commit".into())
            .spawn(move || {
                let indexes = Indexes { sla, outbox };
                run(rx, state, data_file, indexes)
            })
            .map_err(|e| EngineError::Internal(format!("cannot start committer: {e}")))?;
        let committer = Committer {
            tx,
            submitted: Default::default(),
            failing,
            halted,
            answer_wait,
        };
        Ok((committer, thread))
    }

    /// Queues `change`; the receipt resolves once it is durable (or rejected).
    pub(crate) fn submit(&self, change: Change) -> Receipt {
        let (reply, answer) = oneshot::channel();
        // If the committer is gone the reply sender is dropped with the message, and
        // the receipt resolves to an error the caller reports as shutting down.
        self.submitted
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let _ = self.tx.send(Msg::Commit(Box::new(Pending {
            change,
            reply,
            queued: Instant::now(),
        })));
        Receipt {
            answer,
            answer_wait: self.answer_wait.clone(),
        }
    }

    /// Has the committer check `findings` again and repair those that still hold. It
    /// does so between two groups, as the store's only writer, so a finding that was
    /// a change caught half-way by a concurrent audit is seen for what it is.
    pub(crate) fn repair(&self, findings: Vec<Finding>) -> oneshot::Receiver<Result<Repaired>> {
        let (reply, receipt) = oneshot::channel();
        let _ = self
            .tx
            .send(Msg::Repair(Box::new(RepairJob { findings, reply })));
        receipt
    }

    /// Has the committer capture every write from its next group on, for a backup
    /// about to read the trees (see `store::backup`). Repairs wait until
    /// [`Committer::end_backup`].
    pub(crate) fn start_backup(
        &self,
        limit: u64,
        lost: Arc<AtomicBool>,
    ) -> oneshot::Receiver<Result<()>> {
        let (reply, receipt) = oneshot::channel();
        let _ = self.tx.send(Msg::BackupStart { limit, lost, reply });
        receipt
    }

    /// Ends the capture between two groups and hands over its writes: the backup's
    /// instant. `None` gives the backup up.
    pub(crate) fn end_backup(&self, reply: Option<oneshot::Sender<Result<Tail>>>) {
        let _ = self.tx.send(Msg::BackupEnd(reply));
    }

    /// Has the committer load the next chunk of stored first-touch deadlines (after
    /// lead `after`) into the deadline index. It does so between two groups, as the
    /// store's only writer, so no change slips between the read and the index. The
    /// answer is where the next chunk starts, `None` once all are loaded.
    pub(crate) fn load_deadlines(
        &self,
        after: Option<LeadId>,
    ) -> oneshot::Receiver<Result<Option<LeadId>>> {
        let (reply, receipt) = oneshot::channel();
        let _ = self
            .tx
            .send(Msg::LoadDeadlines(Box::new(LoadJob { after, reply })));
        receipt
    }

    /// Has the committer, if the store is failing, try at once to write again (as it
    /// does every [`RETRY_EVERY`] by itself). Resolves to whether the store takes
    /// writes; false once only a restart can mend it.
    pub(crate) fn retry(&self) -> oneshot::Receiver<bool> {
        let (reply, answer) = oneshot::channel();
        let _ = self.tx.send(Msg::Retry(reply));
        answer
    }

    /// How many changes were ever submitted; lets callers tell whether work happened.
    pub(crate) fn submitted(&self) -> u64 {
        self.submitted.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether the store failed to write and has not recovered yet: every change is
    /// refused with `StoreUnavailable` meanwhile; reads still work.
    pub(crate) fn failing(&self) -> bool {
        self.failing.load(Ordering::SeqCst)
    }

    /// Whether the store failed in a way only a restart mends (a written group failed
    /// to sync): every change is refused until the process restarts.
    pub(crate) fn halted(&self) -> bool {
        self.halted.load(Ordering::SeqCst)
    }

    /// Asks the thread to finish what was submitted before, flush and exit.
    pub(crate) fn stop(&self) {
        let _ = self.tx.send(Msg::Stop);
    }
}

/// Waits for a receipt; a committer that went away means the engine is stopping.
pub(crate) async fn settle(receipt: Receipt) -> Result<Applied> {
    match receipt.answer.await {
        Ok(Answer { result, sent }) => {
            receipt.answer_wait.observe(sent.elapsed().as_secs_f64());
            result
        }
        Err(_) => Err(EngineError::ShuttingDown),
    }
}

/// The in-memory indexes the committer keeps in step with the store.
struct Indexes {
    sla: Arc<SlaIndex>,
    outbox: Arc<Outbox>,
}

/// What the committer thread works with, and the flags it shares with its handle.
struct State {
    store: Store,
    durability: Durability,
    data_sync: DataSync,
    metrics: Metrics,
    /// Set while the store cannot write (see [`Committer::failing`]).
    failing: Arc<AtomicBool>,
    /// Set for good once only a restart can mend the store (see [`Committer::halted`]).
    halted: Arc<AtomicBool>,
}

fn run(rx: mpsc::Receiver<Msg>, state: State, mut data_file: Option<File>, index: Indexes) {
    let State { store, metrics, .. } = &state;
    let mut jobs = Jobs {
        store,
        index: &index,
        metrics,
        capture: None,
        repairs: Vec::new(),
    };
    let mut stopping = false;
    while !stopping {
        metrics.dedupe_keys.set(store.dedupe.len() as i64);
        let first = match rx.recv() {
            Ok(Msg::Commit(p)) => *p,
            Ok(Msg::Retry(reply)) => {
                let _ = reply.send(true);
                continue;
            }
            Ok(Msg::Stop) | Err(_) => break,
            Ok(job) => {
                jobs.run(job);
                continue;
            }
        };
        let mut group = Vec::with_capacity(64);
        group.push(first);
        // A repair, a deadline load or a backup's handover waits for the group
        // gathered before it.
        let mut between = None;
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(Msg::Commit(p)) => group.push(*p),
                Ok(Msg::Retry(reply)) => {
                    let _ = reply.send(true);
                }
                Ok(Msg::Stop) => {
                    stopping = true;
                    break;
                }
                Ok(job) => {
                    between = Some(job);
                    break;
                }
                Err(_) => break,
            }
        }
        let started = Instant::now();
        metrics.commit_group_size.observe(group.len() as f64);
        for pending in &group {
            let waited = started.saturating_duration_since(pending.queued);
            metrics.commit_wait.observe(waited.as_secs_f64());
        }
        let (changes, replies): (Vec<Change>, Vec<_>) =
            group.into_iter().map(|p| (p.change, p.reply)).unzip();
        let results = commit_group(
            &state,
            data_file.as_ref(),
            &index,
            &changes,
            &mut jobs.capture,
        );
        metrics
            .commit_duration
            .observe(started.elapsed().as_secs_f64());
        let failure = match results {
            Ok(results) => {
                for (reply, result) in replies.into_iter().zip(results) {
                    answer(reply, result);
                }
                if let Some(job) = between {
                    jobs.run(job);
                }
                continue;
            }
            Err(failure) => failure,
        };
        report_failure(&state, &failure, changes.len());
        reopen_for_reads(store, &index);
        for reply in replies {
            answer(reply, Err(EngineError::StoreUnavailable(failure.why())));
        }
        // A backup being read is lost: what it captured may not be what was kept.
        jobs.capture = None;
        for job in jobs.repairs.drain(..) {
            refuse(Msg::Repair(Box::new(job)), &failure.why());
        }
        if stopping {
            break;
        }
        if let Some(msg) = between {
            refuse(msg, &failure.why());
        }
        match failure {
            GroupFailure::Unwritten(_) => match recover(&rx, &state, &index) {
                Some(file) => data_file = file,
                None => break,
            },
            GroupFailure::Unsure(_) => {
                refuse_until_stopped(&rx);
                break;
            }
        }
    }
    match store.h() {
        Ok(h) => {
            if let Err(e) = h.db.flush() {
                tracing::error!(error = %e, "final store flush failed");
            }
        }
        Err(e) => tracing::error!(error = %e, "no store to flush at the end"),
    }
}

/// What the committer runs between two groups: repairs, deadline loads and a
/// backup's two handovers.
struct Jobs<'a> {
    store: &'a Store,
    index: &'a Indexes,
    metrics: &'a Metrics,
    /// Set while a backup reads the trees.
    capture: Option<Capture>,
    /// Repairs that came while a backup read the trees: their writes happen outside
    /// the capture, so they wait for its end.
    repairs: Vec<RepairJob>,
}

impl Jobs<'_> {
    fn run(&mut self, msg: Msg) {
        let (store, index, metrics) = (self.store, self.index, self.metrics);
        match msg {
            Msg::Repair(job) if self.capture.is_some() => self.repairs.push(*job),
            Msg::Repair(job) => run_repair(store, index, metrics, *job),
            Msg::LoadDeadlines(job) => run_load(store, index, metrics, *job),
            Msg::BackupStart { limit, lost, reply } => {
                let started = Instant::now();
                let result = match self.capture {
                    Some(_) => Err(EngineError::BackupInProgress),
                    None => {
                        self.capture = Some(Capture {
                            writes: Vec::new(),
                            bytes: 0,
                            limit,
                            overflowed: false,
                            lost,
                            held: started.elapsed(),
                        });
                        Ok(())
                    }
                };
                let _ = reply.send(result);
            }
            Msg::BackupEnd(reply) => {
                let started = Instant::now();
                let capture = self.capture.take();
                if let Some(reply) = reply {
                    let tail = match capture {
                        Some(capture) if capture.overflowed => {
                            Err(EngineError::BackupFailed(format!(
                                "more than {} bytes were written while the store was read, \
                                 more than a backup keeps in memory; retry when fewer \
                                 writes arrive",
                                capture.limit
                            )))
                        }
                        Some(mut capture) => store.h().and_then(|h| {
                            // Greater than every id handed out so far.
                            let next_id = h.db.generate_id()?;
                            Ok(Tail {
                                writes: std::mem::take(&mut capture.writes),
                                next_id,
                                held: capture.held + started.elapsed(),
                            })
                        }),
                        None => Err(EngineError::BackupFailed(
                            "a commit failed while the backup read the store; take it again".into(),
                        )),
                    };
                    let _ = reply.send(tail);
                }
                for job in std::mem::take(&mut self.repairs) {
                    run_repair(store, index, metrics, job);
                }
            }
            Msg::Commit(_) | Msg::Retry(_) | Msg::Stop => {
                unreachable!("the run loop handles commits, retries and stops")
            }
        }
    }
}

/// Counts and logs a failed group and raises the flags, before any caller hears of
/// it: whoever does sees it in `Engine::store_writable` (and `/readyz`) too.
fn report_failure(state: &State, failure: &GroupFailure, changes: usize) {
    state.metrics.store_errors.inc();
    match failure {
        GroupFailure::Unwritten(e) => {
            tracing::error!(error = %e, changes, "store commit failed");
        }
        GroupFailure::Unsure(e) => {
            tracing::error!(
                error = %e,
                changes,
                "store failed after the commit may be written; refusing every change \
                 until the process restarts"
            );
            state.halted.store(true, Ordering::SeqCst);
        }
    }
    state.failing.store(true, Ordering::SeqCst);
}

/// Why a group was not acknowledged.
enum GroupFailure {
    /// sled refused the group's first transaction, or the flush of a group that fits
    /// in one: a fresh opening of the store holds nothing of the group, so the engine
    /// can reopen it and go on (see [`recover`]).
    Unwritten(String),
    /// Part or all of the group may be written, and its callers are told it failed:
    /// sled wrote the group and the sync of its data file failed (Linux may have
    /// dropped the dirty pages it failed to write), or a group of several transactions
    /// failed after its first. The callers gave back what they held in memory: only a
    /// restart, which reloads memory from the store, makes the two agree again.
    /// PostgreSQL stops after a failed fsync for the same reason.
    Unsure(String),
}

impl GroupFailure {
    /// What every caller waiting on the group is told.
    fn why(&self) -> String {
        match self {
            GroupFailure::Unwritten(e) => e.clone(),
            GroupFailure::Unsure(e) => {
                format!("{e}; the store refuses changes until the process restarts")
            }
        }
    }
}

/// After a group failed once it may have been written: refuses every change, repair
/// and deadline load until the engine stops. Reads keep working; writes are never
/// tried again.
fn refuse_until_stopped(rx: &mpsc::Receiver<Msg>) {
    const WHY: &str = "a commit failed after it may have been written; the store refuses \
                       changes until the process restarts";
    while let Ok(msg) = rx.recv() {
        if !refuse(msg, WHY) {
            return;
        }
    }
}

/// Answers `msg` while the store cannot write: a change or a repair is refused with
/// `why`; a deadline load is answered "all loaded" (a reopen reloads every deadline,
/// a halted committer loads none); a retry is answered "not writable". False for
/// `Stop`.
fn refuse(msg: Msg, why: &str) -> bool {
    let refused = || EngineError::StoreUnavailable(why.into());
    match msg {
        Msg::Commit(p) => {
            answer(p.reply, Err(refused()));
        }
        Msg::Repair(job) => {
            let _ = job.reply.send(Err(refused()));
        }
        Msg::LoadDeadlines(job) => {
            let _ = job.reply.send(Ok(None));
        }
        Msg::BackupStart { reply, .. } => {
            let _ = reply.send(Err(refused()));
        }
        Msg::BackupEnd(reply) => {
            if let Some(reply) = reply {
                let _ = reply.send(Err(refused()));
            }
        }
        Msg::Retry(reply) => {
            let _ = reply.send(false);
        }
        Msg::Stop => return false,
    }
    true
}

/// Repairs what still holds of `job`'s findings and brings the indexes the committer
/// keeps in step with the store up to date.
fn run_repair(store: &Store, indexes: &Indexes, metrics: &Metrics, job: RepairJob) {
    let result = repair_confirmed(store, job.findings);
    if let Ok(repaired) = &result {
        indexes.sla.apply(&repaired.deadlines);
        metrics.sla_pending.set(indexes.sla.len() as i64);
    }
    let _ = job.reply.send(result);
}

/// Loads the next chunk of stored deadlines into the index.
fn run_load(store: &Store, indexes: &Indexes, metrics: &Metrics, job: LoadJob) {
    let result = store
        .sla_records_after(job.after, DEADLINES_PER_CHUNK)
        .map(|records| {
            let deadlines: Vec<_> = records
                .iter()
                .filter_map(|(lead, r)| r.deadline.map(|at| (*lead, Some(at))))
                .collect();
            indexes.sla.apply(&deadlines);
            metrics.sla_pending.set(indexes.sla.len() as i64);
            if records.len() < DEADLINES_PER_CHUNK {
                None
            } else {
                records.last().map(|(lead, _)| *lead)
            }
        });
    let _ = job.reply.send(result);
}

/// After a failed group commit, before any caller hears of it: frees the ballast's
/// space and reopens what was flushed, for reads (see `Store::ensure_ballast`). The
/// failed opening may hold pages the failed group overfilled, and a read that meets
/// one tries to split it, which writes and fails on a full disk. Writes stay refused.
fn reopen_for_reads(store: &Store, indexes: &Indexes) {
    if store.release_ballast() {
        match store.reopen() {
            Ok(()) => {
                if let Ok(records) = store.sla_records() {
                    indexes.sla.replace(&records);
                }
                tracing::info!("store reopened for reads; writes wait for space");
            }
            Err(e) => tracing::warn!(error = %e, "store reopen for reads failed"),
        }
    }
}

/// After a failed group commit: refuses every change at once until the disk takes
/// writes again, then reopens the store, rebuilds the deadline index from it and
/// lowers the failing flag. It tries every [`RETRY_EVERY`], and at once when asked
/// ([`Committer::retry`]).
/// Returns the data file to sync (power durability), or `None` when asked to stop
/// meanwhile.
///
/// Why reopen: sled 0.34.7 keeps the first write error and repeats it on every later
/// write and flush, even once space is back; reads keep working (measured on a full
/// tmpfs). A fresh opening recovers what was flushed, and nothing of the failed group
/// (it was never flushed), so the store and the callers, who were told it failed and
/// gave back what they held, agree again. Not so when the error came after sled wrote
/// the group or part of it: that is [`GroupFailure::Unsure`], which does not come
/// here.
fn recover(rx: &mpsc::Receiver<Msg>, state: &State, indexes: &Indexes) -> Option<Option<File>> {
    let mut next_try = Instant::now() + RETRY_EVERY;
    loop {
        let wait = next_try.saturating_duration_since(Instant::now());
        let asked = match rx.recv_timeout(wait) {
            Ok(Msg::Retry(reply)) => Some(reply),
            Ok(msg) => {
                if refuse(msg, "the store failed to write and is not back yet") {
                    continue;
                }
                return None;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return None,
            Err(mpsc::RecvTimeoutError::Timeout) => None,
        };
        next_try = Instant::now() + RETRY_EVERY;
        let outcome = write_again(state, indexes);
        if outcome.is_some() {
            // Before anyone hears of it: whoever is told "writable" sees it in
            // `Engine::store_writable` too.
            state.failing.store(false, Ordering::SeqCst);
        }
        if let Some(reply) = asked {
            let _ = reply.send(outcome.is_some());
        }
        if outcome.is_some() {
            return outcome;
        }
    }
}

/// One attempt to take writes again: the ballast back, a probe of the disk, then a
/// fresh opening. `Some` (with the data file to sync) once the store writes again.
fn write_again(state: &State, indexes: &Indexes) -> Option<Option<File>> {
    let State { store, metrics, .. } = state;
    // The reserve first, so that writing again leaves room for the next failure.
    if let Err(e) = store.ensure_ballast() {
        tracing::warn!(error = %e, "store still cannot write");
        return None;
    }
    if let Err(e) = probe_disk(&store.dir) {
        tracing::warn!(error = %e, "store still cannot write");
        return None;
    }
    match reopen(state, indexes) {
        Ok(file) => {
            tracing::info!("store writes again; reopened");
            Some(file)
        }
        Err(e) => {
            metrics.store_errors.inc();
            tracing::warn!(error = %e, "store reopen failed; will retry");
            None
        }
    }
}

/// Reopens the store, checks that a write is durable, and reloads the deadlines.
fn reopen(state: &State, indexes: &Indexes) -> Result<Option<File>> {
    let store = &state.store;
    store.reopen()?;
    let h = store.h()?;
    h.db.insert(b"write_check", &[])?;
    h.db.flush()?;
    indexes.sla.replace(&store.sla_records()?);
    Ok(match state.durability {
        Durability::Power => {
            let file = store.data_file()?;
            (state.data_sync)(&file)
                .map_err(|e| EngineError::StoreUnavailable(format!("fdatasync: {e}")))?;
            Some(file)
        }
        Durability::Process => None,
    })
}

/// Writes, syncs and removes a scratch file in the store's directory.
fn probe_disk(dir: &std::path::Path) -> std::io::Result<()> {
    use std::io::Write;
    let path = dir.join("write-probe.tmp");
    let result = (|| {
        let mut file = File::create(&path)?;
        file.write_all(&vec![0u8; PROBE_BYTES])?;
        file.sync_all()
    })();
    let _ = std::fs::remove_file(&path);
    result
}

/// What one transaction of a group did: each change's result, the deadlines it set or
/// cleared, the last outbox event it wrote, which answers want their lead's history
/// (see [`fill_histories`]), and the de-duplication keys it set or dropped.
type Applies = (
    Vec<Result<Applied>>,
    Deadlines,
    u64,
    Histories,
    KeyChanges,
    Option<Vec<Captured>>,
);

/// De-duplication keys pointed at a lead (`Some`) or dropped (`None`).
type KeyChanges = HashMap<String, Option<LeadId>>;

/// First-touch deadlines set (`Some`) or cleared (`None`), in order.
type Deadlines = Vec<(LeadId, Option<UnixMillis>)>;

/// Applies `changes` in transactions of at most [`MAX_TRANSACTION`] and makes them
/// durable with one flush. The outer error means nothing of the group is acknowledged.
///
/// Each change is atomic, the group is not: a crash may keep the group's first
/// transactions and lose the rest, none of them answered yet. Hence a failure after a
/// transaction of the group went into sled's log is [`GroupFailure::Unsure`]: that
/// transaction may have been written, while its callers are told it failed.
fn commit_group(
    state: &State,
    data_file: Option<&File>,
    indexes: &Indexes,
    changes: &[Change],
    capture: &mut Option<Capture>,
) -> std::result::Result<Vec<Result<Applied>>, GroupFailure> {
    let store = &state.store;
    let h = store
        .h()
        .map_err(|e| GroupFailure::Unwritten(e.to_string()))?;
    let mut results = Vec::with_capacity(changes.len());
    let mut deadlines = Vec::new();
    let mut last_event = 0;
    for (i, part) in changes.chunks(MAX_TRANSACTION).enumerate() {
        let capturing = capture.as_ref().is_some_and(|c| !c.overflowed);
        let (mut part_results, part_deadlines, part_last, histories, keys, captured) =
            apply_transaction(store, &h, indexes, part, capturing).map_err(|e| match i {
                0 => GroupFailure::Unwritten(e),
                _ => GroupFailure::Unsure(format!("{e} (after {i} transactions of the group)")),
            })?;
        if let (Some(capture), Some(captured)) = (capture.as_mut(), captured) {
            capture.keep(captured);
        }
        // Now, as sled makes the transaction visible to reads: the next transaction
        // checks against both. Should the group fail, reopening rebuilds the index.
        for (key, lead) in keys {
            store.dedupe.set(key, lead);
        }
        // The transaction is in sled's memory, and sled may write it at any time:
        // failing now, its callers would be told of a failure that may be stored.
        fill_histories(&h, &mut part_results, histories).map_err(|e| {
            GroupFailure::Unsure(format!("{e} (reading a history after its transaction)"))
        })?;
        results.extend(part_results);
        deadlines.extend(part_deadlines);
        last_event = last_event.max(part_last);
    }
    h.db.flush().map_err(|e| {
        if changes.len() > MAX_TRANSACTION {
            GroupFailure::Unsure(format!(
                "{e} (the group's first transactions may be written)"
            ))
        } else {
            GroupFailure::Unwritten(e.to_string())
        }
    })?;
    if let Some(file) = data_file {
        (state.data_sync)(file).map_err(|e| GroupFailure::Unsure(format!("fdatasync: {e}")))?;
    }
    // Only once durable: a deadline must not fire, nor an event be announced, for a
    // change that might be lost.
    indexes.sla.apply(&deadlines);
    if last_event > 0 {
        indexes.outbox.written(last_event);
    }
    Ok(results)
}

/// Which answers of a transaction carry their lead's history: (index, lead, the seq
/// of the last history entry their change appended).
type Histories = Vec<(usize, LeadId, u64)>;

/// Applies `changes` in one sled transaction (in memory until the next flush).
fn apply_transaction(
    store: &Store,
    h: &super::Handle,
    indexes: &Indexes,
    changes: &[Change],
    capturing: bool,
) -> std::result::Result<Applies, String> {
    let (results, deadlines, last_event, wanted, keys, captured) = h
        .trees
        .transaction(|trees| {
            let mut writer = Writer {
                t: trees,
                dedupe: &store.dedupe,
                keys: HashMap::new(),
                outbox: &indexes.outbox,
                deadlines: Vec::new(),
                last_event: 0,
                reps: HashMap::new(),
                last_history_seq: 0,
                captured: capturing.then(Vec::new),
            };
            let mut results = Vec::with_capacity(changes.len());
            let mut wanted = Vec::new();
            for change in changes {
                match writer.apply(change) {
                    Ok(applied) => {
                        if let Applied::Advanced { state, .. } | Applied::Closed { state, .. } =
                            &applied
                        {
                            // Every event appends its own entry, the newest so far.
                            wanted.push((results.len(), state.lead.id, writer.last_history_seq));
                        }
                        results.push(Ok(applied));
                    }
                    Err(Fail::Reject(e)) => results.push(Err(e)),
                    Err(Fail::Tx(e)) => return Err(e.into()),
                }
            }
            writer.write_reps()?;
            Ok((
                results,
                writer.deadlines,
                writer.last_event,
                wanted,
                writer.keys,
                writer.captured,
            ))
        })
        .map_err(|e: sled::transaction::TransactionError<()>| format!("{e:?}"))?;
    Ok((results, deadlines, last_event, wanted, keys, captured))
}

/// Puts each event's lead history into its answer, read once the transaction is in
/// (sled holds its lock for the whole transaction, so nothing can be read from
/// outside it until then). It stops at the change's own last entry, leaving out those
/// of later changes to the same lead: each answer is the lead as its own change left
/// it. The caller then needs no read after the change is
/// durable, which could fail and turn a recorded event into an error.
fn fill_histories(
    h: &super::Handle,
    results: &mut [Result<Applied>],
    wanted: Histories,
) -> std::result::Result<(), String> {
    for (index, lead, up_to) in wanted {
        let mut entries = Vec::new();
        for kv in h.trees[HISTORY].range(history_key(lead, 0)..=history_key(lead, up_to)) {
            let (_, value) = kv.map_err(|e| e.to_string())?;
            entries.push(decode::<HistoryEntry>(&value).map_err(|e| e.to_string())?);
        }
        if let Some(Ok(Applied::Advanced { history, .. } | Applied::Closed { history, .. })) =
            results.get_mut(index)
        {
            *history = entries;
        }
    }
    Ok(())
}

/// The reason recorded with a lead's `queued` history entry, if it has one.
fn queued_reason(history: &[HistoryEntry]) -> Option<String> {
    history.iter().find_map(|h| match &h.event {
        HistoryEvent::Queued { reason, .. } => Some(reason.clone()),
        _ => None,
    })
}

/// Why a change was not applied.
enum Fail {
    /// The transaction itself failed; the whole group fails.
    Tx(UnabortableTransactionError),
    /// This change is refused; the group goes on.
    Reject(EngineError),
}

impl From<UnabortableTransactionError> for Fail {
    fn from(e: UnabortableTransactionError) -> Self {
        Fail::Tx(e)
    }
}

impl From<EngineError> for Fail {
    fn from(e: EngineError) -> Self {
        Fail::Reject(e)
    }
}

impl From<CorruptRecord> for Fail {
    fn from(e: CorruptRecord) -> Self {
        Fail::Reject(e.into())
    }
}

type Step<T> = std::result::Result<T, Fail>;

/// Applies changes inside one transaction. Each `apply_*` reads and validates
/// everything first, then writes: a rejection never leaves partial writes.
struct Writer<'a> {
    t: &'a [TransactionalTree],
    /// The open leads' de-duplication keys as of the transactions before this one.
    dedupe: &'a dedupe::Index,
    /// The keys this transaction set or dropped, applied to `dedupe` once it is in.
    keys: KeyChanges,
    outbox: &'a Outbox,
    /// The seq of the last event written in this group (0: none).
    last_event: u64,
    /// First-touch deadlines set (`Some`) or cleared (`None`) in this group, in order.
    deadlines: Vec<(LeadId, Option<UnixMillis>)>,
    /// Reps changed in this group (`None`: deleted), written once at its end: a group
    /// of a hundred leads for ten reps writes ten rep records, not a hundred.
    reps: HashMap<RepId, Option<RepRecord>>,
    /// The seq of the last history entry appended, where an event's answer stops
    /// (see [`fill_histories`]).
    last_history_seq: u64,
    /// A copy of every write, while a backup reads the trees (see [`Capture`]).
    captured: Option<Vec<Captured>>,
}

impl Writer<'_> {
    fn apply(&mut self, change: &Change) -> Step<Applied> {
        match change {
            Change::Intake {
                state,
                keys,
                history,
                sla_ms,
            } => self.intake(state, keys, history, *sla_ms),
            Change::AssignQueued {
                lead,
                territory,
                rep,
                at,
                history,
                sla_ms,
            } => self.assign_queued(*lead, territory, rep, *at, history, *sla_ms),
            Change::Reassign(r) => self.reassign(r),
            Change::Advance {
                lead,
                stage,
                touched,
                at,
            } => self.advance(*lead, *stage, *touched, *at),
            Change::Close { lead, outcome, at } => {
                let state = self.open_lead(*lead)?;
                let (state, released, unqueued) = self.close(state, *outcome, *at)?;
                Ok(Applied::Closed {
                    state: Box::new(state),
                    history: Vec::new(),
                    released,
                    unqueued,
                })
            }
            Change::Duplicate {
                of,
                matched,
                source,
                at,
            } => {
                let state = self.open_lead(*of)?;
                self.duplicate_hit(&state, matched.clone(), source.clone(), *at)
            }
            Change::PutRep(rep) => {
                let old = self.find_rep(&rep.id)?;
                let created = old.is_none();
                let (load, last_assigned_at) =
                    old.map_or((0, None), |r| (r.load, r.last_assigned_at));
                self.reps.insert(
                    rep.id.clone(),
                    Some(RepRecord {
                        rep: (**rep).clone(),
                        load,
                        last_assigned_at,
                    }),
                );
                Ok(Applied::RepStored { created, load })
            }
            Change::DeleteRep(id) => {
                let record = self.rep_record(id)?;
                if record.load > 0 {
                    return Err(EngineError::RepHasOpenLeads {
                        rep: id.clone(),
                        open: record.load,
                    }
                    .into());
                }
                self.reps.insert(id.clone(), None);
                Ok(Applied::Done)
            }
            Change::PutTerritory(territory) => {
                let created = self.t[TERRITORIES].get(territory.id.as_str())?.is_none();
                self.put(TERRITORIES, territory.id.as_str(), &**territory)?;
                Ok(Applied::TerritoryStored { created })
            }
            Change::PutPlugin { record, wasm } => {
                if let Some((version, bytes)) = wasm {
                    self.insert(
                        PLUGINS,
                        plugin_wasm_key(&record.name, *version),
                        bytes.as_slice(),
                    )?;
                }
                self.put(PLUGINS, record.name.as_bytes(), &**record)?;
                Ok(Applied::Done)
            }
            Change::DeletePlugin(name) => {
                let record: PluginRecord =
                    self.get(PLUGINS, name.as_bytes())?.ok_or_else(|| {
                        EngineError::PluginNotFound {
                            name: name.clone(),
                            version: None,
                        }
                    })?;
                for v in &record.versions {
                    self.remove(PLUGINS, plugin_wasm_key(name, v.version))?;
                }
                self.remove(PLUGINS, name.as_bytes())?;
                Ok(Applied::Done)
            }
            Change::PutWebhook(webhook) => {
                let created = self.t[WEBHOOKS].get(webhook.id.as_str())?.is_none();
                if created {
                    // Starts after every event so far: ids only grow.
                    let start = self.next_id()?;
                    self.insert(CURSORS, webhook.id.as_str(), &start.to_be_bytes())?;
                }
                self.put(WEBHOOKS, webhook.id.as_str(), &**webhook)?;
                Ok(Applied::WebhookStored { created })
            }
            Change::DeleteWebhook(id) => {
                if self.remove(WEBHOOKS, id.as_str())?.is_none() {
                    return Err(EngineError::WebhookNotFound(id.clone()).into());
                }
                self.remove(CURSORS, id.as_str())?;
                Ok(Applied::Done)
            }
            Change::Event(event) => {
                self.emit((**event).clone())?;
                Ok(Applied::Done)
            }
            Change::Barrier => Ok(Applied::Done),
        }
    }

    fn intake(
        &mut self,
        state: &LeadState,
        keys: &[String],
        history: &[HistoryEntry],
        sla_ms: u64,
    ) -> Step<Applied> {
        // The authoritative duplicate check: this thread applies every change in order.
        if let Some((of, matched)) = self.find_duplicate(keys)
            && let Some(existing) = self.get::<LeadState>(LEADS, of.to_key())?
        {
            let at = state.lead.received_at;
            return self.duplicate_hit(&existing, matched, state.lead.source.clone(), at);
        }
        let id = state.lead.id;
        let mut state = state.clone();
        let rep_record = match &state.rep {
            Some(rep) => Some(self.rep_record(rep)?),
            None => None,
        };
        // Validated; now write.
        let queue_seq = match rep_record {
            Some(record) => {
                let at = state.assigned_at.unwrap_or(state.lead.received_at);
                self.open_assignment(id, record, &state.territory, at)?;
                self.set_sla(id, SlaRecord::default(), Some(at + sla_ms))?;
                None
            }
            None => Some(self.enqueue(&state.territory, id)?),
        };
        state.queue_seq = queue_seq;
        self.put(LEADS, id.to_key(), &state)?;
        self.put(
            LEAD_KEYS,
            id.to_key(),
            &LeadKeys {
                keys: keys.to_vec(),
            },
        )?;
        for key in keys {
            self.keys.insert(key.clone(), Some(id));
        }
        for entry in history {
            self.append_history(id, entry)?;
        }
        match &state.rep {
            Some(rep) => self.emit_assigned(&state, rep.clone())?,
            None => self.emit_queued(&state, queued_reason(history))?,
        }
        Ok(Applied::Intake)
    }

    fn assign_queued(
        &mut self,
        lead: LeadId,
        territory: &TerritoryId,
        rep: &RepId,
        at: UnixMillis,
        history: &[HistoryEntry],
        sla_ms: u64,
    ) -> Step<Applied> {
        let mut state = self.open_lead(lead)?;
        let seq = match (state.status, state.queue_seq) {
            (LeadStatus::Queued, Some(seq)) if &state.territory == territory => seq,
            _ => return Ok(Applied::NotQueued),
        };
        let record = self.rep_record(rep)?;
        let sla: Option<SlaRecord> = self.get(SLA, lead.to_key())?;
        self.remove(QUEUE, compound_key(territory.as_str(), &seq.to_be_bytes()))?;
        self.open_assignment(lead, record, territory, at)?;
        if state.stage.is_none() {
            let sla = sla.unwrap_or_default();
            let deadline = (!sla.escalated).then_some(at + sla_ms);
            self.set_sla(lead, sla, deadline)?;
        }
        state.status = LeadStatus::Assigned;
        state.rep = Some(rep.clone());
        state.assigned_at = Some(at);
        state.queue_seq = None;
        self.put(LEADS, lead.to_key(), &state)?;
        for entry in history {
            self.append_history(lead, entry)?;
        }
        self.emit_assigned(&state, rep.clone())?;
        Ok(Applied::Assigned)
    }

    fn reassign(&mut self, r: &Reassignment) -> Step<Applied> {
        let Reassignment {
            lead,
            ref from,
            ref to,
            at,
            ref history,
            why,
            sla_ms,
        } = *r;
        let to = to.as_ref();
        let mut state = self.open_lead(lead)?;
        // Moved (or queued) since the caller read it: another re-route got there first
        // (an SLA sweep, a rep going away, a rep deleted). Every caller expects this.
        if state.status != LeadStatus::Assigned || state.rep.as_ref() != Some(from) {
            return Err(EngineError::LeadNotAssigned(lead).into());
        }
        let sla: Option<SlaRecord> = self.get(SLA, lead.to_key())?;
        if why.is_sla_breach() {
            // The sweep read the deadline a moment ago; the rep may have touched the
            // lead since, or it may have moved. Only a deadline still missed counts.
            match (state.stage, sla) {
                (
                    None,
                    Some(SlaRecord {
                        deadline: Some(d), ..
                    }),
                ) if d <= at => {}
                _ => return Err(EngineError::SlaNotBreached(lead).into()),
            }
        }
        let from_record = self.rep_record(from)?;
        if let Some(rep) = to {
            self.rep_record(rep)?;
        }
        // Validated; now write. `to` is read after the close: an escalation may go to
        // the rep that holds the lead, whose load the close has just lowered.
        self.close_assignment(lead, from_record)?;
        let to_record = to.map(|rep| self.rep_record(rep)).transpose()?;
        state.previous_reps.push(from.clone());
        let queue_seq = match to_record {
            Some(record) => {
                state.status = LeadStatus::Assigned;
                state.rep = Some(record.rep.id.clone());
                state.assigned_at = Some(at);
                self.open_assignment(lead, record, &state.territory, at)?;
                None
            }
            None => {
                let seq = self.enqueue(&state.territory, lead)?;
                state.status = LeadStatus::Queued;
                state.rep = None;
                state.assigned_at = None;
                Some(seq)
            }
        };
        state.queue_seq = queue_seq;
        if state.stage.is_none() {
            let mut sla = sla.unwrap_or_default();
            if why.is_sla_breach() {
                sla.breaches += 1;
            }
            sla.escalated |= why == ReassignReason::SlaEscalation;
            let deadline = (to.is_some() && !sla.escalated).then_some(at + sla_ms);
            self.set_sla(lead, sla, deadline)?;
        }
        self.put(LEADS, lead.to_key(), &state)?;
        for entry in history {
            self.append_history(lead, entry)?;
        }
        let mut moved = OutboxEvent::new(EventKind::LeadReassigned, at);
        moved.lead = Some(lead);
        moved.from_rep = Some(from.clone());
        moved.rep = to.cloned();
        moved.territory = Some(state.territory.clone());
        moved.reason = Some(why.as_str().to_string());
        self.emit(moved)?;
        match to {
            Some(rep) => self.emit_assigned(&state, rep.clone())?,
            None => self.emit_queued(&state, queued_reason(history))?,
        }
        Ok(Applied::Reassigned)
    }

    fn advance(
        &mut self,
        lead: LeadId,
        stage: Stage,
        touched: bool,
        at: UnixMillis,
    ) -> Step<Applied> {
        let mut state = self.open_lead(lead)?;
        if state.status != LeadStatus::Assigned {
            return Err(EngineError::LeadNotAssigned(lead).into());
        }
        let expected = Stage::expected_after(state.stage);
        if expected != Some(stage) {
            return Err(EngineError::StageOrder {
                got: stage,
                // Only a closed lead has no next stage, and closed leads were refused above.
                expected: expected.unwrap_or(Stage::ContractSigned),
            }
            .into());
        }
        if stage == Stage::ContractSigned
            && let Some(rep) = &state.rep
        {
            // `close` reads it too, but after this writes the history entry.
            self.rep_record(rep)?;
        }
        state.stage = Some(stage);
        if stage == Stage::FirstContact {
            state.touched_at = Some(at);
            self.clear_sla(lead)?;
        }
        let event = if touched {
            HistoryEvent::Touched
        } else {
            HistoryEvent::Stage { stage }
        };
        if stage == Stage::ContractSigned {
            // A signed contract closes the lead as won; `close` writes the lead.
            self.append_history(lead, &HistoryEntry { at, event })?;
            let (state, released, _) = self.close(state, Outcome::Won, at)?;
            return Ok(Applied::Advanced {
                state: Box::new(state),
                history: Vec::new(),
                released,
            });
        }
        self.put(LEADS, lead.to_key(), &state)?;
        self.append_history(lead, &HistoryEntry { at, event })?;
        Ok(Applied::Advanced {
            state: Box::new(state),
            history: Vec::new(),
            released: None,
        })
    }

    /// Closes an open lead: frees its rep's load or its queue slot, drops its
    /// de-duplication keys, and records why.
    fn close(
        &mut self,
        mut state: LeadState,
        outcome: Outcome,
        at: UnixMillis,
    ) -> Step<(LeadState, Option<RepId>, Option<TerritoryId>)> {
        let lead = state.lead.id;
        let rep_record = match (&state.status, &state.rep) {
            (LeadStatus::Assigned, Some(rep)) => Some(self.rep_record(rep)?),
            _ => None,
        };
        let mut released = None;
        let mut unqueued = None;
        if let Some(record) = rep_record {
            released = Some(record.rep.id.clone());
            self.close_assignment(lead, record)?;
        } else if let Some(seq) = state.queue_seq {
            self.remove(
                QUEUE,
                compound_key(state.territory.as_str(), &seq.to_be_bytes()),
            )?;
            unqueued = Some(state.territory.clone());
        }
        self.remove(LEAD_KEYS, &lead.to_key())?;
        for key in dedupe::keys(&state.lead) {
            // Only drop keys that still point at this lead.
            if self.dedupe_owner(&key) == Some(lead) {
                self.keys.insert(key, None);
            }
        }
        if state.stage.is_none() {
            self.clear_sla(lead)?;
        }
        state.status = LeadStatus::Closed(outcome);
        state.closed_at = Some(at);
        state.queue_seq = None;
        self.put(LEADS, lead.to_key(), &state)?;
        self.append_history(
            lead,
            &HistoryEntry {
                at,
                event: HistoryEvent::Closed { outcome },
            },
        )?;
        let mut closed = OutboxEvent::new(EventKind::LeadClosed, at);
        closed.lead = Some(lead);
        closed.rep = state.rep.clone();
        closed.territory = Some(state.territory.clone());
        closed.outcome = Some(outcome);
        self.emit(closed)?;
        Ok((state, released, unqueued))
    }

    fn duplicate_hit(
        &mut self,
        existing: &LeadState,
        matched: Vec<String>,
        source: Option<String>,
        at: UnixMillis,
    ) -> Step<Applied> {
        if !existing.status.is_open() {
            return Err(EngineError::LeadClosed(existing.lead.id).into());
        }
        let mut state = existing.clone();
        state.repeats = state.repeats.saturating_add(1);
        state.last_repeat_at = Some(at);
        self.put(LEADS, state.lead.id.to_key(), &state)?;
        if state.repeats <= REPEATS_IN_HISTORY {
            self.append_history(
                existing.lead.id,
                &HistoryEntry {
                    at,
                    event: HistoryEvent::Duplicate {
                        matched: matched.clone(),
                        source,
                    },
                },
            )?;
        }
        Ok(Applied::Duplicate {
            of: existing.lead.id,
            rep: existing.rep.clone(),
            territory: existing.territory.clone(),
            matched,
        })
    }

    // ---- reads ----

    fn get<R: Record>(&self, tree: usize, key: impl AsRef<[u8]>) -> Step<Option<R>> {
        match self.t[tree].get(key)? {
            None => Ok(None),
            Some(v) => Ok(Some(decode(&v)?)),
        }
    }

    fn open_lead(&self, lead: LeadId) -> Step<LeadState> {
        let state: LeadState = self
            .get(LEADS, lead.to_key())?
            .ok_or(EngineError::LeadNotFound(lead))?;
        if !state.status.is_open() {
            return Err(EngineError::LeadClosed(lead).into());
        }
        Ok(state)
    }

    fn rep_record(&self, rep: &RepId) -> Step<RepRecord> {
        Ok(self
            .find_rep(rep)?
            .ok_or_else(|| EngineError::RepNotFound(rep.clone()))?)
    }

    /// A rep's record as this group left it, else as stored.
    fn find_rep(&self, rep: &RepId) -> Step<Option<RepRecord>> {
        match self.reps.get(rep) {
            Some(record) => Ok(record.clone()),
            None => self.get(REPS, rep.as_str()),
        }
    }

    /// Writes the reps this group changed, once each. Writing validates nothing, so
    /// only the transaction itself can fail here.
    fn write_reps(&mut self) -> std::result::Result<(), UnabortableTransactionError> {
        for (id, record) in std::mem::take(&mut self.reps) {
            match record {
                Some(record) => self.insert(REPS, id.as_str(), encode(&record))?,
                None => self.remove(REPS, id.as_str())?,
            };
        }
        Ok(())
    }

    /// The open lead a de-duplication key points at, this group's changes included.
    fn dedupe_owner(&self, key: &str) -> Option<LeadId> {
        match self.keys.get(key) {
            Some(changed) => *changed,
            None => self.dedupe.owner(key),
        }
    }

    /// The open lead sharing a key with `keys`, this group's changes included.
    fn find_duplicate(&self, keys: &[String]) -> Option<(LeadId, Vec<String>)> {
        dedupe::find(keys, |key| self.dedupe_owner(key))
    }

    // ---- writes ----

    /// Every write of the committer goes through here or [`Writer::remove`], so that
    /// a backup being read gets a copy (see `store::backup`).
    fn insert(
        &mut self,
        tree: usize,
        key: impl Into<IVec>,
        value: impl Into<IVec>,
    ) -> std::result::Result<Option<IVec>, UnabortableTransactionError> {
        let (key, value) = (key.into(), value.into());
        if let Some(captured) = &mut self.captured {
            captured.push(Captured {
                tree,
                key: key.clone(),
                value: Some(value.clone()),
            });
        }
        self.t[tree].insert(key, value)
    }

    /// Removes `key` from `tree`; see [`Writer::insert`].
    fn remove(
        &mut self,
        tree: usize,
        key: impl Into<IVec>,
    ) -> std::result::Result<Option<IVec>, UnabortableTransactionError> {
        let key = key.into();
        if let Some(captured) = &mut self.captured {
            captured.push(Captured {
                tree,
                key: key.clone(),
                value: None,
            });
        }
        self.t[tree].remove(key)
    }

    fn put<R: Record>(&mut self, tree: usize, key: impl AsRef<[u8]>, record: &R) -> Step<()> {
        self.insert(tree, key.as_ref(), encode(record))?;
        Ok(())
    }

    fn open_assignment(
        &mut self,
        lead: LeadId,
        mut record: RepRecord,
        territory: &TerritoryId,
        at: UnixMillis,
    ) -> Step<()> {
        let assignment = Assignment {
            rep: record.rep.id.clone(),
            territory: territory.clone(),
            since: at,
        };
        self.put(ASSIGNMENTS, lead.to_key(), &assignment)?;
        self.insert(
            REP_LEADS,
            compound_key(record.rep.id.as_str(), &lead.to_key()),
            &[],
        )?;
        record.load += 1;
        record.last_assigned_at = Some(at);
        self.reps.insert(record.rep.id.clone(), Some(record));
        Ok(())
    }

    fn close_assignment(&mut self, lead: LeadId, mut record: RepRecord) -> Step<()> {
        self.remove(ASSIGNMENTS, &lead.to_key())?;
        self.remove(
            REP_LEADS,
            compound_key(record.rep.id.as_str(), &lead.to_key()),
        )?;
        record.load = record.load.saturating_sub(1);
        self.reps.insert(record.rep.id.clone(), Some(record));
        Ok(())
    }

    /// Writes `event` to the outbox if any subscription wants its kind.
    fn emit(&mut self, mut event: OutboxEvent) -> Step<()> {
        if !self.outbox.wants(event.kind) {
            return Ok(());
        }
        event.seq = self.next_id()?;
        self.put(OUTBOX, event.seq.to_be_bytes(), &event)?;
        self.last_event = event.seq;
        Ok(())
    }

    fn emit_assigned(&mut self, state: &LeadState, rep: RepId) -> Step<()> {
        let at = state.assigned_at.unwrap_or(state.lead.received_at);
        let mut event = OutboxEvent::new(EventKind::LeadAssigned, at);
        event.lead = Some(state.lead.id);
        event.rep = Some(rep);
        event.territory = Some(state.territory.clone());
        self.emit(event)
    }

    fn emit_queued(&mut self, state: &LeadState, reason: Option<String>) -> Step<()> {
        let mut event = OutboxEvent::new(EventKind::LeadQueued, state.lead.received_at);
        event.lead = Some(state.lead.id);
        event.territory = Some(state.territory.clone());
        event.reason = reason;
        self.emit(event)
    }

    /// Stores a lead's SLA state with `deadline` (none while queued or escalated).
    fn set_sla(
        &mut self,
        lead: LeadId,
        mut sla: SlaRecord,
        deadline: Option<UnixMillis>,
    ) -> Step<()> {
        sla.deadline = deadline;
        self.put(SLA, lead.to_key(), &sla)?;
        self.deadlines.push((lead, deadline));
        Ok(())
    }

    /// Forgets a lead's SLA state: touched or closed.
    fn clear_sla(&mut self, lead: LeadId) -> Step<()> {
        if self.remove(SLA, &lead.to_key())?.is_some() {
            self.deadlines.push((lead, None));
        }
        Ok(())
    }

    fn enqueue(&mut self, territory: &TerritoryId, lead: LeadId) -> Step<u64> {
        let seq = self.next_id()?;
        self.insert(
            QUEUE,
            compound_key(territory.as_str(), &seq.to_be_bytes()),
            &lead.to_key(),
        )?;
        Ok(seq)
    }

    fn append_history(&mut self, lead: LeadId, entry: &HistoryEntry) -> Step<()> {
        let seq = self.next_id()?;
        self.put(HISTORY, history_key(lead, seq), entry)?;
        self.last_history_seq = seq;
        Ok(())
    }

    /// A store-wide increasing number (survives restarts): orders queues and histories.
    /// Must go through the transactional tree: `Db::generate_id` takes the lock the
    /// transaction already holds.
    fn next_id(&self) -> Step<u64> {
        self.t[HISTORY]
            .generate_id()
            .map_err(|e| Fail::Tx(UnabortableTransactionError::Storage(e)))
    }
}
