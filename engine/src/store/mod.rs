//! Persistence in sled: trees, keys, reads, the group committer and recovery.
//!
//! Reads go straight to sled from any thread. Every write goes through the
//! committer (`commit::Committer`), one thread that applies changes in order, in
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
//! | `queue`       | territory id, 0, seq (u64)   | lead id                   |
//! | `lead_keys`   | lead id (open leads only)    | `LeadKeys` (dedupe keys)  |
//! | `history`     | lead id, seq (u64)           | `HistoryEntry`            |
//! | `plugins`     | plugin name                  | `PluginRecord`            |
//! | `plugins`     | plugin name, 0, version (u32)| the module's bytes, raw   |
//! | `sla`         | lead id (untouched, open)    | `SlaRecord` (deadline)    |
//! | `outbox`      | seq (u64)                    | `OutboxEvent`             |
//! | `webhooks`    | webhook id                   | `Webhook`                 |
//! | `webhook_cursors` | webhook id               | last delivered seq (u64)  |
//! | `dead_letters`| webhook id, 0, seq (u64)     | `DeadLetter`              |
//!
//! The de-duplication index (contact key → open lead) lives in memory
//! (`dedupe::Index`), rebuilt from `lead_keys` when the store opens. Schema version 1
//! kept it in a `dedupe` tree instead (key → lead): each key landed on a page of its
//! own there, where a lead's `lead_keys` entry follows the last one written. Opening
//! a version 1 store moves its keys to `lead_keys`, drops the old tree and makes it
//! version 2.
//!
//! The dispatcher writes `webhook_cursors` and `dead_letters` itself, without the
//! committer: they are its progress, not part of the routing state, and a lost write
//! only means an event is delivered again (delivery is at-least-once). It parks an
//! event's dead letter before it moves the cursor past the event. Dead letters are
//! only parked for a webhook that exists, and only for events past its cursor (a
//! worker of a deleted webhook of the same id may still be finishing an older one);
//! each opening removes the cursors and letters of deleted webhooks (`remove_orphans`).

pub(crate) mod audit;
pub mod backup;
pub(crate) mod codec;
pub(crate) mod commit;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use sled::Transactional;

use crate::dedupe;
use crate::domain::{
    HistoryEntry, LeadId, LeadState, OutboxEvent, RepId, Territory, TerritoryId, Webhook, WebhookId,
};
use crate::error::{EngineError, Result};
pub use codec::DeadLetter;
use codec::{
    Assignment, CorruptRecord, LeadKeys, PluginRecord, RepRecord, SlaRecord, decode, encode,
};

/// The schema version this build writes; a store with another one is refused.
pub const SCHEMA_VERSION: u32 = 2;

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

impl std::fmt::Display for Durability {
    /// As the setting is spelled: `process` or `power`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Durability::Process => "process",
            Durability::Power => "power",
        })
    }
}

pub(crate) const REPS: usize = 0;
pub(crate) const TERRITORIES: usize = 1;
pub(crate) const LEADS: usize = 2;
pub(crate) const ASSIGNMENTS: usize = 3;
pub(crate) const REP_LEADS: usize = 4;
pub(crate) const QUEUE: usize = 5;
pub(crate) const HISTORY: usize = 6;
pub(crate) const PLUGINS: usize = 7;
pub(crate) const SLA: usize = 8;
pub(crate) const OUTBOX: usize = 9;
pub(crate) const WEBHOOKS: usize = 10;
pub(crate) const CURSORS: usize = 11;
pub(crate) const DEAD_LETTERS: usize = 12;
pub(crate) const LEAD_KEYS: usize = 13;
pub(crate) const TREE_NAMES: [&str; 14] = [
    "reps",
    "territories",
    "leads",
    "assignments",
    "rep_leads",
    "queue",
    "history",
    "plugins",
    "sla",
    "outbox",
    "webhooks",
    "webhook_cursors",
    "dead_letters",
    "lead_keys",
];

/// Threads that rebuild the de-duplication index at open (see `Store::rebuild_dedupe`).
const REBUILD_THREADS: usize = 16;

/// The tree schema version 1 kept the de-duplication keys in.
const DEDUPE_TREE_V1: &str = "dedupe";

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
/// (see `Store::reopen`): sled 0.34.7 refuses every write after one failed, for good.
#[derive(Clone)]
pub struct Store {
    pub(crate) dir: PathBuf,
    live: Arc<RwLock<Option<Arc<Handle>>>>,
    /// The open leads' de-duplication keys; outlives reopenings, rebuilt by each.
    pub(crate) dedupe: Arc<dedupe::Index>,
}

