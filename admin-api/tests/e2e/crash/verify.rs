//! The checks: the store as the kill left it (read with the engine's `Store`, before
//! any restart could repair it), the restarted server's HTTP view, and at the end
//! the engine library's own audit.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use leadroute_engine::domain::{
    HistoryEvent, LeadId, LeadState, LeadStatus, REPEATS_IN_HISTORY, RepId, TerritoryId,
};
use leadroute_engine::store::Store;
use leadroute_engine::{Engine, EngineConfig};

use super::model::{Ev, Intake, Lead, Model, RepConf, TERRITORIES};
use crate::harness::{Api, Server};

/// What the store held right after a kill, for the HTTP checks after restart.
#[derive(Debug, Default)]
pub struct OnDisk {
    /// Open assignments per rep.
    pub rep_leads: BTreeMap<String, usize>,
    /// Queued leads per territory, in queue order.
    pub queues: BTreeMap<String, Vec<String>>,
    /// Leads read and checked this time (a sample of them is compared over HTTP).
    pub checked: Vec<String>,
}

fn lead_id(id: &str) -> LeadId {
    id.parse().expect("lead ids from the server parse")
}

fn rep_id(id: &str) -> RepId {
    RepId::new(id).expect("a rep id")
}

/// Reads the store in `dir` (no server running) and holds it to `model`: every
/// acknowledged lead present with its outcome and events, no lead with two open
/// assignments, each rep's open assignments exactly the leads the model gives it,
/// queues exactly the queued leads in an order that respects acknowledgements.
/// Requests cut off by the kill are resolved from what the store holds. With
/// `everything`, leads checked before are read again too.
pub fn on_disk(dir: &Path, model: &mut Model, everything: bool) -> Result<OnDisk, Vec<String>> {
    let store = Store::open(dir).map_err(|e| vec![format!("the store does not open: {e}")])?;
    let mut problems = Vec::new();
    let mut disk = OnDisk::default();

    // Open leads as the indexes list them.
    let mut open_by_rep: BTreeMap<String, Vec<LeadId>> = BTreeMap::new();
    for rep in model.reps.keys() {
        let leads = store
            .open_leads_of(&rep_id(rep))
            .map_err(|e| vec![format!("open leads of {rep}: {e}")])?;
        open_by_rep.insert(rep.clone(), leads);
    }
    let mut queues: BTreeMap<String, Vec<(u64, LeadId)>> = BTreeMap::new();
    for (t, _, _) in TERRITORIES {
        let queue = store
            .queue(&TerritoryId::new(t).expect("a territory id"))
            .map_err(|e| vec![format!("queue of {t}: {e}")])?;
        queues.insert(t.to_string(), queue);
    }

    // Leads in the store that no answer named: each must be a request the kill cut off.
    let listed = open_by_rep
        .values()
        .flatten()
        .chain(queues.values().flatten().map(|(_, id)| id));
    let unknown: Vec<LeadId> = listed
        .filter(|id| !model.leads.contains_key(&id.to_string()))
        .copied()
        .collect();
    for id in unknown {
        adopt(&store, model, id, &mut problems);
    }
    for (id, n) in std::mem::take(&mut model.pending_dups) {
        problems.push(format!(
            "{n} duplicate answer(s) named lead {id}, which the store does not hold"
        ));
    }

    // A repeat cut off by the kill may have left a duplicate hit on its contact's leads.
    let contacts: Vec<u64> = model.maybe_dups.keys().copied().collect();
    for n in contacts {
        for id in model.by_contact.get(&n).into_iter().flatten() {
            if let Some(lead) = model.leads.get_mut(id) {
                lead.dirty = true;
            }
        }
    }

    // Each lead the clients touched since the last check (or every lead).
    let mut states: HashMap<String, LeadState> = HashMap::new();
    let ids: Vec<String> = model
        .leads
        .iter()
        .filter(|(_, l)| {
            everything || (!l.done && (l.dirty || l.maybe.is_some() || l.rep.is_none()))
        })
        .map(|(id, _)| id.clone())
        .collect();
    for id in &ids {
        let lead = model.leads.get_mut(id).expect("listed from the model");
        let extra_dups = model.maybe_dups.get(&lead.n).copied().unwrap_or(0);
        match check_lead(&store, id, lead, extra_dups) {
            Ok(state) => {
                states.insert(id.clone(), state);
            }
            Err(p) => problems.push(p),
        }
    }
    disk.checked = ids;
    model.maybe_dups.clear();
    model.unanswered.clear();

    // Rep → open leads: exactly the model's, and no lead twice.
    let mut seen: HashSet<LeadId> = HashSet::new();
    let mut expected: BTreeMap<&str, HashSet<String>> = BTreeMap::new();
    for (id, lead) in &model.leads {
        if let (Some(rep), None) = (&lead.rep, lead.closed()) {
            expected.entry(rep.as_str()).or_default().insert(id.clone());
        }
    }
    for (rep, leads) in &open_by_rep {
        for id in leads {
            if !seen.insert(*id) {
                problems.push(format!("lead {id} has two open assignments"));
            }
        }
        let stored: HashSet<String> = leads.iter().map(ToString::to_string).collect();
        let want = expected.remove(rep.as_str()).unwrap_or_default();
        if stored != want {
            problems.push(format!(
                "rep {rep}: open assignments in the store {:?}, acknowledged {:?}",
                sorted(stored.difference(&want)),
                sorted(want.difference(&stored)),
            ));
        }
        disk.rep_leads.insert(rep.clone(), leads.len());
    }

    // Queues: exactly the queued leads, first come first served.
    for (t, queue) in &queues {
        let stored: Vec<String> = queue.iter().map(|(_, id)| id.to_string()).collect();
        let want: HashSet<&String> = model
            .leads
            .iter()
            .filter(|(_, l)| &l.territory == t && l.rep.is_none() && l.closed().is_none())
            .map(|(id, _)| id)
            .collect();
        let got: HashSet<&String> = stored.iter().collect();
        if got != want {
            problems.push(format!(
                "queue {t} holds {} leads, the model queues {}; only in the store: {:?}, only in the model: {:?}",
                got.len(),
                want.len(),
                sorted(got.difference(&want).copied()),
                sorted(want.difference(&got).copied()),
            ));
        }
        for (seq, id) in queue {
            let state = states.get(&id.to_string());
            if state.is_some_and(|s| s.queue_seq != Some(*seq)) {
                problems.push(format!("queue {t} entry {seq} disagrees with lead {id}"));
            }
        }
        // A lead acknowledged before another was sent must stand ahead of it.
        let mut earliest_ack_behind: Option<Instant> = None;
        for id in stored.iter().rev() {
            let Some(lead) = model.leads.get(id) else {
                continue;
            };
            if earliest_ack_behind.is_some_and(|ack| ack < lead.sent) {
                problems.push(format!(
                    "queue {t}: lead {id} stands ahead of a lead acknowledged before it was sent"
                ));
            }
            if let Some(ack) = lead.acked {
                earliest_ack_behind = Some(earliest_ack_behind.map_or(ack, |e| e.min(ack)));
            }
        }
        disk.queues.insert(t.clone(), stored);
    }

    // Assigned open leads go back to the event clients.
    model.pool = model
        .leads
        .iter()
        .filter(|(_, l)| l.rep.is_some() && l.closed().is_none() && l.maybe.is_none())
        .map(|(id, _)| id.clone())
        .collect();
    model.pool.sort();
    if problems.is_empty() {
        Ok(disk)
    } else {
        Err(problems)
    }
}

