//! The one place that knows how records become bytes.
//!
//! Values are bincode 2 (serde) behind a one-byte schema version. bincode is a
//! required dependency and is marked unmaintained upstream, so nothing else in the
//! crate touches it: swapping the format means changing this file and bumping the
//! versions.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::clock::UnixMillis;
use crate::domain::{
    HistoryEntry, Lead, LeadState, LeadStatus, OutboxEvent, RegionCode, Rep, RepId, Stage,
    StrategySpec, Territory, TerritoryId, Webhook,
};

/// A stored record type and the schema version it is written with.
pub(crate) trait Record: Serialize + DeserializeOwned {
    /// Written as the first byte of every value.
    const VERSION: u8;
    /// Named in errors.
    const KIND: &'static str;

    /// Reads a value written by an older schema `version` of this type, or `None` when
    /// this build cannot read that version. bincode is not self-describing, so each
    /// older layout is kept as its own struct and converted.
    fn migrate(_version: u8, _bytes: &[u8]) -> Option<Result<Self, String>> {
        None
    }
}

/// A value that could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("corrupt {kind} record: {detail}")]
pub(crate) struct CorruptRecord {
    pub kind: &'static str,
    pub detail: String,
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes `record` with its version byte.
pub(crate) fn encode<R: Record>(record: &R) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.push(R::VERSION);
    // Writing to a Vec cannot fail, and every stored type is plain data bincode can
    // encode (enforced by the round-trip tests below).
    bincode::serde::encode_into_std_write(record, &mut out, config())
        .expect("stored records are always encodable");
    out
}

/// Decodes a value written by [`encode`].
pub(crate) fn decode<R: Record>(bytes: &[u8]) -> Result<R, CorruptRecord> {
    let corrupt = |detail: String| CorruptRecord {
        kind: R::KIND,
        detail,
    };
    match bytes.split_first() {
        Some((&v, rest)) if v == R::VERSION => decode_layout(rest).map_err(corrupt),
        Some((&v, rest)) => match R::migrate(v, rest) {
            Some(migrated) => migrated.map_err(corrupt),
            None => Err(corrupt(format!(
                "schema version {v}, this build reads {}",
                R::VERSION
            ))),
        },
        None => Err(corrupt("empty value".into())),
    }
}

/// Decodes one bincode layout (no version byte).
fn decode_layout<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    bincode::serde::decode_from_slice(bytes, config())
        .map(|(r, _)| r)
        .map_err(|e| e.to_string())
}

/// A territory as schema version 1 stored it: before `shadow` and the SLA escalation
/// settings.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub(crate) struct TerritoryV1 {
    pub id: TerritoryId,
    pub name: String,
    pub regions: Vec<RegionCode>,
    pub default: bool,
    pub strategy: StrategySpec,
    pub plugin_config: String,
    pub first_touch_sla_secs: u64,
}

impl From<TerritoryV1> for Territory {
    fn from(t: TerritoryV1) -> Self {
        Territory {
            id: t.id,
            name: t.name,
            regions: t.regions,
            default: t.default,
            strategy: t.strategy,
            plugin_config: t.plugin_config,
            first_touch_sla_secs: t.first_touch_sla_secs,
            sla_max_reroutes: crate::domain::DEFAULT_SLA_MAX_REROUTES,
            sla_escalation_rep: None,
            sla_reroute_when_away: false,
            shadow: None,
        }
    }
}

/// A lead as schema version 1 stored it: before repeats were counted.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub(crate) struct LeadStateV1 {
    pub lead: Lead,
    pub status: LeadStatus,
    pub territory: TerritoryId,
    pub rep: Option<RepId>,
    pub stage: Option<Stage>,
    pub assigned_at: Option<UnixMillis>,
    pub touched_at: Option<UnixMillis>,
    pub closed_at: Option<UnixMillis>,
    pub previous_reps: Vec<RepId>,
    pub queue_seq: Option<u64>,
}

impl From<LeadStateV1> for LeadState {
    /// Repeats before version 2 are in the history (one entry each), not counted.
    fn from(s: LeadStateV1) -> Self {
        LeadState {
            lead: s.lead,
            status: s.status,
            territory: s.territory,
            rep: s.rep,
            stage: s.stage,
            assigned_at: s.assigned_at,
            touched_at: s.touched_at,
            closed_at: s.closed_at,
            previous_reps: s.previous_reps,
            queue_seq: s.queue_seq,
            repeats: 0,
            last_repeat_at: None,
        }
    }
}

