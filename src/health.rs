//! Health of the store's ingest: every device, and store-wide problems
//! (the disk quota), in one board that devices, ingest and retention write
//! and the API, metrics and the offline-alert watcher read. It depends on
//! nothing but the event vocabulary, so every part of the house may use it. The board is also
//! persisted (see [`HealthBoard::snapshot`]) so `storegate status` in
//! another process can show it.

pub mod antennas;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceHealth {
    pub id: String,
    pub profile: String,
    pub transport: String,
    pub up: bool,
    /// When `up` last changed (or when the agent started watching).
    #[serde(with = "crate::event::ts_format")]
    pub since: DateTime<Utc>,
    #[serde(default, with = "opt_ts")]
    pub last_frame: Option<DateTime<Utc>>,
    pub frames_ok: u64,
    pub frames_bad: u64,
    pub reconnects: u64,
    #[serde(default)]
    pub last_error: Option<String>,
    /// Set while the device's input cannot be stored (disk full, the
    /// quota): it is held and retried, and the device is not ingesting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stuck: Option<String>,
    /// What the reader was last told to do, for readers the agent
    /// controls (`[device.control]`): `running <preset>` or `stopped`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reading: Option<String>,
    /// Why the agent cannot make the reader do it (unreachable, refused
    /// credentials, unknown preset); cleared when it can again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_error: Option<String>,
}

/// Shared, cheap to clone.
#[derive(Clone, Default)]
pub struct HealthBoard {
    inner: Arc<Mutex<BTreeMap<String, DeviceHealth>>>,
    /// Store-wide conditions that stop or threaten ingest (the disk
    /// quota), by name, with what to do about them.
    problems: Arc<Mutex<BTreeMap<String, String>>>,
    /// Reads per antenna port, for readers that report ports.
    antennas: antennas::AntennaBoard,
}

impl HealthBoard {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, DeviceHealth>> {
        // A panic while holding this lock cannot leave the map half-updated
        // in a way that matters (counters only), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The per-antenna read statistics.
    pub fn antennas(&self) -> &antennas::AntennaBoard {
        &self.antennas
    }

    /// Start watching a device; it counts as down until it connects.
    pub fn register(&self, id: &str, profile: &str, transport: &str) {
        self.lock().insert(
            id.to_string(),
            DeviceHealth {
                id: id.to_string(),
                profile: profile.to_string(),
                transport: transport.to_string(),
                up: false,
                since: crate::event::now_millis(),
                last_frame: None,
                frames_ok: 0,
                frames_bad: 0,
                reconnects: 0,
                last_error: None,
                stuck: None,
                reading: None,
                control_error: None,
            },
        );
    }

    /// Mark up or down; returns true when that is a change.
    pub fn set_up(&self, id: &str, up: bool, error: Option<String>) -> bool {
        let mut map = self.lock();
        let Some(h) = map.get_mut(id) else {
            return false;
        };
        if error.is_some() {
            h.last_error = error;
        }
        if h.up == up {
            return false;
        }
        h.up = up;
        h.since = crate::event::now_millis();
        if !up {
            h.reconnects += 1;
        }
        true
    }

    /// Count frames that parsed and frames that did not.
    pub fn frames(&self, id: &str, ok: u64, bad: u64) {
        if let Some(h) = self.lock().get_mut(id) {
            h.frames_ok += ok;
            h.frames_bad += bad;
            h.last_frame = Some(crate::event::now_millis());
        }
    }

    /// Mark a device's input as held (`Some(why)`) or flowing again;
    /// returns true when that is a change.
    pub fn set_stuck(&self, id: &str, why: Option<String>) -> bool {
        let mut map = self.lock();
        let Some(h) = map.get_mut(id) else {
            return false;
        };
        let changed = h.stuck.is_some() != why.is_some();
        h.stuck = why;
        changed
    }

    /// Record what a controlled reader was told to do (`reading`) and
    /// whether that failed (`error`); returns true when the failure
    /// started or ended (the caller logs once per outage).
    pub fn set_control(&self, id: &str, reading: Option<String>, error: Option<String>) -> bool {
        let mut map = self.lock();
        let Some(h) = map.get_mut(id) else {
            return false;
        };
        let changed = h.control_error.is_some() != error.is_some();
        if reading.is_some() {
            h.reading = reading;
        }
        h.control_error = error;
        changed
    }

    /// Record (`Some(message)`) or clear a store-wide problem.
    pub fn set_problem(&self, name: &str, message: Option<String>) {
        let mut problems = self.problems.lock().unwrap_or_else(|p| p.into_inner());
        match message {
            Some(m) => problems.insert(name.to_string(), m),
            None => problems.remove(name),
        };
    }

    /// Store-wide problems, by name.
    pub fn problems(&self) -> BTreeMap<String, String> {
        self.problems
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Why the store is not fully ingesting, one line per reason; empty
    /// when all is well. The one definition `/healthz` and the metrics use.
    pub fn degraded_reasons(&self) -> Vec<String> {
        let mut reasons: Vec<String> = self
            .problems()
            .into_iter()
            .map(|(name, message)| format!("{name}: {message}"))
            .collect();
        for h in self.lock().values() {
            if let Some(why) = &h.stuck {
                reasons.push(format!("device {} is not ingesting: {why}", h.id));
            } else if !h.up {
                let why = h.last_error.as_deref().unwrap_or("not connected yet");
                reasons.push(format!("device {} is down: {why}", h.id));
            }
            if let Some(why) = &h.control_error {
                reasons.push(format!("device {} cannot be told to read: {why}", h.id));
            }
        }
        reasons
    }

    pub fn get(&self, id: &str) -> Option<DeviceHealth> {
        self.lock().get(id).cloned()
    }

    pub fn snapshot(&self) -> Vec<DeviceHealth> {
        self.lock().values().cloned().collect()
    }

    /// (up, down) counts.
    pub fn counts(&self) -> (usize, usize) {
        let map = self.lock();
        let up = map.values().filter(|h| h.up).count();
        (up, map.len() - up)
    }
}

mod opt_ts {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ts: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match ts {
            Some(t) => s.serialize_str(&crate::event::format_ts(t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| {
            DateTime::parse_from_rfc3339(&t)
                .map(|t| t.with_timezone(&Utc))
                .map_err(serde::de::Error::custom)
        })
        .transpose()
    }
}
