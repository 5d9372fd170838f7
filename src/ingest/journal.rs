//! The durable spool: an append-only local file of accepted changes that could not be committed
//! to the database (unreachable, a failed or too slow commit). An entry is answered only after
//! it is fsynced here; entries are replayed into the database in order, with the same
//! idempotent semantics, and the file is truncated once everything is in. Every record in the
//! file is therefore an answered billing record: nothing here may be dropped without a copy.
//!
//! # Format
//!
//! A sequence of records, each
//!
//! ```text
//! magic: FE 52 4A 31 | length: u32 LE | crc32: u32 LE | payload (JSON, `length` bytes)
//! ```
//!
//! where the CRC-32 covers the four length bytes and the payload. The magic starts with `0xFE`,
//! a byte that never occurs in UTF-8, so it never appears inside a payload; a length over 1 MiB
//! is corruption. The magic lets a scan find the next record after a damaged one.
//!
//! # Opening
//!
//! [`Journal::open`] scans the whole file. Past a record that does not check out, it searches
//! forward for the next offset where a valid record starts (magic, sane length, CRC) and goes
//! on from there. Each unreadable byte range is appended to the side file `<journal>.corrupt`
//! and fsynced before the journal changes (format below), then:
//!
//! - a range in the middle (or a damaged record at the end) is **corruption**: logged at ERROR
//!   with its offset and length, counted (`radacctd_journal_corrupt_regions_total`,
//!   `radacctd_journal_corrupt_bytes_total`), and the journal is rewritten without it (a temporary
//!   file with the valid records, fsync, rename over the journal, fsync of the directory);
//! - a range at the end that is the beginning of one record running past the end of the file
//!   (or only zeros) is a **torn tail**, a crash in the middle of an append: it was never
//!   answered. It is logged at WARN and cut off.
//!
//! A file that does not start with the magic and whose first record reads in the format of
//! earlier versions (`length: u32 LE | crc32 of the payload: u32 LE | payload`, no magic) is
//! read in that format, with the same handling of damaged ranges (any offset may start the next
//! record there), and rewritten in the current format.
//!
//! The side file is a sequence of entries, each one text line then the raw bytes then `\n`:
//!
//! ```text
//! radacctd-journal-unreadable offset=<o> length=<n> kind=<corrupt|torn> found=<unix time> journal=<path>
//! <n raw bytes>
//! ```
//!
//! `offset` is the position in the journal as it was before the rewrite. A crash during the
//! open can leave a range in the side file twice; it is never missing.
//!
//! # Rejected entries
//!
//! An entry that keeps failing on a statement is moved by replay to `<journal>.rejected`
//! ([`Journal::reject`]): one JSON line `{"reason": …, "entry": …}` each. Writers of that file
//! hold an exclusive lock on it ([`lock_rejected`]); `radacctd journal retry` replaces it under
//! that lock.
//!
//! All methods do blocking file I/O: call them from `spawn_blocking` (the writer does).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::radius::accounting::AccountingEvent;

/// One journaled change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JournalEntry {
    Event(Box<AccountingEvent>),
    /// A close decided by radacctd (a disconnect, a ghost of the router reconciliation) with a
    /// known stop time.
    Close {
        acctuniqueid: String,
        stop_time: i64,
        cause: String,
        /// Close only when the row's last update (else start) is older than this
        /// ([`crate::queue::CloseRequest::if_updated_before`]): a ghost's close must still lose
        /// to an interim that comes first, after a replay as before it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        if_updated_before: Option<i64>,
        /// The disconnect's action log row, written with the close on replay.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        action: Option<Box<crate::store::ActionRecord>>,
    },
}

impl JournalEntry {
    pub fn key(&self) -> &str {
        match self {
            JournalEntry::Event(e) => &e.acctuniqueid,
            JournalEntry::Close { acctuniqueid, .. } => acctuniqueid,
        }
    }
}

/// Why an append was refused.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal is full ({size} bytes, cap {cap}): not answering, the NAS will retransmit")]
    Full { size: u64, cap: u64 },
    #[error("journal I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("journal entry cannot be encoded: {0}")]
    Encode(#[from] serde_json::Error),
}

/// What went wrong with the journal, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalHealth {
    /// Unreadable ranges found when the journal was opened (torn tails not counted), and their
    /// bytes; copied to `<journal>.corrupt`.
    pub corrupt_regions: u64,
    pub corrupt_bytes: u64,
    /// Entries this process moved to `<journal>.rejected`.
    pub rejected: u64,
    /// Entries in `<journal>.rejected` now.
    pub rejected_entries: u64,
}

/// Starts every record. `0xFE` never occurs in UTF-8, so never inside a JSON payload.
const MAGIC: [u8; 4] = [0xFE, b'R', b'J', b'1'];
/// A record larger than this is corruption, not data (an event is a few hundred bytes).
const MAX_RECORD: u32 = 1 << 20;
/// How much a read fetches at once.
const WINDOW: usize = 256 << 10;

/// The side file of unreadable ranges found in `journal`.
pub fn corrupt_path(journal: &Path) -> PathBuf {
    with_suffix(journal, ".corrupt")
}

/// The side file of entries replay gave up on.
pub fn rejected_path(journal: &Path) -> PathBuf {
    with_suffix(journal, ".rejected")
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.to_owned().into_os_string();
    p.push(suffix);
    p.into()
}

