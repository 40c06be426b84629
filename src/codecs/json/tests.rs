use chrono::{DateTime, Utc};
use proptest::prelude::*;
use serde_json::Value;

use super::*;
use crate::codecs::{Decoded, TagRead};
use crate::event::{EventBody, SaleLine};

const ZEBRA: &str = include_str!("../../../firmware-profiles/zebra-fx-iot-connector.toml");
const IMPINJ: &str = include_str!("../../../firmware-profiles/impinj-iot.toml");
const POS: &str = include_str!("../../../firmware-profiles/pos-json.toml");

// The device samples of spec/samples, verbatim.
const ZEBRA_SIMPLE: &str = r#"{"data":{"eventNum":1,"format":"epc","idHex":"3005fb63ac1f3681ec880468","antenna":1,"peakRssi":-39,"channel":911.75,"phase":0,"reads":1,"PC":"3000","CRC":"b06a"},"timestamp":"2019-08-24T14:15:22Z","type":"SIMPLE"}"#;
const ZEBRA_BATCH: &str = r#"[{"data":{"eventNum":7,"format":"epc","idHex":"3074257bf7194e4000001a85"},"timestamp":"2023-04-03T21:50:16.699+0200","type":"SIMPLE"},
 {"data":{"eventNum":8,"format":"epc","idHex":"e280116060000209be3a2b41","antenna":2,"peakRssi":-61,"reads":3},"timestamp":"2023-04-03T21:50:16.702+0200","type":"INVENTORY"}]"#;
const IMPINJ_TAG: &str = r#"{"timestamp":"2021-02-02T22:18:35.658476625Z","hostname":"impinj-14-1f-23","eventType":"tagInventory","tagInventoryEvent":{"epc":"4oARYGAAAgpmgfI_","epcHex":"E28011606000020A6681F23F","pc":"NAA=","antennaPort":1,"antennaName":"Portal1","peakRssiCdbm":-4050,"frequency":915750,"transmitPowerCdbm":3000,"lastSeenTime":"2021-02-02T22:18:35.499734Z","phaseAngle":69.0}}"#;
const IMPINJ_MINIMAL: &str = r#"{"timestamp":"2024-05-10T08:00:01.1Z","hostname":"impinj-14-aa-01","eventType":"tagInventory","tagInventoryEvent":{"epc":"MHQle/cZTkAAABqF","antennaPort":2,"peakRssiCdbm":-5525,"frequency":902750,"transmitPowerCdbm":3000}}"#;
const IMPINJ_STATUS: &str = r#"{"timestamp":"2024-05-10T08:00:00Z","hostname":"impinj-14-aa-01","eventType":"inventoryStatus","inventoryStatusEvent":{"inventoryStatus":"running"}}"#;

const SGTIN_EPC: &str = "3074257BF7194E4000001A85";

fn params(toml_text: &str) -> JsonParams {
    let table: toml::Table = toml::from_str(toml_text).unwrap();
    table["json"].clone().try_into().unwrap()
}

fn codec(toml_text: &str, kind: ProfileKind) -> JsonCodec {
    compile(&params(toml_text), kind).unwrap()
}

fn compile_err(toml_text: &str, kind: ProfileKind) -> String {
    compile(&params(toml_text), kind).unwrap_err()
}

fn ctx() -> DecodeContext {
    DecodeContext {
        device_id: "pos-7".into(),
        member_key: b"Jefe".to_vec(),
    }
}

fn now() -> DateTime<Utc> {
    utc("2026-01-01T12:00:00Z")
}

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn decode(codec: &JsonCodec, payload: &str) -> DecodeOutput {
    codec.decode(payload.as_bytes(), &ctx(), now())
}

