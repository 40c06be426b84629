//! Devices: one task per configured device. A device is a transport (how
//! bytes arrive) plus a firmware profile (what they mean). The runner
//! connects, lets the transport's session read until the connection is
//! lost, and reconnects with exponential backoff and jitter. One device
//! failing never affects another: each has its own task, its own backoff
//! and its own health row.

pub mod antenna_watch;
pub mod broker;
pub mod control;
mod decoder;
pub mod down_log;
pub mod http;
pub mod ingest;
pub mod label_routes;
pub mod label_sender;
pub mod llrp;
pub mod modbus;
pub mod mqtt;
pub mod serial;
pub mod serial_ports;
pub mod watch;

use std::sync::Arc;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::config::{DeviceConfig, Transport};
use crate::db::StoreError;
use crate::profiles::Profile;
use crate::shutdown::Shutdown;
use down_log::{DownLog, Say};
pub use ingest::{Ingest, Source};

/// How long opening a TCP connection to a device may take (HTTP, LLRP,
/// Modbus TCP). Without a bound, a device that is switched off costs the
/// kernel's SYN retries (minutes) per try.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A configured device with its resolved profile.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    pub config: DeviceConfig,
    pub profile: Arc<Profile>,
}

impl DeviceSpec {
    pub fn id(&self) -> &str {
        &self.config.id
    }

    pub fn source(&self) -> Source {
        Source {
            device: self.config.id.clone(),
            zone: self
                .config
                .zone
                .clone()
                .unwrap_or_else(|| self.config.id.clone()),
        }
    }
}

/// Why a device session ended.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("cannot open {what}: {reason}")]
    Open { what: String, reason: String },
    #[error("connection lost: {0}")]
    Lost(String),
    #[error("no answer: {0}")]
    Timeout(String),
    #[error("device error: {0}")]
    Protocol(String),
    #[error("cannot store input: {0}")]
    Store(#[from] StoreError),
}

/// Deliver, retrying while the database refuses (a full disk): input that
/// cannot be re-requested from the device (serial bytes, a Modbus sample)
/// is held, not dropped. Returns false only on shutdown.
pub async fn deliver_until_stored(
    ingest: &Ingest,
    source: &Source,
    items: Vec<crate::codecs::Decoded>,
    shutdown: &mut Shutdown,
) -> bool {
    // Sorted (and counted) once; only the commit is retried.
    match ingest.sort(source, items) {
        Some(unit) => commit_until_stored(ingest, source, &unit, shutdown).await,
        None => true,
    }
}

/// Commit a sorted unit, retrying with backoff until it is stored (`true`)
/// or shutdown comes first (`false`: nothing of it was stored). Only
/// storage errors come back here (input that cannot be stored for its own
/// sake is quarantined by [`Ingest::commit`]); while they last the device
/// is marked stuck, which `/healthz` reports, and the episode is logged
/// once when it starts and once when it ends.
pub async fn commit_until_stored(
    ingest: &Ingest,
    source: &Source,
    unit: &ingest::Unit,
    shutdown: &mut Shutdown,
) -> bool {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        match ingest.commit(source, unit).await {
            Ok(_) => {
                if backoff.attempts() > 0 && ingest.health().set_stuck(&source.device, None) {
                    tracing::warn!(device = %source.device, attempts = backoff.attempts(), "device input is stored again");
                }
                return true;
            }
            Err(e) => {
                let why = format!("cannot store its input ({e}); holding it and retrying");
                if ingest.health().set_stuck(&source.device, Some(why)) {
                    tracing::error!(device = %source.device, error = %e, "cannot store device input; holding it and retrying until storage returns (logged once per episode)");
                }
                if !shutdown.sleep(backoff.next_delay()).await {
                    return false;
                }
            }
        }
    }
}

/// Run one device until shutdown: sessions with backoff in between.
pub async fn run_device(
    spec: DeviceSpec,
    ingest: Ingest,
    hub: Option<mqtt::Hub>,
    mut shutdown: Shutdown,
) {
    let id = spec.id().to_string();
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let mut down_log = DownLog::default();
    while !shutdown.is_triggered() {
        let result = match &spec.config.transport {
            Transport::Serial(_) => serial::session(&spec, &ingest, &mut shutdown).await,
            Transport::ModbusTcp { .. } | Transport::ModbusRtu { .. } => {
                modbus::session(&spec, &ingest, &mut shutdown).await
            }
            Transport::Mqtt { .. } => match &hub {
                Some(hub) => hub.session(&spec, &ingest, &mut shutdown).await,
                None => Err(DeviceError::Open {
                    what: "mqtt".into(),
                    reason: "no MQTT connection configured".into(),
                }),
            },
            Transport::Http { .. } | Transport::HttpStream { .. } => {
                http::session(&spec, &ingest, &mut shutdown).await
            }
            Transport::Llrp(_) => llrp::session(&spec, &ingest, &mut shutdown).await,
        };
        if shutdown.is_triggered() {
            break;
        }
        let was_up = ingest.health().get(&id).is_some_and(|h| h.up);
        if was_up {
            backoff.reset();
            down_log.up();
        }
        let message = match &result {
            Ok(()) => "session ended".to_string(),
            Err(e) => e.to_string(),
        };
        ingest.health().set_up(&id, false, Some(message.clone()));
        match down_log.failed(std::time::Instant::now()) {
            Say::Down => {
                tracing::warn!(device = %id, error = %message, "device down; reconnecting with backoff")
            }
            Say::StillDown(for_how_long) => tracing::warn!(
                device = %id,
                error = %message,
                down_for_s = for_how_long.as_secs(),
                "device still down; reconnecting with backoff"
            ),
            Say::Quiet => tracing::debug!(device = %id, error = %message, "device still down"),
        }
        if !shutdown.sleep(backoff.next_delay()).await {
            break;
        }
    }
    tracing::debug!(device = %id, "device task stopped");
}
