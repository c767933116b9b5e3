//! Leads: the intake body, the lead view with its history, and lifecycle events.

use leadroute_engine::LeadView as EngineLeadView;
use leadroute_engine::domain::{
    HistoryEntry, HistoryEvent, LeadEventInput, LeadInput, LeadStatus, Outcome, Stage,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{CandidateView, rfc3339};
use crate::error::AppError;

/// A lead as sent to `POST /v1/leads`. At least one of `external_id`, `phone`,
/// `email` is required; unknown fields are rejected.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "external_id": "crm-991", "name": "Dr. Wang", "company": "Ruijin Hospital Lab",
    "phone": "+86 138 0000 1234", "email": "wang@example.cn", "region": "CN-SH",
    "industry": "hospital-lab", "purchase_amount": 250000, "source": "webform",
    "attributes": {"campaign": "spring-expo"}
}))]
pub struct LeadBody {
    /// The source system's id for the lead (de-duplication key).
    #[serde(default)]
    pub external_id: Option<String>,
    /// Contact person.
    #[serde(default)]
    pub name: Option<String>,
    /// Contact's company.
    #[serde(default)]
    pub company: Option<String>,
    /// Phone in any common notation (de-duplication key, normalized).
    #[serde(default)]
    pub phone: Option<String>,
    /// E-mail (de-duplication key, normalized).
    #[serde(default)]
    pub email: Option<String>,
    /// Region code, e.g. `CN-SH-PD`; matched to a territory by longest prefix. Text
    /// that is not a code (at most 64 characters) is kept and goes to the default
    /// territory.
    #[serde(default)]
    pub region: Option<String>,
    /// Industry tag, e.g. `hospital-lab`.
    #[serde(default)]
    pub industry: Option<String>,
    /// Historical purchase amount.
    #[serde(default)]
    pub purchase_amount: Option<f64>,
    /// Where the lead came from (`webform`, `ads`, …).
    #[serde(default)]
    pub source: Option<String>,
    /// Anything else, as a JSON object (at most 16 KiB).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<serde_json::Value>,
}

impl From<LeadBody> for LeadInput {
    fn from(b: LeadBody) -> Self {
        LeadInput {
            external_id: b.external_id,
            name: b.name,
            company: b.company,
            phone: b.phone,
            email: b.email,
            region: b.region,
            industry: b.industry,
            purchase_amount: b.purchase_amount,
            source: b.source,
            attributes: b.attributes,
        }
    }
}

/// The six stages of an opportunity, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StageView {
    /// First contact.
    FirstContact,
    /// Needs diagnosis.
    NeedsDiagnosis,
    /// Solution demo.
    Demo,
    /// Objection handling.
    ObjectionHandling,
    /// Quote sent.
    QuoteSent,
    /// Contract signed; closes the lead as won.
    ContractSigned,
}

impl From<Stage> for StageView {
    fn from(s: Stage) -> Self {
        match s {
            Stage::FirstContact => StageView::FirstContact,
            Stage::NeedsDiagnosis => StageView::NeedsDiagnosis,
            Stage::Demo => StageView::Demo,
            Stage::ObjectionHandling => StageView::ObjectionHandling,
            Stage::QuoteSent => StageView::QuoteSent,
            Stage::ContractSigned => StageView::ContractSigned,
        }
    }
}

impl From<StageView> for Stage {
    fn from(s: StageView) -> Self {
        match s {
            StageView::FirstContact => Stage::FirstContact,
            StageView::NeedsDiagnosis => Stage::NeedsDiagnosis,
            StageView::Demo => Stage::Demo,
            StageView::ObjectionHandling => Stage::ObjectionHandling,
            StageView::QuoteSent => Stage::QuoteSent,
            StageView::ContractSigned => Stage::ContractSigned,
        }
    }
}

/// How a closed lead ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeView {
    /// Won.
    Won,
    /// Lost.
    Lost,
}

impl From<Outcome> for OutcomeView {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Won => OutcomeView::Won,
            Outcome::Lost => OutcomeView::Lost,
        }
    }
}

impl From<OutcomeView> for Outcome {
    fn from(o: OutcomeView) -> Self {
        match o {
            OutcomeView::Won => Outcome::Won,
            OutcomeView::Lost => Outcome::Lost,
        }
    }
}

