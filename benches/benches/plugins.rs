//! Plugin decision cost: the built-in `rules` strategy natively against the `rules`
//! example plugin in the wasm sandbox, at 10, 50 and 500 candidates; plus the fixed
//! cost of a fresh instance and the alternative of reusing one.
//!
//! Criterion times each case; a second pass records every call in an hdrhistogram
//! and prints p50/p99 and the wasm/native ratio as a markdown table (copied into
//! `benches/README.md`, "Plugins").
//!
//! `cargo bench -p leadroute-benches --bench plugins`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group};
use hdrhistogram::Histogram;
use leadroute_engine::domain::{Lead, LeadId, LeadInput, RepId};
use leadroute_engine::plugins::{PluginLimits, Standalone};
use leadroute_engine::strategy::{Candidate, Rules, Strategy};
use leadroute_plugin_builds::RULES;

const SIZES: [usize; 3] = [10, 50, 500];
/// Calls per histogram; a live instance is replaced after this many (its memory is
/// not reclaimed between calls).
const SAMPLES: usize = 2_000;

struct Rep {
    id: RepId,
    load: u32,
    skills: Vec<String>,
    tier: String,
    last: Option<u64>,
}

fn reps(n: usize) -> Vec<Rep> {
    let skills = ["hospital-lab", "pharma", "clinic", "biotech"];
    (0..n)
        .map(|i| Rep {
            id: RepId::new(format!("rep-{i:04}")).unwrap(),
            load: (i * 7 % 20) as u32,
            skills: vec![skills[i % 4].to_string(), skills[(i + 1) % 4].to_string()],
            tier: if i % 3 == 0 { "senior" } else { "junior" }.into(),
            last: (i % 5 != 0).then_some(1_700_000_000_000 + i as u64),
        })
        .collect()
}

fn candidates(reps: &[Rep]) -> Vec<Candidate<'_>> {
    reps.iter()
        .map(|r| Candidate {
            id: &r.id,
            load: r.load,
            capacity: 20,
            weight: 1.0,
            skills: &r.skills,
            tier: &r.tier,
            last_assigned_at: r.last,
        })
        .collect()
}

fn lead() -> Lead {
    LeadInput {
        external_id: Some("bench-1".into()),
        region: Some("CN-SH-PD".into()),
        industry: Some("hospital-lab".into()),
        purchase_amount: Some(250_000.0),
        source: Some("webform".into()),
        attributes: Some(serde_json::json!({"employees": 120, "budget_k": 80})),
        ..Default::default()
    }
    .validate(
        "01HF0ZQ7S0000000000000000A".parse::<LeadId>().unwrap(),
        1_700_000_000_000,
    )
    .unwrap()
}

fn host(limits: PluginLimits) -> Standalone {
    Standalone::new(limits, RULES, &serde_json::json!({})).expect("rules compiles")
}

fn bench(c: &mut Criterion) {
    let lead = lead();
    let native = Rules::from_config(&serde_json::json!({})).unwrap();
    let wasm = host(PluginLimits::default());
    let mut group = c.benchmark_group("plugin_decision");
    for n in SIZES {
        let reps = reps(n);
        let cands = candidates(&reps);
        // Same work: both must rank identically.
        assert_eq!(
            native.rank(&lead, &cands).order,
            wasm.rank(&lead, &cands).unwrap().order
        );
        group.bench_with_input(BenchmarkId::new("native_rules", n), &cands, |b, c| {
            b.iter(|| black_box(native.rank(&lead, c)))
        });
        group.bench_with_input(
            BenchmarkId::new("wasm_rules_fresh_instance", n),
            &cands,
            |b, c| b.iter(|| black_box(wasm.rank(&lead, c).unwrap())),
        );
        group.bench_with_input(BenchmarkId::new("encode_input", n), &cands, |b, c| {
            b.iter(|| black_box(wasm.encode(&lead, c)))
        });
    }
    group.bench_function("instantiate_and_trivial_call", |b| {
        b.iter(|| black_box(wasm.instantiate_only().unwrap()))
    });
    group.finish();
}

/// Records `f` SAMPLES times (after a warm-up) into a histogram of nanoseconds.
fn record(mut f: impl FnMut()) -> Histogram<u64> {
    for _ in 0..200 {
        f();
    }
    let mut h = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).unwrap();
    for _ in 0..SAMPLES {
        let started = Instant::now();
        f();
        h.record(started.elapsed().as_nanos().max(1) as u64)
            .unwrap();
    }
    h
}

fn us(ns: u64) -> String {
    format!("{:.1}", Duration::from_nanos(ns).as_secs_f64() * 1e6)
}

