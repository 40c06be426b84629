//! Shared test harness: a real store (SQLite on disk, the writer with the
//! domain projections, the ingest path) and real counterparts (socat pty
//! pairs, free TCP ports). Waiting is by polling for a condition with a
//! generous deadline, never by asserting on elapsed time.
#![allow(dead_code)]

pub mod api;
pub mod broker;
pub mod certs;
pub mod modbus;
pub mod nats;
pub mod pickup;
pub mod proxy;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use storegate::config::{Config, Durability};
use storegate::db::{self, Writer, WriterThread, journal};
use storegate::devices::{DeviceSpec, Ingest};
use storegate::domain::{Projections, rfid::TagTracker};
use storegate::event::{Event, EventBody, NewEvent, Reading, now_millis};
use storegate::health::HealthBoard;
use storegate::profiles::ProfileSet;
use storegate::shutdown::{Shutdown, ShutdownTrigger, shutdown_pair};

/// A store with everything below the device tasks running.
pub struct Store {
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
    pub writer: Writer,
    thread: Option<WriterThread>,
    pub ingest: Ingest,
    pub health: HealthBoard,
    pub trigger: ShutdownTrigger,
    pub shutdown: Shutdown,
}

impl Store {
    pub fn new() -> Store {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("storegate.db");
        let conn = db::open_write(&db, Durability::Full).unwrap();
        let member_key = storegate::domain::privacy::member_key(&conn).unwrap();
        let (writer, thread) = Writer::spawn(conn, Box::new(Projections::default())).unwrap();
        let health = HealthBoard::default();
        let tags = Arc::new(Mutex::new(TagTracker::new(5000, 600)));
        let ingest = Ingest::new(writer.clone(), health.clone(), tags, member_key);
        let (trigger, shutdown) = shutdown_pair();
        Store {
            dir,
            db,
            writer,
            thread: Some(thread),
            ingest,
            health,
            trigger,
            shutdown,
        }
    }

    /// A device from a `[[device]]` TOML block (without the header), with
    /// profiles from the built-ins plus `profiles_dir` if given.
    pub fn device(&self, device_toml: &str, profiles_dir: Option<&Path>) -> DeviceSpec {
        let dir = profiles_dir.map_or_else(|| PathBuf::from("/nonexistent"), Path::to_path_buf);
        let profiles = ProfileSet::load(&dir).unwrap_or_else(|e| panic!("{e:?}"));
        let text = format!("store_id = \"t\"\n[[device]]\n{device_toml}");
        let config = Config::parse(&text, Path::new("test.toml"), &profiles.names())
            .unwrap_or_else(|e| panic!("{e}"));
        let problems = storegate::profiles::check_devices(&config, &profiles);
        assert!(problems.is_empty(), "{problems:?}");
        let d = config.devices.into_iter().next().unwrap();
        let profile = profiles.get(&d.profile).unwrap().clone();
        self.health.register(&d.id, &d.profile, d.transport.name());
        DeviceSpec { config: d, profile }
    }

    /// All journaled events.
    pub fn events(&self) -> Vec<Event> {
        let conn = db::open_read(&self.db).unwrap();
        journal::events_after(&conn, 0, 1_000_000).unwrap()
    }

    /// Wait until `pred` holds for the journal (30 s deadline).
    pub fn wait_events(&self, what: &str, pred: impl Fn(&[Event]) -> bool) -> Vec<Event> {
        wait_for(what, || {
            let e = self.events();
            pred(&e).then_some(e)
        })
    }

    /// `(device, reason, raw)` of every quarantined input.
    pub fn quarantine(&self) -> Vec<(String, String, Vec<u8>)> {
        let conn = db::open_read(&self.db).unwrap();
        let mut st = conn
            .prepare("SELECT device, reason, raw FROM quarantine ORDER BY id")
            .unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    pub fn stop(&mut self) {
        self.trigger.trigger();
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.trigger.trigger();
    }
}

impl Store {
    /// Stop and wait for the writer to finish (drop every other handle first).
    pub fn join_writer(mut self) {
        self.trigger.trigger();
        let thread = self.thread.take();
        drop(self);
        if let Some(t) = thread {
            t.join();
        }
    }
}

/// Apply a price pull of central's (`items` as the book lists them, at
/// book `version`) to `store`, in de-DE.
pub async fn price_pull(store: &Store, version: i64, items: serde_json::Value) {
    let pull: storegate::domain::prices::PricePull =
        serde_json::from_value(serde_json::json!({"version": version, "items": items})).unwrap();
    store
        .writer
        .transact(move |w| {
            storegate::domain::prices::apply_pull(w.conn(), &pull, chrono::Utc::now(), "de-DE")
        })
        .await
        .unwrap();
}

/// The built-in `openepaperlink-ap` profile, polling every 50 ms, in a
/// profiles directory (a file there overrides the built-in).
pub fn fast_oepl_profile(dir: &Path) {
    let text = include_str!("../../firmware-profiles/openepaperlink-ap.toml");
    let fast = text.replace("poll_ms = 10000", "poll_ms = 50");
    assert_ne!(fast, text, "the profile's poll_ms line changed");
    std::fs::write(dir.join("openepaperlink-ap.toml"), fast).unwrap();
}

/// Poll `f` until it returns Some, failing after 30 s.
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Async version of [`wait_for`].
pub async fn wait_for_async<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    wait_within(what, Duration::from_secs(30), f).await
}

