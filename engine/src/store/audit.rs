//! Invariant audit and repair, run after every start (and by tests at any time).
//!
//! The committer keeps these true by construction; the audit is the net under it:
//! - every open assignment belongs to an existing, assigned lead and an existing rep;
//! - the `rep_leads` index mirrors the assignments;
//! - each rep's stored load equals its open assignments;
//! - every queue entry is a queued lead, and every open lead is assigned or queued;
//! - every open lead has its de-duplication keys in `lead_keys`, and no other lead;
//! - every assigned, untouched lead has a first-touch deadline (unless escalated), and
//!   SLA records belong only to open, untouched leads.
//!
//! The assignments are the source of truth: where records disagree, the others are
//! repaired from them. Every finding is logged; none is silently ignored.
//!
//! At start the audit reads the store while it already serves (see
//! `engine/audit.rs`), so a finding may be a change caught half-way through the read.
//! [`Finding::holds`] checks one finding again; the committer runs it, as the store's
//! only writer, right before [`repair_confirmed`] mends what still holds.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};

use super::codec::{Assignment, LeadKeys, RepRecord, SlaRecord, encode};
use super::{ASSIGNMENTS, LEAD_KEYS, LEADS, QUEUE, REP_LEADS, REPS, SLA, Store, compound_key};
use crate::config::Checkpoint;
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
    /// `lead_keys` holds the keys of a missing or closed lead; they are removed.
    StrayLeadKeys(LeadId),
    /// An assigned or queued lead has no `lead_keys` entry; its keys are written.
    MissingLeadKeys(LeadId),
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
            Finding::StrayLeadKeys(l) => {
                write!(f, "lead_keys entry of lead {l}, which is not open")
            }
            Finding::MissingLeadKeys(l) => {
                write!(f, "open lead {l} has no lead_keys entry")
            }
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
    let never = AtomicBool::new(false);
    Ok(audit_until(store, &never, &|_| {})?.unwrap_or_default())
}

/// How many items the audit visits between looks at its cancel flag.
const CANCEL_EVERY: usize = 4096;

