//! Alerts: one table, at most one open alert per code and subject, each
//! opening and resolution journaled as an `alert` event so central sees
//! it. The table is a projection of those events.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::db::{SqlContext, StoreError, WriteTx};
use crate::event::{Alert, AlertState, Event, EventBody, NewEvent, Severity, now_millis};

/// An alert as the API and status show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpenAlert {
    pub code: String,
    pub subject: String,
    pub severity: String,
    pub message: String,
    pub context: serde_json::Value,
    pub opened_seq: i64,
    #[serde(with = "crate::event::ts_format")]
    pub opened_at: chrono::DateTime<chrono::Utc>,
}

pub fn is_open(conn: &Connection, code: &str, subject: &str) -> Result<bool, StoreError> {
    conn.prepare_cached(
        "SELECT 1 FROM alerts WHERE code = ?1 AND subject = ?2 AND resolved_seq IS NULL",
    )
    .and_then(|mut st| st.query_row([code, subject], |_| Ok(())).optional())
    .map(|r| r.is_some())
    .ctx("looking up an open alert")
}

/// The event that opens an alert, or `None` when one with this code and
/// subject is already open. For projections, which return derived events.
pub fn open_event(
    conn: &Connection,
    device: &str,
    code: &str,
    subject: &str,
    severity: Severity,
    message: String,
    context: serde_json::Map<String, serde_json::Value>,
) -> Result<Option<NewEvent>, StoreError> {
    if is_open(conn, code, subject)? {
        return Ok(None);
    }
    Ok(Some(NewEvent::new(
        now_millis(),
        device,
        EventBody::Alert(Alert {
            code: code.into(),
            severity,
            message,
            subject: subject.into(),
            state: AlertState::Open,
            context,
        }),
    )))
}

/// The event that resolves an open alert, or `None` when none is open.
pub fn resolve_event(
    conn: &Connection,
    device: &str,
    code: &str,
    subject: &str,
    message: String,
) -> Result<Option<NewEvent>, StoreError> {
    let open: Option<String> = conn
        .prepare_cached(
            "SELECT severity FROM alerts WHERE code = ?1 AND subject = ?2 AND resolved_seq IS NULL",
        )
        .and_then(|mut st| st.query_row([code, subject], |r| r.get(0)).optional())
        .ctx("looking up an open alert")?;
    let Some(severity) = open else {
        return Ok(None);
    };
    let severity =
        serde_json::from_value(serde_json::Value::String(severity)).unwrap_or(Severity::Warning);
    Ok(Some(NewEvent::new(
        now_millis(),
        device,
        EventBody::Alert(Alert {
            code: code.into(),
            severity,
            message,
            subject: subject.into(),
            state: AlertState::Resolved,
            context: serde_json::Map::new(),
        }),
    )))
}

/// Open an alert now (inside a writer job). Returns whether it was new.
pub fn raise(
    w: &mut WriteTx<'_>,
    device: &str,
    code: &str,
    subject: &str,
    severity: Severity,
    message: String,
    context: serde_json::Map<String, serde_json::Value>,
) -> Result<bool, StoreError> {
    match open_event(w.conn(), device, code, subject, severity, message, context)? {
        Some(e) => w.append(e).map(|_| true),
        None => Ok(false),
    }
}

/// Resolve an open alert now (inside a writer job). Returns whether one was open.
pub fn resolve(
    w: &mut WriteTx<'_>,
    device: &str,
    code: &str,
    subject: &str,
    message: String,
) -> Result<bool, StoreError> {
    match resolve_event(w.conn(), device, code, subject, message)? {
        Some(e) => w.append(e).map(|_| true),
        None => Ok(false),
    }
}

/// Central's config alerts are about one subject: the store's config.
const CONFIG_SUBJECT: &str = "config";

