//! `GET /api/events`: the session events as Server-Sent Events (docs/EVENTS.md#the-stream).
//! This file reads the request (permission, `Last-Event-ID`, `types`, `nas_id`), builds the
//! stream's filter from the caller's scope, and hands the rest to `stream::Feed`, which runs
//! as a task of its own while the response body streams.

use axum::Extension;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::ApiState;
use super::auth::{Caller, EVENTS_VIEW};
use super::error::ApiError;
use super::params::Query;
use crate::events::{EventType, StoredEvent};
use crate::http::Hangup;
use crate::sessions::ResellerResolver as _;
use crate::sessions::filter::{NasMatch, Scope};
use crate::stream::{EndReason, Feed, Refused, Start};

/// The header a client resumes with (an `EventSource` sends it by itself when it reconnects).
pub const LAST_EVENT_ID: &str = "Last-Event-ID";
/// The same as a query parameter, for clients that cannot set headers.
pub const LAST_EVENT_ID_PARAM: &str = "last_event_id";

/// The request's parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventParams {
    pub start: Start,
    /// Where the start came from (the header or the parameter): what a 400 names.
    pub start_from: &'static str,
    /// Only these types (`None`: every type).
    pub types: Option<Vec<EventType>>,
    pub nas_id: Option<i64>,
}

impl EventParams {
    /// The header wins over the parameter: a browser's `EventSource` keeps the URL it was
    /// opened with and sends the newer id in the header when it reconnects.
    pub fn parse(q: &Query, headers: &HeaderMap) -> Result<EventParams, ApiError> {
        let header = match headers.get(LAST_EVENT_ID) {
            None => None,
            Some(v) => Some(
                v.to_str()
                    .map_err(|_| invalid_id(LAST_EVENT_ID))?
                    .trim()
                    .to_owned(),
            ),
        };
        let (start, start_from) = match (
            header.filter(|v| !v.is_empty()),
            q.get(LAST_EVENT_ID_PARAM)?,
        ) {
            (Some(v), _) => (parse_id(&v, LAST_EVENT_ID)?, LAST_EVENT_ID),
            (None, Some(v)) => (parse_id(v, LAST_EVENT_ID_PARAM)?, LAST_EVENT_ID_PARAM),
            (None, None) => (Start::Newest, LAST_EVENT_ID),
        };
        let types = match q.get("types")? {
            None => None,
            Some(v) => Some(parse_types(v)?),
        };
        let nas_id = match q.get("nas_id")? {
            None => None,
            Some(v) => Some(
                v.parse::<i64>()
                    .map_err(|_| ApiError::bad_request("invalid nas_id, must be an integer"))?,
            ),
        };
        Ok(EventParams {
            start,
            start_from,
            types,
            nas_id,
        })
    }
}

fn invalid_id(name: &str) -> ApiError {
    ApiError::bad_request(format!(
        "invalid {name}, must be an event id (an integer >= 0)"
    ))
}

fn parse_id(v: &str, name: &str) -> Result<Start, ApiError> {
    v.parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .map(Start::After)
        .ok_or_else(|| invalid_id(name))
}

/// The names every type is known by, for the 400's message.
fn known_types() -> String {
    EventType::ALL.map(EventType::name).join(", ")
}

/// `types`: event type names, comma-separated.
fn parse_types(v: &str) -> Result<Vec<EventType>, ApiError> {
    let mut out = Vec::new();
    for name in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let t = EventType::parse(name).ok_or_else(|| {
            ApiError::bad_request(format!(
                "invalid types, unknown event type {name:?} (allowed: {})",
                known_types()
            ))
        })?;
        out.push(t);
    }
    if out.is_empty() {
        return Err(ApiError::bad_request(format!(
            "invalid types, must be a comma-separated list of event types ({})",
            known_types()
        )));
    }
    Ok(out)
}

/// Which events a stream sends: the request's filters and the caller's scope.
struct EventFilter {
    types: Option<Vec<&'static str>>,
    nas: Option<NasMatch>,
    scope: Scope,
    /// Subscribers' owners (the API's reseller cache), for a reseller's scope.
    state: ApiState,
}

