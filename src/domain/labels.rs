//! Shelf labels: pending -> ok / failed. A label is confirmed only when
//! the label side says it displays the wanted version; its **price of
//! record** is the content of the version it confirmed, not of the one we
//! last sent. Unconfirmed after the ack timeout: `failed`, a `label_stale`
//! alert, and a retry with backoff.
//!
//! A label system that keeps a database of its labels (an OpenEPaperLink
//! AP) is reconciled here too: [`reconcile`] turns one poll of it into
//! `label_ack` and `label_health` events, and [`apply`] projects those
//! into the labels table and the `label_offline` alert, so that a rebuild
//! from the journal shows what the live store showed.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::db::{SqlContext, StoreError};
use crate::domain::alerts;
use crate::event::bounds::check_label_health;
use crate::event::device::{LabelSeen, LabelUpdate};
use crate::event::{Event, EventBody, LabelAck, LabelHealth, LabelStatus, NewEvent, Severity};

/// A battery reading this far (mV) from the recorded one is news.
pub const BATTERY_STEP_MV: i64 = 50;
/// A signal this far (dB) from the recorded one is news.
pub const RSSI_STEP_DB: i64 = 6;

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

/// A label's health as its projection last recorded it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordedHealth {
    pub battery_mv: Option<i64>,
    pub rssi: Option<i64>,
    /// `None` until a `label_health` event was applied.
    pub last_seen_ms: Option<i64>,
    /// A `label_offline` alert is open for the label.
    pub offline: bool,
}

/// Whether what a label system now reports about a label is worth a
/// `label_health` event: the label has no health event yet; or it crossed
/// the offline threshold, either way; or its battery moved by
/// [`BATTERY_STEP_MV`] or more, or its signal by [`RSSI_STEP_DB`] or more,
/// from the recorded value (a value seen for the first time counts; an
/// unknown one never does). A check-in alone is not news: the journal
/// would otherwise grow by every label on every poll, so `last_seen` in
/// the labels table is that of the last change.
pub fn health_changed(
    recorded: &RecordedHealth,
    battery_mv: Option<i64>,
    rssi: Option<i64>,
    offline: bool,
) -> bool {
    let moved = |now: Option<i64>, then: Option<i64>, step: i64| match (now, then) {
        (Some(now), Some(then)) => now.abs_diff(then) >= step.unsigned_abs(),
        (Some(_), None) => true,
        (None, _) => false,
    };
    recorded.last_seen_ms.is_none()
        || offline != recorded.offline
        || moved(battery_mv, recorded.battery_mv, BATTERY_STEP_MV)
        || moved(rssi, recorded.rssi, RSSI_STEP_DB)
}

/// The events one poll of a label system's database yields, to be
/// journaled by the caller (this only reads): a `label_ack` (ok) for each
/// sent update that the label now shows ([`LabelSeen::fetched_since`] the
/// upload), and a `label_health` for each label whose health changed
/// ([`health_changed`]). A label counts as offline when it has not checked
/// in for more than `offline_after_s` at `now`. `seen` finds a label of
/// the store in the poll by its label id (`None`: not this system's).
/// Health values outside `event::bounds` are treated as unknown.
pub fn reconcile(
    conn: &Connection,
    seen: &dyn Fn(&str) -> Option<LabelSeen>,
    now: DateTime<Utc>,
    offline_after_s: u64,
) -> Result<Vec<EventBody>, StoreError> {
    const WHAT: &str = "reconciling labels with their label system";
    let mut st = conn
        .prepare_cached(
            "SELECT label_id, sku, state, want_version, sent_version, sent_at_ms, battery_mv, rssi, last_seen_ms,
               EXISTS (SELECT 1 FROM alerts a WHERE a.code = 'label_offline' AND a.subject = l.label_id
                       AND a.resolved_seq IS NULL)
             FROM labels l WHERE l.state != 'unbound' ORDER BY label_id",
        )
        .ctx(WHAT)?;
    let rows = st
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<i64>>(3)?,
                r.get::<_, Option<i64>>(4)?,
                r.get::<_, Option<i64>>(5)?,
                RecordedHealth {
                    battery_mv: r.get(6)?,
                    rssi: r.get(7)?,
                    last_seen_ms: r.get(8)?,
                    offline: r.get(9)?,
                },
            ))
        })
        .ctx(WHAT)?;
    let mut health = Vec::new();
    let mut acks = Vec::new();
    for row in rows {
        let (label_id, sku, state, want, sent, sent_at_ms, recorded) = row.ctx(WHAT)?;
        let Some(label) = seen(&label_id) else {
            continue;
        };
        let battery_mv = label
            .battery_mv
            .filter(|&mv| check_label_health(Some(mv), None).is_ok());
        let rssi = label
            .rssi
            .filter(|&rssi| check_label_health(None, Some(rssi)).is_ok());
        let silent_s = (now - label.last_seen).num_seconds();
        let offline = silent_s > i64::try_from(offline_after_s).unwrap_or(i64::MAX);
        if health_changed(&recorded, battery_mv, rssi, offline) {
            health.push(EventBody::LabelHealth(LabelHealth {
                label_id: label_id.clone(),
                battery_mv,
                rssi,
                last_seen: label.last_seen,
                offline,
            }));
        }
        // An update is awaiting confirmation when the wanted version was
        // sent and the label does not show it yet.
        let awaiting = match (sent, sent_at_ms) {
            (Some(version), Some(at_ms)) if state != "ok" && want == Some(version) => {
                Some((version, at_ms))
            }
            _ => None,
        };
        if let Some((version, at_ms)) = awaiting {
            if label.fetched_since(crate::event::ts_from_millis(at_ms)) {
                acks.push(EventBody::LabelAck(LabelAck {
                    label_id,
                    sku,
                    price_version: version,
                    status: LabelStatus::Ok,
                    battery_mv,
                    rssi,
                }));
            }
        }
    }
    health.extend(acks);
    Ok(health)
}

