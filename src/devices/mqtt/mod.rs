//! The `mqtt` transport (spec/profiles.md "Transports"): RFID readers,
//! POS terminals and shelf labels that publish to an MQTT broker.
//!
//! One [`Hub`] holds the agent's single broker connection (one rumqttc
//! client, its configured `client_id`, clean session off, manual acks).
//! Each MQTT device registers its topic filter with the hub; the hub's
//! event loop routes every incoming PUBLISH to the first device whose
//! filter matches its topic.
//!
//! Invariant 1 (commit before acknowledge): the hub's event loop decodes
//! each message with its device's codec and sorts it ([`Ingest::sort`]).
//! A message that leaves nothing to commit (the common case in a store: a
//! repeat read of a tag already in its zone only touches the in-memory tag
//! table) is acknowledged by the event loop itself. A message that must be
//! journaled goes to its device's session, which commits what is waiting
//! as one transaction and only then releases the PUBACKs. Either way
//! PUBACKs leave in arrival order.
//! A message that is not acknowledged stays with the broker: because the
//! session is persistent, the broker redelivers it after a reconnect or an
//! agent restart, and the natural-key dedup of the journal makes that
//! harmless. But a broker redelivers only on a reconnect, so a message is
//! never left unacknowledged on a live connection either: when the agent
//! cannot take more (a device's queue is full because its commits are
//! slow or storage refuses them, too many messages for devices not
//! registered yet) the hub stops reading from the broker until there is
//! room (flow control, see `flow`), and the broker holds the backlog. The
//! one message that is acknowledged and dropped is one for a topic no
//! configured device subscribes to (a leftover subscription of the
//! persistent session): see `hub::CLAIM_GRACE`. A message over its device's
//! `max_message_bytes` is quarantined (size, topic, first bytes) and
//! acknowledged like any bad input.
//!
//! One owner: the hub's task (`hub`) alone holds the connection's state
//! (routes, subscriptions, the arrival order and its pending PUBACKs,
//! held messages), as rumqttc's own event loop holds the client's.
//! Sessions and this handle ask it for things by message, and read what
//! it publishes (the connection, the subscriptions, the count of messages
//! awaiting their PUBACK) without a lock.
//!
//! The files: `hub` (the owner task and its event loop; how it wakes
//! rumqttc's `poll`, which is not cancel-safe), `acks` (the arrival order
//! and pending PUBACKs), `subs` (SUBSCRIBE and SUBACK), `flow` (flow
//! control), `route` (a device's subscription and queue), `reader` (a
//! device's size limit and decoder), `session` (a device session),
//! `endpoint` (where the broker is).
//!
//! Sessions and connections: a device session waits until the broker
//! connection is up and the broker has confirmed the device's subscription
//! (SUBACK), marks the device up, and ends with [`DeviceError::Lost`] when
//! the connection drops, so the runner marks it down; the next session
//! waits for the reconnection. The hub itself reconnects with backoff and
//! re-subscribes every registered filter after each CONNACK (a broker that
//! lost our session has lost our subscriptions too).
//!
//! Throughput: the event loop writes the PUBACKs that are ready itself,
//! all of them in one write once it has routed what the last read from
//! the socket brought (rumqttc's own manual ack path costs a trip through
//! its request queue and a socket write per PUBACK, which halved the
//! rate). A session does not do one round trip per message either: it
//! commits every message already waiting (up to `session::MAX_BATCH`) in
//! one transaction, so under load the batch grows and the number of commits
//! does not; when traffic is light each message is committed on its own
//! without waiting for company.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, MqttOptions, QoS};
use tokio::sync::{mpsc, watch};

mod acks;
mod endpoint;
mod flow;
mod hub;
mod reader;
mod route;
mod session;
mod subs;

use endpoint::host_text;
/// Broker URLs and the system's CA bundle, for the fleet uplink too.
pub(crate) use endpoint::{Endpoint, system_ca_bundle};
use hub::{Facts, HubRequest, Owner};

