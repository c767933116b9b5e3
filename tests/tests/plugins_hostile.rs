//! Hostile and broken plugin modules, written in WAT (and one built with the SDK that
//! panics): each is rejected at upload with an error that says why, or fails at call
//! time while the lead is still assigned by the territory's fallback, and the engine
//! keeps routing other leads meanwhile.

use std::time::Duration;

use leadroute_engine::domain::LeadInput;
use leadroute_engine::{
    CircuitState, EngineConfig, EngineError, FailureReason, PluginLimits, RouteStatus,
};
use leadroute_tests::*;

/// An engine whose plugins get 5M fuel, which a runaway module burns in about half a
/// millisecond, and a 10 s wall-clock backstop. These tests are about fuel, memory,
/// the stack and answers, not time: on a loaded machine a call can be descheduled
/// past the default 100 ms in the middle of its work, and would end as a timeout
/// instead of the failure the test provokes. Fuel bounds every call meanwhile.
fn hostile_fixture() -> Fixture {
    fixture_with(|config| config.plugin_limits(hostile_limits()))
}

/// The limits of [`hostile_fixture`].
fn hostile_limits() -> PluginLimits {
    PluginLimits {
        fuel: 5_000_000,
        deadline: Duration::from_secs(10),
        ..PluginLimits::default()
    }
}

/// Input length from which the modules below misbehave. The upload smoke run's input
/// is shorter, so they pass upload and fail only on the padded leads of the tests.
const TRIGGER_LEN: i32 = 4000;

/// An answer in the documented output layout, built by hand as a non-Rust guest
/// would: kind (1 ranked, 2 no preference, 3 error), index count, text length, the
/// indices, the text; every integer a little-endian `u32`.
fn layout(kind: u32, indices: &[u32], text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for v in [kind, indices.len() as u32, text.len() as u32]
        .iter()
        .chain(indices)
    {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(text.as_bytes());
    out
}

/// The answers the modules below hold in memory, at these offsets.
fn answers() -> [(u32, Vec<u8>); 5] {
    [
        // The answer to short inputs.
        (16, layout(2, &[], "small input")),
        // Candidate index 1000, which does not exist (there are 2).
        (1024, layout(1, &[1000], "x")),
        // Ranks nobody.
        (2048, layout(1, &[], "x")),
        // Not the layout at all: the header's lengths do not add up.
        (3072, b"not an answer at all".to_vec()),
        // Candidate 0 twice.
        (4096, layout(1, &[0, 0], "x")),
    ]
}

/// The packed location of the answer at `offset` in [`answers`], in WAT.
fn stored(offset: u32) -> String {
    let (_, bytes) = answers().into_iter().find(|(o, _)| *o == offset).unwrap();
    answer(offset, bytes.len() as u32)
}

/// A module speaking ABI version `abi`. `leadroute_route` answers "no preference" to
/// inputs shorter than [`TRIGGER_LEN`] and runs `hostile` (which must leave an i64,
/// the packed answer) on longer ones. `extra` adds module fields. Every module imports
/// the log as `$log`.
fn module(abi: i32, hostile: &str, extra: &str) -> Vec<u8> {
    let data: String = answers()
        .iter()
        .map(|(at, bytes)| {
            let escaped: String = bytes.iter().map(|b| format!("\\{b:02x}")).collect();
            format!("(data (i32.const {at}) \"{escaped}\")\n")
        })
        .collect();
    let wat = format!(
        r#"(module
  (import "leadroute" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 1)
  (global $bump (mut i32) (i32.const 65536))
  {data}
  (func (export "leadroute_abi_version") (result i32) (i32.const {abi}))
  (func (export "leadroute_alloc") (param $len i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $bump))
    (global.set $bump (i32.add (global.get $bump) (local.get $len)))
    (drop (memory.grow (i32.add (i32.div_u (local.get $len) (i32.const 65536)) (i32.const 1))))
    (local.get $p))
  (func $recurse (param $n i32) (result i32)
    (i32.add (call $recurse (i32.add (local.get $n) (i32.const 1))) (i32.const 1)))
  (func (export "leadroute_route") (param $ptr i32) (param $len i32) (result i64)
    (if (result i64) (i32.lt_u (local.get $len) (i32.const {TRIGGER_LEN}))
      (then {ok})
      (else {hostile})))
  {extra})"#,
        ok = stored(16),
    );
    wat::parse_str(&wat).unwrap_or_else(|e| panic!("bad test module: {e}\n{wat}"))
}

