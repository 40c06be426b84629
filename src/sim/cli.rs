//! `storegate sim <device>`: standalone simulators for checking a real
//! installation without the real devices. Each speaks the device's real
//! format over the real transport, prints one line per thing it sends,
//! and runs until Ctrl-C or SIGTERM. Their content comes from the demo
//! catalog ([`super::catalog`]), which `sim central` serves by default.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use axum::body::Body;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

use super::catalog::{self, ITEMS};
use super::central::Central;
use super::central_mqtt::ConsumerOptions;
use super::m100::{self, Field, Tag};
use super::mqtt::Link;
use super::pos::{Line, Printer, Receipt};
use super::pty::{self, Pty, Slave};
use super::say::Say;
use super::shelf::{self, Climate, Shelf, weight};
use super::zebra::{Read, Zebra};

/// The simulators, as `storegate sim` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum SimCommand {
    /// M100-class UHF RFID module on a serial line: answers the agent's
    /// multi-poll with tag notices for tags wandering through its field.
    M100 {
        /// Serial port to talk on (a USB adapter, or one end of a socat
        /// pair). Without it a pseudo-terminal is made and its path printed.
        #[arg(long)]
        port: Option<PathBuf>,
        #[arg(long, default_value_t = 115_200)]
        baud: u32,
        /// Length of one inventory round.
        #[arg(long, default_value_t = 1000)]
        round_ms: u64,
    },
    /// POS printing ESC/POS receipts to a serial receipt printer (tap).
    PosEscpos {
        /// Serial port to print on; without it a pseudo-terminal is made.
        #[arg(long)]
        port: Option<PathBuf>,
        #[arg(long, default_value_t = 9600)]
        baud: u32,
        /// Time between receipts.
        #[arg(long, default_value_t = 3000)]
        every_ms: u64,
        /// Till number printed on the receipts.
        #[arg(long, default_value = "1")]
        pos: String,
    },
    /// Zebra FX reader (IoT Connector) publishing tag data events to MQTT.
    Zebra {
        #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
        broker: String,
        /// The reader's data topic (the agent's device `topic`).
        #[arg(long, default_value = "store/rfid/door")]
        topic: String,
        /// Time between tag reads.
        #[arg(long, default_value_t = 1000)]
        every_ms: u64,
    },
    /// Load-cell smart shelf on Modbus TCP (8 slots, grams); shoppers take
    /// items and staff refill empty slots.
    ShelfModbus {
        #[arg(long, default_value = "0.0.0.0:1502")]
        listen: String,
        /// Time between items taken.
        #[arg(long, default_value_t = 4000)]
        every_ms: u64,
    },
    /// XY-MD02 temperature/humidity sensor, served over Modbus TCP.
    XyMd02 {
        #[arg(long, default_value = "0.0.0.0:1503")]
        listen: String,
        /// Time between changes of the values.
        #[arg(long, default_value_t = 5000)]
        every_ms: u64,
    },
    /// Shelf labels on MQTT: confirm every update sent to {topic}/+/set.
    EslMqtt {
        #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
        broker: String,
        /// The labels' base topic (the agent's esl device `topic`).
        #[arg(long, default_value = "store/esl")]
        topic: String,
        /// How long a label takes to redraw before it confirms.
        #[arg(long, default_value_t = 300)]
        redraw_ms: u64,
    },
    /// OpenEPaperLink access point over HTTP: lists its tags on /get_db,
    /// takes /jsonupload drawings (the tags fetch them at their next
    /// check-in) and /tag_cmd commands (ledflash).
    Oepl {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// The tags' MACs (16 hex digits), comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "0000021A4B3C5D6E")]
        tags: Vec<String>,
        /// The tags have an LED (find this label).
        #[arg(long)]
        led: bool,
    },
    /// The reference central platform (spec/sync-api.md): takes pushes,
    /// serves the price book and stock baselines.
    Central {
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: String,
        /// JSON state file: loaded at start if present, saved after changes.
        #[arg(long)]
        state: Option<PathBuf>,
        /// Require this bearer token (the agent's central.token_file).
        #[arg(long)]
        token: Option<String>,
        /// Start with an empty price book instead of the demo catalog.
        #[arg(long)]
        empty: bool,
        /// Serve per-store configs from this directory ({store_id}.toml;
        /// spec/fleet.md 4); PUT /admin/stores/{s}/config changes one.
        #[arg(long)]
        configs: Option<PathBuf>,
        /// Also consume the fleet uplink (docs/fleet.md) from these
        /// brokers, tried in turn: mqtt://host:port[,mqtt://...].
        #[arg(long, value_delimiter = ',')]
        mqtt: Vec<String>,
        /// The agents' central.topic_prefix.
        #[arg(long, default_value = "storegate/v1")]
        topic_prefix: String,
        /// Subscribe as $share/central/... (a shared subscription; not
        /// for nats-server, whose MQTT has none).
        #[arg(long)]
        shared: bool,
    },
}

