//! The fault suite (issue 8): the real daemon binary against real
//! counterparts (mosquitto, the reference central, socat ptys, a
//! tokio-modbus server, an HTTP access point), put through what a store
//! gateway lives through: SIGKILLs at random moments while a central
//! misbehaves, a full disk, thousands of malformed frames, a reader
//! unplugged and plugged back every second for a minute.
//!
//! Every wait is for a condition (events journaled, acknowledged, a device
//! back up), never a fixed sleep, so a slow machine only makes it slower.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::broker::{Mosquitto, Peer};
use common::modbus::{Device as ModbusDevice, serve_tcp};
use common::{Agent, Lcg, PtyPair, free_port, wait_for_async};
use rumqttc::Packet;
use storegate::db::{self, journal};
use storegate::event::{Event, EventBody};
use storegate::health::DeviceHealth;
use storegate::sim::central::{Behaviour, Central as CentralSim};
use storegate::sim::m100::{Tag, tag_notice};

/// A till sending POS JSON receipts over MQTT.
const TILL: &str = "[[device]]\nid = \"till-1\"\nprofile = \"pos-json\"\ntransport = \"mqtt\"\ntopic = \"faults/pos/1\"\n";

fn receipt(n: usize) -> String {
    format!(
        r#"{{"receipt_id":"R-{n}","pos":"1","currency":"EUR","lines":[{{"sku":"SKU-1001","qty":1,"unit_price_minor":249}},{{"sku":"SKU-1002","qty":2,"unit_price_minor":100}}]}}"#
    )
}

/// Write a store config: `[api]` on a free port, the given `[mqtt]` and
/// `[central]` sections (may be empty) and devices.
fn write_config(dir: &Path, data: &Path, sections: &str) -> PathBuf {
    let path = dir.join("storegate.toml");
    std::fs::write(
        &path,
        format!(
            "store_id = \"faults\"\ndata_dir = {data:?}\nprofiles_dir = {profiles:?}\n\
             [api]\nlisten = \"127.0.0.1:{api}\"\ntoken_files = {{ central = {tokens:?} }}\n{sections}",
            profiles = dir.join("profiles"),
            api = free_port(),
            tokens = dir.join("central.tokens"),
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("profiles")).unwrap();
    std::fs::write(dir.join("central.tokens"), "central-token\n").unwrap();
    path
}

/// [`wait_for_async`] for what may take up to a reconnect backoff (30 s).
async fn wait_long<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    common::wait_within(what, Duration::from_secs(120), f).await
}

/// Wait (up to 120 s: on a loaded machine a round may queue behind the
/// other tests) for `f`; on a timeout, fail with what tells a stalled
/// agent from a slow one: whether it runs, the journal head, device
/// health and its last log lines.
async fn wait_or_explain<T>(
    agent: &mut Agent,
    db: &Path,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!(
                "timed out waiting for {what}\nagent: {:?}\njournal head: {}\nhealth: {:#?}\n--- agent log (last lines) ---\n{}",
                agent.child.try_wait(),
                head(db),
                persisted_health(db),
                agent.last_log_lines(60),
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn journal_events(db: &Path) -> Vec<Event> {
    let Ok(conn) = db::open_read(db) else {
        return Vec::new();
    };
    journal::events_after(&conn, 0, usize::MAX >> 1).unwrap_or_default()
}

fn head(db: &Path) -> i64 {
    db::open_read(db)
        .ok()
        .and_then(|c| journal::head(&c).ok())
        .unwrap_or(0)
}

/// (receipt id, line) of every sale event.
fn sale_keys(events: &[Event]) -> Vec<(String, u32)> {
    events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::Sale(l) => Some((l.receipt_id.clone(), l.line)),
            _ => None,
        })
        .collect()
}

fn integrity_ok(db: &Path) {
    let conn = db::open_read(db).unwrap();
    let verdict: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(verdict, "ok");
}

