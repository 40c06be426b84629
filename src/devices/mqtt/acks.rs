//! The arrival order of the broker connection and its pending PUBACKs.
//!
//! PUBACKs must leave in the order the PUBLISHes arrived on the connection
//! (MQTT 3.1.1 section 4.6; rumqttd drops a client that acks out of
//! order), across all devices. Each QoS 1 message takes the next arrival
//! number; its slot gets the packet id once the message is handled
//! (stored, or nothing to store), and the hub writes the PUBACKs from the
//! front while the front is ready. QoS 0 has no PUBACK and takes no slot.
//! A PUBACK means something on its own connection only: a new connection
//! starts a new order, and what was pending on the old one is forgotten
//! (the broker redelivers it).
//!
//! Owned by the hub's task alone; nothing here is shared.

use std::collections::BTreeMap;

use rumqttc::QoS;

/// The place of a QoS 0 message: one no slot has.
const NO_SLOT: u64 = u64::MAX;

/// What a message's PUBACK needs once its input is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Ack {
    pkid: u16,
    /// The connection it came on.
    generation: u64,
    /// Its place in the arrival order on that connection.
    arrival: u64,
}

/// The arrival order of the current connection.
#[derive(Debug, Default)]
pub(super) struct Arrivals {
    /// Between a CONNACK and the next connection error.
    connected: bool,
    /// Counts CONNACKs: which connection is the current one.
    generation: u64,
    /// The next arrival number.
    next: u64,
    /// Arrival -> the packet id once its PUBACK may go.
    pending: BTreeMap<u64, Option<u16>>,
    /// PUBACKs handed to the client's request queue (to wake its event
    /// loop) and not yet written. The hub writes the PUBACKs after them
    /// only once they are out, so that the order holds.
    queued: usize,
}

impl Arrivals {
    /// A new connection (CONNACK): its generation. PUBACKs of the old
    /// connection cannot be sent any more, not even those still in the
    /// client's request queue.
    pub(super) fn connected(&mut self) -> u64 {
        self.connected = true;
        self.generation += 1;
        self.next = 0;
        self.pending.clear();
        self.queued = 0;
        self.generation
    }

    /// The connection broke: nothing is written until the next one.
    pub(super) fn disconnected(&mut self) {
        self.connected = false;
    }

    pub(super) fn is_connected(&self) -> bool {
        self.connected
    }

    /// Connections so far; the current one if connected.
    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    /// A PUBLISH arrived: its place in the order (QoS 1 and 2 take a
    /// slot, QoS 0 none).
    pub(super) fn arrive(&mut self, pkid: u16, qos: QoS) -> Ack {
        let arrival = if qos == QoS::AtMostOnce {
            NO_SLOT
        } else {
            let arrival = self.next;
            self.next += 1;
            self.pending.insert(arrival, None);
            arrival
        };
        Ack {
            pkid,
            generation: self.generation,
            arrival,
        }
    }

    /// A message is handled: its PUBACK may go once those before it have.
    /// Ignored when it came on an older connection (a PUBACK here would
    /// refer to whatever the broker sent under that packet id).
    pub(super) fn ready(&mut self, ack: &Ack) {
        if !self.current(ack) {
            return;
        }
        if let Some(slot) = self.pending.get_mut(&ack.arrival) {
            *slot = Some(ack.pkid);
        }
    }

    /// Give up a message's slot without a PUBACK (the message stays with
    /// the broker) so that it holds up nobody behind it.
    pub(super) fn forget(&mut self, ack: &Ack) {
        if self.current(ack) {
            self.pending.remove(&ack.arrival);
        }
    }

    fn current(&self, ack: &Ack) -> bool {
        self.connected && self.generation == ack.generation
    }

    /// The packet ids at the front of the order that are ready, removed;
    /// none while queued PUBACKs are still to be written before them.
    pub(super) fn take_ready(&mut self) -> Vec<u16> {
        let mut out = Vec::new();
        if !self.connected || self.queued > 0 {
            return out;
        }
        while let Some(entry) = self.pending.first_entry() {
            let Some(pkid) = *entry.get() else { break };
            entry.remove();
            out.push(pkid);
        }
        out
    }

    /// The front's packet id if it is ready and nothing is queued: for a
    /// PUBACK through the client's request queue. Call [`Arrivals::queued`]
    /// once it is queued.
    pub(super) fn ready_front(&self) -> Option<u16> {
        if !self.connected || self.queued > 0 {
            return None;
        }
        self.pending.first_key_value().and_then(|(_, pkid)| *pkid)
    }

