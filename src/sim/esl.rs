//! Simulated electronic shelf labels on MQTT (profile `esl-mqtt`): the
//! label gateway subscribes to `{topic}/+/set`, "redraws" the label (a
//! short delay, as e-paper takes a moment), and answers on
//! `{topic}/{label_id}/status` with
//! `{"label_id","version","status":"ok","battery_mv","rssi"}`.

use std::time::Duration;

use rumqttc::QoS;
use serde_json::json;

use super::mqtt::Link;
use super::say::Say;
use crate::codecs::esl::LabelUpdate;

/// The label id segment of `{topic}/{label_id}/set`.
fn label_of<'t>(topic: &'t str, base: &str) -> Option<&'t str> {
    let rest = topic.strip_prefix(base)?.strip_prefix('/')?;
    let label = rest.strip_suffix("/set")?;
    (!label.is_empty() && !label.contains('/')).then_some(label)
}

/// The status a label sends once it shows `version`.
pub fn status_payload(label_id: &str, version: i64) -> String {
    json!({
        "label_id": label_id,
        "version": version,
        "status": "ok",
        "battery_mv": rand::random_range(2850..3050),
        "rssi": rand::random_range(-72..-50),
    })
    .to_string()
}

/// Answer every label update arriving on `link` (subscribed to
/// `{topic}/+/set`) after `redraw`, until the link ends.
pub async fn run(mut link: Link, topic: String, redraw: Duration, say: Say) {
    while let Some(msg) = link.incoming.recv().await {
        let Some(label) = label_of(&msg.topic, &topic).map(String::from) else {
            continue;
        };
        let update: LabelUpdate = match serde_json::from_slice(&msg.payload) {
            Ok(u) => u,
            Err(e) => {
                // A real label shows nothing it cannot read, and says nothing.
                say.line(format!(
                    "<- {}: not a label update ({e}); ignored",
                    msg.topic
                ));
                continue;
            }
        };
        if update.label_id != label {
            say.line(format!(
                "<- {}: payload is for label {}; ignored",
                msg.topic, update.label_id
            ));
            continue;
        }
        say.line(format!(
            "<- label {label}: {} {} {}{} (version {})",
            update.sku,
            update.name,
            update.price_text,
            if update.promo.is_some() { " PROMO" } else { "" },
            update.version
        ));
        // Each label redraws on its own; answering from a task of its own
        // keeps a slow label from delaying the others.
        let client = link.client.clone();
        let status_topic = format!("{topic}/{label}/status");
        let say = say.clone();
        tokio::spawn(async move {
            tokio::time::sleep(redraw).await;
            let payload = status_payload(&label, update.version);
            match client
                .publish(&status_topic, QoS::AtLeastOnce, false, payload.clone())
                .await
            {
                Ok(()) => say.line(format!("-> {status_topic} {payload}")),
                Err(e) => say.line(format!("cannot publish {status_topic}: {e}")),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_ids_come_from_the_set_topic() {
        assert_eq!(
            label_of("store/esl/0000021A4B3C/set", "store/esl"),
            Some("0000021A4B3C")
        );
        assert_eq!(label_of("store/esl/0000021A4B3C/status", "store/esl"), None);
        assert_eq!(label_of("store/eslx/A/set", "store/esl"), None);
        assert_eq!(label_of("store/esl/a/b/set", "store/esl"), None);
    }

    #[test]
    fn status_parses_with_the_agents_codec() {
        let topic = "store/esl/0000021A4B3C/status";
        let r =
            crate::codecs::esl::parse_status(topic, status_payload("0000021A4B3C", 7).as_bytes())
                .unwrap();
        assert_eq!(r.version, 7);
        assert_eq!(r.status, crate::event::LabelStatus::Ok);
    }
}
