//! The leadroute engine: picks a sales rep for every lead, durably, in microseconds.
//!
//! It knows nothing of HTTP. The server (and tests) drive it through [`Engine`].
//!
//! # Layout
//! - [`engine`]: the [`Engine`] handle, the whole in-process API.
//! - [`domain`]: reps, territories, leads, history; validation of input.
//! - `actors`: a `RepActor` per rep (sole owner of its load) and a `TerritoryActor`
//!   per territory (members view, strategy, capacity queue).
//! - [`strategy`]: built-in ranking strategies, one per file.
//! - [`plugins`]: sandboxed WebAssembly routing plugins (wasmtime): registry,
//!   sandbox, ABI host side, and the plugin strategy with its fallback.
//! - [`dedupe`]: contact normalization, and the in-memory index of open leads' keys.
//! - [`sla`]: first-touch deadlines of assigned, untouched leads.
//! - [`outbox`]: which events webhooks want, and the signal that new ones are durable.
//! - [`store`]: sled trees, the group committer, online backups, the invariant audit
//!   and its repairs (run in the background after each start: `engine/audit.rs`).
//! - [`metrics`]: the Prometheus registry.
//! - [`clock`]: injected time.
//!
//! # The life of a lead
//! validate → de-duplicate → resolve territory (longest region prefix) →
//! `TerritoryActor` ranks members with room → reserves with `RepActor`s in that order
//! → the committer stores lead, assignment, load, history, the first-touch deadline, the
//! de-duplication keys and any webhook events in one transaction and flushes once per
//! group → the caller is answered.

#![warn(missing_docs)]

mod actors;
pub mod clock;
pub mod config;
pub mod dedupe;
pub mod domain;
pub mod engine;
pub mod error;
pub mod metrics;
pub mod outbox;
pub mod plugins;
pub mod sla;
pub mod store;
pub mod strategy;

pub use actors::{Decision, Placement, RepSnapshot, SimulatedDecision, TerritorySnapshot};
pub use clock::{Clock, ManualClock, SystemClock, UnixMillis};
pub use config::{Checkpoint, DataSync, EngineConfig, Probe};
pub use engine::{
    Backup, DeadLetterPage, Engine, LeadView, ReassignReason, ReplayDifference, ReplayOptions,
    ReplayReport, RouteOutcome, RouteStatus, Simulation, SlaSweep, Timings,
};
pub use error::{EngineError, Result, ValidationError};
pub use plugins::{
    CircuitState, FailureReason, PluginInfo, PluginLimits, PluginVersionInfo, VersionInfo,
};
pub use store::Durability;
