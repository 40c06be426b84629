//! `storegate bench mqtt`: RFID tag reads through the whole MQTT path
//! (broker -> hub -> json codec -> tag state table, commit before PUBACK)
//! against a bare rumqttc subscriber draining the same broker in the same
//! run: the physical limit of the broker and the client library here.
//!
//! The two take turns, round by round, and the figures are the medians of
//! the rounds: on a shared machine the speed of the whole box drifts by a
//! factor of two within a minute, so one long run of each would mostly
//! measure when each ran. Before the rounds the agent sees every tag of
//! the pool once: those first sightings are journaled (each one is an
//! arrival in its zone, committed before its PUBACK) and are reported on
//! their own line, since a store's steady traffic is repeat reads of tags
//! the agent already knows.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use crate::config::{Broker, Config, Durability, MqttConfig};
use crate::db::Writer;
use crate::devices::{self, DeviceSpec, Ingest, mqtt};
use crate::domain::{Projections, rfid::TagTracker};
use crate::health::HealthBoard;
use crate::profiles::ProfileSet;

/// Distinct tags in the bench's store.
pub const TAGS: usize = 5000;

#[derive(Debug, Clone)]
pub struct MqttFigures {
    /// Reads per round.
    pub reads: usize,
    /// Per round, in the order they ran: the bare subscriber that only
    /// counts (the physical limit), the one that also parses each payload
    /// (the baseline: the least any consumer of the reads does), the agent.
    pub bare_per_s: Vec<f64>,
    pub bare_parsing_per_s: Vec<f64>,
    pub agent_per_s: Vec<f64>,
    /// The warm-up: every tag's first sighting, journaled.
    pub first_sightings_per_s: f64,
}

impl MqttFigures {
    pub fn bare_median(&self) -> f64 {
        median(&self.bare_per_s)
    }

    pub fn bare_parsing_median(&self) -> f64 {
        median(&self.bare_parsing_per_s)
    }

    pub fn agent_median(&self) -> f64 {
        median(&self.agent_per_s)
    }

    /// The figure that counts (issue 14's decision on issue 3): the median
    /// of the rounds' ratios of the agent to the parsing subscriber of the
    /// same round.
    pub fn ratio(&self) -> f64 {
        median_ratio(&self.agent_per_s, &self.bare_parsing_per_s)
    }

    /// The agent against the subscriber that parses nothing.
    pub fn ratio_to_limit(&self) -> f64 {
        median_ratio(&self.agent_per_s, &self.bare_per_s)
    }
}

/// The median of the per-round ratios `agent[i] / bare[i]`.
pub(crate) fn median_ratio(agent: &[f64], bare: &[f64]) -> f64 {
    let ratios: Vec<f64> = agent.iter().zip(bare).map(|(a, b)| a / b).collect();
    median(&ratios)
}

pub(crate) fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn free_addr() -> std::io::Result<std::net::SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// A Zebra IoT Connector read: read number `i` of tag `i % TAGS`.
pub(crate) fn zebra_read(i: usize) -> Vec<u8> {
    format!(
        r#"{{"data":{{"eventNum":{i},"format":"epc","idHex":"3074257bf7194e40{:08x}","antenna":1,"peakRssi":-50}},"timestamp":"2026-11-22T10:15:30.123Z","type":"SIMPLE"}}"#,
        i % TAGS
    )
    .into_bytes()
}

