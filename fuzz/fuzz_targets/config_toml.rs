//! storegate.toml as an operator might write it. Any text gets either a
//! config or a list of problems, each naming a key or the file.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use storegate::config::Config;
use storegate::profiles::BUILTIN;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let known = BUILTIN.iter().map(|(name, _)| name.to_string()).collect();
    if let Err(e) = Config::parse(text, Path::new("fuzz.toml"), &known) {
        assert!(!e.problems.is_empty());
        assert!(e.problems.iter().all(|p| !p.message.is_empty()));
    }
});
