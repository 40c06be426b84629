//! Shelf-label operations (issue 18 item 4) against real counterparts:
//! simulated OpenEPaperLink access points (`storegate::sim::oepl`, real
//! HTTP servers on loopback) polled and fed by the agent's real device
//! sessions and label sender.

mod common;

use std::sync::Arc;

use common::{Store, wait_for_async};
use serde_json::json;
use storegate::devices::label_sender::{self, Routes};
use storegate::devices::run_device;
use storegate::domain::{labels, prices};
use storegate::event::{EventBody, LabelStatus};
use storegate::sim::oepl::{SimAp, SimTag};

/// Listed by access point A only.
const ONLY_A: &str = "0000021A4B3C0001";
/// Listed by both access points.
const BOTH: &str = "0000021A4B3C0002";
/// Listed by access point B only.
const ONLY_B: &str = "0000021A4B3C0003";
/// Listed by no access point.
const NOWHERE: &str = "0000021A4B3C0004";

/// The store's price book: SKU-1001 at `price_minor`, on all four labels.
async fn price(store: &Store, version: i64, price_minor: i64) {
    let pull: prices::PricePull = serde_json::from_value(json!({
        "version": version,
        "items": [{"sku": "SKU-1001", "name": "Oat milk 1L", "price_minor": price_minor,
                   "currency": "EUR", "effective_from": "2020-01-01T00:00:00Z",
                   "labels": [ONLY_A, BOTH, ONLY_B, NOWHERE]}]
    }))
    .unwrap();
    store
        .writer
        .transact(move |w| prices::apply_pull(w.conn(), &pull, chrono::Utc::now(), "de-DE"))
        .await
        .unwrap();
}

/// `(state, wanted version, shown version)` of a label.
fn label(store: &Store, id: &str) -> (String, Option<i64>, Option<i64>) {
    let conn = storegate::db::open_read(&store.db).unwrap();
    let all = labels::labels_of(&conn, "SKU-1001").unwrap();
    let l = all
        .into_iter()
        .find(|l| l.label_id == id)
        .unwrap_or_else(|| panic!("no label {id}"));
    (l.state, l.want_version, l.shows_version)
}

/// Labels with a failed `label_ack` in the journal.
fn reported_failed(store: &Store) -> Vec<String> {
    store
        .events()
        .into_iter()
        .filter_map(|e| match e.body {
            EventBody::LabelAck(a) if a.status == LabelStatus::Failed => Some(a.label_id),
            _ => None,
        })
        .collect()
}

/// The MACs `ap` received uploads for, sorted (labels due together are
/// sent in no particular order).
fn uploads(ap: &SimAp) -> Vec<String> {
    let mut macs: Vec<String> = ap
        .state()
        .uploads
        .iter()
        .map(|(mac, _)| mac.clone())
        .collect();
    macs.sort();
    macs
}

/// Wait until every label in `ids` shows price version `version`.
async fn wait_shown(store: &Store, ids: &[&str], version: i64) {
    wait_for_async(&format!("labels {ids:?} to show version {version}"), || {
        ids.iter()
            .all(|id| label(store, id).2 == Some(version))
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_go_to_the_access_point_that_lists_them_and_fail_over() {
    let started = std::time::Instant::now();
    let store = Store::new();
    let mut ap_a = SimAp::start(vec![SimTag::new(ONLY_A, false), SimTag::new(BOTH, false)])
        .await
        .unwrap();
    let ap_b = SimAp::start(vec![SimTag::new(BOTH, false), SimTag::new(ONLY_B, false)])
        .await
        .unwrap();
    let profiles = tempfile::tempdir().unwrap();
    common::fast_oepl_profile(profiles.path());
    let device = |id: &str, url: &str| {
        store.device(
            &format!("id = \"{id}\"\nprofile = \"openepaperlink-ap\"\ntransport = \"http\"\nurl = \"{url}\"\n"),
            Some(profiles.path()),
        )
    };
    // A is configured first: before, every label went to it.
    let specs = vec![device("ap-a", &ap_a.url()), device("ap-b", &ap_b.url())];
    let wake = Arc::new(tokio::sync::Notify::new());
    let routes = Routes::from_devices(&specs);
    for spec in specs {
        tokio::spawn(run_device(
            spec,
            store.ingest.clone(),
            None,
            store.shutdown.clone(),
        ));
    }
    tokio::spawn(label_sender::run(
        store.writer.clone(),
        routes,
        None,
        wake.clone(),
        store.shutdown.clone(),
    ));

    // Both APs up: each label goes to an AP that lists it (the one listed
    // twice to the first configured), and they confirm through it.
    price(&store, 1, 249).await;
    wake.notify_one();
    wait_shown(&store, &[ONLY_A, BOTH, ONLY_B], 1).await;
    assert_eq!(uploads(&ap_a), [ONLY_A, BOTH]);
    assert_eq!(uploads(&ap_b), [ONLY_B]);
    // The label no AP lists is reported failed, and only it.
    wait_for_async("the unlisted label failed", || {
        (label(&store, NOWHERE).0 == "failed").then_some(())
    })
    .await;
    assert_eq!(reported_failed(&store), [NOWHERE]);

    // A goes down. The next price reaches the label listed twice through
    // B; the label only A lists waits for A (it is not failed: A lists it).
    ap_a.stop().await;
    price(&store, 2, 259).await;
    wake.notify_one();
    wait_shown(&store, &[BOTH, ONLY_B], 2).await;
    assert_eq!(uploads(&ap_b), [BOTH, ONLY_B, ONLY_B]);
    wait_for_async("the unlisted label failed again", || {
        let (state, want, _) = label(&store, NOWHERE);
        (state == "failed" && want == Some(2)).then_some(())
    })
    .await;
    let (state, want, shows) = label(&store, ONLY_A);
    assert_eq!((state.as_str(), want, shows), ("pending", Some(2), Some(1)));
    assert_eq!(reported_failed(&store), [NOWHERE, NOWHERE]);

    // A is back: the label only it lists gets its price.
    ap_a.resume().await.unwrap();
    wait_shown(&store, &[ONLY_A], 2).await;
    assert_eq!(uploads(&ap_a), [ONLY_A, ONLY_A, BOTH]);
    assert_eq!(label(&store, ONLY_A).0, "ok");
    assert_eq!(reported_failed(&store), [NOWHERE, NOWHERE]);
    eprintln!("routing test took {:?}", started.elapsed());
}
