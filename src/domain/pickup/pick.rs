//! Staff work on a pickup order: scan every item into it (a GTIN, or an
//! RFID EPC from a sled or pad reader), finish the pick (recording any
//! short lines), hand it over against the customer's code, and confirm
//! that an ended order's picked items are back on the shelf. Each refusal
//! says what was wrong and what to do; a refused scan changes nothing.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::code::{self, PickupCode};
use super::{LineView, RETURN_ALERT, close, lines, picked_so_far, state_of};
use crate::db::{SqlContext, StoreError, WriteTx};
use crate::domain::epc::{self, SledTag};
use crate::domain::{alerts, catalog, sgtin};
use crate::event::{
    EventBody, NewEvent, OrderHandedOver, OrderLine, OrderPicked, PickedLine, now_millis,
};

/// Wrong pickup codes after which an order's handover is locked for
/// [`LOCK_MS`]: a 4-digit code must not be guessable by trying.
pub const MAX_WRONG_CODES: i64 = 5;

/// How long a handover stays locked after [`MAX_WRONG_CODES`] wrong codes.
pub const LOCK_MS: i64 = 5 * 60 * 1000;

/// Why staff's action on an order was refused; nothing of it was stored
/// (except the count of wrong codes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PickRefusal {
    #[error("no pickup order {0:?} in this store; check the order number or pull orders again")]
    UnknownOrder(String),
    #[error("order {order_id} is {state}; {what}")]
    WrongState {
        order_id: String,
        state: String,
        what: &'static str,
    },
    #[error(
        "{code:?} is neither a GTIN nor an RFID EPC of a product this store knows; scan the item's barcode or tag"
    )]
    UnknownCode { code: String },
    #[error("wrong item: {sku} is not in order {order_id}; put it back")]
    WrongItem { order_id: String, sku: String },
    #[error(
        "surplus: order {order_id} needs {qty} × {sku} and all {qty} are picked already; put this one back"
    )]
    Surplus {
        order_id: String,
        sku: String,
        qty: i64,
    },
    #[error("this tag's item is already picked for order {other}; take another item")]
    TakenByOther { other: String },
    #[error(
        "that is not the pickup code of order {order_id}; ask the customer for the code in their confirmation"
    )]
    WrongCode { order_id: String },
    #[error(
        "order {order_id} is locked for {minutes} more minute(s) after {MAX_WRONG_CODES} wrong pickup codes; check the customer's order confirmation, then try again"
    )]
    Locked { order_id: String, minutes: i64 },
    #[error("nothing of order {order_id} was picked: there is nothing to hand over")]
    NothingPicked { order_id: String },
}

/// What a scan did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scanned {
    pub sku: String,
    /// The line after the scan.
    pub picked: i64,
    pub qty: i64,
    /// The same tagged item was scanned into this order before: not
    /// counted again.
    pub repeat: bool,
    /// Every line of the order has all its units.
    pub complete: bool,
}

type Refusable<T> = Result<Result<T, PickRefusal>, StoreError>;

/// The order's state, or the refusal for an unknown order.
fn current(w: &WriteTx<'_>, order_id: &str) -> Result<Result<String, PickRefusal>, StoreError> {
    Ok(state_of(w.conn(), order_id)?.ok_or_else(|| PickRefusal::UnknownOrder(order_id.into())))
}

fn wrong_state(order_id: &str, state: &str, what: &'static str) -> PickRefusal {
    PickRefusal::WrongState {
        order_id: order_id.into(),
        state: state.into(),
        what,
    }
}

/// A tagged item as scanned: its key (GTIN and serial, however the tag
/// was encoded) and the EPC as read.
struct Tag {
    item: String,
    epc: String,
}

/// What a scanned code is: the SKU, and for a tag the item. A plain GTIN
/// (8, 12, 13 or 14 digits with a valid check digit) is tried before an
/// EPC, since GTIN-8 and GTIN-12 are also whole 16-bit words of hex.
fn resolve(w: &WriteTx<'_>, scanned: &str) -> Result<Option<(String, Option<Tag>)>, StoreError> {
    let text = scanned.trim();
    if sgtin::normalize_gtin(text).is_some() {
        return Ok(catalog::sku_for_gtin(w.conn(), text)?.map(|sku| (sku, None)));
    }
    let tag = epc::classify(text);
    let SledTag::Product { gtin, .. } = &tag else {
        return Ok(None);
    };
    let Some(sku) = catalog::sku_for_gtin(w.conn(), gtin)? else {
        return Ok(None);
    };
    let epc = if text.starts_with("http") {
        text.to_string()
    } else {
        text.to_ascii_uppercase()
    };
    Ok(Some((
        sku,
        Some(Tag {
            item: tag.key(text),
            epc,
        }),
    )))
}