use super::broker::{self, MAX_PAYLOAD};
use super::{DeviceError, DeviceSpec, Ingest};
use crate::config::{Broker, MAX_MQTT_PACKET, MqttConfig};
use crate::shutdown::Shutdown;

/// How often the client pings an otherwise quiet broker; a broker that
/// stops answering is noticed after about one and a half of these.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// The largest packet accepted from the broker: anything MQTT can carry.
/// The client drops the connection on a larger packet and the broker
/// redelivers it, forever, so the transport must never be what refuses a
/// message; each device's `max_message_bytes` decides instead (the message
/// is quarantined and acknowledged). A store that must bound the memory a
/// single message can take sets the broker's own limit (mosquitto's
/// `message_size_limit`), which refuses it at the publisher.
const MAX_INCOMING_PACKET: usize = MAX_MQTT_PACKET;
/// The largest packet sent: an update payload of at most [`MAX_PAYLOAD`]
/// plus its topic and header.
const MAX_OUTGOING_PACKET: usize = MAX_PAYLOAD + 8 * 1024;
/// Requests (acks, subscriptions, publishes) queued for the client.
const REQUEST_CAPACITY: usize = 1024;
/// Requests of the sessions queued for the hub's task (which answers
/// them at once; sessions send one per committed batch at most).
const HUB_REQUESTS: usize = 1024;
/// How long `publish` may wait for room in the request queue.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// The agent's connection to the MQTT broker, shared by every MQTT device
/// and by the label dispatcher. Cheap to clone. The connection's state is
/// owned by the hub's task; this is a handle to it.
#[derive(Clone)]
pub struct Hub {
    client: AsyncClient,
    /// To the hub's task; it stops when every handle is gone.
    requests: mpsc::Sender<HubRequest>,
    /// The connection and subscriptions, as the hub's task publishes them.
    facts: watch::Receiver<Facts>,
    /// Messages whose PUBACK is not written, as the hub's task counts them.
    awaiting: Arc<AtomicUsize>,
    /// Where the broker is, for the reader control's own connections.
    endpoint: Arc<Endpoint>,
}

impl Hub {
    /// Start the embedded broker if configured, and the connection to the
    /// broker: returns at once; the connection is made (and remade) in the
    /// background, so that a broker that is down at start does not keep
    /// the rest of the agent from running. The connection task ends at
    /// shutdown once the connection fails, or when every handle is gone.
    pub async fn start(config: &MqttConfig, shutdown: Shutdown) -> Result<Hub, DeviceError> {
        if config.client_id.is_empty() {
            return Err(DeviceError::Open {
                what: "mqtt".into(),
                reason: "client_id is empty; a persistent session needs a client id".into(),
            });
        }
        let endpoint = match &config.broker {
            Broker::Embedded(listen) => {
                let listen = *listen;
                tokio::task::spawn_blocking(move || broker::start_embedded(listen))
                    .await
                    .map_err(|e| DeviceError::Open {
                        what: format!("embedded MQTT broker on {listen}"),
                        reason: e.to_string(),
                    })??;
                Endpoint {
                    host: host_text(broker::reachable_ip(listen.ip())),
                    port: listen.port(),
                    tls: false,
                    credentials: None,
                }
            }
            Broker::External { url } => {
                Endpoint::parse(url).map_err(|reason| DeviceError::Open {
                    what: url.clone(),
                    reason,
                })?
            }
        };

        let mut options = MqttOptions::new(&config.client_id, &endpoint.host, endpoint.port);
        options
            .set_keep_alive(KEEP_ALIVE)
            // A persistent session: the broker keeps our subscriptions and
            // the QoS 1 messages we have not acknowledged while we are away.
            .set_clean_session(false)
            // PUBACK only after the journal commit (invariant 1).
            .set_manual_acks(true)
            .set_max_packet_size(MAX_INCOMING_PACKET, MAX_OUTGOING_PACKET);
        if let Some((user, password)) = &endpoint.credentials {
            options.set_credentials(user, password);
        }
        if endpoint.tls {
            let ca = system_ca_bundle().map_err(|reason| DeviceError::Open {
                what: endpoint.to_string(),
                reason,
            })?;
            options.set_transport(rumqttc::Transport::tls(ca, None, None));
        }
        let (client, eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);
        let (requests, requests_rx) = mpsc::channel(HUB_REQUESTS);
        let (facts_tx, facts) = watch::channel(Facts::default());
        let awaiting = Arc::new(AtomicUsize::new(0));
        let owner = Owner::new(client.clone(), requests_rx, facts_tx, awaiting.clone());
        tracing::info!(broker = %endpoint, client_id = %config.client_id, "connecting to the MQTT broker");
        tokio::spawn(owner.drive(eventloop, shutdown));
        Ok(Hub {
            client,
            requests,
            facts,
            awaiting,
            endpoint: Arc::new(endpoint),
        })
    }

