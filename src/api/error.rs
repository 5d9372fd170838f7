//! `ApiError`: every failure the API answers, as the contract's `{"success": false, "message"}`
//! body with its status. 5xx causes are logged here once and never sent to the client.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A query parameter (named in the message) is invalid.
    #[error("{0}")]
    BadRequest(String),
    /// Missing, malformed, badly signed, expired or not yet valid (`nbf`) token.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// A missing permission (`<permission> denied`) or an out-of-scope session.
    #[error("{0}")]
    Forbidden(String),
    #[error("session not found")]
    NotFound,
    /// `GET /api/nas/{id}` for an id that is no `nas` row.
    #[error("nas not found")]
    NasNotFound,
    #[error("too many rows, narrow date range")]
    TooManyRows,
    /// The API cannot answer yet or now (index loading, too many concurrent exports).
    #[error("{message}")]
    Unavailable {
        message: &'static str,
        retry_after_secs: Option<u64>,
    },
    /// The NAS refused a disconnect (a Disconnect-NAK): the message says what it answered
    /// (`disconnect::refusal_message`). Not an internal cause: the client needs it.
    #[error("{0}")]
    NasRefused(String),
    /// The NAS refused a CoA change (a CoA-NAK): 422 with the message
    /// (`disconnect::change_refusal_message`) and the Error-Cause by name in `error_cause`.
    #[error("{message}")]
    ChangeRefused {
        message: String,
        error_cause: Option<&'static str>,
    },
    /// The request conflicts with the session's state (`session is closed`).
    #[error("{0}")]
    Conflict(&'static str),
    #[error("database unavailable")]
    Database(#[source] StoreError),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::BadRequest(message.into())
    }

    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound | ApiError::NasNotFound => StatusCode::NOT_FOUND,
            ApiError::TooManyRows => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::ChangeRefused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable { .. } | ApiError::NasRefused(_) | ApiError::Database(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() {
            ApiError::Database(e)
        } else {
            ApiError::Internal(anyhow::Error::new(e))
        }
    }
}

/// The error body, for responses built outside handlers (rate limit, fallbacks).
pub fn error_body(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({ "success": false, "message": message })),
    )
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        match &self {
            ApiError::Database(e) => tracing::warn!(error = %e, "API request failed: database"),
            ApiError::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "API request failed")
            }
            _ => {}
        }
        let mut response = match &self {
            ApiError::ChangeRefused {
                message,
                error_cause,
            } => (
                status,
                Json(json!({ "success": false, "message": message, "error_cause": error_cause })),
            )
                .into_response(),
            _ => error_body(status, &self.to_string()),
        };
        match self {
            ApiError::Unauthorized(_) => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::Unavailable {
                retry_after_secs: Some(s),
                ..
            } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(s));
            }
            _ => {}
        }
        response
    }
}
