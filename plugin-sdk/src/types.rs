//! What a plugin sees and what it answers. [`RouteInput`], [`Lead`] and [`Candidate`]
//! are views over the input bytes of [`crate::abi`]: nothing is copied or parsed until
//! a getter is called, and getters only read a few bytes. They never panic, even on
//! garbage: [`RouteInput::decode`] checks the sections' bounds and the string table's
//! UTF-8 once, and a string reference that points outside the table reads as `""`.

use std::cmp::Ordering;
use std::fmt;

use crate::abi::{self, CANDIDATE_LEN, HEADER_LEN, STR_REF_LEN, candidate, header, le_u32, le_u64};

/// One routing question: a lead, the reps who could take it, and configuration.
/// Cheap to copy: it only borrows the input bytes.
#[derive(Clone, Copy)]
pub struct RouteInput<'a> {
    head: &'a [u8; HEADER_LEN],
    records: &'a [u8],
    record_len: usize,
    count: usize,
    skills: &'a [u8],
    strings: &'a str,
}

/// The input bytes do not follow the documented layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError(String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

/// `count` items of `item_len` bytes from `start` in `bytes`, if they lie inside.
fn section(bytes: &[u8], start: u32, count: u32, item_len: usize) -> Option<&[u8]> {
    let start = start as usize;
    let len = (count as usize).checked_mul(item_len)?;
    bytes.get(start..start.checked_add(len)?)
}

impl<'a> RouteInput<'a> {
    /// Reads the input layout of [`crate::abi`] in place: checks the version, that
    /// every section lies within `bytes`, and that the string table is UTF-8.
    pub fn decode(bytes: &'a [u8]) -> Result<RouteInput<'a>, DecodeError> {
        let err = |m: String| Err(DecodeError(m));
        let Some(head) = bytes.first_chunk::<HEADER_LEN>() else {
            return err(format!(
                "{} bytes, shorter than the {HEADER_LEN}-byte header",
                bytes.len()
            ));
        };
        let version = le_u32(head, header::VERSION);
        if version != abi::ABI_VERSION {
            return err(format!(
                "the input is version {version}; this SDK reads version {}",
                abi::ABI_VERSION
            ));
        }
        let header_len = le_u32(head, header::HEADER_LEN) as usize;
        let record_len = le_u32(head, header::CANDIDATE_LEN) as usize;
        if header_len < HEADER_LEN || header_len > bytes.len() || record_len < CANDIDATE_LEN {
            return err(format!(
                "header length {header_len} or candidate record length {record_len} is invalid"
            ));
        }
        let count = le_u32(head, header::CANDIDATE_COUNT);
        let Some(records) = section(
            bytes,
            le_u32(head, header::CANDIDATES_OFFSET),
            count,
            record_len,
        ) else {
            return err("the candidate records lie outside the input".into());
        };
        let Some(skills) = section(
            bytes,
            le_u32(head, header::SKILLS_OFFSET),
            le_u32(head, header::SKILL_COUNT),
            STR_REF_LEN,
        ) else {
            return err("the skill references lie outside the input".into());
        };
        let Some(strings) = section(
            bytes,
            le_u32(head, header::STRINGS_OFFSET),
            le_u32(head, header::STRINGS_LEN),
            1,
        ) else {
            return err("the string table lies outside the input".into());
        };
        // Checked once here so that every string getter is a bounds check, not a scan.
        let strings = match std::str::from_utf8(strings) {
            Ok(s) => s,
            Err(e) => return err(format!("the string table is not UTF-8: {e}")),
        };
        Ok(RouteInput {
            head,
            records,
            record_len,
            count: count as usize,
            skills,
            strings,
        })
    }

    /// The lead to route.
    pub fn lead(&self) -> Lead<'a> {
        Lead {
            head: self.head,
            strings: self.strings,
        }
    }

    /// Reps that are available and under capacity, in no particular order; each
    /// knows its [`Candidate::index`].
    pub fn candidates(&self) -> Candidates<'a> {
        Candidates {
            input: *self,
            next: 0,
            end: self.count,
        }
    }

    /// The candidate at `index`, if there is one.
    pub fn candidate(&self, index: usize) -> Option<Candidate<'a>> {
        let start = index.checked_mul(self.record_len)?;
        let rec = self
            .records
            .get(start..start.checked_add(CANDIDATE_LEN)?)?
            .first_chunk::<CANDIDATE_LEN>()?;
        Some(Candidate {
            rec,
            strings: self.strings,
            skills: self.skills,
            index: index as u32,
        })
    }

    /// How many candidates there are (at least one when the engine calls).
    pub fn candidate_count(&self) -> usize {
        self.count
    }

    /// The deciding territory's id.
    pub fn territory_id(&self) -> &'a str {
        str_ref(self.strings, self.head, header::TERRITORY_ID)
    }

    /// The territory's `plugin_config` object as JSON text.
    /// [`Plugin::Config`](crate::Plugin::Config) is decoded from it.
    pub fn plugin_config_json(&self) -> &'a str {
        str_ref(self.strings, self.head, header::PLUGIN_CONFIG)
    }

    /// The decision time, Unix milliseconds. Plugins have no clock of their own.
    pub fn now(&self) -> u64 {
        le_u64(self.head, header::NOW)
    }
}

