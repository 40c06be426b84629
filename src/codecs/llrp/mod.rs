//! Codec `llrp` (spec/profiles.md): the EPCglobal Low Level Reader
//! Protocol 1.0.1/1.1 that fixed UHF readers (Impinj Speedway/R700, Zebra
//! FX7500/FX9600) speak over TCP 5084. A binary protocol of its own, with
//! no maintained Rust crate, so written here:
//!
//! - [`frame`]: the 10-byte message header and the stream splitter;
//! - [`wire`]: bounds-checked reading with byte offsets, TLV/TV parameters;
//! - [`encode`]: the client messages of the set-up sequence;
//! - [`decode`]: the reader messages (responses, events, tag reports);
//! - [`params`]: the profile's declarative `[llrp]` table.
//!
//! Everything here is pure; connecting, the set-up sequence and keepalive
//! timing belong to the `llrp` transport in the devices module.

pub mod decode;
pub mod encode;
pub mod frame;
pub mod msg;
pub mod params;
pub mod wire;

#[cfg(test)]
mod tests;

use chrono::{DateTime, Duration, Utc};

pub use decode::{Capabilities, ReaderEvent, ReaderMessage, Status, TagReport, decode};
pub use encode::InventoryPlan;
pub use frame::{Frame, Splitter};
pub use params::LlrpParams;
pub use wire::LlrpError;

use super::TagRead;

/// How far a reader's clock may be behind the gateway's before its
/// timestamps are replaced by the time of arrival. Readers without NTP
/// boot into 1970; a read stamped then would sort before everything.
const MAX_CLOCK_LAG: Duration = Duration::hours(24);
/// How far it may be ahead (reads from the future would hide later ones).
const MAX_CLOCK_LEAD: Duration = Duration::minutes(5);

/// Turn one report's tags into tag reads. The time is the reader's
/// first-seen time (else last-seen) when its clock is plausible, else
/// `now`, the time the report arrived.
pub fn tag_reads(tags: &[TagReport], now: DateTime<Utc>) -> Vec<TagRead> {
    tags.iter()
        .filter(|t| !t.epc.is_empty())
        .map(|t| TagRead {
            epc: hex::encode_upper(&t.epc),
            antenna: t.antenna.map(u32::from),
            rssi_dbm: t.peak_rssi_dbm.map(i32::from),
            ts: reader_time(t.first_seen_us.or(t.last_seen_us), now),
        })
        .collect()
}

fn reader_time(us: Option<u64>, now: DateTime<Utc>) -> DateTime<Utc> {
    us.and_then(|us| i64::try_from(us).ok())
        .and_then(DateTime::from_timestamp_micros)
        .filter(|t| *t >= now - MAX_CLOCK_LAG && *t <= now + MAX_CLOCK_LEAD)
        .unwrap_or(now)
}
