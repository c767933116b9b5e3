//! Shared helpers for leadroute's benchmarks.
//!
//! The bench binaries under `benches/benches/` measure scenarios; the set-up and
//! bookkeeping they share lives here, so each bench reads as the scenario it measures:
//!
//! - [`Fixture`]: an engine on a throw-away store with one territory of N reps.
//! - [`LeadSource`]: realistic leads that never repeat a contact, so none is
//!   de-duplicated and every route takes the full path.
//! - [`Latency`] and [`Stages`]: HDR histograms of call latency and of the engine's own
//!   per-stage [`Timings`].
//! - [`Report`]: percentile rows rendered as a markdown table.
//! - [`ThreadCpu`]: CPU time per thread, to tell which thread bounds a throughput pass.
//! - [`CommitStats`]: the engine's own group-commit metrics over a pass: group sizes and
//!   how much of the wall time the committer spent committing.
//! - [`NeighbourCpu`]: how busy *other* processes kept the machine during a pass, so a
//!   figure skewed by a concurrent build can be recognised.
//!
//! Criterion reports a median per benchmark; tail latency (p99) needs every call's
//! latency, which is what [`Latency`] keeps.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use leadroute_engine::domain::{
    BuiltinStrategy, LeadInput, MAX_CAPACITY, RepId, RepInput, StrategyInput, TerritoryId,
    TerritoryInput,
};
use leadroute_engine::{Durability, Engine, EngineConfig, Timings};
use tempfile::TempDir;

/// Errors from set-up; benches just report them and stop.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The id of the one territory a [`Fixture`] creates.
pub const TERRITORY: &str = "east";

/// The region the fixture's territory covers. Leads use sub-regions of it
/// (`CN-SH-PD`, …) so routing exercises the longest-prefix lookup.
pub const REGION: &str = "CN-SH";

/// Industry tags shared by reps' skills and leads, so the `rules` strategy finds
/// skilled reps for some leads and not for others.
pub const INDUSTRIES: [&str; 6] = [
    "hospital-lab",
    "pharma",
    "university",
    "food-safety",
    "environmental",
    "petrochemical",
];

/// Sub-regions of [`REGION`] that leads come from.
const DISTRICTS: [&str; 4] = ["CN-SH", "CN-SH-PD", "CN-SH-MH", "CN-SH-JA"];
const SOURCES: [&str; 3] = ["webform", "ads", "trade-show"];
const COMPANIES: [&str; 4] = [
    "Shanghai Ruijin Hospital",
    "Fudan University",
    "Sinopec Shanghai",
    "Bright Dairy",
];

/// An engine on a temporary store, configured with one default territory holding
/// `reps` reps. Dropping it stops the engine and deletes the store.
pub struct Fixture {
    /// The engine under test; clone it freely (it is a handle).
    pub engine: Engine,
    /// Number of reps in the territory.
    pub reps: usize,
    // Declared after `engine` so the engine (and its sled files) is dropped first.
    dir: TempDir,
}

impl Fixture {
    /// Opens an engine with `durability` and creates the territory [`TERRITORY`]
    /// (covering [`REGION`], the default, deciding with `strategy`) and `reps` reps.
    ///
    /// Reps have the maximum capacity ([`MAX_CAPACITY`]) so that a benchmark can route
    /// hundreds of thousands of leads without any of them waiting in the queue: a
    /// queued lead would measure a different path. Skills rotate through
    /// [`INDUSTRIES`] and every fourth rep is senior, so `rules` has real work to do.
    pub async fn open(
        reps: usize,
        durability: Durability,
        strategy: BuiltinStrategy,
    ) -> Result<Fixture, BoxError> {
        let dir = tempfile::Builder::new()
            .prefix("leadroute-bench-")
            .tempdir()?;
        let engine = Engine::open(EngineConfig::new(dir.path()).durability(durability))?;
        let territory = TerritoryInput {
            name: "East China".into(),
            regions: vec![REGION.into()],
            default: true,
            strategy: Some(StrategyInput::Builtin { builtin: strategy }),
            plugin_config: None,
            first_touch_sla_secs: None,
            shadow: None,
        };
        engine
            .upsert_territory(TerritoryId::new(TERRITORY)?, territory)
            .await?;
        for i in 0..reps {
            engine.upsert_rep(rep_id(i)?, rep_input(i)).await?;
        }
        Ok(Fixture { engine, reps, dir })
    }

