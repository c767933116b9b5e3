//! Router-level tests without a socket (`oneshot`): the OpenAPI document against the
//! routes served, extractor rejections, readiness, and `run`'s shutdown.

use std::collections::BTreeSet;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use leadroute_admin_api::auth::{Auth, Token};
use leadroute_admin_api::config::Limits;
use leadroute_admin_api::{AppState, app};
use leadroute_engine::{Engine, EngineConfig};
use serde_json::Value;
use tower::ServiceExt;

#[path = "common/catalogue.rs"]
mod catalogue;

/// Every route of the HTTP contract, plus the operations routes.
const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/leads"),
    ("POST", "/v1/leads/batch"),
    ("GET", "/v1/leads/{lead_id}"),
    ("POST", "/v1/leads/{lead_id}/events"),
    ("GET", "/admin/reps"),
    ("PUT", "/admin/reps/{rep_id}"),
    ("GET", "/admin/reps/{rep_id}"),
    ("DELETE", "/admin/reps/{rep_id}"),
    ("GET", "/admin/territories"),
    ("PUT", "/admin/territories/{territory_id}"),
    ("GET", "/admin/territories/{territory_id}"),
    ("POST", "/admin/simulate"),
    ("GET", "/admin/plugins"),
    ("PUT", "/admin/plugins/{name}"),
    ("GET", "/admin/plugins/{name}"),
    ("DELETE", "/admin/plugins/{name}"),
    ("POST", "/admin/plugins/{name}/activate"),
    ("GET", "/admin/webhooks"),
    ("PUT", "/admin/webhooks/{webhook_id}"),
    ("GET", "/admin/webhooks/{webhook_id}"),
    ("DELETE", "/admin/webhooks/{webhook_id}"),
    ("GET", "/admin/webhooks/{webhook_id}/dead_letters"),
    ("POST", "/admin/webhooks/{webhook_id}/dead_letters/redrive"),
    ("POST", "/admin/plugins/{name}/versions/{version}/replay"),
    ("POST", "/admin/backups"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
];

struct Fixture {
    state: AppState,
    _dir: tempfile::TempDir,
}

fn fixture(auth: Auth, limits: Limits) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(EngineConfig::new(dir.path())).unwrap();
    Fixture {
        state: AppState::new(engine, auth, limits),
        _dir: dir,
    }
}

/// A fixture whose server requires the admin and intake tokens.
fn with_tokens() -> Fixture {
    fixture(
        Auth {
            admin: Some(Token::new("admin-token-0123456789")),
            intake: Some(Token::new("intake-token-0123456789")),
        },
        Limits::default(),
    )
}

fn open() -> Fixture {
    fixture(Auth::default(), Limits::default())
}

/// `leadroute_admin_api::run` with `state` on an ephemeral port of 127.0.0.1, draining
/// for at most `drain` once the sender is used: the address, the sender, the task.
async fn serve(
    state: &AppState,
    drain: std::time::Duration,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(leadroute_admin_api::run(
        listener,
        state.clone(),
        async {
            let _ = stopped.await;
        },
        drain,
    ));
    (addr, stop, server)
}

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, Value) {
    let response = app.clone().oneshot(req).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    catalogue::assert_documented(status.as_u16(), &bytes);
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, body)
}

