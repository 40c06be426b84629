//! A device session: registers the device's filter with the hub, waits
//! until the connection is up and the broker confirmed the subscription,
//! then commits what the hub queued for the device, in batches, and tells
//! the hub which messages are stored so that their PUBACKs may go
//! (invariant 1). It reads the connection's state from the hub's
//! published [`Facts`] and asks the hub for anything else by message.

use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::Hub;
use super::hub::{Facts, HubRequest, Registration};
use super::reader::Reader;
use super::route::ToCommit;
use super::subs::{SUBACK_TIMEOUT, SubState};
use crate::devices::ingest::Unit;
use crate::devices::{DeviceError, DeviceSpec, Ingest, Source, commit_until_stored};
use crate::shutdown::Shutdown;

/// Messages delivered to one device in one transaction at most.
pub(super) const MAX_BATCH: usize = 256;

/// What a session waits for before it counts its device as up.
enum Readiness {
    Down(String),
    Pending,
    /// Not asked for on this connection, or its SUBACK is overdue.
    Unasked,
    Ready(u64),
    Refused,
}

/// The session of one device, as [`Hub::session`] describes it.
pub(super) async fn run(
    hub: &Hub,
    spec: &DeviceSpec,
    ingest: &Ingest,
    shutdown: &mut Shutdown,
) -> Result<(), DeviceError> {
    let id = spec.id();
    let reader = Reader::new(spec, ingest.member_key())?;
    let filter = reader.filter.clone();
    let source = spec.source();
    let (reply, registered) = tokio::sync::oneshot::channel();
    hub.request(HubRequest::Register(Box::new(Registration {
        device: id.to_string(),
        reader,
        source: source.clone(),
        ingest: ingest.clone(),
        reply,
    })))
    .await?;
    let inbox = registered.await.map_err(|_| stopped())?;
    // The runner runs one session per device at a time; the lock only
    // makes that explicit.
    let mut inbox = inbox.lock().await;
    let mut facts = hub.facts.clone();

    let Some(generation) = wait_ready(
        hub, &filter, &mut facts, &mut inbox, &source, ingest, shutdown,
    )
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
            changed = facts.changed() => {
                if changed.is_err() {
                    return Err(stopped());
                }
                if let Some(reason) = lost_since(&facts.borrow_and_update(), generation) {
                    return Err(DeviceError::Lost(reason));
                }
            }
            first = inbox.recv() => {
                let Some(first) = first else {
                    return Err(stopped());
                };
                let batch = take_batch(first, &mut inbox);
                if !commit(hub, &source, batch, ingest, shutdown).await {
                    return Ok(());
                }
            }
        }
    }
}

fn stopped() -> DeviceError {
    DeviceError::Lost("the MQTT hub stopped".into())
}

/// Wait until the connection is up and the broker confirmed the device's
/// subscription: `Some(connection generation)`, or `None` on shutdown.
/// Messages already queued for the device are committed meanwhile: the
/// hub may be holding back reads until this queue has room, and the
/// SUBACK it waits for is one of those reads.
async fn wait_ready(
    hub: &Hub,
    filter: &str,
    facts: &mut watch::Receiver<Facts>,
    inbox: &mut mpsc::Receiver<ToCommit>,
    source: &Source,
    ingest: &Ingest,
    shutdown: &mut Shutdown,
) -> Result<Option<u64>, DeviceError> {
    let id = source.device.as_str();
    loop {
        let readiness = readiness(&facts.borrow_and_update(), filter);
        match readiness {
            Readiness::Ready(generation) => return Ok(Some(generation)),
            Readiness::Refused => {
                // Asked again by the next session, after the runner's
                // backoff: the broker's ACL may have been fixed meanwhile.
                hub.request(HubRequest::Forget(filter.to_string())).await?;
                return Err(DeviceError::Open {
                    what: filter.to_string(),
                    reason: "the broker refused the subscription (SUBACK failure; check its ACL)"
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
            Readiness::Unasked => {
                hub.request(HubRequest::Subscribe(filter.to_string()))
                    .await?
            }
            Readiness::Pending => {}
        }
        // Woken by connection and subscription changes; the tick is for
        // the SUBACK timeout and a subscription request that found the
        // client's request queue full.
        tokio::select! {
            _ = shutdown.wait() => return Ok(None),
            changed = facts.changed() => {
                if changed.is_err() {
                    return Err(stopped());
                }
            }
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            Some(first) = inbox.recv() => {
                let batch = take_batch(first, inbox);
                if !commit(hub, source, batch, ingest, shutdown).await {
                    return Ok(None);
                }
            }
        }
    }
}

/// Where the device's subscription stands.
fn readiness(facts: &Facts, filter: &str) -> Readiness {
    if !facts.connected {
        let reason = facts
            .last_error
            .clone()
            .unwrap_or_else(|| "connecting".to_string());
        return Readiness::Down(reason);
    }
    match facts.subs.get(filter) {
        Some(SubState::Confirmed) => Readiness::Ready(facts.generation),
        Some(SubState::Refused) => Readiness::Refused,
        Some(SubState::Requested(at)) if at.elapsed() < SUBACK_TIMEOUT => Readiness::Pending,
        _ => Readiness::Unasked,
    }
}

/// `Some(reason)` when the connection of `generation` is gone.
fn lost_since(facts: &Facts, generation: u64) -> Option<String> {
    if facts.connected && facts.generation == generation {
        return None;
    }
    Some(if facts.connected {
        "the MQTT connection was re-established".to_string()
    } else {
        facts
            .last_error
            .clone()
            .unwrap_or_else(|| "MQTT connection lost".to_string())
    })
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

/// Journal the input of a batch of messages in one transaction, then
/// release their PUBACKs. Returns false on shutdown while the database
/// refused the batch (nothing is acknowledged then; the broker keeps the
/// messages).
async fn commit(
    hub: &Hub,
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
    // kept our session it redelivers them (and the journal dedups), if it
    // lost the session this is their only chance.
    if !commit_until_stored(ingest, source, &unit, shutdown).await {
        return false;
    }
    // A hub that stopped has no connection to acknowledge on.
    let _ = hub.request(HubRequest::Stored(acks)).await;
    true
}
