//! A `[[device]]` table: its transport's keys, its profile and zone, and
//! the problems of each, reported in the same pass as everything else.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use toml::{Table, Value};

use crate::event::bounds;

use super::{
    DEFAULT_MAX_MESSAGE_BYTES, DeviceConfig, Fields, MAX_MQTT_PACKET, Parity, Problem, SerialLine,
    TRANSPORTS, Transport, closest, is_identifier,
};
pub(super) fn read_serial_line(f: &mut Fields, p: &mut Vec<Problem>) -> SerialLine {
    let port = f.required_string(p, "port", "\"/dev/ttyUSB0\"");
    let baud = match f.get("baud") {
        None => None,
        Some(Value::Integer(b)) if (50..=4_000_000).contains(b) => Some(*b as u32),
        Some(v) => {
            f.problem(
                p,
                "baud",
                format!("{v} is not a baud rate; use e.g. 9600 or 115200"),
            );
            None
        }
    };
    let data_bits = f.integer(p, "data_bits", 8, 5..=8) as u8;
    let parity = f.choice(
        p,
        "parity",
        &[
            ("none", Parity::None),
            ("even", Parity::Even),
            ("odd", Parity::Odd),
        ],
        Parity::None,
    );
    let stop_bits = f.integer(p, "stop_bits", 1, 1..=2) as u8;
    SerialLine {
        port: PathBuf::from(port),
        baud,
        data_bits,
        parity,
        stop_bits,
    }
}

/// A Modbus RTU device's address. Unit 0 is the broadcast address on a
/// serial line: every device obeys a write to it and none answers, so a
/// poll of unit 0 can only time out. (Over TCP, 0 may address the gateway
/// itself, so modbus-tcp accepts it.)
fn rtu_unit(f: &mut Fields, p: &mut Vec<Problem>) -> u8 {
    if let Some(Value::Integer(0)) = f.get("unit") {
        f.problem(
            p,
            "unit",
            "0 is the Modbus broadcast address: no device answers it; set the device's own address, 1 to 247 (its manual or DIP switches say which)",
        );
        return 1;
    }
    f.integer(p, "unit", 1, 1..=247) as u8
}

pub(super) fn read_device(
    t: &Table,
    prefix: &str,
    default_offline_alert_s: u64,
    profiles: &BTreeSet<String>,
    p: &mut Vec<Problem>,
) -> DeviceConfig {
    let mut f = Fields::new(t, prefix);
    let id = f.required_string(p, "id", "\"pos-1\"");
    if !id.is_empty() && !is_identifier(&id) {
        f.problem(
            p,
            "id",
            format!("{id:?} may only contain letters, digits, '-', '_' and '.'"),
        );
    }
    let profile = f.required_string(p, "profile", "\"pos-json\"");
    if !profile.is_empty() && !profiles.contains(&profile) {
        let names: Vec<&str> = profiles.iter().map(String::as_str).collect();
        let hint = match closest(&profile, &names) {
            Some(c) => format!("did you mean {c:?}?"),
            None => format!("known profiles: {}", names.join(", ")),
        };
        f.problem(p, "profile", format!("unknown profile {profile:?}; {hint}"));
    }
    let transport_name = f.required_string(p, "transport", "\"mqtt\"");
    let transport = match transport_name.as_str() {
        "serial" => Transport::Serial(read_serial_line(&mut f, p)),
        "mqtt" => Transport::Mqtt {
            topic: f.required_string(p, "topic", "\"stores/0042/pos/+\""),
            max_message_bytes: f.integer(
                p,
                "max_message_bytes",
                DEFAULT_MAX_MESSAGE_BYTES as u64,
                1..=MAX_MQTT_PACKET as u64,
            ) as usize,
        },
        "modbus-tcp" => Transport::ModbusTcp {
            address: f.required_string(p, "address", "\"192.168.10.50:502\""),
            unit: f.integer(p, "unit", 1, 0..=247) as u8,
            poll_ms: f.integer(p, "poll_ms", 1000, 10..=3_600_000),
        },
        "modbus-rtu" => Transport::ModbusRtu {
            line: read_serial_line(&mut f, p),
            unit: rtu_unit(&mut f, p),
            poll_ms: f.integer(p, "poll_ms", 1000, 10..=3_600_000),
        },
        "http" => Transport::Http {
            url: f.required_string(p, "url", "\"http://192.168.10.60\""),
            poll_ms: f.integer(p, "poll_ms", 5000, 100..=3_600_000),
        },
        "http-stream" => Transport::HttpStream {
            url: f.required_string(p, "url", "\"http://reader/api/v1/data/stream\""),
        },
        "llrp" => Transport::Llrp(super::llrp::read_llrp(&mut f, p)),
        "" => Transport::Mqtt {
            topic: String::new(),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        },
        other => {
            let hint = match closest(other, &TRANSPORTS) {
                Some(c) => format!("did you mean {c:?}?"),
                None => format!("use one of {}", TRANSPORTS.join(", ")),
            };
            f.problem(
                p,
                "transport",
                format!("unknown transport {other:?}; {hint}"),
            );
            Transport::Mqtt {
                topic: String::new(),
                max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            }
        }
    };
    let zone = f.string(p, "zone");
    let mut slots = BTreeMap::new();
    if let Some(st) = f.table(p, "slots") {
        for (k, v) in st {
            let key = format!("{prefix}.slots.{k}");
            match (k.parse::<u32>(), v) {
                (Ok(i), Value::String(sku)) => {
                    slots.insert(i, sku.clone());
                }
                (Err(_), _) => p.push(Problem {
                    key,
                    message:
                        "slot numbers are whole numbers from 0, e.g. slots = { 0 = \"SKU-1001\" }"
                            .into(),
                    ..Default::default()
                }),
                (_, v) => p.push(Problem {
                    key,
                    message: format!("expected a SKU string, found {} {v}", v.type_str()),
                    ..Default::default()
                }),
            }
        }
    }
    let mut slot_capacity = BTreeMap::new();
    if let Some(st) = f.table(p, "slot_capacity") {
        for (k, v) in st {
            match (k.parse::<u32>(), v.as_integer()) {
                (Ok(slot), Some(units)) if (1..=bounds::MAX_QTY).contains(&units) => {
                    slot_capacity.insert(slot, units);
                }
                _ => p.push(Problem {
                    key: format!("{prefix}.slot_capacity.{k}"),
                    message: format!(
                        "expected a slot number from 0 and a number of units from 1 to {}, e.g. slot_capacity = {{ 0 = 12 }}",
                        bounds::MAX_QTY
                    ),
                    ..Default::default()
                }),
            }
        }
    }
    let alert_above = f.float(p, "alert_above");
    let alert_below = f.float(p, "alert_below");
    let offline_alert_s = f.integer(p, "offline_alert_s", default_offline_alert_s, 1..=7 * 86400);
    let control = super::control::read_control(&mut f, p);
    // A key of another transport (say `baud` on an mqtt device) is reported
    // as unknown, which is exactly the typo we want to catch.
    f.finish(p, &format!("keys of a {transport_name} device"));
    DeviceConfig {
        id,
        profile,
        transport,
        zone,
        slots,
        slot_capacity,
        alert_above,
        alert_below,
        offline_alert_s,
        control,
    }
}
