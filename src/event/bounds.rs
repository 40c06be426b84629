//! What a journaled event may hold: the bounds every quantity, amount and
//! identifier must stay within, wherever the event came from (a device, the
//! local API, a projection). The journal writer refuses an event outside
//! them as `StoreError::Rejected`, a
//! reason that retrying cannot fix, so ingest quarantines it and the API
//! answers 4xx. Codecs and handlers check the same bounds earlier, to name
//! the field in their message.
//!
//! The bounds are far beyond any real store and small enough that every
//! sum the projections make stays inside `i64`: a line total
//! (`MAX_QTY * MAX_PRICE_MINOR`) and a SKU's on-hand after billions of
//! moves.

use super::EventBody;

/// Most units one event may move or count: a receipt line, a delivery
/// line, an adjustment or a count.
pub const MAX_QTY: i64 = 1_000_000;

/// Highest unit price in minor units (10^12: ten billion of a currency
/// with cents, a trillion of one without).
pub const MAX_PRICE_MINOR: i64 = 1_000_000_000_000;

/// Longest identifier (SKU, GTIN, EPC, receipt, delivery, session, label,
/// zone, device) in bytes. GS1 keys are at most 70 characters.
pub const MAX_ID_LEN: usize = 128;

/// Longest free text (a reason, an alert message) in bytes.
pub const MAX_TEXT_LEN: usize = 4096;

/// Heaviest shelf reading, in grams (a tonne).
pub const MAX_GRAMS: i64 = 1_000_000;

/// Highest label battery voltage, in millivolts (a hundred volts: no
/// label runs on that; a reading beyond it is garbage, not a battery).
pub const MAX_BATTERY_MV: i64 = 100_000;

/// Largest signal strength magnitude, in dB (radios report -120 to 0).
pub const MAX_RSSI: i64 = 1_000;

/// Most lines one pickup order may have (a web basket, not a delivery).
pub const MAX_ORDER_LINES: usize = 500;

/// Why a value is out of bounds, naming the field.
pub type OutOfBounds = String;

/// `Ok` when `qty` is a quantity an event may carry.
pub fn check_qty(field: &str, qty: i64) -> Result<(), OutOfBounds> {
    if qty.unsigned_abs() > MAX_QTY as u64 {
        return Err(format!(
            "{field} {qty} is beyond the {MAX_QTY} units one event may carry"
        ));
    }
    Ok(())
}

/// `Ok` when `minor` is a unit price an event may carry.
pub fn check_price(field: &str, minor: i64) -> Result<(), OutOfBounds> {
    if !(0..=MAX_PRICE_MINOR).contains(&minor) {
        return Err(format!(
            "{field} {minor} is not a price (0 to {MAX_PRICE_MINOR} minor units)"
        ));
    }
    Ok(())
}

/// `Ok` when `id` is a usable identifier: not empty, at most
/// [`MAX_ID_LEN`] bytes, no control characters.
pub fn check_id(field: &str, id: &str) -> Result<(), OutOfBounds> {
    if id.is_empty() {
        return Err(format!("{field} is empty"));
    }
    check_text_len(field, id, MAX_ID_LEN)?;
    if id.chars().any(char::is_control) {
        return Err(format!("{field} contains control characters"));
    }
    Ok(())
}

/// `Ok` when free text (a reason, a message) is at most [`MAX_TEXT_LEN`]
/// bytes.
pub fn check_text(field: &str, text: &str) -> Result<(), OutOfBounds> {
    check_text_len(field, text, MAX_TEXT_LEN)
}

fn check_text_len(field: &str, text: &str, max: usize) -> Result<(), OutOfBounds> {
    if text.len() > max {
        return Err(format!(
            "{field} is {} bytes long; at most {max} are allowed",
            text.len()
        ));
    }
    Ok(())
}

