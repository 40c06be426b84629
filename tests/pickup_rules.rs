//! The click-and-collect rules on the library's real API server over a
//! real store: what a pull takes and refuses, and how the pick refuses.

mod common;

use chrono::Utc;
use common::api::{Api, GTIN14, STAFF, error_code};
use common::pickup::{CODE_1, CODE_2, CODE_3, epc, order};
use serde_json::json;
use storegate::domain::pickup::{self, OrdersPull};

/// The pull's rules and the pick's refusals against the library's real
/// API server: invalid orders are refused one by one (the reason never
/// carries the code) while the others are reserved; a tagged item cannot
/// go into two orders; codes that are no product are refused; a handover
/// before the pick is refused; a resent pick answers the same pick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulled_orders_are_checked_and_scans_refused_with_reasons() {
    let api = Api::start().await;
    let day = chrono::Duration::days(1);
    let one = json!([{"sku": "SKU-1001", "qty": 1}]);
    let mut cancelled_unknown = order("WEB-13", CODE_3, day, one.clone());
    cancelled_unknown["status"] = json!("cancelled");
    let pull: OrdersPull = serde_json::from_value(json!({"version": 3, "orders": [
        order("WEB-10", CODE_1, day, one.clone()),
        order("WEB-11", CODE_2, day, json!([{"sku": "SKU-1001", "qty": 1}, {"sku": "SKU-1001", "qty": 2}])),
        order("WEB-12", " ", day, one.clone()),
        cancelled_unknown,
        order("WEB-14", CODE_2, day, one.clone()),
    ]}))
    .unwrap();
    let outcome = api
        .store
        .writer
        .transact(move |w| pickup::apply_pull(w, &pull, Utc::now()))
        .await
        .unwrap();
    assert_eq!(outcome.reserved, ["WEB-10", "WEB-14"]);
    let refused: Vec<&str> = outcome.refused.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(refused, ["WEB-11", "WEB-12"], "{:?}", outcome.refused);
    assert!(
        outcome.refused[0].1.contains("appears more than once"),
        "{:?}",
        outcome.refused
    );
    assert!(!format!("{outcome:?}").contains("QX-"), "{outcome:?}");
    let sku = api.get("/v1/skus/SKU-1001", Some(STAFF)).await.body;
    assert_eq!(
        (sku["reserved"].clone(), sku["available"].clone()),
        (json!(2), json!(22)),
        "{sku}"
    );

    let scan = |id: &str, code: String| {
        let path = format!("/v1/orders/{id}/scan");
        let api = &api;
        async move { api.post(&path, Some(STAFF), json!({ "code": code })).await }
    };
    let tag = epc(GTIN14, 9);
    let a = scan("WEB-10", tag.clone()).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = scan("WEB-14", tag.to_lowercase()).await;
    assert_eq!(
        (a.status, error_code(&a)),
        (409, "tag_in_other_order"),
        "{}",
        a.body
    );
    for code in ["SKU-1001", "hello", "00614141000012"] {
        let a = scan("WEB-14", code.into()).await;
        assert_eq!(
            (a.status, error_code(&a)),
            (422, "unknown_code"),
            "{code}: {}",
            a.body
        );
    }
    let a = scan("WEB-99", GTIN14.into()).await;
    assert_eq!(
        (a.status, error_code(&a)),
        (404, "unknown_order"),
        "{}",
        a.body
    );
    let a = api
        .post(
            "/v1/orders/WEB-14/handover",
            Some(STAFF),
            json!({"pickup_code": CODE_2}),
        )
        .await;
    assert_eq!(
        (a.status, error_code(&a)),
        (409, "order_state"),
        "{}",
        a.body
    );
    assert!(
        a.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("finish the pick first")
    );
    for already in [false, true] {
        let a = api
            .post("/v1/orders/WEB-10/picked", Some(STAFF), json!({}))
            .await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.body["already_picked"], already, "{}", a.body);
    }
    // Guessing is stopped: after 5 wrong codes even the right one waits.
    for attempt in 1..=6 {
        let code = if attempt == 6 { CODE_1 } else { "0000" };
        let a = api
            .post(
                "/v1/orders/WEB-10/handover",
                Some(STAFF),
                json!({"pickup_code": code}),
            )
            .await;
        let want = if attempt == 6 {
            (429, "too_many_wrong_codes")
        } else {
            (422, "wrong_pickup_code")
        };
        assert_eq!(
            (a.status, error_code(&a)),
            want,
            "attempt {attempt}: {}",
            a.body
        );
    }
    assert_eq!(
        api.get("/v1/orders/WEB-10", Some(STAFF)).await.body["wrong_codes"],
        5
    );
    let picked = api
        .store
        .events()
        .into_iter()
        .filter(|e| e.body.kind() == "order_picked")
        .count();
    assert_eq!(picked, 1, "a resent pick is journaled once");
}
