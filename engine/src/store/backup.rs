//! Online backups: the whole store written to one file as of one instant, while the
//! engine serves, and a new data directory restored from such a file.
//!
//! Commits go on while a backup is written. The committer, the only writer of the
//! routing state, starts *capturing* (`commit::Capture`): from then on it keeps a copy
//! of every key it writes or removes. Meanwhile the backup's own thread reads every
//! tree (`Exporter::trees`); a key that changes during that read may be read before
//! or after its change. Once all is read, the committer hands over what it captured,
//! between two groups, and stops capturing (`Tail`): that is the backup's instant.
//! The captured writes follow the trees in the file, and a restore applies them last,
//! in order. Every key changed while the trees were read thus ends as its last write
//! left it, and every other key as it was throughout: the store as of the handover.
//! The committer stops only for the two handovers, not for the read (each step of the
//! read and each commit take turns on sled's lock, which is as short as one step).
//!
//! (The webhook dispatcher writes its own progress, cursors and dead letters, without
//! the committer, so nothing of it is captured. It parks an event's dead letter
//! before it moves the cursor past the event, and the read takes the two trees last
//! and in the other order, cursors first: a cursor read past an event means its
//! letter, if it has one, was parked before the letters are read. At worst, then, a
//! restore delivers an event again, as delivery at-least-once allows; it never drops
//! one. Letters of a webhook deleted during the read may be in the file: the store
//! removes those when it opens, unless a webhook of the same id was created again
//! during the read too, which then keeps them.)
//!
//! The file is a stream of records, each one tag byte and its fields, integers
//! big-endian:
//!
//! ```text
//! "leadroute-backup" u32(format)         header
//! 'T' u32(len) name                       a tree; the entries that follow are its own
//! 'E' u32(len) key u32(len) value         an entry
//! 'P' u32(len) tree u32(len) key u32(len) value   a captured write
//! 'D' u32(len) tree u32(len) key          a captured removal
//! 'Z' u64(next id) u64(records) u32(crc)  the end: the count of 'E', 'P' and 'D'
//!                                         records, and the CRC-32 of every byte before
//! ```
//!
//! sled's id counter (which numbers histories, queues and events) is not in any tree;
//! the end record carries it, and [`restore`] moves the new store's counter past it,
//! so the restored engine never reuses a number.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{CURSORS, DEAD_LETTERS, TREE_NAMES, lock_held};

/// The first bytes of every backup.
const MAGIC: &[u8; 16] = b"leadroute-backup";
/// The format this build writes and reads.
const FORMAT: u32 = 1;
/// Longest tree name, key or value read back: larger lengths mean a damaged file.
const MAX_FIELD: u32 = 1 << 30;
/// sled's default tree: it holds nothing of the engine's.
const SLED_DEFAULT_TREE: &[u8] = b"__sled__default";
/// Bytes written between two syncs of the backup file. One sync of the whole file at
/// the end (885 MB at a million open leads) held the committer's own `fdatasync`
/// for 380 ms: with the file system's journal, one file's sync waits for others'
/// data. Syncing as it goes keeps what is left to write small.
const SYNC_EVERY: u64 = 8 << 20;
/// sled's page cache while restoring (its default is 1 GiB): a restore reads each
/// page back rarely, and the machine may be serving something else meanwhile.
const RESTORE_CACHE_BYTES: u64 = 128 << 20;
/// Entries written to sled per batch while restoring. Batches of 16,384 kept 12.6
/// GB resident to restore a million open leads (sled frees the nodes a batch
/// replaces only after it ends); batches of 1,024 kept 0.96 GB and took 68 s
/// instead of 118 (`benches/README.md`, "Backups").
const RESTORE_BATCH: usize = 1024;

const TREE: u8 = b'T';
const ENTRY: u8 = b'E';
const PUT: u8 = b'P';
const DELETE: u8 = b'D';
const END: u8 = b'Z';

/// What a backup holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Trees written.
    pub trees: u64,
    /// Records written: entries of the trees, and the writes captured while they were
    /// read.
    pub entries: u64,
    /// Of those, the captured writes.
    pub captured: u64,
    /// Bytes of the file.
    pub bytes: u64,
}

