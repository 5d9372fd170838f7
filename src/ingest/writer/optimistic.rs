//! PostgreSQL's write path without reads: each session's row from the live index when it holds
//! the row radacctd last wrote, new sessions inserted directly, one guarded statement; rows
//! another writer changed are redone under locks.

use foldhash::{HashMap, HashMapExt, HashSet};

use super::IndexChange;
use super::commit::{Outcome, commit_locked};
use super::events::Emit;
use super::fold::{fold, record, unique_keys};
use crate::ingest::Item;
use crate::radius::accounting::EventKind;
use crate::sessions::{
    Columns, INDEX_HELD, INDEX_KEPT_UNLESS_SET, Row, RowVersion, Session, SessionIndex,
};
use crate::store::{Store, StoreError};
use crate::usage;

/// Where the optimistic path takes a session's row from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// The live index: the row as radacctd last wrote it, with its version. Only for runs of
    /// Interim-Updates, Stops and closes (a Start would set `connectinfo_start`, which the
    /// index does not hold; it is rare on an open session).
    Index,
    /// None: the index has no open session with this key, and its items are Starts,
    /// Interim-Updates and Stops, which create a row when there is none. The insert finds out
    /// when there is one (`ON CONFLICT DO NOTHING`), and the key is redone under locks.
    New,
    /// Read from the table.
    Table,
}

impl Source {
    /// Its index in `Outcome::sources` (`metrics::ROW_SOURCES`).
    pub(super) fn metric(self) -> usize {
        match self {
            Source::Index => 0,
            Source::New => 1,
            Source::Table => SOURCE_READ,
        }
    }
}

/// Indexes into `Outcome::sources` (`metrics::ROW_SOURCES`) of the other two sources.
pub(super) const SOURCE_READ: usize = 2;
pub(super) const SOURCE_REDONE: usize = 3;

/// The sessions of a batch and where their rows come from.
pub(super) struct Sources<'a> {
    /// The keys, in first-seen order.
    pub(super) keys: Vec<&'a str>,
    pub(super) of: HashMap<&'a str, Source>,
    /// The index's sessions of the keys whose source is [`Source::Index`].
    pub(super) fed: Vec<(&'a str, Session)>,
}

/// The source of each key of `items`.
pub(super) fn sources<'a>(
    items: &[&'a Item],
    index: Option<&SessionIndex>,
    new_without_lookup: bool,
) -> Sources<'a> {
    let keys = unique_keys(items, 0..items.len());
    // Per key: whether every item allows the index as the source, and a new row; and whether
    // a close is followed by something else (a close followed by an Interim-Update can reopen
    // the row, a sweeper close, which clears columns the index does not hold: the index-fed
    // update could only keep them).
    #[derive(Clone, Copy)]
    struct Allowed {
        from_index: bool,
        new: bool,
        closed: bool,
        after_close: bool,
    }
    let mut allowed: HashMap<&str, Allowed> = HashMap::with_capacity(keys.len());
    for item in items {
        let (from_index, new) = match item {
            Item::Event { event, .. } => match event.kind {
                EventKind::InterimUpdate | EventKind::Stop => (true, true),
                EventKind::Start => (false, true),
                EventKind::AccountingOn | EventKind::AccountingOff => (false, false),
            },
            Item::Close(_) => (true, false),
            Item::Reconcile(_) => (false, false),
        };
        let a = allowed.entry(item.key()).or_insert(Allowed {
            from_index: true,
            new: true,
            closed: false,
            after_close: false,
        });
        a.from_index &= from_index;
        a.new &= new;
        a.after_close |= a.closed;
        a.closed |= matches!(item, Item::Close(_));
    }
    let mut out = HashMap::with_capacity(keys.len());
    let mut fed = Vec::new();
    for k in &keys {
        let a = allowed[k];
        let (from_index, new) = (a.from_index && !a.after_close, a.new);
        let source = match index {
            None => Source::Table,
            Some(ix) => match ix.get(k) {
                Some(s)
                    if from_index
                        && s.radacctid.is_some()
                        && s.row_version.is_some()
                        && (s.acctstarttime.is_some() || s.acctupdatetime.is_some()) =>
                {
                    fed.push((*k, s));
                    Source::Index
                }
                None if new && new_without_lookup => Source::New,
                _ => Source::Table,
            },
        };
        out.insert(*k, source);
    }
    Sources { keys, of: out, fed }
}

