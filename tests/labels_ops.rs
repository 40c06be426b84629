//! Shelf-label operations (issue 18 item 4) against real counterparts:
//! simulated OpenEPaperLink access points (`storegate::sim::oepl`, real
//! HTTP servers on loopback) polled and fed by the agent's real device
//! sessions and label sender: routing by `/get_db` membership with
//! failover, and finding a label by its LED. Binding: tests/label_bindings.rs.

mod common;

use std::sync::Arc;

use common::{Store, wait_for_async};
use serde_json::json;
use storegate::devices::label_sender::{self, Routes};
use storegate::devices::run_device;
use storegate::domain::labels;
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
    let item = json!({"sku": "SKU-1001", "name": "Oat milk 1L", "price_minor": price_minor,
                      "currency": "EUR", "effective_from": "2020-01-01T00:00:00Z",
                      "labels": [ONLY_A, BOTH, ONLY_B, NOWHERE]});
    common::price_pull(store, version, json!([item])).await;
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

/// The store's label system: a device session per simulated AP (the
/// `openepaperlink-ap` profile polling every 50 ms), in this order, and the
/// label sender. Returns the sender's wake-up and the profiles directory
/// (keep it while they run).
fn run_label_system(
    store: &Store,
    aps: &[(&str, &SimAp)],
) -> (Arc<tokio::sync::Notify>, tempfile::TempDir) {
    let profiles = tempfile::tempdir().unwrap();
    common::fast_oepl_profile(profiles.path());
    let specs: Vec<_> = aps
        .iter()
        .map(|(id, ap)| {
            let url = ap.url();
            store.device(
                &format!("id = \"{id}\"\nprofile = \"openepaperlink-ap\"\ntransport = \"http\"\nurl = \"{url}\"\n"),
                Some(profiles.path()),
            )
        })
        .collect();
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
    (wake, profiles)
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
    // A is configured first: before, every label went to it.
    let (wake, _profiles) = run_label_system(&store, &[("ap-a", &ap_a), ("ap-b", &ap_b)]);

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

/// A record an AP copied from the AP that manages the tag (`isexternal`)
/// is that AP's: nothing is sent through the copy, and its stale check-in
/// does not make the label offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_aps_copy_of_a_tag_is_neither_routed_to_nor_reported() {
    let store = Store::new();
    // B is configured first, and its copy of the tag says it has been
    // silent for two hours (the profile's stale_after_s is one hour).
    let ap_a = SimAp::start(vec![SimTag::new(ONLY_A, false)])
        .await
        .unwrap();
    let ap_b = SimAp::start(vec![SimTag::external(ONLY_A, 7200)])
        .await
        .unwrap();
    let (wake, _profiles) = run_label_system(&store, &[("ap-b", &ap_b), ("ap-a", &ap_a)]);
    let item = json!({"sku": "SKU-1001", "name": "Oat milk 1L", "price_minor": 249,
                      "currency": "EUR", "effective_from": "2020-01-01T00:00:00Z",
                      "labels": [ONLY_A]});
    common::price_pull(&store, 1, json!([item])).await;
    wake.notify_one();
    wait_shown(&store, &[ONLY_A], 1).await;
    assert_eq!(uploads(&ap_a), [ONLY_A]);
    // B's session has read its copy several times since.
    let polled = ap_b.state().polls;
    wait_for_async("more polls of B", || {
        (ap_b.state().polls >= polled + 3).then_some(())
    })
    .await;
    assert!(uploads(&ap_b).is_empty());
    let health: Vec<serde_json::Value> = store
        .events()
        .iter()
        .filter(|e| e.body.kind() == "label_health")
        .map(|e| serde_json::from_str(&e.body.data_json()).unwrap())
        .collect();
    assert!(!health.is_empty());
    assert!(health.iter().all(|h| h["offline"] == false), "{health:?}");
}

// ---------------------------------------------------------------------------
// Finding a label (POST /v1/labels/{id}/find)
// ---------------------------------------------------------------------------

/// Has an LED, listed by both access points.
const WITH_LED: &str = "0000021A4B3C0010";
/// Has no LED.
const NO_LED: &str = "0000021A4B3C0011";

/// `POST /v1/labels/{label}/find` as staff.
async fn find(api: &common::api::Api, label: &str) -> common::api::Answer {
    api.post(
        &format!("/v1/labels/{label}/find"),
        Some(common::api::STAFF),
        json!({}),
    )
    .await
}

/// The answer is the refusal `(status, code)`.
fn refused(a: &common::api::Answer, status: u16, code: &str) {
    assert_eq!(
        (a.status, common::api::error_code(a)),
        (status, code),
        "{}",
        a.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn find_flashes_the_led_through_an_access_point_that_lists_the_label() {
    use common::api::Api;
    use storegate::devices::label_routes::AccessPoints;
    let mut ap_1 = SimAp::start(vec![
        SimTag::new(WITH_LED, true),
        SimTag::new(NO_LED, false),
    ])
    .await
    .unwrap();
    let ap_2 = SimAp::start(vec![SimTag::new(WITH_LED, true)])
        .await
        .unwrap();
    let params: storegate::codecs::esl::OeplParams =
        toml::from_str("template = '[]'\npoll_ms = 50").unwrap();
    let aps = AccessPoints::new(vec![
        ("ap-1".into(), ap_1.url(), params.clone()),
        ("ap-2".into(), ap_2.url(), params),
    ]);
    let api = Api::start_with(|s| s.access_points = aps).await;
    let flashed = |ap: &SimAp| ap.state().commands.clone();
    let flash = vec![(WITH_LED.to_string(), "ledflash".to_string())];

    let a = find(&api, WITH_LED).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["access_point"], "ap-1");
    assert_eq!(flashed(&ap_1), flash);

    // Hardware that cannot flash is a clear 409; a label no AP lists, 404.
    let a = find(&api, NO_LED).await;
    refused(&a, 409, "cannot_flash");
    assert!(a.body["error"]["message"].to_string().contains("no LED"));
    refused(&find(&api, "0000021A4B3C").await, 409, "cannot_flash");
    refused(
        &find(&api, "0000021A4B3C0FFF").await,
        404,
        "label_not_listed",
    );

    // The first AP is down (its listing may not be due for a refresh yet:
    // the failed command itself moves on): the other one flashes the label.
    ap_1.stop().await;
    let a = find(&api, WITH_LED).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["access_point"], "ap-2");
    assert_eq!(flashed(&ap_2), flash);
}
