//! Engine benchmarks, all in one run:
//!
//! 1. **Decision without commit** (`decision/simulate/{reps}`): `Engine::simulate` ranks
//!    a lead's candidates through the territory actor and reserves nothing. The
//!    percentile pass also reports `SimulatedDecision::decide`, the ranking alone,
//!    because `simulate` includes a round trip to the actor thread.
//! 2. **Durable route** (`route/{power,process}/…`): `Engine::route`, answered once the
//!    lead is committed, with `Durability::Power` (flush + fdatasync per group) and
//!    `Durability::Process` (flush only); one caller in a loop (`sequential`, latency)
//!    and [`CALLERS`] concurrent callers (`concurrent-64`, throughput).
//! 3. **Baselines**: a bare sled insert + flush per item (`sled/…`), alone and with
//!    the same concurrency behind one shared flusher, the floor under the engine's
//!    commit; and a bare round trip to another thread (`decision/thread-hop-baseline`),
//!    the floor under `simulate`'s actor hop.
//!
//! Criterion runs first and reports medians. Then a percentile pass repeats each
//! scenario on fresh engines with every call's latency in an HDR histogram, and prints
//! markdown tables: p50 / p99 / p99.9, throughput, where the time went per stage, and
//! whether the targets were met. Run it with
//! `cargo bench -p leadroute-benches --bench engine`; see `benches/README.md`.
//!
//! Every fixture territory uses the `rules` strategy, the costliest built-in (skill,
//! then seniority, then least loaded), so decision figures bound the others from above.

use std::fs::File;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use leadroute_benches::{
    CommitStats, Fixture, Latency, LeadSource, NeighbourCpu, Report, Row, Stages, ThreadCpu,
    format_duration, stages_markdown,
};
use leadroute_engine::domain::{BuiltinStrategy, LeadInput};
use leadroute_engine::{Durability, Engine, RouteStatus, Timings};
use tempfile::TempDir;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;

/// Territory sizes: a small team, a typical territory, a national pool.
const REP_COUNTS: [usize; 3] = [10, 50, 500];
/// Callers in flight at once in the throughput scenarios, like HTTP handlers.
const CALLERS: usize = 64;
/// Callers in the scaling check (smallest territory only; see `report`).
const SCALING_CALLERS: usize = 256;
/// See the module docs.
const STRATEGY: BuiltinStrategy = BuiltinStrategy::Rules;
const DURABILITIES: [Durability; 2] = [Durability::Power, Durability::Process];

/// Target: a decision (no commit) at 50 reps, p99.
const DECISION_TARGET_REPS: usize = 50;
const DECISION_TARGET_P99: Duration = Duration::from_micros(50);
/// Target: durable routes per second with concurrent callers.
const THROUGHPUT_TARGET: f64 = 20_000.0;

/// Bytes per sled baseline value: one lead-sized record (a lead's contact, attributes
/// and ids take a few hundred bytes). The engine writes several trees per lead, so the
/// baseline is a floor, not a like-for-like copy.
const SLED_VALUE_BYTES: usize = 512;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |f: &str| args.iter().any(|a| a == f);
    // `cargo bench` passes `--bench`; without it (`cargo test --benches`) Criterion
    // runs each benchmark once as a test, and the percentile pass shrinks to match.
    let passes = if flag("--bench") && !flag("--test") {
        Passes::FULL
    } else {
        Passes::SMOKE
    };
    // Other processes skew every figure on a 2-core machine; the load is printed with
    // the results so a noisy run can be recognised.
    let load_at_start = load_average();
    let rt = runtime();
    let leads = LeadSource::new();

    let mut criterion = Criterion::default().configure_from_args();
    bench_decision(&mut criterion, &rt, &leads);
    bench_routes(&mut criterion, &rt, &leads);
    bench_sled(&mut criterion, &rt);
    criterion.final_summary();

    if !flag("--list") {
        report(&rt, &leads, passes, Selected::from_env());
        let cores = std::thread::available_parallelism().map_or(0, usize::from);
        println!();
        println!(
            "Machine: {cores} cores. Load average (1/5/15 min) at start: {load_at_start}; at end: {}.",
            load_average()
        );
    }
}

/// The 1, 5 and 15 minute load averages (Linux), or `unknown`.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// The callers' runtime: one worker per core (2 on the reference machine). The engine
/// adds its own actor and committer threads, as it does inside the server.
fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn durability_name(d: Durability) -> &'static str {
    match d {
        Durability::Power => "power",
        Durability::Process => "process",
    }
}

