//! What the demo shows of the store: a [`Snapshot`] read from its
//! database, the live status line every couple of seconds and, at the
//! end, the final table that compares central's and the store's stock.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use rusqlite::Connection;

use super::Narrator;
use super::rig::{Rig, STORE};
use crate::db::journal;
use crate::domain::{alerts, labels, prices, stock};
use crate::sim::catalog::{self, ITEMS};

/// SKUs the live summary shows.
const WATCHED: [&str; 4] = ["SKU-1001", "SKU-1003", "SKU-1004", "SKU-1005"];
/// Longest wait at the end for the store to hand everything to central.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(45);

impl Rig {
    pub(super) async fn snapshot(&self) -> anyhow::Result<Snapshot> {
        self.store(Snapshot::read).await
    }
    /// Print what the store knows every couple of seconds.
    pub(super) async fn live_summary(&self, say: Narrator) {
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
    pub(super) async fn final_summary(&self, say: Narrator) -> anyhow::Result<bool> {
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
        println!("  pickups handed over: {}", counts.handed_over);
        println!(
            "  tasks done: {} of {} opened",
            counts.tasks_done, counts.tasks_opened
        );
        let kinds: Vec<String> = counts
            .per_kind
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        println!("  events by kind: {}", kinds.join(", "));
        Ok(agree)
    }
}

/// What the store knows right now, read from its database.
pub(super) struct Snapshot {
    head: i64,
    acked: i64,
    /// How the store sees central: online, offline or connecting.
    central: &'static str,
    pub(super) price_version: i64,
    pub(super) stock_version: i64,
    pub(super) on_hand: BTreeMap<String, i64>,
    /// Effective shelf price per SKU now.
    pub(super) price: BTreeMap<String, i64>,
    /// Labels `(pending, ok, failed)`.
    pub(super) labels: (i64, i64, i64),
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
    /// Pickup orders handed over to their customers.
    handed_over: i64,
    /// Staff tasks opened, and those done now (by staff or confirmed by
    /// the store's evidence).
    tasks_opened: i64,
    tasks_done: i64,
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
        handed_over: conn.query_row(
            "SELECT count(*) FROM journal WHERE kind = 'order_handed_over'",
            [],
            |r| r.get(0),
        )?,
        tasks_opened: conn.query_row("SELECT count(*) FROM tasks", [], |r| r.get(0))?,
        tasks_done: conn.query_row("SELECT count(*) FROM tasks WHERE state = 'done'", [], |r| {
            r.get(0)
        })?,
        per_kind: journal::counts_per_kind(conn)?,
    })
}
