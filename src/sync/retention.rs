//! Retention and the disk quota (DESIGN invariant 8).
//!
//! Acknowledged events stay `journal_retention_h` for `GET /v1/events`,
//! then are trimmed. When the database outgrows `disk_quota_mb`, space is
//! made in this order, one chunk per round:
//!
//! 1. the quarantine (bad input kept for inspection), oldest first;
//! 2. events central acknowledged, oldest first, even inside the retention;
//! 3. *unacknowledged* `tag_arrived`, `tag_moved`, `tag_departed`,
//!    `reading`, `shelf_weight`, `label_health`;
//! 4. unacknowledged `label_ack`.
//!
//! Sales, returns, receipts, adjustments, counts, price conflicts and
//! alerts are never dropped. If only those remain and the quota is still
//! exceeded, a `disk_quota` alert opens and device input is refused
//! ([`Quota::is_full`]) until central takes the backlog: devices are not
//! acknowledged, so MQTT brokers keep their messages. With no backlog,
//! refusing input would free nothing: the alert then says the quota is too
//! small for what the store keeps, and input goes on. Every drop of an
//! unacknowledged event is recorded in `dropped_ranges` and reported with
//! an `events_dropped` alert.

use std::time::Duration;

use rusqlite::{Connection, params};

use crate::db::quota::Quota;
use crate::db::{SqlContext, StoreError, WriteTx, Writer};
use crate::domain::alerts;
use crate::event::Severity;
use crate::health::HealthBoard;
use crate::shutdown::Shutdown;

/// Drop classes, lowest value first.
pub const DROP_ORDER: [&[&str]; 2] = [
    &[
        "tag_arrived",
        "tag_moved",
        "tag_departed",
        "reading",
        "shelf_weight",
        "label_health",
    ],
    &["label_ack"],
];

/// Events dropped per round, so one round never holds the writer long.
const DROP_CHUNK: i64 = 5000;
/// Quarantine rows trimmed per round under the quota.
const QUARANTINE_CHUNK: i64 = 1000;
/// Natural keys are kept this long (redeliveries come within minutes or
/// hours; a week is generous).
const NATURAL_KEY_DAYS: i64 = 7;

/// Bytes of the database actually in use (pages minus free pages).
pub fn used_bytes(conn: &Connection) -> Result<u64, StoreError> {
    let (pages, free, size): (i64, i64, i64) = conn
        .query_row(
            "SELECT (SELECT page_count FROM pragma_page_count()), (SELECT freelist_count FROM pragma_freelist_count()), (SELECT page_size FROM pragma_page_size())",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .ctx("measuring the database")?;
    Ok(((pages - free).max(0) * size) as u64)
}

/// Trim acknowledged events older than the retention; returns rows
/// removed. A store-only agent (no central) has nobody to acknowledge, so
/// there every event older than the retention goes.
pub fn trim(w: &mut WriteTx<'_>, retention_h: u64, store_only: bool) -> Result<usize, StoreError> {
    let now = chrono::Utc::now().timestamp_millis();
    let cutoff = now - retention_h as i64 * 3_600_000;
    let n = w
        .conn()
        .execute(
            "DELETE FROM journal WHERE seq IN (SELECT seq FROM journal
               WHERE (?3 OR seq <= (SELECT last_acked_seq FROM sync_state WHERE id = 1)) AND ts_ms < ?1 ORDER BY seq LIMIT ?2)",
            params![cutoff, DROP_CHUNK, store_only],
        )
        .ctx("trimming the journal")?;
    w.conn()
        .execute(
            "DELETE FROM natural_keys WHERE ts_ms < ?1",
            [now - NATURAL_KEY_DAYS * 86_400_000],
        )
        .ctx("trimming natural keys")?;
    Ok(n)
}

/// What one round of [`enforce`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Enforced {
    /// Quarantine rows and acknowledged events removed.
    pub trimmed: usize,
    /// Unacknowledged events dropped.
    pub dropped: usize,
    /// Still over the quota after this round.
    pub still_over: bool,
    /// Unacknowledged events left.
    pub backlog: i64,
}

