//! The `modbus-tcp` and `modbus-rtu` transports (spec/profiles.md
//! "Transports"): smart shelves and sensors that are polled, not listened
//! to. What the registers mean is the `registers` codec's business
//! ([`RegistersParams`]); this module connects, polls every `poll_ms`,
//! and turns each successful poll into one delivery.
//!
//! One [`session`] is one connection. The device counts as up from its
//! first successful poll. A poll fails on a timeout, an I/O or framing
//! error, or a Modbus exception; after [`MAX_FAILED_POLLS`] failed polls
//! in a row the session ends with an error, and the runner
//! ([`super::run_device`]) marks the device down and reconnects with
//! backoff. A successful poll resets the count.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::time::MissedTickBehavior;
use tokio_modbus::client::{Context, Reader};
use tokio_modbus::{ExceptionCode, Slave};
use tokio_serial::{ClearBuffer, SerialPort};

use super::{CONNECT_TIMEOUT, DeviceError, DeviceSpec, Ingest, deliver_until_stored};
use crate::codecs::Decoded;
use crate::codecs::registers::{
    ChangeFilter, Emit, ReadRequest, RegistersParams, Sample, SampleKey, Table,
};
use crate::config::{Parity, SerialLine, Transport};
use crate::event::{EventBody, Reading, ShelfWeight};
use crate::profiles::Codec;
use crate::shutdown::Shutdown;

