//! Invariant audit and repair, run at every start (and by tests at any time).
//!
//! The committer keeps these true by construction; the audit is the net under it:
//! - every open assignment belongs to an existing, assigned lead and an existing rep;
//! - the `rep_leads` index mirrors the assignments;
//! - each rep's stored load equals its open assignments;
//! - every queue entry is a queued lead, and every open lead is assigned or queued;
//! - de-duplication keys point only at open leads;
//! - every assigned, untouched lead has a first-touch deadline (unless escalated), and
//!   SLA records belong only to open, untouched leads.
//!
//! The assignments are the source of truth: where records disagree, the others are
//! repaired from them. Every finding is logged; none is silently ignored.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::codec::{Assignment, RepRecord, SlaRecord, decode, encode};
use super::{ASSIGNMENTS, DEDUPE, LEADS, QUEUE, REP_LEADS, REPS, SLA, Store, compound_key};
use crate::domain::{LeadId, LeadStatus, RepId, TerritoryId};
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
    /// An assigned, untouched lead without a first-touch deadline; it gets this one.
    MissingDeadline(LeadId, u64),
    /// An SLA record of a missing, closed or touched lead.
    StraySla(LeadId),
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
            Finding::MissingDeadline(l, _) => {
                write!(
                    f,
                    "assigned, untouched lead {l} has no first-touch deadline"
                )
            }
            Finding::StraySla(l) => write!(f, "SLA record of lead {l}, which is not waiting"),
        }
    }
}

/// What the audit needs of a lead: its place, not its contact or history. Kept small
/// because the audit visits every open lead (up to several times) at start.
#[derive(Debug)]
struct Brief {
    status: LeadStatus,
    rep: Option<RepId>,
    territory: TerritoryId,
    queue_seq: Option<u64>,
    /// No first contact yet.
    untouched: bool,
    /// When its current rep got it (or it arrived).
    since: u64,
}

/// Leads read once each, on demand.
struct Leads<'s> {
    store: &'s Store,
    seen: HashMap<LeadId, Option<Brief>>,
}

impl Leads<'_> {
    fn get(&mut self, id: LeadId) -> Result<Option<&Brief>> {
        if !self.seen.contains_key(&id) {
            let brief = self.store.lead(id)?.map(|s| Brief {
                status: s.status,
                rep: s.rep,
                territory: s.territory,
                queue_seq: s.queue_seq,
                untouched: s.stage.is_none(),
                since: s.assigned_at.unwrap_or(s.lead.received_at),
            });
            self.seen.insert(id, brief);
        }
        Ok(self.seen.get(&id).and_then(Option::as_ref))
    }
}

/// Reads the whole open state and lists every broken invariant.
pub(crate) fn audit(store: &Store) -> Result<Vec<Finding>> {
    Ok(audit_with_keys(store)?.0)
}

/// What the audit read that start-up builds its in-memory indexes from, so that it
/// need not read it again.
pub(crate) struct Indexed {
    /// De-duplication keys and the open lead each points at, as stored.
    pub keys: Vec<(String, LeadId)>,
    /// First-touch SLA records, as stored.
    pub slas: Vec<(LeadId, SlaRecord)>,
}

