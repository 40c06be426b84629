//! The pusher (spec/sync-api.md section 1): reads the journal from
//! `last_acked + 1` in seq order, sends batches with an idempotency key,
//! one request in flight, and only ever advances `last_acked` to what
//! central acknowledged. A crash anywhere re-sends from the last recorded
//! acknowledgement; central dedups by (store, seq), so nothing is counted
//! twice (DESIGN invariant 4).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;

use super::client::{Central, PushReply};
use super::state;
use crate::backoff::Backoff;
use crate::db::{SqlContext, StoreError, Writer};
use crate::event::format_ts;
use crate::shutdown::Shutdown;

/// About 4 MiB of JSON per batch at most.
pub const MAX_BATCH_BYTES: usize = 4 << 20;

/// One batch, ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub first: i64,
    pub last: i64,
    pub count: usize,
    /// Seq ranges before `first` dropped under the disk quota, announced
    /// to central in the body's `skipped` field.
    pub skipped: Vec<(i64, i64)>,
    pub body: Vec<u8>,
}

/// Why no batch could be built.
#[derive(Debug)]
pub enum NoBatch {
    /// Nothing after `last_acked`.
    Empty,
    /// Seqs after `last_acked` are gone and were not dropped by the quota
    /// (central moved us back with a 409 behind what retention trimmed).
    Missing { from: i64, to: i64 },
}

/// Build the next batch after `last_acked` from the journal rows as stored
/// (the `data` column is already JSON: it is copied, not re-serialised).
pub fn next_batch(
    conn: &Connection,
    store_id: &str,
    last_acked: i64,
    max_events: usize,
) -> Result<Result<Batch, NoBatch>, StoreError> {
    let mut st = conn
        .prepare_cached("SELECT seq, ts_ms, device, kind, data FROM journal WHERE seq > ?1 ORDER BY seq LIMIT ?2")
        .ctx("reading the outbox")?;
    let mut rows = st
        .query(rusqlite::params![last_acked, max_events as i64])
        .ctx("reading the outbox")?;
    let mut events = String::with_capacity(64 * 1024);
    let mut expected = last_acked + 1;
    let mut first = None;
    let mut last = last_acked;
    let mut count = 0;
    let mut skipped = Vec::new();
    while let Some(row) = rows.next().ctx("reading the outbox")? {
        let seq: i64 = row.get(0).ctx("reading the outbox")?;
        if seq != expected {
            if count > 0 {
                break; // a gap ends the batch; the next one starts after it
            }
            let (from, to) = (expected, seq - 1);
            if !covered_by_drops(conn, from, to)? {
                return Ok(Err(NoBatch::Missing { from, to }));
            }
            skipped.push((from, to));
        }
        let ts = crate::event::ts_from_millis(row.get(1).ctx("reading the outbox")?);
        let device: String = row.get(2).ctx("reading the outbox")?;
        let kind: String = row.get(3).ctx("reading the outbox")?;
        let data: String = row.get(4).ctx("reading the outbox")?;
        let before = events.len();
        if count > 0 {
            events.push(',');
        }
        write_event(&mut events, seq, &ts, device, &kind, &data);
        if events.len() > MAX_BATCH_BYTES && count > 0 {
            events.truncate(before);
            break;
        }
        first.get_or_insert(seq);
        last = seq;
        expected = seq + 1;
        count += 1;
    }
    let Some(first) = first else {
        return Ok(Err(NoBatch::Empty));
    };
    let skipped_json = serde_json::to_string(&skipped).unwrap_or_else(|_| "[]".into());
    let body = format!(
        "{{\"store_id\":{},\"agent_version\":\"{}\",\"skipped\":{skipped_json},\"events\":[{events}]}}",
        serde_json::Value::String(store_id.to_string()),
        crate::VERSION
    );
    Ok(Ok(Batch {
        first,
        last,
        count,
        skipped,
        body: body.into_bytes(),
    }))
}

/// One journal row as the JSON of an event in a batch (`data` is stored
/// as JSON already and is copied as is).
pub(super) fn write_event(
    out: &mut String,
    seq: i64,
    ts: &chrono::DateTime<chrono::Utc>,
    device: String,
    kind: &str,
    data: &str,
) {
    let _ = write!(
        out,
        "{{\"seq\":{seq},\"ts\":\"{}\",\"device\":{},\"kind\":\"{kind}\",\"data\":{data}}}",
        format_ts(ts),
        serde_json::Value::String(device)
    );
}

