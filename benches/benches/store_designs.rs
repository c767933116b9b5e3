//! What one durable lead costs the committer under seven storage designs, measured
//! without the engine, so a change of design can be judged before it is built.
//!
//! The engine's committer is the bound on durable leads/s (`benches/README.md`, "What
//! bounds each figure"). Per assigned lead it writes the lead record, its assignment,
//! the rep→lead index entry, three de-duplication keys, a history entry and the
//! first-touch deadline, plus each rep's record once per group, in multi-tree sled
//! transactions of at most 64 leads, then flushes and `fdatasync`s once per group.
//! Each design below writes the same bytes per lead (sizes close to the real records
//! of the load generator's leads) in groups of [`SINGLE_GROUP`] leads (what
//! single-lead intake gathers at 64 connections) and [`BATCH_GROUP`] leads (batch
//! intake), and makes every group durable the way the engine does before answering:
//!
//! - **`sled-trees-tx`**: the engine's layout and transactions in schema version 1,
//!   each de-duplication key under its own key.
//! - **`sled-trees-tx-no-dedupe`**: the same without the three de-duplication keys,
//!   which would live in memory, rebuilt at start from the open leads. Contacts
//!   arrive in no order, so these are the only keys of a lead scattered over their
//!   tree (the others follow the time-ordered lead id or the rep); this row says what
//!   that costs.
//! - **`sled-trees-tx-keys-by-lead`**: the engine's layout since schema version 2:
//!   the de-duplication index in memory, each open lead's keys stored together under
//!   its id (`lead_keys`) so the index can be rebuilt at start.
//! - **`sled-trees-tx-open-record`**: as the one above, with the open lead's
//!   assignment, first-touch deadline and keys in one record under its id: three
//!   keys of a lead become one.
//! - **`sled-one-tree-batch`**: the same keys in one tree under a one-byte prefix per
//!   kind, written with one `apply_batch` per group (atomic, and crash-atomic through
//!   sled's batch manifest) instead of transactions. The committer is the only writer,
//!   so transactions buy nothing but multi-tree atomicity.
//! - **`sled-one-key`**: one key per lead in one tree (the lead with its history and
//!   deadline inside; indexes kept in memory and rebuilt at start), one `apply_batch`.
//! - **`log-append`**: every lead's records appended to one file and `fdatasync`ed;
//!   the lower bound of a write-ahead-log design, whose indexes and lead lookups
//!   would live in memory and in periodic checkpoints (not measured here).
//!
//! Each design gets a fresh temp dir and first stores [`PRELOAD`] leads, so B-tree
//! costs are those of a store that holds data. Criterion reports the mean per group;
//! then a percentile pass times every group (HDR histogram) and prints µs per lead and
//! leads/s. `cargo bench -p leadroute-benches --bench store_designs`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use leadroute_benches::Latency;
use sled::Transactional;
use sled::transaction::ConflictableTransactionError;
use tempfile::TempDir;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Leads per group in single-lead intake at 64 connections (measured: 23).
const SINGLE_GROUP: usize = 23;
/// Leads per group in batch intake (measured: about 400).
const BATCH_GROUP: usize = 400;
/// Leads stored before measuring (a smoke run: [`SMOKE_LEADS`]).
const PRELOAD: usize = 100_000;
/// Leads timed per design and group size in the percentile pass (a smoke run:
/// [`SMOKE_LEADS`]).
const TIMED: usize = 100_000;
/// Leads stored, and timed, in a smoke run (`cargo test --benches`, `-- --test`).
const SMOKE_LEADS: usize = 2_000;
/// Changes per sled transaction in the engine's committer.
const MAX_TRANSACTION: usize = 64;
/// Reps a group's leads spread over (the demo organisation has 63).
const REPS: u64 = 63;

/// Encoded sizes of one lead's records, close to the engine's for the load
/// generator's leads at about nine candidates per territory.
const LEAD_BYTES: usize = 260;
const HISTORY_BYTES: usize = 220;
const ASSIGNMENT_BYTES: usize = 30;
const SLA_BYTES: usize = 12;
const REP_BYTES: usize = 120;
const DEDUPE_KEYS: usize = 3;

/// The trees of the engine's layout that a lead's intake writes.
const TREES: [&str; 7] = [
    "leads",
    "assignments",
    "rep_leads",
    "dedupe",
    "history",
    "sla",
    "reps",
];

