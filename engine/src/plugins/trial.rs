//! A trial: one pinned plugin version asked how it would decide, without deciding.
//!
//! Shadow runs (beside a territory's live strategy) and replays (over stored history)
//! both ask a version for its ranking and compare it with what really happened. A
//! trial is dry: it leaves call statistics, failure counters and the circuit breaker
//! alone, because a version on trial must never change how live traffic is routed.
//! When the version answers "no preference", the territory's fallback ranks, exactly
//! as it would if the version were live, so the comparison is like for like.

use std::sync::Arc;

use serde_json::value::RawValue;

use super::abi::{Answer, Failure, with_input};
use super::registry::{CallOutcome, LoadedVersion, PluginEntry, Registry, not_found};
use super::strategy::split_config;
use crate::domain::{Lead, TerritoryId};
use crate::error::Result;
use crate::strategy::{self, Candidate, Strategy};

/// How a version on trial would rank the candidates.
pub(crate) enum TrialOutcome {
    /// Candidate indices, best first, and why.
    Ranked { order: Vec<usize>, reason: String },
    /// The call failed; nothing to compare.
    Failed(Failure),
}

/// One plugin version bound to one territory's configuration; see the module docs.
pub(crate) struct Trial {
    registry: Arc<Registry>,
    entry: Arc<PluginEntry>,
    version: Arc<LoadedVersion>,
    number: u32,
    territory: TerritoryId,
    config: Box<RawValue>,
    fallback: Box<dyn Strategy>,
}

impl Trial {
    /// Binds version `version` of plugin `name` to `territory` and its
    /// `plugin_config`. Fails with `PluginNotFound` when either does not exist.
    pub(crate) fn new(
        registry: Arc<Registry>,
        name: &str,
        version: u32,
        territory: TerritoryId,
        plugin_config: &serde_json::Value,
    ) -> Result<Trial> {
        let entry = registry
            .get(name)
            .ok_or_else(|| not_found(name, Some(version)))?;
        let loaded = entry
            .version(Some(version))
            .ok_or_else(|| not_found(name, Some(version)))?;
        let (which, config, plain) = split_config(plugin_config)?;
        let fallback = strategy::builtin(which, &plain)?;
        Ok(Trial {
            registry,
            entry,
            version: loaded,
            number: version,
            territory,
            config,
            fallback,
        })
    }

    /// The plugin's name.
    pub(crate) fn plugin(&self) -> &str {
        self.entry.name()
    }

    /// The version on trial.
    pub(crate) fn version(&self) -> u32 {
        self.number
    }

    /// Asks the version to rank `candidates` for `lead` as of `now`.
    pub(crate) fn run(&self, lead: &Lead, candidates: &[Candidate<'_>], now: u64) -> TrialOutcome {
        if candidates.is_empty() {
            return TrialOutcome::Ranked {
                order: Vec::new(),
                reason: "no candidates".into(),
            };
        }
        let outcome = with_input(
            lead,
            candidates,
            self.territory.as_str(),
            &self.config,
            now,
            |input| self.registry.call(&self.entry, &self.version, input, true),
        );
        match outcome {
            CallOutcome::Answer(Answer::Ranked { order, reason }) => {
                TrialOutcome::Ranked { order, reason }
            }
            CallOutcome::Answer(Answer::NoPreference { reason }) => {
                let ranking = self.fallback.rank(lead, candidates);
                TrialOutcome::Ranked {
                    order: ranking.order,
                    reason: format!(
                        "no_preference: {reason}; {} decided: {}",
                        self.fallback.decided_by(),
                        ranking.reason
                    ),
                }
            }
            CallOutcome::Failed(failure) => TrialOutcome::Failed(failure),
        }
    }
}
