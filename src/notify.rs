//! Telling systemd how the agent is doing (the `sd_notify(3)` protocol,
//! for `Type=notify` and `WatchdogSec=` in systemd/storegate.service):
//!
//! - `READY=1` once the database, the devices and the API are up, so that
//!   `systemctl start` returns only then and units ordered after us wait;
//! - `STATUS=` every few seconds, the line `systemctl status` shows;
//! - `WATCHDOG=1` only while the journal writer answers: a wedged writer
//!   stops the pings and systemd restarts the agent;
//! - `STOPPING=1` when shutting down.
//!
//! Everything is a no-op when `NOTIFY_SOCKET` is unset (run by hand, in
//! tests, under another supervisor).
//!
//! The protocol is one datagram of `KEY=value` lines to a Unix socket, so
//! it is written here rather than taken from a crate: the notifier gets
//! its socket path explicitly (tests bind their own socket, no process
//! environment to change) and understands abstract socket names (`@...`).

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::db::{StoreError, Writer};
use crate::shutdown::Shutdown;

/// How often status is reported and the watchdog fed when systemd does
/// not ask for more often.
pub const STATUS_EVERY: Duration = Duration::from_secs(5);

/// How long the writer may take to answer the liveness probe.
pub const WRITER_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends notifications to the service manager's socket.
pub struct Notifier {
    /// `None`: not run by systemd (or not as `Type=notify`).
    addr: Option<SocketAddr>,
    /// A failed send is logged as a warning once, then at debug level.
    warned: AtomicBool,
}

impl Notifier {
    /// The socket systemd names in `NOTIFY_SOCKET`; a no-op notifier when
    /// it is unset or unusable (the latter logged).
    pub fn from_env() -> Notifier {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(path) if !path.is_empty() => Notifier::to(Path::new(&path)).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "NOTIFY_SOCKET is unusable; not reporting to systemd");
                Notifier::disabled()
            }),
            _ => Notifier::disabled(),
        }
    }

    /// Notify the socket at `path`; a leading `@` names an abstract socket.
    pub fn to(path: &Path) -> io::Result<Notifier> {
        let addr = match path.to_str().and_then(|p| p.strip_prefix('@')) {
            Some(name) => abstract_addr(name.as_bytes())?,
            None => SocketAddr::from_pathname(path)?,
        };
        Ok(Notifier {
            addr: Some(addr),
            warned: AtomicBool::new(false),
        })
    }

    /// A notifier that sends nothing.
    pub fn disabled() -> Notifier {
        Notifier {
            addr: None,
            warned: AtomicBool::new(false),
        }
    }

    /// Whether anything is sent at all.
    pub fn is_enabled(&self) -> bool {
        self.addr.is_some()
    }

    /// Send one datagram of `KEY=value` lines. Never fails the caller: the
    /// agent runs the same whether or not systemd listens.
    pub fn send(&self, message: &str) {
        let Some(addr) = &self.addr else {
            return;
        };
        // A fresh socket per message, like libsystemd: systemd may have
        // re-created its socket (daemon-reexec) since the last one.
        let sent = UnixDatagram::unbound().and_then(|s| s.send_to_addr(message.as_bytes(), addr));
        if let Err(e) = sent {
            if self.warned.swap(true, Ordering::Relaxed) {
                tracing::debug!(error = %e, "cannot notify systemd");
            } else {
                tracing::warn!(error = %e, "cannot notify systemd; will keep trying");
            }
        }
    }

    /// `STOPPING=1`, with a status saying why.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping: draining the journal writer\n");
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_addr(name: &[u8]) -> io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_addr(_: &[u8]) -> io::Result<SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract socket names exist only on Linux",
    ))
}

/// The watchdog period systemd asks for (`WATCHDOG_USEC`, if meant for
/// this process per `WATCHDOG_PID`).
pub fn watchdog_from_env() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// How often the supervisor reports, and how long it waits for the writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Between two reports (status, and the watchdog ping if alive).
    pub every: Duration,
    /// How long the writer may take to answer before it counts as hung.
    pub writer_timeout: Duration,
}