/// The kinds of lifecycle event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// First contact; the same as stage `first_contact`.
    Touched,
    /// The next stage (needs `stage`); stages may not be skipped or repeated.
    Stage,
    /// The lead is over (needs `outcome`).
    Closed,
}

/// A lifecycle event for `POST /v1/leads/{lead_id}/events`:
/// `{"type": "touched"}`, `{"type": "stage", "stage": S}` or
/// `{"type": "closed", "outcome": "won" | "lost"}`.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"type": "stage", "stage": "needs_diagnosis"}))]
pub struct EventBody {
    /// Which event.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// For `stage`: the stage reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<StageView>,
    /// For `closed`: won or lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<OutcomeView>,
}

impl EventBody {
    /// Checks that the fields fit the type. A flat struct (rather than a tagged enum)
    /// so a stray `stage` on a `touched` event is refused, not silently dropped.
    pub fn into_input(self) -> Result<LeadEventInput, AppError> {
        let stray = |field: &str, kind: &str| {
            AppError::invalid(
                "invalid_field",
                field,
                format!("`{field}` does not go with type {kind}"),
            )
        };
        let needs = |field: &str, kind: &str| {
            AppError::invalid(
                "missing_field",
                field,
                format!("type {kind} needs `{field}`"),
            )
        };
        match (self.kind, self.stage, self.outcome) {
            (EventType::Touched, None, None) => Ok(LeadEventInput::Touched),
            (EventType::Stage, Some(stage), None) => Ok(LeadEventInput::Stage {
                stage: stage.into(),
            }),
            (EventType::Closed, None, Some(outcome)) => Ok(LeadEventInput::Closed {
                outcome: outcome.into(),
            }),
            (EventType::Stage, None, _) => Err(needs("stage", "stage")),
            (EventType::Closed, _, None) => Err(needs("outcome", "closed")),
            (kind, Some(_), _) if kind != EventType::Stage => Err(stray(
                "stage",
                if kind == EventType::Touched {
                    "touched"
                } else {
                    "closed"
                },
            )),
            (kind, _, _) => Err(stray(
                "outcome",
                if kind == EventType::Touched {
                    "touched"
                } else {
                    "stage"
                },
            )),
        }
    }
}

/// Where a lead stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LeadStatusView {
    /// A rep owns it.
    Assigned,
    /// It waits for capacity in its territory's queue.
    Queued,
    /// It is closed (see `outcome`).
    Closed,
}

/// A lead with its state and full history (`GET /v1/leads/{lead_id}`).
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct LeadView {
    /// The lead's id (a ULID: sorts by arrival).
    pub lead_id: String,
    /// Where it stands.
    pub status: LeadStatusView,
    /// For a closed lead, how it ended.
    pub outcome: Option<OutcomeView>,
    /// The owning rep while assigned.
    pub rep_id: Option<String>,
    /// Its territory.
    pub territory_id: String,
    /// The last stage reached.
    pub stage: Option<StageView>,
    /// The source system's id.
    pub external_id: Option<String>,
    /// Contact person.
    pub name: Option<String>,
    /// Company.
    pub company: Option<String>,
    /// Phone as given.
    pub phone: Option<String>,
    /// E-mail as given.
    pub email: Option<String>,
    /// Region code, upper-cased; or the text as given when it is not a code.
    pub region: Option<String>,
    /// Industry tag, lower-cased.
    pub industry: Option<String>,
    /// Historical purchase amount (0 when not given).
    pub purchase_amount: f64,
    /// Where it came from.
    pub source: Option<String>,
    /// Free-form attributes.
    #[schema(value_type = Object)]
    pub attributes: serde_json::Value,
    /// When intake accepted it (RFC 3339).
    pub received_at: String,
    /// The same, in Unix milliseconds.
    pub received_at_ms: u64,
    /// When the current rep got it.
    pub assigned_at: Option<String>,
    /// First contact.
    pub touched_at: Option<String>,
    /// While assigned and untouched: when the first-touch SLA runs out and the lead is
    /// re-routed (RFC 3339). Null once touched, while queued, and after escalation.
    pub first_touch_deadline: Option<String>,
    /// When it closed.
    pub closed_at: Option<String>,
    /// Reps that owned it before the current one, oldest first.
    pub previous_rep_ids: Vec<String>,
    /// Repeats of this lead that arrived while it was open (each answered
    /// `duplicate`). The first 20 are also `duplicate` entries in `history`; later ones
    /// are only counted here.
    pub repeats: u32,
    /// When the last repeat arrived (RFC 3339).
    pub last_repeat_at: Option<String>,
    /// Every event, oldest first.
    pub history: Vec<HistoryEntryView>,
}

