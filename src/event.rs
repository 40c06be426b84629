//! The event vocabulary of the house: every fact a device, a staff member or
//! the agent itself reports becomes one [`Event`], journaled before anything
//! else happens to it. The JSON shape is the contract with central
//! (spec/sync-api.md section 2): `{"seq","ts","device","kind","data"}`.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Serialize};

pub mod bounds;
pub mod device;
mod order;

pub use order::{
    OrderHandedOver, OrderLine, OrderPicked, OrderReleased, OrderReserved, PickedLine,
};

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
            EventBody::OrderReserved(o) => Some(format!("order_reserved/{}", o.order_id)),
            EventBody::OrderPicked(o) => Some(format!("order_picked/{}", o.order_id)),
            EventBody::OrderHandedOver(o) => Some(format!("order_handed_over/{}", o.order_id)),
            EventBody::OrderExpired(o) => Some(format!("order_expired/{}", o.order_id)),
            EventBody::OrderCancelled(o) => Some(format!("order_cancelled/{}", o.order_id)),
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
    LabelHealth(LabelHealth),
    LabelBound(LabelBound),
    LabelUnbound(LabelUnbound),
    PriceConflict(PriceConflict),
    Alert(Alert),
    Reading(Reading),
    ConfigApplied(ConfigApplied),
    Gpi(Gpi),
    OrderReserved(OrderReserved),
    OrderPicked(OrderPicked),
    OrderHandedOver(OrderHandedOver),
    OrderExpired(OrderReleased),
    OrderCancelled(OrderReleased),
    TaskOpened(TaskOpened),
    TaskTaken(TaskTaken),
    TaskDone(TaskDone),
    TaskDismissed(TaskDismissed),
    TaskReopened(TaskReopened),
    TaskVerified(TaskVerified),
}

/// Every `kind`, in the order of the spec table. Used for metrics and status.
pub const KINDS: [&str; 29] = [
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
    "label_health",
    "label_bound",
    "label_unbound",
    "price_conflict",
    "alert",
    "reading",
    "config_applied",
    "gpi",
    "order_reserved",
    "order_picked",
    "order_handed_over",
    "order_expired",
    "order_cancelled",
    "task_opened",
    "task_taken",
    "task_done",
    "task_dismissed",
    "task_reopened",
    "task_verified",
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
            EventBody::LabelHealth(_) => "label_health",
            EventBody::LabelBound(_) => "label_bound",
            EventBody::LabelUnbound(_) => "label_unbound",
            EventBody::PriceConflict(_) => "price_conflict",
            EventBody::Alert(_) => "alert",
            EventBody::Reading(_) => "reading",
            EventBody::ConfigApplied(_) => "config_applied",
            EventBody::Gpi(_) => "gpi",
            EventBody::OrderReserved(_) => "order_reserved",
            EventBody::OrderPicked(_) => "order_picked",
            EventBody::OrderHandedOver(_) => "order_handed_over",
            EventBody::OrderExpired(_) => "order_expired",
            EventBody::OrderCancelled(_) => "order_cancelled",
            EventBody::TaskOpened(_) => "task_opened",
            EventBody::TaskTaken(_) => "task_taken",
            EventBody::TaskDone(_) => "task_done",
            EventBody::TaskDismissed(_) => "task_dismissed",
            EventBody::TaskReopened(_) => "task_reopened",
            EventBody::TaskVerified(_) => "task_verified",
        }
    }

    /// The `data` object alone, as stored in the journal's `data` column.
    pub fn data_json(&self) -> String {
        // One serialisation pass, then `data` cut out of
        // `{"kind":"...","data":...}`: building a serde_json::Value first
        // cost every producer more than its journal insert. Serialising
        // plain structs of strings and numbers cannot fail.
        const HEAD: &str = r#"{"kind":""#;
        const MIDDLE: &str = r#"","data":"#;
        let Ok(mut whole) = serde_json::to_string(self) else {
            return "{}".into();
        };
        let kind = self.kind();
        let start = HEAD.len() + kind.len() + MIDDLE.len();
        let framed = whole.starts_with(HEAD)
            && whole[HEAD.len()..].starts_with(kind)
            && whole[HEAD.len() + kind.len()..].starts_with(MIDDLE)
            && whole.len() > start
            && whole.ends_with('}');
        if !framed {
            return "{}".into();
        }
        whole.truncate(whole.len() - 1);
        whole.drain(..start);
        whole
    }

    /// Rebuild a body from the journal's `kind` and `data` columns.
    pub fn from_parts(kind: &str, data: &str) -> Result<EventBody, serde_json::Error> {
        // One pass over `{"kind":...,"data":...}`: with the tag first, serde
        // reads the data straight into its struct. Through a Value the
        // cost depended on the order of the keys (a BTreeMap built and
        // walked again), and reading the journal back was the pusher's
        // main cost.
        let kind = serde_json::to_string(kind)?;
        let mut whole = String::with_capacity(kind.len() + data.len() + 20);
        whole.push_str(r#"{"kind":"#);
        whole.push_str(&kind);
        whole.push_str(r#","data":"#);
        whole.push_str(data);
        whole.push('}');
        serde_json::from_str(&whole)
    }

    /// Every signed change to on-hand stock this event makes: the one of
    /// [`EventBody::stock_move`], or one per line of an
    /// `order_handed_over` (a sale of the picked lines, sync-api section 6).
    pub fn stock_moves(&self) -> impl Iterator<Item = (&str, i64)> {
        let handed_over: &[OrderLine] = match self {
            EventBody::OrderHandedOver(h) => &h.lines,
            _ => &[],
        };
        self.stock_move().into_iter().chain(
            handed_over
                .iter()
                .filter(|l| l.qty != 0)
                .map(|l| (l.sku.as_str(), -l.qty)),
        )
    }

    /// Signed change to on-hand stock of the single-SKU kinds (sync-api
    /// section 2, "moves stock"); see [`EventBody::stock_moves`] for all.
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

/// What a label system last reported about one label's health: its
/// battery, its signal, when it last checked in, and whether it counts as
/// offline (silent for longer than its system's `stale_after_s` at `ts`).
/// Journaled only when something changed (`domain::labels::health_changed`);
/// the labels table and the `label_offline` alert are its projection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelHealth {
    pub label_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery_mv: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rssi: Option<i64>,
    #[serde(with = "ts_format")]
    pub last_seen: DateTime<Utc>,
    pub offline: bool,
}

/// Staff bound a shelf label to a SKU (`POST /v1/labels/{id}/bind`): the
/// label now shows that SKU's price. `gtin` is the item code scanned, when
/// the binding was made by GTIN; `previous_sku` the SKU the label showed
/// before, if any. Projected by `domain::label_bindings`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelBound {
    pub label_id: String,
    pub sku: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_sku: Option<String>,
}