/// [`wait_for_async`] with its own deadline, for what may take longer
/// (e.g. a device's reconnect backoff, up to 30 s).
pub async fn wait_within<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `GET /healthz` of an agent's API at `addr` (`host:port`).
pub async fn healthz(addr: &str) -> serde_json::Value {
    reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A pseudo-terminal pair made by socat: the agent opens `agent`, the test
/// (playing the device) opens `device`. Dropping it kills socat, which is
/// how a test unplugs the "USB reader".
pub struct PtyPair {
    child: Child,
    pub agent: PathBuf,
    pub device: PathBuf,
}

impl PtyPair {
    pub fn new(dir: &Path, name: &str) -> PtyPair {
        let agent = dir.join(format!("{name}-agent"));
        let device = dir.join(format!("{name}-device"));
        remove_links(&agent, &device);
        let child = Command::new("socat")
            .arg(format!("pty,raw,echo=0,link={}", agent.display()))
            .arg(format!("pty,raw,echo=0,link={}", device.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat is needed for serial tests (apt-get install socat)");
        wait_for("socat pty links", || {
            (agent.exists() && device.exists()).then_some(())
        });
        PtyPair {
            child,
            agent,
            device,
        }
    }

    /// Open the device end for writing and reading, raw.
    pub fn open_device(&self) -> std::fs::File {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.device)
            .unwrap()
    }
}

impl Drop for PtyPair {
    fn drop(&mut self) {
        // socat cannot remove its links when killed. A stale link would
        // point at whichever pty next gets the same /dev/pts number, maybe
        // another test's: the "unplugged" port must be gone, before its
        // number is free.
        remove_links(&self.agent, &self.device);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn remove_links(agent: &Path, device: &Path) {
    let _ = std::fs::remove_file(agent);
    let _ = std::fs::remove_file(device);
}

/// A small deterministic generator: the kill tests must not need a crate
/// for their random moments.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// Reads a child's stdout on a thread, line by line, counting them: every
/// line is an acknowledgement. Keeps draining until the child is gone, so
/// lines printed after a kill decision are not lost either.
pub struct AckReader {
    seen: Arc<std::sync::atomic::AtomicUsize>,
    thread: std::thread::JoinHandle<Vec<String>>,
}

impl AckReader {
    pub fn new(stdout: std::process::ChildStdout) -> AckReader {
        use std::io::BufRead;
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = seen.clone();
        let thread = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                lines.push(line);
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            lines
        });
        AckReader { seen, thread }
    }

    /// Lines read so far.
    pub fn seen(&self) -> usize {
        self.seen.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Every line, once the child's stdout closed.
    pub fn finish(self) -> Vec<String> {
        self.thread.join().unwrap_or_default()
    }
}

/// The agent binary, killed when dropped.
pub struct Agent {
    pub child: Child,
    pub log: PathBuf,
}

impl Agent {
    pub fn start(config: &Path, log: PathBuf) -> Agent {
        let child = Command::new(env!("CARGO_BIN_EXE_storegate"))
            .arg("run")
            .arg("--config")
            .arg(config)
            .env("STOREGATE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Agent { child, log }
    }

    /// Wait until the agent's log says `text`.
    pub fn wait_log(&mut self, text: &str) {
        let log = self.log.clone();
        let child = &mut self.child;
        wait_for(&format!("agent log line {text:?}"), || {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("the agent exited ({status}):\n{log}");
            }
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains(text)
                .then_some(())
        });
    }

    /// The last `n` lines of the agent's log, for diagnostics on a
    /// timeout; says so when the agent is no longer running.
    pub fn last_log_lines(&self, n: usize) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// SIGKILL: no shutdown, no final acknowledgements.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every event of `local` is at central under its seq, with identical
/// content (`central`: a reference-central store view's events).
pub fn assert_at_central(
    central: &std::collections::BTreeMap<i64, serde_json::Value>,
    local: &[Event],
) {
    for e in local {
        assert_eq!(
            central.get(&e.seq),
            Some(&serde_json::to_value(e).unwrap()),
            "seq {}",
            e.seq
        );
    }
}

/// A sensor reading numbered `i`: an event without a natural key, for
/// journals that need many distinct events.
pub fn reading(i: usize) -> NewEvent {
    NewEvent::new(
        now_millis(),
        "sensor",
        EventBody::Reading(Reading {
            name: format!("r{i}"),
            value: i as f64,
            unit: "C".into(),
        }),
    )
}
