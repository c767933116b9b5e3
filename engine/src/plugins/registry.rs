//! The plugin registry: every plugin's versions, compiled once, which one is active,
//! call statistics and the circuit breaker. Persisted in the store's `plugins` tree
//! (through the committer, like every write), rebuilt from it at start.
//!
//! Hot swap: territories following the active version read it at the start of each
//! decision and hold that version (an `Arc`) until the decision ends, so an activation
//! never changes a decision in flight, and no lead is decided twice.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use leadroute_plugin_sdk::abi::InputRef;
use serde::Serialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::abi::{Answer, Failure, FailureReason, decode_output, with_input};
use super::sandbox::{Admit, CompileError, Compiled, PluginLimits, Sandbox};
use crate::clock::UnixMillis;
use crate::config::Probe;
use crate::domain::{LeadId, LeadInput, RepId};
use crate::error::{EngineError, Result};
use crate::metrics::Metrics;
use crate::store::Store;
use crate::store::codec::{PluginRecord, PluginVersionRecord};
use crate::strategy::Candidate;

/// What an upload created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PluginVersionInfo {
    /// The plugin's name.
    pub name: String,
    /// The new version's number.
    pub version: u32,
    /// Hex SHA-256 of the module.
    pub sha256: String,
    /// Module size in bytes.
    pub size: u64,
}

/// One stored version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VersionInfo {
    /// Version number.
    pub version: u32,
    /// Hex SHA-256 of the module.
    pub sha256: String,
    /// Module size in bytes.
    pub size: u64,
    /// Upload time, Unix milliseconds.
    pub uploaded_at: UnixMillis,
}

/// Whether a plugin is being called.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum CircuitState {
    /// Calls go to the plugin.
    Closed,
    /// Too many consecutive failures: the territories' fallbacks decide until an
    /// operator activates a version again.
    Open {
        /// The failure that opened it.
        last_failure: String,
    },
}

/// A plugin as the admin API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PluginInfo {
    /// Name.
    pub name: String,
    /// The version territories with `version: null` use.
    pub active_version: u32,
    /// Every stored version, oldest first.
    pub versions: Vec<VersionInfo>,
    /// Calls since the engine started (successful or not, simulations excluded).
    pub calls: u64,
    /// Failed calls since the engine started, by reason; reasons with none are omitted.
    pub failures: BTreeMap<FailureReason, u64>,
    /// Mean fuel per successful call since start: the plugin's cost, ≈ wasm
    /// instructions executed (the budget per call is `PluginLimits::fuel`).
    pub mean_fuel: u64,
    /// Consecutive failures right now.
    pub consecutive_failures: u32,
    /// The circuit breaker.
    pub circuit: CircuitState,
}

/// A compiled version, shared by every decision that uses it.
pub(crate) struct LoadedVersion {
    /// `plugin:NAME@VERSION`, the `decided_by` of its decisions.
    pub decided_by: String,
    /// `NAME@VERSION`, for logs.
    pub label: Arc<str>,
    compiled: Compiled,
}

/// Counters of one plugin since start.
#[derive(Default)]
struct Stats {
    calls: AtomicU64,
    succeeded: AtomicU64,
    fuel: AtomicU64,
    failures: [AtomicU64; FailureReason::ALL.len()],
    consecutive: AtomicU32,
    open: AtomicBool,
    last_failure: RwLock<String>,
}

struct Versions {
    record: PluginRecord,
    loaded: BTreeMap<u32, Arc<LoadedVersion>>,
}

/// One plugin: versions and statistics.
pub(crate) struct PluginEntry {
    name: String,
    versions: RwLock<Versions>,
    stats: Stats,
}

impl PluginEntry {
    /// The plugin's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The version to use: `pinned`, or the active one.
    pub(crate) fn version(&self, pinned: Option<u32>) -> Option<Arc<LoadedVersion>> {
        let v = self.versions.read().unwrap_or_else(|e| e.into_inner());
        v.loaded.get(&pinned.unwrap_or(v.record.active)).cloned()
    }

    /// Whether the circuit is open (the plugin is bypassed).
    pub(crate) fn circuit_open(&self) -> bool {
        self.stats.open.load(Ordering::Acquire)
    }

    fn info(&self) -> PluginInfo {
        let v = self.versions.read().unwrap_or_else(|e| e.into_inner());
        let s = &self.stats;
        PluginInfo {
            name: self.name.clone(),
            active_version: v.record.active,
            versions: v
                .record
                .versions
                .iter()
                .map(|r| VersionInfo {
                    version: r.version,
                    sha256: r.sha256.clone(),
                    size: r.size,
                    uploaded_at: r.uploaded_at,
                })
                .collect(),
            calls: s.calls.load(Ordering::Relaxed),
            failures: FailureReason::ALL
                .iter()
                .map(|r| (*r, s.failures[r.index()].load(Ordering::Relaxed)))
                .filter(|(_, n)| *n > 0)
                .collect(),
            mean_fuel: s.fuel.load(Ordering::Relaxed) / s.succeeded.load(Ordering::Relaxed).max(1),
            consecutive_failures: s.consecutive.load(Ordering::Relaxed),
            circuit: if self.circuit_open() {
                CircuitState::Open {
                    last_failure: s
                        .last_failure
                        .read()
                        .unwrap_or_else(|e| e.into_inner())
                        .clone(),
                }
            } else {
                CircuitState::Closed
            },
        }
    }
}

