//! Query-string parsing for the sessions endpoints, exactly as the contract lists the parameters.
//! Every invalid value is a 400 whose message names the parameter; unknown parameters are
//! ignored; an empty value counts as absent (what HTML forms send for an unset filter).

use chrono::{DateTime, NaiveDate, Utc};

use super::error::ApiError;
use crate::sessions::attribution::Target;
use crate::sessions::filter::{Order, Page, Search, Sort, SortKey, Status};
use crate::sessions::{COLUMNS, Column, ColumnKind, Row, Value};

/// Most rows on one page.
pub const MAX_LIMIT: u64 = 500;
/// Highest `page`: pages beyond could not be reached with any real data and would overflow
/// offsets.
pub const MAX_PAGE: u64 = 1 << 40;
pub const DEFAULT_LIMIT: u64 = 50;
/// Longest accepted `search` term, in characters.
pub const MAX_SEARCH_CHARS: usize = 256;
/// Characters `search` refuses: the control characters (Unicode general category Cc), as
/// inclusive ranges. The OpenAPI document's `pattern` is built from them.
pub const SEARCH_FORBIDDEN: [(char, char); 2] = [('\u{0}', '\u{1f}'), ('\u{7f}', '\u{9f}')];

/// Whether `search` refuses `c` (see [`SEARCH_FORBIDDEN`]).
pub fn forbidden_in_search(c: char) -> bool {
    SEARCH_FORBIDDEN
        .iter()
        .any(|(first, last)| (*first..=*last).contains(&c))
}

/// The ECMA-262 regular expression (JSON Schema `pattern`) of an acceptable `search` term:
/// none of [`SEARCH_FORBIDDEN`].
pub fn search_pattern() -> String {
    let ranges: String = SEARCH_FORBIDDEN
        .iter()
        .map(|(first, last)| format!("\\u{:04X}-\\u{:04X}", u32::from(*first), u32::from(*last)))
        .collect();
    format!("^[^{ranges}]*$")
}

/// A field of the contract's session object: a radacct column, or `nas_id` (the id of the NAS the
/// session's address belongs to, from the `nas` cache).
#[derive(Debug, Clone, Copy)]
pub enum Field {
    Column(&'static Column),
    NasId,
}

/// A field's value, by how the API writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValue<'r> {
    Int(Option<i64>),
    Text(Option<&'r str>),
    /// Epoch seconds, written in RFC 3339.
    Time(Option<i64>),
}

impl Field {
    pub const fn name(self) -> &'static str {
        match self {
            Field::Column(c) => c.name,
            Field::NasId => "nas_id",
        }
    }

    /// The field of `row`; `nas_id` is asked for only when it is the field.
    pub fn value<'r>(self, row: &'r Row, nas_id: impl FnOnce() -> Option<i64>) -> FieldValue<'r> {
        let Field::Column(c) = self else {
            return FieldValue::Int(nas_id());
        };
        match (c.kind, c.get(row)) {
            (ColumnKind::Time, Value::Int(t)) => FieldValue::Time(t),
            (_, Value::Int(n)) => FieldValue::Int(n),
            (_, Value::Text(t)) => FieldValue::Text(t),
        }
    }
}

/// Where `nas_id` sits in the contract's session object; the columns' positions are
/// [`Lists::api`](crate::sessions::Lists).
const NAS_ID_POSITION: usize = 4;

/// The fields of the contract's session object, in its order: the JSON keys and the CSV columns.
/// Built from the radacct column table at compile time (two fields at one position, or a
/// position left empty, fail the build).
pub const SESSION_FIELDS: [Field; 15] = {
    let mut out = [Field::NasId; 15];
    let mut taken = [false; 15];
    taken[NAS_ID_POSITION] = true;
    let mut i = 0;
    while i < COLUMNS.len() {
        if let Some(p) = COLUMNS[i].lists.api {
            assert!(!taken[p], "two session fields at one position");
            out[p] = Field::Column(&COLUMNS[i]);
            taken[p] = true;
        }
        i += 1;
    }
    let mut p = 0;
    while p < taken.len() {
        assert!(taken[p], "a session field position left empty");
        p += 1;
    }
    out
};

