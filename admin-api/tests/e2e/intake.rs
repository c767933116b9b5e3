//! Intake, lead reads, lifecycle events, batches, and every intake rejection.

use serde_json::{Value, json};

use crate::harness::{Api, Server, data_dir, eventually, head_only, nothing_routed, raw};

/// A server with territory `east` (CN-SH, default) and reps `a` (capacity 1) and `b`
/// (capacity 1).
fn two_reps(dir: &std::path::Path) -> Server {
    let server = Server::start(dir);
    let api = Api {
        server: &server,
        token: None,
    };
    api.territory("east", &["CN-SH"], true);
    api.rep("a", "east", 1);
    api.rep("b", "east", 1);
    server
}

#[test]
fn leads_are_assigned_then_queued_and_duplicates_answer_200() {
    let dir = data_dir();
    let server = two_reps(dir.path());
    let api = Api {
        server: &server,
        token: None,
    };

    let first = api.lead(1, "CN-SH-PD");
    assert_eq!(first.status, 201, "{first:?}");
    let first = first.json();
    assert_eq!(first["status"], "assigned");
    assert_eq!(first["territory_id"], "east");
    assert!(
        first["decided_by"]
            .as_str()
            .unwrap()
            .starts_with("builtin:")
    );
    assert!(first["fallback"].is_null() && first["duplicate_of"].is_null());
    assert_eq!(first["candidates"].as_array().unwrap().len(), 2);
    let first_rep = first["rep_id"].as_str().unwrap().to_string();

    let second = api.lead(2, "CN-SH");
    assert_eq!(second.status, 201);
    assert_ne!(
        second.json()["rep_id"],
        first["rep_id"],
        "least loaded spreads"
    );

    let third = api.lead(3, "CN-SH");
    assert_eq!(third.status, 202, "nobody has room: {third:?}");
    let third = third.json();
    assert_eq!(third["status"], "queued");
    assert!(third["rep_id"].is_null());

    // Same phone in another notation, different e-mail: a duplicate of the first.
    let dup = api.post(
        "/v1/leads",
        json!({"phone": "+8613900000001", "email": "x@example.cn", "region": "CN-SH"}),
    );
    assert_eq!(dup.status, 200, "{dup:?}");
    let dup = dup.json();
    assert_eq!(dup["status"], "duplicate");
    assert_eq!(dup["lead_id"], first["lead_id"]);
    assert_eq!(dup["duplicate_of"], first["lead_id"]);
    assert_eq!(dup["rep_id"], first_rep.as_str());

    let territory = api.get("/admin/territories/east").json();
    assert_eq!(territory["queue_depth"], 1);
    let loads = member_loads(&territory);
    assert_eq!(loads, [1, 1], "the duplicate took no load");

    let lead = api.get(&format!("/v1/leads/{}", first["lead_id"].as_str().unwrap()));
    assert_eq!(lead.status, 200);
    let lead = lead.json();
    assert_eq!(lead["status"], "assigned");
    assert_eq!(lead["rep_id"], first_rep.as_str());
    assert_eq!(lead["region"], "CN-SH-PD");
    let history = lead["history"].as_array().unwrap();
    assert_eq!(history[0]["type"], "routed");
    assert_eq!(history[0]["candidates"][0]["load"], 0);
    assert!(history[0]["at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(history[1]["type"], "duplicate");
    assert_eq!(lead["repeats"], 1);
    assert!(lead["last_repeat_at"].as_str().unwrap().ends_with('Z'));
    let queued_view = api.get(&format!("/v1/leads/{}", third["lead_id"].as_str().unwrap()));
    assert_eq!(queued_view.json()["repeats"], 0);
    assert!(queued_view.json()["last_repeat_at"].is_null());

    let queued = api.get(&format!("/v1/leads/{}", third["lead_id"].as_str().unwrap()));
    assert_eq!(queued.json()["status"], "queued");
    assert_eq!(queued.json()["history"][0]["type"], "queued");
}

#[test]
fn lifecycle_events_follow_the_stage_order() {
    let dir = data_dir();
    let server = two_reps(dir.path());
    let api = Api {
        server: &server,
        token: None,
    };
    let id = api.lead(10, "CN-SH").json()["lead_id"]
        .as_str()
        .unwrap()
        .to_string();
    let events = format!("/v1/leads/{id}/events");

    let r = api.post(&events, json!({"type": "stage", "stage": "demo"}));
    assert_eq!((r.status, r.code().as_str()), (409, "stage_order"));
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("first_contact")
    );

    let r = api.post(&events, json!({"type": "touched"}));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["stage"], "first_contact");
    assert!(r.json()["touched_at"].is_string());

    let r = api.post(
        &events,
        json!({"type": "stage", "stage": "needs_diagnosis"}),
    );
    assert_eq!(r.status, 200);
    // Skipping `demo` is refused, and the message names the expected stage.
    let r = api.post(&events, json!({"type": "stage", "stage": "quote_sent"}));
    assert_eq!((r.status, r.code().as_str()), (409, "stage_order"));
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("demo")
    );
    // Going back is refused too.
    let r = api.post(&events, json!({"type": "stage", "stage": "first_contact"}));
    assert_eq!(r.status, 409);

    for stage in [
        "demo",
        "objection_handling",
        "quote_sent",
        "contract_signed",
    ] {
        let r = api.post(&events, json!({"type": "stage", "stage": stage}));
        assert_eq!(r.status, 200, "{stage}: {r:?}");
    }
    let lead = api.get(&format!("/v1/leads/{id}")).json();
    assert_eq!(lead["status"], "closed");
    assert_eq!(lead["outcome"], "won");
    assert!(lead["rep_id"].is_string(), "the lead remembers who won it");
    let kinds = history_kinds(&lead);
    assert_eq!(
        kinds,
        [
            "routed", "touched", "stage", "stage", "stage", "stage", "stage", "closed"
        ]
    );

    let r = api.post(&events, json!({"type": "closed", "outcome": "lost"}));
    assert_eq!((r.status, r.code().as_str()), (409, "lead_closed"));
    // Closing freed the rep: its load is back to 0.
    let reps = api.get("/admin/reps").json();
    assert!(
        reps.as_array().unwrap().iter().all(|r| r["load"] == 0),
        "{reps}"
    );

    let r = api.post(
        "/v1/leads/01ARZ3NDEKTSV4RRFFQ69G5FAV/events",
        json!({"type": "touched"}),
    );
    assert_eq!((r.status, r.code().as_str()), (404, "lead_not_found"));
    let r = api.get("/v1/leads/01ARZ3NDEKTSV4RRFFQ69G5FAV");
    assert_eq!((r.status, r.code().as_str()), (404, "lead_not_found"));
    let r = api.get("/v1/leads/not-a-lead-id");
    assert_eq!((r.status, r.code().as_str()), (404, "lead_not_found"));
    let r = api.post(&events, json!({"type": "teleported"}));
    assert_eq!(r.status, 422);
    let r = api.post(&events, json!({"type": "touched", "stage": "demo"}));
    assert_eq!((r.status, r.field().as_deref()), (422, Some("stage")));
}

