//! The vocabulary between devices and the house: what a codec makes of
//! device input ([`Decoded`], [`TagRead`]) before the journal, and what a
//! shelf label is told to show ([`LabelUpdate`]). It lives with the events
//! so that the domain speaks it without depending on any codec.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::EventBody;

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

/// What one label should show: the outbound half of both ESL codecs,
/// built when the effective price of a SKU changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelUpdate {
    pub label_id: String,
    pub sku: String,
    pub name: String,
    /// The regular price in minor units of `currency`.
    pub price_minor: i64,
    pub currency: String,
    /// `price_minor` as shoppers read it (`2,49 €`), see
    /// `domain::price_text::price_text`.
    pub price_text: String,
    pub promo: Option<Promo>,
    /// Price book version; a label is confirmed only for this version.
    pub version: i64,
}

/// A promotional price shown until `until`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Promo {
    pub price_minor: i64,
    #[serde(with = "crate::event::ts_format")]
    pub until: DateTime<Utc>,
    pub price_text: String,
}

/// What a label system's database says about one label on a poll (an
/// OpenEPaperLink AP's tag record), before the domain decides what of it
/// is news (`domain::labels::reconcile`).
#[derive(Debug, Clone, PartialEq)]
pub struct LabelSeen {
    /// When the label last checked in (whole seconds, as APs keep it).
    pub last_seen: DateTime<Utc>,
    /// The label has content waiting that it has not fetched yet.
    pub pending: bool,
    /// Battery in millivolts; `None` when unknown.
    pub battery_mv: Option<i64>,
    /// Signal of the last check-in; `None` when unknown.
    pub rssi: Option<i64>,
}

impl LabelSeen {
    /// Whether the label shows content uploaded at `uploaded_at`: nothing
    /// is pending and it checked in after the upload (compared in whole
    /// seconds, the AP's precision).
    pub fn fetched_since(&self, uploaded_at: DateTime<Utc>) -> bool {
        !self.pending && self.last_seen.timestamp() > uploaded_at.timestamp()
    }
}
