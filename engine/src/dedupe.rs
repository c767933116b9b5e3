//! De-duplication: the normalized contact keys of a lead, and how a set of keys finds
//! the open lead sharing them.
//!
//! A lead is a duplicate when its normalized phone, e-mail or external id equals that
//! of a lead still open. The index of those keys (`Index`) is held in memory.

use std::hash::{BuildHasher, RandomState};
use std::sync::RwLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use hashbrown::{HashTable, hash_table};

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

/// The open lead sharing any of `keys`, with the kinds that matched, given each key's
/// `owner`. Keys that point at different leads count for the first one only.
pub(crate) fn find(
    keys: &[String],
    mut owner: impl FnMut(&str) -> Option<LeadId>,
) -> Option<(LeadId, Vec<String>)> {
    let mut hit: Option<(LeadId, Vec<String>)> = None;
    for key in keys {
        let Some(id) = owner(key) else { continue };
        match &mut hit {
            None => hit = Some((id, vec![kind(key).to_string()])),
            Some((first, kinds)) if *first == id => kinds.push(kind(key).to_string()),
            Some(_) => {}
        }
    }
    hit
}

/// The de-duplication index: every contact key of an open lead, and that lead.
///
/// Lookups are in memory. The store keeps each open lead's keys under the lead's id
/// (`lead_keys`), from which the index is rebuilt when the store opens
/// (`Store::rebuild_dedupe`). Keyed by contact, as an index in the store would be,
/// the keys scatter as phone numbers and e-mail addresses do: in sled each landed on
/// a page of its own, copied and written again, 43% of a lead's storage time
/// (`benches/README.md`, "Storage designs"). Under the lead's id they go where the
/// lead's other records go, after the last one written. Memory grows with the open
/// leads: about 300 bytes for a lead with all three keys (measured with jemalloc's
/// `stats.allocated` over a million such leads, when keys were kept as `String`s with
/// whatever spare room they were built with; an entry is the same size now, and a
/// key has no spare room). Closed leads cost nothing.
///
/// The committer is its only writer. It applies each transaction's keys once sled
/// has taken the transaction, so the index never runs ahead of what a read of the
/// store would see. Intake reads it first to skip routing for the common,
/// non-racing duplicate; the committer's own check is the authoritative one.
///
/// Growing a table moves every entry to a new one, under the table's lock. Two
/// choices keep that short:
/// - The keys are spread over [`SHARDS`] tables, each behind its own lock: one table
///   of 1.8 million keys took 355 ms to grow (measured, release build), a stop for
///   every intake.
/// - Each entry keeps its key's hash. Without it, a growing table hashes every key
///   again, and each key's bytes are a cache miss away. The shards fill evenly, so
///   they all grow within a few seconds of each other: at 3.7 million keys that
///   hashing took over a second of the committer's time, and the open loop of
///   `loadgen` saw answers of 100–200 ms (`benches/README.md`, "the open loop's
///   stall found").
pub(crate) struct Index {
    /// Hashes each key once, for its shard and its place in the shard's table.
    /// SipHash with random keys: contact details are chosen by whoever sends leads,
    /// and a hash they could predict would let them pile keys into one bucket.
    hasher: RandomState,
    shards: Box<[Shard]>,
    /// Keys held, kept as they change: the committer reads it after every group, and
    /// counting would lock every shard.
    len: AtomicUsize,
}

/// A key of an open lead.
struct Entry {
    /// The key's hash, kept so that growing the table does not hash the key again.
    hash: u64,
    key: Box<str>,
    lead: LeadId,
}

/// One shard's table: key → open lead.
type Owners = HashTable<Entry>;

/// One shard, alone on its cache lines: neighbours locked by threads on other cores
/// would otherwise contend for the same line.
#[derive(Default)]
#[repr(align(128))]
struct Shard(RwLock<Owners>);

/// How many tables the index is split into.
const SHARDS: usize = 256;

