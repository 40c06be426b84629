//! SGTIN-96 EPCs as readers report them (any text). A decoded EPC
//! re-encodes to itself, and its GTIN carries a valid check digit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storegate::domain::sgtin::{decode_sgtin96, encode_sgtin96, is_valid_gtin};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(s) = decode_sgtin96(text) {
        assert!(is_valid_gtin(&s.gtin), "{} from {text}", s.gtin);
        let again = encode_sgtin96(&s.gtin, s.partition, s.filter, s.serial).expect("re-encodes");
        assert_eq!(again, text.trim().to_ascii_uppercase(), "round trip");
    }
});