fn reads(out: &DecodeOutput) -> Vec<TagRead> {
    out.items
        .iter()
        .filter_map(|item| match item {
            Decoded::TagReads(reads) => Some(reads.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn bads(out: &DecodeOutput) -> Vec<(String, Vec<u8>)> {
    out.items
        .iter()
        .filter_map(|item| match item {
            Decoded::Bad { reason, raw } => Some((reason.clone(), raw.clone())),
            _ => None,
        })
        .collect()
}

fn reasons(out: &DecodeOutput) -> Vec<String> {
    bads(out).into_iter().map(|(reason, _)| reason).collect()
}

/// The single receipt of `out`, failing on anything else.
fn receipt_events(out: &DecodeOutput) -> Vec<(DateTime<Utc>, EventBody)> {
    match out.items.as_slice() {
        [Decoded::Events(events)] => events.clone(),
        other => panic!("expected one receipt, got {other:?}"),
    }
}

fn sale(body: &EventBody) -> &SaleLine {
    match body {
        EventBody::Sale(line) | EventBody::Return(line) => line,
        other => panic!("not a sale line: {other:?}"),
    }
}

fn read(epc: &str, antenna: Option<u32>, rssi_dbm: Option<i32>, ts: &str) -> TagRead {
    TagRead {
        epc: epc.into(),
        antenna,
        rssi_dbm,
        ts: utc(ts),
    }
}

// --- built-in profile files -------------------------------------------

#[test]
fn builtin_profiles_have_the_common_header_and_compile() {
    for (file, text, name, kind) in [
        ("zebra", ZEBRA, "zebra-fx-iot-connector", ProfileKind::Rfid),
        ("impinj", IMPINJ, "impinj-iot", ProfileKind::Rfid),
        ("pos", POS, "pos-json", ProfileKind::Pos),
    ] {
        let table: toml::Table = toml::from_str(text).unwrap();
        let keys: Vec<&str> = table.keys().map(String::as_str).collect();
        for key in ["name", "kind", "codec", "description", "json"] {
            assert!(keys.contains(&key), "{file}: no {key}");
        }
        assert_eq!(table["name"].as_str(), Some(name));
        assert_eq!(table["kind"].as_str(), Some(kind.as_str()));
        assert_eq!(table["codec"].as_str(), Some("json"));
        // The header comes first in the file, before the [json] table.
        let first: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .take(4)
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        assert_eq!(first, ["name", "kind", "codec", "description"], "{file}");
        let codec = codec(text, kind);
        assert_eq!(codec.kind(), kind);
        assert_eq!(ProfileKind::from_name(kind.as_str()), Some(kind));
    }
    assert_eq!(ProfileKind::from_name("esl"), None);
}

// --- zebra-fx-iot-connector -------------------------------------------

#[test]
fn zebra_simple_event() {
    let out = decode(&codec(ZEBRA, ProfileKind::Rfid), ZEBRA_SIMPLE);
    assert_eq!(
        out.items,
        [Decoded::TagReads(vec![read(
            "3005FB63AC1F3681EC880468",
            Some(1),
            Some(-39),
            "2019-08-24T14:15:22Z"
        )])]
    );
    assert_eq!(out.ts_fallbacks, 0);
}

#[test]
fn zebra_batch_lower_case_hex_and_offset_without_colon() {
    let out = decode(&codec(ZEBRA, ProfileKind::Rfid), ZEBRA_BATCH);
    assert_eq!(
        out.items,
        [Decoded::TagReads(vec![
            read(SGTIN_EPC, None, None, "2023-04-03T19:50:16.699Z"),
            read(
                "E280116060000209BE3A2B41",
                Some(2),
                Some(-61),
                "2023-04-03T19:50:16.702Z"
            ),
        ])]
    );
    assert_eq!(out.ts_fallbacks, 0);
}

#[test]
fn zebra_keeps_only_tag_data_event_types() {
    let codec = codec(ZEBRA, ProfileKind::Rfid);
    for kind in ["PORTAL", "CONVEYOR", "CUSTOM"] {
        let payload = ZEBRA_SIMPLE.replace("\"SIMPLE\"", &format!("\"{kind}\""));
        assert_eq!(reads(&decode(&codec, &payload)).len(), 1, "{kind}");
    }
    let other = ZEBRA_SIMPLE.replace("\"SIMPLE\"", "\"HEARTBEAT\"");
    assert_eq!(decode(&codec, &other), DecodeOutput::default());
    let untyped = r#"{"data":{"idHex":"3005fb63ac1f3681ec880468"}}"#;
    assert_eq!(decode(&codec, untyped), DecodeOutput::default());
}

#[test]
fn zebra_bad_record_in_a_batch_is_quarantined_alone() {
    let payload = r#"[{"data":{"idHex":"3005fb63ac1f3681ec880468"},"timestamp":"2019-08-24T14:15:22Z","type":"SIMPLE"},
        {"data":{"idHex":"30zz"},"timestamp":"2019-08-24T14:15:22Z","type":"SIMPLE"},
        {"data":{"antenna":1},"type":"SIMPLE"},
        {"data":{"idHex":"abc"},"type":"SIMPLE"},
        "junk"]"#;
    let out = decode(&codec(ZEBRA, ProfileKind::Rfid), payload);
    assert_eq!(reads(&out).len(), 1);
    assert!(matches!(out.items[0], Decoded::TagReads(_)), "reads first");
    assert_eq!(
        reasons(&out),
        [
            "record 2: data.idHex: not hex",
            "record 3: data.idHex: missing",
            "record 4: data.idHex: odd number of hex digits",
            "record 5: expected a JSON object, got a string",
        ]
    );
    // The raw bytes of a bad record are that record's JSON text.
    let (_, raw) = &bads(&out)[0];
    let record: Value = serde_json::from_slice(raw).unwrap();
    assert_eq!(record["data"]["idHex"], "30zz");
    let (_, raw) = &bads(&out)[3];
    assert_eq!(raw, b"\"junk\"");
}

#[test]
fn zebra_single_bad_record_keeps_the_whole_payload() {
    let payload = r#"{"data":{"idHex":"3005fb63","antenna":-1},"type":"SIMPLE"}"#;
    let out = decode(&codec(ZEBRA, ProfileKind::Rfid), payload);
    assert_eq!(
        out.items,
        [Decoded::Bad {
            reason: "data.antenna: expected a non-negative whole number".into(),
            raw: payload.as_bytes().to_vec(),
        }]
    );
}

#[test]
fn zebra_empty_batch_gives_nothing() {
    let out = decode(&codec(ZEBRA, ProfileKind::Rfid), " [ ] ");
    assert_eq!(out, DecodeOutput::default());
}

// --- impinj-iot -------------------------------------------------------

#[test]
fn impinj_tag_inventory_with_epc_hex() {
    let out = decode(&codec(IMPINJ, ProfileKind::Rfid), IMPINJ_TAG);
    // -4050 cdBm * 0.01 = -40.5 dBm, rounded half away from zero;
    // 9 fractional digits kept to the millisecond.
    assert_eq!(
        out.items,
        [Decoded::TagReads(vec![read(
            "E28011606000020A6681F23F",
            Some(1),
            Some(-41),
            "2021-02-02T22:18:35.658Z"
        )])]
    );
    assert_eq!(out.ts_fallbacks, 0);
}

#[test]
fn impinj_minimal_with_standard_base64_epc() {
    let out = decode(&codec(IMPINJ, ProfileKind::Rfid), IMPINJ_MINIMAL);
    assert_eq!(
        out.items,
        [Decoded::TagReads(vec![read(
            SGTIN_EPC,
            Some(2),
            Some(-55),
            "2024-05-10T08:00:01.100Z"
        )])]
    );
}

#[test]
fn impinj_status_event_is_ignored_not_quarantined() {
    let out = decode(&codec(IMPINJ, ProfileKind::Rfid), IMPINJ_STATUS);
    assert_eq!(out, DecodeOutput::default());
}

#[test]
fn impinj_base64_url_safe_and_unpadded() {
    let codec = codec(IMPINJ, ProfileKind::Rfid);
    let epc_of = |epc: &str| {
        let payload = format!(
            r#"{{"eventType":"tagInventory","timestamp":"2024-05-10T08:00:01Z","tagInventoryEvent":{{"epc":"{epc}"}}}}"#
        );
        let out = decode(&codec, &payload);
        match out.items.as_slice() {
            [Decoded::TagReads(reads)] => reads[0].epc.clone(),
            other => format!("{other:?}"),
        }
    };
    // The taginventory sample's epc without epcHex: URL-safe alphabet.
    assert_eq!(epc_of("4oARYGAAAgpmgfI_"), "E28011606000020A6681F23F");
    assert_eq!(epc_of("MHQle_cZTkAAABqF"), SGTIN_EPC);
    assert_eq!(epc_of("MHQle/cZTkAAABqF"), SGTIN_EPC);
    // 4 bytes: padded and unpadded, standard and URL-safe.
    assert_eq!(epc_of("MHQlew=="), "3074257B");
    assert_eq!(epc_of("MHQlew"), "3074257B");
    assert_eq!(epc_of("+/8="), "FBFF");
    assert_eq!(epc_of("-_8"), "FBFF");
}

#[test]
fn impinj_epc_hex_wins_and_null_falls_through() {
    let codec = codec(IMPINJ, ProfileKind::Rfid);
    let both = r#"{"eventType":"tagInventory","tagInventoryEvent":{"epcHex":"e2801160","epc":"MHQlew=="}}"#;
    assert_eq!(reads(&decode(&codec, both))[0].epc, "E2801160");
    let null_hex =
        r#"{"eventType":"tagInventory","tagInventoryEvent":{"epcHex":null,"epc":"MHQlew=="}}"#;
    assert_eq!(reads(&decode(&codec, null_hex))[0].epc, "3074257B");
    let blank_hex =
        r#"{"eventType":"tagInventory","tagInventoryEvent":{"epcHex":" ","epc":"MHQlew=="}}"#;
    assert_eq!(reads(&decode(&codec, blank_hex))[0].epc, "3074257B");
}

#[test]
fn impinj_bad_epcs_are_named_precisely() {
    let codec = codec(IMPINJ, ProfileKind::Rfid);
    let payload = format!(
        r#"[{IMPINJ_MINIMAL},
        {{"eventType":"tagInventory","tagInventoryEvent":{{"epc":"MHQ!e/cZ"}}}},
        {{"eventType":"tagInventory","tagInventoryEvent":{{"antennaPort":1}}}},
        {{"eventType":"tagInventory","tagInventoryEvent":{{"epc":12}}}},
        {{"eventType":"tagInventory","tagInventoryEvent":{{"epc":"=="}}}},
        {{"eventType":"tagInventory","tagInventoryEvent":{{"epcHex":"E2 80","epc":"MHQlew=="}}}},
        {IMPINJ_STATUS}]"#
    );
    let out = decode(&codec, &payload);
    assert_eq!(reads(&out).len(), 1);
    assert_eq!(
        reasons(&out),
        [
            "record 2: tagInventoryEvent.epc: not valid base64",
            "record 3: tagInventoryEvent.epcHex or tagInventoryEvent.epc: missing",
            "record 4: tagInventoryEvent.epc: expected a string, got a number",
            "record 5: tagInventoryEvent.epc: not valid base64",
            "record 6: tagInventoryEvent.epcHex: not hex",
        ]
    );
}

#[test]
fn rssi_is_scaled_and_rounded_half_away_from_zero() {
    let codec = codec(IMPINJ, ProfileKind::Rfid);
    let rssi = |value: &str| {
        let payload = format!(
            r#"{{"eventType":"tagInventory","tagInventoryEvent":{{"epcHex":"30","peakRssiCdbm":{value}}}}}"#
        );
        let out = decode(&codec, &payload);
        match out.items.as_slice() {
            [Decoded::TagReads(reads)] => Ok(reads[0].rssi_dbm),
            [Decoded::Bad { reason, .. }] => Err(reason.clone()),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(rssi("-4050"), Ok(Some(-41)));
    assert_eq!(rssi("-4049"), Ok(Some(-40)));
    assert_eq!(rssi("-3950"), Ok(Some(-40)));
    assert_eq!(rssi("-5525"), Ok(Some(-55)));
    assert_eq!(rssi("-4050.0"), Ok(Some(-41)));
    assert_eq!(rssi("\"-4050\""), Ok(Some(-41)));
    assert_eq!(rssi("null"), Ok(None));
    assert_eq!(
        rssi("1e300"),
        Err("tagInventoryEvent.peakRssiCdbm: out of range".into())
    );
    assert_eq!(
        rssi("\"loud\""),
        Err("tagInventoryEvent.peakRssiCdbm: expected a number, got a string".into())
    );
    assert_eq!(
        rssi("true"),
        Err("tagInventoryEvent.peakRssiCdbm: expected a number, got a boolean".into())
    );
}

#[test]
fn antenna_accepts_numbers_and_digit_strings_only() {
    let codec = codec(IMPINJ, ProfileKind::Rfid);
    let antenna = |value: &str| {
        let payload = format!(
            r#"{{"eventType":"tagInventory","tagInventoryEvent":{{"epcHex":"30","antennaPort":{value}}}}}"#
        );
        let out = decode(&codec, &payload);
        match out.items.as_slice() {
            [Decoded::TagReads(reads)] => Ok(reads[0].antenna),
            [Decoded::Bad { reason, .. }] => Err(reason.clone()),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(antenna("4"), Ok(Some(4)));
    assert_eq!(antenna("\" 3 \""), Ok(Some(3)));
    assert!(antenna("1.5").is_err());
    assert!(antenna("\"x\"").is_err());
    assert_eq!(
        antenna("4294967296"),
        Err("tagInventoryEvent.antennaPort: out of range".into())
    );
    assert_eq!(
        antenna("[1]"),
        Err(
            "tagInventoryEvent.antennaPort: expected a non-negative whole number, got an array"
                .into()
        )
    );
}

// --- timestamps -------------------------------------------------------

#[test]
fn missing_or_bad_timestamps_fall_back_to_now_and_are_counted() {
    let codec = codec(ZEBRA, ProfileKind::Rfid);
    let payload = r#"[{"data":{"idHex":"30"},"type":"SIMPLE"},
        {"data":{"idHex":"31"},"type":"SIMPLE","timestamp":"soon"},
        {"data":{"idHex":"32"},"type":"SIMPLE","timestamp":{"at":1}},
        {"data":{"idHex":"33"},"type":"SIMPLE","timestamp":1700000000123},
        {"data":{"idHex":"34"},"type":"SIMPLE","timestamp":"2019-08-24T14:15:22Z"}]"#;
    let out = decode(&codec, payload);
    let ts: Vec<DateTime<Utc>> = reads(&out).iter().map(|r| r.ts).collect();
    assert_eq!(
        ts,
        [
            now(),
            now(),
            now(),
            utc("2023-11-14T22:13:20.123Z"),
            utc("2019-08-24T14:15:22Z")
        ]
    );
    assert_eq!(out.ts_fallbacks, 3);
}

#[test]
fn no_ts_field_in_the_profile_means_receive_time_without_counting() {
    let codec = codec(
        r#"[json]
        fields = { epc = "id" }"#,
        ProfileKind::Rfid,
    );
    let out = decode(&codec, r#"{"id":"30","timestamp":"2019-08-24T14:15:22Z"}"#);
    assert_eq!(reads(&out)[0].ts, now());
    assert_eq!(out.ts_fallbacks, 0);
}

// --- malformed payloads -----------------------------------------------

#[test]
fn payloads_that_are_not_json_are_quarantined_whole() {
    let codec = codec(ZEBRA, ProfileKind::Rfid);
    let cases: [(&[u8], &str); 6] = [
        (b"", "not JSON"),
        (b"\x00\x01\x02garbage", "not JSON"),
        (b"{\"data\":", "not JSON"),
        (
            b"{\"data\":{\"idHex\":\"30\xff\"}}",
            "not UTF-8: invalid byte at offset 20",
        ),
        (b"42", "expected a JSON object or array, got a number"),
        (
            b"\"3005fb63\"",
            "expected a JSON object or array, got a string",
        ),
    ];
    for (payload, reason) in cases {
        let out = codec.decode(payload, &ctx(), now());
        match out.items.as_slice() {
            [Decoded::Bad { reason: r, raw }] => {
                assert!(r.starts_with(reason), "{r:?} for {payload:?}");
                assert_eq!(raw, payload);
            }
            other => panic!("{other:?} for {payload:?}"),
        }
    }
}

#[test]
fn a_byte_order_mark_is_tolerated() {
    let payload = format!("\u{feff}{ZEBRA_SIMPLE}");
    let out = decode(&codec(ZEBRA, ProfileKind::Rfid), &payload);
    assert_eq!(reads(&out).len(), 1);
}

// --- a new device needs only a profile --------------------------------

const ACME: &str = r#"
    name = "acme-r1"
    kind = "rfid"
    codec = "json"
    description = "made-up ACME R1 reader"

    [json]
    records = "reads"
    when = { "tag.kind" = ["epc", "epc96"], valid = true, ver = [1, 2.5] }

    [json.fields]
    epc = "tag.id"
    antenna = "ant"
    rssi_dbm = { path = "dbm" }
    ts = ["tag.seen.0", "$.at"]
"#;

#[test]
fn a_made_up_reader_needs_only_a_profile() {
    let codec = codec(ACME, ProfileKind::Rfid);
    let payload = r#"{"reader":"acme-7","reads":[
        {"tag":{"id":"3074257bf7194e4000001a85","kind":"epc","seen":["2024-05-10T10:00:00.250+02:00"]},"ant":"3","dbm":-50,"valid":true,"ver":1},
        {"tag":{"id":"e2801160","kind":"epc96"},"ant":4,"dbm":"-61.5","valid":true,"ver":2.5,"at":1715328000},
        {"tag":{"id":"e2801161","kind":"tid"},"valid":true,"ver":1},
        {"tag":{"id":"e2801162","kind":"epc"},"valid":false,"ver":1},
        {"tag":{"id":"e2801163","kind":"epc"},"valid":true,"ver":3},
        {"tag":{"id":"e2801164","kind":"epc"},"valid":true}
    ]}"#;
    let out = decode(&codec, payload);
    assert_eq!(
        out.items,
        [Decoded::TagReads(vec![
            read(SGTIN_EPC, Some(3), Some(-50), "2024-05-10T08:00:00.250Z"),
            read("E2801160", Some(4), Some(-62), "2024-05-10T08:00:00Z"),
        ])]
    );
    assert_eq!(out.ts_fallbacks, 0);
    // The records path must hold the records.
    let out = decode(&codec, r#"{"reader":"acme-7"}"#);
    assert_eq!(reasons(&out), ["reads: missing"]);
    let out = decode(&codec, r#"{"reads":7}"#);
    assert_eq!(
        reasons(&out),
        ["reads: expected an array of records, got a number"]
    );
}

// --- pos-json ---------------------------------------------------------

#[test]
fn pos_receipt_with_sale_and_return_lines() {
    let codec = codec(POS, ProfileKind::Pos);
    let payload = r#"{"receipt_id":"R-1","pos":"1","currency":"EUR","ts":"2026-11-22T10:15:30.123+01:00",
        "lines":[{"sku":"SKU-1001","qty":2,"unit_price_minor":249},
                 {"sku":"SKU-2002","qty":-1,"unit_price_minor":1999}]}"#;
    let out = decode(&codec, payload);
    let ts = utc("2026-11-22T09:15:30.123Z");
    let line = |line, sku: &str, qty, price| SaleLine {
        receipt_id: "R-1".into(),
        line,
        sku: sku.into(),
        gtin: None,
        qty,
        unit_price_minor: price,
        currency: "EUR".into(),
        pos: "1".into(),
        member_hash: None,
    };
    assert_eq!(
        out.items,
        [Decoded::Events(vec![
            (ts, EventBody::Sale(line(1, "SKU-1001", 2, 249))),
            (ts, EventBody::Return(line(2, "SKU-2002", 1, 1999))),
        ])]
    );
    assert_eq!(out.ts_fallbacks, 0);
}

#[test]
fn pos_spec_example_uses_receive_time_and_counts_it() {
    let codec = codec(POS, ProfileKind::Pos);
    let payload = r#"{"receipt_id":"R-1","pos":"1","currency":"EUR","lines":[{"sku":"SKU-1001","qty":2,"unit_price_minor":249}]}"#;
    let out = decode(&codec, payload);
    let events = receipt_events(&out);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, now());
    assert_eq!(out.ts_fallbacks, 1);
    let line = sale(&events[0].1);
    assert_eq!((line.qty, line.unit_price_minor), (2, 249));
}

#[test]
fn pos_decimal_prices_convert_exactly() {
    let codec = codec(POS, ProfileKind::Pos);
    let payload = r#"{"receipt_id":"R-2","currency":"EUR","lines":[
        {"sku":"A","qty":1,"unit_price":"2.49"},
        {"sku":"B","qty":1,"unit_price":2.49},
        {"sku":"C","qty":1,"unit_price":0.29},
        {"sku":"D","qty":1,"unit_price":"0,29"},
        {"sku":"E","qty":1,"unit_price":7},
        {"sku":"F","qty":1,"unit_price":"2.490"},
        {"sku":"G","qty":1,"unit_price":1.1},
        {"sku":"H","qty":1,"unit_price":0},
        {"sku":"I","qty":1,"unit_price_minor":5,"unit_price":"9.99"}]}"#;
    let out = decode(&codec, payload);
    let prices: Vec<i64> = receipt_events(&out)
        .iter()
        .map(|(_, body)| sale(body).unit_price_minor)
        .collect();
    assert_eq!(prices, [249, 249, 29, 29, 700, 249, 110, 0, 5]);
}

#[test]
fn pos_prices_follow_the_currency_exponent() {
    let codec = codec(POS, ProfileKind::Pos);
    let payload = r#"{"receipt_id":"R-3","currency":"jpy","lines":[{"sku":"A","qty":1,"unit_price":"1200"}]}"#;
    let events = receipt_events(&decode(&codec, payload));
    let line = sale(&events[0].1);
    assert_eq!(
        (line.currency.as_str(), line.unit_price_minor),
        ("JPY", 1200)
    );
    let payload = r#"{"receipt_id":"R-3","currency":"JPY","lines":[{"sku":"A","qty":1,"unit_price":"12.5"}]}"#;
    assert_eq!(
        reasons(&decode(&codec, payload)),
        ["line 1: unit_price: \"12.5\" has more decimals than JPY allows (0)"]
    );
}

#[test]
fn pos_pos_defaults_to_the_device_and_numbers_are_identifiers() {
    let codec = codec(POS, ProfileKind::Pos);
    let payload = r#"{"receipt_id":4711,"currency":"EUR","lines":[{"sku":1001,"qty":"3","unit_price_minor":"99"}]}"#;
    let events = receipt_events(&decode(&codec, payload));
    let line = sale(&events[0].1);
    assert_eq!(line.receipt_id, "4711");
    assert_eq!(line.pos, "pos-7");
    assert_eq!(line.sku, "1001");
    assert_eq!((line.qty, line.unit_price_minor), (3, 99));
}

#[test]
fn pos_gtin_only_lines_leave_the_sku_to_a_later_stage() {
    let codec = codec(POS, ProfileKind::Pos);
    let payload = r#"{"receipt_id":"R-4","currency":"EUR","lines":[
        {"gtin":"04012345678901","qty":1,"unit_price_minor":100},
        {"sku":"SKU-1","gtin":4006381333931,"qty":1,"unit_price_minor":100},
        {"sku":"","gtin":"40063813","qty":1,"unit_price_minor":100}]}"#;
    let events = receipt_events(&decode(&codec, payload));
    let got: Vec<(&str, Option<&str>)> = events
        .iter()
        .map(|(_, body)| {
            let line = sale(body);
            (line.sku.as_str(), line.gtin.as_deref())
        })
        .collect();
    assert_eq!(
        got,
        [
            ("", Some("04012345678901")),
            ("SKU-1", Some("4006381333931")),
            ("", Some("40063813")),
        ]
    );
}

