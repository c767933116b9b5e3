//! The engine's typed errors.
//!
//! Every variant maps to exactly one client-visible situation; the server turns
//! them into HTTP statuses in one place. Validation problems are separate
//! (`ValidationError`) because they always mean "the caller sent bad data".

use crate::domain::{LeadId, RepId, Stage, TerritoryId};

/// Bad input, detected before anything is changed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// The offending field, as named in the API (`phone`, `regions[2]`, …).
    pub field: String,
    /// What is wrong with it, for humans.
    pub message: String,
    /// A stable snake_case code (`invalid_field`, `missing_contact`, …).
    pub code: &'static str,
}

impl ValidationError {
    /// Creates an `invalid_field` error for `field`.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
            code: "invalid_field",
        }
    }

    /// Replaces the stable code.
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = code;
        self
    }
}

/// Everything that can go wrong in an engine call.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The input was rejected before any change.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// No territory matches the lead's region and there is no default territory.
    #[error("no territory matches region {region:?} and no default territory is configured")]
    NoTerritory {
        /// The lead's region, if it had one.
        region: Option<String>,
    },
    /// The lead does not exist.
    #[error("lead {0} not found")]
    LeadNotFound(LeadId),
    /// The rep does not exist.
    #[error("rep {0} not found")]
    RepNotFound(RepId),
    /// The territory does not exist.
    #[error("territory {0} not found")]
    TerritoryNotFound(TerritoryId),
    /// A stage event arrived out of order.
    #[error("stage {got} is out of order: expected {expected}")]
    StageOrder {
        /// The stage the caller sent.
        got: Stage,
        /// The only stage that may come next (`None` after the last stage).
        expected: Stage,
    },
    /// The lead is closed; no further events are accepted.
    #[error("lead {0} is closed")]
    LeadClosed(LeadId),
    /// The event needs an assigned lead, but the lead waits in a queue.
    #[error("lead {0} is queued and has no rep yet")]
    LeadNotAssigned(LeadId),
    /// Deleting a rep that still owns open leads.
    #[error("rep {rep} has {open} open lead(s); pass reassign=true to re-route them")]
    RepHasOpenLeads {
        /// The rep.
        rep: RepId,
        /// How many open leads it owns.
        open: u32,
    },
    /// The change conflicts with another territory's configuration.
    #[error("{0}")]
    TerritoryConflict(String),
    /// A territory names a plugin the engine does not know.
    #[error("plugin {0:?} is not installed")]
    UnknownPlugin(String),
    /// An uploaded plugin module was rejected; the message says which check failed.
    #[error("plugin {name:?} rejected: {message}")]
    PluginInvalid {
        /// The plugin's name.
        name: String,
        /// What is wrong with the module, for the operator.
        message: String,
    },
    /// No such plugin, or no such version of it.
    #[error("{}", match version {
        Some(v) => format!("plugin {name:?} has no version {v}"),
        None => format!("plugin {name:?} not found"),
    })]
    PluginNotFound {
        /// The plugin's name.
        name: String,
        /// The version asked for, if one was.
        version: Option<u32>,
    },
    /// Deleting a plugin that territories still use.
    #[error("plugin {name:?} is used by territory {}; switch them to another strategy first",
        territories.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", "))]
    PluginInUse {
        /// The plugin's name.
        name: String,
        /// The territories using it.
        territories: Vec<TerritoryId>,
    },
    /// No such webhook subscription.
    #[error("webhook {0} not found")]
    WebhookNotFound(crate::domain::WebhookId),
    /// An SLA re-route found the lead touched, moved or closed since its deadline was
    /// read; nothing changed.
    #[error("lead {0} no longer misses its first-touch deadline")]
    SlaNotBreached(LeadId),
    /// The store could not persist the change; nothing was acknowledged.
    #[error("store unavailable: {0}")]
    StoreUnavailable(String),
    /// Admitting the call would pass the limit on work in flight; nothing was done.
    /// Refused at once, without waiting, so callers can retry after a short pause.
    #[error("{in_flight} {what} already in flight (limit {limit}); retry shortly")]
    Overloaded {
        /// What is limited: `"leads"` or `"admin writes"`.
        what: &'static str,
        /// How many were in flight when this call was refused.
        in_flight: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A replay was asked for while another one runs; only one runs at a time, since
    /// each may read up to [`MAX_REPLAY_LIMIT`](crate::engine::MAX_REPLAY_LIMIT) leads
    /// and keep a core busy for seconds. Nothing was done.
    #[error("another replay is running; only one runs at a time, retry once it has finished")]
    ReplayInProgress,
    /// A backup was asked for while another one is being written; nothing was done.
    #[error("another backup is being written; retry once it has finished")]
    BackupInProgress,
    /// The backup file could not be written (its directory cannot be created or
    /// written, the disk is full), or more was written while the store was read than
    /// a backup keeps in memory. Nothing was kept of it; the store is unchanged.
    #[error("the backup could not be written: {0}")]
    BackupFailed(String),
    /// A plugin upload found every compile slot held by compiles still running,
    /// including ones whose upload already timed out: a compile cannot be interrupted,
    /// so each keeps its thread until it ends. Nothing was stored.
    #[error(
        "{running} plugin compile(s) still running (limit {limit}), possibly of uploads \
         that timed out; retry once they have finished"
    )]
    CompileBusy {
        /// Compiles running when this upload was refused.
        running: usize,
        /// The most that may run at once.
        limit: usize,
    },
    /// The engine is shutting down and accepts no new work.
    #[error("the engine is shutting down")]
    ShuttingDown,
    /// A broken internal invariant; a bug, logged with detail.
    #[error("internal error: {0}")]
    Internal(String),
}

impl EngineError {
    /// A stable snake_case code for this error, used in API error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            EngineError::Invalid(v) => v.code,
            EngineError::NoTerritory { .. } => "no_territory",
            EngineError::LeadNotFound(_) => "lead_not_found",
            EngineError::RepNotFound(_) => "rep_not_found",
            EngineError::TerritoryNotFound(_) => "territory_not_found",
            EngineError::StageOrder { .. } => "stage_order",
            EngineError::LeadClosed(_) => "lead_closed",
            EngineError::LeadNotAssigned(_) => "lead_not_assigned",
            EngineError::RepHasOpenLeads { .. } => "rep_has_open_leads",
            EngineError::TerritoryConflict(_) => "territory_conflict",
            EngineError::UnknownPlugin(_) => "unknown_plugin",
            EngineError::PluginInvalid { .. } => "plugin_invalid",
            EngineError::PluginNotFound { .. } => "plugin_not_found",
            EngineError::PluginInUse { .. } => "plugin_in_use",
            EngineError::SlaNotBreached(_) => "sla_not_breached",
            EngineError::WebhookNotFound(_) => "webhook_not_found",
            EngineError::StoreUnavailable(_) => "store_unavailable",
            EngineError::Overloaded { .. } => "overloaded",
            EngineError::ReplayInProgress => "replay_in_progress",
            EngineError::BackupInProgress => "backup_in_progress",
            EngineError::BackupFailed(_) => "backup_failed",
            EngineError::CompileBusy { .. } => "compile_busy",
            EngineError::ShuttingDown => "shutting_down",
            EngineError::Internal(_) => "internal",
        }
    }
}

impl From<sled::Error> for EngineError {
    fn from(e: sled::Error) -> Self {
        EngineError::StoreUnavailable(e.to_string())
    }
}

/// Shorthand for results of engine calls.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
