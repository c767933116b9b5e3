//! A territory's plugin binding as a [`Strategy`]: encode, call, check, and on any
//! failure let the territory's built-in fallback decide, so the lead is never lost.

use std::sync::Arc;

use serde_json::value::RawValue;

use super::abi::{Answer, FailureReason, with_input};
use super::registry::{CallOutcome, Registry};
use crate::clock::Clock;
use crate::domain::{BuiltinStrategy, Lead, RepId, TerritoryId};
use crate::error::ValidationError;
use crate::strategy::{self, Candidate, Ranking, Strategy};

/// The `plugin_config` key naming the built-in that decides when the plugin cannot.
/// The host removes it before the plugin sees the config.
pub const FALLBACK_KEY: &str = "fallback";

/// The code API clients match a decision's `fallback` by (`plugin_fuel_exhausted`,
/// `plugin_trap`, …): what stands before the first `:` of its text, the reason the
/// fallback decided. The text itself, with the plugin version and the detail, is kept
/// and shown as `fallback_detail`; routes store the text, so a code is derived the
/// same way from leads routed by earlier builds.
pub fn fallback_code(fallback: &str) -> &'static str {
    let reason = fallback.split(':').next().unwrap_or_default();
    match reason {
        NO_PREFERENCE => "plugin_no_preference",
        CIRCUIT_OPEN => "plugin_circuit_open",
        _ => FailureReason::ALL
            .into_iter()
            .find(|r| r.as_str() == reason)
            .map_or("plugin_failed", FailureReason::fallback_code),
    }
}

/// The reason of a fallback after the plugin answered "no preference".
const NO_PREFERENCE: &str = "no_preference";
/// The reason of a fallback while the plugin's circuit breaker is open.
const CIRCUIT_OPEN: &str = "circuit_open";

/// Routes with a plugin; see the module docs.
pub(crate) struct PluginStrategy {
    registry: Arc<Registry>,
    name: String,
    /// `None` follows the active version.
    pinned: Option<u32>,
    territory: TerritoryId,
    /// The territory's `plugin_config` minus [`FALLBACK_KEY`].
    config: Box<RawValue>,
    fallback: Box<dyn Strategy>,
    clock: Arc<dyn Clock>,
}

/// Splits a territory's `plugin_config` into the fallback built-in and the config the
/// plugin sees.
pub(crate) fn split_config(
    config: &serde_json::Value,
) -> Result<(BuiltinStrategy, Box<RawValue>, serde_json::Value), ValidationError> {
    let mut config = config.clone();
    let fallback = match config.as_object_mut().and_then(|o| o.remove(FALLBACK_KEY)) {
        None => BuiltinStrategy::LeastLoaded,
        Some(v) => serde_json::from_value(v).map_err(|_| {
            ValidationError::field(
                format!("plugin_config.{FALLBACK_KEY}"),
                "must name a built-in strategy: least_loaded, round_robin or rules",
            )
        })?,
    };
    let raw = serde_json::value::to_raw_value(&config)
        .map_err(|e| ValidationError::field("plugin_config", e.to_string()))?;
    Ok((fallback, raw, config))
}

impl PluginStrategy {
    /// Binds plugin `name` (`pinned` version, or the active one) for `territory`.
    pub(crate) fn new(
        registry: Arc<Registry>,
        name: String,
        pinned: Option<u32>,
        territory: TerritoryId,
        plugin_config: &serde_json::Value,
        clock: Arc<dyn Clock>,
    ) -> Result<PluginStrategy, ValidationError> {
        let (which, config, plain) = split_config(plugin_config)?;
        // The fallback reads the same config, so `rules` as a fallback honours
        // `vip_threshold`.
        let fallback = strategy::builtin(which, &plain)?;
        Ok(PluginStrategy {
            registry,
            name,
            pinned,
            territory,
            config,
            fallback,
            clock,
        })
    }