fn request(method: &str, uri: &str, content_type: Option<&str>, body: &str) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(ct) = content_type {
        b = b.header(header::CONTENT_TYPE, ct);
    }
    b.body(Body::from(body.to_string())).unwrap()
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn the_openapi_document_covers_exactly_the_routes_served() {
    let f = open();
    let app = app(f.state.clone());
    let (status, doc) = send(&app, request("GET", "/openapi.json", None, "")).await;
    assert_eq!(status, 200);

    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    let expected: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, expected);

    // The answers every route of a kind can give are documented on each: a body over
    // its limit (413), and for admin writes the 503s of a busy or failing store.
    for (method, path) in &documented {
        let op = &doc["paths"][path.as_str()][method.to_lowercase()];
        let responses = op["responses"].as_object().unwrap();
        if op["requestBody"]["content"]["application/json"].is_object() {
            assert!(responses.contains_key("413"), "{method} {path}: no 413");
        }
        if path.starts_with("/admin/") && matches!(method.as_str(), "PUT" | "DELETE") {
            assert!(responses.contains_key("503"), "{method} {path}: no 503");
        }
    }

    // Every documented operation is served (the router's own 404/405 never answer),
    // and on a documented path no undocumented method is.
    for (method, path) in &documented {
        let uri = path
            .replace("{lead_id}", "01ARZ3NDEKTSV4RRFFQ69G5FAV")
            .replace("{rep_id}", "r")
            .replace("{territory_id}", "t")
            .replace("{name}", "p")
            .replace("{webhook_id}", "w")
            .replace("{version}", "1");
        let (_, body) = send(&app, request(method, &uri, Some("application/json"), "{}")).await;
        assert!(
            !matches!(code(&body), "route_not_found" | "method_not_allowed"),
            "{method} {path} is documented but not served: {body}"
        );
        for other in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
            if documented.contains(&(other.to_string(), path.clone())) {
                continue;
            }
            let (status, body) = send(&app, request(other, &uri, None, "")).await;
            assert_eq!(
                (status, code(&body)),
                (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
                "{other} {path} is served but not documented"
            );
        }
    }

    // Every operation says what it answers, errors included.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            assert!(
                op["responses"]["200"].is_object()
                    || op["responses"]["201"].is_object()
                    || op["responses"]["202"].is_object()
                    || op["responses"]["204"].is_object(),
                "{method} {path}"
            );
            if path.starts_with("/v1") || path.starts_with("/admin") {
                assert!(
                    op["responses"]["401"].is_object(),
                    "{method} {path} documents 401"
                );
                assert!(
                    op["security"].is_array(),
                    "{method} {path} documents its token"
                );
            }
        }
    }
}

#[tokio::test]
async fn extractor_rejections_are_json_errors() {
    let f = fixture(
        Auth::default(),
        Limits {
            json_body_bytes: 1024,
            ..Limits::default()
        },
    );
    let app = app(f.state.clone());
    let json = Some("application/json");

    let (status, body) = send(&app, request("POST", "/v1/leads", json, "{\"phone\":")).await;
    assert_eq!((status.as_u16(), code(&body)), (400, "malformed_json"));
    let (status, body) = send(&app, request("POST", "/v1/leads", json, "{} []")).await;
    assert_eq!((status.as_u16(), code(&body)), (400, "malformed_json"));
    let (status, body) = send(&app, request("POST", "/v1/leads", None, "{}")).await;
    assert_eq!((status.as_u16(), code(&body)), (400, "wrong_content_type"));
    let (status, body) = send(
        &app,
        request(
            "POST",
            "/v1/leads",
            Some("application/x-www-form-urlencoded"),
            "a=b",
        ),
    )
    .await;
    assert_eq!((status.as_u16(), code(&body)), (400, "wrong_content_type"));

    let big = format!("{{\"name\": \"{}\"}}", "x".repeat(2000));
    let (status, body) = send(&app, request("POST", "/v1/leads", json, &big)).await;
    assert_eq!((status.as_u16(), code(&body)), (413, "body_too_large"));
    assert!(body["error"]["message"].as_str().unwrap().contains("1024"));

    let (status, body) = send(
        &app,
        request(
            "PUT",
            "/admin/territories/t",
            json,
            r#"{"name":"T","strategy":{"builtin":"rules","x":1}}"#,
        ),
    )
    .await;
    assert_eq!((status.as_u16(), code(&body)), (422, "unknown_field"));
    assert_eq!(body["error"]["field"], "strategy.x");

    let (status, body) = send(&app, request("GET", "/admin/reps/%FF", None, "")).await;
    assert_eq!((status.as_u16(), code(&body)), (400, "invalid_path"));
    let (status, body) = send(
        &app,
        request("DELETE", "/admin/reps/r?reassign=yes", None, ""),
    )
    .await;
    assert_eq!((status.as_u16(), code(&body)), (400, "invalid_query"));
    let (status, body) = send(&app, request("GET", "/nowhere", None, "")).await;
    assert_eq!((status.as_u16(), code(&body)), (404, "route_not_found"));
}

