//! The plugin ABI, version [`ABI_VERSION`]: export names, the binary wire format, and
//! the limits both sides agree on. The guest glue ([`crate::register_plugin!`]), the
//! native harness ([`crate::testing`]) and the engine's host all use this module, so
//! they cannot drift.
//!
//! A call, as the host makes it (see `plugin-sdk/README.md` for the byte layout):
//! 1. instantiate the module (fresh for every decision);
//! 2. `leadroute_abi_version()` must return [`ABI_VERSION`] (checked at upload);
//! 3. `ptr = leadroute_alloc(len)`; the host writes the input ([`InputRef::encode_into`])
//!    at `ptr`, directly in the guest's memory;
//! 4. `packed = leadroute_route(ptr, len)`; the output ([`Output::encode`]) is at
//!    `packed >> 32` (pointer), `packed & 0xffff_ffff` (length) bytes long.
//!
//! Why binary and not JSON: the guest runs under fuel metering in a fresh instance
//! whose every newly touched page costs a page fault, so decoding must neither parse
//! nor allocate. Fixed-size little-endian records are read in place: a string is an
//! (offset, length) reference into one string table that is UTF-8-checked once, and
//! the answer names candidates by index. Only `plugin_config` and the lead's
//! `attributes` stay JSON text, parsed by the plugin if and when it needs them.

/// The ABI this SDK speaks. A module exports it from `leadroute_abi_version`; the host
/// refuses modules that speak another. It is also the input header's first field.
pub const ABI_VERSION: u32 = 1;

/// Export: `() -> i32`, the module's ABI version.
pub const EXPORT_ABI_VERSION: &str = "leadroute_abi_version";
/// Export: `(len: i32) -> i32`, a pointer to `len` writable bytes (0 on failure).
pub const EXPORT_ALLOC: &str = "leadroute_alloc";
/// Export: `(ptr: i32, len: i32) -> i64`, routes the input at `ptr`; returns the
/// output's pointer in the high 32 bits and its length in the low 32 bits.
pub const EXPORT_ROUTE: &str = "leadroute_route";
/// Export: the linear memory both sides read and write.
pub const EXPORT_MEMORY: &str = "memory";
/// The import module of the only host function.
pub const IMPORT_MODULE: &str = "leadroute";
/// Import `leadroute.log`: `(level: i32, ptr: i32, len: i32) -> ()`, one UTF-8 line.
pub const IMPORT_LOG: &str = "log";

/// Longest reason or error message kept, in characters. The guest cuts before
/// encoding (fewer bytes to write) and the host cuts again (it trusts nothing).
pub const MAX_TEXT_CHARS: usize = 256;

/// Log levels of `leadroute.log`.
pub mod level {
    /// Detail for plugin authors.
    pub const DEBUG: i32 = 0;
    /// Worth knowing.
    pub const INFO: i32 = 1;
    /// Something is off, e.g. a config value was ignored.
    pub const WARN: i32 = 2;
}

