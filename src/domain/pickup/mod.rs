//! Click-and-collect (spec/sync-api.md section 6): pickup orders pulled
//! from central reserve stock; staff pick them item by item
//! ([`pick`]) and hand them over against the customer's pickup code; an
//! order not collected by its deadline expires and its reservation is
//! released.
//!
//! The order tables (`pickup_orders`, `pickup_lines`, `pickup_epcs`) are
//! owned here and written only through the writer, in the transaction of
//! the event that changes them: `order_reserved` on the pull,
//! `order_picked`, `order_handed_over` (which moves stock like a sale),
//! `order_expired` and `order_cancelled`. Scans in between are kept in the
//! tables (committed before the API answers, like a sled session's tags)
//! and journaled with `order_picked`.
//!
//! What the store has available of a SKU is on hand minus [`reserved`].

pub mod code;
pub mod pick;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use self::code::PickupCode;
use crate::db::{SqlContext, StoreError, WriteTx};
use crate::domain::alerts;
use crate::event::{
    EventBody, NewEvent, OrderLine, OrderReleased, OrderReserved, Severity, bounds, format_ts,
    ts_from_millis,
};

/// The device name order events are journaled under when the agent
/// itself decides (pull, expiry); staff actions use the API's.
pub const DEVICE: &str = "pickup";

/// The alert that asks staff to put an expired or cancelled order's
/// picked items back on the shelf; resolved by [`pick::returned`].
pub const RETURN_ALERT: &str = "pickup_return";

/// Central's orders pull (spec/sync-api.md section 6).
#[derive(Debug, Clone, Deserialize)]
pub struct OrdersPull {
    pub version: i64,
    #[serde(default)]
    pub orders: Vec<PulledOrder>,
    #[serde(default)]
    pub cancelled: Vec<String>,
}

/// One order as central sends it.
#[derive(Debug, Clone, Deserialize)]
pub struct PulledOrder {
    pub order_id: String,
    pub pickup_code: PickupCode,
    #[serde(default = "open")]
    pub status: String,
    #[serde(with = "crate::event::ts_format")]
    pub promised_at: DateTime<Utc>,
    #[serde(with = "crate::event::ts_format")]
    pub expires_at: DateTime<Utc>,
    pub lines: Vec<OrderLine>,
}

fn open() -> String {
    "open".into()
}

/// What applying a pull did, by order id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullOutcome {
    pub reserved: Vec<String>,
    pub cancelled: Vec<String>,
    /// Orders refused (with why): bad ids, lines, codes.
    pub refused: Vec<(String, String)>,
}

/// Apply central's orders: reserve new open orders, cancel live ones
/// central cancelled (an order already handed over, expired or cancelled
/// stays as it is), and remember the version for the next `since`. An
/// order the store already has is not changed otherwise.
pub fn apply_pull(
    w: &mut WriteTx<'_>,
    pull: &OrdersPull,
    now: DateTime<Utc>,
) -> Result<PullOutcome, StoreError> {
    let key = crate::domain::privacy::member_key(w.conn())?;
    let mut outcome = PullOutcome::default();
    for order in &pull.orders {
        let id = &order.order_id;
        let known = state_of(w.conn(), id)?.is_some();
        if known || order.status != "open" {
            // Central's later word on an order the store has: only a
            // cancellation acts (`release` leaves ended orders alone).
            if known && order.status == "cancelled" && release(w, id, Release::Cancelled)? {
                outcome.cancelled.push(id.clone());
            }
            continue;
        }
        if let Err(why) = check_pulled(order) {
            outcome.refused.push((id.clone(), why));
            continue;
        }
        let hash = code::hash(&key, id, &order.pickup_code);
        reserve(w, order, &hash, now)?;
        outcome.reserved.push(id.clone());
    }
    for id in &pull.cancelled {
        if release(w, id, Release::Cancelled)? {
            outcome.cancelled.push(id.clone());
        }
    }
    w.conn()
        .execute(
            "UPDATE sync_state SET orders_version = MAX(orders_version, ?1) WHERE id = 1",
            [pull.version],
        )
        .ctx("recording the orders version")?;
    Ok(outcome)
}

