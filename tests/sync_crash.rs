//! Exactly once to central, across SIGKILLs at random moments while
//! events keep arriving and pushes are in flight (DESIGN invariants 1, 4).

mod common;

use common::{AckReader, Lcg};
use std::collections::HashSet;
use std::process::{Command, Stdio};

use storegate::db::{self, journal};
use storegate::event::Event;
use storegate::sim::central::Central as CentralSim;

fn ingest(db: &std::path::Path, url: &str, batches: usize) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_storegate"))
        .args([
            "debug",
            "ingest",
            "--producers",
            "4",
            "--central",
            url,
            "--batches",
            &batches.to_string(),
            "--db",
        ])
        .arg(db)
        .env("STOREGATE_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_pushes_loses_nothing_and_duplicates_nothing_at_central() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("storegate.db");
    let sim = CentralSim::default();
    let (addr, _server) = sim.clone().spawn("127.0.0.1:0").await.unwrap();
    let url = format!("http://{addr}");
    let mut rng = Lcg(0xC0FFEE);
    let mut acknowledged: Vec<Event> = Vec::new();

    for round in 0..22 {
        let mut child = ingest(&db_path, &url, 0);
        let stdout = child.stdout.take().unwrap();
        let reader = AckReader::new(stdout);
        // Kill after a random number of acknowledged events, so some kills
        // land while a push is in flight and others between pushes.
        let kill_after = 200 + (rng.next() % 4000) as usize;
        let pushed_before = sim.view("crash-test").acked_through;
        common::wait_for_async("acknowledgements", || {
            (reader.seen() >= kill_after).then_some(())
        })
        .await;
        // Make sure pushes happen in this round too.
        common::wait_for_async("a push in this round", || {
            (sim.view("crash-test").acked_through > pushed_before || round % 2 == 1).then_some(())
        })
        .await;
        child.kill().unwrap();
        child.wait().unwrap();
        for line in reader.finish() {
            if let Ok(e) = serde_json::from_str::<Event>(&line) {
                acknowledged.push(e);
            }
        }
    }

    // A last run that produces nothing new, so the pusher drains the backlog.
    let mut child = ingest(&db_path, &url, 1);
    let head = journal::head(&db::open_read(&db_path).unwrap()).unwrap();
    let head = common::wait_for_async("the final head", || {
        let h = journal::head(&db::open_read(&db_path).unwrap()).unwrap();
        (h > head).then_some(h)
    })
    .await;
    common::wait_for_async("central to hold everything", || {
        (sim.view("crash-test").acked_through >= head).then_some(())
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();

    let view = sim.view("crash-test");
    let local =
        journal::events_after(&db::open_read(&db_path).unwrap(), 0, usize::MAX >> 1).unwrap();
    // Seqs at central are contiguous and exactly the journal's.
    let seqs: Vec<i64> = view.events.keys().copied().collect();
    assert_eq!(
        seqs,
        (1..=view.acked_through).collect::<Vec<_>>(),
        "contiguous"
    );
    assert!(view.acked_through >= head);
    common::assert_at_central(&view.events, &local);
    // Every acknowledged event is at central, with identical content.
    common::assert_at_central(&view.events, &acknowledged);
    // Nothing is there twice under different seqs.
    let mut contents = HashSet::new();
    for e in view.events.values() {
        assert!(
            contents.insert((e["device"].to_string(), e["data"].to_string())),
            "duplicate content {e}"
        );
    }
    assert!(
        acknowledged.len() > 4000,
        "{} acknowledged",
        acknowledged.len()
    );
    eprintln!(
        "{} acknowledged events over 22 kills; central holds {} events, {} resends deduplicated",
        acknowledged.len(),
        view.events.len(),
        view.duplicates
    );
}
