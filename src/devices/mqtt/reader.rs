//! How one MQTT device's messages become journal input: its subscription
//! filter and its size limit here, its codec in the devices' common
//! [`Decoder`].

use chrono::{DateTime, Utc};

use crate::codecs::{Decoded, esl};
use crate::config::Transport;
use crate::devices::decoder::Decoder;
use crate::devices::{DeviceError, DeviceSpec};
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
        let decoder = Decoder::new(spec, member_key)?;
        // Labels publish their status each on a topic of its own.
        let filter = match &spec.profile.codec {
            Codec::EslJson(_) => esl::status_filter(topic),
            _ => topic.clone(),
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
    pub(super) fn decode(
        &mut self,
        topic: &str,
        payload: &[u8],
        now: DateTime<Utc>,
    ) -> Vec<Decoded> {
        if payload.len() > self.max_message_bytes {
            return vec![oversize(topic, payload, self.max_message_bytes)];
        }
        self.decoder.decode(payload, Some(topic), now)
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