/// Run one simulator until Ctrl-C or SIGTERM.
pub fn run(command: SimCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
        let stop = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        match command {
            SimCommand::Central {
                listen,
                state,
                token,
                empty,
                configs,
                mqtt,
                topic_prefix,
                shared,
            } => {
                let mqtt = (!mqtt.is_empty()).then(|| ConsumerOptions {
                    topic_prefix,
                    shared,
                    ..ConsumerOptions::new(mqtt)
                });
                central(&listen, state.as_deref(), token, empty, configs, mqtt, stop).await
            }
            other => {
                tokio::select! {
                    r = device(other) => r,
                    _ = stop => Ok(()),
                }
            }
        }
    })
}

async fn device(command: SimCommand) -> anyhow::Result<()> {
    match command {
        SimCommand::M100 {
            port,
            baud,
            round_ms,
        } => {
            run_m100(
                port.as_deref(),
                baud,
                Duration::from_millis(round_ms.max(50)),
            )
            .await
        }
        SimCommand::PosEscpos {
            port,
            baud,
            every_ms,
            pos,
        } => {
            run_pos(
                port.as_deref(),
                baud,
                Duration::from_millis(every_ms.max(50)),
                &pos,
            )
            .await
        }
        SimCommand::Zebra {
            broker,
            topic,
            every_ms,
        } => run_zebra(&broker, &topic, Duration::from_millis(every_ms.max(10))).await,
        SimCommand::ShelfModbus { listen, every_ms } => {
            run_shelf(&listen, Duration::from_millis(every_ms.max(50))).await
        }
        SimCommand::XyMd02 { listen, every_ms } => {
            run_climate(&listen, Duration::from_millis(every_ms.max(50))).await
        }
        SimCommand::EslMqtt {
            broker,
            topic,
            redraw_ms,
        } => run_esl(&broker, &topic, Duration::from_millis(redraw_ms)).await,
        SimCommand::Oepl { listen, tags, led } => run_oepl(&listen, &tags, led).await,
        SimCommand::Central { .. } => Ok(()), // handled by `run`
    }
}

/// `sim oepl`: serve the tags and print what the agent sends them.
async fn run_oepl(listen: &str, tags: &[String], led: bool) -> anyhow::Result<()> {
    let say = Say::stdout("oepl-ap");
    let mut sim_tags = Vec::new();
    for tag in tags {
        let mac = crate::codecs::esl::normalize_mac(tag).map_err(anyhow::Error::msg)?;
        sim_tags.push(super::oepl::SimTag::new(&mac, led));
    }
    let ap = super::oepl::SimAp::start_on(listen, sim_tags)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    say.line(format!(
        "access point at {} (set url = \"{}\"), {} tags{}",
        ap.url(),
        ap.url(),
        tags.len(),
        if led { " with LEDs" } else { "" }
    ));
    let (mut uploads, mut commands) = (0, 0);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let state = ap.state();
        for (mac, drawing) in state.uploads.iter().skip(uploads) {
            say.line(format!("<- /jsonupload {mac}: {drawing}"));
        }
        for (mac, cmd) in state.commands.iter().skip(commands) {
            say.line(format!("<- /tag_cmd {mac}: {cmd}"));
        }
        (uploads, commands) = (state.uploads.len(), state.commands.len());
    }
}

