//! Which SKU a shelf label shows, when staff decide it: the projection of
//! `label_bound` and `label_unbound` into the labels table, and what a
//! binding sets going (the label's update with the SKU's current price, in
//! the same transaction).
//!
//! Central's price book also says which labels show a SKU (`labels` of an
//! item, `domain::prices::apply_pull`). The two meet by this rule: a store
//! binding (or unbinding) stands until central's book puts that label
//! under another SKU than it listed it under before; then central's word,
//! being the newer one, wins. A book that lists the label where it did
//! before, or stops listing it, leaves the store's decision alone. The
//! book carries no time of a label's assignment, so a pull is taken as
//! newer than every binding made before it arrived. The reference central
//! applies the pushed `label_bound`/`label_unbound` to its book, so its
//! next book agrees with the store.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use crate::db::{SqlContext, StoreError};
use crate::domain::{alerts, prices};
use crate::event::{Event, EventBody, LabelBound, LabelUnbound, NewEvent};

/// The state of a label row that staff unbound (its `sku` is empty).
pub const UNBOUND: &str = "unbound";

/// What the labels table says about one label's binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The SKU it shows; `None` when unbound or unknown.
    pub sku: Option<String>,
    /// `central` or `store`.
    pub bound_by: String,
}

/// The binding of `label_id`; `None` for a label the store never knew.
pub fn binding(conn: &Connection, label_id: &str) -> Result<Option<Binding>, StoreError> {
    conn.prepare_cached("SELECT sku, state, bound_by FROM labels WHERE label_id = ?1")
        .and_then(|mut st| {
            st.query_row([label_id], |r| {
                let sku: String = r.get(0)?;
                let state: String = r.get(1)?;
                Ok(Binding {
                    sku: (state != UNBOUND).then_some(sku),
                    bound_by: r.get(2)?,
                })
            })
            .optional()
        })
        .ctx("reading a label's binding")
}

/// Projection of `label_bound` and `label_unbound`. A binding to another
/// SKU (or of a new or unbound label) makes the label pending with the
/// SKU's current shelf price at once; an unbinding stops its updates and
/// resolves its label alerts (derived events).
pub fn apply(conn: &Connection, event: &Event, locale: &str) -> Result<Vec<NewEvent>, StoreError> {
    match &event.body {
        EventBody::LabelBound(b) => bind(conn, b, event.ts, locale).map(|()| Vec::new()),
        EventBody::LabelUnbound(u) => unbind(conn, event, u),
        _ => Ok(Vec::new()),
    }
}

fn bind(
    conn: &Connection,
    b: &LabelBound,
    now: DateTime<Utc>,
    locale: &str,
) -> Result<(), StoreError> {
    let before = binding(conn, &b.label_id)?;
    if before.as_ref().and_then(|x| x.sku.as_deref()) == Some(b.sku.as_str()) {
        // Already showing this SKU: only who decided it changes.
        conn.prepare_cached("UPDATE labels SET bound_by = 'store' WHERE label_id = ?1")
            .and_then(|mut st| st.execute([&b.label_id]))
            .ctx("binding a label")?;
        return Ok(());
    }
    conn.prepare_cached(
        "INSERT INTO labels (label_id, sku, bound_by) VALUES (?1, ?2, 'store')
         ON CONFLICT (label_id) DO UPDATE SET sku = excluded.sku, bound_by = 'store', state = 'pending',
           want_version = NULL, sent_version = NULL, attempts = 0, next_attempt_ms = 0",
    )
    .and_then(|mut st| st.execute(params![b.label_id, b.sku]))
    .ctx("binding a label")?;
    queue_update(conn, &b.label_id, &b.sku, now, locale)
}

/// Give the newly bound label the SKU's current price. When the label
/// already had the SKU's current version once (bound to it before), the
/// SKU gets a new version instead: a confirmation of the old one would be
/// taken for a redelivery of the first.
fn queue_update(
    conn: &Connection,
    label_id: &str,
    sku: &str,
    now: DateTime<Utc>,
    locale: &str,
) -> Result<(), StoreError> {
    let had_current: bool = conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM shelf_prices s JOIN label_updates u
               ON u.label_id = ?1 AND u.version = s.label_version WHERE s.sku = ?2)",
        )
        .and_then(|mut st| st.query_row(params![label_id, sku], |r| r.get(0)))
        .ctx("reading a label's updates")?;
    if had_current {
        prices::republish(conn, sku, now, locale)?;
    } else {
        prices::refresh(conn, sku, now, locale)?;
    }
    Ok(())
}

fn unbind(conn: &Connection, event: &Event, u: &LabelUnbound) -> Result<Vec<NewEvent>, StoreError> {
    conn.prepare_cached(
        "UPDATE labels SET sku = '', state = 'unbound', bound_by = 'store', want_version = NULL,
           sent_version = NULL, attempts = 0, next_attempt_ms = 0
         WHERE label_id = ?1",
    )
    .and_then(|mut st| st.execute([&u.label_id]))
    .ctx("unbinding a label")?;
    // Nothing is wanted of it any more, so nothing is stale or missing.
    let mut derived = Vec::new();
    for code in ["label_stale", "label_offline"] {
        derived.extend(alerts::resolve_event(
            conn,
            &event.device,
            code,
            &u.label_id,
            format!("label {} was unbound from {}", u.label_id, u.sku),
        )?);
    }
    Ok(derived)
}
