//! The clients: leads one at a time, leads in batches, lifecycle events and admin
//! changes, all at once against one server, until it is killed with SIGKILL at a
//! moment chosen by the seeded generator.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::Rng;
use super::model::{Model, RepConf, TERRITORIES, Unanswered, lead_body};
use crate::harness::Server;

/// Threads posting one lead per request.
const LEAD_CLIENTS: u64 = 6;
/// Threads posting batches.
const BATCH_CLIENTS: u64 = 1;
/// Leads per batch.
const BATCH: u64 = 25;
/// Threads reporting lifecycle events.
const EVENT_CLIENTS: u64 = 3;
/// Percent of single leads that repeat an acknowledged lead's contact.
const REPEATS: u64 = 10;

/// State shared by the clients and kept across kills.
#[derive(Default)]
pub struct Shared {
    /// What the clients were told.
    pub model: Mutex<Model>,
    /// The next fresh contact number.
    pub next_contact: AtomicU64,
    /// Set just before the kill: from then on a cut-off request is expected.
    killing: AtomicBool,
}

impl Shared {
    /// The model, even if a client thread panicked while holding it.
    pub fn model(&self) -> MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An answer, or the lack of one.
enum Answer {
    /// A complete response.
    Status(u16, Value),
    /// No complete response: the connection broke or was refused.
    CutOff(String),
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(20))
        .build()
}

fn send(agent: &ureq::Agent, method: &str, url: &str, body: &Value) -> Answer {
    let response = match agent.request(method, url).send_json(body) {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Answer::CutOff(e.to_string()),
    };
    let status = response.status();
    // A status line without its whole body is no answer: the body carries the ids.
    match response.into_string() {
        Ok(text) => Answer::Status(status, serde_json::from_str(&text).unwrap_or(Value::Null)),
        Err(e) => Answer::CutOff(format!("body cut off: {e}")),
    }
}

/// A request got no answer: expected once the kill is under way, a failure before.
/// Returns true (stop the client) either way.
fn cut_off(shared: &Shared, what: &str, error: &str) -> bool {
    let mut model = shared.model();
    model.counts.cut_off += 1;
    if !shared.killing.load(Ordering::SeqCst) {
        model
            .failures
            .push(format!("{what}: no answer before the kill: {error}"));
    }
    true
}

fn unexpected(shared: &Shared, what: &str, status: u16, body: &Value) {
    shared
        .model()
        .failures
        .push(format!("{what}: answered {status}: {body}"));
}

