//! Webhook delivery against a real HTTP receiver on 127.0.0.1, with the real engine
//! and store. Retries wait on an injected sleeper the test controls, never on time.

#[path = "common/receiver.rs"]
mod receiver;

use std::sync::Arc;
use std::time::Duration;

use leadroute_admin_api::webhooks::signature;
use leadroute_admin_api::webhooks::{Dispatcher, Policy, Sleeper};
use leadroute_engine::domain::{
    EventKind, LeadEventInput, LeadInput, OutboxEvent, Outcome, RepId, RepInput, TerritoryId,
    TerritoryInput, WebhookId, WebhookInput,
};
use leadroute_engine::store::DeadLetter;
use leadroute_engine::{Engine, EngineConfig, RouteStatus};
use receiver::{Mode, Receiver};
use tokio::sync::{Semaphore, mpsc, watch};

const SECRET: &str = "whsec-test-0123456789";
const WAIT: Duration = Duration::from_secs(20);

/// A sleeper that reports each requested delay and returns only when the test
/// releases it (or at once, when made with `open`).
struct GateSleeper {
    requested: mpsc::UnboundedSender<Duration>,
    permits: Arc<Semaphore>,
}

impl Sleeper for GateSleeper {
    fn sleep(
        &self,
        delay: Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        let _ = self.requested.send(delay);
        let permits = self.permits.clone();
        Box::pin(async move {
            permits.acquire().await.unwrap().forget();
        })
    }
}

struct Fixture {
    engine: Engine,
    _dir: tempfile::TempDir,
    sleeps: mpsc::UnboundedReceiver<Duration>,
    permits: Arc<Semaphore>,
    stop: watch::Sender<bool>,
    dispatcher: tokio::task::JoinHandle<()>,
}

impl Fixture {
    async fn stop(self) {
        let _ = self.stop.send(true);
        self.dispatcher.await.unwrap();
        self.engine.shutdown().await.unwrap();
    }
}

async fn fixture(policy: Policy, open_gate: bool) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(EngineConfig::new(dir.path())).unwrap();
    let territory: TerritoryInput = serde_json::from_value(
        serde_json::json!({"name": "East", "regions": ["CN-SH"], "default": true}),
    )
    .unwrap();
    engine
        .upsert_territory(TerritoryId::new("east").unwrap(), territory)
        .await
        .unwrap();
    for id in ["a", "b"] {
        let rep = RepInput {
            name: id.into(),
            territories: vec!["east".into()],
            capacity: 1000,
            ..Default::default()
        };
        engine
            .upsert_rep(RepId::new(id).unwrap(), rep)
            .await
            .unwrap();
    }
    let (tx, sleeps) = mpsc::unbounded_channel();
    let permits = Arc::new(Semaphore::new(if open_gate {
        Semaphore::MAX_PERMITS
    } else {
        0
    }));
    let sleeper = GateSleeper {
        requested: tx,
        permits: permits.clone(),
    };
    let dispatcher = Dispatcher::new(engine.clone(), policy, Arc::new(sleeper)).unwrap();
    let (stop, stopped) = watch::channel(false);
    let dispatcher = tokio::spawn(dispatcher.run(stopped));
    Fixture {
        engine,
        _dir: dir,
        sleeps,
        permits,
        stop,
        dispatcher,
    }
}

async fn subscribe(engine: &Engine, url: &str, events: &[EventKind]) -> WebhookId {
    let id = WebhookId::new("crm").unwrap();
    let input = WebhookInput {
        url: url.to_string(),
        events: events.to_vec(),
        secret: SECRET.into(),
    };
    engine.put_webhook(id.clone(), input).await.unwrap();
    id
}

fn lead(n: u32) -> LeadInput {
    LeadInput {
        phone: Some(format!("1390000{n:04}")),
        region: Some("CN-SH".into()),
        ..Default::default()
    }
}

