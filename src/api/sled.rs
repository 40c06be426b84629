//! `POST /v1/counts/epcs`: handheld sled counts. A sled's EPCs arrive in
//! batches under a session id the handheld chooses; each line is
//! classified here ([`crate::domain::epc`]) and the session is kept and
//! closed by the writer ([`crate::domain::sled`]), so a 2xx means the
//! batch (and, on close, the count) is committed.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{ApiError, JsonBody};
use super::input;
use super::{DEVICE, Shared, write};
use crate::domain::epc::{self, SledTag};
use crate::domain::sled::{self, Closing, SledBatch, SledRefusal};
use crate::event::format_ts;

/// Most EPCs one request may carry; a sled export is sent in several
/// requests of one session. 10,000 SGTIN-96 fit well within the 1 MiB body.
pub const MAX_EPCS_PER_REQUEST: usize = 10_000;

/// How many examples of non-product and malformed lines an answer gives.
const EXAMPLES: usize = 5;

/// `POST /v1/counts/epcs` body.
#[derive(Debug, Deserialize)]
pub struct SledRequest {
    session_id: String,
    zone: String,
    #[serde(default)]
    epcs: Vec<String>,
    #[serde(default)]
    close: bool,
    #[serde(default)]
    apply: bool,
    #[serde(default)]
    by: Option<String>,
}

/// Add a batch of EPCs to a sled session; with `close`, count the session
/// per SKU against on hand and journal it (with `apply`, also bring on
/// hand to the counted figures).
pub async fn sled_count(
    State(state): State<Shared>,
    JsonBody(req): JsonBody<SledRequest>,
) -> Result<Json<Value>, ApiError> {
    input::id("session_id", &req.session_id)?;
    input::id("zone", &req.zone)?;
    input::opt_id("by", req.by.as_deref())?;
    if req.epcs.len() > MAX_EPCS_PER_REQUEST {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "epcs holds {} entries, at most {MAX_EPCS_PER_REQUEST} per request; send the rest in further requests with the same session_id",
                req.epcs.len()
            ),
        ));
    }
    if req.epcs.is_empty() && !req.close {
        return Err(ApiError::bad_request(
            "epcs is empty and close is not set: send EPCs, or \"close\": true to finish the session",
        ));
    }
    if req.apply && !req.close {
        return Err(ApiError::bad_request(
            "apply takes effect when the session is closed: send it with \"close\": true",
        ));
    }

    let tags: Vec<(String, SledTag)> = req
        .epcs
        .iter()
        .map(|line| {
            let tag = epc::classify(line);
            (tag.key(line), tag)
        })
        .collect();
    let report = request_report(&req.epcs, &tags);
    let received = tags.len();
    let SledRequest {
        session_id,
        zone,
        close,
        apply,
        by,
        ..
    } = req;
    let (id, z) = (session_id.clone(), zone.clone());
    let outcome = write(&state, move |w| {
        let batch = SledBatch {
            device: DEVICE,
            session_id: &id,
            zone: &z,
            tags: &tags,
            close: close.then_some(Closing {
                apply,
                by: by.as_deref(),
            }),
        };
        sled::record_batch(w, chrono::Utc::now().timestamp_millis(), &batch)
    })
    .await?
    .map_err(refused)?;

    let mut answer = json!({
        "session_id": session_id,
        "zone": zone,
        "state": if outcome.result.is_some() { "closed" } else { "open" },
        "received": received,
        "new": outcome.new,
        "totals": outcome.totals,
        "request": report,
    });
    if let Some(r) = outcome.result {
        let closed_at = chrono::DateTime::from_timestamp_millis(r.closed_ms)
            .map(|t| format_ts(&t))
            .unwrap_or_default();
        let extra = json!({
            "already_closed": outcome.already_closed,
            "closed_at": closed_at,
            "applied": r.applied,
            "lines": r.lines,
            "expected_unseen": r.expected_unseen,
            "unknown_gtins": r.unknown_gtins,
            "non_product": r.non_product,
            "malformed": r.malformed,
        });
        if let (Some(a), Value::Object(e)) = (answer.as_object_mut(), extra) {
            a.extend(e);
        }
    }
    Ok(Json(answer))
}

/// What this request held that will not be counted: non-product EPCs and
/// malformed lines, each with a count and the first few with their index
/// in `epcs` (0-based).
fn request_report(lines: &[String], tags: &[(String, SledTag)]) -> Value {
    let (mut non_product, mut malformed) = (Vec::new(), Vec::new());
    let (mut non_product_count, mut malformed_count) = (0, 0);
    for (index, (line, (_, tag))) in lines.iter().zip(tags).enumerate() {
        match tag {
            SledTag::Product { .. } => {}
            SledTag::NonProduct { epc, kind } => {
                non_product_count += 1;
                if non_product.len() < EXAMPLES {
                    non_product.push(json!({"index": index, "epc": epc, "kind": kind}));
                }
            }
            SledTag::Malformed { reason } => {
                malformed_count += 1;
                if malformed.len() < EXAMPLES {
                    malformed.push(
                        json!({"index": index, "text": epc::shorten(line), "reason": reason}),
                    );
                }
            }
        }
    }
    json!({
        "non_product": {"count": non_product_count, "examples": non_product},
        "malformed": {"count": malformed_count, "examples": malformed},
    })
}

/// A refused batch as a 409 saying what to do instead.
fn refused(r: SledRefusal) -> ApiError {
    let code = match r {
        SledRefusal::Closed { .. } => "session_closed",
        SledRefusal::Expired { .. } => "session_expired",
        SledRefusal::OtherZone { .. } => "zone_mismatch",
        SledRefusal::Full { .. } => "session_full",
    };
    ApiError::new(StatusCode::CONFLICT, code, r.to_string())
}
