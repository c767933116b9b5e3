//! The first-touch SLA timer: sweeps the engine's deadlines every second.
//!
//! The engine decides what a missed deadline means ([`Engine::enforce_sla`]); this
//! only supplies the rhythm. The first sweep runs at once, so deadlines that passed
//! while the server was down fire right after start.

use std::time::Duration;

use leadroute_engine::{Engine, EngineError};
use tokio::sync::watch;

/// How often deadlines are checked; an SLA is at least a minute, so a second of
/// lateness is noise.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Sweeps every `interval` until `stop` turns true. A sweep in progress is never
/// cancelled half-way: stopping waits for it, so no re-route is left half-done.
pub async fn sweep_until(engine: Engine, interval: Duration, mut stop: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        match engine.enforce_sla().await {
            Ok(sweep) if sweep.rerouted + sweep.escalated > 0 => {
                tracing::info!(
                    rerouted = sweep.rerouted,
                    escalated = sweep.escalated,
                    skipped = sweep.skipped,
                    "first-touch SLA sweep"
                );
            }
            Ok(_) => {}
            Err(EngineError::ShuttingDown) => return,
            Err(e) => tracing::error!(error = %e, "first-touch SLA sweep failed; retrying"),
        }
    }
}