// ---------------------------------------------------------------------------------
// Scenarios, shared by the Criterion benchmarks and the percentile pass.
// ---------------------------------------------------------------------------------

/// One durable route as a caller saw it.
struct Call {
    latency: Duration,
    timings: Timings,
}

/// A pass over many routes: wall time, and each call.
struct Pass {
    elapsed: Duration,
    calls: Vec<Call>,
}

impl Pass {
    fn latency(&self) -> Latency {
        Latency::of(self.calls.iter().map(|c| c.latency))
    }

    fn stages(&self) -> Stages {
        let mut stages = Stages::default();
        for call in &self.calls {
            stages.record(&call.timings);
        }
        stages
    }

    fn throughput(&self) -> f64 {
        self.calls.len() as f64 / self.elapsed.as_secs_f64()
    }
}

/// Opens a fixture, panicking on failure: a bench cannot go on without it.
fn open_fixture(rt: &Runtime, reps: usize, durability: Durability) -> Fixture {
    rt.block_on(Fixture::open(reps, durability, STRATEGY))
        .unwrap_or_else(|e| panic!("cannot set up {reps} reps: {e}"))
}

fn close_fixture(rt: &Runtime, fixture: Fixture) {
    rt.block_on(fixture.close()).expect("engine shutdown");
}

/// A fixture for decisions. A few leads per rep are routed first so that loads and
/// last-assignment times differ, and ranking compares on every criterion rather than
/// falling straight through to rep ids.
fn decision_fixture(rt: &Runtime, reps: usize, leads: &LeadSource) -> Fixture {
    let fixture = open_fixture(rt, reps, Durability::Process);
    route_concurrently(rt, &fixture.engine, leads.take(reps * 4), CALLERS);
    fixture
}

/// One simulation; the ranking must not be empty or nothing was decided.
async fn simulate(engine: &Engine, lead: &LeadInput) -> leadroute_engine::Simulation {
    let sim = engine.simulate(lead, None).await.expect("simulate");
    assert!(!sim.decision.ranking.is_empty(), "simulation ranked nobody");
    sim
}

/// Routes one lead and times it. Anything but `Assigned` means the bench measured
/// another path (a duplicate skips routing, a queued lead skips reservation), so the
/// run stops rather than report a misleading figure.
async fn timed_route(engine: &Engine, lead: LeadInput) -> Call {
    let started = Instant::now();
    let outcome = engine.route(lead).await.expect("route");
    let latency = started.elapsed();
    assert_eq!(
        outcome.status,
        RouteStatus::Assigned,
        "bench lead was not assigned: {}",
        outcome.reason
    );
    Call {
        latency,
        timings: outcome.timings,
    }
}

/// Routes `leads` one after another from a single caller.
fn route_sequentially(rt: &Runtime, engine: &Engine, leads: Vec<LeadInput>) -> Pass {
    rt.block_on(async {
        let mut calls = Vec::with_capacity(leads.len());
        let started = Instant::now();
        for lead in leads {
            calls.push(timed_route(engine, lead).await);
        }
        Pass {
            elapsed: started.elapsed(),
            calls,
        }
    })
}

/// Routes `leads` from `callers` tasks at once, each working through its share in a
/// loop. The leads are dealt out before the clock starts.
fn route_concurrently(
    rt: &Runtime,
    engine: &Engine,
    leads: Vec<LeadInput>,
    callers: usize,
) -> Pass {
    let mut shares: Vec<Vec<LeadInput>> = (0..callers).map(|_| Vec::new()).collect();
    for (i, lead) in leads.into_iter().enumerate() {
        shares[i % callers].push(lead);
    }
    rt.block_on(async {
        let started = Instant::now();
        let tasks: Vec<_> = shares
            .into_iter()
            .map(|share| {
                let engine = engine.clone();
                tokio::spawn(async move {
                    let mut calls = Vec::with_capacity(share.len());
                    for lead in share {
                        calls.push(timed_route(&engine, lead).await);
                    }
                    calls
                })
            })
            .collect();
        let mut per_task = Vec::with_capacity(tasks.len());
        for task in tasks {
            per_task.push(task.await.expect("caller task panicked"));
        }
        Pass {
            elapsed: started.elapsed(),
            calls: per_task.into_iter().flatten().collect(),
        }
    })
}

