//! `loadgen`: the HTTP load generator for leadroute.
//!
//! One run measures, against real processes on loopback:
//! 1. the machine's ceiling: a minimal axum JSON echo server (this binary's `echo`
//!    subcommand) under the same closed-loop load;
//! 2. leadroute (`leadroute serve --demo`, started here on a temp data dir): closed-loop
//!    maximum durable leads/s, then an open-loop run at half of that rate (or at
//!    `--open-rate`) whose latency is measured from each request's *intended* send
//!    time (so a stalled server cannot hide its stall: no coordinated omission), then
//!    batch intake;
//! 3. with the `recovery` subcommand instead: the time from starting the server on a
//!    store of N leads to its first `200` on `/readyz` (see `recovery.rs`);
//! 4. with the `backup` subcommand: intake's latency while an online backup is
//!    written, and the restore's time and memory (see `backup.rs`).
//!
//! Leads are realistic: the demo organisation's regions (and districts below them),
//! its industries, log-uniform purchase amounts, and about 5% repeats of an earlier
//! contact, which the engine answers as duplicates.
//!
//! Beside each row's figures the report gives the machine's idle and steal time (the
//! generator shares the machine with the server, and so may the host), and for the
//! open loop what the server's threads did in its slowest moments (`threads.rs`) and
//! the server's own account of a lead's time (`server_metrics.rs`).
//!
//! ```text
//! cargo build --release -p leadroute-admin-api -p leadroute-benches
//! target/release/loadgen run --leadroute target/release/leadroute
//! target/release/loadgen recovery --leadroute target/release/leadroute --leads 1000000
//! target/release/loadgen backup --leadroute target/release/leadroute --leads 1000000
//! ```

mod backup;
mod cpu_limit;
mod overload;
mod recovery;
mod server_metrics;
mod threads;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser)]
#[command(about = "HTTP load generator for leadroute")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Measure the echo ceiling, then leadroute; print a markdown report.
    Run(RunArgs),
    /// Overload leadroute: measure its max, then an open loop at `--factor` times that
    /// for `--overload-seconds`, then half of max; report shedding, latency, peak RSS
    /// and the time back to normal latency.
    Overload(OverloadArgs),
    /// Serve `POST /echo` (JSON in, the same JSON out) and print `listening on ADDR`.
    Echo {
        /// Address to bind.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
    /// Fill a store with N leads, then time the server's start to `/readyz`.
    Recovery(recovery::RecoveryArgs),
    /// Fill a store with N leads, then measure intake while a backup is written, and
    /// the restore.
    Backup(backup::BackupArgs),
}

#[derive(Parser)]
struct RunArgs {
    /// The `leadroute` binary to start.
    #[arg(long)]
    leadroute: PathBuf,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    /// Connections of the first step of each closed-loop sweep.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Most connections a closed-loop sweep tries. Each sweep doubles the connections
    /// while the rate grows by at least 5%: a closed loop's rate is connections over
    /// latency, so too few connections measure latency, not capacity.
    #[arg(long, default_value_t = 512)]
    max_connections: usize,
    /// Connections available to the open-loop run.
    #[arg(long, default_value_t = 64)]
    open_connections: usize,
    /// Rate of the open loop in leads/s, instead of half of the measured max: two
    /// builds compare latency only at the same rate.
    #[arg(long, value_parser = positive_rate)]
    open_rate: Option<f64>,
    /// Connections of the batch sweep's first step.
    #[arg(long, default_value_t = 8)]
    batch_connections: usize,
    /// Leads per batch request.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// `power` or `process`.
    #[arg(long, default_value = "power")]
    durability: String,
    /// Passed to the server as `--max-in-flight-leads`. The default, 1000000, is as good
    /// as no limit: this run measures capacity (32 batches of 100 would pass the
    /// server's default of 256 and be refused whole); shedding is `loadgen overload`'s.
    #[arg(long, default_value_t = 1_000_000)]
    max_in_flight_leads: usize,
}