impl fmt::Debug for RouteInput<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteInput")
            .field("lead", &self.lead())
            .field("candidates", &self.candidates().collect::<Vec<_>>())
            .field("territory_id", &self.territory_id())
            .field("plugin_config", &self.plugin_config_json())
            .field("now", &self.now())
            .finish()
    }
}

/// Reads the string ref at `at` in `b`; `""` if it points outside the table or
/// splits a character.
fn str_ref<'a>(strings: &'a str, b: &[u8], at: usize) -> &'a str {
    let start = le_u32(b, at) as usize;
    let len = le_u32(b, at + 4) as usize;
    strings.get(start..start.saturating_add(len)).unwrap_or("")
}

/// The candidates of a [`RouteInput`], in index order.
#[derive(Clone, Debug)]
pub struct Candidates<'a> {
    input: RouteInput<'a>,
    next: usize,
    end: usize,
}

impl<'a> Iterator for Candidates<'a> {
    type Item = Candidate<'a>;

    fn next(&mut self) -> Option<Candidate<'a>> {
        if self.next >= self.end {
            return None;
        }
        self.next += 1;
        self.input.candidate(self.next - 1)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.end - self.next;
        (n, Some(n))
    }
}

impl DoubleEndedIterator for Candidates<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        if self.next >= self.end {
            return None;
        }
        self.end -= 1;
        self.input.candidate(self.end)
    }
}

impl ExactSizeIterator for Candidates<'_> {}

/// The lead being routed (contact details are withheld from plugins).
#[derive(Clone, Copy)]
pub struct Lead<'a> {
    head: &'a [u8; HEADER_LEN],
    strings: &'a str,
}

impl<'a> Lead<'a> {
    fn optional(&self, flag: u32, at: usize) -> Option<&'a str> {
        (le_u32(self.head, header::LEAD_FLAGS) & flag != 0)
            .then(|| str_ref(self.strings, self.head, at))
    }

    /// Engine-generated, time-ordered id.
    pub fn id(&self) -> &'a str {
        str_ref(self.strings, self.head, header::LEAD_ID)
    }

    /// Region code, upper-case, e.g. `CN-SH-PD`.
    pub fn region(&self) -> Option<&'a str> {
        self.optional(abi::lead_flags::REGION, header::REGION)
    }

    /// Industry tag, lower-case, e.g. `hospital-lab`.
    pub fn industry(&self) -> Option<&'a str> {
        self.optional(abi::lead_flags::INDUSTRY, header::INDUSTRY)
    }

    /// Where the lead came from (`webform`, `ads`, …).
    pub fn source(&self) -> Option<&'a str> {
        self.optional(abi::lead_flags::SOURCE, header::SOURCE)
    }

    /// Historical purchase amount; 0 when unknown.
    pub fn purchase_amount(&self) -> f64 {
        f64::from_bits(le_u64(self.head, header::PURCHASE_AMOUNT))
    }

    /// Free-form attributes from intake, as JSON object text.
    pub fn attributes_json(&self) -> &'a str {
        str_ref(self.strings, self.head, header::ATTRIBUTES)
    }

    /// Decodes the attributes into `T`, e.g. a struct of the fields the plugin uses
    /// (borrowing `&'a str`s from the input where it can) or `serde_json::Value`.
    /// Parsed on each call: keep the result rather than calling it per candidate.
    pub fn attributes<T: serde::Deserialize<'a>>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.attributes_json())
    }
}

impl fmt::Debug for Lead<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lead")
            .field("id", &self.id())
            .field("region", &self.region())
            .field("industry", &self.industry())
            .field("purchase_amount", &self.purchase_amount())
            .field("source", &self.source())
            .field("attributes", &self.attributes_json())
            .finish()
    }
}

/// A rep that could take the lead: available and under capacity. Cheap to copy;
/// rank candidates by sorting a `Vec<Candidate>` and answer with
/// [`Decision::ranked`].
#[derive(Clone, Copy)]
pub struct Candidate<'a> {
    rec: &'a [u8; CANDIDATE_LEN],
    strings: &'a str,
    skills: &'a [u8],
    index: u32,
}

impl<'a> Candidate<'a> {
    /// Its position among the input's candidates: what a [`Decision`] carries.
    pub fn index(&self) -> usize {
        self.index as usize
    }

