//! Routing plugins: sandboxed WebAssembly modules that rank reps for a territory.
//!
//! A plugin is a pure function (lead, candidates, config → ranking), uploaded as a
//! core wasm module speaking the ABI defined in `leadroute-plugin-sdk`. Modules are
//! validated at upload, compiled once per version, and instantiated afresh for every
//! decision under a fuel budget, a wall-clock deadline and a memory cap. Whatever a
//! plugin does wrong, the territory's built-in fallback decides and the lead is
//! assigned; repeated failures open a circuit until an operator re-activates it.
//!
//! # Layout
//! - `abi.rs`: encoding a question, checking an answer; [`FailureReason`].
//! - `sandbox.rs`: wasmtime: compile under limits, one call per fresh instance;
//!   [`PluginLimits`].
//! - `epoch.rs`: the thread behind the wall-clock deadline, ticking only while calls
//!   run.
//! - `registry.rs`: versions, activation, statistics, circuit breaker; persisted in
//!   the store's `plugins` tree.
//! - `strategy.rs`: a territory's plugin binding as a `Strategy`, with fallback.
//! - `trial.rs`: a pinned version asked how it would decide, for shadow runs and
//!   replays; never counted, never circuit-broken.
//! - `standalone.rs`: one module outside an engine, for benchmarks and tools.

mod abi;
mod epoch;
mod registry;
mod sandbox;
mod standalone;
mod strategy;
mod trial;

pub use abi::FailureReason;
pub use registry::{CircuitState, PluginInfo, PluginVersionInfo, VersionInfo};
pub use sandbox::{EPOCH_TICK, PluginLimits};
pub use standalone::{LiveInstance, Standalone, decode_answer};
pub use strategy::{FALLBACK_KEY, fallback_code};

pub(crate) use registry::{LoadedVersion, Registry, load, not_found, version_record};
pub(crate) use sandbox::CompileError;
pub(crate) use strategy::{PluginStrategy, split_config};
pub(crate) use trial::{Trial, TrialOutcome};