#[derive(Parser)]
struct OverloadArgs {
    /// The `leadroute` binary to start.
    #[arg(long)]
    leadroute: PathBuf,
    /// Passed to the server as `--max-in-flight-leads`; 1000000 is as good as no limit.
    #[arg(long, default_value_t = 256)]
    max_in_flight_leads: usize,
    /// Seconds of the closed-loop max run and of the half-of-max baseline.
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    /// Seconds of overload.
    #[arg(long, default_value_t = 60)]
    overload_seconds: u64,
    /// Seconds at half of max after the overload.
    #[arg(long, default_value_t = 20)]
    recovery_seconds: u64,
    /// Overload rate as a multiple of the measured max.
    #[arg(long, default_value_t = 10.0)]
    factor: f64,
    /// Connections for the closed-loop max run.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Connections available to the open-loop runs (the most requests the generator
    /// can have outstanding).
    #[arg(long, default_value_t = 1000)]
    open_connections: usize,
    /// `power` or `process`.
    #[arg(long, default_value = "power")]
    durability: String,
    /// Caps the server at this percentage of one core (a cgroup; needs root), so the
    /// generator, sharing the machine, can send a true multiple of the server's max.
    #[arg(long)]
    cpu_quota_percent: Option<u32>,
}

/// A rate the open loop can pace: a positive, finite number of requests per second.
fn positive_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!("`{text}` is not a positive number of leads/s")),
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Cmd::Echo { listen } => runtime.block_on(echo(listen)),
        Cmd::Run(args) => runtime.block_on(run(args)),
        Cmd::Recovery(args) => runtime.block_on(recovery::run(args)),
        Cmd::Backup(args) => runtime.block_on(backup::run(args)),
        Cmd::Overload(args) => runtime.block_on(overload::run(args)),
    }
}

/// The ceiling: parse the JSON body and send it back, nothing else.
async fn echo(listen: SocketAddr) -> Result<()> {
    use axum::{Json, Router, routing::post};
    let app = Router::new().route(
        "/echo",
        post(|Json(body): Json<serde_json::Value>| async move { Json(body) }),
    );
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

/// A child process that is stopped (SIGTERM, then waited for) when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    /// Starts `cmd` and waits for its `listening on ADDR` line.
    fn start(mut cmd: Command) -> Result<Server> {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        let stdout = child.stdout.take().context("child stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines
                .next()
                .context("the server exited before announcing its address")??;
            if let Some(addr) = line.trim().strip_prefix("listening on ") {
                break addr.parse()?;
            }
        };
        Ok(Server { child, addr })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM lets leadroute drain and flush; `kill` would be SIGKILL.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// One keep-alive HTTP/1.1 connection, speaking just enough of the protocol for
/// JSON requests with `Content-Length` answers.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Sends one request and returns the status code and body.
    async fn request(&mut self, method: &str, path: &str, body: &str) -> Result<(u16, Vec<u8>)> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: leadroute\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        self.stream.write_all(head.as_bytes()).await?;
        self.stream.write_all(body.as_bytes()).await?;
        self.buf.clear();
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                bail!("connection closed mid-response");
            }
        };
        let head = std::str::from_utf8(&self.buf[..head_end])?;
        let status: u16 = head
            .get(9..12)
            .context("status line")?
            .parse()
            .context("status code")?;
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .context("response without content-length")?;
        while self.buf.len() < head_end + length {
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                bail!("connection closed mid-body");
            }
        }
        Ok((status, self.buf[head_end..head_end + length].to_vec()))
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A tiny xorshift generator: enough variety for synthetic leads, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const REGIONS: [&str; 12] = [
    "CN-SH", "CN-SH-PD", "CN-SH-XH", "CN-JS", "CN-JS-NJ", "CN-ZJ", "CN-ZJ-HZ", "CN-SD", "CN-AH",
    "CN-FJ", "CN-JX", "CN-BJ",
];
const INDUSTRIES: [&str; 5] = [
    "hospital-lab",
    "imaging",
    "clinic",
    "pharma",
    "research-lab",
];
const SOURCES: [&str; 4] = ["webform", "ads", "crm", "expo"];

/// Makes realistic leads; about 5% repeat an earlier contact.
struct Leads {
    next: Arc<AtomicU64>,
    rng: Rng,
}

impl Leads {
    fn new(next: Arc<AtomicU64>, seed: u64) -> Self {
        Leads {
            next,
            rng: Rng(seed | 1),
        }
    }

