//! Plugin routes with real modules (built from `plugins/` by
//! `leadroute-plugin-builds`): upload, list, activate, route, simulate, delete,
//! restart, and the CLI's `plugin` subcommands.

use serde_json::json;

use crate::harness::{ADMIN, Api, INTAKE, Options, Resp, Server, data_dir, head_only, raw, run};

const WASM: &str = "application/wasm";

fn upload(server: &Server, name: &str, bytes: &[u8]) -> Resp {
    raw(
        "PUT",
        &server.url(&format!("/admin/plugins/{name}")),
        Some(ADMIN),
        Some(WASM),
        Some(bytes),
    )
}

/// Territory `east` (default) with a junior and a senior rep, deciding with vip-tier.
fn vip_territory(api: &Api<'_>) {
    let r = api.put(
        "/admin/territories/east",
        json!({"name": "East", "regions": ["CN-SH"], "default": true,
            "strategy": {"plugin": "vip-tier", "version": null},
            "plugin_config": {"bands": [{"min_amount": 100000, "tier": "senior"}]}}),
    );
    assert_eq!(r.status, 201, "{r:?}");
    for (id, tier) in [("junior-1", "junior"), ("senior-1", "senior")] {
        let r = api.put(
            &format!("/admin/reps/{id}"),
            json!({"name": id, "territories": ["east"], "tier": tier, "capacity": 10}),
        );
        assert_eq!(r.status, 201, "{r:?}");
    }
}

