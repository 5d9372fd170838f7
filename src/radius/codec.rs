//! RADIUS packet codec (RFC 2865 §3/§5, RFC 2866 §3, RFC 3579 §3.2, RFC 5176 §3): validates and
//! borrows received datagrams, builds and signs packets to send. It must not do I/O, allocate
//! per attribute on decode, know about sessions or storage, or panic on any input.

use std::net::{Ipv4Addr, Ipv6Addr};

use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest, Md5};

/// Largest packet RFC 2865 §3 allows ("The maximum length is 4096").
pub const MAX_PACKET_LEN: usize = 4096;
/// Code(1) + Identifier(1) + Length(2) + Authenticator(16), RFC 2865 §3.
pub const HEADER_LEN: usize = 20;
/// Largest attribute value: the one-octet Length (max 255) includes Type and Length (RFC 2865 §5).
pub const MAX_ATTR_VALUE_LEN: usize = 253;
/// Largest sub-attribute value inside a Vendor-Specific attribute (RFC 2865 §5.26):
/// 253 − Vendor-Id(4) − Vendor-Type(1) − Vendor-Length(1).
pub const MAX_VSA_VALUE_LEN: usize = MAX_ATTR_VALUE_LEN - 6;

/// Vendor-Specific (RFC 2865 §5.26).
const VENDOR_SPECIFIC: u8 = 26;
/// Message-Authenticator (RFC 3579 §3.2).
const MESSAGE_AUTHENTICATOR: u8 = 80;
const ZERO_AUTH: [u8; 16] = [0; 16];

/// Packet type codes (RFC 2865 §3, RFC 2866 §3, RFC 5176 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Code {
    AccessRequest = 1,
    AccessAccept = 2,
    AccessReject = 3,
    AccountingRequest = 4,
    AccountingResponse = 5,
    AccessChallenge = 11,
    DisconnectRequest = 40,
    DisconnectAck = 41,
    DisconnectNak = 42,
    CoaRequest = 43,
    CoaAck = 44,
    CoaNak = 45,
}

impl Code {
    /// The code for an octet, `None` for codes this daemon does not know.
    pub fn from_u8(v: u8) -> Option<Code> {
        Some(match v {
            1 => Code::AccessRequest,
            2 => Code::AccessAccept,
            3 => Code::AccessReject,
            4 => Code::AccountingRequest,
            5 => Code::AccountingResponse,
            11 => Code::AccessChallenge,
            40 => Code::DisconnectRequest,
            41 => Code::DisconnectAck,
            42 => Code::DisconnectNak,
            43 => Code::CoaRequest,
            44 => Code::CoaAck,
            45 => Code::CoaNak,
            _ => return None,
        })
    }

    /// The octet on the wire.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// The name used in the RFCs and FreeRADIUS logs, e.g. `"Accounting-Request"`.
    pub fn name(self) -> &'static str {
        match self {
            Code::AccessRequest => "Access-Request",
            Code::AccessAccept => "Access-Accept",
            Code::AccessReject => "Access-Reject",
            Code::AccountingRequest => "Accounting-Request",
            Code::AccountingResponse => "Accounting-Response",
            Code::AccessChallenge => "Access-Challenge",
            Code::DisconnectRequest => "Disconnect-Request",
            Code::DisconnectAck => "Disconnect-ACK",
            Code::DisconnectNak => "Disconnect-NAK",
            Code::CoaRequest => "CoA-Request",
            Code::CoaAck => "CoA-ACK",
            Code::CoaNak => "CoA-NAK",
        }
    }

    /// True for the requests whose Request Authenticator is the MD5 hash of RFC 2866 §3 /
    /// RFC 5176 §2.3 (Accounting-, Disconnect- and CoA-Request).
    pub fn has_hashed_request_authenticator(self) -> bool {
        matches!(
            self,
            Code::AccountingRequest | Code::DisconnectRequest | Code::CoaRequest
        )
    }
}

/// Why a datagram was rejected by [`Packet::decode`]. RFC 2865 §3: such packets are silently
/// discarded; [`DecodeError::reason`] gives the label to count them under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer than 20 octets.
    #[error("datagram shorter than the 20-octet RADIUS header")]
    TooShort,
    /// Datagram or Length field larger than 4096.
    #[error("datagram or Length field larger than 4096 octets")]
    TooLong,
    /// Length field below 20 or above the datagram's length.
    #[error("Length field below 20 or beyond the end of the datagram")]
    BadLength,
    /// An attribute's length is below 2 or runs past the packet's Length.
    #[error("attribute length below 2 or running past the packet Length")]
    BadAttribute,
    /// A Code this daemon does not handle (RFC 2865 §3: silently discarded).
    #[error("unknown RADIUS code {0}")]
    UnknownCode(u8),
}

impl DecodeError {
    /// Short snake_case label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::TooShort => "too_short",
            DecodeError::TooLong => "too_long",
            DecodeError::BadLength => "bad_length",
            DecodeError::BadAttribute => "bad_attribute",
            DecodeError::UnknownCode(_) => "unknown_code",
        }
    }
}

/// One attribute, `Type(1) Length(1) Value` (RFC 2865 §5), or one Vendor-Specific
/// sub-attribute in the same form (RFC 2865 §5.26); `value` excludes Type and Length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attribute<'a> {
    pub typ: u8,
    pub value: &'a [u8],
}

/// Walks a `Type(1) Length(1) Value` list. Ends at the first malformed entry; on a list that
/// [`Packet::decode`] validated there is none.
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    rest: &'a [u8],
}

impl<'a> Attributes<'a> {
    fn new(list: &'a [u8]) -> Self {
        Attributes { rest: list }
    }

    /// The next attribute and its encoded length (2 + value length).
    #[inline]
    fn next_raw(&mut self) -> Option<(Attribute<'a>, usize)> {
        let (&[typ, len], _) = self.rest.split_first_chunk::<2>()?;
        let len = usize::from(len);
        let Some((whole, rest)) = self.rest.split_at_checked(len).filter(|_| len >= 2) else {
            self.rest = &[];
            return None;
        };
        self.rest = rest;
        Some((
            Attribute {
                typ,
                value: whole.get(2..).unwrap_or_default(),
            },
            len,
        ))
    }
}

impl<'a> Iterator for Attributes<'a> {
    type Item = Attribute<'a>;

    #[inline]
    fn next(&mut self) -> Option<Attribute<'a>> {
        self.next_raw().map(|(a, _)| a)
    }
}

impl std::iter::FusedIterator for Attributes<'_> {}

/// Checks that `list` is exactly a sequence of `Type(1) Length(1 ≥ 2) Value` entries.
#[inline]
fn attribute_list_is_valid(list: &[u8]) -> bool {
    walk_attributes(list, |_, _| {})
}

