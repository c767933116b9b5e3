//! Plugins: what an upload created, the plugin view with versions and health, and
//! the activation body.

use std::collections::BTreeMap;

use leadroute_engine::{CircuitState, PluginInfo, PluginVersionInfo};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::rfc3339;

/// What `PUT /admin/plugins/{name}` created: a new version, now the active one.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[schema(example = json!({"name": "vip-tier", "version": 3,
    "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "size": 48213}))]
pub struct PluginVersionView {
    /// The plugin's name.
    pub name: String,
    /// The new version's number.
    pub version: u32,
    /// Hex SHA-256 of the module.
    pub sha256: String,
    /// Module size in bytes.
    pub size: u64,
}

impl From<PluginVersionInfo> for PluginVersionView {
    fn from(v: PluginVersionInfo) -> Self {
        PluginVersionView {
            name: v.name,
            version: v.version,
            sha256: v.sha256,
            size: v.size,
        }
    }
}

/// One stored version of a plugin.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct VersionView {
    /// Version number.
    pub version: u32,
    /// Hex SHA-256 of the module.
    pub sha256: String,
    /// Module size in bytes.
    pub size: u64,
    /// When it was uploaded (RFC 3339).
    pub uploaded_at: String,
    /// The same, in Unix milliseconds.
    pub uploaded_at_ms: u64,
}

/// A plugin's circuit breaker: `closed` (calls go to the plugin) or `open` (its
/// territories' fallbacks decide until an operator activates a version).
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct CircuitView {
    /// `closed` or `open`.
    pub state: String,
    /// The failure that opened it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
}

/// A plugin with its versions, active version, call statistics and circuit state.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct PluginView {
    /// The plugin's name.
    pub name: String,
    /// The version territories following the active one (`version: null`) use.
    pub active_version: u32,
    /// Every stored version, oldest first.
    pub versions: Vec<VersionView>,
    /// Calls since the server started (simulations excluded).
    pub calls: u64,
    /// Failed calls since start, by reason (`trap`, `out_of_fuel`, `timeout`, …);
    /// reasons with none are left out.
    pub failures: BTreeMap<String, u64>,
    /// Mean fuel (≈ wasm instructions) per successful call: the plugin's cost.
    pub mean_fuel: u64,
    /// Failures in a row right now.
    pub consecutive_failures: u32,
    /// The circuit breaker.
    pub circuit: CircuitView,
}

impl From<PluginInfo> for PluginView {
    fn from(p: PluginInfo) -> Self {
        PluginView {
            name: p.name,
            active_version: p.active_version,
            versions: p
                .versions
                .into_iter()
                .map(|v| VersionView {
                    version: v.version,
                    sha256: v.sha256,
                    size: v.size,
                    uploaded_at: rfc3339(v.uploaded_at),
                    uploaded_at_ms: v.uploaded_at,
                })
                .collect(),
            calls: p.calls,
            failures: p
                .failures
                .into_iter()
                .map(|(reason, n)| (reason.as_str().to_string(), n))
                .collect(),
            mean_fuel: p.mean_fuel,
            consecutive_failures: p.consecutive_failures,
            circuit: match p.circuit {
                CircuitState::Closed => CircuitView {
                    state: "closed".into(),
                    last_failure: None,
                },
                CircuitState::Open { last_failure } => CircuitView {
                    state: "open".into(),
                    last_failure: Some(last_failure),
                },
            },
        }
    }
}

/// The body of `POST /admin/plugins/{name}/activate`.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivateBody {
    /// The version to make active (a rollback or a roll forward).
    pub version: u32,
}
