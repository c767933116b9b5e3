//! Region codes and the longest-prefix lookup that maps a lead's region to a territory.
//!
//! A region code is a dash-separated path, most general first: `CN-SH-PD` is a
//! district of `CN-SH`, which is part of `CN`. A territory owning `CN-SH` receives
//! every lead whose region is `CN-SH` or below it, unless a territory owns a longer
//! prefix of that region.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::TerritoryId;
use crate::error::ValidationError;

/// A validated, upper-cased region code such as `CN-SH-PD`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RegionCode(String);

/// Whether `s` is a region code as stored: 1–8 segments of 1–16 upper-case ASCII
/// letters or digits, joined by `-`.
fn is_code(s: &str) -> bool {
    s.split('-').count() <= 8
        && s.split('-').all(|seg| {
            (1..=16).contains(&seg.len())
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        })
}

/// `s` and each of its ancestors, longest first: `CN-SH-PD`, `CN-SH`, `CN`.
fn prefixes(s: &str) -> impl Iterator<Item = &str> {
    std::iter::once(s).chain(s.rmatch_indices('-').map(move |(i, _)| &s[..i]))
}

/// Whether one of `regions` is `region` or an ancestor of it, as the region table
/// would match it: a text that is not a code is covered by none.
pub(crate) fn covers(regions: &[RegionCode], region: &str) -> bool {
    is_code(region) && prefixes(region).any(|p| regions.iter().any(|r| r.as_str() == p))
}

/// The longest a lead's region may be, code or not.
pub const MAX_LEAD_REGION_CHARS: usize = 64;

/// A lead's region as stored: the upper-cased code when it is one (`cn-sh` →
/// `CN-SH`), else the text as given, trimmed. Text that is not a code is kept, and
/// matches no territory: the lead goes to the default one, as API.md has it for an
/// unmatched region. Only an empty region (`None`), one over
/// [`MAX_LEAD_REGION_CHARS`] or one with control characters is refused.
pub fn lead_region(s: &str) -> Result<Option<String>, ValidationError> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    if s.chars().count() > MAX_LEAD_REGION_CHARS || s.chars().any(char::is_control) {
        return Err(ValidationError::field(
            "region",
            format!(
                "must be at most {MAX_LEAD_REGION_CHARS} characters, without control characters"
            ),
        )
        .with_code("invalid_region"));
    }
    let code = s.to_ascii_uppercase();
    Ok(Some(if is_code(&code) { code } else { s.to_string() }))
}

impl RegionCode {
    /// Validates `s`: 1–8 segments of 1–16 ASCII letters or digits, joined by `-`.
    pub fn parse(field: &str, s: &str) -> Result<Self, ValidationError> {
        let code = s.trim().to_ascii_uppercase();
        if is_code(&code) {
            Ok(Self(code))
        } else {
            Err(ValidationError::field(
                field,
                format!("{s:?} is not a region code: use up to 8 dash-separated segments of letters and digits, e.g. CN-SH-PD"),
            )
            .with_code("invalid_region"))
        }
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// This code and each of its ancestors, longest first: `CN-SH-PD`, `CN-SH`, `CN`.
    pub fn prefixes(&self) -> impl Iterator<Item = &str> {
        prefixes(&self.0)
    }
}

impl std::borrow::Borrow<str> for RegionCode {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RegionCode {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse("region", &s)
    }
}

impl From<RegionCode> for String {
    fn from(r: RegionCode) -> String {
        r.0
    }
}

impl fmt::Display for RegionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which territory owns which region prefix, plus the default territory.
#[derive(Debug, Default, Clone)]
pub struct RegionTable {
    owners: HashMap<RegionCode, TerritoryId>,
    default: Option<TerritoryId>,
}

impl RegionTable {
    /// Records that `territory` owns `regions` (replacing what it owned before) and
    /// whether it is the default. Fails if another territory owns one of the regions or
    /// is already the default; the table is unchanged then.
    pub fn assign(
        &mut self,
        territory: &TerritoryId,
        regions: &[RegionCode],
        is_default: bool,
    ) -> Result<(), String> {
        for region in regions {
            if let Some(owner) = self.owners.get(region).filter(|o| *o != territory) {
                return Err(format!(
                    "region {region} already belongs to territory {owner}"
                ));
            }
        }
        if is_default && let Some(current) = self.default.as_ref().filter(|d| *d != territory) {
            return Err(format!(
                "territory {current} is already the default; unset it first"
            ));
        }
        self.owners.retain(|_, owner| owner != territory);
        for region in regions {
            self.owners.insert(region.clone(), territory.clone());
        }
        if is_default {
            self.default = Some(territory.clone());
        } else if self.default.as_ref() == Some(territory) {
            self.default = None;
        }
        Ok(())
    }

