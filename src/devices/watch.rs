//! Watches the health board: opens a `device_offline` alert when a device
//! has been down longer than its `offline_alert_s` and resolves it when the
//! device is back; persists the board so `storegate status` (another
//! process) can show it.

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use rusqlite::params;

use super::Shutdown;
use crate::db::{SqlContext, StoreError, WriteTx, Writer};
use crate::domain::alerts;
use crate::event::Severity;
use crate::health::{DeviceHealth, HealthBoard};

/// How often the board is checked and persisted.
pub const PERIOD: Duration = Duration::from_secs(2);

pub async fn run(
    writer: Writer,
    health: HealthBoard,
    offline_alert_s: HashMap<String, u64>,
    mut shutdown: Shutdown,
) {
    let mut last_written: Vec<DeviceHealth> = Vec::new();
    loop {
        let board = health.snapshot();
        let thresholds = offline_alert_s.clone();
        let changed = board != last_written;
        let snapshot = board.clone();
        let result = writer
            .transact(move |w| {
                check_offline(w, &snapshot, &thresholds)?;
                if changed {
                    persist(w, &snapshot)?;
                }
                Ok(())
            })
            .await;
        match result {
            Ok(()) => last_written = board,
            Err(e) => tracing::warn!(error = %e, "cannot record device health"),
        }
        if !shutdown.sleep(PERIOD).await {
            break;
        }
    }
}

fn check_offline(
    w: &mut WriteTx<'_>,
    board: &[DeviceHealth],
    thresholds: &HashMap<String, u64>,
) -> Result<(), StoreError> {
    let now = Utc::now();
    for h in board {
        let limit = thresholds.get(&h.id).copied().unwrap_or(120);
        if h.up {
            alerts::resolve(
                w,
                &h.id,
                "device_offline",
                &h.id,
                format!("{} is back online", h.id),
            )?;
        } else if (now - h.since).num_seconds() >= limit as i64 {
            let mut context = serde_json::Map::new();
            context.insert("device".into(), h.id.clone().into());
            context.insert(
                "down_since".into(),
                crate::event::format_ts(&h.since).into(),
            );
            if let Some(e) = &h.last_error {
                context.insert("last_error".into(), e.clone().into());
            }
            alerts::raise(
                w,
                &h.id,
                "device_offline",
                &h.id,
                Severity::Warning,
                format!(
                    "{} ({}) has been offline for more than {limit} s",
                    h.id, h.profile
                ),
                context,
            )?;
        }
    }
    Ok(())
}

fn persist(w: &mut WriteTx<'_>, board: &[DeviceHealth]) -> Result<(), StoreError> {
    let conn = w.conn();
    for h in board {
        let json = serde_json::to_string(h).unwrap_or_default();
        conn.prepare_cached("INSERT INTO device_health (id, health) VALUES (?1, ?2) ON CONFLICT (id) DO UPDATE SET health = excluded.health")
            .and_then(|mut st| st.execute(params![h.id, json]))
            .ctx("persisting device health")?;
    }
    Ok(())
}

/// Read the persisted board (for `status` and the API in other processes).
pub fn read_persisted(conn: &rusqlite::Connection) -> Result<Vec<DeviceHealth>, StoreError> {
    let mut st = conn
        .prepare("SELECT health FROM device_health ORDER BY id")
        .ctx("reading device health")?;
    let rows = st
        .query_map([], |r| r.get::<_, String>(0))
        .ctx("reading device health")?;
    let mut out = Vec::new();
    for row in rows {
        if let Ok(h) = serde_json::from_str(&row.ctx("reading device health")?) {
            out.push(h);
        }
    }
    Ok(out)
}
