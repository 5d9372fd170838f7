//! Criterion benchmarks of the RADIUS codec's hot path: decode + authenticate + read the usual
//! attributes of a MikroTik Interim-Update, and sign an Accounting-Response. It must not
//! measure I/O or anything outside `radacctd::radius::codec`.

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{Criterion, criterion_group, criterion_main};
use radacctd::radius::codec::{Code, Packet, PacketBuilder};
use radacctd::radius::dictionary::*;

const SECRET: &[u8] = b"mikrotik-shared-secret";

fn interim_update() -> Vec<u8> {
    let mut b = PacketBuilder::new(Code::AccountingRequest, 42);
    b.attr_u32(ACCT_STATUS_TYPE, STATUS_INTERIM_UPDATE).unwrap();
    b.attr(USER_NAME, b"customer-00421").unwrap();
    b.attr(ACCT_SESSION_ID, b"81a0042f").unwrap();
    b.attr_ipv4(NAS_IP_ADDRESS, Ipv4Addr::new(10, 10, 0, 1))
        .unwrap();
    b.attr(NAS_IDENTIFIER, b"bng-core-01").unwrap();
    b.attr_u32(NAS_PORT, 15728897).unwrap();
    b.attr(NAS_PORT_ID, b"ether2-vlan120").unwrap();
    b.attr_u32(NAS_PORT_TYPE, 15).unwrap();
    b.attr_u32(SERVICE_TYPE, 2).unwrap();
    b.attr_u32(FRAMED_PROTOCOL, 1).unwrap();
    b.attr_ipv4(FRAMED_IP_ADDRESS, Ipv4Addr::new(100, 64, 12, 34))
        .unwrap();
    b.attr(CALLING_STATION_ID, b"4C:5E:0C:12:34:56").unwrap();
    b.attr(CALLED_STATION_ID, b"pppoe-service-1").unwrap();
    b.attr_u32(ACCT_SESSION_TIME, 86_400).unwrap();
    b.attr_u32(ACCT_INPUT_OCTETS, 3_456_789_012).unwrap();
    b.attr_u32(ACCT_OUTPUT_OCTETS, 1_234_567_890).unwrap();
    b.attr_u32(ACCT_INPUT_GIGAWORDS, 3).unwrap();
    b.attr_u32(ACCT_OUTPUT_GIGAWORDS, 12).unwrap();
    b.attr_u32(ACCT_INPUT_PACKETS, 4_000_000).unwrap();
    b.attr_u32(ACCT_OUTPUT_PACKETS, 9_000_000).unwrap();
    b.attr_u32(EVENT_TIMESTAMP, 1_700_000_000).unwrap();
    b.attr_u32(ACCT_DELAY_TIME, 0).unwrap();
    b.attr_u32(ACCT_AUTHENTIC, 1).unwrap();
    b.vendor_attr(VENDOR_MIKROTIK, 8, b"50M/50M").unwrap(); // Mikrotik-Rate-Limit
    b.encode_request(SECRET).unwrap()
}

/// What the accounting path reads from each packet.
#[derive(Debug, Default)]
#[allow(dead_code)]
struct Extracted<'a> {
    user_name: Option<&'a [u8]>,
    session_id: Option<&'a [u8]>,
    nas_ip: Option<Ipv4Addr>,
    nas_identifier: Option<&'a [u8]>,
    nas_port: Option<u32>,
    nas_port_id: Option<&'a [u8]>,
    nas_port_type: Option<u32>,
    service_type: Option<u32>,
    framed_protocol: Option<u32>,
    framed_ip: Option<Ipv4Addr>,
    calling: Option<&'a [u8]>,
    called: Option<&'a [u8]>,
    status: Option<u32>,
    session_time: Option<u32>,
    input: u64,
    output: u64,
    event_timestamp: Option<u32>,
    delay: Option<u32>,
    authentic: Option<u32>,
    rate_limit: Option<&'a [u8]>,
}

fn decode_verify_extract(bytes: &[u8]) -> Option<Extracted<'_>> {
    let p = Packet::decode(bytes).ok()?;
    if !p.verify_request_authenticator(SECRET) {
        return None;
    }
    let octets = |lo: u8, hi: u8| {
        u64::from(p.attr_u32(hi).unwrap_or(0)) << 32 | u64::from(p.attr_u32(lo).unwrap_or(0))
    };
    Some(Extracted {
        user_name: p.attr(USER_NAME),
        session_id: p.attr(ACCT_SESSION_ID),
        nas_ip: p.attr_ipv4(NAS_IP_ADDRESS),
        nas_identifier: p.attr(NAS_IDENTIFIER),
        nas_port: p.attr_u32(NAS_PORT),
        nas_port_id: p.attr(NAS_PORT_ID),
        nas_port_type: p.attr_u32(NAS_PORT_TYPE),
        service_type: p.attr_u32(SERVICE_TYPE),
        framed_protocol: p.attr_u32(FRAMED_PROTOCOL),
        framed_ip: p.attr_ipv4(FRAMED_IP_ADDRESS),
        calling: p.attr(CALLING_STATION_ID),
        called: p.attr(CALLED_STATION_ID),
        status: p.attr_u32(ACCT_STATUS_TYPE),
        session_time: p.attr_u32(ACCT_SESSION_TIME),
        input: octets(ACCT_INPUT_OCTETS, ACCT_INPUT_GIGAWORDS),
        output: octets(ACCT_OUTPUT_OCTETS, ACCT_OUTPUT_GIGAWORDS),
        event_timestamp: p.attr_u32(EVENT_TIMESTAMP),
        delay: p.attr_u32(ACCT_DELAY_TIME),
        authentic: p.attr_u32(ACCT_AUTHENTIC),
        rate_limit: p.vendor_attr(VENDOR_MIKROTIK, 8),
    })
}

fn bench_codec(c: &mut Criterion) {
    let packet = interim_update();
    assert!(decode_verify_extract(&packet).is_some());
    let p = Packet::decode(&packet).unwrap();
    let request_auth = *p.authenticator();

    c.bench_function("decode", |b| {
        b.iter(|| Packet::decode(black_box(&packet)).map(|p| p.identifier()))
    });
    c.bench_function("decode+verify_request_authenticator", |b| {
        b.iter(|| {
            Packet::decode(black_box(&packet))
                .map(|p| p.verify_request_authenticator(black_box(SECRET)))
        })
    });
    c.bench_function("decode+verify+extract_interim_update", |b| {
        b.iter(|| decode_verify_extract(black_box(&packet)).map(|e| e.input))
    });
    c.bench_function("encode_response(accounting-response)", |b| {
        let builder = PacketBuilder::new(Code::AccountingResponse, p.identifier());
        b.iter(|| {
            builder
                .encode_response(black_box(&request_auth), black_box(SECRET))
                .map(|v| v.len())
        })
    });
    c.bench_function("encode_response_into(accounting-response)", |b| {
        let builder = PacketBuilder::new(Code::AccountingResponse, p.identifier());
        let mut out = Vec::with_capacity(64);
        b.iter(|| {
            builder
                .encode_response_into(black_box(&request_auth), black_box(SECRET), &mut out)
                .map(|()| out.len())
        })
    });
}

criterion_group!(benches, bench_codec);
criterion_main!(benches);
