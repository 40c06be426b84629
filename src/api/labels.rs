//! Shelf-label operations for staff: bind a label to an item
//! (`POST /v1/labels/{id}/bind`), take it off (`.../unbind`), and find it on
//! the shelf by flashing its LED (`.../find`). Binding and unbinding are
//! journaled (`label_bound`, `label_unbound`) through the writer, so a 200
//! means they are committed, and a new binding's price update is pending
//! in the same transaction (`domain::label_bindings`); finding is a device
//! command only, sent to the access point that lists the label.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use rusqlite::{Connection, OptionalExtension};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{ApiError, JsonBody};
use super::{DEVICE, Shared, input, write};
use crate::codecs::esl::normalize_mac;
use crate::db::{SqlContext, StoreError};
use crate::devices::label_routes::Placement;
use crate::domain::{catalog, label_bindings};
use crate::event::{EventBody, LabelBound, LabelUnbound, NewEvent};

/// The tag command that flashes a tag's LED (OpenEPaperLink `/tag_cmd`).
const FLASH: &str = "ledflash";

/// A label id as scanned: an OpenEPaperLink MAC in its canonical form
/// (16 upper-case hex digits), any other id as given.
fn label_id(raw: &str) -> Result<String, ApiError> {
    let raw = raw.trim();
    input::id("label id", raw)?;
    Ok(normalize_mac(raw).unwrap_or_else(|_| raw.to_string()))
}

/// `POST /v1/labels/{id}/bind` body: the item, by exactly one of them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindRequest {
    #[serde(default)]
    gtin: Option<String>,
    #[serde(default)]
    sku: Option<String>,
}

/// `POST /v1/labels/{id}/bind`: show the item's price on the label from
/// now on. Answers the label as it now stands (pending with the price).
pub async fn bind(
    State(state): State<Shared>,
    Path(raw): Path<String>,
    JsonBody(req): JsonBody<BindRequest>,
) -> Result<Json<Value>, ApiError> {
    let label = label_id(&raw)?;
    let (gtin, sku) = match (req.gtin, req.sku) {
        (Some(g), None) => {
            let g = g.trim().to_string();
            input::id("gtin", &g)?;
            (Some(g), None)
        }
        (None, Some(s)) => {
            let s = s.trim().to_string();
            input::id("sku", &s)?;
            (None, Some(s))
        }
        _ => {
            return Err(ApiError::bad_request(
                "send exactly one of gtin (the item's barcode) or sku",
            ));
        }
    };
    let view = write(&state, move |w| {
        let sku = match (&sku, &gtin) {
            (Some(s), _) if input::is_known_sku(w.conn(), s)? => s.clone(),
            (Some(s), _) => return Ok(Err(unknown_item(&format!("SKU {s:?}")))),
            (None, Some(g)) => match catalog::sku_for_gtin(w.conn(), g)? {
                Some(s) => s,
                None => return Ok(Err(unknown_item(&format!("GTIN {g:?}")))),
            },
            (None, None) => return Ok(Err(ApiError::internal("no item in the request"))),
        };
        let previous_sku = label_bindings::binding(w.conn(), &label)?.and_then(|b| b.sku);
        w.append(NewEvent::new(
            chrono::Utc::now(),
            DEVICE,
            EventBody::LabelBound(LabelBound {
                label_id: label.clone(),
                sku,
                gtin,
                previous_sku,
            }),
        ))?;
        Ok(Ok(label_view(w.conn(), &label)?))
    })
    .await??;
    // The new binding's update is due now: no need to wait for the
    // sender's next round.
    state.labels_changed.notify_one();
    Ok(Json(view))
}

fn unknown_item(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_item",
        format!(
            "{what} is not in this store's catalog; scan the item's barcode again, or check that central's price book lists it"
        ),
    )
}

