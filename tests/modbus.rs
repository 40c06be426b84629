//! The Modbus transports against real tokio-modbus servers: Modbus TCP on
//! a local port and Modbus RTU over a socat pty pair. The test plays the
//! device with an in-memory register map it can change, make answer with
//! exceptions, or make go silent. Covers the load-cell shelf (weights,
//! SKUs, unit estimates, the change filter), the XY-MD02 sensor with its
//! temperature alert, every register type and word order, quarantine of
//! undecodable registers, and a device going down and coming back.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::modbus::{Behaviour, Device, serve_tcp};
use common::{PtyPair, Store, wait_for_async};
use storegate::config::Config;
use storegate::db::{self, Writer};
use storegate::devices::{DeviceSpec, Ingest, run_device};
use storegate::domain::{Projections, rfid::TagTracker};
use storegate::event::{Alert, AlertState, Event, EventBody, Reading, ShelfWeight};
use storegate::profiles::ProfileSet;
use tokio::task::JoinHandle;
use tokio_modbus::prelude::ExceptionCode;

/// Serve `device` over Modbus RTU on the device end of `pty`.
fn serve_rtu(pty: &PtyPair, device: &Device) {
    let builder = tokio_serial::new(pty.device.to_string_lossy(), 9600);
    let port = tokio_serial::SerialStream::open(&builder).unwrap();
    let server = tokio_modbus::server::rtu::Server::new(port);
    let device = device.clone();
    tokio::spawn(async move {
        let _ = server.serve_forever(device).await;
    });
}

/// Run the device the way the daemon does (runner with reconnects).
fn start(store: &Store, spec: DeviceSpec) -> JoinHandle<()> {
    tokio::spawn(run_device(
        spec,
        store.ingest.clone(),
        None,
        store.shutdown.clone(),
    ))
}

/// Trigger shutdown and check the device task ends by itself.
async fn stop(mut store: Store, task: JoinHandle<()>) {
    store.stop();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("device task ends on shutdown")
        .unwrap();
}

/// Write a profile file `name.toml` into `dir`.
fn write_profile(dir: &Path, name: &str, registers: &str) {
    let text = format!(
        "name = \"{name}\"\nkind = \"sensor\"\ncodec = \"registers\"\n\
         description = \"test profile\"\n\n{registers}"
    );
    std::fs::write(dir.join(format!("{name}.toml")), text).unwrap();
}

fn shelf_weights(events: &[Event]) -> Vec<ShelfWeight> {
    events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::ShelfWeight(w) => Some(w.clone()),
            _ => None,
        })
        .collect()
}

fn readings(events: &[Event]) -> Vec<Reading> {
    events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::Reading(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

fn alerts(events: &[Event], code: &str) -> Vec<Alert> {
    events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::Alert(a) if a.code == code => Some(a.clone()),
            _ => None,
        })
        .collect()
}

/// The two registers of a 32-bit value in the given word order.
fn words(bits: u32, big: bool) -> [u16; 2] {
    let (hi, lo) = ((bits >> 16) as u16, bits as u16);
    if big { [hi, lo] } else { [lo, hi] }
}

/// Put catalog items (sku, unit weight, minimum stock) in the store.
async fn catalog(store: &Store, items: &[(&str, i64, i64)]) {
    let items: Vec<(String, i64, i64)> = items
        .iter()
        .map(|(s, w, m)| (s.to_string(), *w, *m))
        .collect();
    store
        .writer
        .transact(move |w| {
            for (sku, weight, min) in &items {
                w.conn()
                    .execute(
                        "INSERT INTO catalog (sku, name, unit_weight_g, min_stock) \
                         VALUES (?1, ?1, ?2, ?3)",
                        rusqlite::params![sku, weight, min],
                    )
                    .unwrap();
            }
            Ok(())
        })
        .await
        .unwrap();
}