/// Device health as the daemon persists it for `storegate status`.
fn persisted_health(db: &Path) -> BTreeMap<String, DeviceHealth> {
    let Ok(conn) = db::open_read(db) else {
        return BTreeMap::new();
    };
    storegate::devices::watch::read_persisted(&conn)
        .unwrap_or_default()
        .into_iter()
        .map(|h| (h.id.clone(), h))
        .collect()
}

/// Publishes receipts R-0, R-1, ... while `running`; counts PUBACKs.
struct Till {
    published: Arc<AtomicUsize>,
    running: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Peer>,
}

impl Till {
    fn start(peer: Peer, topic: &'static str, pause: Duration) -> Till {
        let published = Arc::new(AtomicUsize::new(0));
        let running = Arc::new(AtomicBool::new(true));
        let (p, r) = (published.clone(), running.clone());
        let task = tokio::spawn(async move {
            let mut n = 0;
            while r.load(Ordering::Relaxed) {
                peer.publish(topic, receipt(n)).await;
                n += 1;
                p.store(n, Ordering::Relaxed);
                tokio::time::sleep(pause).await;
            }
            peer
        });
        Till {
            published,
            running,
            task,
        }
    }

    fn published(&self) -> usize {
        self.published.load(Ordering::Relaxed)
    }

    /// Stop publishing; wait until the broker has acknowledged every
    /// receipt (the till may forget them now). Returns how many.
    async fn stop(self) -> usize {
        self.running.store(false, Ordering::Relaxed);
        let mut peer = self.task.await.unwrap();
        let total = self.published.load(Ordering::Relaxed);
        for _ in 0..total {
            peer.expect("PUBACK", |p| matches!(p, Packet::PubAck(_)).then_some(()))
                .await;
        }
        total
    }
}

// ---------------------------------------------------------------------------
// 100 SIGKILLs during ingest and sync, central misbehaving
// ---------------------------------------------------------------------------

