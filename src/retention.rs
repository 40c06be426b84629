//! The retention task: keeps the database within `journal_retention_h`
//! and `disk_quota_mb` (DESIGN invariant 8). What may be removed, and in
//! which order, is `db::trim`; this task runs its rounds, says what they
//! did (the `events_dropped` and `disk_quota` alerts, /healthz), and sets
//! the [`Quota`] flag ingest checks.
//!
//! If only events that are never dropped remain and the quota is still
//! exceeded, a `disk_quota` alert opens and device input is refused
//! ([`Quota::is_full`]) until central takes the backlog: devices are not
//! acknowledged, so MQTT brokers keep their messages. With no backlog,
//! refusing input would free nothing: the alert then says the quota is too
//! small for what the store keeps, and input goes on.

use std::time::Duration;

use crate::db::quota::Quota;
use crate::db::trim::{self, DROP_CHUNK, Enforced};
use crate::db::{StoreError, WriteTx, Writer};
use crate::domain::{alerts, pickup, tasks};
use crate::event::Severity;
use crate::health::HealthBoard;
use crate::shutdown::Shutdown;

/// Enforce the quota once ([`trim::enforce`]) and, in the same
/// transaction, raise the `events_dropped` alert for what it dropped, so
/// that central learns of every drop.
pub fn enforce(w: &mut WriteTx<'_>, quota_bytes: u64) -> Result<Enforced, StoreError> {
    let round = trim::enforce(w, quota_bytes)?;
    let Some(dropped) = &round.dropped_events else {
        return Ok(round);
    };
    let mut context = serde_json::Map::new();
    context.insert("kinds".into(), serde_json::json!(dropped.kinds));
    context.insert("count".into(), round.dropped.into());
    context.insert("ranges".into(), serde_json::json!(dropped.ranges));
    // A fresh alert per drop round: each carries its own ranges.
    let subject = dropped.span();
    alerts::raise(
        w,
        "agent",
        "events_dropped",
        &subject,
        Severity::Critical,
        format!(
            "disk quota reached while offline: dropped {} unacknowledged {} events",
            round.dropped,
            dropped.kinds.join("/")
        ),
        context,
    )?;
    alerts::resolve(w, "agent", "events_dropped", &subject, "recorded".into())?;
    Ok(round)
}

/// Forget what staff finished long ago: ended pickup orders' lines and
/// tags, closed tasks. Returns the rows removed.
pub fn forget_finished_work(w: &mut WriteTx<'_>) -> Result<usize, StoreError> {
    let now_ms = chrono::Utc::now().timestamp_millis();
    let orders = pickup::forget_ended(w, now_ms)?;
    Ok(orders + tasks::forget_closed(w.conn(), now_ms)?)
}

/// Run retention and the quota until shutdown.
pub async fn run(
    writer: Writer,
    retention_h: u64,
    quota_mb: u64,
    store_only: bool,
    quota: Quota,
    health: HealthBoard,
    mut shutdown: Shutdown,
) {
    let quota_bytes = quota_mb * 1024 * 1024;
    let mut last_state = QuotaState::Under;
    loop {
        let mut busy = false;
        let r = writer
            .transact(move |w| trim::trim(w, retention_h, store_only))
            .await;
        match r {
            Ok(n) => busy |= n as i64 == DROP_CHUNK,
            Err(e) => tracing::warn!(error = %e, "trimming the journal failed"),
        }
        if let Err(e) = writer.transact(forget_finished_work).await {
            tracing::warn!(error = %e, "forgetting finished pickups and tasks failed");
        }
        match writer.transact(move |w| enforce(w, quota_bytes)).await {
            Ok(round) => {
                if round.dropped > 0 {
                    tracing::warn!(
                        dropped = round.dropped,
                        "disk quota: dropped unacknowledged low-value events"
                    );
                }
                if round.trimmed > 0 {
                    tracing::info!(
                        trimmed = round.trimmed,
                        "disk quota: trimmed quarantine rows or acknowledged events"
                    );
                }
                busy |= round.dropped > 0 || round.trimmed > 0;
                let state = match (busy, round.still_over, round.backlog > 0) {
                    (false, true, true) => QuotaState::Full,
                    (false, true, false) => QuotaState::TooSmall,
                    _ => QuotaState::Under,
                };
                // Refusing input only helps while central can take a
                // backlog; otherwise it would stop the store for nothing.
                let full = state == QuotaState::Full;
                if full != quota.is_full() || state != last_state {
                    quota.set(full);
                    health.set_problem("disk_quota", state.problem(quota_mb));
                    set_quota_alert(&writer, state, quota_mb).await;
                    last_state = state;
                }
            }
            Err(e) => tracing::warn!(error = %e, "enforcing the disk quota failed"),
        }
        let pause = if busy {
            Duration::from_millis(50)
        } else {
            Duration::from_secs(10)
        };
        if !shutdown.sleep(pause).await {
            break;
        }
    }
}

/// Where the database stands against `disk_quota_mb`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QuotaState {
    Under,
    /// Over, and only events that are never dropped are left: input is
    /// refused until central takes the backlog.
    Full,
    /// Over with no backlog: nothing left to trim or drop takes the space.
    TooSmall,
}

impl QuotaState {
    /// What `/healthz` says about it; `None` when under the quota.
    fn problem(self, quota_mb: u64) -> Option<String> {
        match self {
            QuotaState::Under => None,
            QuotaState::Full => Some(format!(
                "the disk quota of {quota_mb} MB is reached by events that are never dropped; devices are not acknowledged until central takes the backlog (check the link to central)"
            )),
            QuotaState::TooSmall => Some(format!(
                "the disk quota of {quota_mb} MB is smaller than what the store keeps besides the backlog (stock, prices, tags, recent keys); input goes on: raise disk_quota_mb"
            )),
        }
    }
}

async fn set_quota_alert(writer: &Writer, state: QuotaState, quota_mb: u64) {
    let r = writer
        .transact(move |w| {
            let Some(message) = state.problem(quota_mb) else {
                return alerts::resolve(
                    w,
                    "agent",
                    "disk_quota",
                    "journal",
                    "back under the disk quota".into(),
                );
            };
            tracing::error!(quota_mb, "{message}");
            // A change of state replaces the open alert's message.
            alerts::resolve(w, "agent", "disk_quota", "journal", "state changed".into())?;
            alerts::raise(
                w,
                "agent",
                "disk_quota",
                "journal",
                Severity::Critical,
                message,
                serde_json::Map::new(),
            )
        })
        .await;
    if let Err(e) = r {
        tracing::error!(error = %e, "cannot record the disk quota state");
    }
}
