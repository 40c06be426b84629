//! Firmware profiles (spec/profiles.md): data that says what a device's
//! bytes mean. A profile names a built-in codec and gives it parameters.
//! The built-ins are compiled into the binary from `firmware-profiles/`;
//! a file of the same name in `profiles_dir` overrides one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use toml::{Table, Value};

use crate::codecs::esl::{EslJsonParams, OeplParams};
use crate::codecs::json::{self, JsonCodec, JsonParams, ProfileKind};
use crate::codecs::lines::{CompiledLines, LinesParams};
use crate::codecs::llrp::LlrpParams;
use crate::codecs::m100::M100Params;
use crate::codecs::registers::RegistersParams;
use crate::config::{ConfigError, Problem, Transport};

pub mod control;
pub use control::ControlSpec;

/// Profiles built into the binary: (name, TOML text).
pub const BUILTIN: [(&str, &str); 11] = [
    (
        "zebra-fx-iot-connector",
        include_str!("../firmware-profiles/zebra-fx-iot-connector.toml"),
    ),
    (
        "impinj-iot",
        include_str!("../firmware-profiles/impinj-iot.toml"),
    ),
    (
        "pos-json",
        include_str!("../firmware-profiles/pos-json.toml"),
    ),
    (
        "uhf-m100-serial",
        include_str!("../firmware-profiles/uhf-m100-serial.toml"),
    ),
    (
        "pos-escpos-journal",
        include_str!("../firmware-profiles/pos-escpos-journal.toml"),
    ),
    (
        "loadcell-shelf-modbus",
        include_str!("../firmware-profiles/loadcell-shelf-modbus.toml"),
    ),
    ("xy-md02", include_str!("../firmware-profiles/xy-md02.toml")),
    (
        "esl-mqtt",
        include_str!("../firmware-profiles/esl-mqtt.toml"),
    ),
    (
        "openepaperlink-ap",
        include_str!("../firmware-profiles/openepaperlink-ap.toml"),
    ),
    (
        "impinj-r700-llrp",
        include_str!("../firmware-profiles/impinj-r700-llrp.toml"),
    ),
    (
        "zebra-fx9600-llrp",
        include_str!("../firmware-profiles/zebra-fx9600-llrp.toml"),
    ),
];

/// What kind of device a profile describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Rfid,
    Pos,
    Esl,
    Shelf,
    Sensor,
}

impl Kind {
    fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "rfid" => Kind::Rfid,
            "pos" => Kind::Pos,
            "esl" => Kind::Esl,
            "shelf" => Kind::Shelf,
            "sensor" => Kind::Sensor,
            _ => return None,
        })
    }
}

/// A codec with its validated parameters.
#[derive(Debug, Clone)]
pub enum Codec {
    Json(Arc<JsonCodec>),
    M100(M100Params),
    Lines(Arc<CompiledLines>),
    Registers(RegistersParams),
    EslJson(EslJsonParams),
    OpenEpaperLink(OeplParams),
    Llrp(LlrpParams),
}

impl Codec {
    pub fn name(&self) -> &'static str {
        match self {
            Codec::Json(_) => "json",
            Codec::M100(_) => "m100",
            Codec::Lines(_) => "lines",
            Codec::Registers(_) => "registers",
            Codec::EslJson(_) => "esl-json",
            Codec::OpenEpaperLink(_) => "openepaperlink",
            Codec::Llrp(_) => "llrp",
        }
    }

    /// Transports that can carry this codec's input.
    pub fn transports(&self) -> &'static [&'static str] {
        match self {
            Codec::Json(_) => &["mqtt", "http-stream", "http"],
            Codec::M100(_) | Codec::Lines(_) => &["serial"],
            Codec::Registers(_) => &["modbus-tcp", "modbus-rtu"],
            Codec::EslJson(_) => &["mqtt"],
            Codec::OpenEpaperLink(_) => &["http"],
            Codec::Llrp(_) => &["llrp"],
        }
    }
}