/// The outcome of one routing call to a plugin.
pub(crate) enum CallOutcome {
    /// A checked answer.
    Answer(Answer),
    /// The call failed; the fallback decides.
    Failed(Failure),
}

/// Every plugin, and the sandbox they run in.
pub(crate) struct Registry {
    sandbox: Sandbox,
    plugins: RwLock<BTreeMap<String, Arc<PluginEntry>>>,
    metrics: Metrics,
    /// Told (plugin name, last failure) when a circuit opens.
    circuit_listener: std::sync::OnceLock<CircuitListener>,
}

/// Called with a plugin's name and its last failure when its circuit opens.
pub(crate) type CircuitListener = Box<dyn Fn(&str, &str) + Send + Sync>;

impl Registry {
    /// Loads and compiles every stored plugin version. A version that no longer
    /// compiles (e.g. after a host upgrade) is skipped with an error log; the others
    /// stay usable. `probe` hears of compile threads starting and ending.
    pub(crate) fn open(
        store: &Store,
        limits: PluginLimits,
        metrics: Metrics,
        probe: Probe,
    ) -> Result<Registry> {
        let sandbox = Sandbox::new(limits, probe).map_err(EngineError::Internal)?;
        let mut plugins = BTreeMap::new();
        // Versions with identical bytes (a re-upload, a rollback copy) share one
        // compilation: compiling is most of a restart's cost when plugins are stored.
        let mut by_sha: HashMap<String, Compiled> = HashMap::new();
        for record in store.plugin_records()? {
            let mut loaded = BTreeMap::new();
            for v in &record.versions {
                let Some(wasm) = store.plugin_wasm(&record.name, v.version)? else {
                    tracing::error!(plugin = %record.name, version = v.version, "module bytes missing from the store");
                    continue;
                };
                let sha = sha256_hex(&wasm);
                // Names the version in what compiling it logs.
                let _span =
                    tracing::info_span!("stored", plugin = %record.name, version = v.version)
                        .entered();
                let compiled = match by_sha.get(&sha) {
                    Some(compiled) => Ok(compiled.clone()),
                    None => sandbox.compile(&wasm, Admit::Stored).inspect(|c| {
                        by_sha.insert(sha, c.clone());
                    }),
                };
                match compiled {
                    Ok(compiled) => {
                        loaded.insert(v.version, Arc::new(load(&record.name, v.version, compiled)));
                    }
                    Err(e) => {
                        tracing::error!(plugin = %record.name, version = v.version, error = %e, "stored module no longer compiles");
                    }
                }
            }
            let name = record.name.clone();
            metrics.start_plugin_series(&name);
            plugins.insert(
                name.clone(),
                Arc::new(PluginEntry {
                    name,
                    versions: RwLock::new(Versions { record, loaded }),
                    stats: Stats::default(),
                }),
            );
        }
        Ok(Registry {
            sandbox,
            plugins: RwLock::new(plugins),
            metrics,
            circuit_listener: std::sync::OnceLock::new(),
        })
    }

    /// Sets who hears of opened circuits (once; later calls are ignored).
    pub(crate) fn on_circuit_open(&self, listener: CircuitListener) {
        let _ = self.circuit_listener.set(listener);
    }

    /// The limits in force.
    pub(crate) fn limits(&self) -> &PluginLimits {
        self.sandbox.limits()
    }