/// One lead's writes: which kind (tree), key and value.
struct Write1 {
    kind: u8,
    key: Vec<u8>,
    value: Vec<u8>,
}

/// Every write of lead number `n`, in the engine's order.
fn lead_writes(n: u64) -> Vec<Write1> {
    let id = u128::from(n).to_be_bytes().to_vec();
    let rep = format!("rep-{:02}", n % REPS).into_bytes();
    let mut rep_lead = rep.clone();
    rep_lead.push(0);
    rep_lead.extend_from_slice(&id);
    let mut history_key = id.clone();
    history_key.extend_from_slice(&n.to_be_bytes());
    let fill = |len: usize| vec![(n % 251) as u8; len];
    let mut writes = vec![
        Write1 {
            kind: 0,
            key: id.clone(),
            value: fill(LEAD_BYTES),
        },
        Write1 {
            kind: 1,
            key: id.clone(),
            value: fill(ASSIGNMENT_BYTES),
        },
        Write1 {
            kind: 2,
            key: rep_lead,
            value: Vec::new(),
        },
    ];
    for k in 0..DEDUPE_KEYS {
        writes.push(Write1 {
            kind: 3,
            key: dedupe_key(n, k),
            value: id.clone(),
        });
    }
    writes.push(Write1 {
        kind: 4,
        key: history_key,
        value: fill(HISTORY_BYTES),
    });
    writes.push(Write1 {
        kind: 5,
        key: id,
        value: fill(SLA_BYTES),
    });
    writes
}

/// Lead `n`'s `k`th de-duplication key. Contacts are not ordered by arrival, so the
/// keys are scattered over the tree as real phone numbers and e-mail addresses are:
/// each lands on its own leaf, where keys in arrival order would share the last one.
fn dedupe_key(n: u64, k: usize) -> Vec<u8> {
    // splitmix64: a bijection, so no two leads share a key.
    let mut z = n.wrapping_mul(DEDUPE_KEYS as u64).wrapping_add(k as u64);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let kind = ["phone", "email", "external_id"][k % 3];
    format!("{kind}:{z:016x}").into_bytes()
}

/// The rep records a group rewrites once each.
fn rep_writes(first: u64, leads: usize) -> Vec<Write1> {
    let mut reps: Vec<u64> = (first..first + leads as u64).map(|n| n % REPS).collect();
    reps.sort_unstable();
    reps.dedup();
    reps.into_iter()
        .map(|r| Write1 {
            kind: 6,
            key: format!("rep-{r:02}").into_bytes(),
            value: vec![7; REP_BYTES],
        })
        .collect()
}

fn prefixed(w: &Write1) -> Vec<u8> {
    let mut key = Vec::with_capacity(w.key.len() + 1);
    key.push(w.kind);
    key.extend_from_slice(&w.key);
    key
}

/// A storage design: makes one group of leads durable.
trait Design {
    fn name(&self) -> &'static str;
    fn commit(&mut self, first: u64, leads: usize);
}

/// sled in a temp dir, made durable as the engine's committer does (`flush`, then
/// `fdatasync` of sled's data file).
struct Sled {
    db: sled::Db,
    data: File,
    _dir: TempDir,
}

impl Sled {
    fn open() -> Sled {
        let dir = tempfile::Builder::new()
            .prefix("leadroute-bench-design-")
            .tempdir()
            .expect("temp dir");
        let db = sled::Config::new()
            .path(dir.path())
            .open()
            .expect("sled open");
        let data = File::open(dir.path().join("db")).expect("sled data file");
        Sled {
            db,
            data,
            _dir: dir,
        }
    }

    fn make_durable(&self) {
        self.db.flush().expect("flush");
        self.data.sync_data().expect("fdatasync");
    }
}

struct TreesTx {
    sled: Sled,
    trees: [sled::Tree; TREES.len()],
    layout: Layout,
}

/// Which of a lead's writes a [`TreesTx`] design stores, and how.
#[derive(Clone, Copy, PartialEq)]
enum Layout {
    /// Every write, the de-duplication keys each under its own key.
    Dedupe,
    /// Without the de-duplication keys (they would live in memory only).
    NoDedupe,
    /// The engine today: the keys in memory, and stored together under the lead's id
    /// (`lead_keys`), so the index can be rebuilt at start.
    KeysByLead,
    /// As `KeysByLead`, with the assignment, the deadline and the keys in one record
    /// of the open lead (three trees become one).
    OpenRecord,
}

