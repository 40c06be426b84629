//! `storegate demo --duration 20`: the real binary runs the whole simulated
//! store (pseudo-terminals, embedded broker, Modbus servers, in-process
//! central) and must end with central and store agreeing on every SKU,
//! labels confirmed, a price conflict and a low-stock alert raised, the
//! click-and-collect order picked and handed over, the refill task taken,
//! and exit code 0.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The number before `suffix` on the summary line starting with `prefix`.
fn figure(out: &str, prefix: &str) -> Option<i64> {
    let line = out.lines().find_map(|l| l.trim().strip_prefix(prefix))?;
    line.split_whitespace().next()?.parse().ok()
}

#[test]
fn demo_runs_a_store_day_and_central_and_store_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let mut child = Command::new(env!("CARGO_BIN_EXE_storegate"))
        .args(["demo", "--duration", "20", "--dir"])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read both pipes on threads, so a full pipe never stalls the demo.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).unwrap();
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).unwrap();
        s
    });
    // 20 s of story plus settling and shutdown; generous for slow CI.
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("storegate demo did not finish within 180 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = out.join().unwrap();
    let err = err.join().unwrap();
    let context = format!("stdout:\n{out}\nstderr:\n{err}");

    assert!(status.success(), "exit status {status}\n{context}");
    assert!(
        out.contains("central and store agree on 6 SKUs"),
        "{context}"
    );
    assert!(
        out.contains("(backlog 0)"),
        "everything pushed to central\n{context}"
    );
    let ok_labels = figure(&out, "labels:").expect("a labels line");
    assert!(ok_labels > 0, "labels confirmed\n{context}");
    let conflicts = figure(&out, "price conflicts raised:").expect("a conflicts line");
    assert!(conflicts >= 1, "a price conflict\n{context}");
    let low = figure(&out, "low_stock alerts raised:").expect("a low_stock line");
    assert!(low >= 1, "a low-stock alert\n{context}");
    // The story's other beats happened too.
    for beat in ["OFFLINE", "ONLINE again", "promo", "handheld"] {
        assert!(out.contains(beat), "story beat {beat:?}\n{context}");
    }
    // Click-and-collect: reserved, a wrong item and a wrong code refused
    // with the API's reasons, handed over; the customer's code is never
    // shown with the order.
    for beat in [
        "WEB-1001 pulled and reserved",
        "refused (HTTP 409 wrong_item: wrong item: SKU-1002 is not in order WEB-1001",
        "finishes the pick (short 0)",
        "refused (HTTP 422 wrong_pickup_code",
        "WEB-1001 handed over",
    ] {
        assert!(out.contains(beat), "pickup beat {beat:?}\n{context}");
    }
    assert_eq!(
        figure(&out, "pickups handed over:"),
        Some(1),
        "one pickup handed over\n{context}"
    );
    // Staff tasks: the low shelf's refill task shown, taken, and done by
    // the store's evidence after the delivery (or by staff if not yet).
    for beat in ["staff page    task: Refill SKU-1003", "anna takes T-"] {
        assert!(out.contains(beat), "task beat {beat:?}\n{context}");
    }
    assert!(
        out.contains("done, confirmed_by") || out.contains("marks T-"),
        "the refill task's outcome\n{context}"
    );
    let done = figure(&out, "tasks done:").expect("a tasks line");
    assert!(done >= 1, "a task done\n{context}");
    let log = std::fs::read_to_string(dir.join("storegate.log")).unwrap();
    for line in out.lines().chain(log.lines()) {
        assert!(
            !(line.contains("WEB-1001") && line.contains("4711")),
            "the pickup code is shown: {line}"
        );
    }
    // The journal has the events central was told about.
    let db = rusqlite::Connection::open(dir.join("storegate.db")).unwrap();
    let count = |kind: &str| -> i64 {
        db.query_row(
            "SELECT count(*) FROM journal WHERE kind = ?1",
            [kind],
            |r| r.get(0),
        )
        .unwrap()
    };
    for (kind, at_least) in [
        ("order_reserved", 1),
        ("order_picked", 1),
        ("order_handed_over", 1),
        ("task_opened", 1),
        ("task_taken", 1),
        ("task_done", 1),
    ] {
        assert!(count(kind) >= at_least, "{kind} journaled\n{context}");
    }

    // --dir keeps the data: the journal, the config and central's state.
    for file in [
        "storegate.db",
        "storegate.toml",
        "central.json",
        "storegate.log",
    ] {
        assert!(dir.join(file).exists(), "{file} kept\n{context}");
    }
}

#[test]
fn demo_refuses_a_directory_with_an_earlier_demo() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("storegate.db"), b"").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_storegate"))
        .args(["demo", "--duration", "1", "--dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("earlier demo"), "{err}");
}
