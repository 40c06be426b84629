//! Shelf labels: pending -> ok / failed. A label is confirmed only when
//! the label side says it displays the wanted version; its **price of
//! record** is the content of the version it confirmed, not of the one we
//! last sent. Unconfirmed after the ack timeout: `failed`, a `label_stale`
//! alert, and a retry with backoff.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::db::{SqlContext, StoreError};
use crate::domain::alerts;
use crate::event::device::LabelUpdate;
use crate::event::{Event, EventBody, LabelAck, LabelStatus, NewEvent, Severity};

/// Retry delays after a failed or timed-out update: 30 s doubling to 1 h.
pub fn retry_delay_ms(attempts: i64) -> i64 {
    let exp = attempts.clamp(1, 8) as u32 - 1;
    (30_000i64 << exp).min(3_600_000)
}

/// A label as the API and status show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelView {
    pub label_id: String,
    pub sku: String,
    pub state: String,
    pub want_version: Option<i64>,
    /// The version the label confirmed showing, and its price.
    pub shows_version: Option<i64>,
    pub shows_price_minor: Option<i64>,
    pub battery_mv: Option<i64>,
    pub rssi: Option<i64>,
}

pub fn labels_of(conn: &Connection, sku: &str) -> Result<Vec<LabelView>, StoreError> {
    let mut st = conn
        .prepare_cached(
            "SELECT label_id, sku, state, want_version, confirmed_version, confirmed_price_minor, battery_mv, rssi
             FROM labels WHERE sku = ?1 ORDER BY label_id",
        )
        .ctx("listing labels")?;
    let rows = st
        .query_map([sku], |r| {
            Ok(LabelView {
                label_id: r.get(0)?,
                sku: r.get(1)?,
                state: r.get(2)?,
                want_version: r.get(3)?,
                shows_version: r.get(4)?,
                shows_price_minor: r.get(5)?,
                battery_mv: r.get(6)?,
                rssi: r.get(7)?,
            })
        })
        .ctx("listing labels")?;
    rows.collect::<Result<_, _>>().ctx("listing labels")
}

/// Labels per state: `(pending, ok, failed)`.
pub fn summary(conn: &Connection) -> Result<(i64, i64, i64), StoreError> {
    conn.query_row(
        "SELECT COALESCE(SUM(state = 'pending'), 0), COALESCE(SUM(state = 'ok'), 0), COALESCE(SUM(state = 'failed'), 0) FROM labels",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .ctx("summarising labels")
}

/// The SKU a label belongs to.
pub fn sku_of(conn: &Connection, label_id: &str) -> Result<Option<String>, StoreError> {
    conn.prepare_cached("SELECT sku FROM labels WHERE label_id = ?1")
        .and_then(|mut st| st.query_row([label_id], |r| r.get(0)).optional())
        .ctx("looking up a label")
}

/// Updates due to be sent now: labels whose wanted version was not sent
/// yet, or whose retry time has come.
pub fn due(conn: &Connection, now: DateTime<Utc>) -> Result<Vec<LabelUpdate>, StoreError> {
    let mut st = conn
        .prepare_cached(
            "SELECT u.content FROM labels l JOIN label_updates u ON u.label_id = l.label_id AND u.version = l.want_version
             WHERE l.state != 'ok' AND l.next_attempt_ms <= ?1
               AND (l.sent_version IS NULL OR l.sent_version != l.want_version OR l.state = 'failed')
             ORDER BY l.next_attempt_ms LIMIT 500",
        )
        .ctx("listing due label updates")?;
    let rows = st
        .query_map([now.timestamp_millis()], |r| r.get::<_, String>(0))
        .ctx("listing due label updates")?;
    let mut out = Vec::new();
    for row in rows {
        if let Ok(u) = serde_json::from_str(&row.ctx("listing due label updates")?) {
            out.push(u);
        }
    }
    Ok(out)
}

/// Record that an update left the agent.
pub fn mark_sent(
    conn: &Connection,
    label_id: &str,
    version: i64,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE labels SET sent_version = ?2, sent_at_ms = ?3, attempts = attempts + 1,
           state = CASE WHEN state = 'failed' THEN 'pending' ELSE state END
         WHERE label_id = ?1 AND want_version = ?2",
    )
    .and_then(|mut st| st.execute(params![label_id, version, now.timestamp_millis()]))
    .map(|_| ())
    .ctx("recording a sent label update")
}