/// `common::Store` runs the projections without any device's alert
/// thresholds. Swap in a writer whose projections know them (read from
/// the same device TOML); the store's own writer then has no handle left
/// and stops, so there is still exactly one writer.
fn with_thresholds(store: &mut Store, device_toml: &str) {
    let profiles = ProfileSet::builtin().unwrap();
    let text = format!("store_id = \"t\"\n[[device]]\n{device_toml}");
    let config = Config::parse(&text, Path::new("test.toml"), &profiles.names()).unwrap();
    let conn = db::open_write(&store.db, storegate::config::Durability::Full).unwrap();
    let member_key = storegate::domain::privacy::member_key(&conn).unwrap();
    let (writer, _thread) = Writer::spawn(conn, Box::new(Projections::new(&config))).unwrap();
    let tags = Arc::new(Mutex::new(TagTracker::new(5000, 600)));
    store.ingest = Ingest::new(writer.clone(), store.health.clone(), tags, member_key);
    store.writer = writer;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shelf_over_tcp_journals_weights_and_skips_small_changes() {
    let store = Store::new();
    // Unit weights: SKU-1001 400 g, SKU-1002 1040 g with a minimum of 5.
    catalog(&store, &[("SKU-1001", 400, 1), ("SKU-1002", 1040, 5)]).await;
    // Unit 7, to show requests are addressed to the configured unit.
    let device = Device::new(7);
    device.set_holding(0, &[0; 16]);
    device.set_holding(0, &words(1200, true)); // slot 0: 3 units
    device.set_holding(6, &words(4160, true)); // slot 3: 4 units, below 5
    device.set_holding(14, &words(-2i32 as u32, true)); // slot 7: tare drift
    let address = serve_tcp(&device).await;
    let spec = store.device(
        &format!(
            r#"
id = "shelf-1"
profile = "loadcell-shelf-modbus"
transport = "modbus-tcp"
address = "{address}"
unit = 7
poll_ms = 50
slots = {{ 0 = "SKU-1001", 3 = "SKU-1002" }}
"#
        ),
        None,
    );
    let task = start(&store, spec);

    let events = store.wait_events("a weight for every slot", |e| shelf_weights(e).len() >= 8);
    let mut weights = shelf_weights(&events);
    weights.sort_by_key(|w| w.slot);
    let expected: Vec<ShelfWeight> = (0..8)
        .map(|slot| {
            let (sku, grams, units_est) = match slot {
                0 => (Some("SKU-1001"), 1200, Some(3)),
                3 => (Some("SKU-1002"), 4160, Some(4)),
                7 => (None, -2, None),
                _ => (None, 0, None),
            };
            ShelfWeight {
                slot,
                sku: sku.map(String::from),
                grams,
                units_est,
            }
        })
        .collect();
    assert_eq!(weights, expected);
    // All eight slots of one poll are delivered together.
    let first = events
        .iter()
        .find(|e| matches!(e.body, EventBody::ShelfWeight(_)))
        .unwrap();
    assert!(
        events
            .iter()
            .filter(|e| matches!(e.body, EventBody::ShelfWeight(_)))
            .all(|e| e.ts == first.ts)
    );
    // 4 units of SKU-1002 against a minimum of 5: the projections raise
    // low_stock from the estimate.
    let events = store.wait_events("low_stock for slot 3", |e| {
        !alerts(e, "low_stock").is_empty()
    });
    assert_eq!(
        alerts(&events, "low_stock")[0].subject,
        "SKU-1002@shelf-1/3"
    );

    // 4 g is below min_change (5 g): several polls later, nothing new.
    device.set_holding(0, &words(1204, true));
    let seen = device.requests();
    wait_for_async("three more polls", || {
        (device.requests() >= seen + 3).then_some(())
    })
    .await;
    // The poll that read 1204 g was delivered before the next request.
    assert_eq!(shelf_weights(&store.events()).len(), 8);

    // 10 g from the last journaled 1200 g: journaled.
    device.set_holding(0, &words(1210, true));
    let events = store.wait_events("the changed slot", |e| shelf_weights(e).len() > 8);
    let weights = shelf_weights(&events);
    assert_eq!(
        weights[8..],
        [ShelfWeight {
            slot: 0,
            sku: Some("SKU-1001".into()),
            grams: 1210,
            units_est: Some(3),
        }]
    );

    let health = store.health.get("shelf-1").unwrap();
    assert!(health.up);
    assert!(health.frames_ok >= 3, "{health:?}");
    assert_eq!(health.frames_bad, 0);
    stop(store, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xy_md02_over_rtu_readings_and_temperature_alert() {
    let mut store = Store::new();
    let pty = PtyPair::new(store.dir.path(), "xy");
    let device = Device::new(1);
    device.set_input(1, &[-123i16 as u16, 456]); // -12.3 C, 45.6 %RH
    serve_rtu(&pty, &device);
    let device_toml = format!(
        r#"
id = "freezer-1"
profile = "xy-md02"
transport = "modbus-rtu"
port = "{}"
unit = 1
poll_ms = 50
alert_above = 7.0
"#,
        pty.agent.display()
    );
    with_thresholds(&mut store, &device_toml);
    let spec = store.device(&device_toml, None);
    let task = start(&store, spec);

    let events = store.wait_events("temperature and humidity", |e| readings(e).len() >= 2);
    let got = readings(&events);
    assert_eq!(got[0].name, "temperature");
    assert!((got[0].value - -12.3).abs() < 1e-9, "{got:?}");
    assert_eq!(got[0].unit, "C");
    assert_eq!(got[1].name, "humidity");
    assert!((got[1].value - 45.6).abs() < 1e-9, "{got:?}");
    assert_eq!(got[1].unit, "%");
    assert!(alerts(&events, "temperature").is_empty());

    // The cabinet warms up to 9.5 C, above alert_above = 7.0.
    device.set_input(1, &[95]);
    let events = store.wait_events("the temperature alert", |e| {
        !alerts(e, "temperature").is_empty()
    });
    let alert = &alerts(&events, "temperature")[0];
    assert_eq!(alert.state, AlertState::Open);
    assert_eq!(alert.subject, "freezer-1");
    assert!(
        readings(&events)
            .iter()
            .any(|r| r.name == "temperature" && (r.value - 9.5).abs() < 1e-9)
    );

    // Back to 4.0 C: resolved.
    device.set_input(1, &[40]);
    let events = store.wait_events("the alert resolved", |e| {
        alerts(e, "temperature").len() >= 2
    });
    let states: Vec<AlertState> = alerts(&events, "temperature")
        .iter()
        .map(|a| a.state)
        .collect();
    assert_eq!(states, [AlertState::Open, AlertState::Resolved]);
    // Humidity did not change: journaled once.
    assert_eq!(
        readings(&events)
            .iter()
            .filter(|r| r.name == "humidity")
            .count(),
        1
    );
    stop(store, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_register_type_and_word_order() {
    let store = Store::new();
    let profiles = tempfile::tempdir().unwrap();
    write_profile(
        profiles.path(),
        "all-types",
        r#"
[registers]
emit = "reading"
# Two slots of little-endian i32 in holding registers 100..103: readings
# "slot0" and "slot1".
table = "holding"
start = 100
slots = 2
type = "i32"
word_order = "little"
unit = "g"

[[registers.values]]
name = "u16"
table = "holding"
address = 0
type = "u16"
[[registers.values]]
name = "i16"
table = "holding"
address = 1
type = "i16"
[[registers.values]]
name = "u32_big"
table = "holding"
address = 2
type = "u32"
word_order = "big"
[[registers.values]]
name = "u32_little"
table = "holding"
address = 4
type = "u32"
word_order = "little"
[[registers.values]]
name = "i32_big"
table = "input"
address = 10
type = "i32"
word_order = "big"
[[registers.values]]
name = "i32_little"
table = "input"
address = 12
type = "i32"
word_order = "little"
[[registers.values]]
name = "f32_big"
table = "input"
address = 20
type = "f32"
word_order = "big"
[[registers.values]]
name = "f32_little"
table = "input"
address = 30
type = "f32"
word_order = "little"
[[registers.values]]
name = "scaled"
table = "input"
address = 40
type = "i16"
scale = 0.1
unit = "C"
"#,
    );
    let device = Device::new(1);
    device.set_holding(0, &[65000, -1234i16 as u16]);
    device.set_holding(2, &words(3_000_000_000, true));
    device.set_holding(4, &words(3_000_000_000, false));
    device.set_input(10, &words(-2_000_000_000i32 as u32, true));
    device.set_input(12, &words(-2_000_000_000i32 as u32, false));
    device.set_input(20, &words((-21.75f32).to_bits(), true));
    device.set_input(30, &words(1.0e-3f32.to_bits(), false));
    device.set_input(40, &[-123i16 as u16]);
    device.set_holding(100, &words(70_000, false));
    device.set_holding(102, &words(-5i32 as u32, false));
    let address = serve_tcp(&device).await;
    let spec = store.device(
        &format!(
            "id = \"types\"\nprofile = \"all-types\"\ntransport = \"modbus-tcp\"\n\
             address = \"{address}\"\npoll_ms = 50\n"
        ),
        Some(profiles.path()),
    );
    let task = start(&store, spec);

    let expected: [(&str, f64); 11] = [
        ("slot0", 70_000.0),
        ("slot1", -5.0),
        ("u16", 65000.0),
        ("i16", -1234.0),
        ("u32_big", 3_000_000_000.0),
        ("u32_little", 3_000_000_000.0),
        ("i32_big", -2_000_000_000.0),
        ("i32_little", -2_000_000_000.0),
        ("f32_big", -21.75),
        ("f32_little", f64::from(1.0e-3f32)),
        ("scaled", -12.3),
    ];
    let events = store.wait_events("every value", |e| readings(e).len() >= expected.len());
    let got: HashMap<String, Reading> = readings(&events)
        .into_iter()
        .map(|r| (r.name.clone(), r))
        .collect();
    assert_eq!(got.len(), expected.len(), "{got:?}");
    for (name, value) in expected {
        let r = &got[name];
        if name == "scaled" {
            assert!((r.value - value).abs() < 1e-9, "{r:?}");
            assert_eq!(r.unit, "C");
        } else {
            assert_eq!(r.value, value, "{name}");
        }
    }
    assert_eq!(got["slot0"].unit, "g");
    assert!(store.quarantine().is_empty());
    stop(store, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_registers_are_quarantined() {
    let store = Store::new();
    let profiles = tempfile::tempdir().unwrap();
    write_profile(
        profiles.path(),
        "one-float",
        "[registers]\n[[registers.values]]\nname = \"t\"\naddress = 5\ntype = \"f32\"\n",
    );
    let device = Device::new(1);
    // A NaN: what many sensors report for "no reading".
    device.set_input(5, &[0x7FC0, 0x0000]);
    let address = serve_tcp(&device).await;
    let spec = store.device(
        &format!(
            "id = \"nan\"\nprofile = \"one-float\"\ntransport = \"modbus-tcp\"\n\
             address = \"{address}\"\npoll_ms = 50\n"
        ),
        Some(profiles.path()),
    );
    let task = start(&store, spec);

    let (device_id, reason, raw) = wait_for_async("quarantined registers", || {
        store.quarantine().into_iter().next()
    })
    .await;
    assert_eq!(device_id, "nan");
    assert!(reason.contains("not a finite f32"), "{reason}");
    assert_eq!(raw, [0x7F, 0xC0, 0x00, 0x00]);
    // The device answered: it is up, the poll counted as a bad frame.
    let health = store.health.get("nan").unwrap();
    assert!(health.up);
    assert!(health.frames_bad >= 1);

    device.set_input(5, &words(2.5f32.to_bits(), true));
    let events = store.wait_events("a reading", |e| !readings(e).is_empty());
    assert_eq!(readings(&events)[0].value, 2.5);
    stop(store, task).await;
}

/// Start a polled test device, let it fail with `failure`, and check it
/// goes down after 3 failed polls with an error naming the problem, then
/// comes back up once the device answers again.
async fn down_and_back(
    store: Store,
    device: Device,
    spec: DeviceSpec,
    failure: Behaviour,
    error: &str,
) {
    let id = spec.id().to_string();
    let task = start(&store, spec);
    let is_up = |up: bool| {
        let health = store.health.get(&id).unwrap();
        (health.up == up).then_some(health)
    };
    wait_for_async("device up", || is_up(true)).await;

    let before = device.requests();
    device.behave(failure);
    let health = wait_for_async("device down", || is_up(false)).await;
    assert!(device.requests() >= before + 3);
    if let Behaviour::Exception(_) = failure {
        assert!(device.exceptions() >= 3);
    }
    let last_error = health.last_error.unwrap_or_default();
    assert!(last_error.contains("3 polls failed"), "{last_error}");
    assert!(last_error.contains(error), "{last_error}");
    assert!(health.reconnects >= 1);

    device.behave(Behaviour::Answer);
    wait_for_async("device up again", || is_up(true)).await;
    stop(store, task).await;
}

/// A device with one holding register, for the outage tests.
fn simple_device(profiles: &Path) -> Device {
    write_profile(
        profiles,
        "one-register",
        "[registers]\n[[registers.values]]\nname = \"v\"\ntable = \"holding\"\naddress = 0\n",
    );
    let device = Device::new(1);
    device.set_holding(0, &[42]);
    device
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceptions_mark_the_device_down_and_answers_up_again() {
    let store = Store::new();
    let profiles = tempfile::tempdir().unwrap();
    let device = simple_device(profiles.path());
    let address = serve_tcp(&device).await;
    let spec = store.device(
        &format!(
            "id = \"exc\"\nprofile = \"one-register\"\ntransport = \"modbus-tcp\"\n\
             address = \"{address}\"\npoll_ms = 50\n"
        ),
        Some(profiles.path()),
    );
    down_and_back(
        store,
        device,
        spec,
        Behaviour::Exception(ExceptionCode::IllegalDataAddress),
        "illegal data address (0x02)",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_tcp_device_times_out_down_and_comes_back() {
    let store = Store::new();
    let profiles = tempfile::tempdir().unwrap();
    let device = simple_device(profiles.path());
    let address = serve_tcp(&device).await;
    let spec = store.device(
        &format!(
            "id = \"quiet\"\nprofile = \"one-register\"\ntransport = \"modbus-tcp\"\n\
             address = \"{address}\"\npoll_ms = 50\n"
        ),
        Some(profiles.path()),
    );
    down_and_back(store, device, spec, Behaviour::Silent, "no answer within").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_rtu_device_times_out_down_and_comes_back() {
    let store = Store::new();
    let pty = PtyPair::new(store.dir.path(), "quiet");
    let profiles = tempfile::tempdir().unwrap();
    let device = simple_device(profiles.path());
    serve_rtu(&pty, &device);
    let spec = store.device(
        &format!(
            "id = \"quiet-rtu\"\nprofile = \"one-register\"\ntransport = \"modbus-rtu\"\n\
             port = \"{}\"\nbaud = 9600\npoll_ms = 50\n",
            pty.agent.display()
        ),
        Some(profiles.path()),
    );
    down_and_back(store, device, spec, Behaviour::Silent, "no answer within").await;
}