/// Staff took a shelf label off its SKU (`POST /v1/labels/{id}/unbind`):
/// no price goes to it any more. `sku` is the SKU it was bound to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelUnbound {
    pub label_id: String,
    pub sku: String,
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

/// The agent started running a configuration (spec/fleet.md 4): the
/// audit trail of what ran when. `source` is `"local"` (the store's own
/// file), `"central"` (central's config over it) or `"rollback"` (back to
/// the previous one after a trial failed); `version` and `sha256` are
/// central's, absent for the local file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigApplied {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    pub source: String,
}

/// A reader's general-purpose input changed (LLRP GPIEvent): a door
/// contact, a light barrier or a push button wired to the reader. `at` is
/// the reader's time of the change when it says, else when it arrived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gpi {
    pub reader: String,
    pub port: u16,
    /// `"high"` or `"low"`.
    pub state: String,
    #[serde(with = "ts_format")]
    pub at: DateTime<Utc>,
}

/// A staff task opened for an alert that needs a person (issue 18:
/// refill, relabel, count, check_device). `task_id` is `T-` and the seq
/// of the alert event that caused it, so it is unique and a rebuild of
/// the projection from the journal gives the same ids. What the task
/// suggests (`suggested_qty`, `backroom_qty`, `shelf_units`) is fixed
/// when it opens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskOpened {
    pub task_id: String,
    /// `refill`, `relabel`, `count` or `check_device`.
    pub task: String,
    /// The alert this task is for: its code and subject.
    pub alert_code: String,
    pub subject: String,
    pub severity: Severity,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    /// Units to bring to the shelf (refill): up to `max_stock`, else
    /// twice `min_stock`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suggested_qty: Option<i64>,
    /// Units of the SKU the RFID backroom zone holds, where RFID knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backroom_qty: Option<i64>,
    /// Units the shelf (or the books) showed when the task opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shelf_units: Option<i64>,
}