/// A write the committer made while a backup read the trees: `value` `None` for a
/// removal. `tree` indexes [`TREE_NAMES`].
#[derive(Clone, Debug)]
pub(crate) struct Captured {
    pub(crate) tree: usize,
    pub(crate) key: sled::IVec,
    pub(crate) value: Option<sled::IVec>,
}

/// What the committer hands over at a backup's instant.
pub(crate) struct Tail {
    /// Every write since capturing began, in order.
    pub(crate) writes: Vec<Captured>,
    /// Greater than every id sled handed out so far.
    pub(crate) next_id: u64,
    /// The committer's time on the backup, both handovers.
    pub(crate) held: std::time::Duration,
}

/// Writes a backup file: [`Exporter::trees`], then [`Exporter::finish`].
pub(crate) struct Exporter<'f> {
    out: Checksummed<BufWriter<&'f File>>,
    counts: Counts,
    /// `out.written` at the last sync.
    synced: u64,
}

impl<'f> Exporter<'f> {
    /// Starts the file with its header.
    pub(crate) fn new(file: &'f File) -> io::Result<Self> {
        let mut out = Checksummed::new(BufWriter::with_capacity(1 << 20, file));
        out.write_all(MAGIC)?;
        out.write_all(&FORMAT.to_be_bytes())?;
        Ok(Exporter {
            out,
            counts: Counts::default(),
            synced: 0,
        })
    }

    /// Syncs what was written so far once [`SYNC_EVERY`] bytes wait.
    fn sync_as_it_goes(&mut self) -> io::Result<()> {
        if self.out.written - self.synced >= SYNC_EVERY {
            self.out.inner.flush()?;
            self.out.inner.get_ref().sync_data()?;
            self.synced = self.out.written;
        }
        Ok(())
    }

    /// Writes every tree of `db`, as the read finds it, calling `after_tree` after
    /// each. Stops with an error as soon as `lost` is raised: the committer dropped
    /// the capture, so the backup can no longer be whole.
    pub(crate) fn trees(
        &mut self,
        db: &sled::Db,
        lost: &AtomicBool,
        mut after_tree: impl FnMut(),
    ) -> io::Result<()> {
        let mut names = db.tree_names();
        names.sort_by_key(|name| (read_late(name), name.clone()));
        for name in names.iter().filter(|n| n.as_ref() != SLED_DEFAULT_TREE) {
            self.out.write_all(&[TREE])?;
            write_field(&mut self.out, name)?;
            self.counts.trees += 1;
            for kv in db.open_tree(name).map_err(io::Error::other)?.iter() {
                if lost.load(Ordering::Relaxed) {
                    return Err(io::Error::other(
                        "the writes made meanwhile could not be kept (a commit failed, \
                         more was written than a backup keeps in memory, or the engine \
                         stopped); take the backup again",
                    ));
                }
                let (key, value) = kv.map_err(io::Error::other)?;
                self.out.write_all(&[ENTRY])?;
                write_field(&mut self.out, &key)?;
                write_field(&mut self.out, &value)?;
                self.counts.entries += 1;
                self.sync_as_it_goes()?;
            }
            after_tree();
        }
        Ok(())
    }

    /// Writes the captured writes and the end, and flushes the file's buffer (the
    /// caller syncs it).
    pub(crate) fn finish(mut self, tail: &Tail) -> io::Result<Counts> {
        let out = &mut self.out;
        for write in &tail.writes {
            let tree = TREE_NAMES[write.tree].as_bytes();
            match &write.value {
                Some(value) => {
                    out.write_all(&[PUT])?;
                    write_field(out, tree)?;
                    write_field(out, &write.key)?;
                    write_field(out, value)?;
                }
                None => {
                    out.write_all(&[DELETE])?;
                    write_field(out, tree)?;
                    write_field(out, &write.key)?;
                }
            }
        }
        let captured = tail.writes.len() as u64;
        self.counts.captured = captured;
        self.counts.entries += captured;
        out.write_all(&[END])?;
        out.write_all(&tail.next_id.to_be_bytes())?;
        out.write_all(&self.counts.entries.to_be_bytes())?;
        let crc = out.crc.clone().finalize();
        out.write_all(&crc.to_be_bytes())?;
        self.counts.bytes = out.written;
        out.inner.flush()?;
        Ok(self.counts)
    }
}

