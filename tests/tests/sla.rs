//! First-touch SLA: deadlines, re-routing, escalation, rep-away re-routing, restart,
//! and the touch metrics. Time moves only when a test moves the manual clock.

use leadroute_engine::domain::{HistoryEvent, LeadEventInput, LeadId, LeadStatus};
use leadroute_engine::{Clock, Engine, EngineError, ReassignReason, RouteStatus, SlaSweep};
use leadroute_tests::*;

const MINUTE: u64 = 60_000;

/// Territory `east` (CN-SH, default) with a one-minute SLA and `extra` settings, and
/// reps `reps` of capacity 5.
async fn east(engine: &Engine, extra: serde_json::Value, reps: &[&str]) {
    let mut body = serde_json::json!({"name": "East", "regions": ["CN-SH"], "default": true,
        "first_touch_sla_secs": 60});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    engine
        .upsert_territory(tid("east"), territory(body))
        .await
        .unwrap();
    for id in reps {
        engine.upsert_rep(rid(id), rep("east", 5)).await.unwrap();
    }
}

fn rep_of(engine: &Engine, lead: LeadId) -> Option<String> {
    let view = engine.lead(lead).unwrap().unwrap();
    view.state.rep.map(|r| r.to_string())
}

/// The `why` of every `reassigned` event of the lead, in order.
fn reassign_reasons(engine: &Engine, lead: LeadId) -> Vec<String> {
    engine
        .lead(lead)
        .unwrap()
        .unwrap()
        .history
        .into_iter()
        .filter_map(|e| match e.event {
            HistoryEvent::Reassigned { why, .. } => Some(why),
            _ => None,
        })
        .collect()
}

fn metric(engine: &Engine, name: &str, label: Option<(&str, &str)>) -> f64 {
    engine
        .metrics()
        .registry
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().to_vec())
        .filter(|m| {
            label.is_none_or(|(k, v)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == k && l.value() == v)
            })
        })
        .map(|m| {
            if m.get_histogram().get_sample_count() > 0 {
                m.get_histogram().get_sample_count() as f64
            } else {
                m.get_counter().get_value()
            }
        })
        .sum()
}

#[tokio::test]
async fn a_missed_deadline_reroutes_to_another_rep() {
    let f = fixture();
    east(&f.engine, serde_json::json!({}), &["a", "b"]).await;
    let routed = f.engine.route(lead(1, "CN-SH")).await.unwrap();
    let first = routed.rep_id.clone().unwrap();
    assert_eq!(
        f.engine.sla_deadline(routed.lead_id),
        Some(f.clock.now() + MINUTE)
    );

    // One millisecond early: nothing happens.
    f.clock.advance(MINUTE - 1);
    assert_eq!(f.engine.enforce_sla().await.unwrap(), SlaSweep::default());
    assert_eq!(rep_of(&f.engine, routed.lead_id), Some(first.to_string()));

    f.clock.advance(1);
    let sweep = f.engine.enforce_sla().await.unwrap();
    assert_eq!(sweep.rerouted, 1, "{sweep:?}");
    let now_with = rep_of(&f.engine, routed.lead_id).unwrap();
    assert_ne!(now_with, first.to_string(), "another rep has it");
    assert_eq!(reassign_reasons(&f.engine, routed.lead_id), ["sla_breach"]);
    // The new rep gets a fresh minute; the old rep's load is released.
    assert_eq!(
        f.engine.sla_deadline(routed.lead_id),
        Some(f.clock.now() + MINUTE)
    );
    assert_eq!(f.engine.rep(&first).await.unwrap().load, 0);
    assert_eq!(
        metric(
            &f.engine,
            "leadroute_sla_breaches_total",
            Some(("territory", "east"))
        ),
        1.0
    );
    assert_eq!(
        metric(
            &f.engine,
            "leadroute_reassignments_total",
            Some(("reason", "sla_breach"))
        ),
        1.0
    );
    assert_healthy(&f.engine).await;
}

