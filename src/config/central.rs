//! `[central]`: the HTTP sync API (the default) or the MQTT fleet uplink
//! (spec/fleet.md section 1). Every key is validated here, with the key
//! and the fix in each problem, like the rest of the file.

use std::path::PathBuf;

use toml::{Table, Value};

use super::{CentralConfig, Fields, Problem};

/// How the journal goes to central.
#[derive(Debug, Clone, PartialEq)]
pub enum CentralTransport {
    /// `POST /v1/stores/{s}/events` (docs/sync-api.md).
    Http,
    /// Batches published to a broker cluster, acknowledged by central's
    /// consumer (docs/fleet.md).
    Mqtt(MqttUplinkConfig),
}

impl CentralTransport {
    pub fn name(&self) -> &'static str {
        match self {
            CentralTransport::Http => "http",
            CentralTransport::Mqtt(_) => "mqtt",
        }
    }
}

/// `[central] transport = "mqtt"`.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttUplinkConfig {
    /// `mqtt://` or `mqtts://` URLs, tried in order.
    pub brokers: Vec<String>,
    pub topic_prefix: String,
    /// Client certificate and key (PEM): mutual TLS.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub max_payload_bytes: usize,
    pub ack_timeout_s: u64,
    pub inflight_batches: usize,
}

/// AWS IoT Core's payload limit: the default every broker accepts.
pub const DEFAULT_MAX_PAYLOAD_BYTES: u64 = 131_072;

pub(super) fn read_central(t: &Table, p: &mut Vec<Problem>) -> Option<CentralConfig> {
    let mut f = Fields::new(t, "central");
    let transport_name = f.choice(
        p,
        "transport",
        &[("http", "http"), ("mqtt", "mqtt")],
        "http",
    );
    let url = f.string(p, "url");
    let mqtt = if transport_name == "mqtt" {
        Some(read_mqtt_uplink(&mut f, p))
    } else {
        for key in MQTT_ONLY {
            if f.get(key).is_some() {
                f.problem(
                    p,
                    key,
                    "only used with transport = \"mqtt\"; add transport = \"mqtt\" or remove it",
                );
            }
        }
        None
    };
    let d = CentralConfig::http(url.clone().unwrap_or_default());
    let c = CentralConfig {
        token_file: f.string(p, "token_file").map(PathBuf::from),
        ca_file: f.string(p, "ca_file").map(PathBuf::from),
        batch_max: f.integer(p, "batch_max", d.batch_max as u64, 1..=100_000) as usize,
        max_backoff_s: f.integer(p, "max_backoff_s", d.max_backoff_s, 1..=86400),
        poll_prices_s: f.integer(p, "poll_prices_s", d.poll_prices_s, 1..=86400),
        poll_stock_s: f.integer(p, "poll_stock_s", d.poll_stock_s, 1..=86400),
        poll_orders_s: f.integer(p, "poll_orders_s", d.poll_orders_s, 1..=86400),
        heartbeat_s: f.integer(p, "heartbeat_s", d.heartbeat_s, 5..=86400),
        poll_config_s: f.integer(p, "poll_config_s", d.poll_config_s, 1..=86400),
        config_rollback_s: f.integer(p, "config_rollback_s", d.config_rollback_s, 1..=86400),
        transport: match mqtt {
            Some(m) => CentralTransport::Mqtt(m),
            None => CentralTransport::Http,
        },
        ..d
    };
    if let Some(u) = &url {
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            f.problem(
                p,
                "url",
                format!("{u:?} is not an http(s) URL; e.g. \"https://central.example.com/api\""),
            );
        }
    }
    f.finish(p, "keys of [central]");
    // Over HTTP, without a url the store runs store-only, whatever else
    // [central] says. Over MQTT the url only serves the bulk pulls.
    match &c.transport {
        CentralTransport::Http => url.map(|_| c),
        CentralTransport::Mqtt(_) => Some(c),
    }
}

/// Keys that mean nothing over HTTP: a typo'd transport must not leave
/// them silently unused.
const MQTT_ONLY: [&str; 9] = [
    "brokers",
    "topic_prefix",
    "client_cert",
    "client_key",
    "username",
    "password_file",
    "max_payload_bytes",
    "ack_timeout_s",
    "inflight_batches",
];

