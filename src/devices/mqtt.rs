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
//! persistent session): see [`CLAIM_GRACE`]. A message over its device's
//! `max_message_bytes` is quarantined (size, topic, first bytes) and
//! acknowledged like any bad input.
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
//! commits every message already waiting (up to [`MAX_BATCH`]) in one
//! transaction, so under load the batch grows and the number of commits
//! does not; when traffic is light each message is committed on its own
//! without waiting for company.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, PubAck, Publish, QoS, SubAck,
    SubscribeReasonCode,
};
use tokio::sync::{mpsc, watch};

mod endpoint;
mod flow;

use endpoint::{Endpoint, host_text, system_ca_bundle};

use super::broker::{self, MAX_PAYLOAD};
use super::ingest::Unit;
use super::{DeviceError, DeviceSpec, Ingest, Source, commit_until_stored};
use crate::backoff::Backoff;
use crate::codecs::json::{DecodeContext, JsonCodec};
use crate::codecs::{Decoded, esl};
use crate::config::{Broker, MAX_MQTT_PACKET, MqttConfig, Transport};
use crate::event::{EventBody, LabelAck};
use crate::profiles::Codec;
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
/// How much of an oversize message the quarantine keeps.
const OVERSIZE_HEAD: usize = 1024;
/// The largest packet sent: an update payload of at most [`MAX_PAYLOAD`]
/// plus its topic and header.
const MAX_OUTGOING_PACKET: usize = MAX_PAYLOAD + 8 * 1024;
/// Requests (acks, subscriptions, publishes) queued for the event loop.
const REQUEST_CAPACITY: usize = 1024;
/// Messages waiting for one device's commit. A broker may send far more
/// than its in-flight window (mosquitto sends a persistent session's whole
/// backlog at once), so when a queue is full the hub stops reading from
/// the broker until the session has made room (see `flow`): the broker's
/// queue, not the agent's memory, holds the backlog. A few batches keep
/// the session busy while the hub reads on.
const DEVICE_QUEUE: usize = 4 * MAX_BATCH;
/// Messages delivered to one device in one transaction at most.
const MAX_BATCH: usize = 256;
/// Messages held for devices that have not registered yet.
const UNCLAIMED_MAX: usize = 1000;
/// Right after a (re)start the broker redelivers what it kept for us,
/// possibly before the device tasks have registered their filters; such
/// messages are held. A message that no device claims this long after the
/// hub started is for a topic no configured device subscribes to (a
/// subscription the persistent session remembers from an older
/// configuration): it is acknowledged and dropped, or the broker would
/// hold it, and our in-flight window, forever.
const CLAIM_GRACE: Duration = Duration::from_secs(30);
/// How long a session waits for the broker to confirm a subscription
/// before it gives up and asks again.
const SUBACK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the event loop waits for the socket to take its PUBACKs; what
/// is left goes out with the client's next flush.
const ACK_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `publish` may wait for room in the request queue.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);
/// Reconnection backoff of the broker connection.
const RECONNECT_BASE: Duration = Duration::from_millis(500);
const RECONNECT_CAP: Duration = Duration::from_secs(30);

/// The agent's connection to the MQTT broker, shared by every MQTT device
/// and by the label dispatcher. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

/// One message from the broker on its way to a device.
struct Message {
    publish: Publish,
    /// The connection it came on: its PUBACK means something on that
    /// connection only.
    generation: u64,
    /// Its place in the arrival order on its connection (see
    /// `State::pending_acks`).
    arrival: u64,
}

impl Message {
    fn ack(&self) -> Ack {
        Ack {
            pkid: self.publish.pkid,
            generation: self.generation,
            arrival: self.arrival,
        }
    }
}

/// What a message's PUBACK needs once its input is stored.
#[derive(Debug, Clone, Copy)]
struct Ack {
    pkid: u16,
    generation: u64,
    arrival: u64,
}

/// A message whose decoded input waits for its commit.
struct ToCommit {
    ack: Ack,
    unit: Unit,
}

/// A device's subscription: how its messages are decoded and sorted (in
/// the event loop), and the queue of those that must be committed.
struct Route {
    device: String,
    filter: String,
    reader: Reader,
    source: Source,
    ingest: Ingest,
    tx: mpsc::Sender<ToCommit>,
    /// Held by the device's session while it runs; input that arrives
    /// between two sessions waits in the queue for the next one.
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<ToCommit>>>,
}

