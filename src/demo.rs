//! `storegate demo`: the whole store on one machine, no hardware.
//!
//! A data directory (temporary unless `--dir`), the embedded MQTT broker,
//! and simulated devices that speak the real formats over the real
//! transports: an M100 UHF module and a POS receipt-printer tap on
//! pseudo-terminals, a Zebra reader and shelf labels on MQTT, a load-cell
//! shelf and an XY-MD02 sensor on Modbus TCP, and the reference central
//! platform in process. The real agent ([`crate::daemon::run_until`]) runs
//! in between, exactly as `storegate run` would.
//!
//! A scripted story runs through a store day in fast motion (deliveries,
//! sales, a promo, a price conflict, a shelf running low, an RFID count,
//! central going offline and coming back with a price change), scaled to
//! `--duration`. A live summary shows what the store knows; at the end
//! the store must have handed everything to central, and central and store
//! must agree on the stock of every SKU (the exit code says whether).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard};

use std::time::{Duration, Instant};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use anyhow::{Context, anyhow};
use chrono::Utc;
use rusqlite::Connection;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio_serial::SerialStream;

use crate::db::{self, journal};
use crate::domain::{alerts, labels, prices, stock};
use crate::event::format_ts;
use crate::sim::catalog::{self, ITEMS, Item, decimal};
use crate::sim::central::Central;
use crate::sim::cli::run_tag;
use crate::sim::esl;
use crate::sim::m100::{self, Field, Tag};
use crate::sim::mqtt::Link;
use crate::sim::pos::{Line, Printer, Receipt};
use crate::sim::pty::{Pty, Slave};
use crate::sim::say::Say;
use crate::sim::shelf::{self, Climate, Shelf, weight};
use crate::sim::zebra::{Read, Zebra};

/// `storegate demo` options.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Run this many seconds, then print the final summary and exit
    /// (the story is scaled to fit). Without it: until Ctrl-C.
    #[arg(long)]
    pub duration: Option<u64>,
    /// Keep the store's data (database, config, tokens, log, central's
    /// state) in this directory instead of a temporary one.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

const STORE: &str = "demo-store";
const DOOR_TOPIC: &str = "demo/rfid/door";
const ESL_TOPIC: &str = "demo/esl";
const API_PORT: u16 = 8080;
/// The story's length when no `--duration` is given; the store keeps
/// trading after it until Ctrl-C.
const OPEN_ENDED_STORY: Duration = Duration::from_secs(90);
/// Shelf slots 0..5 hold the first five catalog items.
const SHELF_ITEMS: usize = 5;
/// SKUs the live summary shows.
const WATCHED: [&str; 4] = ["SKU-1001", "SKU-1003", "SKU-1004", "SKU-1005"];
/// Longest wait at the end for the store to hand everything to central.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(45);

/// Run the demo; the exit code is 0 only when central and store agree.
pub fn main(args: DemoArgs, json_logs: bool) -> ExitCode {
    let (dir, keep) = match data_dir(args.dir.as_deref()) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("storegate demo: {e:#}");
            return ExitCode::from(2);
        }
    };
    init_logging(&dir, json_logs);
    let outcome = tokio::runtime::Runtime::new()
        .context("starting the async runtime")
        .and_then(|rt| {
            let r = rt.block_on(run(&dir, keep, args.duration.map(Duration::from_secs)));
            // The broker thread and blocking reads must not hold up the exit.
            rt.shutdown_timeout(Duration::from_secs(2));
            r
        });
    if !keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("storegate demo: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The data directory and whether to keep it. A kept directory must not
/// hold an earlier demo: its journal would not match a fresh central.
fn data_dir(dir: Option<&Path>) -> anyhow::Result<(PathBuf, bool)> {
    match dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            if d.join("storegate.db").exists() {
                anyhow::bail!(
                    "{} holds the data of an earlier demo; remove it or choose another --dir",
                    d.display()
                );
            }
            Ok((std::path::absolute(d)?, true))
        }
        None => {
            let d = std::env::temp_dir().join(format!(
                "storegate-demo-{}-{}",
                std::process::id(),
                run_tag()
            ));
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
            Ok((d, false))
        }
    }
}

