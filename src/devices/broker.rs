//! The embedded MQTT broker (`[mqtt] broker = "embedded"`): rumqttd in
//! process, so that a store without its own broker can still have its
//! readers, POS and labels publish to the gateway box.
//!
//! The broker keeps its state in memory only: it lives and dies with the
//! agent. That is enough for invariant 1, because the broker's queue for
//! the agent and the agent itself can then only go away together; a store
//! that wants messages queued while the agent restarts (an upgrade, a
//! crash) runs an external broker with persistence (e.g. mosquitto).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};
use tracing::Metadata;
use tracing_subscriber::filter::{FilterFn, filter_fn};

use super::DeviceError;

/// Largest payload the agent publishes (ESL updates are a few KiB).
pub const MAX_PAYLOAD: usize = 256 * 1024;
/// Largest payload the embedded broker takes from a device: the default
/// device limit (`max_message_bytes`), so that up to it the agent decides
/// (a larger message is quarantined with a reason). rumqttd refuses a
/// larger PUBLISH itself by dropping the publisher's connection; the
/// agent never sees it, and a device limit above this has no effect here.
const MAX_DEVICE_PAYLOAD: usize = crate::config::DEFAULT_MAX_MESSAGE_BYTES;
/// How long to wait for the broker to accept connections after starting.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A log filter that drops rumqttd's spans and keeps its events. rumqttd
/// opens a span for every PUBLISH it routes, at ERROR level with the topic
/// as a field, so any log filter that keeps its warnings enables them too,
/// and formatting those fields took about a seventh of the CPU of the
/// embedded broker under RFID load (`storegate bench mqtt` under perf).
/// Its warnings and errors still reach the log, without the span context.
pub fn without_broker_spans() -> FilterFn<fn(&Metadata<'_>) -> bool> {
    fn keep(meta: &Metadata<'_>) -> bool {
        !(meta.is_span() && meta.target().starts_with("rumqttd"))
    }
    filter_fn(keep)
}

/// Addresses an embedded broker of this process listens on.
static STARTED: std::sync::Mutex<Vec<SocketAddr>> = std::sync::Mutex::new(Vec::new());

/// Start rumqttd on `listen` (an MQTT 3.1.1 server) on its own thread and
/// return once the port accepts TCP connections. The broker runs until the
/// process ends; rumqttd cannot be stopped. So when the daemon runs again
/// in the same process (a config from central applied), the broker it
/// started before is reused: same address, nothing to do.
pub fn start_embedded(listen: SocketAddr) -> Result<(), DeviceError> {
    let mut started = STARTED.lock().unwrap_or_else(|p| p.into_inner());
    if started.contains(&listen) {
        return Ok(());
    }
    start_new(listen)?;
    started.push(listen);
    Ok(())
}

