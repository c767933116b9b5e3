//! `loadgen recovery`: how long the real server takes to be ready again on a store
//! holding N leads.
//!
//! It fills a data dir through the engine library (batched routes, all leads left
//! open and untouched: start-up loads a first-touch deadline per such lead, and the
//! background audit visits every open lead, so this is the heavy case), stops the
//! engine cleanly, then starts `leadroute serve` on it several times and times each
//! start, from spawning the process to the first `200` on `/readyz`, and to the end
//! of the start-up audit that then runs in the background
//! (`leadroute_startup_audit_running` back to 0). The server binds a port of its
//! choosing before it opens the store and logs it (`bound`), so the probe learns the
//! address at once, and its connection waits in the listen backlog and is answered
//! as soon as the server is ready. With `--kill` each run ends with SIGKILL,
//! so every later start is a crash recovery.
//!
//! ```text
//! target/release/loadgen recovery --leadroute target/release/leadroute --leads 1000000
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use leadroute_benches::{lead, rep_id};
use leadroute_engine::domain::{
    BuiltinStrategy, MAX_CAPACITY, RepInput, StrategyInput, TerritoryId, TerritoryInput,
};
use leadroute_engine::store::Store;
use leadroute_engine::{Durability, Engine, EngineConfig};

use super::Conn;

/// Arguments of `loadgen recovery`.
#[derive(Parser)]
pub struct RecoveryArgs {
    /// The `leadroute` binary to start.
    #[arg(long)]
    leadroute: PathBuf,
    /// Leads the store holds when the server starts.
    #[arg(long)]
    leads: u64,
    /// Timed starts; the median is reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Keep the store here (and reuse it if it already holds enough leads) instead
    /// of a temporary directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// End each run with SIGKILL instead of SIGTERM, so that every start after the
    /// first recovers from a crash (sled replays its log from the last snapshot).
    #[arg(long)]
    kill: bool,
}

/// Reps in the one territory: enough capacity for every lead to stay open.
const REPS: usize = 12;
/// Leads per `route_batch` call, and calls in flight at once while filling.
const BATCH: u64 = 1000;
const IN_FLIGHT: u64 = 4;
/// The longest a start may take before the run is called failed.
const START_DEADLINE: Duration = Duration::from_secs(600);

/// The store a run uses: `kept` if given (filled further if it holds fewer than
/// `leads`), else a temporary directory, removed when the guard drops.
pub(super) async fn prepare_store(
    kept: Option<&Path>,
    leads: u64,
) -> Result<(Option<tempfile::TempDir>, PathBuf)> {
    let (temp, dir) = match kept {
        Some(dir) => (None, dir.to_path_buf()),
        None => {
            let temp = tempfile::Builder::new()
                .prefix("leadroute-recovery-")
                .tempdir()?;
            let dir = temp.path().to_path_buf();
            (Some(temp), dir)
        }
    };
    let stored = stored_leads(&dir)?;
    if stored < leads {
        let started = Instant::now();
        fill(&dir, stored, leads).await?;
        eprintln!(
            "filled {} leads in {:.1} s",
            leads - stored,
            started.elapsed().as_secs_f64()
        );
    }
    Ok((temp, dir))
}

/// Runs `loadgen recovery`.
pub async fn run(args: RecoveryArgs) -> Result<()> {
    let (_temp, dir) = prepare_store(args.data_dir.as_deref(), args.leads).await?;
    let stored = stored_leads(&dir)?;
    let bytes = dir_bytes(&dir);

    let mut times = Vec::with_capacity(args.runs);
    let mut audits = Vec::with_capacity(args.runs);
    for run in 1..=args.runs {
        let start = time_start(&args.leadroute, &dir, args.kill).await?;
        eprintln!(
            "run {run}: ready after {:.0} ms wall, {} ms CPU; {}; background audit done \
             after {:.0} ms",
            start.wall.as_secs_f64() * 1e3,
            start.cpu_ms,
            start.phases,
            start.audited.as_secs_f64() * 1e3,
        );
        times.push(start.wall);
        audits.push(start.audited);
    }
    audits.sort();
    times.sort();
    let ms: Vec<String> = times
        .iter()
        .map(|t| format!("{:.0}", t.as_secs_f64() * 1e3))
        .collect();
    println!(
        "{stored} stored leads (all open), store {:.2} GiB: start → first 200 on /readyz \
         median {:.0} ms over {} runs (sorted: {} ms)",
        bytes as f64 / (1u64 << 30) as f64,
        times[times.len() / 2].as_secs_f64() * 1e3,
        times.len(),
        ms.join(", "),
    );
    println!(
        "start → end of the background start-up audit: median {:.0} ms",
        audits[audits.len() / 2].as_secs_f64() * 1e3
    );
    Ok(())
}

