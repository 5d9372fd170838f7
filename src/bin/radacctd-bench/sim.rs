//! The simulated BNG: who the subscribers are (usernames, MACs, framed IPs, NAS ports spread
//! over several NASes), how their counters grow, how each Accounting-Request is encoded, and the
//! `acctuniqueid` FreeRADIUS's `acct_unique` policy gives each session. Pure: no I/O.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use md5::{Digest, Md5};
use radacctd::radius::codec::{Code, EncodeError, PacketBuilder};
use radacctd::radius::dictionary as d;

/// Mikrotik-Rate-Limit (MikroTik dictionary, vendor 14988).
pub const MIKROTIK_RATE_LIMIT: u8 = 8;
/// Mikrotik-Realm (MikroTik dictionary, vendor 14988).
pub const MIKROTIK_REALM: u8 = 9;
/// Acct-Terminate-Cause User-Request (RFC 2866 §5.10).
pub const CAUSE_USER_REQUEST: u32 = 1;
/// What FreeRADIUS writes to `acctterminatecause` for [`CAUSE_USER_REQUEST`].
pub const CAUSE_USER_REQUEST_TEXT: &str = "User-Request";

/// Which Accounting-Request a job sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Start,
    Interim,
    Stop,
}

impl Kind {
    pub fn status_type(self) -> u32 {
        match self {
            Kind::Start => d::STATUS_START,
            Kind::Interim => d::STATUS_INTERIM_UPDATE,
            Kind::Stop => d::STATUS_STOP,
        }
    }

    pub fn index(self) -> usize {
        match self {
            Kind::Start => 0,
            Kind::Interim => 1,
            Kind::Stop => 2,
        }
    }
}

/// The fixed shape of the simulated network.
#[derive(Debug, Clone)]
pub struct Model {
    /// Number of subscriber sessions (slots; a churned slot starts a new incarnation).
    pub sessions: u32,
    /// Number of NASes; session `i` lives on NAS `i % nases`.
    pub nases: u32,
    /// Usernames are `<prefix><i, 7 digits>@bng.example`.
    pub user_prefix: String,
    /// Acct-Session-Id of session `i`, incarnation `k` is `sid_base + k·sessions + i`, 8 hex
    /// digits.
    pub sid_base: u32,
    /// Interim interval in seconds (5 minutes on a typical MikroTik setup).
    pub interval: u32,
    /// Unix time the simulated timeline starts at (the first Starts are `t0 .. t0+59`).
    pub t0: u32,
}

/// Everything that identifies one session on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub sid: String,
    pub nas_ip: Ipv4Addr,
    pub nas_id: String,
    pub port_id: String,
    pub port: u32,
    pub mac: String,
    pub framed_ip: Ipv4Addr,
    pub called: String,
}

impl Identity {
    /// FreeRADIUS's `acctuniqueid` for this session (see [`acct_unique_id`]).
    pub fn acct_unique_id(&self) -> String {
        acct_unique_id(
            &self.user,
            &self.sid,
            self.nas_ip,
            &self.nas_id,
            &self.port_id,
            Some(self.port),
        )
    }
}

/// The counters and times of one Interim-Update or Stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub session_time: u32,
    pub input: u64,
    pub output: u64,
}

impl Model {
    /// Largest number of NASes: their addresses are 192.0.2.10 ..= 192.0.2.254.
    pub const MAX_NASES: u32 = 245;

    pub fn nas_of(&self, i: u32) -> u32 {
        i % self.nases.max(1)
    }

    pub fn nas_ip(&self, nas: u32) -> Ipv4Addr {
        Ipv4Addr::new(192, 0, 2, (10 + nas.min(Self::MAX_NASES - 1)) as u8)
    }

    pub fn nas_identifier(&self, nas: u32) -> String {
        format!("bench-bng-{}", nas + 1)
    }