/// Publish reads `first..first + n` to `topic` as fast as the broker
/// takes them.
async fn publish_all(
    addr: std::net::SocketAddr,
    topic: &str,
    first: usize,
    n: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut opts = MqttOptions::new("bench-publisher", addr.ip().to_string(), addr.port());
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_inflight(200);
    let (client, mut eventloop) = AsyncClient::new(opts, 1000);
    let poller = tokio::spawn(async move {
        let mut acked = 0;
        while acked < n {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    for i in first..first + n {
        client
            .publish(topic, QoS::AtLeastOnce, false, zebra_read(i))
            .await?;
    }
    let _ = poller.await;
    Ok(())
}

fn publisher(
    addr: std::net::SocketAddr,
    topic: &'static str,
    first: usize,
    n: usize,
) -> tokio::task::JoinHandle<Result<(), String>> {
    tokio::spawn(async move {
        publish_all(addr, topic, first, n)
            .await
            .map_err(|e| e.to_string())
    })
}

/// The limit: a plain subscriber counting messages (rumqttc acknowledges
/// them itself), parsing each into a JSON value if asked.
struct Bare {
    addr: std::net::SocketAddr,
    eventloop: rumqttc::EventLoop,
    _client: AsyncClient,
}

impl Bare {
    async fn connect(addr: std::net::SocketAddr) -> Result<Bare, Box<dyn std::error::Error>> {
        let mut opts = MqttOptions::new("bench-bare", addr.ip().to_string(), addr.port());
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = AsyncClient::new(opts, 1000);
        client.subscribe("bench/bare", QoS::AtLeastOnce).await?;
        // Wait for the SUBACK before anything is published.
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = eventloop.poll().await? {
                break;
            }
        }
        Ok(Bare {
            addr,
            eventloop,
            _client: client,
        })
    }

    /// One round; `parse`: each payload is parsed into a JSON value.
    async fn round(
        &mut self,
        first: usize,
        n: usize,
        parse: bool,
    ) -> Result<f64, Box<dyn std::error::Error>> {
        let started = Instant::now();
        let publisher = publisher(self.addr, "bench/bare", first, n);
        let mut got = 0;
        while got < n {
            if let Event::Incoming(Packet::Publish(p)) = self.eventloop.poll().await? {
                if parse {
                    serde_json::from_slice::<serde_json::Value>(&p.payload)?;
                }
                got += 1;
            }
        }
        let secs = started.elapsed().as_secs_f64();
        publisher.await??;
        Ok(n as f64 / secs)
    }
}

/// The agent: hub + zebra device + ingest + writer with projections.
struct Agent {
    addr: std::net::SocketAddr,
    health: HealthBoard,
    trigger: crate::shutdown::ShutdownTrigger,
    task: tokio::task::JoinHandle<()>,
    writer: Writer,
    thread: crate::db::writer::WriterThread,
}

impl Agent {
    async fn start(
        addr: std::net::SocketAddr,
        dir: &std::path::Path,
    ) -> Result<Agent, Box<dyn std::error::Error>> {
        let path = dir.join("bench-mqtt.db");
        let conn = super::fresh_db(&path, Durability::Full)?;
        let member_key = crate::domain::privacy::member_key(&conn)?;
        let (writer, thread) = Writer::spawn(conn, Box::new(Projections::default()))?;
        let health = HealthBoard::default();
        let tags = Arc::new(Mutex::new(TagTracker::new(TAGS as u64, 600)));
        let ingest = Ingest::new(writer.clone(), health.clone(), tags, member_key);
        let (trigger, shutdown) = crate::shutdown::shutdown_pair();
        let mqtt_config = MqttConfig {
            broker: Broker::External {
                url: format!("mqtt://{addr}"),
            },
            client_id: "bench-agent".into(),
        };
        let hub = mqtt::Hub::start(&mqtt_config, shutdown.clone()).await?;
        let profiles = ProfileSet::builtin().map_err(|e| format!("{e:?}"))?;
        let config = Config::parse(
            "store_id = \"bench\"\n[[device]]\nid = \"door\"\nprofile = \"zebra-fx-iot-connector\"\ntransport = \"mqtt\"\ntopic = \"bench/agent\"\nzone = \"backroom\"\n",
            std::path::Path::new("bench.toml"),
            &profiles.names(),
        )?;
        let d = config.devices[0].clone();
        let profile = profiles.get(&d.profile).ok_or("no zebra profile")?.clone();
        health.register(&d.id, &d.profile, "mqtt");
        let task = tokio::spawn(devices::run_device(
            DeviceSpec { config: d, profile },
            ingest,
            Some(hub),
            shutdown,
        ));
        while !health.get("door").is_some_and(|h| h.up) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(Agent {
            addr,
            health,
            trigger,
            task,
            writer,
            thread,
        })
    }

    fn frames_ok(&self) -> u64 {
        self.health.get("door").map_or(0, |h| h.frames_ok)
    }

    /// Reads per second until all `n` reads were parsed into the tag table
    /// (repeats) or journaled (first sightings).
    async fn round(&mut self, first: usize, n: usize) -> Result<f64, Box<dyn std::error::Error>> {
        let target = self.frames_ok() + n as u64;
        let started = Instant::now();
        let publisher = publisher(self.addr, "bench/agent", first, n);
        while self.frames_ok() < target {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let secs = started.elapsed().as_secs_f64();
        publisher.await??;
        Ok(n as f64 / secs)
    }

    async fn stop(self) {
        self.trigger.trigger();
        let _ = self.task.await;
        drop(self.writer);
        let thread = self.thread;
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .ok();
    }
}

/// `rounds` rounds of `reads` reads each, bare and agent taking turns.
pub async fn run(
    dir: &std::path::Path,
    reads: usize,
    rounds: usize,
) -> Result<MqttFigures, Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    let addr = free_addr()?;
    crate::devices::broker::start_embedded(addr)?;
    let mut bare = Bare::connect(addr).await?;
    let mut agent = Agent::start(addr, dir).await?;
    let first_sightings_per_s = agent.round(0, TAGS).await?;
    let mut figures = MqttFigures {
        reads,
        bare_per_s: Vec::new(),
        bare_parsing_per_s: Vec::new(),
        agent_per_s: Vec::new(),
        first_sightings_per_s,
    };
    for round in 0..rounds.max(1) {
        let first = TAGS + round * reads;
        figures
            .bare_per_s
            .push(bare.round(first, reads, false).await?);
        figures
            .bare_parsing_per_s
            .push(bare.round(first, reads, true).await?);
        figures.agent_per_s.push(agent.round(first, reads).await?);
    }
    agent.stop().await;
    Ok(figures)
}