    /// Finds the territory for a lead's region (see [`lead_region`]): its longest owned
    /// prefix when it is a code, else the default.
    pub fn resolve(&self, region: Option<&str>) -> Option<&TerritoryId> {
        region
            .filter(|r| is_code(r))
            .and_then(|r| prefixes(r).find_map(|p| self.owners.get(p)))
            .or(self.default.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(s: &str) -> RegionCode {
        RegionCode::parse("region", s).unwrap()
    }

    fn tid(s: &str) -> TerritoryId {
        TerritoryId::new(s).unwrap()
    }

    #[test]
    fn a_region_is_covered_by_itself_and_its_ancestors_only() {
        let regions = [code("CN-SH"), code("CN-JS-NJ")];
        for covered in ["CN-SH", "CN-SH-PD", "CN-JS-NJ-GL"] {
            assert!(covers(&regions, covered), "{covered}");
        }
        for outside in ["CN", "CN-SHX", "CN-JS", "Shanghai", "cn-sh"] {
            assert!(!covers(&regions, outside), "{outside}");
        }
    }

    #[test]
    fn region_codes_are_validated_and_upper_cased() {
        assert_eq!(code("cn-sh-pd").as_str(), "CN-SH-PD");
        for bad in [
            "",
            "CN--SH",
            "CN-",
            "CN SH",
            "CN-上海",
            &"A-".repeat(9),
            &"X".repeat(17),
        ] {
            let err = RegionCode::parse("region", bad).unwrap_err();
            assert_eq!(err.code, "invalid_region", "{bad:?}");
        }
    }

    #[test]
    fn longest_prefix_wins_then_default() {
        let mut table = RegionTable::default();
        table.assign(&tid("china"), &[code("CN")], false).unwrap();
        table
            .assign(&tid("east-sh"), &[code("CN-SH")], false)
            .unwrap();
        table.assign(&tid("fallback"), &[], true).unwrap();

        assert_eq!(table.resolve(Some("CN-SH-PD")), Some(&tid("east-sh")));
        assert_eq!(table.resolve(Some("CN-SH")), Some(&tid("east-sh")));
        assert_eq!(table.resolve(Some("CN-JS")), Some(&tid("china")));
        // A prefix matches whole segments only.
        assert_eq!(table.resolve(Some("CN-SHX")), Some(&tid("china")));
        assert_eq!(table.resolve(Some("US-CA")), Some(&tid("fallback")));
        assert_eq!(table.resolve(None), Some(&tid("fallback")));
    }

    #[test]
    fn a_lead_region_that_is_no_code_is_kept_and_goes_to_the_default() {
        let mut table = RegionTable::default();
        table.assign(&tid("china"), &[code("CN")], false).unwrap();
        table.assign(&tid("fallback"), &[], true).unwrap();
        assert_eq!(lead_region(" cn-sh ").unwrap().as_deref(), Some("CN-SH"));
        for (given, kept) in [
            ("Shanghai, China", "Shanghai, China"),
            ("CN/SH", "CN/SH"),
            (" CN-SH PD ", "CN-SH PD"),
            ("CN--SH", "CN--SH"),
            ("上海", "上海"),
        ] {
            let region = lead_region(given).unwrap();
            assert_eq!(region.as_deref(), Some(kept));
            // `CN-SH PD` starts like a code of `china`, but only a code matches.
            assert_eq!(table.resolve(region.as_deref()), Some(&tid("fallback")));
        }
        assert_eq!(lead_region("  ").unwrap(), None);
        for bad in ["CN\nSH".to_string(), "X".repeat(MAX_LEAD_REGION_CHARS + 1)] {
            assert_eq!(lead_region(&bad).unwrap_err().code, "invalid_region");
        }
        assert!(lead_region(&"上".repeat(MAX_LEAD_REGION_CHARS)).is_ok());
    }

    #[test]
    fn no_match_and_no_default_resolves_to_nothing() {
        let mut table = RegionTable::default();
        table
            .assign(&tid("east-sh"), &[code("CN-SH")], false)
            .unwrap();
        assert_eq!(table.resolve(Some("CN-JS")), None);
        assert_eq!(table.resolve(None), None);
    }

    #[test]
    fn conflicting_claims_are_refused_and_change_nothing() {
        let mut table = RegionTable::default();
        table.assign(&tid("a"), &[code("CN-SH")], true).unwrap();
        assert!(
            table
                .assign(&tid("b"), &[code("CN-JS"), code("CN-SH")], false)
                .is_err()
        );
        assert!(table.assign(&tid("b"), &[code("CN-JS")], true).is_err());
        assert_eq!(table.resolve(Some("CN-JS")), Some(&tid("a")));
        // Re-assigning a territory replaces its old regions.
        table.assign(&tid("a"), &[code("CN-JS")], false).unwrap();
        assert_eq!(table.resolve(Some("CN-SH")), None);
    }
}
