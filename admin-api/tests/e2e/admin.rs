//! Reps, territories, simulation and the operations routes.

use serde_json::json;

use crate::harness::{Api, Server, data_dir};

#[test]
fn reps_are_created_replaced_read_and_deleted() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let api = Api {
        server: &server,
        token: None,
    };
    api.territory("east", &["CN-SH"], true);

    let body = json!({"name": "Li Wei", "territories": ["east"], "skills": ["Hospital-Lab"],
        "tier": "senior", "capacity": 2, "status": "available"});
    let r = api.put("/admin/reps/li-wei", body.clone());
    assert_eq!(r.status, 201, "{r:?}");
    let rep = r.json();
    assert_eq!(rep["rep_id"], "li-wei");
    assert_eq!(rep["skills"], json!(["hospital-lab"]));
    assert_eq!(rep["load"], 0);
    let r = api.put("/admin/reps/li-wei", body.clone());
    assert_eq!(r.status, 200, "replaced");

    let r = api.put(
        "/admin/reps/ghost",
        json!({"name": "G", "territories": ["nowhere"], "capacity": 1}),
    );
    assert_eq!((r.status, r.code().as_str()), (422, "unknown_territory"));
    assert_eq!(r.field().as_deref(), Some("territories"));
    let r = api.put("/admin/reps/bad%20id", body.clone());
    assert_eq!((r.status, r.code().as_str()), (422, "invalid_id"));
    let r = api.put("/admin/reps/x", json!({"name": "X", "capacity": -1}));
    assert_eq!((r.status, r.field().as_deref()), (422, Some("capacity")));
    let r = api.put("/admin/reps/x", json!({"capacity": 1}));
    assert_eq!((r.status, r.code().as_str()), (422, "missing_field"));
    let r = api.get("/admin/reps/ghost");
    assert_eq!((r.status, r.code().as_str()), (404, "rep_not_found"));
    let r = api.delete("/admin/reps/ghost");
    assert_eq!((r.status, r.code().as_str()), (404, "rep_not_found"));

    let lead = api.lead(1, "CN-SH");
    assert_eq!(lead.json()["rep_id"], "li-wei");
    assert_eq!(api.get("/admin/reps/li-wei").json()["load"], 1);
    // Lowering capacity below load is allowed.
    let r = api.put(
        "/admin/reps/li-wei",
        json!({"name": "Li Wei", "territories": ["east"], "capacity": 0}),
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        (r.json()["load"].clone(), r.json()["has_room"].clone()),
        (json!(1), json!(false))
    );

    api.rep("zhang", "east", 3);
    let list = api.get("/admin/reps").json();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rep_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["li-wei", "zhang"]);

    let r = api.delete("/admin/reps/li-wei");
    assert_eq!((r.status, r.code().as_str()), (409, "rep_has_open_leads"));
    let r = api.delete("/admin/reps/li-wei?reassign=maybe");
    assert_eq!((r.status, r.code().as_str()), (400, "invalid_query"));
    let r = api.delete("/admin/reps/li-wei?reassign=true");
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(api.get("/admin/reps/li-wei").status, 404);
    let moved = api.get(&format!(
        "/v1/leads/{}",
        lead.json()["lead_id"].as_str().unwrap()
    ));
    let moved = moved.json();
    assert_eq!(moved["rep_id"], "zhang");
    assert_eq!(moved["previous_rep_ids"], json!(["li-wei"]));
    let history = moved["history"].as_array().unwrap();
    let reassigned = history
        .iter()
        .find(|h| h["type"] == "reassigned")
        .unwrap_or_else(|| panic!("a reassigned event in {history:?}"));
    assert_eq!(reassigned["why"], "rep_deleted");
    assert_eq!(reassigned["from_rep_id"], "li-wei");
    assert_eq!(reassigned["to_rep_id"], "zhang");
    let metrics = api.get("/metrics").text;
    assert!(
        metrics.contains("leadroute_reassignments_total{reason=\"rep_deleted\"} 1"),
        "{metrics}"
    );
}

#[test]
fn territories_show_members_load_and_queue_depth() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let api = Api {
        server: &server,
        token: None,
    };
    let body = json!({"name": "Shanghai", "regions": ["cn-sh"], "default": true,
        "strategy": {"builtin": "rules"}, "plugin_config": {"vip_threshold": 200000},
        "first_touch_sla_secs": 1800});
    let r = api.put("/admin/territories/east-sh", body.clone());
    assert_eq!(r.status, 201, "{r:?}");
    let t = r.json();
    assert_eq!(t["regions"], json!(["CN-SH"]));
    assert_eq!(t["strategy"], json!({"builtin": "rules"}));
    assert_eq!(t["plugin_config"]["vip_threshold"], 200000);
    assert_eq!(t["queue_depth"], 0);
    assert_eq!(api.put("/admin/territories/east-sh", body).status, 200);

    api.rep("a", "east-sh", 1);
    api.lead(1, "CN-SH");
    api.lead(2, "CN-SH");
    let t = api.get("/admin/territories/east-sh").json();
    assert_eq!(t["queue_depth"], 1);
    assert_eq!(t["members"][0]["rep_id"], "a");
    assert_eq!(t["members"][0]["load"], 1);
    let list = api.get("/admin/territories").json();
    assert_eq!(list.as_array().unwrap().len(), 1);

    let r = api.put(
        "/admin/territories/other",
        json!({"name": "Other", "regions": ["CN-SH"]}),
    );
    assert_eq!((r.status, r.code().as_str()), (409, "territory_conflict"));
    let r = api.put(
        "/admin/territories/other",
        json!({"name": "Other", "regions": ["CN-JS"], "default": true}),
    );
    assert_eq!((r.status, r.code().as_str()), (409, "territory_conflict"));
    let r = api.put(
        "/admin/territories/other",
        json!({"name": "Other", "strategy": {"plugin": "vip-tier", "version": 3}}),
    );
    assert_eq!((r.status, r.code().as_str()), (422, "unknown_plugin"));
    let r = api.put(
        "/admin/territories/other",
        json!({"name": "Other", "strategy": {"builtin": "rules", "plugin": "x"}}),
    );
    assert_eq!((r.status, r.field().as_deref()), (422, Some("strategy")));
    let r = api.put(
        "/admin/territories/other",
        json!({"name": "Other", "strategy": {"builtin": "fastest"}}),
    );
    assert_eq!(
        (r.status, r.field().as_deref()),
        (422, Some("strategy.builtin"))
    );
    let r = api.put(
        "/admin/territories/other",
        json!({"name": "Other", "first_touch_sla_secs": 1}),
    );
    assert_eq!(
        (r.status, r.field().as_deref()),
        (422, Some("first_touch_sla_secs"))
    );
    let r = api.get("/admin/territories/other");
    assert_eq!((r.status, r.code().as_str()), (404, "territory_not_found"));
}

