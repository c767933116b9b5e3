//! Webhook subscriptions and the events they receive.
//!
//! Every state change a subscriber may care about becomes an [`OutboxEvent`], written
//! in the same transaction as the change itself, so an event exists exactly when its
//! change does. Delivery (HTTP, signatures, retries) is the server's job.

use serde::{Deserialize, Serialize};

use super::{LeadId, Outcome, RepId, TerritoryId, WebhookId};
use crate::clock::UnixMillis;
use crate::error::ValidationError;

/// The kinds of event a subscription can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventKind {
    /// A rep got a lead (at intake, from the queue, or after a re-route).
    #[serde(rename = "lead.assigned")]
    LeadAssigned,
    /// A lead waits in its territory's queue.
    #[serde(rename = "lead.queued")]
    LeadQueued,
    /// A lead moved away from its rep (SLA breach, rep away or deleted, operator).
    #[serde(rename = "lead.reassigned")]
    LeadReassigned,
    /// A lead closed, won or lost.
    #[serde(rename = "lead.closed")]
    LeadClosed,
    /// A plugin failed too often in a row and is bypassed until re-activated.
    #[serde(rename = "plugin.circuit_open")]
    PluginCircuitOpen,
}

impl EventKind {
    /// Every kind, in a fixed order.
    pub const ALL: [EventKind; 5] = [
        EventKind::LeadAssigned,
        EventKind::LeadQueued,
        EventKind::LeadReassigned,
        EventKind::LeadClosed,
        EventKind::PluginCircuitOpen,
    ];

    /// The name on the wire, e.g. `lead.assigned`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::LeadAssigned => "lead.assigned",
            EventKind::LeadQueued => "lead.queued",
            EventKind::LeadReassigned => "lead.reassigned",
            EventKind::LeadClosed => "lead.closed",
            EventKind::PluginCircuitOpen => "plugin.circuit_open",
        }
    }

    /// This kind's bit in a set of kinds.
    pub fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// One event waiting in the outbox. Plain data: the fields that do not apply to the
/// kind are `None`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutboxEvent {
    /// Position in the outbox; increases with every event, across restarts.
    pub seq: u64,
    /// What happened.
    pub kind: EventKind,
    /// When.
    pub at: UnixMillis,
    /// The lead.
    pub lead: Option<LeadId>,
    /// Its rep (for `lead.reassigned`, the new one; `None` when it went to the queue).
    pub rep: Option<RepId>,
    /// Its territory.
    pub territory: Option<TerritoryId>,
    /// For `lead.reassigned`, the rep it left.
    pub from_rep: Option<RepId>,
    /// For `lead.reassigned`, why (`sla_breach`, …); for `lead.queued`, why it waits.
    pub reason: Option<String>,
    /// For `lead.closed`, how it ended.
    pub outcome: Option<Outcome>,
    /// For `plugin.circuit_open`, the plugin.
    pub plugin: Option<String>,
}

impl OutboxEvent {
    /// An event of `kind` at `at` about nothing yet; the caller fills in the rest.
    pub fn new(kind: EventKind, at: UnixMillis) -> Self {
        OutboxEvent {
            seq: 0,
            kind,
            at,
            lead: None,
            rep: None,
            territory: None,
            from_rep: None,
            reason: None,
            outcome: None,
            plugin: None,
        }
    }

    /// The event's stable id, also the deliveries' idempotency key.
    pub fn id(&self) -> String {
        format!("evt_{:016x}", self.seq)
    }
}

/// A webhook subscription.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Webhook {
    /// Client-chosen id.
    pub id: WebhookId,
    /// Where events are POSTed.
    pub url: String,
    /// The kinds it receives.
    pub events: Vec<EventKind>,
    /// The HMAC-SHA256 key of the signature header.
    pub secret: String,
}

impl Webhook {
    /// Whether it receives events of `kind`.
    pub fn wants(&self, kind: EventKind) -> bool {
        self.events.contains(&kind)
    }
}

