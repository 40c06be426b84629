//! Kill -9 at random moments while events are being ingested: every event
//! the process acknowledged must be in the database, with its exact
//! content, seqs gapless, and the database intact.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{AckReader, Lcg};

use storegate::db::{self, journal};
use storegate::event::Event;

#[test]
fn sigkill_during_ingest_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("storegate.db");
    let mut rng = Lcg(0x5eed);
    let mut acknowledged: Vec<Event> = Vec::new();
    for round in 0..25 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_storegate"))
            .args(["debug", "ingest", "--producers", "8", "--db"])
            .arg(&path)
            .env("STOREGATE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        // Kill after a random number of acknowledgements (not a timer, so
        // the test does not depend on the machine's speed). The reader keeps
        // draining the pipe until the process is gone: every line it gets
        // is an acknowledged event, including those printed after the kill
        // decision.
        let kill_after = 1 + (rng.next() % 3000) as usize;
        let reader = AckReader::new(stdout);
        let started = Instant::now();
        while reader.seen() < kill_after && started.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_micros(200));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let lines = reader.finish();
        assert!(
            !lines.is_empty(),
            "round {round}: the ingester acknowledged nothing"
        );
        for line in lines {
            // The last line may have been cut by the kill; a line that
            // parses is a complete acknowledgement.
            if let Ok(e) = serde_json::from_str::<Event>(&line) {
                acknowledged.push(e);
            }
        }

        let conn = db::open_read(&path).unwrap();
        let integrity: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(integrity, "ok", "round {round}");
        let stored = journal::events_after(&conn, 0, usize::MAX >> 1).unwrap();
        for (i, e) in stored.iter().enumerate() {
            assert_eq!(
                e.seq,
                i as i64 + 1,
                "round {round}: gap or reordering at {}",
                e.seq
            );
        }
        for a in &acknowledged {
            let s = stored
                .get(a.seq as usize - 1)
                .unwrap_or_else(|| panic!("round {round}: acknowledged seq {} is missing", a.seq));
            assert_eq!(s, a, "round {round}: content of seq {} differs", a.seq);
        }
    }
    assert!(acknowledged.len() > 25);
}
