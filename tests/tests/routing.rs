//! Routing, queueing, de-duplication and lifecycle through the real actors and store.

use leadroute_engine::domain::{
    HistoryEvent, LeadEventInput, LeadInput, LeadStatus, Outcome, REPEATS_IN_HISTORY, Stage,
};
use leadroute_engine::{Checkpoint, Engine, EngineError, Placement, ReassignReason, RouteStatus};
use leadroute_tests::*;

#[tokio::test]
async fn leads_are_assigned_least_loaded_and_recorded() {
    let f = fixture();
    east_with_reps(&f.engine, 5).await;
    let first = f.engine.route(lead(1, "CN-SH-PD")).await.unwrap();
    assert_eq!(first.status, RouteStatus::Assigned);
    assert_eq!(first.territory_id, tid("east"));
    assert_eq!(first.decided_by.as_deref(), Some("builtin:least_loaded"));
    let second = f.engine.route(lead(2, "CN-SH")).await.unwrap();
    assert_ne!(first.rep_id, second.rep_id, "load spreads");

    let view = f.engine.lead(first.lead_id).unwrap().unwrap();
    assert_eq!(view.state.status, LeadStatus::Assigned);
    let HistoryEvent::Routed {
        candidates,
        decided_by,
        ..
    } = &view.history[0].event
    else {
        panic!("first event is routed: {:?}", view.history);
    };
    assert_eq!(decided_by, "builtin:least_loaded");
    assert_eq!(candidates.len(), 2, "both reps considered");
    assert_healthy(&f.engine).await;
}

#[tokio::test]
async fn unmatched_regions_need_a_default_territory() {
    let f = fixture();
    f.engine
        .upsert_territory(
            tid("sh"),
            territory(serde_json::json!({"name": "SH", "regions": ["CN-SH"]})),
        )
        .await
        .unwrap();
    f.engine.upsert_rep(rid("a"), rep("sh", 5)).await.unwrap();
    let err = f.engine.route(lead(1, "CN-JS")).await.unwrap_err();
    assert!(matches!(err, EngineError::NoTerritory { .. }), "{err:?}");
    assert_eq!(err.code(), "no_territory");
}

/// A lead that lands in the default territory because no territory's regions cover
/// it says so in its reason, routed or queued, in its history and in a simulation; a
/// lead of the default territory's own regions does not.
#[tokio::test]
async fn routing_by_default_is_named_in_the_reason() {
    let f = fixture();
    east_with_reps(&f.engine, 1).await;
    f.engine
        .upsert_territory(
            tid("north"),
            territory(serde_json::json!({"name": "North", "regions": ["CN-BJ"]})),
        )
        .await
        .unwrap();

    let own = f.engine.route(lead(1, "CN-SH-PD")).await.unwrap();
    assert!(!own.reason.contains("default"), "{}", own.reason);

    let outside = f.engine.route(lead(2, "CN-GD")).await.unwrap();
    assert_eq!(outside.territory_id, tid("east"));
    assert_eq!(outside.status, RouteStatus::Assigned);
    let note = "default territory (region CN-GD is none of its regions); ";
    assert!(outside.reason.starts_with(note), "{}", outside.reason);
    let view = f.engine.lead(outside.lead_id).unwrap().unwrap();
    let HistoryEvent::Routed { reason, .. } = &view.history[0].event else {
        panic!("{:?}", view.history);
    };
    assert_eq!(reason, &outside.reason, "the history keeps the same reason");

    let simulated = f.engine.simulate(&lead(3, "CN-GD"), None).await.unwrap();
    assert!(
        simulated.decision.reason.starts_with(note),
        "{}",
        simulated.decision.reason
    );

    // Both reps are full now: the next one waits, and says why it is here too.
    let no_region = LeadInput {
        region: None,
        ..lead(4, "")
    };
    let queued = f.engine.route(no_region).await.unwrap();
    assert_eq!(queued.status, RouteStatus::Queued);
    assert_eq!(
        queued.reason,
        "default territory (the lead has no region); no rep has capacity"
    );
    assert_healthy(&f.engine).await;
}

