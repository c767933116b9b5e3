//! Shadow runs: a plugin version named as a territory's `shadow` runs beside its
//! strategy on live traffic. Agreement is counted, disagreements land in the lead's
//! history with the routing, and a failing shadow changes nothing.

use leadroute_engine::domain::{HistoryEvent, LeadId, LeadInput, RepInput};
use leadroute_engine::{Engine, EngineError, RouteStatus};
use leadroute_plugin_builds::{RULES, VIP_TIER};
use leadroute_tests::*;

/// Reps `a` (junior, skilled in `hospital-lab`), `b` (senior) and `c` (principal) in
/// territory `east` (CN-SH, default), capacity 10 each.
async fn three_reps(engine: &Engine) {
    for (id, tier, skills) in [
        ("a", "junior", vec!["hospital-lab".to_string()]),
        ("b", "senior", vec![]),
        ("c", "principal", vec![]),
    ] {
        let input = RepInput {
            tier: Some(tier.into()),
            skills,
            ..rep("east", 10)
        };
        engine.upsert_rep(rid(id), input).await.unwrap();
    }
}

/// Territory `east` deciding with built-in `rules`, shadowed by `shadow`.
async fn east(engine: &Engine, config: serde_json::Value, shadow: serde_json::Value) {
    engine
        .upsert_territory(
            tid("east"),
            territory(
                serde_json::json!({"name": "East", "regions": ["CN-SH"], "default": true,
                "strategy": {"builtin": "rules"}, "plugin_config": config, "shadow": shadow}),
            ),
        )
        .await
        .unwrap();
}

/// Lead `n` with a purchase amount and optionally an industry.
fn sized(n: u32, amount: f64, industry: Option<&str>) -> LeadInput {
    LeadInput {
        purchase_amount: Some(amount),
        industry: industry.map(str::to_string),
        ..lead(n, "CN-SH")
    }
}

