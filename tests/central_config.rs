//! Config from central (docs/fleet.md, "Config from central"): the real
//! `storegate` binary against the reference central over HTTP on
//! loopback, with Modbus shelves served by a real tokio-modbus server.
//! Accepted, rejected (bootstrap key, unknown key, bad device), rolled
//! back, and killed with SIGKILL in the middle of applying one; in each,
//! no acknowledged event is lost and central gets every event once.

mod common;
#[path = "central_config/world.rs"]
mod world;

use std::time::Duration;

use common::free_port;
use serde_json::{Value, json};
use storegate::db::central_config;
use storegate::event::{Event, EventBody};
use world::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_config_is_applied_journaled_and_reported() {
    let (one, one_addr) = shelf(1000).await;
    let (_two, two_addr) = shelf(2000).await;
    let world = World::new(60, &shelf_toml("shelf-1", &one_addr)).await;
    let mut agent = world.start("agent.log");
    world
        .wait(&agent, "shelf-1 to be ingesting", || {
            (weights_from(&world.events(), "shelf-1", 1000) > 0).then_some(())
        })
        .await;
    assert!(world.status().contains("config     the local file"));

    // Central adds a second shelf and a locale.
    let central_toml = format!(
        "locale = \"fr-FR\"\n{}\n{}",
        shelf_toml("shelf-1", &one_addr),
        shelf_toml("shelf-2", &two_addr)
    );
    let version = world.central.set_config(STORE, &central_toml).unwrap();
    assert_eq!(version, 1);
    world
        .wait(&agent, "the new shelf to ingest", || {
            (weights_from(&world.events(), "shelf-2", 2000) > 0).then_some(())
        })
        .await;
    agent.wait_log("applying central config v1");
    // shelf-1 was up before and is up again: the trial passes.
    world
        .wait(&agent, "the trial to pass", || {
            world
                .stored()
                .first()
                .filter(|c| c.state == central_config::ACTIVE)
                .map(|_| ())
        })
        .await;
    // The old device still ingests after the restart.
    set_weight(&one, 1500);
    world
        .wait(&agent, "shelf-1 to ingest under the new config", || {
            (weights_from(&world.events(), "shelf-1", 1500) > 0).then_some(())
        })
        .await;
    let sha = storegate::config::layered::sha256_hex(&central_toml);
    let hb = world
        .wait(&agent, "the heartbeat to carry v1", || {
            world
                .central
                .view(STORE)
                .status
                .filter(|s| s["config_version"] == json!(1) && s["config_state"] == "active")
        })
        .await;
    assert_eq!(hb["config_sha256"], json!(sha), "{hb}");
    assert_eq!(hb["config_rejected_version"], Value::Null, "{hb}");
    assert_exactly_once(&world, &agent).await;
    assert_eq!(
        applied_at_central(&world.at_central()),
        [(json!(1), "central".to_string())]
    );
    let applied = world
        .at_central()
        .into_values()
        .find(|e| e["kind"] == "config_applied")
        .unwrap();
    assert_eq!(applied["data"]["sha256"], json!(sha));
    let status = world.status();
    assert!(
        status.contains("config     central v1 over the local file (active"),
        "{status}"
    );
    // Polled every second since: nothing applied twice.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(applied_at_central(&world.at_central()).len(), 1);
    assert_eq!(world.stored().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_configs_name_every_problem_and_the_old_one_keeps_running() {
    let (one, one_addr) = shelf(1000).await;
    let world = World::new(60, &shelf_toml("shelf-1", &one_addr)).await;
    let agent = world.start("agent.log");
    world
        .wait(&agent, "shelf-1 to be ingesting", || {
            (weights_from(&world.events(), "shelf-1", 1000) > 0).then_some(())
        })
        .await;
    let cases: [(String, &[&str]); 3] = [
        // A bootstrap key (two of them: both named).
        (
            format!(
                "store_id = \"s2\"\n[api]\nlisten = \"0.0.0.0:80\"\n{}",
                shelf_toml("shelf-1", &one_addr)
            ),
            &["store_id: is a bootstrap key", "api: is a bootstrap key"],
        ),
        // An unknown key, and a wrong value beside it.
        (
            format!(
                "locle = \"fr-FR\"\ndurability = \"sometimes\"\n{}",
                shelf_toml("shelf-1", &one_addr)
            ),
            &[
                "locle: unknown key; did you mean \"locale\"?",
                "durability: \"sometimes\" is not allowed",
            ],
        ),
        // A bad device: an unknown profile and a missing address.
        (
            "[[device]]\nid = \"shelf-9\"\nprofile = \"loadcell-shelf-modbuss\"\ntransport = \"modbus-tcp\"\n".to_string(),
            &[
                "device[0].profile: unknown profile \"loadcell-shelf-modbuss\"",
                "device[0].address: missing",
            ],
        ),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let version = world.central.set_config(STORE, text).unwrap();
        assert_eq!(version, i as i64 + 1);
        let message = world
            .wait(&agent, &format!("config_rejected for v{version}"), || {
                open_alert(&world.events(), "config_rejected")
                    .filter(|m| m.starts_with(&format!("central config v{version} rejected")))
            })
            .await;
        for problem in *expected {
            assert!(
                message.contains(problem),
                "{problem:?} not in the alert:\n{message}"
            );
        }
        // The old config keeps running and ingesting.
        let grams = 3000 + 700 * i as u32;
        set_weight(&one, grams);
        world
            .wait(&agent, "shelf-1 to keep ingesting", || {
                (weights_from(&world.events(), "shelf-1", grams as i64) > 0).then_some(())
            })
            .await;
        world
            .wait(&agent, "the heartbeat to name the rejected version", || {
                world
                    .central
                    .view(STORE)
                    .status
                    .filter(|s| s["config_rejected_version"] == json!(version))
            })
            .await;
    }
    // Polled every second: a refused sha256 is never tried again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stored = world.stored();
    assert_eq!(stored.len(), 3, "one row per rejected config");
    assert!(stored.iter().all(|c| c.state == central_config::REJECTED));
    assert!(
        !agent
            .last_log_lines(10_000)
            .contains("applying central config")
    );
    let hb = world.central.view(STORE).status.unwrap();
    assert_eq!(hb["config_version"], Value::Null, "{hb}");
    assert_eq!(hb["open_alerts"]["config_rejected"], json!(1), "{hb}");
    assert!(world.status().contains("config     the local file"));
    assert_exactly_once(&world, &agent).await;
    assert!(applied_at_central(&world.at_central()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_whose_device_never_comes_up_is_rolled_back_and_not_retried() {
    let (one, one_addr) = shelf(1000).await;
    let world = World::new(4, &shelf_toml("shelf-1", &one_addr)).await;
    let mut agent = world.start("agent.log");
    world
        .wait(&agent, "shelf-1 to be ingesting", || {
            (weights_from(&world.events(), "shelf-1", 1000) > 0).then_some(())
        })
        .await;
    // The same shelf moved to an address where nothing answers.
    let closed = format!("127.0.0.1:{}", free_port());
    let version = world
        .central
        .set_config(STORE, &shelf_toml("shelf-1", &closed))
        .unwrap();
    agent.wait_log("applying central config v1");
    let applied_at = std::time::Instant::now();
    let message = world
        .wait(&agent, "config_rolled_back", || {
            open_alert(&world.events(), "config_rolled_back")
        })
        .await;
    let took = applied_at.elapsed();
    assert!(
        message.starts_with(&format!(
            "central config v{version} rolled back to the local file: device shelf-1 did not come back"
        )),
        "{message}"
    );
    // Within config_rollback_s (4 s) plus the restart, on a loaded box.
    assert!(took < Duration::from_secs(40), "rolled back after {took:?}");
    // Back on the local file: shelf-1 ingests again.
    set_weight(&one, 1700);
    world
        .wait(&agent, "shelf-1 to ingest after the rollback", || {
            (weights_from(&world.events(), "shelf-1", 1700) > 0).then_some(())
        })
        .await;
    // Not tried again, though central still serves it and it is polled
    // every second.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let stored = world.stored();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(
        (stored[0].version, stored[0].state.as_str()),
        (1, central_config::ROLLED_BACK)
    );
    assert_exactly_once(&world, &agent).await;
    assert_eq!(
        applied_at_central(&world.at_central()),
        [
            (json!(1), "central".to_string()),
            (Value::Null, "rollback".to_string())
        ]
    );
    let hb = world
        .wait(&agent, "the heartbeat after the rollback", || {
            world
                .central
                .view(STORE)
                .status
                .filter(|s| s["open_alerts"]["config_rolled_back"] == json!(1))
        })
        .await;
    assert_eq!(hb["config_version"], Value::Null, "{hb}");
    let status = world.status();
    assert!(status.contains("config     the local file"), "{status}");
    assert!(status.contains("central v1 rolled back"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_while_applying_loses_no_acknowledged_event() {
    let (_one, one_addr) = shelf(1000).await;
    let (_two, two_addr) = shelf(2000).await;
    let world = World::new(60, &shelf_toml("shelf-1", &one_addr)).await;
    let mut agent = world.start("agent-1.log");
    world
        .wait(&agent, "shelf-1 to be ingesting", || {
            (weights_from(&world.events(), "shelf-1", 1000) > 0).then_some(())
        })
        .await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = staff_writer(world.api, stop.clone());
    world
        .wait(&agent, "staff writes to be acknowledged", || {
            world
                .events()
                .iter()
                .any(|e| matches!(&e.body, EventBody::Adjustment(_)))
                .then_some(())
        })
        .await;
    let central_toml = format!(
        "{}\n{}",
        shelf_toml("shelf-1", &one_addr),
        shelf_toml("shelf-2", &two_addr)
    );
    world.central.set_config(STORE, &central_toml).unwrap();
    // SIGKILL as soon as it says it applies: in the drain, or the restart.
    agent.wait_log("applying central config v1");
    agent.kill();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = writer.join().unwrap();
    assert!(!acked.is_empty());

    let mut agent = world.start("agent-2.log");
    // It comes back on the stored config: shelf-2 ingests, the trial
    // passes (shelf-1 is back).
    world
        .wait(&agent, "shelf-2 to ingest after the restart", || {
            (weights_from(&world.events(), "shelf-2", 2000) > 0).then_some(())
        })
        .await;
    world
        .wait(&agent, "the trial to pass after the restart", || {
            world
                .stored()
                .first()
                .filter(|c| c.state == central_config::ACTIVE)
                .map(|_| ())
        })
        .await;
    agent.wait_log("storegate is running");

    // Every acknowledged write is journaled once, under the seq the API
    // answered, and central has the whole journal exactly once.
    let events = world.events();
    for (reason, seq) in &acked {
        let found: Vec<&Event> = events
            .iter()
            .filter(|e| matches!(&e.body, EventBody::Adjustment(a) if &a.reason == reason))
            .collect();
        assert_eq!(found.len(), 1, "{reason} journaled {} times", found.len());
        assert_eq!(found[0].seq, *seq, "{reason}");
    }
    assert_exactly_once(&world, &agent).await;
    assert_eq!(
        applied_at_central(&world.at_central()),
        [(json!(1), "central".to_string())]
    );
    let status = world.status();
    assert!(
        status.contains("central v1 over the local file (active"),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_central_fetches_merges_and_validates_without_applying() {
    let (_one, one_addr) = shelf(1000).await;
    let world = World::new(60, &shelf_toml("shelf-1", &one_addr)).await;
    let config = world.config.clone();
    let check = move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_storegate"))
            .args(["check", "--central", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, out, _) = tokio::task::spawn_blocking(check.clone()).await.unwrap();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("central manages no config"), "{out}");

    let good = format!(
        "{}\n{}",
        shelf_toml("shelf-1", &one_addr),
        shelf_toml("shelf-2", "127.0.0.1:1502")
    );
    world.central.set_config(STORE, &good).unwrap();
    let (code, out, err) = tokio::task::spawn_blocking(check.clone()).await.unwrap();
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("central config v1 over"), "{out}");
    assert!(out.contains("devices    2"), "{out}");
    assert!(out.contains("shelf-2"), "{out}");

    world
        .central
        .set_config(STORE, "data_dir = \"/tmp\"\nlocle = \"x\"\n")
        .unwrap();
    let (code, _, err) = tokio::task::spawn_blocking(check).await.unwrap();
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("central config v2"), "{err}");
    assert!(err.contains("data_dir: is a bootstrap key"), "{err}");
    // Nothing was applied: no agent ran, no database was written.
    assert!(!world.db().exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_mqtt_uplink_pull_config_applies_at_once() {
    let broker = common::broker::Mosquitto::start();
    let (_one, one_addr) = shelf(1000).await;
    let (_two, two_addr) = shelf(2000).await;
    // No polling to speak of: only the command can bring the config.
    let world = World::with_central(
        60,
        &shelf_toml("shelf-1", &one_addr),
        &format!(
            "transport = \"mqtt\"\nbrokers = [\"mqtt://127.0.0.1:{}\"]\nack_timeout_s = 5\npoll_config_s = 3600\n",
            broker.port
        ),
    )
    .await;
    let mut options = storegate::sim::central_mqtt::ConsumerOptions::new(vec![format!(
        "mqtt://127.0.0.1:{}",
        broker.port
    )]);
    options.client_id = format!("central-cfg-{}", free_port());
    let consumer = world.central.spawn_mqtt(options).unwrap();
    let mut agent = world.start("agent.log");
    agent.wait_log("connected to central's broker");
    world
        .wait(&agent, "shelf-1 to be ingesting", || {
            (weights_from(&world.events(), "shelf-1", 1000) > 0).then_some(())
        })
        .await;
    world
        .wait(&agent, "the consumer to connect", || {
            consumer.is_connected().then_some(())
        })
        .await;
    // Past the pull at start (it found nothing).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sent = std::time::Instant::now();
    // Changing the config at central sends pull_config over MQTT.
    world
        .central
        .set_config(
            STORE,
            &format!(
                "{}\n{}",
                shelf_toml("shelf-1", &one_addr),
                shelf_toml("shelf-2", &two_addr)
            ),
        )
        .unwrap();
    agent.wait_log("applying central config v1");
    agent.wait_log("central asked for a config pull; pulling now");
    assert!(
        sent.elapsed() < Duration::from_secs(60),
        "took {:?} (poll_config_s is an hour)",
        sent.elapsed()
    );
    world
        .wait(&agent, "the new shelf to ingest", || {
            (weights_from(&world.events(), "shelf-2", 2000) > 0).then_some(())
        })
        .await;
    assert_exactly_once(&world, &agent).await;
    assert_eq!(
        applied_at_central(&world.at_central()),
        [(json!(1), "central".to_string())]
    );
    drop(consumer);
}
