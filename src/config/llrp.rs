//! The keys of an `llrp` device: the reader's address and the per-device
//! overrides of its profile's `[llrp]` inventory (antennas, power,
//! session, keepalive), plus a zone per antenna port.

use std::collections::{BTreeMap, BTreeSet};

use toml::Value;

use super::{Fields, LLRP_PORT, LlrpLink, Problem};

pub(super) fn read_llrp(f: &mut Fields, p: &mut Vec<Problem>) -> LlrpLink {
    let mut address = f.required_string(p, "address", "\"192.168.10.70:5084\"");
    if !address.is_empty() && !has_port(&address) {
        address = format!("{address}:{LLRP_PORT}");
    }
    let keepalive_s = f
        .get("keepalive_s")
        .is_some()
        .then(|| f.integer(p, "keepalive_s", 10, 1..=3600));
    let session = f
        .get("session")
        .is_some()
        .then(|| f.integer(p, "session", 1, 0..=3) as u8);
    let tx_power_dbm = f.float(p, "tx_power_dbm");
    if let Some(dbm) = tx_power_dbm
        && !(0.0..=40.0).contains(&dbm)
    {
        f.problem(p, "tx_power_dbm", format!("{dbm} dBm is outside 0-40 dBm"));
    }
    let antennas = match f.get("antennas") {
        None => None,
        Some(Value::Array(items)) => {
            let mut ports = Vec::new();
            let mut seen = BTreeSet::new();
            for v in items {
                match v {
                    Value::Integer(a) if (1..=i64::from(u16::MAX)).contains(a) => {
                        if seen.insert(*a) {
                            ports.push(*a as u16);
                        } else {
                            f.problem(p, "antennas", format!("antenna {a} is listed twice"));
                        }
                    }
                    v => f.problem(
                        p,
                        "antennas",
                        format!("antenna ports are whole numbers from 1, found {v}"),
                    ),
                }
            }
            Some(ports)
        }
        Some(v) => {
            f.wrong_type(p, "antennas", v, "a list of antenna ports, e.g. [1, 2]");
            None
        }
    };
    let mut zones = BTreeMap::new();
    if let Some(t) = f.table(p, "zones") {
        for (k, v) in t {
            let key = f.key(&format!("zones.{k}"));
            match (k.parse::<u16>(), v) {
                (Ok(a), Value::String(zone)) if a >= 1 && !zone.is_empty() => {
                    zones.insert(a, zone.clone());
                }
                (Ok(a), Value::String(_)) if a >= 1 => p.push(Problem {
                    key,
                    message: "a zone name may not be empty".into(),
                }),
                (Ok(a), v) if a >= 1 => p.push(Problem {
                    key,
                    message: format!("expected a zone name, found {} {v}", v.type_str()),
                }),
                _ => p.push(Problem {
                    key,
                    message: "zones are keyed by antenna port from 1, e.g. zones = { 1 = \"salesfloor\" }".into(),
                }),
            }
        }
    }
    LlrpLink {
        address,
        keepalive_s,
        antennas,
        tx_power_dbm,
        session,
        zones,
    }
}

/// Whether `address` ends in `:port` (an IPv6 literal needs brackets).
fn has_port(address: &str) -> bool {
    match address.rsplit_once(':') {
        Some((host, port)) => {
            port.parse::<u16>().is_ok() && (!host.contains(':') || host.ends_with(']'))
        }
        None => false,
    }
}