/// Byte offsets of the input header's fields. All integers are little-endian; a
/// "string ref" is 8 bytes: `u32` offset into the string table, `u32` length.
pub mod header {
    /// `u32`: [`super::ABI_VERSION`].
    pub const VERSION: usize = 0;
    /// `u32`: the header's length, at least [`super::HEADER_LEN`].
    pub const HEADER_LEN: usize = 4;
    /// `u64`: the decision time, Unix milliseconds.
    pub const NOW: usize = 8;
    /// `u32`: where the candidate records start.
    pub const CANDIDATES_OFFSET: usize = 16;
    /// `u32`: how many candidates.
    pub const CANDIDATE_COUNT: usize = 20;
    /// `u32`: the length of one candidate record, at least [`super::CANDIDATE_LEN`].
    pub const CANDIDATE_LEN: usize = 24;
    /// `u32`: where the skill string refs start.
    pub const SKILLS_OFFSET: usize = 28;
    /// `u32`: how many skill string refs.
    pub const SKILL_COUNT: usize = 32;
    /// `u32`: where the string table starts.
    pub const STRINGS_OFFSET: usize = 36;
    /// `u32`: the string table's length in bytes.
    pub const STRINGS_LEN: usize = 40;
    /// `u32`: which optional lead fields are present; see [`super::lead_flags`].
    pub const LEAD_FLAGS: usize = 44;
    /// `f64`: the lead's purchase amount.
    pub const PURCHASE_AMOUNT: usize = 48;
    /// String ref: the lead's id.
    pub const LEAD_ID: usize = 56;
    /// String ref: the lead's region (if [`super::lead_flags::REGION`]).
    pub const REGION: usize = 64;
    /// String ref: the lead's industry (if [`super::lead_flags::INDUSTRY`]).
    pub const INDUSTRY: usize = 72;
    /// String ref: the lead's source (if [`super::lead_flags::SOURCE`]).
    pub const SOURCE: usize = 80;
    /// String ref: the lead's attributes, JSON object text.
    pub const ATTRIBUTES: usize = 88;
    /// String ref: the territory's id.
    pub const TERRITORY_ID: usize = 96;
    /// String ref: `plugin_config`, JSON object text.
    pub const PLUGIN_CONFIG: usize = 104;
}

/// Bits of the header's `LEAD_FLAGS`.
pub mod lead_flags {
    /// The lead has a region.
    pub const REGION: u32 = 1;
    /// The lead has an industry.
    pub const INDUSTRY: u32 = 2;
    /// The lead has a source.
    pub const SOURCE: u32 = 4;
}

/// Byte offsets of a candidate record's fields.
pub mod candidate {
    /// `u32`: open leads.
    pub const LOAD: usize = 0;
    /// `u32`: most open leads.
    pub const CAPACITY: usize = 4;
    /// `f64`: relative share of new leads.
    pub const WEIGHT: usize = 8;
    /// `u64`: last assignment, Unix milliseconds (if [`HAS_LAST_ASSIGNED_AT`]).
    pub const LAST_ASSIGNED_AT: usize = 16;
    /// String ref: the rep's id.
    pub const ID: usize = 24;
    /// String ref: the rep's tier.
    pub const TIER: usize = 32;
    /// `u32`: index of the rep's first skill among the skill string refs.
    pub const SKILLS_START: usize = 40;
    /// `u32`: how many skills.
    pub const SKILL_COUNT: usize = 44;
    /// `u32`: flags; bit [`HAS_LAST_ASSIGNED_AT`].
    pub const FLAGS: usize = 48;
    /// Flag: `LAST_ASSIGNED_AT` is set (the rep got a lead before).
    pub const HAS_LAST_ASSIGNED_AT: u32 = 1;
}

/// Length of the version-1 input header. Multiples of 8 throughout, so a guest that
/// reads fields in place (C, Zig) finds them aligned at an 8-aligned input.
pub const HEADER_LEN: usize = 112;
/// Length of a version-1 candidate record (bytes 52..56 are reserved, zero).
pub const CANDIDATE_LEN: usize = 56;
/// Length of a string ref.
pub const STR_REF_LEN: usize = 8;

/// Output kinds, the output's first `u32`. Zero is not a kind, so zeroed memory is
/// not mistaken for an answer.
pub mod kind {
    /// Candidate indices, best first, then the reason.
    pub const RANKED: u32 = 1;
    /// No preference: the territory's fallback decides; the text is the reason.
    pub const NO_PREFERENCE: u32 = 2;
    /// The plugin cannot decide (bad `plugin_config`, …); the text is the message.
    pub const ERROR: u32 = 3;
}

/// Length of the output header: kind, index count, text length (`u32` each).
pub const OUTPUT_HEADER_LEN: usize = 12;