/// Walks `list` as [`attribute_list_is_valid`] checks it, calling `each` with the offset and
/// the type of every entry; whether the list is valid.
#[inline]
fn walk_attributes(list: &[u8], mut each: impl FnMut(usize, u8)) -> bool {
    let mut rest = list;
    while let [typ, len, ..] = *rest {
        let len = usize::from(len);
        if len < 2 {
            return false;
        }
        each(list.len() - rest.len(), typ);
        match rest.get(len..) {
            Some(r) => rest = r,
            None => return false,
        }
    }
    rest.is_empty()
}

/// Sub-attributes of one vendor's Vendor-Specific attributes (RFC 2865 §5.26), from
/// [`Packet::vendor_attributes`]. A VSA whose contents are not exactly a list of
/// `Type(1) Length(1) Value` sub-attributes is skipped whole.
#[derive(Debug, Clone)]
pub struct VendorAttributes<'a> {
    attrs: Attributes<'a>,
    vendor_id: [u8; 4],
    current: Attributes<'a>,
}

impl<'a> Iterator for VendorAttributes<'a> {
    type Item = Attribute<'a>;

    fn next(&mut self) -> Option<Attribute<'a>> {
        loop {
            if let Some(a) = self.current.next() {
                return Some(a);
            }
            let vsa = self.attrs.find(|a| a.typ == VENDOR_SPECIFIC)?;
            if let Some((vendor, subs)) = vsa.value.split_first_chunk::<4>()
                && *vendor == self.vendor_id
                && attribute_list_is_valid(subs)
            {
                self.current = Attributes::new(subs);
            }
        }
    }
}

impl std::iter::FusedIterator for VendorAttributes<'_> {}

/// Borrowed view of a validated packet. Bytes past Length are ignored (padding, RFC 2865 §3).
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    /// Exactly Length octets.
    bytes: &'a [u8],
    code: Code,
    authenticator: &'a [u8; 16],
    first: FirstOf,
}

/// Where the first attribute of each type starts in the attribute area, plus one (0: there is
/// none), found while `decode` validates the list: the listener looks up some thirty types
/// per Accounting-Request, each then found without walking the list again.
#[derive(Clone, Copy)]
struct FirstOf([u16; 256]);

impl std::fmt::Debug for FirstOf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FirstOf")
    }
}

impl FirstOf {
    /// The positions in a valid attribute list (`None`: not a valid list, RFC 2865 §5).
    fn of(list: &[u8]) -> Option<FirstOf> {
        let mut first = [0u16; 256];
        let valid = walk_attributes(list, |at, typ| {
            let slot = &mut first[usize::from(typ)];
            if *slot == 0 {
                // A packet is at most 4096 octets, so the position fits.
                *slot = u16::try_from(at + 1).unwrap_or(0);
            }
        });
        valid.then_some(FirstOf(first))
    }
}

impl<'a> Packet<'a> {
    /// Validates the header (RFC 2865 §3) and every attribute's length (RFC 2865 §5) once.
    pub fn decode(datagram: &'a [u8]) -> Result<Packet<'a>, DecodeError> {
        let Some((header, _)) = datagram.split_first_chunk::<HEADER_LEN>() else {
            return Err(DecodeError::TooShort);
        };
        if datagram.len() > MAX_PACKET_LEN {
            return Err(DecodeError::TooLong);
        }
        let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
        if length > MAX_PACKET_LEN {
            return Err(DecodeError::TooLong);
        }
        if length < HEADER_LEN {
            return Err(DecodeError::BadLength);
        }
        let Some(bytes) = datagram.get(..length) else {
            return Err(DecodeError::BadLength);
        };
        let code = Code::from_u8(header[0]).ok_or(DecodeError::UnknownCode(header[0]))?;
        let Some((_, authenticator)) = header.split_last_chunk::<16>() else {
            return Err(DecodeError::TooShort);
        };
        let Some(first) = FirstOf::of(bytes.get(HEADER_LEN..).unwrap_or_default()) else {
            return Err(DecodeError::BadAttribute);
        };
        Ok(Packet {
            bytes,
            code,
            authenticator,
            first,
        })
    }

    pub fn code(&self) -> Code {
        self.code
    }

    pub fn identifier(&self) -> u8 {
        self.bytes.get(1).copied().unwrap_or_default()
    }

    /// The Authenticator field as received.
    pub fn authenticator(&self) -> &'a [u8; 16] {
        self.authenticator
    }

