//! The reference central's click-and-collect side (spec/sync-api.md 6):
//! pickup orders per store, each with the version it last changed in.
//!
//! - `GET /v1/stores/{s}/orders?since=V`: the orders and cancellations
//!   newer than `V`, and the current version.
//! - `POST /admin/stores/{s}/orders` with an order as body (the shape of
//!   the pull, `status` defaulting to `open`): adds or replaces it,
//!   answers `{"version": N}`.
//! - `POST /admin/stores/{s}/orders/{id}/cancel`: cancels it.
//!
//! Central's stock view applies a store's `order_handed_over` as a sale
//! of its lines ([`handover_moves`]), so that its stock can be compared
//! with the store's.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use serde_json::{Value, json};

use super::central::{Central, Since, authorize, error, newer};

/// One store's pickup orders at central.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StoreOrders {
    pub version: i64,
    /// By order id: the version it last changed in, and the order.
    pub orders: BTreeMap<String, (i64, Value)>,
    /// Cancelled order ids with the version of their cancellation.
    pub cancelled: Vec<(i64, String)>,
}

impl Central {
    /// Publish (or replace) a pickup order for `store`; returns the new
    /// orders version. `Err` when the order has no `order_id`.
    pub fn add_order(&self, store: &str, mut order: Value) -> Result<i64, String> {
        let id = order
            .get("order_id")
            .and_then(Value::as_str)
            .ok_or("the order has no \"order_id\"")?
            .to_string();
        if let Some(o) = order.as_object_mut() {
            o.entry("status").or_insert_with(|| json!("open"));
        }
        let mut s = self.lock();
        let orders = s.orders.entry(store.to_string()).or_default();
        orders.version += 1;
        let v = orders.version;
        orders.orders.insert(id, (v, order));
        Ok(v)
    }

    /// Cancel a pickup order of `store`; returns the new orders version.
    pub fn cancel_order(&self, store: &str, order_id: &str) -> i64 {
        let mut s = self.lock();
        let orders = s.orders.entry(store.to_string()).or_default();
        orders.version += 1;
        let v = orders.version;
        orders.orders.remove(order_id);
        orders.cancelled.push((v, order_id.to_string()));
        v
    }
}

/// The stock moves of an `order_handed_over` event: a sale of each line.
pub fn handover_moves(e: &Value) -> Vec<(String, i64)> {
    if e.get("kind").and_then(Value::as_str) != Some("order_handed_over") {
        return Vec::new();
    }
    let lines = e
        .get("data")
        .and_then(|d| d.get("lines"))
        .and_then(Value::as_array);
    lines
        .into_iter()
        .flatten()
        .filter_map(|l| {
            let sku = l.get("sku")?.as_str()?.to_string();
            Some((sku, -l.get("qty")?.as_i64()?))
        })
        .collect()
}

/// `GET /v1/stores/{s}/orders?since=`.
pub(super) async fn get_orders(
    State(c): State<Central>,
    Path(store): Path<String>,
    Query(q): Query<Since>,
    headers: HeaderMap,
) -> Response {
    let s = c.lock();
    if let Err((status, msg)) = authorize(&s.behaviour, &headers) {
        return error(status, msg);
    }
    let Some(orders) = s.orders.get(&store) else {
        return Json(json!({"version": 0, "orders": [], "cancelled": []})).into_response();
    };
    let changed = newer(orders.orders.values(), q.since);
    let cancelled = newer(&orders.cancelled, q.since);
    Json(json!({"version": orders.version, "orders": changed, "cancelled": cancelled}))
        .into_response()
}

/// `POST /admin/stores/{s}/orders`.
pub(super) async fn post_order(
    State(c): State<Central>,
    Path(store): Path<String>,
    Json(order): Json<Value>,
) -> Response {
    match c.add_order(&store, order) {
        Ok(v) => Json(json!({"version": v})).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, &e),
    }
}

/// `POST /admin/stores/{s}/orders/{id}/cancel`.
pub(super) async fn cancel(
    State(c): State<Central>,
    Path((store, id)): Path<(String, String)>,
) -> Response {
    Json(json!({"version": c.cancel_order(&store, &id)})).into_response()
}