/// Open `config_rejected` for central's config `version`: the message
/// carries every problem (cut to the bound of an alert message, with how
/// many were left out), the context the version, sha256 and the full list.
/// An older rejection still open is resolved first, so the open one always
/// names the newest version.
pub fn config_rejected(
    w: &mut WriteTx<'_>,
    version: i64,
    sha256: &str,
    problems: &[String],
) -> Result<(), StoreError> {
    resolve(
        w,
        "agent",
        "config_rejected",
        CONFIG_SUBJECT,
        format!("superseded by central config v{version}"),
    )?;
    let mut message = format!(
        "central config v{version} rejected ({} problem{}); still running the previous config. Fix it at central:",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    let budget = crate::event::bounds::MAX_TEXT_LEN - 64;
    for (i, p) in problems.iter().enumerate() {
        if message.len() + p.len() + 3 > budget {
            message.push_str(&format!("\n- ... and {} more", problems.len() - i));
            break;
        }
        message.push_str("\n- ");
        message.push_str(p);
    }
    let mut context = serde_json::Map::new();
    context.insert("version".into(), version.into());
    context.insert("sha256".into(), sha256.into());
    raise(
        w,
        "agent",
        "config_rejected",
        CONFIG_SUBJECT,
        Severity::Warning,
        message,
        context,
    )
    .map(|_| ())
}

/// Central's config `version` was accepted: a rejection before it is over.
pub fn config_accepted(w: &mut WriteTx<'_>, version: i64) -> Result<(), StoreError> {
    resolve(
        w,
        "agent",
        "config_rejected",
        CONFIG_SUBJECT,
        format!("central config v{version} accepted"),
    )
    .map(|_| ())
}

/// Open `config_rolled_back`: central's config `version` was applied but
/// `why` (the devices that did not come back), so the agent went back.
pub fn config_rolled_back(
    w: &mut WriteTx<'_>,
    version: i64,
    back_to: &str,
    why: &str,
) -> Result<(), StoreError> {
    resolve(
        w,
        "agent",
        "config_rolled_back",
        CONFIG_SUBJECT,
        format!("superseded by the rollback of central config v{version}"),
    )?;
    let mut context = serde_json::Map::new();
    context.insert("version".into(), version.into());
    let mut message = format!(
        "central config v{version} rolled back to {back_to}: {why}; it will not be tried again, send a corrected version"
    );
    let budget = crate::event::bounds::MAX_TEXT_LEN - 8;
    if message.len() > budget {
        let mut end = budget;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
    raise(
        w,
        "agent",
        "config_rolled_back",
        CONFIG_SUBJECT,
        Severity::Critical,
        message,
        context,
    )
    .map(|_| ())
}

/// Central's config `version` passed its trial: an earlier rollback is over.
pub fn config_passed(w: &mut WriteTx<'_>, version: i64) -> Result<(), StoreError> {
    resolve(
        w,
        "agent",
        "config_rolled_back",
        CONFIG_SUBJECT,
        format!("central config v{version} passed its trial"),
    )
    .map(|_| ())
}

/// Projection: keep the alerts table in step with `alert` events.
pub fn apply(conn: &Connection, event: &Event) -> Result<(), StoreError> {
    let EventBody::Alert(a) = &event.body else {
        return Ok(());
    };
    let ms = event.ts.timestamp_millis();
    match a.state {
        AlertState::Open => {
            let severity = serde_json::to_value(a.severity)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default();
            conn.prepare_cached(
                "INSERT INTO alerts (code, subject, severity, message, context, opened_seq, opened_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (code, subject) WHERE resolved_seq IS NULL DO NOTHING",
            )
            .and_then(|mut st| {
                st.execute(params![
                    a.code,
                    a.subject,
                    severity,
                    a.message,
                    serde_json::Value::Object(a.context.clone()).to_string(),
                    event.seq,
                    ms
                ])
            })
            .ctx("opening an alert")?;
        }
        AlertState::Resolved => {
            conn.prepare_cached(
                "UPDATE alerts SET resolved_seq = ?3, resolved_ms = ?4
                 WHERE code = ?1 AND subject = ?2 AND resolved_seq IS NULL",
            )
            .and_then(|mut st| st.execute(params![a.code, a.subject, event.seq, ms]))
            .ctx("resolving an alert")?;
        }
    }
    Ok(())
}

/// Every open alert, oldest first.
pub fn open_alerts(conn: &Connection) -> Result<Vec<OpenAlert>, StoreError> {
    let mut st = conn
        .prepare_cached(
            "SELECT code, subject, severity, message, context, opened_seq, opened_ms
             FROM alerts WHERE resolved_seq IS NULL ORDER BY opened_seq",
        )
        .ctx("listing open alerts")?;
    let rows = st
        .query_map([], |r| {
            let context: String = r.get(4)?;
            Ok(OpenAlert {
                code: r.get(0)?,
                subject: r.get(1)?,
                severity: r.get(2)?,
                message: r.get(3)?,
                context: serde_json::from_str(&context).unwrap_or_default(),
                opened_seq: r.get(5)?,
                opened_at: crate::event::ts_from_millis(r.get(6)?),
            })
        })
        .ctx("listing open alerts")?;
    rows.collect::<Result<_, _>>().ctx("listing open alerts")
}