/// Runs every client against `server` for `kill_after`, then kills it with SIGKILL
/// and waits for the clients to notice. Returns how long the load ran.
pub fn drive(shared: &Arc<Shared>, server: Server, seed: u64, kill_after: Duration) -> Duration {
    shared.killing.store(false, Ordering::SeqCst);
    let base = server.url("");
    let mut clients = Vec::new();
    let mut spawn = |k: u64, f: fn(&Shared, &str, Rng)| {
        let (shared, base) = (shared.clone(), base.clone());
        let rng = Rng::new(seed ^ (k + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        clients.push(std::thread::spawn(move || f(&shared, &base, rng)));
    };
    let mut k = 0;
    for _ in 0..LEAD_CLIENTS {
        spawn(k, single_leads);
        k += 1;
    }
    for _ in 0..BATCH_CLIENTS {
        spawn(k, batches);
        k += 1;
    }
    for _ in 0..EVENT_CLIENTS {
        spawn(k, events);
        k += 1;
    }
    spawn(k, admin);
    let started = Instant::now();
    // The kill moment is the point of the test, drawn from the seed; nothing is
    // waited for here.
    std::thread::sleep(kill_after);
    shared.killing.store(true, Ordering::SeqCst);
    let status = server.sigkill();
    let ran = started.elapsed();
    for client in clients {
        if client.join().is_err() {
            shared.model().failures.push("a client panicked".into());
        }
    }
    {
        use std::os::unix::process::ExitStatusExt;
        if status.and_then(|s| s.signal()) != Some(libc::SIGKILL) {
            shared.model().failures.push(format!(
                "the server was not running at the kill: {status:?}"
            ));
        }
    }
    ran
}

/// Picks a territory for a fresh lead by the shares in [`TERRITORIES`].
fn territory(rng: &mut Rng) -> (&'static str, &'static str) {
    let mut roll = rng.below(100);
    for (id, region, share) in TERRITORIES {
        if roll < share {
            return (id, region);
        }
        roll -= share;
    }
    (TERRITORIES[0].0, TERRITORIES[0].1)
}

fn region_of(territory: &str) -> &'static str {
    TERRITORIES
        .iter()
        .find(|t| t.0 == territory)
        .map_or("CN-SH", |t| t.1)
}

fn single_leads(shared: &Shared, base: &str, mut rng: Rng) {
    let agent = agent();
    let url = format!("{base}/v1/leads");
    loop {
        let repeat = {
            let model = shared.model();
            (rng.below(100) < REPEATS && !model.contacts.is_empty())
                .then(|| model.contacts[rng.below(model.contacts.len() as u64) as usize].clone())
        };
        let (n, region) = match &repeat {
            Some((n, t)) => (*n, region_of(t)),
            None => (
                shared.next_contact.fetch_add(1, Ordering::SeqCst),
                territory(&mut rng).1,
            ),
        };
        let territory_id = TERRITORIES
            .iter()
            .find(|t| t.1 == region)
            .map_or("east", |t| t.0);
        let sent = Instant::now();
        match send(&agent, "POST", &url, &lead_body(n, region)) {
            Answer::Status(201 | 202, v) => shared.model().intake(n, territory_id, &v, sent),
            Answer::Status(200, v) if v["status"] == "duplicate" => shared.model().duplicate(&v),
            Answer::Status(s, v) => unexpected(shared, "POST /v1/leads", s, &v),
            Answer::CutOff(e) => {
                let mut model = shared.model();
                model.unanswered.push(Unanswered {
                    n,
                    territory: territory_id.into(),
                    sent,
                });
                if repeat.is_some() {
                    *model.maybe_dups.entry(n).or_default() += 1;
                }
                drop(model);
                cut_off(shared, "POST /v1/leads", &e);
                return;
            }
        }
    }
}

fn batches(shared: &Shared, base: &str, mut rng: Rng) {
    let agent = agent();
    let url = format!("{base}/v1/leads/batch");
    loop {
        let leads: Vec<(u64, &str, &str)> = (0..BATCH)
            .map(|_| {
                let (t, region) = territory(&mut rng);
                (
                    shared.next_contact.fetch_add(1, Ordering::SeqCst),
                    t,
                    region,
                )
            })
            .collect();
        let body =
            json!({"leads": leads.iter().map(|(n, _, r)| lead_body(*n, r)).collect::<Vec<_>>()});
        let sent = Instant::now();
        match send(&agent, "POST", &url, &body) {
            Answer::Status(200, v) => {
                let results = v["results"].as_array().cloned().unwrap_or_default();
                let mut model = shared.model();
                if results.len() != leads.len() {
                    model
                        .failures
                        .push(format!("a batch of {} answered {v}", leads.len()));
                }
                for ((n, t, _), r) in leads.iter().zip(&results) {
                    match r["status"].as_str() {
                        Some("assigned" | "queued") => model.intake(*n, t, r, sent),
                        _ => model.failures.push(format!("a batched lead answered {r}")),
                    }
                }
            }
            Answer::Status(s, v) => unexpected(shared, "POST /v1/leads/batch", s, &v),
            Answer::CutOff(e) => {
                let mut model = shared.model();
                for (n, t, _) in &leads {
                    model.unanswered.push(Unanswered {
                        n: *n,
                        territory: (*t).into(),
                        sent,
                    });
                }
                drop(model);
                cut_off(shared, "POST /v1/leads/batch", &e);
                return;
            }
        }
    }
}

fn events(shared: &Shared, base: &str, mut rng: Rng) {
    let agent = agent();
    loop {
        let picked = {
            let mut model = shared.model();
            if model.pool.is_empty() {
                None
            } else {
                let i = rng.below(model.pool.len() as u64) as usize;
                let id = model.pool.swap_remove(i);
                let ev = model.leads[&id].next_event(rng.below(100));
                Some((id, ev))
            }
        };
        let Some((id, ev)) = picked else {
            if shared.killing.load(Ordering::SeqCst) {
                return;
            }
            // Nothing assigned yet: let the lead clients get ahead.
            std::thread::yield_now();
            continue;
        };
        let what = format!("POST /v1/leads/{id}/events {}", ev.body());
        match send(
            &agent,
            "POST",
            &format!("{base}/v1/leads/{id}/events"),
            &ev.body(),
        ) {
            Answer::Status(200, _) => {
                let mut model = shared.model();
                model.counts.events += 1;
                let lead = model.leads.get_mut(&id).expect("picked from the model");
                lead.events.push(ev);
                lead.dirty = true;
                if lead.closed().is_none() {
                    model.pool.push(id);
                }
            }
            Answer::Status(s, v) => unexpected(shared, &what, s, &v),
            Answer::CutOff(e) => {
                let mut model = shared.model();
                if let Some(lead) = model.leads.get_mut(&id) {
                    lead.maybe = Some(ev);
                    lead.dirty = true;
                }
                drop(model);
                cut_off(shared, &what, &e);
                return;
            }
        }
    }
}

/// Capacity of the `small` territory's reps ranges over this.
const SMALL_CAPACITY: std::ops::RangeInclusive<u64> = 1..=4;

fn admin(shared: &Shared, base: &str, mut rng: Rng) {
    let agent = agent();
    loop {
        let (what, url, body, change) = if rng.below(100) < 30 {
            let version = 1 + rng.below(2) as u32;
            (
                "activate vip-tier".to_string(),
                format!("{base}/admin/plugins/vip-tier/activate"),
                json!({ "version": version }),
                Change::Plugin(version),
            )
        } else {
            let (id, mut conf) = {
                let model = shared.model();
                let ids: Vec<&String> = model.reps.keys().collect();
                let id = ids[rng.below(ids.len() as u64) as usize].clone();
                let conf = model.reps[&id].acked.clone();
                (id, conf)
            };
            change_rep(&id, &mut conf, &mut rng);
            (
                format!("PUT /admin/reps/{id}"),
                format!("{base}/admin/reps/{id}"),
                conf.body(&id),
                Change::Rep(id, conf),
            )
        };
        match send(
            &agent,
            if url.contains("/reps/") {
                "PUT"
            } else {
                "POST"
            },
            &url,
            &body,
        ) {
            Answer::Status(200 | 201, _) => {
                let mut model = shared.model();
                model.counts.admin += 1;
                match change {
                    Change::Plugin(v) => {
                        model.plugin.acked = v;
                        model.plugin.maybe.clear();
                    }
                    Change::Rep(id, conf) => {
                        let setting = model.reps.get_mut(&id).expect("a known rep");
                        setting.acked = conf;
                        setting.maybe.clear();
                    }
                }
            }
            Answer::Status(s, v) => unexpected(shared, &what, s, &v),
            Answer::CutOff(e) => {
                let mut model = shared.model();
                match change {
                    Change::Plugin(v) => model.plugin.maybe.push(v),
                    Change::Rep(id, conf) => model
                        .reps
                        .get_mut(&id)
                        .expect("a known rep")
                        .maybe
                        .push(conf),
                }
                drop(model);
                cut_off(shared, &what, &e);
                return;
            }
        }
        // Pacing: an operator changes settings now and then, not thousands of times
        // a second. Nothing waits on this.
        std::thread::sleep(Duration::from_millis(5));
    }
}

enum Change {
    Plugin(u32),
    Rep(String, RepConf),
}

/// Moves a rep's settings: the `small` reps' capacity, the others' status (one
/// `east` rep always stays available, so `east` never queues for long).
fn change_rep(id: &str, conf: &mut RepConf, rng: &mut Rng) {
    if conf.territory == "small" {
        let span = SMALL_CAPACITY.end() - SMALL_CAPACITY.start() + 1;
        conf.capacity = (SMALL_CAPACITY.start() + rng.below(span)) as u32;
    } else if id != "east-1" {
        conf.status = if conf.status == "available" {
            "away"
        } else {
            "available"
        };
    }
}
