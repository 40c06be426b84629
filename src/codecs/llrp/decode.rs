//! Reader-to-client messages: what a reader says, decoded into the few
//! things a client acts on. Parameters this client has no use for, and
//! every vendor `Custom` parameter, are skipped by their length; a TLV
//! length or field that does not fit is an [`LlrpError`] naming the byte.

use super::frame::{Frame, HEADER_LEN};
use super::msg;
use super::wire::{CUSTOM, Cursor, Kind, LlrpError, Param};

/// An `LLRPStatus` parameter: 0 is success, anything else a refusal.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Status {
    pub code: u16,
    pub description: String,
}

impl Status {
    pub fn is_success(&self) -> bool {
        self.code == 0
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.description.is_empty() {
            write!(f, "status {}", self.code)
        } else {
            write!(f, "status {} ({})", self.code, self.description)
        }
    }
}

/// What `GET_READER_CAPABILITIES_RESPONSE` says that a client needs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Capabilities {
    pub max_antennas: Option<u16>,
    /// IANA private enterprise number of the maker (Impinj 25882, Zebra
    /// 10642).
    pub manufacturer: Option<u32>,
    pub model: Option<u32>,
    pub firmware: Option<String>,
    /// Transmit power table: (index, power in hundredths of a dBm). An
    /// `RFTransmitter` names power by index, so a configured dBm value is
    /// looked up here.
    pub power_table: Vec<(u16, i16)>,
}

/// One tag of an `RO_ACCESS_REPORT` (`TagReportData`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TagReport {
    /// The EPC bytes (EPC-96 or `EPCData`, whose bit length is rounded up
    /// to whole bytes as LLRP pads it).
    pub epc: Vec<u8>,
    pub antenna: Option<u16>,
    pub peak_rssi_dbm: Option<i8>,
    /// Microseconds since the Unix epoch, by the reader's clock.
    pub first_seen_us: Option<u64>,
    pub last_seen_us: Option<u64>,
    pub seen_count: Option<u16>,
    pub rospec_id: Option<u32>,
    pub channel: Option<u16>,
}

/// One event of a `READER_EVENT_NOTIFICATION`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReaderEvent {
    /// The reader's answer to our connecting: status 0 is success, others
    /// say another client already holds the reader.
    ConnectionAttempt {
        status: u16,
    },
    /// The reader is closing the connection.
    ConnectionClose,
    Antenna {
        antenna: u16,
        connected: bool,
    },
    Gpi {
        port: u16,
        high: bool,
    },
    ReaderException {
        message: String,
    },
    /// ROSpec started (0), ended (1) or preempted (2).
    RoSpec {
        event_type: u8,
        rospec_id: u32,
    },
    /// An event type this client does not act on (hopping, buffer level,
    /// AISpec, RF survey, vendor).
    Other {
        param_type: u16,
    },
}

/// A decoded reader message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReaderMessage {
    /// A `*_RESPONSE` or `ERROR_MESSAGE` (`message_type` tells which) with
    /// its status. A response without `LLRPStatus` is malformed.
    Response {
        message_type: u16,
        status: Status,
    },
    Capabilities {
        status: Status,
        capabilities: Capabilities,
    },
    /// `READER_EVENT_NOTIFICATION`: the reader's timestamp (microseconds,
    /// when it sent a UTC one) and its events.
    Events {
        timestamp_us: Option<u64>,
        events: Vec<ReaderEvent>,
    },
    Report(Vec<TagReport>),
    Keepalive,
    /// A vendor message: vendor, subtype and the status when it carries
    /// one (Impinj's `ENABLE_EXTENSIONS_RESPONSE` does).
    Custom {
        vendor: u32,
        subtype: u8,
        status: Option<Status>,
    },
    /// A message type a client does not expect (a reader never sends
    /// ADD_ROSPEC): ignored, but reported so it can be logged.
    Unexpected {
        message_type: u16,
    },
}