/// What central does during one round: every misbehaviour of
/// spec/sync-api.md that the pusher must ride out without loss.
fn misbehaviour(rng: &mut Lcg) -> Behaviour {
    let mut b = Behaviour::default();
    match rng.next() % 8 {
        0 => b.ack_at_most = Some(1 + (rng.next() % 50) as usize),
        1 => b.max_batch = Some(1 + (rng.next() % 40) as usize),
        2 => b.fail_next = Some((503, 2, Some(1))),
        3 => b.fail_next = Some((429, 1, Some(1))),
        4 => b.fail_next = Some((500, 2, None)),
        5 => b.garbage_next = 2,
        6 => b.delay_ms = 30, // answers in flight when the kill lands
        _ => {}
    }
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_sigkills_during_ingest_and_sync_lose_nothing_and_duplicate_nothing_at_central() {
    const KILLS: usize = 100;
    let broker = Mosquitto::start();
    let sim = CentralSim::default();
    let (addr, _server) = sim.clone().spawn("127.0.0.1:0").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = data.join("storegate.db");
    let config = write_config(
        dir.path(),
        &data,
        &format!(
            "[mqtt]\nbroker = \"mqtt://127.0.0.1:{port}\"\nclient_id = \"storegate-faults\"\n\
             [central]\nurl = \"http://{addr}\"\nbatch_max = 100\nmax_backoff_s = 1\n\
             {TILL}",
            port = broker.port,
        ),
    );
    // The agent's persistent session exists from its first subscription
    // on; from then the broker keeps what the agent did not acknowledge,
    // also while it is dead. The till publishes QoS 1 all along.
    let mut first = Agent::start(&config, dir.path().join("agent.log"));
    first.wait_log("MQTT device subscribed");
    first.kill();
    let till = Till::start(
        Peer::connect(broker.port, "till").await,
        "faults/pos/1",
        Duration::from_millis(2),
    );

    let mut rng = Lcg(0x5EED_0100);
    let mut kinds = [0usize; 3];
    for round in 0..KILLS {
        sim.lock().behaviour = misbehaviour(&mut rng);
        let mut agent = Agent::start(&config, dir.path().join("agent.log"));
        let (start_head, start_acked) = (head(&db), sim.view("faults").acked_through);
        // Kill at a random moment: right after start-up, after some
        // events were committed, or after central took some.
        let kind = (rng.next() % 3) as usize;
        kinds[kind] += 1;
        match kind {
            0 => agent.wait_log("MQTT device subscribed"),
            1 => {
                let more = 1 + (rng.next() % 400) as i64;
                wait_or_explain(&mut agent, &db, "events committed this round", || {
                    (head(&db) >= start_head + more).then_some(())
                })
                .await
            }
            _ => {
                wait_or_explain(&mut agent, &db, "a push acknowledged this round", || {
                    (sim.view("faults").acked_through > start_acked).then_some(())
                })
                .await
            }
        }
        agent.kill();
        if round % 25 == 24 {
            integrity_ok(&db);
        }
    }
    let published = till.stop().await;

    // Central behaves again; one last agent drains everything.
    sim.lock().behaviour = Behaviour::default();
    let agent = Agent::start(&config, dir.path().join("agent-final.log"));
    let events = wait_long("every receipt journaled", || {
        let events = journal_events(&db);
        (sale_keys(&events).len() >= 2 * published).then_some(events)
    })
    .await;
    let local_head = events.last().map_or(0, |e| e.seq);
    wait_for_async("central to hold the whole journal", || {
        (sim.view("faults").acked_through >= local_head).then_some(())
    })
    .await;
    drop(agent);
    integrity_ok(&db);

    // Every receipt the till handed over is in the journal exactly once.
    let expected: HashSet<(String, u32)> = (0..published)
        .flat_map(|n| [(format!("R-{n}"), 1), (format!("R-{n}"), 2)])
        .collect();
    let local = sale_keys(&events);
    assert_eq!(
        local.len(),
        expected.len(),
        "sale lines journaled once each"
    );
    assert_eq!(local.into_iter().collect::<HashSet<_>>(), expected);

    // Central holds exactly the journal: contiguous seqs, same content,
    // nothing twice.
    let view = sim.view("faults");
    let seqs: Vec<i64> = view.events.keys().copied().collect();
    assert_eq!(seqs, (1..=view.acked_through).collect::<Vec<_>>());
    common::assert_at_central(&view.events, &events);
    let at_central: Vec<(String, u64)> = view
        .events
        .values()
        .filter(|e| e["kind"] == "sale")
        .map(|e| {
            (
                e["data"]["receipt_id"].as_str().unwrap().to_string(),
                e["data"]["line"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(at_central.len(), expected.len(), "no sale twice at central");
    assert_eq!(
        at_central.iter().cloned().collect::<HashSet<_>>().len(),
        expected.len()
    );
    eprintln!(
        "{KILLS} SIGKILLs (after start-up {}, after commits {}, after a push {}): \
         {published} receipts, {} events at central exactly once, {} resends deduplicated",
        kinds[0],
        kinds[1],
        kinds[2],
        view.events.len(),
        view.duplicates
    );
}

// ---------------------------------------------------------------------------
// Disk full
// ---------------------------------------------------------------------------

/// A small tmpfs: a data directory that really runs out of space.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(path: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .expect("mount(8)");
        assert!(
            status.success(),
            "mounting a {size} tmpfs at {} failed: the disk-full test needs root (CAP_SYS_ADMIN)",
            path.display()
        );
        SmallDisk(path.to_path_buf())
    }

    /// Fill the filesystem up with a file, leaving about `leave` bytes.
    fn fill_leaving(&self, leave: u64) -> PathBuf {
        let filler = self.0.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0xA5u8; 64 * 1024];
        loop {
            let free = free_bytes(&self.0);
            if free <= leave {
                break;
            }
            let n = (free - leave).min(chunk.len() as u64) as usize;
            if f.write_all(&chunk[..n]).is_err() {
                break;
            }
            f.sync_all().unwrap();
        }
        filler
    }
}

fn free_bytes(path: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0)
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_holds_input_unacknowledged_without_corruption_and_recovers() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let disk = SmallDisk::mount(&data, "8m");
    let db = data.join("storegate.db");
    let config = write_config(
        dir.path(),
        &data,
        &format!(
            "[mqtt]\nbroker = \"mqtt://127.0.0.1:{port}\"\nclient_id = \"storegate-disk\"\n\
             {TILL}",
            port = broker.port,
        ),
    );
    let mut agent = Agent::start(&config, dir.path().join("agent.log"));
    agent.wait_log("MQTT device subscribed");
    let api = std::fs::read_to_string(&config)
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("listen = \"")
                .map(|a| a.trim_end_matches('"').to_string())
        })
        .unwrap();
    // Leave room for the journal to grow a little, then run out.
    let filler = disk.fill_leaving(256 * 1024);
    let till = Till::start(
        Peer::connect(broker.port, "till").await,
        "faults/pos/1",
        Duration::from_millis(1),
    );
    agent.wait_log("cannot store device input");
    // Full: what is journaled stays put while the till goes on publishing.
    let stalled = sale_keys(&journal_events(&db)).len();
    let published_when_full = till.published();
    wait_for_async("the till to publish more while the disk is full", || {
        (till.published() > published_when_full + 500).then_some(())
    })
    .await;
    assert_eq!(sale_keys(&journal_events(&db)).len(), stalled);
    assert!(stalled / 2 < till.published(), "{stalled} lines");
    // The daemon is alive and answering, and says it has a problem.
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "the daemon exited"
    );
    let health = common::healthz(&api).await;
    assert_eq!(health["db"], "ok", "{health}");
    // ... and /healthz says the till is not ingesting, and why.
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(
        health["reasons"]
            .to_string()
            .contains("device till-1 is not ingesting"),
        "{health}"
    );
    integrity_ok(&db);

    // Space comes back: everything the till sent arrives, once.
    std::fs::remove_file(&filler).unwrap();
    let published = till.stop().await;
    let events = wait_for_async("every receipt journaled after space returned", || {
        let events = journal_events(&db);
        (sale_keys(&events).len() >= 2 * published).then_some(events)
    })
    .await;
    let keys = sale_keys(&events);
    let unique: HashSet<_> = keys.iter().cloned().collect();
    assert_eq!(keys.len(), unique.len(), "a receipt journaled twice");
    assert_eq!(unique.len(), 2 * published);
    let health = common::healthz(&api).await;
    assert_eq!(health["status"], "ok", "{health}");
    drop(agent);
    integrity_ok(&db);
    eprintln!(
        "disk full after {} of {published} receipts; all {published} journaled once after space returned",
        stalled / 2
    );
}