#[tokio::test]
async fn a_lead_touched_in_time_stays_and_counts_as_within_sla() {
    let f = fixture();
    east(&f.engine, serde_json::json!({}), &["a", "b"]).await;
    let routed = f.engine.route(lead(1, "CN-SH")).await.unwrap();
    f.clock.advance(MINUTE / 2);
    f.engine
        .record_event(routed.lead_id, LeadEventInput::Touched)
        .await
        .unwrap();
    assert_eq!(f.engine.sla_deadline(routed.lead_id), None);
    f.clock.advance(600 * MINUTE);
    assert_eq!(f.engine.enforce_sla().await.unwrap(), SlaSweep::default());
    assert_eq!(
        rep_of(&f.engine, routed.lead_id),
        routed.rep_id.map(|r| r.to_string())
    );
    assert!(reassign_reasons(&f.engine, routed.lead_id).is_empty());
    assert_eq!(
        metric(&f.engine, "leadroute_first_touch_seconds", None),
        1.0
    );
    assert_eq!(
        metric(
            &f.engine,
            "leadroute_touched_within_sla_total",
            Some(("territory", "east"))
        ),
        1.0
    );
    assert_healthy(&f.engine).await;
}

#[tokio::test]
async fn a_touch_after_the_deadline_is_not_within_sla() {
    let f = fixture();
    // The touch comes before any sweep, so the late lead is never re-routed; only the
    // touch metrics are tested here.
    east(&f.engine, serde_json::json!({}), &["a"]).await;
    let routed = f.engine.route(lead(1, "CN-SH")).await.unwrap();
    f.clock.advance(2 * MINUTE);
    // Touched late, but before any sweep ran: the rep keeps it.
    f.engine
        .record_event(routed.lead_id, LeadEventInput::Touched)
        .await
        .unwrap();
    assert_eq!(f.engine.enforce_sla().await.unwrap(), SlaSweep::default());
    assert_eq!(
        metric(&f.engine, "leadroute_first_touch_seconds", None),
        1.0
    );
    assert_eq!(
        metric(&f.engine, "leadroute_touched_within_sla_total", None),
        0.0
    );
}

