//! Invariant audit and repair, run at every start (and by tests at any time).
//!
//! The committer keeps these true by construction; the audit is the net under it:
//! - every open assignment belongs to an existing, assigned lead and an existing rep;
//! - the `rep_leads` index mirrors the assignments;
//! - each rep's stored load equals its open assignments;
//! - every queue entry is a queued lead, and every open lead is assigned or queued;
//! - de-duplication keys point only at open leads.
//!
//! The assignments are the source of truth: where records disagree, the others are
//! repaired from them. Every finding is logged; none is silently ignored.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::codec::{Assignment, RepRecord, decode, encode};
use super::{ASSIGNMENTS, DEDUPE, LEADS, QUEUE, REP_LEADS, REPS, Store, compound_key};
use crate::domain::{LeadId, LeadState, LeadStatus, RepId, TerritoryId};
use crate::error::{EngineError, Result};

/// One broken invariant and how it will be repaired.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Finding {
    /// An assignment whose lead does not exist.
    AssignmentWithoutLead(LeadId),
    /// An assignment to a rep that does not exist; the lead goes back to its queue.
    AssignmentToUnknownRep(LeadId, TerritoryId),
    /// The lead record disagrees with its assignment; the assignment wins.
    LeadDisagreesWithAssignment(LeadId, Assignment),
    /// `rep_leads` lacks (true) or has a stray (false) entry.
    RepLeadsIndex(RepId, LeadId, bool),
    /// A rep's stored load is not its open assignments.
    RepLoad(RepId, u32, u32),
    /// A queue entry that is not a queued lead.
    StrayQueueEntry(Vec<u8>),
    /// An open lead that is neither assigned nor queued; it goes back to its queue.
    Orphan(LeadId, TerritoryId),
    /// A de-duplication key pointing at a missing or closed lead.
    StrayDedupeKey(String),
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::AssignmentWithoutLead(l) => write!(f, "assignment of missing lead {l}"),
            Finding::AssignmentToUnknownRep(l, _) => {
                write!(f, "lead {l} assigned to a missing rep")
            }
            Finding::LeadDisagreesWithAssignment(l, a) => {
                write!(
                    f,
                    "lead {l} record disagrees with its assignment to {}",
                    a.rep
                )
            }
            Finding::RepLeadsIndex(r, l, missing) => {
                let what = if *missing { "missing" } else { "stray" };
                write!(f, "rep_leads index entry {r}/{l} is {what}")
            }
            Finding::RepLoad(r, stored, actual) => {
                write!(
                    f,
                    "rep {r} stored load {stored} but holds {actual} open assignments"
                )
            }
            Finding::StrayQueueEntry(_) => write!(f, "queue entry that is not a queued lead"),
            Finding::Orphan(l, t) => {
                write!(f, "open lead {l} is neither assigned nor queued in {t}")
            }
            Finding::StrayDedupeKey(k) => write!(f, "dedupe key {k:?} points at no open lead"),
        }
    }
}

/// Reads the whole open state and lists every broken invariant.
pub(crate) fn audit(store: &Store) -> Result<Vec<Finding>> {
    let mut findings = Vec::new();
    let reps: BTreeMap<RepId, RepRecord> = store
        .rep_records()?
        .into_iter()
        .map(|r| (r.rep.id.clone(), r))
        .collect();
    let mut leads: HashMap<LeadId, Option<LeadState>> = HashMap::new();
    let mut lead = |id: LeadId| -> Result<Option<LeadState>> {
        if let Some(s) = leads.get(&id) {
            return Ok(s.clone());
        }
        let s = store.lead(id)?;
        leads.insert(id, s.clone());
        Ok(s)
    };

    // Assignments: the source of truth.
    let mut counted: BTreeMap<RepId, u32> = BTreeMap::new();
    let mut assigned: BTreeSet<(RepId, LeadId)> = BTreeSet::new();
    let mut assigned_leads: BTreeSet<LeadId> = BTreeSet::new();
    for (id, a) in store.assignments()? {
        let Some(state) = lead(id)? else {
            findings.push(Finding::AssignmentWithoutLead(id));
            continue;
        };
        if !reps.contains_key(&a.rep) {
            findings.push(Finding::AssignmentToUnknownRep(id, state.territory));
            continue;
        }
        if state.status != LeadStatus::Assigned || state.rep.as_ref() != Some(&a.rep) {
            findings.push(Finding::LeadDisagreesWithAssignment(id, a.clone()));
        }
        *counted.entry(a.rep.clone()).or_default() += 1;
        assigned.insert((a.rep.clone(), id));
        assigned_leads.insert(id);
    }

    // The rep → lead index mirrors the assignments.
    let mut indexed: BTreeSet<(RepId, LeadId)> = BTreeSet::new();
    for kv in store.h()?.trees[REP_LEADS].iter() {
        let (k, _) = kv?;
        let split = k.iter().position(|&b| b == 0).unwrap_or(k.len());
        let rep = RepId::new(String::from_utf8_lossy(&k[..split]).into_owned());
        let lead_id = LeadId::from_key(k.get(split + 1..).unwrap_or_default());
        if let (Ok(rep), Some(lead_id)) = (rep, lead_id) {
            indexed.insert((rep, lead_id));
        }
    }
    for (rep, l) in assigned.difference(&indexed) {
        findings.push(Finding::RepLeadsIndex(rep.clone(), *l, true));
    }
    for (rep, l) in indexed.difference(&assigned) {
        findings.push(Finding::RepLeadsIndex(rep.clone(), *l, false));
    }

    for (id, record) in &reps {
        let actual = counted.get(id).copied().unwrap_or(0);
        if record.load != actual {
            findings.push(Finding::RepLoad(id.clone(), record.load, actual));
        }
    }

    // Queues hold exactly the queued leads.
    let mut queued_leads: BTreeSet<LeadId> = BTreeSet::new();
    for kv in store.h()?.trees[QUEUE].iter() {
        let (k, v) = kv?;
        let seq = k.len().checked_sub(8).map(|i| &k[i..]);
        let ok = match (LeadId::from_key(&v), seq) {
            (Some(id), Some(seq)) => match lead(id)? {
                Some(s) => {
                    let fits = s.status == LeadStatus::Queued
                        && s.queue_seq.map(u64::to_be_bytes).as_ref().map(|b| &b[..]) == Some(seq)
                        && k.starts_with(&compound_key(s.territory.as_str(), &[]));
                    if fits {
                        queued_leads.insert(id);
                    }
                    fits
                }
                None => false,
            },
            _ => false,
        };
        if !ok {
            findings.push(Finding::StrayQueueEntry(k.to_vec()));
        }
    }

    // Every open lead has at least one contact key, so the de-duplication keys reach
    // every open lead without scanning closed history.
    let mut open_leads: BTreeSet<LeadId> = BTreeSet::new();
    for (key, id) in store.dedupe_entries()? {
        match lead(id)? {
            Some(s) if s.status.is_open() => {
                open_leads.insert(id);
            }
            _ => findings.push(Finding::StrayDedupeKey(key)),
        }
    }
    for id in open_leads {
        if !assigned_leads.contains(&id)
            && !queued_leads.contains(&id)
            && let Some(s) = lead(id)?
        {
            findings.push(Finding::Orphan(id, s.territory));
        }
    }
    Ok(findings)
}

