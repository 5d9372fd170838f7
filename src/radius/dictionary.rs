//! RADIUS dictionary facts: attribute type numbers (RFC 2865 §5, RFC 2866 §5, RFC 2869 §5,
//! RFC 3162 §2, RFC 4818, RFC 5176 §3.5, RFC 6911) and the FreeRADIUS 3.2 dictionary names of
//! enumerated values, as written to radacct. It must not read dictionary files at run time, do
//! I/O or know about packets.
//!
//! The value tables are what FreeRADIUS prints after loading `/usr/share/freeradius/dictionary`
//! (Debian `freeradius-common` 3.2.1): every `VALUE` line of the seven enumerated attributes
//! from every included file, where for one number the name loaded last wins (FreeRADIUS's
//! `dict_addvalue` replaces the by-value entry), except that a `VALUE` read before its
//! `ATTRIBUTE` (`dictionary.compat`, `dictionary.usr.illegal`) only fills numbers nothing
//! else names. The other names are accepted by [`value_of`] as aliases. Hence Service-Type 12
//! prints as `Sip-session` (`dictionary.columbia_university` overrides IANA's `Voice`) and
//! Error-Cause keeps RFC 3576's names (`Residual-Context-Removed`, not RFC 5176's
//! "Residual Session Context Removed").

use std::borrow::Cow;

pub const USER_NAME: u8 = 1;
pub const NAS_IP_ADDRESS: u8 = 4;
pub const NAS_PORT: u8 = 5;
pub const SERVICE_TYPE: u8 = 6;
pub const FRAMED_PROTOCOL: u8 = 7;
pub const FRAMED_IP_ADDRESS: u8 = 8;
pub const CLASS: u8 = 25;
pub const VENDOR_SPECIFIC: u8 = 26;
pub const CALLED_STATION_ID: u8 = 30;
pub const CALLING_STATION_ID: u8 = 31;
pub const NAS_IDENTIFIER: u8 = 32;
pub const PROXY_STATE: u8 = 33;
pub const ACCT_STATUS_TYPE: u8 = 40;
pub const ACCT_DELAY_TIME: u8 = 41;
pub const ACCT_INPUT_OCTETS: u8 = 42;
pub const ACCT_OUTPUT_OCTETS: u8 = 43;
pub const ACCT_SESSION_ID: u8 = 44;
pub const ACCT_AUTHENTIC: u8 = 45;
pub const ACCT_SESSION_TIME: u8 = 46;
pub const ACCT_INPUT_PACKETS: u8 = 47;
pub const ACCT_OUTPUT_PACKETS: u8 = 48;
pub const ACCT_TERMINATE_CAUSE: u8 = 49;
pub const ACCT_INPUT_GIGAWORDS: u8 = 52;
pub const ACCT_OUTPUT_GIGAWORDS: u8 = 53;
pub const EVENT_TIMESTAMP: u8 = 55;
pub const NAS_PORT_TYPE: u8 = 61;
pub const CONNECT_INFO: u8 = 77;
pub const MESSAGE_AUTHENTICATOR: u8 = 80;
pub const ACCT_INTERIM_INTERVAL: u8 = 85;
pub const NAS_PORT_ID: u8 = 87;
pub const NAS_IPV6_ADDRESS: u8 = 95;
pub const FRAMED_INTERFACE_ID: u8 = 96;
pub const FRAMED_IPV6_PREFIX: u8 = 97;
pub const ERROR_CAUSE: u8 = 101;
pub const DELEGATED_IPV6_PREFIX: u8 = 123;
pub const FRAMED_IPV6_ADDRESS: u8 = 168;

/// MikroTik's IANA Private Enterprise Number, for its Vendor-Specific attributes.
pub const VENDOR_MIKROTIK: u32 = 14988;

/// MikroTik's `Mikrotik-Rate-Limit` (RouterOS rate-limit syntax, see `rate_limit`).
pub const MIKROTIK_RATE_LIMIT: u8 = 8;
/// MikroTik's `Mikrotik-Address-List` (the firewall address list the session's address joins).
pub const MIKROTIK_ADDRESS_LIST: u8 = 19;
/// Session-Timeout (RFC 2865 §5.27).
pub const SESSION_TIMEOUT: u8 = 27;
/// Filter-Id (RFC 2865 §5.11).
pub const FILTER_ID: u8 = 11;

/// How an attribute's value is written on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    /// Text (`string`), 1 to 253 octets (247 inside a Vendor-Specific).
    Text,
    /// A 32-bit unsigned number (`integer`).
    Integer,
    /// An IPv4 address (`ipaddr`).
    Ipv4Addr,
}

