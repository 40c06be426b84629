//! What the local API refuses: quantities beyond the journal's bounds,
//! SKUs that are unknown, too long or hold control characters, and heads
//! the HTTP layer cannot parse. Every refusal is a 4xx with the JSON error
//! body naming the field, and nothing reaches the journal (which is what
//! the pusher sends to central).

mod common;

use std::time::Duration;

use common::api::{Api, GTIN13, STAFF, error_code};
use serde_json::{Value, json};
use storegate::event::bounds::MAX_QTY;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// SKUs with a stock row.
async fn stocked(api: &Api) -> Vec<String> {
    let db = api.store.db.clone();
    tokio::task::spawn_blocking(move || {
        let conn = storegate::db::open_read(&db).unwrap();
        let mut st = conn.prepare("SELECT sku FROM stock ORDER BY sku").unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_quantities_and_skus_are_refused_naming_the_field() {
    let api = Api::start().await;
    let journaled = api.store.events().len();
    let stock = stocked(&api).await;
    let long_sku = "S".repeat(10_000);
    let over = MAX_QTY + 1;
    // (endpoint, body, status, error code, text the message starts with)
    let cases: Vec<(&str, Value, u16, &str, &str)> = vec![
        (
            "/v1/adjustments",
            json!({"sku": "SKU-1001", "delta": i64::MIN, "reason": "x"}),
            400,
            "bad_request",
            "delta -9223372036854775808",
        ),
        (
            "/v1/adjustments",
            json!({"sku": "SKU-1001", "delta": i64::MAX, "reason": "x"}),
            400,
            "bad_request",
            "delta 9223372036854775807",
        ),
        (
            "/v1/adjustments",
            json!({"sku": "SKU-1001", "delta": over, "reason": "x"}),
            400,
            "bad_request",
            "delta 1000001",
        ),
        (
            "/v1/adjustments",
            json!({"sku": "NOPE-1", "delta": 1, "reason": "x"}),
            422,
            "unknown_sku",
            "sku: \"NOPE-1\"",
        ),
        (
            "/v1/adjustments",
            json!({"sku": GTIN13, "delta": 1, "reason": "x"}),
            422,
            "unknown_sku",
            "sku: \"4006381333931\" is not in the catalog",
        ),
        (
            "/v1/adjustments",
            json!({"sku": "SKU\u{0}1001", "delta": 1, "reason": "x"}),
            400,
            "bad_request",
            "sku contains control characters",
        ),
        (
            "/v1/adjustments",
            json!({"sku": long_sku, "delta": 1, "reason": "x", "new_item": true}),
            400,
            "bad_request",
            "sku is 10000 bytes long",
        ),
        (
            "/v1/adjustments",
            json!({"sku": "SKU-1001", "delta": 1, "reason": "r".repeat(5000)}),
            400,
            "bad_request",
            "reason is 5000 bytes long",
        ),
        (
            "/v1/counts",
            json!({"zone": "A1", "lines": [{"sku": "SKU-1001", "counted": i64::MAX}], "apply": true}),
            400,
            "bad_request",
            "lines[0].counted 9223372036854775807",
        ),
        (
            "/v1/counts",
            json!({"zone": "A1", "lines": [{"sku": "SKU-1001", "counted": 1}, {"sku": "NOPE-2", "counted": 3}], "apply": true}),
            422,
            "unknown_sku",
            "lines[1].sku: \"NOPE-2\"",
        ),
        (
            "/v1/counts",
            json!({"zone": "A1", "lines": [{"sku": "A\u{0}", "counted": 1}]}),
            400,
            "bad_request",
            "lines[0].sku contains control characters",
        ),
        (
            "/v1/counts",
            json!({"zone": "Z".repeat(10_000), "lines": [{"sku": "SKU-1001", "counted": 1}]}),
            400,
            "bad_request",
            "zone is 10000 bytes long",
        ),
        (
            "/v1/receipts",
            json!({"delivery_id": "D-9", "lines": [{"sku": "SKU-1001", "qty": i64::MAX}]}),
            400,
            "bad_request",
            "lines[0].qty 9223372036854775807",
        ),
        (
            "/v1/receipts",
            json!({"delivery_id": "D-9", "lines": [{"sku": "SKU-1001", "qty": 1}, {"sku": "NOPE-3", "qty": 1}]}),
            422,
            "unknown_sku",
            "lines[1].sku: \"NOPE-3\"",
        ),
        (
            "/v1/receipts",
            json!({"delivery_id": "D-9", "lines": [{"sku": long_sku, "qty": 1, "new_item": true}]}),
            400,
            "bad_request",
            "lines[0].sku is 10000 bytes long",
        ),
        (
            "/v1/receipts",
            json!({"delivery_id": "D\u{0}9", "lines": [{"sku": "SKU-1001", "qty": 1}]}),
            400,
            "bad_request",
            "delivery_id contains control characters",
        ),
    ];
    for (path, body, status, code, start) in cases {
        let a = api.post(path, Some(STAFF), body.clone()).await;
        let shown: String = body.to_string().chars().take(160).collect();
        assert_eq!(a.status, status, "{path} {shown}: {}", a.body);
        assert_eq!(error_code(&a), code, "{path} {shown}: {}", a.body);
        let message = a.body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(start), "{path} {shown}: {message}");
    }
    // A number beyond i64 is refused by the JSON decoder, naming the field.
    let a = api
        .post_raw(
            "/v1/receipts",
            Some(STAFF),
            br#"{"delivery_id":"D-9","lines":[{"sku":"SKU-1001","qty":99999999999999999999}]}"#
                .to_vec(),
        )
        .await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert_eq!(error_code(&a), "invalid_json");
    assert!(
        a.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("lines[0].qty: invalid type"),
        "{}",
        a.body
    );

    assert_eq!(api.store.events().len(), journaled, "nothing is journaled");
    assert_eq!(stocked(&api).await, stock, "no stock row is created");
    // The GTIN hint names the SKU to send instead.
    let a = api
        .post(
            "/v1/adjustments",
            Some(STAFF),
            json!({"sku": GTIN13, "delta": 1, "reason": "x"}),
        )
        .await;
    assert!(
        a.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("it is a GTIN of \"SKU-1001\""),
        "{}",
        a.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_item_is_booked_when_the_request_says_so() {
    let api = Api::start().await;
    let without = json!({"delivery_id": "D-10", "lines": [{"sku": "NEW-1", "qty": 4}]});
    let a = api.post("/v1/receipts", Some(STAFF), without).await;
    assert_eq!(a.status, 422, "{}", a.body);
    let a = api
        .post(
            "/v1/receipts",
            Some(STAFF),
            json!({"delivery_id": "D-10", "lines": [{"sku": "SKU-1001", "qty": MAX_QTY},
                                                    {"sku": "NEW-1", "qty": 4, "new_item": true}]}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    // Stocked now, so known without the flag.
    let a = api
        .post(
            "/v1/adjustments",
            Some(STAFF),
            json!({"sku": "NEW-1", "delta": -1, "reason": "damage"}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = api
        .post(
            "/v1/counts",
            Some(STAFF),
            json!({"zone": "A1", "lines": [{"sku": "NEW-2", "counted": 2, "new_item": true}], "apply": true}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        stocked(&api).await,
        ["NEW-1", "NEW-2", "SKU-1001", "SKU-2002"]
    );
    assert_eq!(
        api.get("/v1/skus/NEW-1", Some(STAFF)).await.body["on_hand"],
        3
    );
}

/// Send `request` on a fresh connection and read until the server closes
/// it: (status, content type, JSON body).
async fn raw_exchange(api: &Api, request: &[u8]) -> (u16, String, Value) {
    let addr = api.base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before it has read everything.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer));
    let _ = read
        .await
        .expect("the server closes the connection after a parse error");
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let status = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    let json = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {text:?}"));
    (status, content_type, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_layer_errors_have_json_bodies() {
    let api = Api::start().await;
    // A header line without a colon: hyper's 400.
    let (status, content_type, body) = raw_exchange(
        &api,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(content_type, "application/json");
    assert_eq!(body["error"]["code"], "bad_request", "{body}");

    // Too many header lines, and one header too large: hyper's 431.
    let mut many = b"GET /healthz HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..150 {
        many.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let mut large = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    large.resize(large.len() + 64 * 1024, b'a');
    large.extend_from_slice(b"\r\n\r\n");
    for request in [many, large] {
        let (status, content_type, body) = raw_exchange(&api, &request).await;
        assert_eq!(status, 431);
        assert_eq!(content_type, "application/json");
        assert_eq!(body["error"]["code"], "headers_too_large", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("send fewer or shorter headers"),
            "{message}"
        );
    }
    // The server goes on.
    assert_eq!(api.get("/healthz", None).await.status, 200);
}
