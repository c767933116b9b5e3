//! Helpers for leadroute's system tests: engines on temp dirs with a manual clock,
//! small organisations, lead generators, and invariant assertions.
//!
//! The tests themselves live in `tests/`: `routing.rs` (behaviour through the real
//! actors and store), `restart.rs` (durability across restarts and repair),
//! `backup.rs` (online backups and restores), `webhooks.rs` (the webhook
//! dispatcher's progress in the store), `concurrency.rs` (property test of
//! random concurrent interleavings), the plugin
//! suites `plugins_*.rs` (example plugins through the real host, hostile modules, hot
//! swap under load, restart), and `fuzz_corpus.rs`, which replays the saved inputs of
//! the fuzz targets in `fuzz/` through the checks in [`fuzz`].

pub mod fuzz;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use leadroute_engine::domain::{
    EventKind, LeadEventInput, LeadId, LeadInput, OutboxEvent, Outcome, RepId, RepInput,
    TerritoryId, TerritoryInput, WebhookId, WebhookInput,
};
use leadroute_engine::store::DeadLetter;
use leadroute_engine::{Checkpoint, Engine, EngineConfig, ManualClock, RouteStatus};
use tokio::sync::mpsc;

/// Whether this process may mount file systems: `CAP_SYS_ADMIN` in its effective
/// capabilities, as root has on an ordinary machine. The disk-trouble tests mount a
/// small tmpfs; where mounting is allowed, a mount that fails fails the test, and only
/// where it is not (an unprivileged user, a locked-down container) do they skip.
pub fn may_mount() -> bool {
    const CAP_SYS_ADMIN: u32 = 21;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:").map(|v| v.trim().to_string()))
        })
        .and_then(|hex| u64::from_str_radix(&hex, 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_SYS_ADMIN) != 0)
}

/// A tmpfs mounted on a temp dir; unmounted on drop.
pub struct Tmpfs(pub tempfile::TempDir);

impl Tmpfs {
    /// Mounts one of `size` (as `mount -o size=` reads it).
    pub fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs(dir))
    }

    /// Mounts one. Where mounting is allowed, a failed mount fails the test; where
    /// it is not (see [`may_mount`]), this says why and returns
    /// `None`, and the test passes without running.
    pub fn mount_or_skip(size: &str) -> Option<Tmpfs> {
        match Tmpfs::mount(size) {
            Ok(tmpfs) => Some(tmpfs),
            Err(why) if may_mount() => panic!("cannot mount a tmpfs: {why}"),
            Err(why) => {
                println!("SKIPPED: mounting is not allowed here (no CAP_SYS_ADMIN): {why}");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = std::process::Command::new("umount")
            .arg(self.0.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(self.0.path())
                .status();
        }
    }
}

/// Opens the sled store in `dir` directly, to change it behind the engine's back,
/// waiting (up to ten seconds) for the file lock an engine just shut down on it lets
/// go of: sled's background threads keep it a moment after the last handle is gone.
pub fn sled_when_free(dir: &std::path::Path) -> sled::Db {
    let started = std::time::Instant::now();
    loop {
        match sled::open(dir) {
            Ok(db) => return db,
            Err(e) if e.to_string().contains("WouldBlock") && started.elapsed().as_secs() < 10 => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("cannot open the store in {}: {e}", dir.display()),
        }
    }
}

/// An engine on a fresh temp dir with a manual clock.
pub struct Fixture {
    /// The engine.
    pub engine: Engine,
    /// Its clock.
    pub clock: ManualClock,
    /// Its data dir, removed on drop.
    pub dir: tempfile::TempDir,
}

/// Opens an engine on `dir` with `clock`.
pub fn open(dir: &std::path::Path, clock: &ManualClock) -> Engine {
    Engine::open(EngineConfig::new(dir).clock(clock.clone())).expect("engine opens")
}

/// A fresh engine on a new temp dir.
pub fn fixture() -> Fixture {
    fixture_with(|config| config)
}

/// A fresh engine on a new temp dir, configured further by `configure`.
pub fn fixture_with(configure: impl FnOnce(EngineConfig) -> EngineConfig) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let config = configure(EngineConfig::new(dir.path()).clock(clock.clone()));
    let engine = Engine::open(config).expect("engine opens");
    Fixture { engine, clock, dir }
}

/// A territory id.
pub fn tid(s: &str) -> TerritoryId {
    TerritoryId::new(s).unwrap()
}

/// A rep id.
pub fn rid(s: &str) -> RepId {
    RepId::new(s).unwrap()
}

/// A territory from its JSON body.
pub fn territory(json: serde_json::Value) -> TerritoryInput {
    serde_json::from_value(json).unwrap()
}