#[test]
fn pos_member_id_is_hashed_and_never_output() {
    let codec = codec(POS, ProfileKind::Pos);
    // RFC 4231 test case 2: HMAC-SHA256("Jefe", "what do ya want for nothing?").
    let member = "what do ya want for nothing?";
    let payload = format!(
        r#"{{"receipt_id":"R-5","currency":"EUR","member_id":"{member}","lines":[{{"sku":"A","qty":1,"unit_price_minor":1}},{{"sku":"B","qty":-1,"unit_price_minor":1}}]}}"#
    );
    let out = decode(&codec, &payload);
    for (_, body) in receipt_events(&out) {
        assert_eq!(
            sale(&body).member_hash.as_deref(),
            Some("5bdcc146bf60754e6a042426089575c7")
        );
        assert!(!body.data_json().contains("want for nothing"));
    }
    assert!(!format!("{out:?}").contains("want for nothing"));
    // A member id of the wrong type is refused without echoing it.
    let payload = r#"{"receipt_id":"R-5","currency":"EUR","member_id":{"card":"SECRET-CARD"},"lines":[{"sku":"A","qty":1,"unit_price_minor":1}]}"#;
    let reason = &reasons(&decode(&codec, payload))[0];
    assert_eq!(reason, "member_id: expected a string, got an object");
    // No member id, or an empty one: no hash.
    let payload = r#"{"receipt_id":"R-5","currency":"EUR","member_id":"","lines":[{"sku":"A","qty":1,"unit_price_minor":1}]}"#;
    let events = receipt_events(&decode(&codec, payload));
    assert_eq!(sale(&events[0].1).member_hash, None);
}