/// The journal file and where replay has got to.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    /// Opened once, read and append: appends go to the end, reads are positioned, so replay
    /// needs no other file descriptor (none may be left at the process's limit).
    file: File,
    /// Bytes of valid records.
    len: u64,
    /// Records before this offset are in the database.
    replayed: u64,
    /// Records after `replayed`.
    pending: u64,
    cap: u64,
    /// Unix time of the oldest pending entry's append (this process's view; after a restart,
    /// the time the file was opened).
    oldest_append: Option<i64>,
    health: JournalHealth,
    /// (device, inode, size, mtime) of `<journal>.rejected` when its entries were last counted:
    /// counted again only when it changed (`journal retry` rewrites it).
    rejected_seen: Option<(u64, u64, u64, Option<std::time::SystemTime>)>,
}

impl Journal {
    /// Opens (or creates) the journal at `path`: keeps every valid record, copies unreadable
    /// ranges to `<journal>.corrupt` and rewrites the journal without them, cuts off a torn
    /// tail (after copying it too), and rewrites a journal of the earlier format. Fails, and
    /// changes nothing, when the copy cannot be written.
    pub fn open(path: &Path, cap: u64) -> std::io::Result<Journal> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = open_rw(path)?;
        let size = file.metadata()?.len();
        let scan = scan(&file, size)?;
        let mut health = JournalHealth::default();
        if !scan.bad.is_empty() {
            save_unreadable(path, &file, &scan.bad)?;
        }
        for b in &scan.bad {
            if b.torn {
                tracing::warn!(
                    path = %path.display(),
                    offset = b.start,
                    length = b.end - b.start,
                    copied_to = %corrupt_path(path).display(),
                    "journal had a torn tail (a crash during an append, never answered); cutting it off"
                );
            } else {
                health.corrupt_regions += 1;
                health.corrupt_bytes += b.end - b.start;
                tracing::error!(
                    path = %path.display(),
                    offset = b.start,
                    length = b.end - b.start,
                    copied_to = %corrupt_path(path).display(),
                    "journal corruption: unreadable bytes between answered records; the valid \
                     records around them are kept, the bytes are copied to the side file"
                );
            }
        }
        let legacy = scan.format == Format::Legacy && size > 0;
        let len = if legacy || scan.bad.iter().any(|b| !b.torn) {
            file = rewrite(path, &file, &scan)?;
            if legacy {
                tracing::info!(
                    path = %path.display(),
                    entries = scan.records,
                    "journal rewritten from the earlier format"
                );
            }
            file.metadata()?.len()
        } else if let Some(tail) = scan.bad.last() {
            file.set_len(tail.start)?;
            file.sync_all()?;
            tail.start
        } else {
            size
        };
        let pending = scan.records;
        Ok(Journal {
            path: path.to_owned(),
            file,
            len,
            replayed: 0,
            pending,
            cap,
            oldest_append: (pending > 0).then(crate::clock::now_secs),
            health,
            rejected_seen: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Entries not yet in the database.
    pub fn pending(&self) -> u64 {
        self.pending
    }

    pub fn is_empty(&self) -> bool {
        self.pending == 0
    }

    /// Bytes in the file.
    pub fn bytes(&self) -> u64 {
        self.len
    }

    /// Seconds since the oldest pending entry was appended.
    pub fn oldest_age(&self, now: i64) -> Option<i64> {
        self.oldest_append.map(|t| (now - t).max(0))
    }

    /// Corruption found at open, entries rejected, entries in the rejected file now (counted
    /// again whenever that file changed).
    pub fn health(&mut self) -> JournalHealth {
        let path = rejected_path(&self.path);
        let seen = std::fs::metadata(&path)
            .ok()
            .map(|m| (m.dev(), m.ino(), m.len(), m.modified().ok()));
        if seen != self.rejected_seen {
            let count = match seen {
                None => Some(0),
                Some(_) => std::fs::read(&path).ok().map(|b| count_lines(&b)),
            };
            if let Some(n) = count {
                self.health.rejected_entries = n;
                self.rejected_seen = seen;
            }
        }
        self.health
    }

    /// Appends entries and fsyncs them (group commit): on `Ok` they survive a crash.
    pub fn append(&mut self, entries: &[JournalEntry]) -> Result<(), JournalError> {
        let mut buf = Vec::with_capacity(entries.len() * 512);
        for e in entries {
            frame(&mut buf, &serde_json::to_vec(e)?);
        }
        if self.len + buf.len() as u64 > self.cap {
            return Err(JournalError::Full {
                size: self.len,
                cap: self.cap,
            });
        }
        if let Err(e) = self
            .file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data())
        {
            // A partial write must not stay in front of later records.
            let _ = self.file.set_len(self.len);
            return Err(e.into());
        }
        self.len += buf.len() as u64;
        if self.pending == 0 {
            self.oldest_append = Some(crate::clock::now_secs());
        }
        self.pending += entries.len() as u64;
        Ok(())
    }

    /// Up to `max` pending entries from the replay position, with the offset after each.
    /// Reads through the journal's own handle.
    pub fn read_pending(&mut self, max: usize) -> std::io::Result<Vec<(JournalEntry, u64)>> {
        let mut r = Reader::new(&self.file, self.len);
        let mut out = Vec::new();
        let mut offset = self.replayed;
        while out.len() < max && offset < self.len {
            let Some(next) = record_at(&mut r, Format::Framed, offset)? else {
                tracing::error!(
                    offset,
                    "journal record unreadable although it checked out at open; replay stops here"
                );
                break;
            };
            match decode(&mut r, Format::Framed, offset, next)? {
                Ok(entry) => out.push((entry, next)),
                // Valid CRC but not an entry (a newer or older format): skip it loudly.
                Err(e) => tracing::error!(offset, error = %e, "unreadable journal entry skipped"),
            }
            offset = next;
        }
        Ok(out)
    }

    /// Entries up to `offset` are in the database.
    pub fn mark_replayed(&mut self, offset: u64, entries: u64) {
        self.replayed = offset.min(self.len);
        self.pending = self.pending.saturating_sub(entries);
        if self.replayed >= self.len {
            self.pending = 0;
        }
    }

    /// Everything was replayed: empty the file.
    pub fn truncate(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.file.sync_all()?;
        self.len = 0;
        self.replayed = 0;
        self.pending = 0;
        self.oldest_append = None;
        Ok(())
    }

    /// Every pending entry, for rebuilding the index view at start-up.
    pub fn all_pending(&mut self) -> std::io::Result<Vec<JournalEntry>> {
        Ok(self
            .read_pending(usize::MAX)?
            .into_iter()
            .map(|(e, _)| e)
            .collect())
    }

    /// Writes an entry that could never be replayed to `<journal>.rejected` (kept for the
    /// operator: nothing is thrown away) and counts it.
    pub fn reject(&mut self, entry: &JournalEntry, reason: &str) -> std::io::Result<()> {
        let path = rejected_path(&self.path);
        let created = !path.exists();
        let mut f = lock_rejected(&path, true)?.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "rejected file vanished")
        })?;
        f.write_all(&rejected_line(entry, reason)?)?;
        f.sync_data()?;
        if created {
            sync_dir(&path)?;
        }
        self.health.rejected += 1;
        Ok(())
    }
}

