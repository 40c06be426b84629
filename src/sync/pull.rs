//! The pullers (spec/sync-api.md sections 3-6): the price book, the
//! stock baseline and the pickup orders, each since the version we hold,
//! on their cadences and right after the link comes back; each applied in
//! one transaction.

use std::sync::Arc;
use std::time::Duration;

use super::client::Central;
use super::push::Link;
use crate::db::{StoreError, Writer};
use crate::domain::{pickup, prices, stock};
use crate::shutdown::Shutdown;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum What {
    Prices,
    Stock,
    /// Click-and-collect orders (sync-api.md 6).
    Orders,
}

impl What {
    fn path(self) -> &'static str {
        match self {
            What::Prices => "prices",
            What::Stock => "stock",
            What::Orders => "orders",
        }
    }
}

/// Pull once and apply. Returns whether label updates became pending.
pub async fn pull_once(
    central: &Central,
    writer: &Writer,
    what: What,
    locale: &str,
) -> Result<bool, String> {
    let since = writer
        .transact(move |w| {
            let s = super::state::read(w.conn())?;
            Ok(match what {
                What::Prices => s.price_version,
                What::Stock => s.stock_version,
                What::Orders => s.orders_version,
            })
        })
        .await
        .map_err(|e| e.to_string())?;
    let (status, body) = central
        .pull(what.path(), since)
        .await
        .map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!(
            "GET {} answered {status}: {}",
            what.path(),
            super::client::snippet(&body)
        ));
    }
    let locale = locale.to_string();
    match what {
        What::Prices => {
            let pull: prices::PricePull = serde_json::from_str(&body).map_err(|e| {
                format!(
                    "price pull does not parse ({e}): {}",
                    super::client::snippet(&body)
                )
            })?;
            if pull.version <= since && !pull.items.is_empty() {
                tracing::debug!(
                    version = pull.version,
                    since,
                    "price pull not newer; applying idempotently"
                );
            }
            let changed = writer
                .transact(move |w| prices::apply_pull(w.conn(), &pull, chrono::Utc::now(), &locale))
                .await
                .map_err(|e: StoreError| e.to_string())?;
            Ok(!changed.is_empty())
        }
        What::Stock => {
            let baseline: stock::Baseline = serde_json::from_str(&body).map_err(|e| {
                format!(
                    "stock pull does not parse ({e}): {}",
                    super::client::snippet(&body)
                )
            })?;
            if baseline.version <= since {
                return Ok(false); // nothing newer; an older one is ignored
            }
            writer
                .transact(move |w| stock::apply_baseline(w.conn(), &baseline))
                .await
                .map_err(|e| e.to_string())?;
            Ok(false)
        }
        What::Orders => {
            // The body holds pickup codes, and serde's messages may quote
            // a value: say only where it failed.
            let pull: pickup::OrdersPull = serde_json::from_str(&body).map_err(|e| {
                format!(
                    "orders pull does not parse ({:?} error at line {} column {})",
                    e.classify(),
                    e.line(),
                    e.column()
                )
            })?;
            let outcome = writer
                .transact(move |w| pickup::apply_pull(w, &pull, chrono::Utc::now()))
                .await
                .map_err(|e| e.to_string())?;
            for (order_id, why) in &outcome.refused {
                tracing::warn!(%order_id, %why, "pickup order from central refused");
            }
            if !outcome.reserved.is_empty() || !outcome.cancelled.is_empty() {
                tracing::info!(reserved = ?outcome.reserved, cancelled = ?outcome.cancelled, "pickup orders pulled");
            }
            Ok(false)
        }
    }
}

/// One puller's settings.
pub struct Puller {
    pub central: Arc<Central>,
    pub writer: Writer,
    pub what: What,
    pub every: Duration,
    pub locale: String,
}

/// Pull every `every`, and at once whenever the link comes back; wake the
/// label sender when label updates became pending.
pub async fn run(
    p: Puller,
    link: tokio::sync::watch::Receiver<Link>,
    labels_changed: Arc<tokio::sync::Notify>,
    shutdown: Shutdown,
) {
    let never = Arc::new(tokio::sync::Notify::new());
    run_triggered(p, link, labels_changed, never, shutdown).await;
}

/// [`run`], and at once whenever `now` is notified (a `pull_prices` or
/// `pull_stock` command from central, spec/fleet.md 4).
pub async fn run_triggered(
    p: Puller,
    mut link: tokio::sync::watch::Receiver<Link>,
    labels_changed: Arc<tokio::sync::Notify>,
    now: Arc<tokio::sync::Notify>,
    mut shutdown: Shutdown,
) {
    let Puller {
        central,
        writer,
        what,
        every,
        locale,
    } = p;
    loop {
        match pull_once(&central, &writer, what, &locale).await {
            Ok(true) => labels_changed.notify_one(),
            Ok(false) => {}
            Err(e) => tracing::warn!(what = what.path(), error = %e, "pull failed; will retry"),
        }
        let mut was_offline = *link.borrow() == Link::Offline;
        let deadline = tokio::time::Instant::now() + every;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                _ = now.notified() => {
                    tracing::info!(what = what.path(), "central asked for a pull; pulling now");
                    break;
                }
                changed = link.changed() => {
                    if changed.is_err() { return; }
                    let now = *link.borrow();
                    if was_offline && now == Link::Online {
                        tracing::info!(what = what.path(), "link is back; pulling now");
                        break;
                    }
                    was_offline = now == Link::Offline;
                }
                _ = shutdown.wait() => return,
            }
        }
    }
}
