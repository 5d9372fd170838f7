//! Replays every file in `fuzz/corpus/decode/` through the fuzz target's decode path
//! (`fuzz/src/lib.rs`) as an ordinary test, so CI exercises the corpus without libFuzzer, and
//! keeps the hand-made seeds (`seed-*`) equal to the packets built here. It must not write
//! anywhere unless asked: `RADACCTD_WRITE_SEEDS=1 cargo test --test it fuzz_corpus` rewrites
//! the seeds.

#[path = "../../fuzz/src/lib.rs"]
mod exercise;

use std::net::Ipv4Addr;
use std::path::PathBuf;

use radacctd::radius::codec::{Code, DecodeError, Packet, PacketBuilder};
use radacctd::radius::dictionary::*;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode")
}

fn with_length(mut p: Vec<u8>, len: u16) -> Vec<u8> {
    p[2..4].copy_from_slice(&len.to_be_bytes());
    p
}

fn accounting(status: u32) -> PacketBuilder {
    let mut b = PacketBuilder::new(Code::AccountingRequest, status as u8);
    b.attr_u32(ACCT_STATUS_TYPE, status).unwrap();
    b.attr(USER_NAME, b"alice").unwrap();
    b.attr(ACCT_SESSION_ID, b"81a00007").unwrap();
    b.attr_ipv4(NAS_IP_ADDRESS, Ipv4Addr::new(10, 0, 0, 1))
        .unwrap();
    b.attr(NAS_IDENTIFIER, b"core-rtr").unwrap();
    b.attr(NAS_PORT_ID, b"ether2").unwrap();
    b.attr_u32(NAS_PORT_TYPE, 15).unwrap();
    b.attr_ipv4(FRAMED_IP_ADDRESS, Ipv4Addr::new(100, 64, 0, 9))
        .unwrap();
    b.attr(CALLING_STATION_ID, b"AA:BB:CC:DD:EE:FF").unwrap();
    b
}

