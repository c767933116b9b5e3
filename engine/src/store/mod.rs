//! Persistence in sled: trees, keys, reads, the group committer and recovery.
//!
//! Reads go straight to sled from any thread. Every write goes through the
//! [`Committer`](commit::Committer), one thread that applies changes in order, in
//! multi-tree transactions, and acknowledges them only after a flush that serves the
//! whole group.
//!
//! | tree          | key                          | value                     |
//! |---------------|------------------------------|---------------------------|
//! | `meta`        | `schema_version`             | u32 big-endian            |
//! | `reps`        | rep id                       | `RepRecord` (rep + load)  |
//! | `territories` | territory id                 | `Territory`               |
//! | `leads`       | lead id (16 bytes)           | `LeadState`               |
//! | `assignments` | lead id                      | `Assignment` (open only)  |
//! | `rep_leads`   | rep id, 0, lead id           | empty (index)             |
//! | `dedupe`      | `kind:normalized`            | lead id (open leads only) |
//! | `queue`       | territory id, 0, seq (u64)   | lead id                   |
//! | `history`     | lead id, seq (u64)           | `HistoryEntry`            |
//! | `plugins`     | plugin name                  | `PluginRecord`            |
//! | `plugins`     | plugin name, 0, version (u32)| the module's bytes, raw   |

pub(crate) mod audit;
pub(crate) mod codec;
pub(crate) mod commit;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::domain::{HistoryEntry, LeadId, LeadState, RepId, Territory, TerritoryId};
use crate::error::{EngineError, Result};
use codec::{Assignment, CorruptRecord, PluginRecord, RepRecord, decode};

/// The schema version this build writes; a store with another one is refused.
pub const SCHEMA_VERSION: u32 = 1;

/// What a 2xx promises.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Acknowledged changes survive a crash of the process (sled flush).
    Process,
    /// Acknowledged changes also survive a power cut: each group flush is followed by
    /// `fdatasync` of sled's data file.
    #[default]
    Power,
}

pub(crate) const REPS: usize = 0;
pub(crate) const TERRITORIES: usize = 1;
pub(crate) const LEADS: usize = 2;
pub(crate) const ASSIGNMENTS: usize = 3;
pub(crate) const REP_LEADS: usize = 4;
pub(crate) const DEDUPE: usize = 5;
pub(crate) const QUEUE: usize = 6;
pub(crate) const HISTORY: usize = 7;
pub(crate) const PLUGINS: usize = 8;
const TREE_NAMES: [&str; 9] = [
    "reps",
    "territories",
    "leads",
    "assignments",
    "rep_leads",
    "dedupe",
    "queue",
    "history",
    "plugins",
];

impl From<CorruptRecord> for EngineError {
    fn from(e: CorruptRecord) -> Self {
        EngineError::Internal(e.to_string())
    }
}

/// `prefix`, a zero byte, then `suffix`: keys of the index trees.
pub(crate) fn compound_key(prefix: &str, suffix: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 1 + suffix.len());
    key.extend_from_slice(prefix.as_bytes());
    key.push(0);
    key.extend_from_slice(suffix);
    key
}

/// The key of a plugin module's bytes.
pub(crate) fn plugin_wasm_key(name: &str, version: u32) -> Vec<u8> {
    compound_key(name, &version.to_be_bytes())
}

