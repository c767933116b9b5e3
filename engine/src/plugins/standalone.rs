//! One plugin module outside any engine: a sandbox with the engine's limits, for
//! benchmarks and tools that want to time or try a module without a store or actors.

use std::sync::Arc;

use serde_json::value::RawValue;

use super::abi::{Answer, decode_output, with_input};
use super::sandbox::{Admit, Compiled, Live, PluginLimits, Sandbox};
use super::strategy::split_config;
use crate::domain::Lead;
use crate::strategy::{Candidate, Ranking};

/// A compiled module and its sandbox; see the module docs.
pub struct Standalone {
    sandbox: Sandbox,
    compiled: Compiled,
    label: Arc<str>,
    config: Box<RawValue>,
}

/// An instance kept across calls (the engine instantiates afresh for every call;
/// this exists to measure that choice).
pub struct LiveInstance<'a> {
    host: &'a Standalone,
    live: Live,
}

impl Standalone {
    /// Validates and compiles `wasm` under `limits`, to be called with `plugin_config`.
    pub fn new(
        limits: PluginLimits,
        wasm: &[u8],
        plugin_config: &serde_json::Value,
    ) -> Result<Standalone, String> {
        let sandbox = Sandbox::new(limits, Arc::new(|_| {}))?;
        let compiled = sandbox
            .compile(wasm, Admit::Wait)
            .map_err(|e| e.to_string())?;
        // As a territory's config reaches the plugin: without the engine's `fallback`.
        let (_, config, _) = split_config(plugin_config).map_err(|e| e.to_string())?;
        Ok(Standalone {
            sandbox,
            compiled,
            label: "standalone".into(),
            config,
        })
    }

    /// Encodes the question a call would hand the module, into a new buffer (a call
    /// encodes straight into guest memory instead).
    pub fn encode(&self, lead: &Lead, candidates: &[Candidate<'_>]) -> Vec<u8> {
        self.with_input(lead, candidates, |i| {
            i.encode().expect("a routing question is far below 4 GiB")
        })
    }

    fn with_input<R>(
        &self,
        lead: &Lead,
        candidates: &[Candidate<'_>],
        f: impl FnOnce(&leadroute_plugin_sdk::abi::InputRef<'_>) -> R,
    ) -> R {
        let now = lead.received_at;
        with_input(lead, candidates, "standalone", &self.config, now, f)
    }

    /// Ranks in a fresh instance, exactly as the engine does: encode, instantiate,
    /// call, check the answer. "No preference" is an empty order; `Err` describes a
    /// failure (`reason: detail`).
    pub fn rank(&self, lead: &Lead, candidates: &[Candidate<'_>]) -> Result<Ranking, String> {
        let called = self
            .with_input(lead, candidates, |i| {
                self.sandbox.call(&self.compiled, &self.label, i)
            })
            .map_err(|f| f.to_string())?;
        ranking(decode_output(&called.output, candidates.len()).map_err(|f| f.to_string())?)
    }

    /// Instantiates and calls nothing but `leadroute_abi_version`: the fixed cost of a
    /// fresh instance.
    pub fn instantiate_only(&self) -> Result<i32, String> {
        self.sandbox
            .abi_version(&self.compiled, &self.label)
            .map_err(|f| f.to_string())
    }

    /// An instance to call repeatedly.
    pub fn live(&self) -> Result<LiveInstance<'_>, String> {
        let live = self
            .sandbox
            .live(&self.compiled, &self.label)
            .map_err(|f| f.to_string())?;
        Ok(LiveInstance { host: self, live })
    }
}

impl LiveInstance<'_> {
    /// Ranks on the kept instance. Its memory is never reclaimed between calls, so
    /// after a few thousand calls it runs out: take a new one.
    pub fn rank(&mut self, lead: &Lead, candidates: &[Candidate<'_>]) -> Result<Ranking, String> {
        let (host, live) = (self.host, &mut self.live);
        let output = host
            .with_input(lead, candidates, |i| host.sandbox.call_live(live, i))
            .map_err(|f| f.to_string())?;
        ranking(decode_output(&output, candidates.len()).map_err(|f| f.to_string())?)
    }
}

/// Checks a module's raw answer for `candidates` candidates exactly as the host does
/// after a call (layout, bounds, indices in range, no repeats, not empty): for fuzzing
/// and tools. "No preference" is an empty order; `Err` says what is wrong.
pub fn decode_answer(bytes: &[u8], candidates: usize) -> Result<Ranking, String> {
    ranking(decode_output(bytes, candidates).map_err(|f| f.to_string())?)
}

/// "No preference" is an answer, not a failure: an empty order (in a territory the
/// fallback would then decide).
fn ranking(answer: Answer) -> Result<Ranking, String> {
    match answer {
        Answer::Ranked { order, reason } => Ok(Ranking::new(order, reason)),
        Answer::NoPreference { reason } => Ok(Ranking::new(Vec::new(), reason)),
    }
}
