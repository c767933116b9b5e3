//! Leads: what arrives at intake, and the state each one moves through.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{LeadId, RepId, TerritoryId, check_tag, check_text, lead_region};
use crate::clock::UnixMillis;
use crate::error::ValidationError;

/// Largest free-form `attributes` object accepted, as JSON text.
pub const MAX_ATTRIBUTES_BYTES: usize = 16 * 1024;
/// Deepest nesting accepted inside `attributes`.
const MAX_ATTRIBUTES_DEPTH: usize = 16;
/// Largest purchase amount accepted; far above any real order, below f64's exact range.
const MAX_PURCHASE_AMOUNT: f64 = 1e15;

/// A lead as it arrives at intake (`POST /v1/leads`).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LeadInput {
    /// The source system's id for the lead.
    #[serde(default)]
    pub external_id: Option<String>,
    /// Contact person.
    #[serde(default)]
    pub name: Option<String>,
    /// Contact's company.
    #[serde(default)]
    pub company: Option<String>,
    /// Phone in any common notation.
    #[serde(default)]
    pub phone: Option<String>,
    /// E-mail address.
    #[serde(default)]
    pub email: Option<String>,
    /// Region code, e.g. `CN-SH-PD`. Text that is not a code is kept and matches no
    /// territory (the lead goes to the default one).
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
    /// Anything else, as a JSON object.
    #[serde(default)]
    pub attributes: Option<serde_json::Value>,
}

/// How to reach the lead's contact.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct Contact {
    /// Contact person.
    pub name: Option<String>,
    /// Company.
    pub company: Option<String>,
    /// Phone as given (normalized only for de-duplication).
    pub phone: Option<String>,
    /// E-mail as given.
    pub email: Option<String>,
}

/// A validated lead.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Lead {
    /// Generated, time-ordered id.
    pub id: LeadId,
    /// The source system's id.
    pub external_id: Option<String>,
    /// Contact details.
    pub contact: Contact,
    /// Region: an upper-cased region code such as `CN-SH-PD`, or the text as given
    /// when it is not one (see [`lead_region`]).
    pub region: Option<String>,
    /// Industry tag.
    pub industry: Option<String>,
    /// Historical purchase amount; 0 when unknown.
    pub purchase_amount: f64,
    /// Where the lead came from.
    pub source: Option<String>,
    /// Free-form attributes as JSON object text.
    pub attributes: String,
    /// When intake accepted it.
    pub received_at: UnixMillis,
}

fn optional_text(
    field: &str,
    value: Option<&str>,
    max: usize,
) -> Result<Option<String>, ValidationError> {
    value.map(|v| check_text(field, v, max)).transpose()
}

fn check_phone(raw: &str) -> Result<String, ValidationError> {
    let phone = check_text("phone", raw, 32)?;
    let digits = phone.bytes().filter(u8::is_ascii_digit).count();
    let allowed = phone
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b' ' | b'(' | b')' | b'.'));
    if !allowed || !(5..=20).contains(&digits) {
        return Err(ValidationError::field(
            "phone",
            "must hold 5-20 digits and only + - ( ) . and spaces besides",
        ));
    }
    Ok(phone)
}

fn check_email(raw: &str) -> Result<String, ValidationError> {
    let email = check_text("email", raw, 254)?;
    let valid = match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
                && !email.contains(char::is_whitespace)
        }
        None => false,
    };
    if valid {
        Ok(email)
    } else {
        Err(ValidationError::field(
            "email",
            format!("{raw:?} is not an e-mail address"),
        ))
    }
}

