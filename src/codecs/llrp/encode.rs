//! Client-to-reader messages: the set-up sequence (capabilities, reader
//! config, the inventory ROSpec), keepalive acks and closing. Each
//! function returns one whole message with the given message id.

use super::frame::build;
use super::msg;
use super::wire::{CUSTOM, Writer};

/// The ROSpec id this client uses. Any non-zero id works; a fixed one lets
/// the next session (after our own restart) delete exactly ours.
pub const ROSPEC_ID: u32 = 0x5347; // "SG"

/// What one inventory ROSpec asks the reader to do: resolved from the
/// profile and the device config by the transport, so that encoding has
/// no choices left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryPlan {
    pub rospec_id: u32,
    /// Antenna ports to read with; empty means all (LLRP antenna id 0).
    pub antennas: Vec<u16>,
    /// Index into the reader's transmit power table; `None` leaves the
    /// reader's default power (no `RFTransmitter` is sent).
    pub power_index: Option<u16>,
    /// Gen2 session 0-3; `None` leaves the reader's default.
    pub session: Option<u8>,
    /// Expected tag population, a singulation hint.
    pub tag_population: u16,
    /// RF mode (`C1G2RFControl` mode index); `None` leaves the default.
    pub mode_index: Option<u16>,
    /// Impinj inventory search mode (an Impinj extension, sent only when
    /// set, after `IMPINJ_ENABLE_EXTENSIONS`).
    pub impinj_search_mode: Option<u16>,
    /// Report after this many tags (`ROReportTrigger` 2, "upon N tags or
    /// end of ROSpec"); 1 streams every read as it happens.
    pub report_every_n_tags: u16,
}

/// `GET_READER_CAPABILITIES` for all capabilities (RequestedData 0).
pub fn get_reader_capabilities(id: u32) -> Vec<u8> {
    build(msg::GET_READER_CAPABILITIES, id, &[0])
}

/// `SET_READER_CONFIG`: keep alive every `keepalive_ms` and notify GPI,
/// ROSpec, reader exception and antenna events.
pub fn set_reader_config(id: u32, keepalive_ms: u32) -> Vec<u8> {
    let mut w = Writer::default();
    w.u8(0); // ResetToFactoryDefault = 0
    w.tlv(msg::P_READER_EVENT_NOTIFICATION_SPEC, |w| {
        for event in [
            msg::EVENT_GPI,
            msg::EVENT_ROSPEC,
            msg::EVENT_READER_EXCEPTION,
            msg::EVENT_ANTENNA,
        ] {
            w.tlv(msg::P_EVENT_NOTIFICATION_STATE, |w| {
                w.u16(event).u8(0x80);
            });
        }
    });
    w.tlv(msg::P_KEEPALIVE_SPEC, |w| {
        w.u8(1).u32(keepalive_ms); // periodic
    });
    build(msg::SET_READER_CONFIG, id, &w.buf)
}

/// `IMPINJ_ENABLE_EXTENSIONS`: an Impinj reader refuses its custom
/// parameters (the search mode) until a client sends this.
pub fn impinj_enable_extensions(id: u32) -> Vec<u8> {
    let mut w = Writer::default();
    w.u32(msg::VENDOR_IMPINJ)
        .u8(msg::IMPINJ_ENABLE_EXTENSIONS)
        .u32(0);
    build(msg::CUSTOM_MESSAGE, id, &w.buf)
}

/// `DELETE_ROSPEC`; id 0 deletes every ROSpec on the reader.
pub fn delete_rospec(id: u32, rospec_id: u32) -> Vec<u8> {
    build(msg::DELETE_ROSPEC, id, &rospec_id.to_be_bytes())
}

pub fn enable_rospec(id: u32, rospec_id: u32) -> Vec<u8> {
    build(msg::ENABLE_ROSPEC, id, &rospec_id.to_be_bytes())
}

pub fn start_rospec(id: u32, rospec_id: u32) -> Vec<u8> {
    build(msg::START_ROSPEC, id, &rospec_id.to_be_bytes())
}

pub fn stop_rospec(id: u32, rospec_id: u32) -> Vec<u8> {
    build(msg::STOP_ROSPEC, id, &rospec_id.to_be_bytes())
}

/// `KEEPALIVE_ACK`, echoing the keepalive's message id.
pub fn keepalive_ack(id: u32) -> Vec<u8> {
    build(msg::KEEPALIVE_ACK, id, &[])
}