/// `Ok` when a label's health values are ones an event may carry: a
/// battery between 0 and [`MAX_BATTERY_MV`], a signal within
/// ±[`MAX_RSSI`]. Callers that read them from a device treat a value
/// outside as unknown rather than refuse the whole report.
pub fn check_label_health(battery_mv: Option<i64>, rssi: Option<i64>) -> Result<(), OutOfBounds> {
    if let Some(mv) = battery_mv.filter(|mv| !(0..=MAX_BATTERY_MV).contains(mv)) {
        return Err(format!(
            "battery_mv {mv} is not a battery voltage (0 to {MAX_BATTERY_MV} mV)"
        ));
    }
    if let Some(rssi) = rssi.filter(|r| r.unsigned_abs() > MAX_RSSI as u64) {
        return Err(format!("rssi {rssi} is beyond ±{MAX_RSSI} dB"));
    }
    Ok(())
}

/// `Ok` when an order's lines are usable: at least one, at most
/// [`MAX_ORDER_LINES`], each SKU once (a SKU's stock moves once per event)
/// with a positive quantity.
pub fn check_order_lines<'a>(
    lines: impl ExactSizeIterator<Item = (&'a str, i64)>,
) -> Result<(), OutOfBounds> {
    if lines.len() == 0 {
        return Err("lines is empty: an order has at least one line".into());
    }
    if lines.len() > MAX_ORDER_LINES {
        return Err(format!(
            "{} lines; an order may have at most {MAX_ORDER_LINES}",
            lines.len()
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, (sku, qty)) in lines.enumerate() {
        check_id(&format!("lines[{i}].sku"), sku)?;
        if !seen.insert(sku) {
            return Err(format!("lines[{i}].sku {sku:?} appears more than once"));
        }
        if qty <= 0 {
            return Err(format!("lines[{i}].qty {qty} is not a positive quantity"));
        }
        check_qty(&format!("lines[{i}].qty"), qty)?;
    }
    Ok(())
}

fn check_picked_lines(lines: &[crate::event::PickedLine]) -> Result<(), OutOfBounds> {
    check_order_lines(lines.iter().map(|l| (l.sku.as_str(), l.qty)))?;
    for (i, l) in lines.iter().enumerate() {
        if !(0..=l.qty).contains(&l.picked) || l.short != l.qty - l.picked {
            return Err(format!(
                "lines[{i}]: picked {} and short {} do not add up to qty {}",
                l.picked, l.short, l.qty
            ));
        }
        if l.epcs.len() as i64 > l.picked {
            return Err(format!(
                "lines[{i}]: {} EPCs for {} picked",
                l.epcs.len(),
                l.picked
            ));
        }
        for epc in &l.epcs {
            check_id(&format!("lines[{i}].epcs"), epc)?;
        }
    }
    Ok(())
}

fn check_opt_id(field: &str, id: Option<&str>) -> Result<(), OutOfBounds> {
    id.map_or(Ok(()), |id| check_id(field, id))
}

impl EventBody {
    /// Whether the event stays within the bounds above. Identifiers a
    /// device could not know (an empty SKU resolved later) are checked
    /// where they are required.
    pub fn check_bounds(&self) -> Result<(), OutOfBounds> {
        match self {
            EventBody::Sale(l) | EventBody::Return(l) => {
                check_id("receipt_id", &l.receipt_id)?;
                check_id("sku", &l.sku)?;
                check_opt_id("gtin", l.gtin.as_deref())?;
                if l.qty <= 0 {
                    return Err(format!("qty {} is not a positive quantity", l.qty));
                }
                check_qty("qty", l.qty)?;
                check_price("unit_price_minor", l.unit_price_minor)?;
                check_id("currency", &l.currency)?;
                check_text_len("pos", &l.pos, MAX_ID_LEN)
            }
            EventBody::Receipt(r) => {
                check_id("delivery_id", &r.delivery_id)?;
                check_id("sku", &r.sku)?;
                check_qty("qty", r.qty)
            }
            EventBody::Adjustment(a) => {
                check_id("sku", &a.sku)?;
                check_qty("delta", a.delta)?;
                check_text("reason", &a.reason)
            }
            EventBody::Count(c) => {
                check_id("session_id", &c.session_id)?;
                check_id("sku", &c.sku)?;
                check_text_len("zone", &c.zone, MAX_ID_LEN)?;
                check_qty("counted", c.counted)?;
                check_qty("expected", c.expected)
            }
            EventBody::TagArrived(t) | EventBody::TagMoved(t) | EventBody::TagDeparted(t) => {
                check_id("epc", &t.epc)?;
                check_text_len("zone", &t.zone, MAX_ID_LEN)
            }
            EventBody::ShelfWeight(w) => {
                if w.grams.unsigned_abs() > MAX_GRAMS as u64 {
                    return Err(format!("grams {} is beyond {MAX_GRAMS}", w.grams));
                }
                w.units_est.map_or(Ok(()), |u| check_qty("units_est", u))
            }
            EventBody::LabelAck(a) => check_id("label_id", &a.label_id),
            EventBody::LabelHealth(h) => {
                check_id("label_id", &h.label_id)?;
                check_label_health(h.battery_mv, h.rssi)
            }
            EventBody::LabelBound(b) => {
                check_id("label_id", &b.label_id)?;
                check_id("sku", &b.sku)?;
                check_opt_id("gtin", b.gtin.as_deref())?;
                check_opt_id("previous_sku", b.previous_sku.as_deref())
            }
            EventBody::LabelUnbound(u) => {
                check_id("label_id", &u.label_id)?;
                check_id("sku", &u.sku)
            }
            EventBody::PriceConflict(c) => {
                check_price("pos_price_minor", c.pos_price_minor)?;
                check_price("shelf_price_minor", c.shelf_price_minor)
            }
            EventBody::Alert(a) => check_text("message", &a.message),
            EventBody::Reading(r) => {
                if !r.value.is_finite() {
                    return Err(format!("{} reading {} is not a number", r.name, r.value));
                }
                check_text_len("name", &r.name, MAX_ID_LEN)
            }
            EventBody::ConfigApplied(c) => {
                check_text_len("source", &c.source, MAX_ID_LEN)?;
                check_opt_id("sha256", c.sha256.as_deref())
            }
            EventBody::OrderReserved(o) => {
                check_id("order_id", &o.order_id)?;
                check_order_lines(o.lines.iter().map(|l| (l.sku.as_str(), l.qty)))
            }
            EventBody::OrderPicked(o) => {
                check_id("order_id", &o.order_id)?;
                check_opt_id("by", o.by.as_deref())?;
                check_picked_lines(&o.lines)
            }
            EventBody::OrderHandedOver(o) => {
                check_id("order_id", &o.order_id)?;
                check_opt_id("by", o.by.as_deref())?;
                check_order_lines(o.lines.iter().map(|l| (l.sku.as_str(), l.qty)))
            }
            EventBody::OrderExpired(o) | EventBody::OrderCancelled(o) => {
                check_id("order_id", &o.order_id)?;
                if o.return_to_shelf.is_empty() {
                    return Ok(());
                }
                check_order_lines(o.return_to_shelf.iter().map(|l| (l.sku.as_str(), l.qty)))
            }
            EventBody::Gpi(g) => {
                check_id("reader", &g.reader)?;
                match g.state.as_str() {
                    "high" | "low" => Ok(()),
                    other => Err(format!("GPI state {other:?} is not \"high\" or \"low\"")),
                }
            }
            EventBody::TaskOpened(t) => {
                check_id("task_id", &t.task_id)?;
                check_id("task", &t.task)?;
                check_id("alert_code", &t.alert_code)?;
                check_text_len("subject", &t.subject, 2 * MAX_ID_LEN + 16)?;
                check_text("message", &t.message)?;
                check_opt_id("zone", t.zone.as_deref())?;
                check_opt_id("sku", t.sku.as_deref())?;
                for (field, q) in [
                    ("suggested_qty", t.suggested_qty),
                    ("backroom_qty", t.backroom_qty),
                    ("shelf_units", t.shelf_units),
                ] {
                    q.map_or(Ok(()), |q| check_qty(field, q))?;
                }
                Ok(())
            }
            EventBody::TaskTaken(t) => {
                check_id("task_id", &t.task_id)?;
                check_id("by", &t.by)
            }
            EventBody::TaskDone(t) => {
                check_id("task_id", &t.task_id)?;
                check_opt_id("by", t.by.as_deref())?;
                check_opt_id("confirmed_by", t.confirmed_by.as_deref())
            }
            EventBody::TaskDismissed(t) => {
                check_id("task_id", &t.task_id)?;
                check_opt_id("by", t.by.as_deref())?;
                check_text("reason", &t.reason)
            }
            EventBody::TaskReopened(t) => {
                check_id("task_id", &t.task_id)?;
                check_text("reason", &t.reason)
            }
            EventBody::TaskVerified(t) => {
                check_id("task_id", &t.task_id)?;
                check_id("confirmed_by", &t.confirmed_by)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Adjustment, Reading};

    fn adjustment(delta: i64, sku: &str) -> EventBody {
        EventBody::Adjustment(Adjustment {
            sku: sku.into(),
            delta,
            reason: "damaged".into(),
            by: None,
        })
    }

    #[test]
    fn quantities_beyond_the_bounds_are_refused_with_the_field_named() {
        assert_eq!(adjustment(-MAX_QTY, "A").check_bounds(), Ok(()));
        let err = adjustment(i64::MIN, "A").check_bounds().unwrap_err();
        assert!(
            err.starts_with("delta -9223372036854775808 is beyond"),
            "{err}"
        );
        assert!(adjustment(MAX_QTY + 1, "A").check_bounds().is_err());
    }

    #[test]
    fn identifiers_must_be_short_printable_and_present() {
        assert!(adjustment(1, "").check_bounds().is_err());
        assert!(adjustment(1, "A\0B").check_bounds().is_err());
        assert!(
            adjustment(1, &"x".repeat(MAX_ID_LEN + 1))
                .check_bounds()
                .is_err()
        );
        assert_eq!(
            adjustment(1, &"x".repeat(MAX_ID_LEN)).check_bounds(),
            Ok(())
        );
    }

    #[test]
    fn label_health_values_must_be_plausible() {
        let h = |battery_mv, rssi| {
            EventBody::LabelHealth(crate::event::LabelHealth {
                label_id: "0000021A4B3C5D6E".into(),
                battery_mv,
                rssi,
                last_seen: chrono::Utc::now(),
                offline: false,
            })
        };
        assert_eq!(h(Some(2950), Some(-61)).check_bounds(), Ok(()));
        assert_eq!(h(None, None).check_bounds(), Ok(()));
        let err = h(Some(-1), None).check_bounds().unwrap_err();
        assert!(err.starts_with("battery_mv -1"), "{err}");
        let err = h(None, Some(i64::MIN)).check_bounds().unwrap_err();
        assert!(err.starts_with("rssi -9223372036854775808"), "{err}");
    }

    #[test]
    fn order_lines_must_be_distinct_positive_and_picked_must_add_up() {
        let ok = [("A", 1), ("B", 2)];
        assert_eq!(check_order_lines(ok.into_iter()), Ok(()));
        assert!(check_order_lines(std::iter::empty::<(&str, i64)>()).is_err());
        let err = check_order_lines([("A", 1), ("A", 2)].into_iter()).unwrap_err();
        assert!(
            err.contains("lines[1].sku \"A\" appears more than once"),
            "{err}"
        );
        assert!(check_order_lines([("A", 0)].into_iter()).is_err());
        let picked = |picked, short| {
            EventBody::OrderPicked(crate::event::OrderPicked {
                order_id: "WEB-1".into(),
                lines: vec![crate::event::PickedLine {
                    sku: "A".into(),
                    qty: 2,
                    picked,
                    epcs: vec![],
                    short,
                }],
                by: None,
            })
        };
        assert_eq!(picked(1, 1).check_bounds(), Ok(()));
        assert!(picked(3, -1).check_bounds().is_err());
        assert!(picked(1, 0).check_bounds().is_err());
    }

    #[test]
    fn a_reading_must_be_a_number() {
        let r = |value| {
            EventBody::Reading(Reading {
                name: "temperature".into(),
                value,
                unit: "C".into(),
            })
        };
        assert!(r(f64::NAN).check_bounds().is_err());
        assert!(r(f64::INFINITY).check_bounds().is_err());
        assert_eq!(r(4.5).check_bounds(), Ok(()));
    }
}
