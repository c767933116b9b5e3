//! Online backups: the store written to one file while the engine serves.
//!
//! A thread of its own reads the trees while the committer captures every write, then
//! the committer hands the capture over (`store::backup` says why that is one instant
//! of the store); the committer stops only for the two handovers. The file is synced
//! and renamed from `NAME.partial` to `NAME`: a file with the final name is always
//! complete. A caller that goes away does not stop a backup half-way.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;

use super::{Engine, Slot};
use crate::config::{Checkpoint, Probe};
use crate::error::{EngineError, Result};
use crate::store::Store;
use crate::store::backup::{Counts, Exporter, Tail};
use crate::store::commit::Committer;

/// A backup written.
#[derive(Clone, Debug)]
pub struct Backup {
    /// The file.
    pub path: PathBuf,
    /// What it holds.
    pub counts: Counts,
    /// The committer's time on the backup: its two handovers. (The read does not
    /// stop it, though each read step and each commit take turns on sled's lock.)
    pub paused: Duration,
    /// How long the whole backup took, the sync and rename included.
    pub took: Duration,
}

impl Engine {
    /// Writes a backup of the whole store into `dir` (created if missing), named
    /// after the engine's clock: `leadroute-2026-11-28T130500.123Z.backup`. Commits go
    /// on while the trees are read; the backup is the store as of the moment the
    /// read ends (see `store::backup`). One at a time
    /// ([`EngineError::BackupInProgress`]). Restore it with
    /// [`store::backup::restore`](crate::store::backup::restore).
    pub async fn backup(&self, dir: &Path) -> Result<Backup> {
        let _permit = self.enter()?;
        let slot = Slot::take(&self.inner.backup_running, EngineError::BackupInProgress)?;
        let started = Instant::now();
        let metrics = self.inner.metrics.clone();
        let (path, partial, file) = create_partial(dir, self.now()).map_err(|e| {
            metrics.backup_failures.inc();
            tracing::error!(error = %e, dir = %dir.display(), "backup failed");
            failed(dir, &e)
        })?;
        let (reply, answer) = oneshot::channel();
        let store = self.inner.store.clone();
        let committer = self.inner.committer.clone();
        let probe = self.inner.probe.clone();
        let limit = self.inner.backup_capture_bytes;
        std::thread::Builder::new()
            .name("leadroute-backup".into())
            .spawn(move || {
                lower_priority();
                let written = write(&store, &committer, limit, &probe, &file, &partial, &path);
                let result = written.map(|(counts, held)| Backup {
                    path,
                    counts,
                    paused: held,
                    took: started.elapsed(),
                });
                match &result {
                    Ok(backup) => {
                        metrics.backup_pause.set(backup.paused.as_secs_f64());
                        metrics.backup_last_success.set(
                            SystemTime::now()
                                .duration_since(UNIX_EPOCH)
                                .map_or(0.0, |d| d.as_secs_f64()),
                        );
                        tracing::info!(
                            path = %backup.path.display(),
                            bytes = backup.counts.bytes,
                            entries = backup.counts.entries,
                            captured = backup.counts.captured,
                            paused_us = backup.paused.as_micros() as u64,
                            took_ms = backup.took.as_millis() as u64,
                            "backup written"
                        );
                    }
                    Err(e) => {
                        let _ = std::fs::remove_file(&partial);
                        metrics.backup_failures.inc();
                        tracing::error!(error = %e, "backup failed");
                    }
                }
                // Free before the answer: a caller told "done" may start the next.
                drop(slot);
                let _ = reply.send(result);
            })
            .map_err(|e| EngineError::BackupFailed(format!("cannot start a thread: {e}")))?;
        answer
            .await
            .map_err(|_| EngineError::Internal("backup thread died".into()))?
    }
}

/// Writes the backup on its own thread: the committer captures while the trees are
/// read, then hands over; the file is synced and renamed to its final name. Returns
/// what it holds and the committer's time on it.
fn write(
    store: &Store,
    committer: &Committer,
    limit: u64,
    probe: &Probe,
    file: &File,
    partial: &Path,
    path: &Path,
) -> Result<(Counts, Duration)> {
    let lost = Arc::new(AtomicBool::new(false));
    committer
        .start_backup(limit, lost.clone())
        .blocking_recv()
        .map_err(|_| EngineError::ShuttingDown)??;
    // The committer captures from here on, and must hear the end whatever happens.
    let mut capturing = Capturing(Some(committer));
    let io = |e: io::Error| failed(path, &e);
    let mut exporter = Exporter::new(file).map_err(io)?;
    exporter
        .trees(&store.h()?.db, &lost, || probe(Checkpoint::BackupTree))
        .map_err(io)?;
    probe(Checkpoint::BackupRead);
    let (reply, tail) = oneshot::channel();
    capturing.end(reply);
    let tail = tail
        .blocking_recv()
        .map_err(|_| EngineError::ShuttingDown)??;
    let counts = exporter.finish(&tail).map_err(io)?;
    let durable = || -> io::Result<()> {
        file.sync_all()?;
        std::fs::rename(partial, path)?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    durable().map_err(io)?;
    Ok((counts, tail.held))
}

/// A capture under way; dropped before its end (the read failed), it tells the
/// committer to stop capturing.
struct Capturing<'a>(Option<&'a Committer>);

impl Capturing<'_> {
    fn end(&mut self, reply: oneshot::Sender<Result<Tail>>) {
        if let Some(committer) = self.0.take() {
            committer.end_backup(Some(reply));
        }
    }
}

impl Drop for Capturing<'_> {
    fn drop(&mut self) {
        if let Some(committer) = self.0.take() {
            committer.end_backup(None);
        }
    }
}