/// Enforce the quota once: remove one chunk of the first class present in
/// the order of the module documentation.
pub fn enforce(w: &mut WriteTx<'_>, quota_bytes: u64) -> Result<Enforced, StoreError> {
    let mut done = Enforced::default();
    if used_bytes(w.conn())? <= quota_bytes {
        return Ok(done);
    }
    let trimmed = w
        .conn()
        .prepare_cached(
            "DELETE FROM quarantine WHERE id IN (SELECT id FROM quarantine ORDER BY id LIMIT ?1)",
        )
        .and_then(|mut st| st.execute([QUARANTINE_CHUNK]))
        .ctx("trimming the quarantine for the quota")?;
    let trimmed = if trimmed > 0 {
        trimmed
    } else {
        w.conn()
            .prepare_cached(
                "DELETE FROM journal WHERE seq IN (SELECT seq FROM journal
                   WHERE seq <= (SELECT last_acked_seq FROM sync_state WHERE id = 1)
                   ORDER BY seq LIMIT ?1)",
            )
            .and_then(|mut st| st.execute([DROP_CHUNK]))
            .ctx("trimming acknowledged events for the quota")?
    };
    if trimmed > 0 {
        done.trimmed = trimmed;
        done.still_over = used_bytes(w.conn())? > quota_bytes;
        return Ok(done);
    }
    done.backlog = w
        .conn()
        .query_row(
            "SELECT count(*) FROM journal WHERE seq > (SELECT last_acked_seq FROM sync_state WHERE id = 1)",
            [],
            |r| r.get(0),
        )
        .ctx("counting the backlog")?;
    for class in DROP_ORDER {
        let kinds = serde_json::to_string(class).unwrap_or_default();
        let seqs: Vec<i64> = {
            let mut st = w
                .conn()
                .prepare_cached(
                    "SELECT seq FROM journal WHERE seq > (SELECT last_acked_seq FROM sync_state WHERE id = 1)
                       AND kind IN (SELECT value FROM json_each(?1)) ORDER BY seq LIMIT ?2",
                )
                .ctx("choosing events to drop")?;
            let rows = st
                .query_map(params![kinds, DROP_CHUNK], |r| r.get(0))
                .ctx("choosing events to drop")?;
            rows.collect::<Result<_, _>>()
                .ctx("choosing events to drop")?
        };
        if seqs.is_empty() {
            continue;
        }
        let ranges = runs(w.conn(), &seqs)?;
        for &s in &seqs {
            w.conn()
                .prepare_cached("DELETE FROM journal WHERE seq = ?1")
                .and_then(|mut st| st.execute([s]))
                .ctx("dropping an event")?;
        }
        let now = chrono::Utc::now().timestamp_millis();
        for (a, b) in &ranges {
            w.conn()
                .execute(
                    "INSERT OR REPLACE INTO dropped_ranges (first_seq, last_seq, at_ms) VALUES (?1, ?2, ?3)",
                    params![a, b, now],
                )
                .ctx("recording a dropped range")?;
        }
        let mut context = serde_json::Map::new();
        context.insert("kinds".into(), serde_json::json!(class));
        context.insert("count".into(), seqs.len().into());
        context.insert("ranges".into(), serde_json::json!(ranges));
        // A fresh alert per drop round: each carries its own ranges.
        let subject = format!("{}-{}", seqs[0], seqs[seqs.len() - 1]);
        alerts::raise(
            w,
            "agent",
            "events_dropped",
            &subject,
            Severity::Critical,
            format!(
                "disk quota reached while offline: dropped {} unacknowledged {} events",
                seqs.len(),
                class.join("/")
            ),
            context,
        )?;
        alerts::resolve(w, "agent", "events_dropped", &subject, "recorded".into())?;
        done.dropped = seqs.len();
        done.backlog -= seqs.len() as i64;
        done.still_over = used_bytes(w.conn())? > quota_bytes;
        return Ok(done);
    }
    done.still_over = true;
    Ok(done)
}

/// Contiguous runs of journal seqs among `seqs` (sorted): a run may only
/// span seqs that are all being dropped (or already absent).
fn runs(conn: &Connection, seqs: &[i64]) -> Result<Vec<(i64, i64)>, StoreError> {
    let mut out: Vec<(i64, i64)> = Vec::new();
    for &s in seqs {
        if let Some(last) = out.last_mut() {
            let kept_between: i64 = conn
                .query_row(
                    "SELECT count(*) FROM journal WHERE seq > ?1 AND seq < ?2",
                    params![last.1, s],
                    |r| r.get(0),
                )
                .ctx("finding drop runs")?;
            if kept_between == 0 {
                last.1 = s;
                continue;
            }
        }
        out.push((s, s));
    }
    Ok(out)
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
            .transact(move |w| trim(w, retention_h, store_only))
            .await;
        match r {
            Ok(n) => busy |= n as i64 == DROP_CHUNK,
            Err(e) => tracing::warn!(error = %e, "trimming the journal failed"),
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