#[test]
fn plugins_are_uploaded_activated_used_and_deleted() {
    let dir = data_dir();
    let server = Server::start_with_tokens(dir.path());
    let api = Api {
        server: &server,
        token: Some(ADMIN),
    };
    let module = leadroute_plugin_builds::VIP_TIER;

    let r = upload(&server, "vip-tier", module);
    assert_eq!(r.status, 201, "{r:?}");
    let v1 = r.json();
    assert_eq!(v1["name"], "vip-tier");
    assert_eq!(v1["version"], 1);
    assert_eq!(v1["size"], module.len());
    assert_eq!(v1["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(upload(&server, "vip-tier", module).json()["version"], 2);

    let list = api.get("/admin/plugins").json();
    let plugin = &list[0];
    assert_eq!(plugin["name"], "vip-tier");
    assert_eq!(plugin["active_version"], 2);
    assert_eq!(plugin["versions"].as_array().unwrap().len(), 2);
    assert_eq!(plugin["circuit"]["state"], "closed");
    assert!(
        plugin["versions"][0]["uploaded_at"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );

    let r = api.post("/admin/plugins/vip-tier/activate", json!({"version": 1}));
    assert_eq!(
        (r.status, r.json()["active_version"].clone()),
        (200, json!(1))
    );
    let r = api.post("/admin/plugins/vip-tier/activate", json!({"version": 9}));
    assert_eq!((r.status, r.code().as_str()), (422, "unknown_version"));
    let r = api.post("/admin/plugins/nope/activate", json!({"version": 1}));
    assert_eq!((r.status, r.code().as_str()), (404, "plugin_not_found"));
    let r = api.get("/admin/plugins/nope");
    assert_eq!((r.status, r.code().as_str()), (404, "plugin_not_found"));

    // Routing through the plugin: a big buyer goes to the senior rep.
    vip_territory(&api);
    let r = api.post(
        "/v1/leads",
        json!({"phone": "+86 139 0000 0001", "purchase_amount": 250000}),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let routed = r.json();
    assert_eq!(routed["decided_by"], "plugin:vip-tier@1");
    assert_eq!(routed["rep_id"], "senior-1");
    assert!(routed["fallback"].is_null() && routed["fallback_detail"].is_null());

    // Below every band the plugin has no preference: the fallback decides, and the
    // outcome, the lead's history and a simulation carry the code API.md names plus
    // the detail.
    let small = json!({"phone": "+86 139 0000 0009", "purchase_amount": 10});
    let r = api.post("/v1/leads", small.clone());
    assert_eq!(r.status, 201, "{r:?}");
    let fell_back = r.json();
    assert_eq!(fell_back["decided_by"], "builtin:least_loaded");
    assert_eq!(fell_back["fallback"], "plugin_no_preference");
    let detail = fell_back["fallback_detail"].as_str().unwrap().to_string();
    assert!(
        detail.starts_with("no_preference: plugin:vip-tier@1: ")
            && detail.contains("below every band"),
        "{detail}"
    );
    let lead = api.get(&format!(
        "/v1/leads/{}",
        fell_back["lead_id"].as_str().unwrap()
    ));
    let history = &lead.json()["history"][0];
    assert_eq!(history["type"], "routed", "{history}");
    assert_eq!(history["fallback"], "plugin_no_preference");
    assert_eq!(history["fallback_detail"], detail.as_str());
    let sim = api.post("/admin/simulate", json!({"lead": small})).json();
    assert_eq!(sim["duplicate_of"], fell_back["lead_id"]);
    assert_eq!(
        (&sim["fallback"], &sim["fallback_detail"]),
        (&json!("plugin_no_preference"), &json!(detail))
    );

    assert_eq!(api.get("/admin/plugins/vip-tier").json()["calls"], 2);
    let metrics = api.get("/metrics").text;
    let line = "leadroute_plugin_call_duration_seconds_count{plugin=\"vip-tier\"} 2";
    assert!(metrics.contains(line), "{line} missing from:\n{metrics}");

    // Simulate with another version than the active one.
    let lead = json!({"phone": "+86 139 0000 0002", "purchase_amount": 250000});
    let r = api.post(
        "/admin/simulate",
        json!({"lead": lead, "plugin": {"name": "vip-tier", "version": 2}}),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["decided_by"], "plugin:vip-tier@2");
    assert_eq!(r.json()["rep_id"], "senior-1");
    let r = api.post(
        "/admin/simulate",
        json!({"lead": lead, "plugin": {"name": "nope"}}),
    );
    assert_eq!((r.status, r.field().as_deref()), (422, Some("plugin.name")));
    let r = api.post(
        "/admin/simulate",
        json!({"lead": lead, "plugin": {"name": "vip-tier", "version": 7}}),
    );
    assert_eq!(
        (r.status, r.field().as_deref()),
        (422, Some("plugin.version"))
    );
    assert_eq!(
        api.get("/admin/plugins/vip-tier").json()["calls"],
        2,
        "simulations are not counted"
    );

    let r = api.delete("/admin/plugins/vip-tier");
    assert_eq!((r.status, r.code().as_str()), (409, "plugin_in_use"));
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("east")
    );
    let r = api.put(
        "/admin/territories/east",
        json!({"name": "East", "regions": ["CN-SH"], "default": true}),
    );
    assert_eq!(r.status, 200);
    assert_eq!(api.delete("/admin/plugins/vip-tier").status, 204);
    assert_eq!(api.get("/admin/plugins/vip-tier").status, 404);
    assert_eq!(api.get("/admin/plugins").json(), json!([]));
}

#[test]
fn bad_uploads_are_refused_with_the_reason() {
    let dir = data_dir();
    let server = Server::start_with_tokens(dir.path());
    let api = Api {
        server: &server,
        token: Some(ADMIN),
    };
    let r = upload(&server, "junk", b"\0asm\x01\0\0\0garbage");
    assert_eq!((r.status, r.code().as_str()), (422, "plugin_invalid"));
    assert!(!r.json()["error"]["message"].as_str().unwrap().is_empty());
    let r = upload(&server, "junk", b"not wasm at all");
    assert_eq!((r.status, r.code().as_str()), (422, "plugin_invalid"));
    // A name of the wrong form in the path, as for every other `PUT`.
    for name in ["Junk", "a%20b"] {
        let r = upload(&server, name, b"not wasm at all");
        assert_eq!((r.status, r.code().as_str()), (422, "invalid_id"), "{name}");
        assert_eq!(r.field().as_deref(), Some("name"), "{name}");
    }
    let r = raw(
        "PUT",
        &server.url("/admin/plugins/junk"),
        Some(ADMIN),
        Some("application/json"),
        Some(b"{}"),
    );
    assert_eq!((r.status, r.code().as_str()), (400, "wrong_content_type"));
    let r = upload(&server, "junk", b"");
    assert_eq!((r.status, r.code().as_str()), (422, "plugin_invalid"));
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("empty")
    );
    let r = upload(&server, "Bad_Name", leadroute_plugin_builds::RULES);
    assert_eq!(r.status, 422, "{r:?}");
    // Modules that are wasm but not plugins: the message names what is wrong.
    let exports = |abi: u32, route: &str| {
        wat::parse_str(format!(
            r#"(module (memory (export "memory") 1)
                 (func (export "leadroute_abi_version") (result i32) (i32.const {abi}))
                 (func (export "leadroute_alloc") (param i32) (result i32) (i32.const 8))
                 {route})"#
        ))
        .unwrap()
    };
    let route = r#"(func (export "leadroute_route") (param i32 i32) (result i64) (i64.const 0))"#;
    for (wasm, says) in [
        (
            exports(1, ""),
            "missing export `leadroute_route` (func (param i32 i32) (result i64))",
        ),
        (
            exports(2, route),
            "module speaks plugin ABI version 2; this host speaks version 1",
        ),
    ] {
        let r = upload(&server, "broken", &wasm);
        assert_eq!((r.status, r.code().as_str()), (422, "plugin_invalid"));
        let message = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(message.contains(says), "{message}");
    }
    // Past the 8 MiB plugin limit.
    let limit = 8 * 1024 * 1024;
    let r = head_only(
        &server,
        "PUT",
        "/admin/plugins/huge",
        Some(ADMIN),
        WASM,
        limit + 1,
    );
    assert_eq!((r.status, r.code().as_str()), (413, "body_too_large"));
    // Past the JSON limit but within the plugin limit: the limits are per route.
    let module = leadroute_plugin_builds::RULES;
    assert!(
        module.len() > 64 * 1024,
        "the test needs a module over 64 KiB"
    );
    assert_eq!(upload(&server, "rules", module).status, 201);
    // Nothing was stored for the refused uploads.
    let names: Vec<String> = api
        .get("/admin/plugins")
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["rules"]);

    // The intake token cannot upload (refused before the body is read).
    let r = head_only(
        &server,
        "PUT",
        "/admin/plugins/rules",
        Some(crate::harness::INTAKE),
        WASM,
        module.len(),
    );
    assert_eq!((r.status, r.code().as_str()), (403, "forbidden"));
}

