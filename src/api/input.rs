//! Checks of what a request asks to journal, made before anything is
//! written so that the answer names the field: the journal's own bounds
//! ([`crate::event::bounds`]) on every quantity and identifier, and that a
//! SKU is one this store knows unless the request says it is a new item.

use rusqlite::Connection;

use super::error::ApiError;
use crate::db::{SqlContext, StoreError};
use crate::domain::catalog;
use crate::event::bounds;

/// A required identifier (SKU, zone, delivery id): present, at most
/// [`MAX_ID_LEN`](bounds::MAX_ID_LEN) bytes, no control characters.
pub fn id(field: &str, value: &str) -> Result<(), ApiError> {
    if value.trim().is_empty() {
        return Err(ApiError::bad_request(format!("{field} must not be empty")));
    }
    bounds::check_id(field, value).map_err(ApiError::bad_request)
}

/// An optional identifier (who did it).
pub fn opt_id(field: &str, value: Option<&str>) -> Result<(), ApiError> {
    value.map_or(Ok(()), |v| id(field, v))
}

/// Required free text (a reason): present, at most
/// [`MAX_TEXT_LEN`](bounds::MAX_TEXT_LEN) bytes.
pub fn text(field: &str, value: &str) -> Result<(), ApiError> {
    if value.trim().is_empty() {
        return Err(ApiError::bad_request(format!("{field} must not be empty")));
    }
    bounds::check_text(field, value).map_err(ApiError::bad_request)
}

/// A quantity within the journal's bounds
/// ([`MAX_QTY`](crate::event::bounds::MAX_QTY) either way).
pub fn qty(field: &str, value: i64) -> Result<(), ApiError> {
    bounds::check_qty(field, value).map_err(ApiError::bad_request)
}

/// Whether `sku` is a SKU this store knows: in the catalog (central's
/// price book) or with a stock figure.
pub fn is_known_sku(conn: &Connection, sku: &str) -> Result<bool, StoreError> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM catalog WHERE sku = ?1) OR EXISTS (SELECT 1 FROM stock WHERE sku = ?1)",
    )
    .and_then(|mut st| st.query_row([sku], |r| r.get(0)))
    .ctx("looking up a SKU")
}

/// A SKU a request wants to book stock for, with the field it came from
/// and whether the request vouches that it is a new item.
pub struct SkuField<'a> {
    pub field: String,
    pub sku: &'a str,
    pub new_item: bool,
}

/// `Ok(Err(..))` naming the first SKU that is neither known nor marked as
/// a new item: booking stock for a mistyped code would create a stock row
/// nobody can sell from. Runs inside the write, so that what it checks is
/// what the write sees.
pub fn known_skus<'a>(
    conn: &Connection,
    skus: impl IntoIterator<Item = SkuField<'a>>,
) -> Result<Result<(), ApiError>, StoreError> {
    for s in skus {
        if s.new_item || is_known_sku(conn, s.sku)? {
            continue;
        }
        let hint = match catalog::sku_for_gtin(conn, s.sku)? {
            Some(sku) => format!("it is a GTIN of {sku:?}: send that SKU"),
            None => "check the code, or send \"new_item\": true beside it to book an item this store has never had".into(),
        };
        return Ok(Err(ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_sku",
            format!(
                "{}: {:?} is not in the catalog and has no stock; {hint}",
                s.field, s.sku
            ),
        )));
    }
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::bounds::{MAX_ID_LEN, MAX_TEXT_LEN};
    use axum::http::StatusCode;

    #[test]
    fn identifiers_and_quantities_name_the_field() {
        let e = id("lines[2].sku", "A\0B").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.starts_with("lines[2].sku"), "{}", e.message);
        assert!(id("sku", &"x".repeat(MAX_ID_LEN + 1)).is_err());
        assert!(id("sku", " ").is_err());
        assert!(id("sku", "SKU-1").is_ok());
        let e = qty("delta", i64::MIN).unwrap_err();
        assert!(e.message.starts_with("delta "), "{}", e.message);
        assert!(text("reason", &"r".repeat(MAX_TEXT_LEN + 1)).is_err());
        assert!(opt_id("by", None).is_ok());
    }
}