/// `label_ack` timeout events for updates sent longer than `timeout_s`
/// ago without a confirmation (the projection then fails them), for the
/// labels `which` selects (labels behind different ESL systems have
/// different timeouts).
pub fn timed_out(
    conn: &Connection,
    now: DateTime<Utc>,
    timeout_s: i64,
    which: &dyn Fn(&str) -> bool,
) -> Result<Vec<NewEvent>, StoreError> {
    let mut st = conn
        .prepare_cached(
            "SELECT label_id, sku, sent_version FROM labels
             WHERE state = 'pending' AND sent_version = want_version AND sent_at_ms <= ?1",
        )
        .ctx("finding timed-out labels")?;
    let rows = st
        .query_map([now.timestamp_millis() - timeout_s * 1000], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .ctx("finding timed-out labels")?;
    let mut out = Vec::new();
    for row in rows {
        let (label_id, sku, version) = row.ctx("finding timed-out labels")?;
        if !which(&label_id) {
            continue;
        }
        out.push(NewEvent::new(
            now,
            "agent",
            EventBody::LabelAck(LabelAck {
                label_id,
                sku,
                price_version: version,
                status: LabelStatus::Timeout,
                battery_mv: None,
                rssi: None,
            }),
        ));
    }
    Ok(out)
}

/// Projection of `label_ack` events; may open or resolve `label_stale`.
pub fn apply(conn: &Connection, event: &Event) -> Result<Option<NewEvent>, StoreError> {
    let EventBody::LabelAck(a) = &event.body else {
        return Ok(None);
    };
    let row: Option<(Option<i64>, i64)> = conn
        .prepare_cached("SELECT want_version, attempts FROM labels WHERE label_id = ?1")
        .and_then(|mut st| {
            st.query_row([&a.label_id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .ctx("reading a label")?;
    let Some((want, attempts)) = row else {
        return Ok(None); // a label the catalog does not (or no longer) know
    };
    let ms = event.ts.timestamp_millis();
    conn.prepare_cached("UPDATE labels SET battery_mv = COALESCE(?2, battery_mv), rssi = COALESCE(?3, rssi) WHERE label_id = ?1")
        .and_then(|mut st| st.execute(params![a.label_id, a.battery_mv, a.rssi]))
        .ctx("recording label health")?;
    match a.status {
        LabelStatus::Ok => {
            // The price of record is what this version showed.
            let content: Option<String> = conn
                .prepare_cached(
                    "SELECT content FROM label_updates WHERE label_id = ?1 AND version = ?2",
                )
                .and_then(|mut st| {
                    st.query_row(params![a.label_id, a.price_version], |r| r.get(0))
                        .optional()
                })
                .ctx("reading a label update")?;
            let update: Option<LabelUpdate> = content.and_then(|c| serde_json::from_str(&c).ok());
            conn.prepare_cached(
                "UPDATE labels SET confirmed_version = ?2, confirmed_price_minor = ?3, confirmed_currency = ?4,
                   confirmed_at_ms = ?5, state = CASE WHEN want_version = ?2 THEN 'ok' ELSE state END
                 WHERE label_id = ?1 AND (confirmed_version IS NULL OR confirmed_version <= ?2)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    a.label_id,
                    a.price_version,
                    update.as_ref().map(|u| u.price_minor),
                    update.as_ref().map(|u| u.currency.clone()),
                    ms
                ])
            })
            .ctx("confirming a label")?;
            if want == Some(a.price_version) {
                return alerts::resolve_event(
                    conn,
                    &event.device,
                    "label_stale",
                    &a.label_id,
                    format!("label {} confirmed version {}", a.label_id, a.price_version),
                );
            }
            Ok(None)
        }
        LabelStatus::Failed | LabelStatus::Timeout => {
            if want != Some(a.price_version) {
                return Ok(None); // about an update that is no longer wanted
            }
            conn.prepare_cached(
                "UPDATE labels SET state = 'failed', next_attempt_ms = ?2 WHERE label_id = ?1",
            )
            .and_then(|mut st| st.execute(params![a.label_id, ms + retry_delay_ms(attempts)]))
            .ctx("failing a label")?;
            let mut context = serde_json::Map::new();
            context.insert("label_id".into(), a.label_id.clone().into());
            context.insert("sku".into(), a.sku.clone().into());
            context.insert("price_version".into(), a.price_version.into());
            alerts::open_event(
                conn,
                &event.device,
                "label_stale",
                &a.label_id,
                Severity::Warning,
                format!(
                    "label {} ({}) did not confirm price version {} ({}); retrying",
                    a.label_id,
                    a.sku,
                    a.price_version,
                    a.status.as_str()
                ),
                context,
            )
        }
    }
}
