//! Nanoseconds per decoded message for the built-in RFID JSON profiles,
//! the agent's main cost per MQTT tag read: `cargo bench --bench json_decode`.

use std::time::Instant;

use storegate::codecs::json::DecodeContext;
use storegate::profiles::{Codec, ProfileSet};

fn main() {
    // `cargo test --all-targets` runs this too, without `--bench`: then a
    // short pass only checks that every message decodes.
    let benching = std::env::args().any(|a| a == "--bench");
    let (count, passes) = if benching { (5_000, 100) } else { (100, 1) };
    let profiles = match ProfileSet::builtin() {
        Ok(set) => set,
        Err(e) => panic!("built-in profiles: {e:?}"),
    };
    let ctx = DecodeContext {
        device_id: "door".into(),
        member_key: Vec::new(),
    };
    let now = chrono::Utc::now();
    let zebra = |i: usize| {
        format!(
            r#"{{"data":{{"eventNum":{i},"format":"epc","idHex":"3074257bf7194e40{i:08x}","antenna":1,"peakRssi":-50}},"timestamp":"2026-11-22T10:15:30.123+0100","type":"SIMPLE"}}"#
        )
    };
    let impinj = |i: usize| {
        format!(
            r#"{{"timestamp":"2026-11-22T10:15:30.658476625Z","hostname":"impinj-14-1f-23","eventType":"tagInventory","tagInventoryEvent":{{"epc":"4oARYGAAAgpmgfI_","epcHex":"E28011606000020A{i:08X}","antennaPort":1,"peakRssiCdbm":-4050}}}}"#
        )
    };
    let cases: [(&str, &dyn Fn(usize) -> String); 2] =
        [("zebra-fx-iot-connector", &zebra), ("impinj-iot", &impinj)];
    for (name, message) in cases {
        let Some(Codec::Json(codec)) = profiles.get(name).map(|p| &p.codec) else {
            panic!("{name} is not a JSON profile");
        };
        let messages: Vec<Vec<u8>> = (0..count).map(|i| message(i).into_bytes()).collect();
        let mut best = f64::MAX;
        for _ in 0..3 {
            let started = Instant::now();
            let mut reads = 0;
            for _ in 0..passes {
                for m in &messages {
                    reads += codec.decode(m, &ctx, now).items.len();
                }
            }
            assert_eq!(reads, count * passes, "every message is one read");
            best = best.min(started.elapsed().as_nanos() as f64 / reads as f64);
        }
        println!(
            "{name:<24} {best:>6.0} ns per message (best of 3 x {} messages)",
            count * passes
        );
    }
}