/// A rep of `territory` with `capacity`.
pub fn rep(territory: &str, capacity: u32) -> RepInput {
    RepInput {
        name: "Rep".into(),
        territories: vec![territory.into()],
        capacity,
        ..Default::default()
    }
}

/// Lead number `n` (its phone makes it unique) in `region`.
pub fn lead(n: u32, region: &str) -> LeadInput {
    LeadInput {
        phone: Some(format!("+86 139 {:04} {:04}", n / 10_000, n % 10_000)),
        region: Some(region.into()),
        ..Default::default()
    }
}

/// One territory `east` owning CN-SH (default), with reps `a`, `b` of the given capacity.
pub async fn east_with_reps(engine: &Engine, capacity: u32) {
    engine
        .upsert_territory(
            tid("east"),
            territory(serde_json::json!({"name": "East", "regions": ["CN-SH"], "default": true})),
        )
        .await
        .unwrap();
    for id in ["a", "b"] {
        engine
            .upsert_rep(rid(id), rep("east", capacity))
            .await
            .unwrap();
    }
}

/// The fixture's `n`th lead: every third in Beijing (the north territory), the rest in
/// Shanghai. Routing it again repeats its contact.
pub fn fixture_lead(n: u32) -> LeadInput {
    let region = if n.is_multiple_of(3) {
        "CN-BJ"
    } else {
        "CN-SH-PD"
    };
    lead(n, region)
}

/// Everything observable about an engine's state, for before/after comparison.
#[derive(Debug, PartialEq)]
pub struct Observed {
    /// Each rep: id, load, capacity, the whole rep.
    pub reps: Vec<(String, u32, u32, String)>,
    /// Each territory and its queue.
    pub territories: Vec<(String, Vec<LeadId>)>,
    /// Each lead, as the engine shows it.
    pub leads: BTreeMap<LeadId, String>,
}

/// Settles `engine` and reads its reps, territories and the given leads.
pub async fn observe(engine: &Engine, leads: &[LeadId]) -> Observed {
    engine.settle().await.unwrap();
    let reps = engine
        .reps()
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.rep.id.to_string(),
                r.load,
                r.rep.capacity,
                format!("{:?}", r.rep),
            )
        })
        .collect();
    let territories = engine
        .territories()
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.territory.id.to_string(), t.queue))
        .collect();
    let leads = leads
        .iter()
        .map(|id| (*id, format!("{:?}", engine.lead(*id).unwrap().unwrap())))
        .collect();
    Observed {
        reps,
        territories,
        leads,
    }
}

/// Two territories, uneven capacity, and leads in every state: assigned, queued,
/// touched, advanced, closed, duplicated.
pub async fn populate(engine: &Engine) -> Vec<LeadId> {
    east_with_reps(engine, 3).await;
    engine
        .upsert_territory(
            tid("north"),
            territory(serde_json::json!({
                "name": "North", "regions": ["CN-BJ"],
                "strategy": {"builtin": "rules"}, "plugin_config": {"vip_threshold": 5000}
            })),
        )
        .await
        .unwrap();
    engine.upsert_rep(rid("n1"), rep("north", 1)).await.unwrap();
    let mut ids = Vec::new();
    for n in 0..10 {
        let o = engine.route(fixture_lead(n)).await.unwrap();
        ids.push(o.lead_id);
    }
    let dup = engine.route(lead(1, "CN-SH")).await.unwrap();
    assert_eq!(dup.status, RouteStatus::Duplicate);
    engine
        .record_event(ids[1], LeadEventInput::Touched)
        .await
        .unwrap();
    engine
        .record_event(
            ids[2],
            LeadEventInput::Closed {
                outcome: Outcome::Won,
            },
        )
        .await
        .unwrap();
    ids
}

/// Subscribes webhook `id` to `lead.assigned` at an address nothing listens on: the
/// tests that use it drive the dispatcher's steps themselves.
pub async fn subscribe(engine: &Engine, id: &str) -> WebhookId {
    let id = WebhookId::new(id).unwrap();
    let input = WebhookInput {
        url: "http://127.0.0.1:9/hook".into(),
        events: vec![EventKind::LeadAssigned],
        secret: "whsec-test-0123456789".into(),
    };
    engine.put_webhook(id.clone(), input).await.unwrap();
    id
}

/// The dead letter of event `seq`, as the dispatcher parks it after its attempts.
pub fn dead_letter(seq: u64) -> DeadLetter {
    let mut event = OutboxEvent::new(EventKind::LeadAssigned, 1_700_000_000_000);
    event.seq = seq;
    DeadLetter {
        event,
        attempts: 8,
        last_error: "HTTP 500".into(),
        failed_at: 1_700_000_000_000,
        redrive: false,
    }
}

