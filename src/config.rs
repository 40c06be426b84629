//! The TOML configuration (spec/config.md), validated into typed structs.
//!
//! The file is read into a TOML table first and then walked key by key, so
//! that *every* problem is reported at once with the file, the key and what
//! would be right; serde's derive would stop at the first one. Unknown keys
//! are errors: a typo must never silently disable a device.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use toml::{Table, Value};

mod central;
mod control;
mod device;
mod epcis;
mod fields;
pub mod layered;
mod llrp;
mod place;

pub use central::{CentralTransport, DEFAULT_MAX_PAYLOAD_BYTES, MqttUplinkConfig};
pub use control::ReaderControl;
use device::read_device;
pub use epcis::is_extension as is_sgln_extension;
use fields::Fields;
pub use fields::closest;

/// Give each problem its line in `text` and its device's id (for problems
/// found outside this module, such as `storegate check`'s warnings).
pub fn locate(text: &str, problems: &mut [Problem]) {
    place::locate(text, problems);
}

/// One thing wrong with a configuration file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `device[2].baud` (empty for whole-file problems).
    pub key: String,
    /// What is wrong and what would be right.
    pub message: String,
    /// The line of the file it is on (1-based), when known: the key's
    /// line, or its table's when the key is missing.
    pub line: Option<usize>,
    /// The `id` of the `[[device]]` the key belongs to, when it has one:
    /// technicians know their devices by id, not by position.
    pub device: Option<String>,
}

impl Problem {
    /// The problem as a technician reads it: `store.toml:41 device
    /// "pos-3": port: ...`.
    pub fn in_file(&self, file: &Path) -> String {
        format!("{}{}", file.display(), self.located())
    }

    /// How the problem reads after the file name: `:41 device "pos-3":
    /// port: ...`, `:3 locale: ...` or `: store_id: ...`.
    fn located(&self) -> String {
        let line = self.line.map_or(":".to_string(), |l| format!(":{l}"));
        let (device, key) = match (&self.device, place::device_key(&self.key)) {
            (Some(id), Some((_, rest))) => (format!(" device {id:?}:"), rest),
            _ => (String::new(), self.key.as_str()),
        };
        let key = if key.is_empty() {
            String::new()
        } else {
            format!(" {key}:")
        };
        format!("{line}{device}{key} {}", self.message)
    }
}