/// The agent's log goes to `storegate.log` in the data directory: the
/// terminal belongs to the story and the live summary.
fn init_logging(dir: &Path, json: bool) {
    let Ok(file) = std::fs::File::create(dir.join("storegate.log")) else {
        return;
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("STOREGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(Mutex::new(file));
    let quiet = crate::devices::broker::without_broker_spans();
    let _ = if json {
        builder.json().finish().with(quiet).try_init()
    } else {
        builder.finish().with(quiet).try_init()
    };
}

/// Prints story lines with the time since the demo started.
#[derive(Clone, Copy)]
struct Narrator {
    start: Instant,
}

impl Narrator {
    fn line(&self, what: impl std::fmt::Display) {
        println!("{:>6.1}s  {what}", self.start.elapsed().as_secs_f64());
    }
}

async fn run(dir: &Path, keep: bool, duration: Option<Duration>) -> anyhow::Result<bool> {
    let started = Instant::now();
    let say = Narrator { start: started };
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;

    let rig = Arc::new(Rig::build(dir).await?);
    rig.banner(keep, duration);
    let setup = crate::setup::load(&rig.config_path).map_err(|e| anyhow!("{e}"))?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut daemon = tokio::spawn(crate::daemon::run_until(setup, async move {
        let _ = stop_rx.await;
    }));

    let day = async {
        rig.open(&say).await;
        let story_len = match duration {
            // The last 15 % of the time is plain trading, so the story's
            // last effects (label confirmations, the backlog draining) are
            // visible before the end.
            Some(d) => (started + d.mul_f64(0.85)).saturating_duration_since(Instant::now()),
            None => OPEN_ENDED_STORY,
        };
        story(rig.clone(), story_len, say).await;
    };
    let time_up = async {
        match duration {
            Some(d) => tokio::time::sleep_until((started + d).into()).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = day => {}
        () = time_up => say.line("time is up: closing the store"),
        _ = term.recv() => say.line("SIGTERM: closing the store"),
        _ = int.recv() => say.line("Ctrl-C: closing the store"),
        () = rig.live_summary(say) => {}
        r = &mut daemon => {
            return Err(match r {
                Ok(Ok(())) => anyhow!("the agent stopped unexpectedly"),
                Ok(Err(e)) => anyhow!("the agent stopped: {e}"),
                Err(e) => anyhow!("the agent failed: {e}"),
            });
        }
    }

    // Close the store: readers and tills stop, central is reachable.
    rig.field.set(Vec::new());
    rig.central.lock().behaviour.down = false;
    let agree = rig.final_summary(say).await;
    let _ = stop_tx.send(());
    match tokio::time::timeout(Duration::from_secs(30), daemon).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => eprintln!("storegate demo: the agent reported on stopping: {e}"),
        Ok(Err(e)) => eprintln!("storegate demo: the agent failed: {e}"),
        Err(_) => eprintln!("storegate demo: the agent did not stop within 30 s"),
    }
    if keep {
        let path = dir.join("central.json");
        match rig.central.save(&path) {
            Ok(()) => println!(
                "central's state is in {} (storegate sim central --state {} serves it again)",
                path.display(),
                path.display()
            ),
            Err(e) => eprintln!("storegate demo: cannot save {}: {e}", path.display()),
        }
    }
    agree
}

/// What the story changes as it goes.
struct Trade {
    /// A SKU that sells fast right now (two per receipt).
    focus: Option<&'static str>,
    receipts: u32,
    deliveries: u32,
    /// Units on each shelf slot.
    shelf_units: [i64; SHELF_ITEMS],
    /// The scripted part is over; the store just trades (and reorders).
    story_told: bool,
}

/// Everything the demo runs besides the agent.
struct Rig {
    dir: PathBuf,
    db: PathBuf,
    config_path: PathBuf,
    api: String,
    staff_token: String,
    central: Central,
    central_url: String,
    mqtt_port: u16,
    shelf: Shelf,
    shelf_addr: String,
    climate: Climate,
    climate_addr: String,
    field: Field,
    pos: tokio::sync::Mutex<Printer<SerialStream>>,
    zebra: Zebra,
    http: reqwest::Client,
    /// Run tag in receipt and delivery ids.
    tag: String,
    trade: Mutex<Trade>,
    /// The agent's ends of the pseudo-terminals (M100, POS).
    ptys: [Slave; 2],
    /// The label gateway's connection until the labels start answering.
    labels: Mutex<Option<Link>>,
}

/// A bearer token: 128 random bits in hex.
fn random_token() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// A TOML string literal.
fn q(s: impl AsRef<str>) -> String {
    toml::Value::String(s.as_ref().to_string()).to_string()
}

/// A local TCP port nobody listens on right now.
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Units a shelf slot holds when full.
fn capacity(item: &Item) -> i64 {
    2 * item.min_stock
}

impl Rig {
    /// Start the simulated devices and central, write tokens and config.
    async fn build(dir: &Path) -> anyhow::Result<Rig> {
        let sync_token = random_token();
        let staff_token = random_token();
        let pull_token = random_token();
        let write = |name: &str, text: String| -> anyhow::Result<PathBuf> {
            let path = dir.join(name);
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            Ok(path)
        };
        let staff_file = write("staff.tokens", format!("# storegate demo\n{staff_token}\n"))?;
        let pull_file = write(
            "central.tokens",
            format!("# storegate demo\n{pull_token}\n"),
        )?;
        let sync_file = write("central.token", format!("{sync_token}\n"))?;

        // Central publishes the catalog and the opening stock before the
        // store opens.
        let central = Central::default();
        central.lock().behaviour.token = Some(sync_token);
        // The opening stock is there from the start; the day's price book
        // follows once the store's devices are online (see `open`).
        catalog::publish_stock(&central);
        let (central_addr, _) = central
            .clone()
            .spawn("127.0.0.1:0")
            .await
            .context("starting the central platform")?;
        let central_url = format!("http://{central_addr}");

        // Modbus TCP devices: the shelf and the chiller's sensor.
        let shelf = Shelf::new(Say::quiet());
        let mut shelf_units = [0; SHELF_ITEMS];
        for ((slot, units), item) in (0u16..).zip(&mut shelf_units).zip(&ITEMS) {
            *units = capacity(item).min(item.initial_stock);
            shelf.set_grams(slot, weight(item.unit_weight_g, *units));
        }
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let shelf_addr = listener.local_addr()?.to_string();
        tokio::spawn(shelf::serve(
            listener,
            shelf.registers.clone(),
            Say::quiet(),
        ));
        let climate = Climate::new(3.8, 64.0, Say::quiet());
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let climate_addr = listener.local_addr()?.to_string();
        tokio::spawn(shelf::serve(
            listener,
            climate.registers.clone(),
            Say::quiet(),
        ));

        // Serial devices on pseudo-terminals.
        let Pty {
            master: m100_port,
            slave: m100_slave,
        } = Pty::open().context("making a pseudo-terminal for the M100 module")?;
        let Pty {
            master: pos_port,
            slave: pos_slave,
        } = Pty::open().context("making a pseudo-terminal for the POS printer")?;
        let field = Field::default();
        tokio::spawn(m100::run(
            m100_port,
            field.clone(),
            Duration::from_millis(500),
            Say::quiet(),
        ));
        let pos = Printer::new(pos_port, "DEMO STORE", Say::quiet());

        // MQTT devices; they connect once the agent has started its broker.
        let mqtt_port = free_port()?;
        let broker = format!("mqtt://127.0.0.1:{mqtt_port}");
        let zebra = Zebra::new(
            Link::connect(&broker, "demo-door-reader", None).map_err(anyhow::Error::msg)?,
            DOOR_TOPIC,
            Say::quiet(),
        );
        let labels = Link::connect(
            &broker,
            "demo-label-gateway",
            Some(format!("{ESL_TOPIC}/+/set")),
        )
        .map_err(anyhow::Error::msg)?;

        // 8080 as the docs say, unless something else has it.
        let api_port = match std::net::TcpListener::bind(("127.0.0.1", API_PORT)) {
            Ok(_) => API_PORT,
            Err(_) => free_port()?,
        };
        let slots: Vec<String> = ITEMS
            .iter()
            .take(SHELF_ITEMS)
            .enumerate()
            .map(|(i, item)| format!("{i} = {}", q(item.sku)))
            .collect();
        let config = format!(
            r#"# Written by `storegate demo` for its simulated store.
store_id = {store}
data_dir = {data_dir}
# Does not exist: the built-in firmware profiles only.
profiles_dir = {profiles_dir}
locale = "de-DE"

[api]
listen = "127.0.0.1:{api_port}"
token_files = {{ staff = {staff}, central = {pull} }}

[mqtt]
broker = "embedded"
embedded_listen = "127.0.0.1:{mqtt_port}"
client_id = "storegate-demo-store"

[central]
url = {central_url}
token_file = {sync}
# Fast motion: a day in a minute.
max_backoff_s = 2
poll_prices_s = 2
poll_stock_s = 5

[rfid]
dedup_window_ms = 2000

[[device]]
id = "handheld-uhf"
profile = "uhf-m100-serial"
transport = "serial"
port = {m100_port}
zone = "salesfloor"

[[device]]
id = "door-reader"
profile = "zebra-fx-iot-connector"
transport = "mqtt"
topic = {door_topic}
zone = "backroom"

[[device]]
id = "pos-1"
profile = "pos-escpos-journal"
transport = "serial"
port = {pos_port}

[[device]]
id = "shelf-a1"
profile = "loadcell-shelf-modbus"
transport = "modbus-tcp"
address = {shelf_addr}
unit = 1
poll_ms = 500
slots = {{ {slots} }}

# An RS-485 sensor in real stores (modbus-rtu); the demo serves it over
# Modbus TCP so that no serial line is needed.
[[device]]
id = "chiller-1"
profile = "xy-md02"
transport = "modbus-tcp"
address = {climate_addr}
unit = 1
poll_ms = 500
alert_above = 8.0

[[device]]
id = "labels"
profile = "esl-mqtt"
transport = "mqtt"
topic = {esl_topic}
"#,
            store = q(STORE),
            data_dir = q(dir.to_string_lossy()),
            profiles_dir = q(dir.join("no-profiles").to_string_lossy()),
            staff = q(staff_file.to_string_lossy()),
            pull = q(pull_file.to_string_lossy()),
            central_url = q(&central_url),
            sync = q(sync_file.to_string_lossy()),
            m100_port = q(m100_slave.path.to_string_lossy()),
            door_topic = q(DOOR_TOPIC),
            pos_port = q(pos_slave.path.to_string_lossy()),
            shelf_addr = q(&shelf_addr),
            slots = slots.join(", "),
            climate_addr = q(&climate_addr),
            esl_topic = q(ESL_TOPIC),
        );
        let config_path = write("storegate.toml", config)?;
        Ok(Rig {
            dir: dir.to_path_buf(),
            db: dir.join("storegate.db"),
            config_path,
            api: format!("http://127.0.0.1:{api_port}"),
            staff_token,
            central,
            central_url,
            mqtt_port,
            shelf,
            shelf_addr,
            climate,
            climate_addr,
            field,
            pos: tokio::sync::Mutex::new(pos),
            zebra,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .context("building the HTTP client")?,
            tag: run_tag(),
            trade: Mutex::new(Trade {
                focus: None,
                receipts: 0,
                deliveries: 0,
                shelf_units,
                story_told: false,
            }),
            ptys: [m100_slave, pos_slave],
            labels: Mutex::new(Some(labels)),
        })
    }

    fn banner(&self, keep: bool, duration: Option<Duration>) {
        let [m100, pos] = &self.ptys;
        let labels: usize = ITEMS.iter().map(|i| i.labels.len()).sum();
        println!("storegate demo: a whole store on this machine, no hardware needed");
        println!(
            "  staff page  {}/   staff token {}",
            self.api, self.staff_token
        );
        println!(
            "  data        {}{}",
            self.dir.display(),
            if keep {
                ""
            } else {
                "  (removed at exit; --dir keeps it)"
            }
        );
        println!(
            "  config      {}  (storegate status --config {} works while it runs)",
            self.config_path.display(),
            self.config_path.display()
        );
        println!("  agent log   {}", self.dir.join("storegate.log").display());
        println!(
            "  central     {} (the reference central platform, in process)",
            self.central_url
        );
        println!(
            "  mqtt        embedded broker on 127.0.0.1:{}",
            self.mqtt_port
        );
        println!("  devices");
        for (id, what, at) in [
            (
                "handheld-uhf",
                "M100 UHF RFID module",
                format!("serial {}, zone salesfloor", m100.path.display()),
            ),
            (
                "door-reader",
                "Zebra FX reader",
                format!("mqtt {DOOR_TOPIC}, zone backroom"),
            ),
            (
                "pos-1",
                "POS, ESC/POS printer tap",
                format!("serial {}", pos.path.display()),
            ),
            (
                "shelf-a1",
                "load-cell shelf",
                format!("modbus-tcp {} (slots 0-4)", self.shelf_addr),
            ),
            (
                "chiller-1",
                "XY-MD02 sensor",
                format!(
                    "modbus-tcp {} (RS-485 in stores; TCP here)",
                    self.climate_addr
                ),
            ),
            (
                "labels",
                "shelf labels",
                format!("mqtt {ESL_TOPIC}, {labels} labels"),
            ),
        ] {
            println!("    {id:<13} {what:<25} {at}");
        }
        match duration {
            Some(d) => println!(
                "  runs {} s, then checks that central and store agree (Ctrl-C ends it early)",
                d.as_secs()
            ),
            None => println!("  runs until Ctrl-C, then checks that central and store agree"),
        }
        println!();
    }

    fn trade(&self) -> MutexGuard<'_, Trade> {
        self.trade.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `f` on a read-only connection to the store's database.
    async fn store<T, F>(&self, f: F) -> anyhow::Result<T>
    where
        F: FnOnce(&Connection) -> anyhow::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let path = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let conn = db::open_read(&path)?;
            let tx = conn.unchecked_transaction()?;
            f(&tx)
        })
        .await?
    }

    async fn snapshot(&self) -> anyhow::Result<Snapshot> {
        self.store(Snapshot::read).await
    }

    /// Open the store: once the MQTT devices are on the agent's broker
    /// (MQTT does not keep messages for subscribers that are not there
    /// yet), central publishes the day's price book. Then wait (bounded)
    /// until the store has its catalog, its opening stock and a confirmed
    /// label: the whole chain from central to the labels works.
    async fn open(&self, say: &Narrator) {
        say.line("the agent starts; the devices connect");
        let labels = self.labels.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(labels) = labels {
            let up = self
                .zebra
                .link()
                .wait_connected(Duration::from_secs(15))
                .await;
            let subscribed = labels.wait_connected(Duration::from_secs(15)).await;
            if !(up && subscribed) {
                say.line("the MQTT devices are slow to connect (see the agent log); carrying on");
            }
            tokio::spawn(esl::run(
                labels,
                ESL_TOPIC.into(),
                Duration::from_millis(250),
                Say::quiet(),
            ));
        }
        catalog::publish_prices(&self.central, Utc::now());
        say.line(
            "central       publishes the day's price book; the store pulls it, the labels follow",
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(s) = self.snapshot().await {
                if s.price_version > 0 && s.stock_version > 0 && s.labels.1 > 0 {
                    say.line(format!(
                        "the store is open: {} SKUs priced, opening stock from central, {} labels confirmed",
                        s.price.len(),
                        s.labels.1
                    ));
                    return;
                }
            }
            if Instant::now() > deadline {
                say.line("the store is slow to open (see the agent log); carrying on");
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// POST JSON to the local API with the staff token.
    async fn api_post(&self, path: &str, body: Value) -> Result<(u16, Value), String> {
        // The API may need a moment after the agent starts.
        let mut tries = 0;
        loop {
            tries += 1;
            let sent = self
                .http
                .post(format!("{}{path}", self.api))
                .bearer_auth(&self.staff_token)
                .json(&body)
                .send()
                .await;
            match sent {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let text = r.text().await.unwrap_or_default();
                    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
                    return Ok((status, value));
                }
                Err(e) if tries < 3 && e.is_connect() => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(format!("the local API did not answer: {e}")),
            }
        }
    }

    /// Ring up one receipt at the till: 1 to 3 random items in stock, at
    /// the prices the store shows (tills and labels share the price book),
    /// taken from the shelf.
    async fn sell(&self, say: &Narrator) -> anyhow::Result<()> {
        let snap = self.snapshot().await?;
        let mut lines: Vec<Line> = Vec::new();
        let id = {
            let mut trade = self.trade();
            let sellable = |item: &Item, qty: i64| {
                let price = snap.price.get(item.sku).copied()?;
                // Keep a couple in stock: the store never sells what the
                // books say it does not have.
                (snap.on_hand.get(item.sku).copied().unwrap_or(0) > qty).then_some(price)
            };
            if let Some(item) = trade.focus.and_then(catalog::item) {
                if let Some(price) = sellable(item, 2) {
                    lines.push(line(item, 2, price));
                }
            }
            let extra = if lines.is_empty() { 1..=3 } else { 0..=1 };
            for _ in 0..rand::random_range(extra) {
                let Some(item) = ITEMS.get(rand::random_range(0..ITEMS.len())) else {
                    continue;
                };
                let qty = rand::random_range(1..=2);
                if lines.iter().any(|l| l.sku == item.sku) {
                    continue;
                }
                if let Some(price) = sellable(item, qty + 1) {
                    lines.push(line(item, qty, price));
                }
            }
            if lines.is_empty() {
                return Ok(());
            }
            trade.receipts += 1;
            format!("R{}-{:04}", self.tag, trade.receipts)
        };
        let receipt = Receipt {
            id,
            pos: "1".into(),
            lines,
        };
        self.ring_up(&receipt, say, "").await
    }

    async fn ring_up(&self, receipt: &Receipt, say: &Narrator, note: &str) -> anyhow::Result<()> {
        self.pos
            .lock()
            .await
            .print(receipt)
            .await
            .context("printing on the POS printer")?;
        for l in &receipt.lines {
            self.take_from_shelf(&l.sku, l.qty);
        }
        say.line(format!("pos-1         {}{note}", receipt.describe()));
        Ok(())
    }

    /// The shelf slot of a SKU, if it is on the shelf.
    fn slot(sku: &str) -> Option<usize> {
        ITEMS.iter().take(SHELF_ITEMS).position(|i| i.sku == sku)
    }

    fn take_from_shelf(&self, sku: &str, qty: i64) {
        let (Some(slot), Some(item)) = (Self::slot(sku), catalog::item(sku)) else {
            return;
        };
        let units = {
            let mut trade = self.trade();
            let Some(units) = trade.shelf_units.get_mut(slot) else {
                return;
            };
            *units = (*units - qty).max(0);
            *units
        };
        self.shelf
            .set_grams(slot as u16, weight(item.unit_weight_g, units));
    }

    fn refill_shelf(&self, sku: &str) {
        let (Some(slot), Some(item)) = (Self::slot(sku), catalog::item(sku)) else {
            return;
        };
        if let Some(units) = self.trade().shelf_units.get_mut(slot) {
            *units = capacity(item);
        }
        self.shelf
            .set_grams(slot as u16, weight(item.unit_weight_g, capacity(item)));
    }

    /// A delivery arrives: booked through the local API as staff do with
    /// their handhelds, tagged goods read by the door reader, delivered
    /// SKUs put on the shelf.
    async fn deliver(&self, lines: &[(&str, i64)], tags: &[Read], say: &Narrator) {
        let id = {
            let mut trade = self.trade();
            trade.deliveries += 1;
            format!("D-{}-{}", self.tag, trade.deliveries)
        };
        let body = json!({
            "delivery_id": id,
            "lines": lines.iter().map(|(sku, qty)| json!({"sku": sku, "qty": qty})).collect::<Vec<_>>(),
        });
        let what: Vec<String> = lines
            .iter()
            .map(|(sku, qty)| format!("{qty} x {sku}"))
            .collect();
        match self.api_post("/v1/receipts", body).await {
            Ok((status, _)) if status < 300 => say.line(format!(
                "delivery      {id}: {} booked through the local API (HTTP {status})",
                what.join(", ")
            )),
            Ok((status, answer)) => say.line(format!(
                "delivery      {id}: the local API refused it (HTTP {status}): {}",
                snippet(&answer)
            )),
            Err(e) => say.line(format!("delivery      {id}: {e}")),
        }
        if !tags.is_empty() {
            match self.zebra.publish(tags).await {
                Ok(()) => say.line(format!(
                    "door-reader   {} tag reads of the delivery's tagged goods at the backroom door",
                    tags.len()
                )),
                Err(e) => say.line(format!("door-reader   {e}")),
            }
        }
        for (sku, _) in lines {
            self.refill_shelf(sku);
        }
    }

    /// An RFID count of the sales floor over the handheld's sightings.
    async fn rfid_count(&self, from: chrono::DateTime<Utc>, say: &Narrator) {
        let body =
            json!({"zone": "salesfloor", "from": format_ts(&from), "to": format_ts(&Utc::now())});
        match self.api_post("/v1/counts/rfid", body).await {
            Ok((status, answer)) if status < 300 => {
                let lines: Vec<String> = answer
                    .get("lines")
                    .and_then(Value::as_array)
                    .map(|lines| {
                        lines
                            .iter()
                            .map(|l| {
                                format!(
                                    "{} {} seen (books {})",
                                    l.get("sku").and_then(Value::as_str).unwrap_or("?"),
                                    l.get("counted").unwrap_or(&Value::Null),
                                    l.get("expected").unwrap_or(&Value::Null)
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                say.line(format!(
                    "rfid count    salesfloor (HTTP {status}): {}",
                    if lines.is_empty() {
                        snippet(&answer)
                    } else {
                        lines.join(", ")
                    }
                ));
            }
            Ok((status, answer)) => say.line(format!(
                "rfid count    the local API refused it (HTTP {status}): {}",
                snippet(&answer)
            )),
            Err(e) => say.line(format!("rfid count    {e}")),
        }
    }

    /// Publish a new price-book entry at central.
    fn central_price(&self, sku: &str, price: i64, promo: Option<i64>) {
        if let Some(item) = catalog::item(sku) {
            let until = Utc::now() + chrono::Duration::days(7);
            self.central.set_price(catalog::price_entry(
                item,
                price,
                promo.map(|p| (p, until)),
                Utc::now(),
            ));
        }
    }

    /// After the story: reorder what runs low, as a store manager would.
    async fn reorder(&self, say: &Narrator) {
        let Ok(snap) = self.snapshot().await else {
            return;
        };
        let low: Vec<(&str, i64)> = ITEMS
            .iter()
            .filter(|i| snap.on_hand.get(i.sku).copied().unwrap_or(0) < i.min_stock)
            .map(|i| (i.sku, 4 * i.min_stock))
            .collect();
        if !low.is_empty() {
            self.deliver(&low, &[], say).await;
        }
    }

    /// Print what the store knows every couple of seconds.
    async fn live_summary(&self, say: Narrator) {
        let mut ticker = tokio::time::interval(Duration::from_secs(2));
        let mut last: Option<(Instant, i64)> = None;
        loop {
            ticker.tick().await;
            let Ok(s) = self.snapshot().await else {
                continue;
            };
            let rate = last.map_or(0.0, |(t, head)| {
                (s.head - head) as f64 / t.elapsed().as_secs_f64().max(0.001)
            });
            last = Some((Instant::now(), s.head));
            let stock: Vec<String> = WATCHED
                .iter()
                .map(|sku| format!("{sku} {}", s.on_hand.get(*sku).copied().unwrap_or(0)))
                .collect();
            let alerts: Vec<String> = s
                .open_alerts
                .iter()
                .map(|(code, n)| format!("{code} {n}"))
                .collect();
            say.line(format!(
                "[store] {} events ({rate:.0}/s), backlog {}, central {} | stock {} | labels {} ok, {} pending | open alerts: {}",
                s.head,
                s.head - s.acked,
                s.central,
                stock.join(", "),
                s.labels.1,
                s.labels.0 + s.labels.2,
                if alerts.is_empty() {
                    "none".to_string()
                } else {
                    alerts.join(", ")
                }
            ));
        }
    }

    /// Wait (bounded) until the store has handed everything to central,
    /// compare their stock of every SKU and print the summary. Returns
    /// whether they agree.
    async fn final_summary(&self, say: Narrator) -> anyhow::Result<bool> {
        say.line("tills and readers stop; waiting for the store to hand everything to central");
        let t = Instant::now();
        let mut previous_head = None;
        let snap = loop {
            // Input written just before the stop may still be on its way
            // into the journal: settled means nothing left to push twice
            // in a row with the same journal head.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let s = self.snapshot().await?;
            let settled = s.head == s.acked && previous_head == Some(s.head);
            // Labels confirm within a second; one still pending after a
            // few is stuck and is reported as such.
            let labels_done = s.labels.0 == 0 || t.elapsed() > Duration::from_secs(5);
            if (settled && labels_done) || t.elapsed() > SETTLE_TIMEOUT {
                break s;
            }
            previous_head = Some(s.head);
        };
        let at_central = self.central.on_hand(STORE);
        let counts = self.store(raised_counts).await?;

        println!();
        println!(
            "== final summary after {:.1} s ==",
            say.start.elapsed().as_secs_f64()
        );
        let mut skus: Vec<&String> = at_central.keys().chain(snap.on_hand.keys()).collect();
        skus.sort();
        skus.dedup();
        println!(
            "  {:<10} {:<22} {:>8} {:>8}",
            "SKU", "name", "central", "store"
        );
        let mut differ = Vec::new();
        for sku in &skus {
            let c = at_central.get(*sku).copied().unwrap_or(0);
            let s = snap.on_hand.get(*sku).copied().unwrap_or(0);
            let name = catalog::item(sku).map_or("", |i| i.name);
            let mark = if c == s { "" } else { "   <-- differs" };
            println!("  {sku:<10} {name:<22} {c:>8} {s:>8}{mark}");
            if c != s {
                differ.push(format!("{sku} (central {c}, store {s})"));
            }
        }
        let backlog = snap.head - snap.acked;
        println!(
            "  journal: {} events, central acknowledged through seq {} (backlog {backlog})",
            snap.head, snap.acked
        );
        let agree = differ.is_empty();
        if agree {
            println!("  central and store agree on {} SKUs", skus.len());
        } else {
            println!(
                "  central and store DISAGREE on {} of {} SKUs: {}",
                differ.len(),
                skus.len(),
                differ.join(", ")
            );
        }
        let (pending, ok, failed) = snap.labels;
        println!("  labels: {ok} ok, {pending} pending, {failed} failed");
        println!("  price conflicts raised: {}", counts.price_conflicts);
        println!("  low_stock alerts raised: {}", counts.low_stock);
        println!("  temperature alerts raised: {}", counts.temperature);
        let kinds: Vec<String> = counts
            .per_kind
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        println!("  events by kind: {}", kinds.join(", "));
        Ok(agree)
    }
}

/// A receipt line for `item`.
fn line(item: &Item, qty: i64, price: i64) -> Line {
    Line {
        sku: item.sku.into(),
        name: item.name.into(),
        qty,
        unit_price_minor: price,
    }
}

/// An API answer in one short line.
fn snippet(v: &Value) -> String {
    let text = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    text.chars().take(160).collect()
}

/// Reads of the given units of `sku` at the backroom door, by two antennas.
fn door_reads(sku: &str, serials: std::ops::RangeInclusive<u64>) -> Vec<Read> {
    let Some(item) = catalog::item(sku) else {
        return Vec::new();
    };
    serials
        .flat_map(|serial| {
            let epc = catalog::epc(item, serial);
            (1..=2).map(move |antenna| Read {
                epc: epc.clone(),
                antenna,
                rssi_dbm: rand::random_range(-68..-42),
            })
        })
        .collect()
}

/// Tags of the given units of `sku` in the handheld's field.
fn floor_tags(sku: &str, serials: std::ops::RangeInclusive<u64>) -> Vec<Tag> {
    let Some(item) = catalog::item(sku) else {
        return Vec::new();
    };
    serials
        .map(|serial| Tag {
            epc: catalog::epc(item, serial),
            rssi_dbm: rand::random_range(-70..-45),
        })
        .collect()
}

/// The store day: steady trading, and the scripted beats at fractions of
/// `len`. Never returns: after the story the store keeps trading.
async fn story(rig: Arc<Rig>, len: Duration, say: Narrator) {
    let t0 = Instant::now();
    let from = Utc::now() - chrono::Duration::seconds(1);
    let at = |f: f64| tokio::time::sleep_until((t0 + len.mul_f64(f)).into());
    // About eighteen receipts in the story, whatever its length.
    let pace = (len / 18).clamp(Duration::from_millis(400), Duration::from_secs(2));

    let trading = async {
        let mut ticker = tokio::time::interval(pace);
        let mut last_reorder = Instant::now();
        loop {
            ticker.tick().await;
            if let Err(e) = rig.sell(&say).await {
                say.line(format!("pos-1         {e:#}"));
            }
            if rig.trade().story_told && last_reorder.elapsed() > Duration::from_secs(15) {
                last_reorder = Instant::now();
                rig.reorder(&say).await;
            }
        }
    };

    let beats = async {
        at(0.03).await;
        let mut tags = door_reads("SKU-1004", 1..=12);
        tags.extend(door_reads("SKU-1006", 1..=6));
        rig.deliver(
            &[("SKU-1001", 24), ("SKU-1004", 12), ("SKU-1006", 6)],
            &tags,
            &say,
        )
        .await;

        at(0.12).await;
        rig.central_price("SKU-1004", 189, Some(149));
        say.line(
            "central       promo: SKU-1004 Dark chocolate 1.89 -> 1.49 for a week; labels follow",
        );

        at(0.22).await;
        let mut field = floor_tags("SKU-1004", 1..=8);
        field.extend(floor_tags("SKU-1006", 1..=4));
        field.extend(floor_tags("SKU-1001", 501..=504));
        say.line(format!(
            "handheld-uhf  staff walk the sales floor with the handheld: {} tags in reach",
            field.len()
        ));
        rig.field.set(field);

        at(0.30).await;
        if let Some(item) = catalog::item("SKU-1002") {
            let shelf = rig
                .snapshot()
                .await
                .ok()
                .and_then(|s| s.price.get(item.sku).copied())
                .unwrap_or(item.price_minor);
            let id = {
                let mut trade = rig.trade();
                trade.receipts += 1;
                format!("R{}-{:04}", rig.tag, trade.receipts)
            };
            let receipt = Receipt {
                id,
                pos: "1".into(),
                lines: vec![line(item, 1, shelf - 20)],
            };
            let note = format!(
                "  <- the till still has an old price; the shelf says {}",
                decimal(shelf)
            );
            if let Err(e) = rig.ring_up(&receipt, &say, &note).await {
                say.line(format!("pos-1         {e:#}"));
            }
        }

        at(0.36).await;
        rig.central.lock().behaviour.down = true;
        say.line(
            "central       OFFLINE (the WAN is down); the store keeps selling, the backlog grows",
        );

        at(0.40).await;
        rig.trade().focus = Some("SKU-1003");
        say.line("pos-1         SKU-1003 Espresso beans sell fast: the shelf runs low");

        at(0.46).await;
        rig.field.set(Vec::new());
        say.line("handheld-uhf  the walk is done");

        at(0.50).await;
        rig.rfid_count(from, &say).await;

        at(0.55).await;
        rig.climate.set(9.4, 71.0);
        say.line("chiller-1     the chiller door is left open: 9.4 C");

        at(0.60).await;
        rig.central_price("SKU-1005", 89, None);
        say.line("central       price change while the store cannot see it: SKU-1005 Sparkling water 0.79 -> 0.89");

        at(0.66).await;
        rig.central.lock().behaviour.down = false;
        say.line(
            "central       ONLINE again: the backlog drains, the new price reaches the labels",
        );

        at(0.72).await;
        rig.trade().focus = None;
        rig.deliver(&[("SKU-1003", 24), ("SKU-1005", 12)], &[], &say)
            .await;

        at(0.76).await;
        rig.climate.set(4.1, 63.0);
        say.line("chiller-1     door closed: 4.1 C");

        at(1.0).await;
        rig.trade().story_told = true;
        say.line("the story is told; the store keeps trading");
        std::future::pending::<()>().await;
    };
    tokio::join!(trading, beats);
}

/// What the store knows right now, read from its database.
struct Snapshot {
    head: i64,
    acked: i64,
    /// How the store sees central: online, offline or connecting.
    central: &'static str,
    price_version: i64,
    stock_version: i64,
    on_hand: BTreeMap<String, i64>,
    /// Effective shelf price per SKU now.
    price: BTreeMap<String, i64>,
    /// Labels `(pending, ok, failed)`.
    labels: (i64, i64, i64),
    /// Open alerts per code.
    open_alerts: BTreeMap<String, usize>,
}

impl Snapshot {
    fn read(conn: &Connection) -> anyhow::Result<Snapshot> {
        let sync = crate::sync::state::read(conn)?;
        let now = Utc::now();
        let mut price = BTreeMap::new();
        for item in &ITEMS {
            if let Some(p) = prices::effective(conn, item.sku, now)? {
                price.insert(item.sku.to_string(), p.price_minor);
            }
        }
        let mut open_alerts = BTreeMap::new();
        for a in alerts::open_alerts(conn)? {
            *open_alerts.entry(a.code).or_default() += 1;
        }
        Ok(Snapshot {
            head: journal::head(conn)?,
            acked: sync.last_acked_seq,
            central: if sync.consecutive_failures > 0 {
                "offline"
            } else if sync.last_success_ms.is_some() {
                "online"
            } else {
                "connecting"
            },
            price_version: sync.price_version,
            stock_version: sync.stock_version,
            on_hand: stock::all_on_hand(conn)?.into_iter().collect(),
            price,
            labels: labels::summary(conn)?,
            open_alerts,
        })
    }
}

/// What the journal says was raised during the run.
struct Raised {
    price_conflicts: i64,
    low_stock: i64,
    temperature: i64,
    per_kind: Vec<(String, i64)>,
}

fn raised_counts(conn: &Connection) -> anyhow::Result<Raised> {
    let opened = |code: &str| -> rusqlite::Result<i64> {
        conn.query_row(
            "SELECT count(*) FROM journal WHERE kind = 'alert'
               AND json_extract(data, '$.code') = ?1 AND json_extract(data, '$.state') = 'open'",
            [code],
            |r| r.get(0),
        )
    };
    Ok(Raised {
        price_conflicts: conn.query_row(
            "SELECT count(*) FROM journal WHERE kind = 'price_conflict'",
            [],
            |r| r.get(0),
        )?,
        low_stock: opened("low_stock")?,
        temperature: opened("temperature")?,
        per_kind: journal::counts_per_kind(conn)?,
    })
}
