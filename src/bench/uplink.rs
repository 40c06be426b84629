//! `storegate bench uplink`: the same backlog drained to central two ways
//! in one run, (a) by the HTTP pusher to the reference central on
//! loopback (`bench sync`), and (b) by the MQTT uplink (docs/fleet.md)
//! through a real 3-node nats-server cluster (JetStream, replicated QoS 1)
//! to the reference consumer, until central acknowledged the head. HTTP is
//! the yardstick: issue 16 asks the uplink for >= 50,000 events/s and
//! >= 50 % of HTTP's rate.
//!
//! The agent publishes to node n1 and the consumer reads from node n0, so
//! every batch and every ack crosses a route, as in a real cluster.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{SyncFigures, fill_journal, sync_drain};
use crate::config::MqttUplinkConfig;
use crate::db;
use crate::health::HealthBoard;
use crate::sim::central::Central as Sim;
use crate::sim::central_mqtt::ConsumerOptions;
use crate::sim::nats_cluster::NatsCluster;
use crate::sync::Link;
use crate::sync::uplink::{self, Triggers, Uplink, UplinkStats};

type BoxError = Box<dyn std::error::Error>;

/// Events per batch for both transports (HTTP's `bench sync` figure).
const BATCH_MAX: usize = 5000;
/// A drain that takes longer than this is reported as stuck.
const DRAIN_LIMIT: Duration = Duration::from_secs(1800);
const STORE: &str = "bench";

#[derive(Debug, Clone)]
pub struct MqttFigures {
    pub events: i64,
    pub seconds: f64,
    pub per_s: f64,
    /// Batches the agent published (resends included).
    pub batches_sent: u64,
    /// Batches central's consumer took (each answered by one ack).
    pub batches_taken: usize,
    /// Batch payload bytes central's consumer received (gzip as sent).
    pub payload_bytes: u64,
    pub resends: u64,
    pub connections: u64,
}

impl MqttFigures {
    pub fn bytes_per_event(&self) -> f64 {
        self.payload_bytes as f64 / self.events as f64
    }

    /// Messages through the brokers per event: the agent's batches plus
    /// central's acks (heartbeats and PUBACKs not counted).
    pub fn messages_per_event(&self) -> f64 {
        (self.batches_sent as f64 + self.batches_taken as f64) / self.events as f64
    }
}

#[derive(Debug, Clone)]
pub struct UplinkFigures {
    pub http: SyncFigures,
    pub mqtt: MqttFigures,
}

impl UplinkFigures {
    pub fn ratio(&self) -> f64 {
        self.mqtt.per_s / self.http.per_s
    }
}

/// Both drains, HTTP first.
pub async fn run(dir: &std::path::Path, events: usize) -> Result<UplinkFigures, BoxError> {
    let http = sync_drain(dir, events).await?;
    let mqtt = mqtt_drain(dir, events).await?;
    Ok(UplinkFigures { http, mqtt })
}

/// Fill a fresh journal, start a 3-node cluster and the reference
/// consumer, then time the uplink from its start until central
/// acknowledged the head.
pub async fn mqtt_drain(dir: &std::path::Path, events: usize) -> Result<MqttFigures, BoxError> {
    let path = dir.join("bench-uplink.db");
    let (writer, thread) = fill_journal(&path, events).await?;
    let head = events as i64;
    let cluster = tokio::task::spawn_blocking(|| NatsCluster::start(3)).await?;
    let urls = cluster.mqtt_urls();

    let sim = Sim::default();
    sim.lock().behaviour.count_only = true;
    let mut options = ConsumerOptions::new(vec![urls[0].clone()]);
    options.client_id = format!("bench-central-{}", std::process::id());
    let consumer = sim.spawn_mqtt(options)?;
    let waited = Instant::now();
    while !consumer.is_connected() {
        if waited.elapsed() > Duration::from_secs(30) {
            return Err(format!("the consumer did not connect\n{}", cluster.diagnostics()).into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Its SUBSCRIBEs follow the CONNACK; QoS 1 messages reach only
    // subscriptions that exist (docs/fleet-brokers.md).
    tokio::time::sleep(Duration::from_millis(500)).await;

    let config = MqttUplinkConfig {
        brokers: vec![urls[1].clone(), urls[2].clone(), urls[0].clone()],
        topic_prefix: "storegate/v1".into(),
        client_cert: None,
        client_key: None,
        username: None,
        password_file: None,
        max_payload_bytes: crate::config::DEFAULT_MAX_PAYLOAD_BYTES as usize,
        ack_timeout_s: 30,
        inflight_batches: 4,
    };
    let stats = Arc::new(UplinkStats::default());
    let (link, _) = tokio::sync::watch::channel(Link::Unknown);
    let (_heartbeat_tx, heartbeat) = tokio::sync::watch::channel(None);
    let (trigger, shutdown) = crate::shutdown::shutdown_pair();
    let started = Instant::now();
    let task = tokio::spawn(uplink::run(
        Uplink {
            config,
            ca_file: None,
            store_id: STORE.into(),
            writer: writer.clone(),
            reader: Arc::new(Mutex::new(db::open_read(&path)?)),
            db_path: path.clone(),
            batch_max: BATCH_MAX,
            max_backoff: Duration::from_secs(1),
            link,
            stats: stats.clone(),
            heartbeat,
            triggers: Triggers::default(),
            health: HealthBoard::default(),
        },
        shutdown,
    ));
    while sim.view(STORE).acked_through < head {
        if started.elapsed() > DRAIN_LIMIT {
            return Err(format!(
                "stuck: central acknowledged {} of {head} after {DRAIN_LIMIT:?}\n{}",
                sim.view(STORE).acked_through,
                cluster.diagnostics()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    trigger.trigger();
    let _ = task.await;
    drop(consumer);
    let s = stats.snapshot();
    let (batches_taken, payload_bytes) = {
        let state = sim.lock();
        (state.batch_sizes.len(), state.mqtt_payload_bytes)
    };
    if s.connections > 1 {
        // A drain that needed a reconnect: show why (the nodes' logs).
        eprintln!(
            "the uplink connected {} times; the cluster's logs:\n{}",
            s.connections,
            cluster.diagnostics()
        );
    }
    drop(writer);
    tokio::task::spawn_blocking(move || {
        thread.join();
        drop(cluster);
    })
    .await
    .ok();
    let _ = std::fs::remove_file(&path);
    Ok(MqttFigures {
        events: head,
        seconds,
        per_s: head as f64 / seconds,
        batches_sent: s.batches_sent,
        batches_taken,
        payload_bytes,
        resends: s.resends,
        connections: s.connections,
    })
}
