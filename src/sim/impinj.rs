//! A simulated Impinj R700 running the IoT device interface: the REST
//! control endpoints the agent drives (basic auth,
//! `POST /api/v1/profiles/inventory/presets/{preset}/start`,
//! `POST /api/v1/profiles/stop`, `GET /api/v1/status`) on a real HTTP
//! server, and tag inventory events published to MQTT (the interface's
//! MQTT output, profile `impinj-iot`) only while a preset runs.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use rumqttc::QoS;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::mqtt::Link;
use super::say::Say;

/// What the reader knows and does.
#[derive(Debug)]
struct Reader {
    user: String,
    password: String,
    presets: Vec<String>,
    /// The preset running, if any.
    running: Option<String>,
    /// Control requests answered (any outcome).
    requests: u64,
}

/// The reader's shared state; the HTTP server and the publisher read it.
#[derive(Clone)]
pub struct Impinj {
    reader: Arc<Mutex<Reader>>,
    say: Say,
}

/// A tagInventory event as the interface publishes it.
pub fn tag_inventory(epc_hex: &str, antenna: u32, at: chrono::DateTime<chrono::Utc>) -> Value {
    let epc = hex::decode(epc_hex).unwrap_or_default();
    json!({
        "timestamp": at.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string(),
        "hostname": "impinj-14-aa-01",
        "eventType": "tagInventory",
        "tagInventoryEvent": {
            "epc": base64::engine::general_purpose::STANDARD.encode(epc),
            "epcHex": epc_hex,
            "antennaPort": antenna,
            "peakRssiCdbm": -5200,
            "frequency": 866300,
            "transmitPowerCdbm": 3000,
        }
    })
}

impl Impinj {
    /// A stopped reader with these credentials and presets.
    pub fn new(user: &str, password: &str, presets: &[&str], say: Say) -> Impinj {
        Impinj {
            reader: Arc::new(Mutex::new(Reader {
                user: user.into(),
                password: password.into(),
                presets: presets.iter().map(|p| p.to_string()).collect(),
                running: None,
                requests: 0,
            })),
            say,
        }
    }

    fn reader(&self) -> MutexGuard<'_, Reader> {
        self.reader.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The preset running now.
    pub fn running(&self) -> Option<String> {
        self.reader().running.clone()
    }

    /// Control requests answered so far.
    pub fn requests(&self) -> u64 {
        self.reader().requests
    }

    /// Stop as a reboot does (the agent must notice and start it again).
    pub fn reboot(&self) {
        self.reader().running = None;
        self.say.line("rebooted: idle");
    }

    /// Serve the REST interface on `listener` until the task is dropped.
    pub async fn serve(&self, listener: TcpListener) -> std::io::Result<()> {
        let app = Router::new()
            .route(
                "/api/v1/profiles/inventory/presets/{preset}/start",
                post(start),
            )
            .route("/api/v1/profiles/stop", post(stop))
            .route("/api/v1/status", get(status))
            .with_state(self.clone());
        axum::serve(listener, app).await
    }

    /// Serve on a free loopback port in the background; its address.
    pub async fn spawn(&self) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let me = self.clone();
        tokio::spawn(async move { me.serve(listener).await });
        Ok(addr)
    }

    /// Publish one tagInventory event for each of `epcs` in turn, one every
    /// `every`, to `topic` while a preset runs; until the link fails.
    pub async fn publish_reads(&self, link: &Link, topic: &str, epcs: &[String], every: Duration) {
        let mut next = 0usize;
        loop {
            tokio::time::sleep(every).await;
            if self.running().is_none() || epcs.is_empty() {
                continue;
            }
            let epc = &epcs[next % epcs.len()];
            next += 1;
            let event = tag_inventory(epc, 1, chrono::Utc::now());
            if link
                .client
                .publish(topic, QoS::AtLeastOnce, false, event.to_string())
                .await
                .is_err()
            {
                return;
            }
            self.say.line(format!("-> {topic} tagInventory {epc}"));
        }
    }

    /// Whether the request carries the reader's credentials; counts it.
    fn authorised(&self, headers: &HeaderMap) -> bool {
        let mut reader = self.reader();
        reader.requests += 1;
        let expected = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", reader.user, reader.password));
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == format!("Basic {expected}"))
    }
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Basic realm=\"impinj\"")],
        axum::Json(json!({"message": "Unauthorized"})),
    )
        .into_response()
}

async fn start(
    State(sim): State<Impinj>,
    Path(preset): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !sim.authorised(&headers) {
        return unauthorized();
    }
    let mut reader = sim.reader();
    if !reader.presets.contains(&preset) {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"message": format!("Preset {preset} not found")})),
        )
            .into_response();
    }
    reader.running = Some(preset.clone());
    sim.say.line(format!("<- start {preset}"));
    StatusCode::NO_CONTENT.into_response()
}

async fn stop(State(sim): State<Impinj>, headers: HeaderMap) -> Response {
    if !sim.authorised(&headers) {
        return unauthorized();
    }
    sim.reader().running = None;
    sim.say.line("<- stop");
    StatusCode::NO_CONTENT.into_response()
}

async fn status(State(sim): State<Impinj>, headers: HeaderMap) -> Response {
    if !sim.authorised(&headers) {
        return unauthorized();
    }
    let running = sim.running();
    let body = match &running {
        Some(p) => json!({"status": "running", "activePreset": {"id": p, "profile": "inventory"}}),
        None => json!({"status": "idle"}),
    };
    axum::Json(body).into_response()
}
