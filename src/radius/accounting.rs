//! Turns a verified Accounting-Request into an [`AccountingEvent`]: the FreeRADIUS session key
//! (`acct_unique` policy), the event time, and the column values as FreeRADIUS 3.2's PostgreSQL
//! `queries.conf` writes them (empty string vs NULL, enumerated values by dictionary name).
//!
//! Pure: no I/O, no clock (the receive time is passed in).

use std::fmt::Write as _;
use std::net::IpAddr;

use md5::{Digest, Md5};

use super::codec::Packet;
use super::dictionary as d;
use crate::net::{decimal, ipv4_text, ipv6_text};

/// What an Acct-Status-Type asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum EventKind {
    Start,
    InterimUpdate,
    Stop,
    AccountingOn,
    AccountingOff,
}

impl EventKind {
    /// Label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Start => "start",
            EventKind::InterimUpdate => "interim_update",
            EventKind::Stop => "stop",
            EventKind::AccountingOn => "accounting_on",
            EventKind::AccountingOff => "accounting_off",
        }
    }
}

/// One accounting event, with every value already in the form it is written to radacct.
/// Attributes FreeRADIUS writes as `'%{Attr}'` are `String` (empty when absent); those it writes
/// through `NULLIF(…, '')` are `Option`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AccountingEvent {
    pub kind: EventKind,
    /// Event time, whole seconds since the epoch.
    pub time: i64,
    pub acctuniqueid: String,
    pub acctsessionid: String,
    pub username: String,
    pub nasipaddress: IpAddr,
    pub nasportid: Option<String>,
    pub nasporttype: String,
    pub acctauthentic: String,
    pub connectinfo: String,
    pub calledstationid: String,
    pub callingstationid: String,
    pub servicetype: String,
    pub framedprotocol: String,
    pub framedipaddress: Option<String>,
    pub framedipv6address: Option<String>,
    pub framedipv6prefix: Option<String>,
    pub framedinterfaceid: Option<String>,
    pub delegatedipv6prefix: Option<String>,
    pub class: Option<String>,
    pub sessiontime: Option<i64>,
    pub inputoctets: i64,
    pub outputoctets: i64,
    /// Acct-Terminate-Cause by name, `None` when absent.
    pub terminatecause: Option<String>,
    /// True when Event-Timestamp was too far from the receive time and was replaced.
    pub clock_skewed: bool,
}

#[cfg(test)]
impl AccountingEvent {
    /// An event of a PPPoE session with key `acctuniqueid`, for unit tests.
    pub(crate) fn sample(kind: EventKind, acctuniqueid: &str, time: i64) -> AccountingEvent {
        AccountingEvent {
            kind,
            time,
            acctuniqueid: acctuniqueid.into(),
            acctsessionid: "S1".into(),
            username: "bob".into(),
            nasipaddress: "192.0.2.20".parse().expect("ip"),
            nasportid: Some("ether2".into()),
            nasporttype: "Ethernet".into(),
            acctauthentic: "RADIUS".into(),
            connectinfo: String::new(),
            calledstationid: "svc".into(),
            callingstationid: "AA:BB:CC:DD:EE:01".into(),
            servicetype: "Framed-User".into(),
            framedprotocol: "PPP".into(),
            framedipaddress: Some("10.0.0.1".into()),
            framedipv6address: None,
            framedipv6prefix: None,
            framedinterfaceid: None,
            delegatedipv6prefix: None,
            class: None,
            sessiontime: None,
            inputoctets: 0,
            outputoctets: 0,
            terminatecause: None,
            clock_skewed: false,
        }
    }
}

/// The result of reading an Accounting-Request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Event(Box<AccountingEvent>),
    /// A status type radacctd records nothing for (absent, Failed, Tunnel-*, …): answered,
    /// counted, not written (docs/ARCHITECTURE.md#packet).
    Ignored {
        status: Option<u32>,
    },
}

