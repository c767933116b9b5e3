//! Durability across restarts on a real sled directory.

use leadroute_engine::domain::{LeadEventInput, LeadId, LeadStatus, Outcome};
use leadroute_engine::{Checkpoint, Engine, EngineConfig, RouteOutcome, RouteStatus};
use leadroute_tests::*;

#[tokio::test]
async fn graceful_shutdown_then_reopen_restores_identical_state() {
    let f = fixture();
    let ids = populate(&f.engine).await;
    let before = observe(&f.engine, &ids).await;
    assert!(
        before.territories.iter().any(|(_, q)| !q.is_empty()),
        "the scenario must leave a queue to restore: {before:#?}"
    );
    f.engine.shutdown().await.unwrap();
    assert!(matches!(
        f.engine.route(lead(99, "CN-SH")).await,
        Err(leadroute_engine::EngineError::ShuttingDown)
    ));
    drop(f.engine);

    let engine = open(f.dir.path(), &f.clock);
    assert_eq!(engine.startup_audit().await.unwrap(), Vec::<String>::new());
    let after = observe(&engine, &ids).await;
    assert_eq!(before, after);
    assert_healthy(&engine).await;

    // The restored engine keeps working: the duplicate index and queues came back.
    let dup = engine.route(lead(1, "CN-SH")).await.unwrap();
    assert_eq!(dup.status, RouteStatus::Duplicate);
    engine
        .record_event(
            ids[0],
            LeadEventInput::Closed {
                outcome: Outcome::Lost,
            },
        )
        .await
        .unwrap();
    assert_healthy(&engine).await;

    // The de-duplication index is rebuilt from the open leads, queued ones included:
    // each open lead's repeat is its duplicate, and a closed lead's is a new lead.
    for (n, id) in ids.iter().enumerate() {
        let again = engine.route(fixture_lead(n as u32)).await.unwrap();
        if n == 0 || n == 2 {
            assert_ne!(again.status, RouteStatus::Duplicate, "lead {n} is closed");
        } else {
            assert_eq!(again.duplicate_of, Some(*id), "lead {n} is open");
        }
    }
    assert_healthy(&engine).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_without_shutdown_keeps_every_acknowledged_lead() {
    let f = fixture();
    east_with_reps(&f.engine, 40).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<RouteOutcome>();
    let mut tasks = Vec::new();
    for worker in 0..8u32 {
        let engine = f.engine.clone();
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..1000u32 {
                if let Ok(o) = engine.route(lead(worker * 10_000 + n, "CN-SH")).await {
                    let _ = tx.send(o);
                }
            }
        }));
    }
    drop(tx);
    // Stop abruptly once enough leads are acknowledged (the rest are in flight).
    let mut acked = Vec::new();
    while acked.len() < 120 {
        acked.push(rx.recv().await.expect("routes keep succeeding"));
    }
    for t in &tasks {
        t.abort();
    }
    for t in tasks {
        let _ = t.await;
    }
    while let Ok(o) = rx.try_recv() {
        acked.push(o);
    }
    drop(f.engine);

    let engine = open(f.dir.path(), &f.clock);
    assert_eq!(engine.startup_audit().await.unwrap(), Vec::<String>::new());
    for o in &acked {
        let view = engine
            .lead(o.lead_id)
            .unwrap()
            .expect("acknowledged lead is stored");
        match o.status {
            RouteStatus::Assigned => {
                assert_eq!(view.state.status, LeadStatus::Assigned);
                assert_eq!(view.state.rep, o.rep_id);
            }
            RouteStatus::Queued => assert!(view.state.status.is_open()),
            RouteStatus::Duplicate => unreachable!("every lead is unique"),
        }
    }
    assert_healthy(&engine).await;
}

#[tokio::test]
async fn broken_invariants_are_found_and_repaired_at_start() {
    let f = fixture();
    let ids = populate(&f.engine).await;
    f.engine.shutdown().await.unwrap();
    drop(f.engine);

    // Damage the store behind the engine's back.
    let (assigned, queued) = {
        let engine = open(f.dir.path(), &f.clock);
        let with = |status| {
            ids.iter()
                .copied()
                .find(|id| engine.lead(*id).unwrap().unwrap().state.status == status)
                .unwrap()
        };
        let found = (with(LeadStatus::Assigned), with(LeadStatus::Queued));
        engine.shutdown().await.unwrap();
        found
    };
    {
        let db = sled_when_free(f.dir.path());
        db.open_tree("assignments")
            .unwrap()
            .remove(assigned.to_key())
            .unwrap();
        db.open_tree("lead_keys")
            .unwrap()
            .remove(queued.to_key())
            .unwrap();
        let stray = LeadId::from_key(&7u128.to_be_bytes()).unwrap();
        db.open_tree("queue")
            .unwrap()
            .insert(b"east\0garbage!", &stray.to_key())
            .unwrap();
        db.flush().unwrap();
    }

    let engine = open(f.dir.path(), &f.clock);
    let findings = engine.startup_audit().await.unwrap().join("\n");
    assert!(
        findings.contains(&format!(
            "open lead {assigned} is neither assigned nor queued"
        )),
        "{findings}"
    );
    assert!(findings.contains("stored load"), "{findings}");
    assert!(findings.contains("rep_leads index entry"), "{findings}");
    assert!(
        findings.contains("queue entry that is not a queued lead"),
        "{findings}"
    );
    assert!(
        findings.contains(&format!("open lead {queued} has no lead_keys entry")),
        "{findings}"
    );
    assert_healthy(&engine).await;
    // The orphaned lead was put back in its queue and routed again.
    assert!(
        engine
            .lead(assigned)
            .unwrap()
            .unwrap()
            .state
            .status
            .is_open()
    );
    // The queued lead's keys, left out of the de-duplication index at the start, are
    // back in it: a repeat of it is its duplicate.
    let n = ids.iter().position(|id| *id == queued).unwrap();
    let again = engine.route(fixture_lead(n as u32)).await.unwrap();
    assert_eq!(again.duplicate_of, Some(queued));
    let text = engine.metrics().render();
    assert!(
        text.contains("leadroute_recovery_repairs_total 5"),
        "{text}"
    );
}

