//! The `[llrp]` table of a firmware profile: a declarative inventory
//! (antennas, power, session, search mode, report trigger, keepalive) that
//! the transport turns into one ROSpec. A device's config may override the
//! antennas, power, session and keepalive (spec/config.md).

use serde::Deserialize;

/// Impinj inventory search modes by name (Impinj LTK
/// `ImpinjInventorySearchType`).
const SEARCH_MODES: [(&str, u16); 6] = [
    ("reader-selected", 0),
    ("single-target", 1),
    ("dual-target", 2),
    ("tag-focus", 3),
    ("single-target-reset", 5),
    ("dual-target-b-to-a", 6),
];

/// Whose LLRP extensions a reader understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Vendor {
    /// Plain LLRP only.
    #[default]
    Generic,
    /// Impinj Speedway / R700: the search mode extension may be used.
    Impinj,
    /// Zebra FX7500/FX9600: plain LLRP.
    Zebra,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlrpParams {
    pub vendor: Vendor,
    /// Antenna ports to read with; empty means every port of the reader.
    pub antennas: Vec<u16>,
    /// Transmit power; `None` leaves the reader's default. Mapped to the
    /// nearest table entry at or below it from the reader's capabilities.
    pub tx_power_dbm: Option<f64>,
    /// Gen2 session (0-3): 1 or 2 for counting a stable population, 0
    /// for fast re-reads at a door.
    pub session: Option<u8>,
    /// Expected tags in the field, a singulation hint.
    pub tag_population: u16,
    /// Impinj search mode by name (`vendor = "impinj"` only).
    pub search_mode: Option<String>,
    /// RF mode index (reader-specific table); `None` leaves the default.
    pub mode_index: Option<u16>,
    /// Report after this many tags; 1 streams every read.
    pub report_every_n_tags: u16,
    /// Seconds between the reader's keepalives; two missed means the
    /// connection is dead.
    pub keepalive_s: u64,
}

impl Default for LlrpParams {
    fn default() -> Self {
        LlrpParams {
            vendor: Vendor::Generic,
            antennas: Vec::new(),
            tx_power_dbm: None,
            session: None,
            tag_population: 32,
            search_mode: None,
            mode_index: None,
            report_every_n_tags: 1,
            keepalive_s: 10,
        }
    }
}

impl LlrpParams {
    /// Check what serde cannot, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        check_antennas(&self.antennas).map_err(|e| format!("llrp.antennas: {e}"))?;
        if let Some(p) = self.tx_power_dbm {
            check_power(p).map_err(|e| format!("llrp.tx_power_dbm: {e}"))?;
        }
        if let Some(s) = self.session {
            check_session(s).map_err(|e| format!("llrp.session: {e}"))?;
        }
        if self.report_every_n_tags == 0 {
            return Err("llrp.report_every_n_tags: must be at least 1".into());
        }
        if !(1..=3600).contains(&self.keepalive_s) {
            return Err("llrp.keepalive_s: must be 1 to 3600 seconds".into());
        }
        if let Some(mode) = &self.search_mode {
            if self.vendor != Vendor::Impinj {
                return Err(
                    "llrp.search_mode: an Impinj extension; set vendor = \"impinj\" or remove it"
                        .into(),
                );
            }
            search_mode_number(mode).ok_or_else(|| {
                let names: Vec<&str> = SEARCH_MODES.iter().map(|(n, _)| *n).collect();
                format!(
                    "llrp.search_mode: unknown mode {mode:?}; use one of {}",
                    names.join(", ")
                )
            })?;
        }
        Ok(())
    }

    /// The Impinj search mode number, when one is set and valid.
    pub fn impinj_search_mode(&self) -> Option<u16> {
        self.search_mode.as_deref().and_then(search_mode_number)
    }
}

fn search_mode_number(name: &str) -> Option<u16> {
    SEARCH_MODES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| *v)
}

/// Antenna ports are 1-based and a reader has a few; duplicates are a typo.
pub fn check_antennas(antennas: &[u16]) -> Result<(), String> {
    if antennas.len() > 64 {
        return Err("at most 64 antennas".into());
    }
    let mut seen = std::collections::BTreeSet::new();
    for a in antennas {
        if *a == 0 {
            return Err("antenna ports count from 1 (leave the list empty for all)".into());
        }
        if !seen.insert(*a) {
            return Err(format!("antenna {a} is listed twice"));
        }
    }
    Ok(())
}

pub fn check_power(dbm: f64) -> Result<(), String> {
    if !(0.0..=40.0).contains(&dbm) {
        return Err(format!("{dbm} dBm is outside 0-40 dBm"));
    }
    Ok(())
}

pub fn check_session(s: u8) -> Result<(), String> {
    if s > 3 {
        return Err(format!("Gen2 sessions are 0-3, not {s}"));
    }
    Ok(())
}

/// The index of the highest power in `table` (index, hundredths of a dBm)
/// that does not exceed `dbm`; the lowest entry when all exceed it.
/// `None` for an empty table.
pub fn power_index(table: &[(u16, i16)], dbm: f64) -> Option<u16> {
    let want = (dbm * 100.0).round() as i32;
    let at_or_below = table
        .iter()
        .filter(|(_, p)| i32::from(*p) <= want)
        .max_by_key(|(_, p)| *p);
    at_or_below
        .or_else(|| table.iter().min_by_key(|(_, p)| *p))
        .map(|(i, _)| *i)
}
