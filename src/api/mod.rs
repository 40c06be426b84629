//! The local HTTP API (spec/local-api.md): staff handhelds, the central
//! platform's pull, health and metrics, and the staff page.
//!
//! Reads use a read-only connection of their own on a blocking thread (WAL:
//! they never wait for the writer, and never hold it up); writes go through
//! the one writer, so a 2xx answer means the events are committed.
//!
//! Every answer that is not a success carries
//! `{"error":{"code":"...","message":"..."}}`; a request that takes longer
//! than [`REQUEST_TIMEOUT`] (10 s) is answered 503. Connections are served
//! by [`server`], which bounds how many there are and how long a client
//! may take to ask and to read ([`Limits`]).

pub mod auth;
pub mod error;
mod handlers;
mod input;
mod labels;
mod orders;
mod reading;
pub mod server;
mod sled;
mod socket;
mod tasks;
mod tracked;
mod writes;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rusqlite::Connection;

use crate::db::{self, StoreError, WriteTx, Writer};
use crate::devices::control::Controls;
use crate::devices::label_routes::AccessPoints;
use crate::health::HealthBoard;
use crate::shutdown::Shutdown;
use crate::sync::Link;

pub use crate::metrics::MetricsFn;
pub use auth::{Role, Tokens};
pub use error::{ApiError, MAX_BODY};
pub use server::Limits;

/// Longest a request may take before it is answered 503 (the default of
/// [`ApiState::request_timeout`]).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The device name API writes are journaled under.
pub const DEVICE: &str = "api";

/// Everything the handlers need. The daemon builds it with
/// [`ApiState::new`] and may then replace `metrics`.
pub struct ApiState {
    /// `store_id` from the config, shown by `/v1/state`.
    pub store_id: String,
    /// The database file; every read opens its own read-only connection.
    pub db_path: PathBuf,
    /// The one writer: counts, adjustments and receipts go through it.
    pub writer: Writer,
    /// Device health, for `/healthz` and `/v1/state`.
    pub health: HealthBoard,
    /// Whether central is reachable, as the pusher last found.
    pub link: tokio::sync::watch::Receiver<Link>,
    /// Bearer tokens per role.
    pub tokens: Tokens,
    /// Renders `/metrics`; runs on a blocking thread.
    pub metrics: MetricsFn,
    /// Also answer `/healthz` and `/metrics` on the main listener. The
    /// daemon clears it when `api.ops_listen` is set, so that they are
    /// served only there (see [`serve_ops`]).
    pub ops_on_main: bool,
    /// Longest a request may take before it is answered 503.
    pub request_timeout: Duration,
    /// Connection cap and timeouts of the listener serving this state.
    pub limits: Limits,
    /// The readers whose reading the agent controls
    /// (`POST /v1/devices/{id}/reading`); none unless the daemon sets them.
    pub controls: Controls,
    /// The store's EPCIS setup (`[epcis]`); `None` answers
    /// `/v1/epcis/events` with 404 `epcis_not_configured`.
    pub epcis: Option<crate::epcis::Setup>,
    /// `[tasks] verify_after_s`: a task marked done is looked at again
    /// this long after.
    pub task_verify_after_s: u64,
    /// The OpenEPaperLink access points and their listings, shared with
    /// the label sender (`POST /v1/labels/{id}/find`); none unless the
    /// daemon sets them.
    pub access_points: AccessPoints,
    /// Wakes the label sender when a binding made label updates due (the
    /// daemon's; a fresh one, which nobody waits on, otherwise).
    pub labels_changed: Arc<tokio::sync::Notify>,
}

impl ApiState {
    /// State with the basic metrics ([`crate::metrics::basic`]) and the ops
    /// endpoints on the main listener.
    pub fn new(
        store_id: String,
        db_path: PathBuf,
        writer: Writer,
        health: HealthBoard,
        link: tokio::sync::watch::Receiver<Link>,
        tokens: Tokens,
    ) -> ApiState {
        let metrics = crate::metrics::basic(db_path.clone(), &writer, health.clone());
        ApiState {
            store_id,
            db_path,
            writer,
            health,
            link,
            tokens,
            metrics,
            ops_on_main: true,
            request_timeout: REQUEST_TIMEOUT,
            limits: Limits::default(),
            controls: Controls::default(),
            epcis: None,
            task_verify_after_s: crate::config::TasksConfig::default().verify_after_s,
            access_points: AccessPoints::default(),
            labels_changed: Arc::default(),
        }
    }
}

/// The state as the handlers share it.
pub(crate) type Shared = Arc<ApiState>;

