//! The catalog: SKUs, their GTINs, names, unit weights and minimum stock.

use rusqlite::{Connection, OptionalExtension};

use crate::db::{SqlContext, StoreError};
use crate::domain::sgtin::normalize_gtin;

/// The SKU a GTIN (8, 12, 13 or 14 digits) belongs to, if the catalog knows it.
pub fn sku_for_gtin(conn: &Connection, gtin: &str) -> Result<Option<String>, StoreError> {
    let Some(gtin14) = normalize_gtin(gtin) else {
        return Ok(None);
    };
    conn.prepare_cached("SELECT sku FROM gtins WHERE gtin = ?1")
        .and_then(|mut st| st.query_row([gtin14], |r| r.get(0)).optional())
        .ctx("looking up a GTIN")
}

/// A GTIN-14 of a SKU, if the catalog knows one (the lowest, when it
/// knows several: the same answer every time).
pub fn gtin_for_sku(conn: &Connection, sku: &str) -> Result<Option<String>, StoreError> {
    conn.prepare_cached("SELECT MIN(gtin) FROM gtins WHERE sku = ?1")
        .and_then(|mut st| st.query_row([sku], |r| r.get(0)))
        .ctx("looking up a SKU's GTIN")
}

/// A SKU's unit weight in grams and minimum stock, if known.
pub fn weights_and_minimum(
    conn: &Connection,
    sku: &str,
) -> Result<(Option<i64>, Option<i64>), StoreError> {
    conn.prepare_cached(
        "SELECT unit_weight_g, min_stock FROM catalog WHERE sku = ?1 AND removed = 0",
    )
    .and_then(|mut st| {
        st.query_row([sku], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
    })
    .map(Option::unwrap_or_default)
    .ctx("reading a catalog item")
}