#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    pub kind: Kind,
    pub description: String,
    /// Serial speed when the device config gives none.
    pub default_baud: Option<u32>,
    pub codec: Codec,
    /// How the agent starts and stops the reader's reading (`[control]`),
    /// for readers whose management interface the agent drives.
    pub control: Option<ControlSpec>,
    /// Where it came from: a file path, or `built-in`.
    pub source: String,
}

/// Every profile a store can use, by name.
#[derive(Debug, Clone, Default)]
pub struct ProfileSet {
    pub profiles: BTreeMap<String, Arc<Profile>>,
}

impl ProfileSet {
    /// The built-ins plus every `*.toml` in `dir` (which may not exist).
    /// Broken profile files are reported, each with its problems.
    pub fn load(dir: &Path) -> Result<ProfileSet, Vec<ConfigError>> {
        Self::load_from(Some(dir))
    }

    /// Only the profiles built into the binary (benches, simulators,
    /// tests), without looking at any directory.
    pub fn builtin() -> Result<ProfileSet, Vec<ConfigError>> {
        Self::load_from(None)
    }

    fn load_from(dir: Option<&Path>) -> Result<ProfileSet, Vec<ConfigError>> {
        let mut set = ProfileSet::default();
        let mut errors = Vec::new();
        for (name, text) in BUILTIN {
            let file = PathBuf::from(format!("firmware-profiles/{name}.toml (built-in)"));
            match parse(text, &file, name) {
                Ok(p) => {
                    set.profiles.insert(name.to_string(), Arc::new(p));
                }
                Err(e) => errors.push(e),
            }
        }
        let mut files: Vec<PathBuf> = dir
            .and_then(|dir| std::fs::read_dir(dir).ok())
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        for path in files {
            let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    errors.push(one_problem(&path, "", format!("cannot read the file: {e}")));
                    continue;
                }
            };
            match parse(&text, &path, stem) {
                Ok(p) => {
                    set.profiles.insert(stem.to_string(), Arc::new(p));
                }
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(set)
        } else {
            Err(errors)
        }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Profile>> {
        self.profiles.get(name)
    }

    pub fn names(&self) -> std::collections::BTreeSet<String> {
        self.profiles.keys().cloned().collect()
    }
}

fn one_problem(file: &Path, key: &str, message: String) -> ConfigError {
    ConfigError {
        file: file.to_path_buf(),
        problems: vec![Problem {
            key: key.to_string(),
            message,
            ..Default::default()
        }],
    }
}

/// The codec table of a profile: `[json]`, `[m100]`, ... (`-` becomes `_`).
fn table_key(codec: &str) -> String {
    codec.replace('-', "_")
}

const CODECS: [&str; 7] = [
    "json",
    "llrp",
    "m100",
    "lines",
    "registers",
    "esl-json",
    "openepaperlink",
];

