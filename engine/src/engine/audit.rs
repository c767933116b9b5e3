//! Start-up work run in the background, so that the time to ready does not grow with
//! the number of stored leads: loading the first-touch deadlines (through the
//! committer, a chunk at a time between its groups, so no change slips between the
//! read and the index), then the audit. (The de-duplication index is not among
//! them: intake needs it whole, so the store rebuilds it before the engine serves.)
//!
//! Why the audit may run while the engine serves: the committer changes the store
//! only in whole transactions, so a crash cannot break an invariant, and every start
//! loads what routing needs (loads, queues) straight from the records that hold it.
//! The audit is the net for what the committer cannot cause: a bug, or a store
//! changed behind the engine's back. It reads every open lead (about 11 µs each, so
//! 11 s at a million), which is why it does not hold up `/readyz`.
//!
//! Reading while the committer writes, the audit may catch a change half-way and
//! report it as a finding. So each finding goes to the committer, which checks it
//! again between two groups (nothing else writes then) and repairs only what still
//! holds. What the repair changed reaches the actors as differences (a rep's load
//! corrected by the amount its stored load moved; a lead put back in its queue), so
//! leads reserved meanwhile stay counted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::watch;

use super::{Engine, Inner, queued_entry};
use crate::actors::rep::AdjustLoad;
use crate::actors::territory::Enqueue;
use crate::config::Probe;
use crate::error::{EngineError, Result};
use crate::store::Store;
use crate::store::audit::{Repaired, audit_until};

/// The outcome of the start-up audit once it is over: what it repaired, or why it
/// could not finish.
pub(super) type Outcome = Option<std::result::Result<Vec<String>, String>>;

/// The running start-up audit.
pub(super) struct StartupAudit {
    /// Set to make the audit give up (the engine is stopping).
    cancel: Arc<AtomicBool>,
    done: watch::Receiver<Outcome>,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl StartupAudit {
    /// Starts the audit on its own thread. It reads `store`, and reaches the engine
    /// through `inner` only to repair, so it never keeps a dropped engine alive.
    /// `probe` hears of [`Checkpoint::AuditScan`](crate::config::Checkpoint::AuditScan).
    pub(super) fn start(store: Store, inner: Weak<Inner>, probe: Probe) -> Result<StartupAudit> {
        let cancel = Arc::new(AtomicBool::new(false));
        let (tx, done) = watch::channel(None);
        let flag = cancel.clone();
        let thread = std::thread::Builder::new()
            .name("leadroute-audit".into())
            .spawn(move || run(&store, &inner, &flag, &probe, &tx))
            .map_err(|e| EngineError::Internal(format!("cannot start the audit: {e}")))?;
        Ok(StartupAudit {
            cancel,
            done,
            thread: std::sync::Mutex::new(Some(thread)),
        })
    }

    /// Makes the audit give up and waits for its thread (unless called from it).
    pub(super) fn stop(&self) {
        self.cancel.store(true, Ordering::Relaxed);
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread
            && thread.thread().id() != std::thread::current().id()
        {
            let _ = thread.join();
        }
    }
}

fn run(
    store: &Store,
    inner: &Weak<Inner>,
    cancel: &AtomicBool,
    probe: &Probe,
    done: &watch::Sender<Outcome>,
) {
    let started = Instant::now();
    let outcome = match audit_and_repair(store, inner, cancel, probe) {
        Ok(Some(repaired)) => Ok(repaired),
        Ok(None) => return, // cancelled: the engine is stopping
        Err(e) => {
            tracing::error!(error = %e, "start-up audit failed; it runs again at the next start");
            Err(e.to_string())
        }
    };
    if let Some(inner) = inner.upgrade() {
        inner.metrics.startup_audit_running.set(0);
        inner
            .metrics
            .startup_audit_seconds
            .set(started.elapsed().as_secs_f64().max(f64::MIN_POSITIVE));
    }
    tracing::info!(
        audit_ms = started.elapsed().as_millis() as u64,
        repaired = outcome.as_ref().map_or(0, Vec::len),
        "start-up audit finished"
    );
    done.send_replace(Some(outcome));
}

/// Audits, then has the committer repair what still holds and tells the actors.
/// `None` if cancelled.
fn audit_and_repair(
    store: &Store,
    inner: &Weak<Inner>,
    cancel: &AtomicBool,
    probe: &Probe,
) -> Result<Option<Vec<String>>> {
    // First the first-touch deadlines, through the committer: until they are in,
    // a sweep sees only those loaded so far.
    if !load_deadlines(inner, cancel)? {
        return Ok(None);
    }
    let Some(findings) = audit_until(store, cancel, probe.as_ref())? else {
        return Ok(None);
    };
    if findings.is_empty() {
        return Ok(Some(Vec::new()));
    }
    let Some(inner) = inner.upgrade() else {
        return Ok(None);
    };
    tracing::info!(
        findings = findings.len(),
        "start-up audit: checking findings again"
    );
    let found = findings.len();
    let repaired = inner
        .committer
        .repair(findings)
        .blocking_recv()
        .unwrap_or(Err(EngineError::ShuttingDown))?;
    let engine = Engine { inner };
    engine.learn(store, &repaired)?;
    let metrics = &engine.inner.metrics;
    metrics
        .recovery_repairs
        .inc_by(repaired.findings.len() as u64);
    metrics
        .recovery_dismissed
        .inc_by(found.saturating_sub(repaired.findings.len()) as u64);
    Ok(Some(
        repaired.findings.iter().map(ToString::to_string).collect(),
    ))
}

/// Has the committer load every stored deadline, a chunk at a time. False if
/// cancelled or the engine is gone.
fn load_deadlines(inner: &Weak<Inner>, cancel: &AtomicBool) -> Result<bool> {
    let mut after = None;
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let Some(engine) = inner.upgrade() else {
            return Ok(false);
        };
        let receipt = engine.committer.load_deadlines(after);
        drop(engine);
        match receipt.blocking_recv() {
            Ok(Ok(Some(next))) => after = Some(next),
            Ok(Ok(None)) => return Ok(true),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(false), // the committer stopped
        }
    }
}