/// A rep with the load the store has counted for it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub(crate) struct RepRecord {
    pub rep: Rep,
    pub load: u32,
    pub last_assigned_at: Option<u64>,
}

/// An open assignment: the lead's current rep.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub(crate) struct Assignment {
    pub rep: RepId,
    pub territory: TerritoryId,
    pub since: u64,
}

/// A plugin's versions and which one is active; the modules themselves are stored
/// under their own keys (see the store's tree table).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub(crate) struct PluginRecord {
    pub name: String,
    /// The version territories with `version: null` follow.
    pub active: u32,
    /// The number the next upload gets; never reused while the plugin exists.
    pub next_version: u32,
    pub versions: Vec<PluginVersionRecord>,
}

/// One uploaded module's metadata.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub(crate) struct PluginVersionRecord {
    pub version: u32,
    /// Hex SHA-256 of the module bytes.
    pub sha256: String,
    pub size: u64,
    pub uploaded_at: u64,
}

impl Record for PluginRecord {
    const VERSION: u8 = 1;
    const KIND: &'static str = "plugin";
}
impl Record for RepRecord {
    const VERSION: u8 = 1;
    const KIND: &'static str = "rep";
}
impl Record for Territory {
    /// 2 added `shadow` and the SLA escalation settings.
    const VERSION: u8 = 2;
    const KIND: &'static str = "territory";

    fn migrate(version: u8, bytes: &[u8]) -> Option<Result<Self, String>> {
        match version {
            1 => Some(decode_layout::<TerritoryV1>(bytes).map(Territory::from)),
            _ => None,
        }
    }
}

/// An open lead's de-duplication keys, kept under its id so that the in-memory index
/// can be rebuilt at start from one tree read front to back (see `dedupe::Index`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub(crate) struct LeadKeys {
    /// As made by `dedupe::keys`.
    pub keys: Vec<String>,
}

impl Record for LeadKeys {
    const VERSION: u8 = 1;
    const KIND: &'static str = "lead keys";
}

/// First-touch SLA state of an open lead that has not been touched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub(crate) struct SlaRecord {
    /// When the current rep's time runs out; `None` while queued or once escalated.
    pub deadline: Option<u64>,
    /// SLA re-routes so far.
    pub breaches: u32,
    /// Escalated: no further SLA re-routes.
    pub escalated: bool,
}

impl Record for Webhook {
    const VERSION: u8 = 1;
    const KIND: &'static str = "webhook";
}

impl Record for OutboxEvent {
    const VERSION: u8 = 1;
    const KIND: &'static str = "outbox event";
}

/// An event a webhook gave up on, kept for inspection and re-drive.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct DeadLetter {
    /// The event.
    pub event: OutboxEvent,
    /// Delivery attempts made.
    pub attempts: u32,
    /// What the last attempt got.
    pub last_error: String,
    /// When it was given up on.
    pub failed_at: u64,
    /// An operator asked for it to be delivered again.
    pub redrive: bool,
}

impl Record for DeadLetter {
    const VERSION: u8 = 1;
    const KIND: &'static str = "dead letter";
}

impl Record for SlaRecord {
    const VERSION: u8 = 1;
    const KIND: &'static str = "sla";
}
impl Record for LeadState {
    /// 2 added `repeats` and `last_repeat_at`.
    const VERSION: u8 = 2;
    const KIND: &'static str = "lead";

    fn migrate(version: u8, bytes: &[u8]) -> Option<Result<Self, String>> {
        match version {
            1 => Some(decode_layout::<LeadStateV1>(bytes).map(LeadState::from)),
            _ => None,
        }
    }
}
impl Record for Assignment {
    const VERSION: u8 = 1;
    const KIND: &'static str = "assignment";
}
impl Record for HistoryEntry {
    const VERSION: u8 = 1;
    const KIND: &'static str = "history";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::*;

    fn round_trip<R: Record + PartialEq + std::fmt::Debug>(r: R) {
        assert_eq!(decode::<R>(&encode(&r)).unwrap(), r);
    }

