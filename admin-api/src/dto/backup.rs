//! Backups: the answer of `POST /admin/backups`.

use leadroute_engine::Backup;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A backup written and durable.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[schema(example = json!({
    "path": "./data/backups/leadroute-2026-11-28T130500.123Z.backup",
    "bytes": 83357723, "entries": 600014, "captured": 812, "paused_ms": 0.041,
    "took_ms": 1530,
    "removed": ["./data/backups/leadroute-2026-11-21T130500.094Z.backup"]
}))]
pub struct BackupView {
    /// The file, as the server sees it.
    pub path: String,
    /// Its size.
    pub bytes: u64,
    /// Records it holds: keys with their values, and the writes captured while the
    /// store was read.
    pub entries: u64,
    /// Of those, the writes captured while the store was read.
    pub captured: u64,
    /// The committer's time on the backup, its two handovers, in milliseconds. (The
    /// read does not stop it, though the two take turns on the store's lock.)
    pub paused_ms: f64,
    /// The whole backup, the sync and rename included.
    pub took_ms: u64,
    /// Older backup files removed after it, oldest first, to keep `backup_keep` of
    /// them (empty when `backup_keep` is 0, every file kept).
    #[serde(default)]
    pub removed: Vec<String>,
}

impl From<Backup> for BackupView {
    fn from(b: Backup) -> Self {
        BackupView {
            path: b.path.display().to_string(),
            bytes: b.counts.bytes,
            entries: b.counts.entries,
            captured: b.counts.captured,
            paused_ms: b.paused.as_secs_f64() * 1e3,
            took_ms: b.took.as_millis() as u64,
            removed: Vec::new(),
        }
    }
}
