//! The JSON the API speaks: request bodies and response views.
//!
//! The engine's types are storage-shaped (bincode, no JSON values); these are
//! client-shaped, documented for OpenAPI, and owned by the server so the HTTP
//! contract changes only when we change it here.
//!
//! - `lead.rs`: intake body, the lead view with its history, lifecycle events.
//! - `outcome.rs`: the routing outcome, batches, candidates and timings.
//! - `rep.rs`, `territory.rs`: admin bodies and views.
//! - `simulate.rs`: dry-run requests and answers.
//! - `plugin.rs`: plugin uploads, versions and health.
//! - `webhook.rs`: webhook subscriptions, dead letters, and the delivered JSON.
//! - `replay.rs`: replay options and report.
//! - `backup.rs`: the backup written.

mod backup;
mod lead;
mod outcome;
mod plugin;
mod rep;
mod replay;
mod simulate;
mod territory;
mod webhook;

pub use backup::BackupView;
pub use lead::{
    EventBody, EventType, HistoryEntryView, HistoryEventView, LeadBody, LeadStatusView, LeadView,
    OutcomeView, StageView,
};
pub use outcome::{
    BatchBody, BatchItem, BatchResults, CandidateView, RouteOutcomeView, RouteStatusView,
    TimingsView,
};
pub use plugin::{ActivateBody, CircuitView, PluginVersionView, PluginView, VersionView};
pub use rep::{RepBody, RepStatusView, RepView};
pub use replay::{ReplayBody, ReplayDifferenceView, ReplayView};
pub use simulate::{PluginRef, SimulateBody, SimulationTimings, SimulationView};
pub use territory::{
    BuiltinView, MemberView, ShadowBody, StrategyBody, StrategyView, TerritoryBody, TerritoryView,
};
pub use webhook::{
    DeadLetterView, EventKindView, RedriveView, WebhookBody, WebhookData, WebhookPayload,
    WebhookView,
};

use std::time::{Duration, UNIX_EPOCH};

/// Formats Unix milliseconds as RFC 3339 UTC with milliseconds.
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// A decision's fallback as the API shows it: the code clients match
/// (`plugin_fuel_exhausted`, …) and the engine's text, which says which plugin version
/// failed and how (`fallback_detail`). `(None, None)` when the strategy decided.
pub fn fallback_fields(text: Option<String>) -> (Option<String>, Option<String>) {
    match text {
        Some(text) => (
            Some(leadroute_engine::plugins::fallback_code(&text).to_string()),
            Some(text),
        ),
        None => (None, None),
    }
}

/// Returns the whole microseconds of `d`, saturating.
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
