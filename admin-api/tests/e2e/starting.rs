//! Start-up: while the store opens, the port already answers (`/healthz` 200,
//! everything else 503 `starting`); a signal that arrives meanwhile ends in a clean
//! exit once the store is open, and a second one exits at once.
//!
//! A second server on the same data dir is held in its opening phase by the first
//! one's store lock, so what happens while starting is seen for certain rather than
//! caught in a race. The first one lets go by SIGKILL, at once (the store survives it,
//! as it survives any crash).

use crate::harness::{Api, Server, data_dir, eventually};

/// The second server's environment: it waits for the lock far longer than any of
/// these tests runs (the harness's own deadlines end a stuck test first). With the
/// default ten seconds, a slow machine could see the wait run out before the test lets
/// the first server go or sends its signals, and the second server would fail to
/// start instead of showing what it does while starting.
const WAIT_FOR_THE_LOCK: &[(&str, &str)] = &[("LEADROUTE_STORE_LOCK_WAIT_SECS", "86400")];

/// A server with territory `east` and rep `a` on `dir`, holding its store.
fn holder(dir: &std::path::Path) -> Server {
    let server = Server::start(dir);
    let api = Api {
        server: &server,
        token: None,
    };
    api.territory("east", &["CN-SH"], true);
    api.rep("a", "east", 10);
    server
}

#[test]
fn the_port_answers_starting_until_the_store_is_open() {
    let dir = data_dir();
    let first = holder(dir.path());
    let second = Server::start_bound(dir.path(), WAIT_FOR_THE_LOCK);
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
    let r = api.lead(1, "CN-SH");
    assert_eq!((r.status, r.code().as_str()), (503, "starting"));
    assert_eq!(api.get("/admin/reps").code(), "starting");
    let r = api.post("/healthz", serde_json::json!({}));
    assert_eq!((r.status, r.code().as_str()), (503, "starting"));
    assert!(!second.stdout().contains("listening on"));
    // The log says why the start is not moving.
    eventually("the wait for the lock is logged", || {
        second.stderr().contains("the store is locked")
    });

    // The first server lets go of the store; the second opens it and is ready.
    first.sigkill();
    eventually("/readyz answers 200", || api.get("/readyz").status == 200);
    assert_eq!(
        second.stderr().matches("the store is locked").count(),
        1,
        "said once, not at every try"
    );
    // Scripts read stdout's first line for the address: it is still the only one.
    eventually("the listening line is read", || {
        second.stdout().contains("listening on")
    });
    assert_eq!(second.stdout(), format!("listening on {}\n", second.addr));
    // The lead answered `starting` was not taken: sent again, it is new.
    let r = api.lead(1, "CN-SH");
    assert_eq!(r.status, 201, "{r:?}");
    assert!(second.terminate().success());
}

#[test]
fn sigint_while_starting_ends_in_a_clean_exit_once_the_store_is_open() {
    let dir = data_dir();
    let first = holder(dir.path());
    let mut second = Server::start_bound(dir.path(), WAIT_FOR_THE_LOCK);
    second.signal(libc::SIGINT);
    eventually("the second server heard the signal", || {
        second
            .stderr()
            .contains("shutdown requested while starting")
    });

    first.sigkill();
    let status = second.exit_status();
    assert!(status.success(), "{status:?}; stderr:\n{}", second.stderr());
    assert_eq!(second.stdout(), "", "never ready, never announced");
    assert!(second.stderr().contains("engine stopped"));

    // It left the store whole and unlocked.
    let third = Server::start(dir.path());
    let api = Api {
        server: &third,
        token: None,
    };
    assert_eq!(api.get("/readyz").status, 200);
    assert_eq!(api.get("/admin/reps/a").status, 200);
    assert!(third.terminate().success());
}

#[test]
fn a_second_signal_while_starting_exits_at_once() {
    let dir = data_dir();
    let first = holder(dir.path());
    let mut second = Server::start_bound(dir.path(), WAIT_FOR_THE_LOCK);
    second.signal(libc::SIGTERM);
    eventually("the second server heard the first signal", || {
        second
            .stderr()
            .contains("shutdown requested while starting")
    });
    second.signal(libc::SIGTERM);
    // The first server still holds the store: only the second signal can end it.
    let status = second.exit_status();
    assert_eq!(status.code(), Some(130), "stderr:\n{}", second.stderr());
    assert!(
        second
            .stderr()
            .contains("exiting without waiting for the store")
    );
    assert!(first.terminate().success(), "the holder was not disturbed");
}
