//! Reading control over an MQTT command interface (the Zebra IoT
//! Connector): a JSON command with a fresh `command_id` on the command
//! topic, and the answer carrying the same `command_id` on the response
//! topic.
//!
//! The control has a small broker connection of its own (client id
//! `<mqtt.client_id>-control-<device>`, clean session) rather than going
//! through the hub: the hub's connection is built around journal input
//! (persistent session, PUBACK after commit), and command answers are not
//! input to journal but replies someone is waiting for; a lost answer is a
//! timeout the caller sees, not a message to redeliver.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use super::ControlError;
use crate::devices::mqtt::{Endpoint, system_ca_bundle};
use crate::profiles::control::MqttControl;
use crate::shutdown::Shutdown;

/// Answers waiting to be read; older ones than the awaited id are dropped.
const ANSWERS: usize = 64;
/// The largest command or answer (they are small JSON objects).
const MAX_PACKET: usize = 256 * 1024;

/// One reader's MQTT command interface.
pub struct MqttDriver {
    client: AsyncClient,
    command_topic: String,
    answers: mpsc::Receiver<Vec<u8>>,
    /// How many times the link (with its subscription) came up.
    links: watch::Receiver<u64>,
    links_seen: u64,
    spec: MqttControl,
    timeout: Duration,
    device: String,
    sent: u64,
}

/// Where and as whom the control connects, and its topics.
pub struct Link<'a> {
    pub endpoint: &'a Endpoint,
    pub client_id: String,
    pub command_topic: String,
    pub response_topic: String,
}

impl MqttDriver {
    /// Connect in the background (and again after every loss) until
    /// shutdown; commands wait for the link up to their timeout.
    pub fn connect(
        link: Link<'_>,
        spec: MqttControl,
        device: &str,
        timeout_s: u64,
        mut shutdown: Shutdown,
    ) -> Result<MqttDriver, ControlError> {
        let endpoint = link.endpoint;
        let mut options = MqttOptions::new(&link.client_id, &endpoint.host, endpoint.port);
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_clean_session(true)
            .set_max_packet_size(MAX_PACKET, MAX_PACKET);
        if let Some((user, password)) = &endpoint.credentials {
            options.set_credentials(user, password);
        }
        if endpoint.tls {
            let ca = system_ca_bundle().map_err(ControlError::Unreachable)?;
            options.set_transport(rumqttc::Transport::tls(ca, None, None));
        }
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let (tx, answers) = mpsc::channel(ANSWERS);
        let (links_tx, links) = watch::channel(0u64);
        let subscriber = client.clone();
        let response_topic = link.response_topic.clone();
        let who = device.to_string();
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    e = eventloop.poll() => e,
                    _ = shutdown.wait() => break,
                };
                match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        // try_: this task drains the request queue itself.
                        let _ = subscriber.try_subscribe(response_topic.clone(), QoS::AtLeastOnce);
                    }
                    // Up only once the broker confirmed the subscription:
                    // an answer sent before that would pass us by.
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        links_tx.send_modify(|n| *n += 1);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        // Full: nobody waits for that many answers; drop it.
                        let _ = tx.try_send(p.payload.to_vec());
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(device = %who, error = %e, "reader control: MQTT connection lost; reconnecting");
                        if !shutdown.sleep(Duration::from_secs(1)).await {
                            break;
                        }
                    }
                }
            }
        });
        Ok(MqttDriver {
            client,
            command_topic: link.command_topic,
            answers,
            links,
            links_seen: 0,
            spec,
            timeout: Duration::from_secs(timeout_s),
            device: device.to_string(),
            sent: 0,
        })
    }

    /// Select `preset` (when given and the reader has a command for it),
    /// then start; the reader's answer to the start.
    pub async fn start(&mut self, preset: Option<&str>) -> Result<Value, ControlError> {
        if let (Some(preset), Some(command)) = (preset, self.spec.preset_command.clone()) {
            let field = self.spec.preset_field.clone();
            self.command(&command, json!({ field: preset })).await?;
        }
        let start = self.spec.start.clone();
        self.command(&start, json!({})).await
    }

    /// Stop reading; the reader's answer.
    pub async fn stop(&mut self) -> Result<Value, ControlError> {
        let stop = self.spec.stop.clone();
        self.command(&stop, json!({})).await
    }

    /// Whether the link came up again since the last call (the reader
    /// should be told again what to do: it may have rebooted meanwhile).
    pub fn relinked(&mut self) -> bool {
        let now = *self.links.borrow();
        let again = now != self.links_seen;
        self.links_seen = now;
        again
    }

    async fn command(&mut self, command: &str, payload: Value) -> Result<Value, ControlError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        // The guard wait_for returns must not live across an await.
        let up = matches!(
            tokio::time::timeout_at(deadline, self.links.wait_for(|n| *n > 0)).await,
            Ok(Ok(_))
        );
        if !up {
            return Err(ControlError::Unreachable(format!(
                "not connected to the MQTT broker for {}",
                self.command_topic
            )));
        }
        // Answers to earlier commands that timed out are stale now.
        while self.answers.try_recv().is_ok() {}
        self.sent += 1;
        let id = format!(
            "storegate-{}-{}-{}",
            self.device,
            crate::event::now_millis().timestamp_millis(),
            self.sent
        );
        let body = json!({"command": command, "command_id": id, "payload": payload});
        self.client
            .publish(
                &self.command_topic,
                QoS::AtLeastOnce,
                false,
                body.to_string(),
            )
            .await
            .map_err(|e| {
                ControlError::Unreachable(format!("publish to {}: {e}", self.command_topic))
            })?;
        loop {
            let answer = match tokio::time::timeout_at(deadline, self.answers.recv()).await {
                Ok(Some(a)) => a,
                Ok(None) => return Err(ControlError::Stopped),
                Err(_) => return Err(ControlError::Timeout(self.timeout.as_secs())),
            };
            let Ok(answer) = serde_json::from_slice::<Value>(&answer) else {
                continue; // not an answer of this interface
            };
            if answer.get("command_id").and_then(Value::as_str) != Some(id.as_str()) {
                continue;
            }
            return match answer.get("response").and_then(Value::as_str) {
                Some("success") => Ok(answer),
                _ => Err(ControlError::Refused(format!(
                    "{command} failed: {}",
                    answer.get("payload").unwrap_or(&answer)
                ))),
            };
        }
    }
}