/// Why a backup could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The target already holds files: a restore never writes over a store.
    #[error("{0} is not empty; restore into a new directory")]
    TargetNotEmpty(String),
    /// The target is a mount point: the restored store is built beside it and
    /// renamed into its place, which a mount point cannot be.
    #[error(
        "{0} is a mount point, which a restore cannot replace; restore into a new \
         directory inside it, such as {0}/data"
    )]
    TargetMountPoint(String),
    /// Another restore into the same directory is running.
    #[error("another restore into {0} is running; wait for it to finish")]
    Busy(String),
    /// The file is not a backup, is damaged or is cut short.
    #[error("{path} is not a complete leadroute backup: {why}")]
    Damaged {
        /// The backup file.
        path: String,
        /// What is wrong with it.
        why: String,
    },
    /// Reading the backup or writing the new store failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// sled refused the new store.
    #[error("writing the new store: {0}")]
    Store(#[from] sled::Error),
}

/// Restores the backup at `backup` into `data_dir`, which must not exist or be
/// empty. The store is built in a sibling directory and renamed into place only once
/// the whole file has been read and its checksum matched, so a damaged backup leaves
/// nothing behind.
///
/// A symbolic link is followed: the store replaces the directory it points to, and
/// the link keeps pointing there (a link to nothing is refused). What cannot be
/// replaced is refused before the file is read: a mount point, and a target another
/// restore is writing into (each restore holds a lock on the hidden file
/// `.NAME.restore-lock` beside the target throughout, and removes it at the end).
///
/// A backup read from a pipe restores too, though its store's id counter is then
/// moved one id at a time (see `move_id_counter_past`).
pub fn restore(backup: &Path, data_dir: &Path) -> Result<Counts, RestoreError> {
    let resolved;
    let data_dir = if std::fs::symlink_metadata(data_dir).is_ok_and(|m| m.is_symlink()) {
        resolved = std::fs::canonicalize(data_dir)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", data_dir.display())))?;
        resolved.as_path()
    } else {
        data_dir
    };
    let target = || data_dir.display().to_string();
    // Beside the target, not inside it: `data/` names the same directory as `data`.
    let name = data_dir.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} does not name a directory to create", target()),
        )
    })?;
    let parent = data_dir.parent().unwrap_or(Path::new(""));
    let parent_or_here = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    std::fs::create_dir_all(parent_or_here)?;
    // Held until the new store has its name: a second restore into the same target
    // would otherwise remove this one's `.restoring` directory as a leftover.
    let mut lock_name = std::ffi::OsString::from(".");
    lock_name.push(name);
    lock_name.push(".restore-lock");
    let _lock = RestoreLock::take(&parent_or_here.join(lock_name))?
        .ok_or_else(|| RestoreError::Busy(target()))?;
    match std::fs::read_dir(data_dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(RestoreError::TargetNotEmpty(target()));
            }
            if is_mount_point(data_dir, parent_or_here)? {
                return Err(RestoreError::TargetMountPoint(target()));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", target())).into()),
    }
    let mut building = name.to_owned();
    building.push(".restoring");
    let building = parent.join(building);
    if building.exists() {
        // What a restore that was cut short left; it was never renamed into place.
        std::fs::remove_dir_all(&building)?;
    }
    let placed = import(backup, &building).and_then(|counts| {
        // sled's flush does not sync file metadata: sync every file and directory
        // of the new store before it takes the target's name.
        sync_tree(&building)?;
        if data_dir.exists() {
            std::fs::remove_dir(data_dir)?;
        }
        std::fs::rename(&building, data_dir)?;
        Ok(counts)
    });
    if placed.is_err() {
        let _ = std::fs::remove_dir_all(&building);
        return placed;
    }
    File::open(parent_or_here)?.sync_all()?;
    placed
}

