//! Backups: the answer of `POST /admin/backups`.

use leadroute_engine::Backup;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A backup written and durable.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[schema(example = json!({
    "path": "./data/backups/leadroute-2026-11-28T130500.123Z.backup",
    "bytes": 48210391, "entries": 801233, "paused_ms": 412, "took_ms": 530
}))]
pub struct BackupView {
    /// The file, as the server sees it.
    pub path: String,
    /// Its size.
    pub bytes: u64,
    /// Records (keys with their values) it holds.
    pub entries: u64,
    /// How long commits waited while the store was read: intake's pause.
    pub paused_ms: u64,
    /// The whole backup, the sync and rename included.
    pub took_ms: u64,
}

impl From<Backup> for BackupView {
    fn from(b: Backup) -> Self {
        BackupView {
            path: b.path.display().to_string(),
            bytes: b.counts.bytes,
            entries: b.counts.entries,
            paused_ms: b.paused.as_millis() as u64,
            took_ms: b.took.as_millis() as u64,
        }
    }
}
