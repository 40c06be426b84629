//! A POS journal printer stream through the built-in `pos-escpos-journal`
//! profile: ESC/POS stripping, regexes, receipts emitted or quarantined
//! whole. The receipts found must not depend on how the stream was split.
#![no_main]

use std::path::Path;
use std::sync::LazyLock;

use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use storegate::codecs::Decoded;
use storegate::codecs::lines::{CompiledLines, LinesDecoder};
use storegate::profiles::{Codec, ProfileSet};

static PROFILE: LazyLock<CompiledLines> = LazyLock::new(|| {
    let set = ProfileSet::load(Path::new("/nonexistent")).expect("built-in profiles");
    match &set.get("pos-escpos-journal").expect("built-in").codec {
        Codec::Lines(compiled) => (**compiled).clone(),
        other => panic!("unexpected codec {}", other.name()),
    }
});

fn decode(chunks: std::slice::Chunks<'_, u8>) -> Vec<Decoded> {
    let now = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
    let mut decoder = LinesDecoder::new(PROFILE.clone(), "pos-1");
    let mut out = Vec::new();
    for chunk in chunks {
        out.extend(decoder.feed(chunk, now));
    }
    out.extend(decoder.flush(now));
    out
}

fn events(items: &[Decoded]) -> Vec<String> {
    items
        .iter()
        .filter_map(|d| match d {
            Decoded::Events(events) => Some(format!("{events:?}")),
            _ => None,
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, stream)) = data.split_first() else {
        return;
    };
    let whole = decode(stream.chunks(stream.len().max(1)));
    let chunked = decode(stream.chunks(usize::from(split).max(1)));
    assert_eq!(
        events(&whole),
        events(&chunked),
        "receipts depend on how the stream was split"
    );
});