fn depth(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        serde_json::Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

impl LeadInput {
    /// Validates the input into a [`Lead`] with the given id and arrival time.
    pub fn validate(&self, id: LeadId, now: UnixMillis) -> Result<Lead, ValidationError> {
        let external_id = optional_text("external_id", self.external_id.as_deref(), 128)?;
        let phone = self.phone.as_deref().map(check_phone).transpose()?;
        let email = self.email.as_deref().map(check_email).transpose()?;
        if external_id.is_none() && phone.is_none() && email.is_none() {
            return Err(ValidationError::field(
                "external_id",
                "at least one of external_id, phone, email is required",
            )
            .with_code("missing_contact"));
        }
        let region = match self.region.as_deref() {
            Some(r) => lead_region(r)?,
            None => None,
        };
        let industry = self
            .industry
            .as_deref()
            .map(|i| check_tag("industry", i))
            .transpose()?;
        let purchase_amount = self.purchase_amount.unwrap_or(0.0);
        if !(purchase_amount.is_finite() && (0.0..=MAX_PURCHASE_AMOUNT).contains(&purchase_amount))
        {
            return Err(ValidationError::field(
                "purchase_amount",
                "must be a number from 0 to 1e15",
            ));
        }
        let attributes = match &self.attributes {
            None => "{}".to_string(),
            Some(v) if v.is_object() => {
                if depth(v) > MAX_ATTRIBUTES_DEPTH {
                    return Err(ValidationError::field(
                        "attributes",
                        format!("must nest at most {MAX_ATTRIBUTES_DEPTH} levels deep"),
                    ));
                }
                let text = v.to_string();
                if text.len() > MAX_ATTRIBUTES_BYTES {
                    return Err(ValidationError::field(
                        "attributes",
                        format!("must be at most {MAX_ATTRIBUTES_BYTES} bytes of JSON"),
                    ));
                }
                text
            }
            Some(_) => {
                return Err(ValidationError::field(
                    "attributes",
                    "must be a JSON object",
                ));
            }
        };
        Ok(Lead {
            id,
            external_id,
            contact: Contact {
                name: optional_text("name", self.name.as_deref(), 200)?,
                company: optional_text("company", self.company.as_deref(), 200)?,
                phone,
                email,
            },
            region,
            industry,
            purchase_amount,
            source: optional_text("source", self.source.as_deref(), 64)?,
            attributes,
            received_at: now,
        })
    }
}

/// The six stages of an opportunity, in the only order they may happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// First contact (`touched`).
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

impl Stage {
    /// All stages in order.
    pub const ALL: [Stage; 6] = [
        Stage::FirstContact,
        Stage::NeedsDiagnosis,
        Stage::Demo,
        Stage::ObjectionHandling,
        Stage::QuoteSent,
        Stage::ContractSigned,
    ];

    /// The stage that must follow `current` (`None` = no stage yet).
    pub fn expected_after(current: Option<Stage>) -> Option<Stage> {
        match current {
            None => Some(Stage::FirstContact),
            Some(s) => Stage::ALL.get(s as usize + 1).copied(),
        }
    }

    /// The snake_case name used in the API.
    pub fn name(self) -> &'static str {
        match self {
            Stage::FirstContact => "first_contact",
            Stage::NeedsDiagnosis => "needs_diagnosis",
            Stage::Demo => "demo",
            Stage::ObjectionHandling => "objection_handling",
            Stage::QuoteSent => "quote_sent",
            Stage::ContractSigned => "contract_signed",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a closed lead ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Won.
    Won,
    /// Lost.
    Lost,
}

/// Where a lead stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeadStatus {
    /// A rep owns it.
    Assigned,
    /// It waits in its territory's queue for capacity.
    Queued,
    /// It is closed; no rep load is held for it.
    Closed(Outcome),
}

impl LeadStatus {
    /// Whether the lead still counts as open (for de-duplication and load).
    pub fn is_open(self) -> bool {
        !matches!(self, LeadStatus::Closed(_))
    }
}

/// A lead with everything that has happened to it, as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeadState {
    /// The lead as accepted.
    pub lead: Lead,
    /// Where it stands.
    pub status: LeadStatus,
    /// Its territory.
    pub territory: TerritoryId,
    /// Its rep while assigned.
    pub rep: Option<RepId>,
    /// The last stage reached.
    pub stage: Option<Stage>,
    /// When the current rep got it.
    pub assigned_at: Option<UnixMillis>,
    /// First contact.
    pub touched_at: Option<UnixMillis>,
    /// When it closed.
    pub closed_at: Option<UnixMillis>,
    /// Reps that owned it before the current one, oldest first.
    pub previous_reps: Vec<RepId>,
    /// Position in its territory's queue while queued.
    pub queue_seq: Option<u64>,
    /// Repeats of it that arrived while it was open (each answered `duplicate`). Only
    /// the first [`REPEATS_IN_HISTORY`] are history entries; the rest are counted here.
    pub repeats: u32,
    /// When the last repeat arrived.
    pub last_repeat_at: Option<UnixMillis>,
}