fn sorted<'a>(items: impl Iterator<Item = &'a String>) -> Vec<&'a String> {
    let mut v: Vec<_> = items.collect();
    v.sort();
    v.truncate(10);
    v
}

/// Makes a lead that no answer named known, if a cut-off request explains it.
fn adopt(store: &Store, model: &mut Model, id: LeadId, problems: &mut Vec<String>) {
    let state = match store.lead(id) {
        Ok(Some(s)) => s,
        other => {
            problems.push(format!("lead {id} is indexed but unreadable: {other:?}"));
            return;
        }
    };
    let n = state
        .lead
        .external_id
        .as_deref()
        .and_then(|e| e.strip_prefix("crm-"))
        .and_then(|n| n.parse::<u64>().ok());
    let found = n.and_then(|n| model.unanswered.iter().position(|u| u.n == n));
    let Some(i) = found else {
        problems.push(format!(
            "lead {id} ({:?}) is in the store but matches no request that went unanswered",
            state.lead.external_id
        ));
        return;
    };
    let request = model.unanswered.swap_remove(i);
    let id = id.to_string();
    model
        .by_contact
        .entry(request.n)
        .or_default()
        .push(id.clone());
    let dups = model.pending_dups.remove(&id).unwrap_or(0);
    model.leads.insert(
        id,
        Lead {
            n: request.n,
            territory: request.territory,
            intake: Intake::Landed,
            sent: request.sent,
            acked: None,
            events: Vec::new(),
            maybe: None,
            dups,
            rep: None,
            done: false,
            dirty: true,
        },
    );
}