/// Parse and validate one profile; `stem` is its file name without `.toml`.
pub fn parse(text: &str, file: &Path, stem: &str) -> Result<Profile, ConfigError> {
    let table: Table = text.parse().map_err(|e: toml::de::Error| {
        one_problem(
            file,
            "",
            format!("not valid TOML: {}", e.to_string().trim_end()),
        )
    })?;
    let mut problems = Vec::new();
    let mut problem = |key: &str, message: String| {
        problems.push(Problem {
            key: key.to_string(),
            message,
            ..Default::default()
        })
    };
    let text_of = |key: &str| table.get(key).and_then(Value::as_str).map(str::to_string);

    let name = text_of("name").unwrap_or_default();
    if name != stem {
        problem(
            "name",
            format!("is {name:?} but must equal the file name without .toml ({stem:?})"),
        );
    }
    let kind = text_of("kind").and_then(|k| Kind::parse(&k));
    if kind.is_none() {
        problem(
            "kind",
            "missing or unknown; use one of \"rfid\", \"pos\", \"esl\", \"shelf\", \"sensor\""
                .into(),
        );
    }
    let codec_name = text_of("codec").unwrap_or_default();
    if !CODECS.contains(&codec_name.as_str()) {
        problem(
            "codec",
            format!(
                "{codec_name:?} is not a codec; use one of {}",
                CODECS.join(", ")
            ),
        );
    }
    let description = text_of("description").unwrap_or_default();
    if description.is_empty() {
        problem(
            "description",
            "missing; one line saying which devices and firmware the profile covers".into(),
        );
    }
    let default_baud = match table.get("default_baud") {
        None => None,
        Some(Value::Integer(b)) if (50..=4_000_000).contains(b) => Some(*b as u32),
        Some(v) => {
            problem("default_baud", format!("{v} is not a baud rate"));
            None
        }
    };
    let codec_table = table_key(&codec_name);
    for key in table.keys() {
        let known = [
            "name",
            "kind",
            "codec",
            "description",
            "default_baud",
            "control",
        ]
        .contains(&key.as_str())
            || *key == codec_table;
        if !known {
            problem(
                key,
                format!(
                    "unknown key; a {codec_name} profile has name, kind, codec, description, default_baud, [{codec_table}] and [control]"
                ),
            );
        }
    }
    let params = table
        .get(&codec_table)
        .cloned()
        .unwrap_or_else(|| Value::Table(Table::new()));
    let codec = build_codec(&codec_name, kind, params)
        .map_err(|m| problem(&codec_table, m))
        .ok();

    let control = match table.get("control") {
        None => None,
        Some(v) => match ControlSpec::deserialize(v.clone())
            .map_err(|e| e.to_string().trim_end().replace('\n', " "))
            .and_then(|c| c.validate().map(|()| c))
        {
            Ok(c) => Some(c),
            Err(m) => {
                problem("control", m);
                None
            }
        },
    };

    match (kind, codec) {
        (Some(kind), Some(codec)) if problems.is_empty() => Ok(Profile {
            name,
            kind,
            description,
            default_baud,
            codec,
            control,
            source: file.display().to_string(),
        }),
        _ => Err(ConfigError {
            file: file.to_path_buf(),
            problems,
        }),
    }
}

fn params<T: for<'de> Deserialize<'de>>(v: Value) -> Result<T, String> {
    T::deserialize(v).map_err(|e| e.to_string().trim_end().replace('\n', " "))
}

fn build_codec(name: &str, kind: Option<Kind>, v: Value) -> Result<Codec, String> {
    Ok(match name {
        "json" => {
            let p: JsonParams = params(v)?;
            let jk = match kind {
                Some(Kind::Pos) => ProfileKind::Pos,
                Some(Kind::Rfid) => ProfileKind::Rfid,
                _ => return Err("the json codec serves kind = \"rfid\" or \"pos\"".into()),
            };
            Codec::Json(Arc::new(json::compile(&p, jk)?))
        }
        "m100" => {
            let p: M100Params = params(v)?;
            p.validate()?;
            Codec::M100(p)
        }
        "lines" => {
            let p: LinesParams = params(v)?;
            Codec::Lines(Arc::new(p.compile()?))
        }
        "registers" => {
            let p: RegistersParams = params(v)?;
            p.validate()?;
            Codec::Registers(p)
        }
        "esl-json" => Codec::EslJson(params(v)?),
        "openepaperlink" => Codec::OpenEpaperLink(params(v)?),
        "llrp" => {
            if kind != Some(Kind::Rfid) {
                return Err("the llrp codec serves kind = \"rfid\"".into());
            }
            let p: LlrpParams = params(v)?;
            p.validate()?;
            Codec::Llrp(p)
        }
        _ => return Err(format!("no codec {name:?}")),
    })
}

