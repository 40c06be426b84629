//! The reference central platform: the central side of spec/sync-api.md,
//! for `storegate sim central`, the demo and the tests. It dedups events by
//! (store, seq), answers 409 when a batch does not start where it expects,
//! keeps a stock view from the events it received, serves a price book and
//! stock baselines, and can be told to misbehave in every way the spec
//! lists (see [`Behaviour`]).

use std::collections::{BTreeMap, HashMap};
use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Switches for every misbehaviour a central may show.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Behaviour {
    /// Answer 503 to everything (a central that is down).
    pub down: bool,
    /// Acknowledge at most this many events of each batch.
    pub ack_at_most: Option<usize>,
    /// Answer 413 to batches with more events than this.
    pub max_batch: Option<usize>,
    /// Answer the next `count` pushes with this status (and Retry-After).
    pub fail_next: Option<(u16, u32, Option<u64>)>,
    /// Answer the next pushes with 200 and a body that does not parse.
    pub garbage_next: u32,
    /// Required bearer token (401 without, 403 with another).
    pub token: Option<String>,
    /// Delay every answer by this many milliseconds.
    pub delay_ms: u64,
    /// Check and acknowledge events without keeping them (for benchmarks:
    /// a million events would otherwise be a million JSON trees here).
    #[serde(default)]
    pub count_only: bool,
}

/// One store as central sees it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StoreView {
    /// Every event received, by seq (deduplicated).
    pub events: BTreeMap<i64, Value>,
    pub acked_through: i64,
    /// Events received again (a replay after a lost answer): harmless.
    pub duplicates: u64,
    /// Seqs the agent announced as dropped under its disk quota.
    pub skipped: Vec<(i64, i64)>,
    /// The store's last heartbeat (spec/fleet.md 3), over HTTP or MQTT.
    #[serde(default)]
    pub status: Option<Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CentralState {
    pub behaviour: Behaviour,
    pub stores: HashMap<String, StoreView>,
    /// The price book: version and the items, each with the version it changed in.
    pub price_version: i64,
    pub prices: BTreeMap<String, (i64, Value)>,
    pub removed: Vec<(i64, String)>,
    /// Stock baselines central publishes: version, and per SKU the initial stock.
    pub stock_version: i64,
    pub initial_stock: BTreeMap<String, i64>,
    /// Pushes received (idempotency keys), for tests.
    pub push_keys: Vec<String>,
    /// Batch sizes received, for tests.
    pub batch_sizes: Vec<usize>,
    /// Bytes of the MQTT batch payloads received (as on the wire: gzip
    /// or JSON), for `bench uplink`.
    #[serde(default)]
    pub mqtt_payload_bytes: u64,
    /// Per-store configs (spec/fleet.md 4): `{store}.toml` files in this
    /// directory, served by `GET /v1/stores/{s}/config`.
    #[serde(default)]
    pub configs_dir: Option<std::path::PathBuf>,
    /// Per store: the sha256 of the config text last seen and its version
    /// (bumped whenever the file's text changes).
    #[serde(default)]
    pub config_versions: BTreeMap<String, (String, i64)>,
    /// Per store: click-and-collect orders (`super::central_orders`).
    #[serde(default)]
    pub orders: BTreeMap<String, super::central_orders::StoreOrders>,
}

/// A running central; cheap to clone.
#[derive(Clone)]
pub struct Central {
    pub state: Arc<Mutex<CentralState>>,
    /// The MQTT consumer's client and topic prefix, once it runs: how a
    /// changed config is announced (`pull_config`).
    pub(super) commands: Arc<Mutex<Option<(rumqttc::AsyncClient, String)>>>,
}

impl Default for Central {
    fn default() -> Self {
        Self::new(CentralState::default())
    }
}

impl Central {
    pub fn new(state: CentralState) -> Self {
        Central {
            state: Arc::new(Mutex::new(state)),
            commands: Arc::new(Mutex::new(None)),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, CentralState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Serve on `listener` until the task is dropped.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        axum::serve(listener, self.router()).await
    }

    /// Bind and serve in the background; returns the address.
    pub async fn spawn(
        self,
        addr: &str,
    ) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let handle = tokio::spawn(async move {
            let _ = self.serve(listener).await;
        });
        Ok((local, handle))
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/stores/{store}/events", post(push))
            .route("/v1/stores/{store}/prices", get(prices))
            .route("/v1/stores/{store}/stock", get(stock))
            .route("/v1/stores/{store}/status", put(put_status))
            .route(
                "/v1/stores/{store}/config",
                get(super::central_config::get_config),
            )
            .route(
                "/admin/stores/{store}/config",
                put(super::central_config::put_config),
            )
            .route(
                "/v1/stores/{store}/orders",
                get(super::central_orders::get_orders),
            )
            .route(
                "/admin/stores/{store}/orders",
                post(super::central_orders::post_order),
            )
            .route(
                "/admin/stores/{store}/orders/{id}/cancel",
                post(super::central_orders::cancel),
            )
            .with_state(self.clone())
    }

