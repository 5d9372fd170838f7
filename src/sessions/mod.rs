//! The live index of open sessions (docs/ARCHITECTURE.md#index) and the radacct row model.
//!
//! Pure data and in-memory state: nothing here performs I/O. Only the ingest writer mutates the
//! index, after its transaction committed, so the index always follows SQL (invariant B).

pub mod attribution;
pub mod event;
pub mod filter;
mod index;
mod row;

pub use index::{IndexCounts, ResellerResolver, SessionIndex};
pub use row::{
    COLUMNS, Column, ColumnKind, Columns, INDEX_HELD, INDEX_KEPT_UNLESS_SET, Ipv6Columns, Lists,
    OwnedValue, Row, RowVersion, Session, Text, Value,
};