#[tokio::test]
async fn repeated_breaches_escalate_to_the_queue_and_then_stop() {
    let f = fixture();
    east(
        &f.engine,
        serde_json::json!({"sla_max_reroutes": 1}),
        &["a", "b", "c"],
    )
    .await;
    let routed = f.engine.route(lead(1, "CN-SH")).await.unwrap();
    let mut owners = vec![rep_of(&f.engine, routed.lead_id).unwrap()];

    f.clock.advance(MINUTE);
    assert_eq!(f.engine.enforce_sla().await.unwrap().rerouted, 1);
    owners.push(rep_of(&f.engine, routed.lead_id).unwrap());

    // The second breach is past the one allowed re-route: escalation. With no
    // escalation rep the lead goes through the queue to the next rep with room.
    f.clock.advance(MINUTE);
    let sweep = f.engine.enforce_sla().await.unwrap();
    assert_eq!(sweep.escalated, 1, "{sweep:?}");
    f.engine.settle().await.unwrap();
    // Escalated through the queue, open to every rep (earlier owners too): it lands.
    let last = rep_of(&f.engine, routed.lead_id).expect("drained from the queue");
    assert_ne!(owners[0], owners[1], "the allowed re-route moved the lead");
    let moves: Vec<(String, Option<String>)> = f
        .engine
        .lead(routed.lead_id)
        .unwrap()
        .unwrap()
        .history
        .into_iter()
        .filter_map(|e| match e.event {
            HistoryEvent::Reassigned { from, to, .. } => {
                Some((from.to_string(), to.map(|r| r.to_string())))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        moves,
        [
            (owners[0].clone(), Some(owners[1].clone())),
            (owners[1].clone(), None),
        ],
        "re-routed once to another rep, then escalated from that rep to the queue"
    );
    assert_eq!(
        reassign_reasons(&f.engine, routed.lead_id),
        ["sla_breach", "sla_escalation"]
    );
    let history = f.engine.lead(routed.lead_id).unwrap().unwrap().history;
    assert!(history.iter().any(|e| matches!(&e.event,
        HistoryEvent::Queued { reason, .. } if reason == "escalated to the queue")));

    // Escalated leads stay: no deadline, however long the rep waits.
    assert_eq!(f.engine.sla_deadline(routed.lead_id), None);
    f.clock.advance(1000 * MINUTE);
    assert_eq!(f.engine.enforce_sla().await.unwrap(), SlaSweep::default());
    assert_eq!(rep_of(&f.engine, routed.lead_id), Some(last));
    assert_eq!(
        metric(
            &f.engine,
            "leadroute_sla_breaches_total",
            Some(("territory", "east"))
        ),
        2.0
    );
    assert_eq!(
        metric(
            &f.engine,
            "leadroute_sla_escalations_total",
            Some(("territory", "east"))
        ),
        1.0
    );
    assert_healthy(&f.engine).await;
}

#[tokio::test]
async fn escalation_goes_to_the_named_rep() {
    let f = fixture();
    east(&f.engine, serde_json::json!({}), &["a", "b"]).await;
    let routed = f.engine.route(lead(1, "CN-SH")).await.unwrap();
    let first = rep_of(&f.engine, routed.lead_id).unwrap();
    let boss = if first == "a" { "b" } else { "a" };
    // No re-routes allowed: the first breach escalates, to `boss`.
    east(
        &f.engine,
        serde_json::json!({"sla_max_reroutes": 0, "sla_escalation_rep": boss}),
        &[],
    )
    .await;
    f.clock.advance(MINUTE);
    assert_eq!(f.engine.enforce_sla().await.unwrap().escalated, 1);
    assert_eq!(rep_of(&f.engine, routed.lead_id).as_deref(), Some(boss));
    let history = f.engine.lead(routed.lead_id).unwrap().unwrap().history;
    assert!(history.iter().any(|e| matches!(&e.event,
        HistoryEvent::Routed { decided_by, .. } if decided_by == "sla_escalation")));
    assert_eq!(f.engine.sla_deadline(routed.lead_id), None);
    assert_healthy(&f.engine).await;
}

/// The escalation rep may be the rep that missed the deadline: the lead stays with
/// it, escalated, and its load counts the lead once, in memory and in the store.
#[tokio::test]
async fn escalation_to_the_rep_that_holds_the_lead_keeps_its_load() {
    let f = fixture();
    east(&f.engine, serde_json::json!({}), &["a", "b"]).await;
    let routed = f.engine.route(lead(1, "CN-SH")).await.unwrap();
    let holder = rep_of(&f.engine, routed.lead_id).unwrap();
    east(
        &f.engine,
        serde_json::json!({"sla_max_reroutes": 0, "sla_escalation_rep": holder}),
        &[],
    )
    .await;
    f.clock.advance(MINUTE);
    assert_eq!(f.engine.enforce_sla().await.unwrap().escalated, 1);
    assert_eq!(rep_of(&f.engine, routed.lead_id), Some(holder.clone()));
    assert_eq!(f.engine.sla_deadline(routed.lead_id), None);
    assert_eq!(f.engine.rep(&rid(&holder)).await.unwrap().load, 1);
    assert_healthy(&f.engine).await;
    // Stored as it is held: a restart reads the same load.
    let Fixture { engine, clock, dir } = f;
    engine.shutdown().await.unwrap();
    drop(engine);
    let engine = open(dir.path(), &clock);
    assert_eq!(engine.rep(&rid(&holder)).await.unwrap().load, 1);
    assert_healthy(&engine).await;
}

#[tokio::test]
async fn a_breach_found_touched_or_early_changes_nothing() {
    let f = fixture();
    east(&f.engine, serde_json::json!({}), &["a", "b"]).await;
    let early = f.engine.route(lead(1, "CN-SH")).await.unwrap();
    let touched = f.engine.route(lead(2, "CN-SH")).await.unwrap();
    f.engine
        .record_event(touched.lead_id, LeadEventInput::Touched)
        .await
        .unwrap();
    f.clock.advance(5 * MINUTE);
    // The race a sweep can lose: the rep touched the lead after the deadline was read.
    // The committer re-checks and refuses; the reservation taken is given back.
    let err = f
        .engine
        .reassign(touched.lead_id, ReassignReason::SlaBreach)
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::SlaNotBreached(_)), "{err:?}");
    assert_eq!(
        rep_of(&f.engine, touched.lead_id),
        touched.rep_id.map(|r| r.to_string())
    );
    // Not due yet (a new lead, just assigned): refused the same way.
    let fresh = f.engine.route(lead(3, "CN-SH")).await.unwrap();
    let err = f
        .engine
        .reassign(fresh.lead_id, ReassignReason::SlaBreach)
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::SlaNotBreached(_)), "{err:?}");
    // `early` really is due and moves.
    assert_eq!(f.engine.enforce_sla().await.unwrap().rerouted, 1);
    assert_eq!(reassign_reasons(&f.engine, early.lead_id), ["sla_breach"]);
    assert_healthy(&f.engine).await;
}