/// Problems with the devices of a config given the profiles: the profile
/// must exist and its codec must fit the device's transport.
pub fn check_devices(config: &crate::config::Config, set: &ProfileSet) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (i, d) in config.devices.iter().enumerate() {
        let Some(profile) = set.get(&d.profile) else {
            continue; // already reported by the config reader
        };
        let transports = profile.codec.transports();
        if !transports.contains(&d.transport.name()) {
            problems.push(Problem {
                key: format!("device[{i}].transport"),
                message: format!(
                    "profile {:?} uses the {} codec, which does not work over {}; use transport = {}",
                    d.profile,
                    profile.codec.name(),
                    d.transport.name(),
                    transports.iter().map(|t| format!("{t:?}")).collect::<Vec<_>>().join(" or ")
                ),
                ..Default::default()
            });
        }
        if let Transport::Serial(line) | Transport::ModbusRtu { line, .. } = &d.transport {
            if line.baud.is_none() && profile.default_baud.is_none() {
                problems.push(Problem {
                    key: format!("device[{i}].baud"),
                    message: format!(
                        "profile {:?} has no default baud rate; set baud, e.g. baud = 9600",
                        d.profile
                    ),
                    ..Default::default()
                });
            }
        }
        problems.extend(check_control(i, d, profile));
        if profile.kind == Kind::Shelf && d.slots.is_empty() {
            problems.push(Problem {
                key: format!("device[{i}].slots"),
                message: "a shelf needs its slot -> SKU map, e.g. slots = { 0 = \"SKU-1001\" }"
                    .into(),
                ..Default::default()
            });
        }
    }
    problems
}

