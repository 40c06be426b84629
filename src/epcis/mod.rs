//! GS1 EPCIS 2.0 output: the journal as an EPCISDocument (JSON-LD), for
//! `storegate export --format epcis` and `GET /v1/epcis/events`.
//!
//! [`map`] turns one journal event into one ObjectEvent (or nothing, for
//! kinds EPCIS has no word for), [`location`] builds the SGLNs of the store
//! and its zones from `[epcis]`, and [`document`] pages the journal into
//! documents. Nothing here writes: the output is read from committed
//! journal rows only.

pub mod document;
pub mod location;
pub mod map;

use std::collections::BTreeMap;

use crate::config::{Config, EpcisConfig};
pub use location::Locations;

/// Why there is no EPCIS output: the configuration lacks what it needs.
#[derive(Debug, thiserror::Error)]
#[error(
    "EPCIS output needs the store's location: add an [epcis] table with gln (the store's 13-digit GLN) and company_prefix_digits to the configuration (docs/config.md, \"[epcis]\")"
)]
pub struct NotConfigured;

/// What the mapping needs besides the events: the store's identity and
/// locations, and the zone of each device (for its sensor readings).
#[derive(Debug, Clone)]
pub struct Setup {
    /// The store id, part of every eventID.
    pub store_id: String,
    /// The SGLNs of the store and its zones.
    pub locations: Locations,
    /// Device id -> its configured `zone`.
    pub device_zones: BTreeMap<String, String>,
}

impl Setup {
    /// A setup from its parts.
    pub fn new(
        store_id: &str,
        epcis: &EpcisConfig,
        device_zones: BTreeMap<String, String>,
    ) -> Setup {
        Setup {
            store_id: store_id.to_string(),
            locations: Locations::new(epcis),
            device_zones,
        }
    }

    /// The setup of a store's configuration, or [`NotConfigured`] when it
    /// has no `[epcis]` table.
    pub fn from_config(config: &Config) -> Result<Setup, NotConfigured> {
        let epcis = config.epcis.as_ref().ok_or(NotConfigured)?;
        let zones = config
            .devices
            .iter()
            .filter_map(|d| Some((d.id.clone(), d.zone.clone()?)))
            .collect();
        Ok(Setup::new(&config.store_id, epcis, zones))
    }
}
