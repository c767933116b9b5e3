//! Plugin lifecycle: versions, activation and rollback, deletion, restart, and hot
//! swap while leads route.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use leadroute_engine::{EngineError, RouteStatus};
use leadroute_plugin_builds::{LEAD_SCORE, RULES};
use leadroute_tests::*;

#[tokio::test]
async fn versions_activate_roll_back_and_pin() {
    let f = fixture();
    let v1 = f.engine.put_plugin("rules", RULES.to_vec()).await.unwrap();
    let v2 = f.engine.put_plugin("rules", RULES.to_vec()).await.unwrap();
    assert_eq!((v1.version, v2.version), (1, 2), "a new version per upload");
    assert_eq!(v1.sha256, v2.sha256);
    east_with_plugin(&f.engine, "rules", serde_json::json!({}), 10).await;
    let out = f.engine.route(lead(1, "CN-SH")).await.unwrap();
    assert_eq!(out.decided_by.as_deref(), Some("plugin:rules@2"));
    let info = f.engine.activate_plugin("rules", 1).await.unwrap();
    assert_eq!(info.active_version, 1);
    assert_eq!(
        info.versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        [1, 2]
    );
    let out = f.engine.route(lead(2, "CN-SH")).await.unwrap();
    assert_eq!(
        out.decided_by.as_deref(),
        Some("plugin:rules@1"),
        "follows the active version"
    );
    // A pinned territory ignores activation.
    f.engine
        .upsert_territory(
            tid("east"),
            territory(
                serde_json::json!({"name": "East", "regions": ["CN-SH"], "default": true,
                "strategy": {"plugin": "rules", "version": 2}}),
            ),
        )
        .await
        .unwrap();
    f.engine.activate_plugin("rules", 1).await.unwrap();
    let out = f.engine.route(lead(3, "CN-SH")).await.unwrap();
    assert_eq!(out.decided_by.as_deref(), Some("plugin:rules@2"));
    // Simulate a specific version.
    let sim = f
        .engine
        .simulate_with(&lead(4, "CN-SH"), None, Some(("rules", Some(1))))
        .await
        .unwrap();
    assert_eq!(sim.decision.decided_by, "plugin:rules@1");
    let err = f
        .engine
        .simulate_with(&lead(4, "CN-SH"), None, Some(("rules", Some(7))))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "plugin_not_found");
    let err = f.engine.activate_plugin("rules", 9).await.unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::PluginNotFound {
                version: Some(9),
                ..
            }
        ),
        "{err:?}"
    );
    let err = f.engine.activate_plugin("nope", 1).await.unwrap_err();
    assert_eq!(err.code(), "plugin_not_found");
    let err = f
        .engine
        .put_plugin("Rules", RULES.to_vec())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "invalid_field", "names are lower-case tags");
    assert_healthy(&f.engine).await;
}

/// A version that refuses the config of a territory following the active version is
/// neither uploaded nor activated: every lead there would fall back, and the failures
/// would open the circuit for every territory. Pinning the territory lets it through.
#[tokio::test]
async fn a_version_refusing_a_followers_config_does_not_become_active() {
    let f = fixture();
    // East, with a config for `rules`, and `strategy` naming plugin `p`.
    let east = |strategy: serde_json::Value| {
        let body = serde_json::json!({"name": "East", "regions": ["CN-SH"], "default": true,
            "strategy": strategy, "plugin_config": {"vip_threshold": 50000}});
        f.engine.upsert_territory(tid("east"), territory(body))
    };
    let following = || serde_json::json!({"plugin": "p"});
    f.engine.put_plugin("p", RULES.to_vec()).await.unwrap();
    east(following()).await.unwrap();
    // lead-score needs `weights` and knows no `vip_threshold`.
    let err = f
        .engine
        .put_plugin("p", LEAD_SCORE.to_vec())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "plugin_invalid", "{err:?}");
    assert!(err.to_string().contains("territory east"), "{err}");
    assert!(err.to_string().contains("plugin:p@2"), "{err}");
    let info = f.engine.plugin("p").unwrap();
    assert_eq!((info.active_version, info.versions.len()), (1, 1));

    // Pinned, east no longer follows: the upload goes through, and east stays on 1.
    east(serde_json::json!({"plugin": "p", "version": 1}))
        .await
        .unwrap();
    assert_eq!(
        f.engine
            .put_plugin("p", LEAD_SCORE.to_vec())
            .await
            .unwrap()
            .version,
        2
    );
    f.engine.activate_plugin("p", 1).await.unwrap();
    east(following()).await.unwrap();
    // Following again: activating 2 is refused, and 1 stays active.
    let err = f.engine.activate_plugin("p", 2).await.unwrap_err();
    assert_eq!(err.code(), "plugin_invalid", "{err:?}");
    assert_eq!(f.engine.plugin("p").unwrap().active_version, 1);
    east_reps(&f.engine).await;
    let out = f.engine.route(lead(1, "CN-SH")).await.unwrap();
    assert_eq!(out.decided_by.as_deref(), Some("plugin:p@1"));
    assert_eq!(out.fallback, None);
    assert_healthy(&f.engine).await;
}

