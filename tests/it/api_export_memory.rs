//! A 200,000-row CSV export whose memory stays flat. This binary holds this one test, so the
//! process's resident set is the server's (plus a client that counts bytes and keeps none of
//! them). RSS is sampled from /proc/self/status before the request and after every chunk; the
//! peak growth must stay well under the size of the CSV itself, which a server that gathered
//! the rows (or the text) before sending would exceed.

#[path = "common/api.rs"]
mod api_support;
mod common;

use api_support::{ApiApp, admin, api_config, seed_closed_bulk};
use common::{Backend, TestDb};

const ROWS: u64 = 200_000;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
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
    let app = ApiApp::start(api_config(&db)).await;
    let token = admin();
    // Warm up allocator and connection with a small export first.
    let warm = app
        .get(
            "/api/sessions/export?status=closed&to=2026-05-12T09:00:00Z",
            Some(&token),
        )
        .await;
    assert_eq!(warm.status().as_u16(), 200);
    let _ = warm.bytes().await.expect("warm-up body");

    let before = rss_bytes();
    let started = std::time::Instant::now();
    let mut r = app
        .get("/api/sessions/export?status=closed", Some(&token))
        .await;
    assert_eq!(r.status().as_u16(), 200);
    let (mut bytes, mut lines, mut peak, mut next_sample) = (0u64, 0u64, before, 0u64);
    while let Some(chunk) = r.chunk().await.expect("chunk") {
        bytes += chunk.len() as u64;
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        if bytes >= next_sample {
            peak = peak.max(rss_bytes());
            next_sample = bytes + (1 << 20);
        }
    }
    peak = peak.max(rss_bytes());
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
    app.stop().await;
}

/// One test, both stores in turn, so nothing else runs in the process while RSS is sampled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_of_200k_rows_streams_in_flat_memory() {
    export_200k(Backend::Sqlite).await;
    export_200k(Backend::Postgres).await;
}