#[tokio::test]
async fn full_territories_queue_and_drain_oldest_first() {
    let f = fixture();
    east_with_reps(&f.engine, 1).await;
    let a = f.engine.route(lead(1, "CN-SH")).await.unwrap();
    let _b = f.engine.route(lead(2, "CN-SH")).await.unwrap();
    let q1 = f.engine.route(lead(3, "CN-SH")).await.unwrap();
    let q2 = f.engine.route(lead(4, "CN-SH")).await.unwrap();
    assert_eq!(
        (q1.status, q2.status),
        (RouteStatus::Queued, RouteStatus::Queued)
    );
    assert_eq!(q1.rep_id, None);
    let t = f.engine.territory(&tid("east")).await.unwrap();
    assert_eq!(t.queue, vec![q1.lead_id, q2.lead_id]);

    // Closing a's lead frees one slot: the oldest queued lead takes it.
    f.engine
        .record_event(
            a.lead_id,
            LeadEventInput::Closed {
                outcome: Outcome::Lost,
            },
        )
        .await
        .unwrap();
    f.engine.settle().await.unwrap();
    let q1_state = f.engine.lead(q1.lead_id).unwrap().unwrap().state;
    assert_eq!(q1_state.status, LeadStatus::Assigned);
    assert_eq!(q1_state.rep, a.rep_id);
    assert_eq!(
        f.engine.lead(q2.lead_id).unwrap().unwrap().state.status,
        LeadStatus::Queued
    );

    // Raising capacity drains the rest.
    f.engine.upsert_rep(rid("b"), rep("east", 2)).await.unwrap();
    f.engine.settle().await.unwrap();
    assert_eq!(
        f.engine.lead(q2.lead_id).unwrap().unwrap().state.rep,
        Some(rid("b"))
    );
    assert_healthy(&f.engine).await;
}

#[tokio::test]
async fn a_rep_coming_back_or_joining_takes_queued_leads() {
    let f = fixture();
    f.engine
        .upsert_territory(
            tid("east"),
            territory(serde_json::json!({"name": "E", "default": true})),
        )
        .await
        .unwrap();
    let mut away = rep("east", 3);
    away.status = leadroute_engine::domain::RepStatus::Away;
    f.engine.upsert_rep(rid("a"), away.clone()).await.unwrap();
    let q = f.engine.route(lead(1, "CN")).await.unwrap();
    assert_eq!(q.status, RouteStatus::Queued);
    away.status = leadroute_engine::domain::RepStatus::Available;
    f.engine.upsert_rep(rid("a"), away).await.unwrap();
    f.engine.settle().await.unwrap();
    assert_eq!(
        f.engine.lead(q.lead_id).unwrap().unwrap().state.rep,
        Some(rid("a"))
    );

    let q = f.engine.route(lead(2, "CN")).await.unwrap();
    assert_eq!(q.status, RouteStatus::Assigned);
    f.engine.upsert_rep(rid("a"), rep("east", 0)).await.unwrap();
    let q = f.engine.route(lead(3, "CN")).await.unwrap();
    assert_eq!(q.status, RouteStatus::Queued);
    f.engine
        .upsert_rep(rid("new"), rep("east", 1))
        .await
        .unwrap();
    f.engine.settle().await.unwrap();
    assert_eq!(
        f.engine.lead(q.lead_id).unwrap().unwrap().state.rep,
        Some(rid("new"))
    );
    assert_healthy(&f.engine).await;
}

