//! The `llrp` transport (spec/profiles.md "Transports"): a fixed UHF
//! reader (Impinj R700/Speedway, Zebra FX9600) controlled over LLRP on
//! TCP 5084. What the bytes mean is `codecs::llrp`; this module owns the
//! connection: the set-up sequence ([`setup`]), acking keepalives, tag
//! reports into the journal with their antenna's zone, and noticing a dead
//! reader.
//!
//! One [`session`] is one connection. It ends with an error when the
//! reader closes it, when a request goes unanswered, or when no KEEPALIVE
//! arrives for two intervals (a reader that froze or lost power keeps no
//! TCP connection honest); the runner ([`super::run_device`]) then marks
//! the device down and reconnects with backoff. Every connection runs the
//! whole set-up again, so a reader that rebooted (and forgot its ROSpec)
//! reads again without anyone restarting storegate.

mod conn;
mod setup;
mod tls;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use conn::{Conn, Incoming};
use setup::Settings;

use super::{CONNECT_TIMEOUT, DeviceError, DeviceSpec, Ingest, Source, deliver_until_stored};
use crate::codecs::llrp::{self, ReaderEvent, ReaderMessage, encode};
use crate::codecs::{Decoded, TagRead};
use crate::config::Transport;
use crate::event::{EventBody, Gpi, now_millis, ts_from_millis};
use crate::profiles::Codec;
use crate::shutdown::Shutdown;

/// Connect to the reader, set up the inventory and journal its reads until
/// shutdown (`Ok`) or until the connection is lost or dead (`Err`).
pub async fn session(
    spec: &DeviceSpec,
    ingest: &Ingest,
    shutdown: &mut Shutdown,
) -> Result<(), DeviceError> {
    let id = spec.id();
    let (Transport::Llrp(link), Codec::Llrp(params)) =
        (&spec.config.transport, &spec.profile.codec)
    else {
        return Err(DeviceError::Open {
            what: spec.config.transport.endpoint(),
            reason: format!(
                "the llrp transport needs a profile with codec llrp, not {}",
                spec.profile.codec.name()
            ),
        });
    };
    let settings = Settings::resolve(link, params);
    let zones = Zones::new(spec);

    let tls = match &link.tls {
        Some(t) => Some(tls::connector(t).map_err(|reason| DeviceError::Open {
            what: link.address.clone(),
            reason,
        })?),
        None => None,
    };
    let mut conn = tokio::select! {
        c = Conn::open(&link.address, tls.as_ref(), CONNECT_TIMEOUT) => c?,
        _ = shutdown.wait() => return Ok(()),
    };
    let set_up = tokio::select! {
        r = setup::run(&mut conn, &settings, id) => r?,
        _ = shutdown.wait() => return Ok(()),
    };
    if ingest.health().set_up(id, true, None) {
        tracing::info!(device = %id, address = %link.address, reader = %set_up, "LLRP reader up, inventory running");
    }

    let dead_after = settings.keepalive * 2;
    let mut keepalive_due = tokio::time::Instant::now() + dead_after;
    let result = loop {
        let incoming = tokio::select! {
            r = conn.next() => r,
            _ = tokio::time::sleep_until(keepalive_due) => Err(DeviceError::Timeout(format!(
                "no KEEPALIVE from the reader for {dead_after:?} (2 x keepalive_s)"
            ))),
            _ = shutdown.wait() => break Ok(()),
        };
        let mut batch = Batch::default();
        let mut next = incoming;
        // Take every message already buffered, so a burst of reports is
        // one commit rather than one per read.
        let outcome = loop {
            match next {
                Err(e) => break Err(e),
                Ok(incoming) => {
                    if matches!(incoming.message, Ok(ReaderMessage::Keepalive)) {
                        keepalive_due = tokio::time::Instant::now() + dead_after;
                    }
                    if let Err(e) = batch.take(id, incoming, &zones) {
                        break Err(e);
                    }
                }
            }
            if !conn.has_buffered_frame() {
                break Ok(());
            }
            next = conn.next().await;
        };
        if !batch.replies.is_empty()
            && let Err(e) = conn.send(&batch.replies).await
        {
            break Err(e);
        }
        // Counted on arrival: an antenna that reads is not quiet, whatever
        // the tag table later makes of the reads. Reads first, events
        // after: a read that came before a disconnect in the same burst
        // must not mark the antenna connected again.
        let board = ingest.health().antennas();
        for (zone, reads) in &batch.reads {
            for r in reads {
                if let Some(antenna) = r.antenna.and_then(|a| u16::try_from(a).ok()) {
                    board.record(id, antenna, zone, r.rssi_dbm, now_millis());
                }
            }
        }
        for (antenna, connected) in &batch.antennas {
            let zone = zones.zone(Some(u32::from(*antenna)));
            board.set_connected(id, *antenna, zone, *connected, now_millis());
        }
        for (source, items) in batch.deliveries(&zones) {
            if !deliver_until_stored(ingest, &source, items, shutdown).await {
                break;
            }
        }
        if shutdown.is_triggered() {
            break Ok(());
        }
        if let Err(e) = outcome {
            break Err(e);
        }
    };
    if result.is_ok() {
        conn.close(settings.plan.rospec_id).await;
    }
    result
}

