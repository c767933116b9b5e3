//! Admission: past the limit on leads in flight the engine refuses at once, changes
//! nothing, and admits again as soon as work drains.
//!
//! Leads are held "in flight" deterministically: a route's admission happens when its
//! future is first polled, and its permit is held until the future completes, so a
//! future polled once and then left alone keeps its place however fast the engine is.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use leadroute_engine::domain::{LeadEventInput, LeadId};
use leadroute_engine::{EngineError, Result, RouteOutcome, RouteStatus};
use leadroute_tests::*;

type Routing<'a> = Pin<Box<dyn Future<Output = Result<RouteOutcome>> + 'a>>;

/// Polls `f` once, without waiting.
fn poll_once<T>(f: &mut Pin<Box<dyn Future<Output = T> + '_>>) -> Poll<T> {
    f.as_mut().poll(&mut Context::from_waker(Waker::noop()))
}

fn assert_overloaded(result: &Result<RouteOutcome>, limit: usize) {
    match result {
        Err(
            e @ EngineError::Overloaded {
                what,
                in_flight,
                limit: l,
            },
        ) => {
            assert_eq!((*what, *in_flight, *l), ("leads", limit, limit));
            assert_eq!(e.code(), "overloaded");
        }
        other => panic!("expected overloaded, got {other:?}"),
    }
}

#[tokio::test]
async fn past_the_limit_leads_are_refused_at_once_and_admitted_after_draining() {
    const LIMIT: usize = 4;
    let f = fixture_with(|c| c.max_in_flight_leads(LIMIT));
    east_with_reps(&f.engine, 100).await;
    assert_eq!(f.engine.max_in_flight_leads(), LIMIT);

    // Start routes, polling each once, until the engine refuses one. Only futures that
    // are still pending hold a place; one that finished at its first poll gave it back.
    let mut held: Vec<Routing<'_>> = Vec::new();
    let mut finished = Vec::new();
    let mut n = 0;
    let refused = loop {
        n += 1;
        assert!(n < 10_000, "the engine never refused a lead");
        let mut f1: Routing<'_> = Box::pin(f.engine.route(lead(n, "CN-SH")));
        match poll_once(&mut f1) {
            Poll::Pending => held.push(f1),
            Poll::Ready(Ok(done)) => finished.push(done),
            Poll::Ready(Err(EngineError::Overloaded { .. })) => break n,
            Poll::Ready(Err(e)) => panic!("lead {n}: {e:?}"),
        }
    };
    assert_eq!(held.len(), LIMIT, "refused exactly when the limit was held");
    assert_eq!(f.engine.leads_in_flight(), LIMIT);

    // Refused again, and a batch of any size is refused whole, without waiting.
    let again = f.engine.route(lead(refused, "CN-SH")).await;
    assert_overloaded(&again, LIMIT);
    let batch = f
        .engine
        .route_batch(&[lead(9_001, "CN-SH"), lead(9_002, "CN-SH")])
        .await;
    assert_eq!(batch.len(), 2);
    batch.iter().for_each(|r| assert_overloaded(r, LIMIT));
    // Lead events share the limit.
    let some_lead = finished
        .first()
        .map(|o: &RouteOutcome| o.lead_id)
        .unwrap_or_else(|| "01ARZ3NDEKTSV4RRFFQ69G5FAV".parse::<LeadId>().unwrap());
    let event = f
        .engine
        .record_event(some_lead, LeadEventInput::Touched)
        .await;
    assert!(
        matches!(event, Err(EngineError::Overloaded { .. })),
        "{event:?}"
    );

    // Drain: every admitted lead is answered and stored.
    for held in held {
        let outcome = held.await.expect("an admitted lead is routed");
        assert_eq!(outcome.status, RouteStatus::Assigned);
        assert!(f.engine.lead(outcome.lead_id).unwrap().is_some());
    }
    assert_eq!(f.engine.leads_in_flight(), 0);

    // Service is normal again. Refused leads left no trace: routed now they are new,
    // not duplicates of something stored. A batch larger than the whole limit is
    // admitted alone.
    for n in [refused, 9_001, 9_002] {
        let retried = f.engine.route(lead(n, "CN-SH")).await.unwrap();
        assert_eq!(retried.status, RouteStatus::Assigned, "lead {n}");
    }
    let big: Vec<_> = (0..10).map(|i| lead(20_000 + i, "CN-SH")).collect();
    for r in f.engine.route_batch(&big).await {
        assert_eq!(r.unwrap().status, RouteStatus::Assigned);
    }
    assert_healthy(&f.engine).await;
}

#[tokio::test]
async fn admin_writes_past_their_limit_are_refused_and_leads_are_not_affected() {
    let f = fixture_with(|c| c.max_in_flight_leads(4));
    east_with_reps(&f.engine, 100).await;
    type Write<'a> =
        Pin<Box<dyn Future<Output = Result<(leadroute_engine::RepSnapshot, bool)>> + 'a>>;
    let mut held: Vec<Write<'_>> = Vec::new();
    let mut n = 0;
    let refused = loop {
        n += 1;
        assert!(n < 10_000, "the engine never refused an admin write");
        let mut w: Write<'_> = Box::pin(f.engine.upsert_rep(rid(&format!("r{n}")), rep("east", 5)));
        match poll_once(&mut w) {
            Poll::Pending => held.push(w),
            Poll::Ready(Ok(_)) => {}
            Poll::Ready(Err(e)) => break e,
        }
    };
    assert!(
        matches!(
            refused,
            EngineError::Overloaded {
                what: "admin writes",
                ..
            }
        ),
        "{refused:?}"
    );
    assert_eq!(
        held.len(),
        64,
        "refused exactly when 64 writes were waiting"
    );
    // Webhook writes share the limit.
    let hook = leadroute_engine::domain::WebhookId::new("crm").unwrap();
    let input = leadroute_engine::domain::WebhookInput {
        url: "http://127.0.0.1:9/hook".into(),
        events: vec![leadroute_engine::domain::EventKind::LeadAssigned],
        secret: "0123456789abcdef".into(),
    };
    // Polled once: a write that waited for the admin lock instead would be pending.
    let mut put: Pin<Box<dyn Future<Output = Result<()>> + '_>> =
        Box::pin(async { f.engine.put_webhook(hook.clone(), input).await.map(|_| ()) });
    let mut delete: Pin<Box<dyn Future<Output = Result<()>> + '_>> =
        Box::pin(f.engine.delete_webhook(&hook));
    for refused in [poll_once(&mut put), poll_once(&mut delete)] {
        assert!(
            matches!(
                refused,
                Poll::Ready(Err(EngineError::Overloaded {
                    what: "admin writes",
                    ..
                }))
            ),
            "{refused:?}"
        );
    }
    drop((put, delete));
    // Leads have their own limit: intake still works meanwhile.
    let routed = f.engine.route(lead(1, "CN-SH")).await.unwrap();
    assert_eq!(routed.status, RouteStatus::Assigned);
    for w in held {
        w.await.unwrap();
    }
    f.engine
        .upsert_rep(rid("late"), rep("east", 5))
        .await
        .expect("admitted again once the writes drained");
    assert_healthy(&f.engine).await;
}