/// Packs (ptr, len) into the route export's i64, in WAT.
fn answer(ptr: u32, len: u32) -> String {
    format!("(i64.or (i64.shl (i64.const {ptr}) (i64.const 32)) (i64.const {len}))")
}

/// Lead `n` padded past [`TRIGGER_LEN`], so hostile modules misbehave on it.
fn padded(n: u32) -> LeadInput {
    LeadInput {
        attributes: Some(serde_json::json!({"pad": "x".repeat(TRIGGER_LEN as usize)})),
        ..lead(n, "CN-SH")
    }
}

/// Plugin `hostile`, trapping on padded leads, routes territory `east` (reps `a`, `b`
/// of capacity 100).
async fn east_with_a_trapping_plugin(engine: &leadroute_engine::Engine) {
    engine
        .put_plugin("hostile", module(1, "(unreachable)", ""))
        .await
        .unwrap();
    east_with_plugin(engine, "hostile", serde_json::json!({}), 100).await;
}

/// Uploads `wasm` as plugin `hostile`, routes a padded lead (the module misbehaves)
/// and a plain one (it behaves), and checks both are assigned, the failure is labelled
/// `reason` in the decision and the metrics, and the store stays healthy.
async fn fails_at_call_time(f: &Fixture, wasm: Vec<u8>, reason: FailureReason) {
    f.engine.put_plugin("hostile", wasm).await.unwrap();
    east_with_plugin(&f.engine, "hostile", serde_json::json!({}), 100).await;
    let bad = f.engine.route(padded(1)).await.unwrap();
    assert_eq!(bad.status, RouteStatus::Assigned, "the lead is never lost");
    assert_eq!(bad.decided_by.as_deref(), Some("builtin:least_loaded"));
    let fallback = bad.fallback.clone().unwrap_or_default();
    assert!(
        fallback.starts_with(&format!("{reason}: plugin:hostile@1: ")),
        "{reason}: {fallback}"
    );
    // The engine keeps routing, and the plugin keeps being called for other leads.
    let good = f.engine.route(lead(2, "CN-SH")).await.unwrap();
    assert_eq!(good.status, RouteStatus::Assigned);
    assert!(
        good.fallback
            .unwrap()
            .starts_with("no_preference: plugin:hostile@1")
    );
    let info = f.engine.plugin("hostile").unwrap();
    assert_eq!(info.calls, 2);
    assert_eq!(info.failures.get(&reason), Some(&1), "{info:?}");
    assert_eq!(info.circuit, CircuitState::Closed);
    let metrics = f.engine.metrics().render();
    let line =
        format!(r#"leadroute_plugin_failures_total{{plugin="hostile",reason="{reason}"}} 1"#);
    assert!(metrics.contains(&line), "{line} in\n{metrics}");
    assert_healthy(&f.engine).await;
}

#[tokio::test]
async fn an_infinite_loop_runs_out_of_fuel() {
    let f = hostile_fixture();
    let wasm = module(1, "(loop $l (br $l)) (unreachable)", "");
    fails_at_call_time(&f, wasm, FailureReason::OutOfFuel).await;
}

/// Only the wall-clock deadline can stop a loop given fuel for minutes. A short
/// deadline would also stop a well-behaved call descheduled for that long on a loaded
/// machine, so the module is uploaded (its smoke run) and called on a good lead under
/// a generous deadline, and the engine reopened with a short one makes a single call:
/// the endless loop, which nothing but the deadline ends.
#[tokio::test]
async fn the_wall_clock_deadline_stops_what_fuel_does_not() {
    let fuel = u64::MAX / 2;
    let f = fixture_with(|config| {
        config.plugin_limits(PluginLimits {
            fuel,
            ..hostile_limits()
        })
    });
    let wasm = module(1, "(loop $l (br $l)) (unreachable)", "");
    f.engine.put_plugin("hostile", wasm).await.unwrap();
    east_with_plugin(&f.engine, "hostile", serde_json::json!({}), 100).await;
    let good = f.engine.route(lead(2, "CN-SH")).await.unwrap();
    assert!(
        good.fallback
            .unwrap()
            .starts_with("no_preference: plugin:hostile@1")
    );
    f.engine.shutdown().await.unwrap();
    drop(f.engine);

    let limits = PluginLimits {
        fuel,
        deadline: Duration::from_millis(20),
        ..PluginLimits::default()
    };
    let engine = leadroute_engine::Engine::open(
        EngineConfig::new(f.dir.path())
            .clock(f.clock.clone())
            .plugin_limits(limits),
    )
    .unwrap();
    let bad = engine.route(padded(1)).await.unwrap();
    assert_eq!(bad.status, RouteStatus::Assigned, "the lead is never lost");
    assert_eq!(bad.decided_by.as_deref(), Some("builtin:least_loaded"));
    let fallback = bad.fallback.clone().unwrap_or_default();
    assert!(
        fallback.starts_with("timeout: plugin:hostile@1: "),
        "{fallback}"
    );
    let info = engine.plugin("hostile").unwrap();
    assert_eq!(
        info.failures.get(&FailureReason::Timeout),
        Some(&1),
        "{info:?}"
    );
    assert_eq!(info.circuit, CircuitState::Closed);
    assert_healthy(&engine).await;
}

#[tokio::test]
async fn a_memory_bomb_hits_the_cap() {
    let f = hostile_fixture();
    let grow =
        "(loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) (unreachable)";
    fails_at_call_time(&f, module(1, grow, ""), FailureReason::OutOfMemory).await;
}

#[tokio::test]
async fn a_trap_is_a_failure() {
    let f = hostile_fixture();
    fails_at_call_time(&f, module(1, "(unreachable)", ""), FailureReason::Trap).await;
}

#[tokio::test]
async fn runaway_recursion_overflows_the_stack() {
    let f = hostile_fixture();
    let recurse = "(drop (call $recurse (i32.const 0))) (unreachable)";
    fails_at_call_time(&f, module(1, recurse, ""), FailureReason::StackOverflow).await;
}

#[tokio::test]
async fn a_giant_answer_is_refused() {
    let f = hostile_fixture();
    let wasm = module(1, &answer(0, 10 << 20), "");
    fails_at_call_time(&f, wasm, FailureReason::OutputTooLarge).await;
}

#[tokio::test]
async fn an_answer_outside_memory_is_invalid() {
    let f = hostile_fixture();
    let wasm = module(1, &answer(0xffff_0000, 100), "");
    fails_at_call_time(&f, wasm, FailureReason::InvalidOutput).await;
}

#[tokio::test]
async fn garbage_answers_are_invalid() {
    let f = hostile_fixture();
    let wasm = module(1, &stored(3072), "");
    fails_at_call_time(&f, wasm, FailureReason::InvalidOutput).await;
}

#[tokio::test]
async fn ranking_a_rep_twice_is_invalid() {
    let f = hostile_fixture();
    let wasm = module(1, &stored(4096), "");
    fails_at_call_time(&f, wasm, FailureReason::InvalidOutput).await;
}

#[tokio::test]
async fn ranking_a_candidate_index_out_of_range_is_an_unknown_rep() {
    let f = hostile_fixture();
    let wasm = module(1, &stored(1024), "");
    fails_at_call_time(&f, wasm, FailureReason::UnknownRep).await;
}

#[tokio::test]
async fn an_empty_ranking_is_refused() {
    let f = hostile_fixture();
    let wasm = module(1, &stored(2048), "");
    fails_at_call_time(&f, wasm, FailureReason::EmptyRanking).await;
}

/// A trap's description names the last warning the call logged, even one past the cap
/// on lines per call: the SDK's panic hook logs a panic as a warning just before the
/// module traps, and wasm's own message says only `unreachable`.
#[tokio::test]
async fn a_trap_names_the_last_warning_logged() {
    let f = hostile_fixture();
    // "warning 1" to "warning 9": nine lines, one more than a call may log.
    let warn: String = (1..=9)
        .map(|n| {
            format!(
                "(i32.store8 (i32.const 5008) (i32.const {})) \
                 (call $log (i32.const 2) (i32.const 5000) (i32.const 9))",
                b'0' + n
            )
        })
        .collect();
    let wasm = module(
        1,
        &format!("{warn} (unreachable)"),
        r#"(data (i32.const 5000) "warning 0")"#,
    );
    f.engine.put_plugin("hostile", wasm).await.unwrap();
    east_with_plugin(&f.engine, "hostile", serde_json::json!({}), 100).await;
    let bad = f.engine.route(padded(1)).await.unwrap();
    assert_eq!(bad.status, RouteStatus::Assigned, "the lead is never lost");
    let fallback = bad.fallback.unwrap_or_default();
    assert!(
        fallback.starts_with("trap: plugin:hostile@1: "),
        "{fallback}"
    );
    assert!(
        fallback.ends_with("; the plugin's last warning: warning 9"),
        "{fallback}"
    );
    // A call that logs nothing has no warning to show, whatever the one before logged.
    let wasm = module(1, "(unreachable)", "");
    f.engine.put_plugin("hostile", wasm).await.unwrap();
    let bad = f.engine.route(padded(2)).await.unwrap();
    let fallback = bad.fallback.unwrap_or_default();
    assert!(
        fallback.starts_with("trap: plugin:hostile@2: "),
        "{fallback}"
    );
    assert!(!fallback.contains("warning"), "{fallback}");
}

/// A plugin built with the SDK that panics: the decision's fallback names the panic,
/// its place and its message, which the trap alone would not.
#[tokio::test]
async fn a_panic_in_an_sdk_plugin_is_named_in_the_fallback() {
    let f = hostile_fixture();
    f.engine
        .put_plugin("test-panic", leadroute_plugin_builds::TEST_PANIC.to_vec())
        .await
        .unwrap();
    east_with_plugin(&f.engine, "test-panic", serde_json::json!({}), 100).await;
    let good = f.engine.route(lead(1, "CN-SH")).await.unwrap();
    assert_eq!(good.decided_by.as_deref(), Some("plugin:test-panic@1"));
    assert_eq!(good.fallback, None);
    let panics = LeadInput {
        source: Some("panic".into()),
        ..lead(2, "CN-SH")
    };
    let bad = f.engine.route(panics).await.unwrap();
    assert_eq!(bad.status, RouteStatus::Assigned, "the lead is never lost");
    assert_eq!(bad.decided_by.as_deref(), Some("builtin:least_loaded"));
    let fallback = bad.fallback.unwrap_or_default();
    assert!(
        fallback.starts_with("trap: plugin:test-panic@1: "),
        "{fallback}"
    );
    let warning = "; the plugin's last warning: panicked at plugins/test-panic/src/lib.rs:";
    assert!(fallback.contains(warning), "{fallback}");
    assert!(
        fallback.ends_with(&format!(": lead {} asked for a panic", bad.lead_id)),
        "{fallback}"
    );
    assert_healthy(&f.engine).await;
}

/// Uploads `wasm` and expects a `plugin_invalid` rejection containing `expected`.
async fn rejected(wasm: Vec<u8>, expected: &str) {
    let f = hostile_fixture();
    let err = f.engine.put_plugin("bad", wasm).await.unwrap_err();
    assert_eq!(err.code(), "plugin_invalid", "{err}");
    let EngineError::PluginInvalid { name, message } = &err else {
        unreachable!()
    };
    assert_eq!(name, "bad");
    assert!(
        message.contains(expected),
        "expected {expected:?} in {message:?}"
    );
    // Nothing was stored.
    assert!(f.engine.plugins().unwrap().is_empty());
    assert_eq!(
        f.engine.plugin("bad").unwrap_err().code(),
        "plugin_not_found"
    );
}

#[tokio::test]
async fn a_wrong_abi_version_is_rejected_naming_both() {
    rejected(
        module(2, "(unreachable)", ""),
        "module speaks plugin ABI version 2; this host speaks version 1",
    )
    .await;
}

#[tokio::test]
async fn missing_exports_are_named() {
    let wasm = wat::parse_str(
        r#"(module (memory (export "memory") 1)
             (func (export "leadroute_abi_version") (result i32) (i32.const 1))
             (func (export "leadroute_alloc") (param i32) (result i32) (i32.const 8)))"#,
    )
    .unwrap();
    rejected(
        wasm,
        "missing export `leadroute_route` (func (param i32 i32) (result i64))",
    )
    .await;
    let wasm = wat::parse_str(
        r#"(module (memory (export "memory") 1)
             (func (export "leadroute_abi_version") (result i32) (i32.const 1))
             (func (export "leadroute_alloc") (param i32) (result i32) (i32.const 8))
             (func (export "leadroute_route") (param i32 i32) (result i32) (i32.const 0)))"#,
    )
    .unwrap();
    rejected(wasm, "export `leadroute_route` is").await;
}