    /// The front's PUBACK went into the client's request queue.
    pub(super) fn queued(&mut self) {
        if self.ready_front().is_some() {
            self.pending.pop_first();
            self.queued += 1;
        }
    }

    /// PUBACKs in the client's request queue, not written yet.
    pub(super) fn any_queued(&self) -> bool {
        self.queued > 0
    }

    /// The client wrote a queued PUBACK.
    pub(super) fn queued_written(&mut self) {
        self.queued = self.queued.saturating_sub(1);
    }

    /// Messages of the current connection whose PUBACK is not written.
    pub(super) fn awaiting(&self) -> usize {
        self.pending.len() + self.queued
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connected() -> Arrivals {
        let mut a = Arrivals::default();
        a.connected();
        a
    }

    #[test]
    fn pubacks_leave_in_arrival_order_whatever_order_they_are_stored_in() {
        let mut a = connected();
        let first = a.arrive(7, QoS::AtLeastOnce);
        let second = a.arrive(3, QoS::AtLeastOnce);
        let third = a.arrive(9, QoS::AtLeastOnce);
        assert_eq!(a.awaiting(), 3);
        // Stored out of order (two devices): nothing may go before `first`.
        a.ready(&third);
        a.ready(&second);
        assert_eq!(a.take_ready(), Vec::<u16>::new());
        assert_eq!(a.ready_front(), None);
        a.ready(&first);
        assert_eq!(a.take_ready(), vec![7, 3, 9]);
        assert_eq!(a.awaiting(), 0);
        // Nothing twice.
        a.ready(&first);
        assert_eq!(a.take_ready(), Vec::<u16>::new());
    }

    #[test]
    fn the_front_stops_at_the_first_message_not_handled() {
        let mut a = connected();
        let first = a.arrive(1, QoS::AtLeastOnce);
        let _second = a.arrive(2, QoS::AtLeastOnce);
        let third = a.arrive(3, QoS::AtLeastOnce);
        a.ready(&first);
        a.ready(&third);
        assert_eq!(a.take_ready(), vec![1]);
        assert_eq!(a.awaiting(), 2);
    }

    #[test]
    fn qos0_takes_no_slot() {
        let mut a = connected();
        let q0 = a.arrive(0, QoS::AtMostOnce);
        assert_eq!(a.awaiting(), 0);
        let q1 = a.arrive(5, QoS::AtLeastOnce);
        // Handling the QoS 0 message writes nothing and holds up nothing.
        a.ready(&q0);
        assert_eq!(a.take_ready(), Vec::<u16>::new());
        a.ready(&q1);
        assert_eq!(a.take_ready(), vec![5]);
    }

    #[test]
    fn a_reconnect_forgets_the_old_connection() {
        let mut a = connected();
        let old = a.arrive(1, QoS::AtLeastOnce);
        a.disconnected();
        // Nothing is written while down.
        a.ready(&old);
        assert_eq!(a.take_ready(), Vec::<u16>::new());
        assert_eq!(a.connected(), 2);
        assert_eq!(a.awaiting(), 0);
        // A message of the old connection stored late is not acknowledged
        // on the new one, even though its arrival number is taken again.
        let new = a.arrive(1, QoS::AtLeastOnce);
        a.ready(&old);
        assert_eq!(a.take_ready(), Vec::<u16>::new());
        a.ready(&new);
        assert_eq!(a.take_ready(), vec![1]);
    }

    #[test]
    fn a_queued_puback_goes_first() {
        let mut a = connected();
        let first = a.arrive(1, QoS::AtLeastOnce);
        let second = a.arrive(2, QoS::AtLeastOnce);
        a.ready(&first);
        assert_eq!(a.ready_front(), Some(1));
        a.queued();
        assert!(a.any_queued());
        assert_eq!(a.awaiting(), 2);
        // The rest waits until the queued one is written.
        a.ready(&second);
        assert_eq!(a.take_ready(), Vec::<u16>::new());
        assert_eq!(a.ready_front(), None);
        a.queued_written();
        assert_eq!(a.take_ready(), vec![2]);
        assert_eq!(a.awaiting(), 0);
        // A reconnect drops what was queued on the old connection.
        let third = a.arrive(3, QoS::AtLeastOnce);
        a.ready(&third);
        a.queued();
        a.connected();
        assert!(!a.any_queued());
        assert_eq!(a.awaiting(), 0);
    }

    #[test]
    fn a_forgotten_slot_holds_up_nobody() {
        let mut a = connected();
        let first = a.arrive(1, QoS::AtLeastOnce);
        let second = a.arrive(2, QoS::AtLeastOnce);
        a.ready(&second);
        a.forget(&first);
        assert_eq!(a.take_ready(), vec![2]);
    }
}
