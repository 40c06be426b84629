//! The catalog and price book (spec/sync-api.md section 3) and the
//! effective shelf price: for the newest entry with `effective_from <= t`,
//! the promo price while `t < promo.until`, else `price_minor`.
//!
//! Every change of a SKU's effective price (a new price book version, a
//! promo starting or ending) creates a pending update for each of its
//! labels. Label content versions are strictly increasing per store:
//! `max(price book version, last label version + 1)`, so that a promo
//! ending at midnight (no new price book version) still gets a version of
//! its own and a late confirmation of the old content cannot be mistaken
//! for the new one.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Deserialize;

use crate::db::{SqlContext, StoreError};
use crate::domain::price_text::price_text;
use crate::domain::sgtin::normalize_gtin;
use crate::event::device::{LabelUpdate, Promo};
use crate::event::ts_from_millis;

/// Central's price pull response; also the format of `storegate import prices`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PricePull {
    pub version: i64,
    #[serde(default)]
    pub items: Vec<PriceItem>,
    #[serde(default)]
    pub removed: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PriceItem {
    pub sku: String,
    #[serde(default)]
    pub gtins: Vec<String>,
    #[serde(default)]
    pub name: String,
    pub price_minor: i64,
    pub currency: String,
    #[serde(with = "crate::event::ts_format")]
    pub effective_from: DateTime<Utc>,
    #[serde(default)]
    pub promo: Option<PromoSpec>,
    #[serde(default)]
    pub unit_weight_g: Option<i64>,
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default)]
    pub min_stock: Option<i64>,
    /// Most units the shelf should hold: what a refill task fills up to.
    #[serde(default)]
    pub max_stock: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PromoSpec {
    pub price_minor: i64,
    #[serde(with = "crate::event::ts_format")]
    pub until: DateTime<Utc>,
}

/// The price a shelf shows for a SKU at some moment.
#[derive(Debug, Clone, PartialEq)]
pub struct ShelfPrice {
    pub price_minor: i64,
    pub currency: String,
    /// `Some(until)` while a promo price is in force.
    pub promo_until: Option<DateTime<Utc>>,
    /// The regular price (equal to `price_minor` outside promos).
    pub regular_minor: i64,
}

/// Effective price of `sku` at `t`, if the price book has one.
pub fn effective(
    conn: &Connection,
    sku: &str,
    t: DateTime<Utc>,
) -> Result<Option<ShelfPrice>, StoreError> {
    conn.prepare_cached(
        "SELECT price_minor, currency, promo_price_minor, promo_until_ms FROM prices
         WHERE sku = ?1 AND effective_from_ms <= ?2 ORDER BY effective_from_ms DESC LIMIT 1",
    )
    .and_then(|mut st| {
        st.query_row(params![sku, t.timestamp_millis()], |r| {
            let regular: i64 = r.get(0)?;
            let currency: String = r.get(1)?;
            let promo: Option<i64> = r.get(2)?;
            let until: Option<i64> = r.get(3)?;
            Ok(match (promo, until) {
                (Some(p), Some(u)) if t.timestamp_millis() < u => ShelfPrice {
                    price_minor: p,
                    currency,
                    promo_until: Some(ts_from_millis(u)),
                    regular_minor: regular,
                },
                _ => ShelfPrice {
                    price_minor: regular,
                    currency,
                    promo_until: None,
                    regular_minor: regular,
                },
            })
        })
        .optional()
    })
    .ctx("computing the effective price")
}