async fn east_reps(engine: &leadroute_engine::Engine) {
    for id in ["a", "b"] {
        engine.upsert_rep(rid(id), rep("east", 10)).await.unwrap();
    }
}

#[tokio::test]
async fn delete_is_refused_while_a_territory_uses_the_plugin() {
    let f = fixture();
    f.engine.put_plugin("rules", RULES.to_vec()).await.unwrap();
    east_with_plugin(&f.engine, "rules", serde_json::json!({}), 10).await;
    let err = f.engine.delete_plugin("rules").await.unwrap_err();
    assert_eq!(err.code(), "plugin_in_use");
    assert!(err.to_string().contains("territory east"), "{err}");
    f.engine
        .upsert_territory(
            tid("east"),
            territory(serde_json::json!({"name": "East", "regions": ["CN-SH"], "default": true})),
        )
        .await
        .unwrap();
    f.engine.delete_plugin("rules").await.unwrap();
    assert!(f.engine.plugins().unwrap().is_empty());
    assert_eq!(
        f.engine.delete_plugin("rules").await.unwrap_err().code(),
        "plugin_not_found"
    );
    // Gone from the store too: a restart does not bring it back.
    let Fixture { engine, clock, dir } = f;
    engine.shutdown().await.unwrap();
    drop(engine);
    let engine = open(dir.path(), &clock);
    assert!(engine.plugins().unwrap().is_empty());
}

#[tokio::test]
async fn plugins_survive_a_restart() {
    let f = fixture();
    f.engine.put_plugin("rules", RULES.to_vec()).await.unwrap();
    f.engine.put_plugin("rules", RULES.to_vec()).await.unwrap();
    f.engine
        .put_plugin("lead-score", LEAD_SCORE.to_vec())
        .await
        .unwrap();
    f.engine.activate_plugin("rules", 1).await.unwrap();
    east_with_plugin(
        &f.engine,
        "rules",
        serde_json::json!({"vip_threshold": 10}),
        10,
    )
    .await;
    let before = f.engine.plugins().unwrap();
    let Fixture { engine, clock, dir } = f;
    engine.shutdown().await.unwrap();
    drop(engine);

    // A start-up too slow for any compile limit, as on a machine busy starting up:
    // stored versions were accepted once, and none is dropped for compiling slowly.
    let slow = leadroute_engine::EngineConfig::new(dir.path())
        .clock(clock.clone())
        .plugin_limits(leadroute_engine::PluginLimits {
            compile_timeout: std::time::Duration::ZERO,
            ..Default::default()
        });
    let engine = leadroute_engine::Engine::open(slow).unwrap();
    let after = engine.plugins().unwrap();
    let shape = |infos: &[leadroute_engine::PluginInfo]| -> Vec<_> {
        infos
            .iter()
            .map(|p| (p.name.clone(), p.active_version, p.versions.clone()))
            .collect()
    };
    assert_eq!(shape(&after), shape(&before));
    let out = engine.route(lead(1, "CN-SH")).await.unwrap();
    assert_eq!(out.status, RouteStatus::Assigned);
    assert_eq!(out.decided_by.as_deref(), Some("plugin:rules@1"));
    assert_eq!(out.fallback, None);
    // The limit still holds for uploads.
    let err = engine
        .put_plugin("rules", RULES.to_vec())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("compilation took longer"), "{err}");
    engine.shutdown().await.unwrap();
    drop(engine);

    let engine = open(dir.path(), &clock);
    assert_eq!(shape(&engine.plugins().unwrap()), shape(&before));
    // Version numbers continue where they were.
    assert_eq!(
        engine
            .put_plugin("rules", RULES.to_vec())
            .await
            .unwrap()
            .version,
        3
    );
    assert_healthy(&engine).await;
}