/// The API's routes: staff, central, the staff page and, when
/// `ops_on_main`, `/healthz` and `/metrics`.
pub fn router(state: ApiState) -> Router {
    let ops_on_main = state.ops_on_main;
    let state: Shared = Arc::new(state);
    let staff = Router::new()
        .route("/v1/skus/{code}", get(handlers::sku))
        .route("/v1/counts", post(writes::count))
        .route("/v1/counts/rfid", post(writes::rfid_count))
        .route("/v1/counts/epcs", post(sled::sled_count))
        .route("/v1/adjustments", post(writes::adjustment))
        .route("/v1/receipts", post(writes::receipt))
        .route("/v1/alerts", get(handlers::alerts))
        .route("/v1/tasks", get(tasks::list))
        .route("/v1/tasks/{id}", get(tasks::one))
        .route("/v1/tasks/{id}/take", post(tasks::take))
        .route("/v1/tasks/{id}/done", post(tasks::done))
        .route("/v1/tasks/{id}/dismiss", post(tasks::dismiss))
        .route("/v1/devices/{id}/reading", post(reading::reading))
        .route("/v1/orders", get(orders::list))
        .route("/v1/orders/{id}", get(orders::one))
        .route("/v1/orders/{id}/scan", post(orders::scan))
        .route("/v1/orders/{id}/picked", post(orders::picked))
        .route("/v1/orders/{id}/handover", post(orders::handover))
        .route("/v1/orders/{id}/returned", post(orders::returned))
        .route("/v1/labels/{id}/bind", post(labels::bind))
        .route("/v1/labels/{id}/unbind", post(labels::unbind))
        .route("/v1/labels/{id}/find", post(labels::find))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_staff,
        ));
    let central = Router::new()
        .route("/v1/state", get(handlers::state))
        .route("/v1/events", get(handlers::events))
        .route("/v1/epcis/events", get(handlers::epcis_events))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_central,
        ));
    let mut app = Router::new()
        .route("/", get(handlers::staff_page))
        .merge(staff)
        .merge(central);
    if ops_on_main {
        app = app.merge(ops_routes());
    }
    finish(app, state)
}

/// Only `/healthz` and `/metrics`, for a separate `api.ops_listen`.
pub fn ops_router(state: ApiState) -> Router {
    finish(ops_routes(), Arc::new(state))
}

fn ops_routes() -> Router<Shared> {
    Router::new()
        .route("/healthz", get(handlers::healthz))
        .route("/metrics", get(handlers::metrics))
}

/// The parts every router shares: 404 for unknown routes, the body limit,
/// and the guard (timeout, panics, JSON error bodies).
fn finish(routes: Router<Shared>, state: Shared) -> Router {
    routes
        .fallback(handlers::no_route)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Serve the API on `listener` until `shutdown`; requests in flight are
/// finished first.
pub async fn serve(
    state: ApiState,
    listener: tokio::net::TcpListener,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let limits = state.limits.clone();
    server::serve(router(state), listener, limits, shutdown).await
}

/// Serve only `/healthz` and `/metrics` (the `api.ops_listen` listener),
/// with at most [`server::OPS_MAX_CONNECTIONS`] connections.
pub async fn serve_ops(
    state: ApiState,
    listener: tokio::net::TcpListener,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let limits = Limits {
        max_connections: state
            .limits
            .max_connections
            .min(server::OPS_MAX_CONNECTIONS),
        ..state.limits.clone()
    };
    server::serve(ops_router(state), listener, limits, shutdown).await
}

/// Around every request: run it in a task of its own so that a panic
/// becomes a 500 with an error body instead of a dropped connection, give
/// up after `request_timeout` with a 503, and make sure every error answer
/// has the JSON error body.
async fn guard(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let limit = state.request_timeout;
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let task = tokio::spawn(next.run(req));
    let abort = task.abort_handle();
    let response = match tokio::time::timeout(limit, task).await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => {
            tracing::error!(%method, %path, error = %e, "API handler failed");
            ApiError::internal("the request failed inside the agent; it has been logged")
                .into_response()
        }
        Err(_) => {
            // A write may still commit after this; the message says so.
            abort.abort();
            tracing::warn!(%method, %path, "API request timed out");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                format!(
                    "the request did not finish within {} ms; a write may still have been stored, check before retrying",
                    limit.as_millis()
                ),
            )
            .into_response()
        }
    };
    error::ensure_json_error(response).await
}

/// Run a read on a fresh read-only connection on a blocking thread, inside
/// one read transaction so that every query sees the same snapshot.
async fn read<T, F>(state: &ApiState, f: F) -> Result<T, ApiError>
where
    F: FnOnce(&Connection) -> Result<T, ApiError> + Send + 'static,
    T: Send + 'static,
{
    let path = state.db_path.clone();
    tokio::task::spawn_blocking(move || {
        let conn = db::open_read(&path)?;
        let tx = conn.unchecked_transaction().map_err(|source| {
            ApiError::from(StoreError::Sqlite {
                context: "starting a read",
                source,
            })
        })?;
        f(&tx)
    })
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "API read failed");
        ApiError::internal("the read failed inside the agent; it has been logged")
    })?
}

/// Run a write through the writer; returns once it is committed.
async fn write<T, F>(state: &ApiState, f: F) -> Result<T, ApiError>
where
    F: FnOnce(&mut WriteTx<'_>) -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    state.writer.transact(f).await.map_err(ApiError::from)
}