#[test]
fn a_queued_lead_refuses_touches_and_stages_but_can_be_closed() {
    let dir = data_dir();
    let server = two_reps(dir.path());
    let api = Api {
        server: &server,
        token: None,
    };
    assert_eq!(api.lead(1, "CN-SH").status, 201);
    assert_eq!(api.lead(2, "CN-SH").status, 201);
    let queued = api.lead(3, "CN-SH");
    assert_eq!(queued.status, 202, "{queued:?}");
    let id = queued.json()["lead_id"].as_str().unwrap().to_string();
    let events = format!("/v1/leads/{id}/events");

    // Nobody owns it, so nobody can have touched it or moved it along.
    let r = api.post(&events, json!({"type": "touched"}));
    assert_eq!((r.status, r.code().as_str()), (409, "lead_not_assigned"));
    let r = api.post(&events, json!({"type": "stage", "stage": "first_contact"}));
    assert_eq!((r.status, r.code().as_str()), (409, "lead_not_assigned"));
    let lead = api.get(&format!("/v1/leads/{id}")).json();
    assert_eq!(lead["status"], "queued", "the refusals changed nothing");
    assert_eq!(api.get("/admin/territories/east").json()["queue_depth"], 1);

    // Closing it is allowed: it leaves the queue without taking anyone's load.
    let r = api.post(&events, json!({"type": "closed", "outcome": "lost"}));
    assert_eq!(r.status, 200, "{r:?}");
    let closed = r.json();
    assert_eq!(closed["status"], "closed");
    assert_eq!(closed["outcome"], "lost");
    assert!(closed["rep_id"].is_null(), "{closed}");
    let kinds = history_kinds(&closed);
    assert_eq!(kinds, ["queued", "closed"]);
    let territory = api.get("/admin/territories/east").json();
    assert_eq!(territory["queue_depth"], 0, "{territory}");
    let loads = member_loads(&territory);
    assert_eq!(loads, [1, 1], "the reps keep their own leads only");

    let r = api.post(&events, json!({"type": "closed", "outcome": "lost"}));
    assert_eq!((r.status, r.code().as_str()), (409, "lead_closed"));
}

