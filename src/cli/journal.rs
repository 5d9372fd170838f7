//! `radacctd journal inspect [--rejected]` and `radacctd journal retry`: what the journal and
//! its rejected file hold, and a second attempt at the entries replay gave up on. Both are safe
//! while the daemon runs: neither changes the live journal file (`inspect` only reads it;
//! `retry` reads and replaces `<journal>.rejected` under its lock and writes to the database).

use std::io::{Read, Write};
use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

use crate::config::Config;
use crate::ingest::journal::{self, JournalEntry};
use crate::ingest::replay_entry;

/// What `radacctd journal` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalAction {
    /// Print the journal's entries, or (`rejected`) the rejected file's.
    Inspect { rejected: bool },
    /// Apply the rejected entries again; keep only those that still fail.
    Retry,
}

/// Runs `radacctd journal …`, printing to stdout. `retry` fails (exit status 1) when entries
/// remain in the rejected file.
pub async fn journal_command(config: Config, action: JournalAction) -> anyhow::Result<()> {
    let mut out = std::io::stdout();
    let path = config.journal.path.clone();
    match action {
        JournalAction::Inspect { rejected: false } => inspect(&path, &mut out).map(|_| ()),
        JournalAction::Inspect { rejected: true } => inspect_rejected(&path, &mut out).map(|_| ()),
        JournalAction::Retry => {
            let report = retry(&config, &mut out).await?;
            if report.remaining > 0 {
                anyhow::bail!(
                    "{} entr{} left in {}",
                    report.remaining,
                    plural(report.remaining),
                    journal::rejected_path(&path).display()
                );
            }
            Ok(())
        }
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "y" } else { "ies" }
}

fn format_time(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| t.to_string())
}

/// One entry on one line: key, kind, time, and who.
pub fn describe(e: &JournalEntry) -> String {
    match e {
        JournalEntry::Event(ev) => format!(
            "key={} kind={} time={} user={:?} nas={}",
            ev.acctuniqueid,
            ev.kind.as_str(),
            format_time(ev.time),
            ev.username,
            ev.nasipaddress
        ),
        JournalEntry::Close {
            acctuniqueid,
            stop_time,
            cause,
            ..
        } => format!(
            "key={acctuniqueid} kind=close time={} cause={cause:?}",
            format_time(*stop_time)
        ),
    }
}

/// Prints every entry of the journal file at `path` and a count; returns the count. The file
/// is only read (a record being appended right now shows as an unreadable tail).
pub fn inspect(path: &Path, out: &mut dyn Write) -> anyhow::Result<u64> {
    if !path.exists() {
        writeln!(out, "0 entries: no journal at {}", path.display())?;
        return Ok(0);
    }
    let mut printed = Ok(());
    let mut entries = 0;
    let summary = journal::read_file(path, |offset, entry| {
        entries += 1;
        let line = match entry {
            Ok(e) => writeln!(out, "offset={offset} {}", describe(&e)),
            Err(e) => writeln!(out, "offset={offset} not an entry: {e}"),
        };
        if printed.is_ok() {
            printed = line;
        }
    })
    .with_context(|| format!("reading {}", path.display()))?;
    printed?;
    for (offset, length, torn) in &summary.unreadable {
        let what = if *torn {
            "the beginning of a record (an append in progress, or a torn tail the daemon cuts off)"
        } else {
            "corrupt; the daemon copies it to <journal>.corrupt and drops it when it next opens the journal"
        };
        writeln!(out, "unreadable: {length} bytes at offset {offset}: {what}")?;
    }
    if summary.legacy {
        writeln!(
            out,
            "(earlier format: the daemon rewrites it when it next opens the journal)"
        )?;
    }
    writeln!(
        out,
        "{entries} entr{} in {} (while the daemon replays, some may already be in the database; \
         the file is emptied once all are)",
        plural(entries),
        path.display()
    )?;
    Ok(entries)
}

/// A line of `<journal>.rejected`.
#[derive(Debug, Deserialize)]
struct Rejected {
    reason: String,
    entry: JournalEntry,
}

/// The lines of a rejected file (without their newlines; blank lines left out).
fn lines(bytes: &[u8]) -> Vec<&[u8]> {
    bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .collect()
}