pub fn close_connection(id: u32) -> Vec<u8> {
    build(msg::CLOSE_CONNECTION, id, &[])
}

/// `ADD_ROSPEC` for a continuous inventory: started by `START_ROSPEC`
/// (null start trigger), never stopping on its own (null stop triggers),
/// one AISpec over `plan.antennas`, reports carrying antenna id, peak
/// RSSI, first/last seen and seen count besides the EPC.
pub fn add_rospec(id: u32, plan: &InventoryPlan) -> Vec<u8> {
    let mut w = Writer::default();
    w.tlv(msg::P_ROSPEC, |w| {
        // Priority 0, CurrentState 0 (disabled), as ADD_ROSPEC requires.
        w.u32(plan.rospec_id).u8(0).u8(0);
        w.tlv(msg::P_RO_BOUNDARY_SPEC, |w| {
            w.tlv(msg::P_ROSPEC_START_TRIGGER, |w| {
                w.u8(0); // null: START_ROSPEC starts it
            });
            w.tlv(msg::P_ROSPEC_STOP_TRIGGER, |w| {
                w.u8(0).u32(0); // null, duration 0
            });
        });
        w.tlv(msg::P_AISPEC, |w| {
            let ids: Vec<u16> = if plan.antennas.is_empty() {
                vec![0]
            } else {
                plan.antennas.clone()
            };
            // Antenna lists come from validated config (at most 255).
            w.u16(ids.len() as u16);
            for a in &ids {
                w.u16(*a);
            }
            w.tlv(msg::P_AISPEC_STOP_TRIGGER, |w| {
                w.u8(0).u32(0);
            });
            w.tlv(msg::P_INVENTORY_PARAMETER_SPEC, |w| {
                w.u16(1).u8(1); // spec id 1, protocol EPCGlobal Class1 Gen2
                for a in &ids {
                    antenna_configuration(w, *a, plan);
                }
            });
        });
        w.tlv(msg::P_RO_REPORT_SPEC, |w| {
            w.u8(2).u16(plan.report_every_n_tags);
            w.tlv(msg::P_TAG_REPORT_CONTENT_SELECTOR, |w| {
                // Bits from the top: ROSpecID, SpecIndex, InventoryParam-
                // eterSpecID, AntennaID, ChannelIndex, PeakRSSI, FirstSeen,
                // LastSeen, TagSeenCount, AccessSpecID, 6 reserved.
                let antenna = 1 << 12;
                let rssi = 1 << 10;
                let first_seen = 1 << 9;
                let last_seen = 1 << 8;
                let seen_count = 1 << 7;
                w.u16(antenna | rssi | first_seen | last_seen | seen_count);
            });
        });
    });
    build(msg::ADD_ROSPEC, id, &w.buf)
}

/// One `AntennaConfiguration`: power and the Gen2 inventory settings.
fn antenna_configuration(w: &mut Writer, antenna: u16, plan: &InventoryPlan) {
    w.tlv(msg::P_ANTENNA_CONFIGURATION, |w| {
        w.u16(antenna);
        if let Some(power) = plan.power_index {
            w.tlv(msg::P_RF_TRANSMITTER, |w| {
                // Hop table 1, channel 1: ignored by hopping readers, the
                // first channel of a fixed-frequency (ETSI) one.
                w.u16(1).u16(1).u16(power);
            });
        }
        w.tlv(msg::P_C1G2_INVENTORY_COMMAND, |w| {
            w.u8(0); // TagInventoryStateAware = 0
            if let Some(mode) = plan.mode_index {
                w.tlv(msg::P_C1G2_RF_CONTROL, |w| {
                    w.u16(mode).u16(0); // Tari 0: the mode's own
                });
            }
            if let Some(session) = plan.session {
                w.tlv(msg::P_C1G2_SINGULATION_CONTROL, |w| {
                    w.u8((session & 0x3) << 6).u16(plan.tag_population).u32(0); // TagTransitTime
                });
            }
            if let Some(mode) = plan.impinj_search_mode {
                w.tlv(CUSTOM, |w| {
                    w.u32(msg::VENDOR_IMPINJ)
                        .u32(msg::IMPINJ_SEARCH_MODE)
                        .u16(mode);
                });
            }
        });
    });
}
