//! Electronic shelf label codecs (spec/profiles.md "ESL codecs"): what a
//! price update looks like on the wire to a label, and how the label side
//! says which version it displays. This is the pure part; publishing,
//! polling and retrying are the transports' job.
//!
//! - `esl-json`: labels (or their gateway) on MQTT. An update is published
//!   to `{base}/{label_id}/set`, the label answers on
//!   `{base}/{label_id}/status` with the version it now shows.
//! - `openepaperlink`: an OpenEPaperLink access point over HTTP. Content
//!   goes up with `POST /jsonupload` (a drawing made from the profile's
//!   template); the AP's tag database (`GET /get_db`) tells when a tag has
//!   fetched it: no longer pending and seen after the upload.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::event::LabelStatus;

pub use crate::event::device::{LabelSeen, LabelUpdate, Promo};

/// A JSON value for an error message, cut short so that a huge payload
/// does not make a huge quarantine reason.
fn describe(value: &Value) -> String {
    const MAX: usize = 60;
    let text = value.to_string();
    if text.chars().count() <= MAX {
        return text;
    }
    let short: String = text.chars().take(MAX).collect();
    format!("{short}...")
}

/// `"not JSON: ..."` or the object of a payload that must be one.
fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, String> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(obj)) => Ok(obj),
        Ok(other) => Err(format!(
            "expected a JSON object, found {}",
            describe(&other)
        )),
        Err(e) => Err(format!("not JSON: {e}")),
    }
}

fn required_str<'a>(obj: &'a Map<String, Value>, field: &str) -> Result<&'a str, String> {
    match obj.get(field) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(format!(
            "{field}: expected a string, found {}",
            describe(other)
        )),
        None => Err(format!("{field}: missing")),
    }
}

fn required_i64(obj: &Map<String, Value>, field: &str) -> Result<i64, String> {
    match obj.get(field) {
        Some(v) => v
            .as_i64()
            .ok_or_else(|| format!("{field}: expected an integer, found {}", describe(v))),
        None => Err(format!("{field}: missing")),
    }
}

/// An optional integer: absent and `null` are `None`, anything else but
/// an integer is an error.
fn optional_i64(obj: &Map<String, Value>, field: &str) -> Result<Option<i64>, String> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| format!("{field}: expected an integer, found {}", describe(v))),
    }
}

// ---------------------------------------------------------------------------
// esl-json over MQTT
// ---------------------------------------------------------------------------

fn default_esl_json_ack_timeout_s() -> u64 {
    60
}

/// The `[esl_json]` table of a firmware profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EslJsonParams {
    /// Seconds to wait for a label's `status` before the update counts as
    /// failed (and is retried).
    #[serde(default = "default_esl_json_ack_timeout_s")]
    pub ack_timeout_s: u64,
}

impl Default for EslJsonParams {
    fn default() -> Self {
        EslJsonParams {
            ack_timeout_s: default_esl_json_ack_timeout_s(),
        }
    }
}

/// The topic an update for `label_id` is published to.
pub fn set_topic(base: &str, label_id: &str) -> String {
    format!("{base}/{label_id}/set")
}

/// The subscription filter that receives every label's status.
pub fn status_filter(base: &str) -> String {
    format!("{base}/+/status")
}

/// The MQTT payload of an update:
/// `{"label_id","sku","name","price_minor","currency","price_text","promo","version"}`
/// with `promo` `null` when there is none.
pub fn set_payload(update: &LabelUpdate) -> Vec<u8> {
    // Serialising a struct of strings, integers and a timestamp cannot fail.
    serde_json::to_vec(update).unwrap_or_default()
}

/// What a label said about an update, read from its status message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelStatusReport {
    pub label_id: String,
    /// The price book version the report is about.
    pub version: i64,
    /// `Ok` when the label displays `version`, `Failed` when it could not.
    pub status: LabelStatus,
    pub battery_mv: Option<i64>,
    pub rssi: Option<i64>,
}

/// The label segment of a `{base}/{label_id}/status` topic, if the topic
/// has that shape.
fn topic_label_id(topic: &str) -> Option<&str> {
    let rest = topic.strip_suffix("/status")?;
    let (_base, label_id) = rest.rsplit_once('/')?;
    Some(label_id)
}

