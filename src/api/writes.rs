//! The endpoints by which staff book stock: counts (by scan, by hand, by
//! RFID), adjustments and goods receipts. Each checks its input (bounds,
//! known SKUs, see [`super::input`]) and then writes through the writer, so
//! that a 2xx means the events are committed and a refusal journals
//! nothing; the domain (`crate::domain::counts`) does the booking.

use std::collections::HashSet;

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::error::{ApiError, JsonBody};
use super::input::{self, SkuField};
use super::{DEVICE, Shared, read, write};
use crate::domain::counts::{self, CountLine, CountSession, ReceiptLine, RfidCount};

/// A new count session id: `C-<UTC time to the ms>-<random>`, unique
/// enough that two handhelds counting at the same instant do not collide
/// (the id is part of the count events' natural key).
fn new_session_id() -> String {
    format!(
        "C-{}-{:06x}",
        Utc::now().format("%Y%m%dT%H%M%S%3fZ"),
        rand::random::<u32>() & 0xff_ffff
    )
}

/// Every line's SKU is a usable identifier, and appears once per request:
/// a second line for the same SKU would be taken as a redelivery of the
/// first (same natural key).
fn unique_skus<'a>(skus: impl Iterator<Item = &'a str>) -> Result<(), ApiError> {
    let mut seen = HashSet::new();
    for (i, sku) in skus.enumerate() {
        input::id(&format!("lines[{i}].sku"), sku)?;
        if !seen.insert(sku) {
            return Err(ApiError::bad_request(format!(
                "lines[{i}].sku: {sku:?} appears more than once; send one line per SKU"
            )));
        }
    }
    Ok(())
}

fn default_method() -> String {
    "scan".into()
}

/// One line of a count as the API takes it: `new_item` vouches for a SKU
/// the store does not know yet.
#[derive(Debug, Deserialize)]
pub struct CountLineRequest {
    sku: String,
    counted: i64,
    #[serde(default)]
    new_item: bool,
}

/// `POST /v1/counts` body.
#[derive(Debug, Deserialize)]
pub struct CountRequest {
    zone: String,
    #[serde(default = "default_method")]
    method: String,
    lines: Vec<CountLineRequest>,
    #[serde(default)]
    apply: bool,
    #[serde(default)]
    by: Option<String>,
}

/// `POST /v1/counts`: journal a count session (and, with `apply`, the
/// adjustments that bring on hand to the counted figures).
pub async fn count(
    State(state): State<Shared>,
    JsonBody(req): JsonBody<CountRequest>,
) -> Result<Json<Value>, ApiError> {
    input::id("zone", &req.zone)?;
    input::opt_id("by", req.by.as_deref())?;
    if !matches!(req.method.as_str(), "scan" | "manual" | "rfid") {
        return Err(ApiError::bad_request(format!(
            "method: {:?} is not one of scan, manual, rfid",
            req.method
        )));
    }
    if req.lines.is_empty() {
        return Err(ApiError::bad_request("lines must not be empty"));
    }
    unique_skus(req.lines.iter().map(|l| l.sku.as_str()))?;
    for (i, line) in req.lines.iter().enumerate() {
        if line.counted < 0 {
            return Err(ApiError::bad_request(format!(
                "lines[{i}].counted must not be negative"
            )));
        }
        input::qty(&format!("lines[{i}].counted"), line.counted)?;
    }
    let session_id = new_session_id();
    let id = session_id.clone();
    let lines = write(&state, move |w| {
        if let Err(e) =
            input::known_skus(w.conn(), line_skus(&req.lines, |l| (&l.sku, l.new_item)))?
        {
            return Ok(Err(e));
        }
        let session = CountSession {
            device: DEVICE,
            session_id: &id,
            zone: &req.zone,
            method: &req.method,
            apply: req.apply,
            by: req.by.as_deref(),
        };
        let lines: Vec<CountLine> = req
            .lines
            .into_iter()
            .map(|l| CountLine {
                sku: l.sku,
                counted: l.counted,
            })
            .collect();
        counts::record_count(w, &session, &lines).map(Ok)
    })
    .await??;
    Ok(Json(json!({"session_id": session_id, "lines": lines})))
}

/// The SKUs of a request's lines, named `lines[i].sku`.
fn line_skus<'a, L>(
    lines: &'a [L],
    sku: impl Fn(&'a L) -> (&'a String, bool) + 'a,
) -> impl Iterator<Item = SkuField<'a>> + 'a {
    lines.iter().enumerate().map(move |(i, l)| {
        let (sku, new_item) = sku(l);
        SkuField {
            field: format!("lines[{i}].sku"),
            sku,
            new_item,
        }
    })
}

/// `POST /v1/counts/rfid` body.
#[derive(Debug, Deserialize)]
pub struct RfidCountRequest {
    zone: String,
    #[serde(with = "crate::event::ts_format")]
    from: DateTime<Utc>,
    #[serde(with = "crate::event::ts_format")]
    to: DateTime<Utc>,
    #[serde(default)]
    apply: bool,
    #[serde(default)]
    by: Option<String>,
}

/// The RFID count, and the session it was recorded under when applied.
#[derive(Debug, Serialize)]
pub struct RfidCountAnswer {
    #[serde(flatten)]
    count: RfidCount,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<String>,
}

