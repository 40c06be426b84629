//! Poison input (issue 14): every unit of input is committed, quarantined
//! or refused with a reason in bounded time, and nothing blocks the input
//! behind it. The real daemon binary against real counterparts (mosquitto,
//! socat ptys, an HTTP stream on loopback): each class of poison
//! (overflowing numbers, wrong types, invalid UTF-8, deep nesting, overlong
//! identifiers and lines) is followed by a good message that must be
//! journaled within 5 s, also after a restart; the store then says it is
//! healthy and the quarantine says what was wrong.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::Utc;
use common::broker::{Mosquitto, Peer};
use common::{Agent, PtyPair, Store, free_port};
use storegate::codecs::Decoded;
use storegate::db::writer::{QUARANTINE_MAX_BYTES, QUARANTINE_RAW_BYTES};
use storegate::db::{self, journal};
use storegate::event::{Event, EventBody, SaleLine};
use storegate::retention;

/// How long a good message may take to be journaled after poison.
const GOOD_WITHIN: Duration = Duration::from_secs(5);

fn receipt(id: &str, qty: &str, sku: &str) -> String {
    format!(
        r#"{{"receipt_id":"{id}","pos":"1","currency":"EUR","lines":[{{"sku":"{sku}","qty":{qty},"unit_price_minor":249}}]}}"#
    )
}

fn zebra(epc: &str) -> String {
    format!(
        r#"{{"data":{{"eventNum":1,"format":"epc","idHex":"{epc}","antenna":1,"peakRssi":-39}},"timestamp":"2019-08-24T14:15:22Z","type":"SIMPLE"}}"#
    )
}

fn impinj(epc_hex: &str) -> String {
    format!(
        r#"{{"timestamp":"2024-05-10T08:00:01.1Z","hostname":"impinj-14-aa-01","eventType":"tagInventory","tagInventoryEvent":{{"epcHex":"{epc_hex}","antennaPort":2,"peakRssiCdbm":-5525}}}}"#
    )
}