/// The platform's cost of `simulate`'s hop without the engine: a request over a tokio
/// channel to a current-thread runtime on its own thread (actix runs actors on one),
/// answered over a oneshot. `simulate` minus `decide` minus this is the engine's own
/// overhead around the ranking.
struct ThreadHop {
    tx: Option<tokio::sync::mpsc::UnboundedSender<oneshot::Sender<()>>>,
    thread: Option<JoinHandle<()>>,
}

impl ThreadHop {
    fn start() -> ThreadHop {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<oneshot::Sender<()>>();
        let thread = std::thread::Builder::new()
            .name("bench-hop".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("hop runtime");
                rt.block_on(async move {
                    while let Some(reply) = rx.recv().await {
                        let _ = reply.send(());
                    }
                });
            })
            .expect("hop thread");
        ThreadHop {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    /// There and back again.
    async fn round_trip(&self) {
        let (reply, answer) = oneshot::channel();
        self.tx
            .as_ref()
            .expect("hop thread running")
            .send(reply)
            .expect("hop thread alive");
        answer.await.expect("hop thread answered");
    }
}

impl Drop for ThreadHop {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop.
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A bare sled database on a temporary directory, made durable the way the engine's
/// committer does it: `flush()` (pwrite + `sync_file_range` on Linux), then
/// `fdatasync` of sled's data file when `fdatasync` is set (the `Power` analogue).
struct SledBaseline {
    db: sled::Db,
    data_file: Option<File>,
    next_key: AtomicU64,
    value: Vec<u8>,
    // Dropped after `db`, so sled's files go away with the directory.
    _dir: TempDir,
}

impl SledBaseline {
    fn open(fdatasync: bool) -> Arc<SledBaseline> {
        let dir = tempfile::Builder::new()
            .prefix("leadroute-bench-sled-")
            .tempdir()
            .expect("temp dir");
        let db = sled::Config::new()
            .path(dir.path())
            .open()
            .expect("sled open");
        // sled 0.34 keeps its log and pages in `<dir>/db`, as the engine assumes too.
        let data_file =
            fdatasync.then(|| File::open(dir.path().join("db")).expect("sled data file"));
        Arc::new(SledBaseline {
            db,
            data_file,
            next_key: AtomicU64::new(0),
            value: vec![0x5a; SLED_VALUE_BYTES],
            _dir: dir,
        })
    }

    /// Inserts a new item (keys never repeat, so every insert adds data).
    fn insert(&self) {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        self.db
            .insert(key.to_be_bytes(), self.value.as_slice())
            .expect("sled insert");
    }

    /// Makes everything inserted so far durable.
    fn make_durable(&self) {
        self.db.flush().expect("sled flush");
        if let Some(file) = &self.data_file {
            file.sync_data().expect("fdatasync");
        }
    }