/// [`audit`], giving up (`None`) soon after `cancel` is set. `probe` hears of
/// [`Checkpoint::AuditScan`].
pub(crate) fn audit_until(
    store: &Store,
    cancel: &AtomicBool,
    probe: &dyn Fn(Checkpoint),
) -> Result<Option<Vec<Finding>>> {
    let cancelled = |i: usize| i.is_multiple_of(CANCEL_EVERY) && cancel.load(Ordering::Relaxed);
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
    let assignments = store.assignments()?;
    // From here on, every record read may be newer than the assignments just read.
    probe(Checkpoint::AuditScan);
    for (i, (id, a)) in assignments.into_iter().enumerate() {
        if cancelled(i) {
            return Ok(None);
        }
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
    for (i, kv) in store.h()?.trees[REP_LEADS].iter().enumerate() {
        if cancelled(i) {
            return Ok(None);
        }
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
                    let fits = is_place_of(&k, seq, s.status, s.queue_seq, &s.territory);
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

    // `lead_keys` holds every open lead, so it reaches one that is neither assigned
    // nor queued without reading closed leads.
    let mut with_keys: HashSet<LeadId> = HashSet::new();
    let mut orphans = Vec::new();
    for (i, kv) in store.h()?.trees[LEAD_KEYS].iter().enumerate() {
        if cancelled(i) {
            return Ok(None);
        }
        let (k, _) = kv?;
        let Some(id) = LeadId::from_key(&k) else {
            continue;
        };
        match leads.get(id)? {
            Some(s) if s.status.is_open() => {
                with_keys.insert(id);
                if !assigned.contains_key(&id) && !queued_leads.contains(&id) {
                    orphans.push(Finding::Orphan(id, s.territory.clone()));
                }
            }
            _ => findings.push(Finding::StrayLeadKeys(id)),
        }
    }
    findings.extend(orphans);
    let mut keyless: Vec<LeadId> = assigned
        .keys()
        .chain(&queued_leads)
        .filter(|id| !with_keys.contains(id))
        .copied()
        .collect();
    keyless.sort();
    findings.extend(keyless.into_iter().map(Finding::MissingLeadKeys));

    // First-touch deadlines.
    let slas: HashMap<LeadId, SlaRecord> = store.sla_records()?.into_iter().collect();
    let sla_ms: HashMap<TerritoryId, u64> = store
        .territories()?
        .into_iter()
        .map(|t| (t.id, t.first_touch_sla_secs.saturating_mul(1000)))
        .collect();
    let mut assigned_ids: Vec<LeadId> = assigned.keys().copied().collect();
    assigned_ids.sort();
    for (i, id) in assigned_ids.into_iter().enumerate() {
        if cancelled(i) {
            return Ok(None);
        }
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
    Ok(Some(findings))
}

impl Finding {
    /// Whether the finding is still true of `store`. Only meaningful where nothing
    /// writes meanwhile: the committer calls it between its groups.
    pub(crate) fn holds(&self, store: &Store) -> Result<bool> {
        let assignment = |id: LeadId| store.assignment(id);
        let rep_exists = |rep: &RepId| Ok::<_, EngineError>(store.rep_record(rep)?.is_some());
        Ok(match self {
            Finding::AssignmentWithoutLead(id) => {
                assignment(*id)?.is_some() && store.lead(*id)?.is_none()
            }
            Finding::AssignmentToUnknownRep(id, _) => match assignment(*id)? {
                Some(a) => !rep_exists(&a.rep)? && store.lead(*id)?.is_some(),
                None => false,
            },
            Finding::LeadDisagreesWithAssignment(id, a) => {
                assignment(*id)?.as_ref() == Some(a)
                    && rep_exists(&a.rep)?
                    && store.lead(*id)?.is_some_and(|s| {
                        s.status != LeadStatus::Assigned || s.rep.as_ref() != Some(&a.rep)
                    })
            }
            Finding::RepLeadsIndex(rep, id, missing) => {
                let key = compound_key(rep.as_str(), &id.to_key());
                let indexed = store.h()?.trees[REP_LEADS].contains_key(key)?;
                let owns = assignment(*id)?.is_some_and(|a| &a.rep == rep)
                    && rep_exists(rep)?
                    && store.lead(*id)?.is_some();
                if *missing {
                    !indexed && owns
                } else {
                    indexed && !owns
                }
            }
            Finding::RepLoad(rep, ..) => match store.rep_record(rep)? {
                Some(record) => record.load != indexed_load(store, rep)?,
                None => false,
            },
            Finding::StrayQueueEntry(key) => match store.h()?.trees[QUEUE].get(key)? {
                Some(v) => !queue_entry_fits(store, key, &v)?,
                None => false,
            },
            Finding::Orphan(id, _) => match store.lead(*id)? {
                Some(s) if s.status.is_open() && assignment(*id)?.is_none() => {
                    let queued = match (s.status, s.queue_seq) {
                        (LeadStatus::Queued, Some(seq)) => {
                            let key = compound_key(s.territory.as_str(), &seq.to_be_bytes());
                            store.h()?.trees[QUEUE].get(&key)?.as_deref() == Some(&id.to_key()[..])
                        }
                        _ => false,
                    };
                    !queued
                }
                _ => false,
            },
            Finding::StrayLeadKeys(id) => {
                store.h()?.trees[LEAD_KEYS].contains_key(id.to_key())?
                    && !store.lead(*id)?.is_some_and(|s| s.status.is_open())
            }
            Finding::MissingLeadKeys(id) => {
                !store.h()?.trees[LEAD_KEYS].contains_key(id.to_key())?
                    && store.lead(*id)?.is_some_and(|s| s.status.is_open())
            }
            Finding::MissingDeadline(id, _) => {
                assignment(*id)?.is_some()
                    && store
                        .lead(*id)?
                        .is_some_and(|s| s.status == LeadStatus::Assigned && s.stage.is_none())
                    && !store
                        .sla(*id)?
                        .is_some_and(|r| r.escalated || r.deadline.is_some())
            }
            Finding::StraySla(id) => {
                store.sla(*id)?.is_some()
                    && !store
                        .lead(*id)?
                        .is_some_and(|s| s.status.is_open() && s.stage.is_none())
            }
        })
    }
}

/// Whether a queue entry is the place of the queued lead it names.
fn queue_entry_fits(store: &Store, key: &[u8], value: &[u8]) -> Result<bool> {
    let seq = key.len().checked_sub(8).map(|i| &key[i..]);
    let (Some(id), Some(seq)) = (LeadId::from_key(value), seq) else {
        return Ok(false);
    };
    Ok(store
        .lead(id)?
        .is_some_and(|s| is_place_of(key, seq, s.status, s.queue_seq, &s.territory)))
}

/// Whether queue entry `key` (ending in `seq`) is the place of a lead in this state.
fn is_place_of(
    key: &[u8],
    seq: &[u8],
    status: LeadStatus,
    queue_seq: Option<u64>,
    territory: &TerritoryId,
) -> bool {
    status == LeadStatus::Queued
        && queue_seq.map(u64::to_be_bytes).as_ref().map(|b| &b[..]) == Some(seq)
        && key.starts_with(&compound_key(territory.as_str(), &[]))
}

/// A rep's open assignments as its `rep_leads` entries count them.
fn indexed_load(store: &Store, rep: &RepId) -> Result<u32> {
    let prefix = compound_key(rep.as_str(), &[]);
    let mut n = 0u32;
    for kv in store.h()?.trees[REP_LEADS].scan_prefix(prefix) {
        kv?;
        n += 1;
    }
    Ok(n)
}

/// What a repair changed that the in-memory state must learn.
#[derive(Debug, Default)]
pub(crate) struct Repaired {
    /// The findings that still held and were repaired.
    pub findings: Vec<Finding>,
    /// Reps whose stored load changed, by how much.
    pub loads: Vec<(RepId, i64)>,
    /// Leads put back in their territory's queue.
    pub requeued: Vec<(LeadId, TerritoryId)>,
    /// First-touch deadlines set (`Some`) or removed (`None`).
    pub deadlines: Vec<(LeadId, Option<u64>)>,
}

/// Repairs each finding that still [holds](Finding::holds), in order, recounts the
/// loads of the reps concerned, then flushes. Only the store's writer may call it
/// (the committer, or start-up before anything else runs). Repairs are idempotent:
/// a crash in the middle is finished by the next start's audit.
pub(crate) fn repair_confirmed(store: &Store, candidates: Vec<Finding>) -> Result<Repaired> {
    let mut repaired = Repaired::default();
    let mut recount: BTreeSet<RepId> = BTreeSet::new();
    for finding in candidates {
        if !finding.holds(store)? {
            tracing::debug!(%finding, "audit finding no longer holds; a change was in flight");
            continue;
        }
        tracing::warn!(%finding, "store invariant broken; repairing");
        repair_one(store, &finding, &mut repaired, &mut recount)?;
        repaired.findings.push(finding);
    }
    for rep in recount {
        let Some(mut record) = store.rep_record(&rep)? else {
            continue;
        };
        let actual = indexed_load(store, &rep)?;
        if record.load != actual {
            repaired
                .loads
                .push((rep.clone(), i64::from(actual) - i64::from(record.load)));
            record.load = actual;
            store.h()?.trees[REPS].insert(rep.as_str().as_bytes(), encode(&record))?;
        }
    }
    if !repaired.findings.is_empty() {
        store.h()?.db.flush()?;
        // A repair can write or remove a lead's keys, or reopen a lead the
        // assignments say is open. Repairs are rare; one rebuild covers every case.
        store.rebuild_dedupe()?;
    }
    Ok(repaired)
}

fn repair_one(
    store: &Store,
    finding: &Finding,
    repaired: &mut Repaired,
    recount: &mut BTreeSet<RepId>,
) -> Result<()> {
    let h = store.h()?;
    let t = &h.trees;
    match finding {
        Finding::AssignmentWithoutLead(id) => {
            if let Some(a) = store.assignment(*id)? {
                recount.insert(a.rep);
            }
            t[ASSIGNMENTS].remove(id.to_key())?;
        }
        Finding::AssignmentToUnknownRep(id, territory) | Finding::Orphan(id, territory) => {
            t[ASSIGNMENTS].remove(id.to_key())?;
            if requeue(store, *id, territory)? {
                repaired.requeued.push((*id, territory.clone()));
            }
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
            recount.insert(rep.clone());
        }
        Finding::RepLoad(rep, ..) => {
            recount.insert(rep.clone());
        }
        Finding::StrayQueueEntry(key) => {
            t[QUEUE].remove(key.as_slice())?;
        }
        Finding::StrayLeadKeys(id) => {
            t[LEAD_KEYS].remove(id.to_key())?;
        }
        Finding::MissingLeadKeys(id) => {
            if let Some(state) = store.lead(*id)? {
                let keys = LeadKeys {
                    keys: crate::dedupe::keys(&state.lead),
                };
                t[LEAD_KEYS].insert(id.to_key(), encode(&keys))?;
            }
        }
        Finding::MissingDeadline(id, deadline) => {
            let mut record: SlaRecord = store.sla(*id)?.unwrap_or_default();
            record.deadline = Some(*deadline);
            t[SLA].insert(id.to_key(), encode(&record))?;
            repaired.deadlines.push((*id, Some(*deadline)));
        }
        Finding::StraySla(id) => {
            t[SLA].remove(id.to_key())?;
            repaired.deadlines.push((*id, None));
        }
    }
    Ok(())
}

/// Puts an open lead at the back of its territory's queue. False if it is gone.
fn requeue(store: &Store, id: LeadId, territory: &TerritoryId) -> Result<bool> {
    let Some(mut s) = store.lead(id)? else {
        return Ok(false);
    };
    let seq = store.h()?.db.generate_id()?;
    store.h()?.trees[QUEUE].insert(
        compound_key(territory.as_str(), &seq.to_be_bytes()),
        &id.to_key(),
    )?;
    s.status = LeadStatus::Queued;
    s.rep = None;
    s.territory = territory.clone();
    s.queue_seq = Some(seq);
    store.h()?.trees[LEADS].insert(id.to_key(), encode(&s))?;
    Ok(true)
}
