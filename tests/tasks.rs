//! Staff tasks end to end (issue 18 item 1): the real `storegate` binary
//! polls a load-cell shelf over Modbus TCP (a real tokio-modbus server
//! the test changes), pulls its price book from the reference central
//! on loopback and pushes the journal there; the test is the staff
//! handheld on the local API. A shelf runs low -> a refill task (up to
//! the slot's capacity) -> taken
//! -> refilled -> the shelf weight confirms it done; a refill marked done
//! without stock on the shelf reopens. `storegate rebuild` then gives the
//! same tasks from the journal.

mod common;

use std::path::Path;
use std::time::Duration;

use common::modbus::{Device, serve_tcp};
use common::{Agent, free_port, wait_within};
use serde_json::{Value, json};
use storegate::sim::central::Central;

const TOKEN: &str = "staff-tasks-1";
/// Grams of one unit of SKU-1001 (the price book's `unit_weight_g`).
const UNIT_G: i64 = 400;

/// Put `units` of SKU-1001 on slot 0 (grams as a big-endian i32).
fn stock_slot(shelf: &Device, units: i64) {
    let grams = (units * UNIT_G) as u32;
    shelf.set_holding(0, &[(grams >> 16) as u16, grams as u16]);
}

struct Handheld {
    http: reqwest::Client,
    base: String,
}

impl Handheld {
    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn tasks(&self, zone: &str) -> Vec<Value> {
        let (status, body) = self.get(&format!("/v1/tasks?zone={zone}")).await;
        assert_eq!(status, 200, "{body}");
        body["tasks"].as_array().cloned().unwrap_or_default()
    }

