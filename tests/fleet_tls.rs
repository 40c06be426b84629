//! The fleet uplink over mutual TLS (issue 16): a real mosquitto with a
//! TLS listener that requires a client certificate, certificates made by
//! the `openssl` CLI in a temp dir, and the real agent binary. A client
//! certificate from another CA is refused: the agent says so loudly and
//! keeps every event; with the right certificate (same data dir) the
//! reference consumer, itself on mutual TLS, ends with every event once.

mod common;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use common::certs::{ca, signed};
use common::{Agent, free_port, wait_for, wait_for_async, wait_within};
use storegate::config::Durability;
use storegate::db::{self, Writer, journal};
use storegate::domain::Projections;
use storegate::event::{EventBody, NewEvent, Reading, now_millis};
use storegate::sim::central::Central as CentralSim;
use storegate::sim::central_mqtt::{ConsumerOptions, ConsumerTls};
use storegate::sync;

const STORE: &str = "s1";
const EVENTS: usize = 500;

/// The PKI of the test: `ca` (the broker's and the good clients'),
/// `server` (127.0.0.1), `store` and `central` (good clients), and
/// `intruder` signed by `other-ca`.
fn pki(dir: &Path) {
    ca(dir, "ca");
    ca(dir, "other-ca");
    signed(
        dir,
        "server",
        "ca",
        "subjectAltName = IP:127.0.0.1\nextendedKeyUsage = serverAuth\n",
    );
    let client = "extendedKeyUsage = clientAuth\n";
    signed(dir, "store", "ca", client);
    signed(dir, "central", "ca", client);
    signed(dir, "intruder", "other-ca", client);
}