/// Projection of `label_ack` events (may open or resolve `label_stale`)
/// and `label_health` events (may open or resolve `label_offline`).
pub fn apply(conn: &Connection, event: &Event) -> Result<Option<NewEvent>, StoreError> {
    let a = match &event.body {
        EventBody::LabelAck(a) => a,
        EventBody::LabelHealth(h) => return apply_health(conn, event, h),
        _ => return Ok(None),
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

/// Projection of a `label_health` event: battery, signal and last check-in
/// into the labels table, and the `label_offline` alert opened or resolved
/// as the event says.
fn apply_health(
    conn: &Connection,
    event: &Event,
    h: &LabelHealth,
) -> Result<Option<NewEvent>, StoreError> {
    let last_seen_ms = h.last_seen.timestamp_millis();
    let known = conn
        .prepare_cached(
            "UPDATE labels SET battery_mv = COALESCE(?2, battery_mv), rssi = COALESCE(?3, rssi), last_seen_ms = ?4
             WHERE label_id = ?1",
        )
        .and_then(|mut st| st.execute(params![h.label_id, h.battery_mv, h.rssi, last_seen_ms]))
        .ctx("recording label health")?;
    if known == 0 {
        return Ok(None); // a label the catalog does not (or no longer) know
    }
    if !h.offline {
        return alerts::resolve_event(
            conn,
            &event.device,
            "label_offline",
            &h.label_id,
            format!("label {} checked in again", h.label_id),
        );
    }
    let silent_s = (event.ts - h.last_seen).num_seconds();
    let mut context = serde_json::Map::new();
    context.insert("label_id".into(), h.label_id.clone().into());
    context.insert("last_seen_s_ago".into(), silent_s.into());
    if let Some(mv) = h.battery_mv {
        context.insert("battery_mv".into(), mv.into());
    }
    alerts::open_event(
        conn,
        &event.device,
        "label_offline",
        &h.label_id,
        Severity::Warning,
        format!(
            "label {} has not checked in for {silent_s} s (battery or range?)",
            h.label_id
        ),
        context,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_is_news_only_when_it_changed() {
        let recorded = RecordedHealth {
            battery_mv: Some(2950),
            rssi: Some(-61),
            last_seen_ms: Some(1_763_805_600_000),
            offline: false,
        };
        // A check-in with the same (or nearly the same) values is not news.
        assert!(!health_changed(&recorded, Some(2950), Some(-61), false));
        assert!(!health_changed(&recorded, Some(2901), Some(-66), false));
        // Unknown values never are.
        assert!(!health_changed(&recorded, None, None, false));
        // A step of the threshold is.
        assert!(health_changed(&recorded, Some(2900), Some(-61), false));
        assert!(health_changed(&recorded, Some(3000), Some(-61), false));
        assert!(health_changed(&recorded, Some(2950), Some(-67), false));
        assert!(health_changed(&recorded, Some(2950), Some(-55), false));
        // Crossing the offline threshold, either way.
        assert!(health_changed(&recorded, Some(2950), Some(-61), true));
        let offline = RecordedHealth {
            offline: true,
            ..recorded
        };
        assert!(!health_changed(&offline, Some(2950), Some(-61), true));
        assert!(health_changed(&offline, Some(2950), Some(-61), false));
        // The first report, and a value known for the first time.
        assert!(health_changed(
            &RecordedHealth::default(),
            None,
            None,
            false
        ));
        let unknown = RecordedHealth {
            battery_mv: None,
            ..recorded
        };
        assert!(health_changed(&unknown, Some(2950), Some(-61), false));
    }
}