/// Read a label's status message
/// `{"label_id","version","status":"ok|failed","battery_mv","rssi"}`.
/// The label id comes from the payload and must agree with the topic's
/// label segment, so that a label cannot confirm another label's update.
/// Errors name the offending field.
pub fn parse_status(topic: &str, payload: &[u8]) -> Result<LabelStatusReport, String> {
    let obj = parse_object(payload)?;
    let label_id = required_str(&obj, "label_id")?;
    if label_id.is_empty() {
        return Err("label_id: empty".to_string());
    }
    if let Some(from_topic) = topic_label_id(topic) {
        if from_topic != label_id {
            return Err(format!(
                "label_id: {label_id:?} disagrees with topic {topic:?}"
            ));
        }
    }
    let version = required_i64(&obj, "version")?;
    let status = match obj.get("status") {
        Some(Value::String(s)) if s == "ok" => LabelStatus::Ok,
        Some(Value::String(s)) if s == "failed" => LabelStatus::Failed,
        Some(other) => {
            return Err(format!(
                "status: expected \"ok\" or \"failed\", found {}",
                describe(other)
            ));
        }
        None => return Err("status: missing".to_string()),
    };
    Ok(LabelStatusReport {
        label_id: label_id.to_string(),
        version,
        status,
        battery_mv: optional_i64(&obj, "battery_mv")?,
        rssi: optional_i64(&obj, "rssi")?,
    })
}

// ---------------------------------------------------------------------------
// openepaperlink over HTTP
// ---------------------------------------------------------------------------

fn default_oepl_ack_timeout_s() -> u64 {
    // E-paper tags sleep and check in with the AP every few minutes; only
    // then do they fetch new content.
    600
}

fn default_stale_after_s() -> u64 {
    3600
}

fn default_poll_ms() -> u64 {
    10_000
}

/// The `[openepaperlink]` table of a firmware profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OeplParams {
    /// The drawing sent with `/jsonupload`: JSON text with the placeholders
    /// `{name}`, `{price_text}`, `{sku}` and `{promo_text}` (the promo
    /// price, empty without a promo) inside JSON strings.
    pub template: String,
    /// Seconds to wait for the tag to fetch the upload before the update
    /// counts as failed.
    #[serde(default = "default_oepl_ack_timeout_s")]
    pub ack_timeout_s: u64,
    /// A tag not seen for this long raises a stale-label alert.
    #[serde(default = "default_stale_after_s")]
    pub stale_after_s: u64,
    /// How often `/get_db` is polled.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
}

/// A tag MAC as OpenEPaperLink writes it: 16 upper-case hex digits.
/// Lower case and `:`/`-` separators are accepted; other lengths are not.
pub fn normalize_mac(s: &str) -> Result<String, String> {
    let hex: String = s
        .trim()
        .chars()
        .filter(|c| *c != ':' && *c != '-')
        .collect();
    if let Some(bad) = hex.chars().find(|c| !c.is_ascii_hexdigit()) {
        return Err(format!("mac {s:?}: {bad:?} is not a hex digit"));
    }
    if hex.len() != 16 {
        return Err(format!(
            "mac {s:?}: expected 16 hex digits, found {}",
            hex.len()
        ));
    }
    Ok(hex.to_ascii_uppercase())
}

/// `s` escaped for use inside a JSON string literal (without the quotes).
fn json_escape(s: &str) -> String {
    let quoted = Value::String(s.to_string()).to_string();
    let inner = quoted.strip_prefix('"').unwrap_or(&quoted);
    inner.strip_suffix('"').unwrap_or(inner).to_string()
}