// ---------------------------------------------------------------------------
// 10,000 malformed frames across every codec
// ---------------------------------------------------------------------------

/// A valid payload made malformed: cut short, or with a byte that breaks
/// its syntax. Every result is invalid for its codec.
fn broken_json(valid: &str, rng: &mut Lcg) -> Vec<u8> {
    let bytes = valid.as_bytes();
    match rng.next() % 3 {
        0 => bytes[..(rng.next() as usize % (bytes.len() - 1))].to_vec(),
        1 => {
            let mut b = bytes.to_vec();
            let at = rng.next() as usize % b.len();
            b[at] = 0xFF; // not UTF-8
            b
        }
        _ => {
            // Line noise; `<` can never start a JSON text.
            let mut b = vec![b'<'];
            b.extend((0..rng.next() % 64).map(|_| (rng.next() % 256) as u8));
            b
        }
    }
}

const ZEBRA: &str = r#"{"data":{"eventNum":1,"format":"epc","idHex":"3074257bf7194e4000001a85","antenna":1,"peakRssi":-39},"timestamp":"2019-08-24T14:15:22Z","type":"SIMPLE"}"#;
const IMPINJ: &str = r#"{"timestamp":"2024-05-10T08:00:01.1Z","hostname":"impinj-14-aa-01","eventType":"tagInventory","tagInventoryEvent":{"epc":"MHQle/cZTkAAABqF","antennaPort":2,"peakRssiCdbm":-5525}}"#;
const ESL_STATUS: &str = r#"{"label_id":"L-1","version":1,"status":"ok"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_malformed_frames_across_every_codec_leave_the_daemon_healthy() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = data.join("storegate.db");
    let m100 = PtyPair::new(dir.path(), "m100");
    let escpos = PtyPair::new(dir.path(), "escpos");
    // A sensor answering NaN (registers codec) and an access point whose
    // /get_db is garbage (openepaperlink codec), each polled every 10 ms.
    let sensor = ModbusDevice::new(1);
    sensor.set_input(0, &[0x7FC0, 0x0000]);
    let sensor_addr = serve_tcp(&sensor).await;
    let ap_served = Arc::new(AtomicUsize::new(0));
    let ap_fixed = Arc::new(AtomicBool::new(false));
    let ap_addr = {
        let (served, fixed) = (ap_served.clone(), ap_fixed.clone());
        let app = axum::Router::new().route(
            "/get_db",
            axum::routing::get(move || {
                let n = served.fetch_add(1, Ordering::Relaxed);
                let fixed = fixed.load(Ordering::Relaxed);
                async move {
                    if fixed {
                        r#"{"tags":[],"continu":0}"#.to_string()
                    } else {
                        format!("{{\"tags\":[{{\"mac\":{n}")
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    };
    let config = write_config(
        dir.path(),
        &data,
        &format!(
            r#"[mqtt]
broker = "mqtt://127.0.0.1:{port}"
client_id = "storegate-malformed"
[[device]]
id = "zebra"
profile = "zebra-fx-iot-connector"
transport = "mqtt"
topic = "f/zebra"
[[device]]
id = "impinj"
profile = "impinj-iot"
transport = "mqtt"
topic = "f/impinj"
[[device]]
id = "till"
profile = "pos-json"
transport = "mqtt"
topic = "f/pos"
[[device]]
id = "esl"
profile = "esl-mqtt"
transport = "mqtt"
topic = "f/esl"
[[device]]
id = "m100"
profile = "uhf-m100-serial"
transport = "serial"
port = {m100:?}
[[device]]
id = "printer"
profile = "pos-escpos-journal"
transport = "serial"
port = {escpos:?}
[[device]]
id = "sensor"
profile = "float-sensor"
transport = "modbus-tcp"
address = "{sensor_addr}"
poll_ms = 10
[[device]]
id = "ap"
profile = "fast-ap"
transport = "http"
url = "http://{ap_addr}"
"#,
            port = broker.port,
            m100 = m100.agent,
            escpos = escpos.agent,
        ),
    );
    std::fs::write(
        dir.path().join("profiles/float-sensor.toml"),
        "name = \"float-sensor\"\nkind = \"sensor\"\ncodec = \"registers\"\ndescription = \"one f32\"\n\
         [registers]\n[[registers.values]]\nname = \"t\"\naddress = 0\ntype = \"f32\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("profiles/fast-ap.toml"),
        include_str!("../firmware-profiles/openepaperlink-ap.toml")
            .replace("name = \"openepaperlink-ap\"", "name = \"fast-ap\"")
            .replace("poll_ms = 10000", "poll_ms = 10"),
    )
    .unwrap();
    let mut agent = Agent::start(&config, dir.path().join("agent.log"));
    let pid = agent.child.id();
    agent.wait_log("MQTT device subscribed");
    let rss_before = storegate::bench::rss::rss_kib(pid).unwrap_or(0);

    let mut rng = Lcg(0xBAD_F4A3E);
    let peer = Peer::connect(broker.port, "devices").await;
    let mut sent: BTreeMap<&str, usize> = BTreeMap::new();
    // MQTT: 2,000 broken messages each for both RFID readers, the till and
    // the labels' status topic.
    for i in 0..2000 {
        peer.publish("f/zebra", broken_json(ZEBRA, &mut rng)).await;
        peer.publish("f/impinj", broken_json(IMPINJ, &mut rng))
            .await;
        peer.publish("f/pos", broken_json(&receipt(i), &mut rng))
            .await;
        peer.publish("f/esl/L-1/status", broken_json(ESL_STATUS, &mut rng))
            .await;
    }
    for d in ["zebra", "impinj", "till", "esl"] {
        sent.insert(d, 2000);
    }
    // Serial: 1,000 M100 frames with a broken checksum, 500 receipts that
    // do not add up, and 500 runs of line noise on the printer port.
    // Another tag than the Zebra's good read: a tag already seen in the
    // zone is a repeat, and the check below needs an event from each.
    let good_notice = tag_notice(&Tag {
        epc: "3074257BF7194E4000001A86".into(),
        rssi_dbm: -60,
    })
    .unwrap();
    let mut m100_port = m100.open_device();
    for _ in 0..1000 {
        let mut frame = good_notice.clone();
        let n = frame.len();
        frame[n - 2] ^= 1 + (rng.next() % 255) as u8;
        m100_port.write_all(&frame).unwrap();
    }
    let mut printer = escpos.open_device();
    for i in 0..1000 {
        let noise: String = (0..32)
            .map(|_| char::from(b'a' + (rng.next() % 26) as u8))
            .collect();
        write!(
            printer,
            "RECEIPT B-{i}\r\nSKU-1001 Milk 1 x 1.19 1.19\r\n{noise}\r\nTOTAL 9.99\r\n\x1dV\x00"
        )
        .unwrap();
    }
    sent.insert("m100", 1000);
    sent.insert("printer", 1000);
    // Polled devices: NaN answers from the sensor, garbage pages from the
    // access point.
    // The access point goes down after 3 garbage pages in a row (it is
    // rebooting or misconfigured) and is polled again with backoff.
    wait_long("500 NaN answers and 10 garbage pages", || {
        (sensor.requests() >= 500 && ap_served.load(Ordering::Relaxed) >= 10).then_some(())
    })
    .await;
    sent.insert("sensor", sensor.requests() as usize);
    sent.insert("ap", ap_served.load(Ordering::Relaxed));
    let total: usize = sent.values().sum();
    assert!(total >= 10_000, "{total}");

    // Every MQTT message counts as one bad frame of its device; the
    // serial and polled devices count theirs too.
    let health = wait_long("every bad frame counted", || {
        let h = persisted_health(&db);
        let bad = |d: &str| h.get(d).map_or(0, |h| h.frames_bad);
        (["zebra", "impinj", "till", "esl"]
            .iter()
            .all(|d| bad(d) >= 2000)
            && ["m100", "printer", "sensor", "ap"]
                .iter()
                .all(|d| bad(d) > 0))
        .then_some(h)
    })
    .await;
    for d in ["zebra", "impinj", "till", "esl"] {
        assert_eq!(health[d].frames_bad, 2000, "{d}");
    }
    // The quarantine keeps the raw bytes of the latest bad input, bounded
    // so that garbage cannot fill the disk.
    let rows: i64 = db::open_read(&db)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM quarantine", [], |r| r.get(0))
        .unwrap();
    // (Trimmed every 100 rows, so up to 99 more in between.)
    assert!(
        rows < storegate::db::writer::QUARANTINE_MAX_ROWS + 100,
        "{rows} quarantine rows"
    );

    // Afterwards every device still works: good input from each gets in.
    let bits = 21.5f32.to_bits();
    sensor.set_input(0, &[(bits >> 16) as u16, bits as u16]);
    ap_fixed.store(true, Ordering::Relaxed);
    peer.publish("f/zebra", ZEBRA).await;
    peer.publish("f/pos", receipt(99_999)).await;
    m100_port.write_all(&good_notice).unwrap();
    printer
        .write_all(b"RECEIPT B-OK\r\nSKU-1001 Milk 1 x 1.19 1.19\r\nTOTAL 1.19\r\n\x1dV\x00")
        .unwrap();
    wait_long(
        "good input from every stream device after the garbage",
        || {
            let events = journal_events(&db);
            let by = |d: &str| {
                events
                    .iter()
                    .any(|e| e.device == d && !matches!(e.body, EventBody::Alert(_)))
            };
            (by("zebra") && by("till") && by("m100") && by("printer") && by("sensor")).then_some(())
        },
    )
    .await;
    // The access point is polled again after its backoff (at most 30 s).
    let health = wait_long("every device up", || {
        let h = persisted_health(&db);
        (h.len() == 8 && h.values().all(|d| d.up)).then_some(h)
    })
    .await;
    let frames_bad: u64 = health.values().map(|h| h.frames_bad).sum();
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "the daemon exited"
    );
    integrity_ok(&db);
    let rss_after = storegate::bench::rss::rss_kib(pid).unwrap_or(0);
    eprintln!(
        "{total} malformed frames sent ({sent:?}); {frames_bad} counted bad; \
         RSS {rss_before} KiB before, {rss_after} KiB after"
    );
}

// ---------------------------------------------------------------------------
// A reader unplugged and plugged back every second for a minute
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_unplugged_and_plugged_back_every_second_for_a_minute() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = data.join("storegate.db");
    let port = dir.path().join("ttyUSB0-agent");
    let config = write_config(
        dir.path(),
        &data,
        &format!(
            "[mqtt]\nbroker = \"mqtt://127.0.0.1:{mqtt}\"\nclient_id = \"storegate-flap\"\n\
             [[device]]\nid = \"uhf\"\nprofile = \"uhf-m100-serial\"\ntransport = \"serial\"\nport = {port:?}\n\
             {TILL}",
            mqtt = broker.port,
        ),
    );
    let mut agent = Agent::start(&config, dir.path().join("agent.log"));
    agent.wait_log("MQTT device subscribed");
    // A till keeps selling on the side: it must not notice the flapping.
    let till = Till::start(
        Peer::connect(broker.port, "till").await,
        "faults/pos/1",
        Duration::from_millis(20),
    );

    let started = Instant::now();
    let mut cycles = 0u64;
    while started.elapsed() < Duration::from_secs(60) {
        let cycle_start = Instant::now();
        // Plugged in: the reader sees a new tag; wait until it is journaled.
        let pty = PtyPair::new(dir.path(), "ttyUSB0");
        let epc = format!("E2000017220B0123456{cycles:05X}");
        let notice = tag_notice(&Tag {
            epc: epc.clone(),
            rssi_dbm: -50,
        })
        .unwrap();
        let mut reader = pty.open_device();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let _ = reader.write_all(&notice);
            tokio::time::sleep(Duration::from_millis(50)).await;
            let seen = journal_events(&db)
                .iter()
                .any(|e| matches!(&e.body, EventBody::TagArrived(t) if t.epc == epc));
            if seen {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "cycle {cycles}: tag {epc} never journaled"
            );
        }
        // Up for the rest of the second, then unplugged for a second.
        tokio::time::sleep(Duration::from_secs(1).saturating_sub(cycle_start.elapsed())).await;
        drop(reader);
        drop(pty);
        tokio::time::sleep(Duration::from_secs(1)).await;
        cycles += 1;
    }
    let published = till.stop().await;
    let pty = PtyPair::new(dir.path(), "ttyUSB0");
    let health = wait_for_async("the reader up again with its reconnects counted", || {
        let h = persisted_health(&db);
        h.get("uhf")
            .filter(|u| u.up && u.reconnects >= cycles)
            .cloned()
            .map(|u| (u, h))
    })
    .await;
    let events = wait_for_async("every receipt of the till", || {
        let events = journal_events(&db);
        (sale_keys(&events).len() >= 2 * published).then_some(events)
    })
    .await;
    assert_eq!(sale_keys(&events).len(), 2 * published);
    // Down for a second at a time is not "offline": no alert pages anyone.
    let offline_alerts = events
        .iter()
        .filter(|e| matches!(&e.body, EventBody::Alert(a) if a.code == "device_offline"))
        .count();
    assert_eq!(offline_alerts, 0);
    assert!(health.1["till-1"].up);
    assert!(agent.child.try_wait().unwrap().is_none());
    drop(pty);
    eprintln!(
        "{cycles} unplug/replug cycles in 60 s: every tag journaled, reader reconnected {} times, \
         till's {published} receipts all journaled",
        health.0.reconnects
    );
}
