//! The native harness: unit-test a plugin as plain Rust, through the same binary
//! encoding the host uses (and the same guest code the module runs), so
//! `plugin_config` decoding and the answer's checks are tested too.
//!
//! ```
//! use leadroute_plugin_sdk::prelude::*;
//!
//! #[derive(Default)]
//! struct First;
//! impl Plugin for First {
//!     type Config = ();
//!     fn route(&self, input: &RouteInput, _: &()) -> Decision {
//!         Decision::ranked(input.candidates(), "first come")
//!     }
//! }
//!
//! let input = testing::input()
//!     .industry("hospital-lab")
//!     .candidate(testing::candidate("a").skills(&["hospital-lab"]))
//!     .candidate(testing::candidate("b"));
//! assert_eq!(testing::run::<First>(&input).unwrap().reps(), ["a", "b"]);
//! ```

use crate::Plugin;
use crate::abi::{CandidateRef, Decoded, InputRef, LeadRef, decode_output};
use crate::guest::route_bytes;
use crate::types::RouteInput;

/// A routing question, owned, to build in tests: [`input`], then the builder methods.
/// Its fields are public so a test can tweak one.
#[derive(Clone, Debug, PartialEq)]
pub struct Input {
    /// The lead.
    pub lead: InputLead,
    /// The candidates; a [`Answer`] names them by id.
    pub candidates: Vec<Rep>,
    /// The territory's id.
    pub territory: String,
    /// `plugin_config`.
    pub plugin_config: serde_json::Value,
    /// Unix milliseconds.
    pub now: u64,
}

/// The lead of an [`Input`].
#[derive(Clone, Debug, PartialEq)]
pub struct InputLead {
    /// Lead id.
    pub id: String,
    /// Region code.
    pub region: Option<String>,
    /// Industry tag.
    pub industry: Option<String>,
    /// Purchase amount.
    pub purchase_amount: f64,
    /// Source.
    pub source: Option<String>,
    /// Attributes, a JSON object.
    pub attributes: serde_json::Value,
}

/// A candidate of an [`Input`]: [`candidate`], then the builder methods.
#[derive(Clone, Debug, PartialEq)]
pub struct Rep {
    /// Rep id.
    pub id: String,
    /// Open leads.
    pub load: u32,
    /// Capacity.
    pub capacity: u32,
    /// Weight.
    pub weight: f64,
    /// Skills.
    pub skills: Vec<String>,
    /// Tier.
    pub tier: String,
    /// Last assignment, Unix milliseconds.
    pub last_assigned_at: Option<u64>,
}

/// A plugin's answer as the host would accept it, with candidates named by id.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// Rep ids, best first, and the reason.
    Ranked {
        /// Rep ids.
        reps: Vec<String>,
        /// The reason, as the host keeps it.
        reason: String,
    },
    /// The fallback would decide.
    NoPreference {
        /// The reason.
        reason: String,
    },
}

impl Answer {
    /// The ranked rep ids (empty for no preference).
    pub fn reps(&self) -> &[String] {
        match self {
            Answer::Ranked { reps, .. } => reps,
            Answer::NoPreference { .. } => &[],
        }
    }

    /// The reason given.
    pub fn reason(&self) -> &str {
        match self {
            Answer::Ranked { reason, .. } | Answer::NoPreference { reason } => reason,
        }
    }

    /// Whether the plugin left the choice to the fallback.
    pub fn is_no_preference(&self) -> bool {
        matches!(self, Answer::NoPreference { .. })
    }
}

/// Runs plugin `P` on `input` exactly as the host would: encode the binary input,
/// run the guest side (decode `plugin_config` into `P::Config`, check it, route,
/// encode the answer), then decode the answer and check it against the candidates.
/// `Err` carries what the host would report: the plugin's error (e.g. a
/// `plugin_config` message) or why its answer would be refused.
pub fn run<P: Plugin>(input: &Input) -> Result<Answer, String> {
    let output = route_bytes::<P>(&input.encode());
    let n = input.candidates.len();
    match decode_output(&output)? {
        Decoded::Error { message } => Err(message.to_string()),
        Decoded::NoPreference { reason } => Ok(Answer::NoPreference {
            reason: reason.to_string(),
        }),
        Decoded::Ranked { order, reason } => {
            let mut seen = vec![false; n];
            let mut reps = Vec::with_capacity(order.len());
            for i in order {
                let Some(was) = seen.get_mut(i as usize) else {
                    return Err(format!(
                        "ranked candidate index {i}; there are {n} candidates"
                    ));
                };
                if std::mem::replace(was, true) {
                    return Err(format!("ranked candidate index {i} twice"));
                }
                reps.push(input.candidates[i as usize].id.clone());
            }
            if reps.is_empty() {
                return Err("the answer ranked no rep".into());
            }
            Ok(Answer::Ranked {
                reps,
                reason: reason.to_string(),
            })
        }
    }
}

