//! The fleet uplink over MQTT (docs/fleet.md) through a real mosquitto,
//! against the reference central's MQTT consumer: every event exactly
//! once and contiguous, resent after a consumer outage, split to fit the
//! payload limit; the retained heartbeat and the last will; commands.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::broker::{Mosquitto, Peer};
use common::{Agent, Store, free_port, reading, wait_for_async, wait_within};
use rumqttc::Packet;
use serde_json::{Value, json};
use storegate::config::MqttUplinkConfig;
use storegate::db::{self, journal};
use storegate::event::{EventBody, NewEvent, SaleLine, now_millis};
use storegate::sim::central::Central as CentralSim;
use storegate::sim::central_mqtt::{Consumer, ConsumerOptions};
use storegate::sync::uplink::{Triggers, Uplink, UplinkStats};
use storegate::sync::{self, Link};

const STORE: &str = "s1";

fn uplink_config(port: u16) -> MqttUplinkConfig {
    MqttUplinkConfig {
        brokers: vec![format!("mqtt://127.0.0.1:{port}")],
        topic_prefix: "storegate/v1".into(),
        client_cert: None,
        client_key: None,
        username: None,
        password_file: None,
        max_payload_bytes: 131_072,
        ack_timeout_s: 30,
        inflight_batches: 4,
    }
}

/// Start the uplink of `store` in this process.
fn start_uplink(store: &Store, config: MqttUplinkConfig, batch_max: usize) -> Arc<UplinkStats> {
    let stats = Arc::new(UplinkStats::default());
    let (link, _) = tokio::sync::watch::channel(Link::Unknown);
    let (_heartbeat_tx, heartbeat) = tokio::sync::watch::channel(None);
    std::mem::forget(_heartbeat_tx);
    tokio::spawn(sync::uplink::run(
        Uplink {
            config,
            ca_file: None,
            store_id: STORE.into(),
            writer: store.writer.clone(),
            reader: Arc::new(Mutex::new(db::open_read(&store.db).unwrap())),
            db_path: store.db.clone(),
            batch_max,
            max_backoff: Duration::from_secs(1),
            link,
            stats: stats.clone(),
            heartbeat,
            triggers: Triggers::default(),
            health: store.health.clone(),
        },
        store.shutdown.clone(),
    ));
    stats
}

fn consumer(central: &CentralSim, port: u16) -> Consumer {
    let mut options = ConsumerOptions::new(vec![format!("mqtt://127.0.0.1:{port}")]);
    options.client_id = format!("central-{}", free_port());
    central.spawn_mqtt(options).unwrap()
}

async fn wait_connected(c: &Consumer) {
    wait_for_async("the consumer to connect", || c.is_connected().then_some(())).await;
    // Its SUBSCRIBE follows the CONNACK.
    tokio::time::sleep(Duration::from_millis(200)).await;
}

/// A broker, a store, the reference central and its connected consumer.
struct Rig {
    broker: Mosquitto,
    store: Store,
    central: CentralSim,
    c: Consumer,
}

impl Rig {
    async fn start() -> Rig {
        let broker = Mosquitto::start();
        let store = Store::new();
        let central = CentralSim::default();
        let c = consumer(&central, broker.port);
        wait_connected(&c).await;
        Rig {
            broker,
            store,
            central,
            c,
        }
    }
}

/// A receipt of `lines` lines, each its own `sale` event.
fn receipt(n: usize, lines: usize) -> Vec<NewEvent> {
    (0..lines)
        .map(|l| {
            NewEvent::new(
                now_millis(),
                "pos-1",
                EventBody::Sale(SaleLine {
                    receipt_id: format!("R-{n}-{:08x}", (n * 7919 + l * 104_729) % 0xffff_ffff),
                    line: l as u32 + 1,
                    sku: format!("SKU-{:05}", (n * 31 + l * 17) % 99_991),
                    gtin: Some(format!(
                        "{:014}",
                        (n as u64 * 1_000_003 + l as u64 * 7_919) % 100_000_000_000_000
                    )),
                    qty: (l % 5 + 1) as i64,
                    unit_price_minor: ((n * 13 + l * 101) % 10_000) as i64 + 1,
                    currency: "EUR".into(),
                    pos: format!("till-{}", n % 7),
                    member_hash: None,
                }),
            )
        })
        .collect()
}

fn head(store: &Store) -> i64 {
    journal::head(&db::open_read(&store.db).unwrap()).unwrap()
}