/// Reads an Accounting-Request whose authenticator was already verified.
///
/// `received_at` is the receive time in seconds; `max_clock_skew` bounds how far an
/// Event-Timestamp may be from it before receive time − Acct-Delay-Time is used instead.
pub fn parse(packet: &Packet<'_>, source: IpAddr, received_at: i64, max_clock_skew: i64) -> Parsed {
    let status = packet.attr_u32(d::ACCT_STATUS_TYPE);
    let kind = match status {
        Some(d::STATUS_START) => EventKind::Start,
        Some(d::STATUS_STOP) => EventKind::Stop,
        Some(d::STATUS_INTERIM_UPDATE) => EventKind::InterimUpdate,
        Some(d::STATUS_ACCOUNTING_ON) => EventKind::AccountingOn,
        Some(d::STATUS_ACCOUNTING_OFF) => EventKind::AccountingOff,
        other => return Parsed::Ignored { status: other },
    };

    // preprocess: NAS-IP-Address from the source when the packet has neither address.
    let nasipaddress = packet
        .attr_ipv6(d::NAS_IPV6_ADDRESS)
        .map(IpAddr::V6)
        .or_else(|| packet.attr_ipv4(d::NAS_IP_ADDRESS).map(IpAddr::V4))
        .unwrap_or(source);

    let delay = packet
        .attr_u32(d::ACCT_DELAY_TIME)
        .map(i64::from)
        .unwrap_or(0);
    let fallback_time = received_at - delay;
    let (time, clock_skewed) = match packet.attr_u32(d::EVENT_TIMESTAMP).map(i64::from) {
        Some(ts) if (ts - received_at).abs() <= max_clock_skew => (ts, false),
        Some(_) => (fallback_time, true),
        None => (fallback_time, false),
    };

    let raw_user = packet.attr(d::USER_NAME).unwrap_or_default();
    let raw_session = packet.attr(d::ACCT_SESSION_ID).unwrap_or_default();
    let acctuniqueid = acct_unique_id(packet, nasipaddress);

    let nas_port = packet.attr_u32(d::NAS_PORT);
    let nasportid = match packet.attr(d::NAS_PORT_ID) {
        Some(v) if !v.is_empty() => Some(text(v)),
        _ => nas_port.map(|p| p.to_string()),
    };

    let octets = |lo: u8, hi: u8| -> i64 {
        let lo = packet.attr_u32(lo).map(i64::from).unwrap_or(0);
        let hi = packet.attr_u32(hi).map(i64::from).unwrap_or(0);
        (hi << 32) + lo
    };

    Parsed::Event(Box::new(AccountingEvent {
        kind,
        time,
        acctuniqueid,
        acctsessionid: text(raw_session),
        username: text(raw_user),
        nasipaddress,
        nasportid,
        nasporttype: enum_text(packet, d::NAS_PORT_TYPE),
        acctauthentic: enum_text(packet, d::ACCT_AUTHENTIC),
        connectinfo: string_attr(packet, d::CONNECT_INFO),
        calledstationid: string_attr(packet, d::CALLED_STATION_ID),
        callingstationid: string_attr(packet, d::CALLING_STATION_ID),
        servicetype: enum_text(packet, d::SERVICE_TYPE),
        framedprotocol: enum_text(packet, d::FRAMED_PROTOCOL),
        framedipaddress: packet.attr_ipv4(d::FRAMED_IP_ADDRESS).map(ipv4_text),
        framedipv6address: packet.attr_ipv6(d::FRAMED_IPV6_ADDRESS).map(ipv6_text),
        framedipv6prefix: packet
            .attr_ipv6_prefix(d::FRAMED_IPV6_PREFIX)
            .map(|(a, l)| format!("{}/{l}", ipv6_text(a))),
        framedinterfaceid: packet.attr(d::FRAMED_INTERFACE_ID).and_then(interface_id),
        delegatedipv6prefix: packet
            .attr_ipv6_prefix(d::DELEGATED_IPV6_PREFIX)
            .map(|(a, l)| format!("{}/{l}", ipv6_text(a))),
        class: packet.attr(d::CLASS).map(|v| format!("0x{}", hex(v))),
        sessiontime: packet.attr_u32(d::ACCT_SESSION_TIME).map(i64::from),
        inputoctets: octets(d::ACCT_INPUT_OCTETS, d::ACCT_INPUT_GIGAWORDS),
        outputoctets: octets(d::ACCT_OUTPUT_OCTETS, d::ACCT_OUTPUT_GIGAWORDS),
        terminatecause: packet
            .attr_u32(d::ACCT_TERMINATE_CAUSE)
            .map(|v| d::value_text(d::ACCT_TERMINATE_CAUSE, v).into_owned()),
        clock_skewed,
    }))
}