pub(super) fn stored_leads(dir: &Path) -> Result<u64> {
    if !dir.join("db").exists() {
        return Ok(0);
    }
    let store = Store::open(dir)?;
    Ok(store.lead_count() as u64)
}

/// Routes leads `from..to` into the store in `dir` through the engine library.
async fn fill(dir: &Path, from: u64, to: u64) -> Result<()> {
    // Process durability: the fill is set-up, not measured; the final shutdown
    // flushes everything.
    // No admission limit: the fill sends its batches concurrently on purpose.
    let engine = Engine::open(
        EngineConfig::new(dir)
            .durability(Durability::Process)
            .max_in_flight_leads(usize::MAX),
    )?;
    engine
        .upsert_territory(
            TerritoryId::new("east")?,
            TerritoryInput {
                name: "East China".into(),
                regions: vec!["CN-SH".into()],
                default: true,
                strategy: Some(StrategyInput::Builtin {
                    builtin: BuiltinStrategy::LeastLoaded,
                }),
                ..Default::default()
            },
        )
        .await?;
    for i in 0..REPS {
        let rep = RepInput {
            name: format!("Rep {i}"),
            territories: vec!["east".into()],
            capacity: MAX_CAPACITY,
            ..Default::default()
        };
        engine
            .upsert_rep(rep_id(i).map_err(|e| anyhow::anyhow!(e))?, rep)
            .await?;
    }
    let next = Arc::new(AtomicU64::new(from));
    let mut tasks = Vec::new();
    for _ in 0..IN_FLIGHT {
        let (engine, next) = (engine.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let start = next.fetch_add(BATCH, Ordering::Relaxed);
                if start >= to {
                    return anyhow::Ok(());
                }
                let leads: Vec<_> = (start..(start + BATCH).min(to)).map(lead).collect();
                for result in engine.route_batch(&leads).await {
                    result?;
                }
                if (start / BATCH).is_multiple_of(100) {
                    eprintln!("  {start} leads routed");
                }
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    engine.shutdown().await?;
    Ok(())
}

/// One timed start.
pub(super) struct Start {
    /// Spawn to the first `200` on `/readyz`.
    pub(super) wall: Duration,
    /// CPU the server had used by then (user + system, 10 ms ticks): on a shared
    /// machine this tells work from waiting.
    cpu_ms: u64,
    /// The engine's own account of its recovery phases, from its log.
    phases: String,
    /// Spawn to the end of the start-up audit, which runs in the background once
    /// the server is ready (`leadroute_startup_audit_running` back to 0).
    pub(super) audited: Duration,
}

/// The server's stderr, read on a thread of its own as it comes (so the pipe never
/// fills): the address of its `bound` line, and the whole log once the process ends.
pub(super) struct ServerLog {
    pub(super) bound: std::sync::mpsc::Receiver<SocketAddr>,
    log: std::thread::JoinHandle<String>,
}

impl ServerLog {
    fn read(stderr: std::process::ChildStderr) -> ServerLog {
        use std::io::BufRead;
        let (found, bound) = std::sync::mpsc::channel();
        let log = std::thread::spawn(move || {
            let mut log = String::new();
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = bound_address(&line) {
                    let _ = found.send(addr);
                }
                log.push_str(&line);
                log.push('\n');
            }
            log
        });
        ServerLog { bound, log }
    }
}

/// The address in the server's `bound; answering 503 starting …` log line (text
/// format: `… bound; … addr=127.0.0.1:PORT`).
fn bound_address(line: &str) -> Option<SocketAddr> {
    if !line.contains(" bound; ") {
        return None;
    }
    line.split_whitespace()
        .find_map(|word| word.strip_prefix("addr="))
        .and_then(|addr| addr.parse().ok())
}

/// Starts `leadroute serve` on `dir`, bound to a port of its choosing, its log read
/// as it comes.
pub(super) fn spawn_server(
    leadroute: &Path,
    dir: &Path,
) -> Result<(std::process::Child, ServerLog)> {
    let mut cmd = Command::new(leadroute);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env_remove("LEADROUTE_ADMIN_TOKEN")
        .env_remove("LEADROUTE_INTAKE_TOKEN")
        .env_remove("LEADROUTE_CONFIG")
        .env_remove("LEADROUTE_LOG_FORMAT")
        .env("RUST_LOG", "leadroute_engine=info,leadroute_admin_api=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {leadroute:?}"))?;
    let server_log = ServerLog::read(child.stderr.take().context("the server's stderr")?);
    Ok((child, server_log))
}

