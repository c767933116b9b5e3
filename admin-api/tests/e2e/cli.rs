//! The CLI client subcommands against a running server with tokens.

use serde_json::json;

use crate::harness::{ADMIN, Api, Server, data_dir, run};
use crate::receiver::Receiver;

#[test]
fn lead_get_and_simulate_print_summaries_or_json() {
    let dir = data_dir();
    let server = Server::start_with_tokens(dir.path());
    let api = Api {
        server: &server,
        token: Some(ADMIN),
    };
    api.territory("east", &["CN-SH"], true);
    api.rep("a", "east", 5);
    let lead = api
        .post(
            "/v1/leads",
            json!({"name": "Dr. Wang", "phone": "+86 138 0000 1234", "region": "CN-SH"}),
        )
        .json();
    let id = lead["lead_id"].as_str().unwrap();
    api.post(
        &format!("/v1/leads/{id}/events"),
        json!({"type": "touched"}),
    );

    let base = server.url("");
    let env = [
        ("LEADROUTE_ADMIN_TOKEN", ADMIN),
        ("LEADROUTE_SERVER", base.as_str()),
    ];
    let (status, out, err) = run(&["lead", "get", id], &env);
    assert!(status.success(), "{err}");
    assert!(out.contains(&format!("lead {id}")), "{out}");
    assert!(out.contains("assigned to a in east"), "{out}");
    assert!(out.contains("Dr. Wang"), "{out}");
    assert!(out.contains("routed") && out.contains("touched"), "{out}");

    let (status, out, _) = run(&["lead", "get", id, "--json"], &env);
    assert!(status.success());
    let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(parsed["lead_id"], id);
    assert_eq!(parsed["stage"], "first_contact");

    let (status, out, err) = run(&["lead", "get", "01ARZ3NDEKTSV4RRFFQ69G5FAV"], &env);
    assert_eq!(status.code(), Some(1));
    assert!(out.is_empty());
    assert!(err.contains("HTTP 404 lead_not_found"), "{err}");

    // Without a token the server says no, and the CLI says why.
    let (status, _, err) = run(&["lead", "get", id, "--server", &base], &[]);
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("HTTP 401 unauthorized"), "{err}");

    let file = dir.path().join("lead.json");
    std::fs::write(
        &file,
        r#"{"phone": "+86 139 9999 0000", "region": "CN-SH"}"#,
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let (status, out, err) = run(&["simulate", file], &env);
    assert!(status.success(), "{err}");
    assert!(out.contains("would assign to a in east"), "{out}");
    assert!(out.contains("decided by  builtin:least_loaded"), "{out}");
    let (status, out, _) = run(&["simulate", file, "--json"], &env);
    assert!(status.success());
    let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(parsed["rep_id"], "a");
    // Simulating took no load.
    assert_eq!(api.get("/admin/reps/a").json()["load"], 1);

    let (status, _, err) = run(&["simulate", file, "--territory", "nowhere"], &env);
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("unknown_territory"), "{err}");
}

#[test]
fn an_unreachable_server_is_a_clear_error() {
    // A port reserved for a receiver never started: connections to it are refused
    // for as long as the reservation lives, and no other socket can take it meanwhile.
    let reserved = Receiver::reserve();
    let server = format!("http://{}", reserved.addr);
    let (status, _, err) = run(&["lead", "get", "x", "--server", &server], &[]);
    assert_eq!(status.code(), Some(1));
    assert!(
        err.contains(&format!("cannot reach the server at {server}")),
        "{err}"
    );
    // Held until the CLI has tried the port.
    drop(reserved);
}