/// Replace each `{placeholder}` of `template` in one pass, so that a value
/// that itself contains `{sku}` is left alone.
fn substitute(template: &str, values: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let at = &rest[start..];
        match values.iter().find(|(key, _)| at.starts_with(key)) {
            Some((key, value)) => {
                out.push_str(value);
                rest = &at[key.len()..];
            }
            None => {
                // A '{' of the JSON itself ('{' is one byte).
                out.push('{');
                rest = &at[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The draw template with the update's values in place. Each value is
/// JSON-escaped, so a name with quotes or backslashes keeps the JSON valid.
fn render(update: &LabelUpdate, template: &str) -> String {
    let promo_text = update
        .promo
        .as_ref()
        .map(|p| p.price_text.as_str())
        .unwrap_or("");
    let values = [
        ("{name}", json_escape(&update.name)),
        ("{price_text}", json_escape(&update.price_text)),
        ("{sku}", json_escape(&update.sku)),
        ("{promo_text}", json_escape(promo_text)),
    ];
    substitute(template, &values)
}

/// The form fields of `POST /jsonupload` for an update: `mac` (the label
/// id, normalised when it is a valid MAC) and `json` (the drawing).
pub fn upload_form(update: &LabelUpdate, template: &str) -> Vec<(String, String)> {
    // An invalid id is sent as given; the AP refuses it and the update
    // times out like any other failure.
    let mac = normalize_mac(&update.label_id).unwrap_or_else(|_| update.label_id.clone());
    vec![
        ("mac".to_string(), mac),
        ("json".to_string(), render(update, template)),
    ]
}

/// Check a profile's template: with sample values (including a quote) in
/// place it must be a JSON array of drawing commands.
pub fn check_template(template: &str) -> Result<(), String> {
    let sample = LabelUpdate {
        label_id: "0000000000000000".to_string(),
        sku: "SKU-1".to_string(),
        name: "Oat \"milk\" 1L".to_string(),
        price_minor: 249,
        currency: "EUR".to_string(),
        price_text: "2,49 €".to_string(),
        promo: None,
        version: 1,
    };
    match serde_json::from_str::<Value>(&render(&sample, template)) {
        Ok(Value::Array(_)) => Ok(()),
        Ok(other) => Err(format!(
            "template: expected a JSON array of drawing commands, found {}",
            describe(&other)
        )),
        Err(e) => Err(format!("template: not JSON once filled in: {e}")),
    }
}

/// The request path of one page of the AP's tag database.
pub fn get_db_path(pos: u64) -> String {
    format!("/get_db?pos={pos}")
}

/// One page of `/get_db`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetDbPage {
    pub tags: Vec<OeplTag>,
    /// 0 on the last page, else the `pos` of the next page.
    pub continu: u64,
}

/// What the agent needs of one tag record of `/get_db`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OeplTag {
    /// 16 upper-case hex digits.
    pub mac: String,
    /// The tag has content waiting that it has not fetched yet.
    pub pending: bool,
    /// When the tag last checked in, epoch seconds.
    pub lastseen: i64,
    /// `batteryMv`; `None` when absent or a placeholder rather than a
    /// measurement.
    pub battery_mv: Option<i64>,
    /// `RSSI` of the tag's last check-in.
    pub rssi: Option<i64>,
    /// MD5 of the content the tag has; empty when absent.
    pub hash: String,
    /// The tag has an LED the AP can flash (`capabilities` bit
    /// [`CAPABILITY_HAS_LED`]); `false` when the record does not say.
    pub has_led: bool,
    /// `isexternal`: the record is a copy from another AP, which manages
    /// the tag; content for it goes to that AP, not this one.
    pub external: bool,
}

/// The `capabilities` bit of a tag record saying the tag has an LED
/// (`CAPABILITY_HAS_LED` of the OpenEPaperLink firmware).
pub const CAPABILITY_HAS_LED: u64 = 0x01;

/// A health value of a tag record: a bad or missing one is only unknown,
/// it must not keep the record's confirmation from counting.
fn health_value(obj: &Map<String, Value>, field: &str) -> Option<i64> {
    obj.get(field).and_then(Value::as_i64)
}

fn parse_tag(value: &Value) -> Result<OeplTag, String> {
    let Value::Object(obj) = value else {
        return Err(format!("expected an object, found {}", describe(value)));
    };
    let mac = normalize_mac(required_str(obj, "mac")?)?;
    // Current AP firmware writes the number of queued items
    // (`pendingCount`), older firmware a boolean.
    let pending = match obj.get("pending") {
        Some(Value::Bool(b)) => *b,
        Some(v) => match v.as_u64() {
            Some(count) => count > 0,
            None => {
                return Err(format!(
                    "pending: expected a boolean or a count, found {}",
                    describe(v)
                ));
            }
        },
        None => return Err("pending: missing".to_string()),
    };
    let lastseen = required_i64(obj, "lastseen")?;
    // The AP itself does not count 0 (never reported) and 1337 (a display
    // without a battery) as low batteries: they are not measurements.
    let battery_mv = health_value(obj, "batteryMv").filter(|mv| *mv != 0 && *mv != 1337);
    let hash = match obj.get("hash") {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    // Like the health values: a record that does not say is only unknown.
    let has_led = obj
        .get("capabilities")
        .and_then(Value::as_u64)
        .is_some_and(|c| c & CAPABILITY_HAS_LED != 0);
    let external = obj
        .get("isexternal")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(OeplTag {
        mac,
        pending,
        lastseen,
        battery_mv,
        rssi: health_value(obj, "RSSI"),
        hash,
        has_led,
        external,
    })
}

/// Read one page of `GET /get_db`: `{"tags":[...],"continu":n}`. The AP
/// only writes `continu` when more pages follow, so its absence means the
/// last page. Only the fields of [`OeplTag`] are read; a record without
/// `mac`, `pending` or `lastseen` is an error naming its index.
pub fn parse_get_db(body: &[u8]) -> Result<GetDbPage, String> {
    let obj = parse_object(body)?;
    let records = match obj.get("tags") {
        Some(Value::Array(records)) => records,
        Some(other) => {
            return Err(format!(
                "tags: expected an array, found {}",
                describe(other)
            ));
        }
        None => {
            // The AP answers some bad requests with {"error": "..."}.
            if let Some(Value::String(msg)) = obj.get("error") {
                return Err(format!("access point error: {msg}"));
            }
            return Err("tags: missing".to_string());
        }
    };
    let continu = match obj.get("continu") {
        None | Some(Value::Null) => 0,
        Some(v) => v.as_u64().ok_or_else(|| {
            format!(
                "continu: expected a non-negative integer, found {}",
                describe(v)
            )
        })?,
    };
    let tags = records
        .iter()
        .enumerate()
        .map(|(i, record)| parse_tag(record).map_err(|e| format!("tags[{i}]: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(GetDbPage { tags, continu })
}

impl OeplTag {
    /// The record as the domain reads it (`domain::labels::reconcile`).
    pub fn seen(&self) -> LabelSeen {
        LabelSeen {
            last_seen: crate::event::ts_from_millis(self.lastseen.saturating_mul(1000)),
            pending: self.pending,
            battery_mv: self.battery_mv,
            rssi: self.rssi,
        }
    }
}

/// Whether a tag displays content uploaded at `uploaded_at`: nothing left
/// pending, and checked in after the upload. `lastseen` has whole seconds,
/// so it must be later than the upload's second to be after it.
pub fn confirmed(tag: &OeplTag, uploaded_at: DateTime<Utc>) -> bool {
    tag.seen().fetched_since(uploaded_at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const BASE: &str = "store/42/esl";

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn update() -> LabelUpdate {
        LabelUpdate {
            label_id: "0000021A4B3C5D6E".into(),
            sku: "SKU-1001".into(),
            name: "Oat milk 1L".into(),
            price_minor: 249,
            currency: "EUR".into(),
            price_text: "2,49\u{a0}€".into(),
            promo: Some(Promo {
                price_minor: 199,
                until: at("2026-11-29T00:00:00Z"),
                price_text: "1,99\u{a0}€".into(),
            }),
            version: 57,
        }
    }

    // -- esl-json ----------------------------------------------------------

    #[test]
    fn topics() {
        assert_eq!(
            set_topic(BASE, "0000021A4B3C5D6E"),
            "store/42/esl/0000021A4B3C5D6E/set"
        );
        assert_eq!(status_filter(BASE), "store/42/esl/+/status");
    }

    #[test]
    fn set_payload_has_the_spec_shape() {
        let value: Value = serde_json::from_slice(&set_payload(&update())).unwrap();
        assert_eq!(
            value,
            json!({"label_id": "0000021A4B3C5D6E", "sku": "SKU-1001", "name": "Oat milk 1L",
                   "price_minor": 249, "currency": "EUR", "price_text": "2,49\u{a0}€",
                   "promo": {"price_minor": 199, "until": "2026-11-29T00:00:00.000Z",
                             "price_text": "1,99\u{a0}€"},
                   "version": 57})
        );
        let no_promo = LabelUpdate {
            promo: None,
            ..update()
        };
        let value: Value = serde_json::from_slice(&set_payload(&no_promo)).unwrap();
        assert_eq!(value["promo"], Value::Null);
    }

    #[test]
    fn set_and_status_round_trip() {
        let sent = update();
        let payload = set_payload(&sent);
        // What the label receives is the update itself.
        let received: LabelUpdate = serde_json::from_slice(&payload).unwrap();
        assert_eq!(received, sent);

        // The label answers on its status topic with the version it shows.
        let topic = format!("{BASE}/{}/status", received.label_id);
        let answer = json!({"label_id": received.label_id, "version": received.version,
                            "status": "ok", "battery_mv": 2950, "rssi": -61});
        let report = parse_status(&topic, answer.to_string().as_bytes()).unwrap();
        assert_eq!(
            report,
            LabelStatusReport {
                label_id: "0000021A4B3C5D6E".into(),
                version: 57,
                status: LabelStatus::Ok,
                battery_mv: Some(2950),
                rssi: Some(-61),
            }
        );
    }

    #[test]
    fn status_of_a_label_that_failed() {
        let report = parse_status(
            "store/42/esl/L-7/status",
            br#"{"label_id":"L-7","version":57,"status":"failed"}"#,
        )
        .unwrap();
        assert_eq!(report.status, LabelStatus::Failed);
        assert_eq!(report.version, 57);
        assert_eq!(report.battery_mv, None);
        assert_eq!(report.rssi, None);
    }

    #[test]
    fn status_on_a_topic_of_another_shape_takes_the_payload_id() {
        let report = parse_status(
            "labels-status",
            br#"{"label_id":"L-7","version":1,"status":"ok","battery_mv":null}"#,
        )
        .unwrap();
        assert_eq!(report.label_id, "L-7");
        assert_eq!(report.battery_mv, None);
    }

    #[test]
    fn malformed_status_payloads_are_refused_with_the_field() {
        let topic = "store/42/esl/L-7/status";
        let err = |payload: &str| parse_status(topic, payload.as_bytes()).unwrap_err();

        assert!(err("{nope").starts_with("not JSON"));
        assert!(err("").starts_with("not JSON"));
        assert_eq!(err("[1]"), "expected a JSON object, found [1]");
        assert_eq!(
            err(r#"{"label_id":"L-7","status":"ok"}"#),
            "version: missing"
        );
        assert_eq!(
            err(r#"{"label_id":"L-7","version":"57","status":"ok"}"#),
            "version: expected an integer, found \"57\""
        );
        assert_eq!(
            err(r#"{"label_id":"L-7","version":57,"status":"maybe"}"#),
            "status: expected \"ok\" or \"failed\", found \"maybe\""
        );
        assert_eq!(err(r#"{"label_id":"L-7","version":57}"#), "status: missing");
        assert_eq!(err(r#"{"version":57,"status":"ok"}"#), "label_id: missing");
        assert_eq!(
            err(r#"{"label_id":"L-8","version":57,"status":"ok"}"#),
            "label_id: \"L-8\" disagrees with topic \"store/42/esl/L-7/status\""
        );
        assert_eq!(
            err(r#"{"label_id":"L-7","version":57,"status":"ok","rssi":"-61"}"#),
            "rssi: expected an integer, found \"-61\""
        );
        // Long values are cut short in the message.
        let long = format!(
            r#"{{"label_id":"L-7","version":57,"status":"{}"}}"#,
            "x".repeat(500)
        );
        assert!(err(&long).len() < 150);
    }

    #[test]
    fn esl_json_params_default_and_deny_unknown_fields() {
        let p: EslJsonParams = toml::from_str("").unwrap();
        assert_eq!(p, EslJsonParams { ack_timeout_s: 60 });
        assert_eq!(EslJsonParams::default(), p);
        assert!(toml::from_str::<EslJsonParams>("ack_timeout = 5").is_err());
    }

    // -- openepaperlink ------------------------------------------------------

    /// The sample of /work/shared/samples/oepl-get_db.json.
    const GET_DB_SAMPLE: &str = r#"{"tags":[{"mac":"0000021A4B3C5D6E","hash":"5f3a9c0e1d2b4a6f8e7d6c5b4a392817","lastseen":1763805600,"nextupdate":1763809200,"nextcheckin":1763805640,"pending":false,"alias":"A1-03","contentMode":19,"LQI":98,"RSSI":-61,"temperature":21,"batteryMv":2950,"hwType":1,"wakeupReason":0,"capabilities":0,"modecfgjson":"","isexternal":false,"apip":"0.0.0.0","rotate":0,"lut":0,"invert":0,"updatecount":14,"updatelast":1763805590,"ch":11,"ver":31},
 {"mac":"0000021A4B3C5D6F","hash":"00000000000000000000000000000000","lastseen":1763805000,"nextupdate":0,"nextcheckin":1763805640,"pending":true,"alias":"A1-04","contentMode":19,"LQI":80,"RSSI":-72,"temperature":20,"batteryMv":2410,"hwType":1,"wakeupReason":0,"capabilities":0,"modecfgjson":"","isexternal":false,"apip":"0.0.0.0","rotate":0,"lut":0,"invert":0,"updatecount":3,"updatelast":1763804000,"ch":11,"ver":31}],
 "continu":0}"#;

    #[test]
    fn get_db_sample() {
        let page = parse_get_db(GET_DB_SAMPLE.as_bytes()).unwrap();
        assert_eq!(page.continu, 0);
        assert_eq!(page.tags.len(), 2);
        assert_eq!(
            page.tags[0],
            OeplTag {
                mac: "0000021A4B3C5D6E".into(),
                pending: false,
                lastseen: 1_763_805_600,
                battery_mv: Some(2950),
                rssi: Some(-61),
                hash: "5f3a9c0e1d2b4a6f8e7d6c5b4a392817".into(),
                has_led: false,
                external: false,
            }
        );
        assert!(page.tags[1].pending);
        assert_eq!(page.tags[1].battery_mv, Some(2410));

        // lastseen 1763805600 is 2025-11-22T10:00:00Z.
        let before = at("2025-11-22T09:59:30.250Z");
        assert!(confirmed(&page.tags[0], before));
        // The second tag has not fetched its content yet.
        assert!(!confirmed(&page.tags[1], before));
        // An upload in the same second as the check-in, or later, is not
        // confirmed by it.
        assert!(!confirmed(&page.tags[0], at("2025-11-22T10:00:00.000Z")));
        assert!(!confirmed(&page.tags[0], at("2025-11-22T10:00:00.900Z")));
        assert!(!confirmed(&page.tags[0], at("2025-11-22T10:05:00Z")));
    }

    #[test]
    fn get_db_pagination() {
        assert_eq!(get_db_path(0), "/get_db?pos=0");
        assert_eq!(get_db_path(12), "/get_db?pos=12");

        let body =
            br#"{"tags":[{"mac":"0000021a4b3c5d6e","pending":0,"lastseen":5}],"continu":12}"#;
        let page = parse_get_db(body).unwrap();
        assert_eq!(page.continu, 12);
        assert_eq!(page.tags[0].mac, "0000021A4B3C5D6E");
        assert!(!page.tags[0].pending);
        assert_eq!(page.tags[0].hash, "");
        assert_eq!(page.tags[0].battery_mv, None);
        assert!(!page.tags[0].has_led && !page.tags[0].external);
        let body = br#"{"tags":[{"mac":"0000021A4B3C5D6E","pending":0,"lastseen":5,"capabilities":225,"isexternal":true}]}"#;
        let tag = &parse_get_db(body).unwrap().tags[0];
        assert!(tag.has_led && tag.external);

        // Current firmware only writes `continu` when more pages follow.
        let last = parse_get_db(br#"{"tags":[]}"#).unwrap();
        assert_eq!(
            last,
            GetDbPage {
                tags: vec![],
                continu: 0
            }
        );
    }

    #[test]
    fn get_db_pending_count_and_placeholder_battery() {
        let body = br#"{"tags":[{"mac":"0000021A4B3C5D6E","pending":2,"lastseen":5,"batteryMv":1337,"RSSI":"x"}]}"#;
        let tag = &parse_get_db(body).unwrap().tags[0];
        assert!(tag.pending);
        assert_eq!(tag.battery_mv, None);
        assert_eq!(tag.rssi, None);
    }

    #[test]
    fn malformed_get_db_names_the_record() {
        let err = |body: &str| parse_get_db(body.as_bytes()).unwrap_err();
        assert!(err("<html>").starts_with("not JSON"));
        assert_eq!(err("{}"), "tags: missing");
        assert_eq!(
            err(r#"{"error": "malformatted parameter"}"#),
            "access point error: malformatted parameter"
        );
        assert_eq!(err(r#"{"tags":{}}"#), "tags: expected an array, found {}");
        assert_eq!(
            err(r#"{"tags":[],"continu":-1}"#),
            "continu: expected a non-negative integer, found -1"
        );
        let ok = r#"{"mac":"0000021A4B3C5D6E","pending":false,"lastseen":5}"#;
        assert_eq!(
            err(&format!(
                r#"{{"tags":[{ok},{{"mac":"0000021A4B3C5D6F","pending":false}}]}}"#
            )),
            "tags[1]: lastseen: missing"
        );
        assert_eq!(
            err(r#"{"tags":[{"pending":false,"lastseen":5}]}"#),
            "tags[0]: mac: missing"
        );
        assert_eq!(
            err(r#"{"tags":[{"mac":"0000021A4B3C5D6E","lastseen":5}]}"#),
            "tags[0]: pending: missing"
        );
        assert_eq!(
            err(r#"{"tags":[{"mac":"0000021A4B3C5D6E","pending":"no","lastseen":5}]}"#),
            "tags[0]: pending: expected a boolean or a count, found \"no\""
        );
        assert_eq!(
            err(r#"{"tags":[{"mac":"1234","pending":false,"lastseen":5}]}"#),
            "tags[0]: mac \"1234\": expected 16 hex digits, found 4"
        );
        assert_eq!(
            err(r#"{"tags":[7]}"#),
            "tags[0]: expected an object, found 7"
        );
    }

    #[test]
    fn macs_are_normalised() {
        assert_eq!(
            normalize_mac("0000021a4b3c5d6e"),
            Ok("0000021A4B3C5D6E".into())
        );
        assert_eq!(
            normalize_mac("00:00:02:1a:4b:3c:5d:6e"),
            Ok("0000021A4B3C5D6E".into())
        );
        assert_eq!(
            normalize_mac("00-00-02-1A-4B-3C-5D-6E"),
            Ok("0000021A4B3C5D6E".into())
        );
        assert!(normalize_mac("0000021A4B3C").is_err());
        assert!(normalize_mac("0000021A4B3C5D6E00").is_err());
        assert!(normalize_mac("").is_err());
        assert_eq!(
            normalize_mac("0000021A4B3C5D6G"),
            Err("mac \"0000021A4B3C5D6G\": 'G' is not a hex digit".into())
        );
        // Multi-byte input is refused, not sliced.
        assert!(normalize_mac("0000021A4B3C5D6€").is_err());
    }

    const TEMPLATE: &str = r#"[{"text":[5,5,"{name}","fonts/bahnschrift20",1]},{"text":[5,40,"{price_text}","fonts/bahnschrift30",2]},{"text":[5,80,"{promo_text}","fonts/bahnschrift20",2]},{"text":[5,105,"{sku}","fonts/bahnschrift20",1]}]"#;

    #[test]
    fn upload_form_fills_the_template() {
        let form = upload_form(&update(), TEMPLATE);
        assert_eq!(form[0], ("mac".to_string(), "0000021A4B3C5D6E".to_string()));
        assert_eq!(form[1].0, "json");
        let drawing: Value = serde_json::from_str(&form[1].1).unwrap();
        assert_eq!(drawing[0]["text"][2], "Oat milk 1L");
        assert_eq!(drawing[1]["text"][2], "2,49\u{a0}€");
        assert_eq!(drawing[2]["text"][2], "1,99\u{a0}€");
        assert_eq!(drawing[3]["text"][2], "SKU-1001");

        let no_promo = LabelUpdate {
            promo: None,
            ..update()
        };
        let drawing: Value = serde_json::from_str(&upload_form(&no_promo, TEMPLATE)[1].1).unwrap();
        assert_eq!(drawing[2]["text"][2], "");
    }

    #[test]
    fn quotes_and_backslashes_in_a_name_keep_the_json_valid() {
        let tricky = LabelUpdate {
            name: r#"12" pizza \ "XL" {sku} }"#.into(),
            sku: "SKU\n1".into(),
            ..update()
        };
        let form = upload_form(&tricky, TEMPLATE);
        let drawing: Value = serde_json::from_str(&form[1].1).unwrap();
        // The name arrives intact, and its "{sku}" is not substituted again.
        assert_eq!(drawing[0]["text"][2], r#"12" pizza \ "XL" {sku} }"#);
        assert_eq!(drawing[3]["text"][2], "SKU\n1");
    }

    #[test]
    fn unknown_placeholders_and_odd_templates_pass_through() {
        assert_eq!(substitute("{x}{", &[]), "{x}{");
        assert_eq!(substitute("", &[("{a}", "b".into())]), "");
        assert_eq!(substitute("{a}{a}", &[("{a}", "b".into())]), "bb");
        assert!(check_template(TEMPLATE).is_ok());
        assert!(check_template(r#"{"text":"{name}"}"#).is_err());
        assert!(check_template(r#"[{"text":"{name}"]"#).is_err());
    }

    #[test]
    fn oepl_params_defaults() {
        let p: OeplParams = toml::from_str(r#"template = "[]""#).unwrap();
        assert_eq!(
            p,
            OeplParams {
                template: "[]".into(),
                ack_timeout_s: 600,
                stale_after_s: 3600,
                poll_ms: 10_000,
            }
        );
        assert!(toml::from_str::<OeplParams>("ack_timeout_s = 5").is_err());
        assert!(toml::from_str::<OeplParams>("template = \"[]\"\npoll = 5").is_err());
    }

    // -- profiles ------------------------------------------------------------

    /// The header every profile has, returned with the profile's table.
    fn profile(text: &str, name: &str, codec: &str) -> toml::Table {
        let table: toml::Table = toml::from_str(text).unwrap();
        assert_eq!(table["name"].as_str(), Some(name));
        assert_eq!(table["kind"].as_str(), Some("esl"));
        assert_eq!(table["codec"].as_str(), Some(codec));
        assert!(table["description"].as_str().is_some_and(|d| !d.is_empty()));
        table
    }

    #[test]
    fn esl_mqtt_profile() {
        let table = profile(
            include_str!("../../firmware-profiles/esl-mqtt.toml"),
            "esl-mqtt",
            "esl-json",
        );
        let params: EslJsonParams = table["esl_json"].clone().try_into().unwrap();
        assert_eq!(params.ack_timeout_s, 60);
    }

    #[test]
    fn openepaperlink_ap_profile() {
        let table = profile(
            include_str!("../../firmware-profiles/openepaperlink-ap.toml"),
            "openepaperlink-ap",
            "openepaperlink",
        );
        let params: OeplParams = table["openepaperlink"].clone().try_into().unwrap();
        assert_eq!(params.ack_timeout_s, 600);
        assert_eq!(params.stale_after_s, 3600);
        assert_eq!(params.poll_ms, 10_000);
        assert_eq!(check_template(&params.template), Ok(()));

        let form = upload_form(&update(), &params.template);
        let drawing: Value = serde_json::from_str(&form[1].1).unwrap();
        let texts: Vec<&str> = drawing
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|cmd| cmd["text"][2].as_str())
            .collect();
        assert!(texts.contains(&"Oat milk 1L"));
        assert!(texts.contains(&"2,49\u{a0}€"));
        assert!(texts.contains(&"SKU-1001"));
    }
}
