//! The durable spool: an append-only local file of accepted changes that could not be committed
//! to the database (unreachable, a failed or too slow commit). An entry is answered only after
//! it is fsynced here; entries are replayed into the database in order, with the same
//! idempotent semantics, and the file is truncated once everything is in.
//!
//! Format: records of `length: u32 LE | crc32: u32 LE | payload (JSON)`. A torn or corrupt tail
//! (a crash in the middle of an append) is cut off when the file is opened; everything before
//! it was fsynced and answered, everything after it was never answered.
//!
//! All methods do blocking file I/O: call them from `spawn_blocking` (the writer does).

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::radius::accounting::AccountingEvent;

/// One journaled change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JournalEntry {
    Event(Box<AccountingEvent>),
    /// A close decided by radacctd (disconnect) with a known stop time.
    Close {
        acctuniqueid: String,
        stop_time: i64,
        cause: String,
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

const HEADER: usize = 8;
/// A record larger than this is corruption, not data (an event is a few hundred bytes).
const MAX_RECORD: u32 = 1 << 20;

/// The journal file and where replay has got to.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
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
}

impl Journal {
    /// Opens (or creates) the journal at `path`, cutting off a torn tail.
    pub fn open(path: &Path, cap: u64) -> std::io::Result<Journal> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        let (len, pending) = scan(&mut file)?;
        let actual = file.metadata()?.len();
        if actual != len {
            tracing::warn!(
                path = %path.display(),
                valid = len,
                found = actual,
                "journal had a torn or corrupt tail (a crash during an append); cutting it off"
            );
            file.set_len(len)?;
            file.sync_all()?;
        }
        Ok(Journal {
            path: path.to_owned(),
            file,
            len,
            replayed: 0,
            pending,
            cap,
            oldest_append: (pending > 0).then(crate::radius::listener::now_secs),
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

    /// Appends entries and fsyncs them (group commit): on `Ok` they survive a crash.
    pub fn append(&mut self, entries: &[JournalEntry]) -> Result<(), JournalError> {
        let mut buf = Vec::with_capacity(entries.len() * 512);
        for e in entries {
            let payload = serde_json::to_vec(e)?;
            buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            buf.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            buf.extend_from_slice(&payload);
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
            self.oldest_append = Some(crate::radius::listener::now_secs());
        }
        self.pending += entries.len() as u64;
        Ok(())
    }

    /// Up to `max` pending entries from the replay position, with the offset after each.
    pub fn read_pending(&mut self, max: usize) -> std::io::Result<Vec<(JournalEntry, u64)>> {
        let mut f = BufReader::new(File::open(&self.path)?);
        f.seek(SeekFrom::Start(self.replayed))?;
        let mut out = Vec::new();
        let mut offset = self.replayed;
        while out.len() < max && offset < self.len {
            let Some((payload, next)) = read_record(&mut f, offset)? else {
                break;
            };
            match serde_json::from_slice(&payload) {
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
    /// operator: nothing is thrown away).
    pub fn reject(&self, entry: &JournalEntry, reason: &str) -> std::io::Result<()> {
        let mut path = self.path.clone().into_os_string();
        path.push(".rejected");
        let mut f = OpenOptions::new().append(true).create(true).open(path)?;
        let line = serde_json::json!({ "reason": reason, "entry": entry });
        writeln!(f, "{line}")?;
        f.sync_data()
    }
}

/// Validates the file from the start; returns (bytes of valid records, record count).
fn scan(file: &mut File) -> std::io::Result<(u64, u64)> {
    file.seek(SeekFrom::Start(0))?;
    let mut f = BufReader::new(&mut *file);
    let mut offset = 0;
    let mut count = 0;
    while let Some((_, next)) = read_record(&mut f, offset)? {
        offset = next;
        count += 1;
    }
    Ok((offset, count))
}

/// Reads the record at `offset`; `None` at the end or at a torn/corrupt record.
fn read_record(f: &mut impl Read, offset: u64) -> std::io::Result<Option<(Vec<u8>, u64)>> {
    let mut header = [0u8; HEADER];
    if !read_full(f, &mut header)? {
        return Ok(None);
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len == 0 || len > MAX_RECORD {
        return Ok(None);
    }
    let mut payload = vec![0u8; len as usize];
    if !read_full(f, &mut payload)? || crc32fast::hash(&payload) != crc {
        return Ok(None);
    }
    Ok(Some((payload, offset + HEADER as u64 + u64::from(len))))
}

/// Fills `buf`; false when the input ends first.
fn read_full(f: &mut impl Read, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut done = 0;
    while done < buf.len() {
        match f.read(&mut buf[done..])? {
            0 => return Ok(false),
            n => done += n,
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(n: i64) -> JournalEntry {
        JournalEntry::Close {
            acctuniqueid: format!("k{n}"),
            stop_time: n,
            cause: "Admin-Reset".into(),
        }
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
    fn reopening_finds_pending_entries_and_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("j");
        {
            let mut j = Journal::open(&path, 1 << 20).expect("open");
            j.append(&[close(1), close(2)]).expect("append");
        }
        let good = std::fs::metadata(&path).expect("meta").len();
        // A crash in the middle of the next append: half a record.
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(&[40, 0, 0, 0, 1, 2, 3, 4, b'{'])
            .expect("write");
        drop(f);
        let mut j = Journal::open(&path, 1 << 20).expect("reopen");
        assert_eq!(j.pending(), 2);
        assert_eq!(j.bytes(), good);
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), good);
        assert_eq!(j.all_pending().expect("read"), vec![close(1), close(2)]);
        // Appending after the cut works.
        j.append(&[close(3)]).expect("append");
        assert_eq!(j.all_pending().expect("read").len(), 3);
    }

    #[test]
    fn a_corrupt_record_ends_the_valid_part() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("j");
        let mut j = Journal::open(&path, 1 << 20).expect("open");
        j.append(&[close(1), close(2)]).expect("append");
        drop(j);
        let mut bytes = std::fs::read(&path).expect("read");
        let last = bytes.len() - 2;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).expect("write");
        let mut j = Journal::open(&path, 1 << 20).expect("reopen");
        assert_eq!(j.all_pending().expect("read"), vec![close(1)]);
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