/// A staff member took a task (`by`: their name or handheld id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskTaken {
    pub task_id: String,
    pub by: String,
}

/// A task is done: said by a person (`by`, then checked again at
/// `check_at`), or seen by the store (`confirmed_by`: `shelf_weight`,
/// `stock`, `label`, `device`, `count`: the alert it was for resolved).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskDone {
    pub task_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed_by: Option<String>,
    /// When the store looks again: still the alert open then reopens the
    /// task (`[tasks] verify_after_s` after a person's done).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_ts_format"
    )]
    pub check_at: Option<DateTime<Utc>>,
}

/// A person dismissed a task: nothing to do, with why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskDismissed {
    pub task_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    pub reason: String,
}

/// A task marked done was not: the store still sees the problem at its
/// `check_at`. The task is open again, taken by nobody.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskReopened {
    pub task_id: String,
    pub reason: String,
}

/// A task a person marked done was confirmed by what the store sees
/// (`confirmed_by` as in [`TaskDone`]) before its `check_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskVerified {
    pub task_id: String,
    pub confirmed_by: String,
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

/// [`ts_format`] for optional timestamps.
pub mod opt_ts_format {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ts: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match ts {
            Some(ts) => s.serialize_str(&super::format_ts(ts)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        let Some(text) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        DateTime::parse_from_rfc3339(&text)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|e| serde::de::Error::custom(format!("bad timestamp {text:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-22T10:15:30.123Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn roundtrip(body: EventBody, data: serde_json::Value) {
        let kind = body.kind();
        let event = Event {
            seq: 1001,
            ts: ts(),
            device: "pos-1".into(),
            body,
        };
        let value = serde_json::to_value(&event).unwrap();
        assert_eq!(
            value,
            json!({"seq": 1001, "ts": "2026-11-22T10:15:30.123Z", "device": "pos-1", "kind": kind, "data": data})
        );
        let back: Event = serde_json::from_value(value).unwrap();
        assert_eq!(back, event);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&event.body.data_json()).unwrap(),
            data
        );
        assert_eq!(
            EventBody::from_parts(kind, &event.body.data_json()).unwrap(),
            event.body
        );
    }

    fn sale_line() -> SaleLine {
        SaleLine {
            receipt_id: "R-1".into(),
            line: 1,
            sku: "SKU-1001".into(),
            gtin: Some("04006381333931".into()),
            qty: 2,
            unit_price_minor: 249,
            currency: "EUR".into(),
            pos: "1".into(),
            member_hash: None,
        }
    }

    #[test]
    fn sale_and_return_shapes() {
        let data = json!({"receipt_id": "R-1", "line": 1, "sku": "SKU-1001", "gtin": "04006381333931",
                          "qty": 2, "unit_price_minor": 249, "currency": "EUR", "pos": "1"});
        roundtrip(EventBody::Sale(sale_line()), data.clone());
        roundtrip(EventBody::Return(sale_line()), data);
    }

    #[test]
    fn stock_event_shapes() {
        roundtrip(
            EventBody::Receipt(StockReceipt {
                delivery_id: "D-77".into(),
                sku: "SKU-1001".into(),
                qty: 24,
            }),
            json!({"delivery_id": "D-77", "sku": "SKU-1001", "qty": 24}),
        );
        roundtrip(
            EventBody::Adjustment(Adjustment {
                sku: "SKU-1001".into(),
                delta: -2,
                reason: "damage".into(),
                by: Some("anna".into()),
            }),
            json!({"sku": "SKU-1001", "delta": -2, "reason": "damage", "by": "anna"}),
        );
        roundtrip(
            EventBody::Count(Count {
                session_id: "C-1".into(),
                zone: "A1".into(),
                sku: "SKU-1001".into(),
                counted: 12,
                expected: 14,
                method: "scan".into(),
            }),
            json!({"session_id": "C-1", "zone": "A1", "sku": "SKU-1001", "counted": 12, "expected": 14, "method": "scan"}),
        );
    }