/// A serial port for a simulator: the one given, or a fresh pty whose
/// path is printed for the agent's config. Keep the `Slave` alive.
fn serial(
    port: Option<&Path>,
    baud: u32,
    say: &Say,
) -> anyhow::Result<(tokio_serial::SerialStream, Option<Slave>)> {
    match port {
        Some(p) => {
            let s = pty::open_port(p, baud)?;
            say.line(format!("talking on {}", p.display()));
            Ok((s, None))
        }
        None => {
            let Pty { master, slave } = Pty::open().context("making a pseudo-terminal")?;
            say.line(format!(
                "serial port for the agent: {} (set port = \"{}\")",
                slave.path.display(),
                slave.path.display()
            ));
            Ok((master, Some(slave)))
        }
    }
}

async fn run_m100(port: Option<&Path>, baud: u32, round: Duration) -> anyhow::Result<()> {
    let say = Say::stdout("m100");
    let (port, _pty) = serial(port, baud, &say)?;
    // Tagged goods on the sales floor: a handful of units of each tagged
    // SKU, wandering in and out of the handheld's reach.
    let population: Vec<Tag> = ITEMS
        .iter()
        .flat_map(|item| (1..=3).map(move |serial| catalog::epc(item, serial)))
        .map(|epc| Tag { epc, rssi_dbm: -60 })
        .collect();
    let field = Field::default();
    field.set(population.iter().take(3).cloned().collect());
    let wander = {
        let field = field.clone();
        let say = say.clone();
        async move {
            let mut ticker = tokio::time::interval(round * 5);
            loop {
                ticker.tick().await;
                let mut tags = field.tags();
                let Some(tag) = population.get(rand::random_range(0..population.len())) else {
                    continue;
                };
                if let Some(i) = tags.iter().position(|t| t.epc == tag.epc) {
                    if tags.len() > 1 {
                        tags.remove(i);
                        say.line(format!("tag {} left the field", tag.epc));
                    }
                } else {
                    tags.push(tag.clone());
                    say.line(format!("tag {} entered the field", tag.epc));
                }
                for t in &mut tags {
                    t.rssi_dbm = rand::random_range(-72..-40);
                }
                field.set(tags);
            }
        }
    };
    tokio::select! {
        r = m100::run(port, field, round, say) => r.context("serial port"),
        () = wander => Ok(()),
    }
}

/// A receipt of 1 to 3 random catalog items at catalog prices.
fn random_receipt(id: String, pos: &str) -> Receipt {
    let n = rand::random_range(1..=3);
    let mut lines: Vec<Line> = Vec::new();
    for _ in 0..n {
        let Some(item) = ITEMS.get(rand::random_range(0..ITEMS.len())) else {
            continue;
        };
        if lines.iter().any(|l| l.sku == item.sku) {
            continue;
        }
        lines.push(Line {
            sku: item.sku.into(),
            name: item.name.into(),
            qty: rand::random_range(1..=2),
            unit_price_minor: item.price_minor,
        });
    }
    Receipt {
        id,
        pos: pos.to_string(),
        lines,
    }
}

/// A short tag for this run, so receipt ids differ between runs (the
/// agent rightly ignores a receipt id it already has).
pub fn run_tag() -> String {
    format!("{:04X}", rand::random_range(0..0x10000u32))
}

async fn run_pos(port: Option<&Path>, baud: u32, every: Duration, pos: &str) -> anyhow::Result<()> {
    let say = Say::stdout("pos-escpos");
    let (port, _pty) = serial(port, baud, &say)?;
    let mut printer = Printer::new(port, "STOREGATE SIM", say);
    let tag = run_tag();
    let mut ticker = tokio::time::interval(every);
    for n in 1.. {
        ticker.tick().await;
        let receipt = random_receipt(format!("R{tag}-{n:04}"), pos);
        printer.print(&receipt).await.context("printing")?;
    }
    Ok(())
}

