//! De-duplication: the normalized contact keys of a lead, and the index of open leads.
//!
//! A lead is a duplicate when its normalized phone, e-mail or external id equals that
//! of a lead still open. The store's committer is the only writer of the index (it
//! applies every change in order), so a check there is authoritative; intake reads
//! the index first to skip routing for the common, non-racing duplicate.

use std::collections::HashMap;
use std::sync::RwLock;

use crate::domain::{Lead, LeadId};

/// Normalizes a phone number: digits only, and the Chinese country code (`+86` or
/// `0086`) dropped from an 11-digit mobile number.
pub fn normalize_phone(raw: &str) -> String {
    let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
    let national = if digits.len() == 15 && digits.starts_with("0086") {
        &digits[4..]
    } else if digits.len() == 13 && digits.starts_with("86") {
        &digits[2..]
    } else {
        &digits[..]
    };
    if national.len() == 11 && national.starts_with('1') {
        national.to_string()
    } else {
        digits
    }
}

/// Normalizes an e-mail address: trimmed and lower-cased.
pub fn normalize_email(raw: &str) -> String {
    raw.trim().to_lowercase()
}

/// The index keys of a lead, each prefixed with its kind so kinds never collide.
pub fn keys(lead: &Lead) -> Vec<String> {
    let mut keys = Vec::with_capacity(3);
    if let Some(phone) = &lead.contact.phone {
        keys.push(format!("phone:{}", normalize_phone(phone)));
    }
    if let Some(email) = &lead.contact.email {
        keys.push(format!("email:{}", normalize_email(email)));
    }
    if let Some(x) = &lead.external_id {
        keys.push(format!("external_id:{}", x.trim()));
    }
    keys
}

/// The kind of a key made by [`keys`] (`phone`, `email`, `external_id`).
pub fn kind(key: &str) -> &str {
    key.split_once(':').map_or(key, |(k, _)| k)
}

/// Normalized keys of open leads → lead id.
#[derive(Debug, Default)]
pub struct DedupeIndex {
    map: RwLock<HashMap<String, LeadId>>,
}

impl DedupeIndex {
    /// The open lead sharing any of `keys`, with the kinds that matched.
    pub fn lookup(&self, keys: &[String]) -> Option<(LeadId, Vec<String>)> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        let mut hit: Option<(LeadId, Vec<String>)> = None;
        for key in keys {
            if let Some(&id) = map.get(key) {
                match &mut hit {
                    None => hit = Some((id, vec![kind(key).to_string()])),
                    Some((first, kinds)) if *first == id => kinds.push(kind(key).to_string()),
                    Some(_) => {}
                }
            }
        }
        hit
    }

    /// Applies committed changes: `added` keys now point at their lead, `removed` keys
    /// are gone.
    pub fn apply(&self, added: &[(String, LeadId)], removed: &[String]) {
        if added.is_empty() && removed.is_empty() {
            return;
        }
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        for key in removed {
            map.remove(key);
        }
        for (key, id) in added {
            map.insert(key.clone(), *id);
        }
    }

    /// Replaces every key with `entries` (the store's, after it was reopened).
    pub fn replace(&self, entries: &[(String, LeadId)]) {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        map.clear();
        map.extend(entries.iter().cloned());
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.map.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_normalize_to_the_national_mobile_number() {
        for raw in [
            "+86 138 0000 1234",
            "0086-138-0000-1234",
            "13800001234",
            "(138) 0000.1234",
            "86 13800001234",
        ] {
            assert_eq!(normalize_phone(raw), "13800001234", "{raw}");
        }
        // Landlines and other countries keep all their digits.
        assert_eq!(normalize_phone("+86 21 6433 1234"), "862164331234");
        assert_eq!(normalize_phone("+1 (415) 555-0100"), "14155550100");
    }

    #[test]
    fn emails_ignore_case_and_padding() {
        assert_eq!(normalize_email("  Wang@Example.CN "), "wang@example.cn");
    }

    #[test]
    fn the_index_reports_every_matching_kind_of_one_lead() {
        let index = DedupeIndex::default();
        let a = LeadId::from_ulid(ulid::Ulid::new());
        index.apply(&[("phone:1".into(), a), ("email:x@y.z".into(), a)], &[]);
        let (hit, kinds) = index
            .lookup(&[
                "email:x@y.z".into(),
                "phone:1".into(),
                "external_id:9".into(),
            ])
            .unwrap();
        assert_eq!(hit, a);
        assert_eq!(kinds, vec!["email", "phone"]);
        index.apply(&[], &["phone:1".into(), "email:x@y.z".into()]);
        assert!(index.lookup(&["phone:1".into()]).is_none());
        assert!(index.is_empty());
    }
}