/// An escalation to the queue puts the lead in the territory's queue in memory, where
/// a rep with room may drain it at once, before the committer refuses the escalation
/// (the rep touched the lead after the sweep read its deadline). The drain then finds
/// the lead not queued in the store: it must drop it, not put it back to be drained
/// again and again.
#[tokio::test]
async fn a_refused_escalation_leaves_nothing_queued_in_memory() {
    let f = fixture();
    east(
        &f.engine,
        serde_json::json!({"sla_max_reroutes": 0}),
        &["a", "b"],
    )
    .await;
    let routed = f.engine.route(lead(1, "CN-SH")).await.unwrap();
    let holder = routed.rep_id.clone().unwrap();
    f.engine
        .record_event(routed.lead_id, LeadEventInput::Touched)
        .await
        .unwrap();
    f.clock.advance(MINUTE);
    let err = f
        .engine
        .reassign(routed.lead_id, ReassignReason::SlaEscalation)
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::SlaNotBreached(_)), "{err:?}");
    // A guard, not a wait: a lead drained again and again never lets the engine settle.
    let settled = tokio::time::timeout(std::time::Duration::from_secs(30), f.engine.settle());
    settled
        .await
        .expect("the territory kept draining a lead the store has assigned")
        .unwrap();
    let east = f.engine.territory(&tid("east")).await.unwrap();
    assert_eq!(east.queue, Vec::<LeadId>::new());
    let loads: Vec<(String, u32)> = east
        .members
        .iter()
        .map(|m| (m.rep.id.to_string(), m.load))
        .collect();
    let other = if holder.as_str() == "a" { "b" } else { "a" };
    let mut expected = vec![(holder.to_string(), 1), (other.to_string(), 0)];
    expected.sort();
    assert_eq!(loads, expected);
    assert_eq!(rep_of(&f.engine, routed.lead_id), Some(holder.to_string()));
    assert_healthy(&f.engine).await;
}

/// Routes four leads to reps `a` and `b`, two each; returns `a`'s.
async fn two_leads_each(engine: &Engine) -> Vec<LeadId> {
    let mut of_a = Vec::new();
    for n in 0..4 {
        let r = engine.route(lead(n, "CN-SH")).await.unwrap();
        if r.rep_id.as_ref().map(|r| r.as_str()) == Some("a") {
            of_a.push(r.lead_id);
        }
    }
    assert_eq!(of_a.len(), 2);
    of_a
}

#[tokio::test]
async fn a_rep_going_away_hands_over_its_untouched_leads() {
    let f = fixture();
    east(
        &f.engine,
        serde_json::json!({"sla_reroute_when_away": true}),
        &["a", "b"],
    )
    .await;
    let of_a = two_leads_each(&f.engine).await;
    // Touch one of a's two leads.
    f.engine
        .record_event(of_a[0], LeadEventInput::Touched)
        .await
        .unwrap();
    let mut away = rep("east", 5);
    away.status = leadroute_engine::domain::RepStatus::Away;
    f.engine.upsert_rep(rid("a"), away).await.unwrap();
    assert_eq!(
        rep_of(&f.engine, of_a[0]).as_deref(),
        Some("a"),
        "touched stays"
    );
    assert_eq!(rep_of(&f.engine, of_a[1]).as_deref(), Some("b"));
    assert_eq!(reassign_reasons(&f.engine, of_a[1]), ["rep_away"]);
    assert_healthy(&f.engine).await;
}

/// The twin of the test above, without `sla_reroute_when_away`: `b` has room, and
/// still nothing moves.
#[tokio::test]
async fn without_the_setting_an_away_rep_keeps_its_leads() {
    let f = fixture();
    east(&f.engine, serde_json::json!({}), &["a", "b"]).await;
    let of_a = two_leads_each(&f.engine).await;
    let load_of_b = || async {
        let reps = f.engine.reps().await.unwrap();
        reps.iter().find(|r| r.rep.id == rid("b")).unwrap().load
    };
    assert_eq!(load_of_b().await, 2);
    let mut away = rep("east", 5);
    away.status = leadroute_engine::domain::RepStatus::Away;
    f.engine.upsert_rep(rid("a"), away).await.unwrap();
    for id in of_a {
        assert_eq!(rep_of(&f.engine, id).as_deref(), Some("a"));
        assert!(reassign_reasons(&f.engine, id).is_empty());
    }
    f.engine.settle().await.unwrap();
    assert_eq!(load_of_b().await, 2, "b got none of a's leads");
    assert_healthy(&f.engine).await;
}

