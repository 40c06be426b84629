//! Reading control (issue 17 item 2) against real counterparts: the agent
//! binary with its API, mosquitto, an Impinj-R700-like reader (the
//! simulator's REST interface on loopback, publishing tagInventory events
//! to mosquitto only while a preset runs) and a Zebra IoT Connector-like
//! reader (the simulator answering MQTT commands with their command_id).
//!
//! One agent serves every case, to keep the test's wall time small: it
//! starts both readers when it starts, staff stop and start them through
//! `POST /v1/devices/{id}/reading`, a rebooted reader is started again,
//! and a reader refusing the credentials, an unknown preset, an unknown
//! or uncontrolled device each get a clear error.

mod common;

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use common::broker::Mosquitto;
use common::{Agent, free_port, healthz};
use serde_json::{Value, json};
use storegate::sim::impinj::Impinj;
use storegate::sim::mqtt::Link;
use storegate::sim::say::Say;
use storegate::sim::zebra::{Read, Zebra};

const PRESET: &str = "store_inventory";

/// Poll `check` until it gives Some, or fail after 30 s with the end of
/// the agent's log.
async fn until<T, F: Future<Output = Option<T>>>(
    what: &str,
    agent: &Agent,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; agent log:\n{}",
            agent.last_log_lines(30)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    async fn reading(&self, device: &str, token: &str, body: Value) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}/v1/devices/{device}/reading", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Ask for `body` and expect the error `want` (status, code); its message.
    async fn refused(&self, device: &str, token: &str, body: Value, want: (u16, &str)) -> String {
        let (status, answer) = self.reading(device, token, body.clone()).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str().unwrap_or("")),
            want,
            "{device} {body}: {answer}"
        );
        answer["error"]["message"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// The device's health row from `/v1/state`.
    async fn health(&self, device: &str) -> Option<Value> {
        let state: Value = self
            .client
            .get(format!("{}/v1/state", self.base))
            .bearer_auth("central-1")
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let devices = state.get("devices")?.as_array()?.clone();
        devices.into_iter().find(|d| d["id"] == device)
    }

    async fn frames(&self, device: &str) -> u64 {
        self.health(device)
            .await
            .and_then(|h| h["frames_ok"].as_u64())
            .unwrap_or(0)
    }
}

