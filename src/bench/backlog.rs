//! `storegate bench backlog`: a backlog queued at mosquitto for a
//! persistent session while its subscriber was away, drained by the agent
//! (hub -> codec -> ingest -> writer, every message journaled or in the
//! tag table before its PUBACK) against mosquitto's own C subscriber
//! (`mosquitto_sub`) draining the same backlog from the same broker.
//!
//! Each round queues the backlog for the bare subscriber's session and
//! times `mosquitto_sub -C n`, then queues it for the agent's session and
//! times a fresh agent from its start until every message is handled and
//! its PUBACK written. The figures are the medians of the rounds, as in
//! `bench mqtt`. The agent's connections are counted: a drain that needs
//! a reconnect (or a restart) to make progress is the failure this bench
//! exists for.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::mqtt::{median, median_ratio, zebra_read};
use crate::config::{Broker, Config, Durability, MqttConfig};
use crate::db::Writer;
use crate::devices::{self, DeviceSpec, Ingest, mqtt};
use crate::domain::{Projections, rfid::TagTracker};
use crate::health::HealthBoard;
use crate::profiles::ProfileSet;

/// Distinct tags the readers see.
const TAGS: usize = 5000;
const AGENT_ID: &str = "bench-backlog-agent";
const BARE_ID: &str = "bench-backlog-bare";
const AGENT_TOPIC: &str = "bench/backlog/agent";
const BARE_TOPIC: &str = "bench/backlog/bare";
/// Messages per `mosquitto_pub` run (see `Mosquitto::publish`).
const PUBLISH_CHUNK: usize = 10_000;
/// A drain that takes longer than this is reported as stuck.
const DRAIN_LIMIT: Duration = Duration::from_secs(600);

/// What the backlog is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// Zebra IoT Connector reads over 5,000 tags: a reader's backlog.
    /// Each fresh agent journals the first sighting of each tag; the rest
    /// are repeats that only touch the tag table.
    Zebra,
    /// POS receipts, one line each, all different: every message is
    /// journaled before its PUBACK.
    Receipts,
}

#[derive(Debug, Clone)]
pub struct BacklogFigures {
    pub messages: usize,
    pub payload: Payload,
    /// Per round, in the order they ran.
    pub bare_per_s: Vec<f64>,
    pub agent_per_s: Vec<f64>,
    /// Agent connections beyond the first, over all rounds.
    pub reconnects: u64,
}

impl BacklogFigures {
    pub fn bare_median(&self) -> f64 {
        median(&self.bare_per_s)
    }

    pub fn agent_median(&self) -> f64 {
        median(&self.agent_per_s)
    }

    /// The median of the rounds' ratios (each agent round against the bare
    /// round just before it).
    pub fn ratio(&self) -> f64 {
        median_ratio(&self.agent_per_s, &self.bare_per_s)
    }
}

type BoxError = Box<dyn std::error::Error>;

/// mosquitto on a free loopback port, in memory, with no limit on the
/// messages queued for a session (its default keeps 1000 and drops the
/// rest). Killed when dropped.
struct Mosquitto {
    child: std::process::Child,
    port: u16,
}

impl Mosquitto {
    /// `inflight`: mosquitto's `max_inflight_messages`, the QoS 1 messages
    /// it sends a client before waiting for PUBACKs. For input journaled
    /// before its PUBACK it bounds the commit groups.
    fn start(dir: &Path, inflight: u32) -> Result<Mosquitto, BoxError> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let conf = dir.join("bench-backlog-mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\nmax_inflight_messages {inflight}\n"
            ),
        )?;
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start mosquitto (apt-get install mosquitto): {e}"))?;
        let broker = Mosquitto { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err("mosquitto does not accept connections".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(broker)
    }

    /// Run one of mosquitto's clients against this broker to completion.
    fn client(&self, program: &str, args: &[&str], stdin: Option<&[u8]>) -> Result<(), BoxError> {
        let mut child = Command::new(program)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                format!("cannot run {program} (apt-get install mosquitto-clients): {e}")
            })?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input)?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            return Err(format!(
                "{program} {args:?}: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )
            .into());
        }
        Ok(())
    }

    /// A persistent session subscribed to `topic` at QoS 1, left at once:
    /// from now on the broker queues what is published there for `id`.
    fn make_session(&self, id: &str, topic: &str) -> Result<(), BoxError> {
        self.client(
            "mosquitto_sub",
            &["-c", "-i", id, "-q", "1", "-t", topic, "-E"],
            None,
        )
    }

    /// Publish `lines` (one message each) at QoS 1 to `topic`, in chunks:
    /// mosquitto 2.0.11 drops a publisher "due to out of memory" after
    /// about 34,000 messages sent by `mosquitto_pub -l` on one connection
    /// without waiting for their PUBACKs, and the rest never arrive.
    fn publish(&self, topic: &str, lines: &[u8]) -> Result<(), BoxError> {
        let mut rest = lines;
        while !rest.is_empty() {
            let cut = rest
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .nth(PUBLISH_CHUNK - 1)
                .map_or(rest.len(), |(i, _)| i + 1);
            let (chunk, tail) = rest.split_at(cut);
            self.client(
                "mosquitto_pub",
                &["-i", "bench-backlog-pub", "-q", "1", "-t", topic, "-l"],
                Some(chunk),
            )?;
            rest = tail;
        }
        Ok(())
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The backlog: `n` messages, one per line.
fn backlog(payload: Payload, round: usize, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * 200);
    for i in 0..n {
        match payload {
            Payload::Zebra => out.extend(zebra_read(round * n + i)),
            Payload::Receipts => out.extend(
                format!(
                    r#"{{"receipt_id":"R-{round}-{i}","pos":"1","currency":"EUR","lines":[{{"sku":"SKU-{}","qty":1,"unit_price_minor":249}}]}}"#,
                    1000 + i % 500
                )
                .into_bytes(),
            ),
        }
        out.push(b'\n');
    }
    out
}

