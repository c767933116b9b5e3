//! De-duplication: the normalized contact keys of a lead, and how a set of keys finds
//! the open lead sharing them.
//!
//! A lead is a duplicate when its normalized phone, e-mail or external id equals that
//! of a lead still open. The index is the store's `dedupe` tree (key → open lead),
//! read in place: nothing is loaded at start, so start-up time does not grow with the
//! number of open leads. The committer is its only writer and checks inside its
//! transaction, so its answer is authoritative; intake reads the tree first to skip
//! routing for the common, non-racing duplicate.
//!
//! Most leads are new, and a lookup that finds nothing still walks the tree. A
//! [`KeyFilter`] answers "certainly not there" for them without touching the store.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::domain::{Lead, LeadId};
use crate::error::Result;

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

/// The open lead sharing any of `keys`, with the kinds that matched, given each key's
/// `owner`. Keys that point at different leads count for the first one only.
pub(crate) fn find<E>(
    keys: &[String],
    mut owner: impl FnMut(&str) -> std::result::Result<Option<LeadId>, E>,
) -> std::result::Result<Option<(LeadId, Vec<String>)>, E> {
    let mut hit: Option<(LeadId, Vec<String>)> = None;
    for key in keys {
        let Some(id) = owner(key)? else { continue };
        match &mut hit {
            None => hit = Some((id, vec![kind(key).to_string()])),
            Some((first, kinds)) if *first == id => kinds.push(kind(key).to_string()),
            Some(_) => {}
        }
    }
    Ok(hit)
}

/// [`find`] with an error type the engine uses.
pub(crate) type Found = Result<Option<(LeadId, Vec<String>)>>;

/// Bits in a [`KeyFilter`]: 8 MiB. One false "maybe" in about 7,000 at a million keys,
/// one in 50 at five million; past that it slowly stops saving lookups, never more.
const FILTER_BITS: u64 = 1 << 26;
/// Bit positions per key.
const FILTER_HASHES: u64 = 7;

/// A Bloom filter over every de-duplication key stored before this start (loaded in
/// the background) and written since (by the committer, as it writes them). It only
/// grows: a closed lead's key stays, and costs a store lookup when it comes back.
///
/// Until loaded it answers "maybe" to everything. Once loaded it holds a superset of
/// the stored keys: a key it lacks is certainly not stored, since every writer of a
/// key adds it here first.
pub(crate) struct KeyFilter {
    words: Box<[AtomicU64]>,
    loaded: AtomicBool,
}

impl KeyFilter {
    /// An empty filter, not loaded yet.
    pub(crate) fn new() -> KeyFilter {
        KeyFilter {
            words: (0..FILTER_BITS / 64).map(|_| AtomicU64::new(0)).collect(),
            loaded: AtomicBool::new(false),
        }
    }

    fn positions(key: &[u8]) -> impl Iterator<Item = u64> {
        // Double hashing: k positions from one 64-bit hash.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut hasher);
        let h = hasher.finish();
        let (a, b) = (h & 0xffff_ffff, (h >> 32) | 1);
        (0..FILTER_HASHES).map(move |i| a.wrapping_add(b.wrapping_mul(i)) % FILTER_BITS)
    }

    /// Adds a key.
    pub(crate) fn insert(&self, key: &[u8]) {
        for p in Self::positions(key) {
            self.words[(p / 64) as usize].fetch_or(1 << (p % 64), Ordering::Relaxed);
        }
    }

    /// Marks every stored key as added: from now on, "no" means no.
    pub(crate) fn mark_loaded(&self) {
        self.loaded.store(true, Ordering::Release);
    }

    /// False only if `key` is certainly not stored.
    pub(crate) fn may_contain(&self, key: &[u8]) -> bool {
        if !self.loaded.load(Ordering::Acquire) {
            return true;
        }
        Self::positions(key)
            .all(|p| self.words[(p / 64) as usize].load(Ordering::Relaxed) & (1 << (p % 64)) != 0)
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
    fn the_filter_says_maybe_until_loaded_then_never_misses_a_key() {
        let filter = KeyFilter::new();
        assert!(
            filter.may_contain(b"phone:1"),
            "not loaded: everything is a maybe"
        );
        let keys: Vec<String> = (0..100_000).map(|n| format!("phone:{n}")).collect();
        for key in &keys {
            filter.insert(key.as_bytes());
        }
        filter.mark_loaded();
        assert!(keys.iter().all(|k| filter.may_contain(k.as_bytes())));
        let false_maybes = (0..100_000)
            .filter(|n| filter.may_contain(format!("email:{n}").as_bytes()))
            .count();
        assert!(false_maybes < 10, "{false_maybes} false maybes in 100,000");
    }

    #[test]
    fn a_match_reports_every_kind_of_the_first_lead_it_names() {
        let (a, b) = (
            LeadId::from_ulid(ulid::Ulid::new()),
            LeadId::from_ulid(ulid::Ulid::new()),
        );
        let owners = std::collections::HashMap::from([
            ("phone:1".to_string(), a),
            ("email:x@y.z".to_string(), a),
            ("external_id:9".to_string(), b),
        ]);
        let owner = |k: &str| Ok::<_, ()>(owners.get(k).copied());
        let keys = |ks: &[&str]| ks.iter().map(|k| k.to_string()).collect::<Vec<_>>();
        let (hit, kinds) = find(&keys(&["email:x@y.z", "external_id:9", "phone:1"]), owner)
            .unwrap()
            .unwrap();
        assert_eq!(hit, a);
        assert_eq!(kinds, vec!["email", "phone"]);
        assert_eq!(find(&keys(&["phone:2"]), owner).unwrap(), None);
    }
}
