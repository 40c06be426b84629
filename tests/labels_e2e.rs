//! The label flow end to end over a real MQTT broker: a price change sends
//! a set message, the label's status confirms it; a label that does not
//! answer fails with `label_stale`, is retried, confirms, and the alert
//! resolves.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Store, free_port, wait_for_async};
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};
use storegate::config::{Broker, MqttConfig};
use storegate::devices::label_sender::{self, Routes};
use storegate::devices::mqtt::Hub;
use storegate::devices::run_device;
use storegate::domain::{alerts, labels, prices};

fn label_state(store: &Store) -> (String, Option<i64>) {
    let conn = storegate::db::open_read(&store.db).unwrap();
    let l = labels::labels_of(&conn, "SKU-1001").unwrap();
    (l[0].state.clone(), l[0].shows_price_minor)
}

fn open_codes(store: &Store) -> Vec<String> {
    let conn = storegate::db::open_read(&store.db).unwrap();
    alerts::open_alerts(&conn)
        .unwrap()
        .into_iter()
        .map(|a| a.code)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn price_change_set_status_ok_and_a_silent_label_retried_until_it_confirms() {
    let store = Store::new();
    // A label system whose labels must answer within a second.
    let profiles = store.dir.path().join("profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    std::fs::write(
        profiles.join("esl-fast.toml"),
        "name = \"esl-fast\"\nkind = \"esl\"\ncodec = \"esl-json\"\ndescription = \"test ESL bridge\"\n[esl_json]\nack_timeout_s = 1\n",
    )
    .unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    storegate::devices::broker::start_embedded(addr).unwrap();
    let hub = Hub::start(
        &MqttConfig {
            broker: Broker::External {
                url: format!("mqtt://127.0.0.1:{port}"),
            },
            client_id: "agent".into(),
        },
        store.shutdown.clone(),
    )
    .await
    .unwrap();
    let spec = store.device(
        "id = \"esl\"\nprofile = \"esl-fast\"\ntransport = \"mqtt\"\ntopic = \"store/esl\"\n",
        Some(&profiles),
    );
    let wake = Arc::new(tokio::sync::Notify::new());
    let routes = Routes::from_devices(std::slice::from_ref(&spec));
    tokio::spawn(run_device(
        spec,
        store.ingest.clone(),
        Some(hub.clone()),
        store.shutdown.clone(),
    ));
    tokio::spawn(label_sender::run(
        store.writer.clone(),
        routes,
        Some(hub),
        wake.clone(),
        store.shutdown.clone(),
    ));

    // The label bridge: receives set messages; answers only when told to.
    let mut opts = MqttOptions::new("bridge", "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30));
    let (bridge, mut eventloop) = AsyncClient::new(opts, 100);
    bridge
        .subscribe("store/esl/+/set", QoS::AtLeastOnce)
        .await
        .unwrap();
    let (set_tx, mut set_rx) = tokio::sync::mpsc::unbounded_channel::<serde_json::Value>();
    tokio::spawn(async move {
        while let Ok(ev) = eventloop.poll().await {
            if let MqttEvent::Incoming(Packet::Publish(p)) = ev {
                if let Ok(v) = serde_json::from_slice(&p.payload) {
                    let _ = set_tx.send(v);
                }
            }
        }
    });
    common::wait_for_async("the ESL device to be up", || {
        store.health.get("esl").filter(|h| h.up).map(|_| ())
    })
    .await;

    // A price change: the set message arrives with the formatted price.
    let pull: prices::PricePull = serde_json::from_value(serde_json::json!({
        "version": 57,
        "items": [{"sku": "SKU-1001", "name": "Oat milk 1L", "price_minor": 249, "currency": "EUR",
                   "effective_from": "2020-01-01T00:00:00.000Z", "labels": ["0000021A4B3C5D6E"]}]
    }))
    .unwrap();
    store
        .writer
        .transact(move |w| prices::apply_pull(w.conn(), &pull, chrono::Utc::now(), "de-DE"))
        .await
        .unwrap();
    wake.notify_one();
    let first = tokio::time::timeout(Duration::from_secs(10), set_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first["price_text"], "2,49\u{a0}€");
    assert_eq!(first["version"], 57);

    // The label stays silent: after the ack timeout it is failed, with an alert.
    wait_for_async("label_stale", || {
        open_codes(&store)
            .contains(&"label_stale".to_string())
            .then_some(())
    })
    .await;
    assert_eq!(label_state(&store).0, "failed");

    // The retry time comes (backoff is 30 s; move it forward instead of waiting).
    store
        .writer
        .transact(|w| {
            w.conn()
                .execute("UPDATE labels SET next_attempt_ms = 0", [])
                .map_err(|e| storegate::db::StoreError::Rejected(e.to_string()))?;
            Ok(())
        })
        .await
        .unwrap();
    let retry = tokio::time::timeout(Duration::from_secs(10), set_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(retry["version"], 57);
    // This time the label confirms.
    bridge
        .publish(
            "store/esl/0000021A4B3C5D6E/status",
            QoS::AtLeastOnce,
            false,
            r#"{"label_id":"0000021A4B3C5D6E","version":57,"status":"ok","battery_mv":2950,"rssi":-61}"#,
        )
        .await
        .unwrap();
    wait_for_async("the label to be ok", || {
        (label_state(&store) == ("ok".to_string(), Some(249))).then_some(())
    })
    .await;
    wait_for_async("label_stale resolved", || {
        (!open_codes(&store).contains(&"label_stale".to_string())).then_some(())
    })
    .await;
    store.trigger.trigger();
}