#[tokio::test]
async fn duplicates_take_no_load_and_are_recorded_on_the_original() {
    let f = fixture();
    east_with_reps(&f.engine, 5).await;
    let original = f.engine.route(lead(7, "CN-SH")).await.unwrap();
    let mut again = lead(7, "CN-SH");
    again.phone = Some("0086-139-0000-0007".into());
    again.source = Some("ads".into());
    let dup = f.engine.route(again).await.unwrap();
    assert_eq!(dup.status, RouteStatus::Duplicate);
    assert_eq!(dup.duplicate_of, Some(original.lead_id));
    assert_eq!(dup.lead_id, original.lead_id);
    assert_eq!(dup.rep_id, original.rep_id);
    let loads: u32 = f.engine.reps().await.unwrap().iter().map(|r| r.load).sum();
    assert_eq!(loads, 1);
    let history = f.engine.lead(original.lead_id).unwrap().unwrap().history;
    assert!(matches!(
        &history.last().unwrap().event,
        HistoryEvent::Duplicate { matched, source } if matched == &["phone"] && source.as_deref() == Some("ads")
    ));

    // Once closed, the same contact is a new lead.
    f.engine
        .record_event(
            original.lead_id,
            LeadEventInput::Closed {
                outcome: Outcome::Won,
            },
        )
        .await
        .unwrap();
    let fresh = f.engine.route(lead(7, "CN-SH")).await.unwrap();
    assert_eq!(fresh.status, RouteStatus::Assigned);
    assert_ne!(fresh.lead_id, original.lead_id);
    assert_healthy(&f.engine).await;
}

#[tokio::test]
async fn repeats_are_counted_and_only_the_first_ones_kept_in_history() {
    let f = fixture();
    east_with_reps(&f.engine, 5).await;
    let original = f.engine.route(lead(7, "CN-SH")).await.unwrap();
    // One at a time, then in a batch: both find the stored lead before the committer
    // (the committer's own check is the next test's).
    for n in 0..15 {
        f.clock.advance(1);
        let dup = f.engine.route(lead(7, "CN-SH")).await.unwrap();
        assert_eq!(dup.status, RouteStatus::Duplicate, "repeat {n}");
    }
    let batch: Vec<LeadInput> = (0..30).map(|_| lead(7, "CN-SH")).collect();
    for result in f.engine.route_batch(&batch).await {
        assert_eq!(result.unwrap().status, RouteStatus::Duplicate);
    }
    let last = leadroute_engine::Clock::now(&f.clock);

    let check = |view: leadroute_engine::LeadView| {
        assert_eq!(view.state.repeats, 45);
        assert_eq!(view.state.last_repeat_at, Some(last));
        let kept = view
            .history
            .iter()
            .filter(|e| matches!(e.event, HistoryEvent::Duplicate { .. }))
            .count();
        assert_eq!(kept, REPEATS_IN_HISTORY as usize);
        assert_eq!(
            view.history.len(),
            1 + REPEATS_IN_HISTORY as usize,
            "routed + kept"
        );
    };
    check(f.engine.lead(original.lead_id).unwrap().unwrap());
    f.engine.shutdown().await.unwrap();
    drop(f.engine);
    let engine = open(f.dir.path(), &f.clock);
    assert_eq!(engine.startup_audit().await.unwrap(), Vec::<String>::new());
    check(engine.lead(original.lead_id).unwrap().unwrap());
    assert_healthy(&engine).await;
}

#[tokio::test]
async fn racing_duplicates_in_one_batch_yield_one_lead() {
    let f = fixture();
    east_with_reps(&f.engine, 50).await;
    let batch: Vec<LeadInput> = (0..20)
        .map(|_| LeadInput {
            email: Some("Same@Example.cn".into()),
            region: Some("CN-SH".into()),
            ..Default::default()
        })
        .collect();
    let results = f.engine.route_batch(&batch).await;
    let statuses: Vec<RouteStatus> = results.iter().map(|r| r.as_ref().unwrap().status).collect();
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == RouteStatus::Assigned)
            .count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == RouteStatus::Duplicate)
            .count(),
        19
    );
    let loads: u32 = f.engine.reps().await.unwrap().iter().map(|r| r.load).sum();
    assert_eq!(loads, 1);
    // Found by the committer's own check, the repeats are counted all the same.
    let lead = results
        .iter()
        .find_map(|r| r.as_ref().unwrap().duplicate_of)
        .unwrap();
    let view = f.engine.lead(lead).unwrap().unwrap();
    assert_eq!(view.state.repeats, 19);
    assert!(view.state.last_repeat_at.is_some());
    assert_healthy(&f.engine).await;
}

