//! Customer data minimal (DESIGN invariant 11, issue 14.5): a loyalty
//! member id exists only as a keyed hash under the store's own secret. Two
//! real daemons (two stores) take the same member's receipts from a till
//! over mosquitto and push to the reference central: the hashes differ
//! between the stores, and the id itself is in no file under either
//! store's data_dir (database, WAL, quarantine included) and in nothing
//! central received.

mod common;

use std::path::{Path, PathBuf};

use common::broker::{Mosquitto, Peer};
use common::{Agent, free_port, wait_within};
use storegate::db::{self, journal};
use storegate::event::EventBody;
use storegate::sim::central::Central as CentralSim;

const MEMBER: &str = "MEMBER-12345";

fn write_config(dir: &Path, store: &str, broker: u16, central: &str) -> PathBuf {
    let path = dir.join("storegate.toml");
    std::fs::write(
        &path,
        format!(
            r#"store_id = "{store}"
data_dir = {data:?}
[api]
listen = "127.0.0.1:{api}"
[mqtt]
broker = "mqtt://127.0.0.1:{broker}"
client_id = "storegate-{store}"
[central]
url = "http://{central}"
max_backoff_s = 1
[[device]]
id = "till"
profile = "pos-json"
transport = "mqtt"
topic = "{store}/pos"
"#,
            data = dir.join("data"),
            api = free_port(),
        ),
    )
    .unwrap();
    path
}

/// Every byte of every file under `dir`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_containing(&path, needle));
        } else if let Ok(bytes) = std::fs::read(&path) {
            if bytes.windows(needle.len()).any(|w| w == needle) {
                found.push(path);
            }
        }
    }
    found
}

fn member_hashes(db: &Path) -> Vec<String> {
    let conn = db::open_read(db).unwrap();
    journal::events_after(&conn, 0, 1000)
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.body {
            EventBody::Sale(l) => l.member_hash,
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_hash_the_same_member_differently_and_keep_the_id_nowhere() {
    let broker = Mosquitto::start();
    let sim = CentralSim::default();
    let (central, _server) = sim.clone().spawn("127.0.0.1:0").await.unwrap();
    let till = Peer::connect(broker.port, "tills").await;
    let mut stores = Vec::new();
    for store in ["store-a", "store-b"] {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), store, broker.port, &central.to_string());
        let mut agent = Agent::start(&config, dir.path().join("agent.log"));
        agent.wait_log("MQTT device subscribed");
        let topic = format!("{store}/pos");
        // A good receipt, and a broken one that goes to quarantine.
        till.publish(
            &topic,
            format!(
                r#"{{"receipt_id":"R-1","currency":"EUR","member_id":"{MEMBER}","lines":[{{"sku":"SKU-1","qty":1,"unit_price_minor":100}}]}}"#
            ),
        )
        .await;
        till.publish(
            &topic,
            format!(
                r#"{{"receipt_id":"R-2","currency":"EUR","member_id":"{MEMBER}","lines":[{{"sku":"SKU-1","qty":"x","unit_price_minor":100}}]}}"#
            ),
        )
        .await;
        till.publish(&topic, format!(r#"{{"member_id":"{MEMBER}","lines":["#))
            .await;
        let db = dir.path().join("data/storegate.db");
        let quarantined = |db: &Path| {
            db::open_read(db)
                .ok()
                .and_then(|c| journal::quarantined(&c).ok())
                .unwrap_or(0)
        };
        wait_within(
            "the receipt journaled and the bad ones quarantined",
            std::time::Duration::from_secs(60),
            || (member_hashes(&db).len() == 1 && quarantined(&db) == 2).then_some(()),
        )
        .await;
        wait_within(
            "central to take the store's events",
            std::time::Duration::from_secs(60),
            || (!sim.view(store).events.is_empty()).then_some(()),
        )
        .await;
        stores.push((dir, agent, db, store));
    }

    let a = member_hashes(&stores[0].2);
    let b = member_hashes(&stores[1].2);
    assert_ne!(a, b, "two stores hash the same member the same way");
    // Nor is it the hash anyone computes with an empty key (what every
    // store journaled before the daemon passed its key to ingest).
    let empty_key_hash = {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"").unwrap();
        mac.update(MEMBER.as_bytes());
        hex::encode(mac.finalize().into_bytes())[..32].to_string()
    };
    assert!(empty_key_hash.starts_with("063b2e"), "{empty_key_hash}");
    for hash in a.iter().chain(&b) {
        assert_ne!(hash, &empty_key_hash);
    }
    for (dir, agent, _, store) in stores {
        drop(agent);
        let leaks = files_containing(dir.path(), MEMBER.as_bytes());
        // The agent's own log is under the test's dir, not data_dir: it
        // must not hold the id either.
        assert!(leaks.is_empty(), "{store}: the member id is in {leaks:?}");
        let at_central = serde_json::to_string(&sim.view(store).events).unwrap();
        assert!(!at_central.contains(MEMBER), "{store}: central got the id");
    }
}
