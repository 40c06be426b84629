//! `storegate bench uplink` stays runnable: a small backlog drained over
//! HTTP and over the MQTT uplink through a real 3-node nats-server
//! cluster, with every figure printed. The figures themselves are not
//! asserted (they belong to docs/BENCHMARKS.md, measured in release).

use std::process::Command;

#[test]
fn bench_uplink_drains_a_small_backlog_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_storegate"))
        .args(["bench", "uplink", "--events", "20000", "--dir"])
        .arg(dir.path())
        .env("STOREGATE_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "20000 events",
        "HTTP  pusher -> central",
        "MQTT  uplink -> 3 nats",
        "ratio MQTT / HTTP",
        "payload bytes per event",
        "broker messages per event",
    ] {
        assert!(stdout.contains(line), "{line:?} missing in\n{stdout}");
    }
    // Each rate is a positive number of events/s.
    let rates: Vec<f64> = stdout
        .lines()
        .filter_map(|l| l.split_once(" events/s"))
        .filter_map(|(before, _)| before.split_whitespace().last()?.parse::<f64>().ok())
        .collect();
    assert_eq!(rates.len(), 2, "{stdout}");
    assert!(rates.iter().all(|r| *r > 0.0), "{stdout}");
}