    /// Where the broker is (the embedded one's reachable address).
    pub(crate) fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Whether the broker connection is up right now.
    pub fn is_connected(&self) -> bool {
        self.facts.borrow().connected
    }

    /// Connections made to the broker so far (CONNACKs): one more than the
    /// reconnects.
    pub fn connections(&self) -> u64 {
        self.facts.borrow().generation
    }

    /// Close the broker connection with a DISCONNECT, keeping the
    /// persistent session at the broker: for a bench or a test that stops
    /// one agent before the next takes the session over. Call after
    /// shutdown, or the hub reconnects.
    pub fn disconnect(&self) {
        let _ = self.client.try_disconnect();
    }

    /// QoS 1 messages of the current connection whose PUBACK has not been
    /// written yet (being decoded, waiting for their commit, or waiting
    /// for an earlier message's PUBACK).
    pub fn awaiting_ack(&self) -> usize {
        self.awaiting.load(Ordering::Relaxed)
    }

    /// Receive and journal one MQTT device's messages until shutdown
    /// (`Ok`) or until the broker connection is lost (`Err`; the runner
    /// marks the device down and starts the next session, which waits for
    /// the reconnection).
    pub async fn session(
        &self,
        spec: &DeviceSpec,
        ingest: &Ingest,
        shutdown: &mut Shutdown,
    ) -> Result<(), DeviceError> {
        session::run(self, spec, ingest, shutdown).await
    }

    /// Publish a command (an ESL update) with QoS 1, not retained. Returns
    /// once the client has queued it: the broker's PUBACK is not awaited,
    /// since what counts for a label is its status message.
    pub async fn publish(&self, topic: &str, payload: Vec<u8>) -> Result<(), DeviceError> {
        if topic.is_empty() || !rumqttc::valid_topic(topic) || topic.len() > 1024 {
            return Err(DeviceError::Protocol(format!(
                "{topic:?} is not a topic to publish to"
            )));
        }
        if payload.len() > MAX_PAYLOAD {
            return Err(DeviceError::Protocol(format!(
                "payload of {} bytes for {topic} is over the {MAX_PAYLOAD} byte limit",
                payload.len()
            )));
        }
        if !self.is_connected() {
            return Err(DeviceError::Lost("not connected to the MQTT broker".into()));
        }
        let queued = tokio::time::timeout(
            PUBLISH_TIMEOUT,
            self.client.publish(topic, QoS::AtLeastOnce, false, payload),
        )
        .await;
        match queued {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(DeviceError::Lost(format!("publish to {topic}: {e}"))),
            Err(_) => Err(DeviceError::Timeout(format!(
                "publish to {topic}: the MQTT client is not taking requests"
            ))),
        }
    }

    /// Hand a request to the hub's task.
    async fn request(&self, request: HubRequest) -> Result<(), DeviceError> {
        self.requests
            .send(request)
            .await
            .map_err(|_| DeviceError::Lost("the MQTT hub stopped".into()))
    }
}
