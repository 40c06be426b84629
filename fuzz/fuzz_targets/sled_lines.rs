//! Lines of a handheld sled's export (any text): every line is a product,
//! another EPC or malformed, never a panic; a product carries a GTIN with
//! a valid check digit and a GS1 serial of 1 to 20 characters, and no
//! session key outgrows a bounded size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storegate::domain::epc::{MAX_LINE_LEN, SledTag, classify};
use storegate::domain::sgtin::is_valid_gtin;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for line in text.lines() {
        let tag = classify(line);
        if let SledTag::Product { gtin, serial } = &tag {
            assert!(is_valid_gtin(gtin), "{gtin} from {line:?}");
            assert!((1..=20).contains(&serial.chars().count()), "{serial:?} from {line:?}");
        }
        assert!(tag.key(line).len() <= MAX_LINE_LEN, "key of {line:?}");
    }
});