/// Failed polls in a row after which the device counts as down.
pub const MAX_FAILED_POLLS: u32 = 3;
/// Serial speed when neither the device config nor the profile gives one
/// (also the XY-MD02's factory setting).
/// Bounds of the time one read request may take to be answered: the poll
/// interval, but at least [`MIN_REPLY_TIMEOUT`] so a fast poll on a busy
/// gateway does not turn slow answers into failures (a slow poll only
/// delays the next tick), and at most [`MAX_REPLY_TIMEOUT`] so a device
/// that went silent is noticed within seconds even on a slow poll.
const MIN_REPLY_TIMEOUT: Duration = Duration::from_millis(250);
const MAX_REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// How a device is reached, from its transport config.
enum Link<'a> {
    Tcp { address: &'a str },
    Rtu { line: &'a SerialLine, baud: u32 },
}

/// Why one poll failed.
#[derive(Debug)]
enum Failure {
    /// The device answered with a Modbus exception. The connection itself
    /// is fine and is kept.
    Exception(String),
    /// No answer in time. A late answer may still arrive and be taken for
    /// the answer to the next request, so the connection is dropped.
    Timeout(String),
    /// I/O or framing error, or reconnecting failed: the connection is
    /// dropped and reopened at the next poll.
    Link(String),
}

impl Failure {
    fn message(&self) -> &str {
        match self {
            Failure::Exception(m) | Failure::Timeout(m) | Failure::Link(m) => m,
        }
    }

    /// Whether the connection can be used for the next poll.
    fn keeps_connection(&self) -> bool {
        matches!(self, Failure::Exception(_))
    }

    /// The error that ends the session after too many failed polls.
    fn into_error(self) -> DeviceError {
        let text = format!("{MAX_FAILED_POLLS} polls failed, last: {}", self.message());
        match self {
            Failure::Exception(_) => DeviceError::Protocol(text),
            Failure::Timeout(_) => DeviceError::Timeout(text),
            Failure::Link(_) => DeviceError::Lost(text),
        }
    }
}

/// Connect to the device and poll it until shutdown (`Ok`) or until
/// [`MAX_FAILED_POLLS`] polls in a row failed (`Err`).
///
/// The [`ChangeFilter`] lives as long as the session, so after a reconnect
/// every value is journaled once more: the journal then shows the state
/// the device came back with, even if it did not change by `min_change`.
pub async fn session(
    spec: &DeviceSpec,
    ingest: &Ingest,
    shutdown: &mut Shutdown,
) -> Result<(), DeviceError> {
    let id = spec.id();
    let endpoint = spec.config.transport.endpoint();
    let open_error = |reason: String| DeviceError::Open {
        what: endpoint.clone(),
        reason,
    };
    let (link, unit, poll_ms) = match &spec.config.transport {
        Transport::ModbusTcp {
            address,
            unit,
            poll_ms,
        } => (Link::Tcp { address }, *unit, *poll_ms),
        Transport::ModbusRtu {
            line,
            unit,
            poll_ms,
        } => {
            if *unit == 0 {
                // Unit 0 is broadcast on a serial line: devices act on it
                // but never answer, so every poll would time out.
                return Err(open_error(
                    "unit 0 is the RTU broadcast address, which no device answers; \
                     set the device's unit (1-247)"
                        .into(),
                ));
            }
            let baud = line
                .baud
                .or(spec.profile.default_baud)
                .unwrap_or(super::serial::DEFAULT_BAUD);
            (Link::Rtu { line, baud }, *unit, *poll_ms)
        }
        _ => return Err(open_error("not a Modbus device".into())),
    };
    let Codec::Registers(params) = &spec.profile.codec else {
        return Err(open_error(format!(
            "profile {} uses codec {}, which is not read over Modbus",
            spec.profile.name,
            spec.profile.codec.name()
        )));
    };
    let plan = params.read_plan();
    if plan.is_empty() {
        return Err(open_error(format!(
            "profile {} names no registers to read",
            spec.profile.name
        )));
    }
    let poll_every = Duration::from_millis(poll_ms.max(1));
    let reply_timeout = poll_every.clamp(MIN_REPLY_TIMEOUT, MAX_REPLY_TIMEOUT);

    let mut connection = tokio::select! {
        c = connect(&link, unit) => Some(c.map_err(open_error)?),
        _ = shutdown.wait() => return Ok(()),
    };
    tracing::debug!(device = %id, endpoint = %endpoint, "modbus connection open");

    let source = spec.source();
    let mut filter = ChangeFilter::from_params(params);
    let mut failed_polls = 0u32;
    let mut ticks = tokio::time::interval(poll_every);
    // A poll that overran (slow device, busy database) delays the next one
    // instead of causing a burst of polls to catch up.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.wait() => return Ok(()),
        }
        let polled = tokio::select! {
            r = poll(&mut connection, &link, unit, &plan, reply_timeout) => r,
            _ = shutdown.wait() => return Ok(()),
        };
        let reads = match polled {
            Ok(reads) => reads,
            Err(failure) => {
                failed_polls += 1;
                // Logged once per outage: later failures (and those of
                // the sessions the runner retries while the device stays
                // down) go to debug.
                let up = ingest.health().get(id).is_some_and(|h| h.up);
                if up && failed_polls == 1 {
                    tracing::warn!(device = %id, error = failure.message(), "modbus poll failed");
                } else {
                    tracing::debug!(device = %id, error = failure.message(), failed_polls, "modbus poll failed");
                }
                if !failure.keeps_connection() {
                    connection = None;
                }
                if failed_polls >= MAX_FAILED_POLLS {
                    return Err(failure.into_error());
                }
                continue;
            }
        };
        failed_polls = 0;
        if ingest.health().set_up(id, true, None) {
            tracing::info!(device = %id, endpoint = %endpoint, "device up");
        }

        let now = crate::event::now_millis();
        let item = match params.decode(&reads) {
            Ok(samples) => {
                let events = to_events(spec, params, &samples, &mut filter, ingest, now).await;
                if events.is_empty() {
                    // Nothing changed enough to journal, but the device did
                    // answer: count the poll as a good frame.
                    ingest.health().frames(id, 1, 0);
                    continue;
                }
                Decoded::Events(events)
            }
            Err(reason) => Decoded::Bad {
                reason,
                raw: raw_bytes(&reads),
            },
        };
        if !deliver_until_stored(ingest, &source, vec![item], shutdown).await {
            return Ok(());
        }
    }
}

