//! First-touch SLA deadlines: which assigned, untouched leads run out of time when.
//!
//! The deadlines themselves are stored (the `sla` tree, one record per untouched open
//! lead) and written by the committer in the same transaction as the assignment, the
//! touch or the close that sets or clears them. This index is their in-memory copy,
//! ordered by time, so finding the leads that are due is a range read. The committer
//! updates it after each durable group, and loads the stored ones at start, a chunk
//! at a time between groups; [`crate::Engine::enforce_sla`] reads it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use crate::clock::UnixMillis;
use crate::domain::LeadId;

/// Deadlines of assigned, untouched leads, ordered by time.
#[derive(Default)]
pub struct SlaIndex {
    inner: Mutex<Deadlines>,
}

#[derive(Default)]
struct Deadlines {
    by_time: BTreeSet<(UnixMillis, LeadId)>,
    /// A B-tree, not a hash map: it holds every untouched open lead, and a hash map
    /// that size grows all at once, every entry moved while the committer, which
    /// applies each group here, waits (76 ms at 917,504 leads on the 2-core machine;
    /// `benches/README.md`, "The SLA index's growth"). Lead ids are time-ordered, so
    /// new ones go to the tree's right edge.
    by_lead: BTreeMap<LeadId, UnixMillis>,
}

impl SlaIndex {
    /// Sets (`Some`) or clears (`None`) each lead's deadline, in order.
    pub fn apply(&self, updates: &[(LeadId, Option<UnixMillis>)]) {
        if updates.is_empty() {
            return;
        }
        let mut d = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for &(lead, deadline) in updates {
            if let Some(old) = d.by_lead.remove(&lead) {
                d.by_time.remove(&(old, lead));
            }
            if let Some(at) = deadline {
                d.by_time.insert((at, lead));
                d.by_lead.insert(lead, at);
            }
        }
    }

    /// Replaces every deadline with the stored ones (after the store was reopened).
    pub(crate) fn replace(&self, records: &[(LeadId, crate::store::codec::SlaRecord)]) {
        let mut d = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *d = Deadlines::default();
        for (lead, record) in records {
            if let Some(at) = record.deadline {
                d.by_time.insert((at, *lead));
                d.by_lead.insert(*lead, at);
            }
        }
    }

    /// Up to `limit` leads whose deadline is at or before `now`, earliest first.
    pub fn due(&self, now: UnixMillis, limit: usize) -> Vec<(LeadId, UnixMillis)> {
        let d = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        d.by_time
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(limit)
            .map(|&(at, lead)| (lead, at))
            .collect()
    }

    /// The lead's current deadline, if it has one.
    pub fn deadline(&self, lead: LeadId) -> Option<UnixMillis> {
        let d = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        d.by_lead.get(&lead).copied()
    }

    /// How many leads are waiting for a first touch with a deadline.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_lead
            .len()
    }

    /// Whether no lead has a deadline.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> LeadId {
        LeadId::from_ulid(ulid::Ulid::from_parts(n, 0))
    }

    #[test]
    fn due_is_ordered_and_moves_with_updates() {
        let index = SlaIndex::default();
        index.apply(&[(id(1), Some(300)), (id(2), Some(100)), (id(3), Some(200))]);
        assert_eq!(index.due(200, 10), vec![(id(2), 100), (id(3), 200)]);
        assert_eq!(index.due(200, 1), vec![(id(2), 100)]);
        // Re-assigned: a new deadline replaces the old one; touched: cleared.
        index.apply(&[(id(2), Some(500)), (id(3), None)]);
        assert_eq!(index.due(400, 10), vec![(id(1), 300)]);
        assert_eq!(index.deadline(id(2)), Some(500));
        assert_eq!(index.deadline(id(3)), None);
        assert_eq!(index.len(), 2);
        index.apply(&[(id(1), None), (id(2), None)]);
        assert!(index.is_empty());
        assert!(index.due(u64::MAX, 10).is_empty());
    }
}
