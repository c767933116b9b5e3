//! The host side of the plugin ABI: framing a routing question for a module, and
//! reading and checking its answer. The wire format itself is defined once, in
//! `leadroute_plugin_sdk::abi`; this file adds what only the host knows: how many
//! candidates there are, what counts as a failure.

use std::fmt;

use leadroute_plugin_sdk::abi::{self as wire, CandidateRef, Decoded, InputRef, LeadRef};
use serde_json::value::RawValue;

use crate::domain::Lead;
use crate::strategy::Candidate;

/// Why a plugin call did not produce a usable ranking: a closed set, used as the
/// `reason` label of `leadroute_plugin_failures_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// The module trapped (`unreachable`, out-of-bounds access, a Rust panic, …).
    Trap,
    /// It used up its fuel budget.
    OutOfFuel,
    /// It ran past the wall-clock deadline (the epoch backstop).
    Timeout,
    /// It tried to grow memory past the cap.
    OutOfMemory,
    /// It exhausted the wasm stack (runaway recursion).
    StackOverflow,
    /// The encoded input exceeded the input cap; the module was not called.
    InputTooLarge,
    /// The answer exceeded the output cap.
    OutputTooLarge,
    /// The answer was not the documented layout, ranked a candidate twice, or lay out
    /// of memory bounds.
    InvalidOutput,
    /// The answer ranked a candidate index out of range (no such rep).
    UnknownRep,
    /// The answer ranked nobody.
    EmptyRanking,
    /// The plugin answered with an error (typically its `plugin_config`).
    PluginError,
    /// The module could not be instantiated (instance pool exhausted, …).
    Unavailable,
}

impl FailureReason {
    /// Every reason, for metrics and reports.
    pub const ALL: [FailureReason; 12] = [
        FailureReason::Trap,
        FailureReason::OutOfFuel,
        FailureReason::Timeout,
        FailureReason::OutOfMemory,
        FailureReason::StackOverflow,
        FailureReason::InputTooLarge,
        FailureReason::OutputTooLarge,
        FailureReason::InvalidOutput,
        FailureReason::UnknownRep,
        FailureReason::EmptyRanking,
        FailureReason::PluginError,
        FailureReason::Unavailable,
    ];

    /// Whether the module is to blame, so the failure counts towards opening its
    /// circuit. An input over the cap (a large territory) and no free instance (a
    /// replay holding the pool) are the host's: opening the circuit would bypass the
    /// plugin for every territory until an operator acts, for nothing it did.
    pub fn blames_plugin(self) -> bool {
        !matches!(
            self,
            FailureReason::InputTooLarge | FailureReason::Unavailable
        )
    }

