//! The store's heartbeat (spec/fleet.md section 3): one JSON body, built
//! from the database and the health board, published at start, on every
//! change of a field (at most once per [`MIN_GAP`]) and every
//! `central.heartbeat_s`. Over MQTT the uplink publishes it retained on
//! `{p}/{s}/status`; over HTTP [`run_http`] sends it as
//! `PUT /v1/stores/{s}/status`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use super::client::Central;
use crate::db::{self, StoreError};
use crate::event::format_ts;
use crate::health::HealthBoard;
use crate::shutdown::Shutdown;

/// Changes are published at most this often.
pub const MIN_GAP: Duration = Duration::from_secs(5);
/// How often the fields are looked at.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// What the heartbeat is built from.
#[derive(Clone)]
pub struct Source {
    pub db_path: PathBuf,
    pub health: HealthBoard,
    pub store_id: String,
    pub started_at: DateTime<Utc>,
}

impl Source {
    /// The body, `at` now. Reads the database (call it off the runtime).
    pub fn body(&self) -> Result<Value, StoreError> {
        let conn = db::open_read(&self.db_path)?;
        let head = db::journal::head(&conn)?;
        let acked = super::state::read(&conn)?.last_acked_seq;
        let mut alerts: BTreeMap<String, u64> = BTreeMap::new();
        for a in crate::domain::alerts::open_alerts(&conn)? {
            *alerts.entry(a.code).or_default() += 1;
        }
        let tasks = crate::domain::tasks::open_counts(&conn)?;
        let devices = self.health.snapshot();
        let running = db::central_config::running(&conn)?;
        let down_ids: Vec<&str> = devices
            .iter()
            .filter(|d| !d.up)
            .map(|d| d.id.as_str())
            .collect();
        Ok(json!({
            "online": true,
            "store_id": self.store_id,
            "agent_version": crate::VERSION,
            "started_at": format_ts(&self.started_at),
            "at": format_ts(&Utc::now()),
            // Central's config that runs (fleet.md 4); null: the local
            // file alone. A rejected newer one is named too (its problems
            // are in the config_rejected alert).
            "config_version": running.as_ref().map(|c| c.version),
            "config_sha256": running.as_ref().map(|c| c.sha256.clone()),
            "config_state": running.as_ref().map_or("local", |c| c.state.as_str()),
            "config_rejected_version": db::central_config::rejected_version(&conn)?,
            "backlog": (head - acked).max(0),
            "acked_through": acked,
            "devices": {
                "up": devices.len() - down_ids.len(),
                "down": down_ids.len(),
                "down_ids": down_ids,
            },
            "open_alerts": alerts,
            "open_tasks": tasks,
            "disk_used_bytes": db::size_on_disk(&self.db_path),
        }))
    }
}

/// The last will and the goodbye: `{"online": false, "store_id", "at"}`.
pub fn offline(store_id: &str) -> Value {
    json!({"online": false, "store_id": store_id, "at": format_ts(&Utc::now())})
}

/// Whether two bodies differ in anything but `at`.
fn changed(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            o.remove("at");
        }
        v
    };
    strip(a) != strip(b)
}

/// Build bodies until shutdown and hand each one to publish to `out`:
/// the first at once, then on change (at most once per [`MIN_GAP`]) and
/// every `every`.
pub async fn run(
    source: Source,
    every: Duration,
    out: watch::Sender<Option<Arc<Value>>>,
    mut shutdown: Shutdown,
) {
    let mut last: Option<(Value, Instant)> = None;
    loop {
        let s = source.clone();
        match tokio::task::spawn_blocking(move || s.body()).await {
            Ok(Ok(body)) => {
                let now = Instant::now();
                let due = match &last {
                    None => true,
                    Some((prev, at)) => {
                        let since = now.duration_since(*at);
                        since >= every || (since >= MIN_GAP && changed(prev, &body))
                    }
                };
                if due {
                    out.send_replace(Some(Arc::new(body.clone())));
                    last = Some((body, now));
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot build the heartbeat; will retry"),
            Err(e) => tracing::warn!(error = %e, "heartbeat task failed; will retry"),
        }
        if !shutdown.sleep(LOOK_EVERY).await {
            break;
        }
    }
}

/// Over HTTP: `PUT /v1/stores/{s}/status` with every body [`run`] makes.
/// A failed PUT is logged at debug and not retried: the next heartbeat
/// replaces it.
pub async fn run_http(
    central: Arc<Central>,
    mut bodies: watch::Receiver<Option<Arc<Value>>>,
    mut shutdown: Shutdown,
) {
    loop {
        tokio::select! {
            changed = bodies.changed() => if changed.is_err() { break },
            _ = shutdown.wait() => break,
        }
        let Some(body) = bodies.borrow_and_update().clone() else {
            continue;
        };
        match central.put_status(&body).await {
            Ok(200..=299) => {}
            Ok(status) => tracing::debug!(status, "central did not take the heartbeat"),
            Err(e) => tracing::debug!(error = %e, "cannot send the heartbeat"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_alone_is_no_change() {
        let a = json!({"at": "1", "backlog": 0});
        assert!(!changed(&a, &json!({"at": "2", "backlog": 0})));
        assert!(changed(&a, &json!({"at": "1", "backlog": 1})));
    }
}