/// The seed files, by name, with the decode result each must give.
fn seeds() -> Vec<(&'static str, Vec<u8>, Result<(), DecodeError>)> {
    let secret = exercise::SECRET;
    let start = accounting(STATUS_START).encode_request(secret).unwrap();

    let mut interim = accounting(STATUS_INTERIM_UPDATE);
    interim.attr_u32(ACCT_SESSION_TIME, 300).unwrap();
    interim.attr_u32(ACCT_INPUT_OCTETS, 123_456).unwrap();
    interim.attr_u32(ACCT_INPUT_GIGAWORDS, 1).unwrap();
    interim.vendor_attr(VENDOR_MIKROTIK, 8, b"10M/10M").unwrap();
    let interim = interim.encode_request(secret).unwrap();

    let mut stop = accounting(STATUS_STOP);
    stop.attr_u32(ACCT_TERMINATE_CAUSE, 1).unwrap();
    stop.attr(PROXY_STATE, b"\x00\x01").unwrap();
    stop.attr(CLASS, b"class-blob").unwrap();
    let stop = stop.encode_request(secret).unwrap();

    let mut dm = PacketBuilder::new(Code::DisconnectRequest, 3);
    dm.attr(USER_NAME, b"alice").unwrap();
    dm.attr(ACCT_SESSION_ID, b"81a00007").unwrap();
    dm.message_authenticator();
    let dm = dm.encode_request(secret).unwrap();

    let mut nak = PacketBuilder::new(Code::CoaNak, 4);
    nak.attr_u32(ERROR_CAUSE, 503).unwrap();
    nak.message_authenticator();
    let nak = nak.encode_response(&[0x42; 16], secret).unwrap();

    let resp = PacketBuilder::new(Code::AccountingResponse, 1)
        .encode_response(&[0x42; 16], secret)
        .unwrap();

    let mut v6 = PacketBuilder::new(Code::AccountingRequest, 6);
    v6.attr(
        NAS_IPV6_ADDRESS,
        &[0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    )
    .unwrap();
    v6.attr(
        FRAMED_IPV6_PREFIX,
        &[0, 64, 0x20, 1, 0x0d, 0xb8, 0, 0, 0, 7],
    )
    .unwrap();
    v6.attr(
        DELEGATED_IPV6_PREFIX,
        &[0, 56, 0x20, 1, 0x0d, 0xb8, 0, 0x42, 0],
    )
    .unwrap();
    v6.attr(FRAMED_INTERFACE_ID, &[1, 2, 3, 4, 5, 6, 7, 8])
        .unwrap();
    let v6 = v6.encode_request(secret).unwrap();

    let mut bad_vsa = PacketBuilder::new(Code::AccountingRequest, 7);
    let mut vsa = VENDOR_MIKROTIK.to_be_bytes().to_vec();
    vsa.extend_from_slice(&[8, 1, b'x']);
    bad_vsa.attr(VENDOR_SPECIFIC, &vsa).unwrap();
    bad_vsa.attr(VENDOR_SPECIFIC, &[0, 0]).unwrap();
    let bad_vsa = bad_vsa.encode_request(secret).unwrap();

    let mut padded = start.clone();
    padded.extend_from_slice(&[0xff; 13]);

    let mut attr_len0 = start.clone();
    attr_len0[21] = 0;
    let mut attr_len1 = start.clone();
    attr_len1[21] = 1;
    let n = start.len() as u16;
    let mut runs_past = start.clone();
    let last = start.len() - 18; // Length octet of the last attribute, Calling-Station-Id (19 octets)
    runs_past[last] += 1;
    runs_past.push(0);
    let mut unknown = start.clone();
    unknown[0] = 12;
    let mut oversize = start.clone();
    oversize.resize(4097, 0);

    vec![
        ("seed-01-acct-start", start.clone(), Ok(())),
        ("seed-02-acct-interim-mikrotik", interim, Ok(())),
        ("seed-03-acct-stop", stop, Ok(())),
        ("seed-04-disconnect-request-ma", dm, Ok(())),
        ("seed-05-coa-nak-ma", nak, Ok(())),
        ("seed-06-acct-response", resp, Ok(())),
        ("seed-07-ipv6", v6, Ok(())),
        ("seed-08-malformed-vsa", bad_vsa, Ok(())),
        ("seed-09-padded", padded, Ok(())),
        (
            "seed-10-too-short",
            start[..12].to_vec(),
            Err(DecodeError::TooShort),
        ),
        (
            "seed-11-length-lies",
            with_length(start.clone(), n + 1),
            Err(DecodeError::BadLength),
        ),
        (
            "seed-12-length-below-20",
            with_length(start.clone(), 19),
            Err(DecodeError::BadLength),
        ),
        (
            "seed-13-attr-len-0",
            attr_len0,
            Err(DecodeError::BadAttribute),
        ),
        (
            "seed-14-attr-len-1",
            attr_len1,
            Err(DecodeError::BadAttribute),
        ),
        (
            "seed-15-attr-runs-past",
            runs_past,
            Err(DecodeError::BadAttribute),
        ),
        (
            "seed-16-unknown-code",
            unknown,
            Err(DecodeError::UnknownCode(12)),
        ),
        ("seed-17-oversize", oversize, Err(DecodeError::TooLong)),
        (
            "seed-18-length-4097",
            with_length(start, 4097),
            Err(DecodeError::TooLong),
        ),
    ]
}

#[test]
fn seeds_decode_as_intended() {
    for (name, bytes, expect) in seeds() {
        assert_eq!(Packet::decode(&bytes).map(|_| ()), expect, "{name}");
        exercise::exercise(&bytes);
    }
}

#[test]
fn seed_files_match_generator() {
    let dir = corpus_dir();
    // RADACCTD_WRITE_SEEDS=1 regenerates the seed files from the generator first.
    if std::env::var_os("RADACCTD_WRITE_SEEDS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes, _) in seeds() {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    for (name, bytes, _) in seeds() {
        let on_disk = std::fs::read(dir.join(name)).unwrap_or_else(|e| {
            panic!("{name}: {e}; run `RADACCTD_WRITE_SEEDS=1 cargo test --test it fuzz_corpus`")
        });
        assert_eq!(on_disk, bytes, "{name} differs from the generator");
    }
}

#[test]
fn replay_corpus() {
    let mut n = 0;
    for entry in std::fs::read_dir(corpus_dir()).expect("fuzz/corpus/decode exists") {
        let path = entry.unwrap().path();
        if path.is_file() {
            let data = std::fs::read(&path).unwrap();
            exercise::exercise(&data);
            n += 1;
        }
    }
    assert!(n >= seeds().len(), "only {n} corpus files");
    println!("replayed {n} corpus files");
}