/// The history key of a lead's event number `seq`.
pub(crate) fn history_key(lead: LeadId, seq: u64) -> [u8; 24] {
    let mut key = [0; 24];
    key[..16].copy_from_slice(&lead.to_key());
    key[16..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// The opened sled database and its trees.
///
/// Cloned handles share one open database, which the committer can reopen in place
/// (see [`Store::reopen`]): sled 0.34.7 refuses every write after one failed, for good.
#[derive(Clone)]
pub struct Store {
    pub(crate) dir: PathBuf,
    live: Arc<RwLock<Option<Arc<Handle>>>>,
}

/// One opening of the database.
pub(crate) struct Handle {
    pub(crate) db: sled::Db,
    pub(crate) trees: [sled::Tree; 9],
}

/// Longest [`Store::reopen`] waits for calls still using the old opening to finish.
const REOPEN_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl Store {
    /// Opens (creating if needed) the store in `dir` and checks its schema version.
    pub fn open(dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(dir).map_err(|e| {
            EngineError::StoreUnavailable(format!("cannot create {}: {e}", dir.display()))
        })?;
        let handle = Handle::open(dir)?;
        Ok(Store {
            dir: dir.to_path_buf(),
            live: Arc::new(RwLock::new(Some(Arc::new(handle)))),
        })
    }

    /// The current opening; refused while a reopen is under way or failed.
    pub(crate) fn h(&self) -> Result<Arc<Handle>> {
        self.live
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| EngineError::StoreUnavailable("the store is being reopened".into()))
    }

    /// Closes the database and opens it again: after a failed write, sled 0.34.7 repeats
    /// that error on every later write and flush even once the disk is fine again
    /// (measured), while a fresh opening recovers everything flushed before. Reads
    /// started before keep the old opening until they finish; sled's file lock is free
    /// only then, so the open is retried for up to five seconds. If it still fails the
    /// store stays closed (reads answer `StoreUnavailable`) until the next attempt.
    pub(crate) fn reopen(&self) -> Result<()> {
        let mut live = self.live.write().unwrap_or_else(|e| e.into_inner());
        let old = live.take();
        if let Some(old) = old {
            // Wait for calls that still hold the old opening; the lock is released when
            // the last of them lets go.
            let started = std::time::Instant::now();
            let mut old = Some(old);
            while let Some(o) = old.take() {
                match Arc::try_unwrap(o) {
                    Ok(handle) => drop(handle),
                    Err(shared) if started.elapsed() < REOPEN_WAIT => {
                        old = Some(shared);
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                    Err(shared) => {
                        *live = Some(shared);
                        return Err(EngineError::StoreUnavailable(
                            "the store is still in use; cannot reopen it yet".into(),
                        ));
                    }
                }
            }
        }
        let started = std::time::Instant::now();
        loop {
            match Handle::open(&self.dir) {
                Ok(handle) => {
                    *live = Some(Arc::new(handle));
                    return Ok(());
                }
                // sled's background threads may still hold the file lock for a moment.
                Err(_) if started.elapsed() < REOPEN_WAIT => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Handle {
    fn open(dir: &Path) -> Result<Handle> {
        let db = sled::Config::new().path(dir).open()?;
        let meta = db.open_tree("meta")?;
        match meta.get("schema_version")? {
            None => {
                meta.insert("schema_version", &SCHEMA_VERSION.to_be_bytes())?;
            }
            Some(v) if v.as_ref() == SCHEMA_VERSION.to_be_bytes() => {}
            Some(v) => {
                return Err(EngineError::StoreUnavailable(format!(
                    "store schema version {:?} is not {SCHEMA_VERSION}; refusing to open",
                    v.as_ref()
                )));
            }
        }
        let mut trees = Vec::with_capacity(TREE_NAMES.len());
        for name in TREE_NAMES {
            trees.push(db.open_tree(name)?);
        }
        let trees = trees.try_into().expect("one tree per name");
        Ok(Handle { db, trees })
    }
}

impl Store {
    /// Opens sled's data file separately, for `fdatasync` in power durability.
    pub(crate) fn data_file(&self) -> Result<File> {
        // sled 0.34 keeps its log and pages in `<dir>/db` (`Config::db_path`).
        let path = self.dir.join("db");
        File::open(&path)
            .map_err(|e| EngineError::StoreUnavailable(format!("{}: {e}", path.display())))
    }

    /// Reads a lead's state.
    pub fn lead(&self, id: LeadId) -> Result<Option<LeadState>> {
        Ok(self.h()?.trees[LEADS]
            .get(id.to_key())?
            .map(|v| decode(&v))
            .transpose()?)
    }

    /// Reads a lead's history, oldest first.
    pub fn history(&self, id: LeadId) -> Result<Vec<HistoryEntry>> {
        self.h()?.trees[HISTORY]
            .scan_prefix(id.to_key())
            .map(|kv| Ok(decode(&kv?.1)?))
            .collect()
    }

    pub(crate) fn rep_records(&self) -> Result<Vec<RepRecord>> {
        self.h()?.trees[REPS]
            .iter()
            .map(|kv| Ok(decode(&kv?.1)?))
            .collect()
    }

    pub(crate) fn rep_record(&self, id: &RepId) -> Result<Option<RepRecord>> {
        Ok(self.h()?.trees[REPS]
            .get(id.as_str())?
            .map(|v| decode(&v))
            .transpose()?)
    }

    /// Reads every territory.
    pub fn territories(&self) -> Result<Vec<Territory>> {
        self.h()?.trees[TERRITORIES]
            .iter()
            .map(|kv| Ok(decode(&kv?.1)?))
            .collect()
    }

    /// Open leads of a rep, oldest first.
    pub fn open_leads_of(&self, rep: &RepId) -> Result<Vec<LeadId>> {
        self.h()?.trees[REP_LEADS]
            .scan_prefix(compound_key(rep.as_str(), &[]))
            .map(|kv| {
                let (k, _) = kv?;
                LeadId::from_key(&k[rep.as_str().len() + 1..])
                    .ok_or_else(|| EngineError::Internal("bad rep_leads key".into()))
            })
            .collect()
    }

    /// A territory's queue in order: (seq, lead).
    pub fn queue(&self, territory: &TerritoryId) -> Result<Vec<(u64, LeadId)>> {
        let prefix = compound_key(territory.as_str(), &[]);
        self.h()?.trees[QUEUE]
            .scan_prefix(&prefix)
            .map(|kv| {
                let (k, v) = kv?;
                let seq = k[prefix.len()..]
                    .try_into()
                    .map(u64::from_be_bytes)
                    .map_err(|_| EngineError::Internal("bad queue key".into()))?;
                let lead = LeadId::from_key(&v)
                    .ok_or_else(|| EngineError::Internal("bad queue value".into()))?;
                Ok((seq, lead))
            })
            .collect()
    }

    pub(crate) fn assignments(&self) -> Result<Vec<(LeadId, Assignment)>> {
        self.h()?.trees[ASSIGNMENTS]
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                let lead = LeadId::from_key(&k)
                    .ok_or_else(|| EngineError::Internal("bad assignment key".into()))?;
                Ok((lead, decode(&v)?))
            })
            .collect()
    }

    pub(crate) fn dedupe_entries(&self) -> Result<Vec<(String, LeadId)>> {
        self.h()?.trees[DEDUPE]
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                let lead = LeadId::from_key(&v)
                    .ok_or_else(|| EngineError::Internal("bad dedupe value".into()))?;
                Ok((String::from_utf8_lossy(&k).into_owned(), lead))
            })
            .collect()
    }

    /// Every stored plugin's record (keys without a zero byte are records).
    pub(crate) fn plugin_records(&self) -> Result<Vec<PluginRecord>> {
        self.h()?.trees[PLUGINS]
            .iter()
            .filter(|kv| kv.as_ref().map_or(true, |(k, _)| !k.contains(&0)))
            .map(|kv| Ok(decode(&kv?.1)?))
            .collect()
    }

    /// One stored module's bytes.
    pub(crate) fn plugin_wasm(&self, name: &str, version: u32) -> Result<Option<Vec<u8>>> {
        Ok(self.h()?.trees[PLUGINS]
            .get(plugin_wasm_key(name, version))?
            .map(|v| v.to_vec()))
    }

    /// Number of leads ever stored.
    pub fn lead_count(&self) -> usize {
        self.h().map_or(0, |h| h.trees[LEADS].len())
    }
}