#[tokio::test]
async fn stages_follow_the_documented_order() {
    let f = fixture();
    east_with_reps(&f.engine, 5).await;
    let l = f.engine.route(lead(1, "CN-SH")).await.unwrap();
    let err = f
        .engine
        .record_event(l.lead_id, LeadEventInput::Stage { stage: Stage::Demo })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::StageOrder {
                got: Stage::Demo,
                expected: Stage::FirstContact
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("expected first_contact"), "{err}");
    f.engine
        .record_event(l.lead_id, LeadEventInput::Touched)
        .await
        .unwrap();
    for stage in &Stage::ALL[1..5] {
        f.engine
            .record_event(l.lead_id, LeadEventInput::Stage { stage: *stage })
            .await
            .unwrap();
    }
    // No going back.
    let err = f
        .engine
        .record_event(l.lead_id, LeadEventInput::Stage { stage: Stage::Demo })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::StageOrder {
                expected: Stage::ContractSigned,
                ..
            }
        ),
        "{err:?}"
    );
    let signed = f
        .engine
        .record_event(
            l.lead_id,
            LeadEventInput::Stage {
                stage: Stage::ContractSigned,
            },
        )
        .await
        .unwrap();
    assert_eq!(signed.state.status, LeadStatus::Closed(Outcome::Won));
    let err = f
        .engine
        .record_event(l.lead_id, LeadEventInput::Touched)
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::LeadClosed(_)), "{err:?}");
    let history = f.engine.lead(l.lead_id).unwrap().unwrap().history;
    assert_eq!(
        history.len(),
        1 + 6 + 1,
        "routed, touched, 5 stages, closed: {history:#?}"
    );
    assert_eq!(
        signed.history, history,
        "the answer holds the whole history"
    );
    let loads: u32 = f.engine.reps().await.unwrap().iter().map(|r| r.load).sum();
    assert_eq!(loads, 0, "closing released the load");
    assert_healthy(&f.engine).await;
}

#[tokio::test]
async fn unknown_leads_and_queued_leads_refuse_events() {
    let f = fixture();
    east_with_reps(&f.engine, 0).await;
    let q = f.engine.route(lead(1, "CN-SH")).await.unwrap();
    assert_eq!(q.status, RouteStatus::Queued);
    let err = f
        .engine
        .record_event(q.lead_id, LeadEventInput::Touched)
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::LeadNotAssigned(_)), "{err:?}");
    // A queued lead can be closed; it leaves the queue.
    f.engine
        .record_event(
            q.lead_id,
            LeadEventInput::Closed {
                outcome: Outcome::Lost,
            },
        )
        .await
        .unwrap();
    f.engine.settle().await.unwrap();
    assert!(
        f.engine
            .territory(&tid("east"))
            .await
            .unwrap()
            .queue
            .is_empty()
    );
    let unknown = "01ARZ3NDEKTSV4RRFFQ69G5FAV".parse().unwrap();
    let err = f
        .engine
        .record_event(unknown, LeadEventInput::Touched)
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::LeadNotFound(_)), "{err:?}");
    assert_healthy(&f.engine).await;
}

