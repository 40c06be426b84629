//! Per-antenna read statistics of RFID readers that report antenna ports
//! (the `llrp` transport): reads, a recent mean RSSI and the last read,
//! for `/metrics` and for the `antenna_quiet` alert. The transport writes,
//! the metrics and the antenna watcher read; nothing here is persisted
//! (a restart starts counting again, like every counter).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};

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
    pub last_read: DateTime<Utc>,
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
        let s = map
            .entry((device.to_string(), antenna))
            .or_insert_with(|| AntennaStats {
                device: device.to_string(),
                antenna,
                zone: zone.to_string(),
                reads: 0,
                rssi_mean_dbm: None,
                last_read: at,
            });
        s.reads += 1;
        s.last_read = s.last_read.max(at);
        s.zone = zone.to_string();
        if let Some(r) = rssi_dbm {
            let r = f64::from(r);
            s.rssi_mean_dbm = Some(match s.rssi_mean_dbm {
                Some(m) => m + RSSI_WEIGHT * (r - m),
                None => r,
            });
        }
    }

    /// Every antenna that has read at least once, by device and port.
    pub fn snapshot(&self) -> Vec<AntennaStats> {
        self.lock().values().cloned().collect()
    }
}