/// Bytes of a lead's stored de-duplication keys (three keys of about 24 bytes).
const LEAD_KEYS_BYTES: usize = 80;

impl Design for TreesTx {
    fn name(&self) -> &'static str {
        match self.layout {
            Layout::Dedupe => "sled-trees-tx",
            Layout::NoDedupe => "sled-trees-tx-no-dedupe",
            Layout::KeysByLead => "sled-trees-tx-keys-by-lead",
            Layout::OpenRecord => "sled-trees-tx-open-record",
        }
    }

    fn commit(&mut self, first: u64, leads: usize) {
        let reps = rep_writes(first, leads);
        let mut start = first;
        let end = first + leads as u64;
        while start < end {
            let chunk_end = (start + MAX_TRANSACTION as u64).min(end);
            let last_chunk = chunk_end == end;
            self.trees
                .transaction(|t| {
                    for n in start..chunk_end {
                        for w in lead_writes(n) {
                            match (self.layout, w.kind) {
                                (Layout::Dedupe, _) => {}
                                (_, 3) => continue,
                                (Layout::OpenRecord, 5) => continue,
                                (Layout::OpenRecord, 1) => {
                                    let len = ASSIGNMENT_BYTES + SLA_BYTES + LEAD_KEYS_BYTES;
                                    t[1].insert(w.key, vec![1; len])?;
                                    continue;
                                }
                                _ => {}
                            }
                            t[usize::from(w.kind)].insert(w.key, w.value)?;
                        }
                        if self.layout == Layout::KeysByLead {
                            let id = u128::from(n).to_be_bytes().to_vec();
                            t[3].insert(id, vec![2; LEAD_KEYS_BYTES])?;
                        }
                    }
                    if last_chunk {
                        for w in &reps {
                            t[usize::from(w.kind)].insert(w.key.clone(), w.value.clone())?;
                        }
                    }
                    Ok::<_, ConflictableTransactionError<()>>(())
                })
                .expect("transaction");
            start = chunk_end;
        }
        self.sled.make_durable();
    }
}

struct OneTreeBatch {
    sled: Sled,
    tree: sled::Tree,
}

impl Design for OneTreeBatch {
    fn name(&self) -> &'static str {
        "sled-one-tree-batch"
    }

    fn commit(&mut self, first: u64, leads: usize) {
        let mut batch = sled::Batch::default();
        for n in first..first + leads as u64 {
            for w in lead_writes(n) {
                batch.insert(prefixed(&w), w.value);
            }
        }
        for w in rep_writes(first, leads) {
            batch.insert(prefixed(&w), w.value);
        }
        self.tree.apply_batch(batch).expect("apply_batch");
        self.sled.make_durable();
    }
}

struct OneKey {
    sled: Sled,
    tree: sled::Tree,
}

impl Design for OneKey {
    fn name(&self) -> &'static str {
        "sled-one-key"
    }

    fn commit(&mut self, first: u64, leads: usize) {
        let mut batch = sled::Batch::default();
        for n in first..first + leads as u64 {
            let writes = lead_writes(n);
            let value: Vec<u8> = writes.iter().flat_map(|w| w.value.clone()).collect();
            batch.insert(writes[0].key.clone(), value);
        }
        for w in rep_writes(first, leads) {
            batch.insert(prefixed(&w), w.value);
        }
        self.tree.apply_batch(batch).expect("apply_batch");
        self.sled.make_durable();
    }
}

struct LogAppend {
    file: File,
    buffer: Vec<u8>,
    _dir: TempDir,
}

impl Design for LogAppend {
    fn name(&self) -> &'static str {
        "log-append"
    }

    fn commit(&mut self, first: u64, leads: usize) {
        self.buffer.clear();
        let record = |w: &Write1, buffer: &mut Vec<u8>| {
            buffer.push(w.kind);
            buffer.extend_from_slice(&(w.key.len() as u32).to_le_bytes());
            buffer.extend_from_slice(&w.key);
            buffer.extend_from_slice(&(w.value.len() as u32).to_le_bytes());
            buffer.extend_from_slice(&w.value);
        };
        for n in first..first + leads as u64 {
            for w in lead_writes(n) {
                record(&w, &mut self.buffer);
            }
        }
        for w in rep_writes(first, leads) {
            record(&w, &mut self.buffer);
        }
        self.file.write_all(&self.buffer).expect("append");
        self.file.sync_data().expect("fdatasync");
    }
}

