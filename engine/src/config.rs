//! Engine configuration: data, validated once when the engine opens.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::plugins::PluginLimits;
use crate::store::Durability;

/// Default limit on leads in flight (intake, batches, lead events and reassignments
/// between admission and their durable answer).
///
/// From the engine benchmark (benches/README.md, "Engine"): 64 concurrent callers
/// reach 27k durable leads/s, 256 reach 31k/s (p99 20.6 ms); beyond that, more leads
/// in flight only queue. At that ceiling 256 leads in flight mean about
/// 256 / 31k/s ≈ 8 ms of queueing, the most worth admitting.
pub const DEFAULT_MAX_IN_FLIGHT_LEADS: usize = 256;

/// Default longest wait for sled's lock on the data directory: long enough for a
/// process that is stopping to make its last commits durable and let go.
pub const DEFAULT_STORE_LOCK_WAIT: Duration = Duration::from_secs(10);

/// Default bound on the writes a backup's read may capture: the committer keeps a
/// copy of each write (key and value) in memory until the read ends. At 1,000 leads/s
/// a million-lead read captured about 30 MB; past the bound the backup is given up
/// ([`EngineError::BackupFailed`](crate::EngineError::BackupFailed)) rather than the
/// memory spent.
pub const DEFAULT_BACKUP_CAPTURE_BYTES: u64 = 1 << 30;

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
    /// Most leads in flight at once; past it intake answers
    /// [`EngineError::Overloaded`](crate::EngineError::Overloaded) at once. A batch
    /// counts its leads (a batch larger than the limit needs the engine to itself).
    pub max_in_flight_leads: usize,
    /// Longest opening waits for sled's lock on `data_dir`, held by another process
    /// (or, a moment after it closed, by an earlier opening in this one); past it,
    /// opening fails. [`DEFAULT_STORE_LOCK_WAIT`] by default.
    pub store_lock_wait: Duration,
    /// Most bytes of writes a backup's read may capture
    /// ([`DEFAULT_BACKUP_CAPTURE_BYTES`] by default).
    pub backup_capture_bytes: u64,
    /// How the committer makes a written group durable in power durability:
    /// `fdatasync` of sled's data file ([`File::sync_data`]). This is where the engine
    /// meets the device; tests replace it to make the sync fail.
    pub data_sync: DataSync,
    /// Called at each [`Checkpoint`] the engine reaches. Does nothing by default;
    /// tests use it to hold a replay, a compile, the start-up audit or a re-route at a
    /// known point.
    pub probe: Probe,
}

/// A point in the engine's work where [`EngineConfig::probe`] is called, on the
/// thread that reaches it.
///
/// Replays, plugin compiles and the start-up audit run on threads of their own, and
/// what matters about them (one replay at a time, a cancelled replay stopping, a
/// compile slot held until its thread ends, the audit reading while leads change)
/// happens while they run; two re-routes of one lead matter only when both read it
/// before either commits. Tests can only check that at a known point: a probe that
/// blocks holds the thread there, and one that sends on a channel tells the test the
/// point was reached, with no timing involved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Checkpoint {
    /// A replay's thread is about to read the next lead or run the next decision;
    /// a cancelled replay stops right after this point.
    ReplayStep,
    /// A replay's caller went away before the answer: the replay is told to stop.
    /// Called on the caller's thread, which must not be blocked.
    ReplayCancelled,
    /// A replay's thread has stopped (done, failed or cancelled) and another replay
    /// may start.
    ReplayEnded,
    /// A compile thread holds its compile slot and is about to compile.
    CompileStarted,
    /// A compile thread has finished and given its compile slot back.
    CompileEnded,
    /// The start-up audit's thread has read the open assignments and is about to
    /// check every other record against them: a change committed from here on may
    /// look half-done to it, and must be dismissed by the committer's second look.
    AuditScan,
    /// A re-route has read the lead it moves (its current rep, the reps to leave out)
    /// and is about to ask the territory for a new rep. Called on the caller's thread,
    /// in its async task: a probe that blocks here blocks that thread.
    ReassignRead,
    /// A backup's thread has read one more tree (they are read in name order), and
    /// goes on to the next; commits go on meanwhile.
    BackupTree,
    /// A backup's thread has read every tree and is about to ask the committer for
    /// the writes it captured meanwhile. A change committed before that handover is
    /// in the backup, through the capture; the backup still holds its slot.
    BackupRead,
}

/// See [`EngineConfig::probe`].
pub type Probe = Arc<dyn Fn(Checkpoint) + Send + Sync>;

/// Syncs sled's data file (see [`EngineConfig::data_sync`]).
pub type DataSync = Arc<dyn Fn(&File) -> std::io::Result<()> + Send + Sync>;

impl EngineConfig {
    /// Defaults: power durability, the system clock.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        EngineConfig {
            data_dir: data_dir.into(),
            durability: Durability::default(),
            clock: Arc::new(SystemClock),
            plugin_limits: PluginLimits::default(),
            max_in_flight_leads: DEFAULT_MAX_IN_FLIGHT_LEADS,
            store_lock_wait: DEFAULT_STORE_LOCK_WAIT,
            backup_capture_bytes: DEFAULT_BACKUP_CAPTURE_BYTES,
            data_sync: Arc::new(File::sync_data),
            probe: Arc::new(|_| {}),
        }
    }

    /// Sets the probe called at each [`Checkpoint`] (see [`EngineConfig::probe`]).
    pub fn probe(mut self, probe: impl Fn(Checkpoint) + Send + Sync + 'static) -> Self {
        self.probe = Arc::new(probe);
        self
    }

    /// Replaces how a written group is synced to the device (see
    /// [`EngineConfig::data_sync`]).
    pub fn data_sync(
        mut self,
        sync: impl Fn(&File) -> std::io::Result<()> + Send + Sync + 'static,
    ) -> Self {
        self.data_sync = Arc::new(sync);
        self
    }

    /// Sets the bound on the writes a backup's read may capture (see
    /// [`EngineConfig::backup_capture_bytes`]).
    pub fn backup_capture_bytes(mut self, bytes: u64) -> Self {
        self.backup_capture_bytes = bytes;
        self
    }

    /// Sets the limit on leads in flight (at least 1).
    pub fn max_in_flight_leads(mut self, limit: usize) -> Self {
        self.max_in_flight_leads = limit.max(1);
        self
    }

    /// Sets the longest wait for the store's lock (see
    /// [`EngineConfig::store_lock_wait`]).
    pub fn store_lock_wait(mut self, wait: Duration) -> Self {
        self.store_lock_wait = wait;
        self
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
            .field("max_in_flight_leads", &self.max_in_flight_leads)
            .field("store_lock_wait", &self.store_lock_wait)
            .finish_non_exhaustive()
    }
}