/// Repeats of a lead recorded as `duplicate` history entries. A client re-sending the
/// same contact in a loop would otherwise grow one lead's history without bound; past
/// this, repeats are only counted ([`LeadState::repeats`]).
pub const REPEATS_IN_HISTORY: u32 = 20;

/// An event reported for a lead (`POST /v1/leads/{id}/events`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "RawEvent", into = "RawEvent")]
pub enum LeadEventInput {
    /// First contact; the same as stage `first_contact`.
    Touched,
    /// The next stage.
    Stage {
        /// Which stage.
        stage: Stage,
    },
    /// The lead is over.
    Closed {
        /// Won or lost.
        outcome: Outcome,
    },
}

#[derive(Clone, Copy, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
enum EventType {
    Touched,
    Stage,
    Closed,
}

/// The flat JSON form, so unknown or misplaced fields are refused with a clear message.
#[derive(Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    #[serde(rename = "type")]
    kind: EventType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stage: Option<Stage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    outcome: Option<Outcome>,
}

impl TryFrom<RawEvent> for LeadEventInput {
    type Error = String;
    fn try_from(raw: RawEvent) -> Result<Self, String> {
        match (raw.kind, raw.stage, raw.outcome) {
            (EventType::Touched, None, None) => Ok(LeadEventInput::Touched),
            (EventType::Stage, Some(stage), None) => Ok(LeadEventInput::Stage { stage }),
            (EventType::Closed, None, Some(outcome)) => Ok(LeadEventInput::Closed { outcome }),
            (EventType::Stage, None, _) => Err("type stage needs a `stage`".into()),
            (EventType::Closed, _, None) => Err("type closed needs an `outcome`".into()),
            _ => Err("`stage` goes only with type stage, `outcome` only with type closed".into()),
        }
    }
}

