//! The properties the fuzz targets in `fuzz/` check, shared with the corpus replay
//! test (`tests/fuzz_corpus.rs`) so CI replays every saved input on stable Rust.
//!
//! Each check panics when a property breaks; a clean return means the input was
//! handled (accepted or refused with a typed error).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

use leadroute_engine::domain::{
    LeadEventInput, LeadId, LeadInput, MAX_ATTRIBUTES_BYTES, Outcome, Stage,
};
use leadroute_engine::plugins::{PluginLimits, Standalone, decode_answer};
use leadroute_engine::{Durability, Engine, EngineConfig, EngineError, RouteStatus};

/// Intake: any bytes as a `POST /v1/leads` body. Parsing and validation never
/// panic; what validates respects the documented caps and yields contact keys.
pub fn lead_intake(data: &[u8]) {
    let Ok(input) = serde_json::from_slice::<LeadInput>(data) else {
        return;
    };
    let id = LeadId::from_key(&[7; 16]).expect("16 bytes");
    let Ok(lead) = input.validate(id, 0) else {
        return;
    };
    assert!(lead.attributes.len() <= MAX_ATTRIBUTES_BYTES);
    assert!(lead.purchase_amount.is_finite() && lead.purchase_amount >= 0.0);
    assert!(
        !leadroute_engine::dedupe::keys(&lead).is_empty(),
        "a valid lead has a contact key"
    );
}

/// The host's check of a plugin's answer: the first byte is the candidate count, the
/// rest the answer as a module would leave it in memory. Never panics; an accepted
/// ranking names each candidate at most once and only candidates that exist.
pub fn plugin_answer(data: &[u8]) {
    let Some((&count, answer)) = data.split_first() else {
        return;
    };
    let count = usize::from(count);
    if let Ok(ranking) = decode_answer(answer, count) {
        let mut seen = vec![false; count];
        for &i in &ranking.order {
            assert!(i < count, "index {i} of {count} candidates");
            assert!(!seen[i], "candidate {i} ranked twice");
            seen[i] = true;
        }
    }
}

/// Upload validation's first step: any bytes as a module. Compiling under the
/// engine's limits never panics; garbage is an error: in particular anything without
/// the `\0asm` header is refused. (Inputs with the header may be real modules, so
/// whether those compile is not judged here.)
pub fn plugin_upload(data: &[u8]) {
    let limits = PluginLimits {
        fuel: 1_000_000,
        ..PluginLimits::default()
    };
    let result = Standalone::new(limits, data, &serde_json::json!({}));
    if !data.starts_with(b"\0asm") {
        assert!(
            result.is_err(),
            "{} bytes without the \\0asm header were accepted as a module",
            data.len()
        );
    }
}

/// A lifecycle driven through the real engine and store: each byte is an event
/// (touched, one of the six stages, closed won or lost) for one freshly routed lead.
/// The engine must agree with a model of the stage rules at every step.
///
/// Runs on one engine for the whole process (a fuzz run); its store stays in the
/// temp dir when the process ends. [`LeadEvents`] is the same check on an engine of
/// its own, removed when dropped.
pub fn lead_events(data: &[u8]) {
    static SHARED: OnceLock<LeadEvents> = OnceLock::new();
    SHARED.get_or_init(LeadEvents::new).check(data);
}

impl LeadEvents {
    /// [`lead_events`] on this harness's engine.
    pub fn check(&self, data: &[u8]) {
        let h = self;
        let _one_at_a_time = h.lock.lock().unwrap_or_else(|e| e.into_inner());
        h.runtime.block_on(async {
            let n = h.next.fetch_add(1, Ordering::Relaxed);
            let routed = h
                .engine
                .route(LeadInput {
                    external_id: Some(format!("fuzz-{n}")),
                    ..LeadInput::default()
                })
                .await
                .expect("the fuzz territory takes every lead");
            assert_eq!(routed.status, RouteStatus::Assigned);
            let id = routed.lead_id;
            let mut stage: Option<Stage> = None;
            let mut closed = false;
            for &b in data.iter().take(32) {
                let event = match b % 9 {
                    0 => LeadEventInput::Touched,
                    s @ 1..=6 => LeadEventInput::Stage {
                        stage: Stage::ALL[usize::from(s) - 1],
                    },
                    7 => LeadEventInput::Closed {
                        outcome: Outcome::Won,
                    },
                    _ => LeadEventInput::Closed {
                        outcome: Outcome::Lost,
                    },
                };
                let result = h.engine.record_event(id, event).await;
                if closed {
                    assert!(
                        matches!(result, Err(EngineError::LeadClosed(_))),
                        "{event:?} after close: {result:?}"
                    );
                    continue;
                }
                let wanted = match event {
                    LeadEventInput::Touched => Some(Stage::FirstContact),
                    LeadEventInput::Stage { stage } => Some(stage),
                    LeadEventInput::Closed { .. } => None,
                };
                // An accepted event answers with the lead as stored, history included.
                let as_stored = |answer: &leadroute_engine::LeadView| {
                    let stored = h.engine.lead(id).unwrap().expect("stored");
                    assert_eq!(answer.state, stored.state);
                    assert_eq!(answer.history, stored.history);
                };
                match wanted {
                    None => {
                        as_stored(&result.expect("an open lead can always close"));
                        closed = true;
                    }
                    Some(s) if Stage::expected_after(stage) == Some(s) => {
                        let answer = result.expect("the expected stage is accepted");
                        as_stored(&answer);
                        assert_eq!(answer.state.stage, Some(s));
                        stage = Some(s);
                        closed = s == Stage::ContractSigned;
                    }
                    Some(s) => match result {
                        Err(EngineError::StageOrder { got, expected }) => {
                            assert_eq!(got, s);
                            assert_eq!(Some(expected), Stage::expected_after(stage));
                        }
                        other => panic!("{s} after {stage:?} must be refused: {other:?}"),
                    },
                }
            }
            if !closed {
                h.engine
                    .record_event(
                        id,
                        LeadEventInput::Closed {
                            outcome: Outcome::Lost,
                        },
                    )
                    .await
                    .expect("closing frees the rep for the next input");
            }
            let rep = h.engine.rep(&crate::rid("fuzz-rep")).await.unwrap();
            assert_eq!(rep.load, 0, "every lead of this harness ends closed");
        });
    }
}

/// One engine for many `lead_events` inputs: opening one per input would measure
/// sled, not the lifecycle rules. Its temp dir goes when it is dropped.
pub struct LeadEvents {
    runtime: tokio::runtime::Runtime,
    engine: Engine,
    next: AtomicU32,
    lock: Mutex<()>,
    _dir: tempfile::TempDir,
}

impl LeadEvents {
    /// An engine on a fresh temp dir, with one territory and one rep.
    pub fn new() -> LeadEvents {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let dir = tempfile::tempdir().expect("a temp dir");
        let engine = Engine::open(EngineConfig::new(dir.path()).durability(Durability::Process))
            .expect("the engine opens");
        runtime.block_on(async {
            engine
                .upsert_territory(
                    crate::tid("fuzz"),
                    crate::territory(serde_json::json!({"name": "Fuzz", "default": true})),
                )
                .await
                .unwrap();
            engine
                .upsert_rep(crate::rid("fuzz-rep"), crate::rep("fuzz", 10))
                .await
                .unwrap();
        });
        LeadEvents {
            runtime,
            engine,
            next: AtomicU32::new(0),
            lock: Mutex::new(()),
            _dir: dir,
        }
    }
}

impl Default for LeadEvents {
    fn default() -> Self {
        LeadEvents::new()
    }
}
