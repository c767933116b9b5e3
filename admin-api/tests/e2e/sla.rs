//! First-touch deadlines that passed while the server was down fire right after it
//! starts; ones still running do not.
//!
//! The store is prepared through the engine library with a clock set two hours in the
//! past, so no test waits for real time: to the real binary, those leads were
//! assigned two hours ago.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use leadroute_engine::domain::{LeadInput, RepId, RepInput, TerritoryId, TerritoryInput};
use leadroute_engine::{Engine, EngineConfig, ManualClock};
use serde_json::Value;

use crate::harness::{Api, Server, data_dir};

fn lead(n: u32) -> LeadInput {
    LeadInput {
        phone: Some(format!("1390000{n:04}")),
        region: Some("CN-SH".into()),
        ..Default::default()
    }
}

fn reasons(lead: &Value) -> Vec<String> {
    lead["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "reassigned")
        .map(|e| e["why"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn deadlines_missed_while_down_fire_at_start() {
    let dir = data_dir();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let clock = ManualClock::new(now - 2 * 3600 * 1000);
    let (late, fresh) = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let engine = Engine::open(EngineConfig::new(dir.path()).clock(clock.clone())).unwrap();
        let east: TerritoryInput = serde_json::from_value(serde_json::json!({
            "name": "East", "regions": ["CN-SH"], "default": true,
            "first_touch_sla_secs": 1800}))
        .unwrap();
        engine
            .upsert_territory(TerritoryId::new("east").unwrap(), east)
            .await
            .unwrap();
        for id in ["a", "b"] {
            let rep = RepInput {
                name: id.into(),
                territories: vec!["east".into()],
                capacity: 10,
                ..Default::default()
            };
            engine
                .upsert_rep(RepId::new(id).unwrap(), rep)
                .await
                .unwrap();
        }
        // Assigned two hours ago: 90 minutes past the deadline.
        let late = engine.route(lead(1)).await.unwrap().lead_id;
        // Assigned a minute ago: 29 minutes to go.
        clock.set(now - 60_000);
        let fresh = engine.route(lead(2)).await.unwrap().lead_id;
        engine.shutdown().await.unwrap();
        (late.to_string(), fresh.to_string())
    });

    let server = Server::start(dir.path());
    let api = Api {
        server: &server,
        token: None,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let moved = loop {
        let view = api.get(&format!("/v1/leads/{late}")).json();
        if !reasons(&view).is_empty() {
            break view;
        }
        assert!(Instant::now() < deadline, "never re-routed: {view}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(reasons(&moved), ["sla_breach"]);
    assert_eq!(moved["previous_rep_ids"].as_array().unwrap().len(), 1);
    assert!(moved["first_touch_deadline"].is_string(), "{moved}");

    let untouched = api.get(&format!("/v1/leads/{fresh}")).json();
    assert!(reasons(&untouched).is_empty(), "{untouched}");
    assert!(untouched["first_touch_deadline"].is_string());
    // The counter moves just after the re-route is durable: look until it shows.
    loop {
        let metrics = api.get("/metrics").text;
        if metrics.contains(r#"leadroute_sla_breaches_total{territory="east"} 1"#) {
            break;
        }
        assert!(Instant::now() < deadline, "breach not counted:\n{metrics}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(server.terminate().code(), Some(0));
}
