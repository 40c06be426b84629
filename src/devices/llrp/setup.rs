//! The set-up sequence of every LLRP connection: wait for the reader's
//! connection event, learn its capabilities (for the power table), set
//! keepalive and event notifications, replace any old ROSpec with ours,
//! enable and start it. Reports that arrive meanwhile belong to a ROSpec
//! being replaced and are dropped; keepalives are acked; events are only
//! logged (an antenna's state is learnt again from its reads).

use std::fmt;
use std::time::Duration;

use super::conn::{Conn, Incoming};
use super::handle_other;
use crate::codecs::llrp::params::{LlrpParams, Vendor, power_index};
use crate::codecs::llrp::{Capabilities, InventoryPlan, ReaderEvent, ReaderMessage, encode, msg};
use crate::config::LlrpLink;
use crate::devices::DeviceError;

/// How long each set-up answer may take. Readers answer in milliseconds;
/// a busy R700 applying a ROSpec takes up to a second or two.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The profile's `[llrp]` values with the device's overrides applied.
#[derive(Debug, Clone)]
pub struct Settings {
    pub keepalive: Duration,
    pub vendor: Vendor,
    pub tx_power_dbm: Option<f64>,
    /// Complete except for the power index, which needs the reader's
    /// table.
    pub plan: InventoryPlan,
}

impl Settings {
    pub fn resolve(link: &LlrpLink, params: &LlrpParams) -> Settings {
        let keepalive_s = link.keepalive_s.unwrap_or(params.keepalive_s).max(1);
        Settings {
            keepalive: Duration::from_secs(keepalive_s),
            vendor: params.vendor,
            tx_power_dbm: link.tx_power_dbm.or(params.tx_power_dbm),
            plan: InventoryPlan {
                rospec_id: encode::ROSPEC_ID,
                antennas: link
                    .antennas
                    .clone()
                    .unwrap_or_else(|| params.antennas.clone()),
                power_index: None,
                session: link.session.or(params.session),
                tag_population: params.tag_population,
                mode_index: params.mode_index,
                impinj_search_mode: params.impinj_search_mode(),
                report_every_n_tags: params.report_every_n_tags.max(1),
            },
        }
    }
}

/// What the reader said about itself, for the log.
pub struct Reader(Capabilities);

impl fmt::Display for Reader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.0;
        write!(
            f,
            "vendor {} model {} firmware {} antennas {}",
            c.manufacturer.map_or("?".into(), |v| v.to_string()),
            c.model.map_or("?".into(), |v| v.to_string()),
            c.firmware.as_deref().unwrap_or("?"),
            c.max_antennas.map_or("?".into(), |v| v.to_string()),
        )
    }
}