/// The `[plugins]` settings reach the sandbox: with a budget of 1000 fuel (a decision
/// of this module takes about 9400) the upload's smoke run runs out, where the default
/// budget lets the same module in (the other tests).
#[test]
fn plugin_limits_from_the_environment_reach_the_sandbox() {
    let dir = data_dir();
    let server = Server::start_with(
        dir.path(),
        Options {
            args: &[],
            env: &[
                ("LEADROUTE_ADMIN_TOKEN", ADMIN),
                ("LEADROUTE_INTAKE_TOKEN", INTAKE),
                ("LEADROUTE_PLUGIN_FUEL", "1000"),
            ],
        },
    );
    let r = upload(&server, "vip-tier", leadroute_plugin_builds::VIP_TIER);
    assert_eq!(
        (r.status, r.code().as_str()),
        (422, "plugin_invalid"),
        "{r:?}"
    );
    let message = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(message.contains("out_of_fuel"), "{message}");
}

#[test]
fn plugins_survive_a_restart() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let api = Api {
        server: &server,
        token: None,
    };
    let r = raw(
        "PUT",
        &server.url("/admin/plugins/vip-tier"),
        None,
        Some(WASM),
        Some(leadroute_plugin_builds::VIP_TIER),
    );
    assert_eq!(r.status, 201);
    vip_territory(&api);
    let before = api.get("/admin/plugins/vip-tier").json();
    assert!(server.terminate().success());

    let server = Server::start(dir.path());
    let api = Api {
        server: &server,
        token: None,
    };
    let after = api.get("/admin/plugins/vip-tier").json();
    assert_eq!(after["versions"], before["versions"]);
    assert_eq!(after["active_version"], before["active_version"]);
    let r = api.post(
        "/v1/leads",
        json!({"phone": "+86 139 0000 0001", "purchase_amount": 250000}),
    );
    assert_eq!(r.json()["decided_by"], "plugin:vip-tier@1");
    assert_eq!(r.json()["rep_id"], "senior-1");
}