#[tokio::test]
async fn structs_written_as_arrays_are_refused_and_store_nothing() {
    let f = open();
    let app = app(f.state.clone());
    let json = Some("application/json");
    // serde's derive would read `["crm-1"]` as a lead whose external id is `crm-1`.
    let (status, body) = send(
        &app,
        request(
            "POST",
            "/v1/leads/batch",
            json,
            r#"{"leads":[["crm-1"], {}]}"#,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let first = &body["results"][0]["error"];
    assert_eq!(
        (first["code"].as_str(), first["field"].as_str()),
        (Some("invalid_field"), Some("leads[0]"))
    );
    assert_eq!(body["results"].as_array().map(Vec::len), Some(2));
    for (uri, text, field) in [
        ("/admin/simulate", r#"{"lead":["crm-1"]}"#, "lead"),
        (
            "/admin/simulate",
            r#"{"lead":{},"plugin":["p",1]}"#,
            "plugin",
        ),
        (
            "/admin/territories/t",
            r#"{"name":"T","strategy":["rules"]}"#,
            "strategy",
        ),
        (
            "/admin/territories/t",
            r#"{"name":"T","shadow":["p",1]}"#,
            "shadow",
        ),
    ] {
        let method = if uri.starts_with("/admin/territories") {
            "PUT"
        } else {
            "POST"
        };
        let (status, body) = send(&app, request(method, uri, json, text)).await;
        assert_eq!(
            (status.as_u16(), code(&body)),
            (422, "invalid_field"),
            "{text}"
        );
        assert_eq!(body["error"]["field"], field, "{text}");
    }
    assert!(f.state.engine.territories().await.unwrap().is_empty());
}

/// A batch of a million tiny leads fits in the batch body limit; it is refused by its
/// count, its leads past the limit counted without being kept.
#[tokio::test]
async fn an_oversized_batch_is_refused_by_its_count() {
    let f = open();
    let app = app(f.state.clone());
    let leads = vec!["{}"; 1_000_000].join(",");
    let text = format!(r#"{{"leads":[{leads}]}}"#);
    assert!(text.len() < Limits::default().batch_body_bytes);
    let (status, body) = send(
        &app,
        request("POST", "/v1/leads/batch", Some("application/json"), &text),
    )
    .await;
    assert_eq!((status.as_u16(), code(&body)), (422, "too_many_leads"));
    assert_eq!(body["error"]["field"], "leads");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("this one has 1000000"), "{message}");
}

#[tokio::test]
async fn auth_rejections_are_json_errors() {
    let f = with_tokens();
    let app = app(f.state.clone());
    let (status, body) = send(&app, request("GET", "/admin/reps", None, "")).await;
    assert_eq!((status.as_u16(), code(&body)), (401, "unauthorized"));
    let req = Request::builder()
        .uri("/admin/reps")
        .header(header::AUTHORIZATION, "Bearer intake-token-0123456789")
        .body(Body::empty())
        .unwrap();
    let (status, body) = send(&app, req).await;
    assert_eq!((status.as_u16(), code(&body)), (403, "forbidden"));
}

#[tokio::test]
async fn which_routes_exist_is_not_told_before_auth() {
    let f = with_tokens();
    let app = app(f.state.clone());
    let as_token = |method: &str, uri: &str, token: Option<&str>| {
        let mut b = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        b.body(Body::empty()).unwrap()
    };
    let intake = Some("intake-token-0123456789");
    let admin = Some("admin-token-0123456789");
    // (method, path, token) → what it answers: an unknown path and a wrong method
    // under a group answer like its routes until the token is good for the group.
    let cases = [
        ("GET", "/admin/no-such-route", None, 401, "unauthorized"),
        ("PATCH", "/admin/reps", None, 401, "unauthorized"),
        ("GET", "/admin/no-such-route", intake, 403, "forbidden"),
        ("PATCH", "/admin/reps", intake, 403, "forbidden"),
        ("GET", "/admin/no-such-route", admin, 404, "route_not_found"),
        ("PATCH", "/admin/reps", admin, 405, "method_not_allowed"),
        ("GET", "/v1/no-such-route", None, 401, "unauthorized"),
        ("DELETE", "/v1/leads", None, 401, "unauthorized"),
        ("GET", "/v1/no-such-route", intake, 404, "route_not_found"),
        ("DELETE", "/v1/leads", intake, 405, "method_not_allowed"),
        // Outside the groups nothing is secret.
        ("GET", "/nowhere", None, 404, "route_not_found"),
        ("POST", "/metrics", None, 405, "method_not_allowed"),
    ];
    for (method, uri, token, status, expected) in cases {
        let (got, body) = send(&app, as_token(method, uri, token)).await;
        assert_eq!(
            (got.as_u16(), code(&body)),
            (status, expected),
            "{method} {uri} with {token:?}"
        );
    }
}

#[tokio::test]
async fn readyz_turns_503_while_draining() {
    let f = open();
    let app = app(f.state.clone());
    let (status, _) = send(&app, request("GET", "/readyz", None, "")).await;
    assert_eq!(status, 200);
    f.state.set_ready(false);
    let (status, body) = send(&app, request("GET", "/readyz", None, "")).await;
    assert_eq!((status.as_u16(), code(&body)), (503, "draining"));
    let (status, _) = send(&app, request("GET", "/healthz", None, "")).await;
    assert_eq!(status, 200, "alive while draining");
}

#[tokio::test]
async fn shutdown_stops_accepting_finishes_in_flight_then_stops_the_engine() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::time::timeout;
    let bound = std::time::Duration::from_secs(10);

    let f = open();
    let state = f.state.clone();
    let engine = state.engine.clone();
    engine
        .upsert_territory(
            "east".parse().unwrap(),
            serde_json::from_value(serde_json::json!({"name": "East", "default": true})).unwrap(),
        )
        .await
        .unwrap();
    engine
        .upsert_rep(
            "a".parse().unwrap(),
            serde_json::from_value(serde_json::json!({"name": "A", "territories": ["east"],
                "capacity": 5}))
            .unwrap(),
        )
        .await
        .unwrap();

    let (addr, stop, server) = serve(&state, std::time::Duration::from_secs(30)).await;

    // A request in flight: its handler has started reading the body (hyper answers
    // `100 Continue` exactly then), and half the body is still to come.
    let body = br#"{"phone": "+86 139 0000 0001"}"#;
    let mut conn = BufReader::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    let head = format!(
        "POST /v1/leads HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    conn.get_mut().write_all(head.as_bytes()).await.unwrap();
    conn.get_mut().write_all(&body[..10]).await.unwrap();
    let mut line = String::new();
    timeout(bound, conn.read_line(&mut line))
        .await
        .unwrap()
        .unwrap();
    assert!(line.starts_with("HTTP/1.1 100"), "{line}");

    stop.send(()).unwrap();
    // Draining: not ready, and no new connection is accepted.
    timeout(bound, async {
        while state.is_ready() {
            tokio::task::yield_now().await;
        }
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the listener closes");

    // The request in flight still completes, durably.
    conn.get_mut().write_all(&body[10..]).await.unwrap();
    let mut answer = String::new();
    timeout(bound, conn.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.contains("HTTP/1.1 201"), "{answer}");
    assert!(answer.contains("\"status\":\"assigned\""), "{answer}");

    timeout(bound, server).await.unwrap().unwrap().unwrap();
    let after = engine
        .route(leadroute_engine::domain::LeadInput {
            phone: Some("+86 139 0000 0002".into()),
            ..Default::default()
        })
        .await;
    assert!(
        matches!(after, Err(leadroute_engine::EngineError::ShuttingDown)),
        "the engine was shut down: {after:?}"
    );
}

/// With a shutdown delay, the server serves on (not ready) until the delay has
/// passed, and only then drains and stops. On tokio's paused clock, which moves to the
/// next timer whenever every task waits.
#[tokio::test(start_paused = true)]
async fn the_shutdown_delay_passes_before_the_server_stops() {
    use leadroute_admin_api::{Drain, run_with, webhooks::Policy};
    use tokio::time::Instant;

    let f = open();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let drain = Drain {
        delay: std::time::Duration::from_secs(30),
        timeout: std::time::Duration::from_secs(1),
    };
    let server = tokio::spawn(run_with(
        listener,
        f.state.clone(),
        async {
            let _ = stopped.await;
        },
        drain,
        Policy::default(),
    ));
    let asked = Instant::now();
    stop.send(()).unwrap();
    // No timeout around it: the engine's shutdown waits for its own threads, during
    // which the paused clock would jump to that timeout.
    server.await.unwrap().unwrap();
    assert!(
        asked.elapsed() >= drain.delay,
        "stopped after {:?}",
        asked.elapsed()
    );
    assert!(!f.state.is_ready());
}

/// A client that starts a request and never finishes it is cut off: after
/// `HEADER_READ_TIMEOUT` for the head (hyper closes the connection), after
/// `BODY_READ_TIMEOUT` for the body (408 `body_timeout`). On tokio's paused clock,
/// which moves to the next timer whenever every task waits.
#[tokio::test(start_paused = true)]
async fn a_client_that_never_finishes_its_request_is_cut_off() {
    use leadroute_admin_api::HEADER_READ_TIMEOUT;
    use leadroute_admin_api::extract::BODY_READ_TIMEOUT;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::time::Instant;

    let f = open();
    let (addr, stop, server) = serve(&f.state, std::time::Duration::from_secs(1)).await;

    // Sends `request`, waits (on the paused clock) for the server to close the
    // connection, and returns what it answered; the close must take `deadline`.
    let cut_off = |request: &'static [u8], deadline: std::time::Duration| async move {
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        conn.write_all(request).await.unwrap();
        let started = Instant::now();
        let mut answer = Vec::new();
        let closed = tokio::time::timeout(deadline * 4, conn.read_to_end(&mut answer));
        assert!(closed.await.is_ok(), "still open after 4 × the deadline");
        assert!(started.elapsed() >= deadline, "{:?}", started.elapsed());
        String::from_utf8_lossy(&answer).into_owned()
    };

    // The head stops half-way: the connection is closed, nothing is answered.
    let answer = cut_off(
        b"POST /v1/leads HTTP/1.1\r\nHost: x\r\n",
        HEADER_READ_TIMEOUT,
    )
    .await;
    assert!(!answer.contains("HTTP/1.1 2"), "{answer:?}");

    // The body stops half-way: 408 with the JSON error body.
    let answer = cut_off(
        b"POST /v1/leads HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"phone\": ",
        BODY_READ_TIMEOUT,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":"body_timeout""#), "{answer}");

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

/// A request hyper cannot parse never reaches the router: hyper answers it itself
/// and closes the connection. The answer still carries the JSON error body
/// (`leadroute_admin_api::unparsed`), and the server goes on serving.
#[tokio::test]
async fn requests_hyper_cannot_parse_get_json_errors() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let f = open();
    let (addr, stop, server) = serve(&f.state, std::time::Duration::from_secs(1)).await;
    let bound = std::time::Duration::from_secs(60);

    // Sends `request` on a connection of its own; what came back before the close.
    let exchange = |request: Vec<u8>| async move {
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        conn.write_all(&request).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(bound, conn.read_to_end(&mut answer))
            .await
            .expect("the server closes the connection")
            .unwrap();
        String::from_utf8(answer).unwrap()
    };
    // Each status is counted from zero before the first such request.
    let metrics =
        exchange(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec()).await;
    for status in ["400", "414", "431"] {
        let line = format!("leadroute_http_unparsed_requests_total{{status=\"{status}\"}} 0\n");
        assert!(metrics.contains(&line), "no `{line}` in {metrics}");
    }
    let many_headers: String = (0..200).map(|i| format!("X-{i}: a\r\n")).collect();
    let cases = [
        (b"GARBAGE\r\n\r\n".to_vec(), "400", "malformed_request"),
        (
            b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n".to_vec(),
            "400",
            "malformed_request",
        ),
        (
            format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many_headers}\r\n").into_bytes(),
            "431",
            "headers_too_large",
        ),
        (
            format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000)).into_bytes(),
            "414",
            "uri_too_long",
        ),
    ];
    for (request, status, expected) in cases {
        let answer = exchange(request).await;
        let (head, body) = answer
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no head in {answer:?}"));
        assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{head}");
        assert!(
            head.contains("\r\ncontent-type: application/json"),
            "{head}"
        );
        let body: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
        assert_eq!(code(&body), expected, "{body}");
    }

    let answer =
        exchange(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec()).await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");

    // Each is counted by its status.
    let metrics =
        exchange(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec()).await;
    for (status, count) in [("400", 2), ("414", 1), ("431", 1)] {
        let line =
            format!("leadroute_http_unparsed_requests_total{{status=\"{status}\"}} {count}\n");
        assert!(metrics.contains(&line), "no `{line}` in {metrics}");
    }

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
