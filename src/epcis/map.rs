//! One journal event -> one EPCIS 2.0 ObjectEvent (JSON-LD), or nothing
//! for kinds EPCIS has no word for. Pure: everything the mapping needs
//! comes in as arguments, so the same event always maps the same way.
//!
//! | journal kind   | ObjectEvent                                              |
//! |----------------|----------------------------------------------------------|
//! | tag_arrived    | epcList, OBSERVE, bizStep arriving, zone                 |
//! | tag_moved      | as arrived, sourceList location = the zone it left       |
//! | tag_departed   | epcList, OBSERVE, bizStep departing, readPoint only      |
//! | count          | quantityList (counted), OBSERVE, cycle_counting, zone    |
//! | receipt        | quantityList, OBSERVE, receiving, store                  |
//! | sale           | quantityList, OBSERVE, retail_selling, retail_sold       |
//! | reading        | sensorElementList (temperature, humidity), sensor_reporting |

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::Setup;
use crate::domain::sgtin::{decode_sgtin96, normalize_gtin};
use crate::event::{Event, EventBody, Reading, TagTransition, format_ts};

/// The JSON-LD prefix of storegate's own terms in a document (the journal
/// seq of each event, paging); declared in the document's `@context`.
pub const NAMESPACE_PREFIX: &str = "storegate";

/// The journal kinds that have an EPCIS mapping.
pub const MAPPED_KINDS: [&str; 7] = [
    "tag_arrived",
    "tag_moved",
    "tag_departed",
    "count",
    "receipt",
    "sale",
    "reading",
];

/// The EPCIS ObjectEvent for `event`, or `None` when its kind has no
/// mapping or it lacks what EPCIS needs (a product with no GTIN, a
/// reading of a quantity or unit with no EPCIS name). `gtin_of` gives a
/// SKU's GTIN-14, if the catalog knows one.
pub fn object_event(
    event: &Event,
    setup: &Setup,
    gtin_of: &mut dyn FnMut(&str) -> Option<String>,
) -> Option<Value> {
    let places = &setup.locations;
    let mut e = match &event.body {
        EventBody::TagArrived(t) => tag_event(t, "arriving", places.zone_or_store(&t.zone)),
        EventBody::TagMoved(t) => {
            let mut e = tag_event(t, "arriving", places.zone_or_store(&t.zone));
            if let Some(from) = t.from_zone.as_deref().and_then(|z| places.zone(z)) {
                e.insert(
                    "sourceList".into(),
                    json!([{"type": "location", "source": from}]),
                );
            }
            e
        }
        EventBody::TagDeparted(t) => {
            // Where the tag went is not known: no bizLocation.
            let mut e = epcs(t);
            e.insert("bizStep".into(), "departing".into());
            e.insert("readPoint".into(), id(places.zone_or_store(&t.zone)));
            e
        }
        EventBody::Count(c) => {
            let zone = places.zone_or_store(&c.zone);
            let mut e = quantity(gtin_of(&c.sku)?, c.counted);
            e.insert("bizStep".into(), "cycle_counting".into());
            e.insert("readPoint".into(), id(zone.clone()));
            e.insert("bizLocation".into(), id(zone));
            e
        }
        EventBody::Receipt(r) => {
            let mut e = quantity(gtin_of(&r.sku)?, r.qty);
            e.insert("bizStep".into(), "receiving".into());
            e.insert("readPoint".into(), id(places.store()));
            e.insert("bizLocation".into(), id(places.store()));
            e
        }
        EventBody::Sale(l) => {
            let gtin = l
                .gtin
                .as_deref()
                .and_then(normalize_gtin)
                .or_else(|| gtin_of(&l.sku))?;
            let mut e = quantity(gtin, l.qty);
            e.insert("bizStep".into(), "retail_selling".into());
            e.insert("disposition".into(), "retail_sold".into());
            e.insert("readPoint".into(), id(places.store()));
            e.insert("bizLocation".into(), id(places.store()));
            e
        }
        EventBody::Reading(r) => {
            let mut e = sensor(r, event)?;
            let zone = setup.device_zones.get(&event.device);
            let at = zone.map_or_else(|| places.store(), |z| places.zone_or_store(z));
            e.insert("readPoint".into(), id(at));
            e
        }
        _ => return None,
    };
    e.insert("type".into(), "ObjectEvent".into());
    e.insert("eventTime".into(), format_ts(&event.ts).into());
    // Journal times are UTC.
    e.insert("eventTimeZoneOffset".into(), "+00:00".into());
    e.insert(
        "eventID".into(),
        event_id(&setup.store_id, event.seq).into(),
    );
    e.insert("action".into(), "OBSERVE".into());
    e.insert(format!("{NAMESPACE_PREFIX}:seq"), event.seq.into());
    Some(Value::Object(e))
}