/// Central holds exactly the journal: every seq once, contiguous, equal;
/// and the agent recorded the ack (what retention trims by).
async fn assert_exactly_once(store: &Store, central: &CentralSim, limit: Duration) {
    let head = head(store);
    wait_within("central to acknowledge everything", limit, || {
        (central.view(STORE).acked_through == head).then_some(())
    })
    .await;
    let view = central.view(STORE);
    let seqs: Vec<i64> = view.events.keys().copied().collect();
    assert_eq!(
        seqs,
        (1..=head).collect::<Vec<_>>(),
        "contiguous, each once"
    );
    common::assert_at_central(&view.events, &store.events());
    wait_for_async("the agent to record central's ack", || {
        let conn = db::open_read(&store.db).unwrap();
        (sync::state::read(&conn).unwrap().last_acked_seq == head).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_reaches_central_exactly_once_through_mosquitto() {
    let Rig {
        broker,
        store,
        central,
        c: _consumer,
    } = Rig::start().await;
    // A backlog first (the agent was offline), then more while it runs.
    store
        .writer
        .append((0..2_000).map(reading).collect())
        .await
        .unwrap();
    let stats = start_uplink(&store, uplink_config(broker.port), 300);
    for chunk in 0..5 {
        store
            .writer
            .append((0..100).map(|i| reading(chunk * 100 + i)).collect())
            .await
            .unwrap();
    }
    assert_exactly_once(&store, &central, Duration::from_secs(30)).await;
    let s = stats.snapshot();
    assert!(s.connected, "{s:?}");
    assert_eq!(s.last_ack, Some(head(&store)), "{s:?}");
    assert!(s.batches_sent >= 2500 / 300, "{s:?}");
    // Batch sizes stayed within batch_max.
    assert!(central.lock().batch_sizes.iter().all(|n| *n <= 300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_outage_is_bridged_by_resending_after_the_ack_timeout() {
    let Rig {
        broker,
        store,
        central,
        c,
    } = Rig::start().await;
    let config = MqttUplinkConfig {
        ack_timeout_s: 2,
        ..uplink_config(broker.port)
    };
    let stats = start_uplink(&store, config, 50);
    store
        .writer
        .append((0..120).map(reading).collect())
        .await
        .unwrap();
    assert_exactly_once(&store, &central, Duration::from_secs(30)).await;

    // Central's consumer goes away; what the agent publishes meanwhile is
    // lost at the broker (the consumer's session is clean).
    c.stop();
    store
        .writer
        .append((120..400).map(reading).collect())
        .await
        .unwrap();
    let out = wait_for_async("batches out without an ack", || {
        let s = stats.snapshot();
        (s.unacked_batches > 0).then_some(s)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(central.view(STORE).acked_through < 400);
    let resends_before = stats.snapshot().resends;
    assert!(
        resends_before > out.resends,
        "the ack timeout resent: {:?}",
        stats.snapshot()
    );

    let c = consumer(&central, broker.port);
    wait_connected(&c).await;
    assert_exactly_once(&store, &central, Duration::from_secs(30)).await;
    assert_eq!(stats.snapshot().unacked_batches, 0);
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_payload_fits_max_payload_bytes() {
    let Rig {
        broker,
        store,
        central,
        c,
    } = Rig::start().await;
    // The test's own subscriber sees every payload as published.
    let mut peer = Peer::connect(broker.port, "watcher").await;
    peer.subscribe("storegate/v1/+/events").await;
    for n in 0..40 {
        store.writer.append(receipt(n, 25)).await.unwrap();
    }
    let config = MqttUplinkConfig {
        max_payload_bytes: 4096,
        ..uplink_config(broker.port)
    };
    start_uplink(&store, config, 5000);
    assert_exactly_once(&store, &central, Duration::from_secs(60)).await;
    let mut sizes = Vec::new();
    let mut gzipped = 0;
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let got = tokio::time::timeout(Duration::from_millis(300), async {
            peer.expect("a batch", |p| match p {
                Packet::Publish(m) => Some((m.payload.len(), m.payload.starts_with(&[0x1f, 0x8b]))),
                _ => None,
            })
            .await
        })
        .await;
        match got {
            Ok((n, gz)) => {
                sizes.push(n);
                gzipped += usize::from(gz);
            }
            Err(_) => break,
        }
    }
    assert!(sizes.len() > 5, "split into several payloads: {sizes:?}");
    assert!(sizes.iter().all(|n| *n <= 4096), "{sizes:?}");
    assert!(gzipped > 0, "gzip is used when it is smaller");
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_too_big_for_any_payload_holds_the_push_loudly() {
    let Rig {
        broker,
        store,
        central,
        c,
    } = Rig::start().await;
    store
        .writer
        .append((0..5).map(reading).collect())
        .await
        .unwrap();
    // An alert whose message does not compress below the limit.
    let mut lcg = common::Lcg(42);
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let message: String = (0..3000)
        .map(|_| alphabet[(lcg.next() % 64) as usize] as char)
        .collect();
    let big = NewEvent::new(
        now_millis(),
        "agent",
        EventBody::Alert(storegate::event::Alert {
            code: "note".into(),
            severity: storegate::event::Severity::Info,
            message,
            subject: "big".into(),
            state: storegate::event::AlertState::Open,
            context: Default::default(),
        }),
    );
    store.writer.append(vec![big]).await.unwrap();
    store
        .writer
        .append((6..10).map(reading).collect())
        .await
        .unwrap();
    let config = MqttUplinkConfig {
        max_payload_bytes: 1024,
        ..uplink_config(broker.port)
    };
    let stats = start_uplink(&store, config, 5000);
    wait_for_async("the oversize event to be reported", || {
        stats.snapshot().oversize_seq.is_some().then_some(())
    })
    .await;
    assert_eq!(stats.snapshot().oversize_seq, Some(6));
    // Everything before it arrived; nothing after it was skipped over.
    wait_for_async("the events before it", || {
        (central.view(STORE).acked_through == 5).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(central.view(STORE).events.len(), 5);
    let alerts =
        storegate::domain::alerts::open_alerts(&db::open_read(&store.db).unwrap()).unwrap();
    assert!(
        alerts
            .iter()
            .any(|a| a.code == "uplink_oversize" && a.subject == "6"),
        "{alerts:?}"
    );
    assert!(store.health.problems().contains_key("uplink"));
    drop(c);
}

// ---------------------------------------------------------------------------
// The real binary: heartbeat, last will, commands
// ---------------------------------------------------------------------------

fn agent_config(dir: &std::path::Path, broker: u16, central_url: &str) -> std::path::PathBuf {
    agent_config_on(dir, broker, central_url, free_port())
}

fn agent_config_on(
    dir: &std::path::Path,
    broker: u16,
    central_url: &str,
    api: u16,
) -> std::path::PathBuf {
    let config = dir.join("storegate.toml");
    std::fs::write(
        &config,
        format!(
            r#"store_id = "{STORE}"
data_dir = "{data}"
[api]
listen = "127.0.0.1:{api}"
[central]
transport = "mqtt"
brokers = ["mqtt://127.0.0.1:{broker}"]
url = "{central_url}"
heartbeat_s = 5
poll_prices_s = 3600
poll_stock_s = 3600
"#,
            data = dir.display(),
        ),
    )
    .unwrap();
    config
}

fn status_of(p: &Packet) -> Option<(bool, Value)> {
    match p {
        Packet::Publish(m) if m.topic == format!("storegate/v1/{STORE}/status") => {
            Some((m.retain, serde_json::from_slice(&m.payload).ok()?))
        }
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_is_retained_and_the_last_will_says_offline_after_a_kill() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let config = agent_config(dir.path(), broker.port, "http://127.0.0.1:9");
    let mut agent = Agent::start(&config, dir.path().join("agent.log"));
    agent.wait_log("connected to central's broker");

    // A subscriber that comes later gets the retained heartbeat.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut peer = Peer::connect(broker.port, "fleet-watch").await;
    peer.subscribe(&format!("storegate/v1/{STORE}/status"))
        .await;
    let (retained, hb) = peer.expect("the retained heartbeat", status_of).await;
    assert!(retained, "{hb}");
    for key in [
        "online",
        "store_id",
        "agent_version",
        "started_at",
        "at",
        "config_version",
        "config_sha256",
        "backlog",
        "acked_through",
        "devices",
        "open_alerts",
        "disk_used_bytes",
    ] {
        assert!(hb.get(key).is_some(), "{key} missing in {hb}");
    }
    assert_eq!(hb["online"], json!(true));
    assert_eq!(hb["store_id"], json!(STORE));
    assert_eq!(hb["config_version"], Value::Null);
    assert_eq!(hb["devices"], json!({"up": 0, "down": 0, "down_ids": []}));
    assert!(hb["disk_used_bytes"].as_u64().unwrap() > 0, "{hb}");

    agent.kill();
    let (_, will) = peer
        .expect("the last will", |p| {
            status_of(p).filter(|(_, v)| v["online"] == json!(false))
        })
        .await;
    assert_eq!(will["store_id"], json!(STORE));
    assert!(will["at"].is_string(), "{will}");
    // And it stays: a new subscriber gets it retained.
    let mut late = Peer::connect(broker.port, "fleet-late").await;
    late.subscribe(&format!("storegate/v1/{STORE}/status"))
        .await;
    let (retained, v) = late.expect("the retained will", status_of).await;
    assert!(retained);
    assert_eq!(v["online"], json!(false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_prices_and_push_now_commands_act_at_once() {
    let broker = Mosquitto::start();
    let central = CentralSim::default();
    let (addr, _http) = central.clone().spawn("127.0.0.1:0").await.unwrap();
    let c = consumer(&central, broker.port);
    wait_connected(&c).await;
    let dir = tempfile::tempdir().unwrap();
    let api = free_port();
    let config = agent_config_on(dir.path(), broker.port, &format!("http://{addr}"), api);
    let mut agent = Agent::start(&config, dir.path().join("agent.log"));
    agent.wait_log("connected to central's broker");
    wait_for_async("central to record the heartbeat", || {
        central
            .view(STORE)
            .status
            .filter(|s| s["online"] == json!(true))
    })
    .await;
    // Let the start-up pull finish, so only the command can bring it.
    tokio::time::sleep(Duration::from_secs(1)).await;

    central.set_price(json!({
        "sku": "SKU-1001", "gtins": [], "name": "Oat milk 1L",
        "price_minor": 249, "currency": "EUR",
        "effective_from": "2026-01-01T00:00:00.000Z"
    }));
    let db = dir.path().join("storegate.db");
    let price = || {
        let conn = db::open_read(&db).ok()?;
        storegate::domain::prices::shelf_price(&conn, "SKU-1001").ok()?
    };
    assert!(price().is_none(), "not pulled before the command");
    let sent = Instant::now();
    c.command(STORE, "pull_prices").await.unwrap();
    let record = wait_for_async("the price to reach the agent", price).await;
    assert_eq!(record.price_minor, 249);
    assert!(
        sent.elapsed() < Duration::from_secs(1),
        "took {:?}",
        sent.elapsed()
    );

    // pull_orders brings a new pickup order at once (the agent's own
    // orders cadence is a minute).
    central
        .add_order(
            STORE,
            json!({"order_id": "WEB-1", "pickup_code": "QX-CMD-1",
                   "promised_at": "2026-01-01T00:00:00.000Z", "expires_at": "2999-01-01T00:00:00.000Z",
                   "lines": [{"sku": "SKU-1001", "qty": 1}]}),
        )
        .unwrap();
    let order = || {
        let conn = db::open_read(&db).ok()?;
        storegate::domain::pickup::state_of(&conn, "WEB-1").ok()?
    };
    assert!(order().is_none(), "not pulled before the command");
    let sent = Instant::now();
    c.command(STORE, "pull_orders").await.unwrap();
    let state = wait_for_async("the order to reach the agent", order).await;
    assert_eq!(state, "open");
    assert!(
        sent.elapsed() < Duration::from_secs(1),
        "took {:?}",
        sent.elapsed()
    );
    // Its order_reserved goes up and is acknowledged before the checks
    // of an idle uplink below.
    let reserved_seq = wait_for_async("order_reserved at central", || {
        central
            .view(STORE)
            .events
            .into_iter()
            .find(|(_, e)| e["kind"] == "order_reserved")
            .map(|(seq, _)| seq)
    })
    .await;
    wait_for_async("the agent to take central's ack", || {
        let conn = db::open_read(&db).ok()?;
        let acked = storegate::sync::state::read(&conn).ok()?.last_acked_seq;
        (acked >= reserved_seq).then_some(())
    })
    .await;

    // Unknown commands are ignored; push_now (to every store) is taken.
    c.command("all", "reboot").await.unwrap();
    c.command("all", "push_now").await.unwrap();
    agent.wait_log("push_now: sending from central's last ack");
    agent.wait_log("unknown command from central");

    // /metrics and `storegate status` show the transport, the broker,
    // the unacknowledged batches and the last ack.
    let broker_url = format!("mqtt://127.0.0.1:{}", broker.port);
    let metrics = reqwest::get(format!("http://127.0.0.1:{api}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "storegate_central_transport{transport=\"mqtt\"} 1".to_string(),
        format!("storegate_uplink_connected{{broker=\"{broker_url}\"}} 1"),
        "storegate_uplink_unacked_batches 0".to_string(),
    ] {
        assert!(metrics.contains(&line), "{line} not in\n{metrics}");
    }
    let status = wait_for_async("the uplink status file", || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_storegate"))
            .arg("status")
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.contains("connected to").then_some(text)
    })
    .await;
    assert!(
        status.contains(&format!(
            "central    transport mqtt, connected to {broker_url}, 0 unacknowledged batches"
        )),
        "{status}"
    );

    // A clean stop says offline itself (the will is for a lost connection).
    let pid = agent.child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    wait_for_async("the offline status at central", || {
        central
            .view(STORE)
            .status
            .filter(|s| s["online"] == json!(false))
    })
    .await;
    let _ = agent.child.wait();
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_a_broker_fails_over_to_the_next_without_loss() {
    let a = Mosquitto::start();
    let b = Mosquitto::start();
    let urls = vec![
        format!("mqtt://127.0.0.1:{}", a.port),
        format!("mqtt://127.0.0.1:{}", b.port),
    ];
    let store = Store::new();
    let central = CentralSim::default();
    let mut options = ConsumerOptions::new(urls.clone());
    options.client_id = "central-failover".into();
    let c = central.spawn_mqtt(options).unwrap();
    wait_connected(&c).await;
    let config = MqttUplinkConfig {
        brokers: urls,
        ack_timeout_s: 2,
        ..uplink_config(a.port)
    };
    let stats = start_uplink(&store, config, 100);
    store
        .writer
        .append((0..300).map(reading).collect())
        .await
        .unwrap();
    assert_exactly_once(&store, &central, Duration::from_secs(30)).await;
    assert_eq!(
        stats.snapshot().broker.as_deref(),
        Some(format!("mqtt://127.0.0.1:{}", a.port).as_str())
    );

    drop(a);
    store
        .writer
        .append((300..600).map(reading).collect())
        .await
        .unwrap();
    assert_exactly_once(&store, &central, Duration::from_secs(30)).await;
    let s = stats.snapshot();
    assert_eq!(
        s.broker.as_deref(),
        Some(format!("mqtt://127.0.0.1:{}", b.port).as_str())
    );
    assert!(s.connections >= 2, "{s:?}");
    drop((c, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http_the_heartbeat_is_put_to_central() {
    let store = Store::new();
    let central = CentralSim::default();
    let (addr, _) = central.clone().spawn("127.0.0.1:0").await.unwrap();
    let config = storegate::config::CentralConfig {
        batch_max: 100,
        max_backoff_s: 1,
        ..storegate::config::CentralConfig::http(format!("http://{addr}"))
    };
    let client = Arc::new(storegate::sync::Central::new(&config, STORE).unwrap());
    let (tx, rx) = tokio::sync::watch::channel(None);
    tokio::spawn(sync::heartbeat::run(
        sync::heartbeat::Source {
            db_path: store.db.clone(),
            health: store.health.clone(),
            store_id: STORE.into(),
            started_at: chrono::Utc::now(),
        },
        Duration::from_secs(60),
        tx,
        store.shutdown.clone(),
    ));
    tokio::spawn(sync::heartbeat::run_http(
        client,
        rx,
        store.shutdown.clone(),
    ));
    let status = wait_for_async("the heartbeat at central", || central.view(STORE).status).await;
    assert_eq!(status["online"], json!(true));
    assert_eq!(status["backlog"], json!(0));
    // A change (a backlog) is sent again within the 5 s gap.
    store
        .writer
        .append((0..3).map(reading).collect())
        .await
        .unwrap();
    wait_within("the changed heartbeat", Duration::from_secs(10), || {
        central
            .view(STORE)
            .status
            .filter(|s| s["backlog"] == json!(3))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_central_consumes_the_uplink_from_the_command_line() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("central.json");
    let mut sim = std::process::Command::new(env!("CARGO_BIN_EXE_storegate"))
        .args(["sim", "central", "--empty", "--listen", "127.0.0.1:0"])
        .arg("--mqtt")
        .arg(
            format!("mqtt://127.0.0.1:{}", free_port())
                + &format!(",mqtt://127.0.0.1:{}", broker.port),
        )
        .arg("--state")
        .arg(&state)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let store = Store::new();
    store
        .writer
        .append((0..50).map(reading).collect())
        .await
        .unwrap();
    let config = MqttUplinkConfig {
        ack_timeout_s: 1,
        ..uplink_config(broker.port)
    };
    start_uplink(&store, config, 20);
    // The first broker given is down: the consumer goes on to the next.
    let saved = wait_within(
        "central's state file to hold the events",
        Duration::from_secs(30),
        || {
            let doc: Value = serde_json::from_slice(&std::fs::read(&state).ok()?).ok()?;
            (doc["stores"][STORE]["acked_through"] == json!(50)).then_some(doc)
        },
    )
    .await;
    assert_eq!(
        saved["stores"][STORE]["events"].as_object().unwrap().len(),
        50
    );
    let _ = sim.kill();
    let _ = sim.wait();
}
