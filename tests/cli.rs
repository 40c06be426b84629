//! The `storegate` binary as an operator uses it.

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

#[test]
fn check_lists_every_problem_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "durability = \"maybe\"\n[api]\nlisten = \"nowhere\"\n[[device]]\nid = \"x\"\nprofile = \"nope\"\ntransport = \"mqtt\"\n",
    );
    let out = storegate(&["check", "--config", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let file = path.display().to_string();
    for expected in [
        format!("{file}: 4 problems"),
        format!("{file}: durability: \"maybe\" is not allowed; use one of \"full\", \"normal\""),
        format!("{file}: api.listen: \"nowhere\" is not an address"),
        format!("{file}: device[0].profile: unknown profile \"nope\""),
        format!("{file}: device[0].topic: missing; add e.g. topic ="),
    ] {
        assert!(
            stderr.contains(&expected),
            "expected {expected:?} in:\n{stderr}"
        );
    }
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
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("typo_key: unknown key"), "{stderr}");
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
