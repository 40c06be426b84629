//! Pickup orders for the click-and-collect tests: orders in central's
//! shape, the GTINs and EPCs of their items, the customers' codes.

use serde_json::{Value, json};
use storegate::domain::sgtin::{encode_sgtin96, gtin_check_digit};
use storegate::event::format_ts;

/// The customers' codes: distinctive, so a leak is found by searching.
pub const CODE_1: &str = "QX-4711-PICK";
pub const CODE_2: &str = "QX-1234-PICK";
pub const CODE_3: &str = "QX-9876-PICK";

/// A GTIN-14 under company prefix 0614141 with item number `item`.
pub fn gtin(item: u32) -> String {
    let first13 = format!("00614141{item:05}");
    format!("{first13}{}", gtin_check_digit(&first13).unwrap())
}

/// The SGTIN-96 EPC of item `serial` of a GTIN.
pub fn epc(gtin: &str, serial: u64) -> String {
    encode_sgtin96(gtin, 5, 1, serial).unwrap()
}

/// An open order as central sends it, due in `expires_in`.
pub fn order(id: &str, code: &str, expires_in: chrono::Duration, lines: Value) -> Value {
    let now = chrono::Utc::now();
    json!({"order_id": id, "pickup_code": code, "status": "open",
           "promised_at": format_ts(&(now + chrono::Duration::hours(1))),
           "expires_at": format_ts(&(now + expires_in)), "lines": lines})
}