/// The value of `leadroute_plugin_shadow_total{plugin,agree}`, 0 when never counted.
fn shadow_count(engine: &Engine, plugin: &str, agree: bool) -> u64 {
    metric(
        engine,
        &format!(r#"leadroute_plugin_shadow_total{{agree="{agree}",plugin="{plugin}"}}"#),
    )
}

fn metric(engine: &Engine, series: &str) -> u64 {
    engine
        .metrics()
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

/// The lead's `shadow_disagreed` entries as (plugin, version, chosen, pick).
fn disagreements(engine: &Engine, id: LeadId) -> Vec<(String, u32, String, Option<String>)> {
    engine
        .lead(id)
        .unwrap()
        .unwrap()
        .history
        .into_iter()
        .filter_map(|h| match h.event {
            HistoryEvent::ShadowDisagreed {
                plugin,
                version,
                chosen,
                shadow_pick,
                ..
            } => Some((
                plugin,
                version,
                chosen.to_string(),
                shadow_pick.map(String::from),
            )),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_shadow_deciding_like_the_strategy_counts_agreement_only() {
    let f = fixture();
    f.engine.put_plugin("rules", RULES.to_vec()).await.unwrap();
    east(
        &f.engine,
        serde_json::json!({}),
        serde_json::json!({"plugin": "rules", "version": 1}),
    )
    .await;
    three_reps(&f.engine).await;
    // Skill, seniority and load each decide some of these.
    let leads = [
        sized(1, 0.0, Some("hospital-lab")),
        sized(2, 500_000.0, None),
        sized(3, 10.0, None),
        sized(4, 500_000.0, Some("hospital-lab")),
        sized(5, 0.0, None),
        sized(6, 0.0, None),
    ];
    let mut ids = Vec::new();
    for input in &leads {
        let out = f.engine.route(input.clone()).await.unwrap();
        assert_eq!(out.status, RouteStatus::Assigned);
        assert_eq!(out.decided_by.as_deref(), Some("builtin:rules"));
        ids.push(out.lead_id);
    }
    assert_eq!(shadow_count(&f.engine, "rules", true), leads.len() as u64);
    assert_eq!(shadow_count(&f.engine, "rules", false), 0);
    for id in ids {
        assert!(disagreements(&f.engine, id).is_empty());
    }
    let info = f.engine.plugin("rules").unwrap();
    assert_eq!(info.calls, 0, "shadow runs are not the plugin's live calls");
    assert_healthy(&f.engine).await;
}

#[tokio::test]
async fn a_disagreeing_shadow_writes_history_and_counts_disagreement() {
    let f = fixture();
    f.engine
        .put_plugin("vip-tier", VIP_TIER.to_vec())
        .await
        .unwrap();
    // Built-in rules sends purchases >= 100000 to a senior; the shadow wants a
    // principal for them. Below 100000 vip-tier has no preference, so the fallback
    // (least_loaded) decides for it, as `rules` does for such leads: they agree.
    east(
        &f.engine,
        serde_json::json!({"bands": [{"min_amount": 100000, "tier": "principal"}]}),
        serde_json::json!({"plugin": "vip-tier", "version": 1}),
    )
    .await;
    three_reps(&f.engine).await;
    let mut big = Vec::new();
    for n in 0..3 {
        let out = f.engine.route(sized(n, 200_000.0, None)).await.unwrap();
        assert_eq!(out.rep_id, Some(rid("b")), "rules picks the senior");
        big.push(out.lead_id);
    }
    let mut small = Vec::new();
    for n in 10..14 {
        let out = f.engine.route(sized(n, 50.0, None)).await.unwrap();
        small.push(out.lead_id);
    }
    assert_eq!(shadow_count(&f.engine, "vip-tier", false), 3);
    assert_eq!(shadow_count(&f.engine, "vip-tier", true), 4);
    for id in big {
        assert_eq!(
            disagreements(&f.engine, id),
            [(
                "vip-tier".to_string(),
                1,
                "b".to_string(),
                Some("c".to_string())
            )]
        );
        let history = f.engine.lead(id).unwrap().unwrap().history;
        // Written with the routing, after it.
        assert!(matches!(history[0].event, HistoryEvent::Routed { .. }));
        let HistoryEvent::ShadowDisagreed { reason, .. } = &history[1].event else {
            panic!("expected shadow_disagreed second: {history:?}");
        };
        assert!(reason.contains("wants principal"), "{reason}");
    }
    for id in small {
        assert!(disagreements(&f.engine, id).is_empty());
    }
    assert_healthy(&f.engine).await;
}

#[tokio::test]
async fn a_queued_lead_assigned_later_is_shadowed_too() {
    let f = fixture();
    f.engine
        .put_plugin("vip-tier", VIP_TIER.to_vec())
        .await
        .unwrap();
    east(
        &f.engine,
        serde_json::json!({"bands": [{"min_amount": 100000, "tier": "principal"}]}),
        serde_json::json!({"plugin": "vip-tier", "version": 1}),
    )
    .await;
    let senior = RepInput {
        tier: Some("senior".into()),
        ..rep("east", 1)
    };
    f.engine.upsert_rep(rid("b"), senior).await.unwrap();
    let first = f.engine.route(sized(1, 200_000.0, None)).await.unwrap();
    assert_eq!(first.rep_id, Some(rid("b")));
    // Only b was a candidate, so the shadow could pick nobody else: they agree.
    assert_eq!(shadow_count(&f.engine, "vip-tier", true), 1);
    let second = f.engine.route(sized(2, 200_000.0, None)).await.unwrap();
    assert_eq!(second.status, RouteStatus::Queued);
    assert_eq!(
        shadow_count(&f.engine, "vip-tier", true),
        1,
        "queued: nothing chosen"
    );
    // A principal joins: the queue drains to it, and the shadow is asked again.
    let principal = RepInput {
        tier: Some("principal".into()),
        ..rep("east", 5)
    };
    f.engine.upsert_rep(rid("c"), principal).await.unwrap();
    f.engine.settle().await.unwrap();
    let state = f.engine.lead(second.lead_id).unwrap().unwrap().state;
    assert_eq!(state.rep, Some(rid("c")));
    assert_eq!(shadow_count(&f.engine, "vip-tier", true), 2);
    assert_eq!(shadow_count(&f.engine, "vip-tier", false), 0);
    assert_healthy(&f.engine).await;
}

/// A module that answers "no preference" to short inputs (the upload's smoke run) and
/// traps on longer ones.
fn trapping_module() -> Vec<u8> {
    let answer: Vec<u8> = [2u32, 0, 5]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .chain(*b"small")
        .collect();
    let escaped: String = answer.iter().map(|b| format!("\\{b:02x}")).collect();
    let len = answer.len();
    wat::parse_str(format!(
        r#"(module
  (memory (export "memory") 1)
  (global $bump (mut i32) (i32.const 1024))
  (data (i32.const 16) "{escaped}")
  (func (export "leadroute_abi_version") (result i32) (i32.const 1))
  (func (export "leadroute_alloc") (param $len i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $bump))
    (global.set $bump (i32.add (global.get $bump) (local.get $len)))
    (drop (memory.grow (i32.add (i32.div_u (local.get $len) (i32.const 65536)) (i32.const 1))))
    (local.get $p))
  (func (export "leadroute_route") (param $ptr i32) (param $len i32) (result i64)
    (if (result i64) (i32.lt_u (local.get $len) (i32.const 4000))
      (then (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const {len})))
      (else unreachable))))"#
    ))
    .unwrap()
}

#[tokio::test]
async fn a_failing_shadow_changes_nothing() {
    let f = fixture();
    f.engine
        .put_plugin("hostile", trapping_module())
        .await
        .unwrap();
    east(
        &f.engine,
        serde_json::json!({}),
        serde_json::json!({"plugin": "hostile", "version": 1}),
    )
    .await;
    three_reps(&f.engine).await;
    // More failures than the circuit threshold: a live plugin would be bypassed.
    for n in 0..8 {
        let input = LeadInput {
            attributes: Some(serde_json::json!({"pad": "x".repeat(4000)})),
            ..sized(n, 200_000.0 * f64::from(n % 2), None)
        };
        let expected = f.engine.simulate(&input, None).await.unwrap().decision;
        let out = f.engine.route(input).await.unwrap();
        assert_eq!(out.status, RouteStatus::Assigned);
        assert_eq!(out.decided_by.as_deref(), Some("builtin:rules"));
        assert_eq!(out.fallback, None);
        assert_eq!(out.rep_id.as_ref(), expected.ranking.first());
        assert!(disagreements(&f.engine, out.lead_id).is_empty());
        let history = f.engine.lead(out.lead_id).unwrap().unwrap().history;
        assert_eq!(history.len(), 1, "no shadow noise: {history:?}");
    }
    assert_eq!(
        metric(
            &f.engine,
            r#"leadroute_plugin_shadow_failures_total{plugin="hostile",reason="trap"}"#
        ),
        8
    );
    assert_eq!(shadow_count(&f.engine, "hostile", true), 0);
    assert_eq!(shadow_count(&f.engine, "hostile", false), 0);
    let info = f.engine.plugin("hostile").unwrap();
    assert_eq!(info.calls, 0);
    assert!(info.failures.is_empty(), "{:?}", info.failures);
    assert_eq!(info.circuit, leadroute_engine::CircuitState::Closed);
    assert_healthy(&f.engine).await;
}

#[tokio::test]
async fn the_shadow_version_must_exist_and_its_plugin_cannot_be_deleted() {
    let f = fixture();
    f.engine
        .put_plugin("vip-tier", VIP_TIER.to_vec())
        .await
        .unwrap();
    let body = |shadow: serde_json::Value| {
        territory(
            serde_json::json!({"name": "East", "regions": ["CN-SH"], "default": true,
            "plugin_config": {"bands": [{"min_amount": 1, "tier": "senior"}]},
            "shadow": shadow}),
        )
    };
    let err = f
        .engine
        .upsert_territory(
            tid("east"),
            body(serde_json::json!({"plugin": "vip-tier", "version": 4})),
        )
        .await
        .unwrap_err();
    let EngineError::Invalid(v) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(v.field, "shadow.version");
    assert_eq!(v.message, "plugin vip-tier has no version 4 (it has 1)");
    let err = f
        .engine
        .upsert_territory(
            tid("east"),
            body(serde_json::json!({"plugin": "nope", "version": 1})),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), "unknown_plugin");
    // A config the shadow refuses would make every run fail: refused up front.
    let err = f
        .engine
        .upsert_territory(
            tid("east"),
            territory(serde_json::json!({"name": "East", "regions": ["CN-SH"],
                "plugin_config": {"bands": []},
                "shadow": {"plugin": "vip-tier", "version": 1}})),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("rejected by shadow plugin plugin:vip-tier@1"),
        "{err}"
    );
    assert!(f.engine.territories().await.unwrap().is_empty());

    f.engine
        .upsert_territory(
            tid("east"),
            body(serde_json::json!({"plugin": "vip-tier", "version": 1})),
        )
        .await
        .unwrap();
    let err = f.engine.delete_plugin("vip-tier").await.unwrap_err();
    assert!(
        matches!(&err, EngineError::PluginInUse { territories, .. } if territories == &[tid("east")]),
        "{err:?}"
    );
    // A routed lead gives the shadow's series values.
    three_reps(&f.engine).await;
    f.engine.route(lead(1, "CN-SH")).await.unwrap();
    let series = |engine: &Engine| {
        let text = engine.metrics().render();
        text.lines()
            .filter(|l| l.contains(r#"plugin="vip-tier""#))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let before = series(&f.engine);
    assert!(
        before
            .iter()
            .any(|l| l.starts_with("leadroute_plugin_shadow_total{")),
        "{before:#?}"
    );
    // Without the shadow it can go, and its series with it, as after a restart.
    f.engine
        .upsert_territory(tid("east"), body(serde_json::Value::Null))
        .await
        .unwrap();
    f.engine.delete_plugin("vip-tier").await.unwrap();
    assert_eq!(series(&f.engine), Vec::<String>::new());
}

#[tokio::test]
async fn the_shadow_survives_a_restart() {
    let f = fixture();
    f.engine
        .put_plugin("vip-tier", VIP_TIER.to_vec())
        .await
        .unwrap();
    east(
        &f.engine,
        serde_json::json!({"bands": [{"min_amount": 100000, "tier": "principal"}]}),
        serde_json::json!({"plugin": "vip-tier", "version": 1}),
    )
    .await;
    three_reps(&f.engine).await;
    f.engine.shutdown().await.unwrap();
    drop(f.engine);

    let engine = open(f.dir.path(), &f.clock);
    let t = engine.territory(&tid("east")).await.unwrap();
    let shadow = t.territory.shadow.clone().expect("shadow kept");
    assert_eq!((shadow.plugin.as_str(), shadow.version), ("vip-tier", 1));
    let out = engine.route(sized(1, 200_000.0, None)).await.unwrap();
    assert_eq!(out.rep_id, Some(rid("b")));
    assert_eq!(shadow_count(&engine, "vip-tier", false), 1);
    assert_eq!(disagreements(&engine, out.lead_id).len(), 1);
    assert!(engine.delete_plugin("vip-tier").await.is_err());
    assert_healthy(&engine).await;
}