/// `acctuniqueid` exactly as FreeRADIUS's `acct_unique` policy computes it
/// (docs/reference/freeradius.md §2): the `Class = "ai:<32 hex>"` branch, else
/// `md5("User-Name,Acct-Session-Id,NAS-IPv6-Address or
/// NAS-IP-Address,NAS-Identifier,NAS-Port-Id,NAS-Port")` over the raw values. `nas` is the address
/// after preprocess filled it in.
pub fn acct_unique_id(packet: &Packet<'_>, nas: IpAddr) -> String {
    let session = packet.attr(d::ACCT_SESSION_ID).unwrap_or_default();
    let mut h = Md5::new();
    if let Some(auth_id) = packet.attr(d::CLASS).and_then(class_auth_id) {
        h.update(auth_id);
        h.update(b",");
        h.update(session);
    } else {
        h.update(packet.attr(d::USER_NAME).unwrap_or_default());
        h.update(b",");
        h.update(session);
        h.update(b",");
        match nas {
            IpAddr::V4(a) => h.update(ipv4_text(a).as_bytes()),
            IpAddr::V6(_) => h.update(nas.to_string().as_bytes()),
        }
        h.update(b",");
        h.update(packet.attr(d::NAS_IDENTIFIER).unwrap_or_default());
        h.update(b",");
        h.update(packet.attr(d::NAS_PORT_ID).unwrap_or_default());
        h.update(b",");
        if let Some(port) = packet.attr_u32(d::NAS_PORT) {
            h.update(decimal(port, &mut [0; 10]));
        }
    }
    hex(&h.finalize())
}

/// `ai:` followed by 32 hex digits (case-insensitive) at the start of Class.
fn class_auth_id(class: &[u8]) -> Option<&[u8]> {
    let rest = class.strip_prefix(b"ai:")?;
    let id = rest.get(..32)?;
    id.iter().all(u8::is_ascii_hexdigit).then_some(id)
}

fn enum_text(packet: &Packet<'_>, attr: u8) -> String {
    packet
        .attr_u32(attr)
        .map(|v| d::value_text(attr, v).into_owned())
        .unwrap_or_default()
}

fn string_attr(packet: &Packet<'_>, attr: u8) -> String {
    packet.attr(attr).map(text).unwrap_or_default()
}

/// Framed-Interface-Id as FreeRADIUS prints it: four 16-bit groups in lower-case hex.
fn interface_id(v: &[u8]) -> Option<String> {
    let b: &[u8; 8] = v.try_into().ok()?;
    Some(format!(
        "{:x}:{:x}:{:x}:{:x}",
        u16::from_be_bytes([b[0], b[1]]),
        u16::from_be_bytes([b[2], b[3]]),
        u16::from_be_bytes([b[4], b[5]]),
        u16::from_be_bytes([b[6], b[7]])
    ))
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// A text attribute as stored: UTF-8 kept as is; invalid bytes and NUL become `=XX`
/// (docs/ARCHITECTURE.md#packet), so nothing is lost and every value is valid text for both stores.
pub fn text(bytes: &[u8]) -> String {
    if let Ok(s) = std::str::from_utf8(bytes)
        && !s.contains('\0')
    {
        return s.to_owned();
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    let mut rest = bytes;
    while !rest.is_empty() {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                push_escaping_nul(&mut out, s);
                break;
            }
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                // valid_up_to guarantees this prefix is UTF-8.
                push_escaping_nul(&mut out, std::str::from_utf8(valid).unwrap_or_default());
                let bad = e.error_len().unwrap_or(after.len());
                for b in &after[..bad] {
                    let _ = write!(out, "={b:02X}");
                }
                rest = &after[bad..];
            }
        }
    }
    out
}