/// Where in a key's hash its shard is read. A table finds a bucket by the hash's low
/// bits and tags it with the top seven, so the shard comes from bits that neither
/// uses: every key of a shard shares those bits, and sharing the table's would crowd
/// a shard's keys into a fraction of its buckets or make every tag the same.
const SHARD_BITS: u32 = 32;

// The shard's bits lie above any bucket index of a table under 2^32 buckets and below
// the tag's seven bits (57–63).
const _: () = assert!(SHARD_BITS >= 32 && SHARD_BITS + SHARDS.trailing_zeros() <= 57);

impl Default for Index {
    fn default() -> Index {
        Index::with_hasher(RandomState::new())
    }
}

impl Index {
    fn with_hasher(hasher: RandomState) -> Index {
        Index {
            hasher,
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            len: AtomicUsize::new(0),
        }
    }

    /// An empty index whose keys fall in the same shards as this one's, with room for
    /// about `keys` keys before any shard grows.
    pub(crate) fn empty_like(&self, keys: usize) -> Index {
        let index = Index::with_hasher(self.hasher.clone());
        for shard in &index.shards {
            write(&shard.0).reserve(keys.div_ceil(SHARDS), |entry| entry.hash);
        }
        index
    }

    /// A key's hash, and the shard it belongs to.
    fn locate(&self, key: &str) -> (u64, &RwLock<Owners>) {
        let hash = self.hasher.hash_one(key);
        (hash, &self.shards[(hash >> SHARD_BITS) as usize % SHARDS].0)
    }

    /// The open lead a key points at.
    pub(crate) fn owner(&self, key: &str) -> Option<LeadId> {
        let (hash, shard) = self.locate(key);
        read(shard)
            .find(hash, |entry| &*entry.key == key)
            .map(|entry| entry.lead)
    }

    /// The open lead sharing any of `keys`, with the kinds that matched (see [`find`]).
    pub(crate) fn find(&self, keys: &[String]) -> Option<(LeadId, Vec<String>)> {
        find(keys, |key| self.owner(key))
    }

