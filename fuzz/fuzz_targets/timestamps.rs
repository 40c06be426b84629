//! The lenient timestamp parser devices' `ts` fields go through (ISO 8601
//! with offsets, 0-9 digit fractions, epoch seconds/millis). A parsed time
//! must survive the journal's own format unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storegate::codecs::json::parse_ts;
use storegate::event::format_ts;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(ts) = parse_ts(text) {
        let written = format_ts(&ts);
        let again = parse_ts(&written).expect("the journal's own timestamp format parses");
        assert_eq!(format_ts(&again), written);
    }
});