/// Repairs every finding in place, then flushes. Repairs are idempotent: a crash in
/// the middle is finished by the next start's audit.
pub(crate) fn repair(store: &Store, findings: &[Finding]) -> Result<()> {
    let h = store.h()?;
    let t = &h.trees;
    for finding in findings {
        tracing::warn!(%finding, "store invariant broken; repairing");
        match finding {
            Finding::AssignmentWithoutLead(id) => {
                t[ASSIGNMENTS].remove(id.to_key())?;
            }
            Finding::AssignmentToUnknownRep(id, territory) | Finding::Orphan(id, territory) => {
                t[ASSIGNMENTS].remove(id.to_key())?;
                requeue(store, *id, territory)?;
            }
            Finding::LeadDisagreesWithAssignment(id, a) => {
                if let Some(mut s) = store.lead(*id)? {
                    s.status = LeadStatus::Assigned;
                    s.rep = Some(a.rep.clone());
                    s.territory = a.territory.clone();
                    s.assigned_at.get_or_insert(a.since);
                    s.queue_seq = None;
                    s.closed_at = None;
                    t[LEADS].insert(id.to_key(), encode(&s))?;
                }
            }
            Finding::RepLeadsIndex(rep, id, missing) => {
                let key = compound_key(rep.as_str(), &id.to_key());
                if *missing {
                    t[REP_LEADS].insert(key, &[])?;
                } else {
                    t[REP_LEADS].remove(key)?;
                }
            }
            Finding::RepLoad(..) => {} // recomputed below, after the other repairs
            Finding::StrayQueueEntry(key) => {
                t[QUEUE].remove(key)?;
            }
            Finding::StrayDedupeKey(key) => {
                t[DEDUPE].remove(key.as_bytes())?;
            }
        }
    }
    if findings
        .iter()
        .any(|f| !matches!(f, Finding::StrayDedupeKey(_) | Finding::StrayQueueEntry(_)))
    {
        recount_loads(store)?;
    }
    store.h()?.db.flush()?;
    Ok(())
}

fn requeue(store: &Store, id: LeadId, territory: &TerritoryId) -> Result<()> {
    let Some(mut s) = store.lead(id)? else {
        return Ok(());
    };
    let seq = store.h()?.db.generate_id()?;
    store.h()?.trees[QUEUE].insert(
        compound_key(territory.as_str(), &seq.to_be_bytes()),
        &id.to_key(),
    )?;
    s.status = LeadStatus::Queued;
    s.rep = None;
    s.queue_seq = Some(seq);
    store.h()?.trees[LEADS].insert(id.to_key(), encode(&s))?;
    Ok(())
}

fn recount_loads(store: &Store) -> Result<()> {
    let mut counted: HashMap<RepId, u32> = HashMap::new();
    for (_, a) in store.assignments()? {
        *counted.entry(a.rep).or_default() += 1;
    }
    for kv in store.h()?.trees[REPS].iter() {
        let (k, v) = kv?;
        let mut record: RepRecord = decode(&v).map_err(EngineError::from)?;
        let actual = counted.get(&record.rep.id).copied().unwrap_or(0);
        if record.load != actual {
            record.load = actual;
            store.h()?.trees[REPS].insert(k, encode(&record))?;
        }
    }
    Ok(())
}
