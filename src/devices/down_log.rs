//! When to log that a device is down: at its first failure at WARN with
//! the reason, right away, and then again every [`REMINDER`] while it stays
//! down, not at every retry. A device that never comes up (wrong address,
//! unplugged adapter) is thus in the log from the first seconds, and a
//! long outage stays visible in a log that rotates, without a retry loop
//! flooding it.

use std::time::{Duration, Instant};

/// How often a device that stays down is logged again.
pub const REMINDER: Duration = Duration::from_secs(5 * 60);

/// One device's outage, as far as the log is concerned.
#[derive(Debug, Default)]
pub struct DownLog {
    /// When the current outage began (its first failure).
    since: Option<Instant>,
    /// When it was last logged at WARN.
    warned: Option<Instant>,
}

/// What to log for a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Say {
    /// The outage's first failure.
    Down,
    /// Still down, this long since its first failure.
    StillDown(Duration),
    /// Nothing at WARN (debug only): it was said recently.
    Quiet,
}

impl DownLog {
    /// A session failed or ended at `now`: what to log.
    pub fn failed(&mut self, now: Instant) -> Say {
        let Some(since) = self.since else {
            self.since = Some(now);
            self.warned = Some(now);
            return Say::Down;
        };
        let warned = self.warned.unwrap_or(since);
        if now.saturating_duration_since(warned) >= REMINDER {
            self.warned = Some(now);
            Say::StillDown(now.saturating_duration_since(since))
        } else {
            Say::Quiet
        }
    }

    /// The device was up: the next failure starts a new outage.
    pub fn up(&mut self) {
        *self = DownLog::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_failure_then_every_reminder_then_afresh_after_up() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut log = DownLog::default();
        assert_eq!(log.failed(at(0)), Say::Down);
        for s in [1, 30, 120, 299] {
            assert_eq!(log.failed(at(s)), Say::Quiet, "at {s} s");
        }
        assert_eq!(
            log.failed(at(300)),
            Say::StillDown(Duration::from_secs(300))
        );
        assert_eq!(log.failed(at(400)), Say::Quiet);
        assert_eq!(
            log.failed(at(610)),
            Say::StillDown(Duration::from_secs(610))
        );
        log.up();
        assert_eq!(log.failed(at(620)), Say::Down);
    }
}