#[test]
fn the_cli_pushes_lists_and_activates_plugins() {
    let dir = data_dir();
    let server = Server::start_with_tokens(dir.path());
    let file = dir.path().join("vip-tier.wasm");
    std::fs::write(&file, leadroute_plugin_builds::VIP_TIER).unwrap();
    let file = file.to_str().unwrap();
    let base = server.url("");
    let env = [
        ("LEADROUTE_ADMIN_TOKEN", ADMIN),
        ("LEADROUTE_SERVER", base.as_str()),
    ];

    let (status, out, err) = run(&["plugin", "push", "vip-tier", file], &env);
    assert!(status.success(), "{err}");
    assert!(out.contains("uploaded vip-tier version 1"), "{out}");
    let (status, out, _) = run(&["plugin", "push", "vip-tier", file, "--json"], &env);
    assert!(status.success());
    let pushed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(pushed["version"], 2);

    let (status, out, _) = run(&["plugin", "list"], &env);
    assert!(status.success());
    assert!(
        out.contains("vip-tier  active v2  versions [1, 2]"),
        "{out}"
    );
    assert!(out.contains("circuit closed"), "{out}");

    let (status, out, err) = run(&["plugin", "activate", "vip-tier", "1"], &env);
    assert!(status.success(), "{err}");
    assert!(out.contains("vip-tier now runs version 1"), "{out}");
    let (status, out, _) = run(&["plugin", "list", "--json"], &env);
    assert!(status.success());
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["active_version"], 1);

    let (status, _, err) = run(&["plugin", "activate", "vip-tier", "5"], &env);
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("unknown_version"), "{err}");

    let api = Api {
        server: &server,
        token: Some(ADMIN),
    };
    vip_territory(&api);
    let lead = dir.path().join("lead.json");
    std::fs::write(
        &lead,
        r#"{"phone": "+86 139 1234 5678", "purchase_amount": 300000}"#,
    )
    .unwrap();
    let (status, out, err) = run(
        &["simulate", lead.to_str().unwrap(), "--plugin", "vip-tier@2"],
        &env,
    );
    assert!(status.success(), "{err}");
    assert!(out.contains("would assign to senior-1"), "{out}");
    assert!(out.contains("plugin:vip-tier@2"), "{out}");
}

