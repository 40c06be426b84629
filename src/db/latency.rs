//! How long the writer's commit groups take: a lock-free histogram the
//! writer observes into and `/metrics` reads. It lives with the writer,
//! its one producer; metrics only renders it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds, in seconds, of the commit latency buckets: an fsync on a
/// good SSD is well under a millisecond, on an SD card tens of ms, and a
/// commit that takes seconds means the disk is in trouble.
pub const COMMIT_BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A lock-free histogram of durations with the [`COMMIT_BUCKETS`] bounds:
/// one atomic per bucket plus the sum, so observing costs two relaxed adds.
/// A scrape may see a group's bucket before its sum; the next one agrees.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; COMMIT_BUCKETS.len() + 1],
    sum_us: AtomicU64,
}

impl LatencyHistogram {
    pub fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let i = COMMIT_BUCKETS
            .iter()
            .position(|&upper| secs <= upper)
            .unwrap_or(COMMIT_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// `(sum in seconds, count, [(upper bound, observations)])`, the shape
    /// prometheus-client encodes.
    pub fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let buckets: Vec<(f64, u64)> = COMMIT_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(&self.buckets)
            .map(|(upper, n)| (upper, n.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        (sum, count, buckets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_histogram_buckets_by_upper_bound() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_micros(300)); // <= 0.5 ms
        h.observe(Duration::from_millis(1)); // exactly 1 ms: the 1 ms bucket
        h.observe(Duration::from_secs(60)); // beyond 5 s: +Inf
        let (sum, count, buckets) = h.snapshot();
        assert_eq!(count, 3);
        assert!((sum - 60.0013).abs() < 1e-9, "{sum}");
        assert_eq!(buckets[0], (0.0005, 1));
        assert_eq!(buckets[1], (0.001, 1));
        assert_eq!(buckets.last(), Some(&(f64::INFINITY, 1)));
        assert_eq!(buckets.len(), COMMIT_BUCKETS.len() + 1);
    }
}
