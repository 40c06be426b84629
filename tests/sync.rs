//! Central sync against a real HTTP central on loopback (the reference
//! central of `storegate sim central`) with every misbehaviour of
//! spec/sync-api.md switched on in turn.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Store, reading, wait_for_async};
use storegate::config::CentralConfig;
use storegate::db::{self, journal};
use storegate::event::{EventBody, NewEvent, SaleLine, TagTransition, now_millis};
use storegate::sim::central::Central as CentralSim;
use storegate::sync::{self, Central, Link};

fn sale(receipt: &str, sku: &str, qty: i64) -> NewEvent {
    NewEvent::new(
        now_millis(),
        "pos-1",
        EventBody::Sale(SaleLine {
            receipt_id: receipt.into(),
            line: 1,
            sku: sku.into(),
            gtin: None,
            qty,
            unit_price_minor: 100,
            currency: "EUR".into(),
            pos: "1".into(),
            member_hash: None,
        }),
    )
}

fn central_config(
    url: String,
    token_file: Option<std::path::PathBuf>,
    batch_max: usize,
) -> CentralConfig {
    CentralConfig {
        token_file,
        batch_max,
        max_backoff_s: 1,
        ..CentralConfig::http(url)
    }
}

/// Start the pusher of `store` against `url`.
fn start_pusher(store: &Store, config: &CentralConfig) -> tokio::sync::watch::Receiver<Link> {
    let central = Arc::new(Central::new(config, "s1").unwrap());
    let reader = Arc::new(Mutex::new(db::open_read(&store.db).unwrap()));
    let (tx, rx) = tokio::sync::watch::channel(Link::Unknown);
    tokio::spawn(sync::push::run(
        central,
        store.writer.clone(),
        reader,
        config.batch_max,
        Duration::from_secs(config.max_backoff_s),
        tx,
        store.shutdown.clone(),
    ));
    rx
}

async fn append(store: &Store, events: Vec<NewEvent>) {
    store.writer.append(events).await.unwrap();
}

/// Wait until central holds exactly the store's journal, then compare.
async fn assert_central_has_everything(store: &Store, sim: &CentralSim) {
    let head = { db::journal::head(&db::open_read(&store.db).unwrap()).unwrap() };
    wait_for_async("central to acknowledge everything", || {
        (sim.view("s1").acked_through == head).then_some(())
    })
    .await;
    let view = sim.view("s1");
    let local = store.events();
    assert_eq!(
        view.events.len(),
        local.len(),
        "central has {:?}, local {:?}",
        view.events.keys().collect::<Vec<_>>(),
        local.iter().map(|e| e.seq).collect::<Vec<_>>()
    );
    common::assert_at_central(&view.events, &local);
    // The agent records central's acknowledgement after the answer arrives.
    wait_for_async("the agent to record the acknowledgement", || {
        let conn = db::open_read(&store.db).unwrap();
        (sync::state::read(&conn).unwrap().last_acked_seq == head).then_some(())
    })
    .await;
}

