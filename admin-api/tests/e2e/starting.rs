//! Start-up: while the store opens, the port already answers (`/healthz` 200,
//! everything else 503 `starting`), and a signal that arrives meanwhile ends in a
//! clean exit once the store is open.
//!
//! A second server on the same data dir is held in its opening phase by the first
//! one's store lock, which it waits for (up to 10 s), so what happens while starting
//! is seen for certain rather than caught in a race.

use serde_json::json;

use crate::harness::{Api, Server, data_dir, eventually};

#[test]
fn the_port_answers_starting_until_the_store_is_open() {
    let dir = data_dir();
    let first = Server::start(dir.path());
    let second = Server::start_bound(dir.path());
    let api = Api {
        server: &second,
        token: None,
    };

    assert_eq!(api.get("/healthz").status, 200);
    let r = api.get("/readyz");
    assert_eq!(
        (r.status, r.code().as_str(), r.retry_after.as_deref()),
        (503, "starting", Some("1")),
        "{}",
        r.text
    );
    let lead = json!({"contact": {"name": "Li Wei", "phone": "13800000001"}, "region": "CN-SH"});
    let r = api.post("/v1/leads", lead);
    assert_eq!((r.status, r.code().as_str()), (503, "starting"));
    assert_eq!(api.get("/admin/reps").code(), "starting");
    assert!(!second.stdout().contains("listening on"));

    // The first server lets go of the store; the second opens it and is ready.
    assert!(first.terminate().success());
    eventually("/readyz answers 200", || api.get("/readyz").status == 200);
    // Scripts read stdout's first line for the address: it is still the only one.
    eventually("the listening line is read", || {
        second.stdout().contains("listening on")
    });
    assert_eq!(second.stdout(), format!("listening on {}\n", second.addr));
    let metrics = api.get("/metrics").text;
    assert!(
        metrics.contains("leadroute_leads_received_total 0"),
        "the lead answered `starting` was not taken"
    );
    assert!(second.terminate().success());
}

#[test]
fn sigint_while_starting_ends_in_a_clean_exit_once_the_store_is_open() {
    let dir = data_dir();
    let first = Server::start(dir.path());
    let mut second = Server::start_bound(dir.path());
    second.signal(libc::SIGINT);
    eventually("the second server heard the signal", || {
        second
            .stderr()
            .contains("shutdown requested while starting")
    });

    assert!(first.terminate().success());
    let status = second.exit_status();
    assert!(status.success(), "{status:?}; stderr:\n{}", second.stderr());
    assert!(!second.stdout().contains("listening on"));
    assert!(second.stderr().contains("engine stopped"));

    // It left the store whole and unlocked.
    let third = Server::start(dir.path());
    let api = Api {
        server: &third,
        token: None,
    };
    assert_eq!(api.get("/readyz").status, 200);
    assert!(third.terminate().success());
}
