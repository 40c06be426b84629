//! The `serial` transport (spec/profiles.md "Transports"): a device on a
//! serial line, such as a USB UHF RFID reader (codec `m100`) or a tap on a
//! POS receipt printer (codec `lines`).
//!
//! One [`session`] is one open port: it reads until the port goes away
//! (a USB reader unplugged gives an I/O error or end of file) and then
//! returns [`DeviceError::Lost`]; the runner ([`super::run_device`]) marks
//! the device down and reopens the port with backoff, which is how an
//! unplug and replug is survived. Every read is decoded and delivered
//! before the next read, so the kernel's buffer holds the device's bytes
//! while the database is busy or refusing.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Interval, MissedTickBehavior};
use tokio_serial::{DataBits, SerialPortBuilderExt, SerialStream, StopBits};

use super::decoder::Decoder;
use super::{DeviceError, DeviceSpec, Ingest, deliver_until_stored};
use crate::codecs::m100::{MULTI_POLL, STOP};
use crate::config::{Parity, SerialLine, Transport};
use crate::event::now_millis;
use crate::profiles::Codec;
use crate::shutdown::Shutdown;

/// Serial speed when neither the device config nor the profile gives one.
pub(super) const DEFAULT_BAUD: u32 = 9600;
/// Bytes asked for per read. A read returns whatever has arrived, so this
/// only bounds how much one delivery carries.
const READ_BUF: usize = 4096;
/// How long the stop command may take on shutdown. A device that does not
/// take it must not hold up the agent's exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(1);

/// An M100-class RFID module must be told to poll, and told again every
/// `repoll` because it stops after 65535 rounds; other codecs only listen.
struct Poller(Option<Interval>);

impl Poller {
    /// Resolves when the module is due another multi-poll command; never
    /// for codecs that do not poll. The first tick is immediate, which
    /// sends the command right after opening.
    async fn due(&mut self) {
        match &mut self.0 {
            Some(repoll) => {
                repoll.tick().await;
            }
            None => std::future::pending().await,
        }
    }
}

/// Open the device's port and read it until shutdown (`Ok`) or until the
/// port is lost (`Err`, and the runner reopens it with backoff).
pub async fn session(
    spec: &DeviceSpec,
    ingest: &Ingest,
    shutdown: &mut Shutdown,
) -> Result<(), DeviceError> {
    let id = spec.id();
    let Transport::Serial(line) = &spec.config.transport else {
        return Err(DeviceError::Open {
            what: spec.config.transport.endpoint(),
            reason: "not a serial device".into(),
        });
    };
    // The codec's state lives as long as this port.
    let mut decoder = Decoder::new(spec, ingest.member_key())?;
    let mut poller = Poller(match &spec.profile.codec {
        Codec::M100(params) => {
            // Validated at load time to be at least 1; max(1) keeps a zero
            // from a hand-built profile from panicking the interval.
            let mut repoll = tokio::time::interval(Duration::from_secs(params.repoll_s.max(1)));
            repoll.set_missed_tick_behavior(MissedTickBehavior::Delay);
            Some(repoll)
        }
        _ => None,
    });
    let mut port = open(line, spec.profile.default_baud)?;
    if ingest.health().set_up(id, true, None) {
        tracing::info!(device = %id, port = %line.port.display(), "device connected");
    }

    let source = spec.source();
    let mut buf = vec![0u8; READ_BUF];
    let result = loop {
        tokio::select! {
            read = port.read(&mut buf) => {
                let n = match read {
                    Ok(0) => break Err(DeviceError::Lost("end of file on the serial port".into())),
                    Ok(n) => n,
                    Err(e) => break Err(DeviceError::Lost(format!("read: {e}"))),
                };
                let items = decoder.decode(buf.get(..n).unwrap_or_default(), None, now_millis());
                if !items.is_empty() && !deliver_until_stored(ingest, &source, items, shutdown).await {
                    break Ok(());
                }
            }
            _ = poller.due() => {
                if let Err(e) = port.write_all(&MULTI_POLL).await {
                    break Err(DeviceError::Lost(format!("write poll command: {e}")));
                }
            }
            _ = shutdown.wait() => break Ok(()),
        }
    };

    if result.is_ok() && poller.0.is_some() {
        // Leave the module quiet rather than polling (and transmitting)
        // while nobody listens. Best effort: we are leaving either way.
        match tokio::time::timeout(STOP_TIMEOUT, port.write_all(&STOP)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(device = %id, error = %e, "cannot send stop command"),
            Err(_) => tracing::debug!(device = %id, "stop command timed out"),
        }
    }
    // The decoder lives only as long as this port, so what it holds would
    // be lost: a receipt without its end is quarantined whole (never
    // half-applied) and an unterminated last line is read.
    let rest = decoder.finish(now_millis());
    if !rest.is_empty() {
        // On shutdown this is one attempt; holding the agent's exit for a
        // full disk is not an option.
        deliver_until_stored(ingest, &source, rest, shutdown).await;
    }
    result
}

/// Open `line` for async I/O with its configured settings.
/// Open a serial line as configured (shared with Modbus RTU).
pub(super) fn open(
    line: &SerialLine,
    profile_baud: Option<u32>,
) -> Result<SerialStream, DeviceError> {
    let what = line.port.display().to_string();
    let fail = |reason: String| DeviceError::Open {
        what: what.clone(),
        reason,
    };
    let data_bits = match line.data_bits {
        5 => DataBits::Five,
        6 => DataBits::Six,
        7 => DataBits::Seven,
        8 => DataBits::Eight,
        n => return Err(fail(format!("unsupported data_bits {n}"))),
    };
    let stop_bits = match line.stop_bits {
        1 => StopBits::One,
        2 => StopBits::Two,
        n => return Err(fail(format!("unsupported stop_bits {n}"))),
    };
    let parity = match line.parity {
        Parity::None => tokio_serial::Parity::None,
        Parity::Even => tokio_serial::Parity::Even,
        Parity::Odd => tokio_serial::Parity::Odd,
    };
    let baud = line.baud.or(profile_baud).unwrap_or(DEFAULT_BAUD);
    tokio_serial::new(what.as_str(), baud)
        .data_bits(data_bits)
        .parity(parity)
        .stop_bits(stop_bits)
        .open_native_async()
        .map_err(|e| fail(e.to_string()))
}
