//! The task that ends pickup orders nobody collected by their deadline
//! (spec/sync-api.md 6: `order_expired`, reservation released, items back
//! to the shelf), by the agent's clock. Every [`TICK`] it asks the writer
//! for the due orders (an indexed look at live orders; a job that finds
//! none writes nothing), as `tasks::verify` does for done tasks. Each
//! order is journaled once, since an expired order is no longer live.

use std::time::Duration;

use crate::db::Writer;
use crate::domain::pickup;
use crate::shutdown::Shutdown;

/// How often deadlines are looked at: orders expire within this of their
/// `expires_at`.
pub const TICK: Duration = Duration::from_secs(1);

/// Expire due orders until shutdown.
pub async fn run(writer: Writer, mut shutdown: Shutdown) {
    loop {
        let now_ms = chrono::Utc::now().timestamp_millis();
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
        if !shutdown.sleep(TICK).await {
            break;
        }
    }
}
