//! The demo store's catalog: a handful of everyday SKUs with GTINs, names,
//! prices, shelf labels, unit weights and minimum stock. `storegate demo`
//! and the standalone simulators share it, so that what a simulated till
//! prints or a simulated reader reads is something the simulated central
//! platform sells.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::central::Central;
use crate::domain::sgtin::encode_sgtin96;
use crate::event::format_ts;

/// One SKU of the demo catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item {
    pub sku: &'static str,
    pub name: &'static str,
    /// GTIN-13, valid check digit.
    pub gtin: &'static str,
    /// Regular price in minor units of [`CURRENCY`].
    pub price_minor: i64,
    pub unit_weight_g: i64,
    pub min_stock: i64,
    /// What central says the store holds at the start.
    pub initial_stock: i64,
    /// The shelf labels (ESL ids) showing this SKU.
    pub labels: &'static [&'static str],
}

pub const CURRENCY: &str = "EUR";

/// The catalog. SKU-1001 is the GTIN of the spec's samples.
pub const ITEMS: [Item; 6] = [
    Item {
        sku: "SKU-1001",
        name: "Oat milk 1L",
        gtin: "4006381333931",
        price_minor: 249,
        unit_weight_g: 1040,
        min_stock: 6,
        initial_stock: 40,
        labels: &["0000021A4B3C", "0000021A4B3D"],
    },
    Item {
        sku: "SKU-1002",
        name: "Rye bread 500g",
        gtin: "4012345000023",
        price_minor: 310,
        unit_weight_g: 500,
        min_stock: 4,
        initial_stock: 20,
        labels: &["0000021A4B40"],
    },
    Item {
        sku: "SKU-1003",
        name: "Espresso beans 250g",
        gtin: "4012345000030",
        price_minor: 549,
        unit_weight_g: 260,
        min_stock: 8,
        initial_stock: 12,
        labels: &["0000021A4B41"],
    },
    Item {
        sku: "SKU-1004",
        name: "Dark chocolate 100g",
        gtin: "4012345000047",
        price_minor: 189,
        unit_weight_g: 105,
        min_stock: 10,
        initial_stock: 60,
        labels: &["0000021A4B42"],
    },
    Item {
        sku: "SKU-1005",
        name: "Sparkling water 1.5L",
        gtin: "4012345000054",
        price_minor: 79,
        unit_weight_g: 1560,
        min_stock: 12,
        initial_stock: 48,
        labels: &["0000021A4B43"],
    },
    Item {
        sku: "SKU-1006",
        name: "Greek yoghurt 500g",
        gtin: "4012345000061",
        price_minor: 229,
        unit_weight_g: 520,
        min_stock: 6,
        initial_stock: 24,
        labels: &["0000021A4B44"],
    },
];

/// The catalog item with this SKU.
pub fn item(sku: &str) -> Option<&'static Item> {
    ITEMS.iter().find(|i| i.sku == sku)
}

/// The catalog item whose GTIN is `gtin` (GTIN-13 or GTIN-14).
pub fn item_by_gtin(gtin: &str) -> Option<&'static Item> {
    let gtin = gtin.trim_start_matches('0');
    ITEMS
        .iter()
        .find(|i| i.gtin.trim_start_matches('0') == gtin)
}

/// The price-book entry central publishes for `item` (spec/sync-api.md
/// section 3), at `price_minor`, with an optional promo `(price, until)`.
pub fn price_entry(
    item: &Item,
    price_minor: i64,
    promo: Option<(i64, DateTime<Utc>)>,
    effective_from: DateTime<Utc>,
) -> Value {
    json!({
        "sku": item.sku,
        "gtins": [item.gtin],
        "name": item.name,
        "price_minor": price_minor,
        "currency": CURRENCY,
        "effective_from": format_ts(&effective_from),
        "promo": promo.map(|(p, until)| json!({"price_minor": p, "until": format_ts(&until)})),
        "unit_weight_g": item.unit_weight_g,
        "labels": item.labels,
        "min_stock": item.min_stock,
        // What a refill task fills up to: the demo reorders 4x the minimum.
        "max_stock": 4 * item.min_stock,
    })
}

/// Publish the whole catalog at regular prices, and its initial stock.
pub fn seed(central: &Central, now: DateTime<Utc>) {
    publish_stock(central);
    publish_prices(central, now);
}

/// Publish the initial stock of every item.
pub fn publish_stock(central: &Central) {
    for item in &ITEMS {
        central.set_initial_stock(item.sku, item.initial_stock);
    }
}

/// Publish every item at its regular price.
pub fn publish_prices(central: &Central, now: DateTime<Utc>) {
    for item in &ITEMS {
        central.set_price(price_entry(item, item.price_minor, None, now));
    }
}

/// The SGTIN-96 EPC on unit `serial` of `item` (filter 1: point-of-sale
/// item; partition 5: the 7-digit company prefix 4012345).
pub fn epc(item: &Item, serial: u64) -> String {
    // The catalog's GTINs are constants with valid check digits (tested
    // below) and serials stay far below 2^38.
    encode_sgtin96(item.gtin, 5, 1, serial).unwrap_or_default()
}

/// `249` -> `2.49`: minor units as a till prints them.
pub fn decimal(minor: i64) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let m = minor.unsigned_abs();
    format!("{sign}{}.{:02}", m / 100, m % 100)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::sgtin::{decode_sgtin96, is_valid_gtin};

    #[test]
    fn gtins_are_valid_and_epcs_decode_back() {
        for item in &ITEMS {
            assert!(is_valid_gtin(item.gtin), "{}", item.gtin);
            let epc = epc(item, 42);
            assert_eq!(epc.len(), 24);
            let back = decode_sgtin96(&epc).unwrap();
            assert_eq!(item_by_gtin(&back.gtin).map(|i| i.sku), Some(item.sku));
            assert_eq!(back.serial, 42);
        }
    }

    #[test]
    fn decimals_are_written_like_a_till() {
        assert_eq!(decimal(249), "2.49");
        assert_eq!(decimal(5), "0.05");
        assert_eq!(decimal(-310), "-3.10");
    }
}