    /// Points `key` at `lead` (`Some`) or drops it (`None`).
    pub(crate) fn set(&self, key: String, lead: Option<LeadId>) {
        let (hash, shard) = self.locate(&key);
        match lead {
            Some(lead) => {
                // Trimmed to its length before the lock is taken.
                let key = key.into_boxed_str();
                let mut owners = write(shard);
                match owners.entry(hash, |entry| entry.key == key, |entry| entry.hash) {
                    hash_table::Entry::Occupied(mut held) => held.get_mut().lead = lead,
                    hash_table::Entry::Vacant(free) => {
                        free.insert(Entry { hash, key, lead });
                        self.len.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            None => {
                let mut owners = write(shard);
                if let Ok(held) = owners.find_entry(hash, |entry| *entry.key == *key) {
                    held.remove();
                    self.len.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Points `key` at `lead` unless an older lead (a smaller id) has it. If two leads
    /// claim it, the answer names the key's kind, the newer lead and the older, which
    /// keeps it: the same whatever the order of claims.
    pub(crate) fn claim(&self, key: String, lead: LeadId) -> Option<(String, LeadId, LeadId)> {
        let (hash, shard) = self.locate(&key);
        let key = key.into_boxed_str();
        let mut owners = write(shard);
        match owners.entry(hash, |entry| entry.key == key, |entry| entry.hash) {
            hash_table::Entry::Vacant(free) => {
                free.insert(Entry { hash, key, lead });
                self.len.fetch_add(1, Ordering::Relaxed);
                None
            }
            hash_table::Entry::Occupied(mut held) => {
                let first = held.get().lead;
                let kind = kind(&key).to_string();
                if first <= lead {
                    Some((kind, lead, first))
                } else {
                    held.get_mut().lead = lead;
                    Some((kind, first, lead))
                }
            }
        }
    }

    /// Takes every key of `fresh`, made by [`Index::empty_like`], in place of this
    /// index's. Shard by shard: a reader meanwhile may find a key in either.
    pub(crate) fn replace(&self, fresh: Index) {
        for (mine, theirs) in self.shards.iter().zip(fresh.shards) {
            *write(&mine.0) = theirs.0.into_inner().unwrap_or_else(|e| e.into_inner());
        }
        self.len.store(fresh.len.into_inner(), Ordering::Relaxed);
    }

    /// How many keys it holds.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }
}

// A panic while a shard is locked leaves whole entries only (an insert or a remove
// is done or not), so a poisoned lock is still good to use.

fn read(shard: &RwLock<Owners>) -> std::sync::RwLockReadGuard<'_, Owners> {
    shard.read().unwrap_or_else(|e| e.into_inner())
}

fn write(shard: &RwLock<Owners>) -> std::sync::RwLockWriteGuard<'_, Owners> {
    shard.write().unwrap_or_else(|e| e.into_inner())
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
        let owner = |k: &str| owners.get(k).copied();
        let keys = |ks: &[&str]| ks.iter().map(|k| k.to_string()).collect::<Vec<_>>();
        let (hit, kinds) =
            find(&keys(&["email:x@y.z", "external_id:9", "phone:1"]), owner).unwrap();
        assert_eq!(hit, a);
        assert_eq!(kinds, vec!["email", "phone"]);
        assert_eq!(find(&keys(&["phone:2"]), owner), None);
    }

    #[test]
    fn the_index_points_keys_at_leads_and_replaces_them_whole() {
        let lead = |n: u128| LeadId::from_key(&n.to_be_bytes()).unwrap();
        let index = Index::default();
        for n in 0..10_000u128 {
            index.set(format!("phone:{n}"), Some(lead(n)));
        }
        assert_eq!(index.len(), 10_000);
        assert_eq!(index.owner("phone:42"), Some(lead(42)));
        index.set("phone:41".into(), Some(lead(42)));
        assert_eq!(index.owner("phone:41"), Some(lead(42)), "a key moves");
        assert_eq!(index.len(), 10_000, "and is still counted once");
        index.set("phone:42".into(), None);
        assert_eq!(index.owner("phone:42"), None);
        assert_eq!(index.len(), 9_999, "a dropped key is no longer counted");
        index.set("phone:42".into(), None);
        assert_eq!(
            index.len(),
            9_999,
            "dropping a key not held changes nothing"
        );
        let keys = vec!["phone:42".to_string(), "phone:43".to_string()];
        assert_eq!(index.find(&keys), Some((lead(43), vec!["phone".into()])));

        let fresh = index.empty_like(1);
        assert_eq!(fresh.claim("email:a@b.cn".into(), lead(5)), None);
        let older = fresh.claim("email:a@b.cn".into(), lead(1));
        let email = || "email".to_string();
        assert_eq!(
            older,
            Some((email(), lead(5), lead(1))),
            "the older lead takes it"
        );
        let newer = fresh.claim("email:a@b.cn".into(), lead(9));
        assert_eq!(
            newer,
            Some((email(), lead(9), lead(1))),
            "a newer one does not"
        );
        index.replace(fresh);
        assert_eq!(index.len(), 1);
        assert_eq!(index.owner("phone:43"), None);
        assert_eq!(index.owner("email:a@b.cn"), Some(lead(1)));
    }

    #[test]
    fn keys_spread_over_every_shard_and_are_found_after_their_tables_grow() {
        let lead = |n: u128| LeadId::from_key(&n.to_be_bytes()).unwrap();
        let index = Index::default();
        let keys = 64 * SHARDS;
        for n in 0..keys {
            index.set(format!("email:{n}@example.cn"), Some(lead(n as u128)));
        }
        // 64 keys a shard on average; a shard that got none, or four times its share,
        // would mean the shard is read from too few bits of the hash. (That those bits
        // are not the table's own is asserted at compile time, next to `SHARD_BITS`.)
        for shard in index.shards.iter() {
            let held = read(&shard.0).len();
            assert!((16..256).contains(&held), "{held} keys in one shard");
        }
        assert!(
            (0..keys)
                .all(|n| index.owner(&format!("email:{n}@example.cn")) == Some(lead(n as u128))),
            "every key is found after its table grew from empty"
        );
    }
}