#[tokio::test]
async fn deleting_a_rep_needs_its_leads_reassigned() {
    let f = fixture();
    east_with_reps(&f.engine, 10).await;
    let mut owned_by_a = Vec::new();
    for n in 0..6 {
        let o = f.engine.route(lead(n, "CN-SH")).await.unwrap();
        if o.rep_id == Some(rid("a")) {
            owned_by_a.push(o.lead_id);
        }
    }
    assert!(!owned_by_a.is_empty());
    let err = f.engine.delete_rep(&rid("a"), false).await.unwrap_err();
    assert!(
        matches!(err, EngineError::RepHasOpenLeads { .. }),
        "{err:?}"
    );
    assert_eq!(
        f.engine.rep(&rid("a")).await.unwrap().load as usize,
        owned_by_a.len()
    );
    // The refused delete changed nothing: a still takes leads.
    let a = f.engine.rep(&rid("a")).await.unwrap();
    assert!(a.has_room(), "{a:?}");

    f.engine.delete_rep(&rid("a"), true).await.unwrap();
    assert!(matches!(
        f.engine.rep(&rid("a")).await,
        Err(EngineError::RepNotFound(_))
    ));
    for id in owned_by_a {
        let view = f.engine.lead(id).unwrap().unwrap();
        assert_eq!(view.state.rep, Some(rid("b")));
        assert_eq!(view.state.previous_reps, vec![rid("a")]);
        assert!(view.history.iter().any(|h| matches!(
            &h.event,
            HistoryEvent::Reassigned { why, .. } if why == "rep_deleted"
        )));
    }
    assert_healthy(&f.engine).await;
}

#[tokio::test]
async fn simulate_changes_nothing() {
    let f = fixture();
    east_with_reps(&f.engine, 5).await;
    let sim = f.engine.simulate(&lead(1, "CN-SH"), None).await.unwrap();
    assert_eq!(sim.territory_id, tid("east"));
    assert_eq!(sim.decision.ranking.len(), 2);
    assert!(!sim.decision.would_queue);
    let loads: u32 = f.engine.reps().await.unwrap().iter().map(|r| r.load).sum();
    assert_eq!(loads, 0);
    // The simulated lead is not stored, so routing it is not a duplicate.
    let routed = f.engine.route(lead(1, "CN-SH")).await.unwrap();
    assert_eq!(routed.status, RouteStatus::Assigned);
    assert_eq!(routed.rep_id.as_ref(), Some(&sim.decision.ranking[0]));
}