/// Which zone a read of each antenna puts a tag in.
struct Zones {
    device: String,
    default: String,
    by_antenna: BTreeMap<u16, String>,
}

impl Zones {
    fn new(spec: &DeviceSpec) -> Zones {
        let by_antenna = match &spec.config.transport {
            Transport::Llrp(link) => link.zones.clone(),
            _ => BTreeMap::new(),
        };
        Zones {
            device: spec.id().to_string(),
            default: spec.source().zone,
            by_antenna,
        }
    }

    fn zone(&self, antenna: Option<u32>) -> &str {
        antenna
            .and_then(|a| u16::try_from(a).ok())
            .and_then(|a| self.by_antenna.get(&a))
            .unwrap_or(&self.default)
    }

    fn source(&self, zone: &str) -> Source {
        Source {
            device: self.device.clone(),
            zone: zone.to_string(),
        }
    }
}

/// What one burst of messages asks of us: reads per zone, quarantine,
/// and bytes to send back (keepalive acks).
#[derive(Default)]
struct Batch {
    reads: BTreeMap<String, Vec<TagRead>>,
    bad: Vec<Decoded>,
    replies: Vec<u8>,
    /// Antenna events: (port, connected).
    antennas: Vec<(u16, bool)>,
    /// Events to journal as they are (GPI changes).
    events: Vec<(DateTime<Utc>, EventBody)>,
}

/// What a reader message gave, besides replies.
enum Out {
    Reads(Vec<TagRead>),
    Bad(Decoded),
    Antenna {
        antenna: u16,
        connected: bool,
    },
    /// A GPI port changed, at the reader's time if it said.
    Gpi {
        port: u16,
        high: bool,
        at: DateTime<Utc>,
    },
}

impl Batch {
    /// Act on one message. An error ends the session (the reader closed
    /// the connection on its side).
    fn take(&mut self, id: &str, incoming: Incoming, zones: &Zones) -> Result<(), DeviceError> {
        handle_other(id, &mut self.replies, incoming, |out| match out {
            Out::Reads(reads) => {
                for read in reads {
                    self.reads
                        .entry(zones.zone(read.antenna).to_string())
                        .or_default()
                        .push(read);
                }
            }
            Out::Bad(bad) => self.bad.push(bad),
            Out::Antenna { antenna, connected } => self.antennas.push((antenna, connected)),
            Out::Gpi { port, high, at } => self.events.push((at, gpi(id, port, high, at))),
        })
    }

    fn deliveries(self, zones: &Zones) -> Vec<(Source, Vec<Decoded>)> {
        let mut out: Vec<(Source, Vec<Decoded>)> = self
            .reads
            .into_iter()
            .map(|(zone, reads)| (zones.source(&zone), vec![Decoded::TagReads(reads)]))
            .collect();
        if !self.events.is_empty() {
            out.push((
                zones.source(&zones.default),
                vec![Decoded::Events(self.events)],
            ));
        }
        if !self.bad.is_empty() {
            out.push((zones.source(&zones.default), self.bad));
        }
        out
    }
}

/// The `gpi` event of a GPIEvent of reader `id`.
fn gpi(id: &str, port: u16, high: bool, at: DateTime<Utc>) -> EventBody {
    EventBody::Gpi(Gpi {
        reader: id.to_string(),
        port,
        state: if high { "high" } else { "low" }.to_string(),
        at,
    })
}