/// A lock on the hidden file `.NAME.restore-lock` beside a restore's target, taken
/// before the target is looked at and removed when the restore ends. The file is
/// opened for writing: NFS emulates the lock with `fcntl`, which needs that.
struct RestoreLock {
    path: std::path::PathBuf,
    /// `None` on a file system that cannot lock: the restore goes on without.
    _file: Option<File>,
}

impl RestoreLock {
    /// Takes the lock; `None` if another restore holds it.
    fn take(path: &Path) -> io::Result<Option<RestoreLock>> {
        use std::os::unix::fs::MetadataExt;
        loop {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
                Err(std::fs::TryLockError::Error(e)) => {
                    tracing::warn!(error = %e, path = %path.display(),
                        "cannot lock; a second restore into the same target would clash");
                    let path = path.to_path_buf();
                    return Ok(Some(RestoreLock { path, _file: None }));
                }
            }
            // The restore that held it may have removed the file between our open and
            // our lock: then ours is locked but nameless, and the lock is the file the
            // name now gives, if any.
            let held = file.metadata()?;
            match std::fs::metadata(path) {
                Ok(named) if named.dev() == held.dev() && named.ino() == held.ino() => {
                    let path = path.to_path_buf();
                    return Ok(Some(RestoreLock {
                        path,
                        _file: Some(file),
                    }));
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for RestoreLock {
    fn drop(&mut self) {
        // Removed while still held (the file is closed after this), so no restore
        // can lock it in between and think it alone.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether the directory `dir` is a mount point: listed as one in
/// `/proc/self/mountinfo` (which a bind mount of the same file system is too), or,
/// where that cannot be read, on another device than `parent`.
fn is_mount_point(dir: &Path, parent: &Path) -> io::Result<bool> {
    use std::os::unix::ffi::OsStringExt;
    use std::os::unix::fs::MetadataExt;
    let dir = std::fs::canonicalize(dir)?;
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Ok(std::fs::metadata(&dir)?.dev() != std::fs::metadata(parent)?.dev());
    };
    // The fifth field is the mount point, with space, tab, newline and backslash
    // written as `\ooo` octal escapes.
    let unescape = |field: &str| {
        let bytes = field.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let octal = bytes.get(i + 1..i + 4).and_then(|d| {
                std::str::from_utf8(d)
                    .ok()
                    .and_then(|d| u8::from_str_radix(d, 8).ok())
            });
            match (bytes[i], octal) {
                (b'\\', Some(byte)) => {
                    out.push(byte);
                    i += 4;
                }
                (byte, _) => {
                    out.push(byte);
                    i += 1;
                }
            }
        }
        std::path::PathBuf::from(std::ffi::OsString::from_vec(out))
    };
    Ok(mounts
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|point| unescape(point) == dir))
}

/// Reads `backup` into a new sled store at `dir`.
fn import(backup: &Path, dir: &Path) -> Result<Counts, RestoreError> {
    let damaged = |why: String| RestoreError::Damaged {
        path: backup.display().to_string(),
        why,
    };
    let mut file = File::open(backup)?;
    let metadata = file.metadata()?;
    let bytes = metadata.len();
    let counter_past = if metadata.is_file() {
        stated_next_id(&mut file, bytes)?
    } else {
        0
    };
    let mut input = Checksummed::new(BufReader::with_capacity(1 << 20, file));
    let mut header = [0; 20];
    read_exact(&mut input, &mut header).map_err(|e| damaged(format!("header: {e}")))?;
    if &header[..16] != MAGIC {
        return Err(damaged("it does not begin as a backup does".into()));
    }
    let format = u32::from_be_bytes(header[16..].try_into().expect("4 bytes"));
    if format != FORMAT {
        return Err(damaged(format!(
            "format {format}; this build reads format {FORMAT}"
        )));
    }
    // The counter is moved while the store is empty, where reopening it is cheap.
    if counter_past > 0 {
        move_id_counter_past(dir, counter_past)?;
    }
    let db = open_when_free(
        sled::Config::new()
            .path(dir)
            .cache_capacity(RESTORE_CACHE_BYTES),
    )?;
    let mut counts = Counts {
        bytes,
        ..Counts::default()
    };
    let mut tree: Option<(sled::Tree, sled::Batch, usize)> = None;
    let mut opened: HashMap<Vec<u8>, sled::Tree> = HashMap::new();
    let mut writes_begun = false;
    let next_id = loop {
        let tag = read_u8(&mut input).map_err(|e| damaged(format!("a record's tag: {e}")))?;
        match tag {
            TREE if writes_begun => {
                return Err(damaged("a tree after the captured writes".into()));
            }
            TREE => {
                if let Some((t, batch, _)) = tree.take() {
                    t.apply_batch(batch)?;
                }
                let name = read_field(&mut input).map_err(|e| damaged(format!("a tree: {e}")))?;
                let t = db.open_tree(&name)?;
                opened.insert(name, t.clone());
                tree = Some((t, sled::Batch::default(), 0));
                counts.trees += 1;
            }
            ENTRY if writes_begun => {
                return Err(damaged("an entry after the captured writes".into()));
            }
            ENTRY => {
                let (t, batch, n) = tree
                    .as_mut()
                    .ok_or_else(|| damaged("an entry before any tree".into()))?;
                let key = read_field(&mut input).map_err(|e| damaged(format!("a key: {e}")))?;
                let value = read_field(&mut input).map_err(|e| damaged(format!("a value: {e}")))?;
                batch.insert(key, value);
                *n += 1;
                if *n == RESTORE_BATCH {
                    t.apply_batch(std::mem::take(batch))?;
                    *n = 0;
                }
                counts.entries += 1;
            }
            PUT | DELETE => {
                // The trees are all read; the captured writes apply over them, in order.
                if let Some((t, batch, _)) = tree.take() {
                    t.apply_batch(batch)?;
                }
                let name =
                    read_field(&mut input).map_err(|e| damaged(format!("a write's tree: {e}")))?;
                let key =
                    read_field(&mut input).map_err(|e| damaged(format!("a write's key: {e}")))?;
                let target = match opened.get(&name) {
                    Some(t) => t.clone(),
                    None => {
                        let t = db.open_tree(&name)?;
                        opened.insert(name, t.clone());
                        t
                    }
                };
                if tag == PUT {
                    let value = read_field(&mut input)
                        .map_err(|e| damaged(format!("a write's value: {e}")))?;
                    target.insert(key, value)?;
                } else {
                    target.remove(key)?;
                }
                writes_begun = true;
                counts.captured += 1;
                counts.entries += 1;
            }
            END => {
                let mut end = [0; 16];
                read_exact(&mut input, &mut end).map_err(|e| damaged(format!("the end: {e}")))?;
                let crc = input.crc.clone().finalize();
                let mut stored = [0; 4];
                read_exact(&mut input, &mut stored)
                    .map_err(|e| damaged(format!("the checksum: {e}")))?;
                if u32::from_be_bytes(stored) != crc {
                    return Err(damaged("its checksum does not match its contents".into()));
                }
                let entries = u64::from_be_bytes(end[8..].try_into().expect("8 bytes"));
                if entries != counts.entries {
                    return Err(damaged(format!(
                        "it says {entries} entries and holds {}",
                        counts.entries
                    )));
                }
                break u64::from_be_bytes(end[..8].try_into().expect("8 bytes"));
            }
            other => return Err(damaged(format!("unknown record tag {other:#04x}"))),
        }
    };
    if input.inner.read(&mut [0])? != 0 {
        return Err(damaged("bytes follow its end".into()));
    }
    if let Some((t, batch, _)) = tree.take() {
        t.apply_batch(batch)?;
    }
    if next_id > MAX_NEXT_ID {
        return Err(damaged(format!(
            "it states an id counter of {next_id}, past any store's"
        )));
    }
    if next_id > counter_past {
        // Not known before the read (a pipe has no end to look at first): drawn one
        // id at a time instead, which is slower only on a store started many times.
        while db.generate_id()? < next_id {}
    }
    db.flush()?;
    drop(db);
    Ok(counts)
}

/// The next id the end record of the backup `file` (a regular file, `bytes` long)
/// states, read before the rest, and the file put back at its start; 0 if it is too
/// short to have one, or the value is beyond any store's (a damaged file, refused
/// once it is read through). A pipe has no end to read first: its caller passes 0.
fn stated_next_id(file: &mut File, bytes: u64) -> io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    // The header, and the end: its tag, the next id, the count and the checksum.
    if bytes < 20 + 21 {
        return Ok(0);
    }
    file.seek(SeekFrom::Start(bytes - 20))?;
    let mut next_id = [0; 8];
    file.read_exact(&mut next_id)?;
    file.seek(SeekFrom::Start(0))?;
    let next_id = u64::from_be_bytes(next_id);
    Ok(if next_id <= MAX_NEXT_ID { next_id } else { 0 })
}

/// Larger than any counter a store reaches: sled adds two million at each start, so
/// this is more than 500 billion starts. Small enough that sled's counter, two
/// persist intervals past it, cannot overflow.
const MAX_NEXT_ID: u64 = 1 << 60;

/// sled's id counter is persisted every [`IDGEN_INTERVAL`] ids and, at each opening,
/// starts two intervals past the persisted value (ids handed out since the last
/// persist are thus never reused).
const IDGEN_INTERVAL: u64 = 1_000_000;

/// Longest a restore waits for sled to let go of the new store's lock after closing it.
const LOCK_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Opens the new store, waiting for the file lock an opening of it just closed: sled's
/// background threads let go of it a moment after the last handle is dropped.
fn open_when_free(config: sled::Config) -> sled::Result<sled::Db> {
    let started = std::time::Instant::now();
    loop {
        match config.open() {
            Err(e) if lock_held(&e) && started.elapsed() < LOCK_RELEASE_WAIT => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            opened => return opened,
        }
    }
}

/// Creates the new store at `dir`, empty, with its id counter past `next_id`.
///
/// sled has no call that sets the counter, and drawing ids one at a time up to
/// `next_id` takes 11–13 ns each: 23 s for a store started a thousand times, since
/// each start moves the counter on by two million (measured). Instead the empty
/// store is opened twice with a persist interval of its own, `interval`, a multiple
/// of sled's default at least half of `next_id`: the second opening starts the
/// counter at `2 * interval`, and drawing one id persists that. Every later opening,
/// with the default interval, starts past it. (The persisted value must be a
/// multiple of the interval the store is next opened with: sled asserts so.) Done
/// on the empty store because reopening a full one costs seconds: sled replays what
/// the import wrote (at a million leads, restores took 3.5–8.6 s longer when this
/// ran after the import). `Config::idgen_persist_interval` is hidden from sled's
/// docs; sled is pinned.
fn move_id_counter_past(dir: &Path, next_id: u64) -> Result<(), RestoreError> {
    let interval = next_id.div_ceil(2).div_ceil(IDGEN_INTERVAL).max(1) * IDGEN_INTERVAL;
    let config = sled::Config::new()
        .path(dir)
        .idgen_persist_interval(interval);
    // The first opening creates the store; only a reopened one starts its counter
    // two intervals on.
    drop(open_when_free(config.clone())?);
    let db = open_when_free(config)?;
    let first = db.generate_id()?;
    if first < next_id {
        return Err(io::Error::other(format!(
            "sled's id counter started at {first}, not past {next_id}"
        ))
        .into());
    }
    db.flush()?;
    Ok(())
}

/// `fsync`s every file under `dir`, then `dir` and its subdirectories.
fn sync_tree(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            sync_tree(&entry.path())?;
        } else {
            File::open(entry.path())?.sync_all()?;
        }
    }
    File::open(dir)?.sync_all()
}