/// Runs a blocking wait on the receiver without blocking the test's runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_signed_once_each_and_in_commit_order() {
    let receiver = Arc::new(Receiver::start());
    let f = fixture(Policy::default(), true).await;
    subscribe(
        &f.engine,
        &receiver.url(),
        &[EventKind::LeadAssigned, EventKind::LeadClosed],
    )
    .await;
    let mut leads = Vec::new();
    for n in 0..3 {
        leads.push(f.engine.route(lead(n)).await.unwrap());
    }
    f.engine
        .record_event(
            leads[0].lead_id,
            LeadEventInput::Closed {
                outcome: Outcome::Won,
            },
        )
        .await
        .unwrap();
    let r = receiver.clone();
    let got = blocking(move || r.wait_for(4, WAIT)).await;
    assert_eq!(got.len(), 4);
    let mut seen_ids = Vec::new();
    for d in &got {
        let ts = signature::verify(SECRET, d.header("leadroute-signature"), &d.body);
        assert!(ts.is_some(), "signature verifies: {:?}", d.headers);
        let json = d.json();
        assert_eq!(d.header("idempotency-key"), json["id"]);
        assert_eq!(d.header("leadroute-event"), json["type"]);
        assert_eq!(d.header("leadroute-delivery-attempt"), "1");
        seen_ids.push(json["id"].as_str().unwrap().to_string());
    }
    let mut sorted = seen_ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, seen_ids, "ids are distinct and arrive in order");
    let kinds: Vec<_> = got.iter().map(|d| d.json()["type"].clone()).collect();
    assert_eq!(
        kinds,
        [
            "lead.assigned",
            "lead.assigned",
            "lead.assigned",
            "lead.closed"
        ]
    );
    for (d, routed) in got.iter().zip(&leads) {
        let data = &d.json()["data"];
        assert_eq!(data["lead_id"], routed.lead_id.to_string());
        assert_eq!(data["rep_id"], routed.rep_id.as_ref().unwrap().to_string());
        assert_eq!(data["territory_id"], "east");
    }
    assert_eq!(got[3].json()["data"]["outcome"], "won");
    assert_delivered_exactly(f, receiver, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_then_up_gets_every_event() {
    // Refuses connections until the receiver listens on it, and no other test can
    // take the port meanwhile.
    let port = Receiver::reserve();
    let mut f = fixture(Policy::default(), false).await;
    let hook = subscribe(&f.engine, &port.url(), &[EventKind::LeadAssigned]).await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let routed = f.engine.route(lead(n)).await.unwrap();
        assert_eq!(routed.status, RouteStatus::Assigned);
        ids.push(routed.lead_id.to_string());
    }
    // The first attempt was refused; the worker now waits out its backoff.
    let first = f.sleeps.recv().await.unwrap();
    assert!(first <= Duration::from_secs(1) && first >= Duration::from_millis(500));
    // The backlog shows while the first event is retried, not only after its batch.
    let metrics = f.engine.metrics().render();
    let depth: i64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!(
                "leadroute_webhook_outbox_depth{{webhook=\"{hook}\"}} "
            ))
        })
        .unwrap_or_else(|| panic!("no depth for {hook}:\n{metrics}"))
        .parse()
        .unwrap();
    assert!(depth >= 1, "depth {depth} while an event waits");
    // Nothing was dead-lettered yet, and the series says so rather than being absent.
    let none = format!(
        "leadroute_webhook_deliveries_total{{outcome=\"dead_lettered\",webhook=\"{hook}\"}} 0"
    );
    assert!(metrics.lines().any(|l| l == none), "no {none}:\n{metrics}");
    assert_eq!(
        f.engine
            .outbox_len_after(f.engine.webhook_cursor(&hook).unwrap()),
        5
    );

    let receiver = Arc::new(Receiver::start_on(port));
    f.permits.add_permits(1);
    let r = receiver.clone();
    let got = blocking(move || r.wait_for(5, WAIT)).await;
    let delivered: Vec<String> = got
        .iter()
        .map(|d| d.json()["data"]["lead_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(delivered, ids, "every event, in order, none twice");
    assert_eq!(got[0].header("leadroute-delivery-attempt"), "2");
    assert_eq!(got[1].header("leadroute-delivery-attempt"), "1");
    assert_delivered_exactly(f, receiver, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_events_become_dead_letters_and_redrive_delivers_them() {
    let receiver = Arc::new(Receiver::start());
    receiver.set_mode(Mode::Fail(500));
    let policy = Policy {
        max_attempts: 3,
        ..Policy::default()
    };
    let mut f = fixture(policy.clone(), true).await;
    let hook = subscribe(&f.engine, &receiver.url(), &[EventKind::LeadAssigned]).await;
    let routed = f.engine.route(lead(1)).await.unwrap();

    // Three attempts, with two backoffs between them, each within its jitter band.
    let r = receiver.clone();
    blocking(move || r.wait_until(WAIT, "3 attempts", |_, attempts, _| attempts >= 3)).await;
    for attempt in 1..=2u32 {
        let delay = f.sleeps.recv().await.unwrap();
        let full = policy.base_delay * 2u32.pow(attempt - 1);
        assert!(delay <= full && delay >= full / 2, "{delay:?} vs {full:?}");
    }
    let letters = wait_for_letters(&f.engine, &hook, 1).await;
    assert_eq!(letters[0].attempts, 3);
    assert!(
        letters[0].last_error.contains("500"),
        "{}",
        letters[0].last_error
    );
    assert_eq!(letters[0].event.lead, Some(routed.lead_id));
    assert!(receiver.accepted().is_empty());

    // The endpoint is fixed; an operator re-drives.
    receiver.set_mode(Mode::Accept);
    assert_eq!(f.engine.redrive_dead_letters(&hook).unwrap(), 1);
    let r = receiver.clone();
    let got = blocking(move || r.wait_for(1, WAIT)).await;
    assert_eq!(got[0].json()["data"]["lead_id"], routed.lead_id.to_string());
    assert_eq!(got[0].json()["id"], letters[0].event.id());
    wait_for_letters(&f.engine, &hook, 0).await;
    assert_delivered_exactly(f, receiver, 1).await;
}

/// Re-drive reads dead letters a page at a time (1000): with more than two pages'
/// worth, every letter is marked once and delivered once. (Not necessarily in order:
/// the dispatcher may start on the first marked letters while later pages are still
/// being marked, and it already delivers the ones marked before.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redrive_past_one_page_delivers_every_letter_once() {
    const LETTERS: u64 = 2_345;
    let receiver = Arc::new(Receiver::start());
    let f = fixture(Policy::default(), true).await;
    let hook = subscribe(&f.engine, &receiver.url(), &[EventKind::LeadAssigned]).await;
    // Letters are of events past the cursor (no outbox event exists for them).
    let base = f.engine.webhook_cursor(&hook).unwrap();
    for seq in base + 1..=base + LETTERS {
        let mut event = OutboxEvent::new(EventKind::LeadAssigned, 1_700_000_000_000);
        event.seq = seq;
        let letter = DeadLetter {
            event,
            attempts: 8,
            last_error: "HTTP 500".into(),
            failed_at: 1_700_000_000_000,
            // One in ten is marked already: counted once, delivered once.
            redrive: (seq - base) % 10 == 0,
        };
        f.engine.put_dead_letter(&hook, &letter).unwrap();
    }

    let marked = f.engine.redrive_dead_letters(&hook).unwrap();
    assert_eq!(marked as u64, LETTERS - LETTERS / 10);
    let r = receiver.clone();
    let got = blocking(move || r.wait_for(LETTERS as usize, WAIT)).await;
    let mut ids: Vec<String> = got
        .iter()
        .map(|d| d.json()["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    let expected: Vec<String> = (base + 1..=base + LETTERS)
        .map(|seq| format!("evt_{seq:016x}"))
        .collect();
    assert!(
        ids == expected,
        "{} deliveries, not each letter once",
        ids.len()
    );
    wait_for_letters(&f.engine, &hook, 0).await;
    assert_delivered_exactly(f, receiver, LETTERS as usize).await;
}

/// Stops the dispatcher, so no delivery can start any more, then the receiver, and
/// checks that it accepted exactly `n` deliveries with `n` distinct ids over its whole
/// life. [`Receiver::wait_for`] returns as soon as `n` arrived, so a duplicate sent
/// after those would otherwise go unseen.
async fn assert_delivered_exactly(f: Fixture, receiver: Arc<Receiver>, n: usize) {
    f.stop().await;
    let receiver = Arc::into_inner(receiver).expect("no other handle on the receiver");
    let all = blocking(move || receiver.shut_down()).await;
    let ids: std::collections::HashSet<String> = all
        .iter()
        .map(|d| d.json()["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        (all.len(), ids.len()),
        (n, n),
        "deliveries and distinct ids received in all"
    );
}

async fn wait_for_letters(
    engine: &Engine,
    hook: &WebhookId,
    n: usize,
) -> Vec<leadroute_engine::store::DeadLetter> {
    let mut changed = engine.outbox().watch_dead_letters();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        // Marked seen before the read: a write after it wakes the wait below.
        changed.borrow_and_update();
        // The tests park a handful: one page holds them all.
        let page = engine.dead_letter_page(hook, None, Some(1000)).unwrap();
        assert!(page.next.is_none(), "more than a page of dead letters");
        let letters = page.letters;
        if letters.len() == n {
            return letters;
        }
        let woken = tokio::time::timeout_at(deadline, changed.changed()).await;
        assert!(
            matches!(woken, Ok(Ok(()))),
            "{} dead letters, want {n}",
            letters.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_receiver_never_holds_up_routing() {
    let receiver = Arc::new(Receiver::start());
    receiver.set_mode(Mode::Hold);
    let f = fixture(Policy::default(), true).await;
    let hook = subscribe(&f.engine, &receiver.url(), &[EventKind::LeadAssigned]).await;
    let first = f.engine.route(lead(0)).await.unwrap();
    assert_eq!(first.status, RouteStatus::Assigned);
    // The dispatcher is now stuck inside the first delivery...
    let r = receiver.clone();
    blocking(move || r.wait_until(WAIT, "a held request", |_, _, held| held == 1)).await;
    // ...and routing goes on: every lead is assigned and durable while it is stuck,
    // and its events pile up in the engine's outbox instead of in the intake path.
    for n in 1..=200 {
        let routed = f.engine.route(lead(n)).await.unwrap();
        assert_eq!(routed.status, RouteStatus::Assigned);
    }
    assert_eq!(receiver.attempts(), 0, "nothing answered yet");
    let cursor = f.engine.webhook_cursor(&hook).unwrap();
    assert_eq!(f.engine.outbox_len_after(cursor), 201);

    receiver.release();
    let r = receiver.clone();
    let got = blocking(move || r.wait_for(201, WAIT)).await;
    assert_eq!(got.len(), 201);
    assert_delivered_exactly(f, receiver, 201).await;
}