/// An attribute a CoA-Request may carry to change a session, as the FreeRADIUS dictionaries
/// define it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttrDef {
    /// The FreeRADIUS dictionary name.
    pub name: &'static str,
    /// The vendor of a Vendor-Specific sub-attribute; `None` for a standard attribute.
    pub vendor: Option<u32>,
    pub typ: u8,
    pub value: ValueType,
}

const fn std_attr(name: &'static str, typ: u8, value: ValueType) -> AttrDef {
    AttrDef {
        name,
        vendor: None,
        typ,
        value,
    }
}

const fn mikrotik(name: &'static str, typ: u8, value: ValueType) -> AttrDef {
    AttrDef {
        name,
        vendor: Some(VENDOR_MIKROTIK),
        typ,
        value,
    }
}

/// The attributes a CoA-Request may change (RFC 2865, RFC 2869, and FreeRADIUS's
/// `dictionary.mikrotik`), by the names configuration uses. Identification attributes
/// (User-Name, Acct-Session-Id, NAS-IP-Address, Framed-IP-Address) are not among them: the
/// request sets those from the session.
pub const CHANGE_ATTRIBUTES: &[AttrDef] = &[
    std_attr("Filter-Id", FILTER_ID, ValueType::Text),
    std_attr("Reply-Message", 18, ValueType::Text),
    std_attr("Class", CLASS, ValueType::Text),
    std_attr("Session-Timeout", SESSION_TIMEOUT, ValueType::Integer),
    std_attr("Idle-Timeout", 28, ValueType::Integer),
    std_attr(
        "Acct-Interim-Interval",
        ACCT_INTERIM_INTERVAL,
        ValueType::Integer,
    ),
    std_attr("Framed-Pool", 88, ValueType::Text),
    mikrotik("Mikrotik-Recv-Limit", 1, ValueType::Integer),
    mikrotik("Mikrotik-Xmit-Limit", 2, ValueType::Integer),
    mikrotik("Mikrotik-Group", 3, ValueType::Text),
    mikrotik("Mikrotik-Rate-Limit", MIKROTIK_RATE_LIMIT, ValueType::Text),
    mikrotik("Mikrotik-Recv-Limit-Gigawords", 14, ValueType::Integer),
    mikrotik("Mikrotik-Xmit-Limit-Gigawords", 15, ValueType::Integer),
    mikrotik("Mikrotik-Total-Limit", 17, ValueType::Integer),
    mikrotik("Mikrotik-Total-Limit-Gigawords", 18, ValueType::Integer),
    mikrotik(
        "Mikrotik-Address-List",
        MIKROTIK_ADDRESS_LIST,
        ValueType::Text,
    ),
    mikrotik("Mikrotik-Delegated-IPv6-Pool", 22, ValueType::Text),
];

/// The [`CHANGE_ATTRIBUTES`] entry named `name`, ASCII case-insensitively as FreeRADIUS
/// matches names.
pub fn change_attribute(name: &str) -> Option<&'static AttrDef> {
    CHANGE_ATTRIBUTES
        .iter()
        .find(|a| a.name.eq_ignore_ascii_case(name))
}

/// Acct-Status-Type values (RFC 2866 §5.1).
pub const STATUS_START: u32 = 1;
pub const STATUS_STOP: u32 = 2;
pub const STATUS_INTERIM_UPDATE: u32 = 3;
pub const STATUS_ACCOUNTING_ON: u32 = 7;
pub const STATUS_ACCOUNTING_OFF: u32 = 8;

