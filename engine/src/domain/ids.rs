//! Identifiers: client-chosen slugs for reps and territories, time-ordered ULIDs for leads.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use ulid::Ulid;

use crate::error::ValidationError;

fn check_slug(kind: &str, s: &str) -> Result<(), ValidationError> {
    let ok = (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ValidationError::field(
            "id",
            format!("{kind} id {s:?} must be 1-64 characters of A-Z a-z 0-9 _ . -"),
        )
        .with_code("invalid_id"))
    }
}

macro_rules! slug_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates `s` as a slug (`[A-Za-z0-9_.-]{1,64}`).
            pub fn new(s: impl Into<String>) -> Result<Self, ValidationError> {
                let s = s.into();
                check_slug($kind, &s)?;
                Ok(Self(s))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValidationError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl FromStr for $name {
            type Err = ValidationError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

slug_id!(
    /// A rep's client-chosen id, e.g. `rep-7`.
    RepId,
    "rep"
);
slug_id!(
    /// A territory's client-chosen id, e.g. `east-sh`.
    TerritoryId,
    "territory"
);

slug_id!(
    /// A webhook subscription's client-chosen id, e.g. `crm-sync`.
    WebhookId,
    "webhook"
);

/// A lead's id: a ULID, so ids sort by arrival time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LeadId(Ulid);

impl LeadId {
    /// Wraps a ULID.
    pub fn from_ulid(u: Ulid) -> Self {
        Self(u)
    }

    /// The 16-byte big-endian form used as a store key; sorts like the id.
    pub fn to_key(self) -> [u8; 16] {
        self.0.to_bytes()
    }

    /// Reads a key written by [`LeadId::to_key`].
    pub fn from_key(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; 16] = bytes.get(..16)?.try_into().ok()?;
        Some(Self(Ulid::from_bytes(arr)))
    }
}

impl TryFrom<String> for LeadId {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<LeadId> for String {
    fn from(id: LeadId) -> String {
        id.to_string()
    }
}

impl FromStr for LeadId {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ulid::from_string(s).map(Self).map_err(|_| {
            ValidationError::field("lead_id", format!("{s:?} is not a lead id"))
                .with_code("invalid_id")
        })
    }
}

impl fmt::Display for LeadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_accept_the_documented_alphabet_only() {
        assert!(RepId::new("rep-7_a.b").is_ok());
        assert!(RepId::new("").is_err());
        assert!(RepId::new("a".repeat(65)).is_err());
        assert!(RepId::new("rep 7").is_err());
        assert!(TerritoryId::new("东").is_err());
        assert_eq!(RepId::new("").unwrap_err().code, "invalid_id");
    }

    #[test]
    fn lead_ids_round_trip_through_text_and_keys() {
        let id = LeadId::from_ulid(Ulid::new());
        assert_eq!(id.to_string().parse::<LeadId>().unwrap(), id);
        assert_eq!(LeadId::from_key(&id.to_key()).unwrap(), id);
        assert!("not-a-ulid".parse::<LeadId>().is_err());
    }
}
