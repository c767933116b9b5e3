//! Limits on admin work that is expensive for the server, over real HTTP on
//! 127.0.0.1 with the real engine and store: one replay at a time and a replay stopped
//! when its client hangs up, paged dead-letter listings, and a bound on plugin
//! compiles still running.
//!
//! Replays and compiles run on threads of their own; the engine's probe holds them at
//! a known checkpoint, so "still running" is a fact the test arranged, not a guess
//! about speed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use leadroute_admin_api::AppState;
use leadroute_admin_api::auth::Auth;
use leadroute_admin_api::config::Limits;
use leadroute_engine::domain::{
    EventKind, LeadInput, OutboxEvent, RepInput, TerritoryInput, WebhookId, WebhookInput,
};
use leadroute_engine::store::DeadLetter;
use leadroute_engine::{Checkpoint, Engine, EngineConfig, PluginLimits};
use leadroute_tests::{Holder, expect_checkpoint};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

#[path = "common/catalogue.rs"]
mod catalogue;

/// Bounds every wait, so a hang fails the test instead of stalling it.
const BOUND: Duration = Duration::from_secs(60);

/// The server, in this process, on an ephemeral port.
struct Server {
    addr: SocketAddr,
    engine: Engine,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(configure: impl FnOnce(EngineConfig) -> EngineConfig) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(configure(EngineConfig::new(dir.path()))).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let state = AppState::new(engine.clone(), Auth::default(), Limits::default());
        let task = tokio::spawn(leadroute_admin_api::run(
            listener,
            state,
            async {
                let _ = stopped.await;
            },
            Duration::from_secs(5),
        ));
        Server {
            addr,
            engine,
            stop,
            task,
            _dir: dir,
        }
    }

    async fn stop(self) {
        self.stop.send(()).unwrap();
        tokio::time::timeout(BOUND, self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    /// Sends one request on a connection of its own, without reading the answer.
    async fn send(&self, method: &str, path: &str, content_type: &str, body: &[u8]) -> TcpStream {
        let mut conn = TcpStream::connect(self.addr).await.unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\
             Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        conn.write_all(body).await.unwrap();
        conn
    }

    async fn call(&self, method: &str, path: &str, content_type: &str, body: &[u8]) -> Resp {
        let conn = self.send(method, path, content_type, body).await;
        tokio::time::timeout(BOUND, Resp::read(conn)).await.unwrap()
    }

    async fn get(&self, path: &str) -> Resp {
        self.call("GET", path, "application/json", b"").await
    }

    async fn post(&self, path: &str, body: Value) -> Resp {
        self.call(
            "POST",
            path,
            "application/json",
            body.to_string().as_bytes(),
        )
        .await
    }
}

/// An answer: status, headers (names lower-cased) and JSON body.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Resp {
    /// Reads a whole answer; the server closes the connection after it.
    async fn read(mut conn: TcpStream) -> Resp {
        let mut raw = Vec::new();
        conn.read_to_end(&mut raw).await.unwrap();
        let text = String::from_utf8(raw).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").expect("a complete answer");
        let mut lines = head.lines();
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers = lines
            .map(|l| {
                let (name, value) = l.split_once(':').unwrap();
                (name.trim().to_ascii_lowercase(), value.trim().to_string())
            })
            .collect();
        catalogue::assert_documented(status, body.as_bytes());
        Resp {
            status,
            headers,
            body: serde_json::from_str(body).unwrap_or(Value::Null),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

// --- Replay ------------------------------------------------------------------------

const LEADS: u32 = 5;
const REPLAY: &str = "/admin/plugins/rules/versions/1/replay";

/// A server whose first replay is held at its first step, with the wasm `rules`, a
/// territory, two reps and [`LEADS`] routed leads.
async fn replay_server() -> (Server, Arc<Holder>, mpsc::UnboundedReceiver<Checkpoint>) {
    let (holder, events) = Holder::new(Checkpoint::ReplayStep, 1);
    let server = Server::start(|config| config.probe(holder.probe())).await;
    let engine = &server.engine;
    engine
        .put_plugin("rules", leadroute_plugin_builds::RULES.to_vec())
        .await
        .unwrap();
    let territory: TerritoryInput =
        serde_json::from_value(json!({"name": "East", "regions": ["CN-SH"], "default": true}))
            .unwrap();
    engine
        .upsert_territory("east".parse().unwrap(), territory)
        .await
        .unwrap();
    for id in ["a", "b"] {
        let rep = RepInput {
            name: id.into(),
            territories: vec!["east".into()],
            capacity: 100,
            ..Default::default()
        };
        engine.upsert_rep(id.parse().unwrap(), rep).await.unwrap();
    }
    for n in 0..LEADS {
        let lead = LeadInput {
            phone: Some(format!("+86 139 0000 {n:04}")),
            region: Some("CN-SH".into()),
            ..Default::default()
        };
        engine.route(lead).await.unwrap();
    }
    engine.settle().await.unwrap();
    (server, holder, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_replay_is_refused_with_409_while_one_runs() {
    let (server, holder, mut events) = replay_server().await;
    let first = server.send("POST", REPLAY, "application/json", b"{}").await;
    expect_checkpoint(&mut events, Checkpoint::ReplayStep).await;

    let refused = server.post(REPLAY, json!({})).await;
    assert_eq!(refused.status, 409, "{refused:?}");
    assert_eq!(refused.code(), "replay_in_progress");
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("only one runs at a time"),
        "{refused:?}"
    );
    // Input errors keep their own answers.
    let bad = server.post(REPLAY, json!({"limit": 0})).await;
    assert_eq!((bad.status, bad.code()), (422, "invalid_field"), "{bad:?}");

    holder.release(1);
    let answered = tokio::time::timeout(BOUND, Resp::read(first))
        .await
        .unwrap();
    assert_eq!(answered.status, 200, "{answered:?}");
    assert_eq!(answered.body["leads_examined"], LEADS);
    // The place went back before the answer: a client may start the next at once.
    let again = server.post(REPLAY, json!({})).await;
    assert_eq!(again.status, 200, "{again:?}");
    expect_checkpoint(&mut events, Checkpoint::ReplayEnded).await;
    expect_checkpoint(&mut events, Checkpoint::ReplayEnded).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hanging_up_stops_its_replay_and_frees_the_place() {
    let (server, holder, mut events) = replay_server().await;
    let conn = server.send("POST", REPLAY, "application/json", b"{}").await;
    expect_checkpoint(&mut events, Checkpoint::ReplayStep).await;

    // The client goes away while its replay is held at the first step; the server
    // drops the request, which tells the replay to stop.
    drop(conn);
    expect_checkpoint(&mut events, Checkpoint::ReplayCancelled).await;
    holder.release(1);
    expect_checkpoint(&mut events, Checkpoint::ReplayEnded).await;
    assert_eq!(
        holder.steps(),
        1,
        "it stopped right after the step it was held at"
    );

    let next = server.post(REPLAY, json!({})).await;
    assert_eq!(next.status, 200, "{next:?}");
    assert_eq!(next.body["leads_examined"], LEADS);
    expect_checkpoint(&mut events, Checkpoint::ReplayEnded).await;
    server.stop().await;
}

// --- Dead letters ------------------------------------------------------------------

fn letter(seq: u64) -> DeadLetter {
    let mut event = OutboxEvent::new(EventKind::LeadAssigned, 1_700_000_000_000 + seq);
    event.seq = seq;
    DeadLetter {
        event,
        attempts: 8,
        last_error: "503 Service Unavailable".into(),
        failed_at: 1_700_000_000_000,
        redrive: false,
    }
}

/// The seq of each listed letter, from its event id (`evt_` and 16 hex digits).
fn seqs(letters: &Value) -> Vec<u64> {
    letters
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let id = l["event"]["id"].as_str().unwrap();
            u64::from_str_radix(id.strip_prefix("evt_").unwrap(), 16).unwrap()
        })
        .collect()
}

/// The path of a `Link: <path>; rel="next"` header.
fn next_link(resp: &Resp) -> Option<String> {
    let link = resp.header("link")?;
    let (target, rel) = link.split_once(';').unwrap();
    assert_eq!(rel.trim(), r#"rel="next""#);
    Some(
        target
            .trim()
            .strip_prefix('<')
            .unwrap()
            .strip_suffix('>')
            .unwrap()
            .to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_a_page_at_a_time() {
    let server = Server::start(|config| config).await;
    let engine = &server.engine;
    let mut bases = Vec::new();
    for (id, letters) in [("crm", 250), ("crm-2", 3)] {
        let webhook = WebhookId::new(id).unwrap();
        let input = WebhookInput {
            // Nothing listens on the discard port; no letter is re-driven here anyway.
            url: "http://127.0.0.1:9/hook".into(),
            events: vec![EventKind::LeadAssigned],
            secret: "whsec-test-0123456789".into(),
        };
        engine.put_webhook(webhook.clone(), input).await.unwrap();
        // A webhook's letters are of events past its cursor, which starts past every
        // event before it; seqs here count from the first past it.
        let base = engine.webhook_cursor(&webhook).unwrap();
        for seq in 1..=letters {
            engine
                .put_dead_letter(&webhook, &letter(base + seq))
                .unwrap();
        }
        bases.push(base);
    }
    let [b, b2] = bases[..] else { unreachable!() };

    // The default page is 100; the Link header leads to the next page, the last page
    // has none.
    let mut path = "/admin/webhooks/crm/dead_letters".to_string();
    let mut pages = Vec::new();
    loop {
        let page = server.get(&path).await;
        assert_eq!(page.status, 200, "{page:?}");
        pages.push(seqs(&page.body));
        match next_link(&page) {
            Some(next) => path = next,
            None => break,
        }
    }
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        [100, 100, 50]
    );
    let all: Vec<u64> = pages.concat();
    assert_eq!(
        all,
        (b + 1..=b + 250).collect::<Vec<_>>(),
        "each once, oldest first"
    );

    let page = server
        .get(&format!(
            "/admin/webhooks/crm/dead_letters?limit=10&after={}",
            b + 245
        ))
        .await;
    assert_eq!(seqs(&page.body), (b + 246..=b + 250).collect::<Vec<_>>());
    assert_eq!(next_link(&page), None);
    let page = server.get("/admin/webhooks/crm/dead_letters?limit=2").await;
    assert_eq!(seqs(&page.body), [b + 1, b + 2]);
    assert_eq!(
        next_link(&page),
        Some(format!(
            "/admin/webhooks/crm/dead_letters?after={}&limit=2",
            b + 2
        ))
    );
    let page = server
        .get("/admin/webhooks/crm/dead_letters?limit=1000")
        .await;
    assert_eq!(seqs(&page.body).len(), 250);
    assert_eq!(next_link(&page), None);
    // Past the end, and another subscription's letters stay its own.
    let page = server
        .get(&format!(
            "/admin/webhooks/crm/dead_letters?after={}",
            u64::MAX
        ))
        .await;
    assert_eq!(seqs(&page.body), Vec::<u64>::new());
    let page = server.get("/admin/webhooks/crm-2/dead_letters").await;
    assert_eq!(seqs(&page.body), [b2 + 1, b2 + 2, b2 + 3]);

    // The counts in the views, which no longer read the letters.
    let view = server.get("/admin/webhooks/crm").await;
    assert_eq!(view.body["dead_letters"], 250);
    let list = server.get("/admin/webhooks").await;
    let counts: Vec<&Value> = list
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|w| &w["dead_letters"])
        .collect();
    assert_eq!(counts, [&json!(250), &json!(3)]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_dead_letter_queries_are_refused() {
    let server = Server::start(|config| config).await;
    let input = WebhookInput {
        url: "http://127.0.0.1:9/hook".into(),
        events: vec![EventKind::LeadAssigned],
        secret: "whsec-test-0123456789".into(),
    };
    server
        .engine
        .put_webhook(WebhookId::new("crm").unwrap(), input)
        .await
        .unwrap();
    // Out of range: 422 naming the field, as the replay's `limit`.
    for limit in ["0", "1001"] {
        let r = server
            .get(&format!("/admin/webhooks/crm/dead_letters?limit={limit}"))
            .await;
        assert_eq!((r.status, r.code()), (422, "invalid_field"), "{r:?}");
        assert_eq!(r.body["error"]["field"], "limit");
    }
    // Not a number, or an unknown parameter: the query itself is malformed.
    for query in [
        "limit=ten",
        "limit=-1",
        "after=x",
        "after=-5",
        "limit=",
        "cursor=3",
    ] {
        let r = server
            .get(&format!("/admin/webhooks/crm/dead_letters?{query}"))
            .await;
        assert_eq!(
            (r.status, r.code()),
            (400, "invalid_query"),
            "{query}: {r:?}"
        );
    }
    // An unknown subscription is not found, whatever its query.
    for query in ["limit=5", "limit=0"] {
        let r = server
            .get(&format!("/admin/webhooks/nope/dead_letters?{query}"))
            .await;
        assert_eq!(
            (r.status, r.code()),
            (404, "webhook_not_found"),
            "{query}: {r:?}"
        );
    }
    server.stop().await;
}

// --- Plugin compiles ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_finding_every_compile_slot_held_gets_503() {
    let (holder, mut events) = Holder::new(Checkpoint::CompileStarted, 1);
    // The holder keeps the compile from ever finishing in time, so the timeout only
    // decides how long the upload waits before it gives up: as little as can be.
    let limits = PluginLimits {
        compile_timeout: Duration::from_millis(1),
        max_compiles: 1,
        ..PluginLimits::default()
    };
    let server = Server::start(|config| config.plugin_limits(limits).probe(holder.probe())).await;
    let rules = leadroute_plugin_builds::RULES;

    // The compile is held at its start: the upload gives up on it after 1 ms, while
    // its thread goes on.
    let first = server
        .call("PUT", "/admin/plugins/rules", "application/wasm", rules)
        .await;
    assert_eq!(
        (first.status, first.code()),
        (422, "plugin_invalid"),
        "{first:?}"
    );
    assert!(
        first.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("compilation took longer than 1ms"),
        "{first:?}"
    );
    expect_checkpoint(&mut events, Checkpoint::CompileStarted).await;

    let busy = server
        .call("PUT", "/admin/plugins/rules", "application/wasm", rules)
        .await;
    assert_eq!(
        (busy.status, busy.code()),
        (503, "compile_busy"),
        "{busy:?}"
    );
    assert_eq!(busy.header("retry-after"), Some("1"));
    assert!(
        busy.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1 plugin compile(s) still running (limit 1)"),
        "{busy:?}"
    );
    let listed = server.get("/admin/plugins").await;
    assert_eq!(listed.body, json!([]), "nothing stored");

    holder.release(1);
    expect_checkpoint(&mut events, Checkpoint::CompileEnded).await;
    server.stop().await;
}
