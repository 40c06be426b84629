//! The event vocabulary of the house: every fact a device, a staff member or
//! the agent itself reports becomes one [`Event`], journaled before anything
//! else happens to it. The JSON shape is the contract with central
//! (spec/sync-api.md section 2): `{"seq","ts","device","kind","data"}`.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// Journal sequence number: strictly increasing, assigned at commit.
pub type Seq = i64;

/// A committed event, as stored in the journal and pushed to central.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub seq: Seq,
    #[serde(with = "ts_format")]
    pub ts: DateTime<Utc>,
    pub device: String,
    #[serde(flatten)]
    pub body: EventBody,
}

/// An event before the journal has given it a `seq`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub ts: DateTime<Utc>,
    pub device: String,
    pub body: EventBody,
}

impl NewEvent {
    pub fn new(ts: DateTime<Utc>, device: impl Into<String>, body: EventBody) -> Self {
        NewEvent {
            ts,
            device: device.into(),
            body,
        }
    }

    /// The key under which a redelivered copy of this event is recognised
    /// (DESIGN invariant 1). `None` for events without a natural identity.
    pub fn natural_key(&self) -> Option<String> {
        let d = &self.device;
        match &self.body {
            EventBody::Sale(l) => Some(format!("sale/{d}/{}/{}", l.receipt_id, l.line)),
            EventBody::Return(l) => Some(format!("return/{d}/{}/{}", l.receipt_id, l.line)),
            EventBody::Receipt(r) => Some(format!("receipt/{}/{}", r.delivery_id, r.sku)),
            EventBody::Count(c) => Some(format!("count/{}/{}", c.session_id, c.sku)),
            EventBody::LabelAck(a) => Some(format!(
                "label_ack/{}/{}/{}",
                a.label_id,
                a.price_version,
                a.status.as_str()
            )),
            _ => None,
        }
    }

    pub fn with_seq(self, seq: Seq) -> Event {
        Event {
            seq,
            ts: self.ts,
            device: self.device,
            body: self.body,
        }
    }
}

/// `kind` + `data` of an event. Adjacently tagged so that it serialises as
/// `"kind": "sale", "data": {...}` next to the envelope fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum EventBody {
    Sale(SaleLine),
    Return(SaleLine),
    Receipt(StockReceipt),
    Adjustment(Adjustment),
    Count(Count),
    TagArrived(TagTransition),
    TagMoved(TagTransition),
    TagDeparted(TagTransition),
    ShelfWeight(ShelfWeight),
    LabelAck(LabelAck),
    PriceConflict(PriceConflict),
    Alert(Alert),
    Reading(Reading),
}

/// Every `kind`, in the order of the spec table. Used for metrics and status.
pub const KINDS: [&str; 13] = [
    "sale",
    "return",
    "receipt",
    "adjustment",
    "count",
    "tag_arrived",
    "tag_moved",
    "tag_departed",
    "shelf_weight",
    "label_ack",
    "price_conflict",
    "alert",
    "reading",
];

