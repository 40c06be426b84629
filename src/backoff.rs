//! Exponential backoff with full jitter, shared by every reconnecting and
//! retrying part of the house (devices, sync, label retries).

use std::time::Duration;

use rand::Rng;

/// Delay = random in `[0, min(cap, base * 2^attempt)]` ("full jitter"), so
/// that a hundred devices that lost the same switch do not reconnect in
/// lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap: cap.max(base),
            attempt: 0,
        }
    }

    /// The ceiling of the next delay, before jitter.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(30)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The next delay to wait, growing the ceiling for the time after.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let ms = ceiling.as_millis() as u64;
        Duration::from_millis(rand::rng().random_range(0..=ms))
    }

    /// After a success: start again from the base delay.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_up_to_the_cap_and_jitter_stays_below_it() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        let mut ceilings = Vec::new();
        for _ in 0..12 {
            let c = b.ceiling();
            ceilings.push(c.as_secs());
            assert!(b.next_delay() <= c);
        }
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_secs(1));
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
        for _ in 0..10_000 {
            b.next_delay();
        }
        assert_eq!(b.ceiling(), Duration::from_secs(60));
    }
}
