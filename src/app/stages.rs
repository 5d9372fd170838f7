//! Shutdown by stages: each stage is a set of tasks (one `TaskTracker`) and the token that
//! tells them to stop. The daemon stops its stages one after the other, so that what a later
//! stage needs (the writer needs every queue sender gone; the sender task needs the writer
//! gone) is true when it is stopped.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The tasks of one shutdown stage and the token that stops them.
#[derive(Debug)]
pub(super) struct Stage {
    name: &'static str,
    pub(super) stop: CancellationToken,
    pub(super) tasks: TaskTracker,
}

impl Stage {
    pub(super) fn new(name: &'static str, stop: CancellationToken) -> Stage {
        Stage {
            name,
            stop,
            tasks: TaskTracker::new(),
        }
    }

    /// Cancels the stage's token and waits for all its tasks.
    pub(super) async fn stop(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        tracing::debug!(stage = self.name, "stopped");
    }

    /// [`Stage::stop`] for at most `grace`; false if tasks were still running then.
    pub(super) async fn stop_within(&self, grace: Duration) -> bool {
        tokio::time::timeout(grace, self.stop()).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stop_waits_for_every_task_of_the_stage() {
        let stage = Stage::new("test", CancellationToken::new());
        let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for delay in [1, 30] {
            let (stop, done) = (stage.stop.clone(), done.clone());
            stage.tasks.spawn(async move {
                stop.cancelled().await;
                tokio::time::sleep(Duration::from_millis(delay)).await;
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
        stage.stop().await;
        assert_eq!(done.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn stop_within_reports_tasks_past_the_grace() {
        let stage = Stage::new("test", CancellationToken::new());
        let handle = stage.tasks.spawn(std::future::pending::<()>());
        assert!(!stage.stop_within(Duration::from_millis(20)).await);
        handle.abort();
        stage.stop().await;
        assert!(stage.tasks.is_empty());
    }
}
