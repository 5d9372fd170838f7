//! PostgreSQL's guarded batch write, the ingest writer's optimistic path: one statement that
//! inserts new rows unless their key exists, updates rows only where their version (`xmin`)
//! is still the one known, checks the versions of the rows it leaves as they are, and feeds
//! the usage ledger and the outbox from the sessions it wrote only
//! (docs/reference/postgres-writes.md). The parts a batch has choose one of the statements
//! built here once.

use foldhash::{HashMap, HashMapExt, HashSet};
use std::hash::BuildHasher;
use std::sync::LazyLock;

use sqlx::Row as _;

use super::{PgStore, bind_columns, bind_some_columns, insert_core, update_core, update_statement};
use crate::sessions::{Column, Columns, INDEX_HELD, INDEX_KEPT_UNLESS_SET, Row, RowVersion};
use crate::store::Result;

/// The batch write of the optimistic path, one statement per combination of its parts (index =
/// [`INSERTS`] | [`UPDATES`] | [`INDEX_FED`] | [`UNCHANGED`]); each part returns `(part, radacctid,
/// acctuniqueid, xmin)` for the rows it wrote, and several parts are joined as CTEs of one
/// statement, so the batch is one implicit transaction. Only the parts a batch has are sent: every
/// statement is planned afresh for its parameters (`force_custom_plan`), and a part costs planning
/// even when its arrays are empty.
/// With [`LEDGER`], the usage ledger's upserts join the statement as CTEs too, fed only by the
/// sessions whose rows the other parts wrote (`store::usage`); with [`EVENTS`], so does the
/// outbox's append, of those sessions' events only (`store::events`).
pub(super) static WRITE_GUARDED_SQL: LazyLock<Vec<String>> =
    LazyLock::new(|| (0..64).map(guarded_write_statement).collect());

/// New rows, inserted unless another row has their key (`ON CONFLICT DO NOTHING`).
const INSERTS: usize = 1;
/// Rows read from the table, every column written where the row's version is still the one read.
const UPDATES: usize = 2;
/// Rows rebuilt from the live index, written with [`index_fed_update`] where the row's version
/// is still the one radacctd last wrote.
const INDEX_FED: usize = 4;
/// Rows rebuilt from the live index that the batch's events did not change: only their version
/// is checked (the index's copy was right only if nobody changed the row since).
const UNCHANGED: usize = 8;
/// Hourly usage amounts of the batch's sessions, added to the ledger for the rows written.
const LEDGER: usize = 16;
/// The batch's session events, appended to the outbox for the rows written.
const EVENTS: usize = 32;