/// The names of [`SESSION_FIELDS`].
pub const FIELDS: [&str; 15] = {
    let mut out = [""; 15];
    let mut i = 0;
    while i < out.len() {
        out[i] = SESSION_FIELDS[i].name();
        i += 1;
    }
    out
};

/// The export's default columns: the contract sample's ten, in its order (the columns'
/// [`Lists::export`](crate::sessions::Lists) positions).
pub const DEFAULT_COLUMNS: [&str; 10] = {
    let mut out = [""; 10];
    let mut i = 0;
    while i < COLUMNS.len() {
        if let Some(p) = COLUMNS[i].lists.export {
            assert!(out[p].is_empty(), "two default columns at one position");
            out[p] = COLUMNS[i].name;
        }
        i += 1;
    }
    let mut p = 0;
    while p < out.len() {
        assert!(!out[p].is_empty(), "a default column position left empty");
        p += 1;
    }
    out
};

/// The parameters of `GET /api/sessions` (and of the export, which ignores `page`/`limit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListParams {
    pub status: Status,
    pub page: Page,
    pub search: Option<Search>,
    pub nas_id: Option<i64>,
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub sort: Sort,
}

/// `format` and `columns` of the export (indexes into [`FIELDS`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportParams {
    pub list: ListParams,
    pub columns: Vec<usize>,
}

/// The decoded `name=value` pairs of a query string.
#[derive(Debug, Default)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(raw: Option<&str>) -> Result<Query, ApiError> {
        let pairs = match raw {
            Some(q) => serde_urlencoded_pairs(q)?,
            None => Vec::new(),
        };
        Ok(Query { pairs })
    }

    /// The query of these `name=value` pairs (a command line standing in for a request).
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Query {
        Query { pairs }
    }

    /// The value of `name`, `None` when absent or empty; 400 when given twice.
    pub fn get(&self, name: &str) -> Result<Option<&str>, ApiError> {
        let mut found = self.pairs.iter().filter(|(k, _)| k == name);
        let first = found.next();
        if found.next().is_some() {
            return Err(ApiError::bad_request(format!(
                "invalid {name}, given more than once"
            )));
        }
        Ok(first.map(|(_, v)| v.as_str()).filter(|v| !v.is_empty()))
    }
}

/// `application/x-www-form-urlencoded` pairs (`+` is a space, `%XX` a byte; invalid UTF-8
/// becomes U+FFFD, which matches nothing).
fn serde_urlencoded_pairs(q: &str) -> Result<Vec<(String, String)>, ApiError> {
    Ok(q.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (form_decode(k), form_decode(v))
        })
        .collect())
}

fn form_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (
                    b.get(i + 1).and_then(|c| hex(*c)),
                    b.get(i + 2).and_then(|c| hex(*c)),
                ) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Longest `wait` of `POST /api/sessions/{radacctid}/disconnect`, in seconds.
pub const MAX_WAIT_SECS: u64 = 10;

/// The disconnect's `wait`: whole seconds, 0 to [`MAX_WAIT_SECS`]; `None` when absent (or
/// empty, as every parameter).
pub fn wait_secs(q: &Query) -> Result<Option<u64>, ApiError> {
    match q.get("wait")? {
        None => Ok(None),
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|n| *n <= MAX_WAIT_SECS)
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "invalid wait, must be an integer between 0 and {MAX_WAIT_SECS} (seconds)"
                ))
            }),
    }
}

/// A date-time bound: RFC 3339 (any offset, converted to UTC) or a bare `YYYY-MM-DD` (UTC
/// midnight). `round_up` rounds fractional seconds up (for `from`), else down (for `to`), as
/// session times are whole seconds.
pub fn parse_time(s: &str, round_up: bool) -> Option<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        let t = t.with_timezone(&Utc);
        let extra = i64::from(round_up && t.timestamp_subsec_nanos() > 0);
        return Some(t.timestamp() + extra);
    }
    let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    // `%Y` takes any number of digits; keep to what RFC 3339 can also say.
    if s.len() != 10 {
        return None;
    }
    Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp())
}

