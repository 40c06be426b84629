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

pub(super) struct Route {
    pub(super) device: String,
    pub(super) filter: String,
    pub(super) reader: Reader,
    pub(super) source: Source,
    pub(super) ingest: Ingest,
    pub(super) tx: mpsc::Sender<ToCommit>,
    pub(super) rx: Inbox,
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
            device: device.to_string(),
            filter: reader.filter.clone(),
            reader,
            source,
            ingest,
            tx,
            rx: Arc::new(tokio::sync::Mutex::new(rx)),
        }
    }

    /// Decode and sort a message: `None` when it leaves nothing to commit.
    pub(super) fn sort(&self, message: &Message) -> Option<Unit> {
        let items = self.reader.decode(
            &message.publish.topic,
            &message.publish.payload,
            crate::event::now_millis(),
        );
        self.ingest.sort(&self.source, items)
    }
}

/// The first route whose filter matches `topic`.
pub(super) fn find(routes: &[Arc<Route>], topic: &str) -> Option<Arc<Route>> {
    routes
        .iter()
        .find(|r| rumqttc::matches(topic, &r.filter))
        .cloned()
}
