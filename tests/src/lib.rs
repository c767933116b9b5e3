//! Helpers for leadroute's system tests: engines on temp dirs with a manual clock,
//! small organisations, lead generators, and invariant assertions.
//!
//! The tests themselves live in `tests/`: `routing.rs` (behaviour through the real
//! actors and store), `restart.rs` (durability across restarts and repair),
//! `concurrency.rs` (property test of random concurrent interleavings), the plugin
//! suites `plugins_*.rs` (example plugins through the real host, hostile modules, hot
//! swap under load, restart), and `fuzz_corpus.rs`, which replays the saved inputs of
//! the fuzz targets in `fuzz/` through the checks in [`fuzz`].

pub mod fuzz;

use leadroute_engine::domain::{LeadInput, RepId, RepInput, TerritoryId, TerritoryInput};
use leadroute_engine::{Engine, EngineConfig, ManualClock};

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
