//! Handheld sled counts (`POST /v1/counts/epcs`) over real HTTP on
//! loopback: 50,000 sled lines in 10 requests, with repeats within and
//! across requests, the same item in three encodings, non-product tags and
//! malformed lines, against seeded books; the count equals what was there,
//! is journaled, and resending changes nothing.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use chrono::Utc;
use common::Lcg;
use common::api::{Api, CENTRAL, GTIN14, STAFF, error_code};
use serde_json::{Value, json};
use storegate::domain::counts::{self, ReceiptLine};
use storegate::domain::epc::{SledTag, encode_sgtin198};
use storegate::domain::prices::{self, PricePull};
use storegate::domain::sgtin::{encode_sgtin96, gtin_check_digit};
use storegate::domain::sled::{self, IDLE_LIMIT_MS, SledBatch};
use storegate::event::{format_ts, now_millis};

const PATH: &str = "/v1/counts/epcs";
const LINES: usize = 50_000;
const REQUESTS: usize = 10;

/// A GTIN-14 under company prefix 0614141 with item number `item`.
fn gtin(item: u32) -> String {
    let first13 = format!("00614141{item:05}");
    format!("{first13}{}", gtin_check_digit(&first13).unwrap())
}

/// Catalog the test SKUs (each with a GTIN) and book their stock.
async fn seed(api: &Api, books: &[(&'static str, String, i64)]) {
    let now = now_millis();
    let items: Vec<Value> = books
        .iter()
        .map(|(sku, gtin, _)| {
            json!({"sku": sku, "gtins": [gtin], "name": sku, "price_minor": 100, "currency": "EUR",
                   "effective_from": format_ts(&(now - chrono::Duration::days(1)))})
        })
        .collect();
    let pull: PricePull = serde_json::from_value(json!({"version": 58, "items": items})).unwrap();
    let lines: Vec<ReceiptLine> = books
        .iter()
        .filter(|(_, _, qty)| *qty > 0)
        .map(|(sku, _, qty)| ReceiptLine {
            sku: sku.to_string(),
            qty: *qty,
        })
        .collect();
    api.store
        .writer
        .transact(move |w| {
            prices::apply_pull(w.conn(), &pull, Utc::now(), "de-DE")?;
            counts::receive(w, "test", "D-sled", &lines)
        })
        .await
        .unwrap();
}

/// One serialised item written as a sled may report it: mostly SGTIN-96,
/// some SGTIN-198, some Digital Link (lower-case hex now and then).
fn write_item(gtin: &str, serial: u64, style: u64) -> String {
    match style % 10 {
        0 => format!("https://id.gs1.org/01/{gtin}/21/{serial}"),
        1 => format!("https://shop.example/p/01/{gtin}/10/L7/21/{serial}?src=sled"),
        2 => encode_sgtin198(gtin, 5, 1, &serial.to_string()).unwrap(),
        3 => encode_sgtin96(gtin, 5, 1, serial).unwrap().to_lowercase(),
        _ => encode_sgtin96(gtin, 5, 1, serial).unwrap(),
    }
}

/// The sled lines (shuffled, with repeats) and what they hold: distinct
/// items per GTIN, distinct non-product EPCs, distinct malformed lines.
struct Sled {
    lines: Vec<String>,
    items: BTreeMap<String, i64>,
    non_product: usize,
    malformed: usize,
}

fn sled_lines(per_gtin: &[(String, u64)]) -> Sled {
    let mut rng = Lcg(17);
    let mut distinct: Vec<String> = Vec::new();
    let mut items = BTreeMap::new();
    for (gtin, n) in per_gtin {
        for serial in 1..=*n {
            distinct.push(write_item(gtin, serial, rng.next()));
            // Some items are read a second time in another encoding.
            if serial % 9 == 0 {
                distinct.push(write_item(gtin, serial, serial / 9));
            }
        }
        items.insert(gtin.clone(), *n as i64);
    }
    let mut non_product = HashSet::new();
    for i in 0..600u64 {
        let epc = match i % 3 {
            0 => format!("31{:022X}", rng.next() << 20 | i),
            1 => format!("33{:022X}", rng.next() << 20 | i),
            _ => format!("E280{:020X}", rng.next() << 20 | i),
        };
        non_product.insert(epc.clone());
        distinct.push(epc);
    }
    let mut malformed = HashSet::new();
    for i in 0..150u64 {
        let line = match i % 5 {
            0 => format!("not-an-epc-{i}"),
            1 => format!("30{:021X}", i), // 23 hex digits
            2 => format!("https://id.gs1.org/01/{}0/21/{i}", &gtin(1)[..13]), // bad check digit
            3 => format!("3074257BF7194E4000001A85;{i}"),
            _ => format!("{i};reader-7;-61dBm"),
        };
        let check_digit_ok = i % 5 == 2 && gtin(1).ends_with('0');
        if !check_digit_ok {
            malformed.insert(line.trim().to_string());
            distinct.push(line);
        }
    }
    // Blank and whitespace lines are one malformed entry ("empty line").
    malformed.insert(String::new());
    distinct.push(String::new());
    distinct.push("  \t".into());

    let mut lines = distinct.clone();
    while lines.len() < LINES {
        let i = (rng.next() as usize) % distinct.len();
        lines.push(distinct[i].clone());
    }
    for i in (1..lines.len()).rev() {
        let j = (rng.next() as usize) % (i + 1);
        lines.swap(i, j);
    }
    Sled {
        lines,
        items,
        non_product: non_product.len(),
        malformed: malformed.len(),
    }
}

/// A staff request to the sled endpoint.
async fn sled_post(api: &Api, body: Value) -> common::api::Answer {
    api.post(PATH, Some(STAFF), body).await
}

fn count_events(events: &Value, session: &str) -> BTreeMap<String, (i64, i64)> {
    events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "count" && e["data"]["session_id"] == session)
        .map(|e| {
            let d = &e["data"];
            assert_eq!(d["method"], "rfid", "{e}");
            assert_eq!(d["zone"], "salesfloor", "{e}");
            (
                d["sku"].as_str().unwrap().to_string(),
                (
                    d["counted"].as_i64().unwrap(),
                    d["expected"].as_i64().unwrap(),
                ),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_thousand_sled_lines_count_what_was_there() {
    let api = Api::start().await;
    // SKU-1001 (24 on hand, from Api::start) plus three more; a GTIN the
    // catalog lacks; SKU-2002 (5 on hand, no GTIN) is never seen.
    let books = [
        ("SKU-S1", gtin(1), 15_200),
        ("SKU-S2", gtin(2), 11_000),
        ("SKU-S3", gtin(3), 0),
    ];
    seed(&api, &books).await;
    let unknown = gtin(99);
    let sled = sled_lines(&[
        (GTIN14.to_string(), 20),
        (gtin(1), 15_000),
        (gtin(2), 12_000),
        (gtin(3), 3_000),
        (unknown.clone(), 100),
    ]);
    assert_eq!(sled.lines.len(), LINES);
    let truth: BTreeMap<&str, (i64, i64)> = [
        ("SKU-1001", (sled.items[GTIN14], 24)),
        ("SKU-S1", (sled.items[&gtin(1)], 15_200)),
        ("SKU-S2", (sled.items[&gtin(2)], 11_000)),
        ("SKU-S3", (sled.items[&gtin(3)], 0)),
    ]
    .into();

    let chunks: Vec<&[String]> = sled.lines.chunks(LINES / REQUESTS).collect();
    assert_eq!(chunks.len(), REQUESTS);
    let started = Instant::now();
    let mut last = Value::Null;
    for (i, chunk) in chunks.iter().enumerate() {
        let a = sled_post(
            &api,
            json!({"session_id": "S-1", "zone": "salesfloor", "epcs": chunk}),
        )
        .await;
        assert_eq!(a.status, 200, "request {i}: {}", a.body);
        assert_eq!(a.body["state"], "open");
        assert_eq!(a.body["received"], chunk.len());
        last = a.body;
    }
    let took = started.elapsed();
    println!(
        "sled ingest: {LINES} lines in {REQUESTS} requests took {} ms ({:.0} lines/s)",
        took.as_millis(),
        LINES as f64 / took.as_secs_f64()
    );
    assert!(took < Duration::from_secs(120), "ingest took {took:?}");
    let distinct_items: i64 = sled.items.values().sum();
    let totals = json!({"products": distinct_items, "non_product": sled.non_product, "malformed": sled.malformed});
    assert_eq!(last["totals"], totals);
    let report = &last["request"]["malformed"];
    assert!(report["count"].as_i64().unwrap() > 0, "{last}");
    let example = &report["examples"][0];
    let index = example["index"].as_u64().unwrap() as usize;
    assert_eq!(
        example["text"],
        chunks[REQUESTS - 1][index].trim(),
        "{example}"
    );
    assert!(!example["reason"].as_str().unwrap().is_empty());

    // A resent request changes nothing.
    let a = sled_post(
        &api,
        json!({"session_id": "S-1", "zone": "salesfloor", "epcs": chunks[3]}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["new"], 0);
    assert_eq!(a.body["totals"], totals);
    // Another zone under the same session is refused.
    let a = sled_post(
        &api,
        json!({"session_id": "S-1", "zone": "backroom", "epcs": chunks[0]}),
    )
    .await;
    assert_eq!(
        (a.status, error_code(&a)),
        (409, "zone_mismatch"),
        "{}",
        a.body
    );

    // Close and apply: per SKU, the distinct items that were there.
    let close = json!({"session_id": "S-1", "zone": "salesfloor", "close": true, "apply": true, "by": "anna"});
    let a = sled_post(&api, close.clone()).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let closed = a.body;
    assert_eq!(closed["state"], "closed");
    assert_eq!(closed["already_closed"], false);
    let lines: BTreeMap<&str, (i64, i64, i64)> = closed["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["sku"].as_str().unwrap(),
                (
                    l["counted"].as_i64().unwrap(),
                    l["expected"].as_i64().unwrap(),
                    l["delta"].as_i64().unwrap(),
                ),
            )
        })
        .collect();
    let want: BTreeMap<&str, (i64, i64, i64)> = truth
        .iter()
        .map(|(s, (c, e))| (*s, (*c, *e, c - e)))
        .collect();
    assert_eq!(lines, want);
    assert_eq!(
        closed["unknown_gtins"],
        json!([{"gtin": unknown, "tags": 100}])
    );
    assert_eq!(closed["expected_unseen"], json!(["SKU-2002"]));
    assert_eq!(closed["non_product"]["count"], sled.non_product);
    assert_eq!(closed["malformed"]["count"], sled.malformed);
    assert_eq!(
        closed["non_product"]["examples"].as_array().unwrap().len(),
        5
    );

    // Journaled like any count, and applied.
    let events = api.get("/v1/events?limit=10000", Some(CENTRAL)).await;
    assert_eq!(events.status, 200);
    let journaled = count_events(&events.body, "S-1");
    let want_events: BTreeMap<String, (i64, i64)> =
        truth.iter().map(|(s, v)| (s.to_string(), *v)).collect();
    assert_eq!(journaled, want_events);
    let adjustments = events.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "adjustment" && e["data"]["reason"] == "count")
        .count();
    assert_eq!(adjustments, truth.len());
    for (sku, (counted, _)) in &truth {
        let a = api.get(&format!("/v1/skus/{sku}"), Some(STAFF)).await;
        assert_eq!(a.body["on_hand"], *counted, "{sku}: {}", a.body);
    }
    let journal_len = api.store.events().len();

    // A resent close (and a resent batch) get the same answer, and nothing
    // more is journaled; new tags for a closed session are refused.
    let a = sled_post(&api, close).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["already_closed"], true);
    assert_eq!(a.body["lines"], closed["lines"]);
    let a = sled_post(
        &api,
        json!({"session_id": "S-1", "zone": "salesfloor", "epcs": chunks[7], "close": true}),
    )
    .await;
    assert_eq!(
        (a.status, &a.body["already_closed"]),
        (200, &json!(true)),
        "{}",
        a.body
    );
    let fresh = encode_sgtin96(&gtin(1), 5, 1, 999_999).unwrap();
    let a = sled_post(
        &api,
        json!({"session_id": "S-1", "zone": "salesfloor", "epcs": [fresh]}),
    )
    .await;
    assert_eq!(
        (a.status, error_code(&a)),
        (409, "session_closed"),
        "{}",
        a.body
    );
    assert_eq!(api.store.events().len(), journal_len);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_requests_out_of_bounds_get_clear_errors() {
    let api = Api::start().await;
    let epc = encode_sgtin96(GTIN14, 5, 1, 1).unwrap();
    let cases = [
        (
            json!({"session_id": "", "zone": "z", "epcs": [epc]}),
            400,
            "session_id",
        ),
        (json!({"session_id": "S", "zone": "z"}), 400, "close"),
        (
            json!({"session_id": "S", "zone": "z", "epcs": [epc], "apply": true}),
            400,
            "close",
        ),
        (
            json!({"session_id": "S", "zone": "z", "epcs": vec![epc.clone(); 10_001]}),
            413,
            "same session_id",
        ),
        (
            json!({"session_id": "S", "zone": "z", "epcs": "x"}),
            400,
            "epcs",
        ),
    ];
    for (body, status, says) in cases {
        let a = sled_post(&api, body).await;
        assert_eq!(a.status, status, "{}", a.body);
        let message = a.body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(says),
            "{message:?} should mention {says:?}"
        );
    }
    let a = api
        .post(
            PATH,
            None,
            json!({"session_id": "S", "zone": "z", "epcs": [epc]}),
        )
        .await;
    assert_eq!(a.status, 401);
    // Over the body limit: 413 saying to split.
    let big = format!(
        r#"{{"session_id":"S","zone":"z","epcs":["{}"]}}"#,
        "A".repeat(1 << 20)
    );
    let a = api.post_raw(PATH, Some(STAFF), big.into_bytes()).await;
    assert_eq!((a.status, error_code(&a)), (413, "payload_too_large"));
    assert!(
        a.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("smaller")
    );

    // A session left open for a day expires: its tags are dropped and it
    // takes nothing more. (The writer is driven a day ahead directly.)
    let a = sled_post(
        &api,
        json!({"session_id": "S-old", "zone": "z", "epcs": [epc]}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let later = Utc::now().timestamp_millis() + IDLE_LIMIT_MS + 60_000;
    let refused = api
        .store
        .writer
        .transact(move |w| {
            let tags = [(String::from("x"), SledTag::Malformed { reason: "x".into() })];
            let batch = SledBatch {
                device: "test",
                session_id: "S-old",
                zone: "z",
                tags: &tags,
                close: None,
            };
            let refusal = sled::record_batch(w, later, &batch)?;
            let left: i64 = w
                .conn()
                .query_row(
                    "SELECT COUNT(*) FROM sled_tags WHERE session_id = 'S-old'",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            Ok((refusal, left))
        })
        .await
        .unwrap();
    assert!(
        matches!(refused.0, Err(sled::SledRefusal::Expired { .. })),
        "{refused:?}"
    );
    assert_eq!(refused.1, 0, "the expired session's tags are dropped");
    let a = sled_post(
        &api,
        json!({"session_id": "S-old", "zone": "z", "close": true}),
    )
    .await;
    assert_eq!(
        (a.status, error_code(&a)),
        (409, "session_expired"),
        "{}",
        a.body
    );
    assert!(error_message(&a).contains("new session id"));
}

fn error_message(a: &common::api::Answer) -> &str {
    a.body["error"]["message"].as_str().unwrap_or_default()
}
