//! Click-and-collect (spec/sync-api.md 6) end to end: the real agent
//! binary against the reference central on loopback. Orders are pulled
//! and reserve stock; one is picked by EPC and GTIN with a wrong item and
//! a surplus refused, survives a kill -9 mid-pick, and is handed over
//! (a wrong code refused first); one expires and one is cancelled after
//! a scan (its items go back to the shelf); central's stock equals the
//! store's afterwards, and no pickup code reaches central or the log.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::Utc;
use common::pickup::{CODE_1, CODE_2, CODE_3, epc, gtin, order};
use common::{Agent, free_port};
use serde_json::{Value, json};
use storegate::event::format_ts;
use storegate::sim::central::Central;

const STORE: &str = "store-pickup";
const STAFF: &str = "staff-pickup";
const CENTRAL: &str = "central-pickup";
const DEADLINE: Duration = Duration::from_secs(30);

/// The agent, its API and the central it talks to.
struct Shop {
    dir: tempfile::TempDir,
    config: PathBuf,
    agent: Option<Agent>,
    base: String,
    http: reqwest::Client,
}

impl Shop {
    fn start_agent(&mut self) {
        let n = std::fs::read_dir(self.dir.path()).unwrap().count();
        let log = self.dir.path().join(format!("agent-{n}.log"));
        self.agent = Some(Agent::start(&self.config, log));
    }

    fn log(&self) -> String {
        self.agent
            .as_ref()
            .map(|a| a.last_log_lines(30))
            .unwrap_or_default()
    }

