//! The example plugins, built from source for wasm32, running in the real host.

use leadroute_engine::domain::{HistoryEvent, LeadInput, RepInput};
use leadroute_engine::{EngineError, RouteStatus};
use leadroute_plugin_builds::{INDUSTRY_AFFINITY, LEAD_SCORE, RULES, VIP_TIER};
use leadroute_tests::*;

/// Reps with skills, tiers and open leads, in territory `east`: lab-junior carries 3
/// leads, pharma-senior 1, clinic-junior 0 and principal 2, each of capacity 50. The
/// loads are real leads: each rep starts with a capacity equal to its load, exactly
/// that many leads are routed (so every rep fills to its capacity whatever the
/// strategy), then every capacity is raised to 50.
async fn staff(f: &Fixture) {
    let reps = [
        ("lab-junior", &["hospital-lab"][..], "junior", 3),
        ("pharma-senior", &["pharma"][..], "senior", 1),
        ("clinic-junior", &["clinic"][..], "junior", 0),
        ("principal", &[][..], "principal", 2),
    ];
    let upsert = |id: &str, skills: &[&str], tier: &str, capacity: u32| {
        f.engine.upsert_rep(
            rid(id),
            RepInput {
                name: id.into(),
                territories: vec!["east".into()],
                skills: skills.iter().map(|s| s.to_string()).collect(),
                tier: Some(tier.into()),
                capacity,
                ..Default::default()
            },
        )
    };
    for (id, skills, tier, load) in reps {
        upsert(id, skills, tier, load).await.unwrap();
    }
    let total: u32 = reps.iter().map(|r| r.3).sum();
    for n in 0..total {
        let out = f.engine.route(lead(1000 + n, "CN-SH")).await.unwrap();
        assert_eq!(out.status, RouteStatus::Assigned, "{out:?}");
    }
    for (id, skills, tier, _) in reps {
        upsert(id, skills, tier, 50).await.unwrap();
    }
    f.engine.settle().await.unwrap();
    let mut loads: Vec<(String, u32)> = f
        .engine
        .reps()
        .await
        .unwrap()
        .iter()
        .map(|r| (r.rep.id.to_string(), r.load))
        .collect();
    loads.sort();
    let mut expected: Vec<(String, u32)> = reps.iter().map(|r| (r.0.to_string(), r.3)).collect();
    expected.sort();
    assert_eq!(loads, expected, "the staff carries its loads");
}

async fn east(f: &Fixture, strategy: serde_json::Value, config: serde_json::Value) {
    f.engine
        .upsert_territory(
            tid("east"),
            territory(
                serde_json::json!({"name": "East", "regions": ["CN-SH"], "default": true,
                "strategy": strategy, "plugin_config": config}),
            ),
        )
        .await
        .unwrap();
}

fn lead_with(
    n: u32,
    industry: Option<&str>,
    amount: f64,
    attributes: serde_json::Value,
) -> LeadInput {
    LeadInput {
        industry: industry.map(str::to_string),
        purchase_amount: Some(amount),
        attributes: Some(attributes),
        ..lead(n, "CN-SH")
    }
}

#[tokio::test]
async fn wasm_rules_decides_exactly_like_the_builtin() {
    let f = fixture();
    let v = f.engine.put_plugin("rules", RULES.to_vec()).await.unwrap();
    assert_eq!((v.name.as_str(), v.version), ("rules", 1));
    assert_eq!(v.size, RULES.len() as u64);
    assert_eq!(v.sha256.len(), 64);
    east(
        &f,
        serde_json::json!({"builtin": "rules"}),
        serde_json::json!({"vip_threshold": 5000}),
    )
    .await;
    staff(&f).await;
    let industries = [None, Some("hospital-lab"), Some("pharma"), Some("clinic")];
    for n in 0..40u32 {
        let input = lead_with(
            n,
            industries[n as usize % 4],
            f64::from(n % 7) * 1500.0,
            serde_json::json!({}),
        );
        let native = f.engine.simulate(&input, None).await.unwrap().decision;
        let wasm = f
            .engine
            .simulate_with(&input, None, Some(("rules", None)))
            .await
            .unwrap()
            .decision;
        assert_eq!(native.decided_by, "builtin:rules");
        assert_eq!(wasm.decided_by, "plugin:rules@1");
        assert_eq!(wasm.fallback, None, "{wasm:?}");
        assert_eq!(wasm.ranking, native.ranking, "lead {n}");
        assert_eq!(wasm.reason, native.reason, "lead {n}");
    }
    // Simulations do not count as calls.
    assert_eq!(f.engine.plugin("rules").unwrap().calls, 0);
    assert_healthy(&f.engine).await;
}