    fn rank_with(&self, lead: &Lead, candidates: &[Candidate<'_>], dry: bool) -> Ranking {
        if candidates.is_empty() {
            return Ranking::new(Vec::new(), "no candidates");
        }
        let Some(entry) = self.registry.get(&self.name) else {
            return self.fall_back(
                lead,
                candidates,
                format!(
                    "{}: plugin {} is not installed",
                    FailureReason::Unavailable,
                    self.name
                ),
            );
        };
        if entry.circuit_open() {
            return self.fall_back(
                lead,
                candidates,
                format!(
                    "{CIRCUIT_OPEN}: plugin {} is bypassed after repeated failures",
                    self.name
                ),
            );
        }
        // Held until the decision ends: an activation meanwhile does not affect it.
        let Some(version) = entry.version(self.pinned) else {
            return self.fall_back(
                lead,
                candidates,
                format!(
                    "{}: plugin {} has no version {:?}",
                    FailureReason::Unavailable,
                    self.name,
                    self.pinned
                ),
            );
        };
        let outcome = with_input(
            lead,
            candidates,
            self.territory.as_str(),
            &self.config,
            self.clock.now(),
            |input| self.registry.call(&entry, &version, input, dry),
        );
        match outcome {
            CallOutcome::Answer(Answer::Ranked { order, reason }) => Ranking {
                order,
                reason,
                decided_by: Some(version.decided_by.clone()),
                fallback: None,
            },
            CallOutcome::Answer(Answer::NoPreference { reason }) => self.fall_back(
                lead,
                candidates,
                format!("{NO_PREFERENCE}: {}: {reason}", version.decided_by),
            ),
            CallOutcome::Failed(failure) => self.fall_back(
                lead,
                candidates,
                format!(
                    "{}: {}: {}",
                    failure.reason, version.decided_by, failure.detail
                ),
            ),
        }
    }

    fn fall_back(&self, lead: &Lead, candidates: &[Candidate<'_>], why: String) -> Ranking {
        let mut ranking = self.fallback.rank(lead, candidates);
        ranking.decided_by = Some(self.fallback.decided_by());
        ranking.fallback = Some(why);
        ranking
    }
}

impl Strategy for PluginStrategy {
    fn decided_by(&self) -> String {
        match self.pinned {
            Some(v) => format!("plugin:{}@{v}", self.name),
            None => format!("plugin:{}", self.name),
        }
    }

    fn rank(&self, lead: &Lead, candidates: &[Candidate<'_>]) -> Ranking {
        self.rank_with(lead, candidates, false)
    }

    fn rank_dry(&self, lead: &Lead, candidates: &[Candidate<'_>]) -> Ranking {
        self.rank_with(lead, candidates, true)
    }

    fn on_assigned(&mut self, rep: &RepId, weight: f64) {
        // Keeps a round-robin fallback's rotation fair whoever decided.
        self.fallback.on_assigned(rep, weight);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fallback_text_has_the_code_clients_match() {
        for reason in FailureReason::ALL {
            let text = format!("{reason}: plugin:vip-tier@3: detail: with colons");
            assert_eq!(fallback_code(&text), reason.fallback_code());
        }
        let cases = [
            (
                "out_of_fuel: plugin:vip-tier@3: used 1000000",
                "plugin_fuel_exhausted",
            ),
            ("trap: plugin:vip-tier@3: unreachable", "plugin_trap"),
            (
                "no_preference: plugin:vip-tier@3: nobody senior",
                "plugin_no_preference",
            ),
            (
                "circuit_open: plugin vip-tier is bypassed",
                "plugin_circuit_open",
            ),
            (
                "unavailable: plugin vip-tier is not installed",
                "plugin_unavailable",
            ),
            ("something new", "plugin_failed"),
        ];
        for (text, code) in cases {
            assert_eq!(fallback_code(text), code, "{text}");
        }
        // Every code is distinct: a client can tell each reason apart.
        let mut codes: Vec<_> = FailureReason::ALL
            .map(FailureReason::fallback_code)
            .to_vec();
        codes.extend([
            "plugin_no_preference",
            "plugin_circuit_open",
            "plugin_failed",
        ]);
        let count = codes.len();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), count);
    }
}
