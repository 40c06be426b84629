//! The `storegate` binary as an operator uses it.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn storegate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_storegate"))
        .args(args)
        .env("STOREGATE_LOG", "info")
        .output()
        .unwrap()
}

fn write_config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("store.toml");
    std::fs::write(
        &path,
        format!(
            "store_id = \"store-t\"\ndata_dir = {:?}\nprofiles_dir = {:?}\n{extra}",
            dir.join("data"),
            dir.join("profiles")
        ),
    )
    .unwrap();
    path
}

#[test]
fn check_accepts_the_example_config_and_lists_its_devices() {
    let out = storegate(&["check", "--config", "examples/store.toml"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("store      store-0042"), "{stdout}");
    assert!(stdout.contains("devices    6"), "{stdout}");
    for id in [
        "door-reader",
        "handheld-uhf",
        "shelf-a1",
        "fridge-1",
        "pos-1",
        "esl",
    ] {
        assert!(stdout.contains(id), "{id} missing from:\n{stdout}");
    }
}

/// `storegate check | head`: when the reader of its output goes away the
/// command ends by SIGPIPE, as any Unix tool does, not with a panic. The
/// pipe is closed before the command starts, so its first write fails.
#[test]
fn a_closed_pipe_ends_check_and_status_by_sigpipe_not_a_panic() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let missing_db = write_config(dir.path(), "");
    for args in [
        vec!["check", "--config", "examples/store.toml"],
        vec!["status", "--config", missing_db.to_str().unwrap()],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_storegate"))
            .args(&args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        if args[0] == "check" {
            assert_eq!(out.status.signal(), Some(13), "{args:?}: {stderr}");
        } else {
            // No database yet: nothing reaches stdout; the reason is said
            // once, with what to do.
            assert_eq!(out.status.code(), Some(1), "{stderr}");
            assert_eq!(stderr.matches("no database at").count(), 1, "{stderr}");
            assert!(stderr.contains("storegate run"), "{stderr}");
        }
    }
}

#[test]
fn check_lists_every_problem_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "durability = \"maybe\"\n[api]\nlisten = \"nowhere\"\n[[device]]\nid = \"x\"\nprofile = \"nope\"\ntransport = \"mqtt\"\n",
    );
    let out = storegate(&["check", "--config", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "EX_CONFIG\n{stderr}");
    let file = path.display().to_string();
    for expected in [
        format!("{file}: 4 problems"),
        format!("{file}:4 durability: \"maybe\" is not allowed; use one of \"full\", \"normal\""),
        format!("{file}:6 api.listen: \"nowhere\" is not an address"),
        format!("{file}:9 device \"x\": profile: unknown profile \"nope\""),
        format!("{file}:7 device \"x\": topic: missing; add e.g. topic ="),
    ] {
        assert!(
            stderr.contains(&expected),
            "expected {expected:?} in:\n{stderr}"
        );
    }
}

/// `storegate check` on `device_toml` after a valid head: (exit code,
/// stderr, the config's path as printed).
fn check_devices(device_toml: &str) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), device_toml);
    let out = storegate(&["check", "--config", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code(), stderr, path.display().to_string())
}

#[test]
fn check_names_a_device_by_line_and_id_and_reports_a_profile_mismatch_with_the_rest() {
    // Line 4 on: a typo at the top and a device whose profile cannot work
    // over its transport. The mismatch used to be reported only once
    // everything else was fixed.
    let (code, stderr, file) = check_devices(
        "durabilty = \"full\"\n\n[[device]]\nid = \"pos-3\"\nprofile = \"uhf-m100-serial\"\ntransport = \"mqtt\"\ntopic = \"store/pos\"\n",
    );
    assert_eq!(code, Some(78), "{stderr}");
    for expected in [
        format!("{file}: 2 problems"),
        format!("{file}:4 durabilty: unknown key; did you mean \"durability\"?"),
        format!(
            "{file}:9 device \"pos-3\": transport: profile \"uhf-m100-serial\" uses the m100 codec, which does not work over mqtt; use transport = \"serial\""
        ),
    ] {
        assert!(
            stderr.contains(&expected),
            "expected {expected:?} in:\n{stderr}"
        );
    }
}