pub(super) fn positive(
    q: &Query,
    name: &str,
    default: u64,
    max: u64,
    rule: &str,
) -> Result<u64, ApiError> {
    match q.get(name)? {
        None => Ok(default),
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| ApiError::bad_request(format!("invalid {name}, {rule}"))),
    }
}

impl ListParams {
    pub fn parse(q: &Query) -> Result<ListParams, ApiError> {
        ListParams::parse_with(q, true)
    }

    /// With `paging` false (the export, docs/ARCHITECTURE.md#sessions-api) `page` and `limit` are
    /// not read at all, whatever they hold, and `page` is left at its default.
    fn parse_with(q: &Query, paging: bool) -> Result<ListParams, ApiError> {
        let status = match q.get("status")? {
            None => Status::Active,
            Some(v) => Status::parse(v).ok_or_else(|| {
                ApiError::bad_request("invalid status, must be active/closed/all")
            })?,
        };
        let page = match paging {
            true => Page {
                page: positive(q, "page", 1, MAX_PAGE, "must be an integer >= 1")?,
                limit: positive(
                    q,
                    "limit",
                    DEFAULT_LIMIT,
                    MAX_LIMIT,
                    &format!("must be between 1 and {MAX_LIMIT}"),
                )?,
            },
            false => Page {
                page: 1,
                limit: DEFAULT_LIMIT,
            },
        };
        let search = match q.get("search")? {
            None => None,
            Some(v) => {
                if v.chars().count() > MAX_SEARCH_CHARS || v.chars().any(forbidden_in_search) {
                    return Err(ApiError::bad_request(format!(
                        "invalid search, must be at most {MAX_SEARCH_CHARS} characters without control characters"
                    )));
                }
                Search::new(v)
            }
        };
        let nas_id = match q.get("nas_id")? {
            None => None,
            Some(v) => Some(
                v.parse::<i64>()
                    .map_err(|_| ApiError::bad_request("invalid nas_id, must be an integer"))?,
            ),
        };
        let time = |name: &str, round_up: bool| -> Result<Option<i64>, ApiError> {
            match q.get(name)? {
                None => Ok(None),
                Some(v) => parse_time(v, round_up).map(Some).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "invalid {name}, must be an RFC 3339 date-time or a YYYY-MM-DD date"
                    ))
                }),
            }
        };
        let from = time("from", true)?;
        let to = time("to", false)?;
        if let (Some(f), Some(t)) = (from, to)
            && t < f
        {
            return Err(ApiError::bad_request(
                "invalid to, must not be earlier than from",
            ));
        }
        let key = match q.get("sort")? {
            None => SortKey::default(),
            Some(v) => SortKey::parse(v).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid sort, must be acctstarttime/acctinputoctets/acctoutputoctets/acctsessiontime",
                )
            })?,
        };
        let order = match q.get("order")? {
            None => Order::default(),
            Some(v) => Order::parse(v)
                .ok_or_else(|| ApiError::bad_request("invalid order, must be asc/desc"))?,
        };
        Ok(ListParams {
            status,
            page,
            search,
            nas_id,
            from,
            to,
            sort: Sort { key, order },
        })
    }
}

/// Widest `window` of an attribution query, in seconds (a day: more is not clock skew).
pub const MAX_WINDOW_SECS: u64 = 86_400;
/// Most sessions in an attribution answer; [`DEFAULT_ATTRIBUTION_LIMIT`] unless asked.
pub const MAX_ATTRIBUTION_LIMIT: u64 = 1_000;
pub const DEFAULT_ATTRIBUTION_LIMIT: u64 = 100;

/// The parameters of `GET /api/attribution`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributionParams {
    /// The address or block asked about.
    pub ip: Target,
    /// The moment, epoch seconds (fractions dropped).
    pub at: i64,
    /// Seconds of clock skew allowed on each side of `at`.
    pub window: i64,
    pub limit: usize,
}

