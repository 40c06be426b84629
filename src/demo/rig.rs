//! The demo's rig: the simulated devices, central and the config the
//! agent runs with, started by [`Rig::build`], and what the story needs
//! to act through them (the local API with the staff token, the shelf's
//! load cells following sales and deliveries).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use rusqlite::Connection;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_serial::SerialStream;

use crate::db;
use crate::sim::catalog::{self, ITEMS, Item};
use crate::sim::central::Central;
use crate::sim::cli::run_tag;
use crate::sim::m100::{self, Field};
use crate::sim::mqtt::Link;
use crate::sim::pos::Printer;
use crate::sim::pty::{Pty, Slave};
use crate::sim::say::Say;
use crate::sim::shelf::{self, Climate, Shelf, weight};
use crate::sim::zebra::Zebra;

pub(super) const STORE: &str = "demo-store";
const DOOR_TOPIC: &str = "demo/rfid/door";
pub(super) const ESL_TOPIC: &str = "demo/esl";
const API_PORT: u16 = 8080;
/// Shelf slots 0..5 hold the first five catalog items.
const SHELF_ITEMS: usize = 5;

/// What the story changes as it goes.
pub(super) struct Trade {
    /// A SKU that sells fast right now (two per receipt).
    pub(super) focus: Option<&'static str>,
    pub(super) receipts: u32,
    pub(super) deliveries: u32,
    /// Units on each shelf slot.
    shelf_units: [i64; SHELF_ITEMS],
    /// The scripted part is over; the store just trades (and reorders).
    pub(super) story_told: bool,
}

/// Everything the demo runs besides the agent.
pub(super) struct Rig {
    dir: PathBuf,
    db: PathBuf,
    pub(super) config_path: PathBuf,
    api: String,
    staff_token: String,
    pub(super) central: Central,
    central_url: String,
    mqtt_port: u16,
    shelf: Shelf,
    shelf_addr: String,
    pub(super) climate: Climate,
    climate_addr: String,
    pub(super) field: Field,
    pub(super) pos: tokio::sync::Mutex<Printer<SerialStream>>,
    pub(super) zebra: Zebra,
    http: reqwest::Client,
    /// Run tag in receipt and delivery ids.
    pub(super) tag: String,
    trade: Mutex<Trade>,
    /// The agent's ends of the pseudo-terminals (M100, POS).
    ptys: [Slave; 2],
    /// The label gateway's connection until the labels start answering.
    pub(super) labels: Mutex<Option<Link>>,
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
    pub(super) async fn build(dir: &Path) -> anyhow::Result<Rig> {
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
poll_orders_s = 2

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

    pub(super) fn banner(&self, keep: bool, duration: Option<Duration>) {
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

    pub(super) fn trade(&self) -> MutexGuard<'_, Trade> {
        self.trade.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `f` on a read-only connection to the store's database.
    pub(super) async fn store<T, F>(&self, f: F) -> anyhow::Result<T>
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
    /// POST JSON to the local API with the staff token.
    pub(super) async fn api_post(&self, path: &str, body: Value) -> Result<(u16, Value), String> {
        self.api_call(reqwest::Method::POST, path, Some(body)).await
    }

    /// GET from the local API with the staff token.
    pub(super) async fn api_get(&self, path: &str) -> Result<(u16, Value), String> {
        self.api_call(reqwest::Method::GET, path, None).await
    }

    /// One call to the local API with the staff token: the status and the
    /// answer (JSON, else its text as a string). Bounded by the client's
    /// timeout, so a beat never hangs on it.
    async fn api_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), String> {
        // The API may need a moment after the agent starts.
        let mut tries = 0;
        loop {
            tries += 1;
            let mut request = self
                .http
                .request(method.clone(), format!("{}{path}", self.api))
                .bearer_auth(&self.staff_token);
            if let Some(body) = &body {
                request = request.json(body);
            }
            match request.send().await {
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
    /// The shelf slot of a SKU, if it is on the shelf.
    fn slot(sku: &str) -> Option<usize> {
        ITEMS.iter().take(SHELF_ITEMS).position(|i| i.sku == sku)
    }

    pub(super) fn take_from_shelf(&self, sku: &str, qty: i64) {
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

    pub(super) fn refill_shelf(&self, sku: &str) {
        let (Some(slot), Some(item)) = (Self::slot(sku), catalog::item(sku)) else {
            return;
        };
        if let Some(units) = self.trade().shelf_units.get_mut(slot) {
            *units = capacity(item);
        }
        self.shelf
            .set_grams(slot as u16, weight(item.unit_weight_g, capacity(item)));
    }
}
