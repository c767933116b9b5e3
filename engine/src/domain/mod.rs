//! The domain: reps, territories, leads and what happens to them.
//!
//! Types here are plain data. Input types (`*Input`) mirror the JSON clients
//! send and are validated into the stored types, which must stay encodable by
//! bincode (no untagged enums, no `serde_json::Value`, no skipped fields).

mod history;
mod ids;
mod lead;
mod region;
mod rep;
mod territory;
mod webhook;

pub use history::{CandidateSnapshot, HistoryEntry, HistoryEvent};
pub use ids::{LeadId, RepId, TerritoryId, WebhookId};
pub use lead::{
    Contact, Lead, LeadEventInput, LeadInput, LeadState, LeadStatus, MAX_ATTRIBUTES_BYTES, Outcome,
    REPEATS_IN_HISTORY, Stage,
};
pub use region::{MAX_LEAD_REGION_CHARS, RegionCode, RegionTable, lead_region};
pub use rep::{MAX_CAPACITY, Rep, RepInput, RepStatus};
pub use territory::{
    BuiltinStrategy, DEFAULT_FIRST_TOUCH_SLA_SECS, DEFAULT_SLA_MAX_REROUTES, MAX_SLA_REROUTES,
    ShadowSpec, StrategyInput, StrategySpec, Territory, TerritoryInput,
};
pub use webhook::{EventKind, OutboxEvent, Webhook, WebhookInput};

use crate::error::ValidationError;

/// Checks a free-form text field: trimmed, non-empty, at most `max` characters, no control
/// characters. Returns the trimmed text.
pub(crate) fn check_text(field: &str, value: &str, max: usize) -> Result<String, ValidationError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(ValidationError::field(field, "must not be empty"));
    }
    if value.chars().count() > max {
        return Err(ValidationError::field(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(ValidationError::field(
            field,
            "must not contain control characters",
        ));
    }
    Ok(value.to_string())
}

/// Checks a tag (skill, industry, tier): 1–64 of `[a-z0-9_.-]` after lower-casing.
pub(crate) fn check_tag(field: &str, value: &str) -> Result<String, ValidationError> {
    let tag = value.trim().to_ascii_lowercase();
    let ok = (1..=64).contains(&tag.len())
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(tag)
    } else {
        Err(ValidationError::field(
            field,
            format!("{value:?} is not a tag: use 1-64 of a-z 0-9 _ . -"),
        ))
    }
}
