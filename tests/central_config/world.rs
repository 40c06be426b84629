//! The world of the central-config tests: the reference central serving
//! per-store configs from a directory, the agent's directory with its
//! local file, Modbus shelves, and what the tests read back.

use std::path::PathBuf;
use std::time::Duration;

use crate::common::modbus::{Device, serve_tcp};
use crate::common::{Agent, free_port};
use serde_json::{Value, json};
use storegate::db::{self, journal};
use storegate::event::{Event, EventBody};
use storegate::sim::central::Central as CentralSim;

pub const STORE: &str = "s1";
pub const STAFF: &str = "staff-token-cfg";
/// Generous: two cores shared by several builders.
pub const LONG: Duration = Duration::from_secs(90);

/// A shelf answering on Modbus TCP, every slot at `grams`.
pub async fn shelf(grams: u32) -> (Device, String) {
    let device = Device::new(1);
    set_weight(&device, grams);
    let address = serve_tcp(&device).await;
    (device, address)
}

/// Put `grams` on every slot of a shelf (high word first).
pub fn set_weight(device: &Device, grams: u32) {
    let words: Vec<u16> = (0..8)
        .flat_map(|_| [(grams >> 16) as u16, grams as u16])
        .collect();
    device.set_holding(0, &words);
}

pub fn shelf_toml(id: &str, address: &str) -> String {
    format!(
        "[[device]]\nid = \"{id}\"\nprofile = \"loadcell-shelf-modbus\"\ntransport = \"modbus-tcp\"\naddress = \"{address}\"\nunit = 1\npoll_ms = 100\nslots = {{ 0 = \"SKU-1001\" }}\n"
    )
}

/// A test's world: the reference central serving configs from a
/// directory, and the agent's directory with its local file.
pub struct World {
    pub dir: tempfile::TempDir,
    pub central: CentralSim,
    pub api: u16,
    pub config: PathBuf,
}

impl World {
    pub async fn new(rollback_s: u64, local_devices: &str) -> World {
        World::with_central(rollback_s, local_devices, "poll_config_s = 1\n").await
    }

    /// [`World::new`] with more `[central]` keys (the poll cadence included).
    pub async fn with_central(rollback_s: u64, local_devices: &str, central_keys: &str) -> World {
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

    pub fn start(&self, name: &str) -> Agent {
        Agent::start(&self.config, self.dir.path().join(name))
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("storegate.db")
    }

    pub fn events(&self) -> Vec<Event> {
        let Ok(conn) = db::open_read(&self.db()) else {
            return Vec::new();
        };
        journal::events_after(&conn, 0, 10_000_000).unwrap_or_default()
    }

    /// Every central config the agent recorded, oldest first, with its state.
    pub fn stored(&self) -> Vec<Stored> {
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
    pub fn at_central(&self) -> std::collections::BTreeMap<i64, Value> {
        self.central.view(STORE).events
    }

    /// Wait for `what` with the agent's log tail as the diagnostic.
    pub async fn wait<T>(&self, agent: &Agent, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
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
    pub fn status(&self) -> String {
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
pub struct Stored {
    pub version: i64,
    pub state: String,
}

/// Shelf weights journaled from `device` with `grams` on its slots.
pub fn weights_from(events: &[Event], device: &str, grams: i64) -> usize {
    events
        .iter()
        .filter(|e| e.device == device)
        .filter(|e| matches!(&e.body, EventBody::ShelfWeight(w) if w.grams == grams))
        .count()
}

/// Central's `config_applied` events, as (version, source).
pub fn applied_at_central(
    central: &std::collections::BTreeMap<i64, Value>,
) -> Vec<(Value, String)> {
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
pub fn open_alert(events: &[Event], code: &str) -> Option<String> {
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
pub async fn assert_exactly_once(world: &World, agent: &Agent) {
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
    crate::common::assert_at_central(&view.events, &local);
}

/// POST adjustments through the local API until `stop`, each with its
/// own reason; returns (reason, seq) of every one the API acknowledged.
pub fn staff_writer(
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