/// Prints every entry of `<journal>.rejected` with its reason and a count; returns the count.
pub fn inspect_rejected(journal_path: &Path, out: &mut dyn Write) -> anyhow::Result<u64> {
    let path = journal::rejected_path(journal_path);
    let bytes = match std::fs::File::open(&path) {
        Ok(f) => {
            f.lock_shared()?;
            let mut bytes = Vec::new();
            (&f).read_to_end(&mut bytes)?;
            bytes
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let lines = lines(&bytes);
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_slice::<Rejected>(line) {
            Ok(r) => writeln!(out, "{} reason={:?}", describe(&r.entry), r.reason)?,
            Err(e) => writeln!(out, "line {}: not a rejected entry: {e}", i + 1)?,
        }
    }
    let n = lines.len() as u64;
    writeln!(
        out,
        "{n} rejected entr{} in {} (answered, not in the database)",
        plural(n),
        path.display()
    )?;
    Ok(n)
}

/// What `retry` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryReport {
    /// Applied to the database and removed from the rejected file.
    pub applied: u64,
    /// Failed again; kept with the new error.
    pub failed: u64,
    /// Not tried: the database became unavailable.
    pub untried: u64,
    /// Lines that are not rejected entries; kept as they are.
    pub unreadable: u64,
    /// Lines in the rejected file afterwards.
    pub remaining: u64,
}

/// What became of one line.
enum Fate {
    Applied,
    Failed(String),
    Kept,
}

/// Applies each entry of `<journal>.rejected` to the database, one by one, through the replay
/// path; removes those that succeed, keeps the others (with their new error). Entries rejected
/// by the daemon meanwhile are kept as they are.
pub async fn retry(config: &Config, out: &mut dyn Write) -> anyhow::Result<RetryReport> {
    let path = journal::rejected_path(&config.journal.path);
    let snapshot = match journal::lock_rejected(&path, false)? {
        Some(f) => {
            let mut bytes = Vec::new();
            (&f).read_to_end(&mut bytes)?;
            bytes
        }
        None => Vec::new(),
    };
    let lines = lines(&snapshot);
    let mut report = RetryReport::default();
    if lines.is_empty() {
        writeln!(out, "no rejected entries in {}", path.display())?;
        return Ok(report);
    }
    let store = crate::app::open_store(config, None).await?;
    let mut fates = Vec::with_capacity(lines.len());
    let mut outage = None;
    for line in &lines {
        let Ok(r) = serde_json::from_slice::<Rejected>(line) else {
            report.unreadable += 1;
            fates.push(Fate::Kept);
            continue;
        };
        if outage.is_some() {
            report.untried += 1;
            fates.push(Fate::Kept);
            continue;
        }
        let events = crate::app::writer_options(config).events;
        match replay_entry(&store, &r.entry, config.commit_timeout(), events).await {
            Ok(()) => {
                writeln!(out, "applied      {}", describe(&r.entry))?;
                report.applied += 1;
                fates.push(Fate::Applied);
            }
            Err(e) if e.is_outage() => {
                writeln!(out, "not tried    {}: {e}", describe(&r.entry))?;
                outage = Some(e);
                report.untried += 1;
                fates.push(Fate::Kept);
            }
            Err(e) => {
                writeln!(out, "still fails  {}: {e}", describe(&r.entry))?;
                report.failed += 1;
                fates.push(Fate::Failed(e.to_string()));
            }
        }
    }
    store.close().await;

    let mut kept = Vec::with_capacity(snapshot.len());
    for (line, fate) in lines.iter().zip(&fates) {
        match fate {
            Fate::Applied => {}
            Fate::Failed(reason) => {
                let r: Rejected = serde_json::from_slice(line)?;
                kept.extend_from_slice(&journal::rejected_line(&r.entry, reason)?);
            }
            Fate::Kept => {
                kept.extend_from_slice(line);
                kept.push(b'\n');
            }
        }
    }
    {
        let lock = journal::lock_rejected(&path, false)?;
        let mut now = Vec::new();
        if let Some(f) = &lock {
            (&*f).read_to_end(&mut now)?;
        }
        if lock.is_none() || !now.starts_with(&snapshot) {
            anyhow::bail!(
                "{} was changed by someone else during the retry; left as it is (entries \
                 applied now are applied again, without effect, by the next retry)",
                path.display()
            );
        }
        // Entries the daemon rejected meanwhile stay, after the others.
        kept.extend_from_slice(&now[snapshot.len()..]);
        journal::replace_file(&path, &kept)
            .with_context(|| format!("rewriting {}", path.display()))?;
        report.remaining = lines_count(&kept);
    }
    writeln!(
        out,
        "retried {} rejected entr{}: {} applied and removed, {} still failing (kept with the new \
         error), {} not tried (database unavailable), {} unreadable line(s) kept; {} left in {}",
        lines.len(),
        plural(lines.len() as u64),
        report.applied,
        report.failed,
        report.untried,
        report.unreadable,
        report.remaining,
        path.display()
    )?;
    if let Some(e) = outage {
        writeln!(out, "stopped: the database is unavailable ({e})")?;
    }
    Ok(report)
}

fn lines_count(bytes: &[u8]) -> u64 {
    lines(bytes).len() as u64
}
