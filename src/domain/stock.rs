//! The stock ledger (DESIGN invariant 6): on hand per SKU = the latest
//! central baseline for that SKU + every local stock move with a seq above
//! the baseline's `through_seq`. Moves are kept in `stock_moves` until a
//! baseline includes them, so reconciliation never depends on how long the
//! journal keeps events, never loses a local sale and never counts one twice.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Deserialize;

use crate::db::{SqlContext, StoreError};
use crate::domain::{alerts, catalog};
use crate::event::{Event, NewEvent, Seq, Severity};

/// Central's stock pull response (spec/sync-api.md section 4).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Baseline {
    pub version: i64,
    pub through_seq: Seq,
    pub items: Vec<BaselineItem>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BaselineItem {
    pub sku: String,
    pub on_hand: i64,
}

/// Projection of one event: record its moves and update on hand. Returns
/// the `low_stock` alert openings or resolutions of SKUs that crossed
/// their minimum.
pub fn apply(conn: &Connection, event: &Event) -> Result<Vec<NewEvent>, StoreError> {
    let mut derived = Vec::new();
    for (sku, delta) in event.body.stock_moves() {
        record_move(conn, event.seq, sku, delta)?;
        derived.extend(low_stock_check(conn, &event.device, sku)?);
    }
    Ok(derived)
}

/// Record one move of an event and add it to on hand.
fn record_move(conn: &Connection, seq: Seq, sku: &str, delta: i64) -> Result<(), StoreError> {
    conn.prepare_cached("INSERT INTO stock_moves (seq, sku, delta) VALUES (?1, ?2, ?3)")
        .and_then(|mut st| st.execute(params![seq, sku, delta]))
        .ctx("recording a stock move")?;
    // SQLite turns an integer sum that overflows into a float; reading it
    // back as an integer is how the overflow shows, and the event is then
    // refused rather than stored as a wrong figure.
    let on_hand = conn
        .prepare_cached(
            "INSERT INTO stock (sku, on_hand) VALUES (?1, ?2)
             ON CONFLICT (sku) DO UPDATE SET on_hand = on_hand + excluded.on_hand
             RETURNING on_hand",
        )
        .and_then(|mut st| st.query_row(params![sku, delta], |r| r.get::<_, i64>(0)));
    match on_hand {
        Ok(_) => Ok(()),
        Err(rusqlite::Error::InvalidColumnType(..)) => Err(StoreError::Rejected(format!(
            "on hand of {sku} would leave the integer range with a move of {delta}"
        ))),
        Err(source) => Err(StoreError::Sqlite {
            context: "moving stock",
            source,
        }),
    }
}

/// On hand of a SKU (0 for a SKU nobody has counted, received or sold).
pub fn on_hand(conn: &Connection, sku: &str) -> Result<i64, StoreError> {
    conn.prepare_cached("SELECT on_hand FROM stock WHERE sku = ?1")
        .and_then(|mut st| st.query_row([sku], |r| r.get(0)).optional())
        .map(Option::unwrap_or_default)
        .ctx("reading on hand")
}

/// Every SKU with a stock figure, sorted.
pub fn all_on_hand(conn: &Connection) -> Result<Vec<(String, i64)>, StoreError> {
    let mut st = conn
        .prepare_cached("SELECT sku, on_hand FROM stock ORDER BY sku")
        .ctx("reading stock")?;
    let rows = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .ctx("reading stock")?;
    rows.collect::<Result<_, _>>().ctx("reading stock")
}

/// Open or resolve the on-hand based `low_stock` alert of a SKU.
pub fn low_stock_check(
    conn: &Connection,
    device: &str,
    sku: &str,
) -> Result<Option<NewEvent>, StoreError> {
    let (_, min_stock) = catalog::weights_and_minimum(conn, sku)?;
    let Some(min) = min_stock else {
        return Ok(None);
    };
    let on_hand = on_hand(conn, sku)?;
    if on_hand < min {
        let mut context = serde_json::Map::new();
        context.insert("sku".into(), sku.into());
        context.insert("on_hand".into(), on_hand.into());
        context.insert("min_stock".into(), min.into());
        alerts::open_event(
            conn,
            device,
            "low_stock",
            sku,
            Severity::Warning,
            format!("{sku}: {on_hand} on hand, minimum {min}; reorder or refill"),
            context,
        )
    } else {
        alerts::resolve_event(
            conn,
            device,
            "low_stock",
            sku,
            format!("{sku}: {on_hand} on hand, back at or above {min}"),
        )
    }
}

