//! The fleet uplink through a real 3-node nats-server cluster (issue 16):
//! five stores, each a real `storegate run` taking staff adjustments
//! through its local API, push to the reference central's MQTT consumer
//! while, in one run, a broker node is SIGKILLed and restarted, every
//! agent is SIGKILLed and restarted five times, the consumer is restarted
//! once and one store's link is cut for 30 s. Afterwards central holds
//! every event of every store's journal exactly once and contiguous
//! (so every event the API acknowledged), every store's retained
//! heartbeat is current, and no agent needed a hand. The same suite's
//! short form runs against a single mosquitto (three stores, two kills
//! each, the broker restarted, a 10 s cut).

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::broker::Mosquitto;
use common::nats::NatsCluster;
use common::proxy::Proxy;
use common::{Agent, Lcg, free_port};
use serde_json::{Value, json};
use storegate::db::{self, journal};
use storegate::sim::central::Central as CentralSim;
use storegate::sim::central_mqtt::{Consumer, ConsumerOptions};

/// What one run puts the fleet through.
struct Plan {
    stores: usize,
    kills_per_agent: usize,
    /// How long the last store's link is down.
    cut: Duration,
}

/// The brokers central's side runs: a nats-server cluster or one mosquitto.
enum Brokers {
    Nats(NatsCluster),
    Mosquitto {
        broker: Option<Mosquitto>,
        port: u16,
    },
}

impl Brokers {
    fn ports(&self) -> Vec<u16> {
        match self {
            Brokers::Nats(c) => (0..c.len()).map(|i| c.mqtt_port(i)).collect(),
            Brokers::Mosquitto { port, .. } => vec![*port],
        }
    }

    fn urls(&self) -> Vec<String> {
        self.ports()
            .iter()
            .map(|p| format!("mqtt://127.0.0.1:{p}"))
            .collect()
    }

    /// SIGKILL one broker (a cluster's second node) and start it again on
    /// the same port after a pause.
    async fn kill_and_restart(&mut self) {
        match self {
            Brokers::Nats(c) => {
                c.kill(1);
                tokio::time::sleep(Duration::from_secs(3)).await;
                c.restart(1);
            }
            Brokers::Mosquitto { broker, port } => {
                // Dropping it kills it; its queue was in memory only.
                broker.take();
                tokio::time::sleep(Duration::from_secs(3)).await;
                *broker = Some(Mosquitto::start_on(*port));
            }
        }
    }

    fn diagnostics(&self) -> String {
        match self {
            Brokers::Nats(c) => c.diagnostics(),
            Brokers::Mosquitto { .. } => String::new(),
        }
    }
}
/// Generous: the machine running CI has two cores and other work.
const DRAIN_DEADLINE: Duration = Duration::from_secs(180);

/// One store: its agent process, its config and what its API acknowledged.
struct Store {
    id: String,
    dir: PathBuf,
    config: PathBuf,
    api: u16,
    agent: Option<Agent>,
    starts: usize,
    acknowledged: Arc<AtomicUsize>,
}

