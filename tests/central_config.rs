//! Config from central (docs/fleet.md, "Config from central"): the real
//! `storegate` binary against the reference central over HTTP on
//! loopback, with Modbus shelves served by a real tokio-modbus server.
//! Accepted, rejected (bootstrap key, unknown key, bad device), rolled
//! back, and killed with SIGKILL in the middle of applying one; in each,
//! no acknowledged event is lost and central gets every event once.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::modbus::{Device, serve_tcp};
use common::{Agent, free_port};
use serde_json::{Value, json};
use storegate::db::{self, central_config, journal};
use storegate::event::{Event, EventBody};
use storegate::sim::central::Central as CentralSim;

const STORE: &str = "s1";
const STAFF: &str = "staff-token-cfg";
/// Generous: two cores shared by several builders.
const LONG: Duration = Duration::from_secs(90);

/// A shelf answering on Modbus TCP, every slot at `grams`.
async fn shelf(grams: u32) -> (Device, String) {
    let device = Device::new(1);
    set_weight(&device, grams);
    let address = serve_tcp(&device).await;
    (device, address)
}

/// Put `grams` on every slot of a shelf (high word first).
fn set_weight(device: &Device, grams: u32) {
    let words: Vec<u16> = (0..8)
        .flat_map(|_| [(grams >> 16) as u16, grams as u16])
        .collect();
    device.set_holding(0, &words);
}

fn shelf_toml(id: &str, address: &str) -> String {
    format!(
        "[[device]]\nid = \"{id}\"\nprofile = \"loadcell-shelf-modbus\"\ntransport = \"modbus-tcp\"\naddress = \"{address}\"\nunit = 1\npoll_ms = 100\nslots = {{ 0 = \"SKU-1001\" }}\n"
    )
}

/// A test's world: the reference central serving configs from a
/// directory, and the agent's directory with its local file.
struct World {
    dir: tempfile::TempDir,
    central: CentralSim,
    api: u16,
    config: PathBuf,
}

impl World {
    async fn new(rollback_s: u64, local_devices: &str) -> World {
        World::with_central(rollback_s, local_devices, "poll_config_s = 1\n").await
    }

    /// [`World::new`] with more `[central]` keys (the poll cadence included).
    async fn with_central(rollback_s: u64, local_devices: &str, central_keys: &str) -> World {
        let dir = tempfile::tempdir().unwrap();
        let configs = dir.path().join("central-configs");
        std::fs::create_dir(&configs).unwrap();
        let central = CentralSim::default().with_configs(&configs);
        let (addr, _server) = central.clone().spawn("127.0.0.1:0").await.unwrap();
        let api = free_port();
        let staff = dir.path().join("staff.tokens");
        std::fs::write(&staff, format!("{STAFF}\n")).unwrap();
        let config = dir.path().join("storegate.toml");
        std::fs::write(
            &config,
            format!(
                r#"store_id = "{STORE}"
data_dir = "{data}"
[api]
listen = "127.0.0.1:{api}"
token_files = {{ staff = "{staff}" }}
[central]
url = "http://{addr}"
batch_max = 100
max_backoff_s = 1
heartbeat_s = 5
poll_prices_s = 3600
poll_stock_s = 3600
config_rollback_s = {rollback_s}
{central_keys}
{local_devices}"#,
                data = dir.path().display(),
                staff = staff.display(),
            ),
        )
        .unwrap();
        World {
            dir,
            central,
            api,
            config,
        }
    }

    fn start(&self, name: &str) -> Agent {
        Agent::start(&self.config, self.dir.path().join(name))
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("storegate.db")
    }

    fn events(&self) -> Vec<Event> {
        let Ok(conn) = db::open_read(&self.db()) else {
            return Vec::new();
        };
        journal::events_after(&conn, 0, 10_000_000).unwrap_or_default()
    }