async fn sim_with(b: storegate::sim::central::Behaviour) -> (CentralSim, String) {
    let sim = CentralSim::default();
    sim.lock().behaviour = b;
    let (addr, _) = sim.clone().spawn("127.0.0.1:0").await.unwrap();
    (sim, format!("http://{addr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_promptly_in_order_with_idempotency_keys() {
    let store = Store::new();
    let (sim, url) = sim_with(Default::default()).await;
    start_pusher(&store, &central_config(url, None, 5000));
    append(&store, (0..10).map(reading).collect()).await;
    assert_central_has_everything(&store, &sim).await;
    append(&store, (10..25).map(reading).collect()).await;
    assert_central_has_everything(&store, &sim).await;
    let keys = sim.lock().push_keys.clone();
    assert!(keys.iter().all(|k| k.starts_with("s1:")), "{keys:?}");
    assert!(keys.contains(&"s1:1-10".to_string()), "{keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_acknowledgements_are_resent_from_the_acked_figure() {
    let store = Store::new();
    let (sim, url) = sim_with(storegate::sim::central::Behaviour {
        ack_at_most: Some(7),
        ..Default::default()
    })
    .await;
    append(&store, (0..50).map(reading).collect()).await;
    start_pusher(&store, &central_config(url, None, 20));
    assert_central_has_everything(&store, &sim).await;
    assert_eq!(sim.view("s1").duplicates, 0, "nothing counted twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_409_continues_after_centrals_figure() {
    let store = Store::new();
    let (sim, url) = sim_with(Default::default()).await;
    append(&store, (0..30).map(reading).collect()).await;
    // Central already has 1..=12 (say the agent's last ack was lost).
    {
        let local = store.events();
        let mut s = sim.lock();
        let view = s.stores.entry("s1".into()).or_default();
        for e in &local[..12] {
            view.events.insert(e.seq, serde_json::to_value(e).unwrap());
        }
        view.acked_through = 12;
    }
    // Our sync state claims less: the first push starts at 1... which is fine
    // (central dedups); make it claim more instead, a batch starting past 13.
    store
        .writer
        .transact(|w| sync::state::set_acked(w.conn(), 20).map(|_| ()))
        .await
        .unwrap();
    start_pusher(&store, &central_config(url, None, 5000));
    assert_central_has_everything(&store, &sim).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_batches_are_halved() {
    let store = Store::new();
    let (sim, url) = sim_with(storegate::sim::central::Behaviour {
        max_batch: Some(60),
        ..Default::default()
    })
    .await;
    append(&store, (0..500).map(reading).collect()).await;
    start_pusher(&store, &central_config(url, None, 1000));
    assert_central_has_everything(&store, &sim).await;
    let sizes = sim.lock().batch_sizes.clone();
    assert!(
        sizes.contains(&500) && sizes.iter().any(|&n| n <= 60 && n > 0),
        "{sizes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_then_a_rotated_token_on_disk_goes_through() {
    let store = Store::new();
    let token = store.dir.path().join("central.token");
    std::fs::write(&token, "old-token\n").unwrap();
    let (sim, url) = sim_with(storegate::sim::central::Behaviour {
        token: Some("new-token".into()),
        ..Default::default()
    })
    .await;
    append(&store, (0..5).map(reading).collect()).await;
    start_pusher(
        &store,
        &CentralConfig {
            max_backoff_s: 1,
            ..central_config(url, Some(token.clone()), 100)
        },
    );
    wait_for_async("a 403 to be recorded", || {
        let conn = db::open_read(&store.db).unwrap();
        let s = sync::state::read(&conn).unwrap();
        s.last_error.filter(|e| e.contains("403")).map(|_| ())
    })
    .await;
    assert!(sim.view("s1").events.is_empty());
    // Unauthorized retries slowly (at least min(60 s, max_backoff_s), here
    // 1 s); the token rotated on disk is picked up on the next try.
    std::fs::write(&token, "new-token\n").unwrap();
    assert_central_has_everything(&store, &sim).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_with_retry_after_and_unparsable_200s_are_retried() {
    let store = Store::new();
    let (sim, url) = sim_with(storegate::sim::central::Behaviour {
        fail_next: Some((503, 2, Some(1))),
        garbage_next: 2,
        ..Default::default()
    })
    .await;
    append(&store, (0..40).map(reading).collect()).await;
    start_pusher(&store, &central_config(url, None, 5000));
    assert_central_has_everything(&store, &sim).await;
    let conn = db::open_read(&store.db).unwrap();
    assert_eq!(sync::state::read(&conn).unwrap().consecutive_failures, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_outage_then_the_backlog_drains() {
    let store = Store::new();
    // Nothing listens on this port yet: connections are refused.
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let link = start_pusher(&store, &central_config(url, None, 5000));
    for chunk in 0..20 {
        append(
            &store,
            (chunk * 1000..(chunk + 1) * 1000).map(reading).collect(),
        )
        .await;
    }
    wait_for_async("the link to be seen offline", || {
        (*link.borrow() == Link::Offline).then_some(())
    })
    .await;
    let sim = CentralSim::default();
    sim.clone()
        .spawn(&format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    assert_central_has_everything(&store, &sim).await;
    assert_eq!(*link.borrow(), Link::Online);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_baseline_including_part_of_the_stores_events_keeps_on_hand_right() {
    let store = Store::new();
    let (sim, url) = sim_with(Default::default()).await;
    sim.set_initial_stock("SKU-1", 100);
    for i in 0..10 {
        append(&store, vec![sale(&format!("R{i}"), "SKU-1", 1)]).await;
    }
    start_pusher(&store, &central_config(url.clone(), None, 4));
    assert_central_has_everything(&store, &sim).await;
    // Central's baseline includes all 10 sales: 100 - 10 = 90.
    let central = Central::new(&central_config(url, None, 4), "s1").unwrap();
    // More local sales that central has not seen yet.
    store.trigger.trigger();
    for i in 10..13 {
        append(&store, vec![sale(&format!("R{i}"), "SKU-1", 1)]).await;
    }
    sync::pull::pull_once(&central, &store.writer, sync::pull::What::Stock, "de-DE")
        .await
        .unwrap();
    let on_hand = |store: &Store| {
        let conn = db::open_read(&store.db).unwrap();
        storegate::domain::stock::on_hand(&conn, "SKU-1").unwrap()
    };
    assert_eq!(
        on_hand(&store),
        90 - 3,
        "baseline 90 through seq 10, plus 3 later sales"
    );
    // An older baseline arriving late changes nothing.
    store
        .writer
        .transact(|w| {
            let b = storegate::domain::stock::Baseline {
                version: 1,
                through_seq: 2,
                items: vec![storegate::domain::stock::BaselineItem {
                    sku: "SKU-1".into(),
                    on_hand: 500,
                }],
            };
            storegate::domain::stock::apply_baseline(w.conn(), &b)
        })
        .await
        .unwrap();
    assert_eq!(on_hand(&store), 87);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_tiny_quota_low_value_events_go_first_and_no_sale_is_dropped() {
    use storegate::retention;
    let store = Store::new();
    let now = now_millis();
    let tag = |i: usize| {
        NewEvent::new(
            now,
            "door",
            EventBody::TagArrived(TagTransition {
                epc: format!("E2{i:022X}"),
                gtin: None,
                serial: None,
                sku: None,
                zone: "backroom".into(),
                from_zone: None,
                reader: "door".into(),
                antenna: Some(1),
                rssi_dbm: Some(-50),
                first_seen: now,
                last_seen: now,
            }),
        )
    };
    for i in 0..3000 {
        append(&store, vec![tag(i), reading(i)]).await;
        if i % 10 == 0 {
            append(&store, vec![sale(&format!("R{i}"), "SKU-1", 1)]).await;
        }
    }
    let count = |kind: &str| {
        store
            .events()
            .iter()
            .filter(|e| e.body.kind() == kind)
            .count()
    };
    let sales_before = count("sale");
    assert_eq!(sales_before, 300);
    // A quota far below what is stored: drop until under, or until only
    // never-drop events remain.
    let mut rounds = 0;
    loop {
        let round = store
            .writer
            .transact(|w| retention::enforce(w, 64 * 1024))
            .await
            .unwrap();
        rounds += 1;
        if round.dropped + round.trimmed == 0 || !round.still_over || rounds > 100 {
            break;
        }
    }
    assert_eq!(count("sale"), sales_before, "no sale is ever dropped");
    assert_eq!(count("tag_arrived"), 0, "tag transitions go first");
    assert_eq!(count("reading"), 0, "readings go first");
    let alerts: Vec<_> = store
        .events()
        .into_iter()
        .filter_map(|e| match e.body {
            EventBody::Alert(a) if a.code == "events_dropped" => Some(a),
            _ => None,
        })
        .collect();
    assert!(!alerts.is_empty());
    assert!(alerts[0].context.get("ranges").is_some());
    // The pusher skips the dropped ranges and central learns about them.
    let (sim, url) = sim_with(Default::default()).await;
    start_pusher(&store, &central_config(url, None, 5000));
    let head = journal::head(&db::open_read(&store.db).unwrap()).unwrap();
    wait_for_async("central to acknowledge the head", || {
        (sim.view("s1").acked_through == head).then_some(())
    })
    .await;
    let view = sim.view("s1");
    assert_eq!(view.events.len(), store.events().len());
    assert!(!view.skipped.is_empty());
}
