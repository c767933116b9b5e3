//! Webhooks: the subscription body and view, dead letters, and the JSON each
//! delivery POSTs.

use leadroute_engine::domain::{EventKind, OutboxEvent, Webhook, WebhookInput};
use leadroute_engine::store::DeadLetter;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{OutcomeView, rfc3339};

/// The kinds of event a subscription can receive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub enum EventKindView {
    /// A rep got a lead (at intake, from the queue, or after a re-route).
    #[serde(rename = "lead.assigned")]
    LeadAssigned,
    /// A lead waits in its territory's queue.
    #[serde(rename = "lead.queued")]
    LeadQueued,
    /// A lead moved away from its rep.
    #[serde(rename = "lead.reassigned")]
    LeadReassigned,
    /// A lead closed.
    #[serde(rename = "lead.closed")]
    LeadClosed,
    /// A plugin's circuit opened.
    #[serde(rename = "plugin.circuit_open")]
    PluginCircuitOpen,
}

impl From<EventKindView> for EventKind {
    fn from(k: EventKindView) -> Self {
        match k {
            EventKindView::LeadAssigned => EventKind::LeadAssigned,
            EventKindView::LeadQueued => EventKind::LeadQueued,
            EventKindView::LeadReassigned => EventKind::LeadReassigned,
            EventKindView::LeadClosed => EventKind::LeadClosed,
            EventKindView::PluginCircuitOpen => EventKind::PluginCircuitOpen,
        }
    }
}

impl From<EventKind> for EventKindView {
    fn from(k: EventKind) -> Self {
        match k {
            EventKind::LeadAssigned => EventKindView::LeadAssigned,
            EventKind::LeadQueued => EventKindView::LeadQueued,
            EventKind::LeadReassigned => EventKindView::LeadReassigned,
            EventKind::LeadClosed => EventKindView::LeadClosed,
            EventKind::PluginCircuitOpen => EventKindView::PluginCircuitOpen,
        }
    }
}

/// A subscription as sent to `PUT /admin/webhooks/{webhook_id}`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "url": "http://crm.internal:8080/hooks/leadroute",
    "events": ["lead.assigned", "lead.reassigned"],
    "secret": "whsec-0123456789abcdef"
}))]
pub struct WebhookBody {
    /// Where events are POSTed: `http://…` (or `https://…` in a build with the `tls`
    /// feature).
    pub url: String,
    /// The kinds to receive; at least one.
    pub events: Vec<EventKindView>,
    /// Key of the `Leadroute-Signature` HMAC, 16–256 characters. Never shown again.
    pub secret: String,
}

impl From<WebhookBody> for WebhookInput {
    fn from(b: WebhookBody) -> Self {
        WebhookInput {
            url: b.url,
            events: b.events.into_iter().map(Into::into).collect(),
            secret: b.secret,
        }
    }
}

/// A subscription with its delivery state (the secret is never shown).
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct WebhookView {
    /// The subscription's id.
    pub webhook_id: String,
    /// Where events are POSTed.
    pub url: String,
    /// The kinds it receives.
    pub events: Vec<EventKindView>,
    /// Events written after its cursor, not yet delivered or given up on.
    pub pending: usize,
    /// Events it gave up on, waiting for a re-drive.
    pub dead_letters: usize,
}

impl WebhookView {
    /// The view of `w` with its counts.
    pub fn new(w: Webhook, pending: usize, dead_letters: usize) -> Self {
        WebhookView {
            webhook_id: w.id.to_string(),
            url: w.url,
            events: w.events.into_iter().map(Into::into).collect(),
            pending,
            dead_letters,
        }
    }
}

/// An event a subscription gave up on.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct DeadLetterView {
    /// The event, as it would be delivered.
    pub event: WebhookPayload,
    /// Delivery attempts made.
    pub attempts: u32,
    /// What the last attempt got.
    pub last_error: String,
    /// When it was given up on (RFC 3339).
    pub failed_at: String,
    /// Marked for re-drive and not yet delivered.
    pub redrive_pending: bool,
}

impl From<DeadLetter> for DeadLetterView {
    fn from(d: DeadLetter) -> Self {
        DeadLetterView {
            event: WebhookPayload::from(&d.event),
            attempts: d.attempts,
            last_error: d.last_error,
            failed_at: rfc3339(d.failed_at),
            redrive_pending: d.redrive,
        }
    }
}

/// The answer to a re-drive.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct RedriveView {
    /// Dead letters queued for another round of delivery.
    pub redriven: usize,
}

/// The JSON body of every delivery.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct WebhookPayload {
    /// The event's id (`evt_…`), also sent as `Idempotency-Key`: the same for every
    /// attempt, so receivers can drop repeats.
    pub id: String,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventKindView,
    /// When (RFC 3339).
    pub created_at: String,
    /// The same, in Unix milliseconds.
    pub created_at_ms: u64,
    /// What it is about.
    pub data: WebhookData,
}

/// The subject of an event; fields that do not apply are null.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct WebhookData {
    /// The lead.
    pub lead_id: Option<String>,
    /// Its rep (for `lead.reassigned`, the new one; null when it went to the queue).
    pub rep_id: Option<String>,
    /// Its territory.
    pub territory_id: Option<String>,
    /// For `lead.reassigned`, the rep it left.
    pub from_rep_id: Option<String>,
    /// For `lead.reassigned`, why (`sla_breach`, …); for `lead.queued`, why it waits;
    /// for `plugin.circuit_open`, the last failure.
    pub reason: Option<String>,
    /// For `lead.closed`, how it ended.
    pub outcome: Option<OutcomeView>,
    /// For `plugin.circuit_open`, the plugin.
    pub plugin: Option<String>,
}

impl From<&OutboxEvent> for WebhookPayload {
    fn from(e: &OutboxEvent) -> Self {
        WebhookPayload {
            id: e.id(),
            kind: e.kind.into(),
            created_at: rfc3339(e.at),
            created_at_ms: e.at,
            data: WebhookData {
                lead_id: e.lead.map(|l| l.to_string()),
                rep_id: e.rep.as_ref().map(|r| r.to_string()),
                territory_id: e.territory.as_ref().map(|t| t.to_string()),
                from_rep_id: e.from_rep.as_ref().map(|r| r.to_string()),
                reason: e.reason.clone(),
                outcome: e.outcome.map(Into::into),
                plugin: e.plugin.clone(),
            },
        }
    }
}
