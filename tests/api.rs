//! The local HTTP API (spec/local-api.md) on a real TCP listener, with
//! reqwest as the client and a real store (SQLite, writer, projections)
//! seeded through the domain.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::api::{Api, CENTRAL, GTIN13, GTIN14, STAFF, error_code};
use serde_json::{Value, json};
use storegate::event::{EventBody, NewEvent, TagTransition, format_ts, now_millis};
use storegate::sync::Link;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_metrics_need_no_token() {
    let api = Api::start().await;
    let a = api.get("/healthz", None).await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.body,
        json!({"status": "ok", "reasons": [], "db": "ok", "devices": {"up": 0, "down": 0},
               "central": "offline", "backlog": 2})
    );

    // A device that is down degrades the store; central online shows.
    api.store.health.register("rfid-1", "impinj", "http");
    api.store.health.register("pos-1", "pos", "serial");
    api.store.health.set_up("pos-1", true, None);
    api.link.send_replace(Link::Online);
    let a = api.get("/healthz", None).await;
    assert_eq!(
        a.body,
        json!({"status": "degraded", "reasons": ["device rfid-1 is down: not connected yet"],
               "db": "ok", "devices": {"up": 1, "down": 1},
               "central": "online", "backlog": 2})
    );

    let response = api
        .http
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text; version=1.0.0")
    );
    let text = response.text().await.unwrap();
    assert!(text.contains("storegate_journal_head_seq 2\n"), "{text}");
    assert!(text.contains("storegate_backlog_events 2\n"), "{text}");
    assert!(
        text.contains("storegate_device_up{device=\"rfid-1\"} 0\n"),
        "{text}"
    );
    assert!(text.contains("# TYPE storegate_db_bytes gauge"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_page_is_served_without_token() {
    let api = Api::start().await;
    let response = api.http.get(&api.base).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = response.text().await.unwrap();
    for id in [
        "token",
        "save-token",
        "code",
        "name",
        "on-hand",
        "price",
        "labels",
        "alerts",
        "counted",
        "zone",
        "apply",
        "submit-count",
        "message",
    ] {
        assert!(html.contains(&format!("id=\"{id}\"")), "no #{id}");
    }
    assert!(html.contains("name=\"viewport\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sku_lookup_by_sku_and_by_gtin() {
    let api = Api::start().await;
    let a = api.get("/v1/skus/SKU-1001", Some(STAFF)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let expected = json!({
        "sku": "SKU-1001",
        "name": "Oat milk 1L",
        "gtins": [GTIN14],
        "on_hand": 24,
        "reserved": 0,
        "available": 24,
        "price_minor": 199,
        "currency": "EUR",
        "promo_until": format_ts(&api.promo_until),
        "labels": [{"label_id": "0000021A4B3C", "sku": "SKU-1001", "state": "pending",
                    "want_version": 57, "shows_version": null, "shows_price_minor": null,
                    "battery_mv": null, "rssi": null}],
        "last_count": null,
        "alerts": [],
    });
    assert_eq!(a.body, expected);

    // The GTIN-13 on the pack and the GTIN-14 both find the SKU.
    for code in [GTIN13, GTIN14] {
        let a = api.get(&format!("/v1/skus/{code}"), Some(STAFF)).await;
        assert_eq!(a.status, 200, "{code}: {}", a.body);
        assert_eq!(a.body, expected);
    }

    // A SKU without promo and without labels.
    let a = api.get("/v1/skus/SKU-2002", Some(STAFF)).await;
    assert_eq!(a.body["price_minor"], 1099);
    assert_eq!(a.body["promo_until"], Value::Null);
    assert_eq!(a.body["labels"], json!([]));
    assert_eq!(a.body["on_hand"], 5);

    // Unknown SKU, and a valid GTIN the catalog lacks.
    for code in ["SKU-404", "4012345678901"] {
        let a = api.get(&format!("/v1/skus/{code}"), Some(STAFF)).await;
        assert_eq!(a.status, 404, "{code}");
        assert_eq!(error_code(&a), "not_found");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_record_and_apply() {
    let api = Api::start().await;

    // Without apply: a count event, on hand unchanged.
    let a = api
        .post(
            "/v1/counts",
            Some(STAFF),
            json!({"zone": "A1", "lines": [{"sku": "SKU-1001", "counted": 20}]}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let session = a.body["session_id"].as_str().unwrap().to_string();
    assert!(session.starts_with("C-"), "{session}");
    assert_eq!(
        a.body,
        json!({"session_id": session, "lines": [{"sku": "SKU-1001", "expected": 24, "counted": 20, "delta": -4}]})
    );
    let a = api.get("/v1/skus/SKU-1001", Some(STAFF)).await;
    assert_eq!(a.body["on_hand"], 24);
    let last = &a.body["last_count"];
    assert_eq!(last["session_id"], session.as_str());
    assert_eq!(
        (
            &last["zone"],
            &last["counted"],
            &last["expected"],
            &last["method"]
        ),
        (&json!("A1"), &json!(20), &json!(24), &json!("scan"))
    );

    // With apply (a central token may do what staff may): on hand follows
    // the count, below the minimum a low_stock alert opens.
    let a = api
        .post(
            "/v1/counts",
            Some(CENTRAL),
            json!({"zone": "A1", "method": "manual", "apply": true, "by": "anna",
                   "lines": [{"sku": "SKU-1001", "counted": 3}, {"sku": "SKU-2002", "counted": 5}]}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let session = a.body["session_id"].as_str().unwrap().to_string();
    assert_eq!(
        a.body["lines"],
        json!([{"sku": "SKU-1001", "expected": 24, "counted": 3, "delta": -21},
               {"sku": "SKU-2002", "expected": 5, "counted": 5, "delta": 0}])
    );
    let a = api.get("/v1/skus/SKU-1001", Some(STAFF)).await;
    assert_eq!(a.body["on_hand"], 3);
    assert_eq!(a.body["last_count"]["method"], "manual");
    let alerts = a.body["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{}", a.body);
    assert_eq!(alerts[0]["code"], "low_stock");
    assert_eq!(alerts[0]["subject"], "SKU-1001");

    // The journal holds both counts of the session and one adjustment
    // (SKU-2002 needed none).
    let events = api.store.events();
    let of_session: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::Count(c) if c.session_id == session => Some((c.sku.clone(), c.counted)),
            _ => None,
        })
        .collect();
    assert_eq!(
        of_session,
        [("SKU-1001".to_string(), 3), ("SKU-2002".to_string(), 5)]
    );
    let adjustments: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::Adjustment(a) => {
                Some((a.sku.clone(), a.delta, a.reason.clone(), a.by.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        adjustments,
        [(
            "SKU-1001".to_string(),
            -21,
            "count".to_string(),
            Some("anna".to_string())
        )]
    );

    // The open alerts endpoint lists it too; open=false is refused.
    let a = api.get("/v1/alerts?open=true", Some(STAFF)).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["alerts"][0]["code"], "low_stock");
    assert_eq!(a.body["alerts"].as_array().unwrap().len(), 1);
    let a = api.get("/v1/alerts", Some(STAFF)).await;
    assert_eq!(a.body["alerts"].as_array().unwrap().len(), 1);
    let a = api.get("/v1/alerts?open=false", Some(STAFF)).await;
    assert_eq!(a.status, 400);
    assert_eq!(error_code(&a), "bad_request");

    // Bad counts: negative, a SKU twice, an unknown method, no lines.
    for body in [
        json!({"zone": "A1", "lines": [{"sku": "SKU-1001", "counted": -1}]}),
        json!({"zone": "A1", "lines": [{"sku": "SKU-1001", "counted": 1}, {"sku": "SKU-1001", "counted": 2}]}),
        json!({"zone": "A1", "method": "guess", "lines": [{"sku": "SKU-1001", "counted": 1}]}),
        json!({"zone": "A1", "lines": []}),
        json!({"zone": " ", "lines": [{"sku": "SKU-1001", "counted": 1}]}),
    ] {
        let a = api.post("/v1/counts", Some(STAFF), body.clone()).await;
        assert_eq!(a.status, 400, "{body}: {}", a.body);
        assert_eq!(error_code(&a), "bad_request");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adjustments_and_receipts() {
    let api = Api::start().await;
    let a = api
        .post(
            "/v1/adjustments",
            Some(STAFF),
            json!({"sku": "SKU-2002", "delta": -2, "reason": "damage", "by": "ben"}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body, json!({"seq": 3}));
    let event = api.store.events().pop().unwrap();
    assert_eq!(event.seq, 3);
    assert_eq!(event.device, "api");
    assert_eq!(
        serde_json::to_value(&event.body).unwrap(),
        json!({"kind": "adjustment", "data": {"sku": "SKU-2002", "delta": -2, "reason": "damage", "by": "ben"}})
    );
    let a = api
        .post(
            "/v1/adjustments",
            Some(STAFF),
            json!({"sku": "SKU-2002", "delta": 0, "reason": "damage"}),
        )
        .await;
    assert_eq!(a.status, 400);
    assert!(
        a.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("delta")
    );

    let delivery = json!({"delivery_id": "D-77", "lines": [{"sku": "SKU-1001", "qty": 24}, {"sku": "SKU-2002", "qty": 6}]});
    let a = api
        .post("/v1/receipts", Some(STAFF), delivery.clone())
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        a.body,
        json!({"lines": [{"sku": "SKU-1001", "seq": 4, "duplicate": false},
                         {"sku": "SKU-2002", "seq": 5, "duplicate": false}]})
    );
    // The same delivery again is recognised, not booked twice.
    let a = api.post("/v1/receipts", Some(STAFF), delivery).await;
    assert_eq!(
        a.body,
        json!({"lines": [{"sku": "SKU-1001", "seq": 4, "duplicate": true},
                         {"sku": "SKU-2002", "seq": 5, "duplicate": true}]})
    );
    let a = api.get("/v1/skus/SKU-1001", Some(STAFF)).await;
    assert_eq!(a.body["on_hand"], 48);
    let a = api.get("/v1/skus/SKU-2002", Some(STAFF)).await;
    assert_eq!(a.body["on_hand"], 9);

    let a = api
        .post(
            "/v1/receipts",
            Some(STAFF),
            json!({"delivery_id": "D-78", "lines": [{"sku": "SKU-1001", "qty": 0}]}),
        )
        .await;
    assert_eq!(a.status, 400);
    assert!(
        a.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("lines[0].qty")
    );
}

/// A tag seen in a zone over the last minute.
fn tag(epc: &str, sku: Option<&str>, zone: &str) -> NewEvent {
    let now = now_millis();
    NewEvent::new(
        now,
        "rfid-1",
        EventBody::TagArrived(TagTransition {
            epc: epc.into(),
            gtin: sku.map(|_| GTIN14.into()),
            serial: None,
            sku: sku.map(String::from),
            zone: zone.into(),
            from_zone: None,
            reader: "rfid-1".into(),
            antenna: Some(1),
            rssi_dbm: Some(-50),
            first_seen: now - chrono::Duration::seconds(30),
            last_seen: now,
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfid_count_reports_and_applies() {
    let api = Api::start().await;
    let epcs: Vec<String> = (1..=3)
        .map(|serial| storegate::domain::sgtin::encode_sgtin96(GTIN14, 5, 1, serial).unwrap())
        .collect();
    let mut events: Vec<NewEvent> = epcs
        .iter()
        .map(|e| tag(e, Some("SKU-1001"), "salesfloor"))
        .collect();
    events.push(tag("E2801160600002", None, "salesfloor"));
    events.push(tag("E2801160600003", Some("SKU-2002"), "backroom"));
    api.append(events).await;

    let window = json!({
        "zone": "salesfloor",
        "from": format_ts(&(Utc::now() - chrono::Duration::minutes(5))),
        "to": format_ts(&(Utc::now() + chrono::Duration::minutes(1))),
    });
    let a = api
        .post("/v1/counts/rfid", Some(STAFF), window.clone())
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        a.body,
        json!({"zone": "salesfloor",
               "lines": [{"sku": "SKU-1001", "expected": 24, "counted": 3, "delta": -21}],
               "unknown_epcs": ["E2801160600002"],
               "expected_unseen": ["SKU-2002"]})
    );
    assert_eq!(
        api.get("/v1/skus/SKU-1001", Some(STAFF)).await.body["on_hand"],
        24
    );

    let mut apply = window;
    apply["apply"] = json!(true);
    let a = api.post("/v1/counts/rfid", Some(STAFF), apply).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let session = a.body["session_id"].as_str().unwrap();
    assert!(session.starts_with("C-"));
    assert_eq!(
        a.body["lines"],
        json!([{"sku": "SKU-1001", "expected": 24, "counted": 3, "delta": -21}])
    );
    let sku = api.get("/v1/skus/SKU-1001", Some(STAFF)).await.body;
    assert_eq!(sku["on_hand"], 3);
    assert_eq!(sku["last_count"]["method"], "rfid");
    assert_eq!(sku["last_count"]["session_id"], session);
    // SKUs not seen in the zone keep their stock.
    assert_eq!(
        api.get("/v1/skus/SKU-2002", Some(STAFF)).await.body["on_hand"],
        5
    );

    let a = api
        .post(
            "/v1/counts/rfid",
            Some(STAFF),
            json!({"zone": "salesfloor", "from": "yesterday", "to": "2026-01-01T00:00:00.000Z"}),
        )
        .await;
    assert_eq!(a.status, 400);
    assert!(
        a.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("from"),
        "{}",
        a.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_snapshot_for_central() {
    let api = Api::start().await;
    api.store.health.register("rfid-1", "impinj", "http");
    let a = api.get("/v1/state", Some(CENTRAL)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let s = &a.body;
    assert_eq!(s["store_id"], "store-0042");
    assert_eq!(s["agent_version"], storegate::VERSION);
    assert_eq!(s["central"], "offline");
    assert_eq!(s["head_seq"], 2);
    assert_eq!(s["oldest_seq"], 1);
    assert_eq!(s["sync"]["last_acked_seq"], 0);
    assert_eq!(s["sync"]["price_version"], 57);
    assert_eq!(s["sync"]["backlog"], 2);
    assert_eq!(
        s["skus"],
        json!([{"sku": "SKU-1001", "on_hand": 24, "reserved": 0, "available": 24, "price_minor": 199, "currency": "EUR"},
               {"sku": "SKU-2002", "on_hand": 5, "reserved": 0, "available": 5, "price_minor": 1099, "currency": "EUR"}])
    );
    assert_eq!(s["labels"], json!({"pending": 1, "ok": 0, "failed": 0}));
    assert_eq!(s["alerts"], json!([]));
    assert_eq!(s["devices"][0]["id"], "rfid-1");
    assert_eq!(s["devices"][0]["up"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_pages_and_trimming() {
    let api = Api::start().await;
    for i in 1..=6 {
        let a = api
            .post(
                "/v1/adjustments",
                Some(STAFF),
                json!({"sku": "SKU-2002", "delta": i, "reason": "manual"}),
            )
            .await;
        assert_eq!(a.status, 200);
    }
    let journal = serde_json::to_value(api.store.events()).unwrap();
    assert_eq!(journal.as_array().unwrap().len(), 8);

    // Everything, in the push API's shape.
    let a = api.get("/v1/events", Some(CENTRAL)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        a.body,
        json!({"events": journal, "next_after": 8, "oldest_seq": 1})
    );
    let first = &a.body["events"][0];
    assert_eq!(first["seq"], 1);
    assert_eq!(first["device"], "test");
    assert_eq!(first["kind"], "receipt");
    assert_eq!(
        first["data"],
        json!({"delivery_id": "D-1", "sku": "SKU-1001", "qty": 24})
    );
    assert!(first["ts"].as_str().unwrap().ends_with('Z'));

    // Pages.
    let a = api.get("/v1/events?after=2&limit=3", Some(CENTRAL)).await;
    let seqs: Vec<i64> = a.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, [3, 4, 5]);
    assert_eq!(a.body["next_after"], 5);
    let a = api.get("/v1/events?after=8", Some(CENTRAL)).await;
    assert_eq!(
        a.body,
        json!({"events": [], "next_after": 8, "oldest_seq": 1})
    );

    // Limits.
    for bad in [
        "limit=0",
        "limit=10001",
        "limit=-1",
        "limit=many",
        "after=-3",
    ] {
        let a = api.get(&format!("/v1/events?{bad}"), Some(CENTRAL)).await;
        assert_eq!(a.status, 400, "{bad}");
        assert_eq!(error_code(&a), "bad_request");
    }
    let a = api.get("/v1/events?limit=10000", Some(CENTRAL)).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["events"].as_array().unwrap().len(), 8);

    // After trimming, the oldest kept seq says what is gone.
    api.store
        .writer
        .transact(|w| {
            w.conn()
                .execute("DELETE FROM journal WHERE seq <= 5", [])
                .map_err(|source| storegate::db::StoreError::Sqlite {
                    context: "trimming",
                    source,
                })
        })
        .await
        .unwrap();
    let a = api.get("/v1/events?after=0&limit=2", Some(CENTRAL)).await;
    assert_eq!(a.body["oldest_seq"], 6);
    assert_eq!(a.body["events"][0]["seq"], 6);
    assert_eq!(a.body["events"][1]["seq"], 7);
    assert_eq!(a.body["next_after"], 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_roles() {
    let api = Api::start().await;

    // No token, unknown token, wrong scheme: 401 with the error body.
    for token in [None, Some("nope")] {
        let a = api.get("/v1/skus/SKU-1001", token).await;
        assert_eq!(a.status, 401, "{token:?}");
        assert_eq!(error_code(&a), "unauthorized");
    }
    let response = api
        .http
        .get(format!("{}/v1/skus/SKU-1001", api.base))
        .header("authorization", format!("Basic {STAFF}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");

    // Staff may not do central's pull; central may do staff's lookups.
    for path in ["/v1/state", "/v1/events"] {
        let a = api.get(path, Some(STAFF)).await;
        assert_eq!(a.status, 403, "{path}");
        assert_eq!(error_code(&a), "forbidden");
        assert_eq!(api.get(path, Some("nope")).await.status, 401);
    }
    assert_eq!(
        api.get("/v1/skus/SKU-1001", Some(CENTRAL)).await.status,
        200
    );
    assert_eq!(api.get("/v1/alerts", Some(CENTRAL)).await.status, 200);

    // Rotating the token file on disk: the new token works at once, the
    // old one no longer does.
    std::fs::write(&api.staff_file, "# rotated\nstaff-token-rotated\n").unwrap();
    assert_eq!(
        api.get("/v1/skus/SKU-1001", Some("staff-token-rotated"))
            .await
            .status,
        200
    );
    assert_eq!(api.get("/v1/skus/SKU-1001", Some(STAFF)).await.status, 401);
    // Removing it disables the role.
    std::fs::remove_file(&api.staff_file).unwrap();
    assert_eq!(
        api.get("/v1/skus/SKU-1001", Some("staff-token-rotated"))
            .await
            .status,
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_error_bodies() {
    let api = Api::start().await;

    // A wrong type names the field.
    let a = api
        .post(
            "/v1/counts",
            Some(STAFF),
            json!({"zone": "A1", "lines": [{"sku": "SKU-1001", "counted": "x"}]}),
        )
        .await;
    assert_eq!(a.status, 400);
    assert_eq!(error_code(&a), "invalid_json");
    let message = a.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("lines[0].counted: invalid type: string \"x\", expected i64"),
        "{message}"
    );
    // A missing field, and text that is not JSON at all.
    let a = api
        .post(
            "/v1/adjustments",
            Some(STAFF),
            json!({"sku": "SKU-1001", "delta": 1}),
        )
        .await;
    assert_eq!(a.status, 400);
    assert!(
        a.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("missing field `reason`"),
        "{}",
        a.body
    );
    let a = api
        .post_raw("/v1/receipts", Some(STAFF), b"{\"delivery_id\": ".to_vec())
        .await;
    assert_eq!(a.status, 400);
    assert_eq!(error_code(&a), "invalid_json");

    // Over 1 MiB: 413.
    let mut big = b"{\"zone\":\"".to_vec();
    big.resize(big.len() + 2 * 1024 * 1024, b'a');
    big.extend_from_slice(b"\",\"lines\":[]}");
    let a = api.post_raw("/v1/counts", Some(STAFF), big).await;
    assert_eq!(a.status, 413);
    assert_eq!(error_code(&a), "payload_too_large");
    // Just under the limit is read (and then judged on its content).
    // (Padded with whitespace: a zone that long is refused on its own.)
    let mut fits = b"{\"zone\":\"A1\",".to_vec();
    fits.resize(1000 * 1024, b' ');
    fits.extend_from_slice(b"\"lines\":[]}");
    let a = api.post_raw("/v1/counts", Some(STAFF), fits).await;
    assert_eq!(a.status, 400);
    assert!(
        a.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("lines must not be empty")
    );

    // Unknown route, wrong method.
    let a = api.get("/v1/nothing", Some(STAFF)).await;
    assert_eq!(a.status, 404);
    assert_eq!(error_code(&a), "not_found");
    let a = api.get("/nothing", None).await;
    assert_eq!(a.status, 404);
    assert_eq!(error_code(&a), "not_found");
    let a = api.get("/v1/counts", Some(STAFF)).await;
    assert_eq!(a.status, 405);
    assert_eq!(error_code(&a), "method_not_allowed");
    let a = api.post("/healthz", None, json!({})).await;
    assert_eq!(a.status, 405);
    assert_eq!(error_code(&a), "method_not_allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stops_on_shutdown() {
    let mut api = Api::start().await;
    assert_eq!(api.get("/healthz", None).await.status, 200);
    api.store.stop();
    let server = std::mem::replace(&mut api.server, tokio::spawn(async { Ok(()) }));
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the API stops on shutdown")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_requests_time_out_with_503() {
    let api = Api::start_with(|s| {
        s.request_timeout = Duration::from_millis(100);
        s.metrics = Arc::new(|| {
            std::thread::sleep(Duration::from_millis(800));
            String::new()
        });
    })
    .await;
    let a = api.get("/metrics", None).await;
    assert_eq!(a.status, 503);
    assert_eq!(error_code(&a), "timeout");
    // Other requests are not held up.
    assert_eq!(api.get("/healthz", None).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_handler_is_a_500_with_error_body() {
    let api = Api::start_with(|s| s.metrics = Arc::new(|| panic!("metrics broke"))).await;
    let a = api.get("/metrics", None).await;
    assert_eq!(a.status, 500);
    assert_eq!(error_code(&a), "internal");
    assert_eq!(api.get("/healthz", None).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_database_degrades_health() {
    let api = Api::start_with(|s| s.db_path = PathBuf::from("/nonexistent/storegate.db")).await;
    let a = api.get("/healthz", None).await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.body,
        json!({"status": "degraded", "reasons": ["the database cannot be read"], "db": "error",
               "devices": {"up": 0, "down": 0}, "central": "offline", "backlog": null})
    );
    let a = api.get("/v1/skus/SKU-1001", Some(STAFF)).await;
    assert_eq!(a.status, 500);
    assert_eq!(error_code(&a), "internal");
}