    /// Rep id.
    pub fn id(&self) -> &'a str {
        str_ref(self.strings, self.rec, candidate::ID)
    }

    /// Open leads now.
    pub fn load(&self) -> u32 {
        le_u32(self.rec, candidate::LOAD)
    }

    /// Most open leads the rep may hold.
    pub fn capacity(&self) -> u32 {
        le_u32(self.rec, candidate::CAPACITY)
    }

    /// Relative share of new leads (1.0 = normal).
    pub fn weight(&self) -> f64 {
        f64::from_bits(le_u64(self.rec, candidate::WEIGHT))
    }

    /// Seniority tag, lower-case (`junior`, `senior`, …).
    pub fn tier(&self) -> &'a str {
        str_ref(self.strings, self.rec, candidate::TIER)
    }

    /// When the rep last got a lead, Unix milliseconds; `None` if never.
    pub fn last_assigned_at(&self) -> Option<u64> {
        (le_u32(self.rec, candidate::FLAGS) & candidate::HAS_LAST_ASSIGNED_AT != 0)
            .then(|| le_u64(self.rec, candidate::LAST_ASSIGNED_AT))
    }

    /// Industry tags, lower-case.
    pub fn skills(&self) -> Skills<'a> {
        let refs = section(
            self.skills,
            le_u32(self.rec, candidate::SKILLS_START).saturating_mul(STR_REF_LEN as u32),
            le_u32(self.rec, candidate::SKILL_COUNT),
            STR_REF_LEN,
        );
        Skills {
            refs: refs.unwrap_or_default().chunks_exact(STR_REF_LEN),
            strings: self.strings,
        }
    }

    /// Whether the rep lists `skill` among its skills.
    pub fn has_skill(&self, skill: &str) -> bool {
        self.skills().any(|s| s == skill)
    }

    /// `load / capacity / weight`: the share of room in use, lower is freer.
    pub fn relative_load(&self) -> f64 {
        f64::from(self.load()) / f64::from(self.capacity().max(1)) / self.weight()
    }

    /// The engine's least-loaded order: lower relative load first, then the rep idle
    /// longest (never assigned counts as longest), then the smaller id.
    pub fn cmp_least_loaded(&self, other: &Candidate<'_>) -> Ordering {
        self.relative_load()
            .total_cmp(&other.relative_load())
            .then_with(|| self.last_assigned_at().cmp(&other.last_assigned_at()))
            .then_with(|| self.id().cmp(other.id()))
    }
}

impl fmt::Debug for Candidate<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Candidate")
            .field("index", &self.index)
            .field("id", &self.id())
            .field("load", &self.load())
            .field("capacity", &self.capacity())
            .field("weight", &self.weight())
            .field("skills", &self.skills().collect::<Vec<_>>())
            .field("tier", &self.tier())
            .field("last_assigned_at", &self.last_assigned_at())
            .finish()
    }
}

/// A candidate's skills, read in place.
#[derive(Clone, Debug)]
pub struct Skills<'a> {
    refs: std::slice::ChunksExact<'a, u8>,
    strings: &'a str,
}

impl<'a> Iterator for Skills<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        self.refs.next().map(|r| str_ref(self.strings, r, 0))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.refs.size_hint()
    }
}

impl ExactSizeIterator for Skills<'_> {}

/// What [`Decision::ranked`] accepts: a [`Candidate`] (or a reference to one), or a
/// raw candidate index.
pub trait CandidateIndex {
    /// The candidate's index in the input.
    fn candidate_index(&self) -> u32;
}

impl CandidateIndex for Candidate<'_> {
    fn candidate_index(&self) -> u32 {
        self.index
    }
}

impl CandidateIndex for u32 {
    fn candidate_index(&self) -> u32 {
        *self
    }
}

/// What [`Candidate::index`] returns. An index past `u32::MAX` cannot name a
/// candidate: it becomes one the engine refuses as out of range (`unknown_rep`).
impl CandidateIndex for usize {
    fn candidate_index(&self) -> u32 {
        u32::try_from(*self).unwrap_or(u32::MAX)
    }
}

impl<T: CandidateIndex + ?Sized> CandidateIndex for &T {
    fn candidate_index(&self) -> u32 {
        (**self).candidate_index()
    }
}

/// A plugin's answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Candidates by index, best first, and a short reason for the audit trail.
    Ranked {
        /// Candidate indices, best first; each at most once.
        order: Vec<u32>,
        /// Why, in a few words (the first 256 characters are kept).
        reason: String,
    },
    /// The plugin does not mind: the territory's fallback strategy decides.
    NoPreference {
        /// Why, in a few words.
        reason: String,
    },
}

impl Decision {
    /// Ranks candidates, best first: pass the sorted candidates (or their indices).
    pub fn ranked<I>(candidates: I, reason: impl Into<String>) -> Decision
    where
        I: IntoIterator,
        I::Item: CandidateIndex,
    {
        Decision::Ranked {
            order: candidates
                .into_iter()
                .map(|c| c.candidate_index())
                .collect(),
            reason: reason.into(),
        }
    }

    /// Leaves the choice to the territory's fallback strategy.
    pub fn no_preference(reason: impl Into<String>) -> Decision {
        Decision::NoPreference {
            reason: reason.into(),
        }
    }

    /// The ranked candidate indices (empty for no preference).
    pub fn order(&self) -> &[u32] {
        match self {
            Decision::Ranked { order, .. } => order,
            Decision::NoPreference { .. } => &[],
        }
    }

    /// The reason given.
    pub fn reason(&self) -> &str {
        match self {
            Decision::Ranked { reason, .. } | Decision::NoPreference { reason } => reason,
        }
    }
}