fn write_config(dir: &Path, broker: u16, reader: &str, api: u16) -> std::path::PathBuf {
    std::fs::write(dir.join("staff.tokens"), "staff-1\n").unwrap();
    std::fs::write(dir.join("central.tokens"), "central-1\n").unwrap();
    std::fs::write(dir.join("reader.cred"), "root:r700-secret\n").unwrap();
    std::fs::write(dir.join("wrong.cred"), "root:impinj\n").unwrap();
    let path = dir.join("storegate.toml");
    std::fs::write(
        &path,
        format!(
            r#"store_id = "store-ctl"
data_dir = {data:?}
[api]
listen = "127.0.0.1:{api}"
token_files = {{ staff = {staff:?}, central = {central:?} }}
[mqtt]
broker = "mqtt://127.0.0.1:{broker}"
client_id = "storegate-ctl"

[[device]]
id = "door"
profile = "impinj-iot"
transport = "mqtt"
topic = "r700/events"
[device.control]
url = "http://{reader}"
credentials_file = {cred:?}
preset = "{PRESET}"
check_s = 1

[[device]]
id = "door-b"
profile = "impinj-iot"
transport = "mqtt"
topic = "r700b/events"
[device.control]
url = "http://{reader}"
credentials_file = {wrong:?}
preset = "{PRESET}"

[[device]]
id = "dock"
profile = "zebra-fx-iot-connector"
transport = "mqtt"
topic = "fx/data"
[device.control]
command_topic = "fx/mgmt/cmd"
response_topic = "fx/mgmt/resp"

[[device]]
id = "till"
profile = "pos-json"
transport = "mqtt"
topic = "pos"
"#,
            data = dir.join("data"),
            staff = dir.join("staff.tokens"),
            central = dir.join("central.tokens"),
            cred = dir.join("reader.cred"),
            wrong = dir.join("wrong.cred"),
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_are_started_stopped_and_restarted_with_clear_errors() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start();
    let url = format!("mqtt://127.0.0.1:{}", broker.port);

    // The Impinj-like reader: stopped, REST on loopback, reads to MQTT.
    let r700 = Impinj::new("root", "r700-secret", &[PRESET, "fast"], Say::quiet());
    let r700_addr = r700.spawn().await.unwrap();
    let r700_link = Link::connect(&url, "sim-r700", None).unwrap();
    assert!(r700_link.wait_connected(Duration::from_secs(10)).await);
    let epcs: Vec<String> = (0..4)
        .map(|i| format!("3074257BF7194E400000{i:04X}"))
        .collect();
    {
        let r700 = r700.clone();
        tokio::spawn(async move {
            r700.publish_reads(&r700_link, "r700/events", &epcs, Duration::from_millis(50))
                .await
        });
    }

    // The Zebra-like reader: stopped, obeying commands on fx/mgmt/cmd.
    let fx_link = Link::connect(&url, "sim-fx", Some("fx/mgmt/cmd".into())).unwrap();
    assert!(fx_link.wait_connected(Duration::from_secs(10)).await);
    let fx = Zebra::controlled(fx_link, "fx/data", "fx/mgmt/resp", Say::quiet());
    {
        let fx = fx.clone();
        tokio::spawn(async move {
            for i in 0u32.. {
                let read = Read {
                    epc: format!("3074257BF7194E40000F{:04X}", i % 4),
                    antenna: 1,
                    rssi_dbm: -50,
                };
                if fx.publish(&[read]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    }

    let api_port = free_port();
    let config = write_config(dir.path(), broker.port, &r700_addr.to_string(), api_port);
    let agent = Agent::start(&config, dir.path().join("agent.log"));
    let api = Api {
        base: format!("http://127.0.0.1:{api_port}"),
        client: reqwest::Client::new(),
    };

    // At start the agent starts both readers, and their reads arrive.
    until(
        "the agent starts the R700's preset and its reads arrive",
        &agent,
        || async {
            (r700.running().as_deref() == Some(PRESET) && api.frames("door").await > 0)
                .then_some(())
        },
    )
    .await;
    let door = api.health("door").await.unwrap();
    assert_eq!(
        door["reading"],
        json!(format!("running {PRESET}")),
        "{door}"
    );
    until(
        "the agent starts the FX reader and its reads arrive",
        &agent,
        || async { (fx.is_reading() && api.frames("dock").await > 0).then_some(()) },
    )
    .await;

    // A reader refusing the agent's credentials: in health, and the API
    // says what to fix.
    let why = until(
        "door-b's refused credentials in its health",
        &agent,
        || async {
            api.health("door-b").await?["control_error"]
                .as_str()
                .map(str::to_string)
        },
    )
    .await;
    assert!(
        why.contains("HTTP 401") && why.contains("credentials_file"),
        "{why}"
    );
    let health = healthz(&format!("127.0.0.1:{api_port}")).await;
    assert_eq!(health["status"], "degraded", "{health}");
    api.refused(
        "door-b",
        "staff-1",
        json!({"action": "start"}),
        (502, "reader_unauthorized"),
    )
    .await;

    // Unknown presets: the reader's 404, and the Zebra's fixed modes.
    let start = |preset: &str| json!({"action": "start", "preset": preset});
    let message = api
        .refused("door", "staff-1", start("nope"), (400, "unknown_preset"))
        .await;
    assert!(message.contains("\"nope\""), "{message}");
    api.refused("dock", "staff-1", start("TURBO"), (400, "unknown_preset"))
        .await;
    assert!(
        fx.is_reading(),
        "a refused preset leaves the reader as it was"
    );

    // Staff stop the R700: it stops, and so do its reads.
    let (status, body) = api
        .reading("door", "staff-1", json!({"action": "stop"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["action"], "stop");
    assert_eq!(r700.running(), None);
    tokio::time::sleep(Duration::from_millis(300)).await; // reads in flight
    let before = api.frames("door").await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // > check_s: not restarted
    assert_eq!(
        api.frames("door").await,
        before,
        "reads went on after the stop"
    );
    assert_eq!(
        r700.running(),
        None,
        "the agent restarted a reader staff stopped"
    );

    // Start on another preset; a reboot is noticed and undone.
    let (status, body) = api
        .reading(
            "door",
            "staff-1",
            json!({"action": "start", "preset": "fast"}),
        )
        .await;
    assert_eq!(
        (status, body["preset"].as_str()),
        (200, Some("fast")),
        "{body}"
    );
    r700.reboot();
    until(
        "the rebooted R700 started again on its preset",
        &agent,
        || async { (r700.running().as_deref() == Some("fast")).then_some(()) },
    )
    .await;

    // The FX answers the stop with the command's id.
    let (status, body) = api
        .reading("dock", "staff-1", json!({"action": "stop"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["reader"]["response"], "success", "{body}");
    assert!(
        body["reader"]["command_id"]
            .as_str()
            .unwrap()
            .starts_with("storegate-dock-"),
        "{body}"
    );
    assert!(!fx.is_reading());
    let (status, body) = api
        .reading(
            "dock",
            "staff-1",
            json!({"action": "start", "preset": "PORTAL"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(fx.is_reading());
    assert_eq!(fx.mode(), "PORTAL");

    // Requests that cannot be carried out say why.
    for (device, token, body, want) in [
        (
            "till",
            "staff-1",
            json!({"action": "stop"}),
            (409, "not_controlled"),
        ),
        (
            "nobody",
            "staff-1",
            json!({"action": "stop"}),
            (404, "unknown_device"),
        ),
        (
            "door",
            "staff-1",
            json!({"action": "pause"}),
            (400, "bad_request"),
        ),
        (
            "door",
            "staff-1",
            json!({"action": "stop", "preset": "x"}),
            (400, "bad_request"),
        ),
        (
            "door",
            "wrong-token",
            json!({"action": "stop"}),
            (401, "unauthorized"),
        ),
    ] {
        api.refused(device, token, body, want).await;
    }
    println!("reader control test took {:?}", started.elapsed());
}