#[test]
fn a_region_that_is_no_code_is_kept_and_goes_to_the_default_territory() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let api = Api {
        server: &server,
        token: None,
    };
    api.territory("east", &["CN-SH"], false);
    api.territory("other", &[], true);
    api.rep("a", "east", 5);
    api.rep("z", "other", 5);

    // A code is upper-cased and matched by prefix.
    let r = api.lead(1, " cn-sh-pd ");
    assert_eq!((r.status, &r.json()["territory_id"]), (201, &json!("east")));
    let id = r.json()["lead_id"].as_str().unwrap().to_string();
    assert_eq!(
        api.get(&format!("/v1/leads/{id}")).json()["region"],
        "CN-SH-PD"
    );
    // Free text, even text that starts like a code, is unmatched: the default
    // territory takes the lead, and the lead keeps the text as given.
    for (n, region) in [(2, "Shanghai, China"), (3, "CN-SH PD"), (4, "上海")] {
        let r = api.lead(n, region);
        assert_eq!(r.status, 201, "{region}: {r:?}");
        assert_eq!(r.json()["territory_id"], "other", "{region}");
        let id = r.json()["lead_id"].as_str().unwrap().to_string();
        assert_eq!(api.get(&format!("/v1/leads/{id}")).json()["region"], region);
    }
    // An empty region is a missing one.
    let r = api.lead(5, "  ");
    assert_eq!(
        (r.status, &r.json()["territory_id"]),
        (201, &json!("other"))
    );
}

