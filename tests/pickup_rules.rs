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

/// Picked items of an order central cancelled become a staff task to put
/// them back; marking that task done records the return on the order, as
/// `POST /v1/orders/{id}/returned` does, and the other way round the
/// order's `returned` closes its task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_orders_picked_items_become_a_put_back_task() {
    let api = Api::start().await;
    let day = chrono::Duration::days(1);
    let one = json!([{"sku": "SKU-1001", "qty": 1}]);
    let pull: OrdersPull = serde_json::from_value(json!({"version": 1, "orders": [
        order("WEB-20", CODE_1, day, one.clone()),
        order("WEB-21", CODE_2, day, one.clone()),
    ]}))
    .unwrap();
    let cancel: OrdersPull = serde_json::from_value(
        json!({"version": 2, "orders": [], "cancelled": ["WEB-20", "WEB-21"]}),
    )
    .unwrap();
    api.store
        .writer
        .transact(move |w| pickup::apply_pull(w, &pull, Utc::now()))
        .await
        .unwrap();
    for id in ["WEB-20", "WEB-21"] {
        let path = format!("/v1/orders/{id}/scan");
        let a = api.post(&path, Some(STAFF), json!({"code": GTIN14})).await;
        assert_eq!(a.status, 200, "{}", a.body);
    }
    api.store
        .writer
        .transact(move |w| pickup::apply_pull(w, &cancel, Utc::now()))
        .await
        .unwrap();

    let tasks = api.get("/v1/tasks?open=true", Some(STAFF)).await.body;
    let put_back: Vec<&serde_json::Value> = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["task"] == "return_to_shelf")
        .collect();
    assert_eq!(put_back.len(), 2, "{tasks}");
    let task_of = |order: &str| {
        put_back
            .iter()
            .find(|t| t["subject"] == order)
            .unwrap_or_else(|| panic!("no task for {order} in {tasks}"))["task_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (t20, t21) = (task_of("WEB-20"), task_of("WEB-21"));
    assert!(
        put_back[0]["message"]
            .as_str()
            .unwrap()
            .contains("1 × SKU-1001 back on the shelf"),
        "{tasks}"
    );

    // The task's done records the return on the order.
    let done = api
        .post(
            &format!("/v1/tasks/{t20}/done"),
            Some(STAFF),
            json!({"by": "anna"}),
        )
        .await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(done.body["task"]["state"], "done", "{}", done.body);
    assert_eq!(done.body["task"]["check_at"], serde_json::Value::Null);
    assert_eq!(done.body["task"]["confirmed_by"], "order_returned");
    let order20 = api.get("/v1/orders/WEB-20", Some(STAFF)).await.body;
    assert_eq!(order20["return_open"], false, "{order20}");

    // The order's `returned` closes its task.
    let returned = api
        .post("/v1/orders/WEB-21/returned", Some(STAFF), json!({}))
        .await;
    assert_eq!(returned.status, 200, "{}", returned.body);
    let task21 = api.get(&format!("/v1/tasks/{t21}"), Some(STAFF)).await.body;
    assert_eq!(
        (
            task21["task"]["state"].clone(),
            task21["task"]["confirmed_by"].clone()
        ),
        (json!("done"), json!("order_returned")),
        "{task21}"
    );
    let alerts = api.get("/v1/alerts?open=true", Some(STAFF)).await.body;
    assert!(!alerts.to_string().contains("pickup_return"), "{alerts}");

    // Retention: 30 days past its deadline WEB-20 loses its lines, and
    // its task, closed as long ago, goes; WEB-21 (recent) keeps both.
    // WEB-20's row stays, so central sending it again changes nothing.
    let month = 31 * 86_400_000_i64;
    let t20_sql = t20.clone();
    let lines_left = api
        .store
        .writer
        .transact(move |w| {
            let old = Utc::now().timestamp_millis() - month;
            w.conn()
                .execute(
                    "UPDATE pickup_orders SET expires_ms = ?1 WHERE order_id = 'WEB-20'",
                    [old],
                )
                .unwrap();
            w.conn()
                .execute(
                    "UPDATE tasks SET updated_ms = ?1 WHERE task_id = ?2",
                    rusqlite::params![old, t20_sql],
                )
                .unwrap();
            let removed = storegate::retention::forget_finished_work(w)?;
            let left: Vec<(String, i64)> = w
                .conn()
                .prepare("SELECT order_id, COUNT(*) FROM pickup_lines GROUP BY order_id")
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            Ok((removed, left))
        })
        .await
        .unwrap();
    assert_eq!(lines_left.0, 2, "one line and one task removed");
    assert_eq!(lines_left.1, [("WEB-21".to_string(), 1)]);
    let gone = api.get(&format!("/v1/tasks/{t20}"), Some(STAFF)).await;
    assert_eq!(gone.status, 404, "{}", gone.body);
    let kept = api.get(&format!("/v1/tasks/{t21}"), Some(STAFF)).await;
    assert_eq!(kept.status, 200, "{}", kept.body);
    let again: OrdersPull = serde_json::from_value(json!({"version": 3, "orders": [
        order("WEB-20", CODE_1, day, one.clone()),
    ]}))
    .unwrap();
    let outcome = api
        .store
        .writer
        .transact(move |w| pickup::apply_pull(w, &again, Utc::now()))
        .await
        .unwrap();
    assert!(outcome.reserved.is_empty(), "{outcome:?}");
}