    /// One item, durable before returning: the single-caller baseline.
    fn insert_durable(&self) -> Duration {
        let started = Instant::now();
        self.insert();
        self.make_durable();
        started.elapsed()
    }
}

/// Group commit without the engine: callers insert on their own, then wait for one
/// flusher thread, which makes durable once for everyone who asked meanwhile. It is the
/// engine committer's shape minus transactions, actors and encoding, so it bounds
/// what the engine's durable throughput could be on this disk.
struct SharedFlusher {
    tx: Option<mpsc::Sender<oneshot::Sender<()>>>,
    thread: Option<JoinHandle<()>>,
}

impl SharedFlusher {
    fn start(store: Arc<SledBaseline>) -> SharedFlusher {
        let (tx, rx) = mpsc::channel::<oneshot::Sender<()>>();
        let thread = std::thread::Builder::new()
            .name("bench-flusher".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    // Everyone who asked before this flush started is covered by it.
                    let mut waiters = vec![first];
                    waiters.extend(rx.try_iter());
                    store.make_durable();
                    for waiter in waiters {
                        let _ = waiter.send(());
                    }
                }
            })
            .expect("flusher thread");
        SharedFlusher {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    /// Resolves once everything inserted before the call is durable.
    async fn durable(&self) {
        let (done, wait) = oneshot::channel();
        self.tx
            .as_ref()
            .expect("flusher running")
            .send(done)
            .expect("flusher alive");
        wait.await.expect("flusher answered");
    }
}

impl Drop for SharedFlusher {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop.
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `items` durable inserts from [`CALLERS`] tasks sharing one flusher. Returns the
/// wall time and each insert's latency.
fn sled_concurrently(
    rt: &Runtime,
    store: &Arc<SledBaseline>,
    items: usize,
) -> (Duration, Vec<Duration>) {
    let flusher = Arc::new(SharedFlusher::start(store.clone()));
    rt.block_on(async {
        let started = Instant::now();
        let tasks: Vec<_> = (0..CALLERS)
            .map(|caller| {
                let (store, flusher) = (store.clone(), flusher.clone());
                // Deal `items` out as evenly as possible.
                let share = items / CALLERS + usize::from(caller < items % CALLERS);
                tokio::spawn(async move {
                    let mut latencies = Vec::with_capacity(share);
                    for _ in 0..share {
                        let t = Instant::now();
                        store.insert();
                        flusher.durable().await;
                        latencies.push(t.elapsed());
                    }
                    latencies
                })
            })
            .collect();
        let mut per_task = Vec::with_capacity(tasks.len());
        for task in tasks {
            per_task.push(task.await.expect("sled caller panicked"));
        }
        (started.elapsed(), per_task.into_iter().flatten().collect())
    })
}

// ---------------------------------------------------------------------------------
// Criterion benchmarks: medians.
// ---------------------------------------------------------------------------------

fn bench_decision(c: &mut Criterion, rt: &Runtime, leads: &LeadSource) {
    let mut group = c.benchmark_group("decision");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for reps in REP_COUNTS {
        let fixture = decision_fixture(rt, reps, leads);
        let lead = leads.next_lead();
        group.bench_with_input(BenchmarkId::new("simulate", reps), &lead, |b, lead| {
            // One `block_on` per sample, not per call, so the runtime's entry cost is
            // not measured; what remains is the engine's own work and its actor hop.
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iters {
                        black_box(simulate(&fixture.engine, lead).await);
                    }
                    started.elapsed()
                })
            })
        });
        close_fixture(rt, fixture);
    }
    let hop = ThreadHop::start();
    group.bench_function("thread-hop-baseline", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    hop.round_trip().await;
                }
                started.elapsed()
            })
        })
    });
    group.finish();
}

fn bench_routes(c: &mut Criterion, rt: &Runtime, leads: &LeadSource) {
    for durability in DURABILITIES {
        let mut group = c.benchmark_group(format!("route/{}", durability_name(durability)));
        // A durable route costs a disk write: ten samples of three seconds keep the
        // whole run short and still give a stable median.
        group
            .throughput(Throughput::Elements(1))
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3));
        for reps in REP_COUNTS {
            let fixture = open_fixture(rt, reps, durability);
            let engine = &fixture.engine;
            // Leads are made before each sample's clock starts (`take`), and every
            // iteration routes a lead never seen before.
            group.bench_function(BenchmarkId::new("sequential", reps), |b| {
                b.iter_custom(|iters| {
                    route_sequentially(rt, engine, leads.take(iters as usize)).elapsed
                })
            });
            group.bench_function(
                BenchmarkId::new(format!("concurrent-{CALLERS}"), reps),
                |b| {
                    b.iter_custom(|iters| {
                        route_concurrently(rt, engine, leads.take(iters as usize), CALLERS).elapsed
                    })
                },
            );
            close_fixture(rt, fixture);
        }
        group.finish();
    }
}

fn bench_sled(c: &mut Criterion, rt: &Runtime) {
    let mut group = c.benchmark_group("sled");
    group
        .throughput(Throughput::Elements(1))
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let store = SledBaseline::open(false);
    group.bench_function("insert-flush/sequential", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| store.insert_durable()).sum())
    });
    group.bench_function(format!("insert-flush/shared-flusher-{CALLERS}"), |b| {
        b.iter_custom(|iters| sled_concurrently(rt, &store, iters as usize).0)
    });
    group.finish();
}

// ---------------------------------------------------------------------------------
// Percentile pass: every call recorded, tables printed.
// ---------------------------------------------------------------------------------