/// Apply a price pull (or import) in the caller's transaction. Idempotent:
/// applying the same response twice changes nothing, and an entry never
/// replaces one from a newer version. Returns the SKUs whose labels got
/// new pending updates.
pub fn apply_pull(
    conn: &Connection,
    pull: &PricePull,
    now: DateTime<Utc>,
    locale: &str,
) -> Result<Vec<String>, StoreError> {
    let mut touched = Vec::new();
    for item in &pull.items {
        conn.prepare_cached(
            "INSERT INTO catalog (sku, name, unit_weight_g, min_stock, max_stock, removed, version) VALUES (?1, ?2, ?3, ?4, ?6, 0, ?5)
             ON CONFLICT (sku) DO UPDATE SET name = excluded.name, unit_weight_g = excluded.unit_weight_g,
               min_stock = excluded.min_stock, max_stock = excluded.max_stock, removed = 0, version = excluded.version
             WHERE excluded.version >= catalog.version",
        )
        .and_then(|mut st| st.execute(params![item.sku, item.name, item.unit_weight_g, item.min_stock, pull.version, item.max_stock]))
        .ctx("storing a catalog item")?;
        conn.prepare_cached("DELETE FROM gtins WHERE sku = ?1")
            .and_then(|mut st| st.execute([&item.sku]))
            .ctx("replacing GTINs")?;
        for gtin in &item.gtins {
            if let Some(g) = normalize_gtin(gtin) {
                conn.prepare_cached("INSERT INTO gtins (gtin, sku) VALUES (?1, ?2) ON CONFLICT (gtin) DO UPDATE SET sku = excluded.sku")
                    .and_then(|mut st| st.execute(params![g, item.sku]))
                    .ctx("storing a GTIN")?;
            } else {
                tracing::warn!(sku = %item.sku, gtin = %gtin, "price book GTIN is not a valid GTIN; ignored");
            }
        }
        conn.prepare_cached(
            "INSERT INTO prices (sku, effective_from_ms, price_minor, currency, promo_price_minor, promo_until_ms, version)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (sku, effective_from_ms) DO UPDATE SET price_minor = excluded.price_minor,
               currency = excluded.currency, promo_price_minor = excluded.promo_price_minor,
               promo_until_ms = excluded.promo_until_ms, version = excluded.version
             WHERE excluded.version >= prices.version",
        )
        .and_then(|mut st| {
            st.execute(params![
                item.sku,
                item.effective_from.timestamp_millis(),
                item.price_minor,
                item.currency,
                item.promo.as_ref().map(|p| p.price_minor),
                item.promo.as_ref().map(|p| p.until.timestamp_millis()),
                pull.version
            ])
        })
        .ctx("storing a price")?;
        // The catalog says which labels belong to the SKU, where its word
        // about a label changed: a label staff bound or unbound keeps that
        // while central's book says the same as before about it
        // (domain::label_bindings).
        for label in &item.labels {
            conn.prepare_cached(
                "INSERT INTO labels (label_id, sku, bound_by, central_sku) VALUES (?1, ?2, 'central', ?2)
                 ON CONFLICT (label_id) DO UPDATE SET sku = excluded.sku, bound_by = 'central',
                   central_sku = excluded.central_sku,
                   want_version = CASE WHEN labels.sku != excluded.sku THEN NULL ELSE labels.want_version END,
                   state = CASE WHEN labels.state = 'unbound' THEN 'pending' ELSE labels.state END
                 WHERE labels.central_sku IS NOT excluded.central_sku",
            )
            .and_then(|mut st| st.execute(params![label, item.sku]))
            .ctx("assigning a label")?;
        }
        let keep = serde_json::to_string(&item.labels).unwrap_or_else(|_| "[]".into());
        conn.prepare_cached(
            "DELETE FROM labels WHERE bound_by = 'central' AND central_sku = ?1
               AND label_id NOT IN (SELECT value FROM json_each(?2))",
        )
        .and_then(|mut st| st.execute(params![item.sku, keep]))
        .ctx("unassigning labels")?;
        // Store bindings stand; central no longer lists them under the SKU.
        conn.prepare_cached(
            "UPDATE labels SET central_sku = NULL WHERE central_sku = ?1
               AND label_id NOT IN (SELECT value FROM json_each(?2))",
        )
        .and_then(|mut st| st.execute(params![item.sku, keep]))
        .ctx("unassigning labels")?;
        conn.prepare_cached("DELETE FROM labels WHERE state = 'unbound' AND central_sku IS NULL")
            .and_then(|mut st| st.execute([]))
            .ctx("forgetting unbound labels")?;
        touched.push(item.sku.clone());
    }
    for sku in &pull.removed {
        conn.execute("UPDATE catalog SET removed = 1 WHERE sku = ?1", [sku])
            .ctx("removing a catalog item")?;
    }
    conn.execute(
        "UPDATE sync_state SET price_version = MAX(price_version, ?1) WHERE id = 1",
        [pull.version],
    )
    .ctx("recording the price version")?;
    refresh_each(conn, touched, now, locale)
}

