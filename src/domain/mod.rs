//! The store's domain: stock ledger, price book, labels, RFID, alerts.
//! [`Projections`] keeps every projection in step with the journal, in the
//! same transaction as the event that causes it.

pub mod alerts;
pub mod catalog;
pub mod conflicts;
pub mod counts;
pub mod epc;
pub mod label_bindings;
pub mod labels;
pub mod money;
pub mod pickup;
pub mod price_text;
pub mod prices;
pub mod privacy;
pub mod rfid;
pub mod sgtin;
pub mod sled;
pub mod stock;
pub mod tasks;

use rusqlite::Connection;

use crate::db::{Projector, StoreError};
use crate::event::{Event, EventBody, NewEvent, Severity, ShelfWeight};

/// The projector the daemon runs the writer with.
#[derive(Default)]
pub struct Projections {
    /// Per device: temperature alert thresholds (`alert_above`, `alert_below`).
    thresholds: std::collections::HashMap<String, (Option<f64>, Option<f64>)>,
    /// `pricing.conflict_grace_s`.
    grace_s: i64,
    /// How label prices are written (label re-pushes after conflicts).
    locale: String,
    /// Which alerts become which staff tasks, where.
    tasks: tasks::TaskRules,
}

impl Projections {
    pub fn new(config: &crate::config::Config) -> Self {
        Projections {
            grace_s: config.pricing.conflict_grace_s as i64,
            locale: config.locale.clone(),
            tasks: tasks::TaskRules::new(&config.tasks, &config.devices),
            thresholds: config
                .devices
                .iter()
                .filter(|d| d.alert_above.is_some() || d.alert_below.is_some())
                .map(|d| (d.id.clone(), (d.alert_above, d.alert_below)))
                .collect(),
        }
    }
}

impl Projector for Projections {
    fn apply(&mut self, conn: &Connection, event: &Event) -> Result<Vec<NewEvent>, StoreError> {
        alerts::apply(conn, event)?;
        rfid::apply(conn, event)?;
        counts::apply(conn, event)?;
        tasks::apply(conn, event)?;
        let mut derived = Vec::new();
        derived.extend(tasks::derive(conn, &self.tasks, event)?);
        derived.extend(stock::apply(conn, event)?);
        derived.extend(labels::apply(conn, event)?);
        // Not replayed by `rebuild`: the binding itself stays in the labels
        // table, and a replay must not queue label updates again.
        derived.extend(label_bindings::apply(conn, event, &self.locale)?);
        derived.extend(conflicts::check(conn, event, self.grace_s, &self.locale)?);
        match &event.body {
            EventBody::Reading(r) if r.name == "temperature" => {
                if let Some(&(above, below)) = self.thresholds.get(&event.device) {
                    derived.extend(temperature_alert(
                        conn,
                        &event.device,
                        r.value,
                        &r.unit,
                        above,
                        below,
                    )?);
                }
            }
            EventBody::ShelfWeight(w) => derived.extend(shelf_low_stock(conn, &event.device, w)?),
            _ => {}
        }
        Ok(derived)
    }
}

/// Open or resolve a `temperature` alert for a sensor with thresholds.
fn temperature_alert(
    conn: &Connection,
    device: &str,
    value: f64,
    unit: &str,
    above: Option<f64>,
    below: Option<f64>,
) -> Result<Option<NewEvent>, StoreError> {
    let breach = match (above, below) {
        (Some(a), _) if value > a => Some(format!(
            "{device}: temperature {value:.1} {unit} is above {a:.1}"
        )),
        (_, Some(b)) if value < b => Some(format!(
            "{device}: temperature {value:.1} {unit} is below {b:.1}"
        )),
        _ => None,
    };
    match breach {
        Some(message) => {
            let mut context = serde_json::Map::new();
            context.insert("value".into(), serde_json::json!(value));
            context.insert("unit".into(), unit.into());
            alerts::open_event(
                conn,
                device,
                "temperature",
                device,
                Severity::Critical,
                message,
                context,
            )
        }
        None => alerts::resolve_event(
            conn,
            device,
            "temperature",
            device,
            format!("{device}: temperature back in range"),
        ),
    }
}