    /// A plugin by name.
    pub(crate) fn get(&self, name: &str) -> Option<Arc<PluginEntry>> {
        self.plugins
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// Every plugin's info, by name.
    pub(crate) fn infos(&self) -> Vec<PluginInfo> {
        let plugins = self.plugins.read().unwrap_or_else(|e| e.into_inner());
        plugins.values().map(|p| p.info()).collect()
    }

    /// One plugin's info.
    pub(crate) fn info(&self, name: &str) -> Result<PluginInfo> {
        self.get(name)
            .map(|p| p.info())
            .ok_or_else(|| not_found(name, None))
    }

    /// Checks an upload: compiles (within the time limit, if a compile slot is free),
    /// exports, imports, ABI version, and a smoke run on the sample input within the
    /// call limits. Blocking: run it off async threads.
    pub(crate) fn validate(
        &self,
        name: &str,
        wasm: &[u8],
    ) -> std::result::Result<Compiled, CompileError> {
        let compiled = self.sandbox.compile(wasm, Admit::Refuse)?;
        let label: Arc<str> = format!("{name}@upload").into();
        let version = self
            .sandbox
            .abi_version(&compiled, &label)
            .map_err(|f| format!("leadroute_abi_version() failed: {f}"))?;
        let host = leadroute_plugin_sdk::ABI_VERSION;
        if version != host as i32 {
            return Err(format!(
                "module speaks plugin ABI version {version}; this host speaks version {host}"
            )
            .into());
        }
        let (lead, reps) = sample();
        let candidates = candidates(&reps);
        let config: &RawValue = serde_json::from_str("{}").expect("valid JSON");
        let called = with_input(
            &lead,
            &candidates,
            "smoke-test",
            config,
            lead.received_at,
            |i| self.sandbox.call(&compiled, &label, i),
        )
        .map_err(|f| format!("smoke run on the sample input failed: {f}"))?;
        match decode_output(&called.output, candidates.len()) {
            // An error answer to the empty sample config is a plugin correctly refusing a
            // config it needs; it is checked per territory when one is configured.
            Ok(_) => Ok(compiled),
            Err(f) if f.reason == FailureReason::PluginError => Ok(compiled),
            Err(f) => Err(format!("smoke run on the sample input failed: {f}").into()),
        }
    }

    /// Adds a validated version in memory and makes it active.
    pub(crate) fn install(&self, record: PluginRecord, compiled: Compiled) {
        let version = record.active;
        let loaded = Arc::new(load(&record.name, version, compiled));
        let mut plugins = self.plugins.write().unwrap_or_else(|e| e.into_inner());
        match plugins.get(&record.name) {
            Some(entry) => {
                let mut v = entry.versions.write().unwrap_or_else(|e| e.into_inner());
                v.loaded.insert(version, loaded);
                v.record = record;
                drop(v);
                entry.close_circuit(&self.metrics);
            }
            None => {
                let name = record.name.clone();
                self.metrics.start_plugin_series(&name);
                plugins.insert(
                    name.clone(),
                    Arc::new(PluginEntry {
                        name,
                        versions: RwLock::new(Versions {
                            record,
                            loaded: BTreeMap::from([(version, loaded)]),
                        }),
                        stats: Stats::default(),
                    }),
                );
            }
        }
    }

    /// The record of an existing plugin, for building the next change.
    pub(crate) fn record(&self, name: &str) -> Option<PluginRecord> {
        self.get(name).map(|p| {
            p.versions
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .record
                .clone()
        })
    }

    /// Applies a stored activation in memory and closes the circuit: activating is
    /// the operator's way of saying "try again".
    pub(crate) fn activate(&self, record: PluginRecord) {
        if let Some(entry) = self.get(&record.name) {
            entry
                .versions
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .record = record;
            entry.close_circuit(&self.metrics);
        }
    }

    /// Forgets a deleted plugin.
    pub(crate) fn remove(&self, name: &str) {
        self.plugins
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        self.metrics.end_plugin_series(name);
    }

    /// Runs one routing call, checks the answer, and (unless `dry`, as in simulations)
    /// records it: statistics, metrics, and the circuit breaker.
    pub(crate) fn call(
        &self,
        entry: &PluginEntry,
        version: &LoadedVersion,
        input: &InputRef<'_>,
        dry: bool,
    ) -> CallOutcome {
        let started = std::time::Instant::now();
        let mut fuel = 0;
        let result = self
            .sandbox
            .call(&version.compiled, &version.label, input)
            .and_then(|called| {
                fuel = called.fuel;
                decode_output(&called.output, input.candidates.len())
            });
        if dry {
            return match result {
                Ok(answer) => CallOutcome::Answer(answer),
                Err(f) => CallOutcome::Failed(f),
            };
        }
        self.metrics
            .plugin_call_duration
            .with_label_values(&[entry.name.as_str()])
            .observe(started.elapsed().as_secs_f64());
        let s = &entry.stats;
        s.calls.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(answer) => {
                s.consecutive.store(0, Ordering::Relaxed);
                s.succeeded.fetch_add(1, Ordering::Relaxed);
                s.fuel.fetch_add(fuel, Ordering::Relaxed);
                CallOutcome::Answer(answer)
            }
            Err(failure) => {
                self.failed(entry, version, &failure);
                CallOutcome::Failed(failure)
            }
        }
    }