/// The body of `PUT /admin/webhooks/{id}`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookInput {
    /// `http://` or `https://` URL.
    pub url: String,
    /// At least one kind.
    pub events: Vec<EventKind>,
    /// 16 to 256 characters.
    pub secret: String,
}

impl WebhookInput {
    /// Validates the input into a [`Webhook`] with the given id.
    pub fn validate(self, id: WebhookId) -> Result<Webhook, ValidationError> {
        let url = self.url.trim().to_string();
        // Parsed as the delivering client will parse it, so a URL accepted here is one
        // it can send to (a bad port or bracket would otherwise only show up as dead
        // letters). The parser drops tabs and newlines silently, and reads
        // `http:///y` as `http://y/`; both are refused.
        let host_first = url
            .split_once("://")
            .is_some_and(|(_, r)| !r.starts_with('/'));
        let deliverable = host_first
            && url::Url::parse(&url).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some_and(|h| !h.is_empty())
            });
        if !deliverable || url.len() > 2048 || url.chars().any(char::is_control) {
            return Err(ValidationError::field(
                "url",
                "must be an http:// or https:// URL with a host, at most 2048 characters",
            ));
        }
        if self.events.is_empty() {
            return Err(ValidationError::field(
                "events",
                "must name at least one event",
            ));
        }
        let mut events = self.events;
        events.sort();
        events.dedup();
        let len = self.secret.chars().count();
        if !(16..=256).contains(&len) || self.secret.chars().any(char::is_control) {
            return Err(ValidationError::field(
                "secret",
                "must be 16 to 256 characters, without control characters",
            ));
        }
        Ok(Webhook {
            id,
            url,
            events,
            secret: self.secret,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: serde_json::Value) -> Result<Webhook, String> {
        let input: WebhookInput = serde_json::from_value(json).map_err(|e| e.to_string())?;
        input
            .validate(WebhookId::new("w").unwrap())
            .map_err(|e| e.field)
    }

    #[test]
    fn inputs_are_checked_field_by_field() {
        let ok = parse(serde_json::json!({"url": "http://127.0.0.1:9/hook",
            "events": ["lead.closed", "lead.assigned", "lead.closed"],
            "secret": "0123456789abcdef"}))
        .unwrap();
        assert_eq!(ok.events, [EventKind::LeadAssigned, EventKind::LeadClosed]);
        let bad = |url: &str, events: serde_json::Value, secret: &str| {
            parse(serde_json::json!({"url": url, "events": events, "secret": secret})).unwrap_err()
        };
        let events = serde_json::json!(["lead.assigned"]);
        assert_eq!(bad("ftp://x/y", events.clone(), "0123456789abcdef"), "url");
        assert_eq!(bad("http:///y", events.clone(), "0123456789abcdef"), "url");
        for url in [
            "http://h:99999/",
            "http://[::1/hook",
            "http://exa mple.com/",
            "https://h/a\tb",
            "mailto:x@y",
            "http://",
        ] {
            assert_eq!(bad(url, events.clone(), "0123456789abcdef"), "url", "{url}");
        }
        for url in [
            "http://[::1]:8080/hook",
            "https://hooks.example.com/a?b=c#d",
        ] {
            let ok = parse(serde_json::json!({"url": url, "events": ["lead.assigned"],
                "secret": "0123456789abcdef"}));
            assert!(ok.is_ok(), "{url}: {ok:?}");
        }
        assert_eq!(
            bad("http://x", serde_json::json!([]), "0123456789abcdef"),
            "events"
        );
        assert_eq!(bad("http://x", events, "short"), "secret");
        assert!(
            bad(
                "http://x",
                serde_json::json!(["lead.eaten"]),
                "0123456789abcdef"
            )
            .contains("unknown variant")
        );
    }

    #[test]
    fn kinds_have_distinct_bits_and_wire_names() {
        let bits: u8 = EventKind::ALL.iter().map(|k| k.bit()).fold(0, |a, b| a | b);
        assert_eq!(bits.count_ones(), 5);
        for kind in EventKind::ALL {
            let json = serde_json::to_value(kind).unwrap();
            assert_eq!(json, kind.as_str());
        }
    }
}
