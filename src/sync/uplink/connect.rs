//! One broker's connection options: client id `storegate-{store_id}`,
//! clean session off, keep-alive 30 s, the retained last will on the
//! status topic, credentials (URL, or `username` + `password_file`) and
//! TLS (`ca_file` or the system roots, `client_cert` + `client_key` for
//! mutual TLS).

use std::path::Path;
use std::time::Duration;

use rumqttc::{LastWill, MqttOptions, QoS};

use super::Topics;
use crate::config::MqttUplinkConfig;
use crate::devices::mqtt::{Endpoint, system_ca_bundle};

pub const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Acks and commands are a few bytes, but the client drops the connection
/// on a larger packet and the broker redelivers it to the persistent
/// session, forever: accept anything MQTT can carry (as the device hub
/// does) and let the parsers refuse it.
const MAX_INCOMING: usize = crate::config::MAX_MQTT_PACKET;

/// What is wrong with a broker's settings (not retried any faster than a
/// refused connection: a file or a URL needs a human).
#[derive(Debug, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct SetupError {
    pub what: String,
    pub reason: String,
}

/// The options for `url`, and the URL without its password for logs.
pub fn options(
    config: &MqttUplinkConfig,
    ca_file: Option<&Path>,
    store_id: &str,
    topics: &Topics,
    url: &str,
) -> Result<(MqttOptions, String), SetupError> {
    let endpoint = Endpoint::parse(url).map_err(|reason| SetupError {
        what: format!("central.brokers: {url:?}"),
        reason,
    })?;
    let mut options = MqttOptions::new(
        format!("storegate-{store_id}"),
        &endpoint.host,
        endpoint.port,
    );
    let will = super::super::heartbeat::offline(store_id).to_string();
    options
        .set_keep_alive(KEEP_ALIVE)
        .set_clean_session(false)
        .set_max_packet_size(
            MAX_INCOMING,
            config.max_payload_bytes + topics.events.len() + 64,
        )
        .set_last_will(LastWill::new(&topics.status, will, QoS::AtLeastOnce, true));
    if let Some(user) = &config.username {
        let password = match &config.password_file {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| SetupError {
                    what: format!("central.password_file {}", path.display()),
                    reason: e.to_string(),
                })?
                .trim()
                .to_string(),
            None => String::new(),
        };
        options.set_credentials(user, password);
    } else if let Some((user, password)) = &endpoint.credentials {
        options.set_credentials(user, password);
    }
    if endpoint.tls {
        options.set_transport(tls(config, ca_file)?);
    }
    Ok((options, endpoint.to_string()))
}

fn read(key: &str, path: &Path) -> Result<Vec<u8>, SetupError> {
    std::fs::read(path).map_err(|e| SetupError {
        what: format!("central.{key} {}", path.display()),
        reason: e.to_string(),
    })
}

/// `mqtts://`: the CA (`central.ca_file`, or the system's bundle) and, for
/// mutual TLS (AWS IoT Core, EMQX), the client certificate and key.
fn tls(
    config: &MqttUplinkConfig,
    ca_file: Option<&Path>,
) -> Result<rumqttc::Transport, SetupError> {
    let ca = match ca_file {
        Some(path) => read("ca_file", path)?,
        None => system_ca_bundle().map_err(|reason| SetupError {
            what: "mqtts://".into(),
            reason,
        })?,
    };
    let client_auth = match (&config.client_cert, &config.client_key) {
        (Some(cert), Some(key)) => Some((read("client_cert", cert)?, read("client_key", key)?)),
        _ => None,
    };
    Ok(rumqttc::Transport::tls(ca, client_auth, None))
}