    /// Exactly Length octets (padding removed).
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The attribute area (octets 20..Length).
    pub fn attribute_bytes(&self) -> &'a [u8] {
        self.bytes.get(HEADER_LEN..).unwrap_or_default()
    }

    /// All attributes in order; validated by `decode`, so iteration never fails.
    pub fn attributes(&self) -> Attributes<'a> {
        Attributes::new(self.attribute_bytes())
    }

    /// Value of the first attribute of that type.
    pub fn attr(&self, typ: u8) -> Option<&'a [u8]> {
        let at = usize::from(self.first.0[usize::from(typ)]).checked_sub(1)?;
        let area = self.attribute_bytes();
        let len = usize::from(*area.get(at + 1)?);
        area.get(at + 2..at + len)
    }

    /// First attribute of that type as an RFC 2865 §5 "integer"; `None` unless exactly 4 octets.
    pub fn attr_u32(&self, typ: u8) -> Option<u32> {
        self.attr(typ)
            .and_then(|v| <[u8; 4]>::try_from(v).ok())
            .map(u32::from_be_bytes)
    }

    /// First attribute of that type as an "address" (RFC 2865 §5); exactly 4 octets.
    pub fn attr_ipv4(&self, typ: u8) -> Option<Ipv4Addr> {
        self.attr(typ)
            .and_then(|v| <[u8; 4]>::try_from(v).ok())
            .map(Ipv4Addr::from)
    }

    /// First attribute of that type as an IPv6 address (RFC 3162 §2.1 NAS-IPv6-Address,
    /// RFC 6911 §3.1 Framed-IPv6-Address); exactly 16 octets.
    pub fn attr_ipv6(&self, typ: u8) -> Option<Ipv6Addr> {
        self.attr(typ)
            .and_then(|v| <[u8; 16]>::try_from(v).ok())
            .map(Ipv6Addr::from)
    }

    /// First attribute of that type as an IPv6 prefix, RFC 3162 §2.3 (Framed-IPv6-Prefix) /
    /// RFC 4818 §3 (Delegated-IPv6-Prefix): `Reserved(1) Prefix-Length(1) Prefix(0..=16)`.
    /// `None` if Prefix-Length > 128 or the Prefix octets are fewer than Prefix-Length needs.
    /// Bits past Prefix-Length are cleared; missing trailing octets count as zero.
    pub fn attr_ipv6_prefix(&self, typ: u8) -> Option<(Ipv6Addr, u8)> {
        parse_ipv6_prefix(self.attr(typ)?)
    }

    /// Sub-attributes of the Vendor-Specific attributes (type 26) of `vendor_id`, in the
    /// RFC 2865 §5.26 `Type(1) Length(1) Value` form, in order. Malformed VSA contents are
    /// skipped, never an error.
    pub fn vendor_attributes(&self, vendor_id: u32) -> VendorAttributes<'a> {
        VendorAttributes {
            attrs: self.attributes(),
            vendor_id: vendor_id.to_be_bytes(),
            current: Attributes::new(&[]),
        }
    }

    /// First sub-attribute `typ` of `vendor_id`'s VSAs.
    pub fn vendor_attr(&self, vendor_id: u32, typ: u8) -> Option<&'a [u8]> {
        self.vendor_attributes(vendor_id)
            .find(|a| a.typ == typ)
            .map(|a| a.value)
    }

    /// RFC 2866 §3 / RFC 5176 §2.3: `MD5(Code + Identifier + Length + 16 zero octets +
    /// Attributes + Secret) == Authenticator`. Meaningful for codes 4, 40 and 43 only.
    pub fn verify_request_authenticator(&self, secret: &[u8]) -> bool {
        let digest = packet_md5(self.bytes, &ZERO_AUTH, secret);
        ct_eq(&digest, self.authenticator)
    }

    /// RFC 2865 §3 "Response Authenticator" (also RFC 2866 §3, RFC 5176 §2.3):
    /// `MD5(Code + Identifier + Length + RequestAuthenticator + Attributes + Secret)`.
    pub fn verify_response_authenticator(
        &self,
        request_authenticator: &[u8; 16],
        secret: &[u8],
    ) -> bool {
        let digest = packet_md5(self.bytes, request_authenticator, secret);
        ct_eq(&digest, self.authenticator)
    }

    /// Message-Authenticator (80), RFC 3579 §3.2 / RFC 5176 §3: `None` if absent, else whether
    /// HMAC-MD5(secret, packet with the Message-Authenticator value zeroed) matches. The
    /// Authenticator field is taken as 16 zero octets when `request_authenticator` is `None`
    /// (Accounting-, Disconnect-, CoA-Request); pass the request's authenticator for responses
    /// (and the packet's own authenticator for an Access-Request). A value that is not exactly
    /// 16 octets gives `Some(false)`. Only the first Message-Authenticator is checked.
    pub fn verify_message_authenticator(
        &self,
        secret: &[u8],
        request_authenticator: Option<&[u8; 16]>,
    ) -> Option<bool> {
        let mut offset = HEADER_LEN;
        let mut attrs = self.attributes();
        while let Some((a, len)) = attrs.next_raw() {
            if a.typ == MESSAGE_AUTHENTICATOR {
                let Ok(received) = <&[u8; 16]>::try_from(a.value) else {
                    return Some(false);
                };
                let auth = request_authenticator.unwrap_or(&ZERO_AUTH);
                let expected = message_authenticator(self.bytes, auth, offset + 2, secret);
                return Some(expected.is_some_and(|e| ct_eq(&e, received)));
            }
            offset += len;
        }
        None
    }
}

fn parse_ipv6_prefix(value: &[u8]) -> Option<(Ipv6Addr, u8)> {
    let [_reserved, prefix_len, prefix @ ..] = value else {
        return None;
    };
    let prefix_len = *prefix_len;
    if prefix_len > 128 || prefix.len() > 16 || prefix.len() * 8 < usize::from(prefix_len) {
        return None;
    }
    let mut octets = [0u8; 16];
    for (dst, src) in octets.iter_mut().zip(prefix) {
        *dst = *src;
    }
    let mask = u128::MAX
        .checked_shl(128 - u32::from(prefix_len))
        .unwrap_or(0);
    let addr = u128::from_be_bytes(octets) & mask;
    Some((Ipv6Addr::from(addr), prefix_len))
}

/// Comparison whose time does not depend on where the inputs differ.
#[inline]
fn ct_eq(a: &[u8; 16], b: &[u8; 16]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `MD5(packet[0..4] + auth + packet[20..] + secret)`: the request (RFC 2866 §3) and response
/// (RFC 2865 §3) authenticator formula.
#[inline]
fn packet_md5(packet: &[u8], auth: &[u8; 16], secret: &[u8]) -> [u8; 16] {
    let mut md5 = Md5::new();
    md5.update(packet.get(..4).unwrap_or_default());
    md5.update(auth);
    md5.update(packet.get(HEADER_LEN..).unwrap_or_default());
    md5.update(secret);
    md5.finalize().into()
}

/// HMAC-MD5 of `packet` with the Authenticator field replaced by `auth` and the 16 octets at
/// `ma_value_at` by zeros (RFC 3579 §3.2). `None` if `ma_value_at` is not inside the packet.
fn message_authenticator(
    packet: &[u8],
    auth: &[u8; 16],
    ma_value_at: usize,
    secret: &[u8],
) -> Option<[u8; 16]> {
    let head = packet.get(..4)?;
    let before = packet.get(HEADER_LEN..ma_value_at)?;
    let after = packet.get(ma_value_at.checked_add(16)?..)?;
    let mut mac = <Hmac<Md5> as KeyInit>::new_from_slice(secret).ok()?;
    mac.update(head);
    mac.update(auth);
    mac.update(before);
    mac.update(&ZERO_AUTH);
    mac.update(after);
    Some(mac.finalize().into_bytes().into())
}

/// Why [`PacketBuilder`] refused an attribute or a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// Value longer than 253 octets (247 for a vendor sub-attribute), RFC 2865 §5.
    #[error("attribute value longer than 253 octets")]
    AttributeTooLong,
    /// Packet would exceed 4096 octets, RFC 2865 §3.
    #[error("packet longer than 4096 octets")]
    TooLong,
}

/// Builds packets to send. Attribute values longer than 253 bytes are an error
/// ([`EncodeError::AttributeTooLong`]), a total over 4096 is [`EncodeError::TooLong`]; a
/// failed call leaves the builder unchanged.
#[derive(Debug, Clone)]
pub struct PacketBuilder {
    code: Code,
    identifier: u8,
    /// Encoded attributes, without the reserved Message-Authenticator.
    attrs: Vec<u8>,
    /// A Message-Authenticator is appended after `attrs` at encode time.
    message_authenticator: bool,
}

