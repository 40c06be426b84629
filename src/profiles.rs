//! Firmware profiles: which profile names exist. The profile files and
//! their codecs are the devices issue's; here is only the catalogue that
//! `check` validates device references against.

use std::collections::BTreeSet;
use std::path::Path;

/// Profiles built into the binary (and shipped in `firmware-profiles/`).
pub const BUILTIN: [&str; 9] = [
    "zebra-fx-iot-connector",
    "impinj-iot",
    "pos-json",
    "uhf-m100-serial",
    "pos-escpos-journal",
    "loadcell-shelf-modbus",
    "xy-md02",
    "esl-mqtt",
    "openepaperlink-ap",
];

/// Every profile name a device may use: the built-ins plus each `*.toml`
/// in `profiles_dir` (a missing directory just adds nothing).
pub fn known_names(profiles_dir: &Path) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = BUILTIN.iter().map(|s| s.to_string()).collect();
    if let Ok(entries) = std::fs::read_dir(profiles_dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "toml") {
                if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                    names.insert(stem.to_string());
                }
            }
        }
    }
    names
}