/// mosquitto with one TLS listener that requires a client certificate
/// signed by `ca.pem`; killed when dropped.
struct TlsBroker {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl TlsBroker {
    fn start(dir: &Path) -> TlsBroker {
        let port = free_port();
        let conf = dir.join("mosquitto.conf");
        let log = dir.join("mosquitto.log");
        let p = |f: &str| dir.join(f).display().to_string();
        // `user root`: as root, mosquitto would otherwise drop to the
        // `mosquitto` user, who cannot read the temp dir (no effect when
        // not root).
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\n\
                 allow_anonymous true\n\
                 persistence false\n\
                 max_queued_messages 0\n\
                 cafile {}\n\
                 certfile {}\n\
                 keyfile {}\n\
                 require_certificate true\n\
                 log_dest file {}\n\
                 log_type all\n\
                 user root\n",
                p("ca.pem"),
                p("server.pem"),
                p("server.key"),
                log.display()
            ),
        )
        .unwrap();
        let child = common::broker::spawn_mosquitto(&conf, port);
        TlsBroker { child, port, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The agent's config: mutual TLS with the client certificate `client`.
fn agent_config(dir: &Path, pki: &Path, port: u16, client: &str) -> PathBuf {
    let config = dir.join("storegate.toml");
    let p = |f: &str| pki.join(f).display().to_string();
    std::fs::write(
        &config,
        format!(
            r#"store_id = "{STORE}"
data_dir = "{data}"
[api]
listen = "127.0.0.1:{api}"
[central]
transport = "mqtt"
brokers = ["mqtts://127.0.0.1:{port}"]
url = "http://127.0.0.1:9"
ca_file = "{ca}"
client_cert = "{cert}"
client_key = "{key}"
max_backoff_s = 2
poll_prices_s = 3600
poll_stock_s = 3600
"#,
            data = dir.display(),
            api = free_port(),
            ca = p("ca.pem"),
            cert = p(&format!("{client}.pem")),
            key = p(&format!("{client}.key")),
        ),
    )
    .unwrap();
    config
}

/// A backlog journaled before the agent starts (it was offline).
fn backlog(db_path: &Path) {
    let conn = db::open_write(db_path, Durability::Full).unwrap();
    let (writer, thread) = Writer::spawn(conn, Box::new(Projections::default())).unwrap();
    let events = (0..EVENTS)
        .map(|i| {
            NewEvent::new(
                now_millis(),
                "sensor",
                EventBody::Reading(Reading {
                    name: format!("r{i}"),
                    value: i as f64,
                    unit: "C".into(),
                }),
            )
        })
        .collect();
    block_on(writer.append(events)).unwrap();
    drop(writer);
    thread.join();
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

/// Wait (30 s) for `text` in the agent's log; on a timeout, show the log.
async fn wait_log(agent: &Agent, text: &str) {
    for _ in 0..300 {
        if std::fs::read_to_string(&agent.log)
            .unwrap_or_default()
            .contains(text)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "no {text:?} in the agent's log:\n{}",
        agent.last_log_lines(30)
    );
}

fn last_acked(db_path: &Path) -> i64 {
    let conn = db::open_read(db_path).unwrap();
    sync::state::read(&conn).unwrap().last_acked_seq
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_client_certificate_is_refused_loudly_and_nothing_is_dropped() {
    let pki_dir = tempfile::tempdir().unwrap();
    pki(pki_dir.path());
    let broker = TlsBroker::start(pki_dir.path());
    let url = format!("mqtts://127.0.0.1:{}", broker.port);

    // Central's consumer, on mutual TLS with its own good certificate.
    let central = CentralSim::default();
    let mut options = ConsumerOptions::new(vec![url]);
    options.client_id = format!("central-{}", free_port());
    options.tls = Some(ConsumerTls {
        ca_file: pki_dir.path().join("ca.pem"),
        client: Some((
            pki_dir.path().join("central.pem"),
            pki_dir.path().join("central.key"),
        )),
    });
    let consumer = central.spawn_mqtt(options).unwrap();
    wait_for_async("the consumer to connect over TLS", || {
        consumer.is_connected().then_some(())
    })
    .await;

    let data = tempfile::tempdir().unwrap();
    let db_path = data.path().join("storegate.db");
    backlog(&db_path);

    // The intruder's certificate (another CA): refused, said loudly.
    let config = agent_config(data.path(), pki_dir.path(), broker.port, "intruder");
    let agent = Agent::start(&config, data.path().join("agent-bad.log"));
    wait_log(&agent, "refused the connection").await;
    let log = std::fs::read_to_string(&agent.log).unwrap();
    let refusal = log
        .lines()
        .find(|l| l.contains("refused the connection"))
        .unwrap();
    assert!(refusal.contains("ERROR"), "not loud enough: {refusal}");
    assert!(
        refusal.contains("certificate"),
        "does not point at the certificate: {refusal}"
    );
    assert!(
        !log.contains("connected to central's broker"),
        "the wrong certificate got in:\n{log}"
    );
    // The broker refused it too, and says why in its log.
    wait_for("the broker to log the refusal", || {
        let l = broker.log();
        (l.contains("OpenSSL Error") || l.contains("certificate")).then_some(())
    });
    // Give it a few tries, then check nothing moved.
    tokio::time::sleep(Duration::from_secs(2)).await;
    agent.kill();
    assert_eq!(last_acked(&db_path), 0, "nothing may count as pushed");
    let journal = journal::events_after(&db::open_read(&db_path).unwrap(), 0, 1_000_000).unwrap();
    assert!(journal.len() >= EVENTS, "{} events left", journal.len());
    let seqs: Vec<i64> = journal.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=journal.len() as i64).collect::<Vec<_>>());
    assert!(central.view(STORE).events.is_empty());

    // The right certificate, same data dir: everything arrives, once.
    let config = agent_config(data.path(), pki_dir.path(), broker.port, "store");
    let mut agent = Agent::start(&config, data.path().join("agent-good.log"));
    agent.wait_log("connected to central's broker");
    wait_within(
        "central to acknowledge the whole journal",
        Duration::from_secs(60),
        || {
            let head = journal::head(&db::open_read(&db_path).unwrap()).unwrap();
            let view = central.view(STORE);
            (head >= EVENTS as i64 && view.acked_through == head && last_acked(&db_path) == head)
                .then_some(())
        },
    )
    .await;
    let local = journal::events_after(&db::open_read(&db_path).unwrap(), 0, 1_000_000).unwrap();
    let view = central.view(STORE);
    let seqs: Vec<i64> = view.events.keys().copied().collect();
    let head = local.last().unwrap().seq;
    assert!(head >= EVENTS as i64);
    assert_eq!(
        seqs,
        (1..=head).collect::<Vec<_>>(),
        "contiguous, each once"
    );
    common::assert_at_central(&view.events, &local);
    drop(agent);
    drop(consumer);
}