/// An Impinj-like reader's `/api/v1/data/stream` on a free loopback port:
/// every line sent into the returned channel goes out on every open
/// stream (HTTP/1.1, the body ends when the connection closes).
async fn ndjson_reader() -> (String, tokio::sync::broadcast::Sender<Vec<u8>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/api/v1/data/stream",
        listener.local_addr().unwrap()
    );
    let (lines, _) = tokio::sync::broadcast::channel::<Vec<u8>>(64);
    let sender = lines.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut rx = sender.subscribe();
            tokio::spawn(async move {
                let mut head = [0u8; 4096];
                let _ = stream.read(&mut head).await;
                let ok = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\nconnection: close\r\n\r\n";
                if stream.write_all(ok).await.is_err() {
                    return;
                }
                while let Ok(line) = rx.recv().await {
                    if stream.write_all(&line).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, lines)
}

/// A receipt as the ESC/POS journal profile reads it.
fn printed(id: &str, qty: &str) -> Vec<u8> {
    format!(
        "RECEIPT {id}  POS 1\nSKU-1001 Oat milk 1L      {qty} x 2.49   4.98\nTOTAL 4.98\n\x1dV\x00"
    )
    .into_bytes()
}

/// Every class of poison for a JSON device: (what, payload).
fn json_poison(good: &str) -> Vec<(&'static str, Vec<u8>)> {
    let mut invalid_utf8 = good.as_bytes().to_vec();
    invalid_utf8[good.len() / 2] = 0xFF;
    vec![
        ("invalid UTF-8", invalid_utf8),
        ("deep nesting", "[".repeat(100_000).into_bytes()),
        (
            "wrong types",
            br#"{"receipt_id":{"a":1},"data":[1,2],"lines":"x","idHex":7}"#.to_vec(),
        ),
        ("not JSON", b"\x00\x01\x02garbage".to_vec()),
    ]
}

/// A store config: `top` keys, `[api]` on a free port, then `sections`.
fn write_config(dir: &Path, top: &str, sections: &str) -> (PathBuf, String) {
    let api = format!("127.0.0.1:{}", free_port());
    let path = dir.join("storegate.toml");
    std::fs::write(
        &path,
        format!(
            "store_id = \"poison\"\ndata_dir = {data:?}\n{top}\n[api]\nlisten = \"{api}\"\n{sections}",
            data = dir.join("data"),
        ),
    )
    .unwrap();
    (path, api)
}

fn events(db: &Path) -> Vec<Event> {
    let Ok(conn) = db::open_read(db) else {
        return Vec::new();
    };
    journal::events_after(&conn, 0, usize::MAX >> 1).unwrap_or_default()
}

fn has_receipt(db: &Path, device: &str, receipt_id: &str) -> bool {
    events(db).iter().any(|e| {
        e.device == device && matches!(&e.body, EventBody::Sale(l) if l.receipt_id == receipt_id)
    })
}

fn has_arrival(db: &Path, epc: &str) -> bool {
    events(db)
        .iter()
        .any(|e| matches!(&e.body, EventBody::TagArrived(t) if t.epc.eq_ignore_ascii_case(epc)))
}

/// (device, reason) of every quarantined unit.
fn quarantine(db: &Path) -> Vec<(String, String)> {
    let conn = db::open_read(db).unwrap();
    let mut st = conn
        .prepare("SELECT device, reason FROM quarantine ORDER BY id")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Wait until `done`, at most [`GOOD_WITHIN`]; on a timeout, fail with
/// the agent's last log lines.
async fn within_5s(agent: &Agent, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > GOOD_WITHIN {
            panic!(
                "{what}: not journaled within {GOOD_WITHIN:?}\n--- agent log (last lines) ---\n{}",
                agent.last_log_lines(40)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_on_every_transport_never_blocks_the_good_input_behind_it() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let printer = PtyPair::new(dir.path(), "printer");
    let (portal_url, portal) = ndjson_reader().await;
    let (config, api) = write_config(
        dir.path(),
        "",
        &format!(
            r#"[mqtt]
broker = "mqtt://127.0.0.1:{port}"
client_id = "storegate-poison"
[[device]]
id = "till"
profile = "pos-json"
transport = "mqtt"
topic = "p/pos"
[[device]]
id = "zebra"
profile = "zebra-fx-iot-connector"
transport = "mqtt"
topic = "p/zebra"
[[device]]
id = "printer"
profile = "pos-escpos-journal"
transport = "serial"
port = {printer:?}
[[device]]
id = "portal"
profile = "impinj-iot"
transport = "http-stream"
url = "{portal_url}"
"#,
            port = broker.port,
            printer = printer.agent,
        ),
    );
    let db = dir.path().join("data/storegate.db");
    let mut agent = Agent::start(&config, dir.path().join("agent.log"));
    agent.wait_log("MQTT device subscribed");
    let peer = Peer::connect(broker.port, "devices").await;
    let mut line = printer.open_device();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let health = common::healthz(&api).await;
        if health["devices"]["down"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "devices not up: {health}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut n = 0;
    let mut next_id = |prefix: &str| {
        n += 1;
        format!("{prefix}-{n}")
    };

    // The till: numbers that overflow, an identifier 10,000 long, and the
    // generic classes; each followed by a good receipt.
    let till_poison: Vec<(&str, Vec<u8>)> = [
        ("qty overflow", receipt("BAD-1", "-9223372036854775807", "SKU-1")),
        ("qty beyond bounds", receipt("BAD-2", "5000000000", "SKU-1")),
        ("huge sku", receipt("BAD-3", "1", &"S".repeat(10_000))),
        (
            "price overflow",
            r#"{"receipt_id":"BAD-4","currency":"EUR","lines":[{"sku":"A","qty":3,"unit_price_minor":9223372036854775807}]}"#.to_string(),
        ),
    ]
    .into_iter()
    .map(|(w, p)| (w, p.into_bytes()))
    .chain(json_poison(&receipt("X", "1", "SKU-1")))
    .collect();
    for (what, payload) in till_poison {
        peer.publish("p/pos", payload).await;
        let id = next_id("GOOD");
        peer.publish("p/pos", receipt(&id, "1", "SKU-1001")).await;
        within_5s(&agent, &format!("till after {what}"), || {
            has_receipt(&db, "till", &id)
        })
        .await;
    }

    // The reader: an EPC 10,000 hex digits long, then the generic classes.
    let mut good_tag = 0x3074_257B_F719_4E40_0000_0000u128;
    let mut reader_poison = vec![("huge EPC", zebra(&"AB".repeat(5_000)).into_bytes())];
    reader_poison.extend(json_poison(&zebra("3074257BF7194E4000001A85")));
    for (what, payload) in reader_poison {
        peer.publish("p/zebra", payload).await;
        good_tag += 1;
        let epc = format!("{good_tag:024X}");
        peer.publish("p/zebra", zebra(&epc)).await;
        within_5s(&agent, &format!("reader after {what}"), || {
            has_arrival(&db, &epc)
        })
        .await;
    }

    // The receipt printer on its serial line.
    let mut bad_utf8 = printed("BADP-1", "1");
    bad_utf8[20] = 0xFF;
    let printer_poison: Vec<(&str, Vec<u8>)> = vec![
        ("qty overflow", printed("BADP-2", "99999999999999999999")),
        ("qty beyond bounds", printed("BADP-3", "5000000")),
        ("invalid UTF-8", bad_utf8),
        ("ESC/POS garbage", b"\x1b\x1d\x1c\xff\x00\x1dV\x00".to_vec()),
    ];
    for (what, bytes) in printer_poison {
        line.write_all(&bytes).unwrap();
        let id = next_id("P");
        line.write_all(&printed(&id, "2")).unwrap();
        within_5s(&agent, &format!("printer after {what}"), || {
            has_receipt(&db, "printer", &id)
        })
        .await;
    }

    // The reader streaming NDJSON over HTTP: an overlong line, a huge EPC
    // and the generic classes, each followed by a good read.
    let mut portal_poison = vec![
        ("overlong line", vec![b'{'; 2 * 1024 * 1024]),
        ("huge EPC", impinj(&"AB".repeat(5_000)).into_bytes()),
    ];
    portal_poison.extend(json_poison(&impinj("3074257BF7194E4000001A85")));
    for (what, mut line) in portal_poison {
        line.push(b'\n');
        let _ = portal.send(line);
        good_tag += 1;
        let epc = format!("{good_tag:024X}");
        let _ = portal.send(format!("{}\n", impinj(&epc)).into_bytes());
        within_5s(&agent, &format!("portal after {what}"), || {
            has_arrival(&db, &epc)
        })
        .await;
    }

    // Every poison is in the quarantine with a reason; none is retried,
    // and the store says it is healthy.
    let quarantined = quarantine(&db);
    for device in ["till", "zebra", "printer", "portal"] {
        assert!(
            quarantined.iter().any(|(d, _)| d == device),
            "{device}: nothing quarantined: {quarantined:#?}"
        );
    }
    assert!(
        quarantined.iter().any(|(_, r)| r.contains("beyond")),
        "{quarantined:#?}"
    );
    let health = common::healthz(&api).await;
    assert_eq!(health["status"], "ok", "{health}");
    let log = std::fs::read_to_string(&agent.log).unwrap();
    assert!(!log.contains("holding it and retrying"), "{log}");

    // Across a restart nothing is held either (once, the overflowing
    // receipt came back from the broker after every restart).
    agent.kill();
    let agent = Agent::start(&config, dir.path().join("agent2.log"));
    let id = next_id("AFTER");
    peer.publish("p/pos", receipt(&id, "1", "SKU-1001")).await;
    common::wait_within("the till after a restart", Duration::from_secs(60), || {
        has_receipt(&db, "till", &id).then_some(())
    })
    .await;
    let log = std::fs::read_to_string(&agent.log).unwrap();
    assert!(!log.contains("holding it and retrying"), "{log}");
}

fn till_source() -> storegate::devices::Source {
    storegate::devices::Source {
        device: "till".into(),
        zone: "till".into(),
    }
}

/// One sale line of `qty` units, straight to ingest (past any decoder).
fn sale(receipt: &str, qty: i64) -> (chrono::DateTime<Utc>, EventBody) {
    (
        Utc::now(),
        EventBody::Sale(SaleLine {
            receipt_id: receipt.into(),
            line: 1,
            sku: "SKU-1".into(),
            gtin: None,
            qty,
            unit_price_minor: 100,
            currency: "EUR".into(),
            pos: "1".into(),
            member_hash: None,
        }),
    )
}

/// An event the writer refuses (its bounds, or a projection's overflow)
/// is quarantined with the reason, and the rest of its unit commits: no
/// device is held on input that retrying cannot fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_the_journal_refuses_is_quarantined_and_the_rest_of_the_unit_commits() {
    let store = Store::new();
    let source = till_source();
    let delivered = tokio::time::timeout(
        Duration::from_secs(10),
        store.ingest.deliver(
            &source,
            vec![
                Decoded::Events(vec![sale("R-BAD", i64::MAX)]),
                Decoded::Events(vec![sale("R-GOOD", 2)]),
            ],
        ),
    )
    .await
    .expect("delivery did not finish: refused input is being retried")
    .unwrap();
    assert_eq!(delivered.events, 1);
    assert_eq!(delivered.quarantined, 1);
    let kept = store.quarantine();
    assert_eq!(kept.len(), 1);
    assert!(kept[0].1.contains("sale event refused: qty"), "{kept:?}");
    assert!(String::from_utf8_lossy(&kept[0].2).contains("R-BAD"));
    let receipts: Vec<String> = store
        .events()
        .into_iter()
        .filter_map(|e| match e.body {
            EventBody::Sale(l) => Some(l.receipt_id),
            _ => None,
        })
        .collect();
    assert_eq!(receipts, ["R-GOOD"]);
}

/// Large malformed frames never take the disk quota from valid input
/// (issue 14.3): the quarantine keeps only heads of bad input, is bounded
/// in rows and bytes, and is the first thing trimmed under the quota.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_malformed_frames_never_take_the_quota_from_valid_receipts() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let (config, api) = write_config(
        dir.path(),
        "disk_quota_mb = 16",
        &format!(
            "[mqtt]\nbroker = \"mqtt://127.0.0.1:{port}\"\nclient_id = \"storegate-quota\"\n\
             [[device]]\nid = \"till\"\nprofile = \"pos-json\"\ntransport = \"mqtt\"\ntopic = \"q/pos\"\n",
            port = broker.port,
        ),
    );
    let db = dir.path().join("data/storegate.db");
    let mut agent = Agent::start(&config, dir.path().join("agent.log"));
    agent.wait_log("MQTT device subscribed");
    let peer = Peer::connect(broker.port, "till").await;
    // 250 MB of garbage, 2,500 frames of 100 KB: far beyond the quota of
    // 16 MB if the quarantine kept it whole, as it once did.
    let garbage = vec![b'{'; 100_000];
    for _ in 0..2_500 {
        peer.publish("q/pos", garbage.clone()).await;
    }
    peer.publish("q/pos", receipt("AFTER-GARBAGE", "1", "SKU-1"))
        .await;
    common::wait_within(
        "the receipt after the garbage",
        Duration::from_secs(60),
        || has_receipt(&db, "till", "AFTER-GARBAGE").then_some(()),
    )
    .await;
    let (rows, bytes): (i64, i64) = db::open_read(&db)
        .unwrap()
        .query_row(
            "SELECT count(*), COALESCE(sum(length(raw)), 0) FROM quarantine",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let bound = QUARANTINE_MAX_BYTES + 100 * QUARANTINE_RAW_BYTES as i64;
    assert!(
        rows <= 2_500 && bytes <= bound,
        "{rows} rows, {bytes} bytes"
    );
    let used = storegate::db::trim::used_bytes(&db::open_read(&db).unwrap()).unwrap();
    assert!(used < 16 * 1024 * 1024, "{used} bytes used");
    // Valid receipts keep coming in: none is refused for the quota.
    for i in 0..20 {
        let id = format!("LATER-{i}");
        peer.publish("q/pos", receipt(&id, "1", "SKU-1")).await;
        within_5s(&agent, &id, || has_receipt(&db, "till", &id)).await;
    }
    let health = common::healthz(&api).await;
    assert!(
        !health.to_string().contains("never dropped"),
        "input refused for the quota: {health}"
    );
}

/// Under the quota the quarantine goes first: a round of enforcement
/// trims it before any event, acknowledged or not, is touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quarantine_is_the_first_thing_trimmed_under_the_quota() {
    let store = Store::new();
    let source = till_source();
    for i in 0..200 {
        let bad = Decoded::Bad {
            reason: format!("garbage {i}"),
            raw: vec![b'x'; 64 * 1024],
        };
        let good = Decoded::Events(vec![sale(&format!("R-{i}"), 1)]);
        store
            .ingest
            .deliver(&source, vec![bad, good])
            .await
            .unwrap();
    }
    let events_before = store.events().len();
    let round = store
        .writer
        .transact(|w| retention::enforce(w, 64 * 1024))
        .await
        .unwrap();
    assert!(round.trimmed > 0 && round.dropped == 0, "{round:?}");
    assert_eq!(store.quarantine().len(), 0);
    assert_eq!(
        store.events().len(),
        events_before,
        "an event went before the quarantine"
    );
}