/// One line of `<journal>.rejected`, with its newline (written at once: readers never see
/// half a line).
pub fn rejected_line(entry: &JournalEntry, reason: &str) -> serde_json::Result<Vec<u8>> {
    let mut line = serde_json::to_vec(&serde_json::json!({ "reason": reason, "entry": entry }))?;
    line.push(b'\n');
    Ok(line)
}

/// Opens `path` for appending with an exclusive lock, held until the handle is dropped; `None`
/// when it does not exist and `create` is false. A handle on a file that was replaced while
/// this waited for the lock (`journal retry` renames a new file over it) is not returned.
pub fn lock_rejected(path: &Path, create: bool) -> std::io::Result<Option<File>> {
    loop {
        let f = match OpenOptions::new()
            .read(true)
            .append(true)
            .create(create)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if !create && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        f.lock()?;
        let mine = f.metadata()?;
        match std::fs::metadata(path) {
            Ok(m) if m.dev() == mine.dev() && m.ino() == mine.ino() => return Ok(Some(f)),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if create {
                    continue;
                }
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Non-empty lines.
fn count_lines(bytes: &[u8]) -> u64 {
    bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .count() as u64
}

fn open_rw(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
}

/// Fsyncs the directory holding `path` (a created or renamed entry is durable only then).
fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// Replaces `path` with `bytes` atomically and durably: a temporary file, fsync, rename over
/// `path`, fsync of the directory.
pub(crate) fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = with_suffix(path, ".tmp");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    sync_dir(path)
}

/// Appends one record in the current format.
fn frame(buf: &mut Vec<u8>, payload: &[u8]) {
    let len = (payload.len() as u32).to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len);
    crc.update(payload);
    buf.extend_from_slice(&MAGIC);
    buf.extend_from_slice(&len);
    buf.extend_from_slice(&crc.finalize().to_le_bytes());
    buf.extend_from_slice(payload);
}

/// The record format of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// `magic | length | crc32(length, payload) | payload`.
    Framed,
    /// Earlier versions: `length | crc32(payload) | payload`.
    Legacy,
}

impl Format {
    fn header(self) -> usize {
        match self {
            Format::Framed => 12,
            Format::Legacy => 8,
        }
    }
}

/// Positioned reads of the first `size` bytes of a file through a window (no seek, no second
/// handle).
struct Reader<'a> {
    file: &'a File,
    size: u64,
    buf: Vec<u8>,
    start: u64,
}

impl<'a> Reader<'a> {
    fn new(file: &'a File, size: u64) -> Self {
        Reader {
            file,
            size,
            buf: Vec::new(),
            start: 0,
        }
    }

