//! `storegate bench rss`: the resident memory of a real `storegate run`
//! (a child process) with many configured MQTT readers under a steady
//! stream of tag reads. The broker and the publisher live in the bench
//! process, so the figure is the agent's alone.

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

#[derive(Debug, Clone)]
pub struct RssFigures {
    pub devices: usize,
    pub rate: usize,
    pub seconds: u64,
    pub published: usize,
    pub ingested: u64,
    pub peak_kib: u64,
    pub final_kib: u64,
}

/// Resident memory of process `pid`, from /proc.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// The most resident memory process `pid` has had so far (the kernel's
/// high-water mark: no peak between two samples is missed).
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

/// One `kB` field of /proc/`pid`/status.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Frames the agent's devices have taken, from its persisted health board:
/// `(devices up, frames taken)`.
pub(super) fn frames_ok(db: &std::path::Path) -> (usize, u64) {
    let Ok(conn) = crate::db::open_read(db) else {
        return (0, 0);
    };
    let board = crate::devices::watch::read_persisted(&conn).unwrap_or_default();
    (
        board.iter().filter(|h| h.up).count(),
        board.iter().map(|h| h.frames_ok).sum(),
    )
}

/// A `storegate run` child process of this binary, for the memory benches.
pub(super) struct Agent {
    child: std::process::Child,
    /// Its process id, for /proc.
    pub pid: u32,
    /// Its database.
    pub db: std::path::PathBuf,
}

impl Agent {
    /// Write `config` (a store config whose `data_dir` is `data`) and start
    /// the agent on it; returns once `devices` devices are up.
    pub async fn start(
        data: &std::path::Path,
        config: &str,
        devices: usize,
    ) -> Result<Agent, Box<dyn std::error::Error>> {
        let config_path = data.join("store.toml");
        std::fs::write(&config_path, config)?;
        // STOREGATE_BENCH_AGENT measures another build of the agent (the
        // packaged store build, target/deb/storegate) under this driver.
        let exe = match std::env::var_os("STOREGATE_BENCH_AGENT") {
            Some(path) => std::path::PathBuf::from(path),
            None => std::env::current_exe()?,
        };
        let child = std::process::Command::new(exe)
            .args(["run", "--config"])
            .arg(&config_path)
            .env("STOREGATE_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()?;
        let mut agent = Agent {
            pid: child.id(),
            child,
            db: data.join("storegate.db"),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while frames_ok(&agent.db).0 < devices {
            if Instant::now() > deadline {
                agent.stop();
                return Err("the agent's devices did not all come up within 60 s".into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(agent)
    }

    /// SIGTERM, as systemd stops it, and wait for the exit.
    pub fn stop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// An MQTT client publishing to the bench's broker at `addr`, its event
/// loop polled by a task of its own.
pub(super) fn publisher(name: &str, addr: std::net::SocketAddr) -> AsyncClient {
    let mut opts = MqttOptions::new(name, addr.ip().to_string(), addr.port());
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_inflight(500);
    let (client, mut eventloop) = AsyncClient::new(opts, 5000);
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Disconnect)) | Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Ok(_) => {}
            }
        }
    });
    client
}

pub async fn run(
    dir: &std::path::Path,
    devices: usize,
    rate: usize,
    seconds: u64,
) -> Result<RssFigures, Box<dyn std::error::Error>> {
    let data = dir.join("bench-rss");
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data)?;
    let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    crate::devices::broker::start_embedded(addr)?;
    let mut config = format!(
        "store_id = \"bench\"\ndata_dir = {:?}\n[api]\nlisten = \"127.0.0.1:0\"\n[mqtt]\nbroker = \"mqtt://{addr}\"\nclient_id = \"bench-rss-agent\"\n",
        data
    );
    for i in 0..devices {
        config.push_str(&format!(
            "[[device]]\nid = \"reader-{i}\"\nprofile = \"zebra-fx-iot-connector\"\ntransport = \"mqtt\"\ntopic = \"bench/rss/{i}\"\nzone = \"zone-{}\"\n",
            i % 5
        ));
    }
    let mut agent = Agent::start(&data, &config, devices).await?;
    let (pid, db) = (agent.pid, agent.db.clone());
    let client = publisher("bench-rss-publisher", addr);
    // 10 ms ticks, rate/100 reads each, spread over the devices; each
    // device sees a pool of 1,000 tags (so the tag table holds 50,000).
    let per_tick = (rate / 100).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let started = Instant::now();
    let mut published = 0usize;
    let (mut peak, mut last_sample) = (0u64, Instant::now());
    while started.elapsed() < Duration::from_secs(seconds) {
        tick.tick().await;
        for _ in 0..per_tick {
            let d = published % devices;
            let payload = format!(
                r#"{{"data":{{"idHex":"30742{d:05x}0000000{:07x}","antenna":1,"peakRssi":-55}},"timestamp":"2026-11-22T10:15:30.123Z","type":"SIMPLE"}}"#,
                (published / devices) % 1000
            );
            client
                .publish(format!("bench/rss/{d}"), QoS::AtLeastOnce, false, payload)
                .await?;
            published += 1;
        }
        if last_sample.elapsed() >= Duration::from_millis(500) {
            peak = peak.max(rss_kib(pid).unwrap_or(0));
            last_sample = Instant::now();
        }
    }
    // Let it finish what is queued, then sample once more.
    let drain = Instant::now() + Duration::from_secs(30);
    while frames_ok(&db).1 < published as u64 && Instant::now() < drain {
        peak = peak.max(rss_kib(pid).unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let final_kib = rss_kib(pid).unwrap_or(0);
    peak = peak.max(final_kib);
    let ingested = frames_ok(&db).1;
    agent.stop();
    Ok(RssFigures {
        devices,
        rate,
        seconds,
        published,
        ingested,
        peak_kib: peak,
        final_kib,
    })
}
