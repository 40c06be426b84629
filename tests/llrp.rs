//! The `llrp` transport against llrpkit's reader emulator (`llrpkit
//! emulate`, a real LLRP server on a TCP port): the set-up sequence is
//! accepted, tag reads reach the journal with their antenna's zone, a
//! reader killed and restarted reads again without restarting storegate,
//! and a reader that stops answering (SIGSTOP: no keepalives) is marked
//! down and comes back after SIGCONT. Also: what our encoder writes is
//! decoded by llrpkit's independent decoder (tests/llrp/crosscheck.py).
//!
//! Needs a Python venv with llrpkit (and sllurp): scripts/test.sh makes
//! it in target/llrp-venv; `LLRP_VENV` points elsewhere. Without it the
//! tests fail saying so; they never pass silently.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::certs::{ca, signed};
use common::{Store, free_port, wait_within};
use storegate::codecs::llrp::encode::{self, InventoryPlan};
use storegate::devices::{antenna_watch, run_device};
use storegate::event::{AlertState, EventBody, TagTransition};

/// The venv's `bin/`, or a panic telling how to make it.
fn venv_bin() -> PathBuf {
    let venv = std::env::var_os("LLRP_VENV").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/llrp-venv"),
        PathBuf::from,
    );
    let bin = venv.join("bin");
    assert!(
        bin.join("llrpkit").exists(),
        "no llrpkit in {}: run `python3 -m venv target/llrp-venv && target/llrp-venv/bin/pip install llrpkit sllurp` \
         (scripts/test.sh does), or set LLRP_VENV to a venv that has it",
        venv.display()
    );
    bin
}

/// `llrpkit emulate` on `port`: a reader with `tags` tags, tag i on
/// antenna 1 + i % 4 (llrpkit's default population).
struct Emulator {
    child: Child,
}

