//! A device's subscription inside the hub: how its messages are decoded
//! and sorted (in the hub's task, in arrival order), and the queue of
//! those its session must commit.

use std::sync::Arc;

use rumqttc::Publish;
use tokio::sync::mpsc;

use super::acks::Ack;
use super::reader::Reader;
use crate::devices::Source;
use crate::devices::ingest::{Ingest, Unit};

/// One message from the broker on its way to a device.
pub(super) struct Message {
    pub(super) publish: Publish,
    /// Its place in the arrival order of the connection it came on.
    pub(super) ack: Ack,
}

/// A message whose decoded input waits for its commit.
pub(super) struct ToCommit {
    pub(super) ack: Ack,
    pub(super) unit: Unit,
}

/// A device's queue of input to commit. Held by the device's session
/// while it runs; input that arrives between two sessions waits in the
/// queue for the next one.
pub(super) type Inbox = Arc<tokio::sync::Mutex<mpsc::Receiver<ToCommit>>>;

/// A device's subscription: owned by the hub's task, which alone decodes
/// and sorts its messages.
pub(super) struct Route {
    pub(super) filter: String,
    reader: Reader,
    source: Source,
    ingest: Ingest,
    pub(super) outlet: Outlet,
    pub(super) rx: Inbox,
}

/// Where a device's sorted messages go: its queue.
#[derive(Clone)]
pub(super) struct Outlet {
    pub(super) device: Arc<str>,
    pub(super) tx: mpsc::Sender<ToCommit>,
}

impl Outlet {
    /// Queue `item` for the session, or hand it back when the queue is
    /// full. A queue without its receiver cannot happen (the route owns
    /// the receiver); should it, the message is to be left with the broker
    /// without holding up the PUBACKs after it: `Closed`.
    pub(super) fn send(&self, item: ToCommit) -> Sent {
        match self.tx.try_send(item) {
            Ok(()) => Sent::Queued,
            Err(mpsc::error::TrySendError::Full(item)) => Sent::Full(item),
            Err(mpsc::error::TrySendError::Closed(item)) => {
                tracing::error!(device = %self.device, "device queue closed; message left with the broker");
                Sent::Closed(item)
            }
        }
    }
}

/// What became of a message handed to an [`Outlet`].
pub(super) enum Sent {
    Queued,
    Full(ToCommit),
    Closed(ToCommit),
}

impl Route {
    /// A new route and its queue of `capacity` messages.
    pub(super) fn new(
        device: &str,
        reader: Reader,
        source: Source,
        ingest: Ingest,
        capacity: usize,
    ) -> Route {
        let (tx, rx) = mpsc::channel(capacity);
        Route {
            filter: reader.filter.clone(),
            reader,
            source,
            ingest,
            outlet: Outlet {
                device: device.into(),
                tx,
            },
            rx: Arc::new(tokio::sync::Mutex::new(rx)),
        }
    }

    /// Decode and sort a message: `None` when it leaves nothing to commit.
    pub(super) fn sort(&mut self, message: &Message) -> Option<Unit> {
        let items = self.reader.decode(
            &message.publish.topic,
            &message.publish.payload,
            crate::event::now_millis(),
        );
        self.ingest.sort(&self.source, items)
    }
}

/// The first route whose filter matches `topic`.
pub(super) fn find(routes: &[Route], topic: &str) -> Option<usize> {
    routes
        .iter()
        .position(|r| rumqttc::matches(topic, &r.filter))
}

#[cfg(test)]
mod tests {
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