/// How much work each percentile pass does.
#[derive(Clone, Copy)]
struct Passes {
    /// Unrecorded calls before each recorded pass (caches, allocator, sled segments).
    warm_up: usize,
    /// Recorded simulations per rep count.
    decisions: usize,
    /// Recorded routes from one caller, per durability and rep count.
    sequential_routes: usize,
    /// Recorded routes per concurrent caller, per durability and rep count.
    routes_per_caller: usize,
    /// Recorded sled baseline items, per variant.
    sled_items: usize,
}

impl Passes {
    /// `cargo bench`: enough calls that p99 rests on hundreds of samples or more.
    const FULL: Passes = Passes {
        warm_up: 1_000,
        decisions: 20_000,
        sequential_routes: 2_000,
        routes_per_caller: 400,
        sled_items: 2_000,
    };

    /// `cargo test --benches`: a quick sweep that proves every pass still works.
    const SMOKE: Passes = Passes {
        warm_up: 10,
        decisions: 100,
        sequential_routes: 20,
        routes_per_caller: 2,
        sled_items: 64,
    };
}

/// A target and whether it was met.
struct Verdict {
    target: String,
    measured: String,
    met: bool,
}

/// Everything the percentile pass prints, gathered scenario by scenario.
#[derive(Default)]
struct Findings {
    table: Report,
    stages: Vec<(String, Stages)>,
    /// Rows of the CPU-by-thread table.
    cpu: Vec<String>,
    /// Rows of the group-commit table.
    commits: Vec<String>,
    /// Rows of the store-size table.
    growth: Vec<String>,
    verdicts: Vec<Verdict>,
}

impl Findings {
    /// Records a route pass: its percentile row (with the cores other processes used
    /// meanwhile), its stage breakdown and, when given, the CPU its threads used.
    fn route_pass(
        &mut self,
        label: &str,
        reps: usize,
        (pass, others): &(Pass, f64),
        cpu: Option<&ThreadCpu>,
    ) {
        self.table.push(Row {
            scenario: label.to_string(),
            reps: Some(reps),
            latency: pass.latency(),
            throughput: Some(pass.throughput()),
            others: Some(*others),
        });
        self.stages
            .push((format!("{label}, {reps} reps"), pass.stages()));
        if let Some(cpu) = cpu {
            self.cpu
                .push(cpu_row(&format!("{label}, {reps} reps"), cpu, pass.elapsed));
        }
    }

    fn verdict(&mut self, target: String, measured: String, met: bool) {
        self.verdicts.push(Verdict {
            target,
            measured,
            met,
        });
    }
}

/// Runs `pass`, returning its result and the cores other processes kept busy
/// meanwhile.
fn watching_others<T>(pass: impl FnOnce() -> T) -> (T, f64) {
    let before = NeighbourCpu::now();
    let result = pass();
    (result, NeighbourCpu::now().cores_since(&before))
}

/// Which percentile passes run: all by default, or those named in
/// `LEADROUTE_BENCH_PASSES` (comma-separated: `decision`, `route`, `sled`), e.g. to
/// repeat only the decision pass under `taskset`. Criterion benchmarks are selected
/// with Criterion's own filter (`cargo bench … -- decision`).
#[derive(Clone, Copy)]
struct Selected {
    decision: bool,
    route: bool,
    sled: bool,
}

impl Selected {
    fn from_env() -> Selected {
        match std::env::var("LEADROUTE_BENCH_PASSES") {
            Ok(list) => {
                let has = |name: &str| list.split(',').any(|p| p.trim() == name);
                Selected {
                    decision: has("decision"),
                    route: has("route"),
                    sled: has("sled"),
                }
            }
            Err(_) => Selected {
                decision: true,
                route: true,
                sled: true,
            },
        }
    }
}

fn report(rt: &Runtime, leads: &LeadSource, passes: Passes, selected: Selected) {
    let mut found = Findings::default();
    if selected.decision {
        report_decisions(&mut found, rt, leads, passes);
    }
    if selected.route {
        report_routes(&mut found, rt, leads, passes);
    }
    if selected.sled {
        report_sled(&mut found, rt, passes);
    }
    print_report(&found);
}