    /// Bytes `offset..offset + n`; `None` when they run past `size`.
    fn bytes(&mut self, offset: u64, n: usize) -> std::io::Result<Option<&[u8]>> {
        let Some(end) = offset.checked_add(n as u64).filter(|e| *e <= self.size) else {
            return Ok(None);
        };
        if offset < self.start || end > self.start + self.buf.len() as u64 {
            let want = (n.max(WINDOW) as u64).min(self.size - offset) as usize;
            self.buf.resize(want, 0);
            if let Err(e) = self.file.read_exact_at(&mut self.buf, offset) {
                self.buf.clear();
                return Err(e);
            }
            self.start = offset;
        }
        let i = (offset - self.start) as usize;
        Ok(Some(&self.buf[i..i + n]))
    }
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// The offset after the record at `offset` when a valid record starts there.
fn record_at(r: &mut Reader<'_>, format: Format, offset: u64) -> std::io::Result<Option<u64>> {
    let h = format.header();
    let Some(head) = r.bytes(offset, h)? else {
        return Ok(None);
    };
    let (len, crc) = match format {
        Format::Framed if head[..4] != MAGIC => return Ok(None),
        Format::Framed => (le32(&head[4..8]), le32(&head[8..12])),
        Format::Legacy => (le32(&head[0..4]), le32(&head[4..8])),
    };
    if len == 0 || len > MAX_RECORD {
        return Ok(None);
    }
    let total = h + len as usize;
    let Some(record) = r.bytes(offset, total)? else {
        return Ok(None);
    };
    let ok = match format {
        Format::Framed => {
            let mut hasher = crc32fast::Hasher::new();
            hasher.update(&record[4..8]);
            hasher.update(&record[h..]);
            hasher.finalize() == crc
        }
        Format::Legacy => crc32fast::hash(&record[h..]) == crc,
    };
    Ok(ok.then_some(offset + total as u64))
}

/// The entry of the valid record `offset..next`.
fn decode(
    r: &mut Reader<'_>,
    format: Format,
    offset: u64,
    next: u64,
) -> std::io::Result<Result<JournalEntry, serde_json::Error>> {
    let h = format.header() as u64;
    let payload = r
        .bytes(offset + h, (next - offset - h) as usize)?
        .unwrap_or_default();
    Ok(serde_json::from_slice(payload))
}

/// The first offset at or after `from` holding the magic.
fn find_magic(r: &mut Reader<'_>, from: u64) -> std::io::Result<Option<u64>> {
    let mut at = from;
    while at + MAGIC.len() as u64 <= r.size {
        let n = (r.size - at).min(WINDOW as u64) as usize;
        let Some(chunk) = r.bytes(at, n)? else {
            return Ok(None);
        };
        if let Some(i) = memchr::memmem::find(chunk, &MAGIC) {
            return Ok(Some(at + i as u64));
        }
        // The magic may straddle two windows.
        at += (n - (MAGIC.len() - 1)) as u64;
    }
    Ok(None)
}

/// The first offset at or after `from` where a valid record starts.
fn next_valid(r: &mut Reader<'_>, format: Format, from: u64) -> std::io::Result<Option<u64>> {
    let mut at = from;
    loop {
        let candidate = match format {
            Format::Framed => match find_magic(r, at)? {
                Some(p) => p,
                None => return Ok(None),
            },
            // No magic: any offset may start a record.
            Format::Legacy if at < r.size => at,
            Format::Legacy => return Ok(None),
        };
        if record_at(r, format, candidate)?.is_some() {
            return Ok(Some(candidate));
        }
        at = candidate + 1;
    }
}

/// An unreadable byte range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Unreadable {
    start: u64,
    end: u64,
    /// At the end of the file, the beginning of a record cut short (or zeros): a crash during
    /// an append, never answered.
    torn: bool,
}

/// What a scan found.
#[derive(Debug)]
struct Scan {
    format: Format,
    /// Valid records.
    records: u64,
    /// Unreadable ranges, in order.
    bad: Vec<Unreadable>,
}

/// Scans the first `size` bytes of a journal file.
fn scan(file: &File, size: u64) -> std::io::Result<Scan> {
    let mut r = Reader::new(file, size);
    if size == 0 || r.bytes(0, MAGIC.len())? == Some(&MAGIC[..]) {
        return scan_as(&mut r, Format::Framed);
    }
    if record_at(&mut r, Format::Legacy, 0)?.is_some() {
        return scan_as(&mut r, Format::Legacy);
    }
    // A damaged first record: read it the way that keeps more.
    let framed = scan_as(&mut r, Format::Framed)?;
    let legacy = scan_as(&mut r, Format::Legacy)?;
    Ok(if legacy.records > framed.records {
        legacy
    } else {
        framed
    })
}

fn scan_as(r: &mut Reader<'_>, format: Format) -> std::io::Result<Scan> {
    let size = r.size;
    let mut offset = 0;
    let mut records = 0;
    let mut bad = Vec::new();
    while offset < size {
        if let Some(next) = record_at(r, format, offset)? {
            records += 1;
            offset = next;
            continue;
        }
        match next_valid(r, format, offset + 1)? {
            Some(resume) => {
                bad.push(Unreadable {
                    start: offset,
                    end: resume,
                    torn: false,
                });
                offset = resume;
            }
            None => {
                let torn = looks_torn(r, format, offset)?;
                bad.push(Unreadable {
                    start: offset,
                    end: size,
                    torn,
                });
                offset = size;
            }
        }
    }
    Ok(Scan {
        format,
        records,
        bad,
    })
}