/// One opening of the database.
pub(crate) struct Handle {
    pub(crate) db: sled::Db,
    pub(crate) trees: [sled::Tree; 14],
}

/// A file of reserved space in the data directory, freed when the disk fills up: sled
/// cannot even open a store on a full disk, and a read that meets a page the failed
/// write overfilled tries to split it, which writes. With the ballast freed the store
/// reopens for reads, holding only what was flushed.
const BALLAST: &str = "leadroute.ballast";

/// The ballast's size.
const BALLAST_BYTES: usize = 8 << 20;

/// Longest [`Store::reopen`] waits for calls still using the old opening to finish.
const REOPEN_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Longest [`Store::open`] waits for sled's file lock on the directory.
const LOCK_WAIT: std::time::Duration = crate::config::DEFAULT_STORE_LOCK_WAIT;

impl Store {
    /// Opens (creating if needed) the store in `dir`, checks its schema version and
    /// rebuilds the de-duplication index, which takes longer the more open leads it
    /// holds (about 1.7 s at a million, `benches/README.md`, Recovery).
    ///
    /// Waits up to ten seconds for sled's lock on the directory: sled's background
    /// threads keep it a moment after the last handle of an earlier opening in this
    /// process is dropped, and a process that is stopping keeps it until its last
    /// flush. Still held after that, it is another process's, and the error says so.
    pub fn open(dir: &Path) -> Result<Store> {
        Store::open_with_lock_wait(dir, LOCK_WAIT)
    }

    /// [`Store::open`], waiting up to `wait` for the lock instead of ten seconds.
    pub fn open_with_lock_wait(dir: &Path, wait: std::time::Duration) -> Result<Store> {
        Store::open_waiting(dir, wait, || {})
    }

    /// [`Store::open`], waiting up to `wait` for the lock and calling `locked` each
    /// time it finds the lock held.
    fn open_waiting(
        dir: &Path,
        wait: std::time::Duration,
        mut locked: impl FnMut(),
    ) -> Result<Store> {
        std::fs::create_dir_all(dir).map_err(|e| {
            EngineError::StoreUnavailable(format!("cannot create {}: {e}", dir.display()))
        })?;
        let started = std::time::Instant::now();
        let mut announced = false;
        let handle = loop {
            match Handle::open(dir) {
                Err(Opening::Locked(e)) if started.elapsed() < wait => {
                    if !announced {
                        // Said once, so an operator sees why the start is not moving.
                        tracing::warn!(dir = %dir.display(), ?wait,
                            "the store is locked, by another leadroute or one still exiting; \
                             waiting for it");
                        announced = true;
                    }
                    tracing::debug!(error = %e, "store locked; waiting");
                    locked();
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(Opening::Locked(e)) => {
                    return Err(EngineError::StoreUnavailable(format!(
                        "{e}; is another leadroute using {}?",
                        dir.display()
                    )));
                }
                Err(Opening::Failed(e)) => return Err(e),
                Ok(handle) => break handle,
            }
        };
        let store = Store {
            dir: dir.to_path_buf(),
            live: Arc::new(RwLock::new(Some(Arc::new(handle)))),
            dedupe: Arc::default(),
        };
        if let Err(e) = store.ensure_ballast() {
            tracing::warn!(error = %e, "cannot reserve space for a full disk; reads may \
                fail while the disk is full");
        }
        store.rebuild_dedupe()?;
        Ok(store)
    }

    /// Makes sure the ballast file holds its space; fails while the disk is full.
    pub(crate) fn ensure_ballast(&self) -> std::io::Result<()> {
        use std::io::Write;
        let path = self.dir.join(BALLAST);
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == BALLAST_BYTES as u64) {
            return Ok(());
        }
        let result = (|| {
            let mut file = File::create(&path)?;
            // Written, not `set_len`: a sparse file would reserve nothing.
            file.write_all(&vec![0u8; BALLAST_BYTES])?;
            file.sync_all()
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&path);
        }
        result
    }