// The field documentation of `repeats` names the number.
const _: () = assert!(leadroute_engine::domain::REPEATS_IN_HISTORY == 20);

impl From<EngineLeadView> for LeadView {
    fn from(v: EngineLeadView) -> Self {
        let s = v.state;
        let (status, outcome) = match s.status {
            LeadStatus::Assigned => (LeadStatusView::Assigned, None),
            LeadStatus::Queued => (LeadStatusView::Queued, None),
            LeadStatus::Closed(o) => (LeadStatusView::Closed, Some(o.into())),
        };
        let lead = s.lead;
        LeadView {
            lead_id: lead.id.to_string(),
            status,
            outcome,
            rep_id: s.rep.map(String::from),
            territory_id: s.territory.to_string(),
            stage: s.stage.map(Into::into),
            external_id: lead.external_id,
            name: lead.contact.name,
            company: lead.contact.company,
            phone: lead.contact.phone,
            email: lead.contact.email,
            region: lead.region,
            industry: lead.industry,
            purchase_amount: lead.purchase_amount,
            source: lead.source,
            attributes: serde_json::from_str(&lead.attributes)
                .unwrap_or_else(|_| serde_json::json!({})),
            received_at: rfc3339(lead.received_at),
            received_at_ms: lead.received_at,
            assigned_at: s.assigned_at.map(rfc3339),
            touched_at: s.touched_at.map(rfc3339),
            first_touch_deadline: None,
            closed_at: s.closed_at.map(rfc3339),
            previous_rep_ids: s.previous_reps.into_iter().map(String::from).collect(),
            repeats: s.repeats,
            last_repeat_at: s.last_repeat_at.map(rfc3339),
            history: v.history.into_iter().map(Into::into).collect(),
        }
    }
}

/// One event in a lead's history.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct HistoryEntryView {
    /// When it happened (RFC 3339).
    pub at: String,
    /// The same, in Unix milliseconds.
    pub at_ms: u64,
    /// What happened; `type` says which event.
    #[serde(flatten)]
    pub event: HistoryEventView,
}

/// What happened to a lead, tagged by `type`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HistoryEventView {
    /// A rep got the lead.
    Routed {
        /// The territory that decided.
        territory_id: String,
        /// The rep chosen.
        rep_id: String,
        /// `builtin:NAME` or `plugin:NAME@VERSION`.
        decided_by: String,
        /// The strategy's explanation.
        reason: String,
        /// Every candidate considered, with its load at that moment.
        candidates: Vec<CandidateView>,
        /// Why a fallback decided instead of the strategy, if one did: a code such as
        /// `plugin_trap`, as in a route's outcome.
        fallback: Option<String>,
        /// The fallback's detail for humans.
        fallback_detail: Option<String>,
        /// Whether the lead waited in the queue first.
        from_queue: bool,
        /// Microseconds spent deciding.
        decide_us: u32,
        /// Microseconds spent reserving capacity.
        reserve_us: u32,
    },
    /// Nobody had capacity; the lead waits in the territory's queue.
    Queued {
        /// The territory.
        territory_id: String,
        /// Why.
        reason: String,
    },
    /// The same contact arrived again while the lead was open.
    Duplicate {
        /// Which keys matched (`phone`, `email`, `external_id`).
        matched: Vec<String>,
        /// Source of the repeat.
        source: Option<String>,
    },
    /// First contact.
    Touched,
    /// A stage was reached.
    Stage {
        /// Which.
        stage: StageView,
    },
    /// The lead moved to another rep, or back to the queue.
    Reassigned {
        /// The previous rep.
        from_rep_id: String,
        /// The new rep; null when the lead went back to the queue.
        to_rep_id: Option<String>,
        /// Why: `sla_breach` (first-touch deadline missed), `sla_escalation` (missed
        /// again after the allowed re-routes), `rep_away`, `rep_deleted`, `manual`.
        why: String,
    },
    /// The lead closed.
    Closed {
        /// Won or lost.
        outcome: OutcomeView,
    },
    /// The territory's shadow plugin version would have picked another rep.
    ShadowDisagreed {
        /// The shadow plugin.
        plugin: String,
        /// Its version.
        version: u32,
        /// The rep actually chosen.
        chosen_rep_id: String,
        /// The shadow's first ranked rep that had room; null if it ranked none.
        shadow_rep_id: Option<String>,
        /// The shadow's explanation.
        reason: String,
    },
}

