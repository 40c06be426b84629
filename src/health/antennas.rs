//! Per-antenna read statistics of RFID readers that report antenna ports
//! (the `llrp` transport): reads, a recent mean RSSI, the last read and
//! whether the reader says the antenna is connected, for `/metrics` and
//! for the `antenna_quiet` and `antenna_disconnected` alerts. The transport writes,
//! the metrics and the antenna watcher read; nothing here is persisted
//! (a restart starts counting again, like every counter).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};

/// How long after a reported disconnect reads still count as in flight
/// rather than as proof the antenna is back: a report may be on its way
/// when the reader notices the cable (llrpkit's emulator sends one read
/// after its AntennaEvent).
const IN_FLIGHT_S: i64 = 5;

/// Weight of the newest read in the running RSSI mean: about the last 20
/// reads count, so a detuned or blocked antenna shows within seconds.
const RSSI_WEIGHT: f64 = 0.05;

/// One antenna port of one device.
#[derive(Debug, Clone, PartialEq)]
pub struct AntennaStats {
    pub device: String,
    pub antenna: u16,
    pub zone: String,
    /// Reads since the agent started.
    pub reads: u64,
    /// Exponentially weighted mean of the peak RSSI; `None` until a read
    /// carried one.
    pub rssi_mean_dbm: Option<f64>,
    /// `None` until the antenna read.
    pub last_read: Option<DateTime<Utc>>,
    /// What the reader last said (an `AntennaEvent`), or `true` once the
    /// antenna reads well after a disconnect: readers announce only
    /// changes, and one made while the agent was not connected would
    /// otherwise never be learnt.
    pub connected: Option<bool>,
    /// When `connected` was last set by an event.
    pub reported_at: Option<DateTime<Utc>>,
}

/// Shared, cheap to clone.
#[derive(Clone, Default)]
pub struct AntennaBoard {
    inner: Arc<Mutex<BTreeMap<(String, u16), AntennaStats>>>,
}

impl AntennaBoard {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<(String, u16), AntennaStats>> {
        // Counters only: a panic elsewhere cannot leave them inconsistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Count one read of `device`'s `antenna` at `at`.
    pub fn record(
        &self,
        device: &str,
        antenna: u16,
        zone: &str,
        rssi_dbm: Option<i32>,
        at: DateTime<Utc>,
    ) {
        let mut map = self.lock();
        let s = entry(&mut map, device, antenna, zone);
        s.reads += 1;
        s.last_read = Some(s.last_read.map_or(at, |l| l.max(at)));
        let in_flight = s
            .reported_at
            .is_some_and(|r| (at - r).num_seconds() < IN_FLIGHT_S);
        if s.connected == Some(false) && !in_flight {
            s.connected = Some(true);
        }
        if let Some(r) = rssi_dbm {
            let r = f64::from(r);
            s.rssi_mean_dbm = Some(match s.rssi_mean_dbm {
                Some(m) => m + RSSI_WEIGHT * (r - m),
                None => r,
            });
        }
    }

    /// The reader says `antenna` was connected or disconnected.
    pub fn set_connected(
        &self,
        device: &str,
        antenna: u16,
        zone: &str,
        connected: bool,
        at: DateTime<Utc>,
    ) {
        let mut map = self.lock();
        let s = entry(&mut map, device, antenna, zone);
        s.connected = Some(connected);
        s.reported_at = Some(at);
    }

    /// Every antenna that read or was reported on, by device and port.
    pub fn snapshot(&self) -> Vec<AntennaStats> {
        self.lock().values().cloned().collect()
    }
}

fn entry<'m>(
    map: &'m mut BTreeMap<(String, u16), AntennaStats>,
    device: &str,
    antenna: u16,
    zone: &str,
) -> &'m mut AntennaStats {
    let s = map
        .entry((device.to_string(), antenna))
        .or_insert_with(|| AntennaStats {
            device: device.to_string(),
            antenna,
            zone: zone.to_string(),
            reads: 0,
            rssi_mean_dbm: None,
            last_read: None,
            connected: None,
            reported_at: None,
        });
    s.zone = zone.to_string();
    s
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone, Utc};

    use super::AntennaBoard;

    #[test]
    fn a_read_in_flight_does_not_undo_a_disconnect_but_a_later_one_does() {
        let board = AntennaBoard::default();
        let t0 = Utc.timestamp_opt(1_764_547_200, 0).unwrap();
        board.record("dock", 3, "backroom", Some(-55), t0);
        board.set_connected("dock", 3, "backroom", false, t0);
        board.record("dock", 3, "backroom", Some(-55), t0 + Duration::seconds(1));
        assert_eq!(board.snapshot()[0].connected, Some(false));
        board.record("dock", 3, "backroom", Some(-40), t0 + Duration::seconds(60));
        let s = &board.snapshot()[0];
        assert_eq!(s.connected, Some(true));
        assert_eq!(s.reads, 3);
        // -55, -55, then 5 % of the way to -40.
        assert_eq!(s.rssi_mean_dbm, Some(-54.25));
    }
}
