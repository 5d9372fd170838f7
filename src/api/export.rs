//! `GET /api/sessions/export`: CSV (RFC 4180: CRLF, quotes where needed) streamed from the
//! database. The row count is checked against `api.export_max_rows` before the first byte;
//! memory stays flat whatever the size (a bounded row channel, chunks of ~64 KiB); a client
//! that disconnects drops the body, which ends the reading task and frees its connection.
//! At most `api.export_concurrency` exports run at once, so exports never starve the pool.

use std::fmt::Write as _;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_util::sync::CancellationToken;

use super::ApiState;
use super::auth::{Caller, SESSIONS_VIEW};
use super::error::ApiError;
use super::params::{ExportParams, FieldValue, Query, SESSION_FIELDS};
use super::sessions::rfc3339;
use crate::sessions::Row;
use crate::store::{ExportStart, SessionQuery, StoreError};

/// Bytes gathered before a chunk is handed to the connection.
const CHUNK_BYTES: usize = 64 * 1024;

/// `GET /api/sessions/export`.
pub async fn export(
    State(state): State<ApiState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    caller.require(SESSIONS_VIEW)?;
    state.ensure_index_ready()?;
    let p = ExportParams::parse(&Query::parse(raw.as_deref())?)?;
    let filter = state.filter_for(&caller, &p.list);
    let permit = state.export_permit()?;
    let q = SessionQuery {
        status: p.list.status,
        filter: &filter,
        sort: p.list.sort,
    };
    let (total, rows) = match state
        .store()
        .export_sessions(&q, state.export_max_rows())
        .await?
    {
        ExportStart::TooMany(_) => return Err(ApiError::TooManyRows),
        ExportStart::Rows { total, rows } => (total, rows),
    };
    let csv = CsvStream {
        rows,
        columns: p.columns,
        nas: Box::new(state.scope().nas_lookup()),
        header_done: false,
        finished: false,
        shutdown: state.shutdown_token(),
        _permit: permit,
    };
    let body = Body::from_stream(futures_util::stream::unfold(csv, |mut csv| async move {
        csv.next_chunk().await.map(|chunk| (chunk, csv))
    }));
    let filename = format!(
        "attachment; filename=\"sessions-{}-{}.csv\"",
        p.list.status.as_str(),
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
    );
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&filename) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert("x-total-count", HeaderValue::from(total));
    Ok(response)
}

/// `nas_id` of a NAS address, from one snapshot of the `nas` cache.
type NasLookup = Box<dyn Fn(&str) -> Option<i64> + Send + Sync>;

/// The CSV body: rows from the store's channel, formatted a chunk at a time.
struct CsvStream {
    rows: mpsc::Receiver<Result<Row, StoreError>>,
    columns: Vec<usize>,
    nas: NasLookup,
    header_done: bool,
    finished: bool,
    shutdown: CancellationToken,
    /// Held for as long as the body lives.
    _permit: OwnedSemaphorePermit,
}

fn io_error(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl CsvStream {
    /// The next chunk; `None` at the end. An error aborts the response (the client sees a
    /// truncated transfer, never a short file that looks complete).
    async fn next_chunk(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        if self.finished {
            return None;
        }
        // A writer per chunk: `into_inner` hands over its bytes (RFC 4180: CRLF, quotes only
        // where needed).
        let mut writer = csv::WriterBuilder::new()
            .terminator(csv::Terminator::CRLF)
            .from_writer(Vec::with_capacity(CHUNK_BYTES + 8192));
        if !self.header_done {
            self.header_done = true;
            let names = self.columns.iter().map(|i| SESSION_FIELDS[*i].name());
            if let Err(e) = writer.write_record(names) {
                return Some(Err(io_error(e)));
            }
        }
        let mut field = String::new();
        while writer.get_ref().len() < CHUNK_BYTES {
            let next = tokio::select! {
                _ = self.shutdown.cancelled() => {
                    self.finished = true;
                    return Some(Err(io_error("server shutting down")));
                }
                r = self.rows.recv() => r,
            };
            match next {
                Some(Ok(rec)) => {
                    if let Err(e) = self.write_row(&mut writer, &rec, &mut field) {
                        self.finished = true;
                        return Some(Err(io_error(e)));
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "export aborted: reading rows failed");
                    self.finished = true;
                    return Some(Err(io_error("export aborted")));
                }
                None => {
                    self.finished = true;
                    break;
                }
            }
        }
        let bytes = match writer.into_inner() {
            Ok(b) => b,
            Err(e) => return Some(Err(io_error(e.error()))),
        };
        if bytes.is_empty() {
            return None;
        }
        Some(Ok(Bytes::from(bytes)))
    }

    fn write_row(
        &self,
        writer: &mut csv::Writer<Vec<u8>>,
        r: &Row,
        field: &mut String,
    ) -> csv::Result<()> {
        for &i in &self.columns {
            field.clear();
            match SESSION_FIELDS[i].value(r, || (self.nas)(&r.nasipaddress)) {
                FieldValue::Int(n) => {
                    if let Some(n) = n {
                        let _ = write!(field, "{n}");
                    }
                }
                FieldValue::Text(t) => field.push_str(t.unwrap_or_default()),
                FieldValue::Time(t) => {
                    field.push_str(t.and_then(rfc3339).as_deref().unwrap_or_default())
                }
            }
            writer.write_field(field.as_bytes())?;
        }
        writer.write_record(None::<&[u8]>)
    }
}
