//! Webhook subscriptions over the admin API, and delivery surviving SIGKILL.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use leadroute_admin_api::webhooks::signature;
use serde_json::json;

use crate::harness::{Api, Options, Server, data_dir};
use crate::receiver::{Mode, Receiver};

const SECRET: &str = "whsec-e2e-0123456789";

#[test]
fn webhook_routes_round_trip_and_reject_bad_input() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let api = Api {
        server: &server,
        token: None,
    };
    let body = json!({"url": "http://127.0.0.1:9/hook", "events": ["lead.assigned"],
        "secret": SECRET});
    let created = api.put("/admin/webhooks/crm", body.clone());
    assert_eq!(created.status, 201, "{created:?}");
    let view = created.json();
    assert_eq!(view["webhook_id"], "crm");
    assert_eq!(view["events"], json!(["lead.assigned"]));
    assert_eq!(view["pending"], 0);
    assert!(view.get("secret").is_none(), "the secret is never shown");
    assert_eq!(api.put("/admin/webhooks/crm", body).status, 200);
    assert_eq!(
        api.get("/admin/webhooks").json().as_array().unwrap().len(),
        1
    );
    assert_eq!(
        api.get("/admin/webhooks/crm").json()["url"],
        "http://127.0.0.1:9/hook"
    );
    assert_eq!(
        api.get("/admin/webhooks/crm/dead_letters").json(),
        json!([])
    );

    for (bad, field) in [
        (
            json!({"url": "ftp://x/y", "events": ["lead.assigned"], "secret": SECRET}),
            "url",
        ),
        (
            json!({"url": "https://x/y", "events": ["lead.assigned"], "secret": SECRET}),
            "url",
        ),
        (
            json!({"url": " HTTPS://x/y", "events": ["lead.assigned"], "secret": SECRET}),
            "url",
        ),
        (
            json!({"url": "http://x/y", "events": [], "secret": SECRET}),
            "events",
        ),
        (
            json!({"url": "http://x/y", "events": ["lead.assigned"], "secret": "short"}),
            "secret",
        ),
    ] {
        let r = api.put("/admin/webhooks/bad", bad.clone());
        assert_eq!(r.status, 422, "{bad}: {r:?}");
        assert_eq!(r.field().as_deref(), Some(field), "{bad}: {r:?}");
    }
    let unknown_event = api.put(
        "/admin/webhooks/bad",
        json!({"url": "http://x/y", "events": ["lead.eaten"], "secret": SECRET}),
    );
    assert_eq!(unknown_event.status, 422, "{unknown_event:?}");
    let unknown_field = api.put(
        "/admin/webhooks/bad",
        json!({"url": "http://x/y", "events": ["lead.closed"], "secret": SECRET, "x": 1}),
    );
    assert_eq!(unknown_field.status, 422, "{unknown_field:?}");
    assert_eq!(api.get("/admin/webhooks/bad").code(), "webhook_not_found");
    assert_eq!(api.get("/admin/webhooks/bad/dead_letters").status, 404);
    assert_eq!(
        api.post("/admin/webhooks/bad/dead_letters/redrive", json!({}))
            .status,
        404
    );
    let redrive = api.post("/admin/webhooks/crm/dead_letters/redrive", json!({}));
    assert_eq!(
        (redrive.status, redrive.json()["redriven"].clone()),
        (202, json!(0))
    );

    assert_eq!(api.delete("/admin/webhooks/crm").status, 204);
    assert_eq!(api.get("/admin/webhooks/crm").status, 404);
    assert_eq!(api.delete("/admin/webhooks/crm").status, 404);
}

#[test]
fn undelivered_events_are_delivered_after_a_sigkill() {
    let dir = data_dir();
    // Refuses connections until the receiver listens on it, and no other test can
    // take the port meanwhile.
    let port = Receiver::reserve();
    let server = Server::start(dir.path());
    let api = Api {
        server: &server,
        token: None,
    };
    api.territory("east", &["CN-SH"], true);
    api.rep("a", "east", 100);
    api.rep("b", "east", 100);
    let hook = api.put(
        "/admin/webhooks/crm",
        json!({"url": port.url(), "events": ["lead.assigned"], "secret": SECRET}),
    );
    assert_eq!(hook.status, 201, "{hook:?}");
    // The receiver is down: every event waits in the outbox.
    let mut leads = BTreeSet::new();
    for n in 0..20 {
        let r = api.lead(n, "CN-SH");
        assert_eq!(r.status, 201, "{r:?}");
        leads.insert(r.json()["lead_id"].as_str().unwrap().to_string());
    }
    assert_eq!(api.get("/admin/webhooks/crm").json()["pending"], 20);
    drop(server); // SIGKILL

    let receiver = Receiver::start_on(port);
    let server = Server::start(dir.path());
    let got = receiver.wait_for(20, Duration::from_secs(30));
    let mut delivered = BTreeSet::new();
    for d in &got {
        assert!(
            signature::verify(SECRET, d.header("leadroute-signature"), &d.body).is_some(),
            "signed"
        );
        delivered.insert(d.json()["data"]["lead_id"].as_str().unwrap().to_string());
    }
    assert_eq!(delivered, leads, "every acknowledged lead's event arrived");
    assert_eq!(server.terminate().code(), Some(0));
}

#[test]
fn dead_letters_are_listed_and_redriven_over_the_api() {
    let dir = data_dir();
    let receiver = Receiver::start();
    receiver.set_mode(Mode::Fail(503));
    // One attempt per event: the first failure parks it, no backoff to wait out.
    let server = Server::start_with(
        dir.path(),
        Options {
            args: &[],
            env: &[("LEADROUTE_WEBHOOK_MAX_ATTEMPTS", "1")],
        },
    );
    let api = Api {
        server: &server,
        token: None,
    };
    api.territory("east", &["CN-SH"], true);
    api.rep("a", "east", 10);
    let hook = api.put(
        "/admin/webhooks/crm",
        json!({"url": receiver.url(), "events": ["lead.assigned"], "secret": SECRET}),
    );
    assert_eq!(hook.status, 201, "{hook:?}");
    let lead = api.lead(1, "CN-SH").json()["lead_id"].clone();

    let deadline = Instant::now() + Duration::from_secs(20);
    let letters = loop {
        let letters = api.get("/admin/webhooks/crm/dead_letters").json();
        if letters.as_array().unwrap().len() == 1 {
            break letters;
        }
        assert!(Instant::now() < deadline, "no dead letter: {letters}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(letters[0]["event"]["data"]["lead_id"], lead);
    assert_eq!(letters[0]["attempts"], 1);
    assert!(letters[0]["last_error"].as_str().unwrap().contains("503"));
    assert_eq!(api.get("/admin/webhooks/crm").json()["dead_letters"], 1);

    receiver.set_mode(Mode::Accept);
    let redrive = api.post("/admin/webhooks/crm/dead_letters/redrive", json!({}));
    assert_eq!(
        (redrive.status, redrive.json()["redriven"].clone()),
        (202, json!(1))
    );
    let got = receiver.wait_for(1, Duration::from_secs(20));
    assert_eq!(got[0].json()["data"]["lead_id"], lead);
    assert_eq!(got[0].json()["id"], letters[0]["event"]["id"]);
    loop {
        if api.get("/admin/webhooks/crm").json()["dead_letters"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "dead letter not cleared");
        std::thread::sleep(Duration::from_millis(20));
    }
}
