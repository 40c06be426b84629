//! The MQTT transport against real brokers: rumqttd embedded in process
//! (the agent's own `broker = "embedded"`) and Debian's mosquitto, started
//! by the test on a free port. The test plays the devices with its own
//! MQTT client: Zebra and Impinj readers, a POS, shelf labels. The crash
//! test runs the real agent binary against mosquitto, kills it while a
//! receipt is waiting for its commit, and checks that the broker's
//! redelivery journals the receipt exactly once.

mod common;

use std::net::SocketAddr;
use std::path::Path;

use common::broker::{Mosquitto, Peer};
use common::{Agent, Store, free_port, wait_for_async};
use rumqttc::Packet;
use storegate::codecs::esl::{self, LabelUpdate};
use storegate::config::{Broker, MqttConfig};
use storegate::devices::mqtt::Hub;
use storegate::devices::{DeviceSpec, run_device};
use storegate::event::{Event, EventBody, LabelStatus, SaleLine, TagTransition};

// Samples from spec/samples (faithful vendor formats).
const ZEBRA_SIMPLE: &str = r#"{"data":{"eventNum":1,"format":"epc","idHex":"3005fb63ac1f3681ec880468","antenna":1,"peakRssi":-39,"channel":911.75,"phase":0,"reads":1,"PC":"3000","CRC":"b06a"},"timestamp":"2019-08-24T14:15:22Z","type":"SIMPLE"}"#;
/// HTTP-style batching: an array, lower-case hex, `+0200` offsets.
const ZEBRA_BATCH: &str = r#"[{"data":{"eventNum":7,"format":"epc","idHex":"3074257bf7194e4000001a85"},"timestamp":"2023-04-03T21:50:16.699+0200","type":"SIMPLE"},
 {"data":{"eventNum":8,"format":"epc","idHex":"e280116060000209be3a2b41","antenna":2,"peakRssi":-61,"reads":3},"timestamp":"2023-04-03T21:50:16.702+0200","type":"INVENTORY"}]"#;
/// `epcHex` enabled (its base64 `epc` is URL-safe).
const IMPINJ_TAG_INVENTORY: &str = r#"{"timestamp":"2021-02-02T22:18:35.658476625Z","hostname":"impinj-14-1f-23","eventType":"tagInventory","tagInventoryEvent":{"epc":"4oARYGAAAgpmgfI_","epcHex":"E28011606000020A6681F23F","pc":"NAA=","antennaPort":1,"antennaName":"Portal1","peakRssiCdbm":-4050,"frequency":915750,"transmitPowerCdbm":3000,"lastSeenTime":"2021-02-02T22:18:35.499734Z","phaseAngle":69.0}}"#;
/// Default fields only: standard base64, the GS1 SGTIN-96 example EPC.
const IMPINJ_MINIMAL: &str = r#"{"timestamp":"2024-05-10T08:00:01.1Z","hostname":"impinj-14-aa-01","eventType":"tagInventory","tagInventoryEvent":{"epc":"MHQle/cZTkAAABqF","antennaPort":2,"peakRssiCdbm":-5525,"frequency":902750,"transmitPowerCdbm":3000}}"#;
/// Not a tag read: ignored, not quarantined.
const IMPINJ_STATUS: &str = r#"{"timestamp":"2024-05-10T08:00:00Z","hostname":"impinj-14-aa-01","eventType":"inventoryStatus","inventoryStatusEvent":{"inventoryStatus":"running"}}"#;
/// A 128-bit EPC in base64 with padding (`E28011606000020A6681F23F00000001`).
const IMPINJ_PADDED: &str = r#"{"timestamp":"2024-05-10T08:00:02Z","hostname":"impinj-14-aa-01","eventType":"tagInventory","tagInventoryEvent":{"epc":"4oARYGAAAgpmgfI/AAAAAQ==","antennaPort":1,"peakRssiCdbm":-6000}}"#;
/// The same kind without the padding (`E2801160600002A1B2C3D4E5F6A7B8C9`).
const IMPINJ_UNPADDED: &str = r#"{"timestamp":"2024-05-10T08:00:03Z","hostname":"impinj-14-aa-01","eventType":"tagInventory","tagInventoryEvent":{"epc":"4oARYGAAAqGyw9Tl9qe4yQ","antennaPort":1,"peakRssiCdbm":-6000}}"#;
/// A sale and a return, one price in minor units, one as a decimal string.
const RECEIPT: &str = r#"{"receipt_id":"R-1","pos":"1","currency":"EUR","lines":[{"sku":"SKU-1001","qty":2,"unit_price_minor":249},{"sku":"SKU-1002","qty":-1,"unit_price":"2.49"}]}"#;
const GARBAGE: &[u8] = b"\x00\xffthis is not {json";