/// Where a subscription stands on the current connection.
#[derive(Debug, Clone, PartialEq)]
enum SubState {
    /// SUBSCRIBE handed to the client; no SUBACK yet.
    Requested(Instant),
    Confirmed,
    /// The broker answered with a failure code (e.g. an ACL refusal).
    Refused,
}

/// What a session waits for before it counts its device as up.
enum Readiness {
    Down(String),
    Pending,
    Ready(u64),
    Refused,
}

#[derive(Default)]
struct State {
    /// Between a CONNACK and the next connection error.
    connected: bool,
    /// Counts CONNACKs: which connection is the current one.
    generation: u64,
    /// Why the connection is down, for device health.
    last_error: Option<String>,
    routes: Vec<Arc<Route>>,
    /// Messages no registered device matched yet, oldest first.
    unclaimed: VecDeque<Message>,
    /// Filters of SUBSCRIBE requests handed to the client and not yet
    /// written, in request order (the client writes requests in order and
    /// reports each written SUBSCRIBE with its packet id).
    sub_queue: VecDeque<String>,
    /// Packet id of a written SUBSCRIBE -> its filter, until the SUBACK.
    sub_written: HashMap<u16, String>,
    /// Filter -> its subscription on the current connection.
    subs: HashMap<String, SubState>,
    last_unclaimed_warning: Option<Instant>,
    /// PUBACKs must leave in the order the PUBLISHes arrived on the
    /// connection (MQTT 3.1.1 section 4.6; rumqttd drops a client that
    /// acks out of order), across all devices. Each QoS 1 message takes the
    /// next arrival number; its slot gets the packet id once the message is
    /// handled (stored, or nothing to store), and the event loop writes the
    /// PUBACKs from the front while the front is ready.
    arrivals: u64,
    pending_acks: std::collections::BTreeMap<u64, Option<u16>>,
    /// PUBACKs handed to the client's request queue and not yet written.
    /// A session that makes the front ready while the event loop waits on
    /// the socket sends the first PUBACK that way, which wakes the event
    /// loop; the event loop writes the rest itself, but only once the
    /// queued ones are out, so the order holds.
    acks_queued: usize,
    /// Messages decoded for a device whose queue was full, oldest first,
    /// and every message after them: while any is held the event loop
    /// reads nothing more from the broker (flow control, see `flow`).
    held: VecDeque<(Arc<Route>, ToCommit)>,
    /// Messages for devices that have not registered yet, dropped after
    /// the grace period since the last warning about them.
    unclaimed_dropped: u64,
}

impl State {
    /// Whether the event loop must stop reading from the broker: a device
    /// queue is full, or too many messages wait for their device.
    fn holding(&self) -> bool {
        !self.held.is_empty() || self.unclaimed.len() >= UNCLAIMED_MAX
    }
}