async fn run_zebra(broker: &str, topic: &str, every: Duration) -> anyhow::Result<()> {
    let say = Say::stdout("zebra");
    let link = Link::connect(broker, &format!("sim-zebra-{}", run_tag()), None)
        .map_err(anyhow::Error::msg)?;
    let zebra = Zebra::new(link, topic, say.clone());
    say.line(format!("connecting to {broker}"));
    while !zebra.link().wait_connected(Duration::from_secs(5)).await {
        say.line(format!("waiting for the broker at {broker}"));
    }
    say.line(format!("connected; publishing tag reads to {topic}"));
    let population: Vec<String> = ITEMS
        .iter()
        .flat_map(|item| (1..=5).map(move |serial| catalog::epc(item, serial)))
        .collect();
    let mut ticker = tokio::time::interval(every);
    loop {
        ticker.tick().await;
        let Some(epc) = population.get(rand::random_range(0..population.len())) else {
            continue;
        };
        let read = Read {
            epc: epc.clone(),
            antenna: rand::random_range(1..=4),
            rssi_dbm: rand::random_range(-72..-40),
        };
        zebra.publish(&[read]).await.map_err(anyhow::Error::msg)?;
    }
}

/// Slots of the standalone shelf: the first five catalog items.
const SHELF_UNITS: i64 = 8;

async fn run_shelf(listen: &str, every: Duration) -> anyhow::Result<()> {
    let say = Say::stdout("shelf-modbus");
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let shelf = Shelf::new(say.clone());
    let items: Vec<_> = ITEMS.iter().take(5).collect();
    let mut map = Vec::new();
    for (slot, item) in (0u16..).zip(&items) {
        shelf.set_grams(slot, weight(item.unit_weight_g, SHELF_UNITS));
        map.push(format!("{slot} = \"{}\"", item.sku));
    }
    say.line(format!(
        "Modbus TCP on {} (unit: any); agent config: slots = {{ {} }}",
        listener.local_addr()?,
        map.join(", ")
    ));
    let server = shelf::serve(listener, shelf.registers.clone(), say.clone());
    let shoppers = async {
        let mut ticker = tokio::time::interval(every);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let i = rand::random_range(0..items.len());
            let (Some(item), Ok(slot)) = (items.get(i), u16::try_from(i)) else {
                continue;
            };
            let units = i64::from(shelf.grams(slot)) / item.unit_weight_g.max(1);
            if units == 0 {
                say.line(format!("staff refill slot {slot} ({})", item.sku));
                shelf.set_grams(slot, weight(item.unit_weight_g, SHELF_UNITS));
            } else {
                say.line(format!("a shopper takes 1 x {} from slot {slot}", item.sku));
                shelf.set_grams(slot, weight(item.unit_weight_g, units - 1));
            }
        }
    };
    tokio::select! {
        r = server => r.context("Modbus server"),
        () = shoppers => Ok(()),
    }
}

async fn run_climate(listen: &str, every: Duration) -> anyhow::Result<()> {
    let say = Say::stdout("xy-md02");
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    say.line(format!(
        "Modbus TCP on {} (unit: any): input registers 1 = temperature x10, 2 = humidity x10",
        listener.local_addr()?
    ));
    let (mut t, mut h) = (4.0f64, 62.0f64);
    let climate = Climate::new(t, h, say.clone());
    let server = shelf::serve(listener, climate.registers.clone(), say);
    let drift = async {
        let mut ticker = tokio::time::interval(every);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            // A chilled cabinet: small drift, now and then a door left
            // open for a while (above 8 C), then back.
            t = (t + f64::from(rand::random_range(-5..=6)) / 10.0).clamp(2.0, 9.5);
            h = (h + f64::from(rand::random_range(-10..=10)) / 10.0).clamp(50.0, 75.0);
            climate.set(t, h);
        }
    };
    tokio::select! {
        r = server => r.context("Modbus server"),
        () = drift => Ok(()),
    }
}

async fn run_esl(broker: &str, topic: &str, redraw: Duration) -> anyhow::Result<()> {
    let say = Say::stdout("esl-mqtt");
    let filter = format!("{topic}/+/set");
    let link = Link::connect(
        broker,
        &format!("sim-esl-{}", run_tag()),
        Some(filter.clone()),
    )
    .map_err(anyhow::Error::msg)?;
    say.line(format!("connecting to {broker}"));
    while !link.wait_connected(Duration::from_secs(5)).await {
        say.line(format!("waiting for the broker at {broker}"));
    }
    say.line(format!("connected; labels listen on {filter}"));
    super::esl::run(link, topic.to_string(), redraw, say).await;
    Ok(())
}