fn read_mqtt_uplink(f: &mut Fields, p: &mut Vec<Problem>) -> MqttUplinkConfig {
    let mut brokers = Vec::new();
    match f.get("brokers") {
        None => f.problem(
            p,
            "brokers",
            "missing; transport = \"mqtt\" needs e.g. brokers = [\"mqtts://mq-a.example.com:8883\"]",
        ),
        Some(Value::Array(items)) if items.is_empty() => f.problem(
            p,
            "brokers",
            "is empty; list at least one broker, e.g. brokers = [\"mqtts://mq-a.example.com:8883\"]",
        ),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::String(s) if s.starts_with("mqtt://") || s.starts_with("mqtts://") => {
                        brokers.push(s.clone())
                    }
                    v => f.problem(
                        p,
                        &format!("brokers[{i}]"),
                        format!(
                            "{v} is not a broker URL; write \"mqtt://host:port\" or \"mqtts://host:port\""
                        ),
                    ),
                }
            }
        }
        Some(v) => f.wrong_type(p, "brokers", v, "a list of broker URLs"),
    }
    let topic_prefix = f
        .string(p, "topic_prefix")
        .unwrap_or_else(|| "storegate/v1".into());
    if topic_prefix.is_empty()
        || topic_prefix.contains(['+', '#'])
        || topic_prefix.starts_with('/')
        || topic_prefix.ends_with('/')
    {
        f.problem(
            p,
            "topic_prefix",
            format!(
                "{topic_prefix:?} is not a topic prefix; use levels without wildcards and without a leading or trailing '/', e.g. \"storegate/v1\""
            ),
        );
    }
    let client_cert = f.string(p, "client_cert").map(PathBuf::from);
    let client_key = f.string(p, "client_key").map(PathBuf::from);
    if client_cert.is_some() != client_key.is_some() {
        let missing = if client_cert.is_some() {
            "client_key"
        } else {
            "client_cert"
        };
        f.problem(
            p,
            missing,
            "mutual TLS needs both client_cert and client_key (PEM files); add the other or remove both",
        );
    }
    let c = MqttUplinkConfig {
        brokers,
        topic_prefix,
        client_cert,
        client_key,
        username: f.string(p, "username"),
        password_file: f.string(p, "password_file").map(PathBuf::from),
        max_payload_bytes: f.integer(
            p,
            "max_payload_bytes",
            DEFAULT_MAX_PAYLOAD_BYTES,
            1024..=super::MAX_MQTT_PACKET as u64 - 64 * 1024,
        ) as usize,
        ack_timeout_s: f.integer(p, "ack_timeout_s", 30, 1..=3600),
        inflight_batches: f.integer(p, "inflight_batches", 4, 1..=64) as usize,
    };
    if c.password_file.is_some() && c.username.is_none() {
        f.problem(
            p,
            "password_file",
            "a password needs a username; add username = \"store-0042\"",
        );
    }
    c
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use super::super::Config;
    use super::*;

    fn parse(central: &str) -> Result<CentralConfig, Vec<String>> {
        let text = format!("store_id = \"s1\"\n[central]\n{central}");
        match Config::parse(&text, Path::new("x"), &BTreeSet::new()) {
            Ok(c) => Ok(c.central.expect("a central")),
            Err(e) => Err(e
                .problems
                .iter()
                .map(|p| format!("{}: {}", p.key, p.message))
                .collect()),
        }
    }

    #[test]
    fn http_stays_the_default() {
        let c = parse("url = \"https://c.example.com/api\"").unwrap();
        assert_eq!(c.transport, CentralTransport::Http);
    }

    #[test]
    fn mqtt_gets_its_defaults_and_needs_no_url() {
        let c =
            parse("transport = \"mqtt\"\nbrokers = [\"mqtt://a:1883\", \"mqtts://b\"]").unwrap();
        let CentralTransport::Mqtt(m) = c.transport else {
            panic!("not mqtt")
        };
        assert_eq!(m.brokers, ["mqtt://a:1883", "mqtts://b"]);
        assert_eq!(m.topic_prefix, "storegate/v1");
        assert_eq!(m.max_payload_bytes, 131_072);
        assert_eq!((m.ack_timeout_s, m.inflight_batches), (30, 4));
        assert_eq!(c.heartbeat_s, 60);
        assert_eq!(c.url, "");
    }

    #[test]
    fn mqtt_problems_name_the_key_and_the_fix() {
        let p = parse(
            "transport = \"mqtt\"\nbrokers = [\"tcp://a\"]\ntopic_prefix = \"a/#\"\nclient_cert = \"c.pem\"\ninflight_batches = 0",
        )
        .unwrap_err();
        assert_eq!(p.len(), 4, "{p:?}");
        assert!(p[0].starts_with("central.brokers[0]: "), "{p:?}");
        assert!(p[1].starts_with("central.topic_prefix: "), "{p:?}");
        assert!(p[2].starts_with("central.client_key: mutual TLS"), "{p:?}");
        assert!(
            p[3].starts_with("central.inflight_batches: 0 is out of range"),
            "{p:?}"
        );
        let p = parse("transport = \"mqtt\"").unwrap_err();
        assert_eq!(
            p,
            [
                "central.brokers: missing; transport = \"mqtt\" needs e.g. brokers = [\"mqtts://mq-a.example.com:8883\"]"
            ]
        );
    }

    #[test]
    fn one_broker_for_devices_and_central_needs_two_client_ids() {
        let text = "store_id = \"s1\"\n[mqtt]\nbroker = \"mqtt://b:1883\"\n[central]\ntransport = \"mqtt\"\nbrokers = [\"mqtt://b:1883\"]";
        let e = Config::parse(text, Path::new("x"), &BTreeSet::new()).unwrap_err();
        assert_eq!(e.problems.len(), 1, "{e}");
        assert_eq!(e.problems[0].key, "mqtt.client_id");
        let fixed = format!(
            "{}\n",
            text.replace("[central]", "client_id = \"dev\"\n[central]")
        );
        assert!(Config::parse(&fixed, Path::new("x"), &BTreeSet::new()).is_ok());
    }

    #[test]
    fn mqtt_keys_over_http_say_how_to_fix() {
        let p = parse("url = \"http://c\"\nbrokers = [\"mqtt://a\"]").unwrap_err();
        assert_eq!(
            p,
            [
                "central.brokers: only used with transport = \"mqtt\"; add transport = \"mqtt\" or remove it"
            ]
        );
        let p = parse("transport = \"amqp\"").unwrap_err();
        assert_eq!(
            p,
            ["central.transport: \"amqp\" is not allowed; use one of \"http\", \"mqtt\""]
        );
    }
}
