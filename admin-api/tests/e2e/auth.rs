//! The auth matrix, open mode on loopback only, and configuration at start.

use serde_json::json;

use crate::harness::{ADMIN, Api, INTAKE, Options, Server, data_dir, head_only, run};

#[test]
fn tokens_open_their_routes_and_nothing_else() {
    let dir = data_dir();
    let server = Server::start_with_tokens(dir.path());
    let as_admin = Api {
        server: &server,
        token: Some(ADMIN),
    };
    as_admin.territory("east", &["CN-SH"], true);
    as_admin.rep("a", "east", 100);

    let lead = |token: Option<&str>, n: u32| {
        Api {
            server: &server,
            token,
        }
        .lead(n, "CN-SH")
    };
    let admin_route = |token: Option<&str>| {
        Api {
            server: &server,
            token,
        }
        .get("/admin/reps")
    };

    // token × route → status
    let cases: [(Option<&str>, u16, u16); 4] = [
        (None, 401, 401),
        (Some("not-a-token-0123456789"), 401, 401),
        (Some(INTAKE), 201, 403),
        (Some(ADMIN), 201, 200),
    ];
    for (n, (token, intake_status, admin_status)) in cases.into_iter().enumerate() {
        let r = lead(token, n as u32);
        assert_eq!(
            r.status, intake_status,
            "intake route with {token:?}: {r:?}"
        );
        if intake_status == 401 {
            assert_eq!(r.code(), "unauthorized");
            assert_eq!(r.www_authenticate.as_deref(), Some("Bearer"));
        }
        let r = admin_route(token);
        assert_eq!(r.status, admin_status, "admin route with {token:?}: {r:?}");
        match admin_status {
            401 => assert_eq!(r.code(), "unauthorized"),
            403 => assert_eq!(r.code(), "forbidden"),
            _ => {}
        }
    }

    // The intake token also reads leads; the admin token does everything.
    let id = lead(Some(INTAKE), 100).json()["lead_id"]
        .as_str()
        .unwrap()
        .to_string();
    let as_intake = Api {
        server: &server,
        token: Some(INTAKE),
    };
    assert_eq!(as_intake.get(&format!("/v1/leads/{id}")).status, 200);
    assert_eq!(
        as_intake
            .post(
                &format!("/v1/leads/{id}/events"),
                json!({"type": "touched"})
            )
            .status,
        200
    );
    assert_eq!(
        as_intake
            .post("/admin/simulate", json!({"lead": {}}))
            .status,
        403
    );
    assert_eq!(as_intake.put("/admin/reps/b", json!({})).status, 403);
    // Auth comes before parsing: a bad body without a token is still a 401.
    let anonymous = Api {
        server: &server,
        token: None,
    };
    assert_eq!(anonymous.post("/v1/leads", json!({"bogus": 1})).status, 401);
    assert_eq!(as_admin.get("/admin/territories").status, 200);
    // A rejected request changed nothing.
    assert_eq!(as_admin.get("/admin/reps/b").status, 404);

    for open in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        assert_eq!(anonymous.get(open).status, 200, "{open}");
    }
    assert!(!server.stderr().contains("NO TOKENS CONFIGURED"));
}

#[test]
fn without_tokens_it_runs_open_on_loopback_and_says_so() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let api = Api {
        server: &server,
        token: None,
    };
    assert_eq!(api.get("/admin/reps").status, 200);
    let log = server.stderr();
    assert!(
        log.contains("WARN") && log.contains("NO TOKENS CONFIGURED"),
        "{log}"
    );
}

#[test]
fn without_tokens_it_refuses_a_non_loopback_address() {
    let dir = data_dir();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let (status, stdout, stderr) =
        run(&["serve", "--listen", "0.0.0.0:0", "--data-dir", data], &[]);
    assert!(!status.success());
    assert!(!stdout.contains("listening on"));
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0 without tokens"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("data").exists(),
        "the store was not even opened"
    );

    // (With tokens the same address is accepted: see config.rs's unit tests. Not
    // bound here, so a test never listens on every interface.)
}

#[test]
fn a_config_file_sets_tokens_and_limits_and_bad_keys_are_named() {
    let dir = data_dir();
    let config = dir.path().join("leadroute.toml");
    std::fs::write(
        &config,
        format!("[auth]\nadmin_token = \"{ADMIN}\"\n[limits]\njson_body_bytes = 2048\n"),
    )
    .unwrap();
    let config_path = config.to_str().unwrap();
    let server = Server::start_with(
        &dir.path().join("data"),
        Options {
            args: &["--config", config_path],
            env: &[],
        },
    );
    let anonymous = Api {
        server: &server,
        token: None,
    };
    assert_eq!(anonymous.get("/admin/reps").status, 401);
    let admin = Api {
        server: &server,
        token: Some(ADMIN),
    };
    assert_eq!(admin.get("/admin/reps").status, 200);
    let r = head_only(
        &server,
        "POST",
        "/v1/leads",
        Some(ADMIN),
        "application/json",
        3000,
    );
    assert_eq!((r.status, r.code().as_str()), (413, "body_too_large"));
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2048")
    );
    drop(server);

    std::fs::write(
        &config,
        "listen = \"127.0.0.1:0\"\n[limits]\njson_bytes = 1\n",
    )
    .unwrap();
    let (status, _, stderr) = run(&["serve", "--config", config_path], &[]);
    assert!(!status.success());
    assert!(
        stderr.contains("json_bytes") && stderr.contains("leadroute.toml"),
        "{stderr}"
    );

    let (status, _, stderr) = run(
        &["serve", "--listen", "127.0.0.1:0"],
        &[("LEADROUTE_DURABILITY", "disk")],
    );
    assert!(!status.success());
    assert!(stderr.contains("LEADROUTE_DURABILITY"), "{stderr}");
}

#[test]
fn the_example_config_starts_a_server() {
    let dir = data_dir();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/leadroute.example.toml");
    let data = dir.path().join("data");
    // Flags beat the file: the example's fixed port and ./data are overridden.
    let server = Server::start_with(
        &data,
        Options {
            args: &["--config", example],
            env: &[],
        },
    );
    let api = Api {
        server: &server,
        token: None,
    };
    assert_eq!(api.get("/readyz").status, 200);
    assert!(data.exists());
}