    fn one(&mut self) -> String {
        let fresh = self.next.fetch_add(1, Ordering::Relaxed);
        let n = if fresh > 1000 && self.rng.below(100) < 5 {
            fresh - 1 - self.rng.below(1000)
        } else {
            fresh
        };
        let amount = 10f64.powf(3.0 + 3.0 * (self.rng.below(1000) as f64 / 1000.0));
        serde_json::json!({
            "external_id": format!("crm-{n}"),
            "name": "Dr. Wang",
            "company": "Ruijin Hospital Lab",
            "phone": format!("+86 139 {:04} {:04}", (n / 10_000) % 10_000, n % 10_000),
            "email": format!("lead{n}@example.cn"),
            "region": self.rng.pick(&REGIONS),
            "industry": self.rng.pick(&INDUSTRIES),
            "purchase_amount": amount.round(),
            "source": self.rng.pick(&SOURCES),
            "attributes": {"campaign": "q1-expo", "score": self.rng.below(100)}
        })
        .to_string()
    }

    fn batch(&mut self, size: usize) -> String {
        let leads: Vec<String> = (0..size).map(|_| self.one()).collect();
        format!("{{\"leads\":[{}]}}", leads.join(","))
    }
}

/// What one measurement saw.
struct Measured {
    requests: u64,
    items: u64,
    errors: u64,
    statuses: BTreeMap<u16, u64>,
    elapsed: Duration,
    latency: Histogram<u64>,
    /// When the measurement started, for lining slow moments up with system traces.
    started_at: SystemTime,
    /// The same moment, for lining them up with [`threads::Sample`]s.
    started: Instant,
    /// The machine's idle and steal time during the measurement, where `/proc/stat`
    /// can be read: the generator shares the machine, and a host that takes the CPUs
    /// (steal) lowers every figure of the row.
    machine: Option<threads::MachineTimes>,
    /// Requests slower than [`SLOW`], by [`SLOW_WINDOW`] from the start: how many,
    /// and the slowest (µs).
    slow: BTreeMap<u64, (u64, u64)>,
}

/// A request slower than this is a *slow moment* (the open loop's p99 target).
const SLOW: Duration = Duration::from_millis(5);

/// Slow requests are reported by windows of this length.
const SLOW_WINDOW: Duration = Duration::from_millis(100);

/// Most slow windows reported, the worst first.
const SLOW_REPORTED: usize = 10;

impl Measured {
    fn per_second(&self) -> f64 {
        self.items as f64 / self.elapsed.as_secs_f64()
    }

    fn micros(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64
    }

    /// Idle and steal as percentages of all CPUs' time, `–` where not known.
    fn machine_percent(&self) -> (String, String) {
        match self.machine {
            Some(m) if self.elapsed > Duration::ZERO => {
                let all = self.elapsed.as_secs_f64() * f64::from(m.cpus);
                (
                    format!("{:.0}", 100.0 * m.idle.as_secs_f64() / all),
                    format!("{:.0}", 100.0 * m.steal.as_secs_f64() / all),
                )
            }
            _ => ("–".into(), "–".into()),
        }
    }
}

#[derive(Clone, Copy)]
enum Load {
    Echo,
    Lead,
    Batch(usize),
}

impl Load {
    fn path(self) -> &'static str {
        match self {
            Load::Echo => "/echo",
            Load::Lead => "/v1/leads",
            Load::Batch(_) => "/v1/leads/batch",
        }
    }

    fn items(self) -> u64 {
        match self {
            Load::Batch(n) => n as u64,
            _ => 1,
        }
    }

    fn body(self, leads: &mut Leads) -> String {
        match self {
            Load::Batch(n) => leads.batch(n),
            _ => leads.one(),
        }
    }
}

/// Pacing: closed loop (send when the last answer arrived) or open loop at a rate.
#[derive(Clone, Copy)]
enum Pace {
    Closed,
    Open { per_second: f64 },
}