/// Holds one lead's stored state and history to the model, and resolves what the
/// kill left open.
fn check_lead(
    store: &Store,
    id: &str,
    lead: &mut Lead,
    extra_dups: u32,
) -> Result<LeadState, String> {
    let state = store
        .lead(lead_id(id))
        .map_err(|e| format!("lead {id}: {e}"))?
        .ok_or_else(|| format!("acknowledged lead {id} ({:?}) is missing", lead.intake))?;
    let history = store
        .history(lead_id(id))
        .map_err(|e| format!("history of {id}: {e}"))?;
    if state.territory.as_str() != lead.territory {
        return Err(format!(
            "lead {id} is in territory {}, not {}",
            state.territory, lead.territory
        ));
    }
    match (&lead.intake, history.first().map(|h| &h.event)) {
        (Intake::Assigned(rep), Some(HistoryEvent::Routed { rep: r, .. }))
            if r.as_str() == rep.as_str() => {}
        (Intake::Queued, Some(HistoryEvent::Queued { .. })) => {}
        (Intake::Landed, Some(HistoryEvent::Routed { .. } | HistoryEvent::Queued { .. })) => {}
        (intake, first) => {
            return Err(format!(
                "lead {id} answered {intake:?} but its history starts {first:?}"
            ));
        }
    }

    // Lifecycle events: the acknowledged ones, plus perhaps the one cut off.
    let stored: Vec<Ev> = history.iter().filter_map(|h| Ev::of(&h.event)).collect();
    let acked: Vec<Ev> = lead.events.iter().flat_map(|e| e.history()).collect();
    let with_maybe: Option<Vec<Ev>> = lead
        .maybe
        .map(|m| acked.iter().copied().chain(m.history()).collect());
    if stored == acked {
        lead.maybe = None;
    } else if with_maybe.as_ref() == Some(&stored) {
        lead.events.extend(lead.maybe.take());
    } else {
        return Err(format!(
            "lead {id}: history holds events {stored:?}, acknowledged {acked:?}, cut off {:?}",
            lead.maybe
        ));
    }

    // Every repeat is counted; only the first REPEATS_IN_HISTORY are history entries.
    let dups = state.repeats;
    if dups < lead.dups || dups > lead.dups + extra_dups {
        return Err(format!(
            "lead {id}: {dups} repeats counted, {} acknowledged, {extra_dups} cut off",
            lead.dups
        ));
    }
    let entries = history
        .iter()
        .filter(|h| matches!(h.event, HistoryEvent::Duplicate { .. }))
        .count() as u32;
    if entries != dups.min(REPEATS_IN_HISTORY) {
        return Err(format!(
            "lead {id}: {entries} duplicate entries in its history for {dups} repeats"
        ));
    }
    lead.dups = dups;

    let stage = lead.events.iter().rev().find_map(|e| match e {
        Ev::Touched => Some(leadroute_engine::domain::Stage::FirstContact),
        Ev::Stage(s) => Some(*s),
        Ev::Closed(_) => None,
    });
    if state.stage != stage {
        return Err(format!(
            "lead {id}: stage {:?}, acknowledged {stage:?}",
            state.stage
        ));
    }

    match (lead.closed(), state.status) {
        (Some(o), LeadStatus::Closed(s)) if o == s => lead.done = true,
        (Some(o), s) => return Err(format!("lead {id} was closed {o:?} but is {s:?}")),
        (None, LeadStatus::Closed(s)) => {
            return Err(format!("lead {id} is closed {s:?} but nothing closed it"));
        }
        (None, LeadStatus::Assigned) => {
            let rep = state.rep.as_ref().map(ToString::to_string);
            if let Some(r) = lead.rep.as_ref().filter(|r| Some(*r) != rep.as_ref()) {
                return Err(format!("lead {id} was given to {r} but is with {rep:?}"));
            }
            // Unchanged, or a queued lead was given a rep when capacity freed.
            lead.rep = rep;
        }
        (None, LeadStatus::Queued) => {
            if let Some(r) = &lead.rep {
                return Err(format!("lead {id} was given to {r} but is queued again"));
            }
        }
    }
    lead.dirty = false;
    Ok(state)
}