#[tokio::test]
async fn deadlines_survive_a_restart_and_past_ones_fire_first() {
    let f = fixture();
    east(&f.engine, serde_json::json!({}), &["a", "b", "c"]).await;
    let old = f.engine.route(lead(1, "CN-SH")).await.unwrap();
    let touched = f.engine.route(lead(2, "CN-SH")).await.unwrap();
    f.engine
        .record_event(touched.lead_id, LeadEventInput::Touched)
        .await
        .unwrap();
    f.clock.advance(MINUTE / 2);
    let young = f.engine.route(lead(3, "CN-SH")).await.unwrap();
    f.engine.shutdown().await.unwrap();
    drop(f.engine);

    // Down for 40 s: `old` (deadline at 60 s) passed meanwhile, `young` (90 s) not.
    f.clock.advance(40_000);
    let engine = open(f.dir.path(), &f.clock);
    // Stored deadlines load in the background; the start-up work says when it is done.
    assert_eq!(engine.startup_audit().await.unwrap(), Vec::<String>::new());
    let sweep = engine.enforce_sla().await.unwrap();
    assert_eq!(sweep.rerouted, 1, "{sweep:?}");
    assert_eq!(reassign_reasons(&engine, old.lead_id), ["sla_breach"]);
    assert!(reassign_reasons(&engine, young.lead_id).is_empty());
    assert!(reassign_reasons(&engine, touched.lead_id).is_empty());

    f.clock.advance(20_000);
    assert_eq!(engine.enforce_sla().await.unwrap().rerouted, 1);
    assert_eq!(reassign_reasons(&engine, young.lead_id), ["sla_breach"]);
    assert!(reassign_reasons(&engine, touched.lead_id).is_empty());
    assert_healthy(&engine).await;
}

#[tokio::test]
async fn closing_or_queueing_clears_the_deadline() {
    let f = fixture();
    east(&f.engine, serde_json::json!({}), &["a"]).await;
    let assigned = f.engine.route(lead(1, "CN-SH")).await.unwrap();
    f.engine
        .record_event(
            assigned.lead_id,
            LeadEventInput::Closed {
                outcome: leadroute_engine::domain::Outcome::Lost,
            },
        )
        .await
        .unwrap();
    assert_eq!(f.engine.sla_deadline(assigned.lead_id), None);

    // Capacity 1 and one open lead: the next waits in the queue, without a deadline.
    let mut one = rep("east", 1);
    one.name = "One".into();
    f.engine.upsert_rep(rid("a"), one).await.unwrap();
    let held = f.engine.route(lead(2, "CN-SH")).await.unwrap();
    let waiting = f.engine.route(lead(3, "CN-SH")).await.unwrap();
    assert_eq!(waiting.status, RouteStatus::Queued);
    assert_eq!(f.engine.sla_deadline(waiting.lead_id), None);
    // Drained when `held` closes: then its minute starts.
    f.clock.advance(10 * MINUTE);
    f.engine
        .record_event(
            held.lead_id,
            LeadEventInput::Closed {
                outcome: leadroute_engine::domain::Outcome::Won,
            },
        )
        .await
        .unwrap();
    f.engine.settle().await.unwrap();
    let view = f.engine.lead(waiting.lead_id).unwrap().unwrap();
    assert_eq!(view.state.status, LeadStatus::Assigned);
    assert_eq!(
        f.engine.sla_deadline(waiting.lead_id),
        Some(f.clock.now() + MINUTE)
    );
    assert_healthy(&f.engine).await;
}

#[tokio::test]
async fn a_breach_with_nobody_else_to_take_the_lead_escalates() {
    let f = fixture();
    east(&f.engine, serde_json::json!({}), &["a", "b"]).await;
    let routed = f.engine.route(lead(1, "CN-SH")).await.unwrap();
    f.clock.advance(MINUTE);
    assert_eq!(f.engine.enforce_sla().await.unwrap().rerouted, 1);
    // Both reps have had it; two re-routes are allowed, but there is nobody left to
    // re-route to: it escalates (to the queue, open to both) instead of waiting forever.
    f.clock.advance(MINUTE);
    let sweep = f.engine.enforce_sla().await.unwrap();
    assert_eq!((sweep.rerouted, sweep.escalated), (0, 1), "{sweep:?}");
    f.engine.settle().await.unwrap();
    let view = f.engine.lead(routed.lead_id).unwrap().unwrap();
    assert_eq!(view.state.status, LeadStatus::Assigned);
    assert_eq!(
        reassign_reasons(&f.engine, routed.lead_id),
        ["sla_breach", "sla_escalation"]
    );
    assert_eq!(f.engine.sla_deadline(routed.lead_id), None);
    assert_eq!(
        metric(
            &f.engine,
            "leadroute_reassignments_total",
            Some(("reason", "sla_escalation"))
        ),
        1.0
    );
    // New leads are not held up by anything.
    let next = f.engine.route(lead(2, "CN-SH")).await.unwrap();
    assert_eq!(next.status, RouteStatus::Assigned);
    assert_healthy(&f.engine).await;
}