async fn measure(
    addr: SocketAddr,
    load: Load,
    pace: Pace,
    connections: usize,
    seconds: u64,
    counter: Arc<AtomicU64>,
) -> Result<Measured> {
    let machine_before = threads::MachineTimes::now();
    let started = Instant::now();
    let started_at = SystemTime::now();
    let deadline = started + Duration::from_secs(seconds);
    let issued = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(connections);
    for worker in 0..connections {
        let counter = counter.clone();
        let issued = issued.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr).await?;
            let mut leads = Leads::new(counter, 0x9E37_79B9_7F4A_7C15 ^ worker as u64);
            let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut statuses = BTreeMap::new();
            let mut slow = BTreeMap::<u64, (u64, u64)>::new();
            let mut errors = 0;
            loop {
                let intended = match pace {
                    Pace::Closed => Instant::now(),
                    Pace::Open { per_second } => {
                        let i = issued.fetch_add(1, Ordering::Relaxed);
                        started + Duration::from_secs_f64(i as f64 / per_second)
                    }
                };
                if intended >= deadline {
                    break;
                }
                // Only the open loop waits: even a deadline of "now" costs a timer
                // tick (about a millisecond), which would cap every closed-loop rate.
                if let Pace::Open { .. } = pace {
                    tokio::time::sleep_until(intended.into()).await;
                }
                let body = load.body(&mut leads);
                match conn.request("POST", load.path(), &body).await {
                    Ok((status, _)) => *statuses.entry(status).or_insert(0) += 1,
                    Err(_) => {
                        errors += 1;
                        conn = Conn::open(addr).await?;
                    }
                }
                // From the intended send time: a late start counts as latency.
                let took = intended.elapsed();
                latency.saturating_record(took.as_micros() as u64);
                if took > SLOW {
                    let window = (intended - started).as_nanos() / SLOW_WINDOW.as_nanos();
                    let (count, worst) = slow.entry(window as u64).or_default();
                    *count += 1;
                    *worst = (*worst).max(took.as_micros() as u64);
                }
            }
            anyhow::Ok((latency, statuses, slow, errors))
        }));
    }
    let mut all = Measured {
        requests: 0,
        items: 0,
        errors: 0,
        statuses: Default::default(),
        elapsed: Duration::ZERO,
        latency: Histogram::new_with_bounds(1, 60_000_000, 3)?,
        started_at,
        started,
        machine: None,
        slow: BTreeMap::new(),
    };
    for task in tasks {
        let (latency, statuses, slow, errors) = task.await??;
        all.latency.add(&latency)?;
        for (window, (count, worst)) in slow {
            let (all_count, all_worst) = all.slow.entry(window).or_default();
            *all_count += count;
            *all_worst = (*all_worst).max(worst);
        }
        all.errors += errors;
        for (status, n) in statuses {
            *all.statuses.entry(status).or_insert(0) += n;
            all.requests += n;
            if (200..300).contains(&status) {
                all.items += n * load.items();
            }
        }
    }
    all.elapsed = started.elapsed();
    all.machine = threads::MachineTimes::now()
        .zip(machine_before)
        .map(|(now, before)| now.since(before));
    Ok(all)
}

/// Least gain (a fraction) for which a sweep doubles its connections again.
const SWEEP_GAIN: f64 = 0.05;

/// A closed-loop sweep: each step and the best one.
struct Sweep {
    steps: Vec<(usize, Measured)>,
    best: usize,
}

impl Sweep {
    fn best(&self) -> &Measured {
        &self.steps[self.best].1
    }

    fn best_connections(&self) -> usize {
        self.steps[self.best].0
    }

    /// Adds a step; returns whether it beat the best so far by [`SWEEP_GAIN`], that
    /// is, whether more connections are worth a try.
    fn record(&mut self, connections: usize, m: Measured) -> bool {
        let rate = m.per_second();
        let first = self.steps.is_empty();
        let gained = first || rate >= self.best().per_second() * (1.0 + SWEEP_GAIN);
        if first || rate > self.best().per_second() {
            self.best = self.steps.len();
        }
        self.steps.push((connections, m));
        gained
    }
}

/// Runs the closed loop at `first` connections, then doubles them (up to `most`)
/// while the rate grows by at least [`SWEEP_GAIN`].
async fn sweep(
    addr: SocketAddr,
    load: Load,
    first: usize,
    most: usize,
    seconds: u64,
    counter: Arc<AtomicU64>,
) -> Result<Sweep> {
    let mut connections = first.max(1);
    let mut sweep = Sweep {
        steps: Vec::new(),
        best: 0,
    };
    loop {
        let m = measure(
            addr,
            load,
            Pace::Closed,
            connections,
            seconds,
            counter.clone(),
        )
        .await?;
        if !sweep.record(connections, m) || connections * 2 > most {
            return Ok(sweep);
        }
        connections *= 2;
    }
}

