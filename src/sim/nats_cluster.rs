//! A real cluster of Debian's `nats-server` (2.9) on loopback, as the
//! retailer's MQTT broker cluster for the fleet uplink (issue 16).
//!
//! Every node has JetStream (its own store dir in a temp dir: NATS keeps
//! MQTT sessions, QoS 1 messages and retained messages in JetStream
//! streams, replicated across the cluster), an `mqtt {}` listener and
//! routes to every other node. [`NatsCluster::start`] returns once every
//! node is routed to all the others, reports JetStream current with a meta
//! leader on its monitoring port (`/healthz?js-server-only=true`, `/jsz`)
//! and answers an MQTT CONNECT with
//! CONNACK 0 (the first MQTT connection makes the cluster create its MQTT
//! streams, so this also waits for those).
//!
//! Independent of the agent: plain processes, files and sockets. Used by
//! the tests (`tests/common/nats.rs`) and `storegate bench uplink`; it
//! panics on failure, as a test harness does.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on loopback (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// A scratch directory, removed when dropped.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> ScratchDir {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path =
            std::env::temp_dir().join(format!("storegate-nats-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).expect("cannot create the cluster's temp dir");
        ScratchDir(path)
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Startup, restart and JetStream elections on a loaded 2-core machine
/// take seconds; a minute is the limit before the harness gives up.
const DEADLINE: Duration = Duration::from_secs(60);

struct Node {
    name: String,
    conf: PathBuf,
    log: PathBuf,
    mqtt_port: u16,
    http_port: u16,
    child: Option<Child>,
}

/// `nodes` nats-servers, killed when dropped.
pub struct NatsCluster {
    dir: ScratchDir,
    nodes: Vec<Node>,
}

impl NatsCluster {
    /// Start `nodes` servers and wait until the cluster is ready (60 s).
    pub fn start(nodes: usize) -> NatsCluster {
        assert!(nodes >= 1);
        let dir = ScratchDir::new();
        // Four ports per node, all distinct.
        let mut taken = std::collections::HashSet::new();
        let mut port = || loop {
            let p = free_port();
            if taken.insert(p) {
                return p;
            }
        };
        let ports: Vec<[u16; 4]> = (0..nodes)
            .map(|_| [port(), port(), port(), port()])
            .collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|[_, _, cluster, _]| format!("nats-route://127.0.0.1:{cluster}"))
            .collect();
        let nodes = ports
            .iter()
            .enumerate()
            .map(|(i, &[client, http, cluster, mqtt])| {
                let name = format!("n{i}");
                let store = dir.path().join(&name);
                let conf = dir.path().join(format!("{name}.conf"));
                let cluster_block = if ports.len() > 1 {
                    format!(
                        "cluster {{\n  name: storegate-test\n  listen: 127.0.0.1:{cluster}\n  routes: [{}]\n}}\n",
                        routes.join(", ")
                    )
                } else {
                    String::new()
                };
                // Small JetStream limits: the defaults reserve 75 % of
                // RAM and of the disk.
                let text = format!(
                    "server_name: {name}\n\
                     listen: 127.0.0.1:{client}\n\
                     http: 127.0.0.1:{http}\n\
                     jetstream {{\n  store_dir: \"{}\"\n  max_memory_store: 64MB\n  max_file_store: 256MB\n}}\n\
                     {cluster_block}\
                     mqtt {{\n  listen: 127.0.0.1:{mqtt}\n}}\n",
                    store.display()
                );
                std::fs::write(&conf, text).unwrap();
                Node {
                    log: dir.path().join(format!("{name}.log")),
                    name,
                    conf,
                    mqtt_port: mqtt,
                    http_port: http,
                    child: None,
                }
            })
            .collect();
        let mut cluster = NatsCluster { dir, nodes };
        for i in 0..cluster.nodes.len() {
            cluster.spawn(i);
        }
        for i in 0..cluster.nodes.len() {
            cluster.wait_ready(i);
        }
        cluster
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// `mqtt://127.0.0.1:PORT` of every node, in node order.
    pub fn mqtt_urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("mqtt://127.0.0.1:{}", n.mqtt_port))
            .collect()
    }

    /// The MQTT port of node `i`.
    pub fn mqtt_port(&self, i: usize) -> u16 {
        self.nodes[i].mqtt_port
    }

    /// The monitoring (HTTP) port of node `i`.
    pub fn http_port(&self, i: usize) -> u16 {
        self.nodes[i].http_port
    }

    /// The temp dir holding every node's config, log and store.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// SIGKILL node `i`: no shutdown, no goodbye to the routes.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start node `i` again (same ports, same store dir) and wait until it
    /// is back in the cluster and serves MQTT.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        self.wait_ready(i);
    }

    /// The last `n` lines of node `i`'s log (every run of it).
    pub fn log_tail(&self, i: usize, n: usize) -> String {
        let log = std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Every node's state and log tail, for a failure message.
    pub fn diagnostics(&self) -> String {
        (0..self.nodes.len())
            .map(|i| {
                let state = if self.nodes[i].child.is_some() {
                    "running"
                } else {
                    "killed"
                };
                format!(
                    "--- {} ({state}), last log lines:\n{}\n",
                    self.nodes[i].name,
                    self.log_tail(i, 25)
                )
            })
            .collect()
    }

    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .unwrap();
        // Debian installs it in /usr/sbin, not on every user's PATH.
        let program = if std::path::Path::new("/usr/sbin/nats-server").exists() {
            "/usr/sbin/nats-server"
        } else {
            "nats-server"
        };
        let child = Command::new(program)
            .arg("-c")
            .arg(&node.conf)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("nats-server is needed for these tests (apt-get install nats-server)");
        node.child = Some(child);
    }

    /// Node `i` runs, has a route to every other running node, reports
    /// JetStream healthy with a meta leader, and accepts an MQTT session.
    fn wait_ready(&mut self, i: usize) {
        let started = Instant::now();
        let running = self.nodes.iter().filter(|n| n.child.is_some()).count();
        loop {
            if let Some(child) = self.nodes[i].child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "nats-server {} exited ({status})\n{}",
                    self.nodes[i].name,
                    self.diagnostics()
                );
            }
            let last = match self.readiness(i, running) {
                Ok(()) => return,
                Err(why) => why,
            };
            if started.elapsed() > DEADLINE {
                panic!(
                    "nats-server {} not ready after {DEADLINE:?}: {last}\n{}",
                    self.nodes[i].name,
                    self.diagnostics()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn readiness(&self, i: usize, running: usize) -> Result<(), String> {
        let node = &self.nodes[i];
        // JetStream up and current with the meta leader. Not the full
        // /healthz: on nats-server 2.9.10 a restarted node's replica of
        // another node's MQTT consumer (`$MQTT_rmsgs_<hash>`) was seen to
        // stay "not current" for over a minute while the node served MQTT
        // correctly; the MQTT probe below is what the tests need.
        let (code, body) = http_get(node.http_port, "/healthz?js-server-only=true")?;
        if code != 200 {
            return Err(format!("/healthz {code}: {body}"));
        }
        if running > 1 {
            let (_, routez) = http_get(node.http_port, "/routez")?;
            let routez: serde_json::Value =
                serde_json::from_str(&routez).map_err(|e| format!("/routez: {e}"))?;
            let routes = routez["num_routes"].as_u64().unwrap_or(0) as usize;
            if routes < running - 1 {
                return Err(format!("{routes} routes of {}", running - 1));
            }
            let (_, jsz) = http_get(node.http_port, "/jsz")?;
            let jsz: serde_json::Value =
                serde_json::from_str(&jsz).map_err(|e| format!("/jsz: {e}"))?;
            let leader = jsz["meta_cluster"]["leader"].as_str().unwrap_or("");
            if leader.is_empty() {
                return Err("no JetStream meta leader".into());
            }
        }
        mqtt_connack(node.mqtt_port)
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// A plain HTTP/1.0 GET on loopback: (status, body).
fn http_get(port: u16, path: &str) -> Result<(u16, String), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("monitor port: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad HTTP answer: {text:?}"))?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b).into();
    Ok((code, body))
}

/// An MQTT 3.1.1 CONNECT (clean session) answered by CONNACK 0, then
/// DISCONNECT. Raw bytes: the harness needs no runtime.
fn mqtt_connack(port: u16) -> Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("MQTT port: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let id = b"harness-probe";
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 30];
    body.extend_from_slice(&(id.len() as u16).to_be_bytes());
    body.extend_from_slice(id);
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend_from_slice(&body);
    s.write_all(&packet).map_err(|e| e.to_string())?;
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack)
        .map_err(|e| format!("no CONNACK: {e}"))?;
    if connack != [0x20, 2, 0, 0] {
        return Err(format!("CONNACK {connack:?}"));
    }
    let _ = s.write_all(&[0xe0, 0]);
    Ok(())
}