impl AttributionParams {
    pub fn parse(q: &Query) -> Result<AttributionParams, ApiError> {
        const IP_RULE: &str = "must be an IPv4 or IPv6 address, or a block addr/len";
        const AT_RULE: &str = "must be an RFC 3339 date-time with an offset (2026-03-02T14:03:11Z, 2026-03-02T17:03:11+03:00)";
        let ip = match q.get("ip")? {
            None => return Err(ApiError::bad_request(format!("missing ip, {IP_RULE}"))),
            Some(v) => Target::parse(v)
                .ok_or_else(|| ApiError::bad_request(format!("invalid ip, {IP_RULE}")))?,
        };
        let at = match q.get("at")? {
            None => return Err(ApiError::bad_request(format!("missing at, {AT_RULE}"))),
            Some(v) => parse_moment(v)
                .ok_or_else(|| ApiError::bad_request(format!("invalid at, {AT_RULE}")))?,
        };
        let window = match q.get("window")? {
            None => 0,
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|w| *w <= MAX_WINDOW_SECS)
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "invalid window, must be an integer from 0 to {MAX_WINDOW_SECS} (seconds)"
                    ))
                })?,
        };
        let limit = positive(
            q,
            "limit",
            DEFAULT_ATTRIBUTION_LIMIT,
            MAX_ATTRIBUTION_LIMIT,
            &format!("must be between 1 and {MAX_ATTRIBUTION_LIMIT}"),
        )?;
        Ok(AttributionParams {
            ip,
            at,
            window: window as i64,
            limit: limit as usize,
        })
    }
}

/// An RFC 3339 date-time with its offset, as whole epoch seconds (the fraction dropped). A `+`
/// offset sent unencoded reaches us as a space (form decoding) and is read as the `+` it was.
fn parse_moment(v: &str) -> Option<i64> {
    let t = DateTime::parse_from_rfc3339(v).or_else(|e| match v.rsplit_once(' ') {
        Some((time, offset)) => DateTime::parse_from_rfc3339(&format!("{time}+{offset}")),
        None => Err(e),
    });
    t.ok().map(|t| t.timestamp())
}

/// `page` and `limit`, as the sessions list reads them (the audit list).
pub fn parse_page(q: &Query) -> Result<Page, ApiError> {
    Ok(Page {
        page: positive(q, "page", 1, MAX_PAGE, "must be an integer >= 1")?,
        limit: positive(
            q,
            "limit",
            DEFAULT_LIMIT,
            MAX_LIMIT,
            &format!("must be between 1 and {MAX_LIMIT}"),
        )?,
    })
}