pub(super) fn covered_by_drops(conn: &Connection, from: i64, to: i64) -> Result<bool, StoreError> {
    // Ranges are recorded per drop run; adjacent runs together may cover it.
    let mut st = conn
        .prepare_cached("SELECT first_seq, last_seq FROM dropped_ranges WHERE last_seq >= ?1 AND first_seq <= ?2 ORDER BY first_seq")
        .ctx("reading dropped ranges")?;
    let ranges: Vec<(i64, i64)> = st
        .query_map([from, to], |r| Ok((r.get(0)?, r.get(1)?)))
        .ctx("reading dropped ranges")?
        .collect::<Result<_, _>>()
        .ctx("reading dropped ranges")?;
    let mut next = from;
    for (a, b) in ranges {
        if a > next {
            return Ok(false);
        }
        next = next.max(b + 1);
    }
    Ok(next > to)
}

/// Link state, shared with the pullers and the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Unknown,
    Online,
    Offline,
}

/// Push attempts and failures since start, for `/metrics`.
#[derive(Debug, Default)]
pub struct PushStats {
    /// Batches sent to central, whatever came back.
    pub attempts: AtomicU64,
    /// Attempts that failed: central unreachable, refusing or erroring.
    pub failures: AtomicU64,
}

/// Run the pusher until shutdown.
pub async fn run(
    central: Arc<Central>,
    writer: Writer,
    reader: Arc<Mutex<Connection>>,
    batch_max: usize,
    max_backoff: Duration,
    link: tokio::sync::watch::Sender<Link>,
    shutdown: Shutdown,
) {
    let stats = Arc::new(PushStats::default());
    run_counted(
        central,
        writer,
        reader,
        batch_max,
        max_backoff,
        link,
        stats,
        shutdown,
    )
    .await;
}