/// Whether a device's `[device.control]` fits its profile's `[control]`.
fn check_control(i: usize, d: &crate::config::DeviceConfig, profile: &Profile) -> Vec<Problem> {
    let Some(c) = &d.control else {
        return Vec::new();
    };
    let mut problems = Vec::new();
    let mut problem = |key: &str, message: String| {
        problems.push(Problem {
            key: format!("device[{i}].control{key}"),
            message,
            ..Default::default()
        })
    };
    let Some(spec) = &profile.control else {
        problem(
            "",
            format!(
                "profile {:?} has no [control]: the agent cannot start or stop this reader; remove [device.control] or give the profile a [control] table (docs/profiles.md)",
                d.profile
            ),
        );
        return problems;
    };
    // (key, whether the device gives it): what the protocol needs, and what
    // belongs to the other protocol.
    type Keys<'k> = &'k [(&'k str, bool)];
    let (needed, foreign): (Keys, Keys) = match spec {
        ControlSpec::Http(_) => (
            &[(".url", c.url.is_some())],
            &[
                (".command_topic", c.command_topic.is_some()),
                (".response_topic", c.response_topic.is_some()),
            ],
        ),
        ControlSpec::Mqtt(_) => (
            &[
                (".command_topic", c.command_topic.is_some()),
                (".response_topic", c.response_topic.is_some()),
            ],
            &[
                (".url", c.url.is_some()),
                (".credentials_file", c.credentials_file.is_some()),
            ],
        ),
    };
    for (key, present) in needed {
        if !present {
            let example = match *key {
                ".url" => "url = \"http://192.168.10.71\"",
                ".command_topic" => "command_topic = \"fx9600/mgmt/cmd\"",
                _ => "response_topic = \"fx9600/mgmt/resp\"",
            };
            problem(
                key,
                format!(
                    "missing; profile {:?} controls the reader over {}: add e.g. {example}",
                    d.profile,
                    spec.protocol()
                ),
            );
        }
    }
    for (key, present) in foreign {
        if *present {
            problem(
                key,
                format!(
                    "not used: profile {:?} controls the reader over {}; remove it",
                    d.profile,
                    spec.protocol()
                ),
            );
        }
    }
    match c.preset.as_deref().or(spec.default_preset()) {
        Some(p) if !spec.knows_preset(p) => problem(
            ".preset",
            format!("{p:?} is not a preset of this reader; use one of {:?}", spec.presets()),
        ),
        None if matches!(spec, ControlSpec::Http(_)) => problem(
            ".preset",
            "missing; name the reader preset to start, e.g. preset = \"store_inventory\" (the reader's web UI lists its presets)".into(),
        ),
        _ => {}
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_profile_loads() {
        let set = ProfileSet::builtin().unwrap();
        assert_eq!(set.profiles.len(), BUILTIN.len());
        for (name, _) in BUILTIN {
            assert_eq!(set.get(name).unwrap().name, name);
        }
    }

    #[test]
    fn a_profile_file_overrides_the_builtin_and_adds_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let zebra = BUILTIN[0]
            .1
            .replace("description = \"", "description = \"(site copy) ");
        std::fs::write(dir.path().join("zebra-fx-iot-connector.toml"), zebra).unwrap();
        std::fs::write(
            dir.path().join("acme-reader.toml"),
            "name = \"acme-reader\"\nkind = \"rfid\"\ncodec = \"json\"\ndescription = \"ACME\"\n[json]\nrecords = \"reads\"\n[json.fields]\nepc = \"tag.id\"\n",
        )
        .unwrap();
        let set = ProfileSet::load(dir.path()).unwrap();
        assert!(
            set.get("zebra-fx-iot-connector")
                .unwrap()
                .description
                .starts_with("(site copy)")
        );
        assert_eq!(
            set.get("acme-reader").unwrap().source,
            dir.path().join("acme-reader.toml").display().to_string()
        );
    }

    #[test]
    fn profile_errors_name_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.toml");
        std::fs::write(&path, "name = \"other\"\nkind = \"robot\"\ncodec = \"json\"\ndescription = \"x\"\ncolour = 1\n[json]\nrecords = \"$\"\n").unwrap();
        let errors = ProfileSet::load(dir.path()).unwrap_err();
        assert_eq!(errors.len(), 1);
        let text = errors[0].to_string();
        assert!(
            text.contains(&format!(
                "{}: name: is \"other\" but must equal the file name",
                path.display()
            )),
            "{text}"
        );
        assert!(text.contains("kind: missing or unknown"), "{text}");
        assert!(text.contains("colour: unknown key"), "{text}");
    }

    #[test]
    fn control_keys_must_fit_the_profile() {
        let set = ProfileSet::builtin().unwrap();
        let text = "store_id = \"s1\"\n\
            [[device]]\nid = \"door\"\nprofile = \"impinj-iot\"\ntransport = \"mqtt\"\ntopic = \"r/e\"\n\
            [device.control]\ncommand_topic = \"x/cmd\"\nstart_on_connect = \"yes\"\n\
            [[device]]\nid = \"dock\"\nprofile = \"zebra-fx-iot-connector\"\ntransport = \"mqtt\"\ntopic = \"f/d\"\n\
            [device.control]\nurl = \"ftp://x\"\ncommand_topic = \"f/+\"\npreset = \"TURBO\"\n\
            [[device]]\nid = \"till\"\nprofile = \"pos-json\"\ntransport = \"mqtt\"\ntopic = \"p\"\n\
            [device.control]\nurl = \"http://till\"\n";
        let config = crate::config::Config::parse(text, Path::new("store.toml"), &set.names());
        let mut problems = match config {
            Ok(c) => check_devices(&c, &set),
            Err(e) => e.problems,
        };
        if let Ok(c) = crate::config::Config::parse(
            &text
                .replace("start_on_connect = \"yes\"\n", "")
                .replace("ftp://x", "http://x")
                .replace("f/+", "f/cmd"),
            Path::new("store.toml"),
            &set.names(),
        ) {
            problems.extend(check_devices(&c, &set));
        }
        let all: Vec<String> = problems
            .iter()
            .map(|p| format!("{}: {}", p.key, p.message))
            .collect();
        let all = all.join("\n");
        for want in [
            "device[0].control.start_on_connect: expected true or false",
            "device[1].control.url: \"ftp://x\" is not an http:// or https:// URL",
            "device[1].control.command_topic: \"f/+\" must be one topic",
            "device[0].control.url: missing; profile \"impinj-iot\" controls the reader over http",
            "device[0].control.command_topic: not used",
            "device[0].control.preset: missing",
            "device[1].control.response_topic: missing",
            "device[1].control.url: not used",
            "device[1].control.preset: \"TURBO\" is not a preset of this reader",
            "device[2].control: profile \"pos-json\" has no [control]",
        ] {
            assert!(all.contains(want), "missing {want:?} in\n{all}");
        }
    }
}