/// Creates `dir` and an empty `NAME.partial` in it; returns the final path, the
/// partial one and the open file.
fn create_partial(dir: &Path, now: u64) -> io::Result<(PathBuf, PathBuf, File)> {
    std::fs::create_dir_all(dir)?;
    // Left by a backup the process did not live to finish (one runs at a time).
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("leadroute-") && name.ends_with(".backup.partial") {
            let _ = std::fs::remove_file(dir.join(&*name));
        }
    }
    let at = UNIX_EPOCH + Duration::from_millis(now);
    let stamp = humantime::format_rfc3339_millis(at)
        .to_string()
        .replace(':', "");
    // Two backups within one millisecond of the clock (a manual one, in tests) get a
    // number each rather than one name.
    for n in 0..1000 {
        let name = match n {
            0 => format!("leadroute-{stamp}.backup"),
            n => format!("leadroute-{stamp}-{n}.backup"),
        };
        let path = dir.join(&name);
        let partial = dir.join(format!("{name}.partial"));
        if path.exists() {
            continue;
        }
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&partial)
        {
            Ok(file) => return Ok((path, partial, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("a thousand backups share one millisecond"))
}

/// Removes the oldest backup files in `dir` so that the newest `keep` remain; never
/// `written`, the one just taken, whatever its name says (a clock set back names a
/// new file before older ones). Returns the files removed, oldest first.
///
/// Only files named as [`Engine::backup`] names them count, ordered by the time and
/// number in their names; anything else in `dir`, and a `.partial` being written,
/// is left alone. `keep` 0 removes nothing. A file already gone (another pruning
/// got to it) is skipped; one that cannot be removed is logged and skipped, so it
/// does not hold back the rest. Every server writing to `dir` counts the others'
/// files as its own: give each its own directory.
pub fn prune_backups(dir: &Path, keep: usize, written: &Path) -> io::Result<Vec<PathBuf>> {
    if keep == 0 {
        return Ok(Vec::new());
    }
    let mut backups = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(order) = entry.file_name().to_str().and_then(backup_order) {
            backups.push((order, entry.path()));
        }
    }
    backups.sort();
    let mut removed = Vec::new();
    let mut kept = usize::from(backups.iter().any(|(_, path)| path == written));
    for (_, path) in backups.into_iter().rev() {
        if path == written {
            continue;
        }
        if kept < keep {
            kept += 1;
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(path = %path.display(), error = %e,
                "cannot remove an old backup"),
        }
    }
    removed.reverse();
    Ok(removed)
}

/// The time stamp and number of a backup file's name (`leadroute-STAMP.backup` is
/// number 0, `leadroute-STAMP-N.backup` number N); `None` for any other name. Stamps
/// are fixed-width RFC 3339 in UTC, so they sort as the times they name.
fn backup_order(name: &str) -> Option<(String, u32)> {
    let stem = name.strip_prefix("leadroute-")?.strip_suffix(".backup")?;
    let (stamp, n) = match stem.rsplit_once('-') {
        Some((stamp, n)) if stamp.ends_with('Z') => (stamp, n.parse().ok()?),
        _ => (stem, 0),
    };
    stamp.ends_with('Z').then(|| (stamp.to_string(), n))
}

/// Gives the calling thread a lower CPU priority (nice 10): a backup's read takes a
/// core for seconds (about 18 s at a million open leads), and intake should have the
/// CPU first. On Linux each thread has a nice value of its own; where the call fails,
/// the backup runs at the normal priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: `setpriority` only changes the scheduling of the thread it names; `who`
    // 0 with `PRIO_PROCESS` is the calling thread on Linux.
    unsafe {
        let _ = libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
}

fn failed(path: &Path, e: &io::Error) -> EngineError {
    EngineError::BackupFailed(format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_keeps_the_newest_by_name_and_never_the_one_just_written() {
        let dir = tempfile::tempdir().unwrap();
        let names = [
            "leadroute-2026-11-28T130500.123Z.backup",
            "leadroute-2026-11-28T130500.123Z-1.backup",
            "leadroute-2026-11-28T130500.123Z-2.backup",
            "leadroute-2026-11-29T010000.000Z.backup",
            // Not ours, or not finished: never touched.
            "leadroute-2026-11-30T000000.000Z.backup.partial",
            "notes.txt",
            "leadroute-latest.backup",
        ];
        for name in names {
            std::fs::write(dir.path().join(name), name).unwrap();
        }
        let left = || {
            let mut names: Vec<String> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            names
        };
        let newest = dir.path().join(names[3]);
        assert!(prune_backups(dir.path(), 0, &newest).unwrap().is_empty());
        assert_eq!(left().len(), names.len());

        // Same millisecond: by number, not by how the names sort as text.
        let removed = prune_backups(dir.path(), 3, &newest).unwrap();
        assert_eq!(removed, [dir.path().join(names[0])]);
        let removed = prune_backups(dir.path(), 2, &newest).unwrap();
        assert_eq!(removed, [dir.path().join(names[1])]);

        // The clock was set back: the file just written is older by name than the
        // others, and is kept all the same.
        let written = dir.path().join("leadroute-2020-01-01T000000.000Z.backup");
        std::fs::write(&written, "").unwrap();
        let removed = prune_backups(dir.path(), 1, &written).unwrap();
        assert_eq!(
            removed,
            [dir.path().join(names[2]), dir.path().join(names[3])]
        );
        assert_eq!(
            left(),
            [
                "leadroute-2020-01-01T000000.000Z.backup",
                "leadroute-2026-11-30T000000.000Z.backup.partial",
                "leadroute-latest.backup",
                "notes.txt",
            ]
        );
    }
}
