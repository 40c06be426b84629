//! Device health: a device down longer than its `offline_alert_s` raises a
//! `device_offline` alert, resolved when it is back; one device failing
//! never affects another; the board is persisted for `storegate status`.

mod common;

use std::collections::HashMap;

use common::{PtyPair, Store, wait_for_async};
use storegate::devices::{run_device, watch};
use storegate::event::{AlertState, EventBody};

fn offline_alerts(store: &Store) -> Vec<(String, AlertState)> {
    store
        .events()
        .into_iter()
        .filter_map(|e| match e.body {
            EventBody::Alert(a) if a.code == "device_offline" => Some((a.subject, a.state)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_alert_opens_after_the_threshold_and_resolves_when_back() {
    let store = Store::new();
    let port = store.dir.path().join("uhf-agent");
    let spec = store.device(
        &format!(
            "id = \"uhf\"\nprofile = \"uhf-m100-serial\"\ntransport = \"serial\"\nport = {:?}\noffline_alert_s = 1\n",
            port
        ),
        None,
    );
    // A healthy neighbour on its own pty.
    let other_pty = PtyPair::new(store.dir.path(), "other");
    let other = store.device(
        &format!(
            "id = \"other\"\nprofile = \"uhf-m100-serial\"\ntransport = \"serial\"\nport = {:?}\noffline_alert_s = 1\n",
            other_pty.agent
        ),
        None,
    );
    let thresholds: HashMap<String, u64> =
        [("uhf".to_string(), 1), ("other".to_string(), 1)].into();
    tokio::spawn(run_device(
        spec,
        store.ingest.clone(),
        None,
        store.shutdown.clone(),
    ));
    tokio::spawn(run_device(
        other,
        store.ingest.clone(),
        None,
        store.shutdown.clone(),
    ));
    tokio::spawn(watch::run(
        store.writer.clone(),
        store.health.clone(),
        thresholds,
        store.shutdown.clone(),
    ));

    wait_for_async("device_offline for uhf", || {
        offline_alerts(&store)
            .contains(&("uhf".to_string(), AlertState::Open))
            .then_some(())
    })
    .await;
    assert!(
        store.health.get("other").unwrap().up,
        "the neighbour is unaffected"
    );
    assert!(!offline_alerts(&store).iter().any(|(d, _)| d == "other"));

    // Plug the reader in: the port appears, the runner reopens it.
    let _pty = PtyPair::new(store.dir.path(), "uhf");
    wait_for_async("device_offline resolved", || {
        offline_alerts(&store)
            .contains(&("uhf".to_string(), AlertState::Resolved))
            .then_some(())
    })
    .await;
    // Never connected before, so this first connection is no reconnect.
    let h = store.health.get("uhf").unwrap();
    assert!(h.up);
    assert_eq!(h.reconnects, 0);

    // The board is persisted for status in another process.
    wait_for_async("persisted health", || {
        let conn = storegate::db::open_read(&store.db).unwrap();
        let board = watch::read_persisted(&conn).unwrap();
        board.iter().any(|h| h.id == "uhf" && h.up).then_some(())
    })
    .await;
    // Exactly one opening and one resolution.
    assert_eq!(
        offline_alerts(&store).len(),
        2,
        "{:?}",
        offline_alerts(&store)
    );
}