    /// Wait (20 s) until a GET of `path` satisfies `pred`; the agent's log
    /// and the last answer on timeout.
    async fn until(
        &self,
        agent: &Agent,
        what: &str,
        path: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (_, body) = self.get(path).await;
            if pred(&body) {
                return body;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}; last answer {body}\nagent log:\n{}",
                agent.last_log_lines(30)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Handheld {
    /// Wait until task `id` is in `state`; its answer.
    async fn until_state(&self, agent: &Agent, id: &str, state: &str) -> Value {
        let what = format!("task {id} to be {state}");
        let path = format!("/v1/tasks/{id}");
        self.until(agent, &what, &path, |b| b["task"]["state"] == state)
            .await
    }
}

fn config(dir: &Path, api_port: u16, central: &str, shelf: &str) -> std::path::PathBuf {
    let tokens = dir.join("staff.tokens");
    std::fs::write(&tokens, format!("{TOKEN}\n")).unwrap();
    let path = dir.join("store.toml");
    std::fs::write(
        &path,
        format!(
            r#"store_id = "store-tasks"
data_dir = {data:?}
profiles_dir = {profiles:?}
[api]
listen = "127.0.0.1:{api_port}"
token_files = {{ staff = {tokens:?} }}
[central]
url = "http://{central}"
max_backoff_s = 1
poll_prices_s = 1
[tasks]
verify_after_s = 2
[[device]]
id = "shelf-a1"
profile = "loadcell-shelf-modbus"
transport = "modbus-tcp"
address = "{shelf}"
unit = 1
poll_ms = 100
zone = "A1"
slots = {{ 0 = "SKU-1001" }}
slot_capacity = {{ 0 = 9 }}
"#,
            data = dir.join("data"),
            profiles = dir.join("profiles"),
        ),
    )
    .unwrap();
    path
}

/// The tasks table as rows of text, for comparing before and after a rebuild.
fn task_rows(db: &Path) -> Vec<String> {
    let conn = storegate::db::open_read(db).unwrap();
    let mut st = conn
        .prepare(
            "SELECT task_id, task, state, taken_by, done_by, confirmed_by, reason, check_at_ms,
                    reopened, opened, updated_seq FROM tasks ORDER BY task_id",
        )
        .unwrap();
    st.query_map([], |r| {
        let mut cols = Vec::new();
        for i in 0..11 {
            cols.push(format!("{:?}", r.get::<_, rusqlite::types::Value>(i)?));
        }
        Ok(cols.join("|"))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_shelf_becomes_a_task_the_weight_confirms_and_a_false_done_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let central = Central::default();
    central.set_price(json!({
        "sku": "SKU-1001", "gtins": ["04006381333931"], "name": "Oat milk 1L",
        "price_minor": 249, "currency": "EUR", "effective_from": "2026-01-01T00:00:00.000Z",
        "unit_weight_g": UNIT_G, "min_stock": 3, "max_stock": 10
    }));
    let (central_addr, _central_task) = central.clone().spawn("127.0.0.1:0").await.unwrap();
    let shelf = Device::new(1);
    shelf.set_holding(0, &[0; 16]);
    stock_slot(&shelf, 8);
    let shelf_addr = serve_tcp(&shelf).await;
    let api_port = free_port();
    let config = config(dir.path(), api_port, &central_addr.to_string(), &shelf_addr);
    let mut agent = Agent::start(&config, dir.path().join("agent.log"));
    agent.wait_log("local API listening");
    let hh = Handheld {
        http: reqwest::Client::new(),
        base: format!("http://127.0.0.1:{api_port}"),
    };
    hh.until(&agent, "the price book", "/v1/skus/SKU-1001", |b| {
        b["sku"] == "SKU-1001"
    })
    .await;

    // The shelf runs low: 2 units, minimum 3 -> a refill task in zone A1,
    // up to the slot's capacity 9.
    stock_slot(&shelf, 2);
    let list = hh
        .until(&agent, "a refill task", "/v1/tasks?zone=A1", |b| {
            b["tasks"].as_array().is_some_and(|t| !t.is_empty())
        })
        .await;
    let task = list["tasks"][0].clone();
    assert_eq!(task["task"], "refill", "{task}");
    assert_eq!(task["state"], "open");
    assert_eq!(task["zone"], "A1");
    assert_eq!(task["sku"], "SKU-1001");
    assert_eq!(task["shelf_units"], 2);
    assert_eq!(
        task["suggested_qty"], 7,
        "the slot holds 9 (max_stock 10), 2 are on it"
    );
    assert_eq!(task["subject"], "SKU-1001@shelf-a1/0");
    let first = task["task_id"].as_str().unwrap().to_string();
    assert!(hh.tasks("B2").await.is_empty(), "another zone's list");

    // Anna takes it; Ben cannot take it from her.
    let (status, body) = hh
        .post(&format!("/v1/tasks/{first}/take"), json!({"by": "anna"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["task"]["state"], "taken");
    assert_eq!(body["task"]["taken_by"], "anna");
    let (status, body) = hh
        .post(&format!("/v1/tasks/{first}/take"), json!({"by": "ben"}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("task_taken")),
        "{body}"
    );

    // She refills to 9: the shelf weight confirms it, the task is done.
    stock_slot(&shelf, 9);
    let done = hh.until_state(&agent, &first, "done").await;
    assert_eq!(done["task"]["confirmed_by"], "shelf_weight", "{done}");
    assert_eq!(done["task"]["done_by"], "anna");
    assert!(hh.tasks("A1").await.is_empty(), "nothing left to do");

    // Low again: a new task. Marked done without stock on the shelf, it
    // reopens once the check (verify_after_s = 2) finds the shelf low.
    stock_slot(&shelf, 1);
    let list = hh
        .until(&agent, "a second refill task", "/v1/tasks?zone=A1", |b| {
            b["tasks"].as_array().is_some_and(|t| !t.is_empty())
        })
        .await;
    let second = list["tasks"][0]["task_id"].as_str().unwrap().to_string();
    assert_ne!(second, first);
    assert_eq!(list["tasks"][0]["suggested_qty"], 8);
    let (status, body) = hh
        .post(&format!("/v1/tasks/{second}/take"), json!({"by": "ben"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = hh
        .post(&format!("/v1/tasks/{second}/done"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["task"]["state"], "done");
    assert_eq!(body["task"]["done_by"], "ben");
    assert!(body["task"]["confirmed_by"].is_null(), "{body}");
    assert!(body["task"]["check_at"].is_string(), "{body}");
    let reopened = hh.until_state(&agent, &second, "open").await;
    assert_eq!(reopened["task"]["reopened"], 1, "{reopened}");
    assert!(reopened["task"]["taken_by"].is_null());
    assert!(
        reopened["task"]["reason"]
            .as_str()
            .unwrap()
            .contains("still low_stock"),
        "{reopened}"
    );

    // The heartbeat tells central what is left to do.
    wait_within(
        "open_tasks in the heartbeat",
        Duration::from_secs(20),
        || {
            let status = central.view("store-tasks").status?;
            (status["open_tasks"] == json!({"refill": 1})).then_some(())
        },
    )
    .await;

    // So does `storegate status`, read beside the running agent.
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_storegate"))
        .args(["status", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&status.stdout);
    assert!(
        report.contains("tasks      1 open: refill 1"),
        "{report}\n{}",
        String::from_utf8_lossy(&status.stderr)
    );

    // Bad input and closed tasks get clear errors.
    let (status, body) = hh
        .post(
            &format!("/v1/tasks/{second}/dismiss"),
            json!({"reason": " "}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bad_request")),
        "{body}"
    );
    let (status, body) = hh
        .post(
            &format!("/v1/tasks/{second}/dismiss"),
            json!({"reason": "SKU delisted", "by": "ben"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["task"]["state"], "dismissed");
    let (status, body) = hh
        .post(&format!("/v1/tasks/{second}/done"), json!({}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("task_closed")),
        "{body}"
    );
    let (status, body) = hh
        .post("/v1/tasks/T-999999/take", json!({"by": "anna"}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("unknown_task")),
        "{body}"
    );
    let (status, _) = hh.get("/v1/tasks?open=maybe").await;
    assert_eq!(status, 400);
    let (_, all) = hh.get("/v1/tasks?zone=A1&open=false").await;
    assert_eq!(all["tasks"].as_array().map(Vec::len), Some(2), "{all}");

    // Synced: central has every step.
    let wanted = [
        "task_opened",
        "task_taken",
        "task_done",
        "task_reopened",
        "task_dismissed",
    ];
    wait_within(
        "the task events at central",
        Duration::from_secs(20),
        || {
            let view = central.view("store-tasks");
            let kinds: Vec<&str> = view
                .events
                .values()
                .filter_map(|e| e["kind"].as_str())
                .collect();
            wanted.iter().all(|k| kinds.contains(k)).then_some(())
        },
    )
    .await;

    // The journal is the truth: a rebuild gives the same tasks.
    let db = dir.path().join("data").join("storegate.db");
    agent.kill();
    let before = task_rows(&db);
    assert_eq!(before.len(), 2);
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_storegate"))
        .args(["rebuild", "--config", config.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(task_rows(&db), before);
}