/// `POST /v1/labels/{id}/unbind`: the label shows no item's price any more.
pub async fn unbind(
    State(state): State<Shared>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let label = label_id(&raw)?;
    let view = write(&state, move |w| {
        let Some(sku) = label_bindings::binding(w.conn(), &label)?.and_then(|b| b.sku) else {
            return Ok(Err(ApiError::new(
                StatusCode::CONFLICT,
                "not_bound",
                format!("label {label} is not bound to any item; nothing to unbind"),
            )));
        };
        w.append(NewEvent::new(
            chrono::Utc::now(),
            DEVICE,
            EventBody::LabelUnbound(LabelUnbound {
                label_id: label.clone(),
                sku,
            }),
        ))?;
        Ok(Ok(label_view(w.conn(), &label)?))
    })
    .await??;
    Ok(Json(view))
}

/// The label as the staff page shows it after a change: its item, its
/// state and the price it is to show.
fn label_view(conn: &Connection, label: &str) -> Result<Value, StoreError> {
    let row: Option<(String, String, String, Option<i64>)> = conn
        .prepare_cached("SELECT sku, state, bound_by, want_version FROM labels WHERE label_id = ?1")
        .and_then(|mut st| {
            st.query_row([label], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()
        })
        .ctx("reading a label")?;
    let Some((sku, state, bound_by, want_version)) = row else {
        return Ok(json!({"label_id": label, "sku": null, "state": "unknown"}));
    };
    if state == label_bindings::UNBOUND {
        return Ok(json!({"label_id": label, "sku": null, "state": state, "bound_by": bound_by}));
    }
    // The content the label is to show, as decided.
    let content: Option<String> = conn
        .prepare_cached("SELECT content FROM label_updates WHERE label_id = ?1 AND version = ?2")
        .and_then(|mut st| {
            st.query_row(rusqlite::params![label, want_version], |r| r.get(0))
                .optional()
        })
        .ctx("reading a label update")?;
    let update: Option<Value> = content.and_then(|c| serde_json::from_str(&c).ok());
    let field = |name: &str| update.as_ref().map_or(Value::Null, |u| u[name].clone());
    Ok(json!({
        "label_id": label, "sku": sku, "name": field("name"), "state": state,
        "bound_by": bound_by, "want_version": want_version,
        "price_minor": field("price_minor"), "currency": field("currency"),
        "price_text": field("price_text"),
    }))
}

/// `POST /v1/labels/{id}/find`: flash the label's LED so staff can spot
/// it on the shelf, through the access point that lists it. 409 when the
/// label cannot flash (not an OpenEPaperLink tag, or its record says it
/// has no LED), 404 when no access point lists it, 502 when every access
/// point listing it failed.
pub async fn find(
    State(state): State<Shared>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let label = label_id(&raw)?;
    if normalize_mac(&label).is_err() {
        return Err(cannot_flash(format!(
            "label {label} is not an OpenEPaperLink tag (16 hex digits); only those can flash their LED"
        )));
    }
    let aps = &state.access_points;
    aps.refresh().await;
    let targets = match aps.place(&label).await {
        Placement::Listed(targets) => targets,
        Placement::Unlisted | Placement::Unknown => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "label_not_listed",
                format!(
                    "no access point lists label {label}; is it in range of one, and registered?"
                ),
            ));
        }
    };
    let with_led: Vec<_> = targets.into_iter().filter(|t| t.has_led).collect();
    if with_led.is_empty() {
        return Err(cannot_flash(format!(
            "label {label} has no LED its firmware can flash; find it by its display instead"
        )));
    }
    match aps.tag_cmd(&with_led, &label, FLASH).await {
        Ok(device) => Ok(Json(json!({
            "label_id": label, "access_point": device, "flashing": true,
        }))),
        Err(e) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "access_point_failed",
            format!("no access point listing label {label} took the command: {e}; try again"),
        )),
    }
}

fn cannot_flash(message: String) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "cannot_flash", message)
}
