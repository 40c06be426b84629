//! `storegate bench mqtt`: RFID tag reads through the whole MQTT path
//! (broker -> hub -> json codec -> tag state table, commit before PUBACK)
//! against a bare rumqttc subscriber draining the same broker in the same
//! run: the physical limit of the broker and the client library here.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use crate::config::{Broker, Config, Durability, MqttConfig};
use crate::db::Writer;
use crate::devices::health::HealthBoard;
use crate::devices::{self, DeviceSpec, Ingest, mqtt};
use crate::domain::{Projections, rfid::TagTracker};
use crate::profiles::ProfileSet;

#[derive(Debug, Clone)]
pub struct MqttFigures {
    pub reads: usize,
    pub bare_per_s: f64,
    pub agent_per_s: f64,
}

impl MqttFigures {
    pub fn ratio(&self) -> f64 {
        self.agent_per_s / self.bare_per_s
    }
}

fn free_addr() -> std::io::Result<std::net::SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// A Zebra IoT Connector read of tag `i` (of a pool of 5,000 tags, so most
/// reads are repeats that only touch the tag state table, as in a store).
fn zebra_read(i: usize) -> Vec<u8> {
    format!(
        r#"{{"data":{{"eventNum":{i},"format":"epc","idHex":"3074257bf7194e40{:08x}","antenna":1,"peakRssi":-50}},"timestamp":"2026-11-22T10:15:30.123Z","type":"SIMPLE"}}"#,
        i % 5000
    )
    .into_bytes()
}

/// Publish `n` reads to `topic` as fast as the broker takes them.
async fn publish_all(
    addr: std::net::SocketAddr,
    topic: &str,
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
    for i in 0..n {
        client
            .publish(topic, QoS::AtLeastOnce, false, zebra_read(i))
            .await?;
    }
    let _ = poller.await;
    Ok(())
}

/// The limit: a plain subscriber counting messages.
async fn bare(addr: std::net::SocketAddr, n: usize) -> Result<f64, Box<dyn std::error::Error>> {
    let mut opts = MqttOptions::new("bench-bare", addr.ip().to_string(), addr.port());
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(opts, 1000);
    client.subscribe("bench/bare", QoS::AtLeastOnce).await?;
    // Wait for the SUBACK before publishing.
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = eventloop.poll().await? {
            break;
        }
    }
    let started = Instant::now();
    let publisher = tokio::spawn(async move {
        publish_all(addr, "bench/bare", n)
            .await
            .map_err(|e| e.to_string())
    });
    let mut got = 0;
    while got < n {
        if let Event::Incoming(Packet::Publish(_)) = eventloop.poll().await? {
            got += 1;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    publisher.await??;
    Ok(n as f64 / secs)
}

/// The agent: hub + zebra device + ingest + writer with projections.
async fn agent(
    addr: std::net::SocketAddr,
    dir: &std::path::Path,
    n: usize,
) -> Result<f64, Box<dyn std::error::Error>> {
    let path = dir.join("bench-mqtt.db");
    let conn = super::fresh_db(&path, Durability::Full)?;
    let (writer, thread) = Writer::spawn(conn, Box::new(Projections::default()))?;
    let health = HealthBoard::default();
    let tags = Arc::new(Mutex::new(TagTracker::new(5000, 600)));
    let ingest = Ingest::new(writer.clone(), health.clone(), tags);
    let (trigger, shutdown) = devices::shutdown_pair();
    let mqtt_config = MqttConfig {
        broker: Broker::External {
            url: format!("mqtt://{addr}"),
        },
        client_id: "bench-agent".into(),
    };
    let hub = mqtt::Hub::start(&mqtt_config, shutdown.clone()).await?;
    let profiles =
        ProfileSet::load(std::path::Path::new("/nonexistent")).map_err(|e| format!("{e:?}"))?;
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
    let started = Instant::now();
    let publisher = tokio::spawn(async move {
        publish_all(addr, "bench/agent", n)
            .await
            .map_err(|e| e.to_string())
    });
    // Frames counted by the ingest after their transaction committed.
    while health.get("door").map_or(0, |h| h.frames_ok) < n as u64 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    publisher.await??;
    trigger.trigger();
    let _ = task.await;
    drop(writer);
    tokio::task::spawn_blocking(move || thread.join())
        .await
        .ok();
    Ok(n as f64 / secs)
}

pub async fn run(
    dir: &std::path::Path,
    reads: usize,
) -> Result<MqttFigures, Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    let addr = free_addr()?;
    crate::devices::broker::start_embedded(addr)?;
    let bare_per_s = bare(addr, reads).await?;
    let agent_per_s = agent(addr, dir, reads).await?;
    Ok(MqttFigures {
        reads,
        bare_per_s,
        agent_per_s,
    })
}