/// Decode one message as cut by the splitter.
pub fn decode(frame: &Frame) -> Result<ReaderMessage, LlrpError> {
    let mut c = Cursor::new(frame.body(), HEADER_LEN);
    let t = frame.message_type;
    Ok(match t {
        msg::KEEPALIVE => ReaderMessage::Keepalive,
        msg::RO_ACCESS_REPORT => ReaderMessage::Report(report(&mut c)?),
        msg::READER_EVENT_NOTIFICATION => events(&mut c)?,
        msg::GET_READER_CAPABILITIES_RESPONSE => {
            let status = status_first(&mut c, t)?;
            let mut capabilities = Capabilities::default();
            while let Some(p) = c.param()? {
                capabilities_param(p, &mut capabilities)?;
            }
            ReaderMessage::Capabilities {
                status,
                capabilities,
            }
        }
        msg::CUSTOM_MESSAGE => {
            let vendor = c.u32("custom message vendor")?;
            let subtype = c.u8("custom message subtype")?;
            // Vendor bodies may start with fields we do not know, so the
            // status is not searched for: only a body that is a list of
            // parameters (Impinj's responses are) yields it.
            let status = find_status(c).ok().flatten();
            ReaderMessage::Custom {
                vendor,
                subtype,
                status,
            }
        }
        t if msg::is_response(t) => ReaderMessage::Response {
            message_type: t,
            status: status_first(&mut c, t)?,
        },
        t => ReaderMessage::Unexpected { message_type: t },
    })
}

/// The `LLRPStatus` a response must carry. Readers put it first, but LLRP
/// 1.1 responses may add parameters, so it is searched among them.
fn status_first(c: &mut Cursor<'_>, message_type: u16) -> Result<Status, LlrpError> {
    let start = c.offset();
    let mut probe = c.clone();
    while let Some(p) = probe.param()? {
        if p.kind == Kind::Tlv(msg::P_LLRP_STATUS) {
            *c = probe;
            return status(p.body);
        }
    }
    Err(LlrpError::new(
        start,
        format!("response type {message_type} carries no LLRPStatus"),
    ))
}

/// The first `LLRPStatus` among the parameters of `c`.
fn find_status(mut c: Cursor<'_>) -> Result<Option<Status>, LlrpError> {
    while let Some(p) = c.param()? {
        if p.kind == Kind::Tlv(msg::P_LLRP_STATUS) {
            return status(p.body).map(Some);
        }
    }
    Ok(None)
}

fn status(mut b: Cursor<'_>) -> Result<Status, LlrpError> {
    // FieldError / ParameterError follow; the description says enough.
    Ok(Status {
        code: b.u16("LLRPStatus code")?,
        description: b.utf8v("LLRPStatus description")?,
    })
}

fn capabilities_param(mut p: Param<'_>, caps: &mut Capabilities) -> Result<(), LlrpError> {
    match p.kind {
        Kind::Tlv(msg::P_GENERAL_DEVICE_CAPABILITIES) => {
            let b = &mut p.body;
            caps.max_antennas = Some(b.u16("MaxNumberOfAntennaSupported")?);
            b.u16("GeneralDeviceCapabilities flags")?;
            caps.manufacturer = Some(b.u32("DeviceManufacturerName")?);
            caps.model = Some(b.u32("ModelName")?);
            caps.firmware = Some(b.utf8v("ReaderFirmwareVersion")?);
        }
        Kind::Tlv(msg::P_REGULATORY_CAPABILITIES) => {
            let b = &mut p.body;
            b.u16("CountryCode")?;
            b.u16("CommunicationsStandard")?;
            while let Some(band) = b.param()? {
                if band.kind != Kind::Tlv(msg::P_UHF_BAND_CAPABILITIES) {
                    continue;
                }
                let mut entries = band.body;
                while let Some(mut e) = entries.param()? {
                    if e.kind == Kind::Tlv(msg::P_TRANSMIT_POWER_LEVEL) {
                        let index = e.body.u16("TransmitPowerLevelTableEntry index")?;
                        let power = e.body.u16("TransmitPowerValue")? as i16;
                        caps.power_table.push((index, power));
                    }
                }
            }
        }
        _ => {}
    }
    Ok(())
}

fn report(c: &mut Cursor<'_>) -> Result<Vec<TagReport>, LlrpError> {
    let mut tags = Vec::new();
    while let Some(p) = c.param()? {
        if p.kind == Kind::Tlv(msg::P_TAG_REPORT_DATA) {
            tags.push(tag_report(p)?);
        }
        // RFSurveyReportData and Custom: skipped by length.
    }
    Ok(tags)
}

