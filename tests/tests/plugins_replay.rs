//! Replay: stored routing decisions run through a plugin version. The wasm `rules`
//! agrees with the built-in it mirrors on every decision; `vip-tier` changes exactly
//! the decisions its bands disagree with; nothing is stored or counted. One replay
//! runs at a time, and one whose caller goes away stops and frees its place.

use std::sync::Arc;

use leadroute_engine::domain::{LeadInput, RepInput};
use leadroute_engine::{Checkpoint, Engine, EngineError, FailureReason, ReplayOptions};
use leadroute_plugin_builds::{RULES, VIP_TIER};
use leadroute_tests::*;
use tokio::sync::mpsc::UnboundedReceiver;

/// Territory `east` (CN-SH, default) deciding with built-in `rules` and `config`.
async fn east(engine: &Engine, config: serde_json::Value) {
    engine
        .upsert_territory(
            tid("east"),
            territory(
                serde_json::json!({"name": "East", "regions": ["CN-SH"], "default": true,
                "strategy": {"builtin": "rules"}, "plugin_config": config}),
            ),
        )
        .await
        .unwrap();
}

fn sized(n: u32, amount: f64, industry: Option<&str>) -> LeadInput {
    LeadInput {
        purchase_amount: Some(amount),
        industry: industry.map(str::to_string),
        ..lead(n, "CN-SH")
    }
}

/// Routes a mix of leads with built-in rules through reps `a` (junior, skilled in
/// `hospital-lab`), `b` (senior) and `c` (principal); returns how many purchased at
/// least 100000.
async fn history(f: &Fixture) -> u64 {
    east(&f.engine, serde_json::json!({})).await;
    for (id, tier, skills) in [
        ("a", "junior", vec!["hospital-lab".to_string()]),
        ("b", "senior", vec![]),
        ("c", "principal", vec![]),
    ] {
        let input = RepInput {
            tier: Some(tier.into()),
            skills,
            ..rep("east", 100)
        };
        f.engine.upsert_rep(rid(id), input).await.unwrap();
    }
    let mut big = 0;
    for n in 0..40 {
        // Big buyers, some of them skilled; small ones spread by load and idle time.
        let input = match n % 5 {
            0 => sized(n, 300_000.0, None),
            1 => sized(n, 150_000.0, Some("hospital-lab")),
            _ => sized(n, 1_000.0, None),
        };
        if input.purchase_amount >= Some(100_000.0) {
            big += 1;
        }
        // Time moves, so idle-time tie-breaks matter.
        f.clock.advance(u64::from(n % 3));
        f.engine.route(input).await.unwrap();
    }
    f.engine.settle().await.unwrap();
    big
}

#[tokio::test]
async fn replay_counts_what_a_version_would_change() {
    let f = fixture();
    f.engine.put_plugin("rules", RULES.to_vec()).await.unwrap();
    f.engine
        .put_plugin("vip-tier", VIP_TIER.to_vec())
        .await
        .unwrap();
    let big = history(&f).await;
    assert_eq!(big, 16);

    // The wasm `rules` is the built-in's twin: no decision changes.
    let same = f
        .engine
        .replay("rules", 1, ReplayOptions::default())
        .await
        .unwrap();
    assert_eq!(same.leads_examined, 40);
    assert_eq!(same.decisions_examined, 40);
    assert_eq!(same.decisions_changed, 0, "{:?}", same.sample);
    assert_eq!((same.failures, same.skipped), (0, 0));

    // vip-tier wants a principal for every purchase >= 100000 (rules gave those to
    // the skilled or the senior rep); below that it defers to least_loaded, which is
    // what rules does for unskilled small buyers.
    east(
        &f.engine,
        serde_json::json!({"bands": [{"min_amount": 100000, "tier": "principal"}]}),
    )
    .await;
    let vip = f
        .engine
        .replay("vip-tier", 1, ReplayOptions::default())
        .await
        .unwrap();
    assert_eq!(vip.decisions_examined, 40);
    assert_eq!(vip.decisions_changed, big);
    assert_eq!(vip.sample.len(), big as usize);
    assert!(vip.sample.iter().all(|d| d.replayed_rep == rid("c")));
    assert!(vip.sample.iter().all(|d| d.actual_rep != rid("c")));
    assert!(vip.sample.windows(2).all(|w| w[0].at <= w[1].at));

    // The current config is what a version sees: `rules` refuses `bands`.
    let refused = f
        .engine
        .replay("rules", 1, ReplayOptions::default())
        .await
        .unwrap();
    assert_eq!(refused.failures, 40);
    assert_eq!(
        refused.failures_by_reason.get(&FailureReason::PluginError),
        Some(&40)
    );
    assert_eq!(refused.decisions_changed, 0);

    // Limit: the newest leads only.
    let recent = f
        .engine
        .replay(
            "vip-tier",
            1,
            ReplayOptions {
                territory: Some(tid("east")),
                limit: Some(5),
            },
        )
        .await
        .unwrap();
    assert_eq!(recent.leads_examined, 5);
    // Leads 35..40: 35 is big (n % 5 == 0), 36 big and skilled, the rest small.
    assert_eq!(recent.decisions_changed, 2);

    // Nothing was counted or stored.
    for name in ["rules", "vip-tier"] {
        assert_eq!(f.engine.plugin(name).unwrap().calls, 0);
    }
    let load: u32 = f.engine.reps().await.unwrap().iter().map(|r| r.load).sum();
    assert_eq!(load, 40, "one per routed lead, none taken by replays");
    assert_healthy(&f.engine).await;
}