fn push_escaping_nul(out: &mut String, s: &str) {
    for c in s.chars() {
        if c == '\0' {
            out.push_str("=00");
        } else {
            out.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::radius::codec::{Code, PacketBuilder};
    use std::net::Ipv4Addr;

    const SECRET: &[u8] = b"s3cret";

    fn packet(build: impl FnOnce(&mut PacketBuilder)) -> Vec<u8> {
        let mut b = PacketBuilder::new(Code::AccountingRequest, 1);
        build(&mut b);
        b.encode_request(SECRET).expect("encodes")
    }

    fn md5_hex(s: &str) -> String {
        hex(&Md5::digest(s.as_bytes()))
    }

    fn event(bytes: &[u8], now: i64) -> AccountingEvent {
        let p = Packet::decode(bytes).expect("decodes");
        match parse(&p, "192.0.2.99".parse().expect("ip"), now, 86_400) {
            Parsed::Event(e) => *e,
            other => panic!("not an event: {other:?}"),
        }
    }

    #[test]
    fn unique_id_matches_freeradius_policy() {
        let bytes = packet(|b| {
            b.attr(d::USER_NAME, b"bob").unwrap();
            b.attr(d::ACCT_SESSION_ID, b"S1").unwrap();
            b.attr_ipv4(d::NAS_IP_ADDRESS, Ipv4Addr::new(192, 0, 2, 10))
                .unwrap();
            b.attr(d::NAS_IDENTIFIER, b"bng-lab-1").unwrap();
            b.attr(d::NAS_PORT_ID, b"ether2").unwrap();
            b.attr_u32(d::NAS_PORT, 15).unwrap();
            b.attr_u32(d::ACCT_STATUS_TYPE, d::STATUS_START).unwrap();
        });
        let e = event(&bytes, 1_000);
        assert_eq!(
            e.acctuniqueid,
            md5_hex("bob,S1,192.0.2.10,bng-lab-1,ether2,15")
        );
        assert_eq!(e.nasportid.as_deref(), Some("ether2"));
    }

    #[test]
    fn absent_attributes_hash_as_empty_and_nas_ip_comes_from_source() {
        let bytes = packet(|b| {
            b.attr(d::USER_NAME, b"bob").unwrap();
            b.attr(d::ACCT_SESSION_ID, b"S1").unwrap();
            b.attr_u32(d::ACCT_STATUS_TYPE, d::STATUS_START).unwrap();
        });
        let e = event(&bytes, 1_000);
        assert_eq!(e.acctuniqueid, md5_hex("bob,S1,192.0.2.99,,,"));
        assert_eq!(e.nasipaddress.to_string(), "192.0.2.99");
        assert_eq!(e.nasportid, None);
        assert_eq!(e.nasporttype, "");
        assert_eq!(e.framedipaddress, None);
    }

    #[test]
    fn ipv6_nas_address_wins_and_nas_port_fills_port_id() {
        let bytes = packet(|b| {
            b.attr(d::USER_NAME, b"bob").unwrap();
            b.attr(d::ACCT_SESSION_ID, b"S1").unwrap();
            b.attr_ipv4(d::NAS_IP_ADDRESS, Ipv4Addr::new(192, 0, 2, 10))
                .unwrap();
            let v6: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
            b.attr(d::NAS_IPV6_ADDRESS, &v6.octets()).unwrap();
            b.attr_u32(d::NAS_PORT, 7).unwrap();
            b.attr_u32(d::ACCT_STATUS_TYPE, d::STATUS_STOP).unwrap();
        });
        let e = event(&bytes, 1_000);
        assert_eq!(e.acctuniqueid, md5_hex("bob,S1,2001:db8::1,,,7"));
        assert_eq!(e.nasportid.as_deref(), Some("7"));
        assert_eq!(e.kind, EventKind::Stop);
    }

    #[test]
    fn class_auth_id_branch() {
        let class = b"ai:0123456789abcdefABCDEF0123456789";
        let bytes = packet(|b| {
            b.attr(d::USER_NAME, b"bob").unwrap();
            b.attr(d::ACCT_SESSION_ID, b"S1").unwrap();
            b.attr(d::CLASS, class).unwrap();
            b.attr_u32(d::ACCT_STATUS_TYPE, d::STATUS_START).unwrap();
        });
        let e = event(&bytes, 1_000);
        assert_eq!(
            e.acctuniqueid,
            md5_hex("0123456789abcdefABCDEF0123456789,S1")
        );
        assert_eq!(e.class, Some(format!("0x{}", hex(class))));
    }

    #[test]
    fn gigawords_and_enumerations() {
        let bytes = packet(|b| {
            b.attr_u32(d::ACCT_STATUS_TYPE, d::STATUS_INTERIM_UPDATE)
                .unwrap();
            b.attr_u32(d::ACCT_INPUT_OCTETS, 5).unwrap();
            b.attr_u32(d::ACCT_INPUT_GIGAWORDS, 2).unwrap();
            b.attr_u32(d::ACCT_OUTPUT_OCTETS, 7).unwrap();
            b.attr_u32(d::SERVICE_TYPE, 2).unwrap();
            b.attr_u32(d::FRAMED_PROTOCOL, 1).unwrap();
            b.attr_u32(d::NAS_PORT_TYPE, 15).unwrap();
            b.attr_u32(d::ACCT_AUTHENTIC, 1).unwrap();
            b.attr_u32(d::ACCT_TERMINATE_CAUSE, 4242).unwrap();
        });
        let e = event(&bytes, 1_000);
        assert_eq!(e.inputoctets, 8_589_934_597);
        assert_eq!(e.outputoctets, 7);
        assert_eq!(e.servicetype, "Framed-User");
        assert_eq!(e.framedprotocol, "PPP");
        assert_eq!(e.nasporttype, "Ethernet");
        assert_eq!(e.acctauthentic, "RADIUS");
        assert_eq!(e.terminatecause.as_deref(), Some("4242"));
    }

    #[test]
    fn event_time_rules() {
        let with = |ts: Option<u32>, delay: Option<u32>| {
            let bytes = packet(|b| {
                b.attr_u32(d::ACCT_STATUS_TYPE, d::STATUS_START).unwrap();
                if let Some(ts) = ts {
                    b.attr_u32(d::EVENT_TIMESTAMP, ts).unwrap();
                }
                if let Some(delay) = delay {
                    b.attr_u32(d::ACCT_DELAY_TIME, delay).unwrap();
                }
            });
            let e = event(&bytes, 1_000_000);
            (e.time, e.clock_skewed)
        };
        assert_eq!(with(None, Some(30)), (999_970, false));
        assert_eq!(with(Some(999_000), Some(30)), (999_000, false));
        assert_eq!(with(Some(5), Some(30)), (999_970, true));
    }

    #[test]
    fn unknown_status_is_ignored() {
        let bytes = packet(|b| {
            b.attr_u32(d::ACCT_STATUS_TYPE, 15).unwrap();
        });
        let p = Packet::decode(&bytes).unwrap();
        let got = parse(&p, "192.0.2.1".parse().unwrap(), 0, 10);
        assert_eq!(got, Parsed::Ignored { status: Some(15) });
    }

    #[test]
    fn text_escapes_invalid_utf8_and_nul() {
        assert_eq!(text("o'brien+xé@ex.org".as_bytes()), "o'brien+xé@ex.org");
        assert_eq!(text(b"a\0b\xffc"), "a=00b=FFc");
        assert_eq!(text(b"\xe2\x82"), "=E2=82");
    }
}
