//! M100 frames from a serial port: frame sync, checksum, PC-word EPC length.
//! Besides "never panics", the decoder must find the same tag reads however
//! the port happens to split the stream.
#![no_main]

use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use storegate::codecs::Decoded;
use storegate::codecs::m100::M100Decoder;

fn epcs(items: &[Decoded]) -> Vec<String> {
    items
        .iter()
        .filter_map(|d| match d {
            Decoded::TagReads(reads) => Some(reads.iter().map(|r| r.epc.clone())),
            _ => None,
        })
        .flatten()
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, stream)) = data.split_first() else {
        return;
    };
    let now = Utc.timestamp_opt(1_700_000_000, 0).unwrap();

    let whole = M100Decoder::new().feed(stream, now);

    let mut chunked = Vec::new();
    let mut decoder = M100Decoder::new();
    for chunk in stream.chunks(usize::from(split).max(1)) {
        chunked.extend(decoder.feed(chunk, now));
    }
    assert_eq!(
        epcs(&whole),
        epcs(&chunked),
        "reads depend on how the stream was split"
    );

    for item in &whole {
        if let Decoded::Bad { reason, raw } = item {
            assert!(
                !reason.is_empty() && !raw.is_empty(),
                "quarantine without reason or bytes"
            );
        }
    }
});
