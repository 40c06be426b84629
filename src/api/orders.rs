//! Click-and-collect for staff (role `staff`): the pickup orders to work
//! on, scanning items into an order, finishing the pick, the handover
//! against the customer's code, and putting an ended order's items back.
//! The domain ([`crate::domain::pickup`]) does the work inside the
//! writer, so a 2xx means it is committed; a refusal says what was wrong
//! and what to do.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{ApiError, JsonBody};
use super::input;
use super::{DEVICE, Shared, read, write};
use crate::domain::pickup::code::PickupCode;
use crate::domain::pickup::pick::{self, PickRefusal};
use crate::domain::pickup::{self, OrderView};

/// `GET /v1/orders`: the orders to pick or hand over, and ended ones
/// whose picked items are still to go back to the shelf.
pub async fn list(State(state): State<Shared>) -> Result<Json<Value>, ApiError> {
    let orders = read(&state, |conn| Ok(pickup::worklist(conn)?)).await?;
    Ok(Json(json!({ "orders": orders })))
}

/// `GET /v1/orders/{id}`: one order, in any state.
pub async fn one(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<OrderView>, ApiError> {
    input::id("order_id", &id)?;
    let wanted = id.clone();
    let view = read(&state, move |conn| Ok(pickup::view(conn, &wanted)?)).await?;
    view.map(Json)
        .ok_or_else(|| refused(PickRefusal::UnknownOrder(id)))
}

/// `POST /v1/orders/{id}/scan` body: a GTIN or an RFID EPC (hex or a
/// GS1 Digital Link URI).
#[derive(Debug, Deserialize)]
pub struct ScanRequest {
    code: String,
}

/// `POST /v1/orders/{id}/scan`: one item into the order being picked.
/// A wrong item or a surplus is refused (409) and nothing is counted.
pub async fn scan(
    State(state): State<Shared>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<ScanRequest>,
) -> Result<Json<Value>, ApiError> {
    input::id("order_id", &id)?;
    if req.code.trim().is_empty() {
        return Err(ApiError::bad_request(
            "code must not be empty: send the scanned GTIN or EPC",
        ));
    }
    let order_id = id.clone();
    let scanned = write(&state, move |w| pick::scan(w, &order_id, &req.code))
        .await?
        .map_err(refused)?;
    let view = current(&state, id).await?;
    Ok(Json(json!({"scan": scanned, "order": view})))
}

/// `POST /v1/orders/{id}/picked` body (optional): who picked.
#[derive(Debug, Default, Deserialize)]
pub struct ByRequest {
    #[serde(default)]
    by: Option<String>,
}

/// `POST /v1/orders/{id}/picked`: finish the pick; lines not fully
/// scanned are recorded as short. Sent again, it answers the same pick.
pub async fn picked(
    State(state): State<Shared>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    input::id("order_id", &id)?;
    // The body is optional: an empty one is a pick by nobody in particular.
    let by = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice::<ByRequest>(&body)
            .map_err(|e| {
                ApiError::bad_request(format!("the body is not {{\"by\": \"...\"}}: {e}"))
            })?
            .by
    };
    input::opt_id("by", by.as_deref())?;
    let order_id = id.clone();
    let (lines, already) = write(&state, move |w| {
        pick::picked(w, DEVICE, &order_id, by.as_deref())
    })
    .await?
    .map_err(refused)?;
    let short: i64 = lines.iter().map(|l| l.short).sum();
    let view = current(&state, id).await?;
    Ok(Json(
        json!({"lines": lines, "short": short, "already_picked": already, "order": view}),
    ))
}

/// `POST /v1/orders/{id}/handover` body.
#[derive(Debug, Deserialize)]
pub struct HandoverRequest {
    pickup_code: PickupCode,
    #[serde(default)]
    by: Option<String>,
}

/// `POST /v1/orders/{id}/handover`: hand a picked order over when the
/// customer's code is right (422 `wrong_pickup_code` otherwise); stock
/// moves like a sale of the picked lines.
pub async fn handover(
    State(state): State<Shared>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<HandoverRequest>,
) -> Result<Json<Value>, ApiError> {
    input::id("order_id", &id)?;
    input::opt_id("by", req.by.as_deref())?;
    if !req.pickup_code.is_plausible() {
        return Err(ApiError::bad_request(
            "pickup_code must be the customer's code (1 to 64 printable characters)",
        ));
    }
    let order_id = id.clone();
    let (lines, already) = write(&state, move |w| {
        pick::handover(w, DEVICE, &order_id, &req.pickup_code, req.by.as_deref())
    })
    .await?
    .map_err(refused)?;
    let view = current(&state, id).await?;
    Ok(Json(
        json!({"handed_over": lines, "already_handed_over": already, "order": view}),
    ))
}

/// `POST /v1/orders/{id}/returned`: the picked items of an expired or
/// cancelled order are back on the shelf (resolves its `pickup_return`
/// alert).
pub async fn returned(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    input::id("order_id", &id)?;
    let order_id = id.clone();
    write(&state, move |w| pick::returned(w, DEVICE, &order_id))
        .await?
        .map_err(refused)?;
    let view = current(&state, id).await?;
    Ok(Json(json!({ "order": view })))
}

/// The order as committed, for the answer.
async fn current(state: &Shared, id: String) -> Result<Option<OrderView>, ApiError> {
    read(state, move |conn| Ok(pickup::view(conn, &id)?)).await
}

/// A refusal as its fitting 4xx, with the message staff see.
fn refused(r: PickRefusal) -> ApiError {
    let (status, code) = match &r {
        PickRefusal::UnknownOrder(_) => (StatusCode::NOT_FOUND, "unknown_order"),
        PickRefusal::WrongState { .. } => (StatusCode::CONFLICT, "order_state"),
        PickRefusal::UnknownCode { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "unknown_code"),
        PickRefusal::WrongItem { .. } => (StatusCode::CONFLICT, "wrong_item"),
        PickRefusal::Surplus { .. } => (StatusCode::CONFLICT, "surplus"),
        PickRefusal::TakenByOther { .. } => (StatusCode::CONFLICT, "tag_in_other_order"),
        PickRefusal::WrongCode { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "wrong_pickup_code"),
        PickRefusal::Locked { .. } => (StatusCode::TOO_MANY_REQUESTS, "too_many_wrong_codes"),
        PickRefusal::NothingPicked { .. } => (StatusCode::CONFLICT, "nothing_picked"),
    };
    ApiError::new(status, code, r.to_string())
}