/// FreeRADIUS dictionary name of an attribute type this module has a constant for.
pub fn attr_name(typ: u8) -> Option<&'static str> {
    Some(match typ {
        USER_NAME => "User-Name",
        NAS_IP_ADDRESS => "NAS-IP-Address",
        NAS_PORT => "NAS-Port",
        SERVICE_TYPE => "Service-Type",
        FRAMED_PROTOCOL => "Framed-Protocol",
        FRAMED_IP_ADDRESS => "Framed-IP-Address",
        CLASS => "Class",
        VENDOR_SPECIFIC => "Vendor-Specific",
        CALLED_STATION_ID => "Called-Station-Id",
        CALLING_STATION_ID => "Calling-Station-Id",
        NAS_IDENTIFIER => "NAS-Identifier",
        PROXY_STATE => "Proxy-State",
        ACCT_STATUS_TYPE => "Acct-Status-Type",
        ACCT_DELAY_TIME => "Acct-Delay-Time",
        ACCT_INPUT_OCTETS => "Acct-Input-Octets",
        ACCT_OUTPUT_OCTETS => "Acct-Output-Octets",
        ACCT_SESSION_ID => "Acct-Session-Id",
        ACCT_AUTHENTIC => "Acct-Authentic",
        ACCT_SESSION_TIME => "Acct-Session-Time",
        ACCT_INPUT_PACKETS => "Acct-Input-Packets",
        ACCT_OUTPUT_PACKETS => "Acct-Output-Packets",
        ACCT_TERMINATE_CAUSE => "Acct-Terminate-Cause",
        ACCT_INPUT_GIGAWORDS => "Acct-Input-Gigawords",
        ACCT_OUTPUT_GIGAWORDS => "Acct-Output-Gigawords",
        EVENT_TIMESTAMP => "Event-Timestamp",
        NAS_PORT_TYPE => "NAS-Port-Type",
        CONNECT_INFO => "Connect-Info",
        MESSAGE_AUTHENTICATOR => "Message-Authenticator",
        ACCT_INTERIM_INTERVAL => "Acct-Interim-Interval",
        NAS_PORT_ID => "NAS-Port-Id",
        NAS_IPV6_ADDRESS => "NAS-IPv6-Address",
        FRAMED_INTERFACE_ID => "Framed-Interface-Id",
        FRAMED_IPV6_PREFIX => "Framed-IPv6-Prefix",
        ERROR_CAUSE => "Error-Cause",
        DELEGATED_IPV6_PREFIX => "Delegated-IPv6-Prefix",
        FRAMED_IPV6_ADDRESS => "Framed-IPv6-Address",
        _ => return None,
    })
}

/// FreeRADIUS dictionary name of an enumerated value, e.g.
/// `value_name(ACCT_TERMINATE_CAUSE, 1) == Some("User-Request")`. `None` for an attribute
/// without enumerated values or a number the dictionaries do not name.
pub fn value_name(attr: u8, value: u32) -> Option<&'static str> {
    match attr {
        SERVICE_TYPE => service_type(value),
        FRAMED_PROTOCOL => framed_protocol(value),
        ACCT_STATUS_TYPE => acct_status_type(value),
        ACCT_AUTHENTIC => acct_authentic(value),
        ACCT_TERMINATE_CAUSE => acct_terminate_cause(value),
        NAS_PORT_TYPE => nas_port_type(value),
        ERROR_CAUSE => error_cause(value),
        _ => None,
    }
}

/// The textual form written to radacct: the name if known, else the decimal number (as
/// FreeRADIUS prints an integer without a `VALUE`).
pub fn value_text(attr: u8, value: u32) -> Cow<'static, str> {
    match value_name(attr, value) {
        Some(name) => Cow::Borrowed(name),
        None => Cow::Owned(value.to_string()),
    }
}

/// Inverse of [`value_name`]: the number of a value name, ASCII case-insensitively as
/// FreeRADIUS matches names; also accepts the alias names FreeRADIUS reads but does not print
/// (e.g. Acct-Status-Type `Alive` = 3).
pub fn value_of(attr: u8, name: &str) -> Option<u32> {
    let (printed, aliases) = tables(attr)?;
    printed
        .iter()
        .find(|(_, n)| n.eq_ignore_ascii_case(name))
        .map(|&(v, _)| v)
        .or_else(|| {
            aliases
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|&(_, v)| v)
        })
}

/// The `(number, printed name)` pairs of an enumerated attribute, by number; empty for others.
pub fn values(attr: u8) -> &'static [(u32, &'static str)] {
    tables(attr).map_or(&[], |(printed, _)| printed)
}

type Tables = (
    &'static [(u32, &'static str)],
    &'static [(&'static str, u32)],
);

fn tables(attr: u8) -> Option<Tables> {
    Some(match attr {
        SERVICE_TYPE => (SERVICE_TYPE_VALUES, SERVICE_TYPE_ALIASES),
        FRAMED_PROTOCOL => (FRAMED_PROTOCOL_VALUES, FRAMED_PROTOCOL_ALIASES),
        ACCT_STATUS_TYPE => (ACCT_STATUS_TYPE_VALUES, ACCT_STATUS_TYPE_ALIASES),
        ACCT_AUTHENTIC => (ACCT_AUTHENTIC_VALUES, ACCT_AUTHENTIC_ALIASES),
        ACCT_TERMINATE_CAUSE => (ACCT_TERMINATE_CAUSE_VALUES, ACCT_TERMINATE_CAUSE_ALIASES),
        NAS_PORT_TYPE => (NAS_PORT_TYPE_VALUES, NAS_PORT_TYPE_ALIASES),
        ERROR_CAUSE => (ERROR_CAUSE_VALUES, ERROR_CAUSE_ALIASES),
        _ => return None,
    })
}

