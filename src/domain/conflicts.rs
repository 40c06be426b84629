//! Shelf/till price conflicts. Every sale line's unit price is compared
//! with the effective shelf price at the sale's time and with the price
//! each of the SKU's labels confirmed showing. A difference yields a
//! `price_conflict` event, an open alert, and an immediate re-push of the
//! SKU's labels.
//!
//! No false alarms: promos are part of the effective price; around a price
//! change (`pricing.conflict_grace_s` either side of it) both the old and
//! the new price are accepted, at the till and on labels, because tills
//! and labels never switch in the same second. Returns are not compared: a
//! refund is rightly made at the price the customer paid, which may be an
//! older one.

use rusqlite::Connection;

use crate::db::StoreError;
use crate::domain::{alerts, labels, prices};
use crate::event::{Event, EventBody, NewEvent, PriceConflict, Severity};

pub fn check(
    conn: &Connection,
    event: &Event,
    grace_s: i64,
    locale: &str,
) -> Result<Vec<NewEvent>, StoreError> {
    let EventBody::Sale(line) = &event.body else {
        return Ok(Vec::new());
    };
    let Some(eff) = prices::effective(conn, &line.sku, event.ts)? else {
        return Ok(Vec::new()); // nothing to compare with
    };
    let shelf = prices::shelf_price(conn, &line.sku)?;
    // The old and new price around the last change, if the sale is within
    // the grace window of it.
    let grace_prices: Vec<i64> = match &shelf {
        Some(s) if (event.ts - s.changed_at).num_seconds().abs() <= grace_s => s
            .previous_price_minor
            .into_iter()
            .chain([s.price_minor])
            .collect(),
        _ => Vec::new(),
    };
    let acceptable = |p: i64| p == eff.price_minor || grace_prices.contains(&p);
    let pos = line.unit_price_minor;
    let mut conflicts = Vec::new();
    if line.currency != eff.currency || !acceptable(pos) {
        conflicts.push(PriceConflict {
            sku: line.sku.clone(),
            pos_price_minor: pos,
            shelf_price_minor: eff.price_minor,
            currency: eff.currency.clone(),
            receipt_id: Some(line.receipt_id.clone()),
            label_id: None,
        });
    } else {
        // The till charged the right price: does every label show it?
        for label in labels::labels_of(conn, &line.sku)? {
            if let Some(shown) = label.shows_price_minor {
                if shown != pos && !grace_prices.contains(&shown) {
                    conflicts.push(PriceConflict {
                        sku: line.sku.clone(),
                        pos_price_minor: pos,
                        shelf_price_minor: shown,
                        currency: eff.currency.clone(),
                        receipt_id: Some(line.receipt_id.clone()),
                        label_id: Some(label.label_id.clone()),
                    });
                }
            }
        }
    }

    let mut derived = Vec::new();
    if conflicts.is_empty() {
        derived.extend(alerts::resolve_event(
            conn,
            &event.device,
            "price_conflict",
            &line.sku,
            format!("{}: till and shelf agree again", line.sku),
        )?);
        return Ok(derived);
    }
    prices::republish(conn, &line.sku, event.ts.max(chrono::Utc::now()), locale)?;
    let first = &conflicts[0];
    let mut context = serde_json::Map::new();
    context.insert("sku".into(), first.sku.clone().into());
    context.insert("pos_price_minor".into(), first.pos_price_minor.into());
    context.insert("shelf_price_minor".into(), first.shelf_price_minor.into());
    context.insert("currency".into(), first.currency.clone().into());
    context.insert("receipt_id".into(), line.receipt_id.clone().into());
    if let Some(l) = &first.label_id {
        context.insert("label_id".into(), l.clone().into());
    }
    let message = match &first.label_id {
        Some(l) => format!(
            "{}: till charged {} but label {l} shows {} ({}); label re-sent",
            first.sku, first.pos_price_minor, first.shelf_price_minor, first.currency
        ),
        None => format!(
            "{}: till charged {} but the shelf price is {} ({}); labels re-sent",
            first.sku, first.pos_price_minor, first.shelf_price_minor, first.currency
        ),
    };
    for c in conflicts {
        derived.push(NewEvent::new(
            event.ts,
            event.device.clone(),
            EventBody::PriceConflict(c),
        ));
    }
    derived.extend(alerts::open_event(
        conn,
        &event.device,
        "price_conflict",
        &line.sku,
        Severity::Warning,
        message,
        context,
    )?);
    Ok(derived)
}