    /// The directory of the engine's store.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Bytes the store occupies on disk now (sled pre-allocates segments, so this is
    /// approximate).
    pub fn disk_bytes(&self) -> u64 {
        dir_bytes(self.dir.path())
    }

    /// Shuts the engine down cleanly (waits for in-flight work), then deletes the store.
    pub async fn close(self) -> Result<(), BoxError> {
        self.engine.shutdown().await?;
        Ok(())
    }
}

/// The id of the `i`th fixture rep: `rep-000`, `rep-001`, …
pub fn rep_id(i: usize) -> Result<RepId, BoxError> {
    Ok(RepId::new(format!("rep-{i:03}"))?)
}

fn rep_input(i: usize) -> RepInput {
    RepInput {
        name: format!("Rep {i}"),
        territories: vec![TERRITORY.into()],
        // Two skills each, so every industry is covered several times over.
        skills: vec![
            INDUSTRIES[i % INDUSTRIES.len()].into(),
            INDUSTRIES[(i / INDUSTRIES.len() + 1 + i) % INDUSTRIES.len()].into(),
        ],
        tier: Some(
            if i.is_multiple_of(4) {
                "senior"
            } else {
                "junior"
            }
            .into(),
        ),
        capacity: MAX_CAPACITY,
        ..Default::default()
    }
}

fn dir_bytes(path: &Path) -> u64 {
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

/// Hands out realistic leads, each with a phone, e-mail and external id never used
/// before in this process: the engine de-duplicates open leads on any of the three, so
/// a repeat would be answered as a duplicate instead of routed.
///
/// Shareable across tasks (`&self` is enough); numbering is a single atomic counter.
#[derive(Debug, Default)]
pub struct LeadSource {
    next: AtomicU64,
}

impl LeadSource {
    /// A source starting at lead number 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next lead; see [`lead`].
    pub fn next_lead(&self) -> LeadInput {
        lead(self.next.fetch_add(1, Ordering::Relaxed))
    }

    /// The next `count` leads, built up front so that making them is not timed.
    pub fn take(&self, count: usize) -> Vec<LeadInput> {
        (0..count).map(|_| self.next_lead()).collect()
    }
}

/// Lead number `n`: a contact in a Shanghai district with a phone, e-mail and CRM id
/// derived from `n` (unique for `n` below 10^8), an industry, a purchase history
/// (every fifth lead a big buyer, above the `rules` VIP threshold), a source and a few
/// attributes — roughly what a web form or CRM sync delivers.
pub fn lead(n: u64) -> LeadInput {
    let pick = |len: usize| (n % len as u64) as usize;
    LeadInput {
        external_id: Some(format!("crm-{n:010}")),
        name: Some(format!("Contact {n}")),
        company: Some(COMPANIES[pick(COMPANIES.len())].into()),
        // `+86 139` plus eight digits: an 11-digit mainland mobile number.
        phone: Some(format!(
            "+86 139 {:04} {:04}",
            (n / 10_000) % 10_000,
            n % 10_000
        )),
        email: Some(format!("lead{n}@example.cn")),
        region: Some(DISTRICTS[pick(DISTRICTS.len())].into()),
        industry: Some(INDUSTRIES[pick(INDUSTRIES.len())].into()),
        purchase_amount: Some(if n.is_multiple_of(5) {
            250_000.0
        } else {
            (n % 90_000) as f64
        }),
        source: Some(SOURCES[pick(SOURCES.len())].into()),
        attributes: Some(serde_json::json!({
            "campaign": "2026-q4-lab-equipment",
            "utm_medium": "cpc",
            "instruments": ["hplc", "gc-ms"],
        })),
    }
}

/// Significant decimal digits the histograms keep: 0.1 % relative error.
const SIGNIFICANT_DIGITS: u8 = 3;
/// Largest latency recorded exactly (60 s); anything above is clamped to it.
const MAX_NANOS: u64 = 60_000_000_000;

/// A latency distribution in nanoseconds (an HDR histogram, 0.1 % precision).
#[derive(Clone)]
pub struct Latency {
    hist: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Latency")
            .field("count", &self.count())
            .field("p50", &self.quantile(0.5))
            .field("p99", &self.quantile(0.99))
            .finish()
    }
}

