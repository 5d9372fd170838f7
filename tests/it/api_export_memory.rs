//! A 200,000-row CSV export whose memory stays flat. The server is the real binary in a process
//! of its own, so its resident set is the server's alone, whatever else runs in the test
//! process. RSS is sampled from /proc/<pid>/status before the request and after every chunk
//! the client (which counts bytes and keeps none of them) receives; the peak growth must stay
//! well under the size of the CSV itself, which a server that gathered the rows (or the text)
//! before sending would exceed.

use std::time::Duration;

use crate::common::api::{JWT_SECRET, admin, seed_closed_bulk};
use crate::common::{Backend, TestDb, daemon, free_port_tcp, free_port_udp, signal};

const ROWS: u64 = 200_000;

fn rss_bytes(pid: u32) -> u64 {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .expect("VmRSS")
}

async fn export_200k(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    seed_closed_bulk(&db, "bulk-user@example.lb", ROWS).await;
    let api = free_port_tcp();
    let mut child = daemon(&db, free_port_udp(), free_port_tcp())
        .env("RADACCTD__API__LISTEN", format!("127.0.0.1:{api}"))
        .env("RADACCTD__API__JWT_SECRET", JWT_SECRET)
        .env("RADACCTD__METRICS__ENABLED", "false")
        .env("RADACCTD__JOBS__ENSURE_INDEXES", "false")
        .spawn()
        .expect("spawn");
    let pid = child.id().expect("pid");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let get = |path: &str| {
        http.get(format!("http://127.0.0.1:{api}{path}"))
            .bearer_auth(admin())
            .send()
    };
    let mut up = false;
    for _ in 0..300 {
        if get("/healthz").await.is_ok_and(|r| r.status().is_success()) {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "the daemon's API answers");
    // Warm up allocator and connection with a small export first.
    let warm = get("/api/sessions/export?status=closed&to=2026-05-12T09:00:00Z")
        .await
        .expect("request");
    assert_eq!(warm.status().as_u16(), 200);
    let _ = warm.bytes().await.expect("warm-up body");

    let before = rss_bytes(pid);
    let started = std::time::Instant::now();
    let mut r = get("/api/sessions/export?status=closed")
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 200);
    let (mut bytes, mut lines, mut peak, mut next_sample) = (0u64, 0u64, before, 0u64);
    while let Some(chunk) = r.chunk().await.expect("chunk") {
        bytes += chunk.len() as u64;
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        if bytes >= next_sample {
            peak = peak.max(rss_bytes(pid));
            next_sample = bytes + (1 << 20);
        }
    }
    peak = peak.max(rss_bytes(pid));
    let elapsed = started.elapsed();
    let growth = peak.saturating_sub(before);
    eprintln!(
        "{backend:?}: {ROWS} rows, {} bytes of CSV in {:.2} s ({:.0} rows/s); RSS before {} MiB, peak {} MiB, growth {:.1} MiB",
        bytes,
        elapsed.as_secs_f64(),
        ROWS as f64 / elapsed.as_secs_f64(),
        before >> 20,
        peak >> 20,
        growth as f64 / f64::from(1 << 20),
    );
    assert_eq!(lines, ROWS + 1, "header and every row");
    assert!(
        bytes > 20 << 20,
        "the CSV is large enough to show buffering ({bytes} bytes)"
    );
    assert!(
        growth < bytes / 3,
        "server memory grew {growth} bytes while streaming {bytes} bytes: not flat"
    );
    signal(pid, "TERM");
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("stops in time")
        .expect("status");
    assert!(status.success(), "daemon exits cleanly: {status:?}");
}

/// One test, both stores in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_of_200k_rows_streams_in_flat_memory() {
    export_200k(Backend::Sqlite).await;
    export_200k(Backend::Postgres).await;
}