/// Where a tree comes in the read: the routing state first (0), then the webhook
/// dispatcher's cursors (1), and its dead letters last (2). See the module's comment.
fn read_late(name: &[u8]) -> u8 {
    match name {
        n if n == TREE_NAMES[CURSORS].as_bytes() => 1,
        n if n == TREE_NAMES[DEAD_LETTERS].as_bytes() => 2,
        _ => 0,
    }
}

fn write_field(out: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    // What `read_field` refuses must not be written.
    let len = u32::try_from(bytes.len())
        .ok()
        .filter(|len| *len <= MAX_FIELD)
        .ok_or_else(|| io::Error::other(format!("a field of {} bytes", bytes.len())))?;
    out.write_all(&len.to_be_bytes())?;
    out.write_all(bytes)
}

fn read_exact(input: &mut impl Read, buf: &mut [u8]) -> Result<(), String> {
    input.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => "the file ends early".to_string(),
        _ => e.to_string(),
    })
}

fn read_u8(input: &mut impl Read) -> Result<u8, String> {
    let mut b = [0];
    read_exact(input, &mut b)?;
    Ok(b[0])
}

fn read_field(input: &mut impl Read) -> Result<Vec<u8>, String> {
    let mut len = [0; 4];
    read_exact(input, &mut len)?;
    let len = u32::from_be_bytes(len);
    if len > MAX_FIELD {
        return Err(format!("a length of {len} bytes"));
    }
    // Read through `take`, not into a buffer of the stated length: a damaged length
    // must not allocate a gigabyte before the file runs out.
    let mut field = Vec::new();
    input
        .take(len.into())
        .read_to_end(&mut field)
        .map_err(|e| e.to_string())?;
    if field.len() != len as usize {
        return Err("the file ends early".into());
    }
    Ok(field)
}