/// Scan one item into an order being picked.
pub fn scan(w: &mut WriteTx<'_>, order_id: &str, scanned: &str) -> Refusable<Scanned> {
    let state = match current(w, order_id)? {
        Ok(s) => s,
        Err(r) => return Ok(Err(r)),
    };
    if state != "open" {
        return Ok(Err(wrong_state(
            order_id,
            &state,
            "only an order being picked takes scans",
        )));
    }
    let Some((sku, tag)) = resolve(w, scanned)? else {
        return Ok(Err(PickRefusal::UnknownCode {
            code: epc::shorten(scanned.trim()).to_string(),
        }));
    };
    let line: Option<(i64, i64)> = w
        .conn()
        .prepare_cached("SELECT qty, picked FROM pickup_lines WHERE order_id = ?1 AND sku = ?2")
        .and_then(|mut st| {
            st.query_row(params![order_id, sku], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .ctx("reading a pickup line")?;
    let Some((qty, picked)) = line else {
        return Ok(Err(PickRefusal::WrongItem {
            order_id: order_id.into(),
            sku,
        }));
    };
    if let Some(Tag { item, .. }) = &tag {
        // Live orders only: an item handed over and later returned at the
        // till may be picked for another customer.
        let holder: Option<String> = w
            .conn()
            .prepare_cached(
                "SELECT e.order_id FROM pickup_epcs e JOIN pickup_orders o ON o.order_id = e.order_id
                 WHERE e.item = ?1 AND o.state IN ('open', 'picked') LIMIT 1",
            )
            .and_then(|mut st| st.query_row([item], |r| r.get(0)).optional())
            .ctx("looking up a scanned tag")?;
        match holder {
            Some(h) if h == order_id => {
                return Ok(Ok(Scanned {
                    sku,
                    picked,
                    qty,
                    repeat: true,
                    complete: complete(w, order_id)?,
                }));
            }
            Some(other) => return Ok(Err(PickRefusal::TakenByOther { other })),
            None => {}
        }
    }
    if picked >= qty {
        return Ok(Err(PickRefusal::Surplus {
            order_id: order_id.into(),
            sku,
            qty,
        }));
    }
    w.conn()
        .prepare_cached(
            "UPDATE pickup_lines SET picked = picked + 1 WHERE order_id = ?1 AND sku = ?2",
        )
        .and_then(|mut st| st.execute(params![order_id, sku]))
        .ctx("recording a scan")?;
    if let Some(Tag { item, epc }) = &tag {
        w.conn()
            .prepare_cached(
                "INSERT INTO pickup_epcs (order_id, item, epc, sku) VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut st| st.execute(params![order_id, item, epc, sku]))
            .ctx("recording a scanned tag")?;
    }
    Ok(Ok(Scanned {
        sku,
        picked: picked + 1,
        qty,
        repeat: false,
        complete: complete(w, order_id)?,
    }))
}

fn complete(w: &WriteTx<'_>, order_id: &str) -> Result<bool, StoreError> {
    w.conn()
        .prepare_cached(
            "SELECT NOT EXISTS (SELECT 1 FROM pickup_lines WHERE order_id = ?1 AND picked < qty)",
        )
        .and_then(|mut st| st.query_row([order_id], |r| r.get(0)))
        .ctx("checking a pick")
}

/// Finish picking: journal `order_picked` with every line's picked and
/// short units (and the EPCs scanned); the reservation shrinks to what was
/// picked. Asked again once picked, it answers the recorded pick.
pub fn picked(
    w: &mut WriteTx<'_>,
    device: &str,
    order_id: &str,
    by: Option<&str>,
) -> Refusable<(Vec<PickedLine>, bool)> {
    let state = match current(w, order_id)? {
        Ok(s) => s,
        Err(r) => return Ok(Err(r)),
    };
    let picked_lines = picked_lines(w, order_id)?;
    match state.as_str() {
        "open" => {}
        "picked" => return Ok(Ok((picked_lines, true))),
        other => {
            return Ok(Err(wrong_state(
                order_id,
                other,
                "there is nothing left to pick",
            )));
        }
    }
    w.append(NewEvent::new(
        now_millis(),
        device,
        EventBody::OrderPicked(OrderPicked {
            order_id: order_id.into(),
            lines: picked_lines.clone(),
            by: by.map(str::to_string),
        }),
    ))?;
    w.conn()
        .execute(
            "UPDATE pickup_lines SET reserved = picked WHERE order_id = ?1",
            [order_id],
        )
        .ctx("shrinking a reservation to the pick")?;
    w.conn()
        .execute(
            "UPDATE pickup_orders SET state = 'picked' WHERE order_id = ?1",
            [order_id],
        )
        .ctx("recording a pick")?;
    Ok(Ok((picked_lines, false)))
}

/// The lines as picked so far, with their tags, in SKU order.
fn picked_lines(w: &WriteTx<'_>, order_id: &str) -> Result<Vec<PickedLine>, StoreError> {
    let mut out = Vec::new();
    for LineView {
        sku, qty, picked, ..
    } in lines(w.conn(), order_id)?
    {
        let epcs: Vec<String> = {
            let mut st = w
                .conn()
                .prepare_cached(
                    "SELECT epc FROM pickup_epcs WHERE order_id = ?1 AND sku = ?2 ORDER BY epc",
                )
                .ctx("reading scanned tags")?;
            let rows = st
                .query_map(params![order_id, sku], |r| r.get(0))
                .ctx("reading scanned tags")?;
            rows.collect::<Result<_, _>>().ctx("reading scanned tags")?
        };
        out.push(PickedLine {
            short: qty - picked,
            sku,
            qty,
            picked,
            epcs,
        });
    }
    Ok(out)
}

/// Hand a picked order over when `code` is the customer's: journal
/// `order_handed_over`, which moves stock like a sale of the picked
/// lines, and release the reservation. A wrong code is counted on the
/// order and refused. Asked again once handed over (with the right
/// code), it answers the recorded handover.
pub fn handover(
    w: &mut WriteTx<'_>,
    device: &str,
    order_id: &str,
    code: &PickupCode,
    by: Option<&str>,
) -> Refusable<(Vec<OrderLine>, bool)> {
    let state = match current(w, order_id)? {
        Ok(s) => s,
        Err(r) => return Ok(Err(r)),
    };
    match state.as_str() {
        "picked" | "handed_over" => {}
        "open" => {
            return Ok(Err(wrong_state(
                order_id,
                "still being picked",
                "finish the pick first",
            )));
        }
        other => {
            return Ok(Err(wrong_state(
                order_id,
                other,
                "it cannot be handed over; the customer should contact the web shop",
            )));
        }
    }
    let (stored, locked_until): (String, Option<i64>) = w
        .conn()
        .prepare_cached("SELECT code_hash, locked_until_ms FROM pickup_orders WHERE order_id = ?1")
        .and_then(|mut st| st.query_row([order_id], |r| Ok((r.get(0)?, r.get(1)?))))
        .ctx("reading a pickup order")?;
    let now_ms = chrono::Utc::now().timestamp_millis();
    if let Some(until) = locked_until.filter(|u| *u > now_ms) {
        return Ok(Err(PickRefusal::Locked {
            order_id: order_id.into(),
            minutes: (until - now_ms + 59_999) / 60_000,
        }));
    }
    let key = crate::domain::privacy::member_key(w.conn())?;
    if !code::matches(&key, order_id, code, &stored) {
        // Every MAX_WRONG_CODES-th wrong code locks the handover a while.
        w.conn()
            .execute(
                "UPDATE pickup_orders SET wrong_codes = wrong_codes + 1,
                   locked_until_ms = CASE WHEN (wrong_codes + 1) % ?2 = 0 THEN ?3 ELSE locked_until_ms END
                 WHERE order_id = ?1",
                params![order_id, MAX_WRONG_CODES, now_ms + LOCK_MS],
            )
            .ctx("counting a wrong pickup code")?;
        return Ok(Err(PickRefusal::WrongCode {
            order_id: order_id.into(),
        }));
    }
    let handed = picked_so_far(w.conn(), order_id)?;
    if state == "handed_over" {
        return Ok(Ok((handed, true)));
    }
    if handed.is_empty() {
        return Ok(Err(PickRefusal::NothingPicked {
            order_id: order_id.into(),
        }));
    }
    let appended = w.append(NewEvent::new(
        now_millis(),
        device,
        EventBody::OrderHandedOver(OrderHandedOver {
            order_id: order_id.into(),
            lines: handed.clone(),
            by: by.map(str::to_string),
        }),
    ))?;
    close(w.conn(), order_id, "handed_over", appended.seq, false)?;
    Ok(Ok((handed, false)))
}

/// Staff put an ended order's picked items back on the shelf: resolve
/// its `pickup_return` alert.
pub fn returned(w: &mut WriteTx<'_>, device: &str, order_id: &str) -> Refusable<()> {
    let open: Option<bool> = w
        .conn()
        .prepare_cached("SELECT return_open FROM pickup_orders WHERE order_id = ?1")
        .and_then(|mut st| st.query_row([order_id], |r| r.get(0)).optional())
        .ctx("reading a pickup order")?;
    match open {
        None => return Ok(Err(PickRefusal::UnknownOrder(order_id.into()))),
        Some(false) => {
            let state = state_of(w.conn(), order_id)?.unwrap_or_default();
            return Ok(Err(wrong_state(
                order_id,
                &state,
                "it has no items waiting to go back to the shelf",
            )));
        }
        Some(true) => {}
    }
    w.conn()
        .execute(
            "UPDATE pickup_orders SET return_open = 0 WHERE order_id = ?1",
            [order_id],
        )
        .ctx("recording a return to the shelf")?;
    if let Some(event) = alerts::resolve_event(
        w.conn(),
        device,
        RETURN_ALERT,
        order_id,
        format!("pickup order {order_id}: items are back on the shelf"),
    )? {
        w.append(event)?;
    }
    Ok(Ok(()))
}
