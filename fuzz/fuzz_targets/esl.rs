//! What shelf labels and their access points send back: esl-json status
//! messages (topic + payload) and OpenEPaperLink `/get_db` pages.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storegate::codecs::esl::{normalize_mac, parse_get_db, parse_status};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let cut = usize::from(cut).min(rest.len());
    let (topic, payload) = rest.split_at(cut);
    let topic = String::from_utf8_lossy(topic);
    let _ = parse_status(&format!("store/1/esl/{topic}/status"), payload);
    let _ = parse_status(&topic, payload);
    if let Ok(page) = parse_get_db(data) {
        for tag in &page.tags {
            assert_eq!(normalize_mac(&tag.mac).as_deref(), Ok(tag.mac.as_str()));
        }
    }
});
