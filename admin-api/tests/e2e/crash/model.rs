//! What the clients were told: every 2xx answer, and every request a kill left
//! without one. The checks hold the store to this record.
//!
//! A 2xx is a promise, so it is recorded as fact. A request cut off by the kill may
//! or may not have landed; it is recorded as a *maybe*, and the next check resolves
//! it from what the store holds (and fails if the store holds something no request
//! could explain).

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use leadroute_engine::domain::{HistoryEvent, Outcome, Stage};
use serde_json::{Value, json};

/// The territories of the harness's organisation: (id, region), with the share of
/// fresh leads each gets out of 100.
pub const TERRITORIES: [(&str, &str, u64); 3] = [
    // Least loaded over four reps with room to spare.
    ("east", "CN-SH", 60),
    // Ranked by the vip-tier plugin, whose active version the admin client flips.
    ("vip", "CN-JS", 25),
    // Two reps with a handful of places: leads queue here.
    ("small", "CN-AH", 15),
];

/// A lifecycle event, as sent and as history records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ev {
    /// `{"type": "touched"}`.
    Touched,
    /// `{"type": "stage", "stage": S}`.
    Stage(Stage),
    /// `{"type": "closed", "outcome": O}`.
    Closed(Outcome),
}

impl Ev {
    /// The request body.
    pub fn body(self) -> Value {
        match self {
            Ev::Touched => json!({"type": "touched"}),
            Ev::Stage(s) => json!({"type": "stage", "stage": s}),
            Ev::Closed(o) => json!({"type": "closed", "outcome": o}),
        }
    }

    /// The history entries it leaves: signing a contract also closes the lead.
    pub fn history(self) -> Vec<Ev> {
        match self {
            Ev::Stage(Stage::ContractSigned) => vec![self, Ev::Closed(Outcome::Won)],
            _ => vec![self],
        }
    }

    /// The lifecycle event a history entry records, if it is one.
    pub fn of(event: &HistoryEvent) -> Option<Ev> {
        match event {
            HistoryEvent::Touched => Some(Ev::Touched),
            HistoryEvent::Stage { stage } => Some(Ev::Stage(*stage)),
            HistoryEvent::Closed { outcome } => Some(Ev::Closed(*outcome)),
            _ => None,
        }
    }
}

/// A lead's contact number `n` as a request body in `region`: unique external id,
/// phone and e-mail per `n`.
pub fn lead_body(n: u64, region: &str) -> Value {
    json!({
        "external_id": format!("crm-{n}"),
        "name": "Dr. Wang",
        "company": "Ruijin Hospital Lab",
        "phone": format!("+86 139 {:04} {:04}", (n / 10_000) % 10_000, n % 10_000),
        "email": format!("lead{n}@example.cn"),
        "region": region,
        "industry": "hospital-lab",
        "purchase_amount": (n % 7) as f64 * 40_000.0,
        "source": "crash-harness",
    })
}

/// How a lead came to be known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Intake {
    /// Answered 201: assigned to this rep.
    Assigned(String),
    /// Answered 202: queued.
    Queued,
    /// Never answered; found in the store after the kill.
    Landed,
}

/// One known lead.
#[derive(Debug)]
pub struct Lead {
    /// Its contact number.
    pub n: u64,
    /// The territory it must be in.
    pub territory: String,
    /// What intake said.
    pub intake: Intake,
    /// When the intake request was sent, and when its answer came (for queue order).
    pub sent: Instant,
    /// `None` for leads that landed unanswered.
    pub acked: Option<Instant>,
    /// Acknowledged lifecycle events, in order.
    pub events: Vec<Ev>,
    /// An event sent but cut off by the kill.
    pub maybe: Option<Ev>,
    /// Duplicate hits acknowledged on it (counted once its lead is known).
    pub dups: u32,
    /// Its rep as last confirmed (answer or store after a kill); `None` while queued.
    pub rep: Option<String>,
    /// Closed and checked: nothing can change it any more.
    pub done: bool,
    /// Touched since the last check.
    pub dirty: bool,
}

impl Lead {
    /// Whether an acknowledged event closed it.
    pub fn closed(&self) -> Option<Outcome> {
        self.events
            .iter()
            .flat_map(|e| e.history())
            .find_map(|e| match e {
                Ev::Closed(o) => Some(o),
                _ => None,
            })
    }

    /// The next event to send, given what was acknowledged; `roll` in 0..100 picks
    /// between moving on and losing the lead.
    pub fn next_event(&self, roll: u64) -> Ev {
        let stage = self.events.iter().rev().find_map(|e| match e {
            Ev::Touched => Some(Stage::FirstContact),
            Ev::Stage(s) => Some(*s),
            Ev::Closed(_) => None,
        });
        match Stage::expected_after(stage) {
            _ if roll < 15 => Ev::Closed(Outcome::Lost),
            Some(Stage::FirstContact) => Ev::Touched,
            Some(s) => Ev::Stage(s),
            None => Ev::Closed(Outcome::Lost),
        }
    }
}

/// An intake request cut off by the kill.
#[derive(Debug)]
pub struct Unanswered {
    /// Its contact number.
    pub n: u64,
    /// Its territory.
    pub territory: String,
    /// When it was sent.
    pub sent: Instant,
}

