//! SIGTERM drains and exits 0; a restart on the same data dir has everything back.

use serde_json::json;

use crate::harness::{Api, Options, Server, data_dir, eventually};

#[test]
fn a_restart_keeps_reps_territories_leads_and_queues() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let api = Api {
        server: &server,
        token: None,
    };
    api.territory("east", &["CN-SH"], true);
    api.territory("north", &["CN-SD"], false);
    api.rep("a", "east", 1);
    api.rep("n", "north", 5);

    let assigned = api.lead(1, "CN-SH").json();
    assert_eq!(assigned["status"], "assigned");
    let queued = api.lead(2, "CN-SH").json();
    assert_eq!(queued["status"], "queued");
    let north = api.lead(3, "CN-SD").json();
    assert_eq!(north["rep_id"], "n");
    let north_id = north["lead_id"].as_str().unwrap().to_string();
    for event in [
        json!({"type": "touched"}),
        json!({"type": "stage", "stage": "needs_diagnosis"}),
    ] {
        assert_eq!(
            api.post(&format!("/v1/leads/{north_id}/events"), event)
                .status,
            200
        );
    }
    let before_lead = api.get(&format!("/v1/leads/{north_id}")).json();
    let before_reps = api.get("/admin/reps").json();
    let before_territories = api.get("/admin/territories").json();

    let status = server.terminate();
    assert!(status.success(), "SIGTERM exits 0, got {status:?}");

    let server = Server::start(dir.path());
    let api = Api {
        server: &server,
        token: None,
    };
    assert_eq!(api.get("/admin/reps").json(), before_reps);
    assert_eq!(api.get("/admin/territories").json(), before_territories);
    let territory = api.get("/admin/territories/east").json();
    assert_eq!(territory["queue_depth"], 1);
    assert_eq!(territory["members"][0]["load"], 1);
    assert_eq!(
        api.get(&format!("/v1/leads/{north_id}")).json(),
        before_lead
    );
    assert_eq!(before_lead["stage"], "needs_diagnosis");
    let q = api
        .get(&format!(
            "/v1/leads/{}",
            queued["lead_id"].as_str().unwrap()
        ))
        .json();
    assert_eq!(q["status"], "queued");

    // The de-duplication index came back too, and routing goes on.
    let dup = api.lead(1, "CN-SH");
    assert_eq!(dup.status, 200);
    assert_eq!(dup.json()["duplicate_of"], assigned["lead_id"]);
    let next = api.lead(4, "CN-SD");
    assert_eq!(
        (next.status, next.json()["rep_id"].clone()),
        (201, json!("n"))
    );
    // The stage order survived: the next stage is `demo`.
    let r = api.post(
        &format!("/v1/leads/{north_id}/events"),
        json!({"type": "stage", "stage": "quote_sent"}),
    );
    assert_eq!(r.status, 409);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("demo")
    );

    let status = server.terminate();
    assert!(status.success());
}

#[test]
fn the_demo_loads_idempotently_across_restarts() {
    let dir = data_dir();
    let demo = Options {
        args: &["--demo"],
        env: &[],
    };
    let server = Server::start_with(dir.path(), demo);
    let api = Api {
        server: &server,
        token: None,
    };
    let reps = api.get("/admin/reps").json();
    assert_eq!(reps.as_array().unwrap().len(), 63);
    let territories = api.get("/admin/territories").json();
    let ids: Vec<&str> = territories
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["territory_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "east-ah", "east-fj", "east-js", "east-jx", "east-sd", "east-sh", "east-zj"
        ]
    );
    let lead = api.lead(1, "CN-ZJ").json();
    assert_eq!(lead["territory_id"], "east-zj");
    assert!(server.terminate().success());

    // `leadroute demo` is `serve --demo` by another name.
    let server = Server::start_demo_command(dir.path());
    let api = Api {
        server: &server,
        token: None,
    };
    assert_eq!(api.get("/admin/reps").json().as_array().unwrap().len(), 63);
    assert_eq!(
        api.get("/admin/territories")
            .json()
            .as_array()
            .unwrap()
            .len(),
        7
    );
    let rep = lead["rep_id"].as_str().unwrap();
    assert_eq!(
        api.get(&format!("/admin/reps/{rep}")).json()["load"],
        1,
        "reloading the demo keeps loads"
    );
}