#[tokio::test]
async fn configuration_conflicts_are_refused() {
    let f = fixture();
    east_with_reps(&f.engine, 1).await;
    let err = f
        .engine
        .upsert_territory(
            tid("west"),
            territory(serde_json::json!({"name": "W", "regions": ["cn-sh"]})),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), "territory_conflict");
    let err = f
        .engine
        .upsert_territory(
            tid("west"),
            territory(serde_json::json!({"name": "W", "default": true})),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), "territory_conflict");
    let err = f
        .engine
        .upsert_rep(rid("c"), rep("nowhere", 1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "territory_not_found");
    let err = f
        .engine
        .upsert_territory(
            tid("west"),
            territory(serde_json::json!({"name": "W", "strategy": {"plugin": "vip-tier"}})),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), "unknown_plugin");
    assert_eq!(f.engine.territories().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_queued_lead_only_its_old_reps_could_take_does_not_hold_up_new_leads() {
    let f = fixture();
    f.engine
        .upsert_territory(
            tid("east"),
            territory(serde_json::json!({"name": "East", "regions": ["CN-SH"], "default": true})),
        )
        .await
        .unwrap();
    f.engine.upsert_rep(rid("a"), rep("east", 5)).await.unwrap();
    let moved = f.engine.route(lead(1, "CN-SH")).await.unwrap();
    // Moved away from its only possible rep: it waits for someone new.
    let decision = f
        .engine
        .reassign(moved.lead_id, leadroute_engine::ReassignReason::Manual)
        .await
        .unwrap();
    assert_eq!(decision.placement, leadroute_engine::Placement::Queued);
    // `a` has room, and the waiting lead cannot use it: new leads go to `a` at once.
    for n in 2..5 {
        let out = f.engine.route(lead(n, "CN-SH")).await.unwrap();
        assert_eq!(out.status, RouteStatus::Assigned, "{out:?}");
    }
    assert_eq!(
        f.engine.territory(&tid("east")).await.unwrap().queue,
        [moved.lead_id]
    );
    // A new rep is someone new: the waiting lead goes to it.
    f.engine.upsert_rep(rid("b"), rep("east", 5)).await.unwrap();
    f.engine.settle().await.unwrap();
    let view = f.engine.lead(moved.lead_id).unwrap().unwrap();
    assert_eq!(view.state.rep, Some(rid("b")));
    assert_healthy(&f.engine).await;
}

/// Two re-routes of one lead that both read it assigned to the same rep: the
/// committer applies the first to commit, and the other finds the lead gone from that
/// rep. It is refused as a lead no longer assigned there (which every internal caller
/// skips: SLA sweeps, reps going away, reps deleted), not as an internal error, and
/// gives back the room it had reserved. The first re-route is held right after its
/// read while the second runs to the end, so both reads see the old rep every time.
#[tokio::test]
async fn two_reroutes_racing_for_one_lead_move_it_once() {
    let (holder, mut events) = Holder::new(Checkpoint::ReassignRead, 1);
    let f = fixture_with(|config| config.probe(holder.probe()));
    east_with_reps(&f.engine, 50).await;
    for r in ["c", "d"] {
        f.engine.upsert_rep(rid(r), rep("east", 50)).await.unwrap();
    }
    let routed = f.engine.route(lead(1, "CN-SH")).await.unwrap();
    let (id, first_rep) = (routed.lead_id, routed.rep_id.unwrap());

    // The held re-route blocks the thread it runs on: it gets a thread of its own.
    let engine = f.engine.clone();
    let held = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(engine.reassign(id, ReassignReason::Manual))
    });
    expect_checkpoint(&mut events, Checkpoint::ReassignRead).await;
    // The held one has read the lead with `first_rep`; this one reads the same.
    let moved = f
        .engine
        .reassign(id, ReassignReason::Manual)
        .await
        .expect("the re-route that commits first moves the lead");
    expect_checkpoint(&mut events, Checkpoint::ReassignRead).await;
    let Placement::Rep(new_rep) = moved.placement.clone() else {
        panic!("three other reps have room: {moved:?}");
    };
    assert_ne!(new_rep, first_rep);
    holder.release(1);
    let refused = tokio::task::spawn_blocking(move || held.join().unwrap())
        .await
        .unwrap()
        .expect_err("the lead is no longer with the rep the held re-route read");
    assert_eq!(refused.code(), "lead_not_assigned", "{refused:?}");

    let view = f.engine.lead(id).unwrap().unwrap();
    assert_eq!(view.state.rep.as_ref(), Some(&new_rep));
    let reassigned = view
        .history
        .iter()
        .filter(|h| matches!(h.event, HistoryEvent::Reassigned { .. }))
        .count();
    assert_eq!(reassigned, 1, "moved once: {:#?}", view.history);
    // The refused re-route reserved room with some rep, and gave it back.
    f.engine.settle().await.unwrap();
    for r in f.engine.reps().await.unwrap() {
        let expected = u32::from(r.rep.id == new_rep);
        assert_eq!(r.load, expected, "{}", r.rep.id);
    }
    assert_healthy(&f.engine).await;
}