impl From<LeadEventInput> for RawEvent {
    fn from(e: LeadEventInput) -> Self {
        let (kind, stage, outcome) = match e {
            LeadEventInput::Touched => (EventType::Touched, None, None),
            LeadEventInput::Stage { stage } => (EventType::Stage, Some(stage), None),
            LeadEventInput::Closed { outcome } => (EventType::Closed, None, Some(outcome)),
        };
        RawEvent {
            kind,
            stage,
            outcome,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ulid::Ulid;

    fn id() -> LeadId {
        LeadId::from_ulid(Ulid::new())
    }

    fn valid() -> LeadInput {
        LeadInput {
            phone: Some("+86 138 0000 1234".into()),
            region: Some("cn-sh".into()),
            industry: Some("Hospital-Lab".into()),
            purchase_amount: Some(250000.0),
            ..Default::default()
        }
    }

    #[test]
    fn a_valid_lead_is_normalised() {
        let lead = valid().validate(id(), 7).unwrap();
        assert_eq!(lead.region.unwrap().as_str(), "CN-SH");
        assert_eq!(lead.industry.as_deref(), Some("hospital-lab"));
        assert_eq!(lead.attributes, "{}");
        assert_eq!(lead.received_at, 7);
    }

    #[test]
    fn a_contact_key_is_required() {
        let err = LeadInput {
            name: Some("x".into()),
            ..Default::default()
        }
        .validate(id(), 0)
        .unwrap_err();
        assert_eq!(err.code, "missing_contact");
    }

    #[test]
    fn bad_fields_are_named() {
        let deep = (0..20).fold(serde_json::json!(1), |v, _| serde_json::json!({ "a": v }));
        let big = serde_json::json!({ "blob": "x".repeat(MAX_ATTRIBUTES_BYTES) });
        let cases: Vec<(LeadInput, &str)> = vec![
            (
                LeadInput {
                    phone: Some("12".into()),
                    ..valid()
                },
                "phone",
            ),
            (
                LeadInput {
                    phone: Some("call me 123456".into()),
                    ..valid()
                },
                "phone",
            ),
            (
                LeadInput {
                    email: Some("nobody".into()),
                    ..valid()
                },
                "email",
            ),
            (
                LeadInput {
                    email: Some("a@b".into()),
                    ..valid()
                },
                "email",
            ),
            (
                LeadInput {
                    region: Some("CN\u{0}SH".into()),
                    ..valid()
                },
                "region",
            ),
            (
                LeadInput {
                    industry: Some("x y".into()),
                    ..valid()
                },
                "industry",
            ),
            (
                LeadInput {
                    purchase_amount: Some(-1.0),
                    ..valid()
                },
                "purchase_amount",
            ),
            (
                LeadInput {
                    purchase_amount: Some(1e300),
                    ..valid()
                },
                "purchase_amount",
            ),
            (
                LeadInput {
                    attributes: Some(serde_json::json!([1])),
                    ..valid()
                },
                "attributes",
            ),
            (
                LeadInput {
                    attributes: Some(deep),
                    ..valid()
                },
                "attributes",
            ),
            (
                LeadInput {
                    attributes: Some(big),
                    ..valid()
                },
                "attributes",
            ),
            (
                LeadInput {
                    external_id: Some("a\u{0}b".into()),
                    ..valid()
                },
                "external_id",
            ),
            (
                LeadInput {
                    name: Some("n".repeat(201)),
                    ..valid()
                },
                "name",
            ),
        ];
        for (bad, field) in cases {
            assert_eq!(bad.validate(id(), 0).unwrap_err().field, field, "{bad:?}");
        }
    }

    #[test]
    fn unknown_fields_are_rejected() {
        assert!(serde_json::from_str::<LeadInput>(r#"{"phone":"123456","vip":true}"#).is_err());
    }

    #[test]
    fn stages_follow_one_another() {
        assert_eq!(Stage::expected_after(None), Some(Stage::FirstContact));
        assert_eq!(
            Stage::expected_after(Some(Stage::Demo)),
            Some(Stage::ObjectionHandling)
        );
        assert_eq!(Stage::expected_after(Some(Stage::ContractSigned)), None);
        for pair in Stage::ALL.windows(2) {
            assert_eq!(Stage::expected_after(Some(pair[0])), Some(pair[1]));
        }
    }

    #[test]
    fn event_json_forms() {
        let e: LeadEventInput = serde_json::from_str(r#"{"type":"stage","stage":"demo"}"#).unwrap();
        assert_eq!(e, LeadEventInput::Stage { stage: Stage::Demo });
        let e: LeadEventInput =
            serde_json::from_str(r#"{"type":"closed","outcome":"lost"}"#).unwrap();
        assert_eq!(
            e,
            LeadEventInput::Closed {
                outcome: Outcome::Lost
            }
        );
        assert!(
            serde_json::from_str::<LeadEventInput>(r#"{"type":"stage","stage":"won"}"#).is_err()
        );
        assert!(serde_json::from_str::<LeadEventInput>(r#"{"type":"touched","x":1}"#).is_err());
        assert!(serde_json::from_str::<LeadEventInput>(r#"{"type":"stage"}"#).is_err());
        assert!(
            serde_json::from_str::<LeadEventInput>(r#"{"type":"touched","outcome":"won"}"#)
                .is_err()
        );
        let e: LeadEventInput = serde_json::from_str(r#"{"type":"touched"}"#).unwrap();
        assert_eq!(serde_json::to_string(&e).unwrap(), r#"{"type":"touched"}"#);
    }
}
