//! The reading endpoints of spec/local-api.md (those that book stock are
//! in [`super::writes`]). Each handler checks its input, then reads on a
//! read-only connection; the domain functions (`crate::domain`) do the
//! actual work.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, Method, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use chrono::Utc;
use rusqlite::{Connection, OptionalExtension};
use serde_json::{Value, json};

use super::error::ApiError;
use super::input;
use super::{Shared, read};
use crate::db::{SqlContext, StoreError, journal};
use crate::domain::{alerts, catalog, labels, pickup, prices, stock};
use crate::event::{format_ts, ts_from_millis};
use crate::sync::Link;

/// `limit` of `/v1/events` and `/v1/epcis/events` when the caller gives
/// none, and its maximum.
const EVENTS_DEFAULT_LIMIT: usize = 1000;
const EVENTS_MAX_LIMIT: usize = 10_000;

/// The staff page, embedded in the binary.
const STAFF_PAGE: &str = include_str!("staff.html");

fn link_text(link: Link) -> &'static str {
    match link {
        Link::Online => "online",
        // Unknown (not tried yet, or no central configured) counts as
        // offline: nothing has been confirmed to reach central.
        Link::Offline | Link::Unknown => "offline",
    }
}

/// Unknown routes: 404 with the error body.
pub async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("no such endpoint: {method} {}", uri.path()))
}

/// `GET /`: the staff page.
pub async fn staff_page() -> Response {
    let mut response = Html(STAFF_PAGE).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // The page is self-contained: its inline script and style, and calls
    // to this origin only.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    response
}

/// `GET /healthz`: always 200 while the API runs; `status` says whether
/// everything is well, and `reasons` why not (a device down or not
/// ingesting, the disk quota, the database).
pub async fn healthz(State(state): State<Shared>) -> Json<Value> {
    let (up, down) = state.health.counts();
    let central = link_text(*state.link.borrow());
    let db = read(&state, |conn| {
        let head = journal::head(conn)?;
        let acked = crate::sync::state::read(conn)?.last_acked_seq;
        Ok(head - acked)
    })
    .await;
    let (db_text, backlog) = match db {
        Ok(backlog) => ("ok", json!(backlog)),
        Err(e) => {
            tracing::warn!(error = %e.message, "healthz: the database cannot be read");
            ("error", Value::Null)
        }
    };
    let mut reasons = state.health.degraded_reasons();
    if db_text != "ok" {
        reasons.insert(0, "the database cannot be read".to_string());
    }
    let status = if reasons.is_empty() { "ok" } else { "degraded" };
    Json(json!({
        "status": status,
        "reasons": reasons,
        "db": db_text,
        "devices": {"up": up, "down": down},
        "central": central,
        "backlog": backlog,
    }))
}

/// `GET /metrics`: OpenMetrics text.
pub async fn metrics(State(state): State<Shared>) -> Result<Response, ApiError> {
    let render = state.metrics.clone();
    let text = tokio::task::spawn_blocking(move || render())
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "rendering metrics failed");
            ApiError::internal("rendering the metrics failed; it has been logged")
        })?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
        )],
        text,
    )
        .into_response())
}

// ---------------------------------------------------------------- staff

/// `GET /v1/skus/{sku_or_gtin}`: what the staff page shows for a product.
pub async fn sku(
    State(state): State<Shared>,
    Path(code): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let code = code.trim().to_string();
    input::id("sku_or_gtin", &code)?;
    let view = read(&state, move |conn| sku_view(conn, &code)).await?;
    Ok(Json(view))
}

/// The SKU a scanned or typed code means: the code itself when it is a
/// known SKU (in the catalog or with stock), else the SKU of that GTIN.
fn resolve_sku(conn: &Connection, code: &str) -> Result<Option<String>, StoreError> {
    if input::is_known_sku(conn, code)? {
        return Ok(Some(code.to_string()));
    }
    catalog::sku_for_gtin(conn, code)
}