#[tokio::test]
async fn wasi_imports_are_rejected() {
    let import = r#"(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))"#;
    let wat = format!(
        r#"(module {import} (memory (export "memory") 1)
             (func (export "leadroute_abi_version") (result i32) (i32.const 1))
             (func (export "leadroute_alloc") (param i32) (result i32) (i32.const 8))
             (func (export "leadroute_route") (param i32 i32) (result i64) (i64.const 0)))"#
    );
    rejected(
        wat::parse_str(&wat).unwrap(),
        "imports wasi_snapshot_preview1.fd_write; the only host function is leadroute.log",
    )
    .await;
}

#[tokio::test]
async fn unknown_host_functions_are_rejected() {
    let wat = r#"(module (import "env" "now" (func (result i64))) (memory (export "memory") 1)
             (func (export "leadroute_abi_version") (result i32) (i32.const 1))
             (func (export "leadroute_alloc") (param i32) (result i32) (i32.const 8))
             (func (export "leadroute_route") (param i32 i32) (result i64) (i64.const 0)))"#;
    rejected(wat::parse_str(wat).unwrap(), "imports env.now").await;
    // The log import with the wrong signature is an unknown function too.
    let wat = r#"(module (import "leadroute" "log" (func (param i32))) (memory (export "memory") 1)
             (func (export "leadroute_abi_version") (result i32) (i32.const 1))
             (func (export "leadroute_alloc") (param i32) (result i32) (i32.const 8))
             (func (export "leadroute_route") (param i32 i32) (result i64) (i64.const 0)))"#;
    rejected(wat::parse_str(wat).unwrap(), "imports leadroute.log").await;
}

