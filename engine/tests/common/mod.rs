//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

use leadroute_engine::domain::{LeadInput, RepId, RepInput, TerritoryId, TerritoryInput};
use leadroute_engine::{Engine, EngineConfig, ManualClock};

/// An engine on a fresh temp dir with a manual clock.
pub struct Fixture {
    pub engine: Engine,
    pub clock: ManualClock,
    pub dir: tempfile::TempDir,
}

pub fn open(dir: &std::path::Path, clock: &ManualClock) -> Engine {
    Engine::open(EngineConfig::new(dir).clock(clock.clone())).expect("engine opens")
}

pub fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let engine = open(dir.path(), &clock);
    Fixture { engine, clock, dir }
}

pub fn tid(s: &str) -> TerritoryId {
    TerritoryId::new(s).unwrap()
}

pub fn rid(s: &str) -> RepId {
    RepId::new(s).unwrap()
}

pub fn territory(json: serde_json::Value) -> TerritoryInput {
    serde_json::from_value(json).unwrap()
}

pub fn rep(territory: &str, capacity: u32) -> RepInput {
    RepInput {
        name: "Rep".into(),
        territories: vec![territory.into()],
        capacity,
        ..Default::default()
    }
}

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
