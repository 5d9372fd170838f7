//! Criterion benchmarks of the in-memory half of ingest: reading an Accounting-Request into an
//! event (`radius::accounting::parse`), folding it into a row (`ingest::semantics::apply`) and
//! applying the committed row to the live index (`SessionIndex::upsert`) with 25,000 sessions
//! present; and the Sessions API's index scans (a list page, with and without a search) at
//! 25,000 and 1,000,000 open sessions. No I/O: the database side is measured end to end by
//! `radacctd-bench`.

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{Criterion, criterion_group, criterion_main};
use radacctd::ingest::semantics;
use radacctd::radius::accounting::{self, Parsed};
use radacctd::radius::codec::{Code, Packet, PacketBuilder};
use radacctd::radius::dictionary::*;
use radacctd::sessions::filter::{Order, Page, Search, SessionFilter, Sort, SortKey, select_page};
use radacctd::sessions::{Session, SessionIndex};

const SECRET: &[u8] = b"mikrotik-shared-secret";

fn packet(status: u32, n: u32) -> Vec<u8> {
    let mut b = PacketBuilder::new(Code::AccountingRequest, 7);
    let user = format!("customer-{n:05}");
    let sid = format!("{:08x}", 0x81a0_0000 + n);
    b.attr_u32(ACCT_STATUS_TYPE, status).expect("fits");
    b.attr(USER_NAME, user.as_bytes()).expect("fits");
    b.attr(ACCT_SESSION_ID, sid.as_bytes()).expect("fits");
    b.attr_ipv4(NAS_IP_ADDRESS, Ipv4Addr::new(10, 10, 0, 1))
        .expect("fits");
    b.attr(NAS_IDENTIFIER, b"bng-core-01").expect("fits");
    b.attr(NAS_PORT_ID, b"ether2-vlan120").expect("fits");
    b.attr_u32(NAS_PORT_TYPE, 15).expect("fits");
    b.attr_u32(SERVICE_TYPE, 2).expect("fits");
    b.attr_u32(FRAMED_PROTOCOL, 1).expect("fits");
    b.attr_ipv4(FRAMED_IP_ADDRESS, Ipv4Addr::from(0x6440_0000 + n))
        .expect("fits");
    b.attr(CALLING_STATION_ID, b"4C:5E:0C:12:34:56")
        .expect("fits");
    b.attr_u32(ACCT_SESSION_TIME, 600).expect("fits");
    b.attr_u32(ACCT_INPUT_OCTETS, 123_456_789).expect("fits");
    b.attr_u32(ACCT_INPUT_GIGAWORDS, 1).expect("fits");
    b.attr_u32(ACCT_OUTPUT_OCTETS, 987_654_321).expect("fits");
    b.attr_u32(EVENT_TIMESTAMP, 1_790_000_600).expect("fits");
    b.encode_request(SECRET).expect("encodes")
}

fn event(bytes: &[u8]) -> accounting::AccountingEvent {
    let p = Packet::decode(bytes).expect("decodes");
    match accounting::parse(&p, "10.10.0.1".parse().expect("ip"), 1_790_000_600, 86_400) {
        Parsed::Event(e) => *e,
        Parsed::Ignored { .. } => unreachable!("an interim is an event"),
    }
}

fn bench(c: &mut Criterion) {
    let interim = packet(STATUS_INTERIM_UPDATE, 421);
    c.bench_function(
        "parse interim-update into an event (incl. acctuniqueid md5)",
        |b| {
            b.iter(|| {
                let p = Packet::decode(black_box(&interim)).expect("decodes");
                black_box(accounting::parse(
                    &p,
                    "10.10.0.1".parse().expect("ip"),
                    1_790_000_600,
                    86_400,
                ))
            })
        },
    );

    let start = event(&packet(STATUS_START, 421));
    let ev = event(&interim);
    let mut base = None;
    semantics::apply(&mut base, &start);
    c.bench_function("semantics::apply interim to an open row", |b| {
        b.iter(|| {
            let mut row = base.clone();
            black_box(semantics::apply(&mut row, black_box(&ev)))
        })
    });

    let index = SessionIndex::new();
    let mut rows = Vec::new();
    for n in 0..25_000 {
        let mut row = None;
        semantics::apply(&mut row, &event(&packet(STATUS_START, n)));
        let mut row = row.expect("row");
        row.radacctid = Some(i64::from(n) + 1);
        index.upsert(Session::from_row(&row, Some(i64::from(n % 50))));
        rows.push(row);
    }
    let mut i = 0;
    c.bench_function("index upsert (replace) with 25k sessions", |b| {
        b.iter(|| {
            i = (i + 1) % rows.len();
            index.upsert(Session::from_row(&rows[i], Some((i % 50) as i64)));
        })
    });
    c.bench_function("index count for 10 resellers with 25k sessions", |b| {
        let resellers: Vec<i64> = (0..10).collect();
        b.iter(|| black_box(index.count_for_resellers(black_box(&resellers))))
    });
}

/// A list page from the index, as `GET /api/sessions?limit=50&sort=acctinputoctets[&search=…]`
/// answers it, with `n` open sessions.
fn list_pages(c: &mut Criterion) {
    for n in [25_000u32, 1_000_000] {
        let index = SessionIndex::new();
        let mut row = None;
        semantics::apply(&mut row, &event(&packet(STATUS_START, 0)));
        let template = row.expect("row");
        index.replace_all((0..n).map(|i| {
            let mut r = template.clone();
            r.radacctid = Some(i64::from(i) + 1);
            r.acctuniqueid = format!("{:032x}", u128::from(i) * 0x9E37_79B9_7F4A_7C15);
            r.username = Some(format!("customer-{i:07}@isp.example"));
            r.framedipaddress = Some(Ipv4Addr::from(0x6440_0000 + i).to_string());
            r.acctinputoctets = Some(i64::from(i.wrapping_mul(2_654_435_761) % 1_000_003));
            Session::from_row(&r, Some(i64::from(i % 50)))
        }));
        let sort = Sort {
            key: SortKey::AcctInputOctets,
            order: Order::Desc,
        };
        let page = Page { page: 1, limit: 50 };
        let plain = SessionFilter::default();
        c.bench_function(
            &format!("list page (limit 50, sort acctinputoctets), {n} open"),
            |b| b.iter(|| black_box(select_page(&index, &plain, sort, page))),
        );
        let search = SessionFilter {
            search: Search::new("MER12"),
            ..SessionFilter::default()
        };
        c.bench_function(&format!("list page + search \"MER12\", {n} open"), |b| {
            b.iter(|| black_box(select_page(&index, &search, sort, page)))
        });
    }
}

criterion_group!(benches, bench);
criterion_group! {
    name = scans;
    config = Criterion::default().sample_size(20);
    targets = list_pages
}
criterion_main!(benches, scans);