#[tokio::test]
async fn oversized_modules_are_rejected_before_compiling() {
    let limit = PluginLimits::default().max_module_bytes;
    let mut wasm = module(1, "(unreachable)", "");
    wasm.resize(limit + 1, 0);
    let expected = format!("module is {} bytes; the limit is {limit}", limit + 1);
    rejected(wasm, &expected).await;
}

#[tokio::test]
async fn non_wasm_is_rejected() {
    rejected(
        b"#!/bin/sh\nrm -rf /\n".to_vec(),
        "not a WebAssembly module",
    )
    .await;
    rejected(b"\0asm\x01\0\0\0\xff\xff".to_vec(), "does not compile").await;
}

#[tokio::test]
async fn a_module_failing_its_smoke_run_is_rejected() {
    // Misbehaves on every input, so the upload's smoke run catches it.
    let wat = r#"(module (memory (export "memory") 1)
             (func (export "leadroute_abi_version") (result i32) (i32.const 1))
             (func (export "leadroute_alloc") (param i32) (result i32) (i32.const 8))
             (func (export "leadroute_route") (param i32 i32) (result i64) (loop $l (br $l)) (unreachable)))"#;
    rejected(
        wat::parse_str(wat).unwrap(),
        "smoke run on the sample input failed: out_of_fuel",
    )
    .await;
}