/// [`audit`], also returning what it read for the in-memory indexes.
pub(crate) fn audit_with_keys(store: &Store) -> Result<(Vec<Finding>, Indexed)> {
    let mut findings = Vec::new();
    let reps: BTreeMap<RepId, RepRecord> = store
        .rep_records()?
        .into_iter()
        .map(|r| (r.rep.id.clone(), r))
        .collect();
    let mut leads = Leads {
        store,
        seen: HashMap::new(),
    };

    // Assignments: the source of truth. Each remembers whether the rep → lead index
    // has its entry.
    let mut counted: BTreeMap<RepId, u32> = BTreeMap::new();
    let mut assigned: HashMap<LeadId, (RepId, bool)> = HashMap::new();
    for (id, a) in store.assignments()? {
        let Some(state) = leads.get(id)? else {
            findings.push(Finding::AssignmentWithoutLead(id));
            continue;
        };
        if !reps.contains_key(&a.rep) {
            findings.push(Finding::AssignmentToUnknownRep(id, state.territory.clone()));
            continue;
        }
        if state.status != LeadStatus::Assigned || state.rep.as_ref() != Some(&a.rep) {
            findings.push(Finding::LeadDisagreesWithAssignment(id, a.clone()));
        }
        *counted.entry(a.rep.clone()).or_default() += 1;
        assigned.insert(id, (a.rep, false));
    }

    // The rep → lead index mirrors the assignments.
    for kv in store.h()?.trees[REP_LEADS].iter() {
        let (k, _) = kv?;
        let split = k.iter().position(|&b| b == 0).unwrap_or(k.len());
        let lead_id = LeadId::from_key(k.get(split + 1..).unwrap_or_default());
        let matched = lead_id
            .and_then(|id| assigned.get_mut(&id))
            .filter(|(rep, seen)| !*seen && rep.as_str().as_bytes() == &k[..split]);
        match matched {
            Some((_, seen)) => *seen = true,
            None => {
                let rep = RepId::new(String::from_utf8_lossy(&k[..split]).into_owned());
                if let (Ok(rep), Some(lead_id)) = (rep, lead_id) {
                    findings.push(Finding::RepLeadsIndex(rep, lead_id, false));
                }
            }
        }
    }
    let mut missing: Vec<(&RepId, LeadId)> = assigned
        .iter()
        .filter(|(_, (_, seen))| !*seen)
        .map(|(id, (rep, _))| (rep, *id))
        .collect();
    missing.sort();
    for (rep, l) in missing {
        findings.push(Finding::RepLeadsIndex(rep.clone(), l, true));
    }

    for (id, record) in &reps {
        let actual = counted.get(id).copied().unwrap_or(0);
        if record.load != actual {
            findings.push(Finding::RepLoad(id.clone(), record.load, actual));
        }
    }

    // Queues hold exactly the queued leads.
    let mut queued_leads: HashSet<LeadId> = HashSet::new();
    for kv in store.h()?.trees[QUEUE].iter() {
        let (k, v) = kv?;
        let seq = k.len().checked_sub(8).map(|i| &k[i..]);
        let ok = match (LeadId::from_key(&v), seq) {
            (Some(id), Some(seq)) => match leads.get(id)? {
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
    let keys = store.dedupe_entries()?;
    let mut open_leads: HashSet<LeadId> = HashSet::new();
    for (key, id) in &keys {
        match leads.get(*id)? {
            Some(s) if s.status.is_open() => {
                open_leads.insert(*id);
            }
            _ => findings.push(Finding::StrayDedupeKey(key.clone())),
        }
    }
    let mut orphans: Vec<LeadId> = open_leads
        .into_iter()
        .filter(|id| !assigned.contains_key(id) && !queued_leads.contains(id))
        .collect();
    orphans.sort();
    for id in orphans {
        if let Some(s) = leads.get(id)? {
            findings.push(Finding::Orphan(id, s.territory.clone()));
        }
    }

    // First-touch deadlines.
    let sla_records = store.sla_records()?;
    let slas: HashMap<LeadId, SlaRecord> = sla_records.iter().copied().collect();
    let sla_ms: HashMap<TerritoryId, u64> = store
        .territories()?
        .into_iter()
        .map(|t| (t.id, t.first_touch_sla_secs.saturating_mul(1000)))
        .collect();
    let mut assigned_ids: Vec<LeadId> = assigned.keys().copied().collect();
    assigned_ids.sort();
    for id in assigned_ids {
        let Some(s) = leads.get(id)? else { continue };
        let waiting = slas
            .get(&id)
            .is_some_and(|r| r.escalated || r.deadline.is_some());
        if s.untouched && !waiting {
            let sla = sla_ms.get(&s.territory).copied().unwrap_or(0);
            findings.push(Finding::MissingDeadline(id, s.since.saturating_add(sla)));
        }
    }
    let mut sla_ids: Vec<LeadId> = slas.keys().copied().collect();
    sla_ids.sort();
    for id in sla_ids {
        if !matches!(leads.get(id)?, Some(s) if s.status.is_open() && s.untouched) {
            findings.push(Finding::StraySla(id));
        }
    }
    Ok((
        findings,
        Indexed {
            keys,
            slas: sla_records,
        },
    ))
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
            Finding::MissingDeadline(id, deadline) => {
                let mut record: SlaRecord = store.sla(*id)?.unwrap_or_default();
                record.deadline = Some(*deadline);
                t[SLA].insert(id.to_key(), encode(&record))?;
            }
            Finding::StraySla(id) => {
                t[SLA].remove(id.to_key())?;
            }
        }
    }
    if findings.iter().any(|f| {
        !matches!(
            f,
            Finding::StrayDedupeKey(_)
                | Finding::StrayQueueEntry(_)
                | Finding::MissingDeadline(..)
                | Finding::StraySla(_)
        )
    }) {
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