    #[test]
    fn tag_transition_shapes() {
        let t = TagTransition {
            epc: "3074257BF7194E4000001A85".into(),
            gtin: Some("80614141123458".into()),
            serial: Some("6789".into()),
            sku: Some("SKU-1001".into()),
            zone: "salesfloor".into(),
            from_zone: None,
            reader: "door-reader".into(),
            antenna: Some(1),
            rssi_dbm: Some(-60),
            first_seen: ts(),
            last_seen: ts(),
        };
        let data = json!({"epc": "3074257BF7194E4000001A85", "gtin": "80614141123458", "serial": "6789",
            "sku": "SKU-1001", "zone": "salesfloor", "reader": "door-reader", "antenna": 1, "rssi_dbm": -60,
            "first_seen": "2026-11-22T10:15:30.123Z", "last_seen": "2026-11-22T10:15:30.123Z"});
        roundtrip(EventBody::TagArrived(t.clone()), data.clone());
        roundtrip(EventBody::TagDeparted(t.clone()), data.clone());
        let mut moved = data;
        moved["from_zone"] = json!("backroom");
        roundtrip(
            EventBody::TagMoved(TagTransition {
                from_zone: Some("backroom".into()),
                ..t
            }),
            moved,
        );
    }

    #[test]
    fn device_and_domain_event_shapes() {
        roundtrip(
            EventBody::ShelfWeight(ShelfWeight {
                slot: 3,
                sku: Some("SKU-1002".into()),
                grams: 4160,
                units_est: Some(4),
            }),
            json!({"slot": 3, "sku": "SKU-1002", "grams": 4160, "units_est": 4}),
        );
        roundtrip(
            EventBody::LabelAck(LabelAck {
                label_id: "0000021A4B3C5D6E".into(),
                sku: "SKU-1001".into(),
                price_version: 57,
                status: LabelStatus::Ok,
                battery_mv: Some(2950),
                rssi: Some(-61),
            }),
            json!({"label_id": "0000021A4B3C5D6E", "sku": "SKU-1001", "price_version": 57, "status": "ok",
                   "battery_mv": 2950, "rssi": -61}),
        );
        roundtrip(
            EventBody::LabelHealth(LabelHealth {
                label_id: "0000021A4B3C5D6E".into(),
                battery_mv: Some(2950),
                rssi: None,
                last_seen: ts(),
                offline: false,
            }),
            json!({"label_id": "0000021A4B3C5D6E", "battery_mv": 2950,
                   "last_seen": "2026-11-22T10:15:30.123Z", "offline": false}),
        );
        roundtrip(
            EventBody::PriceConflict(PriceConflict {
                sku: "SKU-1001".into(),
                pos_price_minor: 249,
                shelf_price_minor: 199,
                currency: "EUR".into(),
                receipt_id: Some("R-1".into()),
                label_id: None,
            }),
            json!({"sku": "SKU-1001", "pos_price_minor": 249, "shelf_price_minor": 199, "currency": "EUR", "receipt_id": "R-1"}),
        );
        let mut context = serde_json::Map::new();
        context.insert("on_hand".into(), json!(3));
        roundtrip(
            EventBody::Alert(Alert {
                code: "low_stock".into(),
                severity: Severity::Warning,
                message: "SKU-1001: 3 on hand, minimum 6".into(),
                subject: "SKU-1001".into(),
                state: AlertState::Open,
                context,
            }),
            json!({"code": "low_stock", "severity": "warning", "message": "SKU-1001: 3 on hand, minimum 6",
                   "subject": "SKU-1001", "state": "open", "on_hand": 3}),
        );
        roundtrip(
            EventBody::Reading(Reading {
                name: "temperature".into(),
                value: 4.5,
                unit: "C".into(),
            }),
            json!({"name": "temperature", "value": 4.5, "unit": "C"}),
        );
    }

