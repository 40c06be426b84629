//! Watches the antenna board: raises an `antenna_quiet` alert when an
//! antenna that read before has read nothing for `rfid.quiet_after_s`
//! (a cable pulled, an antenna knocked off its mount, a zone emptied),
//! and resolves it once the antenna reads again. Alerts are events like
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

/// The alert's code.
pub const CODE: &str = "antenna_quiet";

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
        let quiet_s = (now - a.last_read).num_seconds();
        if quiet_s < quiet_after_s as i64 {
            // Resolving an alert that is not open is a no-op.
            alerts::resolve(
                w,
                &a.device,
                CODE,
                &subject,
                format!("antenna {} of {} reads again", a.antenna, a.device),
            )?;
            continue;
        }
        let mut context = serde_json::Map::new();
        context.insert("device".into(), a.device.clone().into());
        context.insert("antenna".into(), a.antenna.into());
        context.insert("zone".into(), a.zone.clone().into());
        context.insert(
            "last_read".into(),
            crate::event::format_ts(&a.last_read).into(),
        );
        alerts::raise(
            w,
            &a.device,
            CODE,
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