#[tokio::test]
async fn slow_compilation_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let limits = PluginLimits {
        compile_timeout: Duration::from_micros(1),
        ..PluginLimits::default()
    };
    let engine =
        leadroute_engine::Engine::open(EngineConfig::new(dir.path()).plugin_limits(limits))
            .unwrap();
    let err = engine
        .put_plugin("rules", leadroute_plugin_builds::RULES.to_vec())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "plugin_invalid");
    assert!(
        err.to_string().contains("compilation took longer than 1µs"),
        "{err}"
    );
}

/// A compile past its time limit cannot be interrupted: its thread runs on, and keeps
/// its compile slot until it ends. Uploads past the bound are refused rather than
/// stack another thread. The compiles are held at their start, so "past its time
/// limit" and "still running" are certain, not a matter of speed, and the time limit
/// can be tiny: no upload of this test needs its compile to finish in time.
#[tokio::test]
async fn lingering_compiles_hold_their_slots_until_they_end() {
    let (holder, mut events) = Holder::new(leadroute_engine::Checkpoint::CompileStarted, 2);
    let limits = PluginLimits {
        compile_timeout: Duration::from_micros(1),
        ..PluginLimits::default()
    };
    assert_eq!(limits.max_compiles, 2);
    let f = fixture_with(|config| config.plugin_limits(limits).probe(holder.probe()));
    let started = leadroute_engine::Checkpoint::CompileStarted;
    let ended = leadroute_engine::Checkpoint::CompileEnded;
    let tiny = || module(1, "(unreachable)", "");
    let timed_out = |err: &EngineError| {
        assert_eq!(err.code(), "plugin_invalid", "{err:?}");
        assert!(
            err.to_string().contains("compilation took longer than 1µs"),
            "{err}"
        );
    };

    for name in ["slow-a", "slow-b"] {
        let err = f.engine.put_plugin(name, tiny()).await.unwrap_err();
        timed_out(&err);
        expect_checkpoint(&mut events, started).await;
    }
    // Both compile threads still run: a third upload starts none.
    let err = f.engine.put_plugin("next", tiny()).await.unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::CompileBusy {
                running: 2,
                limit: 2
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.code(), "compile_busy");
    assert!(f.engine.plugins().unwrap().is_empty(), "nothing stored");
    assert!(events.try_recv().is_err(), "no compile thread was started");

    // Once the threads end, their slots are free again: the next upload gets one and
    // starts its compile (which, given 1 µs, it does not wait for).
    holder.release(2);
    expect_checkpoint(&mut events, ended).await;
    expect_checkpoint(&mut events, ended).await;
    let err = f.engine.put_plugin("next", tiny()).await.unwrap_err();
    timed_out(&err);
    expect_checkpoint(&mut events, started).await;
    expect_checkpoint(&mut events, ended).await;
}