/// [`refresh`] each SKU; returns those whose labels got new updates.
fn refresh_each(
    conn: &Connection,
    skus: Vec<String>,
    now: DateTime<Utc>,
    locale: &str,
) -> Result<Vec<String>, StoreError> {
    let mut changed = Vec::new();
    for sku in skus {
        if refresh(conn, &sku, now, locale)? {
            changed.push(sku);
        }
    }
    Ok(changed)
}

/// Re-decide one SKU's shelf price at `now`; when it changed, or a label
/// lacks the current content, create pending label updates. Returns
/// whether any label got a new update.
pub fn refresh(
    conn: &Connection,
    sku: &str,
    now: DateTime<Utc>,
    locale: &str,
) -> Result<bool, StoreError> {
    let Some(eff) = effective(conn, sku, now)? else {
        return Ok(false);
    };
    let current: Option<(i64, String, bool, i64)> = conn
        .prepare_cached(
            "SELECT price_minor, currency, promo, label_version FROM shelf_prices WHERE sku = ?1",
        )
        .and_then(|mut st| {
            st.query_row([sku], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .optional()
        })
        .ctx("reading the shelf price")?;
    let is_promo = eff.promo_until.is_some();
    let unchanged = current.as_ref().is_some_and(|(p, c, promo, _)| {
        *p == eff.price_minor && *c == eff.currency && *promo == is_promo
    });
    let version = match (&current, unchanged) {
        (Some((_, _, _, v)), true) => *v,
        _ => {
            let v = next_label_version(conn)?;
            conn.prepare_cached(
                "INSERT INTO shelf_prices (sku, price_minor, currency, promo, promo_until_ms, label_version, previous_price_minor, changed_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (sku) DO UPDATE SET price_minor = excluded.price_minor, currency = excluded.currency,
                   promo = excluded.promo, promo_until_ms = excluded.promo_until_ms, label_version = excluded.label_version,
                   previous_price_minor = shelf_prices.price_minor, changed_at_ms = excluded.changed_at_ms",
            )
            .and_then(|mut st| {
                st.execute(params![
                    sku,
                    eff.price_minor,
                    eff.currency,
                    is_promo,
                    eff.promo_until.map(|t| t.timestamp_millis()),
                    v,
                    current.as_ref().map(|c| c.0),
                    now.timestamp_millis()
                ])
            })
            .ctx("storing the shelf price")?;
            v
        }
    };
    issue_updates(conn, sku, &eff, version, now, locale)
}

/// Give every label of `sku` that does not yet want `version` a pending
/// update with the content of `eff`. Returns whether any label got one.
fn issue_updates(
    conn: &Connection,
    sku: &str,
    eff: &ShelfPrice,
    version: i64,
    now: DateTime<Utc>,
    locale: &str,
) -> Result<bool, StoreError> {
    let labels: Vec<String> = {
        let mut st = conn
            .prepare_cached("SELECT label_id FROM labels WHERE sku = ?1 AND (want_version IS NULL OR want_version != ?2)")
            .ctx("listing labels")?;
        let rows = st
            .query_map(params![sku, version], |r| r.get(0))
            .ctx("listing labels")?;
        rows.collect::<Result<_, _>>().ctx("listing labels")?
    };
    if labels.is_empty() {
        return Ok(false);
    }
    let name: String = conn
        .prepare_cached("SELECT name FROM catalog WHERE sku = ?1")
        .and_then(|mut st| st.query_row([sku], |r| r.get(0)).optional())
        .ctx("reading a name")?
        .unwrap_or_default();
    for label_id in labels {
        let update = LabelUpdate {
            label_id: label_id.clone(),
            sku: sku.to_string(),
            name: name.clone(),
            price_minor: eff.price_minor,
            currency: eff.currency.clone(),
            price_text: price_text(eff.price_minor, &eff.currency, locale),
            promo: eff.promo_until.map(|until| Promo {
                price_minor: eff.price_minor,
                until,
                price_text: price_text(eff.price_minor, &eff.currency, locale),
            }),
            version,
        };
        let content = serde_json::to_string(&update).unwrap_or_default();
        conn.prepare_cached(
            "INSERT INTO label_updates (label_id, version, sku, content, decided_ms) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (label_id, version) DO NOTHING",
        )
        .and_then(|mut st| st.execute(params![label_id, version, sku, content, now.timestamp_millis()]))
        .ctx("storing a label update")?;
        conn.prepare_cached(
            "UPDATE labels SET want_version = ?2, state = 'pending', attempts = 0, next_attempt_ms = 0, sent_version = NULL
             WHERE label_id = ?1",
        )
        .and_then(|mut st| st.execute(params![label_id, version]))
        .ctx("marking a label pending")?;
    }
    Ok(true)
}

/// Send the SKU's current shelf price to its labels again, as a new label
/// version (after a price conflict: a label may show something else). A
/// new version, not the old one again: its confirmation is a new fact with
/// its own natural key, where a second confirmation of the same version
/// would be taken for a redelivery.
pub fn republish(
    conn: &Connection,
    sku: &str,
    now: DateTime<Utc>,
    locale: &str,
) -> Result<bool, StoreError> {
    let Some(eff) = effective(conn, sku, now)? else {
        return Ok(false);
    };
    let version = next_label_version(conn)?;
    conn.prepare_cached("UPDATE shelf_prices SET label_version = ?2 WHERE sku = ?1")
        .and_then(|mut st| st.execute(params![sku, version]))
        .ctx("recording the label version")?;
    issue_updates(conn, sku, &eff, version, now, locale)
}

fn next_label_version(conn: &Connection) -> Result<i64, StoreError> {
    let book: i64 = conn
        .query_row(
            "SELECT price_version FROM sync_state WHERE id = 1",
            [],
            |r| r.get(0),
        )
        .ctx("reading the price version")?;
    let last: i64 = conn
        .query_row("SELECT COALESCE((SELECT CAST(value AS INTEGER) FROM settings WHERE key = 'label_version'), 0)", [], |r| r.get(0))
        .ctx("reading the label version")?;
    let v = book.max(last + 1);
    conn.execute(
        "INSERT INTO settings (key, value) VALUES ('label_version', ?1) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [v.to_string()],
    )
    .ctx("recording the label version")?;
    Ok(v)
}

/// Re-decide every SKU's shelf price (at start-up and at promo boundaries).
pub fn refresh_all(
    conn: &Connection,
    now: DateTime<Utc>,
    locale: &str,
) -> Result<Vec<String>, StoreError> {
    let skus: Vec<String> = {
        let mut st = conn
            .prepare("SELECT DISTINCT sku FROM prices")
            .ctx("listing priced SKUs")?;
        let rows = st.query_map([], |r| r.get(0)).ctx("listing priced SKUs")?;
        rows.collect::<Result<_, _>>().ctx("listing priced SKUs")?
    };
    refresh_each(conn, skus, now, locale)
}

/// The next moment after `now` at which some SKU's effective price may
/// change: an entry becoming effective or a promo ending.
pub fn next_boundary(
    conn: &Connection,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let ms = now.timestamp_millis();
    conn.query_row(
        "SELECT MIN(t) FROM (
           SELECT effective_from_ms AS t FROM prices WHERE effective_from_ms > ?1
           UNION ALL SELECT promo_until_ms FROM prices WHERE promo_until_ms > ?1)",
        [ms],
        |r| r.get::<_, Option<i64>>(0),
    )
    .map(|t| t.map(ts_from_millis))
    .ctx("finding the next price boundary")
}

/// The shelf price as last decided, with the price before the last change
/// and when it changed.
#[derive(Debug, Clone, PartialEq)]
pub struct ShelfRecord {
    pub price_minor: i64,
    pub currency: String,
    pub previous_price_minor: Option<i64>,
    pub changed_at: DateTime<Utc>,
}

pub fn shelf_price(conn: &Connection, sku: &str) -> Result<Option<ShelfRecord>, StoreError> {
    conn.prepare_cached("SELECT price_minor, currency, previous_price_minor, changed_at_ms FROM shelf_prices WHERE sku = ?1")
        .and_then(|mut st| {
            st.query_row([sku], |r| {
                Ok(ShelfRecord {
                    price_minor: r.get(0)?,
                    currency: r.get(1)?,
                    previous_price_minor: r.get(2)?,
                    changed_at: ts_from_millis(r.get(3)?),
                })
            })
            .optional()
        })
        .ctx("reading the shelf price")
}