    async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await;
        match r {
            Ok(r) => (r.status().as_u16(), r.json().await.unwrap_or(Value::Null)),
            Err(_) => (0, Value::Null),
        }
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(STAFF)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// Poll `GET path` until `pred` holds of its body; on timeout, fail
    /// with the last answer and the agent's log.
    async fn until(
        &self,
        what: &str,
        path: &str,
        token: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let (status, body) = self.get(path, token).await;
            if status == 200 && pred(&body) {
                return body;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; last answer {status} {body}\nagent log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn sku(&self, sku: &str) -> Value {
        self.get(&format!("/v1/skus/{sku}"), STAFF).await.1
    }

    async fn order(&self, id: &str) -> Value {
        self.get(&format!("/v1/orders/{id}"), STAFF).await.1
    }
}

fn write_config(dir: &Path, api: u16, central: &str) -> PathBuf {
    std::fs::write(dir.join("staff.tokens"), format!("{STAFF}\n")).unwrap();
    std::fs::write(dir.join("central.tokens"), format!("{CENTRAL}\n")).unwrap();
    let path = dir.join("store.toml");
    std::fs::write(
        &path,
        format!(
            r#"store_id = "{STORE}"
data_dir = {data:?}
profiles_dir = "/nonexistent"
[api]
listen = "127.0.0.1:{api}"
token_files = {{ staff = {staff:?}, central = {central_tokens:?} }}
[central]
url = "http://{central}"
max_backoff_s = 1
poll_prices_s = 1
poll_stock_s = 1
poll_orders_s = 1
"#,
            data = dir.join("data"),
            staff = dir.join("staff.tokens"),
            central_tokens = dir.join("central.tokens"),
        ),
    )
    .unwrap();
    path
}

fn line<'a>(order: &'a Value, sku: &str) -> &'a Value {
    order["lines"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["sku"] == sku))
        .unwrap_or_else(|| panic!("no line {sku} in {order}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pickup_orders_are_reserved_picked_handed_over_and_expired() {
    let started = Instant::now();
    let central = Central::default();
    let (milk, bread, soap) = (gtin(1001), gtin(1004), gtin(1002));
    let from = format_ts(&(Utc::now() - chrono::Duration::days(1)));
    for (sku, g) in [
        ("SKU-1001", &milk),
        ("SKU-1004", &bread),
        ("SKU-1002", &soap),
    ] {
        central.set_price(
            json!({"sku": sku, "gtins": [g], "name": sku, "price_minor": 249,
                                 "currency": "EUR", "effective_from": from}),
        );
    }
    central.set_initial_stock("SKU-1001", 10);
    central.set_initial_stock("SKU-1004", 5);
    central.set_initial_stock("SKU-1002", 3);
    let (addr, _server) = central.clone().spawn("127.0.0.1:0").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let api = free_port();
    let config = write_config(dir.path(), api, &addr.to_string());
    let mut shop = Shop {
        dir,
        config,
        agent: None,
        base: format!("http://127.0.0.1:{api}"),
        http: reqwest::Client::new(),
    };
    shop.start_agent();

    // Two orders: one to collect, one that nobody collects.
    let day = chrono::Duration::days(1);
    central
        .add_order(
            STORE,
            order(
                "WEB-1",
                CODE_1,
                day,
                json!([{"sku": "SKU-1001", "qty": 2}, {"sku": "SKU-1004", "qty": 1}]),
            ),
        )
        .unwrap();
    shop.until("stock and both orders", "/v1/skus/SKU-1001", STAFF, |s| {
        s["on_hand"] == 10 && s["reserved"] == 2
    })
    .await;
    central
        .add_order(
            STORE,
            order(
                "WEB-2",
                CODE_2,
                chrono::Duration::seconds(4),
                json!([{"sku": "SKU-1001", "qty": 1}]),
            ),
        )
        .unwrap();
    let sku = shop
        .until("WEB-2 reserved", "/v1/skus/SKU-1001", STAFF, |s| {
            s["reserved"] == 3
        })
        .await;
    assert_eq!(sku["available"], 7, "{sku}");
    let listed = shop.get("/v1/orders", STAFF).await.1;
    let ids: Vec<&str> = listed["orders"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["order_id"].as_str())
        .collect();
    assert_eq!(ids, ["WEB-1", "WEB-2"], "{listed}");
    let state = shop.get("/v1/state", CENTRAL).await.1;
    let milk_state = state["skus"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["sku"] == "SKU-1001")
        .unwrap()
        .clone();
    assert_eq!(
        (
            milk_state["reserved"].clone(),
            milk_state["available"].clone()
        ),
        (json!(3), json!(7)),
        "{milk_state}"
    );

    // Pick WEB-1: one milk by its tag (a repeat read is not counted
    // twice), a wrong item refused.
    let (status, body) = shop
        .post("/v1/orders/WEB-1/scan", json!({"code": epc(&milk, 1)}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scan"]["picked"], 1, "{body}");
    let (status, body) = shop
        .post("/v1/orders/WEB-1/scan", json!({"code": epc(&milk, 1)}))
        .await;
    assert_eq!(
        (status, body["scan"]["repeat"].clone()),
        (200, json!(true)),
        "{body}"
    );
    let (status, body) = shop
        .post("/v1/orders/WEB-1/scan", json!({"code": soap}))
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "wrong_item", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("SKU-1002 is not in order WEB-1"),
        "{message}"
    );

    // kill -9 mid-pick: the acknowledged scan is still there.
    shop.agent.take().unwrap().kill();
    shop.start_agent();
    let web1 = shop
        .until("the agent back", "/v1/orders/WEB-1", STAFF, |_| true)
        .await;
    assert_eq!(line(&web1, "SKU-1001")["picked"], 1, "{web1}");

    // The second milk by its barcode, a third is a surplus; the bread is
    // not found: a short pick.
    let (status, body) = shop
        .post("/v1/orders/WEB-1/scan", json!({"code": milk}))
        .await;
    assert_eq!(
        (status, body["scan"]["picked"].clone()),
        (200, json!(2)),
        "{body}"
    );
    let (status, body) = shop
        .post("/v1/orders/WEB-1/scan", json!({"code": epc(&milk, 2)}))
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "surplus", "{body}");
    let (status, body) = shop
        .post("/v1/orders/WEB-1/picked", json!({"by": "anna"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["short"], 1, "{body}");
    assert_eq!(line(&body["order"], "SKU-1004")["reserved"], 0, "{body}");

    // Handover: a wrong code is refused, the right one moves stock.
    let (status, body) = shop
        .post("/v1/orders/WEB-1/handover", json!({"pickup_code": "0000"}))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "wrong_pickup_code", "{body}");
    assert_eq!(shop.sku("SKU-1001").await["on_hand"], 10);
    let (status, body) = shop
        .post(
            "/v1/orders/WEB-1/handover",
            json!({"pickup_code": CODE_1, "by": "anna"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["order"]["state"], "handed_over", "{body}");

    // WEB-2 expires by the agent's clock: its reservation is released.
    let web2 = shop
        .until("WEB-2 expired", "/v1/orders/WEB-2", STAFF, |o| {
            o["state"] == "expired"
        })
        .await;
    assert_eq!(line(&web2, "SKU-1001")["reserved"], 0, "{web2}");
    let milk_now = shop.sku("SKU-1001").await;
    assert_eq!(
        (milk_now["on_hand"].clone(), milk_now["reserved"].clone()),
        (json!(8), json!(0)),
        "{milk_now}"
    );

    // WEB-3 is cancelled by central after a scan: the item must go back.
    central
        .add_order(
            STORE,
            order("WEB-3", CODE_3, day, json!([{"sku": "SKU-1002", "qty": 1}])),
        )
        .unwrap();
    shop.until("WEB-3 reserved", "/v1/orders/WEB-3", STAFF, |o| {
        o["state"] == "open"
    })
    .await;
    let (status, body) = shop
        .post("/v1/orders/WEB-3/scan", json!({"code": epc(&soap, 7)}))
        .await;
    assert_eq!(status, 200, "{body}");
    central.cancel_order(STORE, "WEB-3");
    // Central sending WEB-1 again, or cancelling it, changes nothing.
    central
        .add_order(
            STORE,
            order("WEB-1", CODE_1, day, json!([{"sku": "SKU-1001", "qty": 2}])),
        )
        .unwrap();
    central.cancel_order(STORE, "WEB-1");
    let web3 = shop
        .until("WEB-3 cancelled", "/v1/orders/WEB-3", STAFF, |o| {
            o["state"] == "cancelled"
        })
        .await;
    assert_eq!(web3["return_open"], true, "{web3}");
    let alerts = shop.get("/v1/alerts", STAFF).await.1;
    let text = alerts.to_string();
    assert!(
        text.contains("pickup_return") && text.contains("put 1 × SKU-1002 back"),
        "{text}"
    );
    let (status, body) = shop.post("/v1/orders/WEB-3/returned", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(shop.order("WEB-1").await["state"], "handed_over");

    // Central gets every event and ends with the store's stock.
    let head = shop.get("/v1/state", CENTRAL).await.1["head_seq"]
        .as_i64()
        .unwrap();
    let deadline = Instant::now() + DEADLINE;
    while central.view(STORE).acked_through < head {
        assert!(
            Instant::now() < deadline,
            "central acked {} of {head}\n{}",
            central.view(STORE).acked_through,
            shop.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let state = shop.get("/v1/state", CENTRAL).await.1;
    let at_central = central.on_hand(STORE);
    for s in state["skus"].as_array().unwrap() {
        let sku = s["sku"].as_str().unwrap();
        assert_eq!(
            s["on_hand"].as_i64(),
            at_central.get(sku).copied(),
            "{sku}: store {s}, central {at_central:?}"
        );
    }
    assert_eq!(at_central.get("SKU-1001"), Some(&8));
    let events: Vec<Value> = central.view(STORE).events.into_values().collect();
    let kinds_of = |id: &str| -> Vec<&str> {
        events
            .iter()
            .filter(|e| e["data"]["order_id"] == id)
            .filter_map(|e| e["kind"].as_str())
            .filter(|k| k.starts_with("order_"))
            .collect()
    };
    assert_eq!(
        kinds_of("WEB-1"),
        ["order_reserved", "order_picked", "order_handed_over"]
    );
    assert_eq!(kinds_of("WEB-2"), ["order_reserved", "order_expired"]);
    assert_eq!(kinds_of("WEB-3"), ["order_reserved", "order_cancelled"]);
    let picked = events.iter().find(|e| e["kind"] == "order_picked").unwrap();
    assert_eq!(
        picked["data"]["lines"],
        json!([{"sku": "SKU-1001", "qty": 2, "picked": 2, "epcs": [epc(&milk, 1)], "short": 0},
               {"sku": "SKU-1004", "qty": 1, "picked": 0, "short": 1}])
    );

    // The orders' ends in the store's metrics.
    let metrics = shop
        .http
        .get(format!("{}/metrics", shop.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"storegate_pickup_orders{state="handed_over"} 1"#,
        r#"storegate_pickup_orders{state="expired"} 1"#,
        r#"storegate_pickup_orders{state="cancelled"} 1"#,
        r#"storegate_pickup_orders{state="open"} 0"#,
        r#"storegate_tasks_open{task="return_to_shelf"} 0"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line} in\n{metrics}"
        );
    }

    // No pickup code anywhere but in central's own orders.
    let pushed = serde_json::to_string(&events).unwrap();
    let mut logs = String::new();
    for entry in std::fs::read_dir(shop.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "log") {
            logs.push_str(&std::fs::read_to_string(path).unwrap());
        }
    }
    for code in [CODE_1, CODE_2, CODE_3] {
        assert!(!pushed.contains(code), "{code} was pushed");
        assert!(!logs.contains(code), "{code} is in the log");
    }
    println!("pickup end to end: {:?}", started.elapsed());
}
