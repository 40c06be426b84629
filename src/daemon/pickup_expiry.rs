//! The task that ends pickup orders nobody collected by their deadline
//! (spec/sync-api.md 6: `order_expired`, reservation released, items back
//! to the shelf), by the agent's clock. It looks on a read connection
//! every [`TICK`] and writes only when an order is due, so an idle store
//! costs the writer nothing; each order is journaled once, since an
//! expired order is no longer live.

use std::path::PathBuf;
use std::time::Duration;

use crate::db::{self, Writer};
use crate::domain::pickup;
use crate::shutdown::Shutdown;

/// How often deadlines are looked at: orders expire within this of their
/// `expires_at`.
pub const TICK: Duration = Duration::from_secs(1);

/// Expire due orders until shutdown.
pub async fn run(db_path: PathBuf, writer: Writer, mut shutdown: Shutdown) {
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.wait() => return,
        }
        let now_ms = chrono::Utc::now().timestamp_millis();
        let path = db_path.clone();
        let due = tokio::task::spawn_blocking(move || {
            let conn = db::open_read(&path)?;
            pickup::due_orders(&conn, now_ms)
        })
        .await;
        match due {
            Ok(Ok(due)) if due.is_empty() => continue,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot look for expired pickup orders; will retry");
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "looking for expired pickup orders failed");
                continue;
            }
        }
        match writer
            .transact(move |w| pickup::expire_due(w, now_ms))
            .await
        {
            Ok(expired) => {
                for order_id in expired {
                    tracing::info!(%order_id, "pickup order expired; reservation released");
                }
            }
            Err(e) => tracing::warn!(error = %e, "expiring pickup orders failed; will retry"),
        }
    }
}