/// Opens a fresh instance of design `index` with `preload` leads stored.
fn open(index: usize, preload: usize) -> Box<dyn Design> {
    let mut design: Box<dyn Design> = match index {
        0 | 4 | 5 | 6 => {
            let sled = Sled::open();
            let trees = TREES.map(|t| sled.db.open_tree(t).expect("tree"));
            let layout = match index {
                0 => Layout::Dedupe,
                4 => Layout::NoDedupe,
                5 => Layout::KeysByLead,
                _ => Layout::OpenRecord,
            };
            Box::new(TreesTx {
                sled,
                trees,
                layout,
            })
        }
        1 => {
            let sled = Sled::open();
            let tree = sled.db.open_tree("all").expect("tree");
            Box::new(OneTreeBatch { sled, tree })
        }
        2 => {
            let sled = Sled::open();
            let tree = sled.db.open_tree("all").expect("tree");
            Box::new(OneKey { sled, tree })
        }
        3 => {
            let dir = tempfile::Builder::new()
                .prefix("leadroute-bench-design-")
                .tempdir()
                .expect("temp dir");
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.path().join("log"))
                .expect("log file");
            Box::new(LogAppend {
                file,
                buffer: Vec::new(),
                _dir: dir,
            })
        }
        _ => unreachable!("{DESIGNS} designs"),
    };
    for first in (0..preload as u64).step_by(BATCH_GROUP) {
        design.commit(first, BATCH_GROUP);
    }
    design
}

const DESIGNS: usize = 7;

fn criterion_pass(c: &mut Criterion, preload: usize) {
    for group_size in [SINGLE_GROUP, BATCH_GROUP] {
        let mut group = c.benchmark_group(format!("store-design/group-{group_size}"));
        group.throughput(Throughput::Elements(group_size as u64));
        group.sample_size(20);
        for index in 0..DESIGNS {
            let mut design = open(index, preload);
            let mut next = preload as u64;
            group.bench_function(BenchmarkId::from_parameter(design.name()), |b| {
                b.iter_custom(|iters| {
                    let started = Instant::now();
                    for _ in 0..iters {
                        design.commit(next, group_size);
                        next += group_size as u64;
                    }
                    started.elapsed()
                })
            });
        }
        group.finish();
    }
}

/// Times every group of `timed` leads per design and group size, on stores holding
/// `preload`; prints a table.
fn percentile_pass(preload: usize, timed: usize) {
    println!(
        "\n| design | leads per group | groups | µs per lead, p50 / p99 of groups | leads/s |"
    );
    println!("|---|---:|---:|---|---:|");
    for group_size in [SINGLE_GROUP, BATCH_GROUP] {
        for index in 0..DESIGNS {
            let mut design = open(index, preload);
            let mut latency = Latency::new();
            let mut next = preload as u64;
            let started = Instant::now();
            let groups = (timed / group_size).max(1);
            for _ in 0..groups {
                let t = Instant::now();
                design.commit(next, group_size);
                latency.record(t.elapsed());
                next += group_size as u64;
            }
            let elapsed = started.elapsed();
            let per_lead = |d: Duration| d.as_secs_f64() * 1e6 / group_size as f64;
            println!(
                "| {} | {group_size} | {groups} | {:.1} / {:.1} | {:.0} |",
                design.name(),
                per_lead(latency.quantile(0.5)),
                per_lead(latency.quantile(0.99)),
                (groups * group_size) as f64 / elapsed.as_secs_f64(),
            );
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |f: &str| args.iter().any(|a| a == f);
    // `cargo bench` passes `--bench`; without it (`cargo test --benches`) Criterion
    // runs each benchmark once as a test, and the stores shrink to match.
    let (preload, timed) = if flag("--bench") && !flag("--test") {
        (PRELOAD, TIMED)
    } else {
        (SMOKE_LEADS, SMOKE_LEADS)
    };
    let load = || std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load_at_start = load();
    let mut c = Criterion::default().configure_from_args();
    criterion_pass(&mut c, preload);
    c.final_summary();
    if !flag("--list") {
        percentile_pass(preload, timed);
        println!(
            "\nLoad average at start: {}; at end: {}",
            load_at_start.trim(),
            load().trim()
        );
    }
}