fn sku_view(conn: &Connection, code: &str) -> Result<Value, ApiError> {
    let Some(sku) = resolve_sku(conn, code)? else {
        return Err(ApiError::not_found(format!(
            "{code:?} is neither a SKU nor a GTIN this store knows"
        )));
    };
    let name: Option<String> = conn
        .prepare_cached("SELECT name FROM catalog WHERE sku = ?1")
        .and_then(|mut st| st.query_row([&sku], |r| r.get(0)).optional())
        .ctx("reading a catalog item")?;
    let gtins: Vec<String> = {
        let mut st = conn
            .prepare_cached("SELECT gtin FROM gtins WHERE sku = ?1 ORDER BY gtin")
            .ctx("listing GTINs")?;
        let rows = st.query_map([&sku], |r| r.get(0)).ctx("listing GTINs")?;
        rows.collect::<Result<_, _>>().ctx("listing GTINs")?
    };
    let on_hand = stock::on_hand(conn, &sku)?;
    let reserved = pickup::reserved(conn, &sku)?;
    let price = prices::effective(conn, &sku, Utc::now())?;
    let labels = labels::labels_of(conn, &sku)?;
    let last_count = last_count(conn, &sku)?;
    // The SKU's own alerts and those of its shelf slots (`SKU@shelf/slot`).
    let slot_prefix = format!("{sku}@");
    let alerts: Vec<_> = alerts::open_alerts(conn)?
        .into_iter()
        .filter(|a| a.subject == sku || a.subject.starts_with(&slot_prefix))
        .collect();
    Ok(json!({
        "sku": sku,
        "name": name,
        "gtins": gtins,
        "on_hand": on_hand,
        "reserved": reserved,
        "available": on_hand.saturating_sub(reserved),
        "price_minor": price.as_ref().map(|p| p.price_minor),
        "currency": price.as_ref().map(|p| p.currency.clone()),
        "promo_until": price.as_ref().and_then(|p| p.promo_until).map(|t| format_ts(&t)),
        "labels": labels,
        "last_count": last_count,
        "alerts": alerts,
    }))
}

fn last_count(conn: &Connection, sku: &str) -> Result<Option<Value>, StoreError> {
    conn.prepare_cached(
        "SELECT session_id, zone, counted, expected, method, at_ms FROM last_counts WHERE sku = ?1",
    )
    .and_then(|mut st| {
        st.query_row([sku], |r| {
            Ok(json!({
                "session_id": r.get::<_, String>(0)?,
                "zone": r.get::<_, String>(1)?,
                "counted": r.get::<_, i64>(2)?,
                "expected": r.get::<_, i64>(3)?,
                "method": r.get::<_, String>(4)?,
                "at": format_ts(&ts_from_millis(r.get(5)?)),
            }))
        })
        .optional()
    })
    .ctx("reading the last count")
}

/// `GET /v1/alerts?open=true`: the open alerts. Only open alerts are kept
/// as such; `open=false` is refused (400), resolved alerts are in the
/// journal as `alert` events.
pub async fn alerts(
    State(state): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    match query.get("open").map(String::as_str) {
        None | Some("true") => {}
        Some("false") => {
            return Err(ApiError::bad_request(
                "open=false is not supported: only open alerts are listed; resolved ones are alert events in the journal",
            ));
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "open: {other:?} is not true or false"
            )));
        }
    }
    let open = read(&state, |conn| Ok(alerts::open_alerts(conn)?)).await?;
    Ok(Json(json!({ "alerts": open })))
}

// -------------------------------------------------------------- central