/// A shelf slot whose estimated units fall below the SKU's minimum raises
/// `low_stock` for that slot (subject `SKU@device/slot`, so it never
/// resolves the on-hand based alert of the same SKU).
fn shelf_low_stock(
    conn: &Connection,
    device: &str,
    w: &ShelfWeight,
) -> Result<Option<NewEvent>, StoreError> {
    let (Some(sku), Some(units)) = (&w.sku, w.units_est) else {
        return Ok(None);
    };
    let (_, min_stock) = catalog::weights_and_minimum(conn, sku)?;
    let Some(min) = min_stock else {
        return Ok(None);
    };
    let subject = format!("{sku}@{device}/{}", w.slot);
    if units < min {
        let mut context = serde_json::Map::new();
        context.insert("sku".into(), sku.clone().into());
        context.insert("shelf".into(), device.into());
        context.insert("slot".into(), w.slot.into());
        context.insert("units_est".into(), units.into());
        context.insert("min_stock".into(), min.into());
        alerts::open_event(
            conn,
            device,
            "low_stock",
            &subject,
            Severity::Warning,
            format!(
                "{sku}: shelf {device} slot {} holds about {units}, minimum {min}; refill",
                w.slot
            ),
            context,
        )
    } else {
        alerts::resolve_event(
            conn,
            device,
            "low_stock",
            &subject,
            format!("{sku}: shelf {device} slot {} refilled", w.slot),
        )
    }
}

/// Recompute every journal-derived projection (stock, alerts, tags, last
/// counts, staff tasks, label confirmations and health) from the journal and the
/// stored baselines.
/// Stock moves older than the oldest retained journal event are kept as
/// they are: the journal no longer has them, the move ledger does.
pub fn rebuild(conn: &Connection) -> Result<usize, StoreError> {
    use crate::db::{SqlContext, journal};
    let oldest = journal::oldest(conn)?.unwrap_or(i64::MAX);
    conn.execute_batch(
        "DELETE FROM alerts; DELETE FROM tags; DELETE FROM last_counts; DELETE FROM tasks;
         UPDATE labels SET confirmed_version = NULL, confirmed_price_minor = NULL, confirmed_currency = NULL,
           confirmed_at_ms = NULL, battery_mv = NULL, rssi = NULL, last_seen_ms = NULL;",
    )
    .ctx("clearing projections")?;
    conn.execute("DELETE FROM stock_moves WHERE seq >= ?1", [oldest])
        .ctx("clearing stock moves")?;
    let mut after = 0;
    let mut replayed = 0;
    loop {
        let batch = journal::events_after(conn, after, 10_000)?;
        let Some(last) = batch.last() else { break };
        after = last.seq;
        for event in &batch {
            alerts::apply(conn, event)?;
            rfid::apply(conn, event)?;
            counts::apply(conn, event)?;
            tasks::apply(conn, event)?;
            labels::apply(conn, event)?;
            for (sku, delta) in event.body.stock_moves() {
                let through: i64 = conn
                    .query_row(
                        "SELECT COALESCE((SELECT through_seq FROM stock_baseline WHERE sku = ?1), 0)",
                        [sku],
                        |r| r.get(0),
                    )
                    .ctx("reading a baseline")?;
                if event.seq > through {
                    conn.execute(
                        "INSERT INTO stock_moves (seq, sku, delta) VALUES (?1, ?2, ?3)",
                        rusqlite::params![event.seq, sku, delta],
                    )
                    .ctx("replaying a stock move")?;
                }
            }
            replayed += 1;
        }
    }
    stock::recompute_all(conn)?;
    Ok(replayed)
}
