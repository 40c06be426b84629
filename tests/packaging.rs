//! What the Debian packages carry, checked from the source tree: the
//! systemd unit's device access and restart policy (issue 19, point 4),
//! the simulators' drop-in, the man pages and completions the binary
//! generates, and the config shipped in /etc refused until it is edited.
//! `scripts/package-test.sh` installs the real package with dpkg.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const UNIT: &str = "systemd/storegate.service";
const DROP_IN: &str = "packaging/simulators.conf";

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Values of `key=` lines, comments skipped.
fn values(text: &str, key: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(|v| v.trim().to_string())
        .collect()
}

fn systemd_analyze_missing() -> bool {
    let missing = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err();
    if missing {
        println!("skipping: systemd-analyze not installed");
    }
    missing
}

/// A configuration error exits 78 (EX_CONFIG): restarting cannot fix it,
/// so systemd must not loop on it while other failures are restarted.
#[test]
fn the_unit_does_not_restart_on_a_config_error() {
    let unit = read(UNIT);
    assert_eq!(values(&unit, "Restart"), ["on-failure"], "{unit}");
    assert_eq!(values(&unit, "RestartPreventExitStatus"), ["78"], "{unit}");
}

/// The agent reaches serial lines only: x86 UARTs, the SoC UARTs of ARM
/// gateways, USB serial adapters; no pseudo-terminals in the store unit.
#[test]
fn the_unit_allows_serial_lines_and_no_pseudo_terminals() {
    let unit = read(UNIT);
    assert_eq!(values(&unit, "DevicePolicy"), ["closed"], "{unit}");
    let allowed: BTreeSet<String> = values(&unit, "DeviceAllow").into_iter().collect();
    let expected: BTreeSet<String> = ["ttyS", "ttyAMA", "ttymxc", "ttyUSB", "ttyACM"]
        .iter()
        .map(|g| format!("char-{g} rw"))
        .collect();
    assert_eq!(allowed, expected, "DeviceAllow= in {UNIT}");
}

/// The drop-in for simulated devices adds pseudo-terminals and nothing
/// else, and systemd loads it beside the unit without a warning.
#[test]
fn the_simulators_drop_in_adds_pseudo_terminals() {
    let drop_in = read(DROP_IN);
    assert_eq!(
        values(&drop_in, "DeviceAllow"),
        ["char-pts rw"],
        "{drop_in}"
    );
    let settings: Vec<&str> = drop_in
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(settings, ["[Service]", "DeviceAllow=char-pts rw"]);

    if systemd_analyze_missing() {
        return;
    }
    // The unit and its drop-in in a unit directory of their own, with
    // ExecStart on the binary just built (verify checks it exists).
    let dir = tempfile::tempdir().unwrap();
    let unit = read(UNIT).replace("/usr/bin/storegate", env!("CARGO_BIN_EXE_storegate"));
    std::fs::write(dir.path().join("storegate.service"), unit).unwrap();
    std::fs::create_dir(dir.path().join("storegate.service.d")).unwrap();
    std::fs::write(
        dir.path().join("storegate.service.d/simulators.conf"),
        &drop_in,
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg("storegate.service")
        // The trailing ':' keeps the built-in search path after ours.
        .env("SYSTEMD_UNIT_PATH", format!("{}:", dir.path().display()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("storegate.service"),
        "systemd-analyze verify with the drop-in: {}\n{stderr}",
        out.status
    );
}

/// `storegate generate` writes the man pages and completions the package
/// ships: one page per visible command, none for hidden tools.
#[test]
fn generate_writes_man_pages_and_completions() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_storegate");
    for what in ["man", "completions"] {
        let out = Command::new(bin)
            .args(["generate", what, "--out"])
            .arg(dir.path().join(what))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "generate {what}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let man = dir.path().join("man");
    for page in ["storegate.1", "storegate-run.1", "storegate-check.1"] {
        let text =
            std::fs::read_to_string(man.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        let title = format!(".TH {} 1 ", page.trim_end_matches(".1"));
        assert!(text.contains(&title), "{page} lacks {title:?}:\n{text}");
    }
    let pages: Vec<String> = std::fs::read_dir(&man)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !pages
            .iter()
            .any(|p| p.contains("generate") || p.contains("debug")),
        "pages for hidden commands: {pages:?}"
    );
    let check = std::fs::read_to_string(man.join("storegate-check.1")).unwrap();
    assert!(
        check.contains("\\-\\-config"),
        "storegate-check.1 lacks --config:\n{check}"
    );

    let completions = dir.path().join("completions");
    for (file, shell_word) in [
        ("storegate.bash", "complete -F"),
        ("_storegate", "#compdef storegate"),
        ("storegate.fish", "complete -c storegate"),
    ] {
        let text = std::fs::read_to_string(completions.join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(text.contains(shell_word), "{file} lacks {shell_word:?}");
        assert!(text.contains("check"), "{file} does not complete `check`");
    }
}

/// The config installed in /etc must not start a store by accident: it is
/// refused until store_id is set, with a message saying so, and accepted
/// once it is (the rest of it is a working store-only set-up).
#[test]
fn the_shipped_config_is_refused_until_store_id_is_set() {
    let bin = env!("CARGO_BIN_EXE_storegate");
    let shipped = "packaging/storegate.toml";
    let out = Command::new(bin)
        .args(["check", "--config", shipped])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the shipped config passed check");
    assert!(stderr.contains("store_id: missing"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let edited = read(shipped)
        .replace("# store_id = \"store-0042\"", "store_id = \"store-0042\"")
        .replace(
            "# data_dir = \"/var/lib/storegate\"",
            &format!("data_dir = {:?}", dir.path().join("data")),
        )
        .replace(
            "# profiles_dir = \"/usr/share/storegate/firmware-profiles\"",
            &format!(
                "profiles_dir = {:?}",
                Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-profiles")
            ),
        );
    let config = dir.path().join("storegate.toml");
    std::fs::write(&config, edited).unwrap();
    let out = Command::new(bin)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the edited config is refused:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