impl EventBody {
    pub fn kind(&self) -> &'static str {
        match self {
            EventBody::Sale(_) => "sale",
            EventBody::Return(_) => "return",
            EventBody::Receipt(_) => "receipt",
            EventBody::Adjustment(_) => "adjustment",
            EventBody::Count(_) => "count",
            EventBody::TagArrived(_) => "tag_arrived",
            EventBody::TagMoved(_) => "tag_moved",
            EventBody::TagDeparted(_) => "tag_departed",
            EventBody::ShelfWeight(_) => "shelf_weight",
            EventBody::LabelAck(_) => "label_ack",
            EventBody::PriceConflict(_) => "price_conflict",
            EventBody::Alert(_) => "alert",
            EventBody::Reading(_) => "reading",
        }
    }

    /// The `data` object alone, as stored in the journal's `data` column.
    pub fn data_json(&self) -> String {
        // Serialising plain structs of strings and integers cannot fail.
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(mut m)) => m
                .remove("data")
                .map(|d| d.to_string())
                .unwrap_or_else(|| "{}".into()),
            _ => "{}".into(),
        }
    }

    /// Rebuild a body from the journal's `kind` and `data` columns.
    pub fn from_parts(kind: &str, data: &str) -> Result<EventBody, serde_json::Error> {
        let data: serde_json::Value = serde_json::from_str(data)?;
        serde_json::from_value(serde_json::json!({ "kind": kind, "data": data }))
    }

    /// Signed change to on-hand stock (sync-api section 2, "moves stock").
    pub fn stock_move(&self) -> Option<(&str, i64)> {
        match self {
            EventBody::Sale(l) => Some((&l.sku, -l.qty)),
            EventBody::Return(l) => Some((&l.sku, l.qty)),
            EventBody::Receipt(r) => Some((&r.sku, r.qty)),
            EventBody::Adjustment(a) => Some((&a.sku, a.delta)),
            _ => None,
        }
    }
}

/// One line of a POS receipt: a `sale`, or a `return` with positive `qty`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SaleLine {
    pub receipt_id: String,
    pub line: u32,
    pub sku: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtin: Option<String>,
    pub qty: i64,
    pub unit_price_minor: i64,
    pub currency: String,
    pub pos: String,
    /// Keyed hash of a loyalty member id; the id itself is never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_hash: Option<String>,
}

/// Goods received from a delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StockReceipt {
    pub delivery_id: String,
    pub sku: String,
    pub qty: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Adjustment {
    pub sku: String,
    pub delta: i64,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Count {
    pub session_id: String,
    pub zone: String,
    pub sku: String,
    pub counted: i64,
    pub expected: i64,
    pub method: String,
}

/// `tag_arrived`, `tag_moved` (with `from_zone`) and `tag_departed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TagTransition {
    pub epc: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    pub zone: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_zone: Option<String>,
    pub reader: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub antenna: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rssi_dbm: Option<i32>,
    #[serde(with = "ts_format")]
    pub first_seen: DateTime<Utc>,
    #[serde(with = "ts_format")]
    pub last_seen: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShelfWeight {
    pub slot: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    pub grams: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units_est: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelStatus {
    Ok,
    Failed,
    Timeout,
}

impl LabelStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LabelStatus::Ok => "ok",
            LabelStatus::Failed => "failed",
            LabelStatus::Timeout => "timeout",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelAck {
    pub label_id: String,
    pub sku: String,
    pub price_version: i64,
    pub status: LabelStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery_mv: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rssi: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriceConflict {
    pub sku: String,
    pub pos_price_minor: i64,
    pub shelf_price_minor: i64,
    pub currency: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Open,
    Resolved,
}

/// An alert opening or resolving. `subject` names what it is about (a SKU,
/// a device id, a label id) so that there is one open alert per code and
/// subject; further context fields ride along in `context`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub code: String,
    pub severity: Severity,
    pub message: String,
    pub subject: String,
    pub state: AlertState,
    #[serde(flatten)]
    pub context: serde_json::Map<String, serde_json::Value>,
}

/// A generic sensor value. Not money, so a float is fine here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    pub name: String,
    pub value: f64,
    pub unit: String,
}

/// RFC 3339 UTC with milliseconds, `2026-11-22T10:15:30.123Z`, as the sync
/// API requires.
pub fn format_ts(ts: &DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Milliseconds since the epoch to a timestamp; out-of-range values clamp
/// to the epoch rather than panic.
pub fn ts_from_millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// Now, truncated to the millisecond precision the journal keeps, so that a
/// stored event reads back equal to the one that was written.
pub fn now_millis() -> DateTime<Utc> {
    ts_from_millis(Utc::now().timestamp_millis())
}

pub mod ts_format {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ts: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_ts(ts))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| serde::de::Error::custom(format!("bad timestamp {text:?}: {e}")))
    }
}
