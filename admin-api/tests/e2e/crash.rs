//! Crash harness: the real binary under mixed load, killed with SIGKILL at random
//! moments, restarted on the same data dir, and checked after every kill.
//!
//! Clients post single leads (a share repeating earlier contacts, a share for a
//! territory with a handful of places so leads queue), batches, lifecycle events on
//! leads they were given, and admin changes (rep capacity and status, the active
//! version of the plugin one territory routes with). Every 2xx answer is recorded.
//! After each kill the store is read as the kill left it and must hold every
//! acknowledged outcome and event, no lead with two open assignments, each rep's
//! open assignments exactly as acknowledged, and queues holding exactly the queued
//! leads, first come first served. The restarted server must repair nothing and its
//! HTTP view must agree. At the end the engine library's own audit runs.
//!
//! - `LEADROUTE_CRASH_KILLS` (default 10): how many kills.
//! - `LEADROUTE_CRASH_SEED`: repeat a run (the seed is printed at the start).

mod load;
mod model;
mod verify;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{ADMIN, Api, Server, data_dir, raw};
use load::Shared;
use model::{RepConf, Setting};

/// A small seeded generator (SplitMix64): the run is chosen by its seed.
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

fn env_u64(key: &str) -> Option<u64> {
    std::env::var(key).ok().and_then(|v| v.parse().ok())
}

/// Load runs this long (uniformly drawn, in ms) before each kill.
const LOAD_MS: std::ops::Range<u64> = 150..900;

/// The organisation: territories, reps and the plugin, over HTTP.
fn organise(server: &Server, shared: &Shared) {
    let api = Api {
        server,
        token: None,
    };
    for version in 1..=2 {
        let r = raw(
            "PUT",
            &server.url("/admin/plugins/vip-tier"),
            Some(ADMIN),
            Some("application/wasm"),
            Some(leadroute_plugin_builds::VIP_TIER),
        );
        assert_eq!(
            (r.status, r.json()["version"].clone()),
            (201, json!(version))
        );
    }
    let territories = [
        json!({"name": "East", "regions": ["CN-SH"], "default": true}),
        json!({"name": "VIP", "regions": ["CN-JS"],
            "strategy": {"plugin": "vip-tier", "version": null},
            "plugin_config": {"bands": [{"min_amount": 100000, "tier": "senior"}]}}),
        json!({"name": "Small", "regions": ["CN-AH"], "strategy": {"builtin": "round_robin"}}),
    ];
    for ((id, _, _), body) in model::TERRITORIES.iter().zip(territories) {
        let r = api.put(&format!("/admin/territories/{id}"), body);
        assert_eq!(r.status, 201, "{r:?}");
    }
    let mut model = shared.model();
    let reps = [
        ("east-1", "east", "junior", 100_000),
        ("east-2", "east", "junior", 100_000),
        ("east-3", "east", "senior", 100_000),
        ("vip-junior", "vip", "junior", 100_000),
        ("vip-senior", "vip", "senior", 100_000),
        ("small-1", "small", "junior", 2),
        ("small-2", "small", "junior", 2),
    ];
    for (id, territory, tier, capacity) in reps {
        let conf = RepConf {
            territory,
            tier,
            capacity,
            status: "available",
        };
        let r = api.put(&format!("/admin/reps/{id}"), conf.body(id));
        assert_eq!(r.status, 201, "{r:?}");
        model.reps.insert(id.to_string(), Setting::new(conf));
    }
    model.plugin = Setting::new(2);
}

#[test]
fn acknowledged_work_survives_sigkill_under_load() {
    let seed = env_u64("LEADROUTE_CRASH_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let kills = env_u64("LEADROUTE_CRASH_KILLS").unwrap_or(10);
    eprintln!("crash harness: seed {seed} (LEADROUTE_CRASH_SEED={seed} repeats it), {kills} kills");
    let started = Instant::now();
    let dir = data_dir();
    let shared = Arc::new(Shared::default());
    let mut server = Server::start(dir.path());
    organise(&server, &shared);

    let mut rng = Rng::new(seed);
    let mut loaded = Duration::ZERO;
    let mut restarts = Duration::ZERO;
    for kill in 1..=kills {
        let after = Duration::from_millis(LOAD_MS.start + rng.below(LOAD_MS.end - LOAD_MS.start));
        loaded += load::drive(&shared, server, rng.next_u64(), after);
        let failures = std::mem::take(&mut shared.model().failures);
        assert!(
            failures.is_empty(),
            "seed {seed}, kill {kill}: requests failed before the kill:\n{failures:#?}"
        );

        let checking = Instant::now();
        let disk = {
            let mut model = shared.model();
            verify::on_disk(dir.path(), &mut model, false).unwrap_or_else(|p| {
                panic!("seed {seed}, kill {kill} after {after:?}: the store breaks its promises:\n{p:#?}")
            })
        };
        let restart = Instant::now();
        server = Server::start(dir.path());
        restarts += restart.elapsed();
        let sample: Vec<String> = disk
            .checked
            .iter()
            .step_by(disk.checked.len() / 100 + 1)
            .cloned()
            .collect();
        let problems = verify::after_restart(&server, &mut shared.model(), &disk, &sample);
        assert!(
            problems.is_empty(),
            "seed {seed}, kill {kill}: after restart:\n{problems:#?}"
        );
        let log = server.stderr();
        let recovery = log
            .lines()
            .find_map(|l| l.split_once("engine recovered").map(|(_, r)| r.trim()))
            .unwrap_or_default();
        eprintln!(
            "kill {kill} after {after:?}: {} leads known, {} checked; checks and restart took {:.0} ms ({recovery})",
            shared.model().leads.len(),
            disk.checked.len(),
            checking.elapsed().as_secs_f64() * 1e3
        );
    }

    let status = server.terminate();
    assert!(
        status.success(),
        "a clean stop after the last restart: {status:?}"
    );
    {
        let mut model = shared.model();
        if let Err(p) = verify::on_disk(dir.path(), &mut model, true) {
            panic!("seed {seed}, after the clean stop:\n{p:#?}");
        }
    }
    let problems = verify::library(dir.path());
    assert!(
        problems.is_empty(),
        "seed {seed}: the engine's own audit:\n{problems:#?}"
    );

    let model = shared.model();
    let c = &model.counts;
    eprintln!(
        "crash harness: {kills} kills in {:.1} s; under load {:.1} s: {} leads ({:.0}/s), {} duplicates, \
         {} events, {} admin changes acknowledged, {} requests cut off; {} leads known, \
         restarts took {:.0} ms on average",
        started.elapsed().as_secs_f64(),
        loaded.as_secs_f64(),
        c.leads,
        c.leads as f64 / loaded.as_secs_f64(),
        c.duplicates,
        c.events,
        c.admin,
        c.cut_off,
        model.leads.len(),
        restarts.as_secs_f64() * 1000.0 / kills.max(1) as f64,
    );
    assert!(
        c.leads > 0 && c.events > 0 && c.admin > 0,
        "the load ran: {c:?}"
    );
}