fn tag_report(p: Param<'_>) -> Result<TagReport, LlrpError> {
    let start = p.offset;
    let mut body = p.body;
    let mut tag = TagReport::default();
    let mut has_epc = false;
    while let Some(mut f) = body.param()? {
        let b = &mut f.body;
        match f.kind {
            Kind::Tv(msg::TV_EPC96) => {
                tag.epc = b.take(12, "EPC-96")?.to_vec();
                has_epc = true;
            }
            Kind::Tlv(msg::P_EPC_DATA) => {
                let bits = usize::from(b.u16("EPCData bit length")?);
                let bytes = bits.div_ceil(8);
                tag.epc = b.take(bytes, "EPCData EPC")?.to_vec();
                has_epc = true;
            }
            Kind::Tv(msg::TV_ANTENNA_ID) => tag.antenna = Some(b.u16("AntennaID")?),
            Kind::Tv(msg::TV_PEAK_RSSI) => tag.peak_rssi_dbm = Some(b.u8("PeakRSSI")? as i8),
            Kind::Tv(msg::TV_FIRST_SEEN_UTC) => {
                tag.first_seen_us = Some(b.u64("FirstSeenTimestampUTC")?)
            }
            Kind::Tv(msg::TV_LAST_SEEN_UTC) => {
                tag.last_seen_us = Some(b.u64("LastSeenTimestampUTC")?)
            }
            Kind::Tv(msg::TV_TAG_SEEN_COUNT) => tag.seen_count = Some(b.u16("TagSeenCount")?),
            Kind::Tv(msg::TV_ROSPEC_ID) => tag.rospec_id = Some(b.u32("ROSpecID")?),
            Kind::Tv(msg::TV_CHANNEL_INDEX) => tag.channel = Some(b.u16("ChannelIndex")?),
            // Uptime timestamps, PC/CRC/XPC words, OpSpec results, Custom.
            _ => {}
        }
    }
    if !has_epc {
        return Err(LlrpError::new(start, "TagReportData without an EPC"));
    }
    Ok(tag)
}

fn events(c: &mut Cursor<'_>) -> Result<ReaderMessage, LlrpError> {
    let mut timestamp_us = None;
    let mut events = Vec::new();
    while let Some(p) = c.param()? {
        if p.kind != Kind::Tlv(msg::P_READER_EVENT_NOTIFICATION_DATA) {
            continue;
        }
        let mut data = p.body;
        while let Some(mut e) = data.param()? {
            let b = &mut e.body;
            let Kind::Tlv(t) = e.kind else {
                return Err(LlrpError::new(
                    e.offset,
                    "TV parameter inside ReaderEventNotificationData",
                ));
            };
            let event = match t {
                msg::P_UTC_TIMESTAMP => {
                    timestamp_us = Some(b.u64("UTCTimestamp")?);
                    continue;
                }
                msg::P_UPTIME => continue,
                msg::P_CONNECTION_ATTEMPT_EVENT => ReaderEvent::ConnectionAttempt {
                    status: b.u16("ConnectionAttemptEvent status")?,
                },
                msg::P_CONNECTION_CLOSE_EVENT => ReaderEvent::ConnectionClose,
                msg::P_ANTENNA_EVENT => {
                    let kind = b.u8("AntennaEvent type")?;
                    ReaderEvent::Antenna {
                        connected: kind == 1,
                        antenna: b.u16("AntennaEvent antenna")?,
                    }
                }
                msg::P_GPI_EVENT => ReaderEvent::Gpi {
                    port: b.u16("GPIEvent port")?,
                    high: b.u8("GPIEvent state")? & 0x80 != 0,
                },
                msg::P_READER_EXCEPTION_EVENT => ReaderEvent::ReaderException {
                    message: b.utf8v("ReaderExceptionEvent message")?,
                },
                msg::P_ROSPEC_EVENT => ReaderEvent::RoSpec {
                    event_type: b.u8("ROSpecEvent type")?,
                    rospec_id: b.u32("ROSpecEvent ROSpecID")?,
                },
                CUSTOM => ReaderEvent::Other { param_type: CUSTOM },
                other => ReaderEvent::Other { param_type: other },
            };
            events.push(event);
        }
    }
    Ok(ReaderMessage::Events {
        timestamp_us,
        events,
    })
}