#[test]
fn every_intake_rejection_is_a_json_error_and_changes_nothing() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let api = Api {
        server: &server,
        token: None,
    };
    // No territory at all yet: a valid lead has nowhere to go.
    let r = api.lead(1, "CN-SH");
    assert_eq!((r.status, r.code().as_str()), (422, "no_territory"));

    api.territory("east", &["CN-SH"], false);
    api.rep("a", "east", 5);
    let r = api.lead(2, "CN-ZJ");
    assert_eq!(
        (r.status, r.code().as_str()),
        (422, "no_territory"),
        "unmatched region and no default territory"
    );
    assert_eq!(r.field().as_deref(), Some("region"));
    // A simulation nests the lead, and names the field where it is.
    let r = api.post(
        "/admin/simulate",
        json!({"lead": {"phone": "+86 139 0000 0002", "region": "CN-ZJ"}}),
    );
    assert_eq!((r.status, r.code().as_str()), (422, "no_territory"));
    assert_eq!(r.field().as_deref(), Some("lead.region"));

    let url = server.url("/v1/leads");
    let r = raw(
        "POST",
        &url,
        None,
        Some("application/json"),
        Some(b"{\"phone\": "),
    );
    assert_eq!((r.status, r.code().as_str()), (400, "malformed_json"));
    let r = raw(
        "POST",
        &url,
        None,
        Some("text/plain"),
        Some(br#"{"phone":"+86 139 0000 0003"}"#),
    );
    assert_eq!((r.status, r.code().as_str()), (400, "wrong_content_type"));

    let r = api.post(
        "/v1/leads",
        json!({"phone": "+86 139 0000 0004", "region": "CN-SH", "colour": "red"}),
    );
    assert_eq!((r.status, r.code().as_str()), (422, "unknown_field"));
    assert_eq!(r.field().as_deref(), Some("colour"));

    let r = api.post("/v1/leads", json!({"name": "Dr. Wang", "region": "CN-SH"}));
    assert_eq!((r.status, r.code().as_str()), (422, "missing_contact"));

    let r = api.post("/v1/leads", json!({"phone": "12", "region": "CN-SH"}));
    assert_eq!((r.status, r.field().as_deref()), (422, Some("phone")));
    let r = api.post(
        "/v1/leads",
        json!({"phone": "+86 139 0000 0005", "region": "CN/SH"}),
    );
    assert_eq!(
        (r.status, r.code().as_str()),
        (422, "no_territory"),
        "a region that is no code matches no territory, and there is no default"
    );
    let r = api.post(
        "/v1/leads",
        json!({"phone": "+86 139 0000 0005", "region": "CN\u{7}SH"}),
    );
    assert_eq!((r.status, r.code().as_str()), (422, "invalid_region"));
    let r = api.post("/v1/leads", json!({"phone": 13900000005u64}));
    assert_eq!((r.status, r.code().as_str()), (422, "invalid_field"));

    // Over the 64 KiB JSON limit: refused on the declared length, before the body.
    let r = head_only(
        &server,
        "POST",
        "/v1/leads",
        None,
        "application/json",
        70 * 1024,
    );
    assert_eq!((r.status, r.code().as_str()), (413, "body_too_large"));
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("65536")
    );
    // Just under it, the body is read (and judged on its content).
    let r = head_only(
        &server,
        "POST",
        "/v1/leads",
        None,
        "application/json",
        64 * 1024,
    );
    assert_eq!(r.status, 100, "the server asks for a body within the limit");

    // A batch has a limit of its own, 8 MiB (1000 leads do not fit in 64 KiB).
    let batch_limit = 8 * 1024 * 1024;
    let r = head_only(
        &server,
        "POST",
        "/v1/leads/batch",
        None,
        "application/json",
        batch_limit + 1,
    );
    assert_eq!((r.status, r.code().as_str()), (413, "body_too_large"));
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&batch_limit.to_string())
    );
    let r = head_only(
        &server,
        "POST",
        "/v1/leads/batch",
        None,
        "application/json",
        batch_limit,
    );
    assert_eq!(r.status, 100, "a batch within its limit is read");

    let r = api.get("/v1/nothing-here");
    assert_eq!((r.status, r.code().as_str()), (404, "route_not_found"));
    let r = api.delete("/v1/leads");
    assert_eq!((r.status, r.code().as_str()), (405, "method_not_allowed"));

    // None of that stored a lead or took load.
    let rep = api.get("/admin/reps/a").json();
    assert_eq!(rep["load"], 0);
    let metrics = api.get("/metrics").text;
    assert!(nothing_routed(&metrics), "nothing was routed:\n{metrics}");
}

