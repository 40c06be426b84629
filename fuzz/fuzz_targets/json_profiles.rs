//! MQTT / HTTP JSON payloads through every built-in `json` profile (Zebra,
//! Impinj, POS JSON): field paths, alternatives, hex/base64, scale, `when`
//! filters, lenient timestamps. Every record is accounted for: decoded,
//! filtered, or quarantined with its raw bytes.
#![no_main]

use std::path::Path;
use std::sync::{Arc, LazyLock};

use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use storegate::codecs::Decoded;
use storegate::codecs::json::{DecodeContext, JsonCodec};
use storegate::profiles::{Codec, ProfileSet};

static CODECS: LazyLock<Vec<Arc<JsonCodec>>> = LazyLock::new(|| {
    let set = ProfileSet::load(Path::new("/nonexistent")).expect("built-in profiles");
    set.profiles
        .values()
        .filter_map(|p| match &p.codec {
            Codec::Json(codec) => Some(codec.clone()),
            _ => None,
        })
        .collect()
});

fuzz_target!(|data: &[u8]| {
    let ctx = DecodeContext {
        device_id: "dev-1".into(),
        member_key: b"fuzz-key".to_vec(),
    };
    let now = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
    for codec in CODECS.iter() {
        let out = codec.decode(data, &ctx, now);
        for item in &out.items {
            if let Decoded::Bad { reason, .. } = item {
                assert!(!reason.is_empty(), "quarantine without a reason");
            }
        }
    }
});