/// Lifts every demo rep's capacity so the run measures routing, not a full queue.
async fn open_capacity(addr: SocketAddr) -> Result<usize> {
    let mut conn = Conn::open(addr).await?;
    let (status, body) = conn.request("GET", "/admin/reps", "").await?;
    if status != 200 {
        bail!("GET /admin/reps answered {status}");
    }
    let reps: serde_json::Value = serde_json::from_slice(&body)?;
    let reps = reps
        .as_array()
        .or_else(|| reps.get("reps").and_then(|r| r.as_array()))
        .context("rep list")?
        .clone();
    for rep in &reps {
        let id = rep["rep_id"].as_str().context("rep id")?;
        let body = serde_json::json!({
            "name": rep["name"], "territories": rep["territories"], "skills": rep["skills"],
            "tier": rep["tier"], "weight": rep["weight"], "capacity": 100_000,
            "status": "available",
        });
        let (status, answer) = conn
            .request("PUT", &format!("/admin/reps/{id}"), &body.to_string())
            .await?;
        if status != 200 {
            bail!(
                "PUT rep {id}: {status} {}",
                String::from_utf8_lossy(&answer)
            );
        }
    }
    Ok(reps.len())
}

/// The server's `/metrics` now.
async fn scrape_metrics(addr: SocketAddr) -> Result<server_metrics::Scrape> {
    let mut conn = Conn::open(addr).await?;
    let (status, body) = conn.request("GET", "/metrics", "").await?;
    if status != 200 {
        bail!("GET /metrics answered {status}");
    }
    Ok(server_metrics::Scrape::parse(&String::from_utf8_lossy(
        &body,
    )))
}

fn row(name: &str, m: &Measured) -> String {
    let (idle, steal) = m.machine_percent();
    format!(
        "| {name} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {:?} | {idle} | {steal} |",
        m.per_second(),
        m.requests as f64 / m.elapsed.as_secs_f64(),
        m.micros(0.5),
        m.micros(0.99),
        m.micros(0.999),
        m.errors,
        m.statuses,
    )
}