/// The restarted server: ready, repaired nothing, and its HTTP view agrees with the
/// store the kill left and with the settings the admin client was told about.
pub fn after_restart(
    server: &Server,
    model: &mut Model,
    disk: &OnDisk,
    sample: &[String],
) -> Vec<String> {
    let api = Api {
        server,
        token: None,
    };
    let mut problems = Vec::new();
    let ready = api.get("/readyz");
    if ready.status != 200 {
        problems.push(format!("/readyz answered {} after restart", ready.status));
    }
    // The audit runs in the background once the server is ready; wait for its end.
    let gauge = |text: &str, name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let metrics = loop {
        let text = api.get("/metrics").text;
        if gauge(&text, "leadroute_startup_audit_running") == Some(0.0)
            || std::time::Instant::now() > deadline
        {
            break text;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    if gauge(&metrics, "leadroute_startup_audit_running") != Some(0.0) {
        problems.push("the start-up audit did not finish within 120 s".into());
    }
    let repairs = gauge(&metrics, "leadroute_recovery_repairs_total");
    if repairs != Some(0.0) {
        problems.push(format!(
            "the start-up audit repaired {repairs:?} things; the kill left the store inconsistent:\n{}",
            server.stderr()
        ));
    }

    let plugin = api.get("/admin/plugins/vip-tier").json();
    match plugin["active_version"].as_u64() {
        Some(v) => {
            if let Err(e) = model.plugin.resolve(v as u32, "vip-tier's active version") {
                problems.push(e);
            }
        }
        None => problems.push(format!("vip-tier: {plugin}")),
    }

    // Loads and queue depths, allowing for queued leads assigned as the actors came
    // up (a kill between freeing capacity and serving the queue leaves that to the
    // restart). Polled until two readings agree, within a deadline.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut settings_checked = false;
    loop {
        let reps = api.get("/admin/reps").json();
        let territories = api.get("/admin/territories").json();
        let again = api.get("/admin/reps").json();
        let mut found = Vec::new();
        if !settings_checked {
            for rep in reps.as_array().into_iter().flatten() {
                let id = rep["rep_id"].as_str().unwrap_or_default();
                let Some(setting) = model.reps.get_mut(id) else {
                    found.push(format!("unknown rep {id}"));
                    continue;
                };
                let seen = RepConf {
                    capacity: rep["capacity"].as_u64().unwrap_or(u64::MAX) as u32,
                    status: if rep["status"] == "available" {
                        "available"
                    } else {
                        "away"
                    },
                    ..setting.acked.clone()
                };
                if let Err(e) = setting.resolve(seen, &format!("rep {id}")) {
                    problems.push(e);
                }
            }
            settings_checked = true;
        }
        let loads: HashMap<String, i64> = reps
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                (
                    r["rep_id"].as_str().unwrap_or_default().to_string(),
                    r["load"].as_i64().unwrap_or(-1),
                )
            })
            .collect();
        for t in territories.as_array().into_iter().flatten() {
            let id = t["territory_id"].as_str().unwrap_or_default();
            let depth = t["queue_depth"].as_i64().unwrap_or(-1);
            let queued = disk.queues.get(id).map_or(0, Vec::len) as i64;
            let mut gained = 0;
            for m in t["members"].as_array().into_iter().flatten() {
                let rep = m["rep_id"].as_str().unwrap_or_default();
                let stored = disk.rep_leads.get(rep).copied().unwrap_or(0) as i64;
                let load = loads.get(rep).copied().unwrap_or(-1);
                if load < stored || m["load"] != load {
                    found.push(format!(
                        "rep {rep}: load {load} over HTTP, {stored} open assignments stored"
                    ));
                }
                gained += load - stored;
            }
            if queued - depth != gained {
                found.push(format!(
                    "territory {id}: queue {depth} over HTTP, {queued} stored, but its reps gained {gained}"
                ));
            }
        }
        if reps == again && found.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            problems.extend(found);
            break;
        }
    }

    // The HTTP view of leads agrees with the store.
    for id in sample {
        let Some(lead) = model.leads.get(id) else {
            continue;
        };
        let r = api.get(&format!("/v1/leads/{id}"));
        if r.status != 200 {
            problems.push(format!(
                "GET /v1/leads/{id} answered {} after restart",
                r.status
            ));
            continue;
        }
        let view = r.json();
        let events: Vec<Ev> = lead.events.iter().flat_map(|e| e.history()).collect();
        let kinds: Vec<&str> = view["history"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|h| h["type"].as_str())
            .filter(|k| matches!(*k, "touched" | "stage" | "closed"))
            .collect();
        let want: Vec<&str> = events
            .iter()
            .map(|e| match e {
                Ev::Touched => "touched",
                Ev::Stage(_) => "stage",
                Ev::Closed(_) => "closed",
            })
            .collect();
        let status_ok = match (lead.closed(), &lead.rep) {
            (Some(_), _) => view["status"] == "closed",
            (None, Some(rep)) => view["status"] == "assigned" && view["rep_id"] == rep.as_str(),
            (None, None) => view["status"] == "queued" || view["status"] == "assigned",
        };
        if kinds != want || !status_ok {
            problems.push(format!(
                "GET /v1/leads/{id} disagrees with the store: {view}"
            ));
        }
    }
    problems
}

/// After a clean stop: the engine library opens the store with nothing to repair,
/// and its invariant check (store and actors) finds nothing.
pub fn library(dir: &Path) -> Vec<String> {
    let engine = match Engine::open(EngineConfig::new(dir)) {
        Ok(e) => e,
        Err(e) => return vec![format!("the engine does not open the store: {e}")],
    };
    let mut problems = Vec::new();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        match engine.startup_audit().await {
            Ok(found) => problems.extend(found.iter().map(|f| format!("repaired at open: {f}"))),
            Err(e) => problems.push(format!("start-up audit: {e}")),
        }
        match engine.settle().await {
            Ok(()) => match engine.check_invariants().await {
                Ok(found) => problems.extend(found),
                Err(e) => problems.push(format!("check_invariants: {e}")),
            },
            Err(e) => problems.push(format!("settle: {e}")),
        }
        if let Err(e) = engine.shutdown().await {
            problems.push(format!("shutdown: {e}"));
        }
    });
    problems
}
