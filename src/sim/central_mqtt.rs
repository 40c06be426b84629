//! The reference central's MQTT side (spec/fleet.md section 2): a consumer
//! of `{p}/+/events` (optionally as the shared subscription
//! `$share/central/{p}/+/events`) that decodes each batch (gzip or not),
//! takes it into the same per-store state as the HTTP side
//! ([`super::central::StoreView::accept`]: dedup by (store, seq), dropped ranges), and
//! answers `{"acked_through": N}` on `{p}/{s}/ack`; it also keeps each
//! store's last heartbeat from `{p}/+/status`, and sends commands on
//! `{p}/{s}/cmd` or `{p}/all/cmd`.

use std::io::Read as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use serde_json::{Value, json};

use super::central::{Central, Refusal};

/// Pause before the next broker after a lost connection.
const RETRY: Duration = Duration::from_millis(300);

/// How the consumer connects.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// `mqtt://host:port` URLs, tried in turn.
    pub brokers: Vec<String>,
    pub topic_prefix: String,
    /// Subscribe as `$share/central/...` (EMQX, HiveMQ, mosquitto 2; not
    /// nats-server's MQTT).
    pub shared: bool,
    pub client_id: String,
    /// For `mqtts://` brokers: the CA and, for mutual TLS, the client
    /// certificate and key (PEM files).
    pub tls: Option<ConsumerTls>,
}

/// The consumer's TLS settings (PEM files).
#[derive(Debug, Clone)]
pub struct ConsumerTls {
    pub ca_file: std::path::PathBuf,
    pub client: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl ConsumerTls {
    fn transport(&self) -> Result<rumqttc::Transport, String> {
        let read =
            |p: &std::path::Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        let ca = read(&self.ca_file)?;
        let client = match &self.client {
            Some((cert, key)) => Some((read(cert)?, read(key)?)),
            None => None,
        };
        Ok(rumqttc::Transport::tls(ca, client, None))
    }
}

impl ConsumerOptions {
    pub fn new(brokers: Vec<String>) -> ConsumerOptions {
        ConsumerOptions {
            brokers,
            topic_prefix: "storegate/v1".into(),
            shared: false,
            client_id: format!("storegate-central-{}", std::process::id()),
            tls: None,
        }
    }
}

/// A running consumer; stops when dropped.
pub struct Consumer {
    client: AsyncClient,
    task: tokio::task::JoinHandle<()>,
    prefix: String,
    connected: Arc<AtomicBool>,
}

impl Consumer {
    /// Whether it is connected and subscribed right now.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Send `{"cmd": cmd}` to one store, or to every store with `"all"`.
    pub async fn command(&self, store: &str, cmd: &str) -> Result<(), String> {
        self.client
            .publish(
                format!("{}/{store}/cmd", self.prefix),
                QoS::AtLeastOnce,
                false,
                json!({ "cmd": cmd }).to_string(),
            )
            .await
            .map_err(|e| e.to_string())
    }