/// A setting the admin client changes: the last acknowledged value, and values sent
/// since without an answer (any of which the store may hold).
#[derive(Clone, Debug, Default)]
pub struct Setting<T> {
    /// Last acknowledged.
    pub acked: T,
    /// Sent since, unanswered.
    pub maybe: Vec<T>,
}

impl<T: PartialEq + Clone + std::fmt::Debug> Setting<T> {
    /// A setting at `value`.
    pub fn new(value: T) -> Self {
        Setting {
            acked: value,
            maybe: Vec::new(),
        }
    }

    /// Accepts `seen` if it is the acknowledged value or one sent since; it becomes
    /// the acknowledged value.
    pub fn resolve(&mut self, seen: T, what: &str) -> Result<(), String> {
        if seen != self.acked && !self.maybe.contains(&seen) {
            return Err(format!(
                "{what} is {seen:?}, but the last acknowledged value was {:?} and only {:?} were sent since",
                self.acked, self.maybe
            ));
        }
        self.acked = seen;
        self.maybe.clear();
        Ok(())
    }
}

/// A rep's admin-controlled fields.
#[derive(Clone, Debug, PartialEq)]
pub struct RepConf {
    /// Its territory.
    pub territory: &'static str,
    /// Tier.
    pub tier: &'static str,
    /// Capacity.
    pub capacity: u32,
    /// `available` or `away`.
    pub status: &'static str,
}

impl RepConf {
    /// The `PUT /admin/reps/{id}` body.
    pub fn body(&self, id: &str) -> Value {
        json!({"name": id, "territories": [self.territory], "tier": self.tier,
            "skills": ["hospital-lab"], "capacity": self.capacity, "status": self.status})
    }
}

/// Counters for the report.
#[derive(Debug, Default)]
pub struct Counts {
    /// New leads acknowledged (201/202), single and batched.
    pub leads: u64,
    /// Duplicates acknowledged (200).
    pub duplicates: u64,
    /// Lifecycle events acknowledged.
    pub events: u64,
    /// Admin changes acknowledged.
    pub admin: u64,
    /// Requests of any kind the kills cut off.
    pub cut_off: u64,
}

/// Everything the clients were told, shared by their threads.
#[derive(Debug, Default)]
pub struct Model {
    /// Known leads by id.
    pub leads: HashMap<String, Lead>,
    /// Lead ids by contact number (a closed lead's contact may return as a new lead).
    pub by_contact: HashMap<u64, Vec<String>>,
    /// Contacts of acknowledged leads, for repeats.
    pub contacts: Vec<(u64, String)>,
    /// Duplicate answers naming a lead not yet known (its own answer may come later).
    pub pending_dups: HashMap<String, u32>,
    /// Repeats cut off by the kill, by contact: each may have added a duplicate hit.
    pub maybe_dups: HashMap<u64, u32>,
    /// Intake requests cut off by the kill.
    pub unanswered: Vec<Unanswered>,
    /// Assigned open leads the event clients may pick.
    pub pool: Vec<String>,
    /// Rep settings.
    pub reps: BTreeMap<String, Setting<RepConf>>,
    /// The vip-tier plugin's active version.
    pub plugin: Setting<u32>,
    /// Answers that were not 2xx, and errors before the kill: each one fails the run.
    pub failures: Vec<String>,
    /// For the report.
    pub counts: Counts,
}

impl Model {
    /// Records a 201/202 answer for contact `n` in `territory`.
    pub fn intake(&mut self, n: u64, territory: &str, answer: &Value, sent: Instant) {
        let id = answer["lead_id"].as_str().unwrap_or_default().to_string();
        let intake = match answer["status"].as_str() {
            Some("assigned") => Intake::Assigned(answer["rep_id"].as_str().unwrap_or("").into()),
            Some("queued") => Intake::Queued,
            other => {
                self.failures
                    .push(format!("intake answered status {other:?}: {answer}"));
                return;
            }
        };
        if answer["territory_id"] != territory {
            self.failures.push(format!(
                "lead {id} for territory {territory} was routed in {}",
                answer["territory_id"]
            ));
        }
        let rep = match &intake {
            Intake::Assigned(rep) => Some(rep.clone()),
            _ => None,
        };
        if rep.is_some() {
            self.pool.push(id.clone());
        }
        let dups = self.pending_dups.remove(&id).unwrap_or(0);
        self.counts.leads += 1;
        self.contacts.push((n, territory.to_string()));
        self.by_contact.entry(n).or_default().push(id.clone());
        self.leads.insert(
            id,
            Lead {
                n,
                territory: territory.to_string(),
                intake,
                sent,
                acked: Some(Instant::now()),
                events: Vec::new(),
                maybe: None,
                dups,
                rep,
                done: false,
                dirty: true,
            },
        );
    }

    /// Records a 200 duplicate answer.
    pub fn duplicate(&mut self, answer: &Value) {
        self.counts.duplicates += 1;
        let of = answer["duplicate_of"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match self.leads.get_mut(&of) {
            Some(lead) => {
                lead.dups += 1;
                lead.dirty = true;
            }
            None => *self.pending_dups.entry(of).or_default() += 1,
        }
    }
}