/// Without locks: each session's row comes from the index when it holds the row radacctd last
/// wrote, is assumed absent when the index has no open session with its key and its events
/// would create one, and is read from the table otherwise (see [`Source`]). Then fold, and one
/// statement inserts the new rows and updates the changed ones, each only where its row
/// version (`xmin`) is still the one known; the same statement checks the version of index-fed
/// sessions whose events changed nothing. Rows another writer changed, and keys that turned
/// out to exist, are redone under locks. In steady state (Interim-Updates and Stops of open
/// sessions, Starts of new ones) a batch is one statement and reads nothing.
pub(super) async fn commit_optimistic(
    pg: &crate::store::PgStore,
    store: &Store,
    index: Option<&SessionIndex>,
    items: &[&Item],
    deadline: tokio::time::Instant,
    emit: Emit,
) -> Result<Outcome, StoreError> {
    let new_without_lookup = index.is_some() && pg.key_is_unique().await?;
    let StartingRows {
        sources,
        rows,
        versions,
        fed,
    } = starting_rows(pg, items, index, new_without_lookup).await?;
    let mut out = Outcome::new(items.len());
    for source in sources.values() {
        out.sources[source.metric()] += 1;
    }
    let mut unchanged = vec![false; items.len()];
    let written = Guarded {
        rows,
        versions: &versions,
        fed: &fed,
    };
    let redo = written
        .fold_and_write(pg, items, &mut out, &mut unchanged, emit)
        .await?;
    if redo.is_empty() {
        out.unchanged = unchanged.iter().filter(|u| **u).count() as u64;
        return Ok(out);
    }
    let redo = Redo {
        keys: redo,
        sources: &sources,
        deadline,
        emit,
    };
    redo.under_locks(store, items, out, unchanged).await
}

/// The rows a batch's events fold over, by session: the index's copy (with the version the
/// index vouches for), the row read from the table (with its version), or none (a new
/// session).
struct StartingRows<'a> {
    sources: HashMap<&'a str, Source>,
    rows: HashMap<String, Row>,
    versions: HashMap<String, RowVersion>,
    /// The index-fed rows as they were before folding.
    fed: HashMap<String, Row>,
}

async fn starting_rows<'a>(
    pg: &crate::store::PgStore,
    items: &[&'a Item],
    index: Option<&SessionIndex>,
    new_without_lookup: bool,
) -> Result<StartingRows<'a>, StoreError> {
    let Sources {
        keys,
        of: sources,
        fed: fed_sessions,
    } = sources(items, index, new_without_lookup);
    let mut rows: HashMap<String, Row> = HashMap::with_capacity(keys.len());
    let mut versions: HashMap<String, RowVersion> = HashMap::with_capacity(keys.len());
    let mut fed: HashMap<String, Row> = HashMap::with_capacity(fed_sessions.len());
    for (k, session) in fed_sessions {
        let row = session.to_row();
        if let Some(v) = session.row_version {
            versions.insert(k.to_owned(), v);
        }
        rows.insert(k.to_owned(), row.clone());
        fed.insert(k.to_owned(), row);
    }
    let lookup: Vec<&str> = keys
        .iter()
        .copied()
        .filter(|k| sources[k] == Source::Table)
        .collect();
    if !lookup.is_empty() {
        let (loaded, loaded_versions) = pg.load_versions(&lookup).await?;
        rows.extend(loaded);
        versions.extend(loaded_versions);
    }
    Ok(StartingRows {
        sources,
        rows,
        versions,
        fed,
    })
}

/// The starting rows of a batch's guarded write, and the versions that guard it.
struct Guarded<'s> {
    rows: HashMap<String, Row>,
    versions: &'s HashMap<String, RowVersion>,
    fed: &'s HashMap<String, Row>,
}

impl Guarded<'_> {
    /// Folds the batch over its starting rows and writes the result in one guarded
    /// statement, with the usage and the events of the sessions it writes. Returns the
    /// sessions to redo under locks: refused by the table (another writer changed the row,
    /// or the key existed), or folded into a change the index-fed update cannot write.
    async fn fold_and_write(
        self,
        pg: &crate::store::PgStore,
        items: &[&Item],
        out: &mut Outcome,
        unchanged: &mut [bool],
        emit: Emit,
    ) -> Result<HashSet<String>, StoreError> {
        let fed = self.fed;
        let mut folded = fold(items, 0..items.len(), self.rows, out, unchanged, emit);
        let mut redo: HashSet<String> = Default::default();
        let (mut index_fed, updates): (Vec<Row>, Vec<Row>) = std::mem::take(&mut folded.updates)
            .into_iter()
            .partition(|r| fed.contains_key(&r.acctuniqueid));
        index_fed.retain(|r| {
            let exact = index_fed_write_is_exact(&fed[&r.acctuniqueid], r);
            if !exact {
                redo.insert(r.acctuniqueid.clone());
            }
            exact
        });
        // An index-fed session whose items changed nothing was judged on the index's copy, which
        // is right only while the row still has its version: the same statement checks that, and
        // a session whose row changed is redone under locks like a refused write.
        let changed: HashSet<&str> = index_fed.iter().map(|r| r.acctuniqueid.as_str()).collect();
        let judged_unchanged: Vec<Row> = fed
            .iter()
            .filter(|(k, _)| !changed.contains(k.as_str()) && !redo.contains(*k))
            .map(|(_, r)| r.clone())
            .collect();
        // Amounts and events of sessions the statement does not write (refused, or redone
        // because the index-fed update cannot write them) are left out by the statement
        // itself; their redo under locks derives them again from the rows as they are.
        let ledger = usage::entries(&folded.usage);
        let events = std::mem::take(&mut folded.events.events);
        let consequences = crate::store::Consequences {
            ledger: &ledger,
            events: &events,
        };
        let written = pg
            .write_guarded(
                &mut folded.inserts,
                &updates,
                &index_fed,
                &judged_unchanged,
                self.versions,
                consequences,
            )
            .await?;
        redo.extend(written.refused);
        folded.updates = updates;
        folded.updates.extend(index_fed);
        if !redo.is_empty() {
            tracing::debug!(
                rows = redo.len(),
                "rows changed by another writer, or already there; redoing them"
            );
            folded.inserts.retain(|r| !redo.contains(&r.acctuniqueid));
            folded.updates.retain(|r| !redo.contains(&r.acctuniqueid));
        }
        record(folded, out, &written.versions);
        Ok(redo)
    }
}

