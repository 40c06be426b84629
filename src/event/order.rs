//! The click-and-collect events (spec/sync-api.md section 6): a pickup
//! order pulled from central is reserved, picked, handed over, or released
//! by expiry or cancellation. None of them carries the customer's pickup
//! code: it is checked in the store and never journaled or pushed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One ordered line: a SKU and how many units of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub sku: String,
    pub qty: i64,
}

/// `order_reserved`: an order pulled from central now holds stock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderReserved {
    pub order_id: String,
    pub lines: Vec<OrderLine>,
    #[serde(with = "super::ts_format")]
    pub promised_at: DateTime<Utc>,
    #[serde(with = "super::ts_format")]
    pub expires_at: DateTime<Utc>,
}

/// One line as staff picked it: `picked` of `qty`, `short` the rest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PickedLine {
    pub sku: String,
    pub qty: i64,
    pub picked: i64,
    /// The RFID EPCs scanned for this line, when items were scanned by tag.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub epcs: Vec<String>,
    pub short: i64,
}

/// `order_picked`: staff finished picking; the reservation shrinks to
/// what was picked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderPicked {
    pub order_id: String,
    pub lines: Vec<PickedLine>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// `order_handed_over`: the customer collected the order. Moves stock
/// like a sale of `lines` (the picked quantities), which is what central
/// applies too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderHandedOver {
    pub order_id: String,
    pub lines: Vec<OrderLine>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// `order_expired` and `order_cancelled`: the reservation is released.
/// `return_to_shelf` lists what had been picked already and must go back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderReleased {
    pub order_id: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub return_to_shelf: Vec<OrderLine>,
}