/// ≥ 10k leads route through a plugin-bound territory while versions are uploaded
/// and activated: every lead is assigned exactly once and the store stays consistent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_swap_under_load_loses_and_doubles_nothing() {
    const LEADS: u32 = 10_000;
    const SWAPS: u32 = 10;
    // This test is about swaps, not time: on a loaded machine the actor thread can be
    // descheduled past the 100 ms wall-clock backstop in the middle of a call, which
    // would count as a (correctly handled) timeout. Fuel still bounds every call.
    let f = fixture_with(|config| {
        config.plugin_limits(leadroute_engine::PluginLimits {
            deadline: std::time::Duration::from_secs(10),
            ..Default::default()
        })
    });
    f.engine.put_plugin("rules", RULES.to_vec()).await.unwrap();
    // Room for every lead whatever the run's length: none may queue.
    east_with_plugin(&f.engine, "rules", serde_json::json!({}), 100_000).await;

    // The router keeps going until it has routed LEADS *and* every swap is done, so
    // all swaps happen while leads route, whatever the relative speeds.
    let swaps_done = Arc::new(AtomicBool::new(false));
    let router = {
        let engine = f.engine.clone();
        let swaps_done = swaps_done.clone();
        tokio::spawn(async move {
            let mut outcomes = Vec::with_capacity(LEADS as usize);
            let mut n = 0;
            while n < LEADS || !swaps_done.load(Ordering::SeqCst) {
                let inputs: Vec<_> = (n..n + 100).map(|n| lead(n, "CN-SH")).collect();
                n += 100;
                for result in engine.route_batch(&inputs).await {
                    outcomes.push(result.expect("every lead is accepted"));
                }
            }
            outcomes
        })
    };
    let swapper = {
        let engine = f.engine.clone();
        let swaps_done = swaps_done.clone();
        tokio::spawn(async move {
            for i in 0..SWAPS {
                let v = engine.put_plugin("rules", RULES.to_vec()).await.unwrap();
                // Roll back and forth: the previous version, then the new one again.
                engine
                    .activate_plugin("rules", v.version - 1)
                    .await
                    .unwrap();
                engine.activate_plugin("rules", v.version).await.unwrap();
                assert_eq!(v.version, i + 2);
            }
            swaps_done.store(true, Ordering::SeqCst);
        })
    };
    swapper.await.unwrap();
    let outcomes = router.await.unwrap();

    let routed = outcomes.len() as u32;
    assert!(routed >= LEADS);
    let ids: BTreeSet<_> = outcomes.iter().map(|o| o.lead_id).collect();
    assert_eq!(ids.len(), outcomes.len(), "one lead per input");
    let versions: BTreeSet<_> = outcomes.iter().map(|o| o.decided_by.clone()).collect();
    assert!(versions.len() > 1, "decisions span versions: {versions:?}");
    let mut per_rep: BTreeMap<String, u32> = BTreeMap::new();
    for o in &outcomes {
        assert_eq!(o.status, RouteStatus::Assigned, "{o:?}");
        assert_eq!(o.fallback, None, "no call failed during swaps: {o:?}");
        *per_rep
            .entry(o.rep_id.clone().unwrap().to_string())
            .or_default() += 1;
    }
    assert_healthy(&f.engine).await;
    // Exactly once: the reps' loads add up to the leads, and each lead has one owner.
    let loads: u32 = f.engine.reps().await.unwrap().iter().map(|r| r.load).sum();
    assert_eq!(loads, routed);
    assert_eq!(per_rep.values().sum::<u32>(), routed);
    for o in outcomes.iter().step_by(997) {
        let view = f.engine.lead(o.lead_id).unwrap().unwrap();
        assert_eq!(view.state.rep, o.rep_id);
    }
    let info = f.engine.plugin("rules").unwrap();
    assert_eq!(info.calls, u64::from(routed));
    assert!(info.failures.is_empty(), "{info:?}");
    assert_eq!(info.versions.len(), SWAPS as usize + 1);
}
