//! `loadgen overload`: how leadroute behaves far past its capacity, and after.
//!
//! 1. Closed loop at full speed: the maximum durable leads/s (`max`).
//! 2. Open loop at `max / 2`: the normal p99 (`baseline`).
//! 3. Open loop at `factor × max` for `overload_seconds`: answers by class (accepted =
//!    2xx, shed = 503 `overloaded`), latency of each, the server's RSS every 100 ms.
//! 4. Open loop at `max / 2` again: p99 per 1 s window, and the first window whose p99
//!    is back to normal (at most twice the baseline p99).
//!
//! Latency is reported two ways. *Service* latency runs from the moment the request
//! was written to its answer: what the server made a client wait. *Intended* latency
//! runs from the request's scheduled send time (open loop, no coordinated omission):
//! it also holds the time the request waited for one of the generator's connections,
//! so it shows a backlog wherever it builds, server or generator.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;

use super::cpu_limit::CpuLimit;
use super::{Conn, Leads, Load, OverloadArgs, Pace, Server, measure, open_capacity};

/// A window's p99 counts as normal again at most this many times the baseline p99.
const NORMAL_FACTOR: f64 = 2.0;

pub(super) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
}

/// What one open-loop phase saw, per answer class.
pub(super) struct Phase {
    elapsed: Duration,
    sent: u64,
    pub(super) statuses: BTreeMap<u16, u64>,
    pub(super) errors: u64,
    /// Service latency (µs) of 2xx answers.
    accepted: Histogram<u64>,
    /// Service latency of 503 answers.
    shed: Histogram<u64>,
    /// Intended latency of 2xx answers.
    accepted_intended: Histogram<u64>,
    /// Intended latency of 503 answers.
    shed_intended: Histogram<u64>,
    /// Intended latency of every answer, per 1 s window of intended send time.
    pub(super) windows: Vec<Histogram<u64>>,
}

impl Phase {
    fn new(seconds: u64) -> Phase {
        Phase {
            elapsed: Duration::ZERO,
            sent: 0,
            statuses: BTreeMap::new(),
            errors: 0,
            accepted: histogram(),
            shed: histogram(),
            accepted_intended: histogram(),
            shed_intended: histogram(),
            windows: (0..seconds).map(|_| histogram()).collect(),
        }
    }

    fn count(&self, class: fn(u16) -> bool) -> u64 {
        self.statuses
            .iter()
            .filter(|(s, _)| class(**s))
            .map(|(_, n)| n)
            .sum()
    }
}