/// `GET /v1/state`: a snapshot for central.
pub async fn state(State(state): State<Shared>) -> Result<Json<Value>, ApiError> {
    let central = link_text(*state.link.borrow());
    let devices = state.health.snapshot();
    let store_id = state.store_id.clone();
    let snapshot = read(&state, move |conn| {
        let head = journal::head(conn)?;
        let oldest = journal::oldest(conn)?;
        let sync = crate::sync::state::read(conn)?;
        let backlog = head - sync.last_acked_seq;
        let mut sync = serde_json::to_value(&sync)
            .map_err(|e| ApiError::internal(format!("serialising the sync state: {e}")))?;
        if let Value::Object(m) = &mut sync {
            m.insert("backlog".into(), backlog.into());
        }
        let now = Utc::now();
        let mut skus = Vec::new();
        let reserved = pickup::reserved_all(conn)?;
        for (sku, on_hand) in stock_and_catalog(conn)? {
            let price = prices::effective(conn, &sku, now)?;
            let held = reserved.get(&sku).copied().unwrap_or(0);
            skus.push(json!({
                "sku": sku,
                "on_hand": on_hand,
                "reserved": held,
                "available": on_hand.saturating_sub(held),
                "price_minor": price.as_ref().map(|p| p.price_minor),
                "currency": price.as_ref().map(|p| p.currency.clone()),
            }));
        }
        let (pending, ok, failed) = labels::summary(conn)?;
        let open = alerts::open_alerts(conn)?;
        Ok(json!({
            "store_id": store_id,
            "agent_version": crate::VERSION,
            "central": central,
            "sync": sync,
            "devices": devices,
            "skus": skus,
            "labels": {"pending": pending, "ok": ok, "failed": failed},
            "alerts": open,
            "head_seq": head,
            "oldest_seq": oldest,
        }))
    })
    .await?;
    Ok(Json(snapshot))
}

/// Every SKU with stock or in the (current) catalog, with its on hand.
fn stock_and_catalog(conn: &Connection) -> Result<Vec<(String, i64)>, StoreError> {
    let mut st = conn
        .prepare(
            "SELECT sku, COALESCE((SELECT on_hand FROM stock s WHERE s.sku = k.sku), 0) FROM (
               SELECT sku FROM stock UNION SELECT sku FROM catalog WHERE removed = 0
             ) k ORDER BY sku",
        )
        .ctx("listing SKUs")?;
    let rows = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .ctx("listing SKUs")?;
    rows.collect::<Result<_, _>>().ctx("listing SKUs")
}

/// `GET /v1/events?after=&limit=`: journal events after a seq.
pub async fn events(
    State(state): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let after = seq_param(&query, "after")?;
    let limit = limit_param(&query)?;
    let answer = read(&state, move |conn| {
        let events = journal::events_after(conn, after, limit)?;
        let oldest = journal::oldest(conn)?;
        let next_after = events.last().map_or(after, |e| e.seq);
        Ok(json!({"events": events, "next_after": next_after, "oldest_seq": oldest}))
    })
    .await?;
    Ok(Json(answer))
}

/// `GET /v1/epcis/events?since=&limit=`: the journal events after `since`
/// as one GS1 EPCIS 2.0 EPCISDocument; `storegate:nextAfter` in it is the
/// `since` of the next page. 404 when the store has no `[epcis]` table.
pub async fn epcis_events(
    State(state): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let since = seq_param(&query, "since")?;
    let limit = limit_param(&query)?;
    let Some(setup) = state.epcis.clone() else {
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "epcis_not_configured",
            crate::epcis::NotConfigured.to_string(),
        ));
    };
    let page = read(&state, move |conn| {
        Ok(crate::epcis::document::page(
            conn,
            &setup,
            since,
            limit,
            Utc::now(),
        )?)
    })
    .await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/ld+json"),
        )],
        Json(page.document),
    )
        .into_response())
}

/// A seq parameter (`after`, `since`): 0 when absent.
fn seq_param(query: &HashMap<String, String>, name: &str) -> Result<i64, ApiError> {
    match query.get(name) {
        None => Ok(0),
        Some(v) => v.parse().ok().filter(|n| *n >= 0).ok_or_else(|| {
            ApiError::bad_request(format!("{name}: {v:?} is not a seq (0 or more)"))
        }),
    }
}

/// `limit` of the journal reads: [`EVENTS_DEFAULT_LIMIT`] when absent.
fn limit_param(query: &HashMap<String, String>) -> Result<usize, ApiError> {
    match query.get("limit") {
        None => Ok(EVENTS_DEFAULT_LIMIT),
        Some(v) => v
            .parse()
            .ok()
            .filter(|n| (1..=EVENTS_MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "limit: {v:?} is not a number from 1 to {EVENTS_MAX_LIMIT}"
                ))
            }),
    }
}
