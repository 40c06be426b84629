//! Binding shelf labels to items (issue 18 item 4): the API's bind and
//! unbind over a real loopback listener, journaled and priced at once;
//! which binding wins against central's price book; and the binding's way
//! to the reference central and back in its next book.

mod common;

use std::sync::Arc;

use common::{Store, price_pull as pull, wait_for_async};
use serde_json::json;
use storegate::domain::labels;
use storegate::event::EventBody;

// ---------------------------------------------------------------------------
// Binding labels to items (POST /v1/labels/{id}/bind, /unbind)
// ---------------------------------------------------------------------------

/// The `label_bound` and `label_unbound` events journaled, as `(kind, data)`.
fn bindings(store: &Store) -> Vec<(String, serde_json::Value)> {
    store
        .events()
        .iter()
        .filter(|e| matches!(e.body.kind(), "label_bound" | "label_unbound"))
        .map(|e| {
            let data = serde_json::from_str(&e.body.data_json()).unwrap();
            (e.body.kind().to_string(), data)
        })
        .collect()
}

/// The pending update of `label`, if one is due.
async fn due_update(store: &Store, label: &str) -> Option<storegate::codecs::esl::LabelUpdate> {
    let due = store
        .writer
        .transact(|w| labels::due(w.conn(), chrono::Utc::now()))
        .await
        .unwrap();
    due.into_iter().find(|u| u.label_id == label)
}