    #[test]
    fn every_record_round_trips() {
        let lead = LeadInput {
            phone: Some("13800001234".into()),
            region: Some("CN-SH".into()),
            attributes: Some(serde_json::json!({"a": [1, {"b": null}]})),
            ..Default::default()
        }
        .validate(LeadId::from_ulid(ulid::Ulid::new()), 1)
        .unwrap();
        let rep = RepInput {
            name: "A".into(),
            territories: vec!["t".into()],
            capacity: 3,
            ..Default::default()
        }
        .validate(RepId::new("a").unwrap())
        .unwrap();
        let territory = TerritoryInput {
            name: "T".into(),
            regions: vec!["CN".into()],
            default: true,
            strategy: Some(StrategyInput::Plugin {
                plugin: "p".into(),
                version: None,
            }),
            plugin_config: Some(serde_json::json!({"x": 1})),
            first_touch_sla_secs: None,
            sla_max_reroutes: Some(1),
            sla_escalation_rep: Some("boss".into()),
            sla_reroute_when_away: true,
            shadow: Some(ShadowSpec {
                plugin: "s".into(),
                version: 2,
            }),
        }
        .validate(TerritoryId::new("t").unwrap())
        .unwrap();
        round_trip(RepRecord {
            rep: rep.clone(),
            load: 2,
            last_assigned_at: Some(5),
        });
        round_trip(territory.clone());
        // A territory written before the SLA escalation settings reads with defaults.
        let v1 = TerritoryV1 {
            id: territory.id.clone(),
            name: territory.name.clone(),
            regions: territory.regions.clone(),
            default: territory.default,
            strategy: territory.strategy.clone(),
            plugin_config: territory.plugin_config.clone(),
            first_touch_sla_secs: 600,
        };
        let mut bytes = vec![1];
        bincode::serde::encode_into_std_write(&v1, &mut bytes, config()).unwrap();
        let upgraded: Territory = decode(&bytes).unwrap();
        assert_eq!(upgraded.first_touch_sla_secs, 600);
        assert_eq!(
            upgraded.sla_max_reroutes,
            crate::domain::DEFAULT_SLA_MAX_REROUTES
        );
        assert_eq!(upgraded.sla_escalation_rep, None);
        assert_eq!(upgraded.strategy, territory.strategy);
        round_trip(SlaRecord {
            deadline: Some(7),
            breaches: 2,
            escalated: false,
        });
        round_trip(LeadState {
            lead,
            status: LeadStatus::Closed(Outcome::Won),
            territory: TerritoryId::new("t").unwrap(),
            rep: Some(rep.id.clone()),
            stage: Some(Stage::Demo),
            assigned_at: Some(1),
            touched_at: None,
            closed_at: Some(3),
            previous_reps: vec![rep.id.clone()],
            queue_seq: None,
            repeats: 4,
            last_repeat_at: Some(2),
        });
        round_trip(HistoryEntry {
            at: 9,
            event: HistoryEvent::Routed {
                territory: TerritoryId::new("t").unwrap(),
                rep: rep.id.clone(),
                decided_by: "builtin:rules".into(),
                reason: "r".into(),
                candidates: vec![CandidateSnapshot {
                    rep: rep.id,
                    load: 1,
                    capacity: 3,
                }],
                fallback: None,
                from_queue: false,
                decide_micros: 3,
                reserve_micros: 4,
            },
        });
    }

    #[test]
    fn shadow_disagreements_round_trip() {
        round_trip(HistoryEntry {
            at: 7,
            event: HistoryEvent::ShadowDisagreed {
                plugin: "vip-tier".into(),
                version: 2,
                chosen: RepId::new("a").unwrap(),
                shadow_pick: Some(RepId::new("b").unwrap()),
                reason: "vip-tier: wants senior".into(),
            },
        });
        round_trip(HistoryEntry {
            at: 8,
            event: HistoryEvent::ShadowDisagreed {
                plugin: "p".into(),
                version: 1,
                chosen: RepId::new("a").unwrap(),
                shadow_pick: None,
                reason: String::new(),
            },
        });
    }

    #[test]
    fn territories_stored_before_shadow_still_decode() {
        let old = TerritoryV1 {
            id: TerritoryId::new("t").unwrap(),
            name: "T".into(),
            regions: vec![RegionCode::parse("regions[0]", "CN-SH").unwrap()],
            default: true,
            strategy: StrategySpec::Plugin {
                name: "p".into(),
                version: Some(3),
            },
            plugin_config: r#"{"x":1}"#.into(),
            first_touch_sla_secs: 600,
        };
        // Exactly the bytes a version-1 build wrote: its version byte, then its layout.
        let mut bytes = vec![1u8];
        bincode::serde::encode_into_std_write(&old, &mut bytes, config()).unwrap();
        let t: Territory = decode(&bytes).unwrap();
        assert_eq!(t, Territory::from(old));
        assert_eq!(t.shadow, None);
        assert_eq!(t.first_touch_sla_secs, 600);
        // New writes carry version 2 and read back with the shadow.
        let mut t = t;
        t.shadow = Some(ShadowSpec {
            plugin: "s".into(),
            version: 1,
        });
        let written = encode(&t);
        assert_eq!(written[0], 2);
        assert_eq!(decode::<Territory>(&written).unwrap(), t);
        // A truncated old value is reported, not panicked on.
        let err = decode::<Territory>(&bytes[..4]).unwrap_err();
        assert!(
            err.to_string().contains("corrupt territory record"),
            "{err}"
        );
    }

