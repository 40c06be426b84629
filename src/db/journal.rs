//! Read queries over the journal, for status, export, the API and sync.

use rusqlite::{Connection, OptionalExtension};

use super::{SqlContext, StoreError};
use crate::event::{Event, EventBody, Seq};

/// The last seq ever assigned (0 for an empty journal), even if trimmed.
pub fn head(conn: &Connection) -> Result<Seq, StoreError> {
    conn.query_row(
        "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'journal'), 0)",
        [],
        |r| r.get(0),
    )
    .ctx("reading the journal head")
}

/// The oldest seq still in the journal, `None` when it is empty.
pub fn oldest(conn: &Connection) -> Result<Option<Seq>, StoreError> {
    conn.query_row("SELECT MIN(seq) FROM journal", [], |r| r.get(0))
        .optional()
        .map(Option::flatten)
        .ctx("reading the oldest journal seq")
}

/// Up to `limit` events with `seq > after`, in seq order.
pub fn events_after(conn: &Connection, after: Seq, limit: usize) -> Result<Vec<Event>, StoreError> {
    let mut st = conn
        .prepare_cached(
            "SELECT seq, ts_ms, device, kind, data FROM journal WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )
        .ctx("preparing a journal read")?;
    let rows = st
        .query_map(rusqlite::params![after, limit as i64], event_from_row)
        .ctx("reading the journal")?;
    let mut events = Vec::new();
    for row in rows {
        events.push(row.ctx("reading the journal")??);
    }
    Ok(events)
}

/// Number of journaled events per kind, most frequent first.
pub fn counts_per_kind(conn: &Connection) -> Result<Vec<(String, i64)>, StoreError> {
    let mut st = conn
        .prepare("SELECT kind, count(*) FROM journal GROUP BY kind ORDER BY 2 DESC, 1")
        .ctx("preparing the kind counts")?;
    let rows = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .ctx("counting events per kind")?;
    rows.collect::<Result<_, _>>()
        .ctx("counting events per kind")
}

/// Rows in quarantine.
pub fn quarantined(conn: &Connection) -> Result<i64, StoreError> {
    conn.query_row("SELECT count(*) FROM quarantine", [], |r| r.get(0))
        .ctx("counting quarantined input")
}

/// Read one journal row back into an event.
pub fn event_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Event, StoreError>> {
    let seq: Seq = row.get(0)?;
    let ts_ms: i64 = row.get(1)?;
    let device: String = row.get(2)?;
    let kind: String = row.get(3)?;
    let data: String = row.get(4)?;
    Ok(EventBody::from_parts(&kind, &data)
        .map(|body| Event {
            seq,
            ts: crate::event::ts_from_millis(ts_ms),
            device,
            body,
        })
        .map_err(|source| StoreError::Corrupt { seq, source }))
}