/// Why a pulled order cannot be taken, naming the field (never the code).
fn check_pulled(o: &PulledOrder) -> Result<(), String> {
    bounds::check_id("order_id", &o.order_id)?;
    bounds::check_order_lines(o.lines.iter().map(|l| (l.sku.as_str(), l.qty)))?;
    if !o.pickup_code.is_plausible() {
        return Err("pickup_code is empty, longer than 64 bytes or not printable".into());
    }
    Ok(())
}

/// Journal `order_reserved` and hold the order's lines.
fn reserve(
    w: &mut WriteTx<'_>,
    o: &PulledOrder,
    code_hash: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let appended = w.append(NewEvent::new(
        crate::event::now_millis(),
        DEVICE,
        EventBody::OrderReserved(OrderReserved {
            order_id: o.order_id.clone(),
            lines: o.lines.clone(),
            promised_at: o.promised_at,
            expires_at: o.expires_at,
        }),
    ))?;
    if appended.duplicate {
        return Ok(());
    }
    w.conn()
        .execute(
            "INSERT INTO pickup_orders (order_id, code_hash, state, promised_ms, expires_ms, pulled_ms)
             VALUES (?1, ?2, 'open', ?3, ?4, ?5)",
            params![
                o.order_id,
                code_hash,
                o.promised_at.timestamp_millis(),
                o.expires_at.timestamp_millis(),
                now.timestamp_millis()
            ],
        )
        .ctx("storing a pickup order")?;
    let mut st = w
        .conn()
        .prepare_cached(
            "INSERT INTO pickup_lines (order_id, sku, qty, reserved) VALUES (?1, ?2, ?3, ?3)",
        )
        .ctx("storing pickup lines")?;
    for l in &o.lines {
        st.execute(params![o.order_id, l.sku, l.qty])
            .ctx("storing a pickup line")?;
    }
    Ok(())
}

/// Why an order's reservation ends without a handover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    Expired,
    Cancelled,
}

/// End a live order (open or picked) without a handover: journal
/// `order_expired` or `order_cancelled`, release the reservation, and when
/// items had been picked open the `pickup_return` alert. `false` when the
/// order is not live (unknown, handed over, already ended).
pub fn release(w: &mut WriteTx<'_>, order_id: &str, why: Release) -> Result<bool, StoreError> {
    if !matches!(
        state_of(w.conn(), order_id)?.as_deref(),
        Some("open" | "picked")
    ) {
        return Ok(false);
    }
    let back = picked_so_far(w.conn(), order_id)?;
    let body = OrderReleased {
        order_id: order_id.to_string(),
        return_to_shelf: back.clone(),
    };
    let (body, state, word) = match why {
        Release::Expired => (EventBody::OrderExpired(body), "expired", "expired"),
        Release::Cancelled => (
            EventBody::OrderCancelled(body),
            "cancelled",
            "was cancelled",
        ),
    };
    let appended = w.append(NewEvent::new(crate::event::now_millis(), DEVICE, body))?;
    close(w.conn(), order_id, state, appended.seq, !back.is_empty())?;
    if !back.is_empty() {
        let items: Vec<String> = back
            .iter()
            .map(|l| format!("{} × {}", l.qty, l.sku))
            .collect();
        let mut context = serde_json::Map::new();
        context.insert("order_id".into(), order_id.into());
        let message = format!(
            "pickup order {order_id} {word}: put {} back on the shelf",
            items.join(", ")
        );
        if let Some(alert) = alerts::open_event(
            w.conn(),
            DEVICE,
            RETURN_ALERT,
            order_id,
            Severity::Warning,
            message,
            context,
        )? {
            w.append(alert)?;
        }
    }
    Ok(true)
}

/// The units picked so far per line (lines with none left out).
pub fn picked_so_far(conn: &Connection, order_id: &str) -> Result<Vec<OrderLine>, StoreError> {
    Ok(lines(conn, order_id)?
        .into_iter()
        .filter(|l| l.picked > 0)
        .map(|l| OrderLine {
            sku: l.sku,
            qty: l.picked,
        })
        .collect())
}