impl Engine {
    /// Waits for the start-up work that runs in the background from [`Engine::open`]
    /// on (loading first-touch deadlines, then the audit), and returns what the audit
    /// found broken and repaired (empty on a healthy store). An audit that could not
    /// finish is an error; it runs again at the next start.
    pub async fn startup_audit(&self) -> Result<Vec<String>> {
        let Some(audit) = self.inner.audit.get() else {
            return Err(EngineError::ShuttingDown);
        };
        let mut done = audit.done.clone();
        let outcome = done
            .wait_for(Option::is_some)
            .await
            .map_err(|_| EngineError::ShuttingDown)?
            .clone();
        match outcome {
            Some(Ok(findings)) => Ok(findings),
            Some(Err(e)) => Err(EngineError::Internal(format!("start-up audit: {e}"))),
            None => Err(EngineError::ShuttingDown),
        }
    }

    /// Tells the actors what a repair changed in the store.
    fn learn(&self, store: &Store, repaired: &Repaired) -> Result<()> {
        let dir = self.directory();
        for (rep, delta) in &repaired.loads {
            if let Some(entry) = dir.reps.get(rep) {
                entry.addr.do_send(AdjustLoad(*delta));
            }
        }
        for (lead, territory) in &repaired.requeued {
            let (Some(entry), Some(state)) = (dir.territories.get(territory), store.lead(*lead)?)
            else {
                continue;
            };
            entry.addr.do_send(Enqueue(queued_entry(store, state)?));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EngineConfig;
    use crate::domain::{LeadId, LeadInput, LeadStatus, RepId, RepInput, TerritoryId};
    use crate::store::codec::Assignment;
    use crate::store::{LEAD_KEYS, audit::Finding};

    /// A fresh data directory, removed when dropped.
    struct TempDir(std::path::PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn lead(n: u32) -> LeadInput {
        LeadInput {
            phone: Some(format!("+86 139 0000 {n:04}")),
            region: Some("CN-SH".into()),
            ..Default::default()
        }
    }

    /// Start-up loads deadlines a chunk at a time: chunks cover every record once.
    #[test]
    fn deadline_chunks_cover_every_record_once() {
        use crate::store::SLA;
        use crate::store::codec::{SlaRecord, encode};
        let dir =
            TempDir(std::env::temp_dir().join(format!("leadroute-sla-{}", ulid::Ulid::new())));
        let store = Store::open(&dir.0).unwrap();
        let ids: Vec<LeadId> = (1..=10u128)
            .map(|n| LeadId::from_key(&n.to_be_bytes()).unwrap())
            .collect();
        for (i, id) in ids.iter().enumerate() {
            let record = SlaRecord {
                deadline: Some(i as u64),
                ..Default::default()
            };
            store.h().unwrap().trees[SLA]
                .insert(id.to_key(), encode(&record))
                .unwrap();
        }
        let (mut seen, mut after) = (Vec::new(), None);
        loop {
            let chunk = store.sla_records_after(after, 3).unwrap();
            seen.extend(chunk.iter().map(|(id, _)| *id));
            match chunk.last() {
                Some((last, _)) if chunk.len() == 3 => after = Some(*last),
                _ => break,
            }
        }
        assert_eq!(seen, ids);
    }

    /// Findings the audit could report while a change was half-way, on a store where
    /// none of them is true: the committer's second look repairs none of them, and
    /// the one true finding among them is repaired, in the store and in memory.
    #[tokio::test]
    async fn findings_that_no_longer_hold_are_not_repaired() {
        let dir =
            TempDir(std::env::temp_dir().join(format!("leadroute-audit-{}", ulid::Ulid::new())));
        let engine = Engine::open(EngineConfig::new(&dir.0)).unwrap();
        assert_eq!(engine.startup_audit().await.unwrap(), Vec::<String>::new());
        let east = TerritoryId::new("east").unwrap();
        engine
            .upsert_territory(
                east.clone(),
                serde_json::from_value(serde_json::json!(
                    {"name": "East", "regions": ["CN-SH"], "default": true}
                ))
                .unwrap(),
            )
            .await
            .unwrap();
        let (a, b) = (RepId::new("a").unwrap(), RepId::new("b").unwrap());
        for (rep, capacity) in [(&a, 1), (&b, 0)] {
            let input = RepInput {
                name: "Rep".into(),
                territories: vec![east.to_string()],
                capacity,
                ..Default::default()
            };
            engine.upsert_rep(rep.clone(), input).await.unwrap();
        }
        let assigned = engine.route(lead(1)).await.unwrap().lead_id;
        let queued = engine.route(lead(2)).await.unwrap().lead_id;
        engine.settle().await.unwrap();
        let store = engine.inner.store.clone();
        assert_eq!(
            store.lead(queued).unwrap().unwrap().status,
            LeadStatus::Queued
        );
        let queue_key = {
            let (seq, _) = store.queue(&east).unwrap()[0];
            crate::store::compound_key("east", &seq.to_be_bytes())
        };
        let stale = vec![
            Finding::AssignmentWithoutLead(assigned),
            Finding::AssignmentToUnknownRep(assigned, east.clone()),
            Finding::LeadDisagreesWithAssignment(
                assigned,
                Assignment {
                    rep: b.clone(),
                    territory: east.clone(),
                    since: 0,
                },
            ),
            Finding::RepLeadsIndex(a.clone(), assigned, true),
            Finding::RepLeadsIndex(a.clone(), assigned, false),
            Finding::RepLoad(a.clone(), 1, 0),
            Finding::StrayQueueEntry(queue_key),
            Finding::Orphan(assigned, east.clone()),
            Finding::Orphan(queued, east.clone()),
            Finding::StrayLeadKeys(assigned),
            Finding::MissingLeadKeys(assigned),
            Finding::MissingDeadline(assigned, 1),
            Finding::StraySla(assigned),
        ];
        for finding in &stale {
            assert!(!finding.holds(&store).unwrap(), "{finding} should not hold");
        }

        // One true finding among them: the queued lead loses its `lead_keys` entry, and
        // the de-duplication index, rebuilt as at a start, leaves its keys out.
        store.h().unwrap().trees[LEAD_KEYS]
            .remove(queued.to_key())
            .unwrap();
        store.rebuild_dedupe().unwrap();
        let phone = "phone:13900000002".to_string();
        assert_eq!(store.duplicate_of(std::slice::from_ref(&phone)), None);
        let mut findings = stale;
        findings.insert(3, Finding::MissingLeadKeys(queued));
        let repaired = engine
            .inner
            .committer
            .repair(findings)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(repaired.findings, vec![Finding::MissingLeadKeys(queued)]);
        assert!(repaired.loads.is_empty() && repaired.requeued.is_empty());
        assert_eq!(
            store.duplicate_of(&[phone]).map(|(id, _)| id),
            Some(queued),
            "the lead's keys are back, in the store and in the index"
        );
        engine.settle().await.unwrap();
        assert_eq!(
            engine.check_invariants().await.unwrap(),
            Vec::<String>::new()
        );
        engine.shutdown().await.unwrap();
    }
}