fn start_new(listen: SocketAddr) -> Result<(), DeviceError> {
    let open_error = |reason: String| DeviceError::Open {
        what: format!("embedded MQTT broker on {listen}"),
        reason,
    };
    if listen.port() == 0 {
        return Err(open_error(
            "embedded_listen needs a fixed port (devices must know where to connect)".into(),
        ));
    }
    // rumqttd binds inside its server thread and only logs a failure, so
    // find out here whether the address is free, with a clear message.
    // (Someone could still take it in between; the wait below catches that
    // as a broker that never accepts.)
    if let Err(e) = TcpListener::bind(listen) {
        let reason = if e.kind() == std::io::ErrorKind::AddrInUse {
            format!(
                "address {listen} is already in use (another broker? set [mqtt] embedded_listen or broker)"
            )
        } else {
            format!("cannot listen on {listen}: {e}")
        };
        return Err(open_error(reason));
    }

    let config = broker_config(listen);
    // `Broker::start` blocks for as long as its servers run; it returns
    // only when they have all stopped, e.g. because the bind failed.
    let (ended_tx, ended_rx) = mpsc::channel::<String>();
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let mut broker = Broker::new(config);
            let outcome = match broker.start() {
                Ok(()) => "the broker's servers stopped".to_string(),
                Err(e) => e.to_string(),
            };
            tracing::error!(error = %outcome, "embedded MQTT broker stopped");
            let _ = ended_tx.send(outcome);
        })
        .map_err(|e| open_error(format!("cannot start a thread: {e}")))?;

    let probe = SocketAddr::new(reachable_ip(listen.ip()), listen.port());
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(outcome) = ended_rx.try_recv() {
            return Err(open_error(format!(
                "the broker stopped while starting ({outcome}); is {listen} in use?"
            )));
        }
        if mqtt_handshake(probe).is_ok() {
            tracing::info!(listen = %listen, "embedded MQTT broker is listening");
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(open_error(format!(
                "not accepting connections on {listen} after {} s",
                START_TIMEOUT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the broker on `addr` answers an MQTT CONNECT: the readiness
/// probe. It speaks MQTT 3.1.1 (CONNECT, CONNACK, then closes) because
/// rumqttd logs an ERROR for every connection that closes before sending
/// CONNECT, so a bare TCP connect would put a spurious error in the log at
/// every start. It closes without DISCONNECT for the same reason: rumqttd
/// 0.20 logs a client's DISCONNECT as "router-drop" at ERROR, and a close
/// after CONNACK at INFO (no will, clean session: nothing is left behind).
fn mqtt_handshake(addr: SocketAddr) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind, Read, Write};
    const CLIENT_ID: &[u8] = b"storegate-readiness-probe";
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut connect = vec![0x10, (12 + CLIENT_ID.len()) as u8];
    // Protocol "MQTT" level 4, clean session, keep-alive 10 s.
    connect.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 10]);
    connect.extend_from_slice(&[0, CLIENT_ID.len() as u8]);
    connect.extend_from_slice(CLIENT_ID);
    stream.write_all(&connect)?;
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack)?;
    if connack != [0x20, 0x02, 0x00, 0x00] {
        return Err(Error::new(
            ErrorKind::InvalidData,
            format!("unexpected CONNACK {connack:02x?}"),
        ));
    }
    stream.shutdown(std::net::Shutdown::Write)?;
    // Wait for the broker to close its side, so the probe's connection is
    // gone before the agent's own client connects.
    let _ = stream.read(&mut [0u8; 1]);
    Ok(())
}

/// Where a client on this host reaches a server listening on `ip`: an
/// unspecified address (`0.0.0.0`, `::`) listens on loopback too.
pub fn reachable_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    }
}

/// rumqttd's configuration for a store: one MQTT 3.1.1 listener, limits
/// sized for a gateway box rather than rumqttd's cloud defaults.
fn broker_config(listen: SocketAddr) -> Config {
    let connections = ConnectionSettings {
        // Time a new connection has to send CONNECT.
        connection_timeout_ms: 10_000,
        max_payload_size: MAX_DEVICE_PAYLOAD.max(MAX_PAYLOAD),
        // QoS 1 messages sent to one client and not yet acknowledged. The
        // agent acknowledges only after its commit, so this is how far the
        // broker runs ahead of the journal.
        max_inflight_count: 100,
        auth: None,
        external_auth: None,
        // Devices publish to topics nobody declared in advance.
        dynamic_filters: true,
    };
    let server = ServerSettings {
        name: "storegate-v4".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    Config {
        id: 0,
        router: RouterConfig {
            // Readers, tills, label gateways and the agent of one store.
            max_connections: 1000,
            max_outgoing_packet_count: 200,
            // Messages are kept in memory per topic filter, in a ring of
            // segments. rumqttd drops the oldest segment when the ring is
            // full, even if the agent has not read it yet (it does not push
            // back on publishers), so the ring must hold any backlog the
            // agent can build up: 16 x 16 MiB, about a minute of a busy
            // store's reads behind a stalled agent. Memory is used only
            // while a backlog exists. Stores that need more use an external
            // broker with persistence (docs/config.md).
            max_segment_size: 16 * 1024 * 1024,
            max_segment_count: 16,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("1".to_string(), server)])),
        ..Config::default()
    }
}
