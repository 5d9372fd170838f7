//! The decode path the `decode` fuzz target drives, shared with `tests/it/fuzz_corpus.rs` (which
//! includes this file by path) so CI replays the corpus through the same code. It must not
//! do I/O; it panics only when a codec invariant is broken, which is the finding.

use radacctd::radius::codec::{Packet, PacketBuilder};

/// Secret the fuzz seeds are signed with.
pub const SECRET: &[u8] = b"fuzz-secret";

/// Decodes `data`, walks attributes and VSAs, runs every verifier and checks the invariants:
/// the attribute list exactly fills Length, and re-encoding the attributes reproduces the
/// packet byte for byte.
pub fn exercise(data: &[u8]) {
    let Ok(p) = Packet::decode(data) else {
        return;
    };
    let bytes = p.bytes();
    assert!(bytes.len() <= data.len());
    assert_eq!(
        usize::from(u16::from_be_bytes([bytes[2], bytes[3]])),
        bytes.len()
    );

    let mut rebuilt = PacketBuilder::new(p.code(), p.identifier());
    let mut total = 20;
    for a in p.attributes() {
        total += a.value.len() + 2;
        rebuilt.raw_attr(a).expect("a decoded attribute re-encodes");
    }
    assert_eq!(total, bytes.len());
    let again = rebuilt
        .encode_with_authenticator(*p.authenticator())
        .expect("a decoded packet re-encodes");
    assert_eq!(again, bytes);

    for vendor in [14988, 9, 311, 0] {
        for a in p.vendor_attributes(vendor) {
            assert!(a.value.len() <= 247);
        }
    }
    for typ in [1, 4, 8, 40, 44, 95, 97, 123, 168] {
        let _ = p.attr(typ);
        let _ = p.attr_u32(typ);
        let _ = p.attr_ipv4(typ);
        let _ = p.attr_ipv6(typ);
        if let Some((_, len)) = p.attr_ipv6_prefix(typ) {
            assert!(len <= 128);
        }
    }
    let _ = p.verify_request_authenticator(SECRET);
    let _ = p.verify_response_authenticator(&[0x11; 16], SECRET);
    let _ = p.verify_message_authenticator(SECRET, None);
    let _ = p.verify_message_authenticator(SECRET, Some(p.authenticator()));
}