const DOOR: &str = r#"id = "door"
profile = "zebra-fx-iot-connector"
transport = "mqtt"
topic = "stores/t/rfid/door"
zone = "backroom""#;
const PORTAL: &str = r#"id = "portal"
profile = "impinj-iot"
transport = "mqtt"
topic = "stores/t/rfid/portal/#"
zone = "salesfloor""#;
const TILL: &str = r#"id = "till-1"
profile = "pos-json"
transport = "mqtt"
topic = "stores/t/pos/1""#;

// ---------------------------------------------------------------------------
// Brokers and clients
// ---------------------------------------------------------------------------

/// The agent's MQTT settings with the embedded broker on a free port.
fn embedded(port: u16) -> MqttConfig {
    MqttConfig {
        broker: Broker::Embedded(SocketAddr::from(([127, 0, 0, 1], port))),
        client_id: "storegate-test".into(),
    }
}
// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn spawn_device(store: &Store, spec: DeviceSpec, hub: &Hub) {
    tokio::spawn(run_device(
        spec,
        store.ingest.clone(),
        Some(hub.clone()),
        store.shutdown.clone(),
    ));
}

/// Wait until every device is up: connected and its subscription
/// confirmed by the broker, so that what is published next reaches it.
async fn wait_up(store: &Store, ids: &[&str]) {
    wait_for_async("devices up", || {
        ids.iter()
            .all(|id| store.health.get(id).is_some_and(|h| h.up))
            .then_some(())
    })
    .await;
}

async fn wait_events(store: &Store, what: &str, pred: impl Fn(&[Event]) -> bool) -> Vec<Event> {
    wait_for_async(what, || {
        let events = store.events();
        pred(&events).then_some(events)
    })
    .await
}

fn transition<'a>(events: &'a [Event], kind: &str, epc: &str) -> Option<&'a TagTransition> {
    events.iter().find_map(|e| match &e.body {
        EventBody::TagArrived(t) | EventBody::TagMoved(t)
            if e.body.kind() == kind && t.epc == epc =>
        {
            Some(t)
        }
        _ => None,
    })
}