/// Settles and asserts every invariant holds.
pub async fn assert_healthy(engine: &Engine) {
    engine.settle().await.unwrap();
    let problems = engine.check_invariants().await.unwrap();
    assert!(problems.is_empty(), "invariants broken: {problems:#?}");
}

/// Territory `east` (CN-SH, default) routed by plugin `name` (following its active
/// version) with `config`, and reps `a`, `b` of the given capacity.
pub async fn east_with_plugin(
    engine: &Engine,
    name: &str,
    config: serde_json::Value,
    capacity: u32,
) {
    engine
        .upsert_territory(
            tid("east"),
            territory(
                serde_json::json!({"name": "East", "regions": ["CN-SH"], "default": true,
                "strategy": {"plugin": name}, "plugin_config": config}),
            ),
        )
        .await
        .unwrap();
    for id in ["a", "b"] {
        engine
            .upsert_rep(rid(id), rep("east", capacity))
            .await
            .unwrap();
    }
}

/// A probe for [`EngineConfig::probe`] that holds the first threads reaching one
/// checkpoint until the test releases them, and reports checkpoints on a channel, so a
/// test knows where a replay, a compile, the audit or a re-route is without guessing
/// from time.
///
/// The checkpoints of the same kind of work as the held one (replays, compiles, the
/// audit, re-routes) are reported, except [`Checkpoint::ReplayStep`], which comes once
/// per lead and decision: that one is only counted, and reported when it is held.
pub struct Holder {
    at: Checkpoint,
    to_hold: AtomicUsize,
    released: Mutex<usize>,
    wake: Condvar,
    steps: AtomicUsize,
    events: mpsc::UnboundedSender<Checkpoint>,
}

/// The kind of work a checkpoint belongs to.
#[derive(PartialEq, Eq)]
enum Work {
    Replay,
    Compile,
    Audit,
    Reassign,
    BackupTree,
    Backup,
}

fn work(at: Checkpoint) -> Work {
    match at {
        Checkpoint::ReplayStep | Checkpoint::ReplayCancelled | Checkpoint::ReplayEnded => {
            Work::Replay
        }
        Checkpoint::CompileStarted | Checkpoint::CompileEnded => Work::Compile,
        Checkpoint::AuditScan => Work::Audit,
        Checkpoint::ReassignRead => Work::Reassign,
        Checkpoint::BackupTree => Work::BackupTree,
        Checkpoint::BackupRead => Work::Backup,
        other => panic!("the holder does not know {other:?}"),
    }
}

impl Holder {
    /// Holds the first `count` threads reaching `at`; returns the holder and the
    /// channel of reported checkpoints.
    pub fn new(at: Checkpoint, count: usize) -> (Arc<Holder>, mpsc::UnboundedReceiver<Checkpoint>) {
        let (events, rx) = mpsc::unbounded_channel();
        let holder = Arc::new(Holder {
            at,
            to_hold: AtomicUsize::new(count),
            released: Mutex::new(0),
            wake: Condvar::new(),
            steps: AtomicUsize::new(0),
            events,
        });
        (holder, rx)
    }

    /// The probe to configure the engine with.
    pub fn probe(self: &Arc<Self>) -> impl Fn(Checkpoint) + Send + Sync + 'static {
        let holder = self.clone();
        move |at| holder.reached(at)
    }

    fn reached(&self, at: Checkpoint) {
        if at == Checkpoint::ReplayStep {
            self.steps.fetch_add(1, Ordering::SeqCst);
        }
        let hold = at == self.at
            && self
                .to_hold
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if hold || (at != Checkpoint::ReplayStep && work(at) == work(self.at)) {
            let _ = self.events.send(at);
        }
        if hold {
            let mut released = self.released.lock().unwrap();
            while *released == 0 {
                released = self.wake.wait(released).unwrap();
            }
            *released -= 1;
        }
    }

    /// Lets `n` held threads (or threads yet to be held) go on.
    pub fn release(&self, n: usize) {
        *self.released.lock().unwrap() += n;
        self.wake.notify_all();
    }

    /// [`Checkpoint::ReplayStep`]s reached so far.
    pub fn steps(&self) -> usize {
        self.steps.load(Ordering::SeqCst)
    }
}

/// Waits for the next reported checkpoint and checks it is `expected`. The bound only
/// turns a hang into a failure; nothing waits on it otherwise.
pub async fn expect_checkpoint(rx: &mut mpsc::UnboundedReceiver<Checkpoint>, expected: Checkpoint) {
    let got = tokio::time::timeout(std::time::Duration::from_secs(60), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no checkpoint within 60 s; expected {expected:?}"))
        .expect("the probe is alive");
    assert_eq!(got, expected);
}