/// Open loop at `rate` for `seconds`, over up to `connections` connections.
pub(super) async fn open_loop(
    addr: std::net::SocketAddr,
    rate: f64,
    connections: usize,
    seconds: u64,
    counter: Arc<AtomicU64>,
) -> Result<Phase> {
    // Connect first: a thousand connects inside the schedule would be a burst of their own.
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        conns.push(Conn::open(addr).await?);
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let issued = Arc::new(AtomicU64::new(0));
    // One record shared by every connection: thousands of private sets of histograms
    // would take gigabytes; the lock is taken once per answer, never across an await.
    let record = Arc::new(Mutex::new(Phase::new(seconds)));
    let mut tasks = Vec::with_capacity(connections);
    for (worker, mut conn) in conns.into_iter().enumerate() {
        let (counter, issued, record) = (counter.clone(), issued.clone(), record.clone());
        tasks.push(tokio::spawn(async move {
            let mut leads = Leads::new(counter, 0x5851_F42D_4C95_7F2D ^ worker as u64);
            loop {
                let i = issued.fetch_add(1, Ordering::Relaxed);
                let offset = Duration::from_secs_f64(i as f64 / rate);
                let intended = started + offset;
                // Past the phase, stop even if the schedule is behind: at 10× the
                // generator cannot send every scheduled request (the report says how
                // many it sent).
                if intended >= deadline || Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep_until(intended.into()).await;
                let body = leads.one();
                let sent = Instant::now();
                let answer = conn.request("POST", "/v1/leads", &body).await;
                let service = sent.elapsed().as_micros() as u64;
                let late = intended.elapsed().as_micros() as u64;
                let failed = {
                    let mut phase = record.lock().unwrap_or_else(|e| e.into_inner());
                    phase.sent += 1;
                    match answer {
                        Ok((status, _)) => {
                            *phase.statuses.entry(status).or_insert(0) += 1;
                            if (200..300).contains(&status) {
                                phase.accepted.saturating_record(service);
                                phase.accepted_intended.saturating_record(late);
                            } else if status == 503 {
                                phase.shed.saturating_record(service);
                                phase.shed_intended.saturating_record(late);
                            }
                            if let Some(w) = phase.windows.get_mut(offset.as_secs() as usize) {
                                w.saturating_record(late);
                            }
                            false
                        }
                        Err(_) => {
                            phase.errors += 1;
                            true
                        }
                    }
                };
                if failed {
                    conn = Conn::open(addr).await?;
                }
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let mut all = Arc::try_unwrap(record)
        .ok()
        .context("every connection finished")?
        .into_inner()
        .unwrap_or_else(|e| e.into_inner());
    all.elapsed = started.elapsed();
    Ok(all)
}

/// Resident set size of process `pid`, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Samples the RSS of `pid` every 100 ms until `stop`; returns (first, peak) in KiB.
pub(super) fn sample_rss(pid: u32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(u64, u64)> {
    std::thread::spawn(move || {
        let first = rss_kib(pid).unwrap_or(0);
        let mut peak = first;
        while !stop.load(Ordering::Relaxed) {
            if let Some(kib) = rss_kib(pid) {
                peak = peak.max(kib);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        (first, peak)
    })
}

pub(super) fn ms(h: &Histogram<u64>, q: f64) -> String {
    if h.is_empty() {
        "–".into()
    } else {
        format!("{:.2} ms", h.value_at_quantile(q) as f64 / 1000.0)
    }
}

/// Runs the four phases against a fresh `leadroute serve --demo` and prints a report.
pub(super) async fn run(args: OverloadArgs) -> Result<()> {
    let counter = Arc::new(AtomicU64::new(0));
    let data = tempfile::tempdir()?;
    let mut cmd = std::process::Command::new(&args.leadroute);
    cmd.args(["serve", "--demo", "--listen", "127.0.0.1:0", "--durability"])
        .arg(&args.durability)
        .arg("--max-in-flight-leads")
        .arg(args.max_in_flight_leads.to_string())
        .arg("--data-dir")
        .arg(data.path())
        .env_remove("LEADROUTE_ADMIN_TOKEN")
        .env_remove("LEADROUTE_INTAKE_TOKEN")
        .env_remove("LEADROUTE_CONFIG")
        .env_remove("LEADROUTE_MAX_IN_FLIGHT_LEADS");
    let server = Server::start(cmd)?;
    let pid = server.child.id();
    let limit = args
        .cpu_quota_percent
        .map(|percent| CpuLimit::apply(pid, percent))
        .transpose()?;
    let reps = open_capacity(server.addr).await?;

    let max = measure(
        server.addr,
        Load::Lead,
        Pace::Closed,
        args.connections,
        args.seconds,
        counter.clone(),
    )
    .await?;
    let max_rate = max.per_second();
    let half = max_rate / 2.0;
    let baseline = open_loop(
        server.addr,
        half,
        args.open_connections,
        args.seconds,
        counter.clone(),
    )
    .await?;
    let normal_p99 = baseline.accepted_intended.value_at_quantile(0.99) as f64;

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_rss(pid, stop.clone());
    let over = open_loop(
        server.addr,
        max_rate * args.factor,
        args.open_connections,
        args.overload_seconds,
        counter.clone(),
    )
    .await?;
    stop.store(true, Ordering::Relaxed);
    let (rss_before, rss_peak) = sampler.join().ok().context("RSS sampler")?;

    let after = open_loop(
        server.addr,
        half,
        args.open_connections,
        args.recovery_seconds,
        counter.clone(),
    )
    .await?;
    let rss_after = rss_kib(pid).unwrap_or(0);
    drop(server);
    drop(limit);

    let window_p99: Vec<f64> = after
        .windows
        .iter()
        .map(|w| w.value_at_quantile(0.99) as f64)
        .collect();
    let back = window_p99
        .iter()
        .position(|p| *p <= NORMAL_FACTOR * normal_p99);

    println!(
        "leadroute overload run: max-in-flight-leads={}, durability={}, {reps} demo reps \
         with capacity lifted, {} open-loop connections, generator and server on this \
         machine ({} cores), server CPU {}",
        args.max_in_flight_leads,
        args.durability,
        args.open_connections,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        args.cpu_quota_percent
            .map_or("not capped".to_string(), |p| format!(
                "capped at {p}% of one core"
            )),
    );
    println!();
    println!(
        "max (closed loop, {} conns, {} s): {:.0} leads/s, p99 {:.2} ms",
        args.connections,
        args.seconds,
        max_rate,
        max.micros(0.99) / 1000.0
    );
    println!(
        "baseline (open loop at {half:.0}/s, {} s): p99 service {}, p99 intended {}",
        args.seconds,
        ms(&baseline.accepted, 0.99),
        ms(&baseline.accepted_intended, 0.99),
    );
    println!();
    let secs = over.elapsed.as_secs_f64();
    let accepted = over.count(|s| (200..300).contains(&s));
    let shed = over.count(|s| s == 503);
    println!(
        "overload: target {:.0}/s ({}× max) for {} s; sent {} ({:.0}/s), accepted {} \
         ({:.0}/s), shed {} ({:.0}/s), transport errors {}, statuses {:?}",
        max_rate * args.factor,
        args.factor,
        args.overload_seconds,
        over.sent,
        over.sent as f64 / secs,
        accepted,
        accepted as f64 / secs,
        shed,
        shed as f64 / secs,
        over.errors,
        over.statuses,
    );
    println!();
    println!(
        "| overload answers | count | service p50 | service p99 | intended p50 | intended p99 |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    println!(
        "| accepted (2xx) | {accepted} | {} | {} | {} | {} |",
        ms(&over.accepted, 0.5),
        ms(&over.accepted, 0.99),
        ms(&over.accepted_intended, 0.5),
        ms(&over.accepted_intended, 0.99),
    );
    println!(
        "| shed (503) | {shed} | {} | {} | {} | {} |",
        ms(&over.shed, 0.5),
        ms(&over.shed, 0.99),
        ms(&over.shed_intended, 0.5),
        ms(&over.shed_intended, 0.99),
    );
    println!();
    println!(
        "server RSS: {:.1} MiB before the overload, peak {:.1} MiB during it (sampled every \
         100 ms), {:.1} MiB after recovery",
        rss_before as f64 / 1024.0,
        rss_peak as f64 / 1024.0,
        rss_after as f64 / 1024.0,
    );
    println!();
    let series: Vec<String> = window_p99
        .iter()
        .map(|p| format!("{:.1}", p / 1000.0))
        .collect();
    println!(
        "after: open loop at {half:.0}/s; intended p99 per 1 s window (ms): {}",
        series.join(", ")
    );
    match back {
        Some(w) => println!(
            "back to normal (window p99 ≤ {NORMAL_FACTOR}× baseline {:.2} ms) in window {w}, \
             i.e. within {} s of the load dropping",
            normal_p99 / 1000.0,
            w + 1
        ),
        None => println!(
            "not back to normal (window p99 ≤ {NORMAL_FACTOR}× baseline {:.2} ms) within {} s",
            normal_p99 / 1000.0,
            args.recovery_seconds
        ),
    }
    Ok(())
}