/// Messages per second for `mosquitto_sub` to drain its session's backlog
/// of `n` (from its start to its exit after the n-th message).
fn bare_round(broker: &Mosquitto, n: usize) -> Result<f64, BoxError> {
    let started = Instant::now();
    broker.client(
        "mosquitto_sub",
        &[
            "-c",
            "-i",
            BARE_ID,
            "-q",
            "1",
            "-t",
            BARE_TOPIC,
            "-C",
            &n.to_string(),
        ],
        None,
    )?;
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// Messages per second for a fresh agent to drain its session's backlog
/// of `n`, and its connections.
async fn agent_round(
    broker: &Mosquitto,
    dir: &Path,
    payload: Payload,
    n: usize,
) -> Result<(f64, u64), BoxError> {
    let path = dir.join("bench-backlog.db");
    let conn = super::fresh_db(&path, Durability::Full)?;
    let member_key = crate::domain::privacy::member_key(&conn)?;
    let (writer, thread) = Writer::spawn(conn, Box::new(Projections::default()))?;
    let health = HealthBoard::default();
    let tags = Arc::new(Mutex::new(TagTracker::new(TAGS as u64, 600)));
    let ingest = Ingest::new(writer.clone(), health.clone(), tags, member_key);
    let (trigger, shutdown) = crate::shutdown::shutdown_pair();
    let profile_name = match payload {
        Payload::Zebra => "zebra-fx-iot-connector",
        Payload::Receipts => "pos-json",
    };
    let profiles = ProfileSet::builtin().map_err(|e| format!("{e:?}"))?;
    let config = Config::parse(
        &format!(
            "store_id = \"bench\"\n[[device]]\nid = \"dev\"\nprofile = \"{profile_name}\"\ntransport = \"mqtt\"\ntopic = \"{AGENT_TOPIC}\"\n"
        ),
        Path::new("bench.toml"),
        &profiles.names(),
    )?;
    let d = config.devices[0].clone();
    let profile = profiles.get(&d.profile).ok_or("no profile")?.clone();
    health.register(&d.id, &d.profile, "mqtt");

    let started = Instant::now();
    let mqtt_config = MqttConfig {
        broker: Broker::External {
            url: format!("mqtt://127.0.0.1:{}", broker.port),
        },
        client_id: AGENT_ID.into(),
    };
    let hub = mqtt::Hub::start(&mqtt_config, shutdown.clone()).await?;
    let task = tokio::spawn(devices::run_device(
        DeviceSpec { config: d, profile },
        ingest,
        Some(hub.clone()),
        shutdown,
    ));
    loop {
        let h = health.get("dev").ok_or("no device")?;
        if h.frames_ok + h.frames_bad >= n as u64 && hub.awaiting_ack() == 0 {
            break;
        }
        if started.elapsed() > DRAIN_LIMIT {
            return Err(format!(
                "stuck: {} of {n} messages handled after {} s, {} connections",
                h.frames_ok + h.frames_bad,
                DRAIN_LIMIT.as_secs(),
                hub.connections()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let connections = hub.connections();

    trigger.trigger();
    let _ = task.await;
    hub.disconnect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while hub.is_connected() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(hub);
    drop(writer);
    tokio::task::spawn_blocking(move || thread.join())
        .await
        .ok();
    Ok((n as f64 / secs, connections))
}

/// `rounds` rounds of a backlog of `messages`, bare and agent in turns.
pub async fn run(
    dir: &Path,
    messages: usize,
    rounds: usize,
    payload: Payload,
    inflight: u32,
) -> Result<BacklogFigures, BoxError> {
    std::fs::create_dir_all(dir)?;
    let broker = Mosquitto::start(dir, inflight)?;
    broker.make_session(BARE_ID, BARE_TOPIC)?;
    broker.make_session(AGENT_ID, AGENT_TOPIC)?;
    let mut figures = BacklogFigures {
        messages,
        payload,
        bare_per_s: Vec::new(),
        agent_per_s: Vec::new(),
        reconnects: 0,
    };
    for round in 0..rounds.max(1) {
        let lines = backlog(payload, round, messages);
        broker.publish(BARE_TOPIC, &lines)?;
        figures.bare_per_s.push(bare_round(&broker, messages)?);
        broker.publish(AGENT_TOPIC, &lines)?;
        let (rate, connections) = agent_round(&broker, dir, payload, messages).await?;
        figures.agent_per_s.push(rate);
        figures.reconnects += connections.saturating_sub(1);
    }
    Ok(figures)
}