impl Latency {
    /// An empty distribution.
    pub fn new() -> Self {
        let hist = Histogram::new_with_bounds(1, MAX_NANOS, SIGNIFICANT_DIGITS)
            .expect("1 ns ..= 60 s at 3 significant digits is a valid histogram");
        Latency { hist }
    }

    /// A distribution of the given durations.
    pub fn of(durations: impl IntoIterator<Item = Duration>) -> Self {
        let mut latency = Self::new();
        for d in durations {
            latency.record(d);
        }
        latency
    }

    /// Records one call; values beyond 60 s are clamped, not dropped.
    pub fn record(&mut self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.hist.saturating_record(nanos.clamp(1, MAX_NANOS));
    }

    /// Number of calls recorded.
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// The latency at quantile `q` (0.5 = median, 0.99 = p99).
    pub fn quantile(&self, q: f64) -> Duration {
        Duration::from_nanos(self.hist.value_at_quantile(q))
    }

    /// The largest latency recorded.
    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.hist.max())
    }
}

/// Where a route's time went, per stage, as reported by the engine in [`Timings`].
///
/// `other` is what the stages do not cover: the hop to the actor thread and back,
/// waiting in the territory's inbox behind other leads, and the wake-up after commit.
#[derive(Clone, Debug, Default)]
pub struct Stages {
    /// Validation and the de-duplication check, on the caller's thread.
    pub dedupe: Latency,
    /// The strategy's ranking, on the actor thread.
    pub decide: Latency,
    /// Reserving capacity with the chosen rep's actor.
    pub reserve: Latency,
    /// Waiting for the group commit (transaction, flush, and fdatasync if `Power`).
    pub commit: Latency,
    /// `total` minus the four stages above.
    pub other: Latency,
}

impl Stages {
    /// Records one route's timings.
    pub fn record(&mut self, t: &Timings) {
        self.dedupe.record(t.dedupe);
        self.decide.record(t.decide);
        self.reserve.record(t.reserve);
        self.commit.record(t.commit);
        let staged = t.dedupe + t.decide + t.reserve + t.commit;
        self.other.record(t.total.saturating_sub(staged));
    }
}

/// Formats a duration for a table: µs below 10 ms, ms above.
pub fn format_duration(d: Duration) -> String {
    let micros = d.as_secs_f64() * 1e6;
    if micros < 10_000.0 {
        format!("{micros:.1} µs")
    } else {
        format!("{:.2} ms", micros / 1_000.0)
    }
}

/// One line of the percentile table.
#[derive(Clone, Debug)]
pub struct Row {
    /// What was measured, e.g. `route, power, 64 callers`.
    pub scenario: String,
    /// Reps in the territory; `None` where reps do not apply (the sled baseline).
    pub reps: Option<usize>,
    /// The call latencies.
    pub latency: Latency,
    /// Calls per second over the whole pass, where that is meaningful.
    pub throughput: Option<f64>,
    /// Cores other processes kept busy meanwhile ([`NeighbourCpu::cores_since`]).
    pub others: Option<f64>,
}

/// Percentile rows, rendered as a markdown table.
#[derive(Clone, Debug, Default)]
pub struct Report {
    rows: Vec<Row>,
}

impl Report {
    /// An empty report.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a row.
    pub fn push(&mut self, row: Row) {
        self.rows.push(row);
    }

    /// The rows added so far.
    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    /// The table: scenario, reps, calls, p50, p99, p99.9, max, throughput, and the
    /// cores other processes used meanwhile.
    pub fn to_markdown(&self) -> String {
        let mut out = String::from(
            "| Scenario | Reps | Calls | p50 | p99 | p99.9 | max | Throughput | Other load |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for row in &self.rows {
            let l = &row.latency;
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                row.scenario,
                row.reps.map_or("–".into(), |r| r.to_string()),
                l.count(),
                format_duration(l.quantile(0.5)),
                format_duration(l.quantile(0.99)),
                format_duration(l.quantile(0.999)),
                format_duration(l.max()),
                row.throughput.map_or("–".into(), |t| format!("{t:.0} /s")),
                row.others.map_or("–".into(), |c| format!("{c:.2} cores")),
            ));
        }
        out
    }
}