/// `POST /v1/counts/rfid`: compare the tags seen in a zone and window with
/// on hand. With `apply`, the SKUs seen are recorded as an `rfid` count
/// and brought to the counted figures; SKUs not seen are only reported
/// (`expected_unseen`), since a zone rarely holds all of a SKU's stock.
pub async fn rfid_count(
    State(state): State<Shared>,
    JsonBody(req): JsonBody<RfidCountRequest>,
) -> Result<Json<RfidCountAnswer>, ApiError> {
    input::id("zone", &req.zone)?;
    input::opt_id("by", req.by.as_deref())?;
    if req.from > req.to {
        return Err(ApiError::bad_request("from must not be after to"));
    }
    let RfidCountRequest {
        zone,
        from,
        to,
        apply,
        by,
    } = req;
    if !apply {
        let count = read(&state, move |conn| {
            Ok(counts::rfid_count(conn, &zone, from, to)?)
        })
        .await?;
        return Ok(Json(RfidCountAnswer {
            count,
            session_id: None,
        }));
    }
    let session_id = new_session_id();
    let id = session_id.clone();
    let count = write(&state, move |w| {
        let mut count = counts::rfid_count(w.conn(), &zone, from, to)?;
        let lines: Vec<CountLine> = count
            .lines
            .iter()
            .map(|l| CountLine {
                sku: l.sku.clone(),
                counted: l.counted,
            })
            .collect();
        let session = CountSession {
            device: DEVICE,
            session_id: &id,
            zone: &zone,
            method: "rfid",
            apply: true,
            by: by.as_deref(),
        };
        count.lines = counts::record_count(w, &session, &lines)?;
        Ok(count)
    })
    .await?;
    Ok(Json(RfidCountAnswer {
        count,
        session_id: Some(session_id),
    }))
}

/// `POST /v1/adjustments` body.
#[derive(Debug, Deserialize)]
pub struct AdjustmentRequest {
    sku: String,
    delta: i64,
    reason: String,
    #[serde(default)]
    by: Option<String>,
    /// Vouches that `sku` is an item this store has never had.
    #[serde(default)]
    new_item: bool,
}

/// `POST /v1/adjustments`: journal one stock adjustment.
pub async fn adjustment(
    State(state): State<Shared>,
    JsonBody(req): JsonBody<AdjustmentRequest>,
) -> Result<Json<Value>, ApiError> {
    input::id("sku", &req.sku)?;
    input::text("reason", &req.reason)?;
    input::opt_id("by", req.by.as_deref())?;
    if req.delta == 0 {
        return Err(ApiError::bad_request("delta must not be 0"));
    }
    input::qty("delta", req.delta)?;
    let seq = write(&state, move |w| {
        let sku = SkuField {
            field: "sku".into(),
            sku: &req.sku,
            new_item: req.new_item,
        };
        if let Err(e) = input::known_skus(w.conn(), [sku])? {
            return Ok(Err(e));
        }
        counts::adjust(
            w,
            DEVICE,
            &req.sku,
            req.delta,
            &req.reason,
            req.by.as_deref(),
        )
        .map(Ok)
    })
    .await??;
    Ok(Json(json!({ "seq": seq })))
}

/// One line of a delivery as the API takes it.
#[derive(Debug, Deserialize)]
pub struct ReceiptLineRequest {
    sku: String,
    qty: i64,
    #[serde(default)]
    new_item: bool,
}

/// `POST /v1/receipts` body.
#[derive(Debug, Deserialize)]
pub struct ReceiptRequest {
    delivery_id: String,
    lines: Vec<ReceiptLineRequest>,
}

/// `POST /v1/receipts`: book a delivery. Lines of a delivery booked before
/// come back with `duplicate: true` and are not booked again.
pub async fn receipt(
    State(state): State<Shared>,
    JsonBody(req): JsonBody<ReceiptRequest>,
) -> Result<Json<Value>, ApiError> {
    input::id("delivery_id", &req.delivery_id)?;
    if req.lines.is_empty() {
        return Err(ApiError::bad_request("lines must not be empty"));
    }
    unique_skus(req.lines.iter().map(|l| l.sku.as_str()))?;
    for (i, line) in req.lines.iter().enumerate() {
        if line.qty <= 0 {
            return Err(ApiError::bad_request(format!(
                "lines[{i}].qty must be positive"
            )));
        }
        input::qty(&format!("lines[{i}].qty"), line.qty)?;
    }
    let booked = write(&state, move |w| {
        if let Err(e) =
            input::known_skus(w.conn(), line_skus(&req.lines, |l| (&l.sku, l.new_item)))?
        {
            return Ok(Err(e));
        }
        let lines: Vec<ReceiptLine> = req
            .lines
            .into_iter()
            .map(|l| ReceiptLine {
                sku: l.sku,
                qty: l.qty,
            })
            .collect();
        counts::receive(w, DEVICE, &req.delivery_id, &lines).map(Ok)
    })
    .await??;
    let lines: Vec<Value> = booked
        .into_iter()
        .map(|(sku, seq, duplicate)| json!({"sku": sku, "seq": seq, "duplicate": duplicate}))
        .collect();
    Ok(Json(json!({ "lines": lines })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[test]
    fn session_ids_are_distinct() {
        let a = new_session_id();
        let b = new_session_id();
        assert!(a.starts_with("C-"), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn repeated_skus_are_refused() {
        assert!(unique_skus(["a", "b"].into_iter()).is_ok());
        let e = unique_skus(["a", "a"].into_iter()).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("lines[1].sku"), "{}", e.message);
        assert!(unique_skus([" "].into_iter()).is_err());
    }
}
