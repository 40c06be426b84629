//! Watches the antenna board: raises an `antenna_quiet` alert when an
//! antenna that read before has read nothing for `rfid.quiet_after_s`
//! (a cable pulled, an antenna knocked off its mount, a zone emptied),
//! and resolves it once the antenna reads again; raises
//! `antenna_disconnected` while the reader says an antenna is not
//! connected (its `AntennaEvent`), resolved when it is again. Alerts are events like
//! any other, so they reach central and survive restarts; what the board
//! holds does not (an antenna counts again after its first read).

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Shutdown;
use crate::db::{StoreError, WriteTx, Writer};
use crate::domain::alerts;
use crate::event::Severity;
use crate::health::antennas::{AntennaBoard, AntennaStats};

/// How often the board is checked.
pub const PERIOD: Duration = Duration::from_secs(2);

/// The alerts' codes.
pub const QUIET: &str = "antenna_quiet";
pub const DISCONNECTED: &str = "antenna_disconnected";

/// The alert's subject: one per antenna port of a device.
pub fn subject(device: &str, antenna: u16) -> String {
    format!("{device}/antenna-{antenna}")
}

pub async fn run(writer: Writer, board: AntennaBoard, quiet_after_s: u64, mut shutdown: Shutdown) {
    loop {
        let antennas = board.snapshot();
        if !antennas.is_empty() {
            let now = Utc::now();
            let result = writer
                .transact(move |w| check(w, &antennas, quiet_after_s, now))
                .await;
            if let Err(e) = result {
                tracing::warn!(error = %e, "cannot record antenna alerts");
            }
        }
        if !shutdown.sleep(PERIOD).await {
            break;
        }
    }
}

fn check(
    w: &mut WriteTx<'_>,
    antennas: &[AntennaStats],
    quiet_after_s: u64,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    for a in antennas {
        let subject = subject(&a.device, a.antenna);
        check_connected(w, a, &subject)?;
        let Some(last_read) = a.last_read else {
            continue; // never read: nothing to miss
        };
        let quiet_s = (now - last_read).num_seconds();
        if quiet_s < quiet_after_s as i64 {
            // Resolving an alert that is not open is a no-op.
            alerts::resolve(
                w,
                &a.device,
                QUIET,
                &subject,
                format!("antenna {} of {} reads again", a.antenna, a.device),
            )?;
            continue;
        }
        let mut context = context(a);
        context.insert(
            "last_read".into(),
            crate::event::format_ts(&last_read).into(),
        );
        alerts::raise(
            w,
            &a.device,
            QUIET,
            &subject,
            Severity::Warning,
            format!(
                "antenna {} of {} ({}) has read nothing for more than {quiet_after_s} s",
                a.antenna, a.device, a.zone
            ),
            context,
        )?;
    }
    Ok(())
}

fn check_connected(w: &mut WriteTx<'_>, a: &AntennaStats, subject: &str) -> Result<(), StoreError> {
    match a.connected {
        Some(false) => {
            alerts::raise(
                w,
                &a.device,
                DISCONNECTED,
                subject,
                Severity::Warning,
                format!(
                    "{} reports antenna {} ({}) disconnected",
                    a.device, a.antenna, a.zone
                ),
                context(a),
            )?;
        }
        Some(true) => {
            alerts::resolve(
                w,
                &a.device,
                DISCONNECTED,
                subject,
                format!("antenna {} of {} is connected again", a.antenna, a.device),
            )?;
        }
        None => {}
    }
    Ok(())
}

fn context(a: &AntennaStats) -> serde_json::Map<String, serde_json::Value> {
    let mut context = serde_json::Map::new();
    context.insert("device".into(), a.device.clone().into());
    context.insert("antenna".into(), a.antenna.into());
    context.insert("zone".into(), a.zone.clone().into());
    context
}