/// An arrival at (or move into) a zone: the tag is now there.
fn tag_event(t: &TagTransition, biz_step: &str, zone: String) -> Map<String, Value> {
    let mut e = epcs(t);
    e.insert("bizStep".into(), biz_step.into());
    e.insert("readPoint".into(), id(zone.clone()));
    e.insert("bizLocation".into(), id(zone));
    e
}

/// `epcList` with the tag's EPC: its SGTIN URI when it is an SGTIN-96,
/// else the raw 96-bit URI (TDS), which claims nothing about its scheme.
fn epcs(t: &TagTransition) -> Map<String, Value> {
    let uri = match decode_sgtin96(&t.epc) {
        Ok(s) => format!(
            "urn:epc:id:sgtin:{}.{}.{}",
            s.company_prefix, s.item_reference, s.serial
        ),
        Err(_) => format!("urn:epc:raw:96.x{}", t.epc.trim().to_ascii_uppercase()),
    };
    let mut e = Map::new();
    e.insert("epcList".into(), json!([uri]));
    e
}

/// `quantityList` of one product class as a GS1 Digital Link URI (the
/// GTIN alone, no company prefix length needed); units, so no `uom`.
fn quantity(gtin14: String, qty: i64) -> Map<String, Value> {
    let mut e = Map::new();
    e.insert(
        "quantityList".into(),
        json!([{"epcClass": format!("https://id.gs1.org/01/{gtin14}"), "quantity": qty}]),
    );
    e
}

/// `sensorElementList` of a temperature or humidity reading, `None` for
/// other readings and units EPCIS has no code for.
fn sensor(r: &Reading, event: &Event) -> Option<Map<String, Value>> {
    let (kind, uom) = match (r.name.as_str(), r.unit.as_str()) {
        ("temperature", "C" | "°C" | "degC") => ("Temperature", "CEL"),
        ("temperature", "F" | "°F" | "degF") => ("Temperature", "FAH"),
        ("temperature", "K") => ("Temperature", "KEL"),
        ("humidity", "%" | "%RH") => ("RelativeHumidity", "P1"),
        _ => return None,
    };
    if !r.value.is_finite() {
        return None;
    }
    let mut e = Map::new();
    e.insert("bizStep".into(), "sensor_reporting".into());
    e.insert(
        "sensorElementList".into(),
        json!([{
            "sensorMetadata": {"time": format_ts(&event.ts)},
            "sensorReport": [{"type": kind, "value": r.value, "uom": uom}],
        }]),
    );
    Some(e)
}

fn id(uri: String) -> Value {
    json!({ "id": uri })
}

