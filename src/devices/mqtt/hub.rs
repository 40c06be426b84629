//! The hub's task: the one owner of the broker connection's state, as
//! rumqttc's own `EventLoop` owns the client's. It polls the client's
//! event loop, routes, decodes and sorts every PUBLISH in arrival order,
//! keeps the subscriptions and the arrival order with its pending PUBACKs,
//! and writes the PUBACKs itself. Sessions and the [`Hub`](super::Hub)
//! handle talk to it by [`HubRequest`]s; it publishes what they may read
//! ([`Facts`] on a watch channel, the awaiting-ack count in an atomic).
//!
//! Waking the event loop. While the task waits in `EventLoop::poll`, a
//! session may store messages and so make PUBACKs ready. `poll` is not
//! cancel-safe in rumqttc 0.25.1 (eventloop.rs, `EventLoop::select`): its
//! read branch is (`Framed::next` buffers partial packets, and packets
//! already handled wait in `state.events`), but its request and keep-alive
//! branches hand the request to `MqttState` (which assigns a packet id,
//! takes an in-flight slot, or sets `await_pingresp`) and only then await
//! the socket write (`Network::write` feeds the framed sink, which flushes
//! once its buffer is over the backpressure boundary); dropping the future
//! there loses a PUBLISH, SUBSCRIBE or PINGREQ the state thinks was sent.
//! A connect in progress would be dropped too. So the task never drops a
//! `poll` future: it keeps it pinned and answers requests beside it
//! ([`Owner::serve`]) until it completes. When a request makes the front
//! of the arrival order ready, the task puts that one PUBACK into the
//! client's request queue (`try_ack`), which makes `poll` write it and
//! return; the task then writes the rest itself, in one flush.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, EventLoop, Outgoing, Packet, PubAck, Publish, QoS};
use tokio::sync::{mpsc, oneshot, watch};

use super::acks::{Ack, Arrivals};
use super::flow;
use super::reader::Reader;
use super::route::{self, Inbox, Message, Outlet, Route, Sent, ToCommit};
use super::session::MAX_BATCH;
use super::subs::Subscriptions;
use crate::backoff::Backoff;
use crate::devices::{Ingest, Source};
use crate::shutdown::Shutdown;

/// Messages waiting for one device's commit. A broker may send far more
/// than its in-flight window (mosquitto sends a persistent session's whole
/// backlog at once), so when a queue is full the hub stops reading from
/// the broker until the session has made room (see `flow`): the broker's
/// queue, not the agent's memory, holds the backlog. A few batches keep
/// the session busy while the hub reads on.
const DEVICE_QUEUE: usize = 4 * MAX_BATCH;
/// Messages held for devices that have not registered yet.
const UNCLAIMED_MAX: usize = 1000;
/// Right after a (re)start the broker redelivers what it kept for us,
/// possibly before the device tasks have registered their filters; such
/// messages are held. A message that no device claims this long after the
/// hub started is for a topic no configured device subscribes to (a
/// subscription the persistent session remembers from an older
/// configuration): it is acknowledged and dropped, or the broker would
/// hold it, and our in-flight window, forever.
pub(super) const CLAIM_GRACE: Duration = Duration::from_secs(30);
/// How long the hub waits for the socket to take its PUBACKs; what is
/// left goes out with the client's next flush.
pub(super) const ACK_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// Reconnection backoff of the broker connection.
const RECONNECT_BASE: Duration = Duration::from_millis(500);
const RECONNECT_CAP: Duration = Duration::from_secs(30);

/// What sessions ask of the hub.
pub(super) enum HubRequest {
    /// The queue of a device's input to commit, creating its route on
    /// first use.
    Register(Box<Registration>),
    /// Subscribe to a filter unless that was asked for on this connection
    /// and its SUBACK is not overdue.
    Subscribe(String),
    /// The broker refused this subscription: forget that, so that the
    /// next session asks again (the broker's ACL may have been fixed).
    Forget(String),
    /// These messages' input is stored: their PUBACKs may go.
    Stored(Vec<Ack>),
}

/// A device that asks for its route.
pub(super) struct Registration {
    pub(super) device: String,
    pub(super) reader: Reader,
    pub(super) source: Source,
    pub(super) ingest: Ingest,
    pub(super) reply: oneshot::Sender<Inbox>,
}