/// A reader or writer that keeps the CRC-32 of the bytes through it.
struct Checksummed<T> {
    inner: T,
    crc: crc32fast::Hasher,
    written: u64,
}

impl<T> Checksummed<T> {
    fn new(inner: T) -> Self {
        Checksummed {
            inner,
            crc: crc32fast::Hasher::new(),
            written: 0,
        }
    }
}

impl<W: Write> Write for Checksummed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Checksummed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backup of an empty store whose id counter stood at `next_id`.
    fn empty_backup(next_id: u64) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&FORMAT.to_be_bytes());
        bytes.push(END);
        bytes.extend_from_slice(&next_id.to_be_bytes());
        bytes.extend_from_slice(&0u64.to_be_bytes());
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_be_bytes());
        bytes
    }

    #[test]
    fn a_backup_read_from_a_pipe_restores_with_its_counter_moved() {
        let dir = tempfile::tempdir().unwrap();
        let pipe = dir.path().join("backup.pipe");
        let made = std::process::Command::new("mkfifo")
            .arg(&pipe)
            .status()
            .unwrap();
        assert!(made.success());
        let next_id = 5_000_123;
        let writer = std::thread::spawn({
            let pipe = pipe.clone();
            move || std::fs::write(pipe, empty_backup(next_id)).unwrap()
        });
        let data = dir.path().join("data");
        restore(&pipe, &data).unwrap();
        writer.join().unwrap();
        let store = crate::store::Store::open(&data).unwrap();
        let first = store.h().unwrap().db.generate_id().unwrap();
        assert!(first >= next_id, "{first} is not past {next_id}");
    }

    #[test]
    fn a_counter_past_any_store_is_refused_as_damage() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("b.backup");
        std::fs::write(&file, empty_backup(MAX_NEXT_ID + 1)).unwrap();
        let err = restore(&file, &dir.path().join("data")).unwrap_err();
        assert!(matches!(err, RestoreError::Damaged { .. }), "{err:?}");
        assert!(err.to_string().contains("past any store"), "{err}");
    }

    #[test]
    fn a_restored_store_numbers_on_past_the_backup_however_far_its_counter_was() {
        // Up to a store started five million times; drawing ids one by one up to the
        // last would take more than a day.
        for next_id in [0, 1, 999_999, 2_000_001, 1 << 40, 10_000_000_000_000] {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("b.backup");
            std::fs::write(&file, empty_backup(next_id)).unwrap();
            let data = dir.path().join("data");
            restore(&file, &data).unwrap();
            // Opened as the engine opens it, twice: the counter is past the backup's
            // each time, and persisting it later (every million ids) works.
            for _ in 0..2 {
                let store = crate::store::Store::open(&data).unwrap();
                let db = &store.h().unwrap().db;
                let first = db.generate_id().unwrap();
                assert!(first >= next_id, "{first} is not past {next_id}");
                for _ in 0..IDGEN_INTERVAL + 1 {
                    db.generate_id().unwrap();
                }
                db.flush().unwrap();
            }
        }
    }
}
