//! Operations: the systemd notifications (readiness, status, the watchdog
//! that stops when the journal writer hangs), `/metrics`, and the unit
//! file. systemd is played by a Unix datagram socket the test binds.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use common::{Store, free_port, wait_for_async};
use serde_json::json;
use storegate::api::{self, ApiState, Tokens};
use storegate::config::CentralConfig;
use storegate::db;
use storegate::domain::{alerts, prices};
use storegate::event::{EventBody, NewEvent, Reading, SaleLine, Severity, format_ts, now_millis};
use storegate::metrics::{Metrics, Sources};
use storegate::notify::{self, Notifier, Timing};
use storegate::sync::push::{self, PushStats};
use storegate::sync::{Central, Link};
use tokio::net::UnixDatagram;

/// Longest any single wait in these tests may take.
const DEADLINE: Duration = Duration::from_secs(30);

/// systemd's end of the notification socket: every datagram received,
/// in order.
struct FakeSystemd {
    socket: UnixDatagram,
    path: PathBuf,
    log: Vec<String>,
}

impl FakeSystemd {
    fn bind(dir: &Path) -> FakeSystemd {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        FakeSystemd {
            socket,
            path,
            log: Vec::new(),
        }
    }

    /// Receive until a message satisfies `pred`; returns its index in
    /// `log`. Fails after [`DEADLINE`].
    async fn until(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> usize {
        let deadline = Instant::now() + DEADLINE;
        let mut buf = vec![0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let n = tokio::time::timeout(left, self.socket.recv(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}; got {:#?}", self.log))
                .unwrap();
            let message = String::from_utf8_lossy(&buf[..n]).into_owned();
            let hit = pred(&message);
            self.log.push(message);
            if hit {
                return self.log.len() - 1;
            }
        }
    }

    /// Messages with this line, e.g. `READY=1`.
    fn count(&self, line: &str) -> usize {
        self.log.iter().filter(|m| has_line(m, line)).count()
    }
}

fn has_line(message: &str, line: &str) -> bool {
    message.lines().any(|l| l == line)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_stops_while_the_writer_is_wedged_and_resumes_after() {
    let store = Store::new();
    let mut systemd = FakeSystemd::bind(store.dir.path());
    let notifier = Arc::new(Notifier::to(&systemd.path).unwrap());
    let timing = Timing {
        every: Duration::from_millis(50),
        writer_timeout: Duration::from_millis(300),
    };
    let supervisor = tokio::spawn(notify::supervise(
        notifier,
        store.writer.clone(),
        timing,
        Arc::new(|| "3 devices, 3 up; backlog 0; central online".to_string()),
        store.shutdown.clone(),
    ));

    let first = systemd
        .until("the first ping", |m| has_line(m, "WATCHDOG=1"))
        .await;
    assert!(
        has_line(&systemd.log[first], "READY=1"),
        "{:?}",
        systemd.log
    );
    assert!(
        has_line(
            &systemd.log[first],
            "STATUS=3 devices, 3 up; backlog 0; central online"
        ),
        "{:?}",
        systemd.log
    );
    systemd
        .until("a second ping", |m| has_line(m, "WATCHDOG=1"))
        .await;

    // Wedge the writer: a job that blocks its thread until released.
    let (entered_tx, entered_rx) = std::sync::mpsc::channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let wedge = {
        let writer = store.writer.clone();
        tokio::spawn(async move {
            writer
                .transact(move |_| {
                    let _ = entered_tx.send(());
                    let _ = release_rx.recv();
                    Ok(())
                })
                .await
        })
    };
    tokio::task::spawn_blocking(move || entered_rx.recv_timeout(DEADLINE))
        .await
        .unwrap()
        .expect("the wedging job runs");

    // Once a probe has timed out, every later probe was submitted behind
    // the wedge: from here on no ping may go out, only the status.
    let wedged = systemd
        .until("the status to say the writer hangs", |m| {
            m.contains("journal writer not answering")
        })
        .await;
    for n in 1..=3 {
        systemd
            .until(&format!("hung status {n}"), |m| {
                m.contains("journal writer not answering")
            })
            .await;
    }
    let while_wedged = &systemd.log[wedged..];
    assert!(
        while_wedged.iter().all(|m| !has_line(m, "WATCHDOG=1")),
        "the watchdog was fed while the writer hung: {while_wedged:#?}"
    );
    assert!(
        while_wedged
            .iter()
            .all(|m| m.contains("; 3 devices, 3 up; backlog 0; central online")),
        "{while_wedged:#?}"
    );

    release_tx.send(()).unwrap();
    systemd
        .until("pings to resume", |m| has_line(m, "WATCHDOG=1"))
        .await;
    wedge.await.unwrap().expect("the wedging job commits");
    assert_eq!(systemd.count("READY=1"), 1, "{:#?}", systemd.log);

    store.trigger.trigger();
    tokio::time::timeout(DEADLINE, supervisor)
        .await
        .expect("the supervisor stops on shutdown")
        .unwrap();
}

/// One sample of the text exposition.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parse the sample lines of a Prometheus/OpenMetrics text exposition
/// (label values here never contain `"`, `,` or `}`).
fn parse_samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect(line);
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let (k, v) = l.split_once('=').expect(line);
                    (k.to_string(), v.trim_matches('"').to_string())
                })
                .collect();
            Sample {
                name: name.to_string(),
                labels,
                value: match value {
                    "+Inf" => f64::INFINITY,
                    v => v.parse().expect(line),
                },
            }
        })
        .collect()
}