/// An input with a lead `L1` in region `CN-SH`, no candidates, `plugin_config` `{}`,
/// territory `east`, at Unix millisecond 1_700_000_000_000.
pub fn input() -> Input {
    Input {
        lead: InputLead {
            id: "L1".into(),
            region: Some("CN-SH".into()),
            industry: None,
            purchase_amount: 0.0,
            source: None,
            attributes: serde_json::json!({}),
        },
        candidates: Vec::new(),
        territory: "east".into(),
        plugin_config: serde_json::json!({}),
        now: 1_700_000_000_000,
    }
}

/// A candidate `id`: load 0 of 10, weight 1, no skills, tier `junior`, never assigned.
pub fn candidate(id: &str) -> Rep {
    Rep {
        id: id.into(),
        load: 0,
        capacity: 10,
        weight: 1.0,
        skills: Vec::new(),
        tier: "junior".into(),
        last_assigned_at: None,
    }
}

impl Input {
    /// Adds a candidate.
    pub fn candidate(mut self, c: Rep) -> Self {
        self.candidates.push(c);
        self
    }

    /// Sets the lead's industry.
    pub fn industry(mut self, industry: &str) -> Self {
        self.lead.industry = Some(industry.into());
        self
    }

    /// Sets the lead's purchase amount.
    pub fn purchase_amount(mut self, amount: f64) -> Self {
        self.lead.purchase_amount = amount;
        self
    }

    /// Sets the lead's source.
    pub fn source(mut self, source: &str) -> Self {
        self.lead.source = Some(source.into());
        self
    }

    /// Sets the lead's attributes (a JSON object).
    pub fn attributes(mut self, attributes: serde_json::Value) -> Self {
        self.lead.attributes = attributes;
        self
    }

    /// Sets `plugin_config`.
    pub fn config(mut self, config: serde_json::Value) -> Self {
        self.plugin_config = config;
        self
    }

    /// The input bytes, as the host writes them.
    pub fn encode(&self) -> Vec<u8> {
        let attributes = self.lead.attributes.to_string();
        let config = self.plugin_config.to_string();
        let candidates: Vec<CandidateRef<'_>> = self
            .candidates
            .iter()
            .map(|c| CandidateRef {
                id: &c.id,
                load: c.load,
                capacity: c.capacity,
                weight: c.weight,
                skills: &c.skills,
                tier: &c.tier,
                last_assigned_at: c.last_assigned_at,
            })
            .collect();
        let lead = &self.lead;
        InputRef {
            lead: LeadRef {
                id: &lead.id,
                region: lead.region.as_deref(),
                industry: lead.industry.as_deref(),
                purchase_amount: lead.purchase_amount,
                source: lead.source.as_deref(),
                attributes: &attributes,
            },
            candidates: &candidates,
            territory: &self.territory,
            plugin_config: &config,
            now: self.now,
        }
        .encode()
        .expect("a test input is far below 4 GiB")
    }

    /// Calls `f` with the view a plugin would get, to test helpers that take a
    /// [`RouteInput`], [`crate::Lead`] or [`crate::Candidate`].
    pub fn with_view<R>(&self, f: impl FnOnce(&RouteInput<'_>) -> R) -> R {
        let bytes = self.encode();
        let view = RouteInput::decode(&bytes).expect("the SDK decodes its own encoding");
        f(&view)
    }
}

impl Rep {
    /// Sets the open leads.
    pub fn load(mut self, load: u32) -> Self {
        self.load = load;
        self
    }

    /// Sets the capacity.
    pub fn capacity(mut self, capacity: u32) -> Self {
        self.capacity = capacity;
        self
    }

    /// Sets the weight.
    pub fn weight(mut self, weight: f64) -> Self {
        self.weight = weight;
        self
    }