#[test]
fn batches_answer_per_lead_in_order() {
    let dir = data_dir();
    let server = two_reps(dir.path());
    let api = Api {
        server: &server,
        token: None,
    };
    let r = api.post(
        "/v1/leads/batch",
        json!({"leads": [
            {"phone": "+86 139 0000 0001", "region": "CN-SH"},
            {"name": "no contact"},
            {"phone": "+86 139 0000 0002", "colour": "red"},
            {"phone": "+86 139 0000 0003"},
            {"phone": "+86 139 0000 0004"},
            {"phone": "+86 139 0000 0001"},
        ]}),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let results = r.json()["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 6);
    assert_eq!(results[0]["status"], "assigned");
    assert_eq!(results[1]["error"]["code"], "missing_contact");
    assert_eq!(results[1]["error"]["field"], "leads[1].external_id");
    assert_eq!(results[2]["error"]["code"], "unknown_field");
    assert_eq!(results[2]["error"]["field"], "leads[2].colour");
    assert_eq!(results[3]["status"], "assigned");
    assert_eq!(results[4]["status"], "queued");
    assert_eq!(results[5]["status"], "duplicate");
    assert_eq!(results[5]["duplicate_of"], results[0]["lead_id"]);

    let r = api.post("/v1/leads/batch", json!({"leads": vec![json!({}); 1001]}));
    assert_eq!((r.status, r.code().as_str()), (422, "too_many_leads"));
    let r = api.post("/v1/leads/batch", json!({"lead": []}));
    assert_eq!((r.status, r.code().as_str()), (422, "unknown_field"));

    // A full batch is far over the 64 KiB JSON limit and within the batch limit.
    let leads: Vec<_> = (0..1000)
        .map(|n| {
            json!({"external_id": format!("crm-{n}"), "name": "Someone with a long name",
            "company": "A company with a long name, too", "region": "CN-SH"})
        })
        .collect();
    let body = json!({ "leads": leads });
    assert!(body.to_string().len() > 64 * 1024);
    let r = api.post("/v1/leads/batch", body);
    assert_eq!(r.status, 200);
    let results = r.json()["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 1000);
    assert!(
        results.iter().all(|r| r["status"] == "queued"),
        "the reps are full"
    );
}

/// The `type` of each history entry of a lead view, in order.
/// The load of each member of a territory view, in its order.
fn member_loads(territory: &Value) -> Vec<u64> {
    territory["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["load"].as_u64().unwrap())
        .collect()
}

fn history_kinds(lead: &Value) -> Vec<&str> {
    lead["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["type"].as_str().unwrap())
        .collect()
}

#[test]
fn closing_an_assigned_lead_hands_its_room_to_the_queue_also_after_a_restart() {
    let dir = data_dir();
    let server = two_reps(dir.path());
    let api = Api {
        server: &server,
        token: None,
    };
    let assigned: Vec<Value> = (1..=2).map(|n| api.lead(n, "CN-SH").json()).collect();
    let queued: Vec<String> = (3..=4)
        .map(|n| {
            let r = api.lead(n, "CN-SH");
            assert_eq!(r.status, 202, "{r:?}");
            r.json()["lead_id"].as_str().unwrap().to_string()
        })
        .collect();
    let close = |api: &Api<'_>, lead: &Value, outcome: &str| {
        let id = lead["lead_id"].as_str().unwrap();
        let r = api.post(
            &format!("/v1/leads/{id}/events"),
            json!({"type": "closed", "outcome": outcome}),
        );
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.json()["outcome"], outcome);
    };
    // The queue is served in the background once the close is in: wait for it.
    let assigned_to = |api: &Api<'_>, id: &str, rep: &Value| {
        eventually(&format!("{id} assigned to {rep}"), || {
            let lead = api.get(&format!("/v1/leads/{id}")).json();
            lead["status"] == "assigned" && lead["rep_id"] == *rep
        });
        let lead = api.get(&format!("/v1/leads/{id}")).json();
        assert_eq!(history_kinds(&lead)[0], "queued", "{lead}");
        assert!(history_kinds(&lead).contains(&"routed"), "{lead}");
    };

    close(&api, &assigned[0], "won");
    assigned_to(&api, &queued[0], &assigned[0]["rep_id"]);
    let later = api.get(&format!("/v1/leads/{}", queued[1])).json();
    assert_eq!(later["status"], "queued", "first in, first served");
    assert_eq!(api.get("/admin/territories/east").json()["queue_depth"], 1);

    assert!(server.terminate().success());
    let server = Server::start(dir.path());
    let api = Api {
        server: &server,
        token: None,
    };
    assert_eq!(api.get("/admin/territories/east").json()["queue_depth"], 1);
    close(&api, &assigned[1], "lost");
    assigned_to(&api, &queued[1], &assigned[1]["rep_id"]);
    let territory = api.get("/admin/territories/east").json();
    assert_eq!(territory["queue_depth"], 0, "{territory}");
    let loads = member_loads(&territory);
    assert_eq!(loads, [1, 1], "each rep holds the lead the queue gave it");
}
