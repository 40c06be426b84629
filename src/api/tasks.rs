//! Staff tasks over the API (issue 18): the list for a zone, one task,
//! and the steps staff take (take, done, dismiss). Steps go through the
//! writer, which checks the task's state in the same transaction
//! (`domain::tasks::actions`), so a 2xx means the step is journaled.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{ApiError, JsonBody};
use super::{DEVICE, Shared, input, read, write};
use crate::domain::tasks::{self, actions, actions::Refusal};

/// Most tasks one list answer holds.
const LIST_MAX: i64 = 500;

/// `GET /v1/tasks?zone=A1&open=true`: open and taken tasks (every state
/// with `open=false`), most urgent and newest first; with `zone`, that
/// zone's tasks and those of no zone.
pub async fn list(
    State(state): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let open_only = match query.get("open").map(String::as_str) {
        None | Some("true") => true,
        Some("false") => false,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "open: {other:?} is not true or false"
            )));
        }
    };
    let zone = query.get("zone").filter(|z| !z.is_empty()).cloned();
    if let Some(z) = &zone {
        input::id("zone", z)?;
    }
    let list = read(&state, move |conn| {
        Ok(tasks::list(conn, zone.as_deref(), open_only, LIST_MAX)?)
    })
    .await?;
    Ok(Json(json!({ "tasks": list })))
}

/// `GET /v1/tasks/{id}`: one task, whatever its state.
pub async fn one(
    State(state): State<Shared>,
    Path(task_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = task_id.clone();
    match read(&state, move |conn| Ok(tasks::get(conn, &id)?)).await? {
        Some(t) => Ok(Json(json!({ "task": t }))),
        None => Err(refused(Refusal::Unknown(task_id))),
    }
}

/// `POST /v1/tasks/{id}/take` body.
#[derive(Debug, Deserialize)]
pub struct TakeRequest {
    by: String,
}

/// `POST /v1/tasks/{id}/done` body (may be empty).
#[derive(Debug, Default, Deserialize)]
pub struct DoneRequest {
    #[serde(default)]
    by: Option<String>,
}

/// `POST /v1/tasks/{id}/dismiss` body.
#[derive(Debug, Deserialize)]
pub struct DismissRequest {
    reason: String,
    #[serde(default)]
    by: Option<String>,
}

fn refused(r: Refusal) -> ApiError {
    let (status, code) = match &r {
        Refusal::Unknown(_) => (StatusCode::NOT_FOUND, "unknown_task"),
        Refusal::Closed { .. } => (StatusCode::CONFLICT, "task_closed"),
        Refusal::TakenBy { .. } => (StatusCode::CONFLICT, "task_taken"),
    };
    ApiError::new(status, code, r.to_string())
}

fn answer(result: Result<tasks::Task, Refusal>) -> Result<Json<Value>, ApiError> {
    result.map(|t| Json(json!({ "task": t }))).map_err(refused)
}

/// `POST /v1/tasks/{id}/take` `{"by":"anna"}`.
pub async fn take(
    State(state): State<Shared>,
    Path(task_id): Path<String>,
    JsonBody(req): JsonBody<TakeRequest>,
) -> Result<Json<Value>, ApiError> {
    input::id("task id", &task_id)?;
    input::id("by", &req.by)?;
    answer(write(&state, move |w| actions::take(w, DEVICE, &task_id, &req.by)).await?)
}

/// `POST /v1/tasks/{id}/done` `{"by":"anna"}` (`by` optional: whoever
/// took it). The store looks again `[tasks] verify_after_s` later.
pub async fn done(
    State(state): State<Shared>,
    Path(task_id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    // A bare POST (no body) is a done by whoever took the task.
    let req: DoneRequest = if body.iter().all(u8::is_ascii_whitespace) {
        DoneRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", format!("{e}")))?
    };
    input::id("task id", &task_id)?;
    input::opt_id("by", req.by.as_deref())?;
    let check_at = crate::event::now_millis()
        + chrono::Duration::seconds(i64::try_from(state.task_verify_after_s).unwrap_or(600));
    answer(
        write(&state, move |w| {
            actions::done(w, DEVICE, &task_id, req.by, check_at)
        })
        .await?,
    )
}

/// `POST /v1/tasks/{id}/dismiss` `{"reason":"delisted","by":"anna"}`.
pub async fn dismiss(
    State(state): State<Shared>,
    Path(task_id): Path<String>,
    JsonBody(req): JsonBody<DismissRequest>,
) -> Result<Json<Value>, ApiError> {
    input::id("task id", &task_id)?;
    input::opt_id("by", req.by.as_deref())?;
    input::text("reason", &req.reason)?;
    answer(
        write(&state, move |w| {
            actions::dismiss(w, DEVICE, &task_id, req.by, req.reason)
        })
        .await?,
    )
}
