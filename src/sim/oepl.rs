//! A simulated OpenEPaperLink access point: a real HTTP server on loopback
//! answering the parts of the AP's web interface the agent uses
//! (`GET /get_db`, `POST /jsonupload`, `POST /tag_cmd`), with tag records
//! shaped like the real AP's (/work/shared/samples/oepl-get_db.json). It
//! can be stopped and started again on the same port, to play an AP that
//! goes down.
//!
//! The AP's own tags check in between any two reads of its database; one
//! fetches uploaded content at the first check-in in a later second than
//! the upload (the AP keeps `lastseen` in whole seconds, and the agent
//! confirms only a check-in after the upload's second). Copies of another
//! AP's tags (`isexternal`) never check in here.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// Tag records per `/get_db` page, so that a poll reads several pages.
const PAGE: usize = 2;

/// One tag of the simulated AP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimTag {
    /// 16 upper-case hex digits.
    pub mac: String,
    /// The tag has an LED (`capabilities` bit 0x01).
    pub has_led: bool,
    /// Content is waiting for the tag.
    pub pending: bool,
    /// Last check-in, epoch seconds.
    pub lastseen: i64,
    /// The record is a copy from another AP that manages the tag
    /// (`isexternal`).
    pub external: bool,
    /// When content was last uploaded for it, epoch seconds.
    uploaded_s: Option<i64>,
}

impl SimTag {
    /// A tag that checked in just now, with or without an LED.
    pub fn new(mac: &str, has_led: bool) -> SimTag {
        SimTag {
            mac: mac.to_string(),
            has_led,
            pending: false,
            lastseen: chrono::Utc::now().timestamp(),
            external: false,
            uploaded_s: None,
        }
    }

    /// Another AP's tag as this AP's database copies it: `isexternal`,
    /// and last seen `silent_s` ago as far as this AP knows.
    pub fn external(mac: &str, silent_s: i64) -> SimTag {
        SimTag {
            external: true,
            lastseen: chrono::Utc::now().timestamp() - silent_s,
            ..SimTag::new(mac, false)
        }
    }
}

/// What the simulated AP holds and what it was sent.
#[derive(Debug, Default)]
pub struct ApState {
    pub tags: Vec<SimTag>,
    /// `(mac, json)` of every accepted `/jsonupload`.
    pub uploads: Vec<(String, String)>,
    /// `(mac, cmd)` of every accepted `/tag_cmd`.
    pub commands: Vec<(String, String)>,
    /// Full reads of the database (`/get_db` requests at `pos=0`).
    pub polls: usize,
}

type Shared = Arc<Mutex<ApState>>;

fn lock(state: &Shared) -> MutexGuard<'_, ApState> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running (or stopped) simulated access point.
pub struct SimAp {
    state: Shared,
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl SimAp {
    /// Start an AP holding `tags` on a free loopback port.
    pub async fn start(tags: Vec<SimTag>) -> std::io::Result<SimAp> {
        SimAp::start_on("127.0.0.1:0", tags).await
    }

    /// Start an AP holding `tags` listening on `addr` (`host:port`).
    pub async fn start_on(addr: &str, tags: Vec<SimTag>) -> std::io::Result<SimAp> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(ApState {
            tags,
            ..ApState::default()
        }));
        let mut ap = SimAp {
            state,
            addr,
            stop: None,
            task: None,
        };
        ap.serve(listener);
        Ok(ap)
    }

    /// The base URL, as a device's `url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What the AP holds and received so far.
    pub fn state(&self) -> MutexGuard<'_, ApState> {
        lock(&self.state)
    }

    /// Stop answering: the port is closed (connections are refused) until
    /// [`SimAp::resume`].
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Answer again on the same port, with the same tags.
    pub async fn resume(&mut self) -> std::io::Result<()> {
        self.stop().await;
        let listener = TcpListener::bind(self.addr).await?;
        self.serve(listener);
        Ok(())
    }

    fn serve(&mut self, listener: TcpListener) {
        let router = Router::new()
            .route("/get_db", get(get_db))
            .route("/jsonupload", post(jsonupload))
            .route("/tag_cmd", post(tag_cmd))
            .with_state(self.state.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        self.stop = Some(tx);
        self.task = Some(tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "simulated access point stopped");
            }
        }));
    }
}