    /// The metric label and the prefix of a decision's `fallback`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Trap => "trap",
            FailureReason::OutOfFuel => "out_of_fuel",
            FailureReason::Timeout => "timeout",
            FailureReason::OutOfMemory => "out_of_memory",
            FailureReason::StackOverflow => "stack_overflow",
            FailureReason::InputTooLarge => "input_too_large",
            FailureReason::OutputTooLarge => "output_too_large",
            FailureReason::InvalidOutput => "invalid_output",
            FailureReason::UnknownRep => "unknown_rep",
            FailureReason::EmptyRanking => "empty_ranking",
            FailureReason::PluginError => "plugin_error",
            FailureReason::Unavailable => "unavailable",
        }
    }

    /// The code of a decision's `fallback` this reason caused, as the API names it.
    pub fn fallback_code(self) -> &'static str {
        match self {
            FailureReason::Trap => "plugin_trap",
            FailureReason::OutOfFuel => "plugin_fuel_exhausted",
            FailureReason::Timeout => "plugin_timeout",
            FailureReason::OutOfMemory => "plugin_out_of_memory",
            FailureReason::StackOverflow => "plugin_stack_overflow",
            FailureReason::InputTooLarge => "plugin_input_too_large",
            FailureReason::OutputTooLarge => "plugin_output_too_large",
            FailureReason::InvalidOutput => "plugin_invalid_output",
            FailureReason::UnknownRep => "plugin_unknown_rep",
            FailureReason::EmptyRanking => "plugin_empty_ranking",
            FailureReason::PluginError => "plugin_error",
            FailureReason::Unavailable => "plugin_unavailable",
        }
    }

    pub(crate) fn index(self) -> usize {
        FailureReason::ALL
            .iter()
            .position(|r| *r == self)
            .expect("ALL lists every reason")
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed call: the reason label and a detail for humans.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Failure {
    pub reason: FailureReason,
    pub detail: String,
}

impl Failure {
    pub(crate) fn new(reason: FailureReason, detail: impl Into<String>) -> Self {
        Failure {
            reason,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

/// A usable answer, in candidate indices.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Answer {
    /// Candidate indices, best first, and the plugin's reason.
    Ranked { order: Vec<usize>, reason: String },
    /// The territory's fallback decides.
    NoPreference { reason: String },
}

/// Builds the input of one routing question and hands it to `f`, which writes it
/// where the module reads it (straight into guest memory, via
/// [`InputRef::encode_into`]). Borrows everything but the lead id's text.
pub(crate) fn with_input<R>(
    lead: &Lead,
    candidates: &[Candidate<'_>],
    territory: &str,
    plugin_config: &RawValue,
    now: u64,
    f: impl FnOnce(&InputRef<'_>) -> R,
) -> R {
    let lead_id = lead.id.to_string();
    let candidates: Vec<CandidateRef<'_>> = candidates
        .iter()
        .map(|c| CandidateRef {
            id: c.id.as_str(),
            load: c.load,
            capacity: c.capacity,
            weight: c.weight,
            skills: c.skills,
            tier: c.tier,
            last_assigned_at: c.last_assigned_at,
        })
        .collect();
    f(&InputRef {
        lead: LeadRef {
            id: &lead_id,
            region: lead.region.as_deref(),
            industry: lead.industry.as_deref(),
            purchase_amount: lead.purchase_amount,
            source: lead.source.as_deref(),
            // Validated as a JSON object at intake; passed as text, parsed only by a
            // plugin that reads it.
            attributes: &lead.attributes,
        },
        candidates: &candidates,
        territory,
        plugin_config: plugin_config.get(),
        now,
    })
}

/// Reads a module's answer and checks it against the `candidates` (how many there
/// were): every index in range, none twice, at least one.
pub(crate) fn decode_output(bytes: &[u8], candidates: usize) -> Result<Answer, Failure> {
    let output = wire::decode_output(bytes).map_err(|e| {
        Failure::new(
            FailureReason::InvalidOutput,
            format!(
                "answer is not in the ABI v{} layout: {e}",
                wire::ABI_VERSION
            ),
        )
    })?;
    match output {
        Decoded::Error { message } => {
            Err(Failure::new(FailureReason::PluginError, wire::cut(message)))
        }
        Decoded::NoPreference { reason } => Ok(Answer::NoPreference {
            reason: wire::cut(reason).to_string(),
        }),
        Decoded::Ranked { order, reason } => {
            if order.len() == 0 {
                return Err(Failure::new(
                    FailureReason::EmptyRanking,
                    "the answer ranked no rep",
                ));
            }
            let mut seen = vec![false; candidates];
            let mut ranked = Vec::with_capacity(order.len());
            for i in order {
                let Some(was) = seen.get_mut(i as usize) else {
                    return Err(Failure::new(
                        FailureReason::UnknownRep,
                        format!("ranked candidate index {i}; there are {candidates} candidates"),
                    ));
                };
                if std::mem::replace(was, true) {
                    return Err(Failure::new(
                        FailureReason::InvalidOutput,
                        format!("ranked candidate index {i} twice"),
                    ));
                }
                ranked.push(i as usize);
            }
            Ok(Answer::Ranked {
                order: ranked,
                reason: wire::cut(reason).to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::test_support::{lead, rep, view};
    use leadroute_plugin_sdk::RouteInput;
    use leadroute_plugin_sdk::abi::Output;

    #[test]
    fn answers_are_checked_against_the_candidates() {
        let ranked = |order: &[u32]| Output::Ranked { order, reason: "r" }.encode();
        assert_eq!(
            decode_output(&ranked(&[1, 0]), 2),
            Ok(Answer::Ranked {
                order: vec![1, 0],
                reason: "r".into()
            })
        );
        let reason = |bytes: &[u8]| decode_output(bytes, 2).unwrap_err().reason;
        assert_eq!(reason(&ranked(&[2])), FailureReason::UnknownRep);
        assert_eq!(reason(&ranked(&[u32::MAX])), FailureReason::UnknownRep);
        assert_eq!(reason(&ranked(&[])), FailureReason::EmptyRanking);
        assert_eq!(reason(&ranked(&[0, 0])), FailureReason::InvalidOutput);
        assert_eq!(reason(b"\xff\x00garbage"), FailureReason::InvalidOutput);
        let mut truncated = ranked(&[1, 0]);
        truncated.pop();
        assert_eq!(reason(&truncated), FailureReason::InvalidOutput);
        assert_eq!(
            reason(
                &Output::Error {
                    message: "bad config"
                }
                .encode()
            ),
            FailureReason::PluginError
        );
    }

    #[test]
    fn long_texts_are_cut_even_if_the_guest_did_not() {
        // Hand-built, as a non-SDK guest might: 1000 characters of reason.
        let text = "é".repeat(1000);
        let mut bytes = Vec::new();
        for v in [wire::kind::NO_PREFERENCE, 0, text.len() as u32] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        bytes.extend_from_slice(text.as_bytes());
        let Ok(Answer::NoPreference { reason }) = decode_output(&bytes, 1) else {
            panic!("no preference expected");
        };
        assert_eq!(reason.chars().count(), wire::MAX_TEXT_CHARS);
    }

    #[test]
    fn input_reads_back_through_the_sdk_views() {
        let reps = [rep("a", 2, 5)];
        let c = view(&reps);
        let config = RawValue::from_string(r#"{"x":1}"#.into()).unwrap();
        let lead = lead(Some("lab"), 7.0);
        let bytes = with_input(&lead, &c, "east", &config, 99, |i| i.encode().unwrap());
        let input = RouteInput::decode(&bytes).unwrap();
        let first = input.candidate(0).unwrap();
        assert_eq!((first.id(), first.load()), ("a", 2));
        assert_eq!(input.lead().id(), lead.id.to_string());
        assert_eq!(input.lead().industry(), Some("lab"));
        assert_eq!(input.lead().purchase_amount(), 7.0);
        assert_eq!(input.lead().attributes_json(), lead.attributes);
        assert_eq!(input.plugin_config_json(), r#"{"x":1}"#);
        assert_eq!((input.territory_id(), input.now()), ("east", 99));
    }
}