    /// Publish a price book item (a new version).
    pub fn set_price(&self, item: Value) -> i64 {
        let mut s = self.lock();
        s.price_version += 1;
        let v = s.price_version;
        if let Some(sku) = item.get("sku").and_then(Value::as_str) {
            s.prices.insert(sku.to_string(), (v, item));
        }
        v
    }

    /// Publish initial stock for SKUs; a new baseline version follows.
    pub fn set_initial_stock(&self, sku: &str, on_hand: i64) {
        let mut s = self.lock();
        s.initial_stock.insert(sku.to_string(), on_hand);
        s.stock_version += 1;
    }

    /// The state as JSON, for `sim central --state FILE`.
    pub fn to_json(&self) -> Vec<u8> {
        // Plain data (maps, numbers, strings, JSON values): cannot fail.
        serde_json::to_vec_pretty(&*self.lock()).unwrap_or_default()
    }

    /// Load a state file written by [`Central::save`]; `Ok(None)` when
    /// there is none yet.
    pub fn load(path: &std::path::Path) -> Result<Option<Central>, String> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(|s| Some(Central::new(s)))
                .map_err(|e| format!("{}: not a central state file: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Write the state to `path` atomically (a temporary file renamed over
    /// it), so a crash never leaves half a file.
    pub fn save(&self, path: &std::path::Path) -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, self.to_json())?;
        std::fs::rename(&tmp, path)
    }

    pub fn view(&self, store: &str) -> StoreView {
        self.lock().stores.get(store).cloned().unwrap_or_default()
    }

    /// On hand per SKU at central for a store: initial stock plus every
    /// stock move received.
    pub fn on_hand(&self, store: &str) -> BTreeMap<String, i64> {
        let s = self.lock();
        compute_on_hand(&s, store)
    }
}

fn compute_on_hand(s: &CentralState, store: &str) -> BTreeMap<String, i64> {
    let mut on_hand = s.initial_stock.clone();
    if let Some(view) = s.stores.get(store) {
        for e in view.events.values() {
            let moves = stock_move(e).into_iter();
            for (sku, delta) in moves.chain(super::central_orders::handover_moves(e)) {
                *on_hand.entry(sku).or_default() += delta;
            }
        }
    }
    on_hand
}

fn stock_move(e: &Value) -> Option<(String, i64)> {
    let data = e.get("data")?;
    let sku = data.get("sku")?.as_str()?.to_string();
    let n = |k: &str| data.get(k).and_then(Value::as_i64);
    match e.get("kind")?.as_str()? {
        "sale" => Some((sku, -n("qty")?)),
        "return" | "receipt" => Some((sku, n("qty")?)),
        "adjustment" => Some((sku, n("delta")?)),
        _ => None,
    }
}

pub(super) fn error(status: StatusCode, msg: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": status.as_u16().to_string(), "message": msg}})),
    )
        .into_response()
}

/// Token check shared by every endpoint: `Err` is the answer to give.
pub(super) fn authorize(
    b: &Behaviour,
    headers: &HeaderMap,
) -> Result<(), (StatusCode, &'static str)> {
    if b.down {
        return Err((StatusCode::SERVICE_UNAVAILABLE, "central is down"));
    }
    let Some(want) = &b.token else { return Ok(()) };
    let got = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match got {
        None => Err((StatusCode::UNAUTHORIZED, "missing token")),
        Some(t) if t == want => Ok(()),
        Some(_) => Err((StatusCode::FORBIDDEN, "wrong token")),
    }
}

async fn push(
    State(c): State<Central>,
    Path(store): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let delay = c.lock().behaviour.delay_ms;
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    let mut s = c.lock();
    if let Err((status, msg)) = authorize(&s.behaviour, &headers) {
        return error(status, msg);
    }
    if let Some((status, left, retry_after)) = s.behaviour.fail_next {
        s.behaviour.fail_next = (left > 1).then_some((status, left - 1, retry_after));
        let mut r = error(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "told to fail",
        );
        if let Some(ra) = retry_after {
            if let Ok(v) = ra.to_string().parse() {
                r.headers_mut().insert("retry-after", v);
            }
        }
        return r;
    }
    let gzip = headers
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes() == b"gzip");
    let raw = if gzip {
        let mut out = Vec::new();
        if flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut out)
            .is_err()
        {
            return error(StatusCode::BAD_REQUEST, "body is not valid gzip");
        }
        out
    } else {
        body.to_vec()
    };
    let doc: Value = match serde_json::from_slice(&raw) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("body is not JSON: {e}")),
    };
    let events = doc
        .get("events")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(key) = headers.get("idempotency-key").and_then(|v| v.to_str().ok()) {
        s.push_keys.push(key.to_string());
    }
    s.batch_sizes.push(events.len());
    if s.behaviour.max_batch.is_some_and(|m| events.len() > m) {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "batch too large");
    }
    if s.behaviour.garbage_next > 0 {
        s.behaviour.garbage_next -= 1;
        return (StatusCode::OK, "<html>proxy error</html>").into_response();
    }
    let ack_at_most = s.behaviour.ack_at_most;
    let count_only = s.behaviour.count_only;
    let skipped: Vec<(i64, i64)> = doc
        .get("skipped")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    match s.accept_batch(&store, &events, &skipped, ack_at_most, count_only) {
        Ok(acked) => axum::Json(json!({"acked_through": acked})).into_response(),
        Err(Refusal::Conflict(acked)) => (
            StatusCode::CONFLICT,
            axum::Json(json!({"acked_through": acked})),
        )
            .into_response(),
        Err(Refusal::Bad(msg)) => error(StatusCode::BAD_REQUEST, &msg),
    }
}