/// Every problem found in one configuration file.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "{}: {n} problem{}",
            self.file.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  {}{}", self.file.display(), p.located())?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Durability {
    /// fsync the WAL at every commit group: a power cut loses nothing that
    /// was acknowledged.
    Full,
    /// WAL without fsync per group: a crash of the process loses nothing,
    /// a power cut may lose the last commit groups (up to the last
    /// checkpoint) although they were acknowledged.
    Normal,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub store_id: String,
    pub data_dir: PathBuf,
    pub profiles_dir: PathBuf,
    pub disk_quota_mb: u64,
    pub durability: Durability,
    pub journal_retention_h: u64,
    pub locale: String,
    pub offline_alert_s: u64,
    pub api: ApiConfig,
    pub mqtt: MqttConfig,
    pub central: Option<CentralConfig>,
    pub rfid: RfidConfig,
    pub pricing: PricingConfig,
    /// Staff tasks (`[tasks]`): when a done task is checked again, where
    /// the backroom is, when an RFID count needs a person.
    pub tasks: TasksConfig,
    /// Where the store is in GS1 terms, for the EPCIS output; `None`
    /// without an `[epcis]` table (the EPCIS output then refuses).
    pub epcis: Option<EpcisConfig>,
    pub devices: Vec<DeviceConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    pub ops_listen: Option<SocketAddr>,
    pub staff_tokens: Option<PathBuf>,
    pub central_tokens: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Broker {
    /// Start rumqttd in process on this address.
    Embedded(SocketAddr),
    /// Connect to an external broker (`mqtt://host:port` or `mqtts://...`).
    External { url: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct MqttConfig {
    pub broker: Broker,
    pub client_id: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CentralConfig {
    pub url: String,
    pub token_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub batch_max: usize,
    pub max_backoff_s: u64,
    pub poll_prices_s: u64,
    pub poll_stock_s: u64,
    /// How often pickup orders are pulled (sync-api.md 6), besides at
    /// start, when the link comes back and on the `pull_orders` command.
    pub poll_orders_s: u64,
    /// The heartbeat's period (spec/fleet.md 3), over either transport.
    pub heartbeat_s: u64,
    /// HTTP (the default) or the MQTT fleet uplink.
    pub transport: CentralTransport,
    /// How often central's config is pulled (spec/fleet.md 4), besides at
    /// start and on the `pull_config` command.
    pub poll_config_s: u64,
    /// How long the devices that were up before a central config was
    /// applied have to come up again before the agent rolls back.
    pub config_rollback_s: u64,
}

impl CentralConfig {
    /// The HTTP transport to `url` with every other key at its default
    /// (docs/config.md): what `[central]` with only `url` reads as.
    pub fn http(url: impl Into<String>) -> CentralConfig {
        CentralConfig {
            url: url.into(),
            token_file: None,
            ca_file: None,
            batch_max: 5000,
            max_backoff_s: 300,
            poll_prices_s: 30,
            poll_stock_s: 300,
            poll_orders_s: 60,
            heartbeat_s: 60,
            transport: CentralTransport::Http,
            poll_config_s: 300,
            config_rollback_s: 120,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RfidConfig {
    pub dedup_window_ms: u64,
    pub departed_after_s: u64,
    /// An antenna that read before and has read nothing for this long
    /// raises `antenna_quiet` (readers reporting antenna ports: llrp).
    pub quiet_after_s: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PricingConfig {
    pub conflict_grace_s: u64,
}

/// The `[tasks]` table (docs/config.md).
#[derive(Debug, Clone, PartialEq)]
pub struct TasksConfig {
    /// Seconds after a person marks a task done before the store looks
    /// again: the alert still open then reopens the task.
    pub verify_after_s: u64,
    /// The RFID zone whose tags are the backroom stock a refill comes from.
    pub backroom_zone: String,
    /// An RFID count off the books by more than this many units opens a
    /// `count_mismatch` alert and a count task.
    pub count_threshold: i64,
}

impl Default for TasksConfig {
    fn default() -> Self {
        TasksConfig {
            verify_after_s: 600,
            backroom_zone: "backroom".into(),
            count_threshold: 2,
        }
    }
}

/// The `[epcis]` table (docs/config.md): the store's GLN, how much of it
/// is the GS1 company prefix, and an SGLN extension per zone.
#[derive(Debug, Clone, PartialEq)]
pub struct EpcisConfig {
    /// The store's GLN, 13 digits with a valid check digit.
    pub gln: String,
    /// Digits of the GS1 company prefix at the start of `gln` (6..=12).
    pub company_prefix_digits: usize,
    /// Zone name -> SGLN extension of that zone's location.
    pub zones: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parity {
    None,
    Even,
    Odd,
}

/// Line settings of a serial port (also used by Modbus RTU).
#[derive(Debug, Clone, PartialEq)]
pub struct SerialLine {
    pub port: PathBuf,
    /// `None`: the profile's default baud rate.
    pub baud: Option<u32>,
    pub data_bits: u8,
    pub parity: Parity,
    pub stop_bits: u8,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Transport {
    Serial(SerialLine),
    Mqtt {
        topic: String,
        /// Messages larger than this are quarantined (size, topic, first
        /// bytes) and acknowledged instead of decoded.
        max_message_bytes: usize,
    },
    ModbusTcp {
        address: String,
        unit: u8,
        poll_ms: u64,
    },
    ModbusRtu {
        line: SerialLine,
        unit: u8,
        poll_ms: u64,
    },
    Http {
        url: String,
        poll_ms: u64,
    },
    HttpStream {
        url: String,
    },
    /// An LLRP reader (Impinj, Zebra) over TCP; the profile's `[llrp]`
    /// table gives the inventory, these keys override it per device.
    Llrp(LlrpLink),
}

/// The keys of an `llrp` device (spec/config.md).
#[derive(Debug, Clone, PartialEq)]
pub struct LlrpLink {
    /// `host:port`; a bare host gets port 5084.
    pub address: String,
    /// Overrides of the profile's `[llrp]` values.
    pub keepalive_s: Option<u64>,
    pub antennas: Option<Vec<u16>>,
    pub tx_power_dbm: Option<f64>,
    pub session: Option<u8>,
    /// Antenna port -> zone; reads of other antennas take the device's
    /// `zone`.
    pub zones: BTreeMap<u16, String>,
    /// LLRP over TLS (`tls = true`): the reader's certificate is checked
    /// against `ca_file`.
    pub tls: Option<LlrpTls>,
}

/// The TLS keys of an `llrp` device.
#[derive(Debug, Clone, PartialEq)]
pub struct LlrpTls {
    /// PEM: the CA that signed the reader's certificate.
    pub ca_file: std::path::PathBuf,
    /// PEM certificate and key the agent shows, for readers that ask for one.
    pub client_cert: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

/// The IANA port of LLRP over TLS.
pub const LLRP_TLS_PORT: u16 = 5085;

/// The IANA port of LLRP (5085 is LLRP over TLS).
pub const LLRP_PORT: u16 = 5084;

impl Transport {
    pub fn name(&self) -> &'static str {
        match self {
            Transport::Serial(_) => "serial",
            Transport::Mqtt { .. } => "mqtt",
            Transport::ModbusTcp { .. } => "modbus-tcp",
            Transport::ModbusRtu { .. } => "modbus-rtu",
            Transport::Http { .. } => "http",
            Transport::HttpStream { .. } => "http-stream",
            Transport::Llrp(_) => "llrp",
        }
    }

    /// Where the device is reached, for humans.
    pub fn endpoint(&self) -> String {
        match self {
            Transport::Serial(l) | Transport::ModbusRtu { line: l, .. } => {
                l.port.display().to_string()
            }
            Transport::Mqtt { topic, .. } => topic.clone(),
            Transport::ModbusTcp { address, .. } => address.clone(),
            Transport::Http { url, .. } | Transport::HttpStream { url } => url.clone(),
            Transport::Llrp(link) => link.address.clone(),
        }
    }
}

/// An MQTT device's message size limit unless its `max_message_bytes`
/// says otherwise: far above a batch of RFID reads or a receipt, far below
/// what would strain a gateway's memory.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// The largest packet MQTT can express (a remaining length of 268,435,455
/// bytes plus the fixed header): no device limit can be above it.
pub const MAX_MQTT_PACKET: usize = 268_435_455 + 5;

pub const TRANSPORTS: [&str; 7] = [
    "serial",
    "mqtt",
    "modbus-tcp",
    "modbus-rtu",
    "http",
    "http-stream",
    "llrp",
];

#[derive(Debug, Clone, PartialEq)]
pub struct DeviceConfig {
    pub id: String,
    pub profile: String,
    pub transport: Transport,
    pub zone: Option<String>,
    /// Shelf slot index -> SKU.
    pub slots: BTreeMap<u32, String>,
    /// Shelf slot index -> the units it holds when full (what a refill
    /// task fills it up to).
    pub slot_capacity: BTreeMap<u32, i64>,
    pub alert_above: Option<f64>,
    pub alert_below: Option<f64>,
    pub offline_alert_s: u64,
    /// `[device.control]`: the agent starts and stops the reader's reading.
    pub control: Option<ReaderControl>,
}

impl Config {
    /// Read and validate a configuration file. `known_profiles` is the set
    /// of profile names a device may use.
    pub fn load(path: &Path, known_profiles: &BTreeSet<String>) -> Result<Config, ConfigError> {
        Config::load_with(path, known_profiles, |_| Vec::new())
    }

    /// [`Config::load`] with checks of the caller's (devices against their
    /// profiles, the locale) run on the config as read even when it has
    /// problems of its own, so that every problem is reported in one pass,
    /// each with its line.
    pub fn load_with(
        path: &Path,
        known_profiles: &BTreeSet<String>,
        more: impl FnOnce(&Config) -> Vec<Problem>,
    ) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            problems: vec![Problem {
                key: String::new(),
                message: format!("cannot read the file: {e}"),
                ..Default::default()
            }],
        })?;
        Config::parse_with(&text, path, known_profiles, more)
    }

    /// Validate configuration text; `path` is only used in messages.
    pub fn parse(
        text: &str,
        path: &Path,
        known_profiles: &BTreeSet<String>,
    ) -> Result<Config, ConfigError> {
        Config::parse_with(text, path, known_profiles, |_| Vec::new())
    }

    /// [`Config::parse`] with the caller's checks (see [`Config::load_with`]).
    pub fn parse_with(
        text: &str,
        path: &Path,
        known_profiles: &BTreeSet<String>,
        more: impl FnOnce(&Config) -> Vec<Problem>,
    ) -> Result<Config, ConfigError> {
        let table = parse_table(text, path)?;
        Config::from_table_with(&table, Some(text), path, known_profiles, more)
    }

    /// Validate an already parsed table with the caller's checks; `text`
    /// is the table's source when it has one (problems get its lines),
    /// `path` names it in messages. A merged table (the local file with
    /// central's config over it, [`layered::merge`]) has no text: its
    /// device problems still name the device.
    pub fn from_table_with(
        table: &Table,
        text: Option<&str>,
        path: &Path,
        known_profiles: &BTreeSet<String>,
        more: impl FnOnce(&Config) -> Vec<Problem>,
    ) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let config = read_config(table, known_profiles, &mut problems);
        let more = more(&config);
        problems.extend(place::without_consequences(more, &problems));
        match text {
            Some(text) => place::locate(text, &mut problems),
            None => place::name_devices(table, &mut problems),
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError {
                file: path.to_path_buf(),
                problems,
            })
        }
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("storegate.db")
    }
}

/// Configuration text as a TOML table, or the problem (with its line) that
/// keeps it from being one; `path` names the file in the message.
pub fn parse_table(text: &str, path: &Path) -> Result<Table, ConfigError> {
    text.parse().map_err(|e: toml::de::Error| ConfigError {
        file: path.to_path_buf(),
        problems: vec![Problem {
            key: String::new(),
            message: format!("not valid TOML: {}", e.to_string().trim_end()),
            ..Default::default()
        }],
    })
}

fn read_config(table: &Table, profiles: &BTreeSet<String>, p: &mut Vec<Problem>) -> Config {
    let mut f = Fields::new(table, "");
    let store_id = f.required_string(p, "store_id", "\"store-0042\"");
    let data_dir = PathBuf::from(
        f.string(p, "data_dir")
            .unwrap_or_else(|| "/var/lib/storegate".into()),
    );
    let profiles_dir = PathBuf::from(
        f.string(p, "profiles_dir")
            .unwrap_or_else(|| "/usr/share/storegate/firmware-profiles".into()),
    );
    let disk_quota_mb = f.integer(p, "disk_quota_mb", 2048, 16..=1 << 30);
    let durability = f.choice(
        p,
        "durability",
        &[("full", Durability::Full), ("normal", Durability::Normal)],
        Durability::Full,
    );
    let journal_retention_h = f.integer(p, "journal_retention_h", 72, 0..=24 * 365);
    let locale = f.string(p, "locale").unwrap_or_else(|| "de-DE".into());
    let offline_alert_s = f.integer(p, "offline_alert_s", 120, 1..=7 * 86400);

    let empty = Table::new();
    let api = read_api(f.table(p, "api").unwrap_or(&empty), p);
    let mqtt = read_mqtt(f.table(p, "mqtt").unwrap_or(&empty), &store_id, p);
    let central = f
        .table(p, "central")
        .and_then(|t| central::read_central(t, p));
    let rfid = {
        let mut r = Fields::new(f.table(p, "rfid").unwrap_or(&empty), "rfid");
        let c = RfidConfig {
            dedup_window_ms: r.integer(p, "dedup_window_ms", 5000, 0..=3_600_000),
            departed_after_s: r.integer(p, "departed_after_s", 600, 1..=7 * 86400),
            quiet_after_s: r.integer(p, "quiet_after_s", 300, 1..=7 * 86400),
        };
        r.finish(p, "keys of [rfid]");
        c
    };
    let pricing = {
        let mut r = Fields::new(f.table(p, "pricing").unwrap_or(&empty), "pricing");
        let c = PricingConfig {
            conflict_grace_s: r.integer(p, "conflict_grace_s", 120, 0..=86400),
        };
        r.finish(p, "keys of [pricing]");
        c
    };
    let tasks = {
        let mut r = Fields::new(f.table(p, "tasks").unwrap_or(&empty), "tasks");
        let c = TasksConfig {
            verify_after_s: r.integer(p, "verify_after_s", 600, 1..=7 * 86400),
            backroom_zone: r
                .string(p, "backroom_zone")
                .unwrap_or_else(|| "backroom".into()),
            count_threshold: r.integer(p, "count_threshold", 2, 0..=1_000_000) as i64,
        };
        r.finish(p, "keys of [tasks]");
        c
    };
    let epcis = f.table(p, "epcis").and_then(|t| epcis::read_epcis(t, p));

    let mut devices = Vec::new();
    match f.get("device") {
        None => {}
        Some(Value::Array(items)) => {
            let mut seen = BTreeMap::new();
            for (i, item) in items.iter().enumerate() {
                let prefix = format!("device[{i}]");
                let Value::Table(t) = item else {
                    p.push(Problem {
                        key: prefix,
                        message: "expected a [[device]] table".into(),
                        ..Default::default()
                    });
                    continue;
                };
                let d = read_device(t, &prefix, offline_alert_s, profiles, p);
                if !d.id.is_empty() {
                    if let Some(first) = seen.insert(d.id.clone(), i) {
                        p.push(Problem {
                            key: format!("{prefix}.id"),
                            message: format!(
                                "duplicate device id {:?} (also device[{first}]); every device needs its own id",
                                d.id
                            ),
                            ..Default::default()
                        });
                    }
                }
                devices.push(d);
            }
        }
        Some(v) => f.wrong_type(p, "device", v, "an array of [[device]] tables"),
    }
    f.finish(p, "top-level keys");

    if let (Some(c), Broker::External { url }) = (&central, &mqtt.broker) {
        if let CentralTransport::Mqtt(m) = &c.transport {
            if m.brokers.contains(url) && mqtt.client_id == format!("storegate-{store_id}") {
                p.push(Problem {
                    key: "mqtt.client_id".into(),
                    message: format!(
                        "the devices' broker is also in central.brokers and both would connect as \"storegate-{store_id}\", taking each other's session; set e.g. client_id = \"storegate-{store_id}-devices\""
                    ),
                    ..Default::default()
                });
            }
        }
    }
    if !store_id.is_empty() && !is_identifier(&store_id) {
        p.push(Problem {
            key: "store_id".into(),
            message: format!(
                "{store_id:?} may only contain letters, digits, '-', '_' and '.' (it is used in URLs)"
            ),
            ..Default::default()
        });
    }

    Config {
        store_id,
        data_dir,
        profiles_dir,
        disk_quota_mb,
        durability,
        journal_retention_h,
        locale,
        offline_alert_s,
        api,
        mqtt,
        central,
        rfid,
        pricing,
        tasks,
        epcis,
        devices,
    }
}

/// Whether `s` is usable as a store id (it goes into URLs and file names).
pub fn is_store_id(s: &str) -> bool {
    is_identifier(s) && s != "." && s != ".."
}

pub(super) fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn read_api(t: &Table, p: &mut Vec<Problem>) -> ApiConfig {
    let mut f = Fields::new(t, "api");
    let listen = f
        .socket_addr(p, "listen", Some("127.0.0.1:8080"))
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
    let ops_listen = f.socket_addr(p, "ops_listen", None);
    let (mut staff_tokens, mut central_tokens) = (None, None);
    if let Some(files) = f.table(p, "token_files") {
        let mut tf = Fields::new(files, "api.token_files");
        staff_tokens = tf.string(p, "staff").map(PathBuf::from);
        central_tokens = tf.string(p, "central").map(PathBuf::from);
        tf.finish(p, "roles");
    }
    f.finish(p, "keys of [api]");
    ApiConfig {
        listen,
        ops_listen,
        staff_tokens,
        central_tokens,
    }
}

fn read_mqtt(t: &Table, store_id: &str, p: &mut Vec<Problem>) -> MqttConfig {
    let mut f = Fields::new(t, "mqtt");
    let broker_text = f.string(p, "broker").unwrap_or_else(|| "embedded".into());
    let embedded_listen = f
        .socket_addr(p, "embedded_listen", Some("127.0.0.1:1883"))
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 1883)));
    let client_id = f
        .string(p, "client_id")
        .unwrap_or_else(|| format!("storegate-{store_id}"));
    let broker = if broker_text == "embedded" {
        Broker::Embedded(embedded_listen)
    } else if broker_text.starts_with("mqtt://") || broker_text.starts_with("mqtts://") {
        Broker::External { url: broker_text }
    } else {
        f.problem(
            p,
            "broker",
            format!(
                "{broker_text:?} is not a broker; use \"embedded\" or a URL like \"mqtt://127.0.0.1:1883\""
            ),
        );
        Broker::Embedded(embedded_listen)
    };
    f.finish(p, "keys of [mqtt]");
    MqttConfig { broker, client_id }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profiles() -> BTreeSet<String> {
        ["pos-json", "zebra-fx-iot-connector", "uhf-m100-serial"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn tasks_keys_and_slot_capacities_are_checked() {
        let text = r#"store_id = "s1"
[tasks]
verify_after_s = 0
[[device]]
id = "b"
profile = "pos-json"
transport = "modbus-tcp"
address = "10.0.0.1:502"
slot_capacity = { 0 = 0, x = 3 }
"#;
        let p = problems(text);
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].starts_with("tasks.verify_after_s: "), "{p:?}");
        assert!(
            p.iter()
                .any(|m| m.starts_with("device[0].slot_capacity.0: expected a slot number"))
                && p.iter()
                    .any(|m| m.starts_with("device[0].slot_capacity.x: ")),
            "{p:?}"
        );
    }

    fn problems(text: &str) -> Vec<String> {
        match Config::parse(text, Path::new("store.toml"), &profiles()) {
            Ok(_) => vec![],
            Err(e) => e
                .problems
                .iter()
                .map(|p| format!("{}: {}", p.key, p.message))
                .collect(),
        }
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse("store_id = \"s1\"", Path::new("x"), &profiles()).unwrap();
        assert_eq!(c.durability, Durability::Full);
        assert_eq!(c.journal_retention_h, 72);
        assert_eq!(c.mqtt.client_id, "storegate-s1");
        assert!(c.central.is_none());
        assert_eq!(
            c.db_path(),
            PathBuf::from("/var/lib/storegate/storegate.db")
        );
    }

    #[test]
    fn unknown_key_is_named_with_a_suggestion() {
        let p = problems("store_id = \"s1\"\ndurabilty = \"full\"\n");
        assert_eq!(
            p,
            vec!["durabilty: unknown key; did you mean \"durability\"?"]
        );
    }

    #[test]
    fn wrong_type_says_what_was_expected() {
        let p = problems("store_id = \"s1\"\ndisk_quota_mb = \"lots\"\n");
        assert_eq!(
            p,
            vec!["disk_quota_mb: expected a whole number, found string \"lots\""]
        );
    }

    #[test]
    fn missing_required_key_says_how_to_add_it() {
        let p = problems("data_dir = \"/tmp\"\n");
        assert_eq!(
            p,
            vec!["store_id: missing; add e.g. store_id = \"store-0042\""]
        );
    }

    #[test]
    fn all_problems_are_listed_including_per_device_ones() {
        let text = r#"
store_id = "s1"
durability = "sometimes"
[[device]]
id = "pos-1"
profile = "pos-jsn"
transport = "mqtt"
topic = "t"
baud = 9600
[[device]]
id = "pos-1"
profile = "pos-json"
transport = "serial"
"#;
        let p = problems(text);
        assert_eq!(
            p,
            vec![
                "durability: \"sometimes\" is not allowed; use one of \"full\", \"normal\"",
                "device[0].profile: unknown profile \"pos-jsn\"; did you mean \"pos-json\"?",
                "device[0].baud: unknown key; keys of a mqtt device are: alert_above, alert_below, control, id, max_message_bytes, offline_alert_s, profile, slot_capacity, slots, topic, transport, zone",
                "device[1].port: missing; add e.g. port = \"/dev/ttyUSB0\"",
                "device[1].id: duplicate device id \"pos-1\" (also device[0]); every device needs its own id",
            ]
        );
    }

    #[test]
    fn syntax_error_names_the_position() {
        let p = problems("store_id = \n");
        assert_eq!(p.len(), 1);
        assert!(p[0].contains("not valid TOML"), "{p:?}");
        assert!(p[0].contains("line 1"), "{p:?}");
    }

    #[test]
    fn error_display_names_file_key_and_fix() {
        let e = Config::parse(
            "store_id = 5",
            Path::new("/etc/storegate/x.toml"),
            &profiles(),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/storegate/x.toml: 1 problem\n  /etc/storegate/x.toml:1 store_id: expected a string, found integer 5"
        );
    }

    #[test]
    fn devices_of_every_transport_parse() {
        let text = r#"
store_id = "s1"
[[device]]
id = "a"
profile = "uhf-m100-serial"
transport = "serial"
port = "/dev/ttyUSB0"
baud = 115200
parity = "even"
[[device]]
id = "b"
profile = "pos-json"
transport = "modbus-tcp"
address = "10.0.0.1:502"
slots = { 0 = "SKU-1", 3 = "SKU-4" }
slot_capacity = { 3 = 12 }
[[device]]
id = "c"
profile = "pos-json"
transport = "modbus-rtu"
port = "/dev/ttyS1"
unit = 7
[[device]]
id = "d"
profile = "pos-json"
transport = "http-stream"
url = "http://x/stream"
"#;
        let c = Config::parse(text, Path::new("x"), &profiles()).unwrap();
        assert_eq!(c.devices.len(), 4);
        assert!(
            matches!(&c.devices[0].transport, Transport::Serial(l) if l.baud == Some(115200) && l.parity == Parity::Even)
        );
        assert_eq!(
            c.devices[1].slots.get(&3).map(String::as_str),
            Some("SKU-4")
        );
        assert_eq!(c.devices[1].slot_capacity.get(&3), Some(&12));
        assert_eq!(c.tasks, TasksConfig::default());
        assert!(matches!(
            &c.devices[2].transport,
            Transport::ModbusRtu { unit: 7, .. }
        ));
    }

    #[test]
    fn mqtt_message_size_limit_has_a_default_and_a_range() {
        let device = |extra: &str| {
            format!(
                "store_id = \"s1\"\n[[device]]\nid = \"t\"\nprofile = \"pos-json\"\ntransport = \"mqtt\"\ntopic = \"x\"\n{extra}"
            )
        };
        let limit = |text: &str| match Config::parse(text, Path::new("x"), &profiles())
            .unwrap()
            .devices[0]
            .transport
        {
            Transport::Mqtt {
                max_message_bytes, ..
            } => max_message_bytes,
            _ => unreachable!(),
        };
        assert_eq!(limit(&device("")), DEFAULT_MAX_MESSAGE_BYTES);
        assert_eq!(limit(&device("max_message_bytes = 65536")), 65536);
        assert_eq!(
            problems(&device("max_message_bytes = 0")),
            vec![
                "device[0].max_message_bytes: 0 is out of range; use a whole number from 1 to 268435460"
            ]
        );
        // Not a key of other transports.
        assert_eq!(
            problems(
                "store_id = \"s1\"\n[[device]]\nid = \"t\"\nprofile = \"pos-json\"\ntransport = \"http-stream\"\nurl = \"http://x\"\nmax_message_bytes = 1"
            )
            .len(),
            1
        );
    }
}