/// Packs an output location into `leadroute_route`'s return value.
pub fn pack(ptr: u32, len: u32) -> i64 {
    ((u64::from(ptr) << 32) | u64::from(len)) as i64
}

/// Splits `leadroute_route`'s return value into (pointer, length).
pub fn unpack(packed: i64) -> (u32, u32) {
    let packed = packed as u64;
    ((packed >> 32) as u32, packed as u32)
}

/// Reads a little-endian `u32` at `at`; 0 past the end (callers check bounds first
/// where it matters; this never panics on garbage).
pub(crate) fn le_u32(b: &[u8], at: usize) -> u32 {
    b.get(at..at.wrapping_add(4))
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

/// Reads a little-endian `u64` at `at`; 0 past the end.
pub(crate) fn le_u64(b: &[u8], at: usize) -> u64 {
    b.get(at..at.wrapping_add(8))
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// The input as the host holds it, borrowed; [`InputRef::encode_into`] writes the
/// binary layout the guest reads in place.
#[derive(Clone, Copy, Debug)]
pub struct InputRef<'a> {
    /// The lead.
    pub lead: LeadRef<'a>,
    /// The candidates, in the order their indices refer to.
    pub candidates: &'a [CandidateRef<'a>],
    /// The territory's id.
    pub territory: &'a str,
    /// `plugin_config`, JSON object text.
    pub plugin_config: &'a str,
    /// Unix milliseconds.
    pub now: u64,
}

/// The lead as the host writes it.
#[derive(Clone, Copy, Debug)]
pub struct LeadRef<'a> {
    /// Lead id.
    pub id: &'a str,
    /// Region code.
    pub region: Option<&'a str>,
    /// Industry tag.
    pub industry: Option<&'a str>,
    /// Purchase amount.
    pub purchase_amount: f64,
    /// Source.
    pub source: Option<&'a str>,
    /// Attributes, JSON object text.
    pub attributes: &'a str,
}

/// A candidate as the host writes it.
#[derive(Clone, Copy, Debug)]
pub struct CandidateRef<'a> {
    /// Rep id.
    pub id: &'a str,
    /// Open leads.
    pub load: u32,
    /// Capacity.
    pub capacity: u32,
    /// Weight.
    pub weight: f64,
    /// Skills.
    pub skills: &'a [String],
    /// Tier.
    pub tier: &'a str,
    /// Last assignment, Unix milliseconds.
    pub last_assigned_at: Option<u64>,
}

/// The input does not fit the format's 32-bit offsets (over 4 GiB), or the buffer
/// handed to [`InputRef::encode_into`] is not [`InputRef::encoded_len`] bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodeError;

impl std::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the buffer does not match the encoded length, or the input exceeds 4 GiB")
    }
}

impl std::error::Error for EncodeError {}