impl Emulator {
    fn start(port: u16, tags: u32) -> Emulator {
        let child = Command::new(venv_bin().join("llrpkit"))
            .args([
                "emulate",
                "--port",
                &port.to_string(),
                "--tags",
                &tags.to_string(),
            ])
            .args(["--rate", "100", "--antennas", "4"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start llrpkit emulate");
        let e = Emulator { child };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "llrpkit emulate did not listen on {port} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // That probe was a client: let the emulator see it leave before
        // the agent connects (it serves one client at a time).
        std::thread::sleep(Duration::from_millis(300));
        e
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill {sig} failed");
    }

    /// kill -9: the reader's power goes.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return; // already reaped: its pid may belong to another process
        }
        // A stopped process still dies of SIGKILL; no SIGCONT needed.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// llrpkit's default EPC of tag `i`.
fn epc(i: u16) -> String {
    format!("E2000017010B01621000{i:04X}")
}

fn arrivals(store: &Store) -> Vec<TagTransition> {
    store
        .events()
        .into_iter()
        .filter_map(|e| match e.body {
            EventBody::TagArrived(t) => Some(t),
            _ => None,
        })
        .collect()
}

fn device_toml(port: u16, extra: &str) -> String {
    format!(
        "id = \"dock\"\nprofile = \"impinj-r700-llrp\"\ntransport = \"llrp\"\n\
         address = \"127.0.0.1:{port}\"\nzone = \"store\"\n\
         zones = {{ 1 = \"salesfloor\", 2 = \"fitting-rooms\", 3 = \"backroom\" }}\n{extra}"
    )
}

fn is_up(store: &Store) -> Option<()> {
    store.health.get("dock").filter(|h| h.up).map(|_| ())
}

fn health_text(store: &Store) -> String {
    format!("{:?}", store.health.get("dock"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_carry_their_antennas_zone_and_resume_after_a_reader_reboot() {
    let store = Store::new();
    let port = free_port();
    let emulator = Emulator::start(port, 4);
    let spec = store.device(&device_toml(port, ""), None);
    let task = tokio::spawn(run_device(
        spec,
        store.ingest.clone(),
        None,
        store.shutdown.clone(),
    ));

    let first = wait_within("4 tags to arrive", Duration::from_secs(60), || {
        let a = arrivals(&store);
        (a.len() >= 4).then_some(a)
    })
    .await;
    let zone_of = |arrived: &[TagTransition], e: &str| {
        arrived
            .iter()
            .find(|t| t.epc == e)
            .map(|t| (t.zone.clone(), t.antenna, t.reader.clone()))
    };
    // Tag i is on antenna 1 + i % 4; antenna 4 has no zone of its own.
    assert_eq!(
        zone_of(&first, &epc(0)),
        Some(("salesfloor".into(), Some(1), "dock".into()))
    );
    assert_eq!(
        zone_of(&first, &epc(1)),
        Some(("fitting-rooms".into(), Some(2), "dock".into()))
    );
    assert_eq!(
        zone_of(&first, &epc(2)),
        Some(("backroom".into(), Some(3), "dock".into()))
    );
    assert_eq!(
        zone_of(&first, &epc(3)),
        Some(("store".into(), Some(4), "dock".into()))
    );
    assert!(first.iter().all(|t| t.rssi_dbm.is_some()), "{first:?}");
    assert!(is_up(&store).is_some(), "{}", health_text(&store));

    // Power off: the agent notices the closed connection.
    emulator.kill();
    wait_within("the reader to be down", Duration::from_secs(30), || {
        store.health.get("dock").filter(|h| !h.up).map(|_| ())
    })
    .await;
    // It reboots, with more tags in the field now: tags 4-7 can only
    // arrive if the agent reconnected and set the ROSpec up again.
    let _rebooted = Emulator::start(port, 8);
    let all = wait_within(
        "tags 4-7 after the reader rebooted",
        Duration::from_secs(90),
        || {
            let a = arrivals(&store);
            (4..8)
                .all(|i| a.iter().any(|t| t.epc == epc(i)))
                .then_some(a)
        },
    )
    .await;
    assert_eq!(
        zone_of(&all, &epc(5)),
        Some(("fitting-rooms".into(), Some(2), "dock".into()))
    );
    assert!(is_up(&store).is_some(), "{}", health_text(&store));
    assert!(store.quarantine().is_empty(), "{:?}", store.quarantine());

    drop(store);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("device task ends on shutdown")
        .unwrap();
}

/// socat terminating TLS on `port` with `reader.pem` from `dir` in front
/// of the emulator on `plain`, as a reader with LLRP over TLS; killed
/// when dropped.
struct TlsTerminator(Child);

impl TlsTerminator {
    fn start(dir: &std::path::Path, port: u16, plain: u16) -> TlsTerminator {
        let child = Command::new("socat")
            .current_dir(dir)
            .arg(format!(
                "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert=reader.pem,key=reader.key,verify=0"
            ))
            .arg(format!("TCP:127.0.0.1:{plain}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat is needed for this test (apt-get install socat)");
        // No probe: a probe would be a TLS client that never finishes.
        std::thread::sleep(Duration::from_millis(500));
        TlsTerminator(child)
    }
}

impl Drop for TlsTerminator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llrp_over_tls_reads_with_the_readers_ca_and_says_why_not_with_another() {
    let dir = tempfile::tempdir().unwrap();
    ca(dir.path(), "ca");
    ca(dir.path(), "other-ca");
    signed(
        dir.path(),
        "reader",
        "ca",
        "subjectAltName = IP:127.0.0.1\nextendedKeyUsage = serverAuth\n",
    );
    let (plain, port) = (free_port(), free_port());
    let _emulator = Emulator::start(plain, 4);
    let _terminator = TlsTerminator::start(dir.path(), port, plain);
    let tls = |ca: &str| {
        format!(
            "tls = true\nca_file = \"{}\"\n",
            dir.path().join(format!("{ca}.pem")).display()
        )
    };

    // A CA that did not sign the reader's certificate: down, and why.
    let store = Store::new();
    let spec = store.device(&device_toml(port, &tls("other-ca")), None);
    let task = tokio::spawn(run_device(
        spec,
        store.ingest.clone(),
        None,
        store.shutdown.clone(),
    ));
    let error = wait_within(
        "the TLS refusal in device health",
        Duration::from_secs(30),
        || {
            store
                .health
                .get("dock")
                .and_then(|h| h.last_error)
                .filter(|e| e.contains("TLS handshake failed"))
        },
    )
    .await;
    assert!(
        error.contains("UnknownIssuer") && error.contains("ca_file"),
        "{error}"
    );
    assert!(is_up(&store).is_none(), "{}", health_text(&store));
    assert!(arrivals(&store).is_empty());
    drop(store);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("device task ends on shutdown")
        .unwrap();

    // The reader's CA: every tag arrives over TLS.
    let store = Store::new();
    let spec = store.device(&device_toml(port, &tls("ca")), None);
    let task = tokio::spawn(run_device(
        spec,
        store.ingest.clone(),
        None,
        store.shutdown.clone(),
    ));
    wait_within("4 tags over TLS", Duration::from_secs(60), || {
        (arrivals(&store).len() >= 4).then_some(())
    })
    .await;
    assert!(is_up(&store).is_some(), "{}", health_text(&store));
    drop(store);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("device task ends on shutdown")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_sends_no_keepalive_is_down_until_it_answers_again() {
    let store = Store::new();
    let port = free_port();
    let emulator = Emulator::start(port, 4);
    let spec = store.device(&device_toml(port, "keepalive_s = 1\n"), None);
    tokio::spawn(run_device(
        spec,
        store.ingest.clone(),
        None,
        store.shutdown.clone(),
    ));
    wait_within("the reader to be up", Duration::from_secs(60), || {
        is_up(&store)
    })
    .await;
    // Several keepalives pass with the connection up: they are acked.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(is_up(&store).is_some(), "{}", health_text(&store));

    // Frozen: TCP stays open, nothing arrives.
    emulator.signal("-STOP");
    let down = wait_within(
        "the frozen reader to be down",
        Duration::from_secs(30),
        || store.health.get("dock").filter(|h| !h.up),
    )
    .await;
    assert!(
        format!("{down:?}").contains("KEEPALIVE"),
        "down for the wrong reason: {down:?}"
    );
    emulator.signal("-CONT");
    wait_within(
        "the reader to be up after SIGCONT",
        Duration::from_secs(90),
        || is_up(&store),
    )
    .await;
}

/// An antenna whose cable is pulled raises `antenna_disconnected` (the
/// reader's AntennaEvent) and `antenna_quiet` after `quiet_after_s` (the
/// other antennas raise neither), both resolved when it is back; the board
/// behind the per-antenna metrics counts reads and RSSI per port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pulled_antenna_goes_quiet_and_reads_again() {
    let store = Store::new();
    let port = free_port();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/llrp/emulator.py");
    let mut emulator = Command::new(venv_bin().join("python"))
        .arg(&script)
        .args([port.to_string(), "4".to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tests/llrp/emulator.py");
    let mut control = emulator.stdin.take().unwrap();
    let mut said = std::io::BufReader::new(emulator.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut said, &mut line).unwrap();
    assert_eq!(line.trim(), "listening", "emulator.py did not start");

    let spec = store.device(&device_toml(port, ""), None);
    tokio::spawn(run_device(
        spec,
        store.ingest.clone(),
        None,
        store.shutdown.clone(),
    ));
    tokio::spawn(antenna_watch::run(
        store.writer.clone(),
        store.health.antennas().clone(),
        // Short, but well above the gaps between reads of one antenna
        // (100 reads/s over 4), even on a loaded machine.
        4,
        store.shutdown.clone(),
    ));
    let board = store.health.antennas().clone();
    let reads_of = |antenna: u16| {
        board
            .snapshot()
            .into_iter()
            .find(|a| a.antenna == antenna)
            .map(|a| a.reads)
            .unwrap_or(0)
    };
    wait_within("reads on all 4 antennas", Duration::from_secs(60), || {
        (1..=4).all(|a| reads_of(a) > 0).then_some(())
    })
    .await;
    let stats = board.snapshot();
    let third = stats.iter().find(|a| a.antenna == 3).unwrap();
    assert_eq!(third.zone, "backroom");
    assert!(
        third
            .rssi_mean_dbm
            .is_some_and(|m| (-80.0..-30.0).contains(&m)),
        "{third:?}"
    );

    writeln!(control, "off 3").unwrap();
    let alert = |code: &'static str, state: AlertState| {
        let store = &store;
        move || {
            store.events().into_iter().find_map(|e| match e.body {
                EventBody::Alert(a) if a.code == code && a.state == state => Some(a),
                _ => None,
            })
        }
    };
    let disconnected = wait_within(
        "antenna_disconnected for antenna 3",
        Duration::from_secs(30),
        alert("antenna_disconnected", AlertState::Open),
    )
    .await;
    assert_eq!(disconnected.subject, "dock/antenna-3");
    let raised = wait_within(
        "antenna_quiet for antenna 3",
        Duration::from_secs(30),
        alert("antenna_quiet", AlertState::Open),
    )
    .await;
    assert_eq!(raised.subject, "dock/antenna-3");
    assert_eq!(raised.context["zone"], "backroom");
    // The other antennas kept reading, so theirs never opened.
    let opened: Vec<String> = store
        .events()
        .into_iter()
        .filter_map(|e| match e.body {
            EventBody::Alert(a) if a.code.starts_with("antenna_") => Some(a.subject),
            _ => None,
        })
        .collect();
    assert_eq!(opened, ["dock/antenna-3", "dock/antenna-3"]);
    let before = reads_of(3);

    writeln!(control, "on 3").unwrap();
    for code in ["antenna_disconnected", "antenna_quiet"] {
        let resolved = wait_within(
            "the antenna alerts resolved",
            Duration::from_secs(30),
            alert(code, AlertState::Resolved),
        )
        .await;
        assert_eq!(resolved.subject, "dock/antenna-3");
    }
    assert!(reads_of(3) > before);
    drop(control);
    let _ = emulator.kill();
    let _ = emulator.wait();
}

/// Every client message we send, decoded by llrpkit: the emulator's own
/// decoder, written independently from the LLRP spec.
#[test]
fn llrpkit_decodes_what_we_encode() {
    let plan = InventoryPlan {
        rospec_id: 0x5347,
        antennas: vec![1, 3],
        power_index: Some(81),
        session: Some(2),
        tag_population: 64,
        mode_index: Some(1002),
        impinj_search_mode: Some(2),
        report_every_n_tags: 5,
    };
    let messages = [
        (
            "get_reader_capabilities",
            encode::get_reader_capabilities(1),
        ),
        ("set_reader_config", encode::set_reader_config(2, 10_000)),
        (
            "impinj_enable_extensions",
            encode::impinj_enable_extensions(3),
        ),
        ("delete_rospec", encode::delete_rospec(4, 0)),
        ("add_rospec", encode::add_rospec(5, &plan)),
        ("enable_rospec", encode::enable_rospec(6, 0x5347)),
        ("start_rospec", encode::start_rospec(7, 0x5347)),
        ("stop_rospec", encode::stop_rospec(8, 0x5347)),
        ("keepalive_ack", encode::keepalive_ack(98)),
        ("close_connection", encode::close_connection(9)),
    ];
    let mut child = Command::new(venv_bin().join("python"))
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/llrp/crosscheck.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run crosscheck.py");
    {
        let mut stdin = child.stdin.take().unwrap();
        for (name, bytes) in &messages {
            writeln!(stdin, "{name} {}", hex::encode(bytes)).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "crosscheck.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decoded: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(decoded.len(), messages.len());
    let by_name = |n: &str| -> &serde_json::Value {
        &decoded.iter().find(|d| d["name"] == n).unwrap()["llrpkit"]
    };
    for d in &decoded {
        assert!(
            d["llrpkit"].get("error").is_none(),
            "llrpkit cannot decode {}: {}",
            d["name"],
            d["llrpkit"]
        );
    }
    assert_eq!(
        by_name("get_reader_capabilities")["_type"],
        "GET_READER_CAPABILITIES"
    );
    let cfg = by_name("set_reader_config");
    assert_eq!(cfg["keepalive_spec"]["periodic_trigger_value"], 10_000);
    assert_eq!(cfg["keepalive_spec"]["keepalive_trigger_type"], 1);
    let states = cfg["reader_event_notification_spec"]["event_notification_states"]
        .as_array()
        .unwrap();
    let events: Vec<_> = states
        .iter()
        .map(|s| s["event_type"].as_u64().unwrap())
        .collect();
    assert_eq!(events, [1, 2, 4, 8]);
    assert!(states.iter().all(|s| s["notification_state"] == true));
    assert_eq!(
        by_name("impinj_enable_extensions")["_type"],
        "IMPINJ_ENABLE_EXTENSIONS"
    );
    assert_eq!(by_name("delete_rospec")["ro_spec_id"], 0);
    assert_eq!(by_name("enable_rospec")["ro_spec_id"], 0x5347);
    assert_eq!(by_name("start_rospec")["ro_spec_id"], 0x5347);
    assert_eq!(by_name("stop_rospec")["ro_spec_id"], 0x5347);
    assert_eq!(by_name("keepalive_ack")["_type"], "KEEPALIVE_ACK");
    assert_eq!(by_name("close_connection")["_type"], "CLOSE_CONNECTION");

    let rospec = &by_name("add_rospec")["ro_spec"];
    assert_eq!(rospec["ro_spec_id"], 0x5347);
    let ai = &rospec["spec_parameters"][0];
    assert_eq!(ai["antenna_ids"], serde_json::json!([1, 3]));
    let inv = &ai["inventory_parameter_specs"][0];
    assert_eq!(inv["protocol_id"], 1);
    let confs = inv["antenna_configurations"].as_array().unwrap();
    assert_eq!(confs.len(), 2);
    for (conf, antenna) in confs.iter().zip([1, 3]) {
        assert_eq!(conf["antenna_id"], antenna);
        assert_eq!(conf["rf_transmitter"]["transmit_power"], 81);
        let cmd = &conf["air_protocol_inventory_command_settings"][0];
        assert_eq!(cmd["c1_g2_singulation_control"]["session"], 2);
        assert_eq!(cmd["c1_g2_singulation_control"]["tag_population"], 64);
        assert_eq!(cmd["c1_g2_rf_control"]["mode_index"], 1002);
        assert_eq!(cmd["custom"][0]["_type"], "ImpinjInventorySearchMode");
        assert_eq!(cmd["custom"][0]["inventory_search_mode"], 2);
    }
    let report = &rospec["ro_report_spec"];
    assert_eq!(report["ro_report_trigger"], 2);
    assert_eq!(report["n"], 5);
    let sel = &report["tag_report_content_selector"];
    for on in [
        "enable_antenna_id",
        "enable_peak_rssi",
        "enable_first_seen_timestamp",
        "enable_last_seen_timestamp",
        "enable_tag_seen_count",
    ] {
        assert_eq!(sel[on], true, "{on} in {sel}");
    }
    for off in [
        "enable_ro_spec_id",
        "enable_channel_index",
        "enable_access_spec_id",
    ] {
        assert_eq!(sel[off], false, "{off} in {sel}");
    }
}
