//! `loadgen backup`: what an online backup costs intake, and what a restore takes.
//!
//! It fills (or reuses) a store of N open leads as `loadgen recovery` does, starts
//! `leadroute serve` on it and waits for its start-up audit to end, then runs an open
//! loop of `--rate` leads/s for `--seconds`. `--backup-at` seconds in it asks for a
//! backup (`POST /admin/backups`), and it reports intake's latency (from each
//! request's intended send time, as `run` does) over the whole seconds before, during
//! and after the backup. Then it stops the server, restores the backup with
//! `leadroute restore` (wall time, peak resident memory), and times a server's start
//! on the restored directory.
//!
//! ```text
//! target/release/loadgen backup --leadroute target/release/leadroute --leads 1000000 \
//!     --data-dir /tmp/backup-1m
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use hdrhistogram::Histogram;

use super::overload::{histogram, ms, open_loop, sample_rss};
use super::recovery::{Running, dir_bytes, prepare_store, stored_leads, time_start};
use super::{Conn, positive_rate};

/// Arguments of `loadgen backup`.
#[derive(Parser)]
pub struct BackupArgs {
    /// The `leadroute` binary to start.
    #[arg(long)]
    leadroute: PathBuf,
    /// Leads the store holds before the run (all open).
    #[arg(long, default_value_t = 100_000)]
    leads: u64,
    /// Keep the store here (and reuse it if it already holds enough leads) instead
    /// of a temporary directory. Backups go to its `backups` directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Intake's rate during the run, in leads/s.
    #[arg(long, default_value_t = 1000.0, value_parser = positive_rate)]
    rate: f64,
    /// Seconds of intake.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// When to ask for the backup, in seconds from the start of intake.
    #[arg(long, default_value_t = 10)]
    backup_at: u64,
    /// Connections of the open loop.
    #[arg(long, default_value_t = 64)]
    connections: usize,
}

/// Runs `loadgen backup`.
pub async fn run(args: BackupArgs) -> Result<()> {
    if args.backup_at >= args.seconds {
        bail!("--backup-at must fall within --seconds");
    }
    let (_temp, dir) = prepare_store(args.data_dir.as_deref(), args.leads).await?;
    let stored = stored_leads(&dir)?;
    let store_bytes = dir_bytes(&dir);
    let server = Running::start(&args.leadroute, &dir).await?;
    let addr = server.addr;

    // New contacts: the lead numbers go on after those stored.
    let counter = Arc::new(AtomicU64::new(stored));
    let began = Instant::now();
    let intake = tokio::spawn(open_loop(
        addr,
        args.rate,
        args.connections,
        args.seconds,
        counter,
    ));
    tokio::time::sleep_until((began + Duration::from_secs(args.backup_at)).into()).await;
    let asked = began.elapsed();
    let mut conn = Conn::open(addr).await?;
    let (status, body) = conn.request("POST", "/admin/backups", "").await?;
    let answered = began.elapsed();
    if status != 201 {
        bail!(
            "the backup was refused: {status} {}",
            String::from_utf8_lossy(&body)
        );
    }
    let backup: serde_json::Value = serde_json::from_slice(&body)?;
    let phase = intake.await??;
    server.stop(false)?;

    println!(
        "store: {stored} open leads, {:.2} GiB; intake {} leads/s over {} connections",
        store_bytes as f64 / (1u64 << 30) as f64,
        args.rate,
        args.connections
    );
    println!(
        "backup: {} bytes, {} records ({} written while it was read); the committer \
         paused {:.3} ms; asked at {:.1} s, answered at {:.1} s ({:.1} s)",
        backup["bytes"],
        backup["entries"],
        backup["captured"],
        backup["paused_ms"].as_f64().unwrap_or(f64::NAN),
        asked.as_secs_f64(),
        answered.as_secs_f64(),
        (answered - asked).as_secs_f64(),
    );
    // Whole seconds of intended send time: those that began before the backup was
    // asked for, those within it, those after its answer.
    let first_during = asked.as_secs() as usize;
    let first_after = answered.as_secs_f64().ceil() as usize;
    let merge = |range: std::ops::Range<usize>| {
        let mut h: Histogram<u64> = histogram();
        for w in phase.windows.get(range.clone()).unwrap_or_default() {
            h.add(w).expect("same bounds");
        }
        (range.len(), h)
    };
    println!();
    println!("| intake | seconds | answered | p50 | p99 | p99.9 | max |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, range) in [
        ("before the backup", 0..first_during),
        (
            "during it",
            first_during..first_after.min(phase.windows.len()),
        ),
        (
            "after it",
            first_after.min(phase.windows.len())..phase.windows.len(),
        ),
    ] {
        let (seconds, h) = merge(range);
        println!(
            "| {name} | {seconds} | {} | {} | {} | {} | {} |",
            h.len(),
            ms(&h, 0.5),
            ms(&h, 0.99),
            ms(&h, 0.999),
            ms(&h, 1.0)
        );
    }
    println!(
        "answers by status: {:?}; failed requests: {}",
        phase.statuses, phase.errors
    );

    let file = PathBuf::from(backup["path"].as_str().context("the backup's path")?);
    let target = tempfile::Builder::new()
        .prefix("leadroute-restored-")
        .tempdir()?;
    let restored = target.path().join("data");
    let started = Instant::now();
    let mut child = std::process::Command::new(&args.leadroute)
        .arg("restore")
        .arg(&file)
        .arg("--data-dir")
        .arg(&restored)
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let stop = Arc::new(AtomicBool::new(false));
    let rss = sample_rss(child.id(), stop.clone());
    let status = child.wait()?;
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (_, peak_kib) = rss.join().map_err(|_| anyhow::anyhow!("RSS sampler"))?;
    if !status.success() {
        bail!("leadroute restore failed: {status}");
    }
    let start = time_start(&args.leadroute, &restored, false).await?;
    println!();
    println!(
        "restore: {:.1} s, peak RSS {} MiB, {:.2} GiB restored; the restored server ready \
         after {:.0} ms, its start-up audit done after {:.0} ms",
        took.as_secs_f64(),
        peak_kib / 1024,
        dir_bytes(&restored) as f64 / (1u64 << 30) as f64,
        start.wall.as_secs_f64() * 1e3,
        start.audited.as_secs_f64() * 1e3,
    );
    if args.data_dir.is_some() {
        std::fs::remove_file(&file)?;
    }
    Ok(())
}