impl InputRef<'_> {
    fn skill_count(&self) -> usize {
        self.candidates.iter().map(|c| c.skills.len()).sum()
    }

    fn strings_len(&self) -> usize {
        let lead = &self.lead;
        let opt = |s: Option<&str>| s.map_or(0, str::len);
        let candidates: usize = self
            .candidates
            .iter()
            .map(|c| c.id.len() + c.tier.len() + c.skills.iter().map(String::len).sum::<usize>())
            .sum();
        lead.id.len()
            + opt(lead.region)
            + opt(lead.industry)
            + opt(lead.source)
            + lead.attributes.len()
            + self.territory.len()
            + self.plugin_config.len()
            + candidates
    }

    /// The exact length [`InputRef::encode_into`] writes.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN
            + self.candidates.len() * CANDIDATE_LEN
            + self.skill_count() * STR_REF_LEN
            + self.strings_len()
    }

    /// Encodes into a new buffer (the native harness and tools; the host writes into
    /// guest memory with [`InputRef::encode_into`]).
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = vec![0; self.encoded_len()];
        self.encode_into(&mut out)?;
        Ok(out)
    }

    /// Writes the input into `out`, which must be exactly [`InputRef::encoded_len`]
    /// bytes. Every byte is written (reserved ones as zero), so `out` may hold garbage.
    pub fn encode_into(&self, out: &mut [u8]) -> Result<(), EncodeError> {
        let skills_offset = HEADER_LEN + self.candidates.len() * CANDIDATE_LEN;
        let strings_offset = skills_offset + self.skill_count() * STR_REF_LEN;
        if out.len() != strings_offset + self.strings_len() || u32::try_from(out.len()).is_err() {
            return Err(EncodeError);
        }
        // Offsets below fit in u32: the whole buffer does.
        let (head, rest) = out.split_at_mut(HEADER_LEN);
        let (records, rest) = rest.split_at_mut(skills_offset - HEADER_LEN);
        let (skill_refs, strings) = rest.split_at_mut(strings_offset - skills_offset);
        let mut table = Table {
            bytes: strings,
            at: 0,
        };

        let put32 =
            |b: &mut [u8], at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        let put64 =
            |b: &mut [u8], at: usize, v: u64| b[at..at + 8].copy_from_slice(&v.to_le_bytes());
        let lead = &self.lead;
        let mut flags = 0;
        for (present, bit) in [
            (lead.region.is_some(), lead_flags::REGION),
            (lead.industry.is_some(), lead_flags::INDUSTRY),
            (lead.source.is_some(), lead_flags::SOURCE),
        ] {
            if present {
                flags |= bit;
            }
        }
        put32(head, header::VERSION, ABI_VERSION);
        put32(head, header::HEADER_LEN, HEADER_LEN as u32);
        put64(head, header::NOW, self.now);
        put32(head, header::CANDIDATES_OFFSET, HEADER_LEN as u32);
        put32(head, header::CANDIDATE_COUNT, self.candidates.len() as u32);
        put32(head, header::CANDIDATE_LEN, CANDIDATE_LEN as u32);
        put32(head, header::SKILLS_OFFSET, skills_offset as u32);
        put32(head, header::SKILL_COUNT, self.skill_count() as u32);
        put32(head, header::STRINGS_OFFSET, strings_offset as u32);
        put32(head, header::STRINGS_LEN, table.bytes.len() as u32);
        put32(head, header::LEAD_FLAGS, flags);
        put64(
            head,
            header::PURCHASE_AMOUNT,
            lead.purchase_amount.to_bits(),
        );
        for (at, s) in [
            (header::LEAD_ID, lead.id),
            (header::REGION, lead.region.unwrap_or_default()),
            (header::INDUSTRY, lead.industry.unwrap_or_default()),
            (header::SOURCE, lead.source.unwrap_or_default()),
            (header::ATTRIBUTES, lead.attributes),
            (header::TERRITORY_ID, self.territory),
            (header::PLUGIN_CONFIG, self.plugin_config),
        ] {
            table.put(head, at, s);
        }

        let mut skill = 0;
        for (c, rec) in self
            .candidates
            .iter()
            .zip(records.chunks_exact_mut(CANDIDATE_LEN))
        {
            put32(rec, candidate::LOAD, c.load);
            put32(rec, candidate::CAPACITY, c.capacity);
            put64(rec, candidate::WEIGHT, c.weight.to_bits());
            put64(
                rec,
                candidate::LAST_ASSIGNED_AT,
                c.last_assigned_at.unwrap_or(0),
            );
            table.put(rec, candidate::ID, c.id);
            table.put(rec, candidate::TIER, c.tier);
            put32(rec, candidate::SKILLS_START, skill as u32);
            put32(rec, candidate::SKILL_COUNT, c.skills.len() as u32);
            let has_last = if c.last_assigned_at.is_some() {
                candidate::HAS_LAST_ASSIGNED_AT
            } else {
                0
            };
            put32(rec, candidate::FLAGS, has_last);
            put32(rec, candidate::FLAGS + 4, 0);
            for s in c.skills {
                table.put(skill_refs, skill * STR_REF_LEN, s);
                skill += 1;
            }
        }
        Ok(())
    }
}