/// Simulations at each rep count, and the bare thread hop beside them.
fn report_decisions(found: &mut Findings, rt: &Runtime, leads: &LeadSource, passes: Passes) {
    for reps in REP_COUNTS {
        let (whole, decide, others) = decision_pass(rt, leads, reps, passes);
        if reps == DECISION_TARGET_REPS {
            for (what, latency) in [("simulate", &whole), ("decide only", &decide)] {
                let p99 = latency.quantile(0.99);
                found.verdict(
                    format!(
                        "decision ({what}) p99 ≤ {} at {reps} reps",
                        format_duration(DECISION_TARGET_P99)
                    ),
                    format_duration(p99),
                    p99 <= DECISION_TARGET_P99,
                );
            }
        }
        found.table.push(Row {
            scenario: "simulate: decision, no commit (incl. actor hop)".into(),
            reps: Some(reps),
            latency: whole,
            throughput: None,
            others: Some(others),
        });
        found.table.push(Row {
            scenario: "sim.decision.decide: ranking only".into(),
            reps: Some(reps),
            latency: decide,
            throughput: None,
            others: Some(others),
        });
    }

    let hop = ThreadHop::start();
    rt.block_on(async {
        for _ in 0..passes.warm_up {
            hop.round_trip().await;
        }
    });
    let (hops, others) = watching_others(|| {
        rt.block_on(async {
            let mut hops = Latency::new();
            for _ in 0..passes.decisions {
                let started = Instant::now();
                hop.round_trip().await;
                hops.record(started.elapsed());
            }
            hops
        })
    });
    drop(hop);
    found.table.push(Row {
        scenario: "bare thread hop: tokio round trip to another thread (baseline)".into(),
        reps: None,
        latency: hops,
        throughput: None,
        others: Some(others),
    });
}

/// Durable routes: one caller, then concurrent callers, per durability and rep count.
fn report_routes(found: &mut Findings, rt: &Runtime, leads: &LeadSource, passes: Passes) {
    let concurrent_routes = passes.routes_per_caller * CALLERS;
    for durability in DURABILITIES {
        let name = durability_name(durability);
        for reps in REP_COUNTS {
            let fixture = open_fixture(rt, reps, durability);
            let engine = &fixture.engine;
            let mut routed = passes.warm_up;
            route_sequentially(rt, engine, leads.take(passes.warm_up));

            let batch = leads.take(passes.sequential_routes);
            let sequential = watching_others(|| route_sequentially(rt, engine, batch));
            routed += sequential.0.calls.len();
            found.route_pass(&format!("route, {name}, 1 caller"), reps, &sequential, None);

            // The scaling check runs on the smallest territory only, where the actor has
            // the least work per lead: it shows whether more callers (bigger commit
            // groups) would raise throughput, or whether the engine is already saturated.
            let callers: &[usize] = if reps == REP_COUNTS[0] {
                &[CALLERS, SCALING_CALLERS]
            } else {
                &[CALLERS]
            };
            for &callers in callers {
                let batch = leads.take(concurrent_routes);
                let (threads_before, commits_before) = (ThreadCpu::now(), CommitStats::of(engine));
                let pass = watching_others(|| route_concurrently(rt, engine, batch, callers));
                let threads = ThreadCpu::now().since(&threads_before);
                let commits = CommitStats::of(engine).since(&commits_before);
                routed += pass.0.calls.len();
                let label = format!("route, {name}, {callers} callers");
                found.route_pass(&label, reps, &pass, Some(&threads));
                found.commits.push(commit_row(
                    &format!("{label}, {reps} reps"),
                    &commits,
                    pass.0.elapsed,
                ));
                let throughput = pass.0.throughput();
                found.verdict(
                    format!("durable routes ≥ {THROUGHPUT_TARGET:.0}/s: {label}, {reps} reps"),
                    format!("{throughput:.0}/s"),
                    throughput >= THROUGHPUT_TARGET,
                );
            }

            let bytes = fixture.disk_bytes();
            found.growth.push(format!(
                "| {name} | {reps} | {routed} | {:.1} MiB | {:.1} KiB |",
                bytes as f64 / (1024.0 * 1024.0),
                bytes as f64 / 1024.0 / routed as f64
            ));
            close_fixture(rt, fixture);
        }
    }
}