/// A stable eventID: a UUID (version 8, RFC 9562) from a SHA-256 of the
/// store and the journal seq, so that exporting the same event twice gives
/// the same id and a repository can recognise the copy.
pub fn event_id(store_id: &str, seq: i64) -> String {
    let digest = Sha256::digest(format!("storegate/{store_id}/{seq}"));
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | 0x80; // version 8
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 9562 variant
    let h = hex::encode(b);
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EpcisConfig;
    use crate::event::{Count, SaleLine, StockReceipt, ts_from_millis};

    fn setup() -> Setup {
        Setup::new(
            "store-1",
            &EpcisConfig {
                gln: "0614141000005".into(),
                company_prefix_digits: 7,
                zones: [("salesfloor".to_string(), "1".to_string())].into(),
            },
            [("fridge-1".to_string(), "cold".to_string())].into(),
        )
    }

    fn event(body: EventBody) -> Event {
        Event {
            seq: 42,
            ts: ts_from_millis(1_763_805_600_123),
            device: "fridge-1".into(),
            body,
        }
    }

    fn map(body: EventBody) -> Option<Value> {
        object_event(&event(body), &setup(), &mut |sku| {
            (sku == "SKU-1").then(|| "04006381333931".to_string())
        })
    }

    fn tag(zone: &str, from: Option<&str>) -> TagTransition {
        TagTransition {
            epc: "3074257bf7194e4000001a85".into(),
            gtin: None,
            serial: None,
            sku: None,
            zone: zone.into(),
            from_zone: from.map(str::to_string),
            reader: "door".into(),
            antenna: None,
            rssi_dbm: None,
            first_seen: ts_from_millis(0),
            last_seen: ts_from_millis(0),
        }
    }

    #[test]
    fn tags_become_observations_with_their_sgtin() {
        let e = map(EventBody::TagMoved(tag("salesfloor", Some("backroom")))).unwrap();
        assert_eq!(
            e["epcList"],
            json!(["urn:epc:id:sgtin:0614141.812345.6789"])
        );
        assert_eq!(e["action"], "OBSERVE");
        assert_eq!(e["bizLocation"]["id"], "urn:epc:id:sgln:0614141.00000.1");
        assert_eq!(
            e["sourceList"][0]["source"],
            "urn:epc:id:sgln:0614141.00000.backroom"
        );
        assert_eq!(e["eventTime"], "2025-11-22T10:00:00.123Z");
        assert_eq!(e["storegate:seq"], 42);
        let gone = map(EventBody::TagDeparted(tag("salesfloor", None))).unwrap();
        assert_eq!(gone["bizStep"], "departing");
        assert!(gone.get("bizLocation").is_none());
        let mut raw = tag("x", None);
        raw.epc = "E2801160600002054C2C4E4F".into();
        let e = map(EventBody::TagArrived(raw)).unwrap();
        assert_eq!(e["epcList"][0], "urn:epc:raw:96.xE2801160600002054C2C4E4F");
    }

    #[test]
    fn products_need_a_gtin() {
        let count = |sku: &str| {
            EventBody::Count(Count {
                session_id: "C".into(),
                zone: "salesfloor".into(),
                sku: sku.into(),
                counted: 12,
                expected: 14,
                method: "scan".into(),
            })
        };
        let e = map(count("SKU-1")).unwrap();
        assert_eq!(e["bizStep"], "cycle_counting");
        assert_eq!(
            e["quantityList"],
            json!([{"epcClass": "https://id.gs1.org/01/04006381333931", "quantity": 12}])
        );
        assert_eq!(map(count("SKU-unknown")), None);
        let receipt = map(EventBody::Receipt(StockReceipt {
            delivery_id: "D".into(),
            sku: "SKU-1".into(),
            qty: 24,
        }))
        .unwrap();
        assert_eq!(receipt["bizStep"], "receiving");
        let sale = map(EventBody::Sale(SaleLine {
            receipt_id: "R".into(),
            line: 1,
            sku: "SKU-2".into(),
            gtin: Some("4006381333931".into()),
            qty: 2,
            unit_price_minor: 249,
            currency: "EUR".into(),
            pos: "1".into(),
            member_hash: Some("secret-hash".into()),
        }))
        .unwrap();
        assert_eq!(sale["disposition"], "retail_sold");
        assert_eq!(
            sale["quantityList"][0]["epcClass"],
            "https://id.gs1.org/01/04006381333931"
        );
        assert!(!sale.to_string().contains("secret-hash"));
    }

    #[test]
    fn readings_become_sensor_reports() {
        let reading = |name: &str, unit: &str| {
            EventBody::Reading(Reading {
                name: name.into(),
                value: 4.5,
                unit: unit.into(),
            })
        };
        let e = map(reading("temperature", "C")).unwrap();
        assert_eq!(
            e["sensorElementList"][0]["sensorReport"][0],
            json!({"type": "Temperature", "value": 4.5, "uom": "CEL"})
        );
        assert_eq!(e["readPoint"]["id"], "urn:epc:id:sgln:0614141.00000.cold");
        assert_eq!(map(reading("temperature", "bananas")), None);
        assert_eq!(map(reading("pressure", "hPa")), None);
    }

    #[test]
    fn event_ids_are_stable_uuids() {
        let a = event_id("s", 1);
        assert_eq!(a, event_id("s", 1));
        assert_ne!(a, event_id("s", 2));
        assert_ne!(a, event_id("t", 1));
        assert_eq!(a.len(), "urn:uuid:".len() + 36);
        assert_eq!(&a["urn:uuid:".len() + 14..][..1], "8");
    }
}