/// The string table being filled, front to back.
struct Table<'o> {
    bytes: &'o mut [u8],
    at: usize,
}

impl Table<'_> {
    /// Appends `s` and writes its string ref at `ref_at` in `dst`.
    fn put(&mut self, dst: &mut [u8], ref_at: usize, s: &str) {
        self.bytes[self.at..self.at + s.len()].copy_from_slice(s.as_bytes());
        dst[ref_at..ref_at + 4].copy_from_slice(&(self.at as u32).to_le_bytes());
        dst[ref_at + 4..ref_at + 8].copy_from_slice(&(s.len() as u32).to_le_bytes());
        self.at += s.len();
    }
}

/// An answer, as the guest encodes it: [`Output::encode`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Output<'a> {
    /// Candidate indices, best first, and a short reason.
    Ranked {
        /// Indices into the input's candidates.
        order: &'a [u32],
        /// Why.
        reason: &'a str,
    },
    /// The territory's fallback decides.
    NoPreference {
        /// Why.
        reason: &'a str,
    },
    /// The plugin could not decide: bad input or `plugin_config`. The host counts it as
    /// a failure and its fallback decides; at territory configuration it rejects the
    /// `plugin_config` with this message.
    Error {
        /// What is wrong, for the operator.
        message: &'a str,
    },
}

impl Output<'_> {
    /// The output bytes: kind, index count, text length, the indices, the text (cut
    /// to [`MAX_TEXT_CHARS`]).
    pub fn encode(&self) -> Vec<u8> {
        let (kind, order, text) = match *self {
            Output::Ranked { order, reason } => (kind::RANKED, order, reason),
            Output::NoPreference { reason } => (kind::NO_PREFERENCE, &[][..], reason),
            Output::Error { message } => (kind::ERROR, &[][..], message),
        };
        let text = cut(text);
        let mut out = Vec::with_capacity(OUTPUT_HEADER_LEN + order.len() * 4 + text.len());
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&(order.len() as u32).to_le_bytes());
        out.extend_from_slice(&(text.len() as u32).to_le_bytes());
        for i in order {
            out.extend_from_slice(&i.to_le_bytes());
        }
        out.extend_from_slice(text.as_bytes());
        out
    }
}

/// `s` cut to its first [`MAX_TEXT_CHARS`] characters.
pub fn cut(s: &str) -> &str {
    match s.char_indices().nth(MAX_TEXT_CHARS) {
        Some((at, _)) => &s[..at],
        None => s,
    }
}

/// An answer as read back from output bytes ([`decode_output`]), borrowing them.
#[derive(Clone, Debug)]
pub enum Decoded<'a> {
    /// Candidate indices, best first (not yet checked against the candidates).
    Ranked {
        /// The indices.
        order: Indices<'a>,
        /// Why.
        reason: &'a str,
    },
    /// The territory's fallback decides.
    NoPreference {
        /// Why.
        reason: &'a str,
    },
    /// The plugin could not decide.
    Error {
        /// What is wrong.
        message: &'a str,
    },
}

/// Candidate indices in output bytes.
#[derive(Clone, Debug)]
pub struct Indices<'a>(std::slice::ChunksExact<'a, u8>);

impl Iterator for Indices<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        self.0.next().map(|b| le_u32(b, 0))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl ExactSizeIterator for Indices<'_> {}