/// With a shutdown delay, the first signal turns `/readyz` 503 `draining` while the
/// server goes on serving, new connections included, so a load balancer can take it
/// out of rotation before the listener closes; what it answers then is durable. A
/// second signal still exits at once.
#[test]
fn during_the_shutdown_delay_readyz_is_503_and_leads_are_still_taken() {
    let dir = data_dir();
    // Only the second signal can end this delay soon.
    let mut server = Server::start_with(
        dir.path(),
        Options {
            args: &[],
            env: &[("LEADROUTE_SHUTDOWN_DELAY_SECS", "3600")],
        },
    );
    let api = Api {
        server: &server,
        token: None,
    };
    api.territory("east", &["CN-SH"], true);
    api.rep("a", "east", 5);
    assert_eq!(api.get("/readyz").status, 200);

    server.signal(libc::SIGTERM);
    // Every request below opens a connection of its own.
    eventually("readyz turns 503", || api.get("/readyz").status == 503);
    assert_eq!(api.get("/readyz").code(), "draining");
    let answered = api.lead(1, "CN-SH");
    assert_eq!(answered.status, 201, "{}", answered.text);
    assert_eq!(answered.json()["status"], "assigned");
    assert_eq!(api.get("/healthz").status, 200);
    eventually("the delay is logged", || {
        server
            .stderr()
            .contains("serving on for the shutdown delay")
    });
    assert!(
        !server.stderr().contains("draining requests in flight"),
        "the drain has not begun:\n{}",
        server.stderr()
    );

    server.signal(libc::SIGINT);
    assert_eq!(server.exit_status().code(), Some(130));
    let server = Server::start(dir.path());
    let api = Api {
        server: &server,
        token: None,
    };
    let id = answered.json()["lead_id"].as_str().unwrap().to_string();
    assert_eq!(api.get(&format!("/v1/leads/{id}")).status, 200);
    assert_eq!(api.get("/admin/reps/a").json()["load"], 1);
    assert!(server.terminate().success());
}

/// While draining, a second signal exits at once (status 130), as a crash would,
/// instead of waiting for the requests in flight; what was answered is kept.
#[test]
fn a_second_signal_while_draining_exits_at_once() {
    use std::io::{BufRead, BufReader, Write};

    let dir = data_dir();
    // Only the second signal can end this drain soon.
    let mut server = Server::start_with(
        dir.path(),
        Options {
            args: &[],
            env: &[("LEADROUTE_SHUTDOWN_TIMEOUT_SECS", "3600")],
        },
    );
    let api = Api {
        server: &server,
        token: None,
    };
    api.territory("east", &["CN-SH"], true);
    api.rep("a", "east", 5);
    let answered = api.lead(1, "CN-SH").json();
    assert_eq!(answered["status"], "assigned");

    // A request in flight: the handler has started reading its body (hyper answers
    // `100 Continue` exactly then), and the rest of the body never comes.
    let body = br#"{"phone": "+86 139 0000 0002"}"#;
    let mut conn = BufReader::new(std::net::TcpStream::connect(server.addr).unwrap());
    let head = format!(
        "POST /v1/leads HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    conn.get_mut().write_all(head.as_bytes()).unwrap();
    conn.get_mut().write_all(&body[..10]).unwrap();
    let mut line = String::new();
    conn.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 100"), "{line}");

    server.signal(libc::SIGTERM);
    eventually("the drain began", || {
        server
            .stderr()
            .contains("shutting down: draining requests in flight")
    });
    server.signal(libc::SIGINT);
    let status = server.exit_status();
    assert_eq!(status.code(), Some(130), "stderr:\n{}", server.stderr());
    assert!(
        server
            .stderr()
            .contains("second signal while draining: exiting without waiting"),
        "{}",
        server.stderr()
    );

    // The store survives it as it survives a crash.
    let server = Server::start(dir.path());
    let api = Api {
        server: &server,
        token: None,
    };
    let id = answered["lead_id"].as_str().unwrap();
    assert_eq!(api.get(&format!("/v1/leads/{id}")).status, 200);
    assert_eq!(api.get("/admin/reps/a").json()["load"], 1);
    assert!(server.terminate().success());
}