/// Whether the unreadable range from `start` to the end is what a crash during an append
/// leaves: the beginning of one record whose length runs past the end, or zeros (space the
/// file system allocated before the data reached the disk).
fn looks_torn(r: &mut Reader<'_>, format: Format, start: u64) -> std::io::Result<bool> {
    let size = r.size;
    let h = format.header();
    let n = (size - start) as usize;
    let Some(head) = r.bytes(start, n.min(h))? else {
        return Ok(false);
    };
    let header_fits = match format {
        Format::Framed => {
            let m = head.len().min(MAGIC.len());
            head[..m] == MAGIC[..m]
                && (head.len() < h || {
                    let len = le32(&head[4..8]);
                    len != 0 && len <= MAX_RECORD && start + (h as u64) + u64::from(len) > size
                })
        }
        Format::Legacy => {
            head.len() < h || {
                let len = le32(&head[0..4]);
                len != 0 && len <= MAX_RECORD && start + (h as u64) + u64::from(len) > size
            }
        }
    };
    if header_fits {
        return Ok(true);
    }
    let mut at = start;
    while at < size {
        let k = (size - at).min(WINDOW as u64) as usize;
        match r.bytes(at, k)? {
            Some(chunk) if chunk.iter().all(|b| *b == 0) => at += k as u64,
            _ => return Ok(false),
        }
    }
    Ok(true)
}

/// Appends each unreadable range of `file` to `<journal>.corrupt` and fsyncs it.
fn save_unreadable(path: &Path, file: &File, bad: &[Unreadable]) -> std::io::Result<()> {
    let side = corrupt_path(path);
    let created = !side.exists();
    let mut out = OpenOptions::new().append(true).create(true).open(&side)?;
    let found = crate::clock::now_secs();
    for b in bad {
        let mut bytes = vec![0u8; (b.end - b.start) as usize];
        file.read_exact_at(&mut bytes, b.start)?;
        let mut chunk = format!(
            "radacctd-journal-unreadable offset={} length={} kind={} found={found} journal={}\n",
            b.start,
            bytes.len(),
            if b.torn { "torn" } else { "corrupt" },
            path.display()
        )
        .into_bytes();
        chunk.extend_from_slice(&bytes);
        chunk.push(b'\n');
        out.write_all(&chunk)?;
    }
    out.sync_all()?;
    if created {
        sync_dir(&side)?;
    }
    Ok(())
}

/// Writes the valid records of `file` in the current format to a temporary file, fsyncs it,
/// renames it over the journal and fsyncs the directory; returns the new journal's handle.
fn rewrite(path: &Path, file: &File, scan: &Scan) -> std::io::Result<File> {
    let size = file.metadata()?.len();
    let tmp = with_suffix(path, ".rewrite");
    let mut out = BufWriter::new(
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?,
    );
    let mut r = Reader::new(file, size);
    let h = scan.format.header() as u64;
    let mut bad = scan.bad.iter().peekable();
    let mut offset = 0;
    let mut buf = Vec::new();
    while offset < size {
        if let Some(b) = bad.next_if(|b| b.start == offset) {
            offset = b.end;
            continue;
        }
        let Some(next) = record_at(&mut r, scan.format, offset)? else {
            return Err(std::io::Error::other(format!(
                "journal changed while it was being rewritten (offset {offset})"
            )));
        };
        let payload = r
            .bytes(offset + h, (next - offset - h) as usize)?
            .unwrap_or_default();
        buf.clear();
        frame(&mut buf, payload);
        out.write_all(&buf)?;
        offset = next;
    }
    let out = out.into_inner().map_err(|e| e.into_error())?;
    out.sync_all()?;
    drop(out);
    std::fs::rename(&tmp, path)?;
    sync_dir(path)?;
    open_rw(path)
}

/// What [`read_file`] found besides the entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileSummary {
    /// Valid records (entries, including any whose payload is not an entry).
    pub records: u64,
    /// Unreadable ranges (offset, length, torn tail or not).
    pub unreadable: Vec<(u64, u64, bool)>,
    /// In the format of earlier versions (rewritten when the daemon next opens it).
    pub legacy: bool,
}