/// Apply a baseline: for each SKU it lists, the baseline replaces the
/// previous one when its version is newer (and its `through_seq` does not
/// go back); on hand is recomputed from it
/// plus the moves it does not include. Returns the SKUs whose baseline
/// was taken (an older baseline arriving late changes nothing).
pub fn apply_baseline(conn: &Connection, b: &Baseline) -> Result<Vec<String>, StoreError> {
    let mut taken = Vec::new();
    for item in &b.items {
        let current: Option<(i64, Seq)> = conn
            .prepare_cached("SELECT version, through_seq FROM stock_baseline WHERE sku = ?1")
            .and_then(|mut st| {
                st.query_row([&item.sku], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .ctx("reading a baseline")?;
        match current {
            Some((v, _)) if v >= b.version => continue,
            Some((_, through)) if through > b.through_seq => {
                // Central's through_seq went backwards: the moves between the
                // two were pruned when the first baseline took them, so this
                // one cannot be applied without counting wrong. Keep the old.
                tracing::warn!(sku = %item.sku, version = b.version, through_seq = b.through_seq, previous_through_seq = through,
                    "stock baseline goes back in store seqs; ignored");
                continue;
            }
            _ => {}
        }
        conn.prepare_cached(
            "INSERT INTO stock_baseline (sku, on_hand, through_seq, version) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (sku) DO UPDATE SET on_hand = excluded.on_hand,
               through_seq = excluded.through_seq, version = excluded.version",
        )
        .and_then(|mut st| st.execute(params![item.sku, item.on_hand, b.through_seq, b.version]))
        .ctx("storing a baseline")?;
        recompute(conn, &item.sku)?;
        // Moves the baseline includes are no longer needed.
        conn.prepare_cached("DELETE FROM stock_moves WHERE sku = ?1 AND seq <= ?2")
            .and_then(|mut st| st.execute(params![item.sku, b.through_seq]))
            .ctx("pruning included moves")?;
        taken.push(item.sku.clone());
    }
    conn.execute(
        "UPDATE sync_state SET stock_version = MAX(stock_version, ?1) WHERE id = 1",
        [b.version],
    )
    .ctx("recording the stock version")?;
    Ok(taken)
}

/// On hand of one SKU from its baseline and the moves after it.
pub fn recompute(conn: &Connection, sku: &str) -> Result<i64, StoreError> {
    let (base, through): (i64, Seq) = conn
        .prepare_cached("SELECT on_hand, through_seq FROM stock_baseline WHERE sku = ?1")
        .and_then(|mut st| {
            st.query_row([sku], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .ctx("reading a baseline")?
        .unwrap_or((0, 0));
    let moves: i64 = conn
        .prepare_cached(
            "SELECT COALESCE(SUM(delta), 0) FROM stock_moves WHERE sku = ?1 AND seq > ?2",
        )
        .and_then(|mut st| st.query_row(params![sku, through], |r| r.get(0)))
        .ctx("summing stock moves")?;
    let on_hand = base.checked_add(moves).ok_or_else(|| {
        StoreError::Rejected(format!(
            "on hand of {sku} would leave the integer range ({base} + {moves})"
        ))
    })?;
    conn.prepare_cached(
        "INSERT INTO stock (sku, on_hand) VALUES (?1, ?2) ON CONFLICT (sku) DO UPDATE SET on_hand = excluded.on_hand",
    )
    .and_then(|mut st| st.execute(params![sku, on_hand]))
    .ctx("storing on hand")?;
    Ok(on_hand)
}

/// Recompute every SKU's on hand from baselines and moves (for rebuild).
pub fn recompute_all(conn: &Connection) -> Result<(), StoreError> {
    conn.execute("DELETE FROM stock", [])
        .ctx("clearing stock")?;
    let skus: Vec<String> = {
        let mut st = conn
            .prepare("SELECT sku FROM stock_baseline UNION SELECT sku FROM stock_moves")
            .ctx("listing SKUs")?;
        let rows = st.query_map([], |r| r.get(0)).ctx("listing SKUs")?;
        rows.collect::<Result<_, _>>().ctx("listing SKUs")?
    };
    for sku in skus {
        recompute(conn, &sku)?;
    }
    Ok(())
}