/// Renders per-stage p50 / p99 for labelled [`Stages`] as a markdown table.
pub fn stages_markdown(rows: &[(String, Stages)]) -> String {
    let mut out = String::from(
        "| Scenario | dedupe p50 / p99 | decide p50 / p99 | reserve p50 / p99 | commit p50 / p99 | other p50 / p99 |\n\
         |---|---:|---:|---:|---:|---:|\n",
    );
    let cell = |l: &Latency| {
        format!(
            "{} / {}",
            format_duration(l.quantile(0.5)),
            format_duration(l.quantile(0.99))
        )
    };
    for (label, s) in rows {
        out.push_str(&format!(
            "| {label} | {} | {} | {} | {} | {} |\n",
            cell(&s.dedupe),
            cell(&s.decide),
            cell(&s.reserve),
            cell(&s.commit),
            cell(&s.other),
        ));
    }
    out
}

/// On-CPU time of each of this process's threads, summed by thread name.
///
/// Taken before and after a pass ([`ThreadCpu::since`]), it shows which thread was
/// busy: a thread near one full core while the others wait is the bottleneck. Linux
/// only (`/proc/self/task/*/schedstat`, nanoseconds); elsewhere it is empty. Names are
/// as the kernel keeps them, cut to 15 bytes (`leadroute-actor`, `leadroute-commi`).
#[derive(Clone, Debug, Default)]
pub struct ThreadCpu {
    by_name: BTreeMap<String, Duration>,
}

impl ThreadCpu {
    /// CPU time used so far by every live thread.
    pub fn now() -> Self {
        let mut by_name = BTreeMap::new();
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return ThreadCpu { by_name };
        };
        for task in tasks.filter_map(Result::ok) {
            let path = task.path();
            let (Ok(comm), Ok(schedstat)) = (
                std::fs::read_to_string(path.join("comm")),
                std::fs::read_to_string(path.join("schedstat")),
            ) else {
                continue; // the thread exited meanwhile
            };
            // schedstat: on-CPU ns, run-queue wait ns, time slices.
            let Some(on_cpu) = schedstat
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
            else {
                continue;
            };
            *by_name
                .entry(comm.trim().to_string())
                .or_insert(Duration::ZERO) += Duration::from_nanos(on_cpu);
        }
        ThreadCpu { by_name }
    }

    /// CPU time used since `earlier`, by name. Threads that exited in between are
    /// missing; threads started since count in full.
    pub fn since(&self, earlier: &ThreadCpu) -> ThreadCpu {
        let by_name = self
            .by_name
            .iter()
            .map(|(name, &now)| {
                let before = earlier.by_name.get(name).copied().unwrap_or_default();
                (name.clone(), now.saturating_sub(before))
            })
            .filter(|(_, used)| !used.is_zero())
            .collect();
        ThreadCpu { by_name }
    }

    /// Cores each thread name kept busy over `wall`, busiest first.
    pub fn cores(&self, wall: Duration) -> Vec<(String, f64)> {
        let wall = wall.as_secs_f64().max(f64::MIN_POSITIVE);
        let mut cores: Vec<(String, f64)> = self
            .by_name
            .iter()
            .map(|(name, used)| (name.clone(), used.as_secs_f64() / wall))
            .collect();
        cores.sort_by(|a, b| b.1.total_cmp(&a.1));
        cores
    }
}

/// The committer's work over a span, from the engine's Prometheus histograms
/// (`leadroute_store_commit_group_size`, `leadroute_store_commit_seconds`).
///
/// Take one reading before a pass and one after ([`CommitStats::since`]). A committer
/// busy close to all of the wall time is the bottleneck: routes then go no faster than
/// one group's commit time divided by its size, whatever the callers do.
#[derive(Clone, Copy, Debug, Default)]
pub struct CommitStats {
    /// Group commits.
    pub groups: u64,
    /// Changes committed (leads, plus any other change).
    pub changes: u64,
    /// Time spent applying, flushing (and syncing) groups.
    pub busy: Duration,
}

impl CommitStats {
    /// The totals so far.
    pub fn of(engine: &Engine) -> Self {
        let m = engine.metrics();
        CommitStats {
            groups: m.commit_duration.get_sample_count(),
            // Group sizes are whole numbers; the histogram sums them as f64.
            changes: m.commit_group_size.get_sample_sum().round() as u64,
            busy: Duration::from_secs_f64(m.commit_duration.get_sample_sum().max(0.0)),
        }
    }

