//! Real MQTT counterparts for tests: Debian's mosquitto on a free port, and
//! the devices' side of a broker (a plain rumqttc client).

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};
use storegate::config::{Broker, MqttConfig};
use tokio::sync::mpsc;

use super::{free_port, wait_for};

/// mosquitto on a free port, in memory only; killed when dropped.
pub struct Mosquitto {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    pub fn start() -> Mosquitto {
        Mosquitto::start_on(free_port())
    }

    pub fn start_on(port: u16) -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("mosquitto.conf");
        // No queue limit: a burst must not be dropped by the broker while
        // the agent catches up (the default drops past 1000).
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\n"
            ),
        )
        .unwrap();
        let child = spawn_mosquitto(&conf, port);
        Mosquitto {
            child,
            port,
            _dir: dir,
        }
    }

    pub fn config(&self, client_id: &str) -> MqttConfig {
        MqttConfig {
            broker: Broker::External {
                url: format!("mqtt://127.0.0.1:{}", self.port),
            },
            client_id: client_id.into(),
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The test's own MQTT client: the devices' side of the broker.
pub struct Peer {
    client: AsyncClient,
    packets: mpsc::UnboundedReceiver<Packet>,
}

impl Peer {
    pub async fn connect(port: u16, id: &str) -> Peer {
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(30));
        // Devices may send (and tests send) far more than rumqttc's 10 KiB
        // default.
        options.set_max_packet_size(64 * 1024 * 1024, 64 * 1024 * 1024);
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        let (tx, packets) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(MqttEvent::Incoming(p)) => {
                        if tx.send(p).is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        let mut peer = Peer { client, packets };
        peer.expect("CONNACK", |p| matches!(p, Packet::ConnAck(_)).then_some(()))
            .await;
        peer
    }

    /// Wait (30 s at most) for a packet `f` picks.
    pub async fn expect<T>(&mut self, what: &str, mut f: impl FnMut(&Packet) -> Option<T>) -> T {
        let found = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(p) = self.packets.recv().await {
                if let Some(v) = f(&p) {
                    return Some(v);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(v)) => v,
            _ => panic!("timed out waiting for {what}"),
        }
    }

    pub async fn subscribe(&mut self, filter: &str) {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .unwrap();
        self.expect("SUBACK", |p| matches!(p, Packet::SubAck(_)).then_some(()))
            .await;
    }

    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }

    /// QoS 0: a message the agent must not acknowledge.
    pub async fn publish_at_most_once(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtMostOnce, false, payload)
            .await
            .unwrap();
    }
}

/// Start mosquitto on `conf` and wait until it listens on `port`.
pub fn spawn_mosquitto(conf: &std::path::Path, port: u16) -> Child {
    let child = Command::new("/usr/sbin/mosquitto")
        .arg("-c")
        .arg(conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto is needed for these tests (apt-get install mosquitto)");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_for("mosquitto to listen", || {
        TcpStream::connect(addr).ok().map(|_| ())
    });
    child
}
