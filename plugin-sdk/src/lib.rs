//! Write leadroute routing plugins in Rust, and the single definition of the plugin ABI.
//!
//! A plugin is a pure function: given a lead, the reps who could take it and the
//! territory's `plugin_config`, it ranks the reps (or says it has no preference). It
//! runs inside the engine as a WebAssembly module, sandboxed: no clock, no randomness,
//! no I/O, a fuel budget and a memory cap.
//!
//! Authors implement one trait and call one macro:
//!
//! ```
//! use leadroute_plugin_sdk::prelude::*;
//!
//! #[derive(Default)]
//! struct Busiest;
//!
//! #[derive(Deserialize)]
//! struct Config {
//!     #[serde(default)]
//!     skip_full: bool,
//! }
//!
//! impl Plugin for Busiest {
//!     type Config = Config;
//!
//!     fn route(&self, input: &RouteInput, config: &Config) -> Decision {
//!         let mut reps: Vec<Candidate> = input
//!             .candidates()
//!             .filter(|c| !config.skip_full || c.load() < c.capacity())
//!             .collect();
//!         reps.sort_unstable_by(|a, b| b.load().cmp(&a.load()).then_with(|| a.id().cmp(b.id())));
//!         Decision::ranked(&reps, "busiest first")
//!     }
//! }
//!
//! register_plugin!(Busiest);
//!
//! // The native harness runs the plugin through the same encoding the host uses.
//! let input = testing::input()
//!     .candidate(testing::candidate("a").load(1))
//!     .candidate(testing::candidate("b").load(3))
//!     .config(serde_json::json!({}));
//! let answer = testing::run::<Busiest>(&input).unwrap();
//! assert_eq!(answer.reps(), ["b", "a"]);
//! ```
//!
//! The input is read in place from the bytes the engine wrote: [`RouteInput`],
//! [`Lead`] and [`Candidate`] are cheap `Copy` views whose getters return borrowed
//! `&str`s, and a [`Decision`] names candidates by index. Nothing is parsed unless
//! asked for: `plugin_config` is decoded into [`Plugin::Config`] once per call, the
//! lead's attributes only by [`Lead::attributes`].
//!
//! # Layout
//! - [`types`]: what a plugin sees ([`RouteInput`], [`Lead`], [`Candidate`]) and
//!   answers ([`Decision`]), as views over the input bytes.
//! - [`Plugin`] and [`register_plugin!`]: the author's side.
//! - [`abi`]: the wire format and export names, shared by the guest glue and the host.
//!   Plugin code never touches it; `plugin-sdk/README.md` documents it for other
//!   languages.
//! - [`testing`]: the native harness: fixture builders and [`testing::run`].
//! - `guest` (hidden): the glue [`register_plugin!`] expands to, and the module's
//!   arena allocator.

#![warn(missing_docs)]

pub mod abi;
#[doc(hidden)]
pub mod guest;
pub mod testing;
pub mod types;

pub use abi::ABI_VERSION;
pub use types::{Candidate, CandidateIndex, Decision, Lead, RouteInput};

/// A routing plugin: ranks the candidates for one lead.
///
/// The engine creates a fresh instance of the module for every decision, so a plugin
/// cannot carry state from one lead to the next; `Default` builds the value `route`
/// is called on.
pub trait Plugin: Default {
    /// The territory's `plugin_config`, decoded from its JSON text at each call. Use
    /// `()` for a plugin without configuration (the text is then not parsed at all),
    /// `serde_json::Value` to take it raw, or a struct with `#[serde(default)]` fields
    /// to accept `{}`.
    type Config: serde::de::DeserializeOwned + 'static;

    /// Ranks `input.candidates()` for `input.lead()`, best first. Reps left out of the
    /// ranking are never assigned this lead by the plugin; an empty ranking counts as
    /// a failure, so say [`Decision::no_preference`] to let the territory's fallback
    /// decide instead.
    fn route(&self, input: &RouteInput<'_>, config: &Self::Config) -> Decision;

    /// Checks a decoded configuration beyond what its types say (ranges, consistency).
    /// An `Err` reaches the operator as `plugin_config: <message>` when a territory is
    /// configured, and makes a call fail (the fallback decides) at routing time.
    fn check_config(_config: &Self::Config) -> Result<(), String> {
        Ok(())
    }
}

/// The README's example plugin compiles as a doctest, so the walkthrough's plugin
/// cannot rot. Its `#[cfg(test)]` module is left out there: doctests are not built
/// with `cfg(test)`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// Everything a plugin file needs: `use leadroute_plugin_sdk::prelude::*;`.
pub mod prelude {
    pub use crate::register_plugin;
    pub use crate::testing;
    pub use crate::types::{Candidate, Decision, Lead, RouteInput};
    pub use crate::{Plugin, log};
    pub use serde::Deserialize;
    pub use serde_json;
}

/// Sends a line to the host's log, tagged with the plugin's name. Off the wasm target
/// (the native harness) it prints to stderr. The host caps lines per call and bytes
/// per line, so use it for rare diagnostics, not per candidate.
pub fn log(message: &str) {
    guest::log(message);
}

/// Exports a [`Plugin`] type as the module's routing entry point.
///
/// Generates the ABI exports (`leadroute_abi_version`, `leadroute_alloc`,
/// `leadroute_route`) and, on wasm32, installs the SDK's arena as the global allocator
/// (a call then touches few memory pages and never grows memory for typical inputs;
/// see `guest::Arena`). Call it once, at the crate root of a `cdylib` crate. A plugin
/// that brings its own `#[global_allocator]` writes
/// `register_plugin!(MyPlugin, own_allocator)`.
#[macro_export]
macro_rules! register_plugin {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        #[global_allocator]
        static LEADROUTE_ARENA: $crate::guest::Arena = $crate::guest::Arena::new();

        $crate::register_plugin!($plugin, own_allocator);
    };
    ($plugin:ty, own_allocator) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            #[unsafe(no_mangle)]
            extern "C" fn leadroute_abi_version() -> i32 {
                $crate::ABI_VERSION as i32
            }

            #[unsafe(no_mangle)]
            extern "C" fn leadroute_alloc(len: i32) -> i32 {
                $crate::guest::alloc(len)
            }

            #[unsafe(no_mangle)]
            extern "C" fn leadroute_route(ptr: i32, len: i32) -> i64 {
                $crate::guest::route::<$plugin>(ptr, len)
            }
        };
    };
}
