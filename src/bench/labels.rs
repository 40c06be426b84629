//! `storegate bench labels`: time from a committed price change to the
//! label update leaving the agent (measured when a subscriber on the
//! broker receives it, so it includes the broker hop).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use crate::config::{Broker, Config, Durability, MqttConfig};
use crate::db::Writer;
use crate::devices::label_sender::{self, Routes};
use crate::devices::{self, DeviceSpec, mqtt};
use crate::domain::{Projections, prices};
use crate::profiles::ProfileSet;

#[derive(Debug, Clone)]
pub struct LabelFigures {
    pub changes: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

pub async fn run(
    dir: &std::path::Path,
    changes: usize,
) -> Result<LabelFigures, Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("bench-labels.db");
    let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    devices::broker::start_embedded(addr)?;
    let conn = super::fresh_db(&path, Durability::Full)?;
    let (writer, thread) = Writer::spawn(conn, Box::new(Projections::default()))?;
    let (trigger, shutdown) = crate::shutdown::shutdown_pair();
    let hub = mqtt::Hub::start(
        &MqttConfig {
            broker: Broker::External {
                url: format!("mqtt://{addr}"),
            },
            client_id: "bench-labels".into(),
        },
        shutdown.clone(),
    )
    .await?;
    let profiles = ProfileSet::builtin().map_err(|e| format!("{e:?}"))?;
    let config = Config::parse(
        "store_id = \"bench\"\n[[device]]\nid = \"esl\"\nprofile = \"esl-mqtt\"\ntransport = \"mqtt\"\ntopic = \"bench/esl\"\n",
        std::path::Path::new("bench.toml"),
        &profiles.names(),
    )?;
    let d = config.devices[0].clone();
    let profile = profiles
        .get(&d.profile)
        .ok_or("no esl-mqtt profile")?
        .clone();
    let routes = Routes::from_devices(&[DeviceSpec { config: d, profile }]);
    let wake = Arc::new(tokio::sync::Notify::new());
    let sender = tokio::spawn(label_sender::run(
        writer.clone(),
        routes,
        Some(hub),
        wake.clone(),
        shutdown,
    ));

    // The "label": a subscriber that timestamps every set message.
    let mut opts = MqttOptions::new("bench-label", addr.ip().to_string(), addr.port());
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    client
        .subscribe("bench/esl/+/set", QoS::AtLeastOnce)
        .await?;
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = eventloop.poll().await? {
            break;
        }
    }
    let received: Arc<Mutex<Vec<(i64, Instant)>>> = Arc::default();
    {
        let received = received.clone();
        tokio::spawn(async move {
            while let Ok(ev) = eventloop.poll().await {
                if let Event::Incoming(Packet::Publish(p)) = ev {
                    let version = serde_json::from_slice::<serde_json::Value>(&p.payload)
                        .ok()
                        .and_then(|v| v.get("version")?.as_i64())
                        .unwrap_or(-1);
                    if let Ok(mut r) = received.lock() {
                        r.push((version, Instant::now()));
                    }
                }
            }
        });
    }

    let mut samples = Vec::with_capacity(changes);
    for i in 0..changes {
        let pull: prices::PricePull = serde_json::from_value(serde_json::json!({
            "version": i + 1,
            "items": [{"sku": "SKU-1", "name": "Oat milk", "price_minor": 200 + i, "currency": "EUR",
                       "effective_from": "2020-01-01T00:00:00.000Z", "labels": ["L-1"]}]
        }))?;
        writer
            .transact(move |w| prices::apply_pull(w.conn(), &pull, chrono::Utc::now(), "de-DE"))
            .await?;
        let committed = Instant::now();
        wake.notify_one();
        let want = i as i64 + 1;
        let deadline = Instant::now() + Duration::from_secs(10);
        let arrived = loop {
            let hit = received
                .lock()
                .ok()
                .and_then(|r| r.iter().find(|(v, _)| *v == want).map(|(_, t)| *t));
            if let Some(t) = hit {
                break t;
            }
            if Instant::now() > deadline {
                return Err(format!("label update {want} never arrived").into());
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        samples.push(arrived.saturating_duration_since(committed).as_secs_f64() * 1000.0);
    }
    trigger.trigger();
    let _ = sender.await;
    drop(writer);
    tokio::task::spawn_blocking(move || thread.join())
        .await
        .ok();
    samples.sort_by(|a, b| a.total_cmp(b));
    let pct = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Ok(LabelFigures {
        changes,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        max_ms: samples.last().copied().unwrap_or(0.0),
    })
}