/// Sessions of a batch to redo under locks after the rest of it committed.
struct Redo<'a> {
    keys: HashSet<String>,
    sources: &'a HashMap<&'a str, Source>,
    deadline: tokio::time::Instant,
    emit: Emit,
}

impl Redo<'_> {
    /// Redoes the items of these sessions in one locked transaction, within the commit's
    /// deadline: their rows, usage and events are derived again from the rows as they are
    /// now (the guarded statement wrote none of them). If that fails, only these items are
    /// left unfinished (unanswered; the NAS retransmits them): redoing the whole batch would
    /// apply its committed events twice.
    async fn under_locks(
        self,
        store: &Store,
        items: &[&Item],
        mut out: Outcome,
        mut unchanged: Vec<bool>,
    ) -> Result<Outcome, StoreError> {
        let Redo {
            keys: redo,
            sources,
            deadline,
            emit,
        } = self;
        let again_at: Vec<usize> = (0..items.len())
            .filter(|i| redo.contains(items[*i].key()))
            .collect();
        let again_items: Vec<&Item> = again_at.iter().map(|i| items[*i]).collect();
        let redo_started = std::time::Instant::now();
        let redone =
            match tokio::time::timeout_at(deadline, commit_locked(store, &again_items, emit)).await
            {
                Ok(result) => result,
                Err(_) => Err(StoreError::Timeout(redo_started.elapsed())),
            };
        let again = match redone {
            Ok(again) => again,
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    events = again_at.len(),
                    "events redone under locks failed after their batch committed; not answered"
                );
                for i in &again_at {
                    out.unfinished[*i] = true;
                    out.closed[*i] = false;
                    unchanged[*i] = false;
                }
                out.changes
                    .extend(redo.into_iter().map(IndexChange::ForgetVersion));
                out.unchanged = unchanged.iter().filter(|u| **u).count() as u64;
                return Ok(out);
            }
        };
        for key in &redo {
            if let Some(source) = sources.get(key.as_str()) {
                out.sources[source.metric()] -= 1;
            }
        }
        out.sources[SOURCE_REDONE] += redo.len() as u64;
        out.changes
            .extend(redo.into_iter().map(IndexChange::ForgetVersion));
        out.changes.extend(again.changes);
        out.touches.extend(again.touches);
        for (j, i) in again_at.iter().enumerate() {
            out.closed[*i] = again.closed[j];
            unchanged[*i] = false;
        }
        out.unchanged = unchanged.iter().filter(|u| **u).count() as u64 + again.unchanged;
        Ok(out)
    }
}

/// Whether an index-fed row, folded from `before` to `after`, can be written by the
/// index-fed update: no column outside [`INDEX_HELD`] and [`INDEX_KEPT_UNLESS_SET`] changed.
/// (The kept columns start unknown, `None`, and the update keeps the table's value where the
/// fold left `None`; the one fold that sets them back to `None`, reopening a row the sweeper
/// closed, needs a close followed by an Interim-Update of the session in one batch, and the
/// writer reads such sessions first.)
fn index_fed_write_is_exact(before: &Row, after: &Row) -> bool {
    Columns::Write.iter().all(|c| {
        INDEX_HELD.contains(&c.name)
            || INDEX_KEPT_UNLESS_SET.contains(&c.name)
            || c.get(before) == c.get(after)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_fed_writes_are_exact_only_for_the_columns_they_set() {
        let before = Row {
            acctuniqueid: "k".into(),
            username: Some("u".into()),
            acctstarttime: Some(100),
            ..Row::default()
        };
        let mut after = before.clone();
        after.acctupdatetime = Some(400);
        after.acctinputoctets = Some(7);
        after.acctinterval = Some(300);
        after.acctstoptime = Some(400);
        after.acctterminatecause = Some("User-Request".into());
        after.framedipv6prefix = Some("2001:db8::/56".into());
        assert!(index_fed_write_is_exact(&before, &after));
        let changes: [fn(&mut Row); 4] = [
            |r| r.nasporttype = Some("Virtual".into()),
            |r| r.connectinfo_start = Some("1G".into()),
            |r| r.username = None,
            |r| r.class = Some("c".into()),
        ];
        for change in changes {
            let mut inexact = after.clone();
            change(&mut inexact);
            assert!(!index_fed_write_is_exact(&before, &inexact), "{inexact:?}");
        }
    }
}