/// What the hub publishes for sessions and the handle: the connection and
/// the subscriptions on it. Changes rarely, wakes every session.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Facts {
    /// Between a CONNACK and the next connection error.
    pub(super) connected: bool,
    /// Counts CONNACKs: which connection is the current one.
    pub(super) generation: u64,
    /// Why the connection is down, for device health.
    pub(super) last_error: Option<String>,
    /// Filter -> its subscription on the current connection.
    pub(super) subs: HashMap<String, super::subs::SubState>,
}

/// The hub's task and everything it owns.
pub(super) struct Owner {
    client: AsyncClient,
    requests: mpsc::Receiver<HubRequest>,
    facts: watch::Sender<Facts>,
    /// Whether `facts` must be published again.
    facts_changed: bool,
    awaiting: Arc<AtomicUsize>,
    started: Instant,
    pub(super) acks: Arrivals,
    last_error: Option<String>,
    routes: Vec<Route>,
    /// Messages no registered device matched yet, oldest first.
    pub(super) unclaimed: VecDeque<Message>,
    subs: Subscriptions,
    /// Messages decoded for a device whose queue was full, oldest first,
    /// and every message after them: while any is held the hub reads
    /// nothing more from the broker (flow control, see `flow`).
    pub(super) held: VecDeque<(Outlet, ToCommit)>,
    last_unclaimed_warning: Option<Instant>,
    /// Messages for devices that have not registered yet, dropped after
    /// the grace period since the last warning about them.
    unclaimed_dropped: u64,
}

impl Owner {
    pub(super) fn new(
        client: AsyncClient,
        requests: mpsc::Receiver<HubRequest>,
        facts: watch::Sender<Facts>,
        awaiting: Arc<AtomicUsize>,
    ) -> Owner {
        Owner {
            client,
            requests,
            facts,
            facts_changed: false,
            awaiting,
            started: Instant::now(),
            acks: Arrivals::default(),
            last_error: None,
            routes: Vec::new(),
            unclaimed: VecDeque::new(),
            subs: Subscriptions::default(),
            held: VecDeque::new(),
            last_unclaimed_warning: None,
            unclaimed_dropped: 0,
        }
    }

