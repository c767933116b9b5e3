//! Reps: the body of `PUT /admin/reps/{rep_id}` and the rep view with its load.

use leadroute_engine::RepSnapshot;
use leadroute_engine::domain::{RepInput, RepStatus};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::rfc3339;

/// Whether a rep takes new leads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RepStatusView {
    /// Takes new leads while under capacity.
    #[default]
    Available,
    /// Takes no new leads for now; keeps open ones.
    Away,
    /// Takes no new leads; keeps open ones.
    Offline,
}

impl From<RepStatus> for RepStatusView {
    fn from(s: RepStatus) -> Self {
        match s {
            RepStatus::Available => RepStatusView::Available,
            RepStatus::Away => RepStatusView::Away,
            RepStatus::Offline => RepStatusView::Offline,
        }
    }
}

impl From<RepStatusView> for RepStatus {
    fn from(s: RepStatusView) -> Self {
        match s {
            RepStatusView::Available => RepStatus::Available,
            RepStatusView::Away => RepStatus::Away,
            RepStatusView::Offline => RepStatus::Offline,
        }
    }
}

/// A rep as sent to `PUT /admin/reps/{rep_id}`; replaces the whole rep (load is kept).
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "name": "Li Wei", "territories": ["east-sh"], "skills": ["hospital-lab", "imaging"],
    "tier": "senior", "capacity": 20, "status": "available"
}))]
pub struct RepBody {
    /// Display name.
    pub name: String,
    /// Territories the rep takes leads in; each must exist.
    #[serde(default)]
    pub territories: Vec<String>,
    /// Industry tags the rep is skilled in.
    #[serde(default)]
    pub skills: Vec<String>,
    /// Seniority tag (`junior` when absent).
    #[serde(default)]
    pub tier: Option<String>,
    /// Most open leads; may be set below the current load (no new leads until it drops).
    pub capacity: u32,
    /// `available` when absent.
    #[serde(default)]
    pub status: RepStatusView,
    /// Relative share of new leads (1.0 when absent).
    #[serde(default)]
    pub weight: Option<f64>,
}

impl From<RepBody> for RepInput {
    fn from(b: RepBody) -> Self {
        RepInput {
            name: b.name,
            territories: b.territories,
            skills: b.skills,
            tier: b.tier,
            capacity: b.capacity,
            status: b.status.into(),
            weight: b.weight,
        }
    }
}

/// A rep with its current load.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct RepView {
    /// The rep's id.
    pub rep_id: String,
    /// Display name.
    pub name: String,
    /// Territories.
    pub territories: Vec<String>,
    /// Industry tags, lower-cased.
    pub skills: Vec<String>,
    /// Seniority tag.
    pub tier: String,
    /// Most open leads.
    pub capacity: u32,
    /// Whether the rep takes new leads.
    pub status: RepStatusView,
    /// Share of new leads.
    pub weight: f64,
    /// Open leads now (including reservations not yet durable).
    pub load: u32,
    /// Whether the rep can take one more lead now.
    pub has_room: bool,
    /// When the rep last got a lead (RFC 3339).
    pub last_assigned_at: Option<String>,
}

impl From<RepSnapshot> for RepView {
    fn from(s: RepSnapshot) -> Self {
        let has_room = s.has_room();
        let rep = &s.rep;
        RepView {
            rep_id: rep.id.to_string(),
            name: rep.name.clone(),
            territories: rep.territories.iter().map(ToString::to_string).collect(),
            skills: rep.skills.clone(),
            tier: rep.tier.clone(),
            capacity: rep.capacity,
            status: rep.status.into(),
            weight: rep.weight,
            load: s.load,
            has_room,
            last_assigned_at: s.last_assigned_at.map(rfc3339),
        }
    }
}
