//! Where an EPCIS event happened, as SGLN EPC URIs (GS1 Tag Data
//! Standard): the store's GLN split into company prefix and location
//! reference, with an extension per zone.

use std::collections::BTreeMap;

use crate::config::{EpcisConfig, is_sgln_extension};

/// The SGLN extension that means "the location of the GLN itself".
const NO_EXTENSION: &str = "0";

/// The store's locations: its own SGLN and one per zone.
#[derive(Debug, Clone)]
pub struct Locations {
    /// `urn:epc:id:sgln:{company prefix}.{location reference}.` - the
    /// part every SGLN of this store shares.
    stem: String,
    /// Zone name -> SGLN extension, from `[epcis] zones`.
    zones: BTreeMap<String, String>,
}

impl Locations {
    /// The locations of a validated `[epcis]` table.
    pub fn new(config: &EpcisConfig) -> Locations {
        // The check digit is not part of an SGLN; config checked that the
        // GLN is 13 ASCII digits and the prefix 6..=12 of them.
        let digits = config.gln.get(..12).unwrap_or_default();
        let split = config.company_prefix_digits.min(digits.len());
        let (prefix, reference) = digits.split_at(split);
        Locations {
            stem: format!("urn:epc:id:sgln:{prefix}.{reference}."),
            zones: config.zones.clone(),
        }
    }

    /// The SGLN of the store as a whole.
    pub fn store(&self) -> String {
        format!("{}{NO_EXTENSION}", self.stem)
    }

    /// The SGLN of a zone: its configured extension, else the zone name
    /// itself when it can stand as one; `None` when neither (the event
    /// then says only what it can: the store).
    pub fn zone(&self, zone: &str) -> Option<String> {
        let extension = match self.zones.get(zone) {
            Some(e) => e.as_str(),
            None if is_sgln_extension(zone) => zone,
            None => return None,
        };
        Some(format!("{}{extension}", self.stem))
    }

    /// The zone's SGLN, or the store's when the zone has none.
    pub fn zone_or_store(&self, zone: &str) -> String {
        self.zone(zone).unwrap_or_else(|| self.store())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn locations(prefix_digits: usize) -> Locations {
        Locations::new(&EpcisConfig {
            gln: "0614141000005".into(),
            company_prefix_digits: prefix_digits,
            zones: [("salesfloor".to_string(), "1".to_string())].into(),
        })
    }

    #[test]
    fn the_gln_splits_at_the_company_prefix() {
        let l = locations(7);
        assert_eq!(l.store(), "urn:epc:id:sgln:0614141.00000.0");
        assert_eq!(
            l.zone("salesfloor").unwrap(),
            "urn:epc:id:sgln:0614141.00000.1"
        );
        assert_eq!(
            l.zone("backroom").unwrap(),
            "urn:epc:id:sgln:0614141.00000.backroom"
        );
        assert_eq!(l.zone("back room"), None);
        assert_eq!(l.zone_or_store("back room"), l.store());
        // A 12-digit prefix leaves an empty location reference (TDS allows it).
        assert_eq!(locations(12).store(), "urn:epc:id:sgln:061414100000..0");
    }
}