/// An order ended in `state` by the event `seq`: nothing is reserved for
/// it any more; `return_open` when its picked items must go back.
pub(crate) fn close(
    conn: &Connection,
    order_id: &str,
    state: &str,
    seq: i64,
    return_open: bool,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE pickup_orders SET state = ?2, closed_seq = ?3, return_open = ?4 WHERE order_id = ?1",
        params![order_id, state, seq, return_open],
    )
    .ctx("ending a pickup order")?;
    conn.execute(
        "UPDATE pickup_lines SET reserved = 0 WHERE order_id = ?1",
        [order_id],
    )
    .ctx("releasing a reservation")?;
    Ok(())
}

/// Expire every live order whose deadline has passed at `now_ms`; returns
/// their ids. Each is journaled once: an expired order is no longer live.
pub fn expire_due(w: &mut WriteTx<'_>, now_ms: i64) -> Result<Vec<String>, StoreError> {
    let due = due_orders(w.conn(), now_ms)?;
    for id in &due {
        release(w, id, Release::Expired)?;
    }
    Ok(due)
}

/// How long an ended order keeps its lines and scanned tags after its
/// deadline: long enough for any question about a pickup, short enough
/// that years of orders do not pile up (DESIGN invariant 8).
pub const ENDED_KEEP_DAYS: i64 = 30;

/// Forget the lines and tags of orders that ended (handed over, expired,
/// cancelled, nothing left to put back) more than [`ENDED_KEEP_DAYS`]
/// after their deadline; the order's row stays (under 200 bytes), so an
/// order central sends again stays ended, as the spec asks. Returns the
/// rows removed.
pub fn forget_ended(w: &mut WriteTx<'_>, now_ms: i64) -> Result<usize, StoreError> {
    let before = now_ms.saturating_sub(ENDED_KEEP_DAYS * 86_400_000);
    let ended = "SELECT order_id FROM pickup_orders
        WHERE state NOT IN ('open', 'picked') AND return_open = 0 AND expires_ms < ?1";
    let mut removed = 0;
    for table in ["pickup_lines", "pickup_epcs"] {
        removed += w
            .conn()
            .prepare_cached(&format!("DELETE FROM {table} WHERE order_id IN ({ended})"))
            .and_then(|mut st| st.execute([before]))
            .ctx("forgetting ended pickup orders")?;
    }
    Ok(removed)
}

/// Live orders whose deadline has passed at `now_ms`.
fn due_orders(conn: &Connection, now_ms: i64) -> Result<Vec<String>, StoreError> {
    let mut st = conn
        .prepare_cached(
            "SELECT order_id FROM pickup_orders WHERE state IN ('open', 'picked') AND expires_ms <= ?1 ORDER BY expires_ms",
        )
        .ctx("finding expired orders")?;
    let rows = st
        .query_map([now_ms], |r| r.get(0))
        .ctx("finding expired orders")?;
    rows.collect::<Result<_, _>>().ctx("finding expired orders")
}

/// An order's state, if the store has it.
pub fn state_of(conn: &Connection, order_id: &str) -> Result<Option<String>, StoreError> {
    conn.prepare_cached("SELECT state FROM pickup_orders WHERE order_id = ?1")
        .and_then(|mut st| st.query_row([order_id], |r| r.get(0)).optional())
        .ctx("reading a pickup order")
}

/// Units of a SKU held for pickup orders.
pub fn reserved(conn: &Connection, sku: &str) -> Result<i64, StoreError> {
    conn.prepare_cached(
        "SELECT COALESCE(SUM(reserved), 0) FROM pickup_lines WHERE sku = ?1 AND reserved > 0",
    )
    .and_then(|mut st| st.query_row([sku], |r| r.get(0)))
    .ctx("summing reservations")
}

/// Units held for pickup orders, per SKU that has any.
pub fn reserved_all(conn: &Connection) -> Result<HashMap<String, i64>, StoreError> {
    let mut st = conn
        .prepare_cached(
            "SELECT sku, SUM(reserved) FROM pickup_lines WHERE reserved > 0 GROUP BY sku",
        )
        .ctx("summing reservations")?;
    let rows = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .ctx("summing reservations")?;
    rows.collect::<Result<_, _>>().ctx("summing reservations")
}