#[tokio::test]
async fn bad_replay_requests_are_refused_clearly() {
    let f = fixture();
    f.engine.put_plugin("rules", RULES.to_vec()).await.unwrap();
    history(&f).await;
    let err = f
        .engine
        .replay("rules", 2, ReplayOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            EngineError::PluginNotFound {
                version: Some(2),
                ..
            }
        ),
        "{err:?}"
    );
    let err = f
        .engine
        .replay("nope", 1, ReplayOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "plugin_not_found");
    for limit in [0, 100_001] {
        let err = f
            .engine
            .replay(
                "rules",
                1,
                ReplayOptions {
                    territory: None,
                    limit: Some(limit),
                },
            )
            .await
            .unwrap_err();
        let EngineError::Invalid(v) = &err else {
            panic!("{err:?}")
        };
        assert_eq!(v.field, "limit");
    }
    let err = f
        .engine
        .replay(
            "rules",
            1,
            ReplayOptions {
                territory: Some(tid("west")),
                limit: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), "territory_not_found");
}

/// An engine whose replays are held at their first step, with `east`, reps `a`, `b`,
/// the wasm `rules` and [`HELD_LEADS`] routed leads.
async fn held_replays() -> (Fixture, Arc<Holder>, UnboundedReceiver<Checkpoint>) {
    let (holder, events) = Holder::new(Checkpoint::ReplayStep, 1);
    let f = fixture_with(|config| config.probe(holder.probe()));
    f.engine.put_plugin("rules", RULES.to_vec()).await.unwrap();
    east_with_reps(&f.engine, 100).await;
    for n in 0..HELD_LEADS {
        f.engine.route(lead(n, "CN-SH")).await.unwrap();
    }
    f.engine.settle().await.unwrap();
    (f, holder, events)
}

const HELD_LEADS: u32 = 5;

#[tokio::test]
async fn only_one_replay_runs_at_a_time() {
    let (f, holder, mut events) = held_replays().await;
    let first = {
        let engine = f.engine.clone();
        tokio::spawn(async move { engine.replay("rules", 1, ReplayOptions::default()).await })
    };
    expect_checkpoint(&mut events, Checkpoint::ReplayStep).await;

    // The first one is known to be running: the second is refused at once.
    let err = f
        .engine
        .replay("rules", 1, ReplayOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::ReplayInProgress), "{err:?}");
    assert_eq!(err.code(), "replay_in_progress");
    // Bad input is still answered as such.
    let err = f
        .engine
        .replay(
            "rules",
            1,
            ReplayOptions {
                territory: None,
                limit: Some(0),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), "invalid_field");

    holder.release(1);
    let report = first.await.unwrap().unwrap();
    assert_eq!(report.leads_examined, u64::from(HELD_LEADS));
    // Its place was given back before it answered: the next one starts at once,
    // without waiting to see the first one's thread end.
    let again = f
        .engine
        .replay("rules", 1, ReplayOptions::default())
        .await
        .unwrap();
    assert_eq!(again, report);
    expect_checkpoint(&mut events, Checkpoint::ReplayEnded).await;
    expect_checkpoint(&mut events, Checkpoint::ReplayEnded).await;
}

#[tokio::test]
async fn a_dropped_replay_stops_and_gives_its_place_back() {
    let (f, holder, mut events) = held_replays().await;
    // Boxed, so that dropping it drops the future itself.
    let mut replay = Box::pin(f.engine.replay("rules", 1, ReplayOptions::default()));
    tokio::select! {
        answer = &mut replay => panic!("answered while held: {answer:?}"),
        at = events.recv() => assert_eq!(at, Some(Checkpoint::ReplayStep)),
    }
    // The caller goes away while the replay is at its first step.
    drop(replay);
    expect_checkpoint(&mut events, Checkpoint::ReplayCancelled).await;
    // Its thread has not stopped yet, so its place is still taken.
    let err = f
        .engine
        .replay("rules", 1, ReplayOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::ReplayInProgress), "{err:?}");

    holder.release(1);
    expect_checkpoint(&mut events, Checkpoint::ReplayEnded).await;
    // It stopped right after the step it was held at, not after every lead.
    assert_eq!(holder.steps(), 1);

    let report = f
        .engine
        .replay("rules", 1, ReplayOptions::default())
        .await
        .unwrap();
    assert_eq!(report.leads_examined, u64::from(HELD_LEADS));
    assert_eq!(report.decisions_examined, u64::from(HELD_LEADS));
    expect_checkpoint(&mut events, Checkpoint::ReplayEnded).await;
    // A whole replay: each lead read, then its history, then its decision.
    assert_eq!(holder.steps(), 1 + 3 * HELD_LEADS as usize);
}