#[test]
fn check_rejects_modbus_rtu_unit_0_the_broadcast_address() {
    let (code, stderr, file) = check_devices(
        "[[device]]\nid = \"fridge-1\"\nprofile = \"xy-md02\"\ntransport = \"modbus-rtu\"\nport = \"/dev/null\"\nbaud = 9600\nunit = 0\n",
    );
    assert_eq!(code, Some(78), "{stderr}");
    let expected = format!(
        "{file}:10 device \"fridge-1\": unit: 0 is the Modbus broadcast address: no device answers it; set the device's own address, 1 to 247"
    );
    assert!(
        stderr.contains(&expected),
        "expected {expected:?} in:\n{stderr}"
    );
    // Over TCP, unit 0 addresses the gateway itself and stays allowed.
    let (code, stderr, _) = check_devices(
        "[[device]]\nid = \"fridge-1\"\nprofile = \"xy-md02\"\ntransport = \"modbus-tcp\"\naddress = \"127.0.0.1:502\"\nunit = 0\n",
    );
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn check_rejects_an_unknown_locale_and_names_the_known_ones() {
    let (code, stderr, file) = check_devices("locale = \"xx-YY\"\n");
    assert_eq!(code, Some(78), "{stderr}");
    let expected = format!("{file}:4 locale: unknown locale \"xx-YY\"; use a known language");
    assert!(
        stderr.contains(&expected),
        "expected {expected:?} in:\n{stderr}"
    );
    assert!(
        stderr.contains("known languages: de, en, es, fr, it, ja, nl, pl, sv"),
        "{stderr}"
    );
    let (code, stderr, _) = check_devices("locale = \"de-AT\"\n");
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn check_warns_of_a_missing_serial_port_and_lists_the_ports_there_are() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("ttyUSB-not-plugged");
    // A real pseudo-terminal for the neighbour: an existing port is fine.
    let pty = common::PtyPair::new(dir.path(), "reader");
    let path = write_config(
        dir.path(),
        &format!(
            "[[device]]\nid = \"door\"\nprofile = \"uhf-m100-serial\"\ntransport = \"serial\"\nport = {missing:?}\n\n[[device]]\nid = \"handheld\"\nprofile = \"uhf-m100-serial\"\ntransport = \"serial\"\nport = {:?}\n",
            pty.agent
        ),
    );
    let out = storegate(&["check", "--config", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "a warning, not a failure:\n{stderr}");
    let file = path.display();
    let expected = format!(
        "warning: {file}:8 device \"door\": port: {} does not exist (yet); ",
        missing.display()
    );
    assert!(
        stderr.contains(&expected),
        "expected {expected:?} in:\n{stderr}"
    );
    assert_eq!(stderr.matches("warning:").count(), 1, "{stderr}");
    // The ports this machine has, as serialport and /dev/serial/by-id see
    // them, each named; or that there are none.
    let ports = storegate::devices::serial_ports::available();
    if ports.is_empty() {
        assert!(
            stderr.contains("this machine has no serial ports"),
            "{stderr}"
        );
    } else {
        assert!(
            stderr.contains("serial ports on this machine: "),
            "{stderr}"
        );
        for p in &ports {
            assert!(p.path.exists(), "{}", p.path.display());
            assert!(
                stderr.contains(&p.to_string()),
                "{p} not listed in:\n{stderr}"
            );
        }
    }
    assert!(
        stderr.contains("plug the device in or correct port"),
        "{stderr}"
    );
}

#[test]
fn a_missing_config_file_is_named() {
    let out = storegate(&["check", "--config", "/nonexistent/store.toml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("/nonexistent/store.toml: cannot read the file"),
        "{stderr}"
    );
}

#[test]
fn run_stops_cleanly_on_sigterm_and_status_reads_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    // Port 0: tests run in parallel and must not fight over 8080.
    let path = write_config(dir.path(), "[api]\nlisten = \"127.0.0.1:0\"\n");
    let mut child = Command::new(env!("CARGO_BIN_EXE_storegate"))
        .args(["run", "--config", path.to_str().unwrap()])
        .env("STOREGATE_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let started = Instant::now();
    loop {
        let line = lines.next().expect("daemon exited early").unwrap();
        if line.contains("storegate is running") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "daemon did not start"
        );
    }

    let status = storegate(&["status", "--config", path.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(text.contains("journal    head seq 0"), "{text}");
    assert!(text.contains("backlog 0"), "{text}");

    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let exit = child.wait().unwrap();
    assert!(exit.success(), "exit status {exit}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        rest.iter().any(|l| l.contains("stopped cleanly")),
        "{rest:?}"
    );
}

#[test]
fn run_refuses_a_bad_config_without_starting_anything() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "typo_key = 1\n");
    let out = storegate(&["run", "--config", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // EX_CONFIG: systemd does not restart it (RestartPreventExitStatus=78).
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:4 typo_key: unknown key", path.display())),
        "{stderr}"
    );
    assert!(
        !dir.path().join("data").exists(),
        "nothing may be created for a bad config"
    );
}

#[test]
fn version_and_help_with_examples() {
    let out = storegate(&["--version"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("storegate "));
    let out = storegate(&["--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("Examples:") && help.contains("storegate check --config"),
        "{help}"
    );
}

#[tokio::test]
async fn import_export_rebuild_and_status_on_a_real_database() {
    use storegate::event::{EventBody, NewEvent, StockReceipt, now_millis};
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "");
    let config = path.to_str().unwrap();
    // A price book, store-only.
    let book = dir.path().join("prices.json");
    std::fs::write(
        &book,
        r#"{"version": 3, "items": [{"sku": "SKU-1", "gtins": ["04006381333931"], "name": "Oat milk",
            "price_minor": 249, "currency": "EUR", "effective_from": "2026-01-01T00:00:00.000Z",
            "labels": ["L-1"], "min_stock": 2}], "removed": []}"#,
    )
    .unwrap();
    let out = storegate(&[
        "import",
        "prices",
        book.to_str().unwrap(),
        "--config",
        config,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("imported price book version 3: 1 items")
    );
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"items\": 5}").unwrap();
    let out = storegate(&[
        "import",
        "prices",
        bad.to_str().unwrap(),
        "--config",
        config,
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a price book"));

    // Three receipts journaled through the library.
    {
        let conn = storegate::db::open_write(
            &dir.path().join("data/storegate.db"),
            storegate::config::Durability::Full,
        )
        .unwrap();
        let (writer, thread) =
            storegate::db::Writer::spawn(conn, Box::new(storegate::domain::Projections::default()))
                .unwrap();
        for i in 0..3 {
            let body = EventBody::Receipt(StockReceipt {
                delivery_id: format!("D-{i}"),
                sku: "SKU-1".into(),
                qty: 5,
            });
            writer
                .append(vec![NewEvent::new(now_millis(), "api", body)])
                .await
                .unwrap();
        }
        drop(writer);
        thread.join();
    }
    let out = storegate(&["export", "--since", "1", "--config", config]);
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0]["seq"], 2);
    assert_eq!(lines[0]["kind"], "receipt");
    assert_eq!(lines[1]["data"]["delivery_id"], "D-2");

    let out = storegate(&["rebuild", "--config", config]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("rebuilt projections from 3 journal events")
    );
    let out = storegate(&["status", "--config", config]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("journal    head seq 3"), "{text}");
    assert!(
        text.contains("labels     0 ok, 1 pending, 0 failed"),
        "{text}"
    );
    assert!(
        text.contains("sync       acked through 0, backlog 3, price version 3"),
        "{text}"
    );
    assert!(
        text.contains("pickups    0 to pick, 0 ready for the customer, 0 to put back on the shelf; orders version 0"),
        "{text}"
    );
    assert!(text.contains("receipt"), "{text}");
}