    fn failed(&self, entry: &PluginEntry, version: &LoadedVersion, failure: &Failure) {
        let s = &entry.stats;
        s.failures[failure.reason.index()].fetch_add(1, Ordering::Relaxed);
        self.metrics
            .plugin_failures
            .with_label_values(&[entry.name.as_str(), failure.reason.as_str()])
            .inc();
        if !failure.reason.blames_plugin() {
            // Neither a failure of the module's nor a success: the count stands.
            tracing::warn!(plugin = %version.label, %failure, "plugin not called; fallback decides");
            return;
        }
        let consecutive = s.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::warn!(plugin = %version.label, %failure, consecutive, "plugin call failed; fallback decides");
        if consecutive >= self.limits().circuit_threshold && !s.open.swap(true, Ordering::AcqRel) {
            *s.last_failure.write().unwrap_or_else(|e| e.into_inner()) =
                format!("{}: {failure}", version.label);
            self.metrics
                .plugin_circuit_open
                .with_label_values(&[entry.name.as_str()])
                .set(1);
            tracing::error!(plugin = %version.label, consecutive, "plugin circuit opened: bypassed until a version is activated");
            if let Some(listener) = self.circuit_listener.get() {
                listener(&entry.name, &format!("{}: {failure}", version.label));
            }
        }
    }

    /// Runs `version` on the sample input with a territory's `plugin_config` and
    /// returns the plugin's own complaint about it, if any. Other failures are not the
    /// config's fault and are left to the call-time machinery.
    pub(crate) fn config_error(
        &self,
        version: &LoadedVersion,
        config: &RawValue,
    ) -> Option<String> {
        let (lead, reps) = sample();
        let candidates = candidates(&reps);
        let called = with_input(
            &lead,
            &candidates,
            "config-check",
            config,
            lead.received_at,
            |i| self.sandbox.call(&version.compiled, &version.label, i),
        );
        match called {
            Ok(called) => match decode_output(&called.output, candidates.len()) {
                Err(f) if f.reason == FailureReason::PluginError => Some(f.detail),
                _ => None,
            },
            Err(_) => None,
        }
    }
}

impl PluginEntry {
    fn close_circuit(&self, metrics: &Metrics) {
        self.stats.consecutive.store(0, Ordering::Relaxed);
        if self.stats.open.swap(false, Ordering::AcqRel) {
            metrics
                .plugin_circuit_open
                .with_label_values(&[self.name.as_str()])
                .set(0);
        }
    }
}

/// Version `version` of plugin `name`, as decisions use it.
pub(crate) fn load(name: &str, version: u32, compiled: Compiled) -> LoadedVersion {
    LoadedVersion {
        decided_by: format!("plugin:{name}@{version}"),
        label: format!("{name}@{version}").into(),
        compiled,
    }
}

pub(crate) fn not_found(name: &str, version: Option<u32>) -> EngineError {
    EngineError::PluginNotFound {
        name: name.to_string(),
        version,
    }
}

/// Hex SHA-256 of a module.
pub(crate) fn sha256_hex(wasm: &[u8]) -> String {
    Sha256::digest(wasm)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new version's record entry.
pub(crate) fn version_record(version: u32, wasm: &[u8], now: UnixMillis) -> PluginVersionRecord {
    PluginVersionRecord {
        version,
        sha256: sha256_hex(wasm),
        size: wasm.len() as u64,
        uploaded_at: now,
    }
}

/// An owned candidate, so the sample can lend `Candidate`s.
pub(crate) struct SampleRep {
    id: RepId,
    load: u32,
    skills: Vec<String>,
    tier: String,
}

/// The smoke run's lead and reps: realistic enough to exercise a plugin's main path.
pub(crate) fn sample() -> (crate::domain::Lead, Vec<SampleRep>) {
    let lead = LeadInput {
        external_id: Some("smoke-test".into()),
        region: Some("CN-SH".into()),
        industry: Some("hospital-lab".into()),
        purchase_amount: Some(150_000.0),
        source: Some("webform".into()),
        attributes: Some(serde_json::json!({"employees": 120, "budget_k": 80})),
        ..Default::default()
    }
    .validate(
        LeadId::from_ulid(ulid::Ulid::from_parts(1_700_000_000_000, 1)),
        1_700_000_000_000,
    )
    .expect("the sample lead is valid");
    let rep = |id: &str, load, skills: &[&str], tier: &str| SampleRep {
        id: RepId::new(id).expect("valid id"),
        load,
        skills: skills.iter().map(|s| s.to_string()).collect(),
        tier: tier.into(),
    };
    let reps = vec![
        rep("sample-a", 3, &["hospital-lab"], "junior"),
        rep("sample-b", 1, &["pharma"], "senior"),
        rep("sample-c", 0, &[], "junior"),
    ];
    (lead, reps)
}

pub(crate) fn candidates(reps: &[SampleRep]) -> Vec<Candidate<'_>> {
    reps.iter()
        .map(|r| Candidate {
            id: &r.id,
            load: r.load,
            capacity: 10,
            weight: 1.0,
            skills: &r.skills,
            tier: &r.tier,
            last_assigned_at: None,
        })
        .collect()
}
