//! The technician's first hour, as the log shows it: `storegate run` with
//! an MQTT device on the embedded broker logs no ERROR when nothing is
//! wrong, writes no colour codes where stderr is not a terminal (nor with
//! NO_COLOR at one), and a device that never comes up is logged at WARN
//! once with its reason, not at every retry.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Agent, free_port};

/// A store with the embedded broker, one MQTT device, and `extra`.
fn config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("store.toml");
    std::fs::write(
        &path,
        format!(
            "store_id = \"store-t\"\ndata_dir = {:?}\nprofiles_dir = {:?}\n\
             [api]\nlisten = \"127.0.0.1:0\"\n\
             [mqtt]\nembedded_listen = \"127.0.0.1:{}\"\n\
             [[device]]\nid = \"pos-1\"\nprofile = \"pos-json\"\ntransport = \"mqtt\"\ntopic = \"store/pos/1\"\n{extra}",
            dir.join("data"),
            dir.join("profiles"),
            free_port()
        ),
    )
    .unwrap();
    path
}

fn start(dir: &Path, extra: &str, log_filter: &str) -> Agent {
    let path = config(dir, extra);
    let log = dir.join("agent.log");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_storegate"))
        .arg("run")
        .arg("--config")
        .arg(&path)
        .env("STOREGATE_LOG", log_filter)
        .env_remove("NO_COLOR")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Agent { child, log }
}

/// Lines of the log containing every one of `parts`.
fn count(log: &str, parts: &[&str]) -> usize {
    log.lines()
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .count()
}

#[test]
fn a_start_with_an_mqtt_device_logs_no_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = start(dir.path(), "", "info");
    agent.wait_log("storegate is running");
    agent.wait_log("MQTT device subscribed");
    // Whatever the broker logs about its connections has been logged by
    // now (the probe's and the agent's came before the subscription).
    std::thread::sleep(Duration::from_secs(1));
    let log = std::fs::read_to_string(&agent.log).unwrap();
    assert!(
        log.contains("embedded MQTT broker is listening"),
        "the embedded broker ran:\n{log}"
    );
    assert_eq!(count(&log, &["ERROR"]), 0, "no ERROR at start:\n{log}");
}

#[test]
fn the_log_has_no_colour_codes_when_stderr_is_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = start(dir.path(), "", "info");
    agent.wait_log("storegate is running");
    let bytes = std::fs::read(&agent.log).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains(" INFO "), "levels are written:\n{text}");
    assert!(
        !bytes.contains(&0x1b),
        "an ESC byte in a log that is a file:\n{text:?}"
    );
}

/// What `storegate rebuild` (which logs the schema migrations at INFO)
/// writes to a real terminal: `script` (util-linux, in every Debian) runs
/// it on a pseudo-terminal and copies what it wrote.
fn on_a_terminal(dir: &Path, no_color: bool) -> Vec<u8> {
    let path = dir.join(format!("store-{no_color}.toml"));
    std::fs::write(
        &path,
        format!(
            "store_id = \"store-t\"\ndata_dir = {:?}\n",
            dir.join(format!("data-{no_color}"))
        ),
    )
    .unwrap();
    let command = format!(
        "{} rebuild --config {}",
        env!("CARGO_BIN_EXE_storegate"),
        path.display()
    );
    let mut script = std::process::Command::new("script");
    script
        .args(["-qec", &command, "/dev/null"])
        .env("STOREGATE_LOG", "info");
    if no_color {
        script.env("NO_COLOR", "1");
    } else {
        script.env_remove("NO_COLOR");
    }
    let out = script.output().expect("running script(1)");
    assert!(out.status.success(), "{out:?}");
    out.stdout
}

#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    let dir = tempfile::tempdir().unwrap();
    let coloured = on_a_terminal(dir.path(), false);
    let text = String::from_utf8_lossy(&coloured);
    assert!(text.contains("INFO"), "it logged:\n{text:?}");
    assert!(coloured.contains(&0x1b), "colour at a terminal:\n{text:?}");
    let plain = on_a_terminal(dir.path(), true);
    let text = String::from_utf8_lossy(&plain);
    assert!(text.contains("INFO"), "it logged:\n{text:?}");
    assert!(!plain.contains(&0x1b), "NO_COLOR=1:\n{text:?}");
}

#[test]
fn a_device_that_never_comes_up_is_warned_about_once_not_at_every_retry() {
    let dir = tempfile::tempdir().unwrap();
    // A Modbus TCP address nobody listens on: every attempt is refused at
    // once, and the runner retries with backoff from 0.5 s.
    let fridge = format!(
        "[[device]]\nid = \"fridge-1\"\nprofile = \"xy-md02\"\ntransport = \"modbus-tcp\"\naddress = \"127.0.0.1:{}\"\n",
        free_port()
    );
    // Debug for the runner, to see the retries the WARN is not repeated at.
    let mut agent = start(dir.path(), &fridge, "info,storegate::devices=debug");
    agent.wait_log("storegate is running");
    let started = Instant::now();
    let window = Duration::from_secs(8);
    let deadline = started + Duration::from_secs(120);
    // At least three retries inside the window (the backoff ceiling
    // doubles from 0.5 s, so about 8 s gives 4 to 5), however slow the
    // machine: the window is extended until they have happened.
    let log = loop {
        let log = std::fs::read_to_string(&agent.log).unwrap();
        let retries = count(&log, &["fridge-1", "device still down"]);
        if started.elapsed() >= window && retries >= 3 {
            break log;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than 3 retries of fridge-1 in 120 s:\n{}",
            agent.last_log_lines(40)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let warns: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") && l.contains("fridge-1"))
        .collect();
    assert_eq!(warns.len(), 1, "one WARN for the outage:\n{log}");
    assert!(
        warns[0].contains("device down") && warns[0].contains("127.0.0.1"),
        "the WARN says what is down and why: {}",
        warns[0]
    );
}