/// The value of `name` whose labels include `labels`; fails if absent.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .unwrap_or_else(|| panic!("no {name}{labels:?} in {samples:#?}"))
        .value
}

fn sale(receipt: &str) -> NewEvent {
    NewEvent::new(
        now_millis(),
        "pos-1",
        EventBody::Sale(SaleLine {
            receipt_id: receipt.into(),
            line: 1,
            sku: "SKU-1001".into(),
            gtin: None,
            qty: 1,
            unit_price_minor: 249,
            currency: "EUR".into(),
            pos: "1".into(),
            member_hash: None,
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_expose_every_family_with_plausible_values() {
    let store = Store::new();
    store.health.register("pos-1", "pos-json", "serial");
    store.health.set_up("pos-1", true, None);
    store.health.frames("pos-1", 3, 1);
    store
        .health
        .register("door", "zebra-fx-iot-connector", "mqtt");
    // An LLRP reader's antenna 2 read twice (-60 then -50 dBm).
    let antennas = store.health.antennas();
    antennas.record("dock", 2, "backroom", Some(-60), now_millis());
    antennas.record("dock", 2, "backroom", Some(-50), now_millis());
    let (link_tx, link) = tokio::sync::watch::channel(Link::Unknown);
    let push_stats = Arc::new(PushStats::default());
    let metrics = Metrics::new(Sources {
        link: Some(link.clone()),
        push: push_stats.clone(),
        ..Sources::new(store.db.clone(), &store.writer, store.health.clone())
    });

    // Input after the agent started: two sales, a temperature, a frame
    // that did not parse, a label waiting for its price, an open alert.
    store
        .writer
        .append(vec![
            sale("R-1"),
            sale("R-2"),
            NewEvent::new(
                now_millis(),
                "fridge-1",
                EventBody::Reading(Reading {
                    name: "temperature".into(),
                    value: 4.5,
                    unit: "C".into(),
                }),
            ),
        ])
        .await
        .unwrap();
    let now = now_millis();
    let pull: prices::PricePull = serde_json::from_value(json!({
        "version": 1,
        "items": [{"sku": "SKU-1001", "name": "Oat milk 1L", "price_minor": 249,
                   "currency": "EUR",
                   "effective_from": format_ts(&(now - chrono::Duration::days(1))),
                   "labels": ["0000021A4B3C"]}]
    }))
    .unwrap();
    store
        .writer
        .transact(move |w| {
            w.quarantine("pos-1", "not JSON", b"{oops")?;
            prices::apply_pull(w.conn(), &pull, Utc::now(), "de-DE")?;
            alerts::raise(
                w,
                "agent",
                "device_offline",
                "door",
                Severity::Warning,
                "door has sent nothing for 120 s".into(),
                serde_json::Map::new(),
            )?;
            Ok(())
        })
        .await
        .unwrap();

    // A pusher whose central is not there: attempts, all failing.
    let config = CentralConfig {
        batch_max: 100,
        max_backoff_s: 1,
        ..CentralConfig::http(format!("http://127.0.0.1:{}", free_port()))
    };
    tokio::spawn(push::run_counted(
        Arc::new(Central::new(&config, "s1").unwrap()),
        store.writer.clone(),
        Arc::new(Mutex::new(db::open_read(&store.db).unwrap())),
        config.batch_max,
        Duration::from_secs(1),
        link_tx,
        push_stats.clone(),
        store.shutdown.clone(),
    ));
    wait_for_async("a failed push", || {
        (push_stats.failures.load(Ordering::Relaxed) > 0).then_some(())
    })
    .await;

    // Served by the API as the daemon does it.
    let mut state = ApiState::new(
        "s1".into(),
        store.db.clone(),
        store.writer.clone(),
        store.health.clone(),
        link,
        Tokens::new(None, None),
    );
    state.metrics = metrics.into_fn();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(api::serve(state, listener, store.shutdown.clone()));
    let response = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let text = response.text().await.unwrap();
    let m = parse_samples(&text);

    let events = "storegate_events_total";
    assert_eq!(
        value(&m, events, &[("kind", "sale"), ("device", "pos-1")]),
        2.0
    );
    assert_eq!(
        value(&m, events, &[("kind", "reading"), ("device", "fridge-1")]),
        1.0
    );
    assert_eq!(
        value(&m, events, &[("kind", "alert"), ("device", "agent")]),
        1.0
    );

    let groups = value(&m, "storegate_commit_seconds_count", &[]);
    assert!(groups >= 2.0, "{text}");
    assert_eq!(
        value(&m, "storegate_commit_seconds_bucket", &[("le", "+Inf")]),
        groups
    );
    assert!(value(&m, "storegate_commit_seconds_sum", &[]) > 0.0);
    assert!(value(&m, "storegate_commit_groups_total", &[]) >= 2.0);

    let head = value(&m, "storegate_journal_head_seq", &[]);
    assert!(head >= 4.0, "{text}");
    assert_eq!(value(&m, "storegate_backlog_events", &[]), head);

    let attempts = value(&m, "storegate_sync_attempts_total", &[]);
    let failures = value(&m, "storegate_sync_failures_total", &[]);
    assert!(failures >= 1.0 && attempts >= failures, "{text}");
    assert_eq!(value(&m, "storegate_central_online", &[]), 0.0);

    assert_eq!(
        value(&m, "storegate_device_up", &[("device", "pos-1")]),
        1.0
    );
    assert_eq!(value(&m, "storegate_device_up", &[("device", "door")]), 0.0);
    let frames = "storegate_device_frames_total";
    assert_eq!(
        value(&m, frames, &[("device", "pos-1"), ("result", "ok")]),
        3.0
    );
    assert_eq!(
        value(&m, frames, &[("device", "pos-1"), ("result", "bad")]),
        1.0
    );
    assert_eq!(value(&m, "storegate_quarantined_frames", &[]), 1.0);
    let port = [("device", "dock"), ("antenna", "2"), ("zone", "backroom")];
    assert_eq!(value(&m, "storegate_antenna_reads_total", &port), 2.0);
    // A running mean: -60 moved 5 % of the way to -50, rounded.
    assert_eq!(value(&m, "storegate_antenna_rssi_dbm_mean", &port), -60.0);

    assert_eq!(value(&m, "storegate_labels", &[("state", "pending")]), 1.0);
    assert_eq!(value(&m, "storegate_labels", &[("state", "failed")]), 0.0);
    assert_eq!(
        value(&m, "storegate_alerts_open", &[("code", "device_offline")]),
        1.0
    );
    assert!(value(&m, "storegate_db_bytes", &[]) > 0.0);
    assert_eq!(value(&m, "storegate_db_up", &[]), 1.0);

    // Counters only count what is new: a second scrape adds the next sale
    // once, and nothing twice.
    store.writer.append(vec![sale("R-3")]).await.unwrap();
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let m = parse_samples(&text);
    assert_eq!(
        value(&m, events, &[("kind", "sale"), ("device", "pos-1")]),
        3.0
    );
    assert_eq!(
        value(&m, events, &[("kind", "reading"), ("device", "fridge-1")]),
        1.0
    );
}

/// The daemon binary, killed if the test fails half-way.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_reports_to_systemd_and_serves_its_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let mut systemd = FakeSystemd::bind(dir.path());
    let api_port = free_port();
    std::fs::write(dir.path().join("staff.tokens"), "staff-1\n").unwrap();
    // A shelf nobody answers for (down, and offline after 1 s) and a
    // central that is not there.
    let config = dir.path().join("store.toml");
    std::fs::write(
        &config,
        format!(
            r#"store_id = "store-ops"
data_dir = {data:?}
profiles_dir = {profiles:?}
offline_alert_s = 1
[api]
listen = "127.0.0.1:{api_port}"
token_files = {{ staff = {tokens:?} }}
[central]
url = "http://127.0.0.1:{central}"
max_backoff_s = 1
[[device]]
id = "shelf-a1"
profile = "loadcell-shelf-modbus"
transport = "modbus-tcp"
address = "127.0.0.1:{shelf}"
unit = 1
poll_ms = 1000
slots = {{ 0 = "SKU-1001" }}
"#,
            data = dir.path().join("data"),
            profiles = dir.path().join("profiles"),
            tokens = dir.path().join("staff.tokens"),
            central = free_port(),
            shelf = free_port(),
        ),
    )
    .unwrap();
    let daemon = Daemon(
        Command::new(env!("CARGO_BIN_EXE_storegate"))
            .args(["run", "--config", config.to_str().unwrap()])
            .env("STOREGATE_LOG", "warn")
            .env("NOTIFY_SOCKET", &systemd.path)
            // A 1 s watchdog: reports every 500 ms.
            .env("WATCHDOG_USEC", "1000000")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let ready = systemd.until("READY=1", |m| has_line(m, "READY=1")).await;
    let message = &systemd.log[ready];
    assert!(has_line(message, "WATCHDOG=1"), "{message}");
    assert!(
        message.contains("STATUS=1 device, 0 up; backlog "),
        "{message}"
    );

    // Events through the API, then the daemon's own /metrics.
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{api_port}");
    let answer = http
        .post(format!("{base}/v1/adjustments"))
        .bearer_auth("staff-1")
        .json(&json!({"sku": "SKU-1001", "delta": -2, "reason": "damage", "new_item": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    let deadline = Instant::now() + DEADLINE;
    let m = loop {
        let text = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let m = parse_samples(&text);
        let offline = m.iter().any(|s| {
            s.name == "storegate_alerts_open"
                && s.labels.get("code").map(String::as_str) == Some("device_offline")
                && s.value == 1.0
        });
        if offline && value(&m, "storegate_sync_failures_total", &[]) >= 1.0 {
            break m;
        }
        assert!(Instant::now() < deadline, "metrics never settled:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        value(
            &m,
            "storegate_events_total",
            &[("kind", "adjustment"), ("device", "api")]
        ),
        1.0
    );
    assert_eq!(
        value(&m, "storegate_device_up", &[("device", "shelf-a1")]),
        0.0
    );
    assert_eq!(value(&m, "storegate_central_online", &[]), 0.0);
    assert!(value(&m, "storegate_backlog_events", &[]) >= 2.0);

    systemd
        .until("a status with central offline", |m| {
            has_line(m, "WATCHDOG=1") && m.contains("; central offline")
        })
        .await;

    let pid = daemon.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    systemd
        .until("STOPPING=1", |m| has_line(m, "STOPPING=1"))
        .await;
    let mut daemon = daemon;
    let exit = tokio::task::spawn_blocking(move || {
        let status = daemon.0.wait();
        (daemon, status)
    })
    .await
    .unwrap()
    .1
    .unwrap();
    assert!(exit.success(), "exit status {exit}");
    assert_eq!(systemd.count("READY=1"), 1, "{:#?}", systemd.log);
}

/// `systemd-analyze verify` on the unit (with ExecStart pointing at the
/// binary just built, as verify checks that it exists), and the sandboxing
/// score of `systemd-analyze security`.
#[test]
fn the_unit_file_verifies_and_is_sandboxed() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("skipping: systemd-analyze not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("storegate.service");
    let text = std::fs::read_to_string("systemd/storegate.service").unwrap();
    assert!(text.contains("ExecStart=/usr/bin/storegate run"), "{text}");
    std::fs::write(
        &unit,
        text.replace("/usr/bin/storegate", env!("CARGO_BIN_EXE_storegate")),
    )
    .unwrap();

    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Warnings (an unknown key, say) do not fail verify; they name the unit.
    let about_unit: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("storegate.service"))
        .collect();
    assert!(
        out.status.success() && about_unit.is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        out.status
    );

    let out = Command::new("systemd-analyze")
        .args(["security", "--no-pager", "--offline=yes"])
        .arg(&unit)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let exposure: f64 = stdout
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for storegate.service: "))
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no exposure level from systemd-analyze security:\n{stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    println!("systemd-analyze security: exposure {exposure}");
    assert!(exposure <= 2.0, "exposure {exposure}:\n{stdout}");
}

/// `/metrics` is served as what it is, OpenMetrics text, with the build
/// it came from, on whichever listener serves it: the main one, or
/// `api.ops_listen` when that is set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_openmetrics_with_build_info_on_either_listener() {
    let http = reqwest::Client::new();
    for ops in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (main_port, ops_port) = (free_port(), free_port());
        let config = dir.path().join("store.toml");
        let ops_line = if ops {
            format!("ops_listen = \"127.0.0.1:{ops_port}\"\n")
        } else {
            String::new()
        };
        std::fs::write(
            &config,
            format!(
                "store_id = \"store-m\"\ndata_dir = {:?}\nprofiles_dir = {:?}\n[api]\nlisten = \"127.0.0.1:{main_port}\"\n{ops_line}[mqtt]\nbroker = \"mqtt://127.0.0.1:{}\"\n",
                dir.path().join("data"),
                dir.path().join("profiles"),
                free_port()
            ),
        )
        .unwrap();
        let mut agent = common::Agent::start(&config, dir.path().join("agent.log"));
        agent.wait_log("storegate is running");
        let port = if ops { ops_port } else { main_port };
        let response = http
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "ops listener: {ops}");
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            "ops listener: {ops}"
        );
        let text = response.text().await.unwrap();
        // What makes it OpenMetrics rather than Prometheus 0.0.4 text.
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(text.contains("# TYPE storegate_build info\n"), "{text}");
        let build = format!(
            "storegate_build_info{{version=\"{}\",target=\"{}-{}\",profile=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::ARCH,
            std::env::consts::OS,
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
        );
        assert!(text.contains(&build), "expected {build:?} in:\n{text}");
        agent.kill();
    }
}