#[test]
fn quarantined_pos_input_keeps_no_member_id() {
    let codec = codec(POS, ProfileKind::Pos);
    let raws = |payload: &str| -> Vec<String> {
        decode(&codec, payload)
            .items
            .iter()
            .filter_map(|i| match i {
                Decoded::Bad { raw, .. } => Some(String::from_utf8_lossy(raw).into_owned()),
                _ => None,
            })
            .collect()
    };
    // A bad line: the receipt is quarantined, its member id hashed, as
    // is a loyalty number under a key the profile does not read.
    let payload = r#"{"receipt_id":"R-5","currency":"EUR","member_id":"MEMBER-12345","extra":{"LoyaltyCard":99887766},"lines":[{"sku":"A","qty":"many","unit_price_minor":1}]}"#;
    let kept = raws(payload);
    assert_eq!(kept.len(), 1);
    assert!(
        !kept[0].contains("MEMBER-12345") && !kept[0].contains("99887766"),
        "{kept:?}"
    );
    assert!(
        kept[0].contains("hashed:") && kept[0].contains("R-5"),
        "{kept:?}"
    );
    // Not JSON: nothing of it is kept.
    assert_eq!(
        raws(r#"{"member_id":"MEMBER-12345","lines":["#),
        vec![String::new()]
    );
}

#[test]
fn pos_quantities_and_prices_beyond_the_bounds_are_refused_at_decode() {
    let codec = codec(POS, ProfileKind::Pos);
    let line = |line: &str| format!(r#"{{"receipt_id":"R-9","currency":"EUR","lines":[{line}]}}"#);
    let reason = |line_json: &str| reasons(&decode(&codec, &line(line_json)))[0].clone();
    let r = reason(r#"{"sku":"A","qty":-9223372036854775807,"unit_price_minor":1}"#);
    assert!(r.starts_with("line 1: qty") && r.contains("beyond"), "{r}");
    let r = reason(r#"{"sku":"A","qty":1,"unit_price_minor":9223372036854775807}"#);
    assert!(
        r.contains("unit_price_minor") && r.contains("not a price"),
        "{r}"
    );
}

#[test]
fn pos_receipts_with_a_bad_line_are_quarantined_whole() {
    let codec = codec(POS, ProfileKind::Pos);
    let lines = |lines: &str| {
        format!(
            r#"{{"receipt_id":"R-6","currency":"EUR","lines":[{{"sku":"OK","qty":1,"unit_price_minor":1}},{lines}]}}"#
        )
    };
    let cases = [
        (
            r#"{"qty":1,"unit_price_minor":1}"#,
            "line 2: sku or gtin: missing",
        ),
        (
            r#"{"sku":"A","unit_price_minor":1}"#,
            "line 2: qty: missing",
        ),
        (
            r#"{"sku":"A","qty":0,"unit_price_minor":1}"#,
            "line 2: qty: 0 is not a quantity",
        ),
        (
            r#"{"sku":"A","qty":1.5,"unit_price_minor":1}"#,
            "line 2: qty: 1.5 is not a whole number",
        ),
        (
            r#"{"sku":"A","qty":"two","unit_price_minor":1}"#,
            "line 2: qty: expected a whole number",
        ),
        (
            r#"{"sku":"A","qty":-9223372036854775808,"unit_price_minor":1}"#,
            "line 2: qty: -9223372036854775808 is not a quantity",
        ),
        (
            r#"{"sku":"A","qty":18446744073709551615,"unit_price_minor":1}"#,
            "line 2: qty: out of range",
        ),
        (
            r#"{"sku":"A","qty":1}"#,
            "line 2: unit_price_minor or unit_price: missing",
        ),
        (
            r#"{"sku":"A","qty":1,"unit_price_minor":2.49}"#,
            "line 2: unit_price_minor: 2.49 is not a whole number",
        ),
        (
            r#"{"sku":"A","qty":1,"unit_price_minor":-1}"#,
            "line 2: unit_price_minor: negative price -1",
        ),
        (
            r#"{"sku":"A","qty":1,"unit_price":"2.499"}"#,
            "line 2: unit_price: \"2.499\" has more decimals than EUR allows (2)",
        ),
        (
            r#"{"sku":"A","qty":1,"unit_price":"1,249.00"}"#,
            "line 2: unit_price: \"1,249.00\" is not a decimal amount",
        ),
        (
            r#"{"sku":"A","qty":1,"unit_price":1e-7}"#,
            "line 2: unit_price: \"1e-7\" is not a decimal amount",
        ),
        (
            r#"{"sku":"A","qty":1,"unit_price":true}"#,
            "line 2: unit_price: expected a decimal number, got a boolean",
        ),
        (
            r#"{"sku":{"id":"A"},"qty":1,"unit_price_minor":1}"#,
            "line 2: sku: expected a string, got an object",
        ),
        (
            r#"{"gtin":"123","qty":1,"unit_price_minor":1}"#,
            "line 2: gtin: not a GTIN (8, 12, 13 or 14 digits)",
        ),
        (
            r#""SKU-1 x1""#,
            "line 2: expected a JSON object, got a string",
        ),
    ];
    for (line, reason) in cases {
        let payload = lines(line);
        let out = decode(&codec, &payload);
        assert_eq!(
            out.items,
            [Decoded::Bad {
                reason: reason.into(),
                raw: payload.as_bytes().to_vec()
            }],
            "{line}"
        );
    }
}

#[test]
fn pos_receipt_level_problems() {
    let codec = codec(POS, ProfileKind::Pos);
    let line = r#"[{"sku":"A","qty":1,"unit_price_minor":1}]"#;
    let cases = [
        (
            format!(r#"{{"currency":"EUR","lines":{line}}}"#),
            "receipt_id: missing",
        ),
        (
            format!(r#"{{"receipt_id":" ","currency":"EUR","lines":{line}}}"#),
            "receipt_id: missing",
        ),
        (
            format!(r#"{{"receipt_id":["R"],"currency":"EUR","lines":{line}}}"#),
            "receipt_id: expected a string, got an array",
        ),
        (
            format!(r#"{{"receipt_id":"R","lines":{line}}}"#),
            "currency: missing and the profile has no default_currency",
        ),
        (
            format!(r#"{{"receipt_id":"R","currency":"EURO","lines":{line}}}"#),
            "currency: expected a three-letter ISO 4217 code such as \"EUR\"",
        ),
        (
            format!(r#"{{"receipt_id":"R","currency":978,"lines":{line}}}"#),
            "currency: expected a string, got a number",
        ),
        (
            r#"{"receipt_id":"R","currency":"EUR"}"#.to_string(),
            "lines: missing",
        ),
        (
            r#"{"receipt_id":"R","currency":"EUR","lines":{"sku":"A"}}"#.to_string(),
            "lines: expected an array, got an object",
        ),
        (
            format!(r#"{{"receipt_id":"R","currency":"EUR","pos":true,"lines":{line}}}"#),
            "pos: expected a string, got a boolean",
        ),
    ];
    for (payload, reason) in cases {
        assert_eq!(reasons(&decode(&codec, &payload)), [reason], "{payload}");
    }
    // An empty receipt moves nothing and is not an error.
    let out = decode(&codec, r#"{"receipt_id":"R","currency":"EUR","lines":[]}"#);
    assert_eq!(out.items, []);
}

#[test]
fn pos_default_currency_from_the_profile() {
    let text = format!("{POS}\n").replace(
        "lines = \"lines\"",
        "lines = \"lines\"\ndefault_currency = \"EUR\"",
    );
    let codec = codec(&text, ProfileKind::Pos);
    let payload = r#"{"receipt_id":"R","lines":[{"sku":"A","qty":1,"unit_price":"2.49"}]}"#;
    let events = receipt_events(&decode(&codec, payload));
    let line = sale(&events[0].1);
    assert_eq!(
        (line.currency.as_str(), line.unit_price_minor),
        ("EUR", 249)
    );
    // A currency in the receipt wins over the default.
    let payload =
        r#"{"receipt_id":"R","currency":"CHF","lines":[{"sku":"A","qty":1,"unit_price":"2.49"}]}"#;
    let events = receipt_events(&decode(&codec, payload));
    assert_eq!(sale(&events[0].1).currency, "CHF");
}

#[test]
fn pos_array_of_receipts_quarantines_only_the_bad_one() {
    let codec = codec(POS, ProfileKind::Pos);
    let payload = r#"[
        {"receipt_id":"R-1","currency":"EUR","lines":[{"sku":"A","qty":1,"unit_price_minor":1}]},
        {"receipt_id":"R-2","currency":"EUR","lines":[{"sku":"B","qty":0,"unit_price_minor":1}]},
        {"receipt_id":"R-3","currency":"EUR","lines":[{"sku":"C","qty":2,"unit_price_minor":1}]}]"#;
    let out = decode(&codec, payload);
    assert_eq!(out.items.len(), 3);
    assert!(matches!(&out.items[0], Decoded::Events(e) if sale(&e[0].1).receipt_id == "R-1"));
    match &out.items[1] {
        Decoded::Bad { reason, raw } => {
            assert_eq!(reason, "record 2: line 1: qty: 0 is not a quantity");
            let record: Value = serde_json::from_slice(raw).unwrap();
            assert_eq!(record["receipt_id"], "R-2");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(&out.items[2], Decoded::Events(e) if sale(&e[0].1).receipt_id == "R-3"));
    assert_eq!(out.ts_fallbacks, 2);
    // A record that is not an object keeps its place too.
    let payload = r#"[5, {"receipt_id":"R-1","currency":"EUR","lines":[{"sku":"A","qty":1,"unit_price_minor":1}]}]"#;
    let out = decode(&codec, payload);
    assert!(
        matches!(&out.items[..], [Decoded::Bad { reason, raw }, Decoded::Events(_)]
        if reason == "record 1: expected a JSON object, got a number" && raw == b"5")
    );
}

#[test]
fn pos_profile_with_nested_paths_and_alternatives() {
    let codec = codec(
        r#"[json]
        records = "$.receipts"
        when = { status = "closed" }
        lines = "body.items"
        default_currency = "EUR"
        [json.fields]
        receipt_id = ["id", "header.no"]
        pos = "header.till"
        ts = "header.closed_at"
        [json.line_fields]
        gtin = "ean"
        qty = ["quantity", "qty"]
        unit_price = "price.gross"
        "#,
        ProfileKind::Pos,
    );
    let payload = r#"{"receipts":[
        {"status":"closed","header":{"no":"B-9","till":"T2","closed_at":"2026-11-22T10:00:00+0100"},
         "body":{"items":[{"ean":"4006381333931","qty":-2,"price":{"gross":"1,99"}}]}},
        {"status":"open","id":"B-10","body":{"items":[]}}]}"#;
    let out = decode(&codec, payload);
    let events = receipt_events(&out);
    assert_eq!(events[0].0, utc("2026-11-22T09:00:00Z"));
    assert_eq!(
        events[0].1,
        EventBody::Return(SaleLine {
            receipt_id: "B-9".into(),
            line: 1,
            sku: String::new(),
            gtin: Some("4006381333931".into()),
            qty: 2,
            unit_price_minor: 199,
            currency: "EUR".into(),
            pos: "T2".into(),
            member_hash: None,
        })
    );
}

// --- compile errors name the key --------------------------------------

#[test]
fn compile_errors_name_the_key() {
    use ProfileKind::{Pos, Rfid};
    let pos_ok = r#"
        [json.fields]
        receipt_id = "id"
        [json.line_fields]
        sku = "sku"
        qty = "qty"
        unit_price = "price""#;
    let cases = [
        (
            "[json]",
            Rfid,
            "json.fields.epc: required for kind = \"rfid\"",
        ),
        (
            "[json.fields]\nepc = \"id\"\nzone = \"z\"",
            Rfid,
            "json.fields.zone: unknown field for kind = \"rfid\" (expected one of: epc, antenna, rssi_dbm, ts)",
        ),
        (
            "[json.fields]\nepc = \"id\"\nantenna = { path = \"a\", as = \"hex\" }",
            Rfid,
            "json.fields.antenna: `as` only applies to epc",
        ),
        (
            "[json.fields]\nepc = \"id\"\nantenna = { path = \"a\", scale = 2.0 }",
            Rfid,
            "json.fields.antenna: `scale` only applies to rssi_dbm",
        ),
        (
            "[json.fields]\nepc = \"id\"\nrssi_dbm = { path = \"r\", scale = 0.0 }",
            Rfid,
            "json.fields.rssi_dbm: scale must be a non-zero number",
        ),
        (
            "[json.fields]\nepc = []",
            Rfid,
            "json.fields.epc: empty list of alternatives",
        ),
        (
            "[json.fields]\nepc = \"a..b\"",
            Rfid,
            "json.fields.epc: path \"a..b\" has an empty segment",
        ),
        (
            "[json.fields]\nepc = \"\"",
            Rfid,
            "json.fields.epc: empty path",
        ),
        (
            "[json]\nrecords = \".x\"\n[json.fields]\nepc = \"id\"",
            Rfid,
            "json.records: path \".x\" has an empty segment",
        ),
        (
            "[json]\nwhen = { type = [] }\n[json.fields]\nepc = \"id\"",
            Rfid,
            "json.when.type: empty list, no record would match",
        ),
        (
            "[json]\nlines = \"l\"\n[json.fields]\nepc = \"id\"",
            Rfid,
            "json.lines: only for kind = \"pos\"",
        ),
        (
            "[json]\ndefault_currency = \"EUR\"\n[json.fields]\nepc = \"id\"",
            Rfid,
            "json.default_currency: only for kind = \"pos\"",
        ),
        (
            "[json.fields]\nepc = \"id\"\n[json.line_fields]\nsku = \"s\"",
            Rfid,
            "json.line_fields: only for kind = \"pos\"",
        ),
        (
            pos_ok,
            Pos,
            "json.lines: required for kind = \"pos\" (path of the array of receipt lines)",
        ),
        (
            "[json]\nlines = \"l\"\n[json.fields]\nreceipt_id = \"id\"\n[json.line_fields]\nsku = \"s\"\nunit_price = \"p\"",
            Pos,
            "json.line_fields.qty: required for kind = \"pos\"",
        ),
        (
            "[json]\nlines = \"l\"\n[json.fields]\nreceipt_id = \"id\"\n[json.line_fields]\nqty = \"q\"\nunit_price = \"p\"",
            Pos,
            "json.line_fields.sku: required (or json.line_fields.gtin)",
        ),
        (
            "[json]\nlines = \"l\"\n[json.fields]\nreceipt_id = \"id\"\n[json.line_fields]\nqty = \"q\"\ngtin = \"g\"",
            Pos,
            "json.line_fields.unit_price: required (or json.line_fields.unit_price_minor)",
        ),
        (
            "[json]\nlines = \"l\"\n[json.line_fields]\nqty = \"q\"\nsku = \"s\"\nunit_price = \"p\"",
            Pos,
            "json.fields.receipt_id: required for kind = \"pos\"",
        ),
        (
            "[json]\nlines = \"l\"\n[json.fields]\nreceipt_id = \"id\"\nepc = \"e\"\n[json.line_fields]\nqty = \"q\"\nsku = \"s\"\nunit_price = \"p\"",
            Pos,
            "json.fields.epc: unknown field for kind = \"pos\" (expected one of: receipt_id, currency, pos, member_id, ts)",
        ),
        (
            "[json]\nlines = \"l\"\n[json.fields]\nreceipt_id = \"id\"\n[json.line_fields]\nqty = \"q\"\nsku = \"s\"\nunit_price = { path = \"p\", scale = 0.01 }",
            Pos,
            "json.line_fields.unit_price: `scale` only applies to rssi_dbm",
        ),
    ];
    for (text, kind, expected) in cases {
        assert_eq!(compile_err(text, kind), expected, "{text}");
    }
    let bad_currency = format!("[json]\nlines = \"l\"\ndefault_currency = \"euro\"\n{pos_ok}");
    assert_eq!(
        compile_err(&bad_currency, Pos),
        "json.default_currency: expected a three-letter ISO 4217 code such as \"EUR\""
    );
}

#[test]
fn serde_refuses_unknown_keys_and_wrong_shapes() {
    let parse = |text: &str| {
        let table: toml::Table = toml::from_str(text).unwrap();
        table["json"]
            .clone()
            .try_into::<JsonParams>()
            .unwrap_err()
            .to_string()
    };
    assert!(parse("[json]\nrecord = \"$\"").contains("unknown field `record`"));
    assert!(parse("[json.fields]\nepc = { pth = \"x\" }").contains("unknown field `pth`"));
    assert!(parse("[json.fields]\nepc = { path = \"x\", as = \"hexa\" }").contains("hexa"));
    assert!(parse("[json.fields]\nepc = 7").contains("a path string"));
    assert!(parse("[json.fields]\nepc = [[\"x\"]]").contains("a path string"));
}

#[test]
fn field_specs_deserialize_in_all_three_forms() {
    let p = params(IMPINJ);
    assert_eq!(
        p.fields["epc"].alternatives,
        [
            Source {
                path: "tagInventoryEvent.epcHex".into(),
                encoding: Some(Encoding::Hex),
                scale: None
            },
            Source {
                path: "tagInventoryEvent.epc".into(),
                encoding: Some(Encoding::Base64),
                scale: None
            },
        ]
    );
    assert_eq!(
        p.fields["antenna"].alternatives,
        [Source::from_path("tagInventoryEvent.antennaPort")]
    );
    assert_eq!(p.fields["rssi_dbm"].alternatives[0].scale, Some(0.01));
    assert_eq!(p.records, "$");
    assert_eq!(
        p.when["eventType"],
        OneOrMany::One(Scalar::Text("tagInventory".into()))
    );
}

// --- robustness -------------------------------------------------------

#[test]
fn truncated_and_mangled_samples_never_panic() {
    let codecs = [
        codec(ZEBRA, ProfileKind::Rfid),
        codec(IMPINJ, ProfileKind::Rfid),
        codec(POS, ProfileKind::Pos),
        codec(ACME, ProfileKind::Rfid),
    ];
    let pos = r#"{"receipt_id":"R-1","pos":"1","currency":"EUR","member_id":"M","lines":[{"sku":"SKU-1001","qty":2,"unit_price_minor":249},{"gtin":"4006381333931","qty":-1,"unit_price":"2.49"}]}"#;
    for sample in [
        ZEBRA_SIMPLE,
        ZEBRA_BATCH,
        IMPINJ_TAG,
        IMPINJ_MINIMAL,
        IMPINJ_STATUS,
        pos,
    ] {
        let bytes = sample.as_bytes();
        for cut in 0..bytes.len() {
            for codec in &codecs {
                codec.decode(&bytes[..cut], &ctx(), now());
                let mut without = bytes.to_vec();
                without.remove(cut);
                codec.decode(&without, &ctx(), now());
            }
        }
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[a-zA-Z0-9+/=_ .:,-]{0,30}".prop_map(Value::String),
        Just(Value::String("2024-05-10T08:00:01.1+0200".into())),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z]{1,3}|0|1", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        for (text, kind) in [(ZEBRA, ProfileKind::Rfid), (POS, ProfileKind::Pos)] {
            let out = codec(text, kind).decode(&bytes, &ctx(), now());
            prop_assert!(out.items.len() == 1);
        }
    }

    #[test]
    fn any_values_in_known_places_never_panic(
        a in json_value(), b in json_value(), c in json_value(), d in json_value(),
        e in json_value(), f in json_value(), g in json_value(),
    ) {
        let zebra = serde_json::json!([{"type":"SIMPLE","timestamp":a,"data":{"idHex":b,"antenna":c,"peakRssi":d}}, e]);
        let impinj = serde_json::json!({"eventType":"tagInventory","timestamp":a,"tagInventoryEvent":{"epcHex":f,"epc":b,"antennaPort":c,"peakRssiCdbm":d}});
        let pos = serde_json::json!({"receipt_id":a,"currency":g,"pos":c,"member_id":d,"ts":e,
            "lines":[{"sku":b,"gtin":f,"qty":c,"unit_price":d,"unit_price_minor":e}, g]});
        for (text, kind, payload) in [
            (ZEBRA, ProfileKind::Rfid, &zebra),
            (IMPINJ, ProfileKind::Rfid, &impinj),
            (POS, ProfileKind::Pos, &pos),
        ] {
            let bytes = serde_json::to_vec(payload).unwrap();
            let out = codec(text, kind).decode(&bytes, &ctx(), now());
            for item in &out.items {
                match item {
                    Decoded::TagReads(reads) => for read in reads {
                        prop_assert!(!read.epc.is_empty());
                        prop_assert!(read.epc.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)));
                    },
                    Decoded::Events(events) => for (_, body) in events {
                        let line = sale(body);
                        prop_assert!(line.qty > 0 && line.unit_price_minor >= 0);
                    },
                    Decoded::Bad { reason, .. } => prop_assert!(!reason.is_empty()),
                }
            }
        }
    }
}

// --- the fast parse of RFID messages (`extract`) ----------------------

/// Records at the top, a `when` below it, a path that ends where
/// another goes on (`tag` and `tag.id`) and an array index.
const NESTED: &str = r#"
    [json]
    when = { "meta.kind" = "epc" }
    [json.fields]
    epc = [{ path = "tag.id", as = "hex" }, { path = "tag", as = "base64" }]
    antenna = "ants.1"
    rssi_dbm = { path = "meta.dbm", scale = 0.1 }
    ts = ["seen.0", "at"]
"#;

fn fast_codecs() -> [JsonCodec; 3] {
    [ZEBRA, IMPINJ, NESTED].map(|text| codec(text, ProfileKind::Rfid))
}

#[test]
fn the_fast_parse_reads_the_samples_and_is_taken() {
    for (codec, sample) in [
        (codec(ZEBRA, ProfileKind::Rfid), ZEBRA_SIMPLE),
        (codec(ZEBRA, ProfileKind::Rfid), ZEBRA_BATCH),
        (codec(IMPINJ, ProfileKind::Rfid), IMPINJ_TAG),
        (codec(IMPINJ, ProfileKind::Rfid), IMPINJ_MINIMAL),
        (codec(IMPINJ, ProfileKind::Rfid), IMPINJ_STATUS),
    ] {
        let fast = codec.decode_extracted(sample.as_bytes(), now());
        assert_eq!(
            fast,
            Some(codec.decode_parsed(sample.as_bytes(), &ctx(), now())),
            "{sample}"
        );
    }
    let nested = codec(NESTED, ProfileKind::Rfid);
    let message = br#"[{"meta":{"kind":"epc","dbm":-405},"tag":{"id":"e2801160"},"ants":[7,3],"seen":["2024-05-10T08:00:01.5+0200"]},
        {"meta":{"kind":"epc"},"tag":"4oARYGAAAgpmgfI_","at":"2024-05-10T06:00:02Z"},{"meta":{"kind":"tid"},"tag":{"id":"00"}}]"#;
    let fast = nested.decode_extracted(message, now()).unwrap();
    assert_eq!(fast, nested.decode_parsed(message, &ctx(), now()));
    let Decoded::TagReads(reads) = &fast.items[0] else {
        panic!("{fast:?}")
    };
    assert_eq!(reads.len(), 2);
    assert_eq!((reads[0].antenna, reads[0].rssi_dbm), (Some(3), Some(-41)));
    assert_eq!(reads[1].epc, "E28011606000020A6681F23F");
    // Anything that is not all good records goes the full way.
    assert_eq!(nested.decode_extracted(b"[1]", now()), None);
    assert_eq!(nested.decode_extracted(b"{\"meta\":", now()), None);
    // POS profiles always do.
    let pos = codec(POS, ProfileKind::Pos);
    assert_eq!(pos.decode_extracted(b"{}", now()), None);
}

/// A JSON text: objects may repeat keys, and keys and strings may be
/// written with escapes (`"id\u0048ex"` is `idHex`), which a `Value`
/// built from a strategy could not express.
fn json_text() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        proptest::sample::select(vec![
            "data",
            "idHex",
            "id\\u0048ex",
            "antenna",
            "peakRssi",
            "timestamp",
            "type",
            "eventType",
            "tagInventoryEvent",
            "epcHex",
            "epc",
            "antennaPort",
            "peakRssiCdbm",
            "meta",
            "kind",
            "dbm",
            "tag",
            "id",
            "ants",
            "seen",
            "at",
            "0",
            "1",
            "x",
        ])
        .prop_map(|k| format!("\"{k}\"")),
        Just("\"bad\\ud800\"".to_string()),
    ];
    let leaf = prop_oneof![
        json_value().prop_map(|v| v.to_string()),
        proptest::sample::select(vec![
            "\"SIMPLE\"",
            "\"tagInventory\"",
            "\"epc\"",
            "\"3005FB63ac1f\"",
            "\"4oARYGAAAgpmgfI_\"",
            "\"2023-04-03T21:50:16.699+0200\"",
            "\"2021-02-02T22:18:35.658476625Z\"",
            "\"S\\u0049MPLE\"",
            "\"\\ud800\"",
            "\"\\u00e9\\n\"",
            "-4050",
            "1e400",
            "12.5",
            "-0",
        ])
        .prop_map(str::to_string),
    ];
    leaf.prop_recursive(4, 40, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4)
                .prop_map(|items| format!("[{}]", items.join(","))),
            proptest::collection::vec((key.clone(), inner), 0..6).prop_map(|pairs| {
                let pairs: Vec<String> = pairs
                    .into_iter()
                    .map(|(k, v)| format!("{k} : {v}"))
                    .collect();
                format!("{{{}}}", pairs.join(","))
            }),
        ]
    })
}