/// A server started on a store, ready and done with its start-up audit.
pub(super) struct Running {
    pub(super) child: std::process::Child,
    pub(super) addr: SocketAddr,
    log: std::thread::JoinHandle<String>,
    /// Spawn to the first `200` on `/readyz`, and the CPU used by then.
    wall: Duration,
    cpu_ms: u64,
    /// Spawn to the end of the start-up audit.
    audited: Duration,
}

impl Running {
    /// Starts the server on `dir` and waits for its first `200` on `/readyz`, then
    /// for the end of its start-up audit, timing both from the spawn.
    pub(super) async fn start(leadroute: &Path, dir: &Path) -> Result<Running> {
        let started = Instant::now();
        let (mut child, server_log) = spawn_server(leadroute, dir)?;
        let bound = server_log.bound;
        let addr = tokio::task::spawn_blocking(move || bound.recv_timeout(START_DEADLINE)).await?;
        let Ok(addr) = addr else {
            let _ = child.kill();
            let status = child.wait()?;
            let log = server_log.log.join().unwrap_or_default();
            bail!("the server never logged its address ({status}):\n{log}");
        };
        let (wall, cpu_ms) = loop {
            let mut answered = false;
            if let Ok(mut conn) = Conn::open(addr).await
                && let Ok((status, _)) = conn.request("GET", "/readyz", "").await
            {
                if status == 200 {
                    break (started.elapsed(), cpu_ms(child.id()));
                }
                answered = true;
            }
            if let Some(status) = child.try_wait()? {
                bail!("the server exited before it was ready: {status}");
            }
            if started.elapsed() > START_DEADLINE {
                let _ = child.kill();
                bail!("not ready within {START_DEADLINE:?}");
            }
            // Not answering yet: probe again shortly. Answering 503 `starting` while
            // its store opens: each probe is a request the server must answer, so
            // probe less often, to take little of the CPU the opening needs.
            let pause = if answered { 5 } else { 1 };
            tokio::time::sleep(Duration::from_millis(pause)).await;
        };
        let audited = loop {
            let mut conn = Conn::open(addr).await?;
            let (status, body) = conn.request("GET", "/metrics", "").await?;
            if status == 200
                && String::from_utf8_lossy(&body)
                    .lines()
                    .any(|l| l == "leadroute_startup_audit_running 0")
            {
                break started.elapsed();
            }
            if started.elapsed() > START_DEADLINE {
                let _ = child.kill();
                bail!("start-up audit not done within {START_DEADLINE:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Ok(Running {
            child,
            addr,
            log: server_log.log,
            wall,
            cpu_ms,
            audited,
        })
    }

    /// Stops the server, with SIGTERM (it drains and exits 0) or SIGKILL (a crash),
    /// and returns its whole log.
    pub(super) fn stop(mut self, kill: bool) -> Result<String> {
        let signal = if kill { "-KILL" } else { "-TERM" };
        let _ = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status();
        let status = self.child.wait()?;
        let log = self
            .log
            .join()
            .map_err(|_| anyhow::anyhow!("the thread reading the server's log panicked"))?;
        if !kill && !status.success() {
            bail!("the server did not stop cleanly: {status}");
        }
        Ok(log)
    }
}

/// Starts the server on `dir` and times it from spawn to the first `200` on
/// `/readyz`; then stops it with SIGTERM (or SIGKILL).
pub(super) async fn time_start(leadroute: &Path, dir: &Path, kill: bool) -> Result<Start> {
    let running = Running::start(leadroute, dir).await?;
    let (wall, cpu_ms, audited) = (running.wall, running.cpu_ms, running.audited);
    let log = running.stop(kill)?;
    let phases = log
        .lines()
        .find_map(|l| {
            l.split_once("engine recovered")
                .map(|(_, rest)| rest.trim().to_string())
        })
        .unwrap_or_default();
    Ok(Start {
        wall,
        cpu_ms,
        phases,
        audited,
    })
}

/// User + system CPU of process `pid` so far, from `/proc/PID/stat` (Linux; 0
/// elsewhere). Clock ticks are 10 ms on Linux.
fn cpu_ms(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command name (which may hold spaces) start at field 3.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    (ticks(11) + ticks(12)) * 10
}

pub(super) fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_line_gives_the_servers_address() {
        let line = "2026-11-28T11:30:00.123456Z  INFO leadroute_admin_api::serve: bound; \
                    answering 503 starting until the store is open addr=127.0.0.1:41234";
        assert_eq!(bound_address(line), Some(([127, 0, 0, 1], 41234).into()));
        let other = "2026-11-28T11:30:01Z  INFO leadroute_admin_api::serve: leadroute serving \
                     addr=127.0.0.1:41234 data_dir=./data";
        assert_eq!(bound_address(other), None);
    }
}