struct Inner {
    client: AsyncClient,
    state: Mutex<State>,
    /// Wakes sessions when the connection or a subscription changed.
    changed: watch::Sender<()>,
    /// Wakes the event loop while it holds back reads: PUBACKs are ready,
    /// or a session made room.
    wake: tokio::sync::Notify,
    started: Instant,
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
        let inner = Arc::new(Inner {
            client,
            state: Mutex::new(State::default()),
            changed: watch::channel(()).0,
            wake: tokio::sync::Notify::new(),
            started: Instant::now(),
        });
        tracing::info!(broker = %endpoint, client_id = %config.client_id, "connecting to the MQTT broker");
        tokio::spawn(drive(eventloop, Arc::downgrade(&inner), shutdown));
        Ok(Hub { inner })
    }

    /// Whether the broker connection is up right now.
    pub fn is_connected(&self) -> bool {
        self.inner.lock().connected
    }

    /// Connections made to the broker so far (CONNACKs): one more than the
    /// reconnects.
    pub fn connections(&self) -> u64 {
        self.inner.lock().generation
    }

    /// Close the broker connection with a DISCONNECT, keeping the
    /// persistent session at the broker: for a bench or a test that stops
    /// one agent before the next takes the session over. Call after
    /// shutdown, or the hub reconnects.
    pub fn disconnect(&self) {
        let _ = self.inner.client.try_disconnect();
    }

    /// QoS 1 messages of the current connection whose PUBACK has not been
    /// written yet (being decoded, waiting for their commit, or waiting
    /// for an earlier message's PUBACK).
    pub fn awaiting_ack(&self) -> usize {
        let st = self.inner.lock();
        st.pending_acks.len() + st.acks_queued
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
        let id = spec.id();
        let reader = Reader::new(spec, ingest.member_key())?;
        let filter = reader.filter.clone();
        let inbox = self.inner.register(id, reader, spec.source(), ingest);
        // The runner runs one session per device at a time; the lock only
        // makes that explicit.
        let mut inbox = inbox.lock().await;
        let mut changes = self.inner.changed.subscribe();
        let source = spec.source();

        let Some(generation) = self
            .wait_ready(&filter, &mut changes, &mut inbox, &source, ingest, shutdown)
            .await?
        else {
            return Ok(());
        };
        if ingest.health().set_up(id, true, None) {
            tracing::info!(device = %id, filter = %filter, "MQTT device subscribed");
        }

        loop {
            tokio::select! {
                _ = shutdown.wait() => return Ok(()),
                changed = changes.changed() => {
                    if changed.is_err() {
                        return Err(DeviceError::Lost("the MQTT hub stopped".into()));
                    }
                    if let Some(reason) = self.inner.lost_since(generation) {
                        return Err(DeviceError::Lost(reason));
                    }
                }
                first = inbox.recv() => {
                    let Some(first) = first else {
                        return Err(DeviceError::Lost("the MQTT hub stopped".into()));
                    };
                    let batch = take_batch(first, &mut inbox);
                    if !self.commit(&source, batch, ingest, shutdown).await {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Wait until the connection is up and the broker confirmed the
    /// device's subscription: `Some(connection generation)`, or `None` on
    /// shutdown.
    /// Messages already queued for the device are committed meanwhile:
    /// the hub may be holding back reads until this queue has room, and
    /// the SUBACK it waits for is one of those reads.
    async fn wait_ready(
        &self,
        filter: &str,
        changes: &mut watch::Receiver<()>,
        inbox: &mut mpsc::Receiver<ToCommit>,
        source: &Source,
        ingest: &Ingest,
        shutdown: &mut Shutdown,
    ) -> Result<Option<u64>, DeviceError> {
        let id = source.device.as_str();
        loop {
            match self.inner.readiness(filter) {
                Readiness::Ready(generation) => return Ok(Some(generation)),
                Readiness::Refused => {
                    return Err(DeviceError::Open {
                        what: filter.to_string(),
                        reason:
                            "the broker refused the subscription (SUBACK failure; check its ACL)"
                                .into(),
                    });
                }
                Readiness::Down(reason) => {
                    // Already down: this only updates the reason shown.
                    ingest.health().set_up(
                        id,
                        false,
                        Some(format!("waiting for the MQTT broker: {reason}")),
                    );
                }
                Readiness::Pending => {}
            }
            // Woken by connection and subscription changes; the tick is
            // for the SUBACK timeout and a subscription request that found
            // the request queue full.
            tokio::select! {
                _ = shutdown.wait() => return Ok(None),
                changed = changes.changed() => {
                    if changed.is_err() {
                        return Err(DeviceError::Lost("the MQTT hub stopped".into()));
                    }
                }
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                Some(first) = inbox.recv() => {
                    let batch = take_batch(first, inbox);
                    if !self.commit(source, batch, ingest, shutdown).await {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Journal the input of a batch of messages in one transaction, then
    /// release their PUBACKs. Returns false on shutdown while the database
    /// refused the batch (nothing is acknowledged then; the broker keeps
    /// the messages).
    async fn commit(
        &self,
        source: &Source,
        batch: Vec<ToCommit>,
        ingest: &Ingest,
        shutdown: &mut Shutdown,
    ) -> bool {
        let mut unit = Unit::default();
        let mut acks = Vec::with_capacity(batch.len());
        for c in batch {
            unit.merge(c.unit);
            acks.push(c.ack);
        }
        // Also messages of an older connection are journaled: if the broker
        // kept our session it redelivers them (and the journal dedups), if
        // it lost the session this is their only chance.
        if !commit_until_stored(ingest, source, &unit, shutdown).await {
            return false;
        }
        self.inner.stored(&acks);
        true
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
            self.inner
                .client
                .publish(topic, QoS::AtLeastOnce, false, payload),
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
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn notify(&self) {
        self.changed.send_replace(());
    }

    /// The queue of a device's input to commit, creating its route on
    /// first use. Messages that arrived for it before it registered are
    /// handled now.
    fn register(
        &self,
        device: &str,
        reader: Reader,
        source: Source,
        ingest: &Ingest,
    ) -> Arc<tokio::sync::Mutex<mpsc::Receiver<ToCommit>>> {
        let mut st = self.lock();
        if let Some(route) = st
            .routes
            .iter()
            .find(|r| r.device == device && r.filter == reader.filter)
        {
            return route.rx.clone();
        }
        st.routes.retain(|r| r.device != device);
        let (tx, rx) = mpsc::channel(DEVICE_QUEUE);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let route = Arc::new(Route {
            device: device.to_string(),
            filter: reader.filter.clone(),
            reader,
            source,
            ingest: ingest.clone(),
            tx,
            rx: rx.clone(),
        });
        st.routes.push(route.clone());
        let (mine, others): (VecDeque<Message>, VecDeque<Message>) = st
            .unclaimed
            .drain(..)
            .partition(|m| rumqttc::matches(&m.publish.topic, &route.filter));
        st.unclaimed = others;
        for m in mine {
            self.dispatch(&mut st, &route, m);
        }
        drop(st);
        // The event loop may be holding back for these messages.
        self.wake.notify_one();
        rx
    }

    /// Ask for a subscription if it has not been asked for on this
    /// connection (or its SUBACK is overdue), and say where it stands.
    fn readiness(&self, filter: &str) -> Readiness {
        let mut st = self.lock();
        if !st.connected {
            let reason = st
                .last_error
                .clone()
                .unwrap_or_else(|| "connecting".to_string());
            return Readiness::Down(reason);
        }
        match st.subs.get(filter) {
            Some(SubState::Confirmed) => Readiness::Ready(st.generation),
            Some(SubState::Refused) => {
                // Asked again by the next session, after the runner's
                // backoff: the broker's ACL may have been fixed meanwhile.
                st.subs.remove(filter);
                Readiness::Refused
            }
            Some(SubState::Requested(at)) if at.elapsed() < SUBACK_TIMEOUT => Readiness::Pending,
            _ => {
                self.request_subscription(&mut st, filter);
                Readiness::Pending
            }
        }
    }

    /// Hand a SUBSCRIBE to the client. Called with the state locked, so
    /// that the order of `sub_queue` is the order of the requests.
    fn request_subscription(&self, st: &mut State, filter: &str) {
        match self.client.try_subscribe(filter, QoS::AtLeastOnce) {
            Ok(()) => {
                st.sub_queue.push_back(filter.to_string());
                st.subs
                    .insert(filter.to_string(), SubState::Requested(Instant::now()));
            }
            // The request queue is full; the waiting session asks again.
            Err(e) => tracing::debug!(filter, error = %e, "cannot subscribe yet"),
        }
    }

    /// `Some(reason)` when the connection of `generation` is gone.
    fn lost_since(&self, generation: u64) -> Option<String> {
        let st = self.lock();
        if st.connected && st.generation == generation {
            return None;
        }
        Some(if st.connected {
            "the MQTT connection was re-established".to_string()
        } else {
            st.last_error
                .clone()
                .unwrap_or_else(|| "MQTT connection lost".to_string())
        })
    }

    /// A session stored these messages' input: their PUBACKs may go. When
    /// that made the front of the arrival order ready and no queued PUBACK
    /// is on its way to wake the event loop already, the first one goes
    /// through the client's request queue (which wakes it); the event loop
    /// writes the rest.
    fn stored(&self, acks: &[Ack]) {
        let mut st = self.lock();
        for ack in acks {
            mark_ready(&mut st, ack);
        }
        if st.holding() {
            // The event loop is not polling the client, so it would not see
            // a PUBACK in the request queue; it writes them itself.
            drop(st);
            self.wake.notify_one();
            return;
        }
        if st.acks_queued > 0 {
            return;
        }
        let Some(entry) = st.pending_acks.first_entry() else {
            return;
        };
        let Some(pkid) = *entry.get() else {
            return;
        };
        let mut wake = Publish::new("", QoS::AtLeastOnce, Vec::new());
        wake.pkid = pkid;
        // A full request queue means the event loop is busy: it writes
        // the ready PUBACKs after its next read anyway.
        if self.client.try_ack(&wake).is_ok() {
            entry.remove();
            st.acks_queued += 1;
        }
    }

    // -- called by the event loop; none of these may wait ------------------

    fn on_connected(&self, session_present: bool) {
        let mut st = self.lock();
        st.connected = true;
        st.generation += 1;
        st.last_error = None;
        // Packet ids and SUBACKs of the old connection mean nothing now.
        // A SUBSCRIBE still queued from before the reconnect may take the
        // place of one of these in `sub_queue`; both are for our filters
        // and normally both succeed, so that mix-up is harmless.
        st.sub_queue.clear();
        st.sub_written.clear();
        st.subs.clear();
        // PUBACKs of the old connection cannot be sent any more; the broker
        // redelivers those messages.
        st.pending_acks.clear();
        st.arrivals = 0;
        // PUBACKs still in the request queue belong to the old connection.
        st.acks_queued = 0;
        let mut filters: Vec<String> = st.routes.iter().map(|r| r.filter.clone()).collect();
        filters.sort();
        filters.dedup();
        for filter in &filters {
            self.request_subscription(&mut st, filter);
        }
        drop(st);
        tracing::info!(
            session_present,
            subscriptions = filters.len(),
            "connected to the MQTT broker"
        );
        self.notify();
    }

    fn on_disconnected(&self, reason: String) {
        let mut st = self.lock();
        st.connected = false;
        st.last_error = Some(reason);
        drop(st);
        self.notify();
    }

    fn on_subscribe_written(&self, pkid: u16) {
        let mut st = self.lock();
        if let Some(filter) = st.sub_queue.pop_front() {
            st.sub_written.insert(pkid, filter);
        }
    }

    fn on_suback(&self, ack: &SubAck) {
        let mut st = self.lock();
        let Some(filter) = st.sub_written.remove(&ack.pkid) else {
            return;
        };
        let state = match ack.return_codes.first() {
            Some(SubscribeReasonCode::Success(_)) => SubState::Confirmed,
            _ => {
                tracing::error!(filter = %filter, "the MQTT broker refused the subscription");
                SubState::Refused
            }
        };
        st.subs.insert(filter, state);
        drop(st);
        self.notify();
    }

    /// Hand an incoming message to its device, or hold it until its device
    /// registers.
    fn route(&self, publish: Publish) {
        let mut st = self.lock();
        let arrival = if publish.qos == QoS::AtMostOnce {
            // QoS 0 has no PUBACK: a place no slot has.
            u64::MAX
        } else {
            let arrival = st.arrivals;
            st.arrivals += 1;
            st.pending_acks.insert(arrival, None);
            arrival
        };
        let message = Message {
            publish,
            generation: st.generation,
            arrival,
        };
        let Some(route) = find_route(&st, &message.publish.topic) else {
            if self.started.elapsed() > CLAIM_GRACE {
                self.drop_unclaimed(&mut st, message);
            } else {
                // Beyond UNCLAIMED_MAX the event loop stops reading until
                // the devices register or the grace period ends.
                st.unclaimed.push_back(message);
            }
            return;
        };
        self.dispatch(&mut st, &route, message);
    }

    /// Decode and sort a message of `route`'s device: acknowledge it when
    /// it leaves nothing to commit, else queue it for the device's session,
    /// or hold it in the hub when that queue is full (the event loop then
    /// stops reading until there is room). Runs with the state locked, so
    /// that a device's messages are sorted in arrival order.
    fn dispatch(&self, st: &mut State, route: &Arc<Route>, message: Message) {
        let items = route.reader.decode(
            &message.publish.topic,
            &message.publish.payload,
            crate::event::now_millis(),
        );
        let ack = message.ack();
        let Some(unit) = route.ingest.sort(&route.source, items) else {
            mark_ready(st, &ack);
            return;
        };
        let item = ToCommit { ack, unit };
        if !st.held.is_empty() {
            // Behind what is held already, to keep the arrival order.
            st.held.push_back((route.clone(), item));
            return;
        }
        match route.tx.try_send(item) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(item)) => st.held.push_back((route.clone(), item)),
            Err(mpsc::error::TrySendError::Closed(item)) => queue_closed(st, route, &item),
        }
    }

    /// Move held messages into their devices' queues while there is room.
    /// Returns the queue the oldest held message still waits for.
    fn release_held(&self) -> Option<mpsc::Sender<ToCommit>> {
        let mut st = self.lock();
        while let Some((route, item)) = st.held.pop_front() {
            match route.tx.try_send(item) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(item)) => {
                    let tx = route.tx.clone();
                    st.held.push_front((route, item));
                    return Some(tx);
                }
                Err(mpsc::error::TrySendError::Closed(item)) => {
                    queue_closed(&mut st, &route, &item)
                }
            }
        }
        None
    }

    /// Drop held messages that no device claimed within the grace period.
    fn sweep_unclaimed(&self) {
        if self.started.elapsed() <= CLAIM_GRACE {
            return;
        }
        let mut st = self.lock();
        while let Some(m) = st.unclaimed.pop_front() {
            // A device may have registered since the message arrived.
            match find_route(&st, &m.publish.topic) {
                Some(route) => self.dispatch(&mut st, &route, m),
                None => self.drop_unclaimed(&mut st, m),
            }
        }
    }

    /// Acknowledge and drop a message no configured device subscribes to.
    fn drop_unclaimed(&self, st: &mut State, m: Message) {
        let now = Instant::now();
        st.unclaimed_dropped += 1;
        if st
            .last_unclaimed_warning
            .is_none_or(|at| now.duration_since(at) > Duration::from_secs(60))
        {
            tracing::warn!(
                topic = %m.publish.topic,
                dropped = st.unclaimed_dropped,
                "no configured device subscribes to this topic (a subscription left from an older configuration?); messages dropped (counted since the last such warning)"
            );
            st.last_unclaimed_warning = Some(now);
            st.unclaimed_dropped = 0;
        }
        tracing::debug!(topic = %m.publish.topic, "unclaimed message dropped");
        // Written by the event loop after this, in arrival order.
        mark_ready(st, &m.ack());
    }
}

/// A device queue without its receiver. The route owns the receiver, so
/// this cannot happen; should it, the message is left with the broker
/// without holding up the PUBACKs of the messages after it.
fn queue_closed(st: &mut State, route: &Route, item: &ToCommit) {
    tracing::error!(device = %route.device, "device queue closed; message left with the broker");
    st.pending_acks.remove(&item.ack.arrival);
}

/// `first` and what else waits in the queue, up to [`MAX_BATCH`].
fn take_batch(first: ToCommit, inbox: &mut mpsc::Receiver<ToCommit>) -> Vec<ToCommit> {
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match inbox.try_recv() {
            Ok(m) => batch.push(m),
            Err(_) => break,
        }
    }
    batch
}

/// The first route whose filter matches `topic`.
fn find_route(st: &State, topic: &str) -> Option<Arc<Route>> {
    st.routes
        .iter()
        .find(|r| rumqttc::matches(topic, &r.filter))
        .cloned()
}

/// Fill a message's slot in the arrival order, if the connection it came
/// on is still the current one (a PUBACK on another connection would
/// refer to whatever the broker sent there under that packet id).
fn mark_ready(st: &mut State, ack: &Ack) {
    if !(st.connected && st.generation == ack.generation) {
        return;
    }
    if let Some(slot) = st.pending_acks.get_mut(&ack.arrival) {
        *slot = Some(ack.pkid);
    }
}

/// The packet ids at the front of the arrival order that are ready to be
/// acknowledged; none while PUBACKs handed to the request queue are still
/// to be written before them.
fn take_ready(st: &mut State) -> Vec<u16> {
    let mut out = Vec::new();
    if !st.connected || st.acks_queued > 0 {
        return out;
    }
    while let Some(entry) = st.pending_acks.first_entry() {
        let Some(pkid) = *entry.get() else { break };
        entry.remove();
        out.push(pkid);
    }
    out
}

/// Write the PUBACKs that are ready, in one flush. Called by the event
/// loop between polls, once it has handed out every packet of the last
/// read (so a read's worth of PUBACKs goes out together). The client's
/// network is a public part of its event loop; writing PUBACKs there is
/// what the client does itself for automatic acks. A failed write loses
/// nothing: the connection is then broken, and the broker redelivers.
/// `Ok(true)` when PUBACKs were written, `Err` when the connection broke.
async fn write_ready_acks(eventloop: &mut EventLoop, hub: &Inner) -> Result<bool, String> {
    if !eventloop.state.events.is_empty() {
        return Ok(false);
    }
    let Some(network) = eventloop.network.as_mut() else {
        return Ok(false);
    };
    let pkids = take_ready(&mut hub.lock());
    if pkids.is_empty() {
        return Ok(false);
    }
    let written = async {
        for pkid in pkids {
            network.write(Packet::PubAck(PubAck::new(pkid))).await?;
        }
        network.flush().await
    };
    match tokio::time::timeout(ACK_FLUSH_TIMEOUT, written).await {
        Ok(Ok(())) => Ok(true),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "PUBACKs not written; the broker will redeliver");
            Err(format!("cannot write to the MQTT broker: {e}"))
        }
        Err(_) => {
            tracing::debug!("the broker is slow to take PUBACKs; they go with the next flush");
            Ok(true)
        }
    }
}

/// Poll the client's event loop for as long as the hub exists: route
/// messages, track the connection and subscriptions, reconnect with
/// backoff after errors.
async fn drive(mut eventloop: EventLoop, inner: Weak<Inner>, mut shutdown: Shutdown) {
    let mut backoff = Backoff::new(RECONNECT_BASE, RECONNECT_CAP);
    let mut outage_logged = false;
    let mut episodes = flow::Episodes::default();
    loop {
        let Some(hub) = inner.upgrade() else {
            break;
        };
        let hold = flow::must_hold(&eventloop, &hub);
        drop(hub);
        if hold {
            flow::hold_back(&mut eventloop, &inner, &mut shutdown, &mut episodes).await;
            if shutdown.is_triggered() {
                // The sessions are gone: what is held would never drain.
                break;
            }
            continue;
        }
        let polled = eventloop.poll().await;
        let Some(hub) = inner.upgrade() else {
            break;
        };
        match polled {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                backoff.reset();
                outage_logged = false;
                hub.on_connected(ack.session_present);
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => hub.route(publish),
            Ok(Event::Incoming(Packet::SubAck(ack))) => hub.on_suback(&ack),
            Ok(Event::Outgoing(Outgoing::Subscribe(pkid))) => hub.on_subscribe_written(pkid),
            // Only PUBACKs from the request queue show up here; the ones
            // written by `write_ready_acks` bypass the client's state.
            Ok(Event::Outgoing(Outgoing::PubAck(_))) => {
                let mut st = hub.lock();
                st.acks_queued = st.acks_queued.saturating_sub(1);
            }
            Ok(_) => {}
            Err(e) => {
                let reason = e.to_string();
                hub.on_disconnected(reason.clone());
                drop(hub);
                if shutdown.is_triggered() {
                    break;
                }
                if !outage_logged {
                    tracing::warn!(error = %reason, "MQTT broker connection down; reconnecting with backoff");
                    outage_logged = true;
                } else {
                    tracing::debug!(error = %reason, "MQTT broker still unreachable");
                }
                if !shutdown.sleep(backoff.next_delay()).await {
                    break;
                }
                continue;
            }
        }
        hub.sweep_unclaimed();
        // A failed write shows as an error of the next poll.
        let _ = write_ready_acks(&mut eventloop, &hub).await;
        episodes.tick();
    }
    tracing::debug!("MQTT connection task stopped");
}

/// How one device's messages become journal input.
struct Reader {
    /// The subscription filter.
    filter: String,
    decoder: Decoder,
    /// Larger messages are quarantined, not decoded.
    max_message_bytes: usize,
}

enum Decoder {
    Json {
        codec: Arc<JsonCodec>,
        context: DecodeContext,
    },
    /// Label status messages on `{topic}/+/status`.
    EslStatus,
}

impl Reader {
    fn new(spec: &DeviceSpec, member_key: &[u8]) -> Result<Reader, DeviceError> {
        let Transport::Mqtt {
            topic,
            max_message_bytes,
        } = &spec.config.transport
        else {
            return Err(DeviceError::Open {
                what: spec.config.transport.endpoint(),
                reason: "not an MQTT device".into(),
            });
        };
        let (filter, decoder) = match &spec.profile.codec {
            Codec::Json(codec) => (
                topic.clone(),
                Decoder::Json {
                    codec: codec.clone(),
                    context: DecodeContext {
                        device_id: spec.id().to_string(),
                        member_key: member_key.to_vec(),
                    },
                },
            ),
            Codec::EslJson(_) => (esl::status_filter(topic), Decoder::EslStatus),
            other => {
                return Err(DeviceError::Open {
                    what: topic.clone(),
                    reason: format!("codec {} cannot be read from MQTT", other.name()),
                });
            }
        };
        if !rumqttc::valid_filter(&filter) {
            return Err(DeviceError::Open {
                what: filter,
                reason: "not a valid MQTT topic filter ('+' and '#' must be whole levels, '#' only last)"
                    .into(),
            });
        }
        Ok(Reader {
            filter,
            decoder,
            max_message_bytes: *max_message_bytes,
        })
    }

    /// Decode one message; never panics, bad input becomes `Decoded::Bad`.
    fn decode(&self, topic: &str, payload: &[u8], now: DateTime<Utc>) -> Vec<Decoded> {
        if payload.len() > self.max_message_bytes {
            return vec![oversize(topic, payload, self.max_message_bytes)];
        }
        match &self.decoder {
            Decoder::Json { codec, context } => {
                let out = codec.decode(payload, context, now);
                if out.ts_fallbacks > 0 {
                    tracing::debug!(
                        device = %context.device_id,
                        records = out.ts_fallbacks,
                        "records without a usable timestamp got the receive time"
                    );
                }
                out.items
            }
            Decoder::EslStatus => vec![label_status(topic, payload, now)],
        }
    }
}

/// A message over its device's size limit, for the quarantine: the reason
/// names the size, the limit and the topic; only the first bytes are kept.
fn oversize(topic: &str, payload: &[u8], limit: usize) -> Decoded {
    let head = &payload[..payload.len().min(OVERSIZE_HEAD)];
    Decoded::Bad {
        reason: format!(
            "message of {} bytes on topic {topic:?} is over the device's limit of {limit} bytes; \
             not decoded, its first {} bytes kept. If the device really sends messages this \
             large, raise max_message_bytes on the device; otherwise check its batching settings",
            payload.len(),
            head.len()
        ),
        raw: head.to_vec(),
    }
}

/// A label's status message as a `label_ack` event. The SKU is not in the
/// message; the label projection knows which SKU the label shows.
fn label_status(topic: &str, payload: &[u8], now: DateTime<Utc>) -> Decoded {
    match esl::parse_status(topic, payload) {
        Ok(report) => Decoded::Events(vec![(
            now,
            EventBody::LabelAck(LabelAck {
                label_id: report.label_id,
                sku: String::new(),
                price_version: report.version,
                status: report.status,
                battery_mv: report.battery_mv,
                rssi: report.rssi,
            }),
        )]),
        Err(reason) => Decoded::Bad {
            reason,
            raw: payload.to_vec(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::LabelStatus;

    #[test]
    fn label_status_becomes_a_label_ack_or_quarantine() {
        let now = crate::event::now_millis();
        let ok = label_status(
            "stores/1/esl/L1/status",
            br#"{"label_id":"L1","version":57,"status":"ok","battery_mv":2950,"rssi":-61}"#,
            now,
        );
        assert_eq!(
            ok,
            Decoded::Events(vec![(
                now,
                EventBody::LabelAck(LabelAck {
                    label_id: "L1".into(),
                    sku: String::new(),
                    price_version: 57,
                    status: LabelStatus::Ok,
                    battery_mv: Some(2950),
                    rssi: Some(-61),
                })
            )])
        );
        // Another label's id on this label's topic is refused.
        let bad = label_status(
            "stores/1/esl/L1/status",
            br#"{"label_id":"L2","version":1,"status":"ok"}"#,
            now,
        );
        assert!(
            matches!(bad, Decoded::Bad { ref raw, .. } if raw.starts_with(b"{\"label_id\":\"L2\""))
        );
        assert!(matches!(
            label_status("x/L1/status", b"\xff\x00", now),
            Decoded::Bad { .. }
        ));
    }

    #[test]
    fn mqtt_wildcards_route_as_the_broker_does() {
        assert!(rumqttc::matches(
            "stores/1/esl/L1/status",
            "stores/1/esl/+/status"
        ));
        assert!(!rumqttc::matches(
            "stores/1/esl/L1/set",
            "stores/1/esl/+/status"
        ));
        assert!(rumqttc::matches("stores/1/rfid/door", "stores/1/#"));
        assert!(rumqttc::matches("stores/1", "stores/1/#"));
        assert!(!rumqttc::matches("stores/2/rfid", "stores/1/#"));
        assert!(!rumqttc::matches("$SYS/broker", "#"));
    }
}