/// [`run`], counting attempts and failures in `stats`.
#[allow(clippy::too_many_arguments)] // run's arguments plus the counters
pub async fn run_counted(
    central: Arc<Central>,
    writer: Writer,
    reader: Arc<Mutex<Connection>>,
    batch_max: usize,
    max_backoff: Duration,
    link: tokio::sync::watch::Sender<Link>,
    stats: Arc<PushStats>,
    mut shutdown: Shutdown,
) {
    let mut head = writer.head();
    let mut backoff = Backoff::new(Duration::from_secs(1), max_backoff);
    let mut batch_size = batch_max.max(1);
    loop {
        if shutdown.is_triggered() {
            break;
        }
        let store_id = central.store_id().to_string();
        let size = batch_size;
        let reader2 = reader.clone();
        let built = tokio::task::spawn_blocking(move || {
            let conn = reader2.lock().unwrap_or_else(|p| p.into_inner());
            let acked = state::read(&conn)?.last_acked_seq;
            next_batch(&conn, &store_id, acked, size)
        })
        .await;
        let batch = match built {
            Ok(Ok(Ok(b))) => b,
            Ok(Ok(Err(NoBatch::Empty))) => {
                // Idle: wake as soon as anything commits.
                tokio::select! {
                    _ = head.changed() => {}
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = shutdown.wait() => break,
                }
                continue;
            }
            Ok(Ok(Err(NoBatch::Missing { from, to }))) => {
                tracing::error!(
                    from,
                    to,
                    "events central asked for again are no longer in the journal; skipping them"
                );
                record_skip(&writer, from, to).await;
                continue;
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot read the outbox");
                if !shutdown.sleep(Duration::from_secs(1)).await {
                    break;
                }
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "outbox reader task failed");
                continue;
            }
        };

        stats.attempts.fetch_add(1, Ordering::Relaxed);
        let reply = central.push(batch.first, batch.last, &batch.body).await;
        let delay = match reply {
            Ok(PushReply::Acked(n)) => {
                let acked = n.min(batch.last);
                if n > batch.last {
                    tracing::warn!(
                        acked_through = n,
                        last = batch.last,
                        "central acknowledged beyond what was sent; counting only what was sent"
                    );
                }
                if acked < batch.first - 1 {
                    tracing::warn!(
                        acked_through = n,
                        first = batch.first,
                        "central acknowledged less than before; resending"
                    );
                }
                persist(&writer, move |c| state::record_success(c, Some(acked))).await;
                link.send_replace(Link::Online);
                backoff.reset();
                batch_size = (batch_size * 2).min(batch_max.max(1));
                tracing::debug!(first = batch.first, acked, count = batch.count, "pushed");
                None
            }
            Ok(PushReply::AlreadyHave(n)) => {
                tracing::info!(
                    acked_through = n,
                    first = batch.first,
                    "central already has events; continuing after its figure"
                );
                persist(&writer, move |c| {
                    state::set_acked(c, n)?;
                    state::record_success(c, None)
                })
                .await;
                link.send_replace(Link::Online);
                backoff.reset();
                None
            }
            Ok(PushReply::TooLarge) => {
                batch_size = (batch.count / 2).max(1);
                tracing::warn!(
                    batch_size,
                    "central refused the batch as too large; halving"
                );
                link.send_replace(Link::Online);
                None
            }
            Ok(PushReply::Unauthorized(status)) => {
                let msg = format!(
                    "central refused the token ({status}); check central.token_file (it is re-read before every try)"
                );
                tracing::error!("{msg}");
                fail(&writer, &link, &stats, msg).await;
                // Slowly: a token fix is a human's job. At least a minute
                // (or the configured cap, if lower) between tries.
                Some(
                    backoff
                        .next_delay()
                        .max(Duration::from_secs(60).min(max_backoff)),
                )
            }
            Ok(PushReply::RetryLater {
                status,
                retry_after,
            }) => {
                let msg = format!("central answered {status}; retrying");
                tracing::warn!("{msg}");
                fail(&writer, &link, &stats, msg).await;
                let d = backoff.next_delay();
                Some(retry_after.map_or(d, |r| r.min(max_backoff).max(d)))
            }
            Ok(PushReply::Unexpected { status, body }) => {
                let msg = format!("unexpected answer from central: {status} {body:?}");
                tracing::warn!("{msg}");
                fail(&writer, &link, &stats, msg).await;
                Some(backoff.next_delay())
            }
            Err(e) => {
                let msg = e.to_string();
                if *link.borrow() != Link::Offline {
                    tracing::warn!(error = %msg, "central unreachable; working offline and retrying");
                }
                fail(&writer, &link, &stats, msg).await;
                Some(backoff.next_delay())
            }
        };
        if let Some(d) = delay {
            if !shutdown.sleep(d).await {
                break;
            }
        }
    }
}

async fn fail(
    writer: &Writer,
    link: &tokio::sync::watch::Sender<Link>,
    stats: &PushStats,
    msg: String,
) {
    stats.failures.fetch_add(1, Ordering::Relaxed);
    link.send_replace(Link::Offline);
    persist(writer, move |c| state::record_failure(c, &msg)).await;
}

async fn persist(
    writer: &Writer,
    f: impl FnOnce(&Connection) -> Result<(), StoreError> + Send + 'static,
) {
    if let Err(e) = writer.transact(move |w| f(w.conn())).await {
        tracing::error!(error = %e, "cannot record the sync state");
    }
}

/// Record an unrecoverable gap as skipped and raise an alert, so the push
/// can go on and central learns what it will never get.
pub(super) async fn record_skip(writer: &Writer, from: i64, to: i64) {
    let result = writer
        .transact(move |w| {
            w.conn()
                .execute(
                    "INSERT OR REPLACE INTO dropped_ranges (first_seq, last_seq, at_ms) VALUES (?1, ?2, ?3)",
                    rusqlite::params![from, to, chrono::Utc::now().timestamp_millis()],
                )
                .ctx("recording a skipped range")?;
            let mut context = serde_json::Map::new();
            context.insert("ranges".into(), serde_json::json!([[from, to]]));
            crate::domain::alerts::raise(
                w,
                "agent",
                "events_unavailable",
                &format!("{from}-{to}"),
                crate::event::Severity::Critical,
                format!("events {from} to {to} were requested again by central but are no longer in the journal"),
                context,
            )?;
            Ok(())
        })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "cannot record a skipped range");
    }
}
