//! The fleet uplink over MQTT (spec/fleet.md, docs/fleet.md): the journal
//! published in batches to central's broker cluster, counted as pushed only
//! on central's own ack (DESIGN invariant 10), the retained heartbeat, and
//! central's commands.
//!
//! - `batch`: journal -> payloads that fit `max_payload_bytes`;
//! - `window`: what is out unacknowledged, and what acks, timeouts and
//!   reconnects do to it;
//! - `connect`: one broker's MQTT options (will, credentials, TLS);
//! - `session`: one connection's loop;
//! - `commands`: `{p}/{s}/cmd` and `{p}/all/cmd`;
//! - this file: the brokers in turn, with backoff, and the shared figures.

pub mod batch;
pub mod commands;
mod connect;
mod session;
pub mod window;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;

use super::push::Link;
use crate::backoff::Backoff;
use crate::config::MqttUplinkConfig;
use crate::db::Writer;
use crate::health::HealthBoard;
use crate::shutdown::Shutdown;

pub use commands::Triggers;

/// The topics of one store (`{p}` = topic_prefix, `{s}` = store_id).
#[derive(Debug, Clone, PartialEq)]
pub struct Topics {
    pub events: String,
    pub ack: String,
    pub status: String,
    pub cmd: String,
    pub all_cmd: String,
}

impl Topics {
    pub fn new(prefix: &str, store_id: &str) -> Topics {
        Topics {
            events: format!("{prefix}/{store_id}/events"),
            ack: format!("{prefix}/{store_id}/ack"),
            status: format!("{prefix}/{store_id}/status"),
            cmd: format!("{prefix}/{store_id}/cmd"),
            all_cmd: format!("{prefix}/all/cmd"),
        }
    }
}

/// The uplink as `storegate status` and `/metrics` show it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The broker connected to (without a password), if any.
    pub broker: Option<String>,
    pub connected: bool,
    /// Batches published and not acknowledged by central.
    pub unacked_batches: usize,
    /// Central's last ack (`acked_through`) and when it came.
    pub last_ack: Option<i64>,
    pub last_ack_at: Option<String>,
    pub connections: u64,
    pub batches_sent: u64,
    /// Times sending started again from `acked_through + 1`.
    pub resends: u64,
    /// An event too big for any payload, holding the push up.
    pub oversize_seq: Option<i64>,
}

/// Shared between the uplink, `/metrics` and the status file.
#[derive(Debug, Default)]
pub struct UplinkStats {
    snapshot: Mutex<Snapshot>,
}

impl UplinkStats {
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn update(&self, f: impl FnOnce(&mut Snapshot)) {
        f(&mut self.snapshot.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// The status file beside the database, for `storegate status` (another
/// process): the last [`Snapshot`], as JSON.
pub fn status_file(db_path: &std::path::Path) -> PathBuf {
    db_path.with_file_name("uplink-status.json")
}

/// Everything the uplink works with.
pub struct Uplink {
    pub config: MqttUplinkConfig,
    pub ca_file: Option<PathBuf>,
    pub store_id: String,
    pub writer: Writer,
    pub reader: Arc<Mutex<Connection>>,
    pub db_path: PathBuf,
    pub batch_max: usize,
    pub max_backoff: Duration,
    pub link: watch::Sender<Link>,
    pub stats: Arc<UplinkStats>,
    /// The heartbeat bodies (`sync::heartbeat::run`).
    pub heartbeat: watch::Receiver<Option<Arc<Value>>>,
    pub triggers: Triggers,
    pub health: HealthBoard,
}

/// Connect to the brokers in order, the next one after each loss, with
/// the backoff of spec/sync-api.md; push, heartbeat and take commands
/// until shutdown.
pub async fn run(uplink: Uplink, mut shutdown: Shutdown) {
    let acked = {
        let conn = uplink.reader.lock().unwrap_or_else(|p| p.into_inner());
        super::state::read(&conn).map(|s| s.last_acked_seq)
    };
    let acked = match acked {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the sync state; the MQTT uplink does not start");
            return;
        }
    };
    let topics = Topics::new(&uplink.config.topic_prefix, &uplink.store_id);
    let mut ctx = session::Ctx::new(uplink, topics, acked);
    let brokers = ctx.uplink.config.brokers.clone();
    let max_backoff = ctx.uplink.max_backoff;
    let mut backoff = Backoff::new(Duration::from_secs(1), max_backoff);
    // A refused connection or a broken setting needs a human: retry slowly.
    let slow = || Duration::from_secs(60).min(max_backoff);
    let mut turn = 0usize;
    while !shutdown.is_triggered() && !brokers.is_empty() {
        let url = &brokers[turn % brokers.len()];
        turn += 1;
        let delay = match connect::options(
            &ctx.uplink.config,
            ctx.uplink.ca_file.as_deref(),
            &ctx.uplink.store_id,
            &ctx.topics,
            url,
        ) {
            Err(e) => {
                tracing::error!(error = %e, "cannot set up the connection to central's broker; trying the next");
                backoff.next_delay().max(slow())
            }
            Ok((options, name)) => {
                tracing::info!(broker = %name, "connecting to central's broker");
                match session::run(&mut ctx, options, &name, &mut shutdown).await {
                    session::Ended::Shutdown => break,
                    session::Ended::Lost { connected, refused } => {
                        ctx.lost();
                        if connected {
                            backoff.reset();
                        }
                        let d = backoff.next_delay();
                        if refused { d.max(slow()) } else { d }
                    }
                }
            }
        };
        if !shutdown.sleep(delay).await {
            break;
        }
    }
    ctx.write_status_file();
}
