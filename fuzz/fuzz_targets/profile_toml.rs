//! Firmware profile files dropped into profiles_dir: any text gets either
//! a compiled profile or an error naming the file and problem.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use storegate::profiles::parse;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = parse(text, Path::new("fuzz.toml"), "fuzz") {
        assert!(!e.problems.is_empty());
    }
});
