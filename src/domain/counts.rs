//! What staff do on the floor: counts (by scan, by hand, by RFID),
//! adjustments and goods receipts. The HTTP layer calls these inside a
//! writer job; the logic and its checks live here.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};

use crate::db::{SqlContext, StoreError, WriteTx};
use crate::domain::stock;
use crate::event::{Adjustment, Count, Event, EventBody, NewEvent, StockReceipt};

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CountLine {
    pub sku: String,
    pub counted: i64,
}

/// Per line of a count: what the books said, what was counted, the difference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CountResult {
    pub sku: String,
    pub expected: i64,
    pub counted: i64,
    pub delta: i64,
}

/// Who counted where, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct CountSession<'a> {
    /// Who reported it (the API uses `api`).
    pub device: &'a str,
    pub session_id: &'a str,
    pub zone: &'a str,
    /// `rfid`, `scan` or `manual`.
    pub method: &'a str,
    /// Bring on hand to the counted figures with `adjustment` events.
    pub apply: bool,
    pub by: Option<&'a str>,
}

/// Journal a count session: a `count` per line and, with `apply`, an
/// `adjustment` bringing on hand to the counted figure.
pub fn record_count(
    w: &mut WriteTx<'_>,
    s: &CountSession<'_>,
    lines: &[CountLine],
) -> Result<Vec<CountResult>, StoreError> {
    let CountSession {
        device,
        session_id,
        zone,
        method,
        apply,
        by,
    } = *s;
    let now = crate::event::now_millis();
    let mut results = Vec::with_capacity(lines.len());
    for line in lines {
        if line.counted < 0 {
            return Err(StoreError::Rejected(format!(
                "{}: counted must not be negative",
                line.sku
            )));
        }
        let expected = stock::on_hand(w.conn(), &line.sku)?;
        let delta = line.counted - expected;
        w.append(NewEvent::new(
            now,
            device,
            EventBody::Count(Count {
                session_id: session_id.to_string(),
                zone: zone.to_string(),
                sku: line.sku.clone(),
                counted: line.counted,
                expected,
                method: method.to_string(),
            }),
        ))?;
        if apply && delta != 0 {
            adjust(w, device, &line.sku, delta, "count", by)?;
        }
        results.push(CountResult {
            sku: line.sku.clone(),
            expected,
            counted: line.counted,
            delta,
        });
    }
    Ok(results)
}

pub fn adjust(
    w: &mut WriteTx<'_>,
    device: &str,
    sku: &str,
    delta: i64,
    reason: &str,
    by: Option<&str>,
) -> Result<i64, StoreError> {
    let a = w.append(NewEvent::new(
        crate::event::now_millis(),
        device,
        EventBody::Adjustment(Adjustment {
            sku: sku.to_string(),
            delta,
            reason: reason.to_string(),
            by: by.map(String::from),
        }),
    ))?;
    Ok(a.seq)
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ReceiptLine {
    pub sku: String,
    pub qty: i64,
}

/// Goods received. A delivery line already journaled (same delivery id and
/// SKU) is not booked twice. Returns `(sku, seq, duplicate)` per line.
pub fn receive(
    w: &mut WriteTx<'_>,
    device: &str,
    delivery_id: &str,
    lines: &[ReceiptLine],
) -> Result<Vec<(String, i64, bool)>, StoreError> {
    let now = crate::event::now_millis();
    let mut out = Vec::new();
    for line in lines {
        if line.qty <= 0 {
            return Err(StoreError::Rejected(format!(
                "{}: qty must be positive",
                line.sku
            )));
        }
        let a = w.append(NewEvent::new(
            now,
            device,
            EventBody::Receipt(StockReceipt {
                delivery_id: delivery_id.to_string(),
                sku: line.sku.clone(),
                qty: line.qty,
            }),
        ))?;
        out.push((line.sku.clone(), a.seq, a.duplicate));
    }
    Ok(out)
}

/// Projection of `count` events: the last count per SKU.
pub fn apply(conn: &Connection, event: &Event) -> Result<(), StoreError> {
    if let EventBody::Count(c) = &event.body {
        conn.prepare_cached(
            "INSERT INTO last_counts (sku, session_id, zone, counted, expected, method, at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (sku) DO UPDATE SET session_id = excluded.session_id, zone = excluded.zone, counted = excluded.counted,
               expected = excluded.expected, method = excluded.method, at_ms = excluded.at_ms",
        )
        .and_then(|mut st| {
            st.execute(params![c.sku, c.session_id, c.zone, c.counted, c.expected, c.method, event.ts.timestamp_millis()])
        })
        .ctx("recording a count")?;
    }
    Ok(())
}

/// An RFID count over one zone and time window (spec/local-api.md
/// `POST /v1/counts/rfid`): unique EPCs seen there in the window, per SKU,
/// against on hand.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RfidCount {
    pub zone: String,
    pub lines: Vec<CountResult>,
    /// EPCs seen that map to no SKU (not SGTIN-96, or a GTIN the catalog lacks).
    pub unknown_epcs: Vec<String>,
    /// SKUs with stock on hand that were not seen at all.
    pub expected_unseen: Vec<String>,
}

pub fn rfid_count(
    conn: &Connection,
    zone: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<RfidCount, StoreError> {
    let (from, to) = (from.timestamp_millis(), to.timestamp_millis());
    let mut seen: Vec<(String, i64)> = Vec::new();
    {
        let mut st = conn
            .prepare_cached(
                "SELECT sku, COUNT(*) FROM tags WHERE zone = ?1 AND last_seen_ms >= ?2 AND first_seen_ms <= ?3 AND sku IS NOT NULL
                 GROUP BY sku ORDER BY sku",
            )
            .ctx("counting tags")?;
        let rows = st
            .query_map(params![zone, from, to], |r| Ok((r.get(0)?, r.get(1)?)))
            .ctx("counting tags")?;
        for row in rows {
            seen.push(row.ctx("counting tags")?);
        }
    }
    let unknown_epcs: Vec<String> = {
        let mut st = conn
            .prepare_cached(
                "SELECT epc FROM tags WHERE zone = ?1 AND last_seen_ms >= ?2 AND first_seen_ms <= ?3 AND sku IS NULL ORDER BY epc LIMIT 10000",
            )
            .ctx("listing unknown tags")?;
        let rows = st
            .query_map(params![zone, from, to], |r| r.get(0))
            .ctx("listing unknown tags")?;
        rows.collect::<Result<_, _>>().ctx("listing unknown tags")?
    };
    let mut lines = Vec::with_capacity(seen.len());
    for (sku, counted) in &seen {
        let expected = stock::on_hand(conn, sku)?;
        lines.push(CountResult {
            sku: sku.clone(),
            expected,
            counted: *counted,
            delta: counted - expected,
        });
    }
    let expected_unseen: Vec<String> = stock::all_on_hand(conn)?
        .into_iter()
        .filter(|(sku, n)| *n > 0 && !seen.iter().any(|(s, _)| s == sku))
        .map(|(sku, _)| sku)
        .collect();
    Ok(RfidCount {
        zone: zone.to_string(),
        lines,
        unknown_epcs,
        expected_unseen,
    })
}
