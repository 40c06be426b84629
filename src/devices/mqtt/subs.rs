//! The hub's subscriptions on the current connection: which SUBSCRIBE is
//! which packet id, and what the broker answered (SUBACK).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, QoS, SubAck, SubscribeReasonCode};

/// How long a subscription may wait for its SUBACK before it is asked
/// for again.
pub(super) const SUBACK_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a subscription stands on the current connection.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum SubState {
    /// SUBSCRIBE handed to the client; no SUBACK yet.
    Requested(Instant),
    Confirmed,
    /// The broker answered with a failure code (e.g. an ACL refusal).
    Refused,
}

#[derive(Default)]
pub(super) struct Subscriptions {
    /// Filters of SUBSCRIBE requests handed to the client and not yet
    /// written, in request order (the client writes requests in order and
    /// reports each written SUBSCRIBE with its packet id). Only the hub's
    /// task subscribes, so this is the order of the client's queue.
    queue: VecDeque<String>,
    /// Packet id of a written SUBSCRIBE -> its filter, until the SUBACK.
    written: HashMap<u16, String>,
    /// Filter -> its subscription on the current connection.
    states: HashMap<String, SubState>,
}

impl Subscriptions {
    /// Where each subscription stands, for the sessions.
    pub(super) fn states(&self) -> &HashMap<String, SubState> {
        &self.states
    }

    pub(super) fn knows(&self, filter: &str) -> bool {
        self.states.contains_key(filter)
    }

    /// A new connection: packet ids and SUBACKs of the old one mean
    /// nothing now. A SUBSCRIBE still queued from before the reconnect
    /// may take the place of a new one in `queue`; both are for our
    /// filters and normally both succeed, so that mix-up is harmless.
    pub(super) fn reset(&mut self) {
        self.queue.clear();
        self.written.clear();
        self.states.clear();
    }

    /// Subscribe unless that was asked for on this connection and its
    /// SUBACK is not overdue (or the broker refused it). `true` when the
    /// states changed.
    pub(super) fn ask(&mut self, client: &AsyncClient, filter: &str) -> bool {
        match self.states.get(filter) {
            Some(SubState::Confirmed | SubState::Refused) => false,
            Some(SubState::Requested(at)) if at.elapsed() < SUBACK_TIMEOUT => false,
            _ => self.request(client, filter),
        }
    }

    /// Hand a SUBSCRIBE to the client. `true` when it took it.
    pub(super) fn request(&mut self, client: &AsyncClient, filter: &str) -> bool {
        match client.try_subscribe(filter, QoS::AtLeastOnce) {
            Ok(()) => {
                self.queue.push_back(filter.to_string());
                self.states
                    .insert(filter.to_string(), SubState::Requested(Instant::now()));
                true
            }
            // The request queue is full; the waiting session asks again.
            Err(e) => {
                tracing::debug!(filter, error = %e, "cannot subscribe yet");
                false
            }
        }
    }

    /// Forget a refusal, so that the next session asks again (the
    /// broker's ACL may have been fixed). `true` when there was one.
    pub(super) fn forget_refusal(&mut self, filter: &str) -> bool {
        if self.states.get(filter) == Some(&SubState::Refused) {
            self.states.remove(filter);
            return true;
        }
        false
    }

    /// The client wrote the oldest SUBSCRIBE asked for, as `pkid`.
    pub(super) fn written(&mut self, pkid: u16) {
        if let Some(filter) = self.queue.pop_front() {
            self.written.insert(pkid, filter);
        }
    }

    /// The broker answered a SUBSCRIBE. `true` when the states changed.
    pub(super) fn suback(&mut self, ack: &SubAck) -> bool {
        let Some(filter) = self.written.remove(&ack.pkid) else {
            return false;
        };
        let state = match ack.return_codes.first() {
            Some(SubscribeReasonCode::Success(_)) => SubState::Confirmed,
            _ => {
                tracing::error!(filter = %filter, "the MQTT broker refused the subscription");
                SubState::Refused
            }
        };
        self.states.insert(filter, state);
        true
    }
}

#[cfg(test)]
mod tests {
    use rumqttc::MqttOptions;

    use super::*;

    fn client() -> (AsyncClient, rumqttc::EventLoop) {
        AsyncClient::new(MqttOptions::new("test", "localhost", 1883), 10)
    }

    fn suback(pkid: u16, ok: bool) -> SubAck {
        let code = if ok {
            SubscribeReasonCode::Success(QoS::AtLeastOnce)
        } else {
            SubscribeReasonCode::Failure
        };
        SubAck::new(pkid, vec![code])
    }

    #[test]
    fn subacks_are_matched_to_their_filters_in_request_order() {
        let (client, _eventloop) = client();
        let mut subs = Subscriptions::default();
        assert!(subs.request(&client, "a/#"));
        assert!(subs.request(&client, "b/+"));
        // Asked for already, its SUBACK not overdue: not asked again.
        assert!(!subs.ask(&client, "a/#"));
        subs.written(7);
        subs.written(8);
        assert!(subs.suback(&suback(8, false)));
        assert!(subs.suback(&suback(7, true)));
        // A SUBACK nobody waits for changes nothing.
        assert!(!subs.suback(&suback(9, true)));
        assert_eq!(subs.states().get("a/#"), Some(&SubState::Confirmed));
        assert_eq!(subs.states().get("b/+"), Some(&SubState::Refused));
        // A refusal stands until it is forgotten; then it is asked again.
        assert!(!subs.ask(&client, "b/+"));
        assert!(subs.forget_refusal("b/+"));
        assert!(!subs.forget_refusal("b/+"));
        assert!(subs.ask(&client, "b/+"));
        // A new connection forgets everything.
        subs.reset();
        assert!(!subs.knows("a/#"));
        subs.written(1);
        assert!(!subs.suback(&suback(1, true)));
    }
}
