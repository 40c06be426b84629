//! The one flag ingest checks before every commit: whether the disk quota
//! is exhausted by events that are never dropped (set by the retention
//! task in src/retention.rs). While it is, device input is refused with
//! [`StoreError::QuotaFull`](super::StoreError::QuotaFull) and held.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Shared "the quota is exhausted by events that must not be dropped".
#[derive(Clone, Default)]
pub struct Quota(Arc<AtomicBool>);

impl Quota {
    pub fn is_full(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
    pub fn set(&self, full: bool) {
        self.0.store(full, Ordering::Relaxed);
    }
}