impl Timing {
    /// For a watchdog period (`None`: no watchdog): report at least twice
    /// per period and every [`STATUS_EVERY`]; give the writer
    /// [`WRITER_TIMEOUT`], or half the period if that is shorter.
    pub fn for_watchdog(watchdog: Option<Duration>) -> Timing {
        let half = watchdog.map_or(Duration::MAX, |w| w / 2);
        Timing {
            every: STATUS_EVERY.min(half).max(Duration::from_millis(10)),
            writer_timeout: WRITER_TIMEOUT.min(half).max(Duration::from_millis(10)),
        }
    }
}

/// Produces the status line; run on a blocking thread (it may read the
/// database).
pub type StatusFn = Arc<dyn Fn() -> String + Send + Sync>;

/// Report to systemd until shutdown: each round proves the writer alive
/// with an empty transaction, then sends the status and, only if the
/// writer answered, `WATCHDOG=1` (and `READY=1` the first time). Start it
/// once everything else is up: the first answer from the writer is the
/// readiness notification. Returns at once when `notifier` is disabled.
pub async fn supervise(
    notifier: Arc<Notifier>,
    writer: Writer,
    timing: Timing,
    status: StatusFn,
    mut shutdown: Shutdown,
) {
    if !notifier.is_enabled() {
        return;
    }
    let mut ready = false;
    let mut hung_since: Option<Instant> = None;
    loop {
        let alive = tokio::select! {
            alive = writer_answers(&writer, timing.writer_timeout) => alive,
            _ = shutdown.wait() => break,
        };
        let text = status_text(&status, timing.writer_timeout).await;
        let mut message = String::new();
        if alive {
            if let Some(since) = hung_since.take() {
                tracing::warn!(
                    after_s = since.elapsed().as_secs(),
                    "the journal writer answers again"
                );
            }
            if !ready {
                ready = true;
                message.push_str("READY=1\n");
            }
            message.push_str("WATCHDOG=1\n");
            message.push_str(&format!("STATUS={text}\n"));
        } else {
            let since = *hung_since.get_or_insert_with(Instant::now);
            tracing::error!(
                for_s = since.elapsed().as_secs(),
                "the journal writer does not answer; not feeding the watchdog"
            );
            message.push_str(&format!(
                "STATUS=journal writer not answering for {} s; {text}\n",
                since.elapsed().as_secs()
            ));
        }
        notifier.send(&message);
        if !shutdown.sleep(timing.every).await {
            break;
        }
    }
}

/// Whether the writer commits an empty transaction within `limit`. An
/// answer that is an error (say, a full disk) still proves it alive:
/// restarting would not help, and the error is reported elsewhere.
async fn writer_answers(writer: &Writer, limit: Duration) -> bool {
    match tokio::time::timeout(limit, writer.transact(|_| Ok(()))).await {
        Ok(Ok(())) => true,
        Ok(Err(StoreError::WriterStopped)) => false,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "the journal writer answers with an error");
            true
        }
        Err(_) => false,
    }
}

/// The status line, or a placeholder when it cannot be had in time.
async fn status_text(status: &StatusFn, limit: Duration) -> String {
    let status = status.clone();
    match tokio::time::timeout(limit, tokio::task::spawn_blocking(move || status())).await {
        Ok(Ok(text)) => text.replace('\n', " "),
        Ok(Err(_)) => "status unavailable (it failed; see the log)".into(),
        Err(_) => "status unavailable (the database is slow to read)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_follows_the_watchdog() {
        let t = Timing::for_watchdog(Some(Duration::from_secs(30)));
        assert_eq!(t.every, STATUS_EVERY);
        assert_eq!(t.writer_timeout, WRITER_TIMEOUT);
        let t = Timing::for_watchdog(Some(Duration::from_secs(4)));
        assert_eq!(t.every, Duration::from_secs(2));
        assert_eq!(t.writer_timeout, Duration::from_secs(2));
        assert_eq!(Timing::for_watchdog(None).every, STATUS_EVERY);
    }

    #[test]
    fn a_disabled_notifier_sends_nothing() {
        let n = Notifier::disabled();
        assert!(!n.is_enabled());
        n.send("READY=1\n");
    }
}