/// `(sku, bound_by)` of a label in the labels table.
fn bound(store: &Store, label: &str) -> (String, String) {
    let conn = storegate::db::open_read(&store.db).unwrap();
    conn.query_row(
        "SELECT sku, bound_by FROM labels WHERE label_id = ?1",
        [label],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_bind_a_label_by_barcode_and_its_price_is_queued_at_once() {
    use common::api::{Api, GTIN13, STAFF, error_code};
    let api = Api::start().await;
    let new_label = "0000021a4b3c5d99"; // scanned in lower case

    // Scan the label, then the item: the label is bound and its price
    // is pending in the same commit.
    let a = api
        .post(
            &format!("/v1/labels/{new_label}/bind"),
            Some(STAFF),
            json!({"gtin": GTIN13}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["label_id"], "0000021A4B3C5D99");
    assert_eq!(a.body["sku"], "SKU-1001");
    assert_eq!(a.body["name"], "Oat milk 1L");
    assert_eq!(a.body["state"], "pending");
    assert_eq!(a.body["bound_by"], "store");
    let update = due_update(&api.store, "0000021A4B3C5D99")
        .await
        .expect("the new binding's update is due at once");
    assert_eq!(update.sku, "SKU-1001");
    assert_eq!(a.body["price_text"], json!(update.price_text));
    assert_eq!(
        bindings(&api.store),
        [(
            "label_bound".to_string(),
            json!({"label_id": "0000021A4B3C5D99", "sku": "SKU-1001", "gtin": GTIN13})
        )]
    );

    // Moved to another item, by SKU: the update follows.
    let a = api
        .post(
            "/v1/labels/0000021A4B3C5D99/bind",
            Some(STAFF),
            json!({"sku": "SKU-2002"}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        (a.body["sku"].as_str(), a.body["price_minor"].as_i64()),
        (Some("SKU-2002"), Some(1099))
    );
    let update = due_update(&api.store, "0000021A4B3C5D99").await.unwrap();
    assert_eq!(
        (update.sku.as_str(), update.price_minor),
        ("SKU-2002", 1099)
    );
    assert_eq!(
        bindings(&api.store)[1].1,
        json!({"label_id": "0000021A4B3C5D99", "sku": "SKU-2002", "previous_sku": "SKU-1001"})
    );

    // Unbound: nothing more is sent to it.
    let a = api
        .post("/v1/labels/0000021A4B3C5D99/unbind", Some(STAFF), json!({}))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        (a.body["state"].as_str(), &a.body["sku"]),
        (Some("unbound"), &json!(null))
    );
    assert!(due_update(&api.store, "0000021A4B3C5D99").await.is_none());
    assert_eq!(
        bindings(&api.store)[2],
        (
            "label_unbound".to_string(),
            json!({"label_id": "0000021A4B3C5D99", "sku": "SKU-2002"})
        )
    );

    // Bad requests say what was wrong and journal nothing.
    for (body, status, code) in [
        (json!({}), 400, "bad_request"),
        (
            json!({"gtin": GTIN13, "sku": "SKU-1001"}),
            400,
            "bad_request",
        ),
        (json!({"gtin": "4000000000000"}), 404, "unknown_item"),
        (json!({"sku": "SKU-9999"}), 404, "unknown_item"),
        (json!({"barcode": GTIN13}), 400, "invalid_json"),
    ] {
        let a = api
            .post(
                "/v1/labels/0000021A4B3C5D99/bind",
                Some(STAFF),
                body.clone(),
            )
            .await;
        assert_eq!(
            (a.status, error_code(&a)),
            (status, code),
            "{body}: {}",
            a.body
        );
        assert!(!a.body["error"]["message"].as_str().unwrap().is_empty());
    }
    let a = api
        .post("/v1/labels/0000021A4B3C5D99/unbind", Some(STAFF), json!({}))
        .await;
    assert_eq!((a.status, error_code(&a)), (409, "not_bound"), "{}", a.body);
    let a = api
        .post(
            "/v1/labels/0000021A4B3C5D99/bind",
            None,
            json!({"sku": "SKU-1001"}),
        )
        .await;
    assert_eq!(a.status, 401);
    assert_eq!(bindings(&api.store).len(), 3);
}

/// Central's book and the store's bindings: a store binding stands while
/// central's book says the same as before about the label, and gives way
/// when the book puts the label under another SKU.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_binding_stands_until_centrals_book_moves_the_label() {
    use common::api::{Api, STAFF};
    let api = Api::start().await;
    // The seeded book lists this label under SKU-1001.
    let label = "0000021A4B3C";
    assert_eq!(
        bound(&api.store, label),
        ("SKU-1001".into(), "central".into())
    );
    let a = api
        .post(
            &format!("/v1/labels/{label}/bind"),
            Some(STAFF),
            json!({"sku": "SKU-2002"}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        bound(&api.store, label),
        ("SKU-2002".into(), "store".into())
    );

    // A new price for SKU-1001, its labels as before: the binding stands.
    let oat = |price: i64, labels: serde_json::Value| {
        json!({"sku": "SKU-1001", "name": "Oat milk 1L", "price_minor": price, "currency": "EUR",
               "effective_from": "2020-01-01T00:00:00Z", "labels": labels})
    };
    pull(&api.store, 58, json!([oat(259, json!([label]))])).await;
    assert_eq!(
        bound(&api.store, label),
        ("SKU-2002".into(), "store".into())
    );
    // Central stops listing it under SKU-1001: still the store's word.
    pull(&api.store, 59, json!([oat(259, json!([]))])).await;
    assert_eq!(
        bound(&api.store, label),
        ("SKU-2002".into(), "store".into())
    );

    // Central puts it under a SKU it did not list it under before: central wins,
    // and the label gets that SKU's price.
    pull(
        &api.store,
        60,
        json!([{"sku": "SKU-3003", "name": "Butter", "price_minor": 219,
        "currency": "EUR", "effective_from": "2020-01-01T00:00:00Z", "labels": [label]}]),
    )
    .await;
    assert_eq!(
        bound(&api.store, label),
        ("SKU-3003".into(), "central".into())
    );
    let update = due_update(&api.store, label).await.unwrap();
    assert_eq!((update.sku.as_str(), update.price_minor), ("SKU-3003", 219));
}

/// A binding reaches the reference central with the pushed journal; its
/// book moves the label, and the next pull agrees with the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binding_is_synced_and_centrals_next_book_agrees() {
    use std::sync::Mutex;
    use storegate::config::CentralConfig;
    use storegate::event::{LabelBound, NewEvent};
    use storegate::sim::central::Central as CentralSim;
    use storegate::sync::{self, Central};

    const LABEL: &str = "0000021A4B3C0020";
    let store = Store::new();
    let sim = CentralSim::default();
    let item = |sku: &str, labels: serde_json::Value| {
        json!({"sku": sku, "name": sku, "price_minor": 100, "currency": "EUR",
               "effective_from": "2020-01-01T00:00:00Z", "labels": labels})
    };
    sim.set_price(item("SKU-1001", json!([LABEL])));
    sim.set_price(item("SKU-2002", json!([])));
    let (addr, _) = sim.clone().spawn("127.0.0.1:0").await.unwrap();
    let config = CentralConfig {
        max_backoff_s: 1,
        ..CentralConfig::http(format!("http://{addr}"))
    };
    let central = Arc::new(Central::new(&config, "s1").unwrap());
    let pull = || sync::pull::pull_once(&central, &store.writer, sync::pull::What::Prices, "de-DE");
    pull().await.unwrap();
    assert_eq!(bound(&store, LABEL), ("SKU-1001".into(), "central".into()));

    // Staff move the label (what POST /v1/labels/{id}/bind journals).
    let bind = NewEvent::new(
        chrono::Utc::now(),
        "api",
        EventBody::LabelBound(LabelBound {
            label_id: LABEL.into(),
            sku: "SKU-2002".into(),
            gtin: None,
            previous_sku: Some("SKU-1001".into()),
        }),
    );
    store.writer.append(vec![bind]).await.unwrap();
    let (link_tx, _link) = tokio::sync::watch::channel(sync::Link::Unknown);
    tokio::spawn(sync::push::run(
        central.clone(),
        store.writer.clone(),
        Arc::new(Mutex::new(storegate::db::open_read(&store.db).unwrap())),
        config.batch_max,
        std::time::Duration::from_secs(1),
        link_tx,
        store.shutdown.clone(),
    ));
    wait_for_async("central's book to move the label", || {
        let s = sim.lock();
        (s.prices["SKU-2002"].1["labels"] == json!([LABEL])).then_some(())
    })
    .await;
    assert_eq!(sim.lock().prices["SKU-1001"].1["labels"], json!([]));

    // The next pull brings both changed items: the label stays where
    // staff put it, now central's word too.
    pull().await.unwrap();
    assert_eq!(bound(&store, LABEL), ("SKU-2002".into(), "central".into()));
    assert_eq!(due_update(&store, LABEL).await.unwrap().sku, "SKU-2002");
}