    /// Every central config the agent recorded, oldest first, with its state.
    fn stored(&self) -> Vec<Stored> {
        let conn = db::open_read(&self.db()).unwrap();
        let mut st = conn
            .prepare("SELECT version, state FROM central_config ORDER BY id")
            .unwrap();
        st.query_map([], |r| {
            Ok(Stored {
                version: r.get(0)?,
                state: r.get(1)?,
            })
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    }

    /// Central's events of this store, by seq.
    fn at_central(&self) -> std::collections::BTreeMap<i64, Value> {
        self.central.view(STORE).events
    }

    /// Wait for `what` with the agent's log tail as the diagnostic.
    async fn wait<T>(&self, agent: &Agent, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = std::time::Instant::now() + LONG;
        loop {
            if let Some(v) = f() {
                return v;
            }
            if std::time::Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; agent log:\n{}",
                    agent.last_log_lines(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `storegate status` of the agent's database.
    fn status(&self) -> String {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_storegate"))
            .arg("status")
            .arg("--config")
            .arg(&self.config)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    }
}

/// A row of the agent's central_config table.
#[derive(Debug)]
struct Stored {
    version: i64,
    state: String,
}

/// Shelf weights journaled from `device` with `grams` on its slots.
fn weights_from(events: &[Event], device: &str, grams: i64) -> usize {
    events
        .iter()
        .filter(|e| e.device == device)
        .filter(|e| matches!(&e.body, EventBody::ShelfWeight(w) if w.grams == grams))
        .count()
}

/// Central's `config_applied` events, as (version, source).
fn applied_at_central(central: &std::collections::BTreeMap<i64, Value>) -> Vec<(Value, String)> {
    central
        .values()
        .filter(|e| e["kind"] == "config_applied")
        .map(|e| {
            (
                e["data"]["version"].clone(),
                e["data"]["source"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The open alert with `code` in the journal (its latest opening not
/// resolved after), as its message.
fn open_alert(events: &[Event], code: &str) -> Option<String> {
    let mut open = None;
    for e in events {
        if let EventBody::Alert(a) = &e.body {
            if a.code == code {
                open = match a.state {
                    storegate::event::AlertState::Open => Some(a.message.clone()),
                    storegate::event::AlertState::Resolved => None,
                };
            }
        }
    }
    open
}

/// Central holds exactly the journal: every seq once, contiguous, equal.
async fn assert_exactly_once(world: &World, agent: &Agent) {
    let head = world.events().last().map_or(0, |e| e.seq);
    world
        .wait(agent, "central to acknowledge the whole journal", || {
            (world.central.view(STORE).acked_through >= head).then_some(())
        })
        .await;
    let view = world.central.view(STORE);
    let local = world.events();
    let seqs: Vec<i64> = view.events.keys().copied().filter(|s| *s <= head).collect();
    assert_eq!(
        seqs,
        (1..=head).collect::<Vec<_>>(),
        "contiguous, each once"
    );
    common::assert_at_central(&view.events, &local);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_config_is_applied_journaled_and_reported() {
    let (one, one_addr) = shelf(1000).await;
    let (_two, two_addr) = shelf(2000).await;
    let world = World::new(60, &shelf_toml("shelf-1", &one_addr)).await;
    let mut agent = world.start("agent.log");
    world
        .wait(&agent, "shelf-1 to be ingesting", || {
            (weights_from(&world.events(), "shelf-1", 1000) > 0).then_some(())
        })
        .await;
    assert!(world.status().contains("config     the local file"));

    // Central adds a second shelf and a locale.
    let central_toml = format!(
        "locale = \"fr-FR\"\n{}\n{}",
        shelf_toml("shelf-1", &one_addr),
        shelf_toml("shelf-2", &two_addr)
    );
    let version = world.central.set_config(STORE, &central_toml).unwrap();
    assert_eq!(version, 1);
    world
        .wait(&agent, "the new shelf to ingest", || {
            (weights_from(&world.events(), "shelf-2", 2000) > 0).then_some(())
        })
        .await;
    agent.wait_log("applying central config v1");
    // shelf-1 was up before and is up again: the trial passes.
    world
        .wait(&agent, "the trial to pass", || {
            world
                .stored()
                .first()
                .filter(|c| c.state == central_config::ACTIVE)
                .map(|_| ())
        })
        .await;
    // The old device still ingests after the restart.
    set_weight(&one, 1500);
    world
        .wait(&agent, "shelf-1 to ingest under the new config", || {
            (weights_from(&world.events(), "shelf-1", 1500) > 0).then_some(())
        })
        .await;
    let sha = storegate::config::layered::sha256_hex(&central_toml);
    let hb = world
        .wait(&agent, "the heartbeat to carry v1", || {
            world
                .central
                .view(STORE)
                .status
                .filter(|s| s["config_version"] == json!(1) && s["config_state"] == "active")
        })
        .await;
    assert_eq!(hb["config_sha256"], json!(sha), "{hb}");
    assert_eq!(hb["config_rejected_version"], Value::Null, "{hb}");
    assert_exactly_once(&world, &agent).await;
    assert_eq!(
        applied_at_central(&world.at_central()),
        [(json!(1), "central".to_string())]
    );
    let applied = world
        .at_central()
        .into_values()
        .find(|e| e["kind"] == "config_applied")
        .unwrap();
    assert_eq!(applied["data"]["sha256"], json!(sha));
    let status = world.status();
    assert!(
        status.contains("config     central v1 over the local file (active"),
        "{status}"
    );
    // Polled every second since: nothing applied twice.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(applied_at_central(&world.at_central()).len(), 1);
    assert_eq!(world.stored().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_configs_name_every_problem_and_the_old_one_keeps_running() {
    let (one, one_addr) = shelf(1000).await;
    let world = World::new(60, &shelf_toml("shelf-1", &one_addr)).await;
    let agent = world.start("agent.log");
    world
        .wait(&agent, "shelf-1 to be ingesting", || {
            (weights_from(&world.events(), "shelf-1", 1000) > 0).then_some(())
        })
        .await;
    let cases: [(String, &[&str]); 3] = [
        // A bootstrap key (two of them: both named).
        (
            format!(
                "store_id = \"s2\"\n[api]\nlisten = \"0.0.0.0:80\"\n{}",
                shelf_toml("shelf-1", &one_addr)
            ),
            &["store_id: is a bootstrap key", "api: is a bootstrap key"],
        ),
        // An unknown key, and a wrong value beside it.
        (
            format!(
                "locle = \"fr-FR\"\ndurability = \"sometimes\"\n{}",
                shelf_toml("shelf-1", &one_addr)
            ),
            &[
                "locle: unknown key; did you mean \"locale\"?",
                "durability: \"sometimes\" is not allowed",
            ],
        ),
        // A bad device: an unknown profile and a missing address.
        (
            "[[device]]\nid = \"shelf-9\"\nprofile = \"loadcell-shelf-modbuss\"\ntransport = \"modbus-tcp\"\n".to_string(),
            &[
                "device[0].profile: unknown profile \"loadcell-shelf-modbuss\"",
                "device[0].address: missing",
            ],
        ),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let version = world.central.set_config(STORE, text).unwrap();
        assert_eq!(version, i as i64 + 1);
        let message = world
            .wait(&agent, &format!("config_rejected for v{version}"), || {
                open_alert(&world.events(), "config_rejected")
                    .filter(|m| m.starts_with(&format!("central config v{version} rejected")))
            })
            .await;
        for problem in *expected {
            assert!(
                message.contains(problem),
                "{problem:?} not in the alert:\n{message}"
            );
        }
        // The old config keeps running and ingesting.
        let grams = 3000 + 700 * i as u32;
        set_weight(&one, grams);
        world
            .wait(&agent, "shelf-1 to keep ingesting", || {
                (weights_from(&world.events(), "shelf-1", grams as i64) > 0).then_some(())
            })
            .await;
        world
            .wait(&agent, "the heartbeat to name the rejected version", || {
                world
                    .central
                    .view(STORE)
                    .status
                    .filter(|s| s["config_rejected_version"] == json!(version))
            })
            .await;
    }
    // Polled every second: a refused sha256 is never tried again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stored = world.stored();
    assert_eq!(stored.len(), 3, "one row per rejected config");
    assert!(stored.iter().all(|c| c.state == central_config::REJECTED));
    assert!(
        !agent
            .last_log_lines(10_000)
            .contains("applying central config")
    );
    let hb = world.central.view(STORE).status.unwrap();
    assert_eq!(hb["config_version"], Value::Null, "{hb}");
    assert_eq!(hb["open_alerts"]["config_rejected"], json!(1), "{hb}");
    assert!(world.status().contains("config     the local file"));
    assert_exactly_once(&world, &agent).await;
    assert!(applied_at_central(&world.at_central()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_whose_device_never_comes_up_is_rolled_back_and_not_retried() {
    let (one, one_addr) = shelf(1000).await;
    let world = World::new(4, &shelf_toml("shelf-1", &one_addr)).await;
    let mut agent = world.start("agent.log");
    world
        .wait(&agent, "shelf-1 to be ingesting", || {
            (weights_from(&world.events(), "shelf-1", 1000) > 0).then_some(())
        })
        .await;
    // The same shelf moved to an address where nothing answers.
    let closed = format!("127.0.0.1:{}", free_port());
    let version = world
        .central
        .set_config(STORE, &shelf_toml("shelf-1", &closed))
        .unwrap();
    agent.wait_log("applying central config v1");
    let applied_at = std::time::Instant::now();
    let message = world
        .wait(&agent, "config_rolled_back", || {
            open_alert(&world.events(), "config_rolled_back")
        })
        .await;
    let took = applied_at.elapsed();
    assert!(
        message.starts_with(&format!(
            "central config v{version} rolled back to the local file: device shelf-1 did not come back"
        )),
        "{message}"
    );
    // Within config_rollback_s (4 s) plus the restart, on a loaded box.
    assert!(took < Duration::from_secs(40), "rolled back after {took:?}");
    // Back on the local file: shelf-1 ingests again.
    set_weight(&one, 1700);
    world
        .wait(&agent, "shelf-1 to ingest after the rollback", || {
            (weights_from(&world.events(), "shelf-1", 1700) > 0).then_some(())
        })
        .await;
    // Not tried again, though central still serves it and it is polled
    // every second.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let stored = world.stored();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(
        (stored[0].version, stored[0].state.as_str()),
        (1, central_config::ROLLED_BACK)
    );
    assert_exactly_once(&world, &agent).await;
    assert_eq!(
        applied_at_central(&world.at_central()),
        [
            (json!(1), "central".to_string()),
            (Value::Null, "rollback".to_string())
        ]
    );
    let hb = world
        .wait(&agent, "the heartbeat after the rollback", || {
            world
                .central
                .view(STORE)
                .status
                .filter(|s| s["open_alerts"]["config_rolled_back"] == json!(1))
        })
        .await;
    assert_eq!(hb["config_version"], Value::Null, "{hb}");
    let status = world.status();
    assert!(status.contains("config     the local file"), "{status}");
    assert!(status.contains("central v1 rolled back"), "{status}");
}

/// POST adjustments through the local API until `stop`, each with its
/// own reason; returns (reason, seq) of every one the API acknowledged.
fn staff_writer(
    api: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<(String, i64)>> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            let mut acked = Vec::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let reason = format!("cfg-{i}");
                let answer = http
                    .post(format!("http://127.0.0.1:{api}/v1/adjustments"))
                    .bearer_auth(STAFF)
                    .json(
                        &json!({"sku": "SKU-CFG", "delta": 1, "reason": reason, "new_item": true}),
                    )
                    .send()
                    .await;
                match answer {
                    Ok(r) if r.status() == 200 => {
                        let body: Value = r.json().await.unwrap_or_default();
                        if let Some(seq) = body["seq"].as_i64() {
                            acked.push((reason, seq));
                        }
                    }
                    // Refused or not listening (the API blinks during an
                    // apply, and the agent is killed): not acknowledged.
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
            acked
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_while_applying_loses_no_acknowledged_event() {
    let (_one, one_addr) = shelf(1000).await;
    let (_two, two_addr) = shelf(2000).await;
    let world = World::new(60, &shelf_toml("shelf-1", &one_addr)).await;
    let mut agent = world.start("agent-1.log");
    world
        .wait(&agent, "shelf-1 to be ingesting", || {
            (weights_from(&world.events(), "shelf-1", 1000) > 0).then_some(())
        })
        .await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = staff_writer(world.api, stop.clone());
    world
        .wait(&agent, "staff writes to be acknowledged", || {
            world
                .events()
                .iter()
                .any(|e| matches!(&e.body, EventBody::Adjustment(_)))
                .then_some(())
        })
        .await;
    let central_toml = format!(
        "{}\n{}",
        shelf_toml("shelf-1", &one_addr),
        shelf_toml("shelf-2", &two_addr)
    );
    world.central.set_config(STORE, &central_toml).unwrap();
    // SIGKILL as soon as it says it applies: in the drain, or the restart.
    agent.wait_log("applying central config v1");
    agent.kill();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = writer.join().unwrap();
    assert!(!acked.is_empty());

    let mut agent = world.start("agent-2.log");
    // It comes back on the stored config: shelf-2 ingests, the trial
    // passes (shelf-1 is back).
    world
        .wait(&agent, "shelf-2 to ingest after the restart", || {
            (weights_from(&world.events(), "shelf-2", 2000) > 0).then_some(())
        })
        .await;
    world
        .wait(&agent, "the trial to pass after the restart", || {
            world
                .stored()
                .first()
                .filter(|c| c.state == central_config::ACTIVE)
                .map(|_| ())
        })
        .await;
    agent.wait_log("storegate is running");

    // Every acknowledged write is journaled once, under the seq the API
    // answered, and central has the whole journal exactly once.
    let events = world.events();
    for (reason, seq) in &acked {
        let found: Vec<&Event> = events
            .iter()
            .filter(|e| matches!(&e.body, EventBody::Adjustment(a) if &a.reason == reason))
            .collect();
        assert_eq!(found.len(), 1, "{reason} journaled {} times", found.len());
        assert_eq!(found[0].seq, *seq, "{reason}");
    }
    assert_exactly_once(&world, &agent).await;
    assert_eq!(
        applied_at_central(&world.at_central()),
        [(json!(1), "central".to_string())]
    );
    let status = world.status();
    assert!(
        status.contains("central v1 over the local file (active"),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_central_fetches_merges_and_validates_without_applying() {
    let (_one, one_addr) = shelf(1000).await;
    let world = World::new(60, &shelf_toml("shelf-1", &one_addr)).await;
    let config = world.config.clone();
    let check = move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_storegate"))
            .args(["check", "--central", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, out, _) = tokio::task::spawn_blocking(check.clone()).await.unwrap();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("central manages no config"), "{out}");

    let good = format!(
        "{}\n{}",
        shelf_toml("shelf-1", &one_addr),
        shelf_toml("shelf-2", "127.0.0.1:1502")
    );
    world.central.set_config(STORE, &good).unwrap();
    let (code, out, err) = tokio::task::spawn_blocking(check.clone()).await.unwrap();
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("central config v1 over"), "{out}");
    assert!(out.contains("devices    2"), "{out}");
    assert!(out.contains("shelf-2"), "{out}");

    world
        .central
        .set_config(STORE, "data_dir = \"/tmp\"\nlocle = \"x\"\n")
        .unwrap();
    let (code, _, err) = tokio::task::spawn_blocking(check).await.unwrap();
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("central config v2"), "{err}");
    assert!(err.contains("data_dir: is a bootstrap key"), "{err}");
    // Nothing was applied: no agent ran, no database was written.
    assert!(!world.db().exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_mqtt_uplink_pull_config_applies_at_once() {
    let broker = common::broker::Mosquitto::start();
    let (_one, one_addr) = shelf(1000).await;
    let (_two, two_addr) = shelf(2000).await;
    // No polling to speak of: only the command can bring the config.
    let world = World::with_central(
        60,
        &shelf_toml("shelf-1", &one_addr),
        &format!(
            "transport = \"mqtt\"\nbrokers = [\"mqtt://127.0.0.1:{}\"]\nack_timeout_s = 5\npoll_config_s = 3600\n",
            broker.port
        ),
    )
    .await;
    let mut options = storegate::sim::central_mqtt::ConsumerOptions::new(vec![format!(
        "mqtt://127.0.0.1:{}",
        broker.port
    )]);
    options.client_id = format!("central-cfg-{}", free_port());
    let consumer = world.central.spawn_mqtt(options).unwrap();
    let mut agent = world.start("agent.log");
    agent.wait_log("connected to central's broker");
    world
        .wait(&agent, "shelf-1 to be ingesting", || {
            (weights_from(&world.events(), "shelf-1", 1000) > 0).then_some(())
        })
        .await;
    world
        .wait(&agent, "the consumer to connect", || {
            consumer.is_connected().then_some(())
        })
        .await;
    // Past the pull at start (it found nothing).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sent = std::time::Instant::now();
    // Changing the config at central sends pull_config over MQTT.
    world
        .central
        .set_config(
            STORE,
            &format!(
                "{}\n{}",
                shelf_toml("shelf-1", &one_addr),
                shelf_toml("shelf-2", &two_addr)
            ),
        )
        .unwrap();
    agent.wait_log("applying central config v1");
    agent.wait_log("central asked for a config pull; pulling now");
    assert!(
        sent.elapsed() < Duration::from_secs(60),
        "took {:?} (poll_config_s is an hour)",
        sent.elapsed()
    );
    world
        .wait(&agent, "the new shelf to ingest", || {
            (weights_from(&world.events(), "shelf-2", 2000) > 0).then_some(())
        })
        .await;
    assert_exactly_once(&world, &agent).await;
    assert_eq!(
        applied_at_central(&world.at_central()),
        [(json!(1), "central".to_string())]
    );
    drop(consumer);
}
