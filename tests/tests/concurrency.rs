//! Property test: random concurrent interleavings of intake, closing, capacity and
//! status changes, and reps joining and leaving, through the real actors and store.
//!
//! After every step (a batch of operations run concurrently, then `settle`):
//! - the store audit and the actors agree: load == open assignments, at most one open
//!   assignment per lead, queues hold exactly the queued leads;
//! - no rep is over capacity unless its capacity was lowered below its load;
//! - leads leave a queue for a rep oldest first;
//! - every acknowledged lead is stored.

use std::collections::{BTreeMap, HashSet};

use leadroute_engine::domain::{LeadEventInput, LeadId, LeadStatus, Outcome, RepStatus};
use leadroute_engine::{Engine, RouteStatus};
use leadroute_tests::*;
use proptest::prelude::*;

const REGIONS: [&str; 3] = ["CN-SH-PD", "CN-BJ", "US-CA"];
const TERRITORIES: [&str; 2] = ["east", "north"];

#[derive(Clone, Debug)]
enum Op {
    Route {
        region: usize,
        count: u32,
    },
    Close {
        pick: usize,
        won: bool,
    },
    Capacity {
        rep: usize,
        capacity: u32,
    },
    Status {
        rep: usize,
        status: RepStatus,
    },
    AddRep {
        territories: Vec<usize>,
        capacity: u32,
    },
    RemoveRep {
        rep: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let status = prop_oneof![
        Just(RepStatus::Available),
        Just(RepStatus::Away),
        Just(RepStatus::Offline)
    ];
    prop_oneof![
        4 => (0..REGIONS.len(), 1..4u32).prop_map(|(region, count)| Op::Route { region, count }),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(pick, won)| Op::Close { pick, won }),
        2 => (any::<usize>(), 0..4u32).prop_map(|(rep, capacity)| Op::Capacity { rep, capacity }),
        1 => (any::<usize>(), status).prop_map(|(rep, status)| Op::Status { rep, status }),
        1 => (proptest::collection::vec(0..2usize, 1..3), 0..3u32)
            .prop_map(|(territories, capacity)| Op::AddRep { territories, capacity }),
        1 => any::<usize>().prop_map(|rep| Op::RemoveRep { rep }),
    ]
}

/// What the test driver knows, independent of the engine.
#[derive(Default)]
struct Model {
    next_lead: u32,
    next_rep: u32,
    acked: BTreeMap<LeadId, RouteStatus>,
    /// Reps whose capacity was lowered below their load; they may sit above capacity.
    lowered: HashSet<String>,
    /// Each territory's queue as last observed: lead and its place (queue sequence).
    queues: BTreeMap<String, Vec<(LeadId, Option<u64>)>>,
}

async fn setup(engine: &Engine) {
    engine
        .upsert_territory(
            tid("east"),
            territory(
                serde_json::json!({"name": "East", "regions": ["CN-SH"], "default": true,
                "strategy": {"builtin": "round_robin"}}),
            ),
        )
        .await
        .unwrap();
    engine
        .upsert_territory(
            tid("north"),
            territory(serde_json::json!({"name": "North", "regions": ["CN-BJ"],
                "strategy": {"builtin": "rules"}})),
        )
        .await
        .unwrap();
    for (id, territories, capacity) in [
        ("e1", vec!["east"], 2),
        ("e2", vec!["east"], 1),
        ("n1", vec!["north"], 2),
        ("both", vec!["east", "north"], 2),
    ] {
        let mut input = rep(territories[0], capacity);
        input.territories = territories.into_iter().map(String::from).collect();
        engine.upsert_rep(rid(id), input).await.unwrap();
    }
}

/// Runs one step's operations concurrently.
async fn run_step(engine: &Engine, model: &mut Model, ops: Vec<Op>) {
    let reps: Vec<_> = engine.reps().await.unwrap();
    let open: Vec<LeadId> = model
        .acked
        .keys()
        .copied()
        .filter(|id| engine.lead(*id).unwrap().unwrap().state.status.is_open())
        .collect();
    let mut tasks = Vec::new();
    for op in ops {
        let engine = engine.clone();
        match op {
            Op::Route { region, count } => {
                let inputs: Vec<_> = (0..count)
                    .map(|i| lead(model.next_lead + i, REGIONS[region]))
                    .collect();
                model.next_lead += count;
                tasks.push(tokio::spawn(async move {
                    let mut acked = Vec::new();
                    for input in inputs {
                        let o = engine.route(input).await.expect("every region resolves");
                        acked.push((o.lead_id, o.status));
                    }
                    acked
                }));
            }
            Op::Close { pick, won } if !open.is_empty() => {
                let id = open[pick % open.len()];
                let outcome = if won { Outcome::Won } else { Outcome::Lost };
                tasks.push(tokio::spawn(async move {
                    // A concurrent close of the same lead may win the race.
                    let _ = engine
                        .record_event(id, LeadEventInput::Closed { outcome })
                        .await;
                    Vec::new()
                }));
            }
            Op::Capacity { rep, capacity } if !reps.is_empty() => {
                let snap = reps[rep % reps.len()].clone();
                let mut input = leadroute_engine::domain::RepInput::from(&*snap.rep);
                input.capacity = capacity;
                tasks.push(tokio::spawn(async move {
                    let _ = engine.upsert_rep(snap.rep.id.clone(), input).await;
                    Vec::new()
                }));
            }
            Op::Status { rep, status } if !reps.is_empty() => {
                let snap = reps[rep % reps.len()].clone();
                let mut input = leadroute_engine::domain::RepInput::from(&*snap.rep);
                input.status = status;
                tasks.push(tokio::spawn(async move {
                    let _ = engine.upsert_rep(snap.rep.id.clone(), input).await;
                    Vec::new()
                }));
            }
            Op::AddRep {
                territories,
                capacity,
            } => {
                model.next_rep += 1;
                let id = rid(&format!("r{}", model.next_rep));
                let mut input = rep("east", capacity);
                input.territories = territories
                    .into_iter()
                    .map(|t| TERRITORIES[t].to_string())
                    .collect();
                tasks.push(tokio::spawn(async move {
                    engine.upsert_rep(id, input).await.unwrap();
                    Vec::new()
                }));
            }
            Op::RemoveRep { rep } if !reps.is_empty() => {
                let id = reps[rep % reps.len()].rep.id.clone();
                tasks.push(tokio::spawn(async move {
                    // Racing removals of the same rep: one wins, the other finds nothing.
                    match engine.delete_rep(&id, true).await {
                        Ok(()) | Err(leadroute_engine::EngineError::RepNotFound(_)) => {}
                        Err(e) => panic!("delete_rep failed: {e}"),
                    }
                    Vec::new()
                }));
            }
            _ => {}
        }
    }
    for task in tasks {
        for (id, status) in task.await.expect("operation task") {
            model.acked.insert(id, status);
        }
    }
}