    /// Acct-Session-Id of incarnation `inc` of session `i`: 8 lower-case hex digits as a
    /// MikroTik writes them.
    pub fn session_id(&self, i: u32, inc: u32) -> String {
        let n = self
            .sid_base
            .wrapping_add(inc.wrapping_mul(self.sessions))
            .wrapping_add(i);
        format!("{n:08x}")
    }

    /// The identity of incarnation `inc` of session `i`. Username, MAC, framed IP and
    /// interface stay with the subscriber; Acct-Session-Id and NAS-Port are new per
    /// incarnation, as on a MikroTik where every PPPoE session gets a new interface.
    pub fn identity(&self, i: u32, inc: u32) -> Identity {
        let nas = self.nas_of(i);
        let local = i / self.nases.max(1);
        let mut mac = String::with_capacity(17);
        let _ = write!(mac, "02:BE");
        for b in i.to_be_bytes() {
            let _ = write!(mac, ":{b:02X}");
        }
        Identity {
            user: format!("{}{i:07}@bng.example", self.user_prefix),
            sid: self.session_id(i, inc),
            nas_ip: self.nas_ip(nas),
            nas_id: self.nas_identifier(nas),
            port_id: format!("ether{}", 2 + local % 6),
            port: 0x00F0_0000u32
                .wrapping_add(local)
                .wrapping_add(inc.wrapping_mul(self.sessions)),
            mac,
            framed_ip: Ipv4Addr::from(0x6440_0001u32.wrapping_add(i)),
            called: format!("pppoe-bng{}", nas + 1),
        }
    }

    /// Event-Timestamp of the first Start of session `i` on the simulated timeline.
    pub fn first_start_ts(&self, i: u32) -> u32 {
        self.t0.wrapping_add(i % 60)
    }

    /// Every tenth session (i ≡ 9 mod 10) downloads fast enough to pass 4 GiB within one
    /// interval, every twentieth (i ≡ 19 mod 20) uploads that much too, so both gigaword
    /// attributes are exercised.
    pub fn heavy_download(i: u32) -> bool {
        i % 10 == 9
    }

    pub fn heavy_upload(i: u32) -> bool {
        i % 20 == 19
    }

    /// Bytes per second (input = from the subscriber, output = to the subscriber).
    pub fn rates(i: u32) -> (u64, u64) {
        let out = if Self::heavy_download(i) {
            18_000_000 + u64::from(i % 97) * 10_000
        } else {
            5_000 + u64::from(i % 1013) * 300
        };
        let inp = if Self::heavy_upload(i) {
            out
        } else {
            out / 6 + 100
        };
        (inp, out)
    }

    /// Counters after `session_time` seconds: grow monotonically with time.
    pub fn usage(i: u32, session_time: u32) -> Usage {
        let (inp, out) = Self::rates(i);
        Usage {
            session_time,
            input: inp * u64::from(session_time),
            output: out * u64::from(session_time),
        }
    }

    /// Mikrotik-Rate-Limit of session `i` (a few tariff plans).
    pub fn rate_limit(i: u32) -> &'static str {
        match i % 4 {
            0 => "10M/50M",
            1 => "20M/100M",
            2 => "50M/200M",
            _ => "100M/500M",
        }
    }
}