/// The sled baselines, with and without fdatasync.
fn report_sled(found: &mut Findings, rt: &Runtime, passes: Passes) {
    let concurrent_routes = passes.routes_per_caller * CALLERS;
    for fdatasync in [false, true] {
        let label = if fdatasync {
            "flush + fdatasync"
        } else {
            "flush"
        };
        let store = SledBaseline::open(fdatasync);
        for _ in 0..passes.warm_up.min(passes.sled_items) {
            store.insert_durable();
        }
        let started = Instant::now();
        let (single, others) =
            watching_others(|| Latency::of((0..passes.sled_items).map(|_| store.insert_durable())));
        let single_rate = passes.sled_items as f64 / started.elapsed().as_secs_f64();
        found.table.push(Row {
            scenario: format!("sled insert + {label}, 1 caller"),
            reps: None,
            latency: single,
            throughput: Some(single_rate),
            others: Some(others),
        });
        let ((elapsed, latencies), others) =
            watching_others(|| sled_concurrently(rt, &store, concurrent_routes));
        found.table.push(Row {
            scenario: format!("sled insert + {label}, {CALLERS} callers, shared flusher"),
            reps: None,
            latency: Latency::of(latencies),
            throughput: Some(concurrent_routes as f64 / elapsed.as_secs_f64()),
            others: Some(others),
        });
    }
}

/// Simulations at `reps`: whole-call latency, the ranking time the engine reports,
/// and the cores other processes used meanwhile.
fn decision_pass(
    rt: &Runtime,
    leads: &LeadSource,
    reps: usize,
    passes: Passes,
) -> (Latency, Latency, f64) {
    let fixture = decision_fixture(rt, reps, leads);
    let lead = leads.next_lead();
    let (mut whole, mut decide) = (Latency::new(), Latency::new());
    rt.block_on(async {
        for _ in 0..passes.warm_up {
            simulate(&fixture.engine, &lead).await;
        }
    });
    let ((), others) = watching_others(|| {
        rt.block_on(async {
            for _ in 0..passes.decisions {
                let started = Instant::now();
                let sim = simulate(&fixture.engine, &lead).await;
                whole.record(started.elapsed());
                decide.record(sim.decision.decide);
            }
        })
    });
    close_fixture(rt, fixture);
    (whole, decide, others)
}

/// A markdown row: total cores used over `wall`, and the busiest threads.
fn cpu_row(scenario: &str, used: &ThreadCpu, wall: Duration) -> String {
    let cores = used.cores(wall);
    let total: f64 = cores.iter().map(|(_, c)| c).sum();
    let busiest: Vec<String> = cores
        .iter()
        .take(4)
        .map(|(name, c)| format!("{name} {c:.2}"))
        .collect();
    format!("| {scenario} | {total:.2} | {} |", busiest.join(", "))
}

/// A markdown row: how the committer spent a pass.
fn commit_row(scenario: &str, c: &CommitStats, wall: Duration) -> String {
    format!(
        "| {scenario} | {} | {:.1} | {} | {} | {:.0} % |",
        c.groups,
        c.mean_group(),
        format_duration(c.mean_commit()),
        format_duration(c.per_change()),
        c.utilisation(wall) * 100.0
    )
}

fn print_report(found: &Findings) {
    println!();
    println!("## Latency percentiles (every call recorded, HDR histogram)");
    println!();
    print!("{}", found.table.to_markdown());
    println!();
    println!("## Where a durable route's time goes (engine `Timings`, p50 / p99)");
    println!();
    println!(
        "`other` = total − stages: actor-thread hops, waiting in the territory inbox, wake-ups."
    );
    println!();
    print!("{}", stages_markdown(&found.stages));
    println!();
    println!("## CPU by thread during the concurrent passes (cores busy)");
    println!();
    println!("| Scenario | All threads | Busiest threads |");
    println!("|---|---:|---|");
    for line in &found.cpu {
        println!("{line}");
    }
    println!();
    println!("## Group commit during the concurrent passes (engine metrics)");
    println!();
    println!(
        "A group's commit = one sled transaction over all its changes + flush (+ fdatasync for power)."
    );
    println!();
    println!(
        "| Scenario | Groups | Mean group size | Mean group commit | Commit time per lead | Committer busy |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for line in &found.commits {
        println!("{line}");
    }
    println!();
    println!("## Store size after the route passes");
    println!();
    println!("| Durability | Reps | Leads routed | Store on disk | Per lead |");
    println!("|---|---:|---:|---:|---:|");
    for line in &found.growth {
        println!("{line}");
    }
    println!();
    println!("## Targets");
    println!();
    println!("| Target | Measured | Met |");
    println!("|---|---:|---|");
    for v in &found.verdicts {
        let met = if v.met { "met" } else { "**missed**" };
        println!("| {} | {} | {met} |", v.target, v.measured);
    }
}