    #[test]
    fn leads_stored_before_repeats_were_counted_still_decode() {
        let lead = LeadInput {
            email: Some("a@example.cn".into()),
            ..Default::default()
        }
        .validate(LeadId::from_ulid(ulid::Ulid::new()), 5)
        .unwrap();
        let old = LeadStateV1 {
            lead,
            status: LeadStatus::Assigned,
            territory: TerritoryId::new("t").unwrap(),
            rep: Some(RepId::new("a").unwrap()),
            stage: Some(Stage::FirstContact),
            assigned_at: Some(6),
            touched_at: Some(7),
            closed_at: None,
            previous_reps: vec![RepId::new("b").unwrap()],
            queue_seq: None,
        };
        // Exactly the bytes a version-1 build wrote: its version byte, then its layout.
        let mut bytes = vec![1u8];
        bincode::serde::encode_into_std_write(&old, &mut bytes, config()).unwrap();
        let state: LeadState = decode(&bytes).unwrap();
        assert_eq!(state, LeadState::from(old.clone()));
        assert_eq!((state.repeats, state.last_repeat_at), (0, None));
        assert_eq!(state.previous_reps, old.previous_reps);
        assert_eq!(state.touched_at, Some(7));
        let written = encode(&state);
        assert_eq!(written[0], 2);
        assert_eq!(decode::<LeadState>(&written).unwrap(), state);
    }

    /// Bytes a version-1 build (`d0663b8`) wrote for the lead built below, so a change
    /// to [`LeadStateV1`] that no longer matches what was stored fails here.
    const LEAD_V1_BYTES: &str = "011a3031484637594154303030303030303030303030303030303141000000010b3133383030303031323334010c41404578616d706c652e636e0105434e2d534800000000000088a34000077b226b223a317dfd0068e5cf8b0100000004656173740103616e6e010001fd0168e5cf8b01000001fd0268e5cf8b010000000102626f00";

    #[test]
    fn a_lead_written_by_a_version_1_build_decodes() {
        let bytes: Vec<u8> = (0..LEAD_V1_BYTES.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&LEAD_V1_BYTES[i..i + 2], 16).unwrap())
            .collect();
        let lead = LeadInput {
            email: Some("A@Example.cn".into()),
            phone: Some("13800001234".into()),
            region: Some("CN-SH".into()),
            purchase_amount: Some(2500.0),
            attributes: Some(serde_json::json!({"k": 1})),
            ..Default::default()
        }
        .validate(
            LeadId::from_ulid(ulid::Ulid::from_parts(1_700_000_000_000, 42)),
            1_700_000_000_000,
        )
        .unwrap();
        let expected = LeadState {
            lead,
            status: LeadStatus::Assigned,
            territory: TerritoryId::new("east").unwrap(),
            rep: Some(RepId::new("ann").unwrap()),
            stage: Some(Stage::FirstContact),
            assigned_at: Some(1_700_000_000_001),
            touched_at: Some(1_700_000_000_002),
            closed_at: None,
            previous_reps: vec![RepId::new("bo").unwrap()],
            queue_seq: None,
            repeats: 0,
            last_repeat_at: None,
        };
        assert_eq!(decode::<LeadState>(&bytes).unwrap(), expected);
    }

    #[test]
    fn unknown_versions_and_garbage_are_reported_not_panicked() {
        let mut bytes = encode(&Assignment {
            rep: RepId::new("a").unwrap(),
            territory: TerritoryId::new("t").unwrap(),
            since: 1,
        });
        bytes[0] = 9;
        let err = decode::<Assignment>(&bytes).unwrap_err();
        assert!(err.to_string().contains("schema version 9"), "{err}");
        assert!(decode::<Assignment>(&[1, 255, 255]).is_err());
        assert!(decode::<Assignment>(&[]).is_err());
    }
}
