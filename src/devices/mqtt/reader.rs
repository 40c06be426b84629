//! How one MQTT device's messages become journal input: its subscription
//! filter, its codec, and its size limit.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::codecs::json::{DecodeContext, JsonCodec};
use crate::codecs::{Decoded, esl};
use crate::config::Transport;
use crate::devices::{DeviceError, DeviceSpec};
use crate::event::{EventBody, LabelAck};
use crate::profiles::Codec;

/// How much of an oversize message the quarantine keeps.
const OVERSIZE_HEAD: usize = 1024;

/// How one device's messages become journal input.
pub(super) struct Reader {
    /// The subscription filter.
    pub(super) filter: String,
    decoder: Decoder,
    /// Larger messages are quarantined, not decoded.
    max_message_bytes: usize,
}

enum Decoder {
    Json {
        codec: Arc<JsonCodec>,
        context: DecodeContext,
    },
    /// Label status messages on `{topic}/+/status`.
    EslStatus,
}

impl Reader {
    pub(super) fn new(spec: &DeviceSpec, member_key: &[u8]) -> Result<Reader, DeviceError> {
        let Transport::Mqtt {
            topic,
            max_message_bytes,
        } = &spec.config.transport
        else {
            return Err(DeviceError::Open {
                what: spec.config.transport.endpoint(),
                reason: "not an MQTT device".into(),
            });
        };
        let (filter, decoder) = match &spec.profile.codec {
            Codec::Json(codec) => (
                topic.clone(),
                Decoder::Json {
                    codec: codec.clone(),
                    context: DecodeContext {
                        device_id: spec.id().to_string(),
                        member_key: member_key.to_vec(),
                    },
                },
            ),
            Codec::EslJson(_) => (esl::status_filter(topic), Decoder::EslStatus),
            other => {
                return Err(DeviceError::Open {
                    what: topic.clone(),
                    reason: format!("codec {} cannot be read from MQTT", other.name()),
                });
            }
        };
        if !rumqttc::valid_filter(&filter) {
            return Err(DeviceError::Open {
                what: filter,
                reason: "not a valid MQTT topic filter ('+' and '#' must be whole levels, '#' only last)"
                    .into(),
            });
        }
        Ok(Reader {
            filter,
            decoder,
            max_message_bytes: *max_message_bytes,
        })
    }

    /// Decode one message; never panics, bad input becomes `Decoded::Bad`.
    pub(super) fn decode(&self, topic: &str, payload: &[u8], now: DateTime<Utc>) -> Vec<Decoded> {
        if payload.len() > self.max_message_bytes {
            return vec![oversize(topic, payload, self.max_message_bytes)];
        }
        match &self.decoder {
            Decoder::Json { codec, context } => {
                let out = codec.decode(payload, context, now);
                if out.ts_fallbacks > 0 {
                    tracing::debug!(
                        device = %context.device_id,
                        records = out.ts_fallbacks,
                        "records without a usable timestamp got the receive time"
                    );
                }
                out.items
            }
            Decoder::EslStatus => vec![label_status(topic, payload, now)],
        }
    }
}

/// A message over its device's size limit, for the quarantine: the reason
/// names the size, the limit and the topic; only the first bytes are kept.
fn oversize(topic: &str, payload: &[u8], limit: usize) -> Decoded {
    let head = &payload[..payload.len().min(OVERSIZE_HEAD)];
    Decoded::Bad {
        reason: format!(
            "message of {} bytes on topic {topic:?} is over the device's limit of {limit} bytes; \
             not decoded, its first {} bytes kept. If the device really sends messages this \
             large, raise max_message_bytes on the device; otherwise check its batching settings",
            payload.len(),
            head.len()
        ),
        raw: head.to_vec(),
    }
}

/// A label's status message as a `label_ack` event. The SKU is not in the
/// message; the label projection knows which SKU the label shows.
fn label_status(topic: &str, payload: &[u8], now: DateTime<Utc>) -> Decoded {
    match esl::parse_status(topic, payload) {
        Ok(report) => Decoded::Events(vec![(
            now,
            EventBody::LabelAck(LabelAck {
                label_id: report.label_id,
                sku: String::new(),
                price_version: report.version,
                status: report.status,
                battery_mv: report.battery_mv,
                rssi: report.rssi,
            }),
        )]),
        Err(reason) => Decoded::Bad {
            reason,
            raw: payload.to_vec(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::LabelStatus;

    #[test]
    fn label_status_becomes_a_label_ack_or_quarantine() {
        let now = crate::event::now_millis();
        let ok = label_status(
            "stores/1/esl/L1/status",
            br#"{"label_id":"L1","version":57,"status":"ok","battery_mv":2950,"rssi":-61}"#,
            now,
        );
        assert_eq!(
            ok,
            Decoded::Events(vec![(
                now,
                EventBody::LabelAck(LabelAck {
                    label_id: "L1".into(),
                    sku: String::new(),
                    price_version: 57,
                    status: LabelStatus::Ok,
                    battery_mv: Some(2950),
                    rssi: Some(-61),
                })
            )])
        );
        // Another label's id on this label's topic is refused.
        let bad = label_status(
            "stores/1/esl/L1/status",
            br#"{"label_id":"L2","version":1,"status":"ok"}"#,
            now,
        );
        assert!(
            matches!(bad, Decoded::Bad { ref raw, .. } if raw.starts_with(b"{\"label_id\":\"L2\""))
        );
        assert!(matches!(
            label_status("x/L1/status", b"\xff\x00", now),
            Decoded::Bad { .. }
        ));
    }

    #[test]
    fn mqtt_wildcards_route_as_the_broker_does() {
        assert!(rumqttc::matches(
            "stores/1/esl/L1/status",
            "stores/1/esl/+/status"
        ));
        assert!(!rumqttc::matches(
            "stores/1/esl/L1/set",
            "stores/1/esl/+/status"
        ));
        assert!(rumqttc::matches("stores/1/rfid/door", "stores/1/#"));
        assert!(rumqttc::matches("stores/1", "stores/1/#"));
        assert!(!rumqttc::matches("stores/2/rfid", "stores/1/#"));
        assert!(!rumqttc::matches("$SYS/broker", "#"));
    }
}