impl Store {
    fn new(i: usize, root: &Path, brokers: &[String], central: SocketAddr) -> Store {
        let id = format!("store-{i}");
        let dir = root.join(&id);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("staff.tokens"), "staff-1\n").unwrap();
        let api = free_port();
        let config = dir.join("storegate.toml");
        let brokers: Vec<String> = brokers.iter().map(|b| format!("{b:?}")).collect();
        std::fs::write(
            &config,
            format!(
                r#"store_id = "{id}"
data_dir = {data:?}
[api]
listen = "127.0.0.1:{api}"
token_files = {{ staff = {tokens:?} }}
[central]
transport = "mqtt"
brokers = [{brokers}]
url = "http://{central}"
ack_timeout_s = 5
heartbeat_s = 5
max_backoff_s = 2
poll_prices_s = 3600
poll_stock_s = 3600
"#,
                data = dir.join("data"),
                tokens = dir.join("staff.tokens"),
                brokers = brokers.join(", "),
            ),
        )
        .unwrap();
        Store {
            id,
            dir,
            config,
            api,
            agent: None,
            starts: 0,
            acknowledged: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn start(&mut self) {
        self.starts += 1;
        let log = self.dir.join(format!("agent-{}.log", self.starts));
        self.agent = Some(Agent::start(&self.config, log));
    }

    fn kill(&mut self) {
        if let Some(agent) = self.agent.take() {
            agent.kill();
        }
    }

    fn head(&self) -> i64 {
        db::open_read(&self.dir.join("data").join("storegate.db"))
            .ok()
            .and_then(|conn| journal::head(&conn).ok())
            .unwrap_or(0)
    }

    fn last_log(&self) -> String {
        self.agent
            .as_ref()
            .map(|a| a.last_log_lines(30))
            .unwrap_or_default()
    }
}

/// Post adjustments to a store's API until `stop`, counting the ones it
/// acknowledged (200: committed). Refused connections while its agent is
/// down are the point of the test, not an error.
fn traffic(api: u16, acknowledged: Arc<AtomicUsize>, stop: Arc<AtomicBool>) {
    tokio::spawn(async move {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let answer = http
                .post(format!("http://127.0.0.1:{api}/v1/adjustments"))
                .bearer_auth("staff-1")
                .json(&json!({"sku": format!("SKU-{}", 1000 + n % 7), "delta": 1, "reason": "count", "new_item": true}))
                .send()
                .await;
            match answer {
                Ok(a) if a.status().is_success() => {
                    acknowledged.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
}

fn consumer(central: &CentralSim, brokers: &[String], n: usize) -> Consumer {
    let mut options = ConsumerOptions::new(brokers.to_vec());
    options.client_id = format!("central-{n}-{}", free_port());
    central.spawn_mqtt(options).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_stores_through_a_failing_cluster_arrive_exactly_once() {
    let mut cluster = Brokers::Nats(NatsCluster::start(3));
    let plan = Plan {
        stores: 5,
        kills_per_agent: 5,
        cut: Duration::from_secs(30),
    };
    fleet_under_chaos(&mut cluster, &plan).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_stores_through_a_failing_mosquitto_arrive_exactly_once() {
    let port = free_port();
    let mut broker = Brokers::Mosquitto {
        broker: Some(Mosquitto::start_on(port)),
        port,
    };
    let plan = Plan {
        stores: 3,
        kills_per_agent: 2,
        cut: Duration::from_secs(10),
    };
    fleet_under_chaos(&mut broker, &plan).await;
}

async fn fleet_under_chaos(cluster: &mut Brokers, plan: &Plan) {
    let urls = cluster.urls();
    let central = CentralSim::default();
    let (central_addr, _http) = central.clone().spawn("127.0.0.1:0").await.unwrap();
    let mut consumer_now = Some(consumer(&central, &urls, 0));

    // The last store reaches the cluster through proxies that can be cut.
    let mut proxies = Vec::new();
    for port in cluster.ports() {
        let node: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        proxies.push(Proxy::start(node).await);
    }
    let root = tempfile::tempdir().unwrap();
    let mut stores: Vec<Store> = (0..plan.stores)
        .map(|i| {
            // Each store starts on another node, as a fleet spreads out.
            let brokers: Vec<String> = if i == plan.stores - 1 {
                proxies
                    .iter()
                    .map(|p| format!("mqtt://127.0.0.1:{}", p.port))
                    .collect()
            } else {
                (0..urls.len())
                    .map(|k| urls[(i + k) % urls.len()].clone())
                    .collect()
            };
            Store::new(i, root.path(), &brokers, central_addr)
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    for store in &mut stores {
        store.start();
        traffic(store.api, store.acknowledged.clone(), stop.clone());
    }

    // The chaos, on a fixed seed so that a failure can be replayed.
    let mut rng = Lcg(0x5eed_f1ee7);
    let started = Instant::now();
    let mut cut_at = None;
    for round in 0..plan.kills_per_agent {
        for store in stores.iter_mut() {
            tokio::time::sleep(Duration::from_millis(300 + rng.next() % 1200)).await;
            store.kill();
            store.start();
        }
        // A short plan has fewer rounds: the events then share the last.
        let last = plan.kills_per_agent - 1;
        if round == 0 {
            cluster.kill_and_restart().await;
        }
        if round == 1.min(last) {
            if let Some(c) = consumer_now.take() {
                c.stop();
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
            consumer_now = Some(consumer(&central, &urls, 1));
        }
        if round == 2.min(last) {
            for p in &proxies {
                p.cut();
            }
            cut_at = Some(Instant::now());
        }
    }
    if let Some(at) = cut_at {
        tokio::time::sleep(plan.cut.saturating_sub(at.elapsed())).await;
    }
    for p in &proxies {
        p.restore();
    }
    // A little more traffic on a healed fleet, then the drain.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let chaos = started.elapsed();

    let deadline = Instant::now() + DRAIN_DEADLINE;
    loop {
        let behind: Vec<String> = stores
            .iter()
            .filter_map(|s| {
                let (head, acked) = (s.head(), central.view(&s.id).acked_through);
                (acked < head).then(|| format!("{} at {acked} of {head}", s.id))
            })
            .collect();
        if behind.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = stores
                .iter()
                .map(|s| format!("--- {}\n{}", s.id, s.last_log()))
                .collect();
            panic!(
                "central did not catch up within {DRAIN_DEADLINE:?} after {chaos:?} of chaos: {behind:?}\n{}\n{}",
                logs.join("\n"),
                cluster.diagnostics()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    for s in &stores {
        let view = central.view(&s.id);
        let head = s.head();
        let conn = db::open_read(&s.dir.join("data").join("storegate.db")).unwrap();
        let local = journal::events_after(&conn, 0, 1_000_000).unwrap();
        // Nothing was trimmed (retention is 72 h): the journal is 1..=head.
        assert_eq!(local.len() as i64, head, "{}", s.id);
        let seqs: Vec<i64> = view.events.keys().copied().collect();
        assert_eq!(
            seqs,
            (1..=head).collect::<Vec<_>>(),
            "{}: central holds every seq once, contiguous",
            s.id
        );
        common::assert_at_central(&view.events, &local);
        let adjustments = local
            .iter()
            .filter(|e| e.body.kind() == "adjustment")
            .count();
        let acknowledged = s.acknowledged.load(Ordering::Relaxed);
        assert!(
            adjustments >= acknowledged,
            "{}: {acknowledged} adjustments acknowledged by the API, {adjustments} journaled",
            s.id
        );
        assert!(acknowledged > 0, "{}: the API never answered", s.id);
        eprintln!(
            "{}: {head} events at central, {acknowledged} adjustments acknowledged by the API, {} starts",
            s.id, s.starts
        );
        assert_eq!(s.starts, plan.kills_per_agent + 1, "{}", s.id);
    }

    // Every store's heartbeat at central is from the running agent.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stale: BTreeMap<String, Option<Value>> = stores
            .iter()
            .filter_map(|s| {
                let status = central.view(&s.id).status;
                let current = status.as_ref().is_some_and(|h| {
                    h["online"] == json!(true) && h["acked_through"].as_i64() == Some(s.head())
                });
                (!current).then(|| (s.id.clone(), status))
            })
            .collect();
        if stale.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "heartbeats not current: {stale:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(consumer_now);
}
