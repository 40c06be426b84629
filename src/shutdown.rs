//! Graceful shutdown: one [`ShutdownTrigger`] fired once (a signal, the
//! demo's timer), seen by every long-running task through its cheap
//! [`Shutdown`] handle, which also gives them sleeps that wake early.

use std::time::Duration;

use tokio::sync::watch as tokio_watch;

/// Tells long-running tasks to finish. Cheap to clone.
#[derive(Clone)]
pub struct Shutdown(tokio_watch::Receiver<bool>);

/// The sending half: `trigger` once, every [`Shutdown`] sees it.
pub struct ShutdownTrigger(tokio_watch::Sender<bool>);

pub fn shutdown_pair() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = tokio_watch::channel(false);
    (ShutdownTrigger(tx), Shutdown(rx))
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        let _ = self.0.send(true);
    }
}

impl Shutdown {
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves when shutdown is triggered (or the trigger is gone).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|v| *v).await;
    }

    /// Sleep, but wake early for shutdown. Returns false on shutdown.
    pub async fn sleep(&mut self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => !self.is_triggered(),
            _ = self.wait() => false,
        }
    }
}