/// Why a batch was not taken.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// It does not start right after what central has (through this seq).
    Conflict(i64),
    /// It is malformed.
    Bad(String),
}

impl StoreView {
    /// Take a batch (the HTTP push's and the MQTT consumer's rule): dedup
    /// by seq, contiguous after `acked_through` or after a range the agent
    /// announces in `skipped` as dropped under its quota. Returns the new
    /// `acked_through`.
    pub fn accept(
        &mut self,
        events: &[Value],
        skipped: &[(i64, i64)],
        ack_at_most: Option<usize>,
        count_only: bool,
    ) -> Result<i64, Refusal> {
        let view = self;
        let Some(first) = events
            .first()
            .and_then(|e| e.get("seq"))
            .and_then(Value::as_i64)
        else {
            return Ok(view.acked_through);
        };
        // The batch must start right after what we have, or after a range the
        // agent announces as dropped under its disk quota.
        let mut expected = view.acked_through + 1;
        for (a, b) in skipped {
            if *a <= expected && *b >= expected {
                expected = b + 1;
                view.skipped.push((*a, *b));
            }
        }
        if first > expected || first < 1 {
            return Err(Refusal::Conflict(view.acked_through));
        }
        let mut acked = view.acked_through.max(expected - 1);
        for (i, e) in events.iter().enumerate() {
            if ack_at_most.is_some_and(|m| i >= m) {
                break;
            }
            let Some(seq) = e.get("seq").and_then(Value::as_i64) else {
                return Err(Refusal::Bad(format!("event {i} has no seq")));
            };
            if seq != acked + 1 && seq > acked {
                return Err(Refusal::Bad(format!("gap before seq {seq}")));
            }
            if count_only {
                if seq <= view.acked_through {
                    view.duplicates += 1;
                }
                acked = acked.max(seq);
                continue;
            }
            match view.events.get(&seq) {
                Some(old) if old == e => view.duplicates += 1,
                Some(_) => {
                    return Err(Refusal::Bad(format!(
                        "seq {seq} sent again with other content"
                    )));
                }
                None => {
                    view.events.insert(seq, e.clone());
                }
            }
            acked = acked.max(seq);
        }
        view.acked_through = acked;
        Ok(acked)
    }
}

/// `PUT /v1/stores/{s}/status`: the store's heartbeat (spec/fleet.md 3).
async fn put_status(
    State(c): State<Central>,
    Path(store): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut s = c.lock();
    if let Err((status, msg)) = authorize(&s.behaviour, &headers) {
        return error(status, msg);
    }
    let doc: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("body is not JSON: {e}")),
    };
    s.stores.entry(store).or_default().status = Some(doc);
    StatusCode::NO_CONTENT.into_response()
}

/// The `?since=` of the pulls.
#[derive(Deserialize)]
pub(super) struct Since {
    #[serde(default)]
    pub(super) since: i64,
}

/// The entries that changed after version `since`.
pub(super) fn newer<'a, T>(
    entries: impl IntoIterator<Item = &'a (i64, T)>,
    since: i64,
) -> Vec<&'a T>
where
    T: 'a,
{
    entries
        .into_iter()
        .filter(|(v, _)| *v > since)
        .map(|(_, item)| item)
        .collect()
}

async fn prices(
    State(c): State<Central>,
    Path(_store): Path<String>,
    Query(q): Query<Since>,
    headers: HeaderMap,
) -> Response {
    let s = c.lock();
    if let Err((status, msg)) = authorize(&s.behaviour, &headers) {
        return error(status, msg);
    }
    let items = newer(s.prices.values(), q.since);
    let removed = newer(&s.removed, q.since);
    axum::Json(json!({"version": s.price_version, "items": items, "removed": removed}))
        .into_response()
}

async fn stock(
    State(c): State<Central>,
    Path(store): Path<String>,
    Query(q): Query<Since>,
    headers: HeaderMap,
) -> Response {
    let s = c.lock();
    if let Err((status, msg)) = authorize(&s.behaviour, &headers) {
        return error(status, msg);
    }
    let through = s.stores.get(&store).map_or(0, |v| v.acked_through);
    // The baseline version moves with every acknowledged batch too, so an
    // agent asking `since` an older version gets a fresh one.
    let version = s.stock_version * 1_000_000 + through;
    if version <= q.since {
        return axum::Json(json!({"version": q.since, "through_seq": through, "items": []}))
            .into_response();
    }
    let items: Vec<Value> = compute_on_hand(&s, &store)
        .into_iter()
        .map(|(sku, n)| json!({"sku": sku, "on_hand": n}))
        .collect();
    axum::Json(json!({"version": version, "through_seq": through, "items": items})).into_response()
}