fn guarded_write_statement(parts: usize) -> String {
    let mut next = 1;
    let mut statements = Vec::new();
    if parts & INSERTS != 0 {
        statements.push(format!(
            "{} ON CONFLICT DO NOTHING \
             RETURNING 0 AS part, radacctid, acctuniqueid, xmin::text AS version",
            insert_core(next)
        ));
        next += Columns::Write.count();
    }
    if parts & UPDATES != 0 {
        statements.push(format!(
            "{} RETURNING 1 AS part, r.radacctid, NULL::text, r.xmin::text",
            update_statement(next, true)
        ));
        next += 2 + Columns::Write.count();
    }
    if parts & INDEX_FED != 0 {
        statements.push(format!(
            "{} RETURNING 2 AS part, r.radacctid, NULL::text, r.xmin::text",
            index_fed_update(next)
        ));
        next += 2 + INDEX_FED_COLUMNS.len();
    }
    if parts & UNCHANGED != 0 {
        statements.push(format!(
            "SELECT 3 AS part, r.radacctid, NULL::text, r.xmin::text FROM radacct AS r \
             JOIN unnest(${next}::int8[], ${}::text[]) AS v(id, version) ON r.radacctid = v.id \
             WHERE r.xmin::text = v.version",
            next + 1
        ));
        next += 2;
    }
    // CTE names of the parts that write: inserts match the ledger and the events by key,
    // updates by id.
    let mut w = 0;
    let (mut inserted, mut keys, mut ids) = (None, Vec::new(), Vec::new());
    for part in [INSERTS, UPDATES, INDEX_FED, UNCHANGED] {
        if parts & part == 0 {
            continue;
        }
        match part {
            INSERTS => {
                inserted = Some(format!("w{w}"));
                keys.push(format!("SELECT acctuniqueid FROM w{w}"));
            }
            UPDATES | INDEX_FED => ids.push(format!("SELECT radacctid FROM w{w}")),
            _ => {}
        }
        w += 1;
    }
    let mut joined = Vec::new();
    if parts & LEDGER != 0 {
        joined.push(crate::store::usage::pg_guarded_ledger(next, &keys, &ids));
        next += 6;
    }
    if parts & EVENTS != 0 {
        joined.push(crate::store::events::pg_guarded_events(
            next,
            inserted.as_deref(),
            &ids,
        ));
    }
    match (statements.len(), joined.is_empty()) {
        (0, _) => String::new(),
        (1, true) => statements.remove(0),
        _ => {
            let ctes: Vec<String> = statements
                .iter()
                .enumerate()
                .map(|(i, st)| format!("w{i} AS ({st})"))
                .collect();
            let selects: Vec<String> = (0..statements.len())
                .map(|i| format!("SELECT * FROM w{i}"))
                .collect();
            let joined: String = joined.iter().map(|j| format!(", {j}")).collect();
            format!(
                "WITH {}{joined} {}",
                ctes.join(", "),
                selects.join(" UNION ALL ")
            )
        }
    }
}

/// The update of rows rebuilt from the index: [`INDEX_HELD`] columns set, the
/// [`INDEX_KEPT_UNLESS_SET`] ones set only when the fold gave them a value.
fn index_fed_update(first: usize) -> String {
    let (set, kept) = INDEX_FED_COLUMNS.split_at(INDEX_HELD.len());
    update_core(first, true, set, kept)
}

/// The columns bound for [`index_fed_update`], in its parameter order (every name is a write
/// column: `store::tests::the_index_fed_columns_are_write_columns`).
static INDEX_FED_COLUMNS: LazyLock<Vec<&'static Column>> = LazyLock::new(|| {
    INDEX_HELD
        .iter()
        .chain(INDEX_KEPT_UNLESS_SET.iter())
        .filter_map(|name| Columns::Write.find(name))
        .collect()
});

/// The ids and the versions (in `xmin::text` form) of rows to update with a guard, as bound
/// arrays.
fn ids_and_versions<S: BuildHasher>(
    rows: &[Row],
    versions: &std::collections::HashMap<String, RowVersion, S>,
) -> (Vec<Option<i64>>, Vec<Option<String>>) {
    rows.iter()
        .map(|r| {
            let version = versions.get(&r.acctuniqueid).map(RowVersion::to_string);
            (r.radacctid, version)
        })
        .unzip()
}

/// What follows from the rows a guarded write writes, added only for the sessions whose rows
/// it actually wrote ([`PgStore::write_guarded`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Consequences<'a> {
    /// Usage amounts for the ledger.
    pub ledger: &'a [crate::usage::Entry],
    /// Session events for the outbox.
    pub events: &'a [crate::events::NewEvent],
}

/// What [`PgStore::write_guarded`] did.
#[derive(Debug, Default)]
pub struct GuardedWrite {
    /// Keys not written: an update whose row another writer changed since its version, an
    /// insert whose key another row already has. Their events must be redone under locks.
    pub refused: HashSet<String>,
    /// The new version of every row written, by key.
    pub versions: HashMap<String, RowVersion>,
}

