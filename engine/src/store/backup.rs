//! Online backups: the whole store written to one file at a point between two
//! commits, and a new data directory restored from such a file.
//!
//! The committer writes the backup ([`export`]) between two groups. It is the store's
//! only writer of the routing state, so every tree is read as of one instant: what
//! was answered before the backup began is in it, what was submitted after is not.
//! (The webhook dispatcher's own progress, cursors and dead letters, may be read a
//! moment apart; delivery is at-least-once, so that can only mean an event delivered
//! again after a restore.)
//!
//! The file is a stream of records, each one tag byte and its fields, integers
//! big-endian:
//!
//! ```text
//! "leadroute-backup" u32(format)        header
//! 'T' u32(len) name                      a tree; the entries that follow are its own
//! 'E' u32(len) key u32(len) value        an entry
//! 'Z' u64(next id) u64(entries) u32(crc) the end: the CRC-32 of every byte before it
//! ```
//!
//! sled's id counter (which numbers histories, queues and events) is not in any tree;
//! the end record carries it, and [`restore`] moves the new store's counter past it,
//! so the restored engine never reuses a number.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

/// The first bytes of every backup.
const MAGIC: &[u8; 16] = b"leadroute-backup";
/// The format this build writes and reads.
const FORMAT: u32 = 1;
/// Longest tree name, key or value read back: larger lengths mean a damaged file.
const MAX_FIELD: u32 = 1 << 30;
/// sled's default tree: it holds nothing of the engine's.
const SLED_DEFAULT_TREE: &[u8] = b"__sled__default";
/// Entries written to sled per batch while restoring.
const RESTORE_BATCH: usize = 16_384;

const TREE: u8 = b'T';
const ENTRY: u8 = b'E';
const END: u8 = b'Z';

/// What a backup holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Trees written.
    pub trees: u64,
    /// Entries (keys with their values) written, in every tree.
    pub entries: u64,
    /// Bytes of the file.
    pub bytes: u64,
}

/// Writes every tree of `db` to `out` and returns what was written. Call it with no
/// writer running; the committer does, between two groups.
pub(crate) fn export(db: &sled::Db, out: &File) -> io::Result<Counts> {
    let mut out = Checksummed::new(BufWriter::with_capacity(1 << 20, out));
    out.write_all(MAGIC)?;
    out.write_all(&FORMAT.to_be_bytes())?;
    let mut counts = Counts::default();
    let mut names = db.tree_names();
    names.sort();
    for name in names.iter().filter(|n| n.as_ref() != SLED_DEFAULT_TREE) {
        out.write_all(&[TREE])?;
        write_field(&mut out, name)?;
        counts.trees += 1;
        for kv in db.open_tree(name).map_err(io::Error::other)?.iter() {
            let (key, value) = kv.map_err(io::Error::other)?;
            out.write_all(&[ENTRY])?;
            write_field(&mut out, &key)?;
            write_field(&mut out, &value)?;
            counts.entries += 1;
        }
    }
    // Greater than every id handed out so far.
    let next_id = db.generate_id().map_err(io::Error::other)?;
    out.write_all(&[END])?;
    out.write_all(&next_id.to_be_bytes())?;
    out.write_all(&counts.entries.to_be_bytes())?;
    let crc = out.crc.clone().finalize();
    out.write_all(&crc.to_be_bytes())?;
    counts.bytes = out.written;
    out.inner.flush()?;
    Ok(counts)
}

/// Why a backup could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The target already holds files: a restore never writes over a store.
    #[error("{0} is not empty; restore into a new directory")]
    TargetNotEmpty(String),
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
pub fn restore(backup: &Path, data_dir: &Path) -> Result<Counts, RestoreError> {
    let target = || data_dir.display().to_string();
    match std::fs::read_dir(data_dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(RestoreError::TargetNotEmpty(target()));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", target())).into()),
    }
    // Beside the target, not inside it: `data/` names the same directory as `data`.
    let name = data_dir.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} does not name a directory to create", target()),
        )
    })?;
    let parent = data_dir.parent().unwrap_or(Path::new(""));
    let mut building = name.to_owned();
    building.push(".restoring");
    let building = parent.join(building);
    if building.exists() {
        // What a restore that was cut short left; it was never renamed into place.
        std::fs::remove_dir_all(&building)?;
    }
    let placed = import(backup, &building).and_then(|counts| {
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
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    File::open(parent)?.sync_all()?;
    placed
}

/// Reads `backup` into a new sled store at `dir`.
fn import(backup: &Path, dir: &Path) -> Result<Counts, RestoreError> {
    let damaged = |why: String| RestoreError::Damaged {
        path: backup.display().to_string(),
        why,
    };
    let file = File::open(backup)?;
    let bytes = file.metadata()?.len();
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
    let db = sled::Config::new().path(dir).open()?;
    let mut counts = Counts {
        bytes,
        ..Counts::default()
    };
    let mut tree: Option<(sled::Tree, sled::Batch, usize)> = None;
    let next_id = loop {
        let tag = read_u8(&mut input).map_err(|e| damaged(format!("a record's tag: {e}")))?;
        match tag {
            TREE => {
                if let Some((t, batch, _)) = tree.take() {
                    t.apply_batch(batch)?;
                }
                let name = read_field(&mut input).map_err(|e| damaged(format!("a tree: {e}")))?;
                tree = Some((db.open_tree(name)?, sled::Batch::default(), 0));
                counts.trees += 1;
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
    // One call per id: sled has no way to set its counter, and each call is an
    // atomic increment (it persists the counter once per million).
    while db.generate_id()? < next_id {}
    db.flush()?;
    drop(db);
    Ok(counts)
}

fn write_field(out: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    let len = u32::try_from(bytes.len()).map_err(io::Error::other)?;
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