#[test]
fn plugin_test_runs_a_module_on_fixtures_without_a_server() {
    let dir = data_dir();
    let module = dir.path().join("vip-tier.wasm");
    std::fs::write(&module, leadroute_plugin_builds::VIP_TIER).unwrap();
    let fixtures = |config: serde_json::Value| {
        let path = dir.path().join("fixtures.json");
        let body = json!({
            "plugin_config": config,
            "candidates": [
                {"id": "junior-1", "capacity": 10},
                {"id": "senior-1", "capacity": 10, "tier": "senior", "load": 3}
            ],
            "leads": [
                {"phone": "+86 139 0000 0001", "purchase_amount": 250000},
                {"phone": "+86 139 0000 0002", "purchase_amount": 10}
            ]
        });
        std::fs::write(&path, body.to_string()).unwrap();
        path
    };
    let module = module.to_str().unwrap();

    let good = fixtures(json!({"bands": [{"min_amount": 100000, "tier": "senior"}]}));
    let (status, out, err) = run(&["plugin", "test", module, good.to_str().unwrap()], &[]);
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("lead 0: senior-1 > junior-1"), "{out}");
    assert!(out.contains("lead 1: no preference"), "{out}");
    assert!(out.contains("2 lead(s), 0 failed"), "{out}");

    let (status, out, _) = run(
        &["plugin", "test", module, good.to_str().unwrap(), "--json"],
        &[],
    );
    assert!(status.success());
    let answers: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answers[0]["ranked"], json!(["senior-1", "junior-1"]));

    // A territory's config as it is stored, with the engine's own `fallback` key: the
    // plugin (which refuses unknown fields) never sees that key, here as in a server.
    let stored = fixtures(json!({
        "bands": [{"min_amount": 100000, "tier": "senior"}],
        "fallback": "rules"
    }));
    let (status, out, err) = run(&["plugin", "test", module, stored.to_str().unwrap()], &[]);
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("2 lead(s), 0 failed"), "{out}");

    // A config the plugin refuses: every decision fails, and the exit status says so.
    let bad = fixtures(json!({"bands": "lots"}));
    let (status, out, _) = run(&["plugin", "test", module, bad.to_str().unwrap()], &[]);
    assert!(!status.success(), "{out}");
    assert!(out.contains("lead 0: FAILED"), "{out}");
    assert!(out.contains("2 lead(s), 2 failed"), "{out}");
}