/// `sim central`: serve until `stop`, saving the state file after changes.
async fn central(
    listen: &str,
    state: Option<&Path>,
    token: Option<String>,
    empty: bool,
    configs: Option<PathBuf>,
    mqtt: Option<ConsumerOptions>,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let say = Say::stdout("central");
    let loaded = match state {
        Some(path) => Central::load(path).map_err(anyhow::Error::msg)?,
        None => None,
    };
    let central = match loaded {
        Some(c) => {
            say.line(format!(
                "state loaded from {}",
                state.map_or(String::new(), |p| p.display().to_string())
            ));
            c
        }
        None => {
            let c = Central::default();
            if !empty {
                catalog::seed(&c, chrono::Utc::now());
                say.line(format!(
                    "price book: the demo catalog ({} SKUs, version {}) with initial stock",
                    ITEMS.len(),
                    c.lock().price_version
                ));
            }
            c
        }
    };
    if token.is_some() {
        central.lock().behaviour.token = token;
    }
    if let Some(dir) = configs {
        say.line(format!(
            "store configs from {} ({{store_id}}.toml; PUT /admin/stores/{{s}}/config changes one)",
            dir.display()
        ));
        central.lock().configs_dir = Some(dir);
    }
    if central.lock().behaviour.token.is_some() {
        say.line("requests need the bearer token (--token, or the one in the state file)");
    }
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    say.line(format!(
        "sync API on http://{} (central.url for the agent)",
        listener.local_addr()?
    ));
    let _consumer = match mqtt {
        Some(options) => {
            say.line(format!(
                "fleet uplink: consuming {}/+/events from {}{}",
                options.topic_prefix,
                options.brokers.join(", "),
                if options.shared {
                    " (shared subscription)"
                } else {
                    ""
                }
            ));
            Some(central.spawn_mqtt(options).map_err(anyhow::Error::msg)?)
        }
        None => None,
    };
    let app = central
        .router()
        .layer(middleware::from_fn(move |req, next| {
            exchange(req, next, say.clone())
        }));
    let server = axum::serve(listener, app);
    let saver = async {
        let Some(path) = state else {
            return std::future::pending().await;
        };
        let mut last = central.to_json();
        if let Err(e) = central.save(path) {
            eprintln!("central: cannot save {}: {e}", path.display());
        }
        let mut ticker = tokio::time::interval(Duration::from_millis(500));
        loop {
            ticker.tick().await;
            let now = central.to_json();
            if now != last {
                if let Err(e) = central.save(path) {
                    eprintln!("central: cannot save {}: {e}", path.display());
                }
                last = now;
            }
        }
    };
    let result = tokio::select! {
        r = server => r.context("serving"),
        () = saver => Ok(()),
        () = stop => Ok(()),
    };
    if let Some(path) = state {
        central
            .save(path)
            .with_context(|| format!("saving {}", path.display()))?;
    }
    result
}

/// Print one line per request central answers: what was asked, and the
/// answer (price and stock answers as a summary, others as sent).
async fn exchange(req: Request, next: Next, say: Say) -> Response {
    let what = format!("{} {}", req.method(), req.uri());
    let key = req
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(|k| format!(" [{k}]"))
        .unwrap_or_default();
    let response = next.run(req).await;
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default();
    say.line(format!(
        "{what}{key} -> {} {}",
        parts.status.as_u16(),
        summary(&bytes)
    ));
    Response::from_parts(parts, Body::from(bytes))
}

/// An answer body in one short line.
fn summary(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Some(items) = v.get("items").and_then(|i| i.as_array()) {
            let skus: Vec<&str> = items
                .iter()
                .filter_map(|i| i.get("sku").and_then(|s| s.as_str()))
                .take(8)
                .collect();
            let through = v
                .get("through_seq")
                .map(|t| format!(" through_seq {t}"))
                .unwrap_or_default();
            return format!(
                "version {}{through}, {} items [{}{}]",
                v.get("version").unwrap_or(&serde_json::Value::Null),
                items.len(),
                skus.join(" "),
                if items.len() > skus.len() { " ..." } else { "" }
            );
        }
    }
    let text = String::from_utf8_lossy(body);
    text.chars().take(160).collect()
}