#[tokio::test]
async fn every_example_plugin_routes_real_leads() {
    let f = fixture();
    for (name, wasm) in [
        ("rules", RULES),
        ("vip-tier", VIP_TIER),
        ("industry-affinity", INDUSTRY_AFFINITY),
        ("lead-score", LEAD_SCORE),
    ] {
        f.engine.put_plugin(name, wasm.to_vec()).await.unwrap();
    }
    east(
        &f,
        serde_json::json!({"builtin": "least_loaded"}),
        serde_json::json!({}),
    )
    .await;
    staff(&f).await;
    let cases = [
        (
            "rules",
            serde_json::json!({}),
            lead_with(1, Some("hospital-lab"), 0.0, serde_json::json!({})),
            "lab-junior",
        ),
        (
            "vip-tier",
            serde_json::json!({"bands": [{"min_amount": 100000, "tier": "senior"}, {"min_amount": 1000000, "tier": "principal"}]}),
            lead_with(2, None, 2_000_000.0, serde_json::json!({})),
            "principal",
        ),
        (
            "industry-affinity",
            serde_json::json!({"affinity": {"hospital-lab": {"clinic": 0.95}}, "load_weight": 1.0}),
            // Load decides: lab-junior (its 3 leads and the `rules` case's one: 4/50)
            // scores 1 - 0.08 = 0.92; idle clinic-junior (0/50) scores 0.95. Without the
            // load term, the exact match (1.0) would win.
            lead_with(3, Some("hospital-lab"), 0.0, serde_json::json!({})),
            "clinic-junior",
        ),
        (
            "lead-score",
            serde_json::json!({"bias": -3.0, "weights": {"employees": 0.01}, "tier_levels": {"junior": 0, "senior": 1, "principal": 0.5}}),
            lead_with(4, None, 0.0, serde_json::json!({"employees": 2000})),
            "pharma-senior",
        ),
    ];
    for (name, config, input, expected) in cases {
        east(
            &f,
            serde_json::json!({"plugin": name, "version": null}),
            config,
        )
        .await;
        let out = f.engine.route(input).await.unwrap();
        assert_eq!(out.status, RouteStatus::Assigned, "{name}");
        assert_eq!(out.rep_id, Some(rid(expected)), "{name}: {out:?}");
        assert_eq!(
            out.decided_by.as_deref(),
            Some(format!("plugin:{name}@1").as_str())
        );
        assert_eq!(out.fallback, None, "{name}");
        assert!(out.reason.starts_with(name), "{name}: {}", out.reason);
        if name == "industry-affinity" {
            let load = |id: &str| {
                out.candidates
                    .iter()
                    .find(|c| c.rep == rid(id))
                    .map(|c| c.load)
            };
            assert_eq!(
                (load("lab-junior"), load("clinic-junior")),
                (Some(4), Some(0)),
                "{out:?}"
            );
            assert!(
                out.reason.ends_with("via clinic, score 0.95"),
                "{}",
                out.reason
            );
        }
        let view = f.engine.lead(out.lead_id).unwrap().unwrap();
        let HistoryEvent::Routed {
            decided_by,
            fallback,
            ..
        } = &view.history[0].event
        else {
            panic!("routed first: {:?}", view.history);
        };
        assert_eq!(decided_by, &format!("plugin:{name}@1"));
        assert_eq!(fallback, &None);
        let info = f.engine.plugin(name).unwrap();
        assert_eq!(info.calls, 1, "{name}");
        assert!(info.mean_fuel > 0, "{name}: fuel is reported");
    }
    let metrics = f.engine.metrics().render();
    assert!(
        metrics.contains(r#"leadroute_plugin_call_duration_seconds_count{plugin="vip-tier"} 1"#),
        "{metrics}"
    );
    assert_healthy(&f.engine).await;
}

#[tokio::test]
async fn a_config_the_plugin_refuses_is_rejected_with_its_message() {
    let f = fixture();
    f.engine
        .put_plugin("vip-tier", VIP_TIER.to_vec())
        .await
        .unwrap();
    let err = f
        .engine
        .upsert_territory(
            tid("east"),
            territory(serde_json::json!({"name": "East", "regions": ["CN-SH"],
                "strategy": {"plugin": "vip-tier"}, "plugin_config": {"bands": [{"min_amount": "lots", "tier": "senior"}]}})),
        )
        .await
        .unwrap_err();
    let EngineError::Invalid(v) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(v.field, "plugin_config");
    assert!(
        v.message.contains(
            "rejected by plugin plugin:vip-tier@1: plugin_config: invalid type: string \"lots\""
        ),
        "{}",
        v.message
    );
    let err = f
        .engine
        .upsert_territory(
            tid("east"),
            territory(serde_json::json!({"name": "East", "strategy": {"plugin": "vip-tier"},
                "plugin_config": {"bands": [{"min_amount": 1, "tier": "senior"}], "fallback": "fastest"}})),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), "invalid_field");
    assert!(err.to_string().contains("plugin_config.fallback"), "{err}");
    // Unknown plugins and versions are refused; the territory is not created.
    for strategy in [
        serde_json::json!({"plugin": "nope"}),
        serde_json::json!({"plugin": "vip-tier", "version": 9}),
    ] {
        let err = f
            .engine
            .upsert_territory(
                tid("east"),
                territory(serde_json::json!({"name": "East", "strategy": strategy})),
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), "unknown_plugin", "{err}");
    }
    assert!(f.engine.territories().await.unwrap().is_empty());
}

#[tokio::test]
async fn no_preference_lets_the_configured_fallback_decide() {
    let f = fixture();
    f.engine
        .put_plugin("vip-tier", VIP_TIER.to_vec())
        .await
        .unwrap();
    east(
        &f,
        serde_json::json!({"plugin": "vip-tier"}),
        serde_json::json!({"bands": [{"min_amount": 100000, "tier": "senior"}], "fallback": "rules"}),
    )
    .await;
    staff(&f).await;
    // Below every band: vip-tier has no preference; `rules` puts the skilled rep first.
    let out = f
        .engine
        .route(lead_with(1, Some("clinic"), 10.0, serde_json::json!({})))
        .await
        .unwrap();
    assert_eq!(out.rep_id, Some(rid("clinic-junior")));
    assert_eq!(out.decided_by.as_deref(), Some("builtin:rules"));
    let fallback = out.fallback.unwrap();
    assert!(
        fallback.starts_with(
            "no_preference: plugin:vip-tier@1: vip-tier: purchase 10 is below every band"
        ),
        "{fallback}"
    );
    let info = f.engine.plugin("vip-tier").unwrap();
    assert!(
        info.failures.is_empty(),
        "no preference is not a failure: {info:?}"
    );
    assert_healthy(&f.engine).await;
}