/// Shadow and replay through the real binary: a territory deciding with built-in
/// least_loaded, shadowed by vip-tier (which always wants the senior for big buyers);
/// then the same stored decisions replayed through vip-tier over HTTP and the CLI.
#[test]
fn shadow_runs_and_replays_report_what_a_version_would_change() {
    let dir = data_dir();
    let server = Server::start_with_tokens(dir.path());
    let api = Api {
        server: &server,
        token: Some(ADMIN),
    };
    assert_eq!(
        upload(&server, "vip-tier", leadroute_plugin_builds::VIP_TIER).status,
        201
    );
    let territory = json!({"name": "East", "regions": ["CN-SH"], "default": true,
        "strategy": {"builtin": "least_loaded"},
        "plugin_config": {"bands": [{"min_amount": 100000, "tier": "senior"}]},
        "shadow": {"plugin": "vip-tier", "version": 7}});
    let r = api.put("/admin/territories/east", territory.clone());
    assert_eq!(
        (r.status, r.code().as_str()),
        (422, "invalid_field"),
        "{r:?}"
    );
    assert_eq!(r.json()["error"]["field"], "shadow.version");
    let mut territory = territory;
    territory["shadow"]["version"] = json!(1);
    let r = api.put("/admin/territories/east", territory);
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(
        r.json()["shadow"],
        json!({"plugin": "vip-tier", "version": 1}),
        "{r:?}"
    );
    for (id, tier) in [("junior-1", "junior"), ("senior-1", "senior")] {
        let r = api.put(
            &format!("/admin/reps/{id}"),
            json!({"name": id, "territories": ["east"], "tier": tier, "capacity": 10}),
        );
        assert_eq!(r.status, 201, "{r:?}");
    }
    let mut to_junior = Vec::new();
    for n in 0..6 {
        let r = api.post(
            "/v1/leads",
            json!({"phone": format!("+86 139 0000 {n:04}"), "purchase_amount": 300000}),
        );
        assert_eq!(r.status, 201, "{r:?}");
        let body = r.json();
        assert_eq!(body["decided_by"], "builtin:least_loaded");
        if body["rep_id"] == "junior-1" {
            to_junior.push(body["lead_id"].as_str().unwrap().to_string());
        }
    }
    // least_loaded spreads the six leads over both reps.
    assert_eq!(to_junior.len(), 3);

    let metrics = api.get("/metrics").text;
    for (agree, n) in [("true", 3), ("false", 3)] {
        let series =
            format!(r#"leadroute_plugin_shadow_total{{agree="{agree}",plugin="vip-tier"}} {n}"#);
        assert!(metrics.contains(&series), "{series} in {metrics}");
    }
    let lead = api.get(&format!("/v1/leads/{}", to_junior[0])).json();
    let history = lead["history"].as_array().unwrap();
    assert_eq!(history[0]["type"], "routed");
    assert_eq!(history[1]["type"], "shadow_disagreed");
    assert_eq!(history[1]["chosen_rep_id"], "junior-1");
    assert_eq!(history[1]["shadow_rep_id"], "senior-1");
    assert_eq!(history[1]["plugin"], "vip-tier");
    let r = raw(
        "DELETE",
        &server.url("/admin/plugins/vip-tier"),
        Some(ADMIN),
        None,
        None,
    );
    assert_eq!((r.status, r.code().as_str()), (409, "plugin_in_use"));

    let r = api.post("/admin/plugins/vip-tier/versions/1/replay", json!({}));
    assert_eq!(r.status, 200, "{r:?}");
    let report = r.json();
    assert_eq!(report["leads_examined"], 6);
    assert_eq!(report["decisions_examined"], 6);
    assert_eq!(report["decisions_changed"], 3);
    assert_eq!(report["failures"], 0);
    let mut changed: Vec<String> = report["sample"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            assert_eq!(d["actual_rep_id"], "junior-1");
            assert_eq!(d["replayed_rep_id"], "senior-1");
            d["lead_id"].as_str().unwrap().to_string()
        })
        .collect();
    changed.sort();
    to_junior.sort();
    assert_eq!(changed, to_junior);
    let r = api.post(
        "/admin/plugins/vip-tier/versions/1/replay",
        json!({"territory_id": "east", "limit": 2}),
    );
    assert_eq!(r.json()["leads_examined"], 2, "{r:?}");
    for (path, body, status, code) in [
        (
            "/admin/plugins/vip-tier/versions/9/replay",
            json!({}),
            404,
            "plugin_not_found",
        ),
        (
            "/admin/plugins/nope/versions/1/replay",
            json!({}),
            404,
            "plugin_not_found",
        ),
        (
            "/admin/plugins/vip-tier/versions/1/replay",
            json!({"limit": 0}),
            422,
            "invalid_field",
        ),
        (
            "/admin/plugins/vip-tier/versions/1/replay",
            json!({"territory_id": "west"}),
            422,
            "unknown_territory",
        ),
        (
            "/admin/plugins/vip-tier/versions/1/replay",
            json!({"colour": "red"}),
            422,
            "unknown_field",
        ),
    ] {
        let r = api.post(path, body.clone());
        assert_eq!(
            (r.status, r.code().as_str()),
            (status, code),
            "{body}: {r:?}"
        );
    }

    let base = server.url("");
    let env = [
        ("LEADROUTE_ADMIN_TOKEN", ADMIN),
        ("LEADROUTE_SERVER", base.as_str()),
    ];
    let (status, out, err) = run(&["plugin", "replay", "vip-tier", "1"], &env);
    assert!(status.success(), "{err}");
    assert!(
        out.contains(
            "vip-tier@1: 3 of 6 decisions would change (6 leads examined, 0 failed, 0 skipped)"
        ),
        "{out}"
    );
    assert!(out.contains("junior-1 -> senior-1"), "{out}");
    let (status, out, err) = run(
        &[
            "plugin",
            "replay",
            "vip-tier",
            "1",
            "--territory",
            "east",
            "--limit",
            "3",
            "--json",
        ],
        &env,
    );
    assert!(status.success(), "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["leads_examined"], 3);
    let (status, _, err) = run(&["plugin", "replay", "vip-tier", "4"], &env);
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("plugin_not_found"), "{err}");
}