/// Prints the hdrhistogram table: p50/p99 per case and the wasm/native p50 ratio.
fn table() {
    let lead = lead();
    let native = Rules::from_config(&serde_json::json!({})).unwrap();
    let wasm = host(PluginLimits::default());
    // The engine's default keeps 2 MiB resident; this is the alternative.
    let resident = host(PluginLimits {
        keep_resident_bytes: 0,
        ..PluginLimits::default()
    });
    println!(
        "\n| candidates | native p50 / p99 µs | wasm fresh p50 / p99 µs | wasm/native p50 | target 2×native+5 µs | wasm live instance p50 / p99 µs | keep_resident 0 p50 / p99 µs | encode p50 µs | input bytes |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for n in SIZES {
        let reps = reps(n);
        let cands = candidates(&reps);
        let nat = record(|| {
            black_box(native.rank(&lead, &cands));
        });
        let fresh = record(|| {
            black_box(wasm.rank(&lead, &cands).unwrap());
        });
        let res = record(|| {
            black_box(resident.rank(&lead, &cands).unwrap());
        });
        let mut live = wasm.live().unwrap();
        let mut calls = 0;
        let reused = record(|| {
            calls += 1;
            // Its memory is never reclaimed: replace it before 500 candidates' inputs
            // (≈ 70 KiB a call) fill the 16 MiB cap.
            if calls % 100 == 0 {
                live = wasm.live().unwrap();
            }
            black_box(live.rank(&lead, &cands).unwrap());
        });
        let enc = record(|| {
            black_box(wasm.encode(&lead, &cands));
        });
        let (np50, wp50) = (nat.value_at_quantile(0.5), fresh.value_at_quantile(0.5));
        println!(
            "| {n} | {} / {} | {} / {} | {:.1}× | {} µs {} | {} / {} | {} / {} | {} | {} |",
            us(np50),
            us(nat.value_at_quantile(0.99)),
            us(wp50),
            us(fresh.value_at_quantile(0.99)),
            wp50 as f64 / np50 as f64,
            us(2 * np50 + 5_000),
            if wp50 <= 2 * np50 + 5_000 {
                "met"
            } else {
                "missed"
            },
            us(reused.value_at_quantile(0.5)),
            us(reused.value_at_quantile(0.99)),
            us(res.value_at_quantile(0.5)),
            us(res.value_at_quantile(0.99)),
            us(enc.value_at_quantile(0.5)),
            wasm.encode(&lead, &cands).len(),
        );
    }
    let compile: Vec<Duration> = (0..5)
        .map(|_| {
            let started = Instant::now();
            black_box(host(PluginLimits::default()));
            started.elapsed()
        })
        .collect();
    println!(
        "\ncompile + validate the {} KiB rules module: min {:?} over 5 (sandbox start included)",
        RULES.len() / 1024,
        compile.iter().min().unwrap()
    );
    // How long the default fuel budget lets a runaway plugin hold the actor thread.
    let spin = wat::parse_str(
        r#"(module (memory (export "memory") 1)
             (func (export "leadroute_abi_version") (result i32) (i32.const 1))
             (func (export "leadroute_alloc") (param i32) (result i32) (i32.const 8))
             (func (export "leadroute_route") (param i32 i32) (result i64)
               (local $i i32)
               (loop $l (local.set $i (i32.add (local.get $i) (i32.const 1))) (br $l))
               (unreachable)))"#,
    )
    .unwrap();
    let spinner = Standalone::new(PluginLimits::default(), &spin, &serde_json::json!({})).unwrap();
    let reps10 = reps(10);
    let cands10 = candidates(&reps10);
    let started = Instant::now();
    let err = spinner.rank(&lead, &cands10).unwrap_err();
    println!(
        "\na runaway loop stops after {:?} with the default {} fuel: {err}",
        started.elapsed(),
        PluginLimits::default().fuel
    );
    let inst = record(|| {
        black_box(wasm.instantiate_only().unwrap());
    });
    let inst_res = record(|| {
        black_box(resident.instantiate_only().unwrap());
    });
    println!(
        "\ninstantiate + trivial call: p50 {} µs, p99 {} µs (keep_resident 0: p50 {} µs, p99 {} µs)",
        us(inst.value_at_quantile(0.5)),
        us(inst.value_at_quantile(0.99)),
        us(inst_res.value_at_quantile(0.5)),
        us(inst_res.value_at_quantile(0.99)),
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = bench
}

fn main() {
    benches();
    table();
    Criterion::default().configure_from_args().final_summary();
}