    /// Stop consuming (the connection closes without a goodbye).
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Central {
    /// Consume over MQTT in the background, into this central's state.
    pub fn spawn_mqtt(&self, options: ConsumerOptions) -> Result<Consumer, String> {
        if options.brokers.is_empty() {
            return Err("no broker given".into());
        }
        let mut connections = Vec::new();
        for url in &options.brokers {
            let tls = url.strip_prefix("mqtts://");
            let plain = tls.map_or_else(|| url.clone(), |rest| format!("mqtt://{rest}"));
            let (host, port) = super::mqtt::parse_broker(&plain)?;
            let mut o = MqttOptions::new(&options.client_id, host, port);
            o.set_keep_alive(Duration::from_secs(30))
                .set_clean_session(true)
                .set_max_packet_size(64 << 20, 1 << 20);
            if tls.is_some() {
                let Some(settings) = &options.tls else {
                    return Err(format!(
                        "{url:?}: mqtts:// needs the consumer's TLS settings"
                    ));
                };
                o.set_transport(settings.transport()?);
            }
            connections.push(o);
        }
        // One client handle for commands: requests go to whichever
        // connection is current (the task swaps event loops under it).
        let (client, first) = AsyncClient::new(connections[0].clone(), 1024);
        let connected = Arc::new(AtomicBool::new(false));
        *self.commands.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((client.clone(), options.topic_prefix.clone()));
        let task = tokio::spawn(consume(
            self.clone(),
            options.clone(),
            connections,
            (client.clone(), first),
            connected.clone(),
        ));
        Ok(Consumer {
            client,
            task,
            prefix: options.topic_prefix,
            connected,
        })
    }
}

async fn consume(
    central: Central,
    options: ConsumerOptions,
    connections: Vec<MqttOptions>,
    (client, mut eventloop): (AsyncClient, rumqttc::EventLoop),
    connected: Arc<AtomicBool>,
) {
    let p = &options.topic_prefix;
    let events = if options.shared {
        format!("$share/central/{p}/+/events")
    } else {
        format!("{p}/+/events")
    };
    let status = format!("{p}/+/status");
    let mut turn = 0;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                for filter in [&events, &status] {
                    let _ = client.try_subscribe(filter.as_str(), QoS::AtLeastOnce);
                }
                connected.store(true, Ordering::Relaxed);
            }
            Ok(Event::Incoming(Packet::Publish(msg))) => {
                if let Some((topic, ack)) = take(&central, p, &msg) {
                    let _ = client.try_publish(topic, QoS::AtLeastOnce, false, ack);
                }
            }
            Ok(_) => {}
            Err(e) => {
                connected.store(false, Ordering::Relaxed);
                tracing::debug!(error = %e, "central's MQTT consumer lost its broker; trying the next");
                tokio::time::sleep(RETRY).await;
                // The next broker: the event loop connects with its options
                // at the next poll, keeping the client handle's channel.
                turn = (turn + 1) % connections.len();
                eventloop.mqtt_options = connections[turn].clone();
            }
        }
    }
}

/// Handle one message; returns the ack to publish (topic, body), if any.
fn take(central: &Central, prefix: &str, msg: &Publish) -> Option<(String, String)> {
    let rest = msg.topic.strip_prefix(prefix)?.strip_prefix('/')?;
    let (store, what) = rest.split_once('/')?;
    match what {
        "status" => {
            let doc: Value = serde_json::from_slice(&msg.payload).ok()?;
            central
                .lock()
                .stores
                .entry(store.to_string())
                .or_default()
                .status = Some(doc);
            None
        }
        "events" => {
            let acked = take_batch(central, store, &msg.payload)?;
            Some((
                format!("{prefix}/{store}/ack"),
                json!({ "acked_through": acked }).to_string(),
            ))
        }
        _ => None,
    }
}

/// A batch into the store's view; the `acked_through` to answer, or none
/// while central plays down.
fn take_batch(central: &Central, store: &str, payload: &[u8]) -> Option<i64> {
    let raw = if payload.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        if flate2::read::GzDecoder::new(payload)
            .read_to_end(&mut out)
            .is_err()
        {
            tracing::warn!(store, "a batch that is not valid gzip");
            return Some(view_acked(central, store));
        }
        out
    } else {
        payload.to_vec()
    };
    let doc: Value = match serde_json::from_slice(&raw) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(store, error = %e, "a batch that is not JSON");
            return Some(view_acked(central, store));
        }
    };
    let events = doc
        .get("events")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let skipped: Vec<(i64, i64)> = doc
        .get("skipped")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    let mut s = central.lock();
    if s.behaviour.down {
        return None;
    }
    let (first, last) = (
        doc.get("first_seq").and_then(Value::as_i64).unwrap_or(0),
        doc.get("last_seq").and_then(Value::as_i64).unwrap_or(0),
    );
    s.push_keys.push(format!("{store}:{first}-{last}"));
    s.batch_sizes.push(events.len());
    s.mqtt_payload_bytes += payload.len() as u64;
    let (ack_at_most, count_only) = (s.behaviour.ack_at_most, s.behaviour.count_only);
    Some(
        match s.accept_batch(store, &events, &skipped, ack_at_most, count_only) {
            Ok(acked) | Err(Refusal::Conflict(acked)) => acked,
            Err(Refusal::Bad(why)) => {
                tracing::warn!(store, why, "a batch central cannot take");
                s.stores.get(store).map_or(0, |v| v.acked_through)
            }
        },
    )
}

fn view_acked(central: &Central, store: &str) -> i64 {
    central
        .lock()
        .stores
        .get(store)
        .map_or(0, |v| v.acked_through)
}