/// Reads output bytes. The error says what is malformed; it checks the shape only
/// (kind, lengths, UTF-8), not the indices against the candidates.
pub fn decode_output(bytes: &[u8]) -> Result<Decoded<'_>, String> {
    if bytes.len() < OUTPUT_HEADER_LEN {
        return Err(format!(
            "the answer is {} bytes, shorter than its {OUTPUT_HEADER_LEN}-byte header",
            bytes.len()
        ));
    }
    let kind = le_u32(bytes, 0);
    let count = le_u32(bytes, 4) as usize;
    let text_len = le_u32(bytes, 8) as usize;
    let expected = count
        .checked_mul(4)
        .and_then(|n| n.checked_add(OUTPUT_HEADER_LEN))
        .and_then(|n| n.checked_add(text_len));
    if expected != Some(bytes.len()) {
        return Err(format!(
            "the answer's header says {count} indices and {text_len} text bytes, \
             but it is {} bytes long",
            bytes.len()
        ));
    }
    let indices_end = OUTPUT_HEADER_LEN + count * 4;
    let text = std::str::from_utf8(&bytes[indices_end..])
        .map_err(|e| format!("the answer's text is not UTF-8: {e}"))?;
    match kind {
        kind::RANKED => Ok(Decoded::Ranked {
            order: Indices(bytes[OUTPUT_HEADER_LEN..indices_end].chunks_exact(4)),
            reason: text,
        }),
        kind::NO_PREFERENCE | kind::ERROR if count != 0 => {
            Err(format!("an answer of kind {kind} carries {count} indices"))
        }
        kind::NO_PREFERENCE => Ok(Decoded::NoPreference { reason: text }),
        kind::ERROR => Ok(Decoded::Error { message: text }),
        other => Err(format!(
            "unknown answer kind {other} (1 ranked, 2 no preference, 3 error)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::RouteInput;

    #[test]
    fn packing_round_trips_full_range() {
        for (p, l) in [(0, 0), (1, 2), (u32::MAX, u32::MAX), (0x8000_0000, 7)] {
            assert_eq!(unpack(pack(p, l)), (p, l));
        }
    }

    fn sample<R>(f: impl FnOnce(&InputRef<'_>) -> R) -> R {
        let skills = vec!["lab".to_string(), "pharma".to_string()];
        let candidates = [
            CandidateRef {
                id: "a",
                load: 1,
                capacity: 10,
                weight: 1.5,
                skills: &skills,
                tier: "senior",
                last_assigned_at: Some(5),
            },
            CandidateRef {
                id: "bé",
                load: 7,
                capacity: 8,
                weight: 0.5,
                skills: &[],
                tier: "junior",
                last_assigned_at: None,
            },
        ];
        f(&InputRef {
            lead: LeadRef {
                id: "L1",
                region: Some("CN-SH"),
                industry: None,
                purchase_amount: 12.5,
                source: Some("ads"),
                attributes: r#"{"employees":40}"#,
            },
            candidates: &candidates,
            territory: "east",
            plugin_config: r#"{"k":1}"#,
            now: 42,
        })
    }

    #[test]
    fn the_host_encoding_reads_back_through_the_guest_views() {
        let bytes = sample(|i| i.encode().unwrap());
        assert_eq!(bytes.len(), sample(|i| i.encoded_len()));
        let input = RouteInput::decode(&bytes).unwrap();
        let lead = input.lead();
        assert_eq!(lead.id(), "L1");
        assert_eq!(lead.region(), Some("CN-SH"));
        assert_eq!(lead.industry(), None);
        assert_eq!(lead.source(), Some("ads"));
        assert_eq!(lead.purchase_amount(), 12.5);
        assert_eq!(lead.attributes_json(), r#"{"employees":40}"#);
        assert_eq!(input.territory_id(), "east");
        assert_eq!(input.plugin_config_json(), r#"{"k":1}"#);
        assert_eq!(input.now(), 42);
        let c: Vec<_> = input.candidates().collect();
        assert_eq!(c.len(), 2);
        assert_eq!((c[0].index(), c[0].id(), c[0].tier()), (0, "a", "senior"));
        assert_eq!((c[0].load(), c[0].capacity(), c[0].weight()), (1, 10, 1.5));
        assert_eq!(c[0].skills().collect::<Vec<_>>(), ["lab", "pharma"]);
        assert_eq!(c[0].last_assigned_at(), Some(5));
        assert_eq!(
            (c[1].index(), c[1].id(), c[1].last_assigned_at()),
            (1, "bé", None)
        );
        assert_eq!(c[1].skills().count(), 0);
        assert!(c[0].has_skill("pharma") && !c[1].has_skill("pharma"));
    }

    #[test]
    fn encode_into_refuses_a_buffer_of_the_wrong_length() {
        let len = sample(|i| i.encoded_len());
        let mut short = vec![0; len - 1];
        assert_eq!(sample(|i| i.encode_into(&mut short)), Err(EncodeError));
    }

    #[test]
    fn every_truncation_and_corruption_decodes_or_fails_without_panicking() {
        let bytes = sample(|i| i.encode().unwrap());
        for len in 0..bytes.len() {
            if let Ok(input) = RouteInput::decode(&bytes[..len]) {
                // Whatever decodes must be safe to read in full.
                let _ = format!(
                    "{:?} {:?}",
                    input.lead(),
                    input.candidates().collect::<Vec<_>>()
                );
            }
        }
        // Flip every byte in turn (the host writes the input, but the views must not
        // trust it): reading everything never panics.
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0xa5;
            if let Ok(input) = RouteInput::decode(&bad) {
                for c in input.candidates() {
                    let _ = (c.id(), c.tier(), c.skills().count(), c.cmp_least_loaded(&c));
                }
                let _ = format!("{:?}", input.lead());
            }
        }
        assert!(RouteInput::decode(&bytes[..HEADER_LEN - 1]).is_err());
        let mut v2 = bytes.clone();
        v2[0] = 2;
        let err = RouteInput::decode(&v2).unwrap_err().to_string();
        assert!(err.contains("version 2"), "{err}");
    }

    #[test]
    fn outputs_round_trip_and_text_is_cut() {
        let long = "é".repeat(1000);
        for out in [
            Output::Ranked {
                order: &[2, 0, 1],
                reason: "r",
            },
            Output::NoPreference { reason: &long },
            Output::Error { message: "m" },
        ] {
            let bytes = out.encode();
            let back = decode_output(&bytes).unwrap();
            match (out, back) {
                (
                    Output::Ranked { order, reason },
                    Decoded::Ranked {
                        order: o,
                        reason: r,
                    },
                ) => {
                    assert_eq!(o.collect::<Vec<_>>(), order);
                    assert_eq!(r, reason);
                }
                (Output::NoPreference { .. }, Decoded::NoPreference { reason }) => {
                    assert_eq!(reason.chars().count(), MAX_TEXT_CHARS);
                }
                (Output::Error { message }, Decoded::Error { message: m }) => {
                    assert_eq!(m, message)
                }
                (a, b) => panic!("{a:?} came back as {b:?}"),
            }
        }
    }

    #[test]
    fn malformed_outputs_say_what_is_wrong() {
        let ok = Output::Ranked {
            order: &[1],
            reason: "x",
        }
        .encode();
        let err = |b: &[u8]| decode_output(b).unwrap_err();
        assert!(err(&ok[..5]).contains("shorter than its 12-byte header"));
        assert!(err(&ok[..ok.len() - 1]).contains("but it is 16 bytes long"));
        let mut bad = ok.clone();
        bad[0] = 9;
        assert!(err(&bad).contains("unknown answer kind 9"));
        let mut bad = ok.clone();
        *bad.last_mut().unwrap() = 0xff;
        assert!(err(&bad).contains("not UTF-8"));
        let mut bad = ok.clone();
        bad[0] = kind::ERROR as u8;
        assert!(err(&bad).contains("carries 1 indices"));
        assert!(err(b"not json at all").contains("says"));
    }
}