#[test]
fn simulation_decides_without_storing_anything() {
    let dir = data_dir();
    let server = Server::start_with(
        dir.path(),
        crate::harness::Options {
            args: &["--demo"],
            env: &[],
        },
    );
    let api = Api {
        server: &server,
        token: None,
    };
    let lead = json!({"phone": "+86 138 5555 1234", "region": "CN-SD", "industry": "imaging",
        "purchase_amount": 500000});
    let r = api.post("/admin/simulate", json!({"lead": lead}));
    assert_eq!(r.status, 200, "{r:?}");
    let sim = r.json();
    assert_eq!(sim["territory_id"], "east-sd");
    assert_eq!(sim["status"], "assigned");
    assert_eq!(sim["decided_by"], "builtin:rules");
    assert_eq!(sim["rep_id"], sim["ranking"][0]);
    assert_eq!(sim["candidates"].as_array().unwrap().len(), 9);
    assert!(sim["timings"]["decide_us"].is_u64());
    let rep = sim["rep_id"].as_str().unwrap().to_string();
    let chosen = api.get(&format!("/admin/reps/{rep}")).json();
    assert_eq!(chosen["load"], 0, "no load taken");
    assert!(
        chosen["skills"]
            .as_array()
            .unwrap()
            .contains(&json!("imaging"))
    );

    let r = api.post(
        "/admin/simulate",
        json!({"lead": lead, "territory_id": "east-jx"}),
    );
    assert_eq!(r.json()["territory_id"], "east-jx");
    assert_eq!(r.json()["decided_by"], "builtin:round_robin");

    // Routing it for real afterwards is not a duplicate: nothing was stored.
    assert_eq!(api.post("/v1/leads", lead.clone()).status, 201);
    let again = api.post("/admin/simulate", json!({"lead": lead})).json();
    assert_eq!(again["status"], "duplicate");

    let r = api.post(
        "/admin/simulate",
        json!({"lead": lead, "territory_id": "nowhere"}),
    );
    assert_eq!((r.status, r.code().as_str()), (422, "unknown_territory"));
    let r = api.post("/admin/simulate", json!({"lead": {"phone": "12"}}));
    assert_eq!((r.status, r.field().as_deref()), (422, Some("lead.phone")));
    let r = api.post(
        "/admin/simulate",
        json!({"lead": {"phone": "+86 138 5555 1234", "x": 1}}),
    );
    assert_eq!((r.status, r.field().as_deref()), (422, Some("lead.x")));
}

#[test]
fn operations_routes_answer_without_a_token() {
    let dir = data_dir();
    let server = Server::start_with_tokens(dir.path());
    let api = Api {
        server: &server,
        token: None,
    };
    let r = api.get("/healthz");
    assert_eq!((r.status, r.json()["status"].clone()), (200, json!("ok")));
    let r = api.get("/readyz");
    assert_eq!(
        (r.status, r.json()["status"].clone()),
        (200, json!("ready"))
    );
    assert!(
        r.request_id.is_some_and(|id| id.len() == 26),
        "a ULID request id"
    );

    let admin = Api {
        server: &server,
        token: Some(crate::harness::ADMIN),
    };
    admin.territory("east", &["CN-SH"], true);
    admin.rep("a", "east", 3);
    assert_eq!(admin.lead(1, "CN-SH").status, 201);

    let r = api.get("/metrics");
    assert_eq!(r.status, 200);
    for name in [
        "leadroute_leads_received_total 1",
        "leadroute_leads_routed_total{outcome=\"assigned\",territory=\"east\"} 1",
        "leadroute_route_duration_seconds_bucket",
        "leadroute_rep_load{rep=\"a\"} 1",
        "leadroute_rep_capacity{rep=\"a\"} 3",
        "leadroute_territory_queue_depth{territory=\"east\"} 0",
        "leadroute_http_requests_total{method=\"POST\",route=\"/v1/leads\",status=\"201\"} 1",
        "leadroute_http_request_duration_seconds_bucket{method=\"POST\",route=\"/v1/leads\"",
    ] {
        assert!(r.text.contains(name), "{name} missing from:\n{}", r.text);
    }

    let doc = api.get("/openapi.json").json();
    assert_eq!(doc["info"]["title"], "leadroute");
    for path in ["/v1/leads", "/admin/reps/{rep_id}", "/metrics"] {
        assert!(doc["paths"][path].is_object(), "{path}");
    }
}