impl EventFilter {
    fn matches(&self, e: &StoredEvent) -> bool {
        if let Some(types) = &self.types
            && !types.contains(&e.kind.as_str())
        {
            return false;
        }
        match &self.nas {
            Some(NasMatch::Nothing) => return false,
            Some(NasMatch::Address(a)) if *a != e.nasipaddress => return false,
            _ => {}
        }
        match &self.scope {
            Scope::All => true,
            // A reseller sees its subscribers' events, and nothing of a NAS as a whole (nor a
            // type this build does not know).
            scope => {
                e.event_type().is_some_and(EventType::has_subscriber)
                    && !e.username.is_empty()
                    && scope.contains(self.state.scope().reseller_of(&e.username))
            }
        }
    }
}

/// `GET /api/events`.
pub async fn stream(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    hangup: Option<Extension<Hangup>>,
) -> Result<Response, ApiError> {
    caller.require(EVENTS_VIEW)?;
    let p = EventParams::parse(&Query::parse(raw.as_deref())?, &headers)?;
    let Some(hub) = state.events().cloned() else {
        return Err(ApiError::Unavailable {
            message: "event stream not available",
            retry_after_secs: None,
        });
    };
    let filter = EventFilter {
        types: p
            .types
            .as_ref()
            .map(|t| t.iter().map(|t| t.name()).collect()),
        nas: p.nas_id.map(|id| state.scope().nas_match(id)),
        scope: state.scope().scope_for(&caller),
        state: state.clone(),
    };
    let sub = hub.subscribe(p.start).await.map_err(|r| match r {
        Refused::NotReady => ApiError::Unavailable {
            message: "event stream not ready",
            retry_after_secs: Some(5),
        },
        Refused::Full => ApiError::Unavailable {
            message: "too many event streams, try again later",
            retry_after_secs: Some(5),
        },
        Refused::Ahead { last } => ApiError::bad_request(format!(
            "invalid {}, after the last event id ({last})",
            p.start_from
        )),
        Refused::Database(e) => ApiError::from(e),
    })?;
    let (feed, frames) = Feed::new(hub, sub, Box::new(move |e| filter.matches(e)));
    let stop = state.shutdown_token();
    tokio::spawn(async move {
        // A slow client is disconnected outright: its socket is full, so the end of the body
        // would never reach it.
        if feed.run(stop).await == EndReason::Slow
            && let Some(Extension(hangup)) = hangup
        {
            hangup.now();
        }
    });
    let mut response = Body::from_stream(frames).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tells nginx not to buffer the stream.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: &str, header: Option<&str>) -> Result<EventParams, String> {
        let mut h = HeaderMap::new();
        if let Some(v) = header {
            h.insert(LAST_EVENT_ID, HeaderValue::from_str(v).expect("header"));
        }
        let q = Query::parse(Some(query)).map_err(|e| e.to_string())?;
        EventParams::parse(&q, &h).map_err(|e| e.to_string())
    }

    #[test]
    fn the_header_wins_over_the_parameter() {
        let p = parse("last_event_id=5", Some("9")).expect("valid");
        assert_eq!((p.start, p.start_from), (Start::After(9), LAST_EVENT_ID));
        let p = parse("last_event_id=5", None).expect("valid");
        assert_eq!(
            (p.start, p.start_from),
            (Start::After(5), LAST_EVENT_ID_PARAM)
        );
        assert_eq!(parse("", Some("")).expect("valid").start, Start::Newest);
    }

    #[test]
    fn invalid_values_name_their_parameter() {
        assert_eq!(
            parse("", Some("abc")).unwrap_err(),
            "invalid Last-Event-ID, must be an event id (an integer >= 0)"
        );
        assert_eq!(
            parse("last_event_id=-1", None).unwrap_err(),
            "invalid last_event_id, must be an event id (an integer >= 0)"
        );
        assert!(
            parse("types=session.started,session.start", None)
                .unwrap_err()
                .starts_with("invalid types, unknown event type \"session.start\" (allowed: session.started, ")
        );
        assert!(
            parse("types=,", None)
                .unwrap_err()
                .starts_with("invalid types, must be")
        );
        assert_eq!(
            parse("nas_id=x", None).unwrap_err(),
            "invalid nas_id, must be an integer"
        );
        let p = parse("types=nas.rebooted,+session.coa&nas_id=3", None).expect("valid");
        assert_eq!(
            p.types,
            Some(vec![EventType::NasRebooted, EventType::SessionCoa])
        );
        assert_eq!(p.nas_id, Some(3));
    }
}