#[tokio::test]
async fn repeated_failures_open_the_circuit_until_an_operator_acts() {
    let f = hostile_fixture();
    // Operations subscribe to circuit events only.
    let ops = leadroute_engine::domain::WebhookId::new("ops").unwrap();
    let subscription = leadroute_engine::domain::WebhookInput {
        url: "http://127.0.0.1:9/hook".into(),
        events: vec![leadroute_engine::domain::EventKind::PluginCircuitOpen],
        secret: "0123456789abcdef".into(),
    };
    f.engine
        .put_webhook(ops.clone(), subscription)
        .await
        .unwrap();
    let cursor = f.engine.webhook_cursor(&ops).unwrap();
    east_with_a_trapping_plugin(&f.engine).await;
    let threshold = PluginLimits::default().circuit_threshold;
    for n in 0..threshold {
        let out = f.engine.route(padded(n)).await.unwrap();
        assert!(out.fallback.unwrap().starts_with("trap: "));
    }
    let info = f.engine.plugin("hostile").unwrap();
    assert!(
        matches!(&info.circuit, CircuitState::Open { last_failure } if last_failure.contains("trap")),
        "{info:?}"
    );
    assert!(
        f.engine
            .metrics()
            .render()
            .contains(r#"leadroute_plugin_circuit_open{plugin="hostile"} 1"#)
    );
    // One event for the webhook, and none for the leads it does not subscribe to.
    f.engine.settle().await.unwrap();
    let events = f.engine.outbox_after(cursor, 100).unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        events[0].kind,
        leadroute_engine::domain::EventKind::PluginCircuitOpen
    );
    assert_eq!(events[0].plugin.as_deref(), Some("hostile"));
    assert!(events[0].reason.as_deref().unwrap().contains("trap"));
    // Bypassed now, even for leads it would handle: nothing is called.
    let out = f.engine.route(lead(100, "CN-SH")).await.unwrap();
    assert_eq!(out.status, RouteStatus::Assigned);
    assert!(out.fallback.unwrap().starts_with("circuit_open: "));
    assert_eq!(
        f.engine.plugin("hostile").unwrap().calls,
        u64::from(threshold)
    );
    // An operator re-activates the version: the plugin is called again.
    let info = f.engine.activate_plugin("hostile", 1).await.unwrap();
    assert_eq!(info.circuit, CircuitState::Closed);
    let out = f.engine.route(lead(101, "CN-SH")).await.unwrap();
    assert!(out.fallback.unwrap().starts_with("no_preference: "));
    assert!(
        f.engine
            .metrics()
            .render()
            .contains(r#"leadroute_plugin_circuit_open{plugin="hostile"} 0"#)
    );
    assert_healthy(&f.engine).await;
}

/// An input over the cap is the host's limit, not the module's fault: however many
/// leads hit it, the circuit stays closed for the territories the plugin serves well.
#[tokio::test]
async fn inputs_over_the_cap_do_not_open_the_circuit() {
    let f = fixture_with(|config| {
        config.plugin_limits(PluginLimits {
            // Above a plain lead's input, below a padded one's.
            max_input_bytes: TRIGGER_LEN as usize - 1_000,
            ..hostile_limits()
        })
    });
    east_with_a_trapping_plugin(&f.engine).await;
    let threshold = PluginLimits::default().circuit_threshold;
    for n in 0..threshold * 2 {
        let out = f.engine.route(padded(n)).await.unwrap();
        assert_eq!(out.status, RouteStatus::Assigned);
        assert!(out.fallback.unwrap().starts_with("input_too_large: "));
    }
    let info = f.engine.plugin("hostile").unwrap();
    assert_eq!(info.circuit, CircuitState::Closed, "{info:?}");
    let out = f.engine.route(lead(100, "CN-SH")).await.unwrap();
    assert!(out.fallback.unwrap().starts_with("no_preference: "));
    assert_healthy(&f.engine).await;
}

#[tokio::test]
async fn simulations_do_not_trip_the_circuit() {
    let f = hostile_fixture();
    east_with_a_trapping_plugin(&f.engine).await;
    for n in 0..10 {
        let sim = f.engine.simulate(&padded(n), None).await.unwrap();
        assert!(sim.decision.fallback.unwrap().starts_with("trap: "));
        assert_eq!(sim.decision.ranking.len(), 2, "the fallback still ranks");
    }
    let info = f.engine.plugin("hostile").unwrap();
    assert_eq!((info.calls, info.circuit), (0, CircuitState::Closed));
}

/// A compile thread gives its slot back before it answers, so an upload that heard
/// its compile's outcome can never make the next one find the slot busy. The compile
/// is held at `CompileEnded`, between the two; its upload has stopped waiting (a 1 µs
/// time limit), since uploads take turns and the next could not start otherwise.
/// Nothing else holds the only slot, so the next upload is admitted: it starts its
/// compile rather than being refused `compile_busy`.
#[tokio::test]
async fn uploads_one_after_another_never_find_the_slots_busy() {
    let ended = leadroute_engine::Checkpoint::CompileEnded;
    let started = leadroute_engine::Checkpoint::CompileStarted;
    let (holder, mut events) = Holder::new(ended, 1);
    let limits = PluginLimits {
        max_compiles: 1,
        compile_timeout: Duration::from_micros(1),
        ..PluginLimits::default()
    };
    let f = fixture_with(|config| config.plugin_limits(limits).probe(holder.probe()));
    let tiny = || module(1, "(unreachable)", "");

    let first = f.engine.put_plugin("first", tiny()).await.unwrap_err();
    assert_eq!(first.code(), "plugin_invalid", "{first:?}");
    expect_checkpoint(&mut events, started).await;
    expect_checkpoint(&mut events, ended).await;
    // The first compile's thread is held where it would answer.
    let next = f.engine.put_plugin("next", tiny()).await.unwrap_err();
    holder.release(1);
    assert_eq!(
        next.code(),
        "plugin_invalid",
        "admitted, not refused: {next:?}"
    );
    assert!(
        next.to_string()
            .contains("compilation took longer than 1µs"),
        "{next}"
    );
    expect_checkpoint(&mut events, started).await;
    expect_checkpoint(&mut events, ended).await;
}