async fn check(engine: &Engine, model: &mut Model) {
    engine.settle().await.unwrap();
    let problems = engine.check_invariants().await.unwrap();
    assert!(problems.is_empty(), "{problems:#?}");

    for r in engine.reps().await.unwrap() {
        let id = r.rep.id.to_string();
        if r.load > r.rep.capacity {
            assert!(
                model.lowered.contains(&id),
                "rep {id} over capacity ({}/{}) without a lowered capacity",
                r.load,
                r.rep.capacity
            );
        } else {
            model.lowered.remove(&id);
        }
    }

    // Queues: a lead may leave for a rep only when every older one has left too, or
    // when the older ones must not go back to that rep (they were re-routed away from
    // it): the drain serves the oldest lead some rep with room may take. A lead that
    // left and came back (assigned, then its rep was deleted) has a new place at the
    // back and no longer counts as older.
    for t in engine.territories().await.unwrap() {
        let id = t.territory.id.to_string();
        let before = model.queues.remove(&id).unwrap_or_default();
        let now: Vec<(LeadId, Option<u64>)> = t
            .queue
            .iter()
            .map(|l| (*l, engine.lead(*l).unwrap().unwrap().state.queue_seq))
            .collect();
        let mut waiting_ahead = Vec::new();
        for entry in &before {
            let state = engine.lead(entry.0).unwrap().unwrap().state;
            if now.contains(entry) {
                waiting_ahead.push(state);
                continue;
            }
            if state.status == LeadStatus::Assigned {
                let rep = state.rep.clone().expect("an assigned lead has a rep");
                for older in &waiting_ahead {
                    assert!(
                        older.previous_reps.contains(&rep),
                        "lead {} left {id}'s queue for {rep} while older lead {}, which \
                         {rep} may take, still waits",
                        entry.0,
                        older.lead.id
                    );
                }
            }
        }
        model.queues.insert(id, now);
    }

    for id in model.acked.keys() {
        assert!(
            engine.lead(*id).unwrap().is_some(),
            "acknowledged lead {id} is stored"
        );
    }
}

/// Marks reps whose capacity may end below their load after this step. Every rep
/// update is a full replacement, so a status change written from the pre-step view
/// can put back an older, lower capacity too.
async fn note_lowered(engine: &Engine, model: &mut Model, ops: &[Op]) {
    let reps = engine.reps().await.unwrap();
    if reps.is_empty() {
        return;
    }
    let mut written: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
    for op in ops {
        match op {
            Op::Capacity { rep, capacity } => {
                written.entry(rep % reps.len()).or_default().push(*capacity)
            }
            Op::Status { rep, .. } => {
                let i = rep % reps.len();
                written.entry(i).or_default().push(reps[i].rep.capacity)
            }
            _ => {}
        }
    }
    for (i, capacities) in written {
        let r = &reps[i];
        // Load may grow up to the highest capacity in force during the step.
        let peak = capacities
            .iter()
            .copied()
            .chain([r.rep.capacity, r.load])
            .max();
        if capacities.iter().copied().min() < peak {
            model.lowered.insert(r.rep.id.to_string());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_under_random_concurrent_interleavings(
        steps in proptest::collection::vec(proptest::collection::vec(op(), 1..6), 1..12)
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let f = fixture();
            setup(&f.engine).await;
            let mut model = Model::default();
            for ops in steps {
                note_lowered(&f.engine, &mut model, &ops).await;
                run_step(&f.engine, &mut model, ops).await;
                f.clock.advance(1_000);
                check(&f.engine, &mut model).await;
            }
            f.engine.shutdown().await.unwrap();
            drop(f.engine);
            // And the durable state reopens clean.
            let engine = open(f.dir.path(), &f.clock);
            assert_eq!(engine.startup_audit().await.unwrap(), Vec::<String>::new());
            check(&engine, &mut model).await;
        });
    }
}
