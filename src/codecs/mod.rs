//! Codecs: what the bytes of a device mean. A firmware profile names a
//! codec and gives it parameters; the codec turns raw input into typed
//! output for the journal (spec/profiles.md).

pub mod esl;
pub mod json;
pub mod lines;
pub mod m100;
pub mod registers;
pub(crate) mod time;

use chrono::{DateTime, Utc};

use crate::event::EventBody;

/// One raw RFID read, before the tag state table decides whether it is a
/// transition worth journaling (spec/profiles.md "RFID semantics").
#[derive(Debug, Clone, PartialEq)]
pub struct TagRead {
    /// EPC as upper-case hex.
    pub epc: String,
    pub antenna: Option<u32>,
    pub rssi_dbm: Option<i32>,
    pub ts: DateTime<Utc>,
}

/// What a codec made of one unit of input.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// Events to journal together, all or none (e.g. every line of one
    /// receipt), each with its timestamp.
    Events(Vec<(DateTime<Utc>, EventBody)>),
    /// RFID reads for the tag state table.
    TagReads(Vec<TagRead>),
    /// Input that did not parse: quarantined with its raw bytes.
    Bad { reason: String, raw: Vec<u8> },
}
