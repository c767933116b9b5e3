//! Engine configuration: data, validated once when the engine opens.

use std::path::PathBuf;
use std::sync::Arc;

use crate::clock::{Clock, SystemClock};
use crate::plugins::PluginLimits;
use crate::store::Durability;

/// How to open an engine.
#[derive(Clone)]
pub struct EngineConfig {
    /// Directory of the sled store; created if missing.
    pub data_dir: PathBuf,
    /// What an acknowledged change survives.
    pub durability: Durability,
    /// The time source; tests pass a [`ManualClock`](crate::clock::ManualClock).
    pub clock: Arc<dyn Clock>,
    /// Limits on plugin modules and calls.
    pub plugin_limits: PluginLimits,
}

impl EngineConfig {
    /// Defaults: power durability, the system clock.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        EngineConfig {
            data_dir: data_dir.into(),
            durability: Durability::default(),
            clock: Arc::new(SystemClock),
            plugin_limits: PluginLimits::default(),
        }
    }

    /// Sets the durability.
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Sets the plugin limits.
    pub fn plugin_limits(mut self, limits: PluginLimits) -> Self {
        self.plugin_limits = limits;
        self
    }

    /// Sets the clock.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }
}

impl std::fmt::Debug for EngineConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineConfig")
            .field("data_dir", &self.data_dir)
            .field("durability", &self.durability)
            .field("plugin_limits", &self.plugin_limits)
            .finish_non_exhaustive()
    }
}