/// Open a connection to the device, addressed to `unit`.
async fn connect(link: &Link<'_>, unit: u8) -> Result<Context, String> {
    match link {
        Link::Tcp { address } => {
            let addr = resolve(address).await?;
            match tokio::time::timeout(
                CONNECT_TIMEOUT,
                tokio_modbus::client::tcp::connect_slave(addr, Slave(unit)),
            )
            .await
            {
                Ok(Ok(context)) => Ok(context),
                Ok(Err(e)) => Err(format!("connect to {addr}: {e}")),
                Err(_) => Err(format!(
                    "connect to {addr}: no answer within {} s",
                    CONNECT_TIMEOUT.as_secs()
                )),
            }
        }
        Link::Rtu { line, baud } => {
            let port = super::serial::open(line, Some(*baud)).map_err(|e| e.to_string())?;
            // Bytes left on the line by an earlier connection (a late
            // answer) must not be read as the answer to our first request.
            // Best effort: a port that cannot be cleared still works.
            let _ = port.clear(ClearBuffer::All);
            Ok(tokio_modbus::client::rtu::attach_slave(port, Slave(unit)))
        }
    }
}

/// `host:port` (a name or an IP address) to the first address it resolves to.
async fn resolve(address: &str) -> Result<SocketAddr, String> {
    let mut addrs = tokio::net::lookup_host(address)
        .await
        .map_err(|e| format!("cannot resolve {address:?} (write host:port): {e}"))?;
    addrs
        .next()
        .ok_or_else(|| format!("{address:?} resolves to no address"))
}

/// One poll: every request of the plan, in order, each with its own
/// timeout. Reconnects first if an earlier failure dropped the connection.
/// Stops at the first failure: a poll is used whole or not at all.
async fn poll(
    connection: &mut Option<Context>,
    link: &Link<'_>,
    unit: u8,
    plan: &[ReadRequest],
    reply_timeout: Duration,
) -> Result<Vec<(ReadRequest, Vec<u16>)>, Failure> {
    let context = match connection {
        Some(c) => c,
        None => connection.insert(connect(link, unit).await.map_err(Failure::Link)?),
    };
    let mut reads = Vec::with_capacity(plan.len());
    for req in plan {
        let what = format!(
            "{} registers {}..{}",
            req.table.name(),
            req.start,
            u32::from(req.start) + u32::from(req.count)
        );
        let timeout = reply_timeout + wire_time(link, req.count);
        let answer = match req.table {
            Table::Holding => {
                tokio::time::timeout(
                    timeout,
                    context.read_holding_registers(req.start, req.count),
                )
                .await
            }
            Table::Input => {
                tokio::time::timeout(timeout, context.read_input_registers(req.start, req.count))
                    .await
            }
        };
        match answer {
            Ok(Ok(Ok(words))) => reads.push((*req, words)),
            Ok(Ok(Err(code))) => {
                return Err(Failure::Exception(format!(
                    "{what}: exception {}",
                    exception_text(code)
                )));
            }
            Ok(Err(e)) => return Err(Failure::Link(format!("{what}: {e}"))),
            Err(_) => {
                return Err(Failure::Timeout(format!(
                    "{what}: no answer within {} ms",
                    timeout.as_millis()
                )));
            }
        }
    }
    Ok(reads)
}

/// How long a request for `count` registers and its answer take to cross
/// a serial line, added to the reply timeout: at 1200 baud a full read of
/// 125 registers alone takes over two seconds. Nothing for TCP.
fn wire_time(link: &Link<'_>, count: u16) -> Duration {
    let Link::Rtu { line, baud } = link else {
        return Duration::ZERO;
    };
    // Request: unit, function, address, count, CRC = 8 bytes. Answer:
    // unit, function, byte count, 2 per register, CRC = 5 + 2n bytes.
    let bytes = 8 + 5 + 2 * u64::from(count);
    let parity_bit = u64::from(line.parity != Parity::None);
    let bits_per_byte = 1 + u64::from(line.data_bits) + parity_bit + u64::from(line.stop_bits);
    Duration::from_millis(bytes * bits_per_byte * 1000 / u64::from((*baud).max(1)) + 1)
}

/// An exception as people look it up: "illegal data address (0x02)".
fn exception_text(code: ExceptionCode) -> String {
    let number = u8::from(code);
    match code {
        ExceptionCode::Custom(_) => format!("code 0x{number:02X}"),
        known => format!("{} (0x{number:02X})", known.to_string().to_lowercase()),
    }
}

