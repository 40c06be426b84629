//! `/metrics` as the API serves it: [`MetricsFn`], the function that
//! renders the text, and [`basic`], the one [`super::ApiState::new`] starts
//! with. The families themselves live in [`crate::metrics`].

use std::path::PathBuf;
use std::sync::Arc;

use crate::db::Writer;
use crate::devices::health::HealthBoard;
use crate::metrics::{Metrics, Sources};

/// Renders the `/metrics` text. Called on a blocking thread, so it may
/// read the database.
pub type MetricsFn = Arc<dyn Fn() -> String + Send + Sync>;

/// Every family of [`crate::metrics`] over what the API sees by itself:
/// sync attempts stay 0 and `central_online` is left out. The daemon
/// replaces it with one that shares the pusher's counters and the link.
pub fn basic(db_path: PathBuf, writer: Writer, health: HealthBoard) -> MetricsFn {
    Metrics::new(Sources::new(db_path, &writer, health)).into_fn()
}