impl PgStore {
    /// One statement (one implicit transaction): inserts `inserts` (filling their ids) unless
    /// their key exists, updates `updates` (rows read from the table) and `index_fed` (rows
    /// rebuilt from the index, see [`INDEX_HELD`]) where each row's version is still
    /// `versions[key]`, and checks that the rows `unchanged` (rebuilt from the index, nothing
    /// to write) still have theirs; of the sessions whose rows it wrote, adds the
    /// `consequences`' amounts to the usage ledger and appends their events to the outbox (in
    /// order; an event without `radacctid` takes its new row's). Returns what was refused (or
    /// found changed) and the row versions.
    pub async fn write_guarded<S: BuildHasher>(
        &self,
        inserts: &mut [Row],
        updates: &[Row],
        index_fed: &[Row],
        unchanged: &[Row],
        versions: &std::collections::HashMap<String, RowVersion, S>,
        consequences: Consequences<'_>,
    ) -> Result<GuardedWrite> {
        let Consequences { ledger, events } = consequences;
        let writes = !inserts.is_empty() || !updates.is_empty() || !index_fed.is_empty();
        let parts = [
            (INSERTS, !inserts.is_empty()),
            (UPDATES, !updates.is_empty()),
            (INDEX_FED, !index_fed.is_empty()),
            (UNCHANGED, !unchanged.is_empty()),
            (LEDGER, writes && !ledger.is_empty()),
            (EVENTS, writes && self.outbox.enabled && !events.is_empty()),
        ]
        .iter()
        .filter(|(_, has)| *has)
        .fold(0, |acc, (part, _)| acc | part);
        if parts == 0 {
            return Ok(GuardedWrite::default());
        }
        let mut q = sqlx::query(WRITE_GUARDED_SQL[parts].as_str());
        if !inserts.is_empty() {
            q = bind_columns(q, inserts);
        }
        if !updates.is_empty() {
            let (ids, vers) = ids_and_versions(updates, versions);
            q = bind_columns(q.bind(ids).bind(vers), updates);
        }
        if !index_fed.is_empty() {
            let (ids, vers) = ids_and_versions(index_fed, versions);
            q = bind_some_columns(
                q.bind(ids).bind(vers),
                index_fed,
                INDEX_FED_COLUMNS.iter().copied(),
            );
        }
        if !unchanged.is_empty() {
            let (ids, vers) = ids_and_versions(unchanged, versions);
            q = q.bind(ids).bind(vers);
        }
        if parts & LEDGER != 0 {
            q = crate::store::usage::bind_guarded_ledger(q, ledger);
        }
        if parts & EVENTS != 0 {
            q = crate::store::events::bind_queue_arrays(q, events);
        }
        let mut inserted: HashMap<String, i64> = HashMap::with_capacity(inserts.len());
        let mut updated: HashMap<i64, Option<RowVersion>> =
            HashMap::with_capacity(updates.len() + index_fed.len());
        let mut out = GuardedWrite::default();
        let rows = q.fetch_all(&self.write_pool).await?;
        if parts & EVENTS != 0 {
            // One statement, committed: whatever events it kept are in the queue.
            self.outbox.committed();
        }
        for r in &rows {
            let part: i32 = r.try_get(0)?;
            let id: i64 = r.try_get(1)?;
            let version = RowVersion::parse(r.try_get(3)?);
            if part == 0 {
                let key: String = r.try_get(2)?;
                if let Some(v) = version {
                    out.versions.insert(key.clone(), v);
                }
                inserted.insert(key, id);
            } else {
                updated.insert(id, version);
            }
        }
        for row in inserts.iter_mut() {
            row.radacctid = inserted.get(&row.acctuniqueid).copied();
            if row.radacctid.is_none() {
                out.refused.insert(row.acctuniqueid.clone());
            }
        }
        for row in updates.iter().chain(index_fed).chain(unchanged) {
            match row.radacctid.and_then(|id| updated.get(&id)) {
                Some(Some(v)) => {
                    out.versions.insert(row.acctuniqueid.clone(), *v);
                }
                Some(None) => {}
                None => {
                    out.refused.insert(row.acctuniqueid.clone());
                }
            }
        }
        Ok(out)
    }
}