impl Drop for SimAp {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A tag record shaped like the AP's.
fn record(tag: &SimTag) -> Value {
    json!({"mac": tag.mac, "hash": "5f3a9c0e1d2b4a6f8e7d6c5b4a392817", "lastseen": tag.lastseen,
           "nextupdate": 0, "nextcheckin": tag.lastseen + 40, "pending": u8::from(tag.pending),
           "alias": "", "contentMode": 19, "LQI": 98, "RSSI": -61, "temperature": 21,
           "batteryMv": 2950, "hwType": 1, "wakeupReason": 0,
           "capabilities": if tag.has_led { 0xE1 } else { 0xE0 },
           "modecfgjson": "", "isexternal": tag.external, "apip": "0.0.0.0", "rotate": 0, "lut": 0,
           "invert": 0, "updatecount": 1, "updatelast": tag.lastseen, "ch": 11, "ver": 31})
}

/// `GET /get_db?pos=N`: [`PAGE`] records from `pos`; `continu` is the next
/// page's `pos`, absent on the last page (as the AP writes it).
async fn get_db(State(state): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let mut ap = lock(&state);
    let now = chrono::Utc::now().timestamp();
    // The AP's own tags are awake and in range: they check in (and fetch
    // content waiting since an earlier second) between any two reads.
    for tag in ap.tags.iter_mut().filter(|t| !t.external) {
        if tag.pending && tag.uploaded_s.is_some_and(|at| at < now) {
            tag.pending = false;
        }
        tag.lastseen = now;
    }
    let pos: usize = q.get("pos").and_then(|p| p.parse().ok()).unwrap_or(0);
    if pos == 0 {
        ap.polls += 1;
    }
    let tags: Vec<Value> = ap.tags.iter().skip(pos).take(PAGE).map(record).collect();
    let next = pos + PAGE;
    if next < ap.tags.len() {
        axum::Json(json!({"tags": tags, "continu": next})).into_response()
    } else {
        axum::Json(json!({"tags": tags})).into_response()
    }
}

/// `POST /jsonupload` (`mac`, `json`): the tag gets the content at its
/// next check-in. An unknown tag is refused as the AP does.
async fn jsonupload(
    State(state): State<Shared>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let mut ap = lock(&state);
    let (Some(mac), Some(drawing)) = (form.get("mac"), form.get("json")) else {
        return (StatusCode::BAD_REQUEST, "Missing parameters").into_response();
    };
    let now = chrono::Utc::now().timestamp();
    let Some(tag) = ap.tags.iter_mut().find(|t| &t.mac == mac) else {
        return (StatusCode::BAD_REQUEST, "mac not found in tagDB").into_response();
    };
    tag.pending = true;
    tag.uploaded_s = Some(now);
    ap.uploads.push((mac.clone(), drawing.clone()));
    (StatusCode::OK, "Ok, saved").into_response()
}

/// `POST /tag_cmd` (`mac`, `cmd`), e.g. `cmd=ledflash`.
async fn tag_cmd(
    State(state): State<Shared>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let mut ap = lock(&state);
    let (Some(mac), Some(cmd)) = (form.get("mac"), form.get("cmd")) else {
        return (StatusCode::BAD_REQUEST, "Error: parameters are missing").into_response();
    };
    if !ap.tags.iter().any(|t| &t.mac == mac) {
        return (StatusCode::BAD_REQUEST, "Error: mac not found").into_response();
    }
    ap.commands.push((mac.clone(), cmd.clone()));
    (StatusCode::OK, "Ok, done").into_response()
}
