//! The uplink's send window: which batches are out without central's ack,
//! where the next batch starts, and what an ack, a timeout or a reconnect
//! does to that. Pure bookkeeping (no I/O), so every case is a unit test.
//!
//! Rules (spec/fleet.md section 2):
//! - at most `max` batches are unacknowledged at once;
//! - an ack `N` above what central had acknowledged counts up to what was
//!   sent, never beyond; a batch it covers only in part is sent again
//!   from `N + 1`;
//! - an ack not above it while batches are out means central lacks
//!   `acked + 1`: send again from there (once per position; a lost resend
//!   is the timeout's job);
//! - no ack within the timeout, or a new connection: send again from
//!   `acked + 1`.
//!
//! The agent never skips a seq: `next` only moves forward over batches it
//! sent, and back to `acked + 1`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// One batch sent and not acknowledged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Out {
    pub first: i64,
    pub last: i64,
    pub sent: Instant,
}

/// What an ack did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckEffect {
    /// Central's figure moved up to this seq: record it.
    Advanced(i64),
    /// Central's figure moved, and it lacks part of what was sent: record
    /// it; sending starts again from `.0 + 1`.
    AdvancedAndResend(i64),
    /// Central lacks what follows its figure: sending starts again there.
    Resend,
    /// Nothing to do (an old or repeated ack).
    Ignored,
}

#[derive(Debug)]
pub struct Window {
    /// Central has everything through this seq (as recorded).
    acked: i64,
    /// The first seq of the next batch to send.
    next: i64,
    out: VecDeque<Out>,
    max: usize,
    /// Where the last resend started, so that the acks of batches sent
    /// before it do not start another one each.
    resent_from: Option<i64>,
}

impl Window {
    pub fn new(acked: i64, max: usize) -> Window {
        Window {
            acked,
            next: acked + 1,
            out: VecDeque::new(),
            max: max.max(1),
            resent_from: None,
        }
    }

    pub fn acked(&self) -> i64 {
        self.acked
    }

    /// The first seq of the next batch to send.
    pub fn next(&self) -> i64 {
        self.next
    }

    /// Batches out without an ack.
    pub fn unacked(&self) -> usize {
        self.out.len()
    }

    pub fn can_send(&self) -> bool {
        self.out.len() < self.max
    }

    /// A batch `first..=last` (starting at [`Window::next`]) was published.
    pub fn sent(&mut self, first: i64, last: i64, now: Instant) {
        debug_assert_eq!(first, self.next);
        self.out.push_back(Out {
            first,
            last,
            sent: now,
        });
        self.next = last + 1;
    }

    /// Start again from `acked + 1`, forgetting what is out.
    pub fn rewind(&mut self) {
        self.out.clear();
        self.next = self.acked + 1;
        self.resent_from = Some(self.next);
    }

    /// Central says it has everything through `n`.
    pub fn on_ack(&mut self, n: i64) -> AckEffect {
        // Never beyond what this window sent: the rest is sent again and
        // central acknowledges it again.
        let n = n.min(self.next - 1);
        if n > self.acked {
            self.acked = n;
            while self.out.front().is_some_and(|o| o.last <= n) {
                self.out.pop_front();
            }
            if self.out.front().is_some_and(|o| o.first <= n) {
                // Central took part of a batch: the rest again.
                self.rewind();
                return AckEffect::AdvancedAndResend(n);
            }
            if self.next <= n {
                self.next = n + 1;
            }
            return AckEffect::Advanced(n);
        }
        if self.out.is_empty() || self.resent_from == Some(self.acked + 1) {
            return AckEffect::Ignored;
        }
        self.rewind();
        AckEffect::Resend
    }

    /// Whether the oldest batch out has waited longer than `timeout`.
    pub fn timed_out(&self, now: Instant, timeout: Duration) -> bool {
        self.out
            .front()
            .is_some_and(|o| now.duration_since(o.sent) >= timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(acked: i64, max: usize) -> (Window, Instant) {
        (Window::new(acked, max), Instant::now())
    }

    #[test]
    fn acks_in_order_free_the_window() {
        let (mut w, t) = window(10, 2);
        w.sent(11, 20, t);
        w.sent(21, 30, t);
        assert!(!w.can_send());
        assert_eq!(w.on_ack(20), AckEffect::Advanced(20));
        assert!(w.can_send());
        assert_eq!(w.on_ack(30), AckEffect::Advanced(30));
        assert_eq!((w.acked(), w.next(), w.unacked()), (30, 31, 0));
    }

    #[test]
    fn an_ack_beyond_what_was_sent_counts_what_was_sent() {
        let (mut w, t) = window(0, 4);
        w.sent(1, 5, t);
        assert_eq!(w.on_ack(99), AckEffect::Advanced(5));
        assert_eq!(w.next(), 6);
    }

    #[test]
    fn a_partial_ack_resends_the_rest() {
        let (mut w, t) = window(0, 4);
        w.sent(1, 10, t);
        w.sent(11, 20, t);
        assert_eq!(w.on_ack(7), AckEffect::AdvancedAndResend(7));
        assert_eq!((w.acked(), w.next(), w.unacked()), (7, 8, 0));
    }

    #[test]
    fn a_low_ack_resends_once_per_position() {
        let (mut w, t) = window(0, 4);
        w.sent(1, 10, t);
        w.sent(11, 20, t);
        w.sent(21, 30, t);
        assert_eq!(w.on_ack(10), AckEffect::Advanced(10));
        // Central got 21..30 but not 11..20.
        assert_eq!(w.on_ack(10), AckEffect::Resend);
        assert_eq!((w.next(), w.unacked()), (11, 0));
        w.sent(11, 30, t);
        // The ack of another batch sent before the resend: no second one.
        assert_eq!(w.on_ack(10), AckEffect::Ignored);
        assert_eq!(w.on_ack(30), AckEffect::Advanced(30));
    }

    #[test]
    fn an_old_ack_with_nothing_out_is_ignored() {
        let (mut w, _) = window(50, 4);
        assert_eq!(w.on_ack(40), AckEffect::Ignored);
        assert_eq!((w.acked(), w.next()), (50, 51));
    }

    #[test]
    fn timeout_and_rewind_start_again_after_the_ack() {
        let (mut w, t) = window(0, 4);
        w.sent(1, 10, t);
        w.sent(11, 20, t);
        assert!(!w.timed_out(t, Duration::from_secs(30)));
        assert!(w.timed_out(t + Duration::from_secs(30), Duration::from_secs(30)));
        w.rewind();
        assert_eq!((w.next(), w.unacked()), (1, 0));
        assert!(!w.timed_out(t + Duration::from_secs(60), Duration::from_secs(30)));
    }

    #[test]
    fn acks_of_old_batches_after_a_rewind_keep_the_order() {
        let (mut w, t) = window(0, 4);
        w.sent(1, 10, t);
        w.sent(11, 20, t);
        w.rewind();
        w.sent(1, 15, t);
        // The old first batch's ack arrives: it covers part of the new one.
        assert_eq!(w.on_ack(10), AckEffect::AdvancedAndResend(10));
        assert_eq!(w.next(), 11);
        w.sent(11, 20, t);
        assert_eq!(w.on_ack(20), AckEffect::Advanced(20));
    }
}
