//! The malicious-input catalogue: bodies built to break a parser or a validator, sent
//! to the real server. Each gets a specific 4xx with a JSON error — 400
//! `malformed_json` when the text is not JSON this server will read (syntax, numbers
//! past f64, nesting past the parser's limit, invalid UTF-8), 422 with the field when
//! it is JSON but not a valid body — and none changes anything: afterwards no lead
//! exists, no rep holds load, no queue holds a lead.

use serde_json::json;

use crate::harness::{Api, Resp, Server, data_dir, nothing_routed, raw};

const JSON: &str = "application/json";

/// One hostile request: what it is, its content type, its body, and the status and
/// error code it must get.
type Case = (
    &'static str,
    Option<&'static str>,
    Vec<u8>,
    u16,
    &'static str,
);

fn post(server: &Server, path: &str, content_type: Option<&str>, body: &[u8]) -> Resp {
    raw("POST", &server.url(path), None, content_type, Some(body))
}

/// Asserts a 4xx with a JSON error body carrying `code` (and the reason on failure).
fn refused(r: &Resp, status: u16, code: &str, what: &str) {
    assert_eq!(
        (r.status, r.code().as_str()),
        (status, code),
        "{what}: {}",
        r.text
    );
    assert!(
        r.json()["error"]["message"].is_string(),
        "{what}: {}",
        r.text
    );
}

#[test]
fn hostile_bodies_get_specific_errors_and_change_nothing() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let api = Api {
        server: &server,
        token: None,
    };
    api.territory("east", &["CN-SH"], true);
    api.rep("a", "east", 5);

    let lead = |extra: serde_json::Value| {
        let mut body = json!({"phone": "+86 139 0000 0001", "region": "CN-SH"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body.to_string().into_bytes()
    };
    let nested = (0..200).fold(json!(1), |v, _| json!([v]));
    let deep_object = (0..40).fold(json!(1), |v, _| json!({ "a": v }));
    let long_id = "x".repeat(10_000);

    let cases: Vec<Case> = vec![
        (
            "a number past f64",
            Some(JSON),
            br#"{"phone":"+86 139 0000 0001","purchase_amount":1e999}"#.to_vec(),
            400,
            "malformed_json",
        ),
        (
            "a negative amount",
            Some(JSON),
            lead(json!({"purchase_amount": -5})),
            422,
            "invalid_field",
        ),
        (
            "attributes nested past the parser's depth",
            Some(JSON),
            lead(json!({"attributes": {"deep": nested}})),
            400,
            "malformed_json",
        ),
        (
            "attributes nested past the cap",
            Some(JSON),
            lead(json!({"attributes": deep_object})),
            422,
            "invalid_field",
        ),
        (
            "a 10k-element array in attributes",
            Some(JSON),
            lead(json!({"attributes": {"list": vec![1u32; 10_000]}})),
            422,
            "invalid_field",
        ),
        (
            "invalid UTF-8",
            Some(JSON),
            b"{\"phone\":\"+86 139 0000 0001\",\"name\":\"\xff\xfe\"}".to_vec(),
            400,
            "malformed_json",
        ),
        (
            "a NUL byte in a field",
            Some(JSON),
            lead(json!({"name": "Dr.\u{0} Wang"})),
            422,
            "invalid_field",
        ),
        (
            "a very long external id",
            Some(JSON),
            lead(json!({"external_id": long_id})),
            422,
            "invalid_field",
        ),
        (
            "a region with a control character",
            Some(JSON),
            lead(json!({"region": "CN-SH\u{0}"})),
            422,
            "invalid_region",
        ),
        (
            "a duplicate key",
            Some(JSON),
            br#"{"phone":"+86 139 0000 0001","phone":"+86 139 0000 0002"}"#.to_vec(),
            422,
            "invalid_field",
        ),
        (
            "an unknown field",
            Some(JSON),
            lead(json!({"vip": true})),
            422,
            "unknown_field",
        ),
        (
            "a JSON array instead of an object",
            Some(JSON),
            b"[1,2,3]".to_vec(),
            422,
            "invalid_field",
        ),
        (
            "a lead written as an array of its fields",
            Some(JSON),
            br#" ["crm-1"]"#.to_vec(),
            422,
            "invalid_field",
        ),
        (
            "no content type",
            None,
            lead(json!({})),
            400,
            "wrong_content_type",
        ),
        (
            "a form body",
            Some("application/x-www-form-urlencoded"),
            b"phone=%2B86".to_vec(),
            400,
            "wrong_content_type",
        ),
        (
            "truncated JSON",
            Some(JSON),
            br#"{"phone":"+86 139"#.to_vec(),
            400,
            "malformed_json",
        ),
    ];
    for (what, content_type, body, status, code) in &cases {
        let r = post(&server, "/v1/leads", *content_type, body);
        refused(&r, *status, code, what);
    }

    // The same bodies inside a batch fail their own slot only, and store nothing.
    let r = post(
        &server,
        "/v1/leads/batch",
        Some(JSON),
        br#"{"leads":[{"phone":"1"},{"phone":"+86 139 0000 0001","vip":1},{"name":"x"}]}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let results = r.json()["results"].as_array().unwrap().clone();
    let codes: Vec<&str> = results
        .iter()
        .map(|x| x["error"]["code"].as_str().unwrap_or("none"))
        .collect();
    assert_eq!(codes, ["invalid_field", "unknown_field", "missing_contact"]);
    let too_many = json!({"leads": vec![json!({"phone": "+86 139 0000 0001"}); 1001]});
    let r = post(
        &server,
        "/v1/leads/batch",
        Some(JSON),
        too_many.to_string().as_bytes(),
    );
    assert_eq!(r.status, 422, "{}", r.text);

    // Hostile ids in paths.
    let r = api.get(&format!("/v1/leads/{}", "9".repeat(500)));
    assert_eq!(r.status, 404, "{}", r.text);
    let r = api.put(
        &format!("/admin/reps/{}", "r".repeat(65)),
        json!({"name": "x", "capacity": 1}),
    );
    refused(&r, 422, "invalid_id", "a 65-character rep id");

    // Nothing changed.
    let rep = api.get("/admin/reps/a").json();
    assert_eq!(rep["load"], 0, "{rep}");
    let territory = api.get("/admin/territories/east").json();
    assert_eq!(territory["queue_depth"], 0, "{territory}");
    let metrics = api.get("/metrics").text;
    assert!(nothing_routed(&metrics), "nothing was routed:\n{metrics}");
    // And the server still routes.
    assert_eq!(api.lead(1, "CN-SH").status, 201);
    assert!(server.terminate().success());
}