    #[test]
    fn order_event_shapes() {
        let line = |sku: &str, qty| OrderLine {
            sku: sku.into(),
            qty,
        };
        roundtrip(
            EventBody::OrderReserved(OrderReserved {
                order_id: "WEB-88121".into(),
                lines: vec![line("SKU-1001", 2)],
                promised_at: ts(),
                expires_at: ts(),
            }),
            json!({"order_id": "WEB-88121", "lines": [{"sku": "SKU-1001", "qty": 2}],
                   "promised_at": "2026-11-22T10:15:30.123Z", "expires_at": "2026-11-22T10:15:30.123Z"}),
        );
        roundtrip(
            EventBody::OrderPicked(OrderPicked {
                order_id: "WEB-88121".into(),
                lines: vec![PickedLine {
                    sku: "SKU-1001".into(),
                    qty: 2,
                    picked: 1,
                    epcs: vec!["3074257BF7194E4000001A85".into()],
                    short: 1,
                }],
                by: None,
            }),
            json!({"order_id": "WEB-88121", "lines": [{"sku": "SKU-1001", "qty": 2, "picked": 1,
                   "epcs": ["3074257BF7194E4000001A85"], "short": 1}]}),
        );
        let handed_over = EventBody::OrderHandedOver(OrderHandedOver {
            order_id: "WEB-88121".into(),
            lines: vec![line("SKU-1001", 1), line("SKU-1004", 3)],
            by: Some("anna".into()),
        });
        assert_eq!(
            handed_over.stock_moves().collect::<Vec<_>>(),
            [("SKU-1001", -1), ("SKU-1004", -3)]
        );
        roundtrip(
            handed_over,
            json!({"order_id": "WEB-88121", "by": "anna",
                   "lines": [{"sku": "SKU-1001", "qty": 1}, {"sku": "SKU-1004", "qty": 3}]}),
        );
        let released = OrderReleased {
            order_id: "WEB-88007".into(),
            return_to_shelf: vec![],
        };
        roundtrip(
            EventBody::OrderExpired(released.clone()),
            json!({"order_id": "WEB-88007"}),
        );
        roundtrip(
            EventBody::OrderCancelled(released),
            json!({"order_id": "WEB-88007"}),
        );
    }

    #[test]
    fn task_event_shapes() {
        roundtrip(
            EventBody::TaskOpened(TaskOpened {
                task_id: "T-41".into(),
                task: "refill".into(),
                alert_code: "low_stock".into(),
                subject: "SKU-1001@shelf-1/0".into(),
                severity: Severity::Warning,
                message: "refill SKU-1001".into(),
                zone: Some("A1".into()),
                sku: Some("SKU-1001".into()),
                suggested_qty: Some(10),
                backroom_qty: None,
                shelf_units: Some(2),
            }),
            json!({"task_id": "T-41", "task": "refill", "alert_code": "low_stock",
                   "subject": "SKU-1001@shelf-1/0", "severity": "warning", "message": "refill SKU-1001",
                   "zone": "A1", "sku": "SKU-1001", "suggested_qty": 10, "shelf_units": 2}),
        );
        roundtrip(
            EventBody::TaskDone(TaskDone {
                task_id: "T-41".into(),
                by: Some("anna".into()),
                confirmed_by: None,
                check_at: Some(ts()),
            }),
            json!({"task_id": "T-41", "by": "anna", "check_at": "2026-11-22T10:15:30.123Z"}),
        );
        roundtrip(
            EventBody::TaskDone(TaskDone {
                task_id: "T-41".into(),
                by: None,
                confirmed_by: Some("shelf_weight".into()),
                check_at: None,
            }),
            json!({"task_id": "T-41", "confirmed_by": "shelf_weight"}),
        );
        roundtrip(
            EventBody::TaskDismissed(TaskDismissed {
                task_id: "T-41".into(),
                by: None,
                reason: "delisted".into(),
            }),
            json!({"task_id": "T-41", "reason": "delisted"}),
        );
    }

    #[test]
    fn every_kind_is_listed_once() {
        let mut kinds = KINDS.to_vec();
        kinds.sort();
        kinds.dedup();
        assert_eq!(kinds.len(), KINDS.len());
    }

    #[test]
    fn unknown_data_fields_are_ignored() {
        let body = EventBody::from_parts(
            "receipt",
            r#"{"delivery_id":"D-1","sku":"S","qty":1,"added_in_a_later_version":true}"#,
        )
        .unwrap();
        assert_eq!(body.stock_move(), Some(("S", 1)));
    }

    #[test]
    fn stock_moves_follow_the_spec_table() {
        assert_eq!(
            EventBody::Sale(sale_line()).stock_move(),
            Some(("SKU-1001", -2))
        );
        assert_eq!(
            EventBody::Return(sale_line()).stock_move(),
            Some(("SKU-1001", 2))
        );
        assert_eq!(
            EventBody::Reading(Reading {
                name: "t".into(),
                value: 1.0,
                unit: "C".into()
            })
            .stock_move(),
            None
        );
    }
}