impl From<HistoryEntry> for HistoryEntryView {
    fn from(h: HistoryEntry) -> Self {
        let event = match h.event {
            HistoryEvent::Routed {
                territory,
                rep,
                decided_by,
                reason,
                candidates,
                fallback,
                from_queue,
                decide_micros,
                reserve_micros,
            } => {
                let (fallback, fallback_detail) = super::fallback_fields(fallback);
                HistoryEventView::Routed {
                    territory_id: territory.to_string(),
                    rep_id: rep.to_string(),
                    decided_by,
                    reason,
                    candidates: candidates.into_iter().map(Into::into).collect(),
                    fallback,
                    fallback_detail,
                    from_queue,
                    decide_us: decide_micros,
                    reserve_us: reserve_micros,
                }
            }
            HistoryEvent::Queued { territory, reason } => HistoryEventView::Queued {
                territory_id: territory.to_string(),
                reason,
            },
            HistoryEvent::Duplicate { matched, source } => {
                HistoryEventView::Duplicate { matched, source }
            }
            HistoryEvent::Touched => HistoryEventView::Touched,
            HistoryEvent::Stage { stage } => HistoryEventView::Stage {
                stage: stage.into(),
            },
            HistoryEvent::Reassigned { from, to, why } => HistoryEventView::Reassigned {
                from_rep_id: from.to_string(),
                to_rep_id: to.map(String::from),
                why,
            },
            HistoryEvent::Closed { outcome } => HistoryEventView::Closed {
                outcome: outcome.into(),
            },
            HistoryEvent::ShadowDisagreed {
                plugin,
                version,
                chosen,
                shadow_pick,
                reason,
            } => HistoryEventView::ShadowDisagreed {
                plugin,
                version,
                chosen_rep_id: chosen.to_string(),
                shadow_rep_id: shadow_pick.map(String::from),
                reason,
            },
        };
        HistoryEntryView {
            at: rfc3339(h.at),
            at_ms: h.at,
            event,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse_by_type_and_refuse_strays() {
        let parse = |s: &str| {
            serde_json::from_str::<EventBody>(s)
                .map_err(|e| e.to_string())
                .and_then(|b| b.into_input().map_err(|e| e.field.unwrap_or_default()))
        };
        assert_eq!(parse(r#"{"type":"touched"}"#), Ok(LeadEventInput::Touched));
        assert_eq!(
            parse(r#"{"type":"stage","stage":"demo"}"#),
            Ok(LeadEventInput::Stage { stage: Stage::Demo })
        );
        assert_eq!(
            parse(r#"{"type":"closed","outcome":"lost"}"#),
            Ok(LeadEventInput::Closed {
                outcome: Outcome::Lost
            })
        );
        assert_eq!(parse(r#"{"type":"stage"}"#), Err("stage".into()));
        assert_eq!(parse(r#"{"type":"closed"}"#), Err("outcome".into()));
        assert_eq!(
            parse(r#"{"type":"touched","stage":"demo"}"#),
            Err("stage".into())
        );
        assert_eq!(
            parse(r#"{"type":"stage","stage":"demo","outcome":"won"}"#),
            Err("outcome".into())
        );
        assert_eq!(
            parse(r#"{"type":"closed","outcome":"won","stage":"demo"}"#),
            Err("stage".into())
        );
        assert!(parse(r#"{"type":"teleported"}"#).is_err());
        assert!(parse(r#"{"type":"touched","note":1}"#).is_err());
    }

    #[test]
    fn history_entries_carry_a_type_tag() {
        let v = serde_json::to_value(HistoryEntryView::from(HistoryEntry {
            at: 1_000,
            event: HistoryEvent::Touched,
        }))
        .unwrap();
        assert_eq!(v["type"], "touched");
        assert_eq!(v["at_ms"], 1_000);
        assert_eq!(v["at"], "1970-01-01T00:00:01.000Z");
    }
}
