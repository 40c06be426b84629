//! `storegate sim <device>` against a running agent: each simulator runs
//! as its own process (the real binary), the agent runs in process
//! ([`storegate::daemon::run_until`]) with a config pointing at the
//! simulators, and the test checks that the agent journals what the
//! simulator sends: tag events from `sim m100` (its own pty) and
//! `sim zebra`, sales from `sim pos-escpos` (on a socat pair), pushes
//! arriving at `sim central` (its state file), label confirmations from
//! `sim esl-mqtt` after a price import, shelf weights from
//! `sim shelf-modbus` and readings from `sim xy-md02`, and two
//! `sim oepl` access points flashing a label for the API's "find".

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{PtyPair, free_port, wait_for_async};
use storegate::config::Config;
use storegate::db::{self, journal};
use storegate::event::{Event, EventBody, LabelStatus};
use storegate::profiles::ProfileSet;
use storegate::setup::Setup;

/// A simulator process; killed when dropped. Its stdout lines are kept.
struct Sim {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Sim {
    fn start(args: &[&str]) -> Sim {
        let mut child = Command::new(env!("CARGO_BIN_EXE_storegate"))
            .arg("sim")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Sim { child, lines }
    }

    /// Wait for a printed line containing `text`; returns it.
    async fn line(&self, text: &str) -> String {
        wait_for_async(&format!("the simulator to print {text:?}"), || {
            self.lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(text))
                .cloned()
        })
        .await
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The staff token the agent's API takes (`[api] token_files`).
const STAFF_TOKEN: &str = "sim-test-staff";

/// The agent, running in process until dropped or stopped.
struct Agent {
    _dir: tempfile::TempDir,
    db: PathBuf,
    /// The local API, `http://127.0.0.1:port`.
    api: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Agent {
    /// Start the agent with `devices` (`[[device]]` blocks) and, if given,
    /// a central URL; MQTT on the embedded broker at `mqtt_port`.
    fn start(devices: &str, central: Option<&str>, mqtt_port: u16) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let central = central.map_or(String::new(), |url| {
            format!("[central]\nurl = \"{url}\"\nmax_backoff_s = 1\npoll_prices_s = 1\npoll_stock_s = 1\n")
        });
        let staff = dir.path().join("staff.tokens");
        std::fs::write(&staff, format!("{STAFF_TOKEN}\n")).unwrap();
        let api = free_port();
        let text = format!(
            r#"store_id = "sim-test"
data_dir = "{data}"
profiles_dir = "/nonexistent"
[api]
listen = "127.0.0.1:{api}"
token_files = {{ staff = "{staff}" }}
[mqtt]
broker = "embedded"
embedded_listen = "127.0.0.1:{mqtt_port}"
client_id = "storegate-sim-test"
{central}
{devices}"#,
            data = dir.path().display(),
            staff = staff.display(),
        );
        let profiles = ProfileSet::builtin().unwrap();
        let config = Config::parse(&text, Path::new("sims.toml"), &profiles.names())
            .unwrap_or_else(|e| panic!("{e}"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            storegate::daemon::run_until(Setup { config, profiles }, async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Agent {
            db: dir.path().join("storegate.db"),
            api: format!("http://127.0.0.1:{api}"),
            _dir: dir,
            stop: Some(stop),
            task,
        }
    }

    fn events(&self) -> Vec<Event> {
        let Ok(conn) = db::open_read(&self.db) else {
            return Vec::new();
        };
        journal::events_after(&conn, 0, 1_000_000).unwrap_or_default()
    }

    /// Wait until the journal satisfies `pred`.
    async fn wait(&self, what: &str, pred: impl Fn(&[Event]) -> bool) -> Vec<Event> {
        wait_for_async(what, || {
            let e = self.events();
            pred(&e).then_some(e)
        })
        .await
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(30), &mut self.task)
            .await
            .expect("the agent stops")
            .unwrap();
    }
}

fn from(events: &[Event], device: &str, kind: &str) -> usize {
    events
        .iter()
        .filter(|e| e.device == device && e.body.kind() == kind)
        .count()
}

/// `sim m100` on its own pty and `sim pos-escpos` on a socat pair feed
/// the agent; `sim central` receives the agent's pushes and saves them in
/// its state file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_sims_feed_the_agent_and_sim_central_takes_its_pushes() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("central.json");
    let central_addr = format!("127.0.0.1:{}", free_port());
    let central = Sim::start(&[
        "central",
        "--listen",
        &central_addr,
        "--state",
        &state.to_string_lossy(),
    ]);
    central.line("sync API on").await;

    let m100 = Sim::start(&["m100", "--round-ms", "200"]);
    let line = m100.line("serial port for the agent: ").await;
    let m100_port = line
        .split("serial port for the agent: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_string();

    let pty = PtyPair::new(dir.path(), "pos");
    let pos = Sim::start(&[
        "pos-escpos",
        "--port",
        &pty.device.to_string_lossy(),
        "--every-ms",
        "300",
    ]);
    pos.line("talking on").await;

    let agent = Agent::start(
        &format!(
            r#"[[device]]
id = "handheld"
profile = "uhf-m100-serial"
transport = "serial"
port = "{m100_port}"
zone = "salesfloor"
[[device]]
id = "pos-1"
profile = "pos-escpos-journal"
transport = "serial"
port = "{}"
"#,
            pty.agent.display()
        ),
        Some(&format!("http://{central_addr}")),
        free_port(),
    );

    // The module only talks once polled: the agent's multi-poll gets it going.
    m100.line("<- multi-poll").await;
    let events = agent
        .wait("tag events from the M100 and sales from the POS", |e| {
            from(e, "handheld", "tag_arrived") >= 3 && from(e, "pos-1", "sale") >= 3
        })
        .await;
    let tag = events
        .iter()
        .find_map(|e| match &e.body {
            EventBody::TagArrived(t) if e.device == "handheld" => Some(t.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(tag.zone, "salesfloor");
    assert!(tag.gtin.is_some(), "an SGTIN-96 EPC: {tag:?}");
    let printed = pos.line("-> receipt").await;
    assert!(printed.contains("bytes ESC/POS"), "{printed}");

    // Central saves what it received: the agent's sales are in its state.
    let last_sale = events
        .iter()
        .filter(|e| e.body.kind() == "sale")
        .map(|e| e.seq)
        .max()
        .unwrap();
    wait_for_async("sim central's state file to hold the sales", || {
        let text = std::fs::read_to_string(&state).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        let store = v.get("stores")?.get("sim-test")?;
        let acked = store.get("acked_through")?.as_i64()?;
        let sale = store
            .get("events")?
            .get(last_sale.to_string())?
            .get("kind")?
            .as_str()?
            == "sale";
        (acked >= last_sale && sale).then_some(())
    })
    .await;
    central.line("/v1/stores/sim-test/events").await;
    agent.stop().await;
}

/// `sim zebra` reads are journaled as tag events; `sim esl-mqtt` confirms
/// every label once the agent has the price book from `sim central`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_sims_read_tags_and_confirm_labels() {
    let mqtt_port = free_port();
    let central_addr = format!("127.0.0.1:{}", free_port());
    let agent = Agent::start(
        r#"[[device]]
id = "door"
profile = "zebra-fx-iot-connector"
transport = "mqtt"
topic = "store/rfid/door"
zone = "backroom"
[[device]]
id = "labels"
profile = "esl-mqtt"
transport = "mqtt"
topic = "store/esl"
"#,
        Some(&format!("http://{central_addr}")),
        mqtt_port,
    );
    let broker = format!("mqtt://127.0.0.1:{mqtt_port}");
    let zebra = Sim::start(&[
        "zebra",
        "--broker",
        &broker,
        "--topic",
        "store/rfid/door",
        "--every-ms",
        "100",
    ]);
    let esl = Sim::start(&["esl-mqtt", "--broker", &broker, "--topic", "store/esl"]);
    // MQTT drops messages nobody subscribed to: central publishes its
    // price book only once the labels listen.
    esl.line("connected; labels listen on").await;
    let _central = Sim::start(&["central", "--listen", &central_addr]);

    let events = agent
        .wait("tag events from the reader and label confirmations", |e| {
            from(e, "door", "tag_arrived") >= 3 && from(e, "labels", "label_ack") >= 7
        })
        .await;
    for e in events.iter().filter(|e| e.device == "labels") {
        let EventBody::LabelAck(ack) = &e.body else {
            continue;
        };
        assert_eq!(ack.status, LabelStatus::Ok, "{ack:?}");
        assert!(ack.battery_mv.is_some() && ack.rssi.is_some(), "{ack:?}");
    }
    zebra.line("SIMPLE").await;
    esl.line("-> store/esl/").await;
    agent.stop().await;
}

/// `sim shelf-modbus` and `sim xy-md02` are polled over Modbus TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modbus_sims_are_polled_for_weights_and_readings() {
    let shelf_addr = format!("127.0.0.1:{}", free_port());
    let climate_addr = format!("127.0.0.1:{}", free_port());
    let shelf = Sim::start(&["shelf-modbus", "--listen", &shelf_addr, "--every-ms", "200"]);
    let climate = Sim::start(&["xy-md02", "--listen", &climate_addr, "--every-ms", "200"]);
    shelf.line("Modbus TCP on").await;
    climate.line("Modbus TCP on").await;
    let agent = Agent::start(
        &format!(
            r#"[[device]]
id = "shelf-1"
profile = "loadcell-shelf-modbus"
transport = "modbus-tcp"
address = "{shelf_addr}"
poll_ms = 100
slots = {{ 0 = "SKU-1001", 1 = "SKU-1002", 2 = "SKU-1003", 3 = "SKU-1004", 4 = "SKU-1005" }}
[[device]]
id = "chiller"
profile = "xy-md02"
transport = "modbus-tcp"
address = "{climate_addr}"
poll_ms = 100
"#
        ),
        None,
        free_port(),
    );
    let events = agent
        .wait("weights of every slot and both readings", |e| {
            from(e, "shelf-1", "shelf_weight") >= 8 && from(e, "chiller", "reading") >= 2
        })
        .await;
    let oat_milk = events
        .iter()
        .find_map(|e| match &e.body {
            EventBody::ShelfWeight(w) if w.slot == 0 => Some(w.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(oat_milk.sku.as_deref(), Some("SKU-1001"));
    // Eight 1040 g cartons, give or take the load cell's noise.
    assert!(
        (8 * 1040 - 3..=8 * 1040 + 3).contains(&oat_milk.grams),
        "{oat_milk:?}"
    );
    let names: Vec<&str> = events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::Reading(r) => Some(r.name.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        names.contains(&"temperature") && names.contains(&"humidity"),
        "{names:?}"
    );
    // The shelf empties as shoppers take items: a later, lighter weight.
    agent
        .wait("a slot getting lighter", |e| {
            let mut first = std::collections::HashMap::new();
            e.iter().any(|e| match &e.body {
                EventBody::ShelfWeight(w) if e.device == "shelf-1" => {
                    let before = *first.entry(w.slot).or_insert(w.grams);
                    w.grams < before
                }
                _ => false,
            })
        })
        .await;
    agent.stop().await;
}

/// Two `sim oepl` access points behind the agent: "find this label"
/// (`POST /v1/labels/{id}/find`) reaches the one that lists the label, and
/// the other when that one is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oepl_sims_flash_a_label_found_through_the_api() {
    const MAC: &str = "0000021A4B3C5D6E";
    let (addr_a, addr_b) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let mut ap_a = Sim::start(&["oepl", "--listen", &addr_a, "--led", "--tags", MAC]);
    let ap_b = Sim::start(&["oepl", "--listen", &addr_b, "--led", "--tags", MAC]);
    ap_a.line("access point at").await;
    ap_b.line("access point at").await;
    let agent = Agent::start(
        &format!(
            r#"[[device]]
id = "ap-a"
profile = "openepaperlink-ap"
transport = "http"
url = "http://{addr_a}"
[[device]]
id = "ap-b"
profile = "openepaperlink-ap"
transport = "http"
url = "http://{addr_b}"
"#
        ),
        None,
        free_port(),
    );
    let http = reqwest::Client::new();
    let find = || async {
        let r = http
            .post(format!("{}/v1/labels/{MAC}/find", agent.api))
            .bearer_auth(STAFF_TOKEN)
            .send()
            .await;
        let Ok(r) = r else { return None };
        r.json::<serde_json::Value>().await.ok()
    };
    let mut found = None;
    for _ in 0..300 {
        match find().await {
            Some(v) if v["flashing"] == true => {
                found = Some(v);
                break;
            }
            // The API may not listen yet.
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let found = found.expect("the agent's API flashes the label within 30 s");
    assert_eq!(found["access_point"], "ap-a", "{found}");
    ap_a.line(&format!("<- /tag_cmd {MAC}: ledflash")).await;

    let _ = ap_a.child.kill();
    let _ = ap_a.child.wait();
    let again = find().await.expect("an answer");
    assert_eq!(again["access_point"], "ap-b", "{again}");
    ap_b.line(&format!("<- /tag_cmd {MAC}: ledflash")).await;
    agent.stop().await;
}