/// Reads a journal file without changing it (`radacctd journal inspect`, safe while the daemon
/// appends): calls `each` with every record's offset and entry, in order.
pub fn read_file(
    path: &Path,
    mut each: impl FnMut(u64, Result<JournalEntry, serde_json::Error>),
) -> std::io::Result<FileSummary> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    let scan = scan(&file, size)?;
    let mut r = Reader::new(&file, size);
    let mut bad = scan.bad.iter().peekable();
    let mut offset = 0;
    while offset < size {
        if let Some(b) = bad.next_if(|b| b.start == offset) {
            offset = b.end;
            continue;
        }
        let Some(next) = record_at(&mut r, scan.format, offset)? else {
            break;
        };
        each(offset, decode(&mut r, scan.format, offset, next)?);
        offset = next;
    }
    Ok(FileSummary {
        records: scan.records,
        unreadable: scan
            .bad
            .iter()
            .map(|b| (b.start, b.end - b.start, b.torn))
            .collect(),
        legacy: scan.format == Format::Legacy && size > 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(n: i64) -> JournalEntry {
        JournalEntry::Close {
            acctuniqueid: format!("k{n}"),
            stop_time: n,
            cause: "Admin-Reset".into(),
            if_updated_before: None,
            action: None,
        }
    }

    /// The file `entries` make in the current format, and each record's byte range.
    fn framed(entries: &[JournalEntry]) -> (Vec<u8>, Vec<std::ops::Range<usize>>) {
        let mut buf = Vec::new();
        let mut ranges = Vec::new();
        for e in entries {
            let start = buf.len();
            frame(&mut buf, &serde_json::to_vec(e).expect("json"));
            ranges.push(start..buf.len());
        }
        (buf, ranges)
    }

    /// The file `entries` make in the earlier format (`length | crc32 | payload`).
    fn legacy(entries: &[JournalEntry]) -> Vec<u8> {
        let mut buf = Vec::new();
        for e in entries {
            let payload = serde_json::to_vec(e).expect("json");
            buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            buf.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            buf.extend_from_slice(&payload);
        }
        buf
    }

    /// The side file's entries: (header line, bytes).
    fn side_entries(journal: &Path) -> Vec<(String, Vec<u8>)> {
        let bytes = std::fs::read(corrupt_path(journal)).unwrap_or_default();
        let mut out = Vec::new();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let nl = rest.iter().position(|b| *b == b'\n').expect("header line");
            let header = String::from_utf8(rest[..nl].to_vec()).expect("utf-8 header");
            let length: usize = header
                .split(' ')
                .find_map(|f| f.strip_prefix("length="))
                .expect("length")
                .parse()
                .expect("number");
            let body = rest[nl + 1..nl + 1 + length].to_vec();
            assert_eq!(rest[nl + 1 + length], b'\n');
            rest = &rest[nl + 2 + length..];
            out.push((header, body));
        }
        out
    }

    fn without(all: &[JournalEntry], lost: &[usize]) -> Vec<JournalEntry> {
        all.iter()
            .enumerate()
            .filter(|(i, _)| !lost.contains(i))
            .map(|(_, e)| e.clone())
            .collect()
    }

    #[test]
    fn append_replay_truncate() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("j");
        let mut j = Journal::open(&path, 1 << 20).expect("open");
        j.append(&[close(1), close(2)]).expect("append");
        j.append(&[close(3)]).expect("append");
        assert_eq!(j.pending(), 3);
        let first = j.read_pending(2).expect("read");
        assert_eq!(
            first.iter().map(|(e, _)| e.clone()).collect::<Vec<_>>(),
            vec![close(1), close(2)]
        );
        j.mark_replayed(first[1].1, 2);
        assert_eq!(j.pending(), 1);
        let rest = j.read_pending(10).expect("read");
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].0, close(3));
        j.mark_replayed(rest[0].1, 1);
        assert!(j.is_empty());
        j.truncate().expect("truncate");
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), 0);
    }

    #[test]
    fn records_are_framed_with_magic_length_and_a_crc_over_both() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("j");
        let mut j = Journal::open(&path, 1 << 20).expect("open");
        j.append(&[close(1)]).expect("append");
        let bytes = std::fs::read(&path).expect("read");
        let payload = serde_json::to_vec(&close(1)).expect("json");
        assert_eq!(bytes[..4], [0xFE, b'R', b'J', b'1']);
        assert_eq!(bytes[4..8], (payload.len() as u32).to_le_bytes());
        let mut covered = bytes[4..8].to_vec();
        covered.extend_from_slice(&payload);
        assert_eq!(bytes[8..12], crc32fast::hash(&covered).to_le_bytes());
        assert_eq!(bytes[12..], payload[..]);
    }

    #[test]
    fn replay_reads_through_the_open_handle() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("j");
        let mut j = Journal::open(&path, 1 << 20).expect("open");
        j.append(&[close(1), close(2)]).expect("append");
        // Opening the path again would fail now (as it does at the descriptor limit).
        std::fs::rename(&path, dir.path().join("moved")).expect("rename");
        assert_eq!(j.all_pending().expect("read"), vec![close(1), close(2)]);
        j.append(&[close(3)]).expect("append");
        assert_eq!(j.read_pending(10).expect("read").len(), 3);
    }

    #[test]
    fn reopening_finds_pending_entries_and_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("j");
        {
            let mut j = Journal::open(&path, 1 << 20).expect("open");
            j.append(&[close(1), close(2)]).expect("append");
        }
        let good = std::fs::metadata(&path).expect("meta").len();
        // A crash in the middle of the next append: the beginning of a 40-byte record.
        let torn = [0xFE, b'R', b'J', b'1', 40, 0, 0, 0, 1, 2, 3, 4, b'{'];
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(&torn).expect("write");
        drop(f);
        let mut j = Journal::open(&path, 1 << 20).expect("reopen");
        assert_eq!(j.pending(), 2);
        assert_eq!(j.bytes(), good);
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), good);
        assert_eq!(j.all_pending().expect("read"), vec![close(1), close(2)]);
        // Copied before the cut, and not counted as corruption.
        let side = side_entries(&path);
        assert_eq!(side.len(), 1);
        assert_eq!(side[0].1, torn);
        assert!(
            side[0].0.contains(&format!("offset={good} ")),
            "{}",
            side[0].0
        );
        assert!(side[0].0.contains("kind=torn"), "{}", side[0].0);
        assert_eq!(j.health().corrupt_regions, 0);
        // Appending after the cut works.
        j.append(&[close(3)]).expect("append");
        assert_eq!(j.all_pending().expect("read").len(), 3);
    }

    #[test]
    fn a_tail_of_zeros_is_a_torn_append() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("j");
        let (mut bytes, _) = framed(&[close(1)]);
        let good = bytes.len() as u64;
        bytes.extend_from_slice(&[0; 300]);
        std::fs::write(&path, &bytes).expect("write");
        let mut j = Journal::open(&path, 1 << 20).expect("open");
        assert_eq!(j.all_pending().expect("read"), vec![close(1)]);
        assert_eq!(j.bytes(), good);
        assert_eq!(j.health().corrupt_regions, 0);
        assert_eq!(side_entries(&path)[0].1, vec![0; 300]);
    }

    #[test]
    fn a_damaged_last_record_is_corruption_kept_in_the_side_file() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("j");
        let (mut bytes, ranges) = framed(&[close(1), close(2)]);
        let last = bytes.len() - 2;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).expect("write");
        let mut j = Journal::open(&path, 1 << 20).expect("reopen");
        assert_eq!(j.all_pending().expect("read"), vec![close(1)]);
        let side = side_entries(&path);
        assert_eq!(side.len(), 1);
        assert!(side[0].0.contains("kind=corrupt"), "{}", side[0].0);
        assert_eq!(side[0].1, bytes[ranges[1].clone()]);
        let h = j.health();
        assert_eq!(h.corrupt_regions, 1);
        assert_eq!(h.corrupt_bytes, ranges[1].len() as u64);
    }

    #[test]
    fn one_flipped_byte_in_15000_entries_loses_only_its_record() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("j");
        let all: Vec<_> = (0..15_000).map(close).collect();
        {
            let mut j = Journal::open(&path, 1 << 30).expect("open");
            for chunk in all.chunks(100) {
                j.append(chunk).expect("append");
            }
        }
        let original = std::fs::read(&path).expect("read");
        let (expected, ranges) = framed(&all);
        assert_eq!(original, expected);
        let mut bytes = original.clone();
        let at = bytes.len() / 10;
        bytes[at] ^= 0x01;
        std::fs::write(&path, &bytes).expect("write");
        let hit = ranges.iter().position(|r| r.contains(&at)).expect("hit");

        let mut j = Journal::open(&path, 1 << 30).expect("reopen");
        assert_eq!(j.pending(), 14_999);
        assert_eq!(j.all_pending().expect("read"), without(&all, &[hit]));
        let side = side_entries(&path);
        assert_eq!(side.len(), 1);
        assert_eq!(side[0].1, bytes[ranges[hit].clone()], "the damaged record");
        assert!(
            side[0]
                .0
                .contains(&format!("offset={} ", ranges[hit].start)),
            "{}",
            side[0].0
        );
        assert_eq!(
            j.health(),
            JournalHealth {
                corrupt_regions: 1,
                corrupt_bytes: ranges[hit].len() as u64,
                ..JournalHealth::default()
            }
        );
        // Rewritten without the bad record: opening again finds nothing wrong.
        let mut rewritten = original[..ranges[hit].start].to_vec();
        rewritten.extend_from_slice(&original[ranges[hit].end..]);
        assert_eq!(std::fs::read(&path).expect("read"), rewritten);
        drop(j);
        let mut j = Journal::open(&path, 1 << 30).expect("reopen");
        assert_eq!(j.pending(), 14_999);
        assert_eq!(j.health().corrupt_regions, 0);
        assert_eq!(side_entries(&path).len(), 1);
    }

    #[test]
    fn two_corrupt_regions_lose_only_their_records() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("j");
        let all: Vec<_> = (0..1000).map(close).collect();
        let (mut bytes, ranges) = framed(&all);
        // A length byte in one record, a payload byte in another.
        bytes[ranges[200].start + 5] ^= 0x40;
        bytes[ranges[700].start + 20] ^= 0x01;
        std::fs::write(&path, &bytes).expect("write");
        let mut j = Journal::open(&path, 1 << 30).expect("open");
        assert_eq!(j.all_pending().expect("read"), without(&all, &[200, 700]));
        let side = side_entries(&path);
        assert_eq!(
            side.iter().map(|(_, b)| b.clone()).collect::<Vec<_>>(),
            vec![
                bytes[ranges[200].clone()].to_vec(),
                bytes[ranges[700].clone()].to_vec()
            ]
        );
        let h = j.health();
        assert_eq!(h.corrupt_regions, 2);
        assert_eq!(
            h.corrupt_bytes,
            (ranges[200].len() + ranges[700].len()) as u64
        );
    }

    #[test]
    fn corruption_in_the_first_record_keeps_the_rest() {
        for damaged in [0, 7, 20] {
            let dir = tempfile::tempdir().expect("dir");
            let path = dir.path().join("j");
            let all: Vec<_> = (0..50).map(close).collect();
            let (mut bytes, ranges) = framed(&all);
            // The magic, the length, the payload.
            bytes[damaged] ^= 0x10;
            std::fs::write(&path, &bytes).expect("write");
            let mut j = Journal::open(&path, 1 << 20).expect("open");
            assert_eq!(
                j.all_pending().expect("read"),
                without(&all, &[0]),
                "byte {damaged}"
            );
            assert_eq!(side_entries(&path)[0].1, bytes[ranges[0].clone()]);
            assert_eq!(j.health().corrupt_regions, 1);
            assert_eq!(std::fs::read(&path).expect("read")[..4], MAGIC);
        }
    }

    #[test]
    fn garbage_that_contains_the_magic_is_skipped() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("j");
        let all: Vec<_> = (0..20).map(close).collect();
        let (good, ranges) = framed(&all);
        // Between records 9 and 10: the magic with a sane length and a wrong CRC, the magic
        // with an absurd length, the magic cut short, and a record's header over bytes it does
        // not cover.
        let mut garbage = Vec::new();
        garbage.extend_from_slice(&MAGIC);
        garbage.extend_from_slice(&10u32.to_le_bytes());
        garbage.extend_from_slice(&[1, 2, 3, 4]);
        garbage.extend_from_slice(b"0123456789");
        garbage.extend_from_slice(&MAGIC);
        garbage.extend_from_slice(&u32::MAX.to_le_bytes());
        garbage.extend_from_slice(&MAGIC[..3]);
        garbage.extend_from_slice(&good[ranges[3].start..ranges[3].start + 12]);
        garbage.extend_from_slice(b"not the payload");
        let mut bytes = good[..ranges[10].start].to_vec();
        bytes.extend_from_slice(&garbage);
        bytes.extend_from_slice(&good[ranges[10].start..]);
        std::fs::write(&path, &bytes).expect("write");
        let mut j = Journal::open(&path, 1 << 20).expect("open");
        assert_eq!(j.all_pending().expect("read"), all);
        assert_eq!(side_entries(&path)[0].1, garbage);
        assert_eq!(j.health().corrupt_bytes, garbage.len() as u64);
        assert_eq!(std::fs::read(&path).expect("read"), good);
    }

    #[test]
    fn a_journal_in_the_earlier_format_is_read_and_rewritten() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("j");
        let all: Vec<_> = (0..300).map(close).collect();
        std::fs::write(&path, legacy(&all)).expect("write");
        let mut j = Journal::open(&path, 1 << 30).expect("open");
        assert_eq!(j.pending(), 300);
        assert_eq!(j.all_pending().expect("read"), all);
        assert_eq!(std::fs::read(&path).expect("read"), framed(&all).0);
        assert!(!corrupt_path(&path).exists());
        j.append(&[close(300)]).expect("append");
        assert_eq!(j.pending(), 301);
    }

    #[test]
    fn a_damaged_record_in_the_earlier_format_loses_only_itself() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("j");
        let all: Vec<_> = (0..100).map(close).collect();
        let mut bytes = legacy(&all);
        let one = bytes.len() / 100;
        // Every record has the same length here: damage record 40's payload, and the first
        // record's length.
        bytes[40 * one + 30] ^= 0x02;
        bytes[1] ^= 0x01;
        std::fs::write(&path, &bytes).expect("write");
        let mut j = Journal::open(&path, 1 << 30).expect("open");
        assert_eq!(j.all_pending().expect("read"), without(&all, &[0, 40]));
        assert_eq!(j.health().corrupt_regions, 2);
        assert_eq!(
            std::fs::read(&path).expect("read"),
            framed(&without(&all, &[0, 40])).0
        );
    }

    #[test]
    fn read_file_changes_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("j");
        let (mut bytes, ranges) = framed(&[close(1), close(2), close(3)]);
        bytes[ranges[1].start + 14] ^= 0x01;
        bytes.extend_from_slice(&MAGIC[..2]);
        std::fs::write(&path, &bytes).expect("write");
        let mut seen = Vec::new();
        let summary =
            read_file(&path, |offset, e| seen.push((offset, e.expect("entry")))).expect("read");
        assert_eq!(
            seen,
            vec![
                (ranges[0].start as u64, close(1)),
                (ranges[2].start as u64, close(3))
            ]
        );
        assert_eq!(summary.records, 2);
        assert_eq!(
            summary.unreadable,
            vec![
                (ranges[1].start as u64, ranges[1].len() as u64, false),
                (ranges[2].end as u64, 2, true)
            ]
        );
        assert_eq!(std::fs::read(&path).expect("read"), bytes);
        assert!(!corrupt_path(&path).exists());
    }

    #[test]
    fn rejected_entries_are_counted() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("j");
        let mut j = Journal::open(&path, 1 << 20).expect("open");
        assert_eq!(j.health(), JournalHealth::default());
        j.reject(&close(1), "boom").expect("reject");
        j.reject(&close(2), "boom").expect("reject");
        let h = j.health();
        assert_eq!((h.rejected, h.rejected_entries), (2, 2));
        let lines = std::fs::read_to_string(rejected_path(&path)).expect("read");
        let first: serde_json::Value =
            serde_json::from_str(lines.lines().next().expect("line")).expect("json");
        assert_eq!(first["reason"], "boom");
        assert_eq!(
            serde_json::from_value::<JournalEntry>(first["entry"].clone()).expect("entry"),
            close(1)
        );
        // Another process empties the file: the gauge follows, the counter does not.
        std::fs::write(rejected_path(&path), "").expect("write");
        let h = j.health();
        assert_eq!((h.rejected, h.rejected_entries), (2, 0));
    }

    #[test]
    fn the_cap_refuses_appends_without_writing() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("j");
        let mut j = Journal::open(&path, 150).expect("open");
        j.append(&[close(1)]).expect("fits");
        let size = j.bytes();
        assert!(matches!(
            j.append(&[close(2), close(3)]),
            Err(JournalError::Full { .. })
        ));
        assert_eq!(j.bytes(), size);
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), size);
    }
}