/// `acctuniqueid` as FreeRADIUS 3.2's `acct_unique` policy computes it (no `ai:` Class):
/// `md5("User-Name,Acct-Session-Id,NAS-IP-Address,NAS-Identifier,NAS-Port-Id,NAS-Port")` in
/// lower-case hex; an absent attribute expands to the empty string. Computed here independently
/// of the daemon's code so that the check means something.
pub fn acct_unique_id(
    user: &str,
    sid: &str,
    nas_ip: Ipv4Addr,
    nas_id: &str,
    port_id: &str,
    port: Option<u32>,
) -> String {
    let port = port.map(|p| p.to_string()).unwrap_or_default();
    let text = format!("{user},{sid},{nas_ip},{nas_id},{port_id},{port}");
    let digest = Md5::digest(text.as_bytes());
    let mut hex = String::with_capacity(32);
    for b in digest {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// One Accounting-Request to encode.
#[derive(Debug, Clone, Copy)]
pub struct Event {
    pub kind: Kind,
    pub event_timestamp: u32,
    /// Counters for Interim-Update and Stop (ignored for Start).
    pub usage: Usage,
}

/// Encodes and signs (RFC 2866 §3) the Accounting-Request a MikroTik BNG sends for `event`,
/// into `out` (cleared first).
pub fn encode_request(
    id: &Identity,
    i: u32,
    event: &Event,
    identifier: u8,
    secret: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let mut b = PacketBuilder::new(Code::AccountingRequest, identifier);
    b.attr_u32(d::ACCT_STATUS_TYPE, event.kind.status_type())?
        .attr(d::USER_NAME, id.user.as_bytes())?
        .attr(d::ACCT_SESSION_ID, id.sid.as_bytes())?
        .attr_ipv4(d::NAS_IP_ADDRESS, id.nas_ip)?
        .attr(d::NAS_IDENTIFIER, id.nas_id.as_bytes())?
        .attr_u32(d::NAS_PORT, id.port)?
        .attr(d::NAS_PORT_ID, id.port_id.as_bytes())?
        .attr_u32(d::NAS_PORT_TYPE, 15)? // Ethernet
        .attr_u32(d::SERVICE_TYPE, 2)? // Framed-User
        .attr_u32(d::FRAMED_PROTOCOL, 1)? // PPP
        .attr(d::CALLING_STATION_ID, id.mac.as_bytes())?
        .attr(d::CALLED_STATION_ID, id.called.as_bytes())?
        .attr_u32(d::ACCT_AUTHENTIC, 1)? // RADIUS
        .attr_ipv4(d::FRAMED_IP_ADDRESS, id.framed_ip)?
        .attr_u32(d::EVENT_TIMESTAMP, event.event_timestamp)?
        .attr_u32(d::ACCT_DELAY_TIME, 0)?
        .vendor_attr(
            d::VENDOR_MIKROTIK,
            MIKROTIK_RATE_LIMIT,
            Model::rate_limit(i).as_bytes(),
        )?
        .vendor_attr(d::VENDOR_MIKROTIK, MIKROTIK_REALM, b"bng.example")?;
    if event.kind != Kind::Start {
        let u = &event.usage;
        b.attr_u32(d::ACCT_SESSION_TIME, u.session_time)?
            .attr_u32(d::ACCT_INPUT_OCTETS, u.input as u32)?
            .attr_u32(d::ACCT_INPUT_GIGAWORDS, (u.input >> 32) as u32)?
            .attr_u32(d::ACCT_OUTPUT_OCTETS, u.output as u32)?
            .attr_u32(d::ACCT_OUTPUT_GIGAWORDS, (u.output >> 32) as u32)?
            .attr_u32(d::ACCT_INPUT_PACKETS, (u.input / 700) as u32)?
            .attr_u32(d::ACCT_OUTPUT_PACKETS, (u.output / 1300) as u32)?;
    }
    if event.kind == Kind::Stop {
        b.attr_u32(d::ACCT_TERMINATE_CAUSE, CAUSE_USER_REQUEST)?;
    }
    b.encode_request_into(secret, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use radacctd::radius::codec::Packet;
    use std::collections::HashSet;

    fn model(sessions: u32) -> Model {
        Model {
            sessions,
            nases: 4,
            user_prefix: "bench".into(),
            sid_base: 0x81a0_0000,
            interval: 300,
            t0: 1_700_000_000,
        }
    }

    #[test]
    fn acct_unique_id_matches_freeradius_formula() {
        // Expected values computed with coreutils, e.g. `printf 'bob,S1,192.0.2.10,,,' | md5sum`.
        // md5("bob,S1,192.0.2.10,,,") is docs/reference/freeradius.md §2's example (absent =
        // empty).
        assert_eq!(
            acct_unique_id("bob", "S1", Ipv4Addr::new(192, 0, 2, 10), "", "", None),
            "98e1901cc5f3d5035fe966d84fd72f02"
        );
        assert_eq!(
            acct_unique_id(
                "user1@example.lb",
                "8a3f0001",
                Ipv4Addr::new(192, 0, 2, 10),
                "bng-lab-1",
                "ether3",
                None
            ),
            "3768f8581619186d0f1c13554c7b2730"
        );
        let with_port = acct_unique_id(
            "u",
            "00000001",
            Ipv4Addr::new(192, 0, 2, 11),
            "n",
            "ether2",
            Some(15728640),
        );
        assert_eq!(with_port, "39d955cfb93641b510827de6d536f5e3");
        assert_eq!(with_port.len(), 32);
        assert!(
            with_port
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }

    #[test]
    fn identities_are_distinct_and_well_formed() {
        let m = model(25_000);
        let mut users = HashSet::new();
        let mut sids = HashSet::new();
        let mut macs = HashSet::new();
        let mut ips = HashSet::new();
        let mut ports = HashSet::new();
        let mut keys = HashSet::new();
        let mut nas_ips = HashSet::new();
        for i in 0..m.sessions {
            let id = m.identity(i, 0);
            assert_eq!(id.sid.len(), 8);
            assert!(id.sid.bytes().all(|c| c.is_ascii_hexdigit()));
            assert!(id.port_id.starts_with("ether"));
            assert_eq!(id.mac.len(), 17);
            assert_eq!(id.nas_ip.octets()[..3], [192, 0, 2]);
            assert_eq!(id.nas_id, m.nas_identifier(m.nas_of(i)));
            users.insert(id.user.clone());
            sids.insert(id.sid.clone());
            macs.insert(id.mac.clone());
            ips.insert(id.framed_ip);
            ports.insert((id.nas_ip, id.port));
            nas_ips.insert(id.nas_ip);
            keys.insert(id.acct_unique_id());
        }
        let n = m.sessions as usize;
        for (what, len) in [
            ("users", users.len()),
            ("sids", sids.len()),
            ("macs", macs.len()),
            ("framed ips", ips.len()),
            ("nas ports", ports.len()),
            ("keys", keys.len()),
        ] {
            assert_eq!(len, n, "{what} distinct");
        }
        assert_eq!(nas_ips.len(), 4);
        // A new incarnation keeps the subscriber but gets a new session id, port and key.
        let a = m.identity(7, 0);
        let b = m.identity(7, 1);
        assert_eq!(
            (a.user.as_str(), a.mac.as_str()),
            (b.user.as_str(), b.mac.as_str())
        );
        assert_ne!(a.sid, b.sid);
        assert_ne!(a.acct_unique_id(), b.acct_unique_id());
        assert!(
            !sids.contains(&b.sid),
            "incarnation 1 reuses no incarnation-0 sid"
        );
        assert_eq!(m.identity(0, 0).sid, "81a00000");
        assert_eq!(m.identity(0, 0).user, "bench0000000@bng.example");
    }

    #[test]
    fn counters_grow_and_some_pass_4_gib() {
        let mut heavy = 0;
        for i in 0..100 {
            let a = Model::usage(i, 300);
            let b = Model::usage(i, 600);
            assert!(b.input > a.input && b.output > a.output);
            if a.output > u64::from(u32::MAX) {
                heavy += 1;
                assert!(Model::heavy_download(i));
            }
        }
        assert_eq!(heavy, 10, "every 10th session passes 4 GiB in one interval");
        assert!(Model::usage(19, 300).input > u64::from(u32::MAX));
    }

    #[test]
    fn encoded_request_carries_the_bng_attributes() {
        let m = model(100);
        let i = 19;
        let id = m.identity(i, 0);
        let usage = Model::usage(i, 450);
        let ev = Event {
            kind: Kind::Stop,
            event_timestamp: m.first_start_ts(i) + 450,
            usage,
        };
        let mut out = Vec::new();
        encode_request(&id, i, &ev, 42, b"testing123", &mut out).unwrap();
        let p = Packet::decode(&out).unwrap();
        assert_eq!(p.code(), Code::AccountingRequest);
        assert_eq!(p.identifier(), 42);
        assert!(p.verify_request_authenticator(b"testing123"));
        assert_eq!(p.attr_u32(d::ACCT_STATUS_TYPE), Some(d::STATUS_STOP));
        assert_eq!(p.attr(d::USER_NAME), Some(id.user.as_bytes()));
        assert_eq!(p.attr(d::ACCT_SESSION_ID), Some(id.sid.as_bytes()));
        assert_eq!(p.attr_ipv4(d::NAS_IP_ADDRESS), Some(id.nas_ip));
        assert_eq!(p.attr(d::NAS_IDENTIFIER), Some(id.nas_id.as_bytes()));
        assert_eq!(p.attr(d::NAS_PORT_ID), Some(id.port_id.as_bytes()));
        assert_eq!(p.attr_u32(d::NAS_PORT), Some(id.port));
        assert_eq!(p.attr(d::CALLING_STATION_ID), Some(id.mac.as_bytes()));
        assert_eq!(p.attr_ipv4(d::FRAMED_IP_ADDRESS), Some(id.framed_ip));
        assert_eq!(p.attr_u32(d::SERVICE_TYPE), Some(2));
        assert_eq!(p.attr_u32(d::FRAMED_PROTOCOL), Some(1));
        assert_eq!(p.attr_u32(d::NAS_PORT_TYPE), Some(15));
        assert_eq!(p.attr_u32(d::ACCT_AUTHENTIC), Some(1));
        assert_eq!(p.attr_u32(d::EVENT_TIMESTAMP), Some(ev.event_timestamp));
        assert_eq!(p.attr_u32(d::ACCT_SESSION_TIME), Some(450));
        assert_eq!(p.attr_u32(d::ACCT_TERMINATE_CAUSE), Some(1));
        let total = |lo, hi| {
            (u64::from(p.attr_u32(hi).unwrap()) << 32) + u64::from(p.attr_u32(lo).unwrap())
        };
        assert_eq!(
            total(d::ACCT_INPUT_OCTETS, d::ACCT_INPUT_GIGAWORDS),
            usage.input
        );
        assert_eq!(
            total(d::ACCT_OUTPUT_OCTETS, d::ACCT_OUTPUT_GIGAWORDS),
            usage.output
        );
        assert!(p.attr_u32(d::ACCT_OUTPUT_GIGAWORDS).unwrap() >= 1);
        assert_eq!(
            p.vendor_attr(d::VENDOR_MIKROTIK, MIKROTIK_REALM),
            Some(&b"bng.example"[..])
        );
        assert_eq!(
            p.vendor_attr(d::VENDOR_MIKROTIK, MIKROTIK_RATE_LIMIT),
            Some(Model::rate_limit(i).as_bytes())
        );
        // A Start carries no counters and no cause.
        let start = Event {
            kind: Kind::Start,
            event_timestamp: m.first_start_ts(i),
            usage: Model::usage(i, 0),
        };
        encode_request(&id, i, &start, 1, b"s", &mut out).unwrap();
        let p = Packet::decode(&out).unwrap();
        assert_eq!(p.attr_u32(d::ACCT_STATUS_TYPE), Some(d::STATUS_START));
        assert_eq!(p.attr(d::ACCT_INPUT_OCTETS), None);
        assert_eq!(p.attr(d::ACCT_TERMINATE_CAUSE), None);
        assert!(
            out.len() < 300,
            "a typical request stays small: {}",
            out.len()
        );
    }
}