/// An event's answer is the lead as its own change left it: its history ends with
/// the event, and is what the store holds up to there, even when repeats of the lead
/// are committed in the same group, before or after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_answers_with_the_history_its_own_change_left() {
    let f = fixture();
    east_with_reps(&f.engine, 100).await;
    for n in 1..=10 {
        let routed = f.engine.route(lead(n, "CN-SH")).await.unwrap();
        let mut repeats = Vec::new();
        for _ in 0..8 {
            let engine = f.engine.clone();
            repeats.push(tokio::spawn(
                async move { engine.route(lead(n, "CN-SH")).await },
            ));
        }
        let touched = f
            .engine
            .record_event(routed.lead_id, LeadEventInput::Touched)
            .await
            .unwrap();
        for r in repeats {
            assert_eq!(r.await.unwrap().unwrap().status, RouteStatus::Duplicate);
        }
        let stored = f.engine.lead(routed.lead_id).unwrap().unwrap().history;
        let answered = &touched.history;
        assert!(
            matches!(
                answered.last().map(|e| &e.event),
                Some(HistoryEvent::Touched)
            ),
            "the event is the answer's last entry: {answered:#?}"
        );
        assert_eq!(
            answered[..],
            stored[..answered.len()],
            "the answer is the stored history up to the event"
        );
        assert_eq!(stored.len(), 1 + 8 + 1, "routed, 8 repeats, touched");
    }
    assert_healthy(&f.engine).await;
}

/// A histogram's sample count and sum in the engine's registry.
fn histogram(engine: &Engine, name: &str) -> (u64, f64) {
    let families = engine.metrics().registry.gather();
    let family = families
        .iter()
        .find(|f| f.name() == name)
        .unwrap_or_else(|| panic!("{name} is registered"));
    let h = family.get_metric()[0].get_histogram();
    (h.get_sample_count(), h.get_sample_sum())
}

/// Routes three leads one after another on a started engine, once its start-up work
/// is done, and returns what each histogram of `names` gained (count, sum) and the
/// seconds the three routes took.
async fn three_routes_add<const N: usize>(
    engine: &Engine,
    names: [&str; N],
) -> ([(u64, f64); N], f64) {
    engine.startup_audit().await.unwrap();
    let before = names.map(|name| histogram(engine, name));
    let started = std::time::Instant::now();
    for n in 1..=3 {
        engine.route(lead(n, "CN-SH")).await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut gained = names.map(|name| histogram(engine, name));
    for ((count, sum), (count_before, sum_before)) in gained.iter_mut().zip(before) {
        *count -= count_before;
        *sum -= sum_before;
    }
    (gained, elapsed)
}

#[tokio::test]
async fn every_committed_change_records_its_wait_for_the_group() {
    let f = fixture();
    east_with_reps(&f.engine, 5).await;
    let waits_name = "leadroute_store_commit_wait_seconds";
    let sizes_name = "leadroute_store_commit_group_size";
    let ([(waits, waited), (_, changes)], elapsed) =
        three_routes_add(&f.engine, [waits_name, sizes_name]).await;
    assert_eq!(
        histogram(&f.engine, waits_name).0 as f64,
        histogram(&f.engine, sizes_name).1,
        "one wait for every change of every group, setup included"
    );
    assert_eq!(changes, 3.0, "the three leads, and nothing else");
    assert_eq!(waits, 3);
    // Each change was submitted and committed within its route, one route after the
    // other: the three waits lie apart inside the time around the calls. A wait
    // measured from the wrong instant, or in the wrong unit, does not fit.
    assert!(
        waited > 0.0 && waited <= elapsed,
        "waited {waited} s in {elapsed} s of calls"
    );
}

#[tokio::test]
async fn every_answer_read_records_how_long_it_waited_to_be_read() {
    let f = fixture();
    east_with_reps(&f.engine, 5).await;
    let ([(reads, waited)], elapsed) =
        three_routes_add(&f.engine, ["leadroute_store_answer_wait_seconds"]).await;
    assert_eq!(reads, 3, "one answer read for each routed lead");
    // Each answer was sent and read within its route, one route after the other.
    assert!(
        waited > 0.0 && waited <= elapsed,
        "waited {waited} s in {elapsed} s of calls"
    );
}