/// What `storegate status` says about pickups.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Orders reserved and not picked yet.
    pub to_pick: i64,
    /// Picked, waiting for the customer.
    pub ready: i64,
    /// Ended orders whose picked items are still to go back.
    pub to_return: i64,
    /// The `since` of the next orders pull.
    pub orders_version: i64,
}

/// The pickup figures for `storegate status`.
pub fn summary(conn: &Connection) -> Result<Summary, StoreError> {
    conn.query_row(
        "SELECT (SELECT count(*) FROM pickup_orders WHERE state = 'open'),
                (SELECT count(*) FROM pickup_orders WHERE state = 'picked'),
                (SELECT count(*) FROM pickup_orders WHERE return_open = 1),
                (SELECT orders_version FROM sync_state WHERE id = 1)",
        [],
        |r| {
            Ok(Summary {
                to_pick: r.get(0)?,
                ready: r.get(1)?,
                to_return: r.get(2)?,
                orders_version: r.get(3)?,
            })
        },
    )
    .ctx("summing up pickup orders")
}

/// One line of an order as staff see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LineView {
    pub sku: String,
    pub name: Option<String>,
    pub qty: i64,
    pub picked: i64,
    pub reserved: i64,
}

/// An order as staff see it: never its code.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OrderView {
    pub order_id: String,
    pub state: String,
    pub promised_at: String,
    pub expires_at: String,
    pub lines: Vec<LineView>,
    /// Picked items of an expired or cancelled order still to go back.
    pub return_open: bool,
    pub wrong_codes: i64,
}

/// One order, if the store has it.
pub fn view(conn: &Connection, order_id: &str) -> Result<Option<OrderView>, StoreError> {
    let head = conn
        .prepare_cached(
            "SELECT state, promised_ms, expires_ms, return_open, wrong_codes FROM pickup_orders WHERE order_id = ?1",
        )
        .and_then(|mut st| {
            st.query_row([order_id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, bool>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })
            .optional()
        })
        .ctx("reading a pickup order")?;
    let Some((state, promised, expires, return_open, wrong_codes)) = head else {
        return Ok(None);
    };
    Ok(Some(OrderView {
        order_id: order_id.to_string(),
        state,
        promised_at: format_ts(&ts_from_millis(promised)),
        expires_at: format_ts(&ts_from_millis(expires)),
        lines: lines(conn, order_id)?,
        return_open,
        wrong_codes,
    }))
}

/// The orders staff have to act on: live ones (to pick, to hand over)
/// and ended ones whose items are still to go back, by promised time.
pub fn worklist(conn: &Connection) -> Result<Vec<OrderView>, StoreError> {
    let ids: Vec<String> = {
        let mut st = conn
            .prepare_cached(
                "SELECT order_id FROM pickup_orders WHERE state IN ('open', 'picked') OR return_open = 1
                 ORDER BY promised_ms, order_id",
            )
            .ctx("listing pickup orders")?;
        let rows = st
            .query_map([], |r| r.get(0))
            .ctx("listing pickup orders")?;
        rows.collect::<Result<_, _>>()
            .ctx("listing pickup orders")?
    };
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        out.extend(view(conn, &id)?);
    }
    Ok(out)
}

/// An order's lines with the catalog's names.
pub fn lines(conn: &Connection, order_id: &str) -> Result<Vec<LineView>, StoreError> {
    let mut st = conn
        .prepare_cached(
            "SELECT l.sku, c.name, l.qty, l.picked, l.reserved FROM pickup_lines l
             LEFT JOIN catalog c ON c.sku = l.sku WHERE l.order_id = ?1 ORDER BY l.sku",
        )
        .ctx("reading pickup lines")?;
    let rows = st
        .query_map([order_id], |r| {
            Ok(LineView {
                sku: r.get(0)?,
                name: r.get(1)?,
                qty: r.get(2)?,
                picked: r.get(3)?,
                reserved: r.get(4)?,
            })
        })
        .ctx("reading pickup lines")?;
    rows.collect::<Result<_, _>>().ctx("reading pickup lines")
}