/// The start-up audit reads the store while the engine already serves. Leads closed,
/// touched, re-assigned and added while it reads look broken to it half-way; the
/// committer's second look must repair none of them. The audit is held right after it
/// has read the assignments while every change is made, so they all fall inside its
/// read, and its second look has findings to dismiss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_audit_repairs_nothing_that_live_traffic_changed() {
    let f = fixture();
    east_with_reps(&f.engine, 100_000).await;
    let inputs: Vec<_> = (0..1200).map(|n| lead(n, "CN-SH")).collect();
    let mut ids = Vec::new();
    for chunk in inputs.chunks(300) {
        for o in f.engine.route_batch(chunk).await {
            ids.push(o.unwrap().lead_id);
        }
    }
    f.engine.shutdown().await.unwrap();
    drop(f.engine);

    let (holder, mut events) = Holder::new(Checkpoint::AuditScan, 1);
    let engine = Engine::open(
        EngineConfig::new(f.dir.path())
            .clock(f.clock.clone())
            .probe(holder.probe()),
    )
    .unwrap();
    expect_checkpoint(&mut events, Checkpoint::AuditScan).await;
    // Change leads from both ends of the key space while the audit is held mid-read.
    let mut tasks = Vec::new();
    let half = ids.len() / 2;
    for (worker, slice) in [&ids[..half], &ids[half..]].into_iter().enumerate() {
        let engine = engine.clone();
        let slice = slice.to_vec();
        tasks.push(tokio::spawn(async move {
            let order: Vec<_> = if worker == 0 {
                slice
            } else {
                slice.into_iter().rev().collect()
            };
            for (i, id) in order.into_iter().enumerate() {
                let event = match i % 3 {
                    0 => LeadEventInput::Closed {
                        outcome: Outcome::Won,
                    },
                    1 => LeadEventInput::Touched,
                    _ => {
                        engine
                            .reassign(id, leadroute_engine::ReassignReason::Manual)
                            .await
                            .unwrap();
                        continue;
                    }
                };
                engine.record_event(id, event).await.unwrap();
                let n = 100_000 + worker as u32 * 10_000 + i as u32;
                engine.route(lead(n, "CN-SH")).await.unwrap();
            }
        }));
    }
    let mut done = Vec::new();
    for t in tasks {
        done.push(t.await);
    }
    // Released before any failure is reported: a failing test still ends.
    holder.release(1);
    for d in done {
        d.unwrap();
    }
    let findings = engine.startup_audit().await.unwrap();
    assert_eq!(findings, Vec::<String>::new());
    let text = engine.metrics().render();
    assert!(
        text.contains("leadroute_recovery_repairs_total 0"),
        "{text}"
    );
    // Closed and moved leads disagree with the assignments it read, new ones have
    // no assignment there: the audit reported them, and the committer dismissed them.
    let dismissed = counter(&text, "leadroute_recovery_dismissed_total");
    assert!(dismissed > 0, "nothing was dismissed:\n{text}");
    assert_healthy(&engine).await;
}

/// The value of an unlabelled counter in the text exposition.
fn counter(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} in\n{text}"))
        .parse()
        .unwrap()
}

/// Series whose labels are known before their first event begin at zero, when the
/// territory or plugin is created and again when a restart loads it: a series that
/// appears only at its first event hides that event from `increase()`, and alerts.
#[tokio::test]
async fn labelled_series_begin_at_zero_and_again_after_a_restart() {
    let f = fixture();
    f.engine
        .put_plugin("rules", leadroute_plugin_builds::RULES.to_vec())
        .await
        .unwrap();
    east_with_plugin(&f.engine, "rules", serde_json::json!({}), 10).await;
    let zero = [
        r#"leadroute_leads_routed_total{outcome="queued",territory="east"} 0"#,
        r#"leadroute_sla_breaches_total{territory="east"} 0"#,
        r#"leadroute_sla_escalations_total{territory="east"} 0"#,
        r#"leadroute_territory_queue_depth{territory="east"} 0"#,
        r#"leadroute_plugin_failures_total{plugin="rules",reason="trap"} 0"#,
        r#"leadroute_plugin_failures_total{plugin="rules",reason="out_of_fuel"} 0"#,
        r#"leadroute_plugin_circuit_open{plugin="rules"} 0"#,
        r#"leadroute_plugin_call_duration_seconds_count{plugin="rules"} 0"#,
        r#"leadroute_reassignments_total{reason="sla_breach"} 0"#,
        r#"leadroute_overload_rejections_total{what="leads"} 0"#,
    ];
    let text = f.engine.metrics().render();
    for line in zero {
        assert!(text.lines().any(|l| l == line), "no {line}:\n{text}");
    }
    f.engine.shutdown().await.unwrap();
    drop(f.engine);

    let engine = open(f.dir.path(), &f.clock);
    let text = engine.metrics().render();
    for line in zero {
        assert!(
            text.lines().any(|l| l == line),
            "after a restart, no {line}:\n{text}"
        );
    }
}
