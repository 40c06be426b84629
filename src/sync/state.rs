//! Sync state (spec/sync-api.md section 5): where the push stands and how
//! the link has been doing. One row, written only through the writer.

use rusqlite::Connection;
use serde::Serialize;

use crate::db::{SqlContext, StoreError};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyncState {
    pub last_acked_seq: i64,
    pub price_version: i64,
    pub stock_version: i64,
    /// The `since` of the next pickup orders pull (sync-api.md 6).
    pub orders_version: i64,
    pub last_attempt_ms: Option<i64>,
    pub last_success_ms: Option<i64>,
    pub last_error: Option<String>,
    pub consecutive_failures: i64,
}

pub fn read(conn: &Connection) -> Result<SyncState, StoreError> {
    conn.query_row(
        "SELECT last_acked_seq, price_version, stock_version, last_attempt_ms, last_success_ms, last_error, consecutive_failures, orders_version
         FROM sync_state WHERE id = 1",
        [],
        |r| {
            Ok(SyncState {
                last_acked_seq: r.get(0)?,
                price_version: r.get(1)?,
                stock_version: r.get(2)?,
                last_attempt_ms: r.get(3)?,
                last_success_ms: r.get(4)?,
                last_error: r.get(5)?,
                consecutive_failures: r.get(6)?,
                orders_version: r.get(7)?,
            })
        },
    )
    .ctx("reading the sync state")
}

/// Central has everything through `acked`. Never moves backwards here;
/// a 409 that moves it back goes through [`set_acked`].
pub fn record_success(conn: &Connection, acked: Option<i64>) -> Result<(), StoreError> {
    let now = chrono::Utc::now().timestamp_millis();
    conn.execute(
        "UPDATE sync_state SET last_acked_seq = MAX(last_acked_seq, COALESCE(?1, last_acked_seq)),
           last_attempt_ms = ?2, last_success_ms = ?2, last_error = NULL, consecutive_failures = 0 WHERE id = 1",
        rusqlite::params![acked, now],
    )
    .ctx("recording a sync success")?;
    Ok(())
}

/// Central says it has exactly through `acked` (409): continue from there.
pub fn set_acked(conn: &Connection, acked: i64) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE sync_state SET last_acked_seq = ?1 WHERE id = 1",
        [acked],
    )
    .ctx("recording central's position")?;
    Ok(())
}

pub fn record_failure(conn: &Connection, error: &str) -> Result<(), StoreError> {
    let now = chrono::Utc::now().timestamp_millis();
    conn.execute(
        "UPDATE sync_state SET last_attempt_ms = ?1, last_error = ?2, consecutive_failures = consecutive_failures + 1 WHERE id = 1",
        rusqlite::params![now, error],
    )
    .ctx("recording a sync failure")?;
    Ok(())
}
