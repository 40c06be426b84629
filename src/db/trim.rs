//! What may leave the database, and in which order (DESIGN invariant 8):
//! the storage half of retention and the disk quota. The task that runs
//! these rounds, raises their alerts and refuses input while the quota is
//! exhausted is the retention task (src/retention.rs); nothing here knows
//! about alerts.
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
//! alerts are never dropped. Every drop of an unacknowledged event is
//! recorded in `dropped_ranges`, so the pusher can tell central.

use rusqlite::{Connection, params};

use super::{SqlContext, StoreError, WriteTx};

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
pub const DROP_CHUNK: i64 = 5000;
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Enforced {
    /// Quarantine rows and acknowledged events removed.
    pub trimmed: usize,
    /// Unacknowledged events dropped.
    pub dropped: usize,
    /// Still over the quota after this round.
    pub still_over: bool,
    /// Unacknowledged events left.
    pub backlog: i64,
    /// What was dropped, when unacknowledged events were.
    pub dropped_events: Option<DroppedEvents>,
}

/// Unacknowledged events dropped in one round: one class of the drop
/// order, as runs of seqs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedEvents {
    pub kinds: &'static [&'static str],
    pub ranges: Vec<(i64, i64)>,
}

impl DroppedEvents {
    /// The seqs of the first and last event dropped, as "first-last".
    pub fn span(&self) -> String {
        let first = self.ranges.first().map_or(0, |r| r.0);
        let last = self.ranges.last().map_or(0, |r| r.1);
        format!("{first}-{last}")
    }
}

/// Enforce the quota once: remove one chunk of the first class present in
/// the order of the module documentation. Raises no alert: see
/// `enforce` in src/retention.rs.
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
        done.dropped_events = Some(DroppedEvents {
            kinds: class,
            ranges,
        });
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