async fn run(args: RunArgs) -> Result<()> {
    let counter = Arc::new(AtomicU64::new(0));
    let secs = args.seconds;

    let mut echo_cmd = Command::new(std::env::current_exe()?);
    echo_cmd.args(["echo", "--listen", "127.0.0.1:0"]);
    let echo_server = Server::start(echo_cmd)?;
    let echo = sweep(
        echo_server.addr,
        Load::Echo,
        args.connections,
        args.max_connections,
        secs,
        counter.clone(),
    )
    .await?;
    drop(echo_server);

    let data = tempfile::tempdir()?;
    let mut cmd = Command::new(&args.leadroute);
    cmd.args(["serve", "--demo", "--listen", "127.0.0.1:0", "--durability"])
        .arg(&args.durability)
        .arg("--data-dir")
        .arg(data.path())
        .arg("--max-in-flight-leads")
        .arg(args.max_in_flight_leads.to_string())
        .env_remove("LEADROUTE_ADMIN_TOKEN")
        .env_remove("LEADROUTE_INTAKE_TOKEN")
        .env_remove("LEADROUTE_CONFIG");
    let server = Server::start(cmd)?;
    let reps = open_capacity(server.addr).await?;
    // Sampled through every row of the server, so each row can say which of its
    // threads was busy, and the open loop's slow windows what they did.
    let sampler = threads::Sampler::start(server.child.id());
    let single = sweep(
        server.addr,
        Load::Lead,
        args.connections,
        args.max_connections,
        secs,
        counter.clone(),
    )
    .await?;
    let max = single.best().per_second();
    let open_rate = args.open_rate.unwrap_or(max / 2.0);
    let open_pace = match args.open_rate {
        Some(rate) => format!("{rate:.0}/s"),
        None => "half of max".to_string(),
    };
    let metrics_before = scrape_metrics(server.addr).await?;
    let open = measure(
        server.addr,
        Load::Lead,
        Pace::Open {
            per_second: open_rate,
        },
        args.open_connections,
        secs,
        counter.clone(),
    )
    .await?;
    let metrics_after = scrape_metrics(server.addr).await?;
    let batch = sweep(
        server.addr,
        Load::Batch(args.batch),
        args.batch_connections,
        args.max_connections,
        secs,
        counter.clone(),
    )
    .await?;
    let samples = sampler.map(threads::Sampler::finish);
    drop(server);

    println!(
        "leadroute load run: {secs} s per row, durability={}, closed loops swept from {} \
         connections ({} for batch) doubling while the rate grows by {:.0}% (at most {}), \
         {reps} demo reps with capacity lifted, generator and servers on this machine \
         ({} cores)",
        args.durability,
        args.connections,
        args.batch_connections,
        SWEEP_GAIN * 100.0,
        args.max_connections,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    println!();
    println!(
        "| run | items/s | requests/s | p50 µs | p99 µs | p99.9 µs | errors | statuses \
         | machine idle % | steal % |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let rows = |name: &str, sweep: &Sweep| {
        for (i, (connections, m)) in sweep.steps.iter().enumerate() {
            let mark = if i == sweep.best { ", max" } else { "" };
            println!(
                "{}",
                row(
                    &format!("{name} (closed loop, {connections} conns{mark})"),
                    m
                )
            );
        }
    };
    rows("echo ceiling", &echo);
    rows("leadroute POST /v1/leads", &single);
    println!(
        "{}",
        row(
            &format!(
                "leadroute POST /v1/leads (open loop at {open_rate:.0}/s, {} conns)",
                args.open_connections
            ),
            &open
        )
    );
    rows(
        &format!("leadroute POST /v1/leads/batch ×{}", args.batch),
        &batch,
    );
    println!();
    print_slow_moments(&open, samples.as_deref());
    if let Some(samples) = samples.as_deref() {
        println!(
            "the server's threads, row by row (ms, sampled every {} ms):",
            threads::PERIOD.as_millis()
        );
        println!();
        let mut all: Vec<(String, &Measured)> = Vec::new();
        for (connections, m) in &single.steps {
            all.push((format!("single, closed loop, {connections} conns"), m));
        }
        all.push((format!("open loop at {open_rate:.0}/s"), &open));
        for (connections, m) in &batch.steps {
            all.push((format!("batch, closed loop, {connections} conns"), m));
        }
        for (name, m) in all {
            let account = threads::activity(samples, m.started, m.started + m.elapsed)
                .map_or_else(|| "no samples".to_string(), |a| a.to_string());
            println!("- {name}: {account}");
        }
        println!();
    }
    println!(
        "open loop, the server's own means (ms, from /metrics): {}",
        server_metrics::report(&metrics_before, &metrics_after)
    );
    println!();
    println!(
        "durable leads/s: {max:.0} (at {} conns) = {:.1}% of the echo ceiling {:.0} \
         (at {} conns); open loop at {open_pace}: p50 {:.2} / p99 {:.2} / p99.9 {:.2} ms; \
         batch intake {:.0} leads/s (at {} conns) = {:.1}× single",
        single.best_connections(),
        100.0 * max / echo.best().per_second(),
        echo.best().per_second(),
        echo.best_connections(),
        open.micros(0.5) / 1000.0,
        open.micros(0.99) / 1000.0,
        open.micros(0.999) / 1000.0,
        batch.best().per_second(),
        batch.best_connections(),
        batch.best().per_second() / max,
    );
    Ok(())
}

/// The open loop's worst windows, with wall-clock times to line them up with a trace
/// of the machine (`perf`, `/proc/pressure`) taken during the run, and what the
/// server's threads did from each window's start to its slowest answer (`samples`,
/// when the server could be sampled).
fn print_slow_moments(open: &Measured, samples: Option<&[threads::Sample]>) {
    let slow_requests: u64 = open.slow.values().map(|(count, _)| count).sum();
    if slow_requests == 0 {
        println!("open loop: no request over {} ms", SLOW.as_millis());
        println!();
        return;
    }
    let start = open
        .started_at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    println!(
        "open loop: {slow_requests} requests over {} ms, in {} windows of {} ms by \
         intended send time; the worst (start at UNIX time {start:.3} s):",
        SLOW.as_millis(),
        open.slow.len(),
        SLOW_WINDOW.as_millis(),
    );
    println!();
    println!(
        "| window from | UNIX time | requests over {} ms | worst ms | the server's threads \
         from the window's start to its worst answer (ms, sampled every {} ms) |",
        SLOW.as_millis(),
        threads::PERIOD.as_millis(),
    );
    println!("|---|---|---|---|---|");
    for (window, count, worst) in worst_windows(&open.slow) {
        let offset = window as f64 * SLOW_WINDOW.as_secs_f64();
        let from = open.started + SLOW_WINDOW * window as u32;
        let to = from + SLOW_WINDOW + Duration::from_micros(worst);
        let activity = match samples {
            None => "not sampled (needs Linux's /proc)".to_string(),
            Some(samples) => threads::activity(samples, from, to)
                .map_or_else(|| "no samples".to_string(), |a| a.to_string()),
        };
        println!(
            "| +{offset:.1} s | {:.1} | {count} | {:.1} | {activity} |",
            start + offset,
            worst as f64 / 1000.0
        );
    }
    println!();
}

/// The [`SLOW_REPORTED`] windows with the slowest requests, the worst first.
fn worst_windows(slow: &BTreeMap<u64, (u64, u64)>) -> Vec<(u64, u64, u64)> {
    let mut windows: Vec<_> = slow
        .iter()
        .map(|(&window, &(count, worst))| (window, count, worst))
        .collect();
    windows.sort_by_key(|&(window, _, worst)| (std::cmp::Reverse(worst), window));
    windows.truncate(SLOW_REPORTED);
    windows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(items: u64) -> Measured {
        Measured {
            requests: items,
            items,
            errors: 0,
            statuses: Default::default(),
            elapsed: Duration::from_secs(1),
            latency: Histogram::new(3).unwrap(),
            started_at: SystemTime::now(),
            started: Instant::now(),
            machine: None,
            slow: BTreeMap::new(),
        }
    }

    #[test]
    fn a_sweep_goes_on_while_the_rate_grows_by_five_percent_and_keeps_the_best() {
        let mut sweep = Sweep {
            steps: Vec::new(),
            best: 0,
        };
        assert!(sweep.record(32, rate(10_000)));
        assert!(sweep.record(64, rate(12_000)), "+20%");
        assert!(
            !sweep.record(128, rate(12_400)),
            "+3.3% is not worth another step"
        );
        assert_eq!(
            sweep.best_connections(),
            128,
            "the best step, however small its gain"
        );
        assert_eq!(sweep.best().items, 12_400);

        let mut falling = Sweep {
            steps: Vec::new(),
            best: 0,
        };
        assert!(falling.record(8, rate(20_000)));
        assert!(!falling.record(16, rate(17_000)));
        assert_eq!(falling.best_connections(), 8);
        assert_eq!(falling.steps.len(), 2);
    }

    #[test]
    fn an_open_loop_rate_is_positive_and_finite() {
        assert_eq!(positive_rate("2500.5"), Ok(2500.5));
        for bad in ["0", "-1", "NaN", "inf", "fast"] {
            assert!(positive_rate(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn slow_windows_are_reported_worst_first_and_at_most_ten() {
        let mut slow = BTreeMap::new();
        for window in 10..25u64 {
            slow.insert(window, (window, 6_000 + (window - 10) * 1_000));
        }
        // The worst window comes early, and two later ones tie for second place.
        slow.insert(2, (1, 117_000));
        slow.insert(40, (3, 30_000));
        slow.insert(30, (5, 30_000));
        let worst = worst_windows(&slow);
        assert_eq!(worst.len(), SLOW_REPORTED);
        assert_eq!(worst[0], (2, 1, 117_000));
        assert_eq!(
            (worst[1], worst[2]),
            ((30, 5, 30_000), (40, 3, 30_000)),
            "a tie goes to the earlier window"
        );
        assert_eq!(worst[3], (24, 24, 20_000));
        assert!(worst.windows(2).all(|pair| pair[0].2 >= pair[1].2));
    }
}