/// An object from `pairs` plus random extra pairs (some repeating a
/// wanted key), in random order.
fn object_text(
    pairs: Vec<(&'static str, BoxedStrategy<String>)>,
    key: BoxedStrategy<String>,
) -> impl Strategy<Value = String> {
    let extras = proptest::collection::vec((key, json_text()), 0..3);
    (pairs, extras).prop_flat_map(|(pairs, extras)| {
        let mut all: Vec<(String, String)> = pairs
            .into_iter()
            .map(|(k, v)| (format!("\"{k}\""), v))
            .collect();
        all.extend(extras);
        Just(all).prop_shuffle().prop_map(|pairs| {
            let pairs: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}:{v}")).collect();
            format!("{{{}}}", pairs.join(","))
        })
    })
}

/// Records close to what the three fast codecs read, so that most of
/// them decode and the fast way is what is being compared.
fn near_record_text() -> impl Strategy<Value = String> {
    let key = || {
        proptest::sample::select(vec![
            "data",
            "type",
            "tag",
            "meta",
            "ants",
            "x",
            "timestamp",
        ])
        .prop_map(|k| format!("\"{k}\""))
        .boxed()
    };
    let text = |options: &[&'static str]| {
        proptest::sample::select(options.to_vec())
            .prop_map(str::to_string)
            .boxed()
    };
    let hex = || {
        text(&[
            "\"3005fb63ac1f3681ec880468\"",
            "\"E280\"",
            "\"xyz\"",
            "null",
        ])
    };
    let number = || text(&["1", "-39", "-4050", "\"2\"", "2.5"]);
    let ts = || {
        text(&[
            "\"2023-04-03T21:50:16.699+0200\"",
            "\"2021-02-02T22:18:35.658476625Z\"",
            "1700000000",
            "\"soon\"",
        ])
    };
    let zebra_data = object_text(
        vec![
            ("idHex", hex()),
            ("antenna", number()),
            ("peakRssi", number()),
        ],
        key(),
    );
    let zebra = object_text(
        vec![
            ("type", text(&["\"SIMPLE\"", "\"PORTAL\"", "\"HEALTH\""])),
            ("timestamp", ts()),
            ("data", zebra_data.boxed()),
        ],
        key(),
    );
    let impinj_event = object_text(
        vec![
            ("epcHex", hex()),
            (
                "epc",
                text(&["\"4oARYGAAAgpmgfI_\"", "\"4oARYGAAAgpmgfI/\"", "\"!\""]),
            ),
            ("antennaPort", number()),
            ("peakRssiCdbm", number()),
        ],
        key(),
    );
    let impinj = object_text(
        vec![
            (
                "eventType",
                text(&["\"tagInventory\"", "\"inventoryStatus\""]),
            ),
            ("timestamp", ts()),
            ("tagInventoryEvent", impinj_event.boxed()),
        ],
        key(),
    );
    let nested_tag = prop_oneof![
        object_text(vec![("id", hex())], key()).boxed(),
        text(&["\"4oARYGAAAgpmgfI_\"", "\"\""]),
    ];
    let nested = object_text(
        vec![
            (
                "meta",
                object_text(
                    vec![("kind", text(&["\"epc\"", "\"tid\""])), ("dbm", number())],
                    key(),
                )
                .boxed(),
            ),
            ("tag", nested_tag.boxed()),
            ("ants", text(&["[1,2]", "[1]", "{\"1\":4}", "[0,\"3\",9]"])),
            (
                "seen",
                prop_oneof![ts().prop_map(|t| format!("[{t}]")), ts()].boxed(),
            ),
            ("at", ts()),
        ],
        key(),
    );
    let record = prop_oneof![zebra, impinj, nested];
    prop_oneof![
        record.clone(),
        proptest::collection::vec(record, 0..4).prop_map(|r| format!("[{}]", r.join(","))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// Mostly records the fast way decodes, also any JSON text; either
    /// maybe with one byte changed.
    #[test]
    fn the_fast_parse_decodes_exactly_as_the_full_parse(
        text in prop_oneof![near_record_text(), json_text()],
        flip in proptest::option::of((any::<prop::sample::Index>(), any::<u8>())),
    ) {
        let mut bytes = text.into_bytes();
        if let Some((at, byte)) = flip {
            let at = at.index(bytes.len().max(1));
            if let Some(b) = bytes.get_mut(at) {
                *b = byte;
            }
        }
        for codec in fast_codecs() {
            prop_assert_eq!(
                codec.decode(&bytes, &ctx(), now()),
                codec.decode_parsed(&bytes, &ctx(), now())
            );
        }
    }
}
