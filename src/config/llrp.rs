//! The keys of an `llrp` device: the reader's address and the per-device
//! overrides of its profile's `[llrp]` inventory (antennas, power,
//! session, keepalive), plus a zone per antenna port.

use std::collections::{BTreeMap, BTreeSet};

use toml::Value;

use super::{Fields, LLRP_PORT, LLRP_TLS_PORT, LlrpLink, LlrpTls, Problem};

pub(super) fn read_llrp(f: &mut Fields, p: &mut Vec<Problem>) -> LlrpLink {
    let mut address = f.required_string(p, "address", "\"192.168.10.70:5084\"");
    let tls = read_tls(f, p);
    if !address.is_empty() && !has_port(&address) {
        let port = if tls.is_some() {
            LLRP_TLS_PORT
        } else {
            LLRP_PORT
        };
        address = format!("{address}:{port}");
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
                    ..Default::default()
                }),
                (Ok(a), v) if a >= 1 => p.push(Problem {
                    key,
                    message: format!("expected a zone name, found {} {v}", v.type_str()),
                    ..Default::default()
                }),
                _ => p.push(Problem {
                    key,
                    message: "zones are keyed by antenna port from 1, e.g. zones = { 1 = \"salesfloor\" }".into(),
                    ..Default::default()
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
        tls,
    }
}

/// `tls = true` with `ca_file`, and optionally `client_cert` + `client_key`.
fn read_tls(f: &mut Fields, p: &mut Vec<Problem>) -> Option<LlrpTls> {
    let on = match f.get("tls") {
        None => false,
        Some(Value::Boolean(b)) => *b,
        Some(v) => {
            f.wrong_type(p, "tls", v, "true or false");
            false
        }
    };
    let ca_file = f.string(p, "ca_file");
    let cert = f.string(p, "client_cert");
    let key = f.string(p, "client_key");
    if !on {
        for (name, given) in [
            ("ca_file", &ca_file),
            ("client_cert", &cert),
            ("client_key", &key),
        ] {
            if given.is_some() {
                f.problem(
                    p,
                    name,
                    "is only read with tls = true: add it, or remove this key",
                );
            }
        }
        return None;
    }
    let client_cert = match (cert, key) {
        (Some(c), Some(k)) => Some((c.into(), k.into())),
        (None, None) => None,
        (Some(_), None) => {
            f.problem(
                p,
                "client_key",
                "client_cert needs client_key (the PEM file of its private key)",
            );
            None
        }
        (None, Some(_)) => {
            f.problem(
                p,
                "client_cert",
                "client_key needs client_cert (the PEM file of the certificate)",
            );
            None
        }
    };
    let Some(ca_file) = ca_file else {
        f.problem(
            p,
            "ca_file",
            "tls = true needs ca_file: the PEM file of the CA that signed the reader's certificate",
        );
        return None;
    };
    Some(LlrpTls {
        ca_file: ca_file.into(),
        client_cert,
    })
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use crate::config::{Config, Transport};

    fn parse(device: &str) -> Result<Config, Vec<String>> {
        let profiles: BTreeSet<String> = ["impinj-r700-llrp".to_string()].into();
        let text = format!(
            "store_id = \"s1\"\n[[device]]\nid = \"dock\"\nprofile = \"impinj-r700-llrp\"\ntransport = \"llrp\"\n{device}"
        );
        Config::parse(&text, Path::new("store.toml"), &profiles).map_err(|e| {
            e.problems
                .iter()
                .map(|p| format!("{}: {}", p.key, p.message))
                .collect()
        })
    }

    #[test]
    fn a_bare_host_gets_port_5084_and_overrides_are_read() {
        let c = parse(
            "address = \"10.0.0.7\"\nantennas = [1, 3]\ntx_power_dbm = 27.5\nsession = 2\n\
             keepalive_s = 5\nzones = { 1 = \"salesfloor\", 3 = \"backroom\" }\n",
        )
        .unwrap();
        let Transport::Llrp(link) = &c.devices[0].transport else {
            panic!("not llrp");
        };
        assert_eq!(link.address, "10.0.0.7:5084");
        assert_eq!(link.antennas, Some(vec![1, 3]));
        assert_eq!(link.tx_power_dbm, Some(27.5));
        assert_eq!(link.session, Some(2));
        assert_eq!(link.keepalive_s, Some(5));
        assert_eq!(link.zones.get(&3).map(String::as_str), Some("backroom"));
        let c = parse("address = \"[fe80::1]:6000\"\n").unwrap();
        assert_eq!(c.devices[0].transport.endpoint(), "[fe80::1]:6000");
    }

    #[test]
    fn tls_takes_port_5085_and_needs_a_ca() {
        let c = parse(
            "address = \"10.0.0.7\"\ntls = true\nca_file = \"/etc/storegate/reader-ca.pem\"\n",
        )
        .unwrap();
        let Transport::Llrp(link) = &c.devices[0].transport else {
            panic!("not llrp");
        };
        assert_eq!(link.address, "10.0.0.7:5085");
        assert_eq!(
            link.tls.as_ref().map(|t| t.ca_file.as_path()),
            Some(Path::new("/etc/storegate/reader-ca.pem"))
        );
        let all = parse("address = \"r\"\ntls = true\nclient_cert = \"c.pem\"\n")
            .unwrap_err()
            .join("\n");
        assert!(
            all.contains("device[0].ca_file: tls = true needs ca_file"),
            "{all}"
        );
        assert!(
            all.contains("device[0].client_key: client_cert needs client_key"),
            "{all}"
        );
        let all = parse("address = \"r\"\nca_file = \"ca.pem\"\n")
            .unwrap_err()
            .join("\n");
        assert!(
            all.contains("device[0].ca_file: is only read with tls = true"),
            "{all}"
        );
    }

    #[test]
    fn bad_llrp_keys_are_named() {
        let problems = parse(
            "address = \"r\"\nantennas = [1, 1, 0]\nsession = 4\ntx_power_dbm = 50\n\
             zones = { 0 = \"x\", 2 = 7 }\nbaud = 9600\n",
        )
        .unwrap_err();
        let all = problems.join("\n");
        for want in [
            "device[0].antennas: antenna 1 is listed twice",
            "device[0].antennas: antenna ports are whole numbers from 1",
            "device[0].session: 4 is out of range",
            "device[0].tx_power_dbm: 50 dBm is outside 0-40 dBm",
            "device[0].zones.0: zones are keyed by antenna port from 1",
            "device[0].zones.2: expected a zone name",
            "device[0].baud",
        ] {
            assert!(all.contains(want), "missing {want:?} in\n{all}");
        }
    }
}