    /// Frees the ballast's space; returns whether there was any.
    pub(crate) fn release_ballast(&self) -> bool {
        std::fs::remove_file(self.dir.join(BALLAST)).is_ok()
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
    /// (measured), while a fresh opening recovers everything flushed before, and the
    /// de-duplication index is rebuilt from what it holds. Reads started before keep
    /// the old opening until they finish; sled's file lock is free only then, so the
    /// open is retried for up to five seconds. If it still fails the store stays
    /// closed (reads answer `StoreUnavailable`) until the next attempt.
    pub(crate) fn reopen(&self) -> Result<()> {
        self.reopen_handle()?;
        self.rebuild_dedupe()
    }

    /// [`Store::reopen`] without rebuilding the de-duplication index: the rebuild reads
    /// through the new opening, so it waits until this has let go of `live`.
    fn reopen_handle(&self) -> Result<()> {
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
            match Handle::open(&self.dir).map_err(EngineError::from) {
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

/// Adds the keys of the `lead_keys` entries of `entries` to `index`.
fn index_lead_keys(entries: sled::Iter, index: &dedupe::Index) -> Result<()> {
    for kv in entries {
        let (lead, keys) = kv?;
        let lead = LeadId::from_key(&lead)
            .ok_or_else(|| EngineError::Internal("bad lead_keys key".into()))?;
        for key in decode::<LeadKeys>(&keys)?.keys {
            if let Some((kind, newer, older)) = index.claim(key, lead) {
                tracing::warn!(lead = %newer, shared_with = %older, key = kind,
                    "two open leads share a de-duplication key; the older keeps it");
            }
        }
    }
    Ok(())
}

/// Lead ids that cut `first..=last` into `parts` spans of equal width (fewer if the
/// keys are not lead ids, or the span is narrow).
fn split_ids(first: &[u8], last: &[u8], parts: usize) -> Vec<[u8; 16]> {
    let (Ok(first), Ok(last)) = (<[u8; 16]>::try_from(first), <[u8; 16]>::try_from(last)) else {
        return Vec::new();
    };
    let (first, last) = (u128::from_be_bytes(first), u128::from_be_bytes(last));
    let width = (last.saturating_sub(first) / parts.max(1) as u128).max(1);
    (1..parts as u128)
        .map(|i| first.saturating_add(width * i))
        .filter(|&split| split <= last)
        .map(u128::to_be_bytes)
        .collect()
}

/// Whether sled refused to open a store because another opening holds its file lock.
/// sled 0.34 reports it as an `Other` I/O error; only its text tells, and it holds the
/// lock call's own error: `WouldBlock` when held, another kind when the file system
/// cannot lock at all (waiting would not help then).
pub(crate) fn lock_held(e: &sled::Error) -> bool {
    let text = e.to_string();
    text.contains("could not acquire lock") && text.contains("WouldBlock")
}

/// Why [`Handle::open`] failed.
enum Opening {
    /// Another opening holds sled's file lock on the directory.
    Locked(sled::Error),
    /// Anything else.
    Failed(EngineError),
}

impl From<EngineError> for Opening {
    fn from(e: EngineError) -> Self {
        Opening::Failed(e)
    }
}

impl From<sled::Error> for Opening {
    fn from(e: sled::Error) -> Self {
        Opening::Failed(e.into())
    }
}

impl From<Opening> for EngineError {
    fn from(e: Opening) -> Self {
        match e {
            Opening::Locked(e) => e.into(),
            Opening::Failed(e) => e,
        }
    }
}

impl Handle {
    fn open(dir: &Path) -> std::result::Result<Handle, Opening> {
        let db = sled::Config::new().path(dir).open().map_err(|e| {
            if lock_held(&e) {
                Opening::Locked(e)
            } else {
                Opening::Failed(e.into())
            }
        })?;
        let meta = db.open_tree("meta")?;
        match meta.get("schema_version")? {
            None => {
                meta.insert("schema_version", &SCHEMA_VERSION.to_be_bytes())?;
            }
            Some(v) if v.as_ref() == SCHEMA_VERSION.to_be_bytes() => {}
            Some(v) if v.as_ref() == 1u32.to_be_bytes() => migrate_from_v1(&db)?,
            Some(v) => {
                return Err(EngineError::StoreUnavailable(format!(
                    "store schema version {:?} is not {SCHEMA_VERSION}; refusing to open",
                    v.as_ref()
                ))
                .into());
            }
        }
        let mut trees = Vec::with_capacity(TREE_NAMES.len());
        for name in TREE_NAMES {
            trees.push(db.open_tree(name)?);
        }
        let trees = trees.try_into().expect("one tree per name");
        let removed = remove_orphans(&trees)?;
        if removed > 0 {
            tracing::info!(
                removed,
                "removed the cursors and dead letters of deleted webhooks"
            );
        }
        Ok(Handle { db, trees })
    }
}

/// The result of a transaction over a webhook's trees that aborts when the webhook
/// does not exist.
fn webhook_found<T>(
    id: &WebhookId,
    result: sled::transaction::TransactionResult<T, ()>,
) -> Result<T> {
    match result {
        Ok(value) => Ok(value),
        Err(sled::transaction::TransactionError::Abort(())) => {
            Err(EngineError::WebhookNotFound(id.clone()))
        }
        Err(sled::transaction::TransactionError::Storage(e)) => Err(e.into()),
    }
}

/// Removes the cursors and dead letters of webhooks that no longer exist; returns how
/// many entries it removed.
///
/// Deleting a webhook removes its record and cursor in one of the committer's
/// transactions and its dead letters after it, outside (there can be millions). A
/// crash between the two, or a backup that read `dead_letters` before the second,
/// leaves letters behind, which a webhook created later with the same id would
/// inherit. Each opening removes them. Costs one seek per webhook with letters, not
/// one per letter kept.
fn remove_orphans(trees: &[sled::Tree; 14]) -> sled::Result<usize> {
    let (webhooks, cursors, letters) = (&trees[WEBHOOKS], &trees[CURSORS], &trees[DEAD_LETTERS]);
    let mut removed = 0;
    for id in cursors.iter().keys() {
        let id = id?;
        if !webhooks.contains_key(&id)? {
            cursors.remove(&id)?;
            removed += 1;
        }
    }
    // Letters are keyed by webhook id, a zero byte, then their seq: the first key at
    // or after `from` begins the next webhook's letters.
    let mut from = Vec::new();
    while let Some(key) = letters.range(from.as_slice()..).keys().next() {
        let key = key?;
        let Some(end) = key.iter().position(|b| *b == 0) else {
            // Not a letter's key; step past it.
            from = [key.as_ref(), &[0]].concat();
            continue;
        };
        let id = &key[..end];
        if !webhooks.contains_key(id)? {
            for letter in letters.scan_prefix(&key[..=end]).keys() {
                letters.remove(letter?)?;
                removed += 1;
            }
        }
        // Past every key of this webhook: the id, then a byte above the zero.
        from = [id, &[1]].concat();
    }
    Ok(removed)
}

/// Moves a version 1 store's de-duplication keys from `dedupe` (key → lead) to
/// `lead_keys` (lead → keys), drops `dedupe` and marks the store version 2. Safe to
/// run again after a crash half-way: `lead_keys` is flushed before `dedupe` is
/// dropped, so a second run finds either all of `dedupe` (and rewrites the same
/// entries) or none of it (and writes nothing).
fn migrate_from_v1(db: &sled::Db) -> sled::Result<()> {
    let old = db.open_tree(DEDUPE_TREE_V1)?;
    let mut by_lead: std::collections::BTreeMap<LeadId, LeadKeys> = Default::default();
    for kv in old.iter() {
        let (key, lead) = kv?;
        if let Some(lead) = LeadId::from_key(&lead) {
            let key = String::from_utf8_lossy(&key).into_owned();
            by_lead.entry(lead).or_default().keys.push(key);
        }
    }
    let mut batch = sled::Batch::default();
    for (lead, keys) in &by_lead {
        batch.insert(&lead.to_key()[..], encode(keys));
    }
    db.open_tree(TREE_NAMES[LEAD_KEYS])?.apply_batch(batch)?;
    db.flush()?;
    db.drop_tree(DEDUPE_TREE_V1)?;
    db.open_tree("meta")?
        .insert("schema_version", &SCHEMA_VERSION.to_be_bytes())?;
    db.flush()?;
    tracing::info!(
        leads = by_lead.len(),
        "store migrated to schema version {SCHEMA_VERSION}: de-duplication keys moved \
         to lead_keys"
    );
    Ok(())
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

    /// The newest `limit` leads that `keep` accepts, oldest first. Lead ids are
    /// time-ordered, so this walks the leads tree backwards and stops at `limit`, or
    /// at the first error `keep` returns (a caller that wants to stop early).
    pub(crate) fn recent_leads(
        &self,
        limit: usize,
        mut keep: impl FnMut(&LeadState) -> Result<bool>,
    ) -> Result<Vec<LeadState>> {
        let mut leads = Vec::new();
        for kv in self.h()?.trees[LEADS].iter().rev() {
            if leads.len() >= limit {
                break;
            }
            let state: LeadState = decode(&kv?.1)?;
            if keep(&state)? {
                leads.push(state);
            }
        }
        leads.reverse();
        Ok(leads)
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

    /// The open lead sharing any of `keys` (de-duplication keys), with the kinds that
    /// matched.
    pub(crate) fn duplicate_of(&self, keys: &[String]) -> Option<(LeadId, Vec<String>)> {
        self.dedupe.find(keys)
    }

    /// Builds the de-duplication index again from `lead_keys`, the keys of every open
    /// lead. Where two open leads share a key, which the committer never writes, the
    /// older keeps it, and the newer is logged.
    pub(crate) fn rebuild_dedupe(&self) -> Result<()> {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        let h = self.h()?;
        let tree = &h.trees[LEAD_KEYS];
        // The engine waits for this to serve, so the tree is split by lead id over
        // more threads than cores. Warm, the work is hashing and inserting, and the
        // threads share the cores. Cold, it is waiting on the disk, which takes many
        // reads at once. At a million open leads (`benches/README.md`, Recovery):
        // 4.4 s cold with 2 threads, 3.0–3.3 s with 8, 2.6 s with 16, 2.8 s with 32;
        // about 1.5 s warm with 2 or 16.
        let workers = REBUILD_THREADS;
        let splits = match (tree.first()?, tree.last()?) {
            (Some((first, _)), Some((last, _))) => split_ids(&first, &last, workers),
            _ => Vec::new(),
        };
        let mut ranges = Vec::with_capacity(splits.len() + 1);
        let mut from = Unbounded;
        for split in splits {
            ranges.push((from, Excluded(split)));
            from = Included(split);
        }
        ranges.push((from, Unbounded));
        // A rebuild after a reopen or a repair finds about as many keys as before.
        let fresh = self.dedupe.empty_like(self.dedupe.len());
        std::thread::scope(|scope| {
            let threads: Vec<_> = ranges
                .into_iter()
                .map(|range| {
                    let fresh = &fresh;
                    scope.spawn(move || index_lead_keys(tree.range(range), fresh))
                })
                .collect();
            threads
                .into_iter()
                .try_for_each(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
        })?;
        self.dedupe.replace(fresh);
        Ok(())
    }

    /// A lead's open assignment, if it has one.
    pub(crate) fn assignment(&self, lead: LeadId) -> Result<Option<Assignment>> {
        Ok(self.h()?.trees[ASSIGNMENTS]
            .get(lead.to_key())?
            .map(|v| decode(&v))
            .transpose()?)
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

    /// Every untouched open lead's SLA state.
    pub(crate) fn sla_records(&self) -> Result<Vec<(LeadId, SlaRecord)>> {
        self.sla_records_after(None, usize::MAX)
    }

    /// Up to `limit` SLA records after lead `after` (from the first with `None`), in
    /// lead order.
    pub(crate) fn sla_records_after(
        &self,
        after: Option<LeadId>,
        limit: usize,
    ) -> Result<Vec<(LeadId, SlaRecord)>> {
        use std::ops::Bound;
        let start = match after {
            Some(id) => Bound::Excluded(id.to_key().to_vec()),
            None => Bound::Unbounded,
        };
        self.h()?.trees[SLA]
            .range::<Vec<u8>, _>((start, Bound::Unbounded))
            .take(limit)
            .map(|kv| {
                let (k, v) = kv?;
                let lead = LeadId::from_key(&k)
                    .ok_or_else(|| EngineError::Internal("bad sla key".into()))?;
                Ok((lead, decode(&v)?))
            })
            .collect()
    }

    /// A lead's SLA state, while it is open and untouched.
    pub(crate) fn sla(&self, lead: LeadId) -> Result<Option<SlaRecord>> {
        Ok(self.h()?.trees[SLA]
            .get(lead.to_key())?
            .map(|v| decode(&v))
            .transpose()?)
    }

    /// Every webhook subscription, by id.
    pub(crate) fn webhooks(&self) -> Result<Vec<Webhook>> {
        self.h()?.trees[WEBHOOKS]
            .iter()
            .map(|kv| Ok(decode(&kv?.1)?))
            .collect()
    }

    /// One webhook subscription.
    pub(crate) fn webhook(&self, id: &WebhookId) -> Result<Option<Webhook>> {
        Ok(self.h()?.trees[WEBHOOKS]
            .get(id.as_str())?
            .map(|v| decode(&v))
            .transpose()?)
    }

    /// Up to `limit` outbox events after `seq`, in order.
    pub(crate) fn outbox_after(&self, seq: u64, limit: usize) -> Result<Vec<OutboxEvent>> {
        let start = seq.saturating_add(1).to_be_bytes();
        self.h()?.trees[OUTBOX]
            .range(start..)
            .take(limit)
            .map(|kv| Ok(decode(&kv?.1)?))
            .collect()
    }

    /// How many outbox events come after `seq` (0 while the store is being reopened).
    pub(crate) fn outbox_len_after(&self, seq: u64) -> usize {
        let start = seq.saturating_add(1).to_be_bytes();
        self.h()
            .map_or(0, |h| h.trees[OUTBOX].range(start..).count())
    }

    /// Drops outbox events up to and including `seq`.
    pub(crate) fn outbox_trim(&self, seq: u64) -> Result<usize> {
        let end = seq.saturating_add(1).to_be_bytes();
        let mut removed = 0;
        for kv in self.h()?.trees[OUTBOX].range(..end) {
            self.h()?.trees[OUTBOX].remove(kv?.0)?;
            removed += 1;
        }
        Ok(removed)
    }

    /// The last outbox seq delivered to (or skipped by) a webhook.
    pub(crate) fn cursor(&self, id: &WebhookId) -> Result<Option<u64>> {
        Ok(self.h()?.trees[CURSORS]
            .get(id.as_str())?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes)))
    }

    /// Moves a webhook's cursor forward (never back). A deleted webhook has no cursor,
    /// and this does not make one: its worker may still be finishing an event.
    pub(crate) fn advance_cursor(&self, id: &WebhookId, seq: u64) -> Result<()> {
        let old = self.h()?.trees[CURSORS].fetch_and_update(id.as_str(), |old| {
            let old = old?.try_into().ok().map(u64::from_be_bytes).unwrap_or(0);
            Some(old.max(seq).to_be_bytes().to_vec())
        })?;
        match old {
            Some(_) => Ok(()),
            None => Err(EngineError::WebhookNotFound(id.clone())),
        }
    }

    /// Up to `limit` of a webhook's dead letters with a seq above `after` (from the
    /// first when `None`), oldest first, and whether more follow them.
    pub(crate) fn dead_letters_page(
        &self,
        id: &WebhookId,
        after: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<DeadLetter>, bool)> {
        let prefix = compound_key(id.as_str(), &[]);
        let start = match after {
            None => prefix.clone(),
            Some(u64::MAX) => return Ok((Vec::new(), false)),
            Some(seq) => compound_key(id.as_str(), &(seq + 1).to_be_bytes()),
        };
        let mut letters = Vec::with_capacity(limit.min(1024));
        // Keys are the prefix and a big-endian seq, so they sort by seq; the range
        // starts past the cursor instead of decoding the letters before it.
        for kv in self.h()?.trees[DEAD_LETTERS].range(start..) {
            let (key, value) = kv?;
            if !key.starts_with(&prefix) {
                break;
            }
            if letters.len() == limit {
                return Ok((letters, true));
            }
            letters.push(decode(&value)?);
        }
        Ok((letters, false))
    }

    /// How many dead letters a webhook has. Walks the keys only: nothing is decoded.
    pub(crate) fn dead_letter_count(&self, id: &WebhookId) -> Result<usize> {
        let mut count = 0;
        for key in self.h()?.trees[DEAD_LETTERS]
            .scan_prefix(compound_key(id.as_str(), &[]))
            .keys()
        {
            key?;
            count += 1;
        }
        Ok(count)
    }

    /// Removes every dead letter of a webhook (it was deleted), by key.
    pub(crate) fn remove_dead_letters(&self, id: &WebhookId) -> Result<()> {
        let tree = &self.h()?.trees[DEAD_LETTERS];
        for key in tree.scan_prefix(compound_key(id.as_str(), &[])).keys() {
            tree.remove(key?)?;
        }
        Ok(())
    }

    /// Parks a dead letter of an existing webhook (or replaces one the worker parked
    /// before a crash, before it could move the cursor).
    ///
    /// Checked in one transaction with the webhook's record and cursor, which the
    /// committer's deletion removes in a transaction of its own: a worker that gives
    /// up on an event as its webhook is deleted either parks the letter before the
    /// deletion, which then removes it, or is refused. A letter parked after the
    /// deletion would outlive it, and a webhook created later with the same id would
    /// inherit it.
    ///
    /// That later webhook may be created before the old worker parks its letter, even
    /// with the same record (the dispatcher then keeps the worker). A new letter is
    /// therefore refused unless its event is past the cursor: a worker parks each
    /// letter before it moves the cursor past the event, and a webhook's cursor
    /// starts past every event written before it, so only an earlier webhook's
    /// worker parks one at or before it. Letters already parked change through
    /// [`Store::update_dead_letter`].
    pub(crate) fn put_dead_letter(&self, id: &WebhookId, letter: &DeadLetter) -> Result<()> {
        let seq = letter.event.seq;
        let key = compound_key(id.as_str(), &seq.to_be_bytes());
        let value = encode(letter);
        let h = self.h()?;
        let trees = (
            &h.trees[WEBHOOKS],
            &h.trees[CURSORS],
            &h.trees[DEAD_LETTERS],
        );
        let parked = trees.transaction(|(webhooks, cursors, letters)| {
            if webhooks.get(id.as_str())?.is_none() {
                return sled::transaction::abort(());
            }
            let cursor = cursors
                .get(id.as_str())?
                .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes));
            if cursor.is_some_and(|cursor| seq <= cursor) {
                return sled::transaction::abort(());
            }
            letters.insert(key.as_slice(), value.as_slice())?;
            Ok(())
        });
        webhook_found(id, parked)
    }

    /// Replaces a dead letter that is still parked (marked for re-drive, or failed
    /// again); false, changing nothing, once it is gone: delivered by a re-drive
    /// meanwhile, or removed with its webhook. `WebhookNotFound` if the webhook is.
    pub(crate) fn update_dead_letter(&self, id: &WebhookId, letter: &DeadLetter) -> Result<bool> {
        let key = compound_key(id.as_str(), &letter.event.seq.to_be_bytes());
        let value = encode(letter);
        let h = self.h()?;
        let updated =
            (&h.trees[WEBHOOKS], &h.trees[DEAD_LETTERS]).transaction(|(webhooks, letters)| {
                if webhooks.get(id.as_str())?.is_none() {
                    return sled::transaction::abort(());
                }
                if letters.get(key.as_slice())?.is_none() {
                    return Ok(false);
                }
                letters.insert(key.as_slice(), value.as_slice())?;
                Ok(true)
            });
        webhook_found(id, updated)
    }

    /// Removes a dead letter once delivered.
    pub(crate) fn remove_dead_letter(&self, id: &WebhookId, seq: u64) -> Result<()> {
        self.h()?.trees[DEAD_LETTERS].remove(compound_key(id.as_str(), &seq.to_be_bytes()))?;
        Ok(())
    }

    /// Number of leads ever stored.
    pub fn lead_count(&self) -> usize {
        self.h().map_or(0, |h| h.trees[LEADS].len())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn durability_displays_as_its_setting_is_spelled() {
        for d in [Durability::Process, Durability::Power] {
            let setting = serde_json::to_value(d).unwrap();
            assert_eq!(setting.as_str(), Some(d.to_string().as_str()));
        }
    }

    #[test]
    fn a_lock_let_go_while_waiting_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let mut holder = Some(sled::open(dir.path()).unwrap());
        let mut tries = 0;
        // The holder lets go the first time the opening finds the lock held.
        let store = Store::open_waiting(dir.path(), Duration::from_secs(60), || {
            tries += 1;
            holder.take();
        })
        .unwrap();
        assert!(tries >= 1, "the lock was held at the first try");
        assert_eq!(store.lead_count(), 0);
    }

    #[test]
    fn a_lock_held_throughout_names_the_likely_cause() {
        let dir = tempfile::tempdir().unwrap();
        let _held = sled::open(dir.path()).unwrap();
        let mut tries = 0;
        let err = Store::open_waiting(dir.path(), Duration::ZERO, || tries += 1)
            .err()
            .expect("the lock is held");
        assert_eq!(tries, 0, "no wait, no retry");
        let EngineError::StoreUnavailable(message) = err else {
            panic!("{err:?}");
        };
        assert!(
            message.contains("could not acquire lock")
                && message.contains("is another leadroute using"),
            "{message}"
        );
    }

    #[test]
    fn a_version_1_store_has_its_dedupe_keys_moved_and_becomes_version_2() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            LeadId::from_key(&7u128.to_be_bytes()).unwrap(),
            LeadId::from_key(&8u128.to_be_bytes()).unwrap(),
        );
        {
            let db = sled::open(dir.path()).unwrap();
            db.open_tree("meta")
                .unwrap()
                .insert("schema_version", &1u32.to_be_bytes())
                .unwrap();
            let old = db.open_tree(DEDUPE_TREE_V1).unwrap();
            for (key, lead) in [
                ("phone:13900000001", a),
                ("email:a@example.cn", a),
                ("phone:13900000002", b),
            ] {
                old.insert(key, &lead.to_key()).unwrap();
            }
            db.flush().unwrap();
        }
        let store = Store::open_waiting(dir.path(), LOCK_WAIT, || {}).unwrap();
        let h = store.h().unwrap();
        let version =
            h.db.open_tree("meta")
                .unwrap()
                .get("schema_version")
                .unwrap();
        assert_eq!(version.as_deref(), Some(&SCHEMA_VERSION.to_be_bytes()[..]));
        assert_eq!(SCHEMA_VERSION, 2);
        assert!(
            !h.db
                .tree_names()
                .iter()
                .any(|name| name.as_ref() == DEDUPE_TREE_V1.as_bytes()),
            "the dedupe tree is dropped"
        );
        let moved: LeadKeys =
            decode(&h.trees[LEAD_KEYS].get(a.to_key()).unwrap().unwrap()).unwrap();
        let mut keys = moved.keys;
        keys.sort();
        assert_eq!(keys, ["email:a@example.cn", "phone:13900000001"]);
        assert_eq!(h.trees[LEAD_KEYS].len(), 2);
        let owner = |key: &str| store.duplicate_of(&[key.to_string()]).map(|(id, _)| id);
        assert_eq!(owner("email:a@example.cn"), Some(a), "and indexed");
        assert_eq!(owner("phone:13900000002"), Some(b));
    }

    #[test]
    fn a_store_of_an_unknown_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            db.open_tree("meta")
                .unwrap()
                .insert("schema_version", &3u32.to_be_bytes())
                .unwrap();
            db.flush().unwrap();
        }
        let err = Store::open_waiting(dir.path(), LOCK_WAIT, || {})
            .err()
            .expect("version 3 is refused");
        assert!(err.to_string().contains("is not 2"), "{err}");
    }

    #[test]
    fn the_rebuild_split_over_threads_indexes_every_entry_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_waiting(dir.path(), LOCK_WAIT, || {}).unwrap();
        let h = store.h().unwrap();
        // Ids bunched at both ends, so some spans of the split are empty.
        let ids: Vec<u128> = (1..=500u128)
            .chain((1..=500).map(|n| u128::MAX - n))
            .collect();
        for &n in &ids {
            let keys = LeadKeys {
                keys: vec![format!("phone:{n}"), format!("email:{n}@example.cn")],
            };
            h.trees[LEAD_KEYS]
                .insert(n.to_be_bytes(), encode(&keys))
                .unwrap();
        }
        store.rebuild_dedupe().unwrap();
        assert_eq!(store.dedupe.len(), 2 * ids.len());
        for &n in &ids {
            let found = store.duplicate_of(&[format!("email:{n}@example.cn")]);
            assert_eq!(found.map(|(id, _)| id.to_key()), Some(n.to_be_bytes()));
        }
    }

    #[test]
    fn ids_split_into_equal_spans_inside_the_range() {
        let at = |n: u128| n.to_be_bytes();
        assert_eq!(split_ids(&at(0), &at(100), 4), vec![at(25), at(50), at(75)]);
        assert_eq!(split_ids(&at(7), &at(7), 4), Vec::<[u8; 16]>::new());
        assert_eq!(split_ids(&at(0), &at(100), 1), Vec::<[u8; 16]>::new());
        assert_eq!(split_ids(b"short", &at(100), 4), Vec::<[u8; 16]>::new());
    }
}