impl PacketBuilder {
    pub fn new(code: Code, identifier: u8) -> Self {
        PacketBuilder {
            code,
            identifier,
            attrs: Vec::with_capacity(64),
            message_authenticator: false,
        }
    }

    pub fn code(&self) -> Code {
        self.code
    }

    pub fn identifier(&self) -> u8 {
        self.identifier
    }

    /// Length field of the packet `encode_*` would produce.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.attrs.len() + if self.message_authenticator { 18 } else { 0 }
    }

    fn reserve_room(&self, extra: usize) -> Result<(), EncodeError> {
        if self.encoded_len() + extra > MAX_PACKET_LEN {
            Err(EncodeError::TooLong)
        } else {
            Ok(())
        }
    }

    /// Appends `Type Length Value` (RFC 2865 §5).
    pub fn attr(&mut self, typ: u8, value: &[u8]) -> Result<&mut Self, EncodeError> {
        let Ok(len) = u8::try_from(value.len() + 2) else {
            return Err(EncodeError::AttributeTooLong);
        };
        self.reserve_room(usize::from(len))?;
        self.attrs.push(typ);
        self.attrs.push(len);
        self.attrs.extend_from_slice(value);
        Ok(self)
    }

    /// Appends an RFC 2865 §5 "integer" (32-bit big-endian).
    pub fn attr_u32(&mut self, typ: u8, v: u32) -> Result<&mut Self, EncodeError> {
        self.attr(typ, &v.to_be_bytes())
    }

    /// Appends an RFC 2865 §5 "address".
    pub fn attr_ipv4(&mut self, typ: u8, v: Ipv4Addr) -> Result<&mut Self, EncodeError> {
        self.attr(typ, &v.octets())
    }

    /// Appends a 16-octet IPv6 address (RFC 3162 §2.1, RFC 6911 §3.1).
    pub fn attr_ipv6(&mut self, typ: u8, v: Ipv6Addr) -> Result<&mut Self, EncodeError> {
        self.attr(typ, &v.octets())
    }

    /// Appends a Vendor-Specific attribute (RFC 2865 §5.26) holding one sub-attribute
    /// `Vendor-Id(4) Type(1) Length(1) Value`; the value may be at most 247 octets.
    pub fn vendor_attr(
        &mut self,
        vendor_id: u32,
        typ: u8,
        value: &[u8],
    ) -> Result<&mut Self, EncodeError> {
        let (Ok(sub_len), Ok(len)) = (u8::try_from(value.len() + 2), u8::try_from(value.len() + 8))
        else {
            return Err(EncodeError::AttributeTooLong);
        };
        self.reserve_room(usize::from(len))?;
        self.attrs.extend_from_slice(&[VENDOR_SPECIFIC, len]);
        self.attrs.extend_from_slice(&vendor_id.to_be_bytes());
        self.attrs.extend_from_slice(&[typ, sub_len]);
        self.attrs.extend_from_slice(value);
        Ok(self)
    }

    /// Copies raw attributes (e.g. Proxy-State from a request into a response, in order,
    /// RFC 2865 §5.33).
    pub fn raw_attr(&mut self, attr: Attribute<'_>) -> Result<&mut Self, EncodeError> {
        self.attr(attr.typ, attr.value)
    }

    /// Reserves a Message-Authenticator (RFC 3579 §3.2), appended after the other attributes
    /// and filled at encode time. Calling it again changes nothing. If it does not fit, the
    /// encode functions return [`EncodeError::TooLong`].
    pub fn message_authenticator(&mut self) -> &mut Self {
        self.message_authenticator = true;
        self
    }

    /// Writes header (with `auth` in the Authenticator field) and attributes into `out`,
    /// a zeroed Message-Authenticator last if reserved. Returns the MA value offset.
    fn write_unsigned(
        &self,
        auth: &[u8; 16],
        out: &mut Vec<u8>,
    ) -> Result<Option<usize>, EncodeError> {
        let len = self.encoded_len();
        let Ok(len16) = u16::try_from(len) else {
            return Err(EncodeError::TooLong);
        };
        if len > MAX_PACKET_LEN {
            return Err(EncodeError::TooLong);
        }
        out.clear();
        out.reserve(len);
        out.extend_from_slice(&[self.code as u8, self.identifier]);
        out.extend_from_slice(&len16.to_be_bytes());
        out.extend_from_slice(auth);
        out.extend_from_slice(&self.attrs);
        if self.message_authenticator {
            out.extend_from_slice(&[MESSAGE_AUTHENTICATOR, 18]);
            let at = out.len();
            out.extend_from_slice(&ZERO_AUTH);
            Ok(Some(at))
        } else {
            Ok(None)
        }
    }

    /// Fills the reserved Message-Authenticator at `at` (RFC 3579 §3.2).
    fn sign_message_authenticator(
        out: &mut [u8],
        at: Option<usize>,
        auth: &[u8; 16],
        secret: &[u8],
    ) {
        if let Some(at) = at
            && let Some(mac) = message_authenticator(out, auth, at, secret)
            && let Some(slot) = out.get_mut(at..at + 16)
        {
            slot.copy_from_slice(&mac);
        }
    }

    /// Requests (code 4, 40, 43): Authenticator = MD5 per RFC 2866 §3 / RFC 5176 §2.3; the
    /// Message-Authenticator (if reserved) is computed first, over the packet with a zero
    /// Authenticator.
    pub fn encode_request(&self, secret: &[u8]) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        self.encode_request_into(secret, &mut out)?;
        Ok(out)
    }

    /// [`PacketBuilder::encode_request`] into a reused buffer (cleared first).
    pub fn encode_request_into(&self, secret: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.sign_into(&ZERO_AUTH, secret, out)
    }

    /// Responses: the Message-Authenticator (if reserved) over the packet with the request
    /// authenticator, then the Response Authenticator
    /// `MD5(Code + Identifier + Length + RequestAuth + Attributes + Secret)` (RFC 2865 §3,
    /// RFC 2866 §3, RFC 5176 §2.3).
    pub fn encode_response(
        &self,
        request_authenticator: &[u8; 16],
        secret: &[u8],
    ) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        self.encode_response_into(request_authenticator, secret, &mut out)?;
        Ok(out)
    }

    /// [`PacketBuilder::encode_response`] into a reused buffer (cleared first).
    pub fn encode_response_into(
        &self,
        request_authenticator: &[u8; 16],
        secret: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        self.sign_into(request_authenticator, secret, out)
    }

    fn sign_into(
        &self,
        auth: &[u8; 16],
        secret: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let ma = self.write_unsigned(auth, out)?;
        Self::sign_message_authenticator(out, ma, auth, secret);
        let digest = packet_md5(out, auth, secret);
        if let Some(field) = out.get_mut(4..HEADER_LEN) {
            field.copy_from_slice(&digest);
        }
        Ok(())
    }

    /// Access-Request style: caller-supplied random authenticator (used only by tests/fuzz
    /// seeds); no hashing. A reserved Message-Authenticator stays 16 zero octets, since no
    /// secret is given.
    pub fn encode_with_authenticator(
        &self,
        authenticator: [u8; 16],
    ) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        self.write_unsigned(&authenticator, &mut out)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &[u8] = b"testing123";

    /// Hand-built Accounting-Request: header + User-Name "bob" + Acct-Status-Type Start +
    /// NAS-IP-Address 10.0.0.1, Authenticator per RFC 2866 §3 computed independently here.
    fn hand_built_accounting_request() -> Vec<u8> {
        let attrs: &[u8] = &[
            1, 5, b'b', b'o', b'b', // User-Name
            40, 6, 0, 0, 0, 1, // Acct-Status-Type = Start
            4, 6, 10, 0, 0, 1, // NAS-IP-Address
        ];
        let len = (HEADER_LEN + attrs.len()) as u16;
        let mut p = vec![4, 7];
        p.extend_from_slice(&len.to_be_bytes());
        p.extend_from_slice(&[0; 16]);
        p.extend_from_slice(attrs);
        let mut md5 = Md5::new();
        md5.update(&p);
        md5.update(SECRET);
        let digest: [u8; 16] = md5.finalize().into();
        p[4..20].copy_from_slice(&digest);
        p
    }

    fn with_length(mut p: Vec<u8>, len: usize) -> Vec<u8> {
        p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        p
    }

    #[test]
    fn decodes_hand_built_accounting_request() {
        let bytes = hand_built_accounting_request();
        let p = Packet::decode(&bytes).unwrap();
        assert_eq!(p.code(), Code::AccountingRequest);
        assert_eq!(p.identifier(), 7);
        assert_eq!(p.bytes(), &bytes[..]);
        assert_eq!(
            p.authenticator(),
            <&[u8; 16]>::try_from(&bytes[4..20]).unwrap()
        );
        let attrs: Vec<_> = p.attributes().collect();
        assert_eq!(
            attrs,
            vec![
                Attribute {
                    typ: 1,
                    value: b"bob"
                },
                Attribute {
                    typ: 40,
                    value: &[0, 0, 0, 1]
                },
                Attribute {
                    typ: 4,
                    value: &[10, 0, 0, 1]
                },
            ]
        );
        assert_eq!(p.attr(1), Some(&b"bob"[..]));
        assert_eq!(p.attr_u32(40), Some(1));
        assert_eq!(p.attr_ipv4(4), Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(p.attr_u32(1), None, "3-octet value is not an integer");
        assert_eq!(p.attr(99), None);
        assert!(p.verify_request_authenticator(SECRET));
        assert!(!p.verify_request_authenticator(b"wrong"));
        assert_eq!(p.verify_message_authenticator(SECRET, None), None);
    }

    #[test]
    fn too_short() {
        assert_eq!(Packet::decode(&[]).unwrap_err(), DecodeError::TooShort);
        let p = hand_built_accounting_request();
        assert_eq!(Packet::decode(&p[..19]).unwrap_err(), DecodeError::TooShort);
        assert_eq!(DecodeError::TooShort.reason(), "too_short");
    }

    #[test]
    fn too_long() {
        let mut big = hand_built_accounting_request();
        big.resize(MAX_PACKET_LEN + 1, 0);
        assert_eq!(
            Packet::decode(&big).unwrap_err(),
            DecodeError::TooLong,
            "datagram"
        );
        let p = with_length(hand_built_accounting_request(), MAX_PACKET_LEN + 1);
        assert_eq!(
            Packet::decode(&p).unwrap_err(),
            DecodeError::TooLong,
            "Length field"
        );
        assert_eq!(DecodeError::TooLong.reason(), "too_long");
        // Exactly 4096 is fine: one 2-octet attribute per pair of octets.
        let mut b = PacketBuilder::new(Code::AccountingRequest, 1);
        for _ in 0..(MAX_PACKET_LEN - HEADER_LEN) / 2 {
            b.attr(33, &[]).unwrap();
        }
        assert_eq!(b.attr(33, &[]).unwrap_err(), EncodeError::TooLong);
        let max = b.encode_request(SECRET).unwrap();
        assert_eq!(max.len(), MAX_PACKET_LEN);
        assert!(
            Packet::decode(&max)
                .unwrap()
                .verify_request_authenticator(SECRET)
        );
    }

    #[test]
    fn lying_length_is_bad_length() {
        let p = hand_built_accounting_request();
        let n = p.len();
        let longer = with_length(p.clone(), n + 1);
        assert_eq!(Packet::decode(&longer).unwrap_err(), DecodeError::BadLength);
        let below = with_length(p, 19);
        assert_eq!(Packet::decode(&below).unwrap_err(), DecodeError::BadLength);
        assert_eq!(DecodeError::BadLength.reason(), "bad_length");
    }

    #[test]
    fn bad_attribute_lengths() {
        for bad_len in [0u8, 1] {
            let mut p = hand_built_accounting_request();
            p[21] = bad_len; // User-Name's Length
            assert_eq!(
                Packet::decode(&p).unwrap_err(),
                DecodeError::BadAttribute,
                "len {bad_len}"
            );
        }
        // Last attribute runs past Length although the datagram has the octets.
        let mut p = hand_built_accounting_request();
        let n = p.len();
        p[n - 5] = 7; // NAS-IP-Address's Length 6 -> 7
        p.push(0);
        assert_eq!(Packet::decode(&p).unwrap_err(), DecodeError::BadAttribute);
        // A lone Type octet at the end.
        let mut p = hand_built_accounting_request();
        p.push(1);
        let n = p.len();
        let p = with_length(p, n);
        assert_eq!(Packet::decode(&p).unwrap_err(), DecodeError::BadAttribute);
        assert_eq!(DecodeError::BadAttribute.reason(), "bad_attribute");
    }

    #[test]
    fn unknown_code() {
        let mut p = hand_built_accounting_request();
        p[0] = 99;
        assert_eq!(
            Packet::decode(&p).unwrap_err(),
            DecodeError::UnknownCode(99)
        );
        assert_eq!(DecodeError::UnknownCode(99).reason(), "unknown_code");
        for c in [1u8, 2, 3, 4, 5, 11, 40, 41, 42, 43, 44, 45] {
            assert_eq!(Code::from_u8(c).map(Code::as_u8), Some(c));
        }
        for c in [0u8, 6, 12, 13, 39, 46, 255] {
            assert_eq!(Code::from_u8(c), None);
        }
    }

    #[test]
    fn padding_past_length_is_ignored() {
        let p = hand_built_accounting_request();
        let mut padded = p.clone();
        padded.extend_from_slice(&[0xff, 0x00, 0x13, 0x37]);
        let d = Packet::decode(&padded).unwrap();
        assert_eq!(d.bytes(), &p[..]);
        assert_eq!(d.attributes().count(), 3);
        assert!(d.verify_request_authenticator(SECRET));
    }

    #[test]
    fn header_only_packet() {
        let b = PacketBuilder::new(Code::AccountingResponse, 3);
        let out = b.encode_response(&[9; 16], SECRET).unwrap();
        assert_eq!(out.len(), HEADER_LEN);
        let p = Packet::decode(&out).unwrap();
        assert_eq!(p.attributes().count(), 0);
        assert!(p.verify_response_authenticator(&[9; 16], SECRET));
    }

    #[test]
    fn vendor_attributes_walk() {
        let mut b = PacketBuilder::new(Code::AccountingRequest, 1);
        b.attr(1, b"alice").unwrap();
        b.vendor_attr(14988, 8, b"10M/10M").unwrap(); // Mikrotik-Rate-Limit
        b.vendor_attr(9, 1, b"cisco-avpair").unwrap();
        // Two sub-attributes in one MikroTik VSA.
        let mut two = 14988u32.to_be_bytes().to_vec();
        two.extend_from_slice(&[3, 5, b'g', b'r', b'p', 10, 3, b'x']);
        b.attr(26, &two).unwrap();
        // Malformed MikroTik VSAs: sub-length 1, sub-attribute running past the VSA, a
        // trailing lone octet, and a value too short to hold a Vendor-Id.
        let mut bad = 14988u32.to_be_bytes().to_vec();
        bad.extend_from_slice(&[8, 1, b'z']);
        b.attr(26, &bad).unwrap();
        let mut bad = 14988u32.to_be_bytes().to_vec();
        bad.extend_from_slice(&[8, 9, b'z']);
        b.attr(26, &bad).unwrap();
        let mut bad = 14988u32.to_be_bytes().to_vec();
        bad.extend_from_slice(&[8, 3, b'z', 7]);
        b.attr(26, &bad).unwrap();
        b.attr(26, &[0, 0]).unwrap();
        // Vendor-Id only: valid, no sub-attributes.
        b.attr(26, &14988u32.to_be_bytes()).unwrap();
        b.vendor_attr(14988, 2, b"last").unwrap();
        let bytes = b.encode_request(SECRET).unwrap();
        let p = Packet::decode(&bytes).unwrap();
        let mt: Vec<_> = p.vendor_attributes(14988).collect();
        assert_eq!(
            mt,
            vec![
                Attribute {
                    typ: 8,
                    value: b"10M/10M"
                },
                Attribute {
                    typ: 3,
                    value: b"grp"
                },
                Attribute {
                    typ: 10,
                    value: b"x"
                },
                Attribute {
                    typ: 2,
                    value: b"last"
                },
            ]
        );
        assert_eq!(p.vendor_attr(14988, 10), Some(&b"x"[..]));
        assert_eq!(
            p.vendor_attributes(9).collect::<Vec<_>>(),
            vec![Attribute {
                typ: 1,
                value: b"cisco-avpair"
            }]
        );
        assert_eq!(p.vendor_attributes(311).count(), 0);
        assert_eq!(p.vendor_attributes(0).count(), 0);
        assert!(p.verify_request_authenticator(SECRET));
    }

    #[test]
    fn vendor_attr_limits() {
        let mut b = PacketBuilder::new(Code::AccountingRequest, 1);
        b.vendor_attr(14988, 1, &[b'a'; MAX_VSA_VALUE_LEN]).unwrap();
        assert_eq!(
            b.vendor_attr(14988, 1, &[b'a'; MAX_VSA_VALUE_LEN + 1])
                .unwrap_err(),
            EncodeError::AttributeTooLong
        );
        b.attr(1, &[b'a'; MAX_ATTR_VALUE_LEN]).unwrap();
        assert_eq!(
            b.attr(1, &[b'a'; MAX_ATTR_VALUE_LEN + 1]).unwrap_err(),
            EncodeError::AttributeTooLong
        );
        let out = b.encode_request(SECRET).unwrap();
        let p = Packet::decode(&out).unwrap();
        assert_eq!(
            p.vendor_attr(14988, 1).map(<[u8]>::len),
            Some(MAX_VSA_VALUE_LEN)
        );
        assert_eq!(p.attr(1).map(<[u8]>::len), Some(MAX_ATTR_VALUE_LEN));
    }

    #[test]
    fn request_authenticator_sign_verify_tamper() {
        for code in [
            Code::AccountingRequest,
            Code::DisconnectRequest,
            Code::CoaRequest,
        ] {
            let mut b = PacketBuilder::new(code, 200);
            b.attr(1, b"bob").unwrap().attr_u32(40, 3).unwrap();
            let out = b.encode_request(SECRET).unwrap();
            let p = Packet::decode(&out).unwrap();
            assert!(p.verify_request_authenticator(SECRET));
            assert!(!p.verify_request_authenticator(b"testing124"));
            for i in 0..out.len() {
                let mut t = out.clone();
                t[i] ^= 0x01;
                if let Ok(tp) = Packet::decode(&t) {
                    assert!(!tp.verify_request_authenticator(SECRET), "flip at {i}");
                }
            }
        }
        // Same bytes as the hand-built packet.
        let mut b = PacketBuilder::new(Code::AccountingRequest, 7);
        b.attr(1, b"bob").unwrap();
        b.attr_u32(40, 1).unwrap();
        b.attr_ipv4(4, Ipv4Addr::new(10, 0, 0, 1)).unwrap();
        assert_eq!(
            b.encode_request(SECRET).unwrap(),
            hand_built_accounting_request()
        );
    }

    #[test]
    fn response_authenticator_sign_verify_tamper() {
        let req = hand_built_accounting_request();
        let rp = Packet::decode(&req).unwrap();
        let b = PacketBuilder::new(Code::AccountingResponse, rp.identifier());
        let out = b.encode_response(rp.authenticator(), SECRET).unwrap();
        let p = Packet::decode(&out).unwrap();
        assert_eq!(p.identifier(), 7);
        assert!(p.verify_response_authenticator(rp.authenticator(), SECRET));
        assert!(!p.verify_response_authenticator(&[0; 16], SECRET));
        assert!(!p.verify_response_authenticator(rp.authenticator(), b"nope"));
        let mut t = out.clone();
        t[1] ^= 0x80;
        assert!(
            !Packet::decode(&t)
                .unwrap()
                .verify_response_authenticator(rp.authenticator(), SECRET)
        );
        // Independent computation of the formula.
        let mut md5 = Md5::new();
        md5.update(&out[..4]);
        md5.update(rp.authenticator());
        md5.update(SECRET);
        let expect: [u8; 16] = md5.finalize().into();
        assert_eq!(&out[4..20], &expect);
        // encode_response_into reuses the buffer.
        let mut buf = vec![1, 2, 3];
        b.encode_response_into(rp.authenticator(), SECRET, &mut buf)
            .unwrap();
        assert_eq!(buf, out);
    }

    /// HMAC-MD5 computed independently of the codec's streaming code.
    fn reference_ma(packet: &[u8], auth: &[u8; 16], secret: &[u8]) -> [u8; 16] {
        let mut copy = packet.to_vec();
        copy[4..20].copy_from_slice(auth);
        let mut i = HEADER_LEN;
        while i < copy.len() {
            if copy[i] == 80 {
                copy[i + 2..i + 18].fill(0);
            }
            i += copy[i + 1] as usize;
        }
        let mut mac = <Hmac<Md5> as KeyInit>::new_from_slice(secret).unwrap();
        mac.update(&copy);
        mac.finalize().into_bytes().into()
    }

    fn ma_value(packet: &[u8]) -> [u8; 16] {
        let p = Packet::decode(packet).unwrap();
        <[u8; 16]>::try_from(p.attr(80).unwrap()).unwrap()
    }

    #[test]
    fn message_authenticator_request() {
        let mut b = PacketBuilder::new(Code::DisconnectRequest, 9);
        b.attr(1, b"bob").unwrap();
        b.message_authenticator().message_authenticator();
        b.attr(44, b"81a00003").unwrap();
        let out = b.encode_request(SECRET).unwrap();
        let p = Packet::decode(&out).unwrap();
        assert_eq!(p.attributes().filter(|a| a.typ == 80).count(), 1);
        assert_eq!(out.len(), HEADER_LEN + 5 + 10 + 18);
        assert_eq!(ma_value(&out), reference_ma(&out, &[0; 16], SECRET));
        assert_eq!(p.verify_message_authenticator(SECRET, None), Some(true));
        assert_eq!(p.verify_message_authenticator(b"other", None), Some(false));
        assert!(
            p.verify_request_authenticator(SECRET),
            "MA computed before the authenticator"
        );
        // Tamper with an attribute and re-sign only the request authenticator: MA must fail.
        let mut t = out.clone();
        t[22] = b'B';
        let mut md5 = Md5::new();
        md5.update(&t[..4]);
        md5.update([0u8; 16]);
        md5.update(&t[20..]);
        md5.update(SECRET);
        let d: [u8; 16] = md5.finalize().into();
        t[4..20].copy_from_slice(&d);
        let tp = Packet::decode(&t).unwrap();
        assert!(tp.verify_request_authenticator(SECRET));
        assert_eq!(tp.verify_message_authenticator(SECRET, None), Some(false));
    }

    #[test]
    fn message_authenticator_response() {
        let req_auth = [0x5a; 16];
        let mut b = PacketBuilder::new(Code::CoaAck, 9);
        b.message_authenticator();
        b.attr(33, b"state").unwrap();
        let out = b.encode_response(&req_auth, SECRET).unwrap();
        let p = Packet::decode(&out).unwrap();
        assert_eq!(ma_value(&out), reference_ma(&out, &req_auth, SECRET));
        assert_eq!(
            p.verify_message_authenticator(SECRET, Some(&req_auth)),
            Some(true)
        );
        assert_eq!(
            p.verify_message_authenticator(SECRET, Some(&[0; 16])),
            Some(false)
        );
        assert_eq!(p.verify_message_authenticator(SECRET, None), Some(false));
        assert!(p.verify_response_authenticator(&req_auth, SECRET));
        // Flip a bit of the MA itself.
        let mut t = out.clone();
        let n = t.len();
        t[n - 1] ^= 1;
        let tp = Packet::decode(&t).unwrap();
        assert_eq!(
            tp.verify_message_authenticator(SECRET, Some(&req_auth)),
            Some(false)
        );
    }

    #[test]
    fn message_authenticator_wrong_length_and_fit() {
        let mut b = PacketBuilder::new(Code::AccountingRequest, 1);
        b.attr(80, &[0; 15]).unwrap();
        let out = b.encode_request(SECRET).unwrap();
        let p = Packet::decode(&out).unwrap();
        assert_eq!(p.verify_message_authenticator(SECRET, None), Some(false));
        // Reserving MA when fewer than 18 octets are left is TooLong at encode time.
        let mut b = PacketBuilder::new(Code::AccountingRequest, 1);
        for _ in 0..(MAX_PACKET_LEN - HEADER_LEN - 18) / 2 {
            b.attr(33, &[]).unwrap();
        }
        b.attr(33, &[0]).unwrap(); // 15 octets left, MA needs 18
        b.message_authenticator();
        assert_eq!(b.encode_request(SECRET).unwrap_err(), EncodeError::TooLong);
        assert_eq!(
            b.encode_with_authenticator([0; 16]).unwrap_err(),
            EncodeError::TooLong
        );
    }

    #[test]
    fn proxy_state_copied_in_order() {
        let mut rb = PacketBuilder::new(Code::AccountingRequest, 42);
        rb.attr(33, b"first").unwrap();
        rb.attr(1, b"user").unwrap();
        rb.attr(33, b"second").unwrap();
        rb.attr(33, &[]).unwrap();
        rb.attr(33, b"third").unwrap();
        let req = rb.encode_request(SECRET).unwrap();
        let rp = Packet::decode(&req).unwrap();
        let mut resp = PacketBuilder::new(Code::AccountingResponse, rp.identifier());
        for a in rp.attributes().filter(|a| a.typ == 33) {
            resp.raw_attr(a).unwrap();
        }
        let out = resp.encode_response(rp.authenticator(), SECRET).unwrap();
        let p = Packet::decode(&out).unwrap();
        let states: Vec<&[u8]> = p.attributes().map(|a| a.value).collect();
        assert_eq!(states, vec![&b"first"[..], b"second", b"", b"third"]);
        assert!(p.verify_response_authenticator(rp.authenticator(), SECRET));
    }

    #[test]
    fn ipv6_accessors() {
        let addr: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let mut b = PacketBuilder::new(Code::AccountingRequest, 1);
        b.attr_ipv6(95, addr).unwrap();
        b.attr(97, &[0, 64, 0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 2])
            .unwrap();
        b.attr(123, &[0, 56, 0x20, 0x01, 0x0d, 0xb8, 0, 1, 0xff, 0xff])
            .unwrap(); // bits past /56 set
        b.attr(168, &[1, 2, 3]).unwrap();
        b.attr(200, &[0, 129]).unwrap();
        b.attr(201, &[0, 64, 1, 2]).unwrap(); // too few octets for /64
        b.attr(202, &[0, 0]).unwrap();
        b.attr(203, &[0; 19]).unwrap();
        b.attr(204, &[0]).unwrap();
        let out = b.encode_request(SECRET).unwrap();
        let p = Packet::decode(&out).unwrap();
        assert_eq!(p.attr_ipv6(95), Some(addr));
        assert_eq!(p.attr_ipv6(168), None);
        assert_eq!(
            p.attr_ipv6_prefix(97),
            Some(("2001:db8:1:2::".parse().unwrap(), 64))
        );
        assert_eq!(
            p.attr_ipv6_prefix(123),
            Some(("2001:db8:1:ff00::".parse().unwrap(), 56))
        );
        assert_eq!(p.attr_ipv6_prefix(200), None);
        assert_eq!(p.attr_ipv6_prefix(201), None);
        assert_eq!(p.attr_ipv6_prefix(202), Some((Ipv6Addr::UNSPECIFIED, 0)));
        assert_eq!(p.attr_ipv6_prefix(203), None);
        assert_eq!(p.attr_ipv6_prefix(204), None, "one octet");
        assert_eq!(p.attr_ipv6_prefix(99), None, "absent");
        let full = [&[0u8, 128][..], &addr.octets()].concat();
        assert_eq!(parse_ipv6_prefix(&full), Some((addr, 128)));
    }

    #[test]
    fn encode_with_authenticator_is_verbatim() {
        let mut b = PacketBuilder::new(Code::AccessRequest, 5);
        b.attr(1, b"x").unwrap();
        let out = b.encode_with_authenticator([7; 16]).unwrap();
        assert_eq!(
            out,
            [&[1u8, 5, 0, 23][..], &[7; 16], &[1, 3, b'x']].concat()
        );
        // Access-Request MA uses the packet's own authenticator.
        b.message_authenticator();
        let out = b.encode_with_authenticator([7; 16]).unwrap();
        assert_eq!(ma_value(&out), [0; 16]);
    }

    #[test]
    fn error_display() {
        assert!(DecodeError::UnknownCode(7).to_string().contains('7'));
        assert!(!EncodeError::TooLong.to_string().is_empty());
    }

    fn arb_attrs() -> impl Strategy<Value = Vec<(u8, Vec<u8>)>> {
        prop::collection::vec(
            (
                any::<u8>(),
                prop::collection::vec(any::<u8>(), 0..=MAX_ATTR_VALUE_LEN),
            ),
            0..12,
        )
    }

    /// Mostly-plausible packets: a valid header in front of arbitrary attribute bytes.
    fn arb_datagram() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..300),
            (
                prop::sample::select(vec![1u8, 2, 4, 5, 40, 41, 43, 44]),
                prop::collection::vec(any::<u8>(), 0..300),
                0usize..8,
            )
                .prop_map(|(code, body, pad)| {
                    let len = (HEADER_LEN + body.len()) as u16;
                    let mut p = vec![code, 1];
                    p.extend_from_slice(&len.to_be_bytes());
                    p.extend_from_slice(&[0; 16]);
                    p.extend_from_slice(&body);
                    p.extend(std::iter::repeat_n(0xAA, pad));
                    p
                }),
            // Well-formed attribute framing with VSA-looking values.
            prop::collection::vec(
                (
                    prop::sample::select(vec![26u8, 26, 80, 1, 97]),
                    prop::collection::vec(any::<u8>(), 0..40),
                ),
                0..8
            )
            .prop_map(|attrs| {
                let mut b = PacketBuilder::new(Code::AccountingRequest, 1);
                for (t, mut v) in attrs {
                    if t == 26 && v.len() >= 4 {
                        v[..4].copy_from_slice(&14988u32.to_be_bytes());
                    }
                    let _ = b.attr(t, &v);
                }
                b.encode_request(SECRET).unwrap_or_default()
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn decode_never_panics(data in arb_datagram()) {
            if let Ok(p) = Packet::decode(&data) {
                prop_assert!(p.bytes().len() >= HEADER_LEN && p.bytes().len() <= data.len());
                let total: usize = p.attributes().map(|a| a.value.len() + 2).sum();
                prop_assert_eq!(total + HEADER_LEN, p.bytes().len());
                for v in [0, 9, 14988, u32::from_be_bytes([0xAA; 4])] {
                    for a in p.vendor_attributes(v) {
                        prop_assert!(a.value.len() <= MAX_VSA_VALUE_LEN);
                    }
                }
                let _ = p.attr_ipv6_prefix(97);
                let _ = p.attr_ipv6(95);
                let _ = p.verify_request_authenticator(SECRET);
                let _ = p.verify_response_authenticator(&[1; 16], SECRET);
                let _ = p.verify_message_authenticator(SECRET, None);
                let _ = p.verify_message_authenticator(b"", Some(&[2; 16]));
            }
        }

        #[test]
        fn attr_is_the_first_attribute_of_its_type(
            attrs in prop::collection::vec((0u8..4, prop::collection::vec(any::<u8>(), 0..6)), 0..12),
        ) {
            let mut b = PacketBuilder::new(Code::AccountingRequest, 1);
            for (t, v) in &attrs {
                b.attr(*t, v).unwrap();
            }
            let out = b.encode_request(SECRET).unwrap();
            let p = Packet::decode(&out).unwrap();
            for t in 0..=u8::MAX {
                let walked = attrs.iter().find(|(typ, _)| *typ == t).map(|(_, v)| v.as_slice());
                prop_assert_eq!(p.attr(t), walked, "type {}", t);
            }
        }

        #[test]
        fn builder_round_trip(attrs in arb_attrs(), id in any::<u8>(), flip in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut b = PacketBuilder::new(Code::AccountingRequest, id);
            for (t, v) in &attrs {
                b.attr(*t, v).unwrap();
            }
            let out = b.encode_request(SECRET).unwrap();
            let p = Packet::decode(&out).unwrap();
            prop_assert_eq!(p.identifier(), id);
            let got: Vec<(u8, Vec<u8>)> = p.attributes().map(|a| (a.typ, a.value.to_vec())).collect();
            prop_assert_eq!(&got, &attrs);
            prop_assert!(p.verify_request_authenticator(SECRET));
            let mut t = out.clone();
            let i = flip.index(t.len());
            t[i] ^= 1 << bit;
            if let Ok(tp) = Packet::decode(&t) {
                prop_assert!(!tp.verify_request_authenticator(SECRET));
            }
        }
    }
}