impl ExportParams {
    pub fn parse(q: &Query) -> Result<ExportParams, ApiError> {
        match q.get("format")? {
            None | Some("csv") => {}
            Some("xlsx") => {
                return Err(ApiError::bad_request(
                    "invalid format, xlsx is not supported yet (use csv)",
                ));
            }
            Some(_) => return Err(ApiError::bad_request("invalid format, must be csv")),
        }
        let columns = match q.get("columns")? {
            None => DEFAULT_COLUMNS
                .iter()
                .filter_map(|c| FIELDS.iter().position(|f| f == c))
                .collect(),
            Some(v) => {
                let mut cols = Vec::new();
                for name in v.split(',').map(str::trim) {
                    let Some(i) = FIELDS.iter().position(|f| *f == name) else {
                        return Err(ApiError::bad_request(format!(
                            "invalid columns, unknown column {:?} (allowed: {})",
                            name.chars().take(64).collect::<String>(),
                            FIELDS.join(", ")
                        )));
                    };
                    if cols.contains(&i) {
                        return Err(ApiError::bad_request(format!(
                            "invalid columns, {name} given more than once"
                        )));
                    }
                    cols.push(i);
                }
                cols
            }
        };
        Ok(ExportParams {
            list: ListParams::parse_with(q, false)?,
            columns,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(q: &str) -> Result<ListParams, String> {
        ListParams::parse(&Query::parse(Some(q)).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_session_fields_and_default_columns_are_the_seeds_in_its_order() {
        assert_eq!(
            FIELDS,
            [
                "radacctid",
                "username",
                "acctsessionid",
                "nasipaddress",
                "nas_id",
                "nasportid",
                "framedipaddress",
                "callingstationid",
                "acctstarttime",
                "acctstoptime",
                "acctupdatetime",
                "acctinputoctets",
                "acctoutputoctets",
                "acctsessiontime",
                "acctterminatecause",
            ]
        );
        assert_eq!(
            DEFAULT_COLUMNS.join(","),
            "radacctid,username,nasipaddress,framedipaddress,acctstarttime,acctstoptime,\
             acctsessiontime,acctinputoctets,acctoutputoctets,acctterminatecause"
        );
    }

    #[test]
    fn wait_is_0_to_10_seconds() {
        let wait = |q: &str| wait_secs(&Query::parse(Some(q)).expect("query"));
        assert_eq!(wait("").expect("absent"), None);
        assert_eq!(wait("wait=").expect("empty"), None);
        assert_eq!(wait("wait=0").expect("0"), Some(0));
        assert_eq!(wait("wait=10").expect("10"), Some(10));
        for bad in [
            "wait=11",
            "wait=-1",
            "wait=1.5",
            "wait=abc",
            "wait=1&wait=2",
        ] {
            let e = wait(bad).expect_err(bad).to_string();
            assert!(e.starts_with("invalid wait, "), "{bad}: {e}");
        }
    }

    #[test]
    fn defaults_follow_the_seed() {
        let p = parse("").expect("ok");
        assert_eq!(p.status, Status::Active);
        assert_eq!(p.page, Page { page: 1, limit: 50 });
        assert_eq!(p.sort, Sort::default());
        assert_eq!(p.sort.key, SortKey::AcctStartTime);
        assert_eq!(p.sort.order, Order::Desc);
        assert!(parse("unknown=1&status=").is_ok());
    }

    #[test]
    fn invalid_values_name_their_parameter() {
        assert!(parse("search=%zz%&from=2026-05-01T00%3A00%3A00%2B02%3A00").is_ok());
        for (q, name) in [
            ("status=open", "invalid status, must be active/closed/all"),
            ("page=0", "invalid page"),
            ("page=-1", "invalid page"),
            ("limit=501", "invalid limit"),
            ("limit=x", "invalid limit"),
            ("nas_id=one", "invalid nas_id"),
            ("from=yesterday", "invalid from"),
            ("to=2026-13-01", "invalid to"),
            ("from=2026-05-02&to=2026-05-01", "invalid to"),
            ("sort=username", "invalid sort"),
            ("order=up", "invalid order"),
            ("search=%00", "invalid search"),
            ("status=all&status=closed", "invalid status"),
        ] {
            let e = parse(q).expect_err(q);
            assert!(e.starts_with(name), "{q}: {e}");
        }
    }

    #[test]
    fn limits_are_the_published_constants() {
        let ok = |q: String| parse(&q).unwrap_or_else(|e| panic!("{q}: {e}"));
        let bad = |q: String| parse(&q).expect_err(&q);
        assert_eq!(ok(format!("page={MAX_PAGE}")).page.page, MAX_PAGE);
        assert!(bad(format!("page={}", MAX_PAGE + 1)).starts_with("invalid page"));
        assert_eq!(ok(format!("limit={MAX_LIMIT}")).page.limit, MAX_LIMIT);
        assert!(bad(format!("limit={}", MAX_LIMIT + 1)).starts_with("invalid limit"));
        let longest = "é".repeat(MAX_SEARCH_CHARS);
        assert!(ok(format!("search={longest}")).search.is_some());
        assert!(bad(format!("search={longest}x")).starts_with("invalid search"));
        assert_eq!(ok(format!("nas_id={}", i64::MAX)).nas_id, Some(i64::MAX));
        assert_eq!(ok(format!("nas_id={}", i64::MIN)).nas_id, Some(i64::MIN));
        let above = i128::from(i64::MAX) + 1;
        assert!(bad(format!("nas_id={above}")).starts_with("invalid nas_id"));
    }

    #[test]
    fn search_refuses_exactly_the_control_characters() {
        for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
            assert_eq!(
                forbidden_in_search(c),
                c.is_control(),
                "U+{:04X}",
                u32::from(c)
            );
        }
        assert_eq!(search_pattern(), r"^[^\u0000-\u001F\u007F-\u009F]*$");
        assert!(
            parse("search=a%C2%85b").is_err(),
            "U+0085 (NEL) is a control"
        );
        assert!(
            parse("search=a%C2%A0b").is_ok(),
            "U+00A0 (no-break space) is not"
        );
    }

    #[test]
    fn export_ignores_page_and_limit() {
        let q = |s: &str| ExportParams::parse(&Query::parse(Some(s)).expect("q"));
        let plain = q("status=closed&order=asc").expect("ok");
        for paging in [
            "limit=1000",
            "limit=0&page=0",
            "page=x&limit=-1",
            "limit=1&limit=2",
            "page=2&page=3",
        ] {
            let p = q(&format!("status=closed&order=asc&{paging}")).expect(paging);
            assert_eq!(p, plain, "{paging}");
        }
        assert!(q("limit=1000&order=up").is_err(), "filters still validated");
    }

    #[test]
    fn times_accept_rfc3339_and_bare_dates() {
        assert_eq!(parse_time("1970-01-02", false), Some(86_400));
        assert_eq!(parse_time("1970-01-01T01:00:00+01:00", false), Some(0));
        assert_eq!(parse_time("1970-01-01T00:00:00.5Z", true), Some(1));
        assert_eq!(parse_time("1970-01-01T00:00:00.5Z", false), Some(0));
        assert_eq!(parse_time("19700-01-01", false), None);
        assert_eq!(parse_time("2026-05-12 08:00:00", false), None);
    }

    #[test]
    fn attribution_parameters_name_themselves() {
        let parse = |s: &str| {
            AttributionParams::parse(&Query::parse(Some(s)).expect("q")).map_err(|e| e.to_string())
        };
        let p = parse("ip=100.64.3.7&at=2026-03-02T17:03:11%2B03:00").expect("ok");
        assert_eq!(p.ip.to_string(), "100.64.3.7");
        assert_eq!(p.at, parse_time("2026-03-02T14:03:11Z", false).expect("t"));
        assert_eq!((p.window, p.limit), (0, 100));
        let unencoded = parse("ip=100.64.3.7&at=2026-03-02T17:03:11+03:00").expect("ok");
        assert_eq!(unencoded.at, p.at);
        let p = parse("ip=2001:db8:12::/56&at=2026-03-02T14:03:11.9Z&window=300&limit=1000")
            .expect("ok");
        assert_eq!(p.at, parse_time("2026-03-02T14:03:11Z", false).expect("t"));
        assert_eq!((p.window, p.limit), (300, 1000));
        for (q, start) in [
            ("at=2026-03-02T14:03:11Z", "missing ip, "),
            ("ip=100.64.3.7", "missing at, "),
            ("ip=100.64.3&at=2026-03-02T14:03:11Z", "invalid ip, "),
            ("ip=10.0.0.0/33&at=2026-03-02T14:03:11Z", "invalid ip, "),
            ("ip=100.64.3.7&at=2026-03-02", "invalid at, "),
            ("ip=100.64.3.7&at=2026-03-02T14:03:11", "invalid at, "),
            (
                "ip=100.64.3.7&at=2026-03-02T14:03:11Z&window=86401",
                "invalid window, ",
            ),
            (
                "ip=100.64.3.7&at=2026-03-02T14:03:11Z&window=-1",
                "invalid window, ",
            ),
            (
                "ip=100.64.3.7&at=2026-03-02T14:03:11Z&limit=1001",
                "invalid limit, ",
            ),
            (
                "ip=1.2.3.4&ip=100.64.3.7&at=2026-03-02T14:03:11Z",
                "invalid ip, given",
            ),
        ] {
            let e = parse(q).expect_err(q);
            assert!(e.starts_with(start), "{q}: {e}");
        }
    }

    #[test]
    fn export_columns_are_validated() {
        let q = |s: &str| ExportParams::parse(&Query::parse(Some(s)).expect("q"));
        assert_eq!(q("").expect("ok").columns.len(), 10);
        assert_eq!(
            q("columns=username,nas_id").expect("ok").columns,
            vec![1, 4]
        );
        assert!(q("columns=username,password").is_err());
        assert!(q("columns=username;DROP%20TABLE+radacct").is_err());
        assert_eq!(
            q("columns=acctstoptime%2Cnas_id").expect("ok").columns,
            vec![9, 4]
        );
        assert!(
            q("format=xlsx")
                .expect_err("xlsx")
                .to_string()
                .contains("not supported yet")
        );
    }
}