    /// Sets the skills.
    pub fn skills(mut self, skills: &[&str]) -> Self {
        self.skills = skills.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Sets the tier.
    pub fn tier(mut self, tier: &str) -> Self {
        self.tier = tier.into();
        self
    }

    /// Sets when the rep last got a lead.
    pub fn last_assigned_at(mut self, at: u64) -> Self {
        self.last_assigned_at = Some(at);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Decision;
    use crate::abi::kind;
    use serde::Deserialize;

    #[derive(Default)]
    struct Strict;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct StrictConfig {
        #[allow(dead_code)]
        threshold: f64,
    }

    impl Plugin for Strict {
        type Config = StrictConfig;
        fn route(&self, _: &RouteInput<'_>, _: &StrictConfig) -> Decision {
            Decision::no_preference("indifferent")
        }
    }

    #[test]
    fn config_errors_name_the_problem() {
        let err = run::<Strict>(&input()).unwrap_err();
        assert!(
            err.starts_with("plugin_config: missing field `threshold`"),
            "{err}"
        );
        let err =
            run::<Strict>(&input().config(serde_json::json!({"threshold": "x"}))).unwrap_err();
        assert!(
            err.contains("invalid type: string \"x\", expected f64"),
            "{err}"
        );
        let ok = run::<Strict>(&input().config(serde_json::json!({"threshold": 1})));
        assert_eq!(
            ok,
            Ok(Answer::NoPreference {
                reason: "indifferent".into()
            })
        );
    }

    /// Ranks by index, last candidate first: `Candidate::index()` is a `usize`, and
    /// `Decision::ranked` takes it as it comes.
    #[derive(Default)]
    struct Reversed;

    impl Plugin for Reversed {
        type Config = serde_json::Value;
        fn route(&self, input: &RouteInput<'_>, _: &serde_json::Value) -> Decision {
            let mut order: Vec<usize> = input.candidates().map(|c| c.index()).collect();
            order.reverse();
            Decision::ranked(order, "last first")
        }
    }

    #[test]
    fn candidates_can_be_ranked_by_their_usize_index() {
        let input = input()
            .candidate(candidate("a"))
            .candidate(candidate("b"))
            .candidate(candidate("c"));
        let answer = run::<Reversed>(&input).unwrap();
        assert_eq!(answer.reps(), ["c", "b", "a"]);
        assert_eq!(
            Decision::ranked([usize::MAX], "x").order(),
            [u32::MAX],
            "an index no candidate can have stays out of range"
        );
    }

    #[test]
    fn undecodable_input_is_an_error_not_a_panic() {
        for garbage in [&b""[..], b"{not json", &[0xff; 200]] {
            let out = route_bytes::<Strict>(garbage);
            assert_eq!(out[..4], kind::ERROR.to_le_bytes());
            let Ok(Decoded::Error { message }) = decode_output(&out) else {
                panic!("an error answer expected");
            };
            assert!(message.starts_with("input does not decode"), "{message}");
        }
    }

    /// Answers with whatever indices it is told, to check what `run` refuses.
    #[derive(Default)]
    struct Echo;

    #[derive(Deserialize)]
    struct EchoConfig {
        order: Vec<u32>,
    }

    impl Plugin for Echo {
        type Config = EchoConfig;
        fn route(&self, _: &RouteInput<'_>, config: &EchoConfig) -> Decision {
            Decision::ranked(&config.order, "as told")
        }
    }

    #[test]
    fn answers_the_host_would_refuse_are_errors() {
        let two = input().candidate(candidate("a")).candidate(candidate("b"));
        let echo = |order: serde_json::Value| {
            run::<Echo>(&two.clone().config(serde_json::json!({ "order": order })))
        };
        assert_eq!(echo(serde_json::json!([1, 0])).unwrap().reps(), ["b", "a"]);
        assert_eq!(
            echo(serde_json::json!([2])).unwrap_err(),
            "ranked candidate index 2; there are 2 candidates"
        );
        assert_eq!(
            echo(serde_json::json!([0, 0])).unwrap_err(),
            "ranked candidate index 0 twice"
        );
        assert_eq!(
            echo(serde_json::json!([])).unwrap_err(),
            "the answer ranked no rep"
        );
    }

    /// Takes no configuration: its `plugin_config` text is never parsed.
    #[derive(Default)]
    struct NoConfig;

    impl Plugin for NoConfig {
        type Config = ();
        fn route(&self, input: &RouteInput<'_>, _: &()) -> Decision {
            Decision::ranked(input.candidates().rev(), "last first")
        }
    }

    #[test]
    fn a_unit_config_accepts_any_plugin_config() {
        let i = input()
            .candidate(candidate("a"))
            .candidate(candidate("b"))
            .config(serde_json::json!({"anything": [1, 2]}));
        assert_eq!(run::<NoConfig>(&i).unwrap().reps(), ["b", "a"]);
    }

    #[test]
    fn views_read_what_the_fixture_says() {
        let i = input()
            .source("ads")
            .attributes(serde_json::json!({"employees": 12, "name": "Lab"}))
            .candidate(candidate("a").skills(&["x", "y"]).last_assigned_at(9));
        i.with_view(|v| {
            let lead = v.lead();
            assert_eq!(
                (lead.id(), lead.region(), lead.source()),
                ("L1", Some("CN-SH"), Some("ads"))
            );
            #[derive(Deserialize)]
            struct Attrs<'a> {
                employees: u32,
                name: &'a str,
            }
            let attrs: Attrs<'_> = lead.attributes().unwrap();
            assert_eq!((attrs.employees, attrs.name), (12, "Lab"));
            let c = v.candidate(0).unwrap();
            assert_eq!(c.skills().collect::<Vec<_>>(), ["x", "y"]);
            assert_eq!(c.last_assigned_at(), Some(9));
            assert!(v.candidate(1).is_none());
        });
    }
}
