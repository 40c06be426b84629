//! Flow control of the hub's broker connection (invariant 9): when a
//! device's queue is full, the event loop stops reading from the broker
//! instead of dropping a message or leaving it unacknowledged. The socket's
//! receive buffer fills, TCP closes its window, and the broker keeps the
//! backlog in its own queue; reading resumes as soon as the session has
//! made room, so a backlog drains by itself at the speed of the commits.
//!
//! While it holds back, the event loop keeps the connection alive: it
//! writes the PUBACKs that the sessions' commits make ready, and a PINGREQ
//! whenever it has written nothing for a while (a broker drops a client
//! it has heard nothing from for one and a half keep-alives).

use std::time::{Duration, Instant};

use rumqttc::{EventLoop, Packet};
use tokio::sync::mpsc;

use super::hub::{ACK_FLUSH_TIMEOUT, Owner};
use super::route::ToCommit;
use crate::shutdown::Shutdown;

/// How long the event loop waits between looks at a held back connection
/// (the grace period of unclaimed messages ends, the hub is dropped).
const HOLD_TICK: Duration = Duration::from_secs(1);
/// Written nothing for this long while holding back: send a PINGREQ. Far
/// below the broker's one and a half keep-alives, counting the time before
/// the hold in which the client may have written nothing either.
const HOLD_PING: Duration = Duration::from_secs(5);
/// An episode of flow control ends after this long without a pause.
const EPISODE_QUIET: Duration = Duration::from_secs(10);

/// Pauses of the event loop, logged once per episode: a warning at its
/// first pause, a summary with the count once it has been quiet.
#[derive(Default)]
pub(super) struct Episodes {
    started: Option<Instant>,
    last: Option<Instant>,
    pauses: u64,
    paused: Duration,
}

impl Episodes {
    fn paused(&mut self, why: &str) {
        if self.started.is_none() {
            tracing::warn!(
                reason = why,
                "reading from the MQTT broker paused until the agent catches up; the broker holds the backlog (flow control; further pauses are counted, not logged)"
            );
            self.started = Some(Instant::now());
        }
    }

    fn resumed(&mut self, paused: Duration) {
        self.pauses += 1;
        self.paused += paused;
        self.last = Some(Instant::now());
    }

    /// Log the summary of an episode that has been quiet long enough.
    pub(super) fn tick(&mut self) {
        let (Some(started), Some(last)) = (self.started, self.last) else {
            return;
        };
        if last.elapsed() < EPISODE_QUIET {
            return;
        }
        tracing::info!(
            pauses = self.pauses,
            paused_ms = self.paused.as_millis() as u64,
            lasted_ms = last.duration_since(started).as_millis() as u64,
            "MQTT flow control episode over: reading from the broker at full speed again"
        );
        *self = Episodes::default();
    }
}

/// Whether the event loop must hold back before its next poll: the hub
/// holds messages, nothing buffered by the client is left to hand out,
/// and no PUBACK waits in the client's request queue (which only a poll
/// writes, and the PUBACKs after it must follow it).
pub(super) fn must_hold(eventloop: &EventLoop, hub: &Owner) -> bool {
    hub.acks.is_connected()
        && hub.holding()
        && !hub.acks.any_queued()
        && eventloop.state.events.is_empty()
}

/// Hold back reads until the hub holds nothing any more (or the
/// connection broke, or shutdown). Meanwhile answer the sessions, write
/// the ready PUBACKs and keep the connection alive. `false` when every
/// handle of the hub is gone.
pub(super) async fn hold_back(
    eventloop: &mut EventLoop,
    hub: &mut Owner,
    shutdown: &mut Shutdown,
    episodes: &mut Episodes,
) -> bool {
    let started = Instant::now();
    let mut last_write = started;
    let mut waited = false;
    let mut open = true;
    loop {
        let waiting_for = hub.release_held();
        hub.sweep_unclaimed();
        let written = hub.write_ready_acks(eventloop).await;
        hub.publish();
        match written {
            Ok(true) => last_write = Instant::now(),
            Ok(false) => {}
            Err(reason) => {
                lost(eventloop, hub, reason);
                break;
            }
        }
        let why = match hold_reason(hub) {
            Some(why) => why,
            None => break,
        };
        if last_write.elapsed() >= HOLD_PING {
            if let Err(reason) = ping(eventloop).await {
                lost(eventloop, hub, reason);
                break;
            }
            last_write = Instant::now();
        }
        if !waited {
            episodes.paused(&why);
            waited = true;
        }
        tokio::select! {
            _ = room(waiting_for) => {}
            request = hub.next_request() => match request {
                // Stored messages, a device registered: look again.
                Some(request) => hub.handle(request, false),
                None => {
                    open = false;
                    break;
                }
            },
            _ = tokio::time::sleep(HOLD_TICK) => {}
            _ = shutdown.wait() => break,
        }
    }
    if waited {
        episodes.resumed(started.elapsed());
        // The PINGRESP to the client's own last PINGREQ may be behind the
        // messages still unread in the socket; the client would take it
        // for missing at its next keep-alive tick and drop a live
        // connection. The writes above were the liveness check meanwhile.
        eventloop.state.await_pingresp = false;
    }
    open
}

/// Why the hub holds back, for the log; `None` once it does not.
fn hold_reason(hub: &Owner) -> Option<String> {
    if !hub.acks.is_connected() || !hub.holding() {
        return None;
    }
    Some(match hub.held.front() {
        Some((outlet, _)) => format!(
            "device {} has {} messages waiting for their commit",
            outlet.device,
            outlet.tx.max_capacity()
        ),
        None => format!(
            "{} messages wait for devices that have not registered yet",
            hub.unclaimed.len()
        ),
    })
}

/// Resolves when `tx` has room (never when there is no queue to wait for).
async fn room(tx: Option<mpsc::Sender<ToCommit>>) {
    match tx {
        // The permit is dropped at once: the event loop is the only one
        // that sends into the queue while it holds back, so the room stays.
        Some(tx) => {
            let _ = tx.reserve().await;
        }
        None => std::future::pending().await,
    }
}

async fn ping(eventloop: &mut EventLoop) -> Result<(), String> {
    let Some(network) = eventloop.network.as_mut() else {
        return Ok(());
    };
    let written = async {
        network.write(Packet::PingReq).await?;
        network.flush().await
    };
    match tokio::time::timeout(ACK_FLUSH_TIMEOUT, written).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("cannot write to the MQTT broker: {e}")),
        Err(_) => Ok(()),
    }
}

/// The connection broke while the event loop held back: drop it so that
/// the next poll reconnects (the broker redelivers what was not
/// acknowledged), and tell the sessions.
fn lost(eventloop: &mut EventLoop, hub: &mut Owner, reason: String) {
    tracing::debug!(error = %reason, "MQTT connection lost while holding back reads");
    eventloop.clean();
    hub.on_disconnected(reason);
    hub.publish();
}
