//! Where the ingest path runs: the accounting listener, the writer and the response sender, on
//! one thread of their own (`radius.ingest_thread`, the default) or on the main runtime.
//!
//! A packet crosses the three tasks (listener → writer → sender) and the writer's PostgreSQL
//! connection. On the main runtime's workers a hand-over can wake a task on another thread:
//! about a fifth of the daemon's CPU at window 64 (BENCHMARKS.md, "The ingest thread"). On one
//! thread it is a push onto the local run queue. The API's scans and exports, which can take a
//! core for a while, stay off that thread.

use std::sync::Arc;

use anyhow::Context as _;
use tokio::runtime::{Builder, Handle, Runtime};

/// The runtime the ingest tasks are spawned on. A runtime of its own is shut down (without
/// blocking) when this is dropped.
#[derive(Debug)]
pub(super) struct IngestRuntime {
    handle: Handle,
    /// `None` on the main runtime; taken when dropped.
    own: Option<Runtime>,
}

impl IngestRuntime {
    /// A one-worker runtime of its own (`dedicated`), else the current one. Call from within
    /// the main runtime.
    pub(super) fn start(dedicated: bool) -> anyhow::Result<IngestRuntime> {
        if !dedicated {
            return Ok(IngestRuntime {
                handle: Handle::current(),
                own: None,
            });
        }
        let runtime = Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(THREAD_NAME)
            .enable_all()
            .build()
            .context("starting the ingest thread")?;
        Ok(IngestRuntime {
            handle: runtime.handle().clone(),
            own: Some(runtime),
        })
    }

    pub(super) fn handle(&self) -> &Handle {
        &self.handle
    }

    /// The ingest thread's figures, when it has a runtime of its own.
    pub(super) fn busy_meter(&self) -> Option<BusyMeter> {
        self.own.as_ref().map(|_| BusyMeter(self.handle.clone()))
    }

    /// The accounting socket, registered with this runtime's I/O driver: its readiness wakes
    /// the listener and the sender on their own thread.
    pub(super) fn udp_socket(
        &self,
        socket: std::net::UdpSocket,
    ) -> std::io::Result<Arc<tokio::net::UdpSocket>> {
        let _on = self.handle.enter();
        tokio::net::UdpSocket::from_std(socket).map(Arc::new)
    }
}

/// Reads how long the ingest thread has spent running tasks (`/metrics`:
/// `radacctd_ingest_thread_busy_seconds`; its rate is the share of the thread in use). The
/// worker publishes it when it parks and every few dozen tasks, so it lags the thread by less
/// than that.
#[derive(Debug, Clone)]
pub(super) struct BusyMeter(Handle);

impl BusyMeter {
    pub(super) fn busy(&self) -> std::time::Duration {
        let metrics = self.0.metrics();
        (0..metrics.num_workers())
            .map(|w| metrics.worker_total_busy_duration(w))
            .sum()
    }
}

/// The ingest thread's name (`top -H`, `/proc/<pid>/task/*/comm`).
pub(super) const THREAD_NAME: &str = "radacctd-ingest";

impl Drop for IngestRuntime {
    fn drop(&mut self) {
        // Dropped from async code at the end of a run, where blocking is not allowed. Every
        // task on it has ended by then (`Running::stop`).
        if let Some(runtime) = self.own.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread_name() -> Option<String> {
        std::thread::current().name().map(str::to_owned)
    }

    #[tokio::test]
    async fn a_dedicated_runtime_runs_its_tasks_on_the_ingest_thread() {
        let ingest = IngestRuntime::start(true).unwrap();
        let on = ingest
            .handle()
            .spawn(async { thread_name() })
            .await
            .unwrap();
        assert_eq!(on.as_deref(), Some(THREAD_NAME));
        // Its timers and I/O work: they are driven by its own thread.
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        let socket = ingest.udp_socket(socket).unwrap();
        let to = socket.local_addr().unwrap();
        let got = ingest
            .handle()
            .spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                let peer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
                peer.send_to(b"ping", to).await.unwrap();
                let mut buf = [0u8; 8];
                let (n, _) = socket.recv_from(&mut buf).await.unwrap();
                (buf[..n].to_vec(), thread_name())
            })
            .await
            .unwrap();
        assert_eq!(got, (b"ping".to_vec(), Some(THREAD_NAME.to_owned())));
        // Its busy time grows with the work done on it.
        let meter = ingest.busy_meter().expect("a runtime of its own");
        let before = meter.busy();
        ingest
            .handle()
            .spawn(async {
                let t = std::time::Instant::now();
                while t.elapsed() < std::time::Duration::from_millis(30) {
                    std::hint::spin_loop();
                }
            })
            .await
            .unwrap();
        // The worker publishes its figures when it parks (or every few dozen tasks): poll.
        let mut grew = std::time::Duration::ZERO;
        for _ in 0..500 {
            grew = meter.busy() - before;
            if grew >= std::time::Duration::from_millis(25) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(grew >= std::time::Duration::from_millis(25), "{grew:?}");
        // Dropping it inside async code does not panic.
        drop(ingest);
    }

    #[tokio::test]
    async fn a_shared_runtime_is_the_current_one() {
        let ingest = IngestRuntime::start(false).unwrap();
        let here = thread_name();
        let on = ingest
            .handle()
            .spawn(async { thread_name() })
            .await
            .unwrap();
        // A current-thread test runtime: the task runs on the test's own thread.
        assert_eq!(on, here);
        assert_ne!(on.as_deref(), Some(THREAD_NAME));
        assert!(
            ingest.busy_meter().is_none(),
            "no thread of its own to meter"
        );
    }
}