/// The common handling of a reader message outside a request's answer:
/// ack keepalives (into `replies`), hand reports to `sink` as reads,
/// undecodable messages as quarantine and antenna events; log events. Used by the set-up,
/// which discards the reads of a ROSpec it is about to replace.
fn handle_other(
    id: &str,
    replies: &mut Vec<u8>,
    incoming: Incoming,
    mut sink: impl FnMut(Out),
) -> Result<(), DeviceError> {
    let message = match incoming.message {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(device = %id, message_type = incoming.frame.message_type, error = %e, "undecodable LLRP message quarantined");
            sink(Out::Bad(Decoded::Bad {
                reason: format!("LLRP message type {}: {e}", incoming.frame.message_type),
                raw: incoming.frame.bytes,
            }));
            return Ok(());
        }
    };
    match message {
        ReaderMessage::Keepalive => {
            replies.extend(encode::keepalive_ack(incoming.frame.message_id));
        }
        ReaderMessage::Report(tags) => sink(Out::Reads(llrp::tag_reads(&tags, now_millis()))),
        ReaderMessage::Events {
            events,
            timestamp_us,
        } => {
            let at = timestamp_us
                .and_then(|us| i64::try_from(us / 1000).ok())
                .map(ts_from_millis)
                .unwrap_or_else(now_millis);
            for event in events {
                match event {
                    ReaderEvent::ConnectionClose => {
                        return Err(DeviceError::Lost(
                            "the reader announced it is closing the connection".into(),
                        ));
                    }
                    ReaderEvent::Antenna { antenna, connected } => {
                        if connected {
                            tracing::info!(device = %id, antenna, "reader reports antenna connected");
                        } else {
                            tracing::warn!(device = %id, antenna, "reader reports antenna disconnected");
                        }
                        sink(Out::Antenna { antenna, connected });
                    }
                    ReaderEvent::ReaderException { message } => {
                        tracing::warn!(device = %id, message = %message, "reader exception");
                    }
                    ReaderEvent::Gpi { port, high } => {
                        tracing::info!(device = %id, port, high, "reader GPI changed");
                        sink(Out::Gpi { port, high, at });
                    }
                    other => tracing::debug!(device = %id, event = ?other, "reader event"),
                }
            }
        }
        ReaderMessage::Response {
            message_type,
            status,
        } if !status.is_success() => {
            tracing::warn!(device = %id, message_type, %status, "reader reports an error");
        }
        other => tracing::debug!(device = %id, message = ?other, "LLRP message ignored"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codecs::llrp::frame::Frame;

    /// llrpkit's emulator cannot raise a GPI, so the handler is tested on
    /// the decoded READER_EVENT_NOTIFICATION the codec tests build.
    #[test]
    fn a_gpi_event_becomes_a_journaled_gpi_event_at_the_readers_time() {
        let zones = Zones {
            device: "dock".into(),
            default: "backroom".into(),
            by_antenna: BTreeMap::new(),
        };
        let incoming = |high: bool| Incoming {
            frame: Frame {
                version: 1,
                message_type: 63,
                message_id: 7,
                bytes: Vec::new(),
            },
            message: Ok(ReaderMessage::Events {
                timestamp_us: Some(1_764_576_000_123_456),
                events: vec![ReaderEvent::Gpi { port: 2, high }],
            }),
        };
        let mut batch = Batch::default();
        batch.take("dock", incoming(true), &zones).unwrap();
        batch.take("dock", incoming(false), &zones).unwrap();
        let deliveries = batch.deliveries(&zones);
        let at = ts_from_millis(1_764_576_000_123);
        match deliveries.as_slice() {
            [(source, items)] => {
                assert_eq!(
                    (source.device.as_str(), source.zone.as_str()),
                    ("dock", "backroom")
                );
                let [Decoded::Events(events)] = items.as_slice() else {
                    panic!("{items:?}");
                };
                let states: Vec<_> = events
                    .iter()
                    .map(|(ts, body)| match body {
                        EventBody::Gpi(g) => {
                            assert_eq!((g.reader.as_str(), g.port, g.at, *ts), ("dock", 2, at, at));
                            g.state.clone()
                        }
                        other => panic!("{other:?}"),
                    })
                    .collect();
                assert_eq!(states, ["high", "low"]);
                for (_, body) in events {
                    body.check_bounds().unwrap();
                }
            }
            other => panic!("{}", other.len()),
        }
    }
}
