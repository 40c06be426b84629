//! Errors as the API answers them: `{"error":{"code":"...","message":"..."}}`
//! with a fitting status, and the JSON body extractor that turns bad input
//! into such errors (400 naming the field, 413 over the size limit).

use std::pin::Pin;

use axum::Json;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::db::StoreError;

/// Largest request body accepted (spec: 413 above 1 MiB).
pub const MAX_BODY: usize = 1024 * 1024;

/// An oversized body is still read (and thrown away) up to this much, so
/// that the client gets to read our 413 instead of a reset connection.
const DRAIN_MAX: usize = 8 * MAX_BODY;

/// An error answer. `code` is a stable machine-readable word, `message`
/// is for people.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            // The domain refused the input (a negative count, a zero qty).
            StoreError::Rejected(m) => Self::new(StatusCode::BAD_REQUEST, "rejected", m),
            StoreError::WriterStopped => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the agent is shutting down; try again shortly",
            ),
            e if e.is_disk_full() => {
                tracing::error!(error = %e, "API write refused: storage is full");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_full",
                    e.to_string(),
                )
            }
            // The detail (SQL, file paths) is for the log, not the client.
            e => {
                tracing::error!(error = %e, "API request failed on the database");
                Self::internal(
                    "the database failed on this request; the details are in the agent's log",
                )
            }
        }
    }
}

/// The JSON error body: `{"error":{"code":"...","message":"..."}}`.
pub(crate) fn error_body(code: &str, message: &str) -> Vec<u8> {
    serde_json::json!({"error": {"code": code, "message": message}})
        .to_string()
        .into_bytes()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = error_body(self.code, &self.message);
        let mut response = (
            self.status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The error code that goes with a status, for errors raised outside our
/// handlers (axum's routing, extractors).
pub(crate) fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::URI_TOO_LONG => "uri_too_long",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_server_error() => "internal",
        _ => "error",
    }
}

/// Give every error answer the JSON error body. Our own errors already
/// have it; axum's (405 from routing, 400 from a path or query extractor)
/// come as plain text or empty, and are rewrapped keeping status and
/// headers such as `Allow`.
pub async fn ensure_json_error(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 16 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_string()
    } else {
        text
    };
    let fresh = ApiError::new(status, code_for(status), message).into_response();
    let (fresh_parts, fresh_body) = fresh.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.extend(fresh_parts.headers);
    Response::from_parts(parts, fresh_body)
}

/// A JSON request body of type `T`, at most [`MAX_BODY`] bytes. Unlike
/// `axum::Json` it does not insist on a `Content-Type`, and its errors are
/// ours: 413 when too big, 400 naming the offending field
/// (`lines[0].counted: invalid type: string "x", expected i64 at line 1 column 40`).
pub struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > DRAIN_MAX) {
            return Err(too_large());
        }
        let bytes = read_limited(req.into_body(), MAX_BODY, declared).await?;
        match Json::<T>::from_bytes(&bytes) {
            Ok(Json(value)) => Ok(JsonBody(value)),
            Err(rejection) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                rejection.body_text(),
            )),
        }
    }
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!(
            "the request body is larger than {MAX_BODY} bytes; send it in smaller parts (sled EPCs: several requests of one session)"
        ),
    )
}

/// Read a body up to `limit` bytes. Beyond the limit the rest is read and
/// dropped (up to [`DRAIN_MAX`]) before answering 413: answering while the
/// client is still sending makes many clients report a broken connection
/// instead of our answer.
async fn read_limited(
    mut body: Body,
    limit: usize,
    declared: Option<usize>,
) -> Result<Bytes, ApiError> {
    let mut buf = Vec::with_capacity(declared.unwrap_or(0).min(limit));
    let mut total = 0usize;
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        match frame {
            None => break,
            Some(Err(e)) => {
                return Err(ApiError::bad_request(format!(
                    "cannot read the request body: {e}"
                )));
            }
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue; // trailers
                };
                total = total.saturating_add(data.len());
                if total <= limit {
                    buf.extend_from_slice(&data);
                } else if total > DRAIN_MAX {
                    break;
                }
            }
        }
    }
    if total > limit {
        return Err(too_large());
    }
    Ok(Bytes::from(buf))
}
