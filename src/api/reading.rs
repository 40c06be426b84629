//! `POST /v1/devices/{id}/reading`: staff start or stop a controlled
//! reader, or start it on another preset, and get the reader's answer.
//! The reader's own task does the work (`devices::control`); this only
//! checks the request and turns the outcome into an answer.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::Shared;
use super::error::{ApiError, JsonBody};
use super::input;
use crate::devices::control::{Action, ControlError};

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadingRequest {
    /// `start` or `stop`.
    action: String,
    /// For `start`: the preset, instead of the configured one.
    #[serde(default)]
    preset: Option<String>,
}

/// Start or stop the reader `id`; 200 with the reader's answer.
pub async fn reading(
    State(state): State<Shared>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<ReadingRequest>,
) -> Result<Json<Value>, ApiError> {
    input::id("device", &id)?;
    let action = match (req.action.as_str(), req.preset) {
        ("start", preset) => {
            if let Some(p) = &preset {
                input::id("preset", p)?;
                if p.contains(['/', '?', '#', ' ']) {
                    return Err(ApiError::bad_request(format!(
                        "preset {p:?} may not contain spaces, '/', '?' or '#'"
                    )));
                }
            }
            Action::Start { preset }
        }
        ("stop", None) => Action::Stop,
        ("stop", Some(_)) => {
            return Err(ApiError::bad_request(
                "a stop takes no preset; send {\"action\":\"stop\"}",
            ));
        }
        (other, _) => {
            return Err(ApiError::bad_request(format!(
                "action {other:?} is not \"start\" or \"stop\""
            )));
        }
    };
    match state.controls.send(&id, action).await {
        Ok(answer) => Ok(Json(json!(answer))),
        Err(e) => Err(api_error(&e)),
    }
}

fn api_error(e: &ControlError) -> ApiError {
    let (status, code) = match e {
        ControlError::UnknownDevice(_) => (StatusCode::NOT_FOUND, "unknown_device"),
        ControlError::NotControlled(_) => (StatusCode::CONFLICT, "not_controlled"),
        ControlError::UnknownPreset { .. } => (StatusCode::BAD_REQUEST, "unknown_preset"),
        ControlError::NoPreset => (StatusCode::BAD_REQUEST, "no_preset"),
        ControlError::Unauthorized(_) | ControlError::Credentials(_) => {
            (StatusCode::BAD_GATEWAY, "reader_unauthorized")
        }
        ControlError::Unreachable(_) => (StatusCode::BAD_GATEWAY, "reader_unreachable"),
        ControlError::Refused(_) => (StatusCode::BAD_GATEWAY, "reader_refused"),
        ControlError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "reader_timeout"),
        ControlError::Stopped => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    };
    ApiError::new(status, code, e.to_string())
}
