//! A simulated Zebra FX-series RFID reader running the IoT Connector with
//! an MQTT data interface (profile `zebra-fx-iot-connector`): each tag
//! read is one data event
//! `{"data":{"idHex":...,"antenna":1,"peakRssi":-52,...},"timestamp":"...+0200","type":"SIMPLE"}`
//! published QoS 1 on the configured topic, with the reader's local time
//! and the `+hhmm` offset the real firmware writes.
//!
//! A reader made with [`Zebra::controlled`] also answers the IoT
//! Connector's MQTT commands (`start`, `stop`, `set_mode`) on its command
//! topic, each with a response carrying the command's `command_id`; it
//! starts stopped, as a reader after boot without autostart, and publishes
//! reads only while started.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rumqttc::QoS;
use serde_json::{Value, json};

use super::mqtt::Link;
use super::say::Say;

/// One read of one tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// EPC, hex.
    pub epc: String,
    pub antenna: u32,
    pub rssi_dbm: i32,
}

/// The data event the IoT Connector publishes for a read (tag metadata
/// enabled). The firmware writes hex in lower case.
pub fn data_event(read: &Read, event_num: u64, at: chrono::DateTime<chrono::Local>) -> Value {
    json!({
        "data": {
            "eventNum": event_num,
            "format": "epc",
            "idHex": read.epc.to_ascii_lowercase(),
            "antenna": read.antenna,
            "peakRssi": read.rssi_dbm,
            "channel": 865.7,
            "reads": 1,
            "PC": "3000",
        },
        "timestamp": at.format("%Y-%m-%dT%H:%M:%S%.3f%z").to_string(),
        "type": "SIMPLE",
    })
}

/// The operating modes `set_mode` accepts.
pub const MODES: [&str; 5] = ["SIMPLE", "INVENTORY", "PORTAL", "CONVEYOR", "CUSTOM"];

/// The reader: an MQTT connection and its data topic.
pub struct Zebra {
    link: Link,
    topic: String,
    event_num: AtomicU64,
    say: Say,
    /// Whether reads are published (a reader without command interface
    /// always reads).
    reading: AtomicBool,
    /// The operating mode `set_mode` chose.
    mode: Mutex<String>,
}

impl Zebra {
    pub fn new(link: Link, topic: &str, say: Say) -> Zebra {
        Zebra {
            link,
            topic: topic.to_string(),
            event_num: AtomicU64::new(0),
            say,
            reading: AtomicBool::new(true),
            mode: Mutex::new("SIMPLE".into()),
        }
    }

    /// A reader that obeys commands arriving on the subscription of `link`
    /// (its command topic) and answers on `response_topic`; it starts
    /// stopped.
    pub fn controlled(mut link: Link, topic: &str, response_topic: &str, say: Say) -> Arc<Zebra> {
        let (_, idle) = tokio::sync::mpsc::unbounded_channel();
        let mut commands = std::mem::replace(&mut link.incoming, idle);
        let zebra = Arc::new(Zebra::new(link, topic, say));
        zebra.reading.store(false, Ordering::SeqCst);
        let reader = Arc::downgrade(&zebra);
        let response_topic = response_topic.to_string();
        tokio::spawn(async move {
            while let Some(message) = commands.recv().await {
                let Some(zebra) = reader.upgrade() else { break };
                let answer = zebra.obey(&message.payload);
                let _ = zebra
                    .link
                    .client
                    .publish(&response_topic, QoS::AtLeastOnce, false, answer.to_string())
                    .await;
            }
        });
        zebra
    }

    /// Whether reads are published now.
    pub fn is_reading(&self) -> bool {
        self.reading.load(Ordering::SeqCst)
    }

    /// The operating mode last set.
    pub fn mode(&self) -> String {
        self.mode.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Carry out one command; the response to publish.
    fn obey(&self, payload: &[u8]) -> Value {
        let command: Value = serde_json::from_slice(payload).unwrap_or(Value::Null);
        let name = command.get("command").and_then(Value::as_str).unwrap_or("");
        let id = command.get("command_id").cloned().unwrap_or(Value::Null);
        let outcome = match name {
            "start" => {
                self.reading.store(true, Ordering::SeqCst);
                Ok(())
            }
            "stop" => {
                self.reading.store(false, Ordering::SeqCst);
                Ok(())
            }
            "set_mode" => match command.pointer("/payload/type").and_then(Value::as_str) {
                Some(mode) if MODES.contains(&mode) => {
                    *self.mode.lock().unwrap_or_else(|p| p.into_inner()) = mode.to_string();
                    Ok(())
                }
                other => Err(format!("unsupported mode {other:?}")),
            },
            other => Err(format!("unsupported command {other:?}")),
        };
        self.say
            .line(format!("<- command {name} ({id}): {outcome:?}"));
        match outcome {
            Ok(()) => {
                json!({"command": name, "command_id": id, "response": "success", "payload": {}})
            }
            Err(message) => {
                json!({"command": name, "command_id": id, "response": "failure", "payload": {"message": message}})
            }
        }
    }

    pub fn link(&self) -> &Link {
        &self.link
    }

    /// Publish one data event per read (none while stopped).
    pub async fn publish(&self, reads: &[Read]) -> Result<(), String> {
        if !self.is_reading() {
            return Ok(());
        }
        for read in reads {
            let n = self.event_num.fetch_add(1, Ordering::Relaxed) + 1;
            let event = data_event(read, n, chrono::Local::now());
            self.link
                .client
                .publish(&self.topic, QoS::AtLeastOnce, false, event.to_string())
                .await
                .map_err(|e| format!("publish to {}: {e}", self.topic))?;
            self.say.line(format!(
                "-> {} SIMPLE #{n} {} antenna {} {} dBm",
                self.topic, read.epc, read.antenna, read.rssi_dbm
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codecs::Decoded;
    use crate::codecs::json::DecodeContext;
    use crate::profiles::{Codec, ProfileSet};

    #[test]
    fn events_decode_with_the_agents_profile() {
        let set = ProfileSet::builtin().unwrap();
        let Codec::Json(codec) = &set.get("zebra-fx-iot-connector").unwrap().codec else {
            panic!("zebra-fx-iot-connector is a json profile");
        };
        let read = Read {
            epc: "3074257BF7194E4000001A85".into(),
            antenna: 2,
            rssi_dbm: -48,
        };
        let event = data_event(&read, 1, chrono::Local::now()).to_string();
        let ctx = DecodeContext {
            device_id: "door".into(),
            member_key: Vec::new(),
        };
        let out = codec.decode(event.as_bytes(), &ctx, crate::event::now_millis());
        match out.items.as_slice() {
            [Decoded::TagReads(reads)] => {
                assert_eq!(reads.len(), 1);
                assert_eq!(reads[0].epc, read.epc);
                assert_eq!(reads[0].antenna, Some(2));
                assert_eq!(reads[0].rssi_dbm, Some(-48));
            }
            other => panic!("{other:?}"),
        }
    }
}
