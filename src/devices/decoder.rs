//! One decoder interface for the transports that receive bytes (MQTT,
//! serial, the HTTP event stream): built once per session from the
//! device's codec and transport, called the same way by all of them with
//! the bytes of one message (or one line, or one read) and the time they
//! arrived. What is particular to a transport stays with it: framing (the
//! stream's line splitter), size limits, topics to subscribe to, polling
//! commands. Polled transports (Modbus, OpenEPaperLink) ask their device
//! for a structured answer and decode it their own way.
//!
//! A codec's bad input is `Decoded::Bad`, never a panic (invariant 7).

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{DeviceError, DeviceSpec};
use crate::codecs::json::{DecodeContext, JsonCodec};
use crate::codecs::lines::LinesDecoder;
use crate::codecs::m100::M100Decoder;
use crate::codecs::{Decoded, esl};
use crate::config::Transport;
use crate::event::{EventBody, LabelAck};
use crate::profiles::Codec;

/// A device's decoder, with the state its codec keeps between inputs
/// (a partial M100 frame, a receipt still printing). One per session.
pub struct Decoder {
    device: String,
    codec: Kind,
}

enum Kind {
    /// One JSON document (or array of them) per message or line.
    Json {
        codec: Arc<JsonCodec>,
        context: DecodeContext,
    },
    /// Label status messages on `{topic}/+/status`: the label is named by
    /// the topic as well as in the message.
    EslStatus,
    /// An M100-class RFID module's frames, split anywhere.
    M100(M100Decoder),
    /// A receipt printer tap or text journal. Boxed: the decoder is large.
    Lines(Box<LinesDecoder>),
}

impl Decoder {
    /// The decoder for a device's codec over its transport, or why that
    /// codec cannot be read over it.
    pub fn new(spec: &DeviceSpec, member_key: &[u8]) -> Result<Decoder, DeviceError> {
        let device = spec.id().to_string();
        let codec = match (&spec.config.transport, &spec.profile.codec) {
            (Transport::Mqtt { .. } | Transport::HttpStream { .. }, Codec::Json(codec)) => {
                Kind::Json {
                    codec: codec.clone(),
                    context: DecodeContext {
                        device_id: device.clone(),
                        member_key: member_key.to_vec(),
                    },
                }
            }
            (Transport::Mqtt { .. }, Codec::EslJson(_)) => Kind::EslStatus,
            (Transport::Serial(_), Codec::M100(_)) => Kind::M100(M100Decoder::new()),
            (Transport::Serial(_), Codec::Lines(compiled)) => {
                Kind::Lines(Box::new(LinesDecoder::new((**compiled).clone(), &device)))
            }
            (transport, other) => {
                return Err(DeviceError::Open {
                    what: transport.endpoint(),
                    reason: format!(
                        "profile {} uses codec {}, which is not read over {}",
                        spec.profile.name,
                        other.name(),
                        transport_name(transport)
                    ),
                });
            }
        };
        Ok(Decoder { device, codec })
    }

    /// Decode the bytes of one message, line or read that arrived at
    /// `now`; `topic` is the MQTT topic it came on, if any. A stream
    /// codec (M100, lines) keeps what does not complete a unit yet.
    pub fn decode(
        &mut self,
        bytes: &[u8],
        topic: Option<&str>,
        now: DateTime<Utc>,
    ) -> Vec<Decoded> {
        match &mut self.codec {
            Kind::Json { codec, context } => {
                let out = codec.decode(bytes, context, now);
                if out.ts_fallbacks > 0 {
                    tracing::debug!(
                        device = %self.device,
                        records = out.ts_fallbacks,
                        "records without a usable timestamp got the receive time"
                    );
                }
                out.items
            }
            Kind::EslStatus => vec![label_status(topic.unwrap_or_default(), bytes, now)],
            Kind::M100(decoder) => decoder.feed(bytes, now),
            Kind::Lines(decoder) => decoder.feed(bytes, now),
        }
    }

    /// The input ended (the port closed): what a stream codec still holds.
    /// A receipt without its end is quarantined whole (never half
    /// applied) and an unterminated last line is read.
    pub fn finish(&mut self, now: DateTime<Utc>) -> Vec<Decoded> {
        match &mut self.codec {
            Kind::Lines(decoder) => decoder.flush(now),
            Kind::Json { .. } | Kind::EslStatus | Kind::M100(_) => Vec::new(),
        }
    }
}

/// The transport's name as the configuration writes it.
fn transport_name(transport: &Transport) -> &'static str {
    match transport {
        Transport::Serial(_) => "a serial port",
        Transport::Mqtt { .. } => "mqtt",
        Transport::Http { .. } => "http",
        Transport::HttpStream { .. } => "http-stream",
        Transport::ModbusTcp { .. } | Transport::ModbusRtu { .. } => "Modbus",
        Transport::Llrp(_) => "llrp",
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
}