    /// What happened between `earlier` and this reading.
    pub fn since(&self, earlier: &CommitStats) -> CommitStats {
        CommitStats {
            groups: self.groups.saturating_sub(earlier.groups),
            changes: self.changes.saturating_sub(earlier.changes),
            busy: self.busy.saturating_sub(earlier.busy),
        }
    }

    /// Mean changes per group.
    pub fn mean_group(&self) -> f64 {
        self.changes as f64 / self.groups.max(1) as f64
    }

    /// Mean time to commit one group.
    pub fn mean_commit(&self) -> Duration {
        self.busy / u32::try_from(self.groups.max(1)).unwrap_or(u32::MAX)
    }

    /// Committer time per change: the committer's ceiling is one over this.
    pub fn per_change(&self) -> Duration {
        self.busy / u32::try_from(self.changes.max(1)).unwrap_or(u32::MAX)
    }

    /// Share of `wall` the committer spent committing (1.0 = never idle).
    pub fn utilisation(&self, wall: Duration) -> f64 {
        self.busy.as_secs_f64() / wall.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

/// Linux reports `/proc/<pid>/stat` times in `USER_HZ` ticks, which is 100 per second
/// on every mainstream architecture.
const USER_HZ: f64 = 100.0;

/// A reading of the CPU time used by every *other* user-space process, to tell how much
/// of the machine neighbours took during a pass (Linux; zero elsewhere).
///
/// On a 2-core machine one busy neighbour (a compiler, say) takes half the machine:
/// tail latencies then measure the neighbour, not the engine. Kernel threads are left
/// out, because much of their work (writeback, journal commits) is done for the bench's
/// own fsyncs; so is hypervisor steal. Finished children count through their parents'
/// `cutime`, so short-lived compiler processes are not lost. Tick resolution is 10 ms:
/// the figure means something over passes of a second or more.
#[derive(Clone, Copy, Debug)]
pub struct NeighbourCpu {
    ticks: u64,
    at: Instant,
}

impl NeighbourCpu {
    /// Reads the counters now.
    pub fn now() -> Self {
        NeighbourCpu {
            ticks: neighbour_ticks(),
            at: Instant::now(),
        }
    }

    /// Average cores other user-space processes kept busy between `earlier` and this
    /// reading.
    pub fn cores_since(&self, earlier: &NeighbourCpu) -> f64 {
        let secs = self
            .at
            .duration_since(earlier.at)
            .as_secs_f64()
            .max(f64::MIN_POSITIVE);
        self.ticks.saturating_sub(earlier.ticks) as f64 / USER_HZ / secs
    }
}

/// User + system ticks of every user-space process but this one, including the
/// children each has reaped.
fn neighbour_ticks() -> u64 {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            // The command name may hold spaces; after its closing parenthesis come the
            // state, then ppid; utime, stime, cutime, cstime are 11 to 14 places on.
            let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
            let ppid: u32 = fields.get(1)?.parse().ok()?;
            let kernel_thread = ppid == 2 || stat.starts_with("2 ");
            if kernel_thread {
                return None;
            }
            let ticks = fields
                .get(11..15)?
                .iter()
                .map(|v| v.parse::<i64>().ok().map(|t| t.max(0) as u64))
                .sum::<Option<u64>>()?;
            Some(ticks)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leads_are_valid_and_never_repeat_a_contact() {
        let source = LeadSource::new();
        let leads = source.take(3);
        assert_ne!(leads[0].phone, leads[1].phone);
        assert_ne!(leads[1].email, leads[2].email);
        for l in &leads {
            let id = leadroute_engine::domain::LeadId::from_key(&[0; 16]).expect("16 bytes");
            l.validate(id, 0).expect("bench leads must validate");
        }
    }

    #[test]
    fn latency_quantiles_are_within_precision() {
        let l = Latency::of((1..=100).map(Duration::from_micros));
        assert_eq!(l.count(), 100);
        let p50 = l.quantile(0.5).as_secs_f64() * 1e6;
        assert!((p50 - 50.0).abs() < 0.1, "p50 was {p50}");
    }
}