/// The registers of a poll as big-endian bytes, in read order, for the
/// quarantine.
fn raw_bytes(reads: &[(ReadRequest, Vec<u16>)]) -> Vec<u8> {
    reads
        .iter()
        .flat_map(|(_, words)| words.iter().flat_map(|w| w.to_be_bytes()))
        .collect()
}

/// The events for the samples of one poll that pass the change filter.
async fn to_events(
    spec: &DeviceSpec,
    params: &RegistersParams,
    samples: &[Sample],
    filter: &mut ChangeFilter,
    ingest: &Ingest,
    now: DateTime<Utc>,
) -> Vec<(DateTime<Utc>, EventBody)> {
    let instant = Instant::now();
    let changed: Vec<&Sample> = samples
        .iter()
        .filter(|s| filter.should_emit(&s.key, s.value, instant))
        .collect();
    if changed.is_empty() {
        return Vec::new();
    }
    let skus: Vec<String> = match params.emit {
        Emit::ShelfWeight => changed
            .iter()
            .filter_map(|s| slot_of(s).and_then(|slot| spec.config.slots.get(&slot)))
            .cloned()
            .collect(),
        Emit::Reading => Vec::new(),
    };
    let weights = unit_weights(spec.id(), ingest, skus).await;
    changed
        .into_iter()
        .map(|s| match (params.emit, slot_of(s)) {
            (Emit::ShelfWeight, Some(slot)) => {
                let sku = spec.config.slots.get(&slot).cloned();
                // Decoded values are finite; `as` saturates absurdly large
                // ones instead of panicking.
                let grams = s.value.round() as i64;
                let units_est = sku
                    .as_ref()
                    .and_then(|sku| weights.get(sku))
                    .map(|&unit_g| units(grams, unit_g));
                let weight = ShelfWeight {
                    slot,
                    sku,
                    grams,
                    units_est,
                };
                (now, EventBody::ShelfWeight(weight))
            }
            // Sensor values, and named values beside a shelf's slots.
            _ => (now, EventBody::Reading(reading(s))),
        })
        .collect()
}

/// A sample as a generic reading; shelf slots are named `slot{N}`.
fn reading(s: &Sample) -> Reading {
    let name = match &s.key {
        SampleKey::Named(name) => name.clone(),
        SampleKey::Slot(n) => format!("slot{n}"),
    };
    Reading {
        name,
        value: s.value,
        unit: s.unit.clone(),
    }
}

/// The shelf slot a sample is the weight of (named values are not slots).
fn slot_of(s: &Sample) -> Option<u32> {
    match s.key {
        SampleKey::Slot(n) => Some(u32::from(n)),
        SampleKey::Named(_) => None,
    }
}

/// Units on a slot: `round(grams / unit_g)`, never below zero (an empty
/// shelf with tare drift weighs a few grams less than nothing).
fn units(grams: i64, unit_g: i64) -> i64 {
    ((grams as f64 / unit_g as f64).round() as i64).max(0)
}

/// The catalog's unit weight of each SKU that has a usable one. Read
/// through the writer, the one connection the ingest has. A failed lookup
/// only costs the estimate: the weight itself is still journaled, and the
/// next emission tries again.
async fn unit_weights(device: &str, ingest: &Ingest, skus: Vec<String>) -> HashMap<String, i64> {
    if skus.is_empty() {
        return HashMap::new();
    }
    let looked_up = ingest
        .writer()
        .transact(move |w| {
            let mut weights = HashMap::new();
            for sku in skus {
                let (unit_weight, _) = crate::domain::catalog::weights_and_minimum(w.conn(), &sku)?;
                if let Some(g) = unit_weight.filter(|g| *g > 0) {
                    weights.insert(sku, g);
                }
            }
            Ok(weights)
        })
        .await;
    looked_up.unwrap_or_else(|e| {
        tracing::warn!(device, error = %e, "cannot look up unit weights; journaling weights without units");
        HashMap::new()
    })
}