fn sale_lines<'a>(events: &'a [Event], receipt: &str) -> Vec<(&'static str, &'a SaleLine)> {
    events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::Sale(l) if l.receipt_id == receipt => Some(("sale", l)),
            EventBody::Return(l) if l.receipt_id == receipt => Some(("return", l)),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------
// RFID readers, POS and bad input, over both brokers
// ---------------------------------------------------------------------------

/// Zebra and Impinj readers and a POS publish their vendor formats; a
/// garbage payload is quarantined and the reader keeps working.
async fn readers_pos_and_garbage(config: MqttConfig, port: u16) {
    let mut store = Store::new();
    let hub = Hub::start(&config, store.shutdown.clone()).await.unwrap();
    for device in [DOOR, PORTAL, TILL] {
        let spec = store.device(device, None);
        spawn_device(&store, spec, &hub);
    }
    wait_up(&store, &["door", "portal", "till-1"]).await;
    let peer = Peer::connect(port, "devices").await;

    // Zebra: one object, then an HTTP-style batch.
    peer.publish("stores/t/rfid/door", ZEBRA_SIMPLE).await;
    peer.publish("stores/t/rfid/door", ZEBRA_BATCH).await;
    let events = wait_events(&store, "the Zebra reads", |e| {
        transition(e, "tag_arrived", "E280116060000209BE3A2B41").is_some()
    })
    .await;
    let simple = transition(&events, "tag_arrived", "3005FB63AC1F3681EC880468").unwrap();
    assert_eq!(
        (simple.zone.as_str(), simple.reader.as_str()),
        ("backroom", "door")
    );
    assert_eq!(simple.antenna, Some(1));
    assert_eq!(simple.rssi_dbm, Some(-39));
    assert_eq!(simple.first_seen.to_rfc3339(), "2019-08-24T14:15:22+00:00");
    let sgtin = transition(&events, "tag_arrived", "3074257BF7194E4000001A85").unwrap();
    // +0200 offset read as such.
    assert_eq!(
        sgtin.first_seen.timestamp_millis(),
        chrono::DateTime::parse_from_rfc3339("2023-04-03T19:50:16.699Z")
            .unwrap()
            .timestamp_millis()
    );
    assert!(sgtin.gtin.is_some(), "SGTIN-96 decoded: {sgtin:?}");

    // Impinj on a wildcard filter: epcHex, base64 with and without
    // padding, a status event that is ignored, and the SGTIN tag from the
    // door now read on the sales floor.
    peer.publish("stores/t/rfid/portal/events", IMPINJ_STATUS)
        .await;
    peer.publish("stores/t/rfid/portal/events", IMPINJ_TAG_INVENTORY)
        .await;
    peer.publish("stores/t/rfid/portal/events", IMPINJ_PADDED)
        .await;
    peer.publish("stores/t/rfid/portal/events", IMPINJ_UNPADDED)
        .await;
    peer.publish("stores/t/rfid/portal/events", IMPINJ_MINIMAL)
        .await;
    let events = wait_events(&store, "the Impinj reads", |e| {
        transition(e, "tag_moved", "3074257BF7194E4000001A85").is_some()
    })
    .await;
    for epc in [
        "E28011606000020A6681F23F",
        "E28011606000020A6681F23F00000001",
        "E2801160600002A1B2C3D4E5F6A7B8C9",
    ] {
        let t = transition(&events, "tag_arrived", epc).unwrap_or_else(|| panic!("{epc}"));
        assert_eq!(
            (t.zone.as_str(), t.reader.as_str()),
            ("salesfloor", "portal")
        );
    }
    let moved = transition(&events, "tag_moved", "3074257BF7194E4000001A85").unwrap();
    assert_eq!(moved.from_zone.as_deref(), Some("backroom"));
    assert_eq!(moved.rssi_dbm, Some(-55));

    // POS: a sale and a return, "2.49" converted exactly.
    peer.publish("stores/t/pos/1", RECEIPT).await;
    let events = wait_events(&store, "the receipt", |e| sale_lines(e, "R-1").len() == 2).await;
    let lines = sale_lines(&events, "R-1");
    let sale = lines.iter().find(|(k, _)| *k == "sale").unwrap().1;
    assert_eq!(
        (
            sale.sku.as_str(),
            sale.qty,
            sale.unit_price_minor,
            sale.currency.as_str()
        ),
        ("SKU-1001", 2, 249, "EUR")
    );
    let ret = lines.iter().find(|(k, _)| *k == "return").unwrap().1;
    assert_eq!(
        (ret.sku.as_str(), ret.qty, ret.unit_price_minor),
        ("SKU-1002", 1, 249)
    );
    assert!(
        events
            .iter()
            .all(|e| e.device != "till-1" || e.body.kind() != "tag_arrived")
    );

    // Garbage from the door reader: quarantined with its bytes; the reader
    // stays up and its next read still counts.
    peer.publish("stores/t/rfid/door", GARBAGE).await;
    peer.publish(
        "stores/t/rfid/door",
        ZEBRA_SIMPLE.replace("3005fb63ac1f3681ec880468", "3005fb63ac1f3681ec880469"),
    )
    .await;
    wait_events(&store, "a read after the garbage", |e| {
        transition(e, "tag_arrived", "3005FB63AC1F3681EC880469").is_some()
    })
    .await;
    let quarantine = store.quarantine();
    assert_eq!(quarantine.len(), 1, "only the garbage: {quarantine:?}");
    assert_eq!(quarantine[0].0, "door");
    assert_eq!(quarantine[0].2, GARBAGE);
    let door = store.health.get("door").unwrap();
    assert!(door.up, "{door:?}");
    assert_eq!(door.frames_bad, 1);
    // The status event was neither journaled nor quarantined.
    let portal_events = store
        .events()
        .iter()
        .filter(|e| e.device == "portal")
        .count();
    assert_eq!(portal_events, 4);

    store.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_pos_and_garbage_over_embedded_rumqttd() {
    let port = free_port();
    readers_pos_and_garbage(embedded(port), port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_pos_and_garbage_over_mosquitto() {
    let broker = Mosquitto::start();
    readers_pos_and_garbage(broker.config("storegate-test"), broker.port).await;
}

/// A burst of receipts from one POS: every one journaled, in the order
/// the POS sent them (batched commits keep per-device order).
async fn burst_of_receipts(config: MqttConfig, port: u16) {
    const RECEIPTS: usize = 2000;
    let mut store = Store::new();
    let hub = Hub::start(&config, store.shutdown.clone()).await.unwrap();
    let spec = store.device(TILL, None);
    spawn_device(&store, spec, &hub);
    wait_up(&store, &["till-1"]).await;
    let peer = Peer::connect(port, "busy-till").await;
    let started = std::time::Instant::now();
    for i in 0..RECEIPTS {
        let receipt = format!(
            r#"{{"receipt_id":"B-{i}","currency":"EUR","lines":[{{"sku":"SKU-1","qty":1,"unit_price_minor":100}}]}}"#
        );
        peer.publish("stores/t/pos/1", receipt).await;
    }
    let events = wait_events(&store, "every receipt of the burst", |e| {
        e.len() >= RECEIPTS
    })
    .await;
    // Information only, never asserted: machines differ.
    eprintln!(
        "{RECEIPTS} receipts published and journaled in {:?}",
        started.elapsed()
    );
    let order: Vec<String> = events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::Sale(l) => Some(l.receipt_id.clone()),
            _ => None,
        })
        .collect();
    let expected: Vec<String> = (0..RECEIPTS).map(|i| format!("B-{i}")).collect();
    assert_eq!(order, expected);
    assert!(store.quarantine().is_empty());
    store.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_receipts_over_embedded_rumqttd() {
    let port = free_port();
    burst_of_receipts(embedded(port), port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_receipts_over_mosquitto() {
    let broker = Mosquitto::start();
    burst_of_receipts(broker.config("storegate-test"), broker.port).await;
}

/// Repeat reads (acknowledged by the hub's event loop, nothing to
/// commit), first sightings and receipts (acknowledged after their commit)
/// and QoS 0 reads (never acknowledged) interleaved on one connection.
/// Every PUBACK must leave in arrival order (rumqttd drops a client that
/// acks out of order, which would show as a reconnect) and none may be
/// left behind.
async fn every_message_is_acknowledged_in_order(config: MqttConfig, port: u16) {
    const ROUNDS: usize = 300;
    const TAGS: usize = 20;
    let mut store = Store::new();
    let hub = Hub::start(&config, store.shutdown.clone()).await.unwrap();
    spawn_device(&store, store.device(DOOR, None), &hub);
    spawn_device(&store, store.device(TILL, None), &hub);
    wait_up(&store, &["door", "till-1"]).await;
    let peer = Peer::connect(port, "mixed-peer").await;
    let read = |i: usize| {
        format!(
            r#"{{"data":{{"eventNum":{i},"format":"epc","idHex":"3074257bf7194e40000000{:02x}","antenna":1}},"timestamp":"2026-11-22T10:15:30.123Z","type":"SIMPLE"}}"#,
            i % TAGS
        )
    };
    let mut reads = 0u64;
    for i in 0..ROUNDS {
        peer.publish("stores/t/rfid/door", read(i)).await;
        reads += 1;
        if i % 3 == 0 {
            let receipt = format!(
                r#"{{"receipt_id":"M-{i}","currency":"EUR","lines":[{{"sku":"SKU-1","qty":1,"unit_price_minor":100}}]}}"#
            );
            peer.publish("stores/t/pos/1", receipt).await;
        }
        if i % 5 == 0 {
            peer.publish_at_most_once("stores/t/rfid/door", read(i + 7))
                .await;
            reads += 1;
        }
    }
    wait_events(&store, "every receipt and every tag's arrival", |e| {
        let count = |kind: &str| e.iter().filter(|e| e.body.kind() == kind).count();
        count("sale") == ROUNDS.div_ceil(3) && count("tag_arrived") == TAGS
    })
    .await;
    wait_for_async("every read counted and every PUBACK written", || {
        (store.health.get("door")?.frames_ok == reads && hub.awaiting_ack() == 0).then_some(())
    })
    .await;
    for id in ["door", "till-1"] {
        let h = store.health.get(id).unwrap();
        assert_eq!((h.up, h.reconnects), (true, 0), "{id}: {h:?}");
    }
    assert!(hub.is_connected());
    store.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_is_acknowledged_in_order_over_embedded_rumqttd() {
    let port = free_port();
    every_message_is_acknowledged_in_order(embedded(port), port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_is_acknowledged_in_order_over_mosquitto() {
    let broker = Mosquitto::start();
    every_message_is_acknowledged_in_order(broker.config("storegate-acks"), broker.port).await;
}

/// The broker goes away and comes back empty (mosquitto without
/// persistence forgets our session): the device is marked down, then up
/// again once the hub has reconnected and subscribed anew, and receipts
/// flow again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_marks_the_device_down_then_resubscribes() {
    let broker = Mosquitto::start();
    let port = broker.port;
    let mut store = Store::new();
    let hub = Hub::start(&broker.config("storegate-test"), store.shutdown.clone())
        .await
        .unwrap();
    let spec = store.device(TILL, None);
    spawn_device(&store, spec, &hub);
    wait_up(&store, &["till-1"]).await;
    let peer = Peer::connect(port, "till").await;
    peer.publish("stores/t/pos/1", RECEIPT).await;
    wait_events(&store, "the first receipt", |e| {
        sale_lines(e, "R-1").len() == 2
    })
    .await;

    drop(broker);
    wait_for_async("the device marked down", || {
        let h = store.health.get("till-1")?;
        (!h.up).then_some(())
    })
    .await;
    assert!(!hub.is_connected());

    let _broker = Mosquitto::start_on(port);
    wait_up(&store, &["till-1"]).await;
    assert!(hub.is_connected());
    let peer = Peer::connect(port, "till-again").await;
    peer.publish("stores/t/pos/1", RECEIPT.replace("R-1", "R-2"))
        .await;
    wait_events(&store, "a receipt after the restart", |e| {
        sale_lines(e, "R-2").len() == 2
    })
    .await;
    let till = store.health.get("till-1").unwrap();
    assert!(till.reconnects >= 1, "{till:?}");
    store.stop();
}

// ---------------------------------------------------------------------------
// Shelf labels
// ---------------------------------------------------------------------------

/// The hub publishes an update to `{topic}/{label}/set`; the label's
/// status on `{topic}/{label}/status` becomes a `label_ack`, a status
/// claiming to be another label is quarantined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn esl_set_and_status_round_trip() {
    let port = free_port();
    let mut store = Store::new();
    let hub = Hub::start(&embedded(port), store.shutdown.clone())
        .await
        .unwrap();
    let spec = store.device(
        r#"id = "esl"
profile = "esl-mqtt"
transport = "mqtt"
topic = "stores/t/esl""#,
        None,
    );
    spawn_device(&store, spec, &hub);
    wait_up(&store, &["esl"]).await;

    let mut gateway = Peer::connect(port, "esl-gateway").await;
    gateway.subscribe("stores/t/esl/+/set").await;
    let update = LabelUpdate {
        label_id: "0000021A4B3C".into(),
        sku: "SKU-1001".into(),
        name: "Oat milk 1L".into(),
        price_minor: 249,
        currency: "EUR".into(),
        price_text: "2,49 €".into(),
        promo: None,
        version: 57,
    };
    let topic = esl::set_topic("stores/t/esl", &update.label_id);
    hub.publish(&topic, esl::set_payload(&update))
        .await
        .unwrap();
    let (got_topic, payload) = gateway
        .expect("the label update", |p| match p {
            Packet::Publish(p) => Some((p.topic.clone(), p.payload.to_vec())),
            _ => None,
        })
        .await;
    assert_eq!(got_topic, "stores/t/esl/0000021A4B3C/set");
    let received: LabelUpdate = serde_json::from_slice(&payload).unwrap();
    assert_eq!(received, update);

    gateway
        .publish(
            "stores/t/esl/0000021A4B3C/status",
            r#"{"label_id":"0000021A4B3C","version":57,"status":"ok","battery_mv":2950,"rssi":-61}"#,
        )
        .await;
    gateway
        .publish(
            "stores/t/esl/0000021A4B3C/status",
            r#"{"label_id":"0000021A4B3D","version":57,"status":"ok"}"#,
        )
        .await;
    let events = wait_events(&store, "the label_ack", |e| {
        e.iter().any(|e| e.body.kind() == "label_ack")
    })
    .await;
    let EventBody::LabelAck(ack) = &events[0].body else {
        panic!("{events:?}")
    };
    assert_eq!(events[0].device, "esl");
    assert_eq!(
        (ack.label_id.as_str(), ack.price_version, ack.status),
        ("0000021A4B3C", 57, LabelStatus::Ok)
    );
    assert_eq!((ack.battery_mv, ack.rssi), (Some(2950), Some(-61)));
    let quarantine = wait_for_async("the foreign status quarantined", || {
        let q = store.quarantine();
        (!q.is_empty()).then_some(q)
    })
    .await;
    assert_eq!(quarantine[0].0, "esl");
    assert!(
        quarantine[0].1.contains("disagrees with topic"),
        "{quarantine:?}"
    );

    // Bad topics and oversized payloads are refused before they reach the
    // connection.
    assert!(hub.publish("stores/t/esl/+/set", vec![]).await.is_err());
    assert!(hub.publish("", vec![]).await.is_err());
    assert!(hub.publish(&topic, vec![b'x'; 300 * 1024]).await.is_err());
    store.stop();
}

// ---------------------------------------------------------------------------
// The embedded broker
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_on_a_taken_address_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err = storegate::devices::broker::start_embedded(addr)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&addr.to_string()) && err.contains("in use"),
        "{err}"
    );
    let (_trigger, shutdown) = storegate::shutdown::shutdown_pair();
    let err = Hub::start(&embedded(addr.port()), shutdown)
        .await
        .err()
        .expect("the hub cannot start on a taken address")
        .to_string();
    assert!(err.contains(&addr.to_string()), "{err}");
}

// ---------------------------------------------------------------------------
// Crash before commit: the broker redelivers, the journal has it once
// ---------------------------------------------------------------------------

fn journal(db: &Path) -> Vec<Event> {
    let conn = storegate::db::open_read(db).unwrap();
    storegate::db::journal::events_after(&conn, 0, 100_000).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipt_of_an_agent_killed_before_its_commit_is_redelivered_and_journaled_once() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("storegate.toml");
    std::fs::write(
        &config,
        format!(
            r#"store_id = "crash"
data_dir = "{data}"
[api]
listen = "127.0.0.1:{api}"
[mqtt]
broker = "mqtt://127.0.0.1:{port}"
client_id = "storegate-crash"
[[device]]
id = "till-1"
profile = "pos-json"
transport = "mqtt"
topic = "stores/crash/pos/1"
"#,
            data = dir.path().display(),
            api = free_port(),
            port = broker.port,
        ),
    )
    .unwrap();
    let db = dir.path().join("storegate.db");
    let peer = Peer::connect(broker.port, "till").await;

    let mut agent = Agent::start(&config, dir.path().join("agent-1.log"));
    agent.wait_log("MQTT device subscribed");

    // Hold the database's write lock, as a stuck disk would: the agent
    // receives the receipt but cannot commit it, so it must not PUBACK.
    let blocker = rusqlite::Connection::open(&db).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    peer.publish("stores/crash/pos/1", RECEIPT).await;
    agent.wait_log("cannot store device input");
    agent.kill();
    blocker.execute_batch("ROLLBACK").unwrap();
    drop(blocker);
    assert!(sale_lines(&journal(&db), "R-1").is_empty());

    // Same client id, persistent session: mosquitto redelivers the
    // receipt it never got a PUBACK for.
    let mut agent = Agent::start(&config, dir.path().join("agent-2.log"));
    agent.wait_log("MQTT device subscribed");
    wait_for_async("the redelivered receipt", || {
        (sale_lines(&journal(&db), "R-1").len() == 2).then_some(())
    })
    .await;

    // The same receipt again (a POS retrying), then another one: once the
    // second is in, the first was seen and deduplicated.
    peer.publish("stores/crash/pos/1", RECEIPT).await;
    peer.publish("stores/crash/pos/1", RECEIPT.replace("R-1", "R-2"))
        .await;
    let events = wait_for_async("the second receipt", || {
        let events = journal(&db);
        (sale_lines(&events, "R-2").len() == 2).then_some(events)
    })
    .await;
    let lines = sale_lines(&events, "R-1");
    assert_eq!(lines.len(), 2, "{lines:?}");
    let mut keys: Vec<(u32, &str)> = lines
        .iter()
        .map(|(_, l)| (l.line, l.sku.as_str()))
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 2, "each line once: {lines:?}");
    drop(agent);
}
