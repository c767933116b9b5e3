//! Strategies: given a lead and the reps who could take it, rank the reps.
//!
//! A strategy only ranks; it never reserves. The territory actor reserves capacity
//! with the reps in ranked order, so a stale view can cost a retry but never an
//! over-assignment. Built-ins live one per file; plugins plug in behind the same trait.

mod least_loaded;
mod round_robin;
mod rules;

pub use least_loaded::LeastLoaded;
pub use round_robin::RoundRobin;
pub use rules::{DEFAULT_VIP_THRESHOLD, Rules};

use crate::clock::UnixMillis;
use crate::domain::{BuiltinStrategy, Lead, RepId};
use crate::error::ValidationError;

/// A rep that could take the lead: available and under capacity.
#[derive(Clone, Copy, Debug)]
pub struct Candidate<'a> {
    /// The rep.
    pub id: &'a RepId,
    /// Open leads.
    pub load: u32,
    /// Most open leads.
    pub capacity: u32,
    /// Relative share of new leads.
    pub weight: f64,
    /// Industry tags.
    pub skills: &'a [String],
    /// Seniority tag.
    pub tier: &'a str,
    /// When the rep last got a lead.
    pub last_assigned_at: Option<UnixMillis>,
}

/// A strategy's answer: candidate indices, best first, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Ranking {
    /// Indices into the candidate slice, best first. May omit candidates the strategy
    /// would never pick.
    pub order: Vec<usize>,
    /// A short explanation for the audit trail.
    pub reason: String,
    /// Who actually decided, when it differs from [`Strategy::decided_by`]: the plugin
    /// version that ran (`plugin:NAME@3`), or the built-in that stood in for it.
    pub decided_by: Option<String>,
    /// Why a fallback decided instead of the configured strategy, if one did.
    pub fallback: Option<String>,
}

impl Ranking {
    /// A ranking decided by the strategy itself.
    pub fn new(order: Vec<usize>, reason: impl Into<String>) -> Self {
        Ranking {
            order,
            reason: reason.into(),
            decided_by: None,
            fallback: None,
        }
    }
}

/// Ranks candidates for a lead.
pub trait Strategy: Send + 'static {
    /// The name recorded as `decided_by` (`builtin:least_loaded`, …).
    fn decided_by(&self) -> String;

    /// Ranks `candidates` for `lead`. Must not change routing state: simulations call
    /// it too (through [`Strategy::rank_dry`]).
    fn rank(&self, lead: &Lead, candidates: &[Candidate<'_>]) -> Ranking;

    /// Ranks like [`Strategy::rank`] for a simulation: also leaves statistics alone
    /// (call counts, failure counters, circuit breakers).
    fn rank_dry(&self, lead: &Lead, candidates: &[Candidate<'_>]) -> Ranking {
        self.rank(lead, candidates)
    }

    /// Tells the strategy that `rep` got a lead, for strategies that keep rotation state.
    fn on_assigned(&mut self, _rep: &RepId, _weight: f64) {}
}

/// Builds a built-in strategy from a territory's `plugin_config`.
pub fn builtin(
    which: BuiltinStrategy,
    config: &serde_json::Value,
) -> Result<Box<dyn Strategy>, ValidationError> {
    Ok(match which {
        BuiltinStrategy::LeastLoaded => Box::new(LeastLoaded),
        BuiltinStrategy::RoundRobin => Box::new(RoundRobin::default()),
        BuiltinStrategy::Rules => Box::new(Rules::from_config(config)?),
    })
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// An owned candidate, so tests can build slices of borrowed ones.
    pub struct Owned {
        pub id: RepId,
        pub load: u32,
        pub capacity: u32,
        pub weight: f64,
        pub skills: Vec<String>,
        pub tier: String,
        pub last: Option<UnixMillis>,
    }

    pub fn rep(id: &str, load: u32, capacity: u32) -> Owned {
        Owned {
            id: RepId::new(id).unwrap(),
            load,
            capacity,
            weight: 1.0,
            skills: vec![],
            tier: "junior".into(),
            last: None,
        }
    }

    pub fn view(reps: &[Owned]) -> Vec<Candidate<'_>> {
        reps.iter()
            .map(|r| Candidate {
                id: &r.id,
                load: r.load,
                capacity: r.capacity,
                weight: r.weight,
                skills: &r.skills,
                tier: &r.tier,
                last_assigned_at: r.last,
            })
            .collect()
    }

    pub fn lead(industry: Option<&str>, amount: f64) -> Lead {
        crate::domain::LeadInput {
            external_id: Some("x".into()),
            industry: industry.map(str::to_string),
            purchase_amount: Some(amount),
            ..Default::default()
        }
        .validate(crate::domain::LeadId::from_ulid(ulid::Ulid::new()), 0)
        .unwrap()
    }

    pub fn ids(ranking: &Ranking, candidates: &[Candidate<'_>]) -> Vec<String> {
        ranking
            .order
            .iter()
            .map(|&i| candidates[i].id.to_string())
            .collect()
    }
}