/// One enumerated attribute: a `match` from number to printed name, the same pairs as a slice
/// for the inverse lookup, and the alias names.
macro_rules! value_table {
    (
        $(#[$doc:meta])*
        $values:ident, $aliases:ident, $lookup:ident;
        printed { $($v:literal => $n:literal,)* }
        aliases { $($an:literal => $av:literal,)* }
    ) => {
        $(#[$doc])*
        fn $lookup(value: u32) -> Option<&'static str> {
            match value {
                $($v => Some($n),)*
                _ => None,
            }
        }
        const $values: &[(u32, &str)] = &[$(($v, $n),)*];
        const $aliases: &[(&str, u32)] = &[$(($an, $av),)*];
    };
}

value_table! {
    /// Service-Type (RFC 2865 §5.6; RFC 5176 (Authorize-Only); RFC 5607; IANA; vendor dictionaries).
    SERVICE_TYPE_VALUES, SERVICE_TYPE_ALIASES, service_type;
    printed {
        1 => "Login-User",
        2 => "Framed-User",
        3 => "Callback-Login-User",
        4 => "Callback-Framed-User",
        5 => "Outbound-User",
        6 => "Administrative-User",
        7 => "NAS-Prompt-User",
        8 => "Authenticate-Only",
        9 => "Callback-NAS-Prompt",
        10 => "Call-Check",
        11 => "Callback-Administrative",
        12 => "Sip-session",
        13 => "Fax",
        14 => "Modem-Relay",
        15 => "IAPP-Register",
        16 => "IAPP-AP-Check",
        17 => "Authorize-Only",
        18 => "Framed-Management",
        252 => "HP-Oper",
        255 => "HP-User",
        0x0630_0001 => "Annex-Authorize-Only",
        0x0630_0002 => "Annex-Framed-Tunnel",
        0x38df_0001 => "ChilliSpot-Authorize-Only",
    }
    aliases {
        "Shell-User" => 6,
        "Dialback-Login-User" => 3,
        "Dialback-Framed-User" => 4,
        "Dialout-Framed-User" => 5,
        "Login" => 1,
        "Framed" => 2,
        "Callback-Login" => 3,
        "Callback-Framed" => 4,
        "Exec-User" => 7,
        "Voice" => 12,
    }
}

value_table! {
    /// Framed-Protocol (RFC 2865 §5.7; IANA; Ascend and BinTec dictionaries).
    FRAMED_PROTOCOL_VALUES, FRAMED_PROTOCOL_ALIASES, framed_protocol;
    printed {
        1 => "PPP",
        2 => "SLIP",
        3 => "ARAP",
        4 => "Gandalf-SLML",
        5 => "Xylogics-IPX-SLIP",
        6 => "X.75-Synchronous",
        7 => "GPRS-PDP-Context",
        9 => "PPTP",
        255 => "Ascend-ARA",
        256 => "Ascend-MPP",
        257 => "Ascend-EURAW",
        258 => "Ascend-EUUI",
        259 => "Ascend-X25",
        260 => "Ascend-COMB",
        261 => "Ascend-FR",
        262 => "Ascend-MP",
        263 => "Ascend-FR-CIR",
        0x0110_0002 => "Bintec-X25",
        0x0110_0003 => "Bintec-X25-PPP",
        0x0110_0004 => "Bintec-IP-LAPB",
        0x0110_0006 => "Bintec-IP-HDLC",
        0x0110_0007 => "Bintec-MPR-LAPB",
        0x0110_0008 => "Bintec-MPR-HDLC",
        0x0110_0009 => "Bintec-FRAME-RELAY",
        0x0110_000a => "Bintec-X31-BCHAN",
        0x0110_000b => "Bintec-X75-PPP",
        0x0110_000c => "Bintec-X75BTX-PPP",
        0x0110_000d => "Bintec-X25-NOSIG",
        0x0110_000e => "Bintec-X25-PPP-OPT",
    }
    aliases {
    }
}

value_table! {
    /// Acct-Status-Type (RFC 2866 §5.1; RFC 2867; IANA; vendor dictionaries).
    ACCT_STATUS_TYPE_VALUES, ACCT_STATUS_TYPE_ALIASES, acct_status_type;
    printed {
        1 => "Start",
        2 => "Stop",
        3 => "Interim-Update",
        4 => "Modem-Start",
        5 => "Modem-Stop",
        6 => "Cancel",
        7 => "Accounting-On",
        8 => "Accounting-Off",
        9 => "Tunnel-Start",
        10 => "Tunnel-Stop",
        11 => "Tunnel-Reject",
        12 => "Tunnel-Link-Start",
        13 => "Tunnel-Link-Stop",
        14 => "Tunnel-Link-Reject",
        15 => "Failed",
        17 => "One-Time",
        18 => "Subsystem-On",
        19 => "Subsystem-Off",
        217 => "WB-Login",
        218 => "WB-Logout",
        219 => "WB-WRitelog",
        0x0630_0001 => "Annex-User-Reject",
        0x0630_0002 => "Annex-Call-Reject",
        0x0630_0003 => "Annex-IPCP-Start",
        0x0630_0004 => "Annex-IPXCP-Start",
        0x0630_0005 => "Annex-ATCP-Start",
        0x0630_0006 => "Annex-Accounting-Restart",
        0x0630_0007 => "Annex-Accounting-Shutoff",
        0x0630_0008 => "Annex-Tunnel-Start",
        0x0630_0009 => "Annex-Tunnel-Stop",
        0x0630_000a => "Annex-Tunnel-Reject",
        0x0630_000b => "Annex-Tunnel-Link-Start",
        0x0630_000c => "Annex-Tunnel-Link-Stop",
        0x0630_000d => "Annex-MP-Start",
        0x0630_000e => "Annex-MP-Stop",
        0x0630_000f => "Annex-Line-Seizure",
        0x0630_0010 => "Annex-Rlogin-Start",
        0x0630_0011 => "Annex-Rlogin-Stop",
        0x0996_0001 => "SG-Service-Start",
        0x0996_0002 => "SG-Service-Stop",
    }
    aliases {
        "Alive" => 3,
    }
}

value_table! {
    /// Acct-Authentic (RFC 2866 §5.6).
    ACCT_AUTHENTIC_VALUES, ACCT_AUTHENTIC_ALIASES, acct_authentic;
    printed {
        1 => "RADIUS",
        2 => "Local",
        3 => "Remote",
        4 => "Diameter",
    }
    aliases {
    }
}

value_table! {
    /// Acct-Terminate-Cause (RFC 2866 §5.10; RFC 3580).
    ACCT_TERMINATE_CAUSE_VALUES, ACCT_TERMINATE_CAUSE_ALIASES, acct_terminate_cause;
    printed {
        1 => "User-Request",
        2 => "Lost-Carrier",
        3 => "Lost-Service",
        4 => "Idle-Timeout",
        5 => "Session-Timeout",
        6 => "Admin-Reset",
        7 => "Admin-Reboot",
        8 => "Port-Error",
        9 => "NAS-Error",
        10 => "NAS-Request",
        11 => "NAS-Reboot",
        12 => "Port-Unneeded",
        13 => "Port-Preempted",
        14 => "Port-Suspended",
        15 => "Service-Unavailable",
        16 => "Callback",
        17 => "User-Error",
        18 => "Host-Request",
        19 => "Supplicant-Restart",
        20 => "Reauthentication-Failure",
        21 => "Port-Reinit",
        22 => "Port-Disabled",
    }
    aliases {
    }
}

value_table! {
    /// NAS-Port-Type (RFC 2865 §5.41; RFC 3580; RFC 4603; IANA).
    NAS_PORT_TYPE_VALUES, NAS_PORT_TYPE_ALIASES, nas_port_type;
    printed {
        0 => "Async",
        1 => "Sync",
        2 => "ISDN",
        3 => "ISDN-V120",
        4 => "ISDN-V110",
        5 => "Virtual",
        6 => "PIAFS",
        7 => "HDLC-Clear-Channel",
        8 => "X.25",
        9 => "X.75",
        10 => "G.3-Fax",
        11 => "SDSL",
        12 => "ADSL-CAP",
        13 => "ADSL-DMT",
        14 => "IDSL",
        15 => "Ethernet",
        16 => "xDSL",
        17 => "Cable",
        18 => "Wireless-Other",
        19 => "Wireless-802.11",
        20 => "Token-Ring",
        21 => "FDDI",
        22 => "Wireless-CDMA2000",
        23 => "Wireless-UMTS",
        24 => "Wireless-1X-EV",
        25 => "IAPP",
        26 => "FTTP",
        27 => "Wireless-802.16",
        28 => "Wireless-802.20",
        29 => "Wireless-802.22",
        30 => "PPPoA",
        31 => "PPPoEoA",
        32 => "PPPoEoE",
        33 => "PPPoEoVLAN",
        34 => "PPPoEoQinQ",
        35 => "xPON",
        36 => "Wireless-XGP",
    }
    aliases {
    }
}

value_table! {
    /// Error-Cause (RFC 5176 §3.5 (FreeRADIUS keeps RFC 3576's names for 201, 502, 505)).
    ERROR_CAUSE_VALUES, ERROR_CAUSE_ALIASES, error_cause;
    printed {
        201 => "Residual-Context-Removed",
        202 => "Invalid-EAP-Packet",
        401 => "Unsupported-Attribute",
        402 => "Missing-Attribute",
        403 => "NAS-Identification-Mismatch",
        404 => "Invalid-Request",
        405 => "Unsupported-Service",
        406 => "Unsupported-Extension",
        407 => "Invalid-Attribute-Value",
        501 => "Administratively-Prohibited",
        502 => "Proxy-Request-Not-Routable",
        503 => "Session-Context-Not-Found",
        504 => "Session-Context-Not-Removable",
        505 => "Proxy-Processing-Error",
        506 => "Resources-Unavailable",
        507 => "Request-Initiated",
        508 => "Multiple-Session-Selection-Unsupported",
    }
    aliases {
    }
}
#[cfg(test)]
mod tests {

    /// Every attribute a CoA may change has the number and type FreeRADIUS's installed
    /// dictionaries give it (skipped, with the reason, where they are not installed).
    #[test]
    fn change_attributes_match_the_installed_dictionaries() {
        let dir = std::path::Path::new("/usr/share/freeradius");
        let files = [
            "dictionary.rfc2865",
            "dictionary.rfc2869",
            "dictionary.mikrotik",
        ];
        if !dir.join(files[0]).exists() {
            assert!(
                std::env::var_os("CI").is_none(),
                "FreeRADIUS dictionaries missing under CI"
            );
            eprintln!("skipped: no FreeRADIUS dictionaries in {}", dir.display());
            return;
        }
        let mut defined = std::collections::HashMap::new();
        for f in files {
            let text = std::fs::read_to_string(dir.join(f)).expect("readable");
            for line in text.lines() {
                let w: Vec<&str> = line.split_whitespace().collect();
                if w.len() >= 4 && w[0] == "ATTRIBUTE" {
                    defined.insert(w[1].to_owned(), (w[2].parse::<u8>().ok(), w[3].to_owned()));
                }
            }
        }
        for a in CHANGE_ATTRIBUTES {
            let (num, typ) = defined
                .get(a.name)
                .unwrap_or_else(|| panic!("{} undefined", a.name));
            assert_eq!(*num, Some(a.typ), "{}", a.name);
            let want = match a.value {
                ValueType::Text => ["string", "octets"].as_slice(),
                ValueType::Integer => &["integer"],
                ValueType::Ipv4Addr => &["ipaddr"],
            };
            assert!(want.contains(&typ.as_str()), "{}: {typ}", a.name);
        }
        assert_eq!(
            change_attribute("mikrotik-rate-limit").map(|a| a.typ),
            Some(8)
        );
        assert_eq!(change_attribute("User-Name"), None);
    }
    use super::*;
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};

    #[test]
    fn documented_examples() {
        assert_eq!(value_name(ACCT_TERMINATE_CAUSE, 1), Some("User-Request"));
        assert_eq!(value_name(SERVICE_TYPE, 2), Some("Framed-User"));
        assert_eq!(value_name(FRAMED_PROTOCOL, 1), Some("PPP"));
        assert_eq!(value_name(NAS_PORT_TYPE, 15), Some("Ethernet"));
        assert_eq!(value_name(ACCT_AUTHENTIC, 1), Some("RADIUS"));
        assert_eq!(
            value_name(ACCT_STATUS_TYPE, STATUS_INTERIM_UPDATE),
            Some("Interim-Update")
        );
        assert_eq!(
            value_name(ERROR_CAUSE, 503),
            Some("Session-Context-Not-Found")
        );
        assert_eq!(value_name(ACCT_TERMINATE_CAUSE, 999), None);
        assert_eq!(value_name(USER_NAME, 1), None);
        assert_eq!(value_text(ACCT_TERMINATE_CAUSE, 18), "Host-Request");
        assert_eq!(value_text(ACCT_TERMINATE_CAUSE, 999), "999");
        assert_eq!(value_text(NAS_PORT, 7), "7");
        assert_eq!(value_of(ACCT_TERMINATE_CAUSE, "User-Request"), Some(1));
        assert_eq!(value_of(ACCT_TERMINATE_CAUSE, "lost-carrier"), Some(2));
        assert_eq!(value_of(ACCT_TERMINATE_CAUSE, "Nope"), None);
        assert_eq!(value_of(ACCT_STATUS_TYPE, "Alive"), Some(3));
        assert_eq!(value_of(SERVICE_TYPE, "Login"), Some(1));
        assert_eq!(value_of(USER_NAME, "x"), None);
        assert_eq!(attr_name(ACCT_SESSION_ID), Some("Acct-Session-Id"));
        assert_eq!(attr_name(2), None);
    }

    #[test]
    fn acct_terminate_cause_matches_rfc_2866() {
        let names = [
            "User-Request",
            "Lost-Carrier",
            "Lost-Service",
            "Idle-Timeout",
            "Session-Timeout",
            "Admin-Reset",
            "Admin-Reboot",
            "Port-Error",
            "NAS-Error",
            "NAS-Request",
            "NAS-Reboot",
            "Port-Unneeded",
            "Port-Preempted",
            "Port-Suspended",
            "Service-Unavailable",
            "Callback",
            "User-Error",
            "Host-Request",
        ];
        for (i, name) in names.iter().enumerate() {
            let v = i as u32 + 1;
            assert_eq!(value_name(ACCT_TERMINATE_CAUSE, v), Some(*name));
            assert_eq!(value_of(ACCT_TERMINATE_CAUSE, name), Some(v));
        }
    }

    #[test]
    fn tables_are_consistent() {
        for attr in [
            SERVICE_TYPE,
            FRAMED_PROTOCOL,
            ACCT_STATUS_TYPE,
            ACCT_AUTHENTIC,
            ACCT_TERMINATE_CAUSE,
            NAS_PORT_TYPE,
            ERROR_CAUSE,
        ] {
            let vals = values(attr);
            assert!(!vals.is_empty());
            assert!(
                vals.windows(2).all(|w| w[0].0 < w[1].0),
                "sorted, no duplicate numbers"
            );
            for &(v, n) in vals {
                assert_eq!(value_name(attr, v), Some(n));
                assert_eq!(value_of(attr, n), Some(v), "{n}");
            }
            let (_, aliases) = tables(attr).unwrap();
            for &(n, v) in aliases {
                assert_eq!(value_of(attr, n), Some(v));
                assert_ne!(value_name(attr, v), Some(n));
            }
        }
        assert!(values(USER_NAME).is_empty());
    }

    const FREERADIUS_DIR: &str = "/usr/share/freeradius";

    /// What FreeRADIUS's dictionary loader ends up with for the enumerated attributes.
    #[derive(Default)]
    struct Loaded {
        /// attribute names (lowercase) defined so far
        defined: Vec<String>,
        /// (attr, value) -> printed name
        printed: HashMap<(u8, u32), String>,
        /// every (attr, name) -> value read
        names: Vec<(u8, String, u32)>,
        /// VALUEs read before their ATTRIBUTE, most recent first
        fixups: Vec<(u8, u32, String)>,
        files: usize,
    }

    fn enumerated(name: &str) -> Option<u8> {
        [
            SERVICE_TYPE,
            FRAMED_PROTOCOL,
            ACCT_STATUS_TYPE,
            ACCT_AUTHENTIC,
            ACCT_TERMINATE_CAUSE,
            NAS_PORT_TYPE,
            ERROR_CAUSE,
        ]
        .into_iter()
        .find(|&a| attr_name(a).is_some_and(|n| n.eq_ignore_ascii_case(name)))
    }

    fn parse_number(s: &str) -> u32 {
        match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            Some(hex) => u32::from_str_radix(hex, 16).unwrap(),
            None => s.parse().unwrap(),
        }
    }

    /// Mirrors FreeRADIUS 3.2 `dict_init`/`dict_addvalue` for `$INCLUDE`, `ATTRIBUTE`, `VALUE`.
    fn load(path: &Path, out: &mut Loaded) {
        out.files += 1;
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let text = String::from_utf8_lossy(&bytes);
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            let f: Vec<&str> = line.split_whitespace().collect();
            match f.as_slice() {
                ["$INCLUDE" | "$INCLUDE-", file, ..] => {
                    let p = path.parent().unwrap().join(file);
                    if p.exists() {
                        load(&p, out);
                    }
                }
                ["ATTRIBUTE", name, ..] if enumerated(name).is_some() => {
                    out.defined.push(name.to_ascii_lowercase());
                }
                ["VALUE", attr_str, name, num, ..] => {
                    let Some(attr) = enumerated(attr_str) else {
                        continue;
                    };
                    let v = parse_number(num);
                    out.names.push((attr, name.to_string(), v));
                    if out.defined.contains(&attr_str.to_ascii_lowercase()) {
                        out.printed.insert((attr, v), name.to_string());
                    } else {
                        out.fixups.insert(0, (attr, v, name.to_string()));
                    }
                }
                _ => {}
            }
        }
    }

    fn installed_dictionary() -> Option<PathBuf> {
        let main = Path::new(FREERADIUS_DIR).join("dictionary");
        if main.exists() {
            return Some(main);
        }
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "{} missing: CI must install freeradius-common",
                main.display()
            );
        }
        eprintln!(
            "skipping: {} not found (apt-get install freeradius-common to run this check)",
            main.display()
        );
        None
    }

    #[test]
    fn sample_names_match_installed_dictionary_files() {
        let Some(main) = installed_dictionary() else {
            return;
        };
        let dir = main.parent().unwrap();
        let samples: &[(&str, &str, u8, &str, u32)] = &[
            (
                "dictionary.rfc2865",
                "Service-Type",
                SERVICE_TYPE,
                "Framed-User",
                2,
            ),
            (
                "dictionary.rfc2865",
                "Service-Type",
                SERVICE_TYPE,
                "Login-User",
                1,
            ),
            (
                "dictionary.rfc2865",
                "Framed-Protocol",
                FRAMED_PROTOCOL,
                "PPP",
                1,
            ),
            (
                "dictionary.rfc2865",
                "NAS-Port-Type",
                NAS_PORT_TYPE,
                "Ethernet",
                15,
            ),
            (
                "dictionary.rfc2865",
                "NAS-Port-Type",
                NAS_PORT_TYPE,
                "Virtual",
                5,
            ),
            (
                "dictionary.rfc2866",
                "Acct-Status-Type",
                ACCT_STATUS_TYPE,
                "Interim-Update",
                3,
            ),
            (
                "dictionary.rfc2866",
                "Acct-Authentic",
                ACCT_AUTHENTIC,
                "RADIUS",
                1,
            ),
            (
                "dictionary.rfc2866",
                "Acct-Terminate-Cause",
                ACCT_TERMINATE_CAUSE,
                "User-Request",
                1,
            ),
            (
                "dictionary.rfc2866",
                "Acct-Terminate-Cause",
                ACCT_TERMINATE_CAUSE,
                "Lost-Carrier",
                2,
            ),
            (
                "dictionary.rfc2866",
                "Acct-Terminate-Cause",
                ACCT_TERMINATE_CAUSE,
                "Host-Request",
                18,
            ),
            (
                "dictionary.rfc3580",
                "Acct-Terminate-Cause",
                ACCT_TERMINATE_CAUSE,
                "Port-Disabled",
                22,
            ),
            (
                "dictionary.rfc4603",
                "NAS-Port-Type",
                NAS_PORT_TYPE,
                "PPPoEoVLAN",
                33,
            ),
            (
                "dictionary.rfc3576",
                "Error-Cause",
                ERROR_CAUSE,
                "Session-Context-Not-Found",
                503,
            ),
            (
                "dictionary.rfc5176",
                "Error-Cause",
                ERROR_CAUSE,
                "Invalid-Attribute-Value",
                407,
            ),
        ];
        for &(file, attr_str, attr, name, v) in samples {
            let text = std::fs::read_to_string(dir.join(file)).unwrap();
            let found = text.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() >= 4
                    && f[0] == "VALUE"
                    && f[1] == attr_str
                    && f[2] == name
                    && parse_number(f[3]) == v
            });
            assert!(found, "{file}: VALUE {attr_str} {name} {v}");
            assert_eq!(value_name(attr, v), Some(name), "{file}: {attr_str} {v}");
        }
    }

    #[test]
    fn tables_match_installed_freeradius_load() {
        let Some(main) = installed_dictionary() else {
            return;
        };
        let mut loaded = Loaded::default();
        load(&main, &mut loaded);
        assert!(loaded.files > 50, "loaded {} files", loaded.files);
        for (attr, v, name) in std::mem::take(&mut loaded.fixups) {
            loaded.printed.entry((attr, v)).or_insert(name);
        }
        for ((attr, v), name) in &loaded.printed {
            assert_eq!(
                value_name(*attr, *v),
                Some(name.as_str()),
                "attr {attr} value {v}"
            );
        }
        for attr in [
            SERVICE_TYPE,
            FRAMED_PROTOCOL,
            ACCT_STATUS_TYPE,
            ACCT_AUTHENTIC,
            ACCT_TERMINATE_CAUSE,
            NAS_PORT_TYPE,
            ERROR_CAUSE,
        ] {
            for &(v, n) in values(attr) {
                assert_eq!(loaded.printed.get(&(attr, v)).map(String::as_str), Some(n));
            }
        }
        for (attr, name, v) in &loaded.names {
            assert_eq!(value_of(*attr, name), Some(*v), "attr {attr} name {name}");
        }
    }
}