/// Run the set-up sequence on a fresh connection.
pub async fn run(conn: &mut Conn, settings: &Settings, id: &str) -> Result<Reader, DeviceError> {
    await_connection_event(conn, id).await?;

    let mut other = |replies: &mut Vec<u8>, incoming: Incoming| {
        if let Err(e) = handle_other(id, replies, incoming, |_| {}) {
            tracing::debug!(device = %id, error = %e, "during LLRP set-up");
        }
    };
    let (status, message) = conn
        .request(
            "GET_READER_CAPABILITIES",
            msg::GET_READER_CAPABILITIES,
            encode::get_reader_capabilities,
            ANSWER_TIMEOUT,
            &mut other,
        )
        .await?;
    refused("GET_READER_CAPABILITIES", &status)?;
    let ReaderMessage::Capabilities { capabilities, .. } = message else {
        return Err(DeviceError::Protocol(
            "GET_READER_CAPABILITIES answered with an error message".into(),
        ));
    };
    let mut plan = settings.plan.clone();
    if let Some(dbm) = settings.tx_power_dbm {
        plan.power_index = power_index(&capabilities.power_table, dbm);
        if plan.power_index.is_none() {
            tracing::warn!(device = %id, dbm, "reader has no power table; using its default power");
        }
    }

    if settings.vendor == Vendor::Impinj && plan.impinj_search_mode.is_some() {
        let (status, _) = conn
            .request(
                "IMPINJ_ENABLE_EXTENSIONS",
                msg::CUSTOM_MESSAGE,
                encode::impinj_enable_extensions,
                ANSWER_TIMEOUT,
                &mut other,
            )
            .await?;
        refused("IMPINJ_ENABLE_EXTENSIONS", &status)?;
    }

    let keepalive_ms = u32::try_from(settings.keepalive.as_millis()).unwrap_or(u32::MAX);
    let (status, _) = conn
        .request(
            "SET_READER_CONFIG",
            msg::SET_READER_CONFIG,
            |mid| encode::set_reader_config(mid, keepalive_ms),
            ANSWER_TIMEOUT,
            &mut other,
        )
        .await?;
    refused("SET_READER_CONFIG", &status)?;

    // ROSpec 0 is "all": whatever an earlier client (or our previous
    // session) left. A reader without any answers with an error status
    // (llrpkit's emulator does), which is fine.
    let (status, _) = conn
        .request(
            "DELETE_ROSPEC",
            msg::DELETE_ROSPEC,
            |mid| encode::delete_rospec(mid, 0),
            ANSWER_TIMEOUT,
            &mut other,
        )
        .await?;
    if !status.is_success() {
        tracing::debug!(device = %id, %status, "DELETE_ROSPEC 0 refused (no ROSpec to delete)");
    }

    let (status, _) = conn
        .request(
            "ADD_ROSPEC",
            msg::ADD_ROSPEC,
            |mid| encode::add_rospec(mid, &plan),
            ANSWER_TIMEOUT,
            &mut other,
        )
        .await?;
    refused("ADD_ROSPEC", &status)?;
    let rospec_id = plan.rospec_id;
    for (what, request, build) in [
        (
            "ENABLE_ROSPEC",
            msg::ENABLE_ROSPEC,
            encode::enable_rospec as fn(u32, u32) -> Vec<u8>,
        ),
        ("START_ROSPEC", msg::START_ROSPEC, encode::start_rospec),
    ] {
        let (status, _) = conn
            .request(
                what,
                request,
                |mid| build(mid, rospec_id),
                ANSWER_TIMEOUT,
                &mut other,
            )
            .await?;
        refused(what, &status)?;
    }
    Ok(Reader(capabilities))
}

/// A refusal ends the session: the reader will not read as configured.
fn refused(what: &str, status: &crate::codecs::llrp::Status) -> Result<(), DeviceError> {
    if status.is_success() {
        Ok(())
    } else {
        Err(DeviceError::Protocol(format!(
            "reader refused {what}: {status}"
        )))
    }
}

/// The reader speaks first: a `ConnectionAttemptEvent` saying whether it
/// accepts us (another client may hold it; LLRP allows one).
async fn await_connection_event(conn: &mut Conn, id: &str) -> Result<(), DeviceError> {
    let deadline = tokio::time::Instant::now() + ANSWER_TIMEOUT;
    loop {
        let incoming = tokio::time::timeout_at(deadline, conn.next())
            .await
            .map_err(|_| {
                DeviceError::Timeout(format!(
                    "the reader sent no ConnectionAttemptEvent within {ANSWER_TIMEOUT:?}"
                ))
            })??;
        if let Ok(ReaderMessage::Events { events, .. }) = &incoming.message {
            for e in events {
                if let ReaderEvent::ConnectionAttempt { status } = e {
                    return match status {
                        0 => Ok(()),
                        s => Err(DeviceError::Open {
                            what: id.to_string(),
                            reason: format!(
                                "the reader refused the connection (ConnectionAttemptEvent status {s}: another client holds it)"
                            ),
                        }),
                    };
                }
            }
        }
        tracing::debug!(device = %id, message_type = incoming.frame.message_type, "LLRP message before the connection event ignored");
    }
}
