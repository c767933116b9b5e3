//! Sales reps: who they are, where they work, what they can take.

use serde::{Deserialize, Serialize};

use super::{RepId, TerritoryId, check_tag, check_text};
use crate::error::ValidationError;

/// Whether a rep takes new leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RepStatus {
    /// Takes new leads while under capacity.
    #[default]
    Available,
    /// Temporarily takes no new leads; keeps open ones.
    Away,
    /// Takes no new leads; keeps open ones.
    Offline,
}

/// A rep as configured by sales operations; load lives in the rep's actor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rep {
    /// Client-chosen id.
    pub id: RepId,
    /// Display name.
    pub name: String,
    /// Territories the rep takes leads in.
    pub territories: Vec<TerritoryId>,
    /// Industry tags the rep is skilled in, lower-cased.
    pub skills: Vec<String>,
    /// Seniority tag, lower-cased (`junior`, `senior`, …).
    pub tier: String,
    /// Most open leads the rep may hold.
    pub capacity: u32,
    /// Whether the rep takes new leads.
    pub status: RepStatus,
    /// Relative share of new leads (1.0 = normal, 2.0 = twice as many).
    pub weight: f64,
}

/// Highest capacity accepted; far above any human's workload, low enough to catch typos.
pub const MAX_CAPACITY: u32 = 100_000;

/// The body clients send to create or replace a rep.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RepInput {
    /// Display name.
    pub name: String,
    /// Territory ids.
    #[serde(default)]
    pub territories: Vec<String>,
    /// Industry tags.
    #[serde(default)]
    pub skills: Vec<String>,
    /// Seniority tag; `junior` when absent.
    #[serde(default)]
    pub tier: Option<String>,
    /// Most open leads; 0 means the rep takes none.
    pub capacity: u32,
    /// `available` when absent.
    #[serde(default)]
    pub status: RepStatus,
    /// Share of new leads; 1.0 when absent.
    #[serde(default)]
    pub weight: Option<f64>,
}

impl RepInput {
    /// Validates the input into a [`Rep`] with the given id.
    pub fn validate(self, id: RepId) -> Result<Rep, ValidationError> {
        let name = check_text("name", &self.name, 200)?;
        if self.territories.len() > 256 {
            return Err(ValidationError::field(
                "territories",
                "at most 256 territories",
            ));
        }
        let mut territories = Vec::with_capacity(self.territories.len());
        for (i, t) in self.territories.iter().enumerate() {
            let t = TerritoryId::new(t.as_str())
                .map_err(|e| ValidationError::field(format!("territories[{i}]"), e.message))?;
            if !territories.contains(&t) {
                territories.push(t);
            }
        }
        if self.skills.len() > 64 {
            return Err(ValidationError::field("skills", "at most 64 skills"));
        }
        let mut skills = Vec::with_capacity(self.skills.len());
        for (i, s) in self.skills.iter().enumerate() {
            let s = check_tag(&format!("skills[{i}]"), s)?;
            if !skills.contains(&s) {
                skills.push(s);
            }
        }
        let tier = check_tag("tier", self.tier.as_deref().unwrap_or("junior"))?;
        if self.capacity > MAX_CAPACITY {
            return Err(ValidationError::field(
                "capacity",
                format!("must be at most {MAX_CAPACITY}"),
            ));
        }
        let weight = self.weight.unwrap_or(1.0);
        if !(weight.is_finite() && weight > 0.0 && weight <= 1000.0) {
            return Err(ValidationError::field(
                "weight",
                "must be a number greater than 0 and at most 1000",
            ));
        }
        Ok(Rep {
            id,
            name,
            territories,
            skills,
            tier,
            capacity: self.capacity,
            status: self.status,
            weight,
        })
    }
}

impl From<&Rep> for RepInput {
    fn from(rep: &Rep) -> Self {
        RepInput {
            name: rep.name.clone(),
            territories: rep.territories.iter().map(|t| t.to_string()).collect(),
            skills: rep.skills.clone(),
            tier: Some(rep.tier.clone()),
            capacity: rep.capacity,
            status: rep.status,
            weight: Some(rep.weight),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> RepInput {
        RepInput {
            name: "Li Wei".into(),
            territories: vec!["east-sh".into()],
            skills: vec!["Hospital-Lab".into()],
            capacity: 5,
            ..Default::default()
        }
    }

    #[test]
    fn defaults_and_normalisation() {
        let rep = input().validate(RepId::new("r1").unwrap()).unwrap();
        assert_eq!(rep.skills, vec!["hospital-lab"]);
        assert_eq!(rep.tier, "junior");
        assert_eq!(rep.weight, 1.0);
        assert_eq!(rep.status, RepStatus::Available);
    }

    #[test]
    fn bad_fields_are_named() {
        let id = RepId::new("r1").unwrap();
        let cases: Vec<(RepInput, &str)> = vec![
            (
                RepInput {
                    name: " ".into(),
                    ..input()
                },
                "name",
            ),
            (
                RepInput {
                    weight: Some(0.0),
                    ..input()
                },
                "weight",
            ),
            (
                RepInput {
                    weight: Some(f64::NAN),
                    ..input()
                },
                "weight",
            ),
            (
                RepInput {
                    capacity: MAX_CAPACITY + 1,
                    ..input()
                },
                "capacity",
            ),
            (
                RepInput {
                    skills: vec!["a b".into()],
                    ..input()
                },
                "skills[0]",
            ),
            (
                RepInput {
                    territories: vec!["bad id".into()],
                    ..input()
                },
                "territories[0]",
            ),
            (
                RepInput {
                    tier: Some("".into()),
                    ..input()
                },
                "tier",
            ),
        ];
        for (bad, field) in cases {
            assert_eq!(bad.validate(id.clone()).unwrap_err().field, field);
        }
    }

    #[test]
    fn unknown_json_fields_are_rejected() {
        let err = serde_json::from_str::<RepInput>(r#"{"name":"a","capacity":1,"salary":9}"#)
            .unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }
}