    /// Poll the client's event loop until shutdown finds the connection
    /// broken, or every handle is gone: route messages, track the
    /// connection and subscriptions, reconnect with backoff after errors.
    pub(super) async fn drive(mut self, mut eventloop: EventLoop, mut shutdown: Shutdown) {
        let mut backoff = Backoff::new(RECONNECT_BASE, RECONNECT_CAP);
        let mut outage_logged = false;
        let mut episodes = flow::Episodes::default();
        loop {
            if flow::must_hold(&eventloop, &self) {
                if !flow::hold_back(&mut eventloop, &mut self, &mut shutdown, &mut episodes).await
                    || shutdown.is_triggered()
                {
                    // Every handle is gone, or the sessions are: what is
                    // held would never drain.
                    break;
                }
                continue;
            }
            let Some(polled) = self.serve(eventloop.poll(), true).await else {
                break;
            };
            match polled {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    backoff.reset();
                    outage_logged = false;
                    self.on_connected(ack.session_present);
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => self.route(publish),
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    self.facts_changed |= self.subs.suback(&ack)
                }
                Ok(Event::Outgoing(Outgoing::Subscribe(pkid))) => self.subs.written(pkid),
                // Only PUBACKs from the request queue show up here; the ones
                // written by `write_ready_acks` bypass the client's state.
                Ok(Event::Outgoing(Outgoing::PubAck(_))) => self.acks.queued_written(),
                Ok(_) => {}
                Err(e) => {
                    let reason = e.to_string();
                    self.on_disconnected(reason.clone());
                    self.publish();
                    if shutdown.is_triggered() {
                        break;
                    }
                    if !outage_logged {
                        tracing::warn!(error = %reason, "MQTT broker connection down; reconnecting with backoff");
                        outage_logged = true;
                    } else {
                        tracing::debug!(error = %reason, "MQTT broker still unreachable");
                    }
                    let delay = backoff.next_delay();
                    match self.serve(shutdown.sleep(delay), false).await {
                        Some(true) => continue,
                        _ => break,
                    }
                }
            }
            // What the sessions sent meanwhile, so that a read's worth of
            // PUBACKs goes out together.
            while let Ok(request) = self.requests.try_recv() {
                self.handle(request, false);
            }
            self.sweep_unclaimed();
            // A failed write shows as an error of the next poll.
            let _ = self.write_ready_acks(&mut eventloop).await;
            self.publish();
            episodes.tick();
        }
        tracing::debug!("MQTT connection task stopped");
    }

    /// Await `work` (which must not need the owner) while answering
    /// requests; `None` when every handle is gone. `polling` says that
    /// `work` is the client's `poll`, which a ready PUBACK must wake.
    async fn serve<F: Future>(&mut self, work: F, polling: bool) -> Option<F::Output> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                biased;
                out = &mut work => return Some(out),
                request = self.requests.recv() => {
                    self.handle(request?, polling);
                    self.publish();
                }
            }
        }
    }

    /// Answer one request. `polling`: the task waits in the client's
    /// `poll`, so a PUBACK that became ready at the front goes through the
    /// client's request queue, which wakes it (see the module doc).
    pub(super) fn handle(&mut self, request: HubRequest, polling: bool) {
        match request {
            HubRequest::Register(r) => {
                let Registration {
                    device,
                    reader,
                    source,
                    ingest,
                    reply,
                } = *r;
                let inbox = self.register(&device, reader, source, ingest);
                let _ = reply.send(inbox);
            }
            HubRequest::Subscribe(filter) => {
                if self.acks.is_connected() {
                    self.facts_changed |= self.subs.ask(&self.client, &filter);
                }
            }
            HubRequest::Forget(filter) => self.facts_changed |= self.subs.forget_refusal(&filter),
            HubRequest::Stored(acks) => {
                for ack in &acks {
                    self.acks.ready(ack);
                }
            }
        }
        if polling {
            self.wake_poll();
        }
    }

    /// Put the front's PUBACK into the client's request queue when it is
    /// ready and none is there already. A full request queue means the
    /// event loop is busy: the PUBACKs go after its next read anyway.
    fn wake_poll(&mut self) {
        let Some(pkid) = self.acks.ready_front() else {
            return;
        };
        let mut wake = Publish::new("", QoS::AtLeastOnce, Vec::new());
        wake.pkid = pkid;
        if self.client.try_ack(&wake).is_ok() {
            self.acks.queued();
        }
    }

    /// Publish what sessions and the handle read.
    pub(super) fn publish(&mut self) {
        self.awaiting.store(self.acks.awaiting(), Ordering::Relaxed);
        if !std::mem::take(&mut self.facts_changed) {
            return;
        }
        let facts = Facts {
            connected: self.acks.is_connected(),
            generation: self.acks.generation(),
            last_error: self.last_error.clone(),
            subs: self.subs.states().clone(),
        };
        self.facts.send_if_modified(|old| {
            let changed = *old != facts;
            *old = facts;
            changed
        });
    }

    /// Whether the hub must stop reading from the broker: a device queue
    /// is full, or too many messages wait for their device.
    pub(super) fn holding(&self) -> bool {
        !self.held.is_empty() || self.unclaimed.len() >= UNCLAIMED_MAX
    }

    fn register(&mut self, device: &str, reader: Reader, source: Source, ingest: Ingest) -> Inbox {
        if let Some(route) = self
            .routes
            .iter()
            .find(|r| &*r.outlet.device == device && r.filter == reader.filter)
        {
            return route.rx.clone();
        }
        self.routes.retain(|r| &*r.outlet.device != device);
        let route = Route::new(device, reader, source, ingest, DEVICE_QUEUE);
        let filter = route.filter.clone();
        let inbox = route.rx.clone();
        self.routes.push(route);
        let index = self.routes.len() - 1;
        if self.acks.is_connected() && !self.subs.knows(&filter) {
            self.facts_changed |= self.subs.request(&self.client, &filter);
        }
        // Messages that arrived for it before it registered.
        let (mine, others): (VecDeque<Message>, VecDeque<Message>) = self
            .unclaimed
            .drain(..)
            .partition(|m| rumqttc::matches(&m.publish.topic, &filter));
        self.unclaimed = others;
        for m in mine {
            self.dispatch(index, m);
        }
        inbox
    }

    fn on_connected(&mut self, session_present: bool) {
        self.acks.connected();
        self.last_error = None;
        self.subs.reset();
        self.facts_changed = true;
        let mut filters: Vec<String> = self.routes.iter().map(|r| r.filter.clone()).collect();
        filters.sort();
        filters.dedup();
        for filter in &filters {
            self.subs.request(&self.client, filter);
        }
        tracing::info!(
            session_present,
            subscriptions = filters.len(),
            "connected to the MQTT broker"
        );
    }

    pub(super) fn on_disconnected(&mut self, reason: String) {
        self.acks.disconnected();
        self.last_error = Some(reason);
        self.facts_changed = true;
    }

    /// Hand an incoming message to its device, or hold it until its device
    /// registers.
    fn route(&mut self, publish: Publish) {
        let ack = self.acks.arrive(publish.pkid, publish.qos);
        let message = Message { publish, ack };
        let Some(index) = route::find(&self.routes, &message.publish.topic) else {
            if self.started.elapsed() > CLAIM_GRACE {
                self.drop_unclaimed(message);
            } else {
                // Beyond UNCLAIMED_MAX the hub stops reading until the
                // devices register or the grace period ends.
                self.unclaimed.push_back(message);
            }
            return;
        };
        self.dispatch(index, message);
    }

    /// Decode and sort a message of the device of route `index`:
    /// acknowledge it when it leaves nothing to commit, else queue it for
    /// the device's session, or hold it when that queue is full (the hub
    /// then stops reading until there is room). Only this task sorts, so a
    /// device's messages are sorted in arrival order.
    fn dispatch(&mut self, index: usize, message: Message) {
        let route = &mut self.routes[index];
        let ack = message.ack;
        let Some(unit) = route.sort(&message) else {
            self.acks.ready(&ack);
            return;
        };
        let item = ToCommit { ack, unit };
        if !self.held.is_empty() {
            // Behind what is held already, to keep the arrival order.
            self.held.push_back((route.outlet.clone(), item));
            return;
        }
        match route.outlet.send(item) {
            Sent::Queued => {}
            Sent::Full(item) => self.held.push_back((route.outlet.clone(), item)),
            Sent::Closed(item) => self.acks.forget(&item.ack),
        }
    }

    /// Move held messages into their devices' queues while there is room.
    /// Returns the queue the oldest held message still waits for.
    pub(super) fn release_held(&mut self) -> Option<mpsc::Sender<ToCommit>> {
        while let Some((outlet, item)) = self.held.pop_front() {
            match outlet.send(item) {
                Sent::Queued => {}
                Sent::Full(item) => {
                    let tx = outlet.tx.clone();
                    self.held.push_front((outlet, item));
                    return Some(tx);
                }
                // Given up without holding up the PUBACKs after it.
                Sent::Closed(item) => self.acks.forget(&item.ack),
            }
        }
        None
    }

    /// Drop held messages that no device claimed within the grace period.
    pub(super) fn sweep_unclaimed(&mut self) {
        if self.started.elapsed() <= CLAIM_GRACE {
            return;
        }
        while let Some(m) = self.unclaimed.pop_front() {
            // A device may have registered since the message arrived.
            match route::find(&self.routes, &m.publish.topic) {
                Some(index) => self.dispatch(index, m),
                None => self.drop_unclaimed(m),
            }
        }
    }

    /// Acknowledge and drop a message no configured device subscribes to.
    fn drop_unclaimed(&mut self, m: Message) {
        let now = Instant::now();
        self.unclaimed_dropped += 1;
        if self
            .last_unclaimed_warning
            .is_none_or(|at| now.duration_since(at) > Duration::from_secs(60))
        {
            tracing::warn!(
                topic = %m.publish.topic,
                dropped = self.unclaimed_dropped,
                "no configured device subscribes to this topic (a subscription left from an older configuration?); messages dropped (counted since the last such warning)"
            );
            self.last_unclaimed_warning = Some(now);
            self.unclaimed_dropped = 0;
        }
        tracing::debug!(topic = %m.publish.topic, "unclaimed message dropped");
        // Written after this, in arrival order.
        self.acks.ready(&m.ack);
    }

    /// Write the PUBACKs that are ready, in one flush. Called between
    /// polls, once the client has handed out every packet of the last read
    /// (so a read's worth of PUBACKs goes out together). The client's
    /// network is a public part of its event loop; writing PUBACKs there
    /// is what the client does itself for automatic acks (rumqttc's own
    /// manual ack path costs a trip through its request queue and a socket
    /// write per PUBACK, which halved the rate). A failed write loses
    /// nothing: the connection is then broken, and the broker redelivers.
    /// `Ok(true)` when PUBACKs were written, `Err` when the connection
    /// broke.
    pub(super) async fn write_ready_acks(
        &mut self,
        eventloop: &mut EventLoop,
    ) -> Result<bool, String> {
        if !eventloop.state.events.is_empty() {
            return Ok(false);
        }
        let Some(network) = eventloop.network.as_mut() else {
            return Ok(false);
        };
        let pkids = self.acks.take_ready();
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

    /// The next request; `None` when every handle is gone. For `flow`,
    /// which waits for other things beside.
    pub(super) async fn next_request(&mut self) -> Option<HubRequest> {
        self.requests.recv().await
    }
}
