//! The scripted store day: opening the store, steady trading at the till,
//! and the story's beats (deliveries, a promo, a price conflict, a shelf
//! running low, an RFID count, central going offline and coming back with
//! a price change), each told by the [`Narrator`]. The click-and-collect
//! order (`demo/pickup.rs`) and the refill task (`demo/tasks.rs`) run
//! beside them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use serde_json::{Value, json};

use super::Narrator;
use super::rig::{ESL_TOPIC, Rig};
use crate::event::format_ts;
use crate::sim::catalog::{self, ITEMS, Item, decimal};
use crate::sim::esl;
use crate::sim::m100::Tag;
use crate::sim::pos::{Line, Receipt};
use crate::sim::say::Say;
use crate::sim::zebra::Read;

impl Rig {
    /// Open the store: once the MQTT devices are on the agent's broker
    /// (MQTT does not keep messages for subscribers that are not there
    /// yet), central publishes the day's price book. Then wait (bounded)
    /// until the store has its catalog, its opening stock and a confirmed
    /// label: the whole chain from central to the labels works.
    pub(super) async fn open(&self, say: &Narrator) {
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
pub(super) async fn story(rig: Arc<Rig>, len: Duration, say: Narrator) {
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

    // Click-and-collect runs beside the other beats, so that waiting for
    // the store to pull the order never delays them.
    let pickup = async {
        at(0.08).await;
        rig.web_order(&say);
        // Orders are pulled every 2 s in the demo; allow a few pulls.
        let within = len.mul_f64(0.25).max(Duration::from_secs(6));
        if rig.await_reserved(&say, within).await {
            at(0.26).await;
            rig.pick_and_hand_over(&say).await;
        }
    };

    // The low shelf of SKU-1003 (0.40) opens a refill task; the delivery
    // (0.72) should let the store confirm it done by itself.
    let chores = async {
        at(0.40).await;
        let delivery = t0 + len.mul_f64(0.72);
        if let Some(id) = rig.take_refill("SKU-1003", &say, delivery).await {
            at(0.80).await;
            rig.refill_outcome(&id, &say).await;
        }
    };
    tokio::join!(trading, beats, pickup, chores);
}
