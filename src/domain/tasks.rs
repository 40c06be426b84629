//! Staff tasks (issue 18): an open alert that needs a person becomes a
//! task, in the same transaction as the alert: `low_stock` a refill,
//! `label_stale` and `price_conflict` a relabel, `count_mismatch` a count,
//! `device_offline`, `label_offline` and `antenna_disconnected` a device
//! check. A task goes open -> taken (by whom) -> done or dismissed (with a
//! reason), each step a journaled `task_*` event; the `tasks` table is
//! their projection, so a rebuild from the journal gives the same tasks.
//!
//! The store checks what it can see: the alert resolving (the shelf
//! weighs enough again, the label confirmed, the device back) marks an
//! open or taken task done with `confirmed_by`, and confirms
//! (`task_verified`) one a person marked done. A person's done is looked
//! at again `[tasks] verify_after_s` later ([`check_due`]): the alert
//! still open then reopens the task.

pub mod actions;
#[cfg(test)]
mod tests;
pub mod verify;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::db::{SqlContext, StoreError};
use crate::domain::{alerts, stock};
use crate::event::{
    Alert, AlertState, Event, EventBody, NewEvent, Severity, TaskDone, TaskOpened, TaskVerified,
    now_millis,
};

/// What the projections need to open tasks, from the config.
#[derive(Debug, Clone)]
pub struct TaskRules {
    /// Device id -> its configured zone: a shelf's or device's task is there.
    pub zones: HashMap<String, String>,
    /// The RFID zone holding backroom stock (`[tasks] backroom_zone`).
    pub backroom_zone: String,
    /// Units an RFID count may be off the books before a count task opens.
    pub count_threshold: i64,
    /// (shelf device id, slot) -> the units the slot holds when full.
    pub capacities: HashMap<(String, u32), i64>,
}

impl Default for TaskRules {
    fn default() -> Self {
        TaskRules::new(&crate::config::TasksConfig::default(), &[])
    }
}

impl TaskRules {
    /// Rules from `[tasks]` and the devices' zones and slot capacities.
    pub fn new(
        config: &crate::config::TasksConfig,
        devices: &[crate::config::DeviceConfig],
    ) -> Self {
        TaskRules {
            zones: devices
                .iter()
                .filter_map(|d| Some((d.id.clone(), d.zone.clone()?)))
                .collect(),
            backroom_zone: config.backroom_zone.clone(),
            count_threshold: config.count_threshold,
            capacities: devices
                .iter()
                .flat_map(|d| {
                    d.slot_capacity
                        .iter()
                        .map(|(slot, units)| ((d.id.clone(), *slot), *units))
                })
                .collect(),
        }
    }
}

/// The task an alert code asks a person for, if any.
pub fn task_for(code: &str) -> Option<&'static str> {
    match code {
        "low_stock" => Some("refill"),
        "label_stale" | "price_conflict" => Some("relabel"),
        "count_mismatch" => Some("count"),
        "device_offline" | "label_offline" | "antenna_disconnected" => Some("check_device"),
        // Picked items of an expired or cancelled pickup order.
        crate::domain::pickup::RETURN_ALERT => Some("return_to_shelf"),
        _ => None,
    }
}

/// What the store saw when an alert of `code` about `subject` resolved:
/// the `confirmed_by` of the task it was for.
pub fn evidence(code: &str, subject: &str) -> &'static str {
    match code {
        // Shelf alerts are about `SKU@shelf/slot`; the others about a SKU.
        "low_stock" if subject.contains('@') => "shelf_weight",
        "low_stock" => "stock",
        "label_stale" | "price_conflict" => "label",
        "count_mismatch" => "count",
        crate::domain::pickup::RETURN_ALERT => "order_returned",
        _ => "device",
    }
}

/// Whether the store sees the problem behind an alert of `code` about
/// `subject` go away soon after it is fixed, so that an alert still open
/// at a person's `check_at` means the work was not done. Not so for the
/// books being low (filling the shelf from the backroom leaves on hand as
/// it is) or a price conflict (it clears on the SKU's next sale, whenever
/// that is): a done of those is not checked, only confirmed when the
/// alert does resolve.
pub fn verifiable(code: &str, subject: &str) -> bool {
    // A return to the shelf has no sensor: the person's done records it
    // on the order (`pickup::pick::returned`) and that resolves the alert.
    !matches!(evidence(code, subject), "stock" | "order_returned") && code != "price_conflict"
}

/// A task as the API and the staff page show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Task {
    pub task_id: String,
    /// `refill`, `relabel`, `count`, `check_device` or `return_to_shelf`.
    pub task: String,
    /// `open`, `taken`, `done` or `dismissed`.
    pub state: String,
    pub alert_code: String,
    pub subject: String,
    pub severity: Severity,
    pub message: String,
    pub zone: Option<String>,
    pub sku: Option<String>,
    pub suggested_qty: Option<i64>,
    pub backroom_qty: Option<i64>,
    pub shelf_units: Option<i64>,
    pub taken_by: Option<String>,
    pub done_by: Option<String>,
    pub confirmed_by: Option<String>,
    pub reason: Option<String>,
    #[serde(with = "crate::event::opt_ts_format")]
    pub check_at: Option<DateTime<Utc>>,
    pub reopened: i64,
    #[serde(with = "crate::event::ts_format")]
    pub opened_at: DateTime<Utc>,
    #[serde(with = "crate::event::ts_format")]
    pub updated_at: DateTime<Utc>,
}

/// Events caused by `event`: a task opened for an alert that needs a
/// person, a task done or verified when its alert resolves, and the
/// `count_mismatch` alert of an RFID count off the books.
pub fn derive(
    conn: &Connection,
    rules: &TaskRules,
    event: &Event,
) -> Result<Option<NewEvent>, StoreError> {
    match &event.body {
        EventBody::Alert(a) => {
            let Some(task) = task_for(&a.code) else {
                return Ok(None);
            };
            match a.state {
                AlertState::Open => opened(conn, rules, event, a, task).map(Some),
                AlertState::Resolved => resolved(conn, event, a),
            }
        }
        EventBody::Count(c) => {
            let subject = format!("{}@{}", c.sku, c.zone);
            let off = c.counted.saturating_sub(c.expected);
            if c.method == "rfid" && off.unsigned_abs() > rules.count_threshold.unsigned_abs() {
                let mut context = serde_json::Map::new();
                context.insert("sku".into(), c.sku.clone().into());
                context.insert("zone".into(), c.zone.clone().into());
                context.insert("counted".into(), c.counted.into());
                context.insert("expected".into(), c.expected.into());
                alerts::open_event(
                    conn,
                    &event.device,
                    "count_mismatch",
                    &subject,
                    Severity::Warning,
                    format!(
                        "{}: RFID counted {} in {} but the books say {}; count it by hand",
                        c.sku, c.counted, c.zone, c.expected
                    ),
                    context,
                )
            } else {
                // A person's count, or an RFID count that agrees, settles it.
                alerts::resolve_event(
                    conn,
                    &event.device,
                    "count_mismatch",
                    &subject,
                    format!("{}: counted again in {} ({})", c.sku, c.zone, c.method),
                )
            }
        }
        EventBody::TagMoved(t) if t.from_zone.as_deref() == Some(&rules.backroom_zone) => {
            match &t.sku {
                Some(sku) => refilled_from_backroom(conn, event, sku, &t.zone),
                None => Ok(None),
            }
        }
        _ => Ok(None),
    }
}

/// A tag of `sku` moved from the backroom into `zone`: the RFID zones saw
/// a refill. The newest refill task for the SKU there (or without a
/// zone) that is not closed is done, or a person's done is confirmed.
fn refilled_from_backroom(
    conn: &Connection,
    event: &Event,
    sku: &str,
    zone: &str,
) -> Result<Option<NewEvent>, StoreError> {
    let found = unfinished(
        conn,
        "task = 'refill' AND (zone IS NULL OR zone = ?2)
         AND (subject = ?1 OR substr(subject, 1, length(?1) + 1) = ?1 || '@')",
        [sku, zone],
    )?;
    Ok(found.map(|(task_id, state, taken_by)| {
        confirmation(event, task_id, &state, taken_by, "rfid_zone".into())
    }))
}

/// The newest task matching `condition` (over `?1`, `?2`) that the
/// store may still confirm: open, taken, or done by a person and not yet
/// confirmed. `(task_id, state, taken_by)`.
fn unfinished(
    conn: &Connection,
    condition: &str,
    values: [&str; 2],
) -> Result<Option<(String, String, Option<String>)>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT task_id, state, taken_by FROM tasks
         WHERE {condition}
           AND (state IN ('open', 'taken') OR (state = 'done' AND confirmed_by IS NULL))
         ORDER BY opened_seq DESC LIMIT 1"
    ))
    .and_then(|mut st| {
        st.query_row(values, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()
    })
    .ctx("finding a task the store may confirm")
}

/// The event that says the store saw a task done: `task_verified` for a
/// person's done, else `task_done` by whoever had taken it.
fn confirmation(
    event: &Event,
    task_id: String,
    state: &str,
    taken_by: Option<String>,
    confirmed_by: String,
) -> NewEvent {
    let body = if state == "done" {
        EventBody::TaskVerified(TaskVerified {
            task_id,
            confirmed_by,
        })
    } else {
        EventBody::TaskDone(TaskDone {
            task_id,
            by: taken_by,
            confirmed_by: Some(confirmed_by),
            check_at: None,
        })
    };
    NewEvent::new(now_millis(), event.device.clone(), body)
}

fn context_str<'a>(a: &'a Alert, key: &str) -> Option<&'a str> {
    a.context.get(key).and_then(serde_json::Value::as_str)
}

fn context_int(a: &Alert, key: &str) -> Option<i64> {
    a.context.get(key).and_then(serde_json::Value::as_i64)
}

/// The `task_opened` for an alert just opened.
fn opened(
    conn: &Connection,
    rules: &TaskRules,
    event: &Event,
    a: &Alert,
    task: &str,
) -> Result<NewEvent, StoreError> {
    let device_zone = |id: &str| rules.zones.get(id).cloned();
    let zone = match context_str(a, "zone") {
        Some(z) => Some(z.to_string()),
        None => context_str(a, "shelf")
            .or(context_str(a, "device"))
            .and_then(device_zone)
            // A device alert is about the device itself.
            .or_else(|| match task {
                "check_device" => device_zone(&a.subject),
                _ => None,
            }),
    };
    let sku = context_str(a, "sku").map(String::from);
    let mut opened = TaskOpened {
        task_id: format!("T-{}", event.seq),
        task: task.into(),
        alert_code: a.code.clone(),
        subject: a.subject.clone(),
        severity: a.severity,
        message: a.message.clone(),
        zone,
        sku: sku.clone(),
        suggested_qty: None,
        backroom_qty: None,
        shelf_units: None,
    };
    if let (Some(sku), "refill") = (&sku, task) {
        let units = match context_int(a, "units_est") {
            Some(u) => u,
            None => stock::on_hand(conn, sku)?,
        };
        let capacity = match (context_str(a, "shelf"), context_int(a, "slot")) {
            (Some(shelf), Some(slot)) => u32::try_from(slot)
                .ok()
                .and_then(|slot| rules.capacities.get(&(shelf.to_string(), slot)).copied()),
            _ => None,
        };
        let target = refill_target(conn, sku, capacity)?;
        opened.shelf_units = Some(units);
        opened.suggested_qty = target.map(|t| t.saturating_sub(units).max(1));
        opened.backroom_qty = backroom_units(conn, &rules.backroom_zone, sku)?;
        let place = match (context_str(a, "shelf"), context_int(a, "slot")) {
            (Some(shelf), Some(slot)) => format!(" on {shelf} slot {slot}"),
            _ => String::new(),
        };
        let bring = opened
            .suggested_qty
            .map(|n| format!(", bring {n}"))
            .unwrap_or_default();
        let backroom = opened
            .backroom_qty
            .map(|n| format!(" ({n} in the backroom)"))
            .unwrap_or_default();
        opened.message = format!("Refill {sku}{place}: about {units} left{bring}{backroom}");
    }
    Ok(NewEvent::new(
        now_millis(),
        event.device.clone(),
        EventBody::TaskOpened(opened),
    ))
}

/// How long a closed task (done and not waiting for its check, or
/// dismissed) stays in the `tasks` table after its last step.
pub const CLOSED_KEEP_DAYS: i64 = 30;

/// Forget tasks closed more than [`CLOSED_KEEP_DAYS`] ago (their events
/// went to central long since). Returns the rows removed.
pub fn forget_closed(conn: &Connection, now_ms: i64) -> Result<usize, StoreError> {
    let before = now_ms.saturating_sub(CLOSED_KEEP_DAYS * 86_400_000);
    conn.prepare_cached(
        "DELETE FROM tasks WHERE updated_ms < ?1
           AND (state = 'dismissed' OR (state = 'done' AND check_at_ms IS NULL)
                OR (state = 'done' AND confirmed_by IS NOT NULL))",
    )
    .and_then(|mut st| st.execute([before]))
    .ctx("forgetting closed tasks")
}

/// What a refill fills up to: the shelf slot's `capacity` or the price
/// book's `max_stock` (the smaller, when both are known: no more than
/// fits, no more than the book wants), else twice `min_stock`; `None`
/// when nothing is known.
pub fn refill_target(
    conn: &Connection,
    sku: &str,
    capacity: Option<i64>,
) -> Result<Option<i64>, StoreError> {
    let (min, max): (Option<i64>, Option<i64>) = conn
        .prepare_cached("SELECT min_stock, max_stock FROM catalog WHERE sku = ?1 AND removed = 0")
        .and_then(|mut st| {
            st.query_row([sku], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map(Option::unwrap_or_default)
        .ctx("reading a SKU's stock range")?;
    let full = match (capacity, max) {
        (Some(c), Some(m)) => Some(c.min(m)),
        (c, m) => c.or(m),
    };
    Ok(full.or(min.map(|m| m.saturating_mul(2))))
}

/// Units of `sku` in the RFID backroom zone, when RFID knows the zone at
/// all (some tag was ever seen there); `None` otherwise.
fn backroom_units(conn: &Connection, zone: &str, sku: &str) -> Result<Option<i64>, StoreError> {
    let known: bool = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM tags WHERE zone = ?1)")
        .and_then(|mut st| st.query_row([zone], |r| r.get(0)))
        .ctx("looking at the backroom zone")?;
    if !known {
        return Ok(None);
    }
    conn.prepare_cached("SELECT count(*) FROM tags WHERE zone = ?1 AND sku = ?2")
        .and_then(|mut st| st.query_row([zone, sku], |r| r.get(0)))
        .map(Some)
        .ctx("counting backroom tags")
}

/// The store saw an alert resolve: its task (not closed, or done and not
/// yet confirmed) is done, or confirmed.
fn resolved(conn: &Connection, event: &Event, a: &Alert) -> Result<Option<NewEvent>, StoreError> {
    let found = unfinished(
        conn,
        "alert_code = ?1 AND subject = ?2",
        [a.code.as_str(), a.subject.as_str()],
    )?;
    Ok(found.map(|(task_id, state, taken_by)| {
        let confirmed_by = evidence(&a.code, &a.subject).to_string();
        confirmation(event, task_id, &state, taken_by, confirmed_by)
    }))
}

/// Projection: keep the tasks table in step with `task_*` events.
pub fn apply(conn: &Connection, event: &Event) -> Result<(), StoreError> {
    let (seq, ms) = (event.seq, event.ts.timestamp_millis());
    let (sql, values): (&str, Vec<rusqlite::types::Value>) = match &event.body {
        EventBody::TaskOpened(t) => {
            let urgency = match t.severity {
                Severity::Critical => 2,
                Severity::Warning => 1,
                Severity::Info => 0,
            };
            conn.prepare_cached(
                "INSERT INTO tasks (task_id, task, alert_code, subject, urgency, opened, zone, state,
                   opened_seq, opened_ms, updated_seq, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'open', ?8, ?9, ?8, ?9)
                 ON CONFLICT (task_id) DO NOTHING",
            )
            .and_then(|mut st| {
                st.execute(params![
                    t.task_id,
                    t.task,
                    t.alert_code,
                    t.subject,
                    urgency,
                    event.body.data_json(),
                    t.zone,
                    seq,
                    ms
                ])
            })
            .ctx("opening a task")?;
            return Ok(());
        }
        EventBody::TaskTaken(t) => (
            "UPDATE tasks SET state = 'taken', taken_by = ?2, updated_seq = ?3, updated_ms = ?4 WHERE task_id = ?1",
            vec![t.task_id.clone().into(), t.by.clone().into()],
        ),
        EventBody::TaskDone(t) => (
            "UPDATE tasks SET state = 'done', done_by = ?2, updated_seq = ?3, updated_ms = ?4,
               confirmed_by = ?5, check_at_ms = ?6 WHERE task_id = ?1",
            vec![
                t.task_id.clone().into(),
                t.by.clone().into(),
                t.confirmed_by.clone().into(),
                t.check_at.map(|c| c.timestamp_millis()).into(),
            ],
        ),
        EventBody::TaskDismissed(t) => (
            "UPDATE tasks SET state = 'dismissed', done_by = ?2, updated_seq = ?3, updated_ms = ?4,
               reason = ?5 WHERE task_id = ?1",
            vec![
                t.task_id.clone().into(),
                t.by.clone().into(),
                t.reason.clone().into(),
            ],
        ),
        EventBody::TaskReopened(t) => (
            "UPDATE tasks SET state = 'open', taken_by = NULL, done_by = NULL, check_at_ms = NULL,
               updated_seq = ?3, updated_ms = ?4, reason = ?2, reopened = reopened + 1 WHERE task_id = ?1",
            vec![t.task_id.clone().into(), t.reason.clone().into()],
        ),
        EventBody::TaskVerified(t) => (
            "UPDATE tasks SET confirmed_by = ?2, updated_seq = ?3, updated_ms = ?4 WHERE task_id = ?1",
            vec![t.task_id.clone().into(), t.confirmed_by.clone().into()],
        ),
        _ => return Ok(()),
    };
    let mut values = values;
    values.insert(2, seq.into());
    values.insert(3, ms.into());
    conn.prepare_cached(sql)
        .and_then(|mut st| st.execute(rusqlite::params_from_iter(values)))
        .ctx("updating a task")?;
    Ok(())
}

const COLUMNS: &str = "task_id, task, state, alert_code, subject, opened, zone, taken_by, done_by,
    confirmed_by, reason, check_at_ms, reopened, opened_ms, updated_ms";

fn row_to_task(r: &rusqlite::Row<'_>) -> rusqlite::Result<Task> {
    let opened: String = r.get(5)?;
    let opened: Option<TaskOpened> =
        EventBody::from_parts("task_opened", &opened)
            .ok()
            .and_then(|b| match b {
                EventBody::TaskOpened(t) => Some(t),
                _ => None,
            });
    let check_at: Option<i64> = r.get(11)?;
    Ok(Task {
        task_id: r.get(0)?,
        task: r.get(1)?,
        state: r.get(2)?,
        alert_code: r.get(3)?,
        subject: r.get(4)?,
        severity: opened.as_ref().map_or(Severity::Warning, |o| o.severity),
        message: opened
            .as_ref()
            .map(|o| o.message.clone())
            .unwrap_or_default(),
        zone: r.get(6)?,
        sku: opened.as_ref().and_then(|o| o.sku.clone()),
        suggested_qty: opened.as_ref().and_then(|o| o.suggested_qty),
        backroom_qty: opened.as_ref().and_then(|o| o.backroom_qty),
        shelf_units: opened.as_ref().and_then(|o| o.shelf_units),
        taken_by: r.get(7)?,
        done_by: r.get(8)?,
        confirmed_by: r.get(9)?,
        reason: r.get(10)?,
        check_at: check_at.map(crate::event::ts_from_millis),
        reopened: r.get(12)?,
        opened_at: crate::event::ts_from_millis(r.get(13)?),
        updated_at: crate::event::ts_from_millis(r.get(14)?),
    })
}

/// One task by id.
pub fn get(conn: &Connection, task_id: &str) -> Result<Option<Task>, StoreError> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM tasks WHERE task_id = ?1"))
        .and_then(|mut st| st.query_row([task_id], row_to_task).optional())
        .ctx("reading a task")
}

/// Tasks, most urgent first and newest first within an urgency: only
/// open and taken ones when `open_only`, else every state (at most
/// `limit`). With a `zone`, that zone's tasks and those of no zone
/// (anyone may do them).
pub fn list(
    conn: &Connection,
    zone: Option<&str>,
    open_only: bool,
    limit: i64,
) -> Result<Vec<Task>, StoreError> {
    let mut st = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM tasks
             WHERE (?1 = 0 OR state IN ('open', 'taken'))
               AND (?2 IS NULL OR zone IS NULL OR zone = ?2)
             ORDER BY urgency DESC, opened_seq DESC LIMIT ?3"
        ))
        .ctx("listing tasks")?;
    let rows = st
        .query_map(params![open_only, zone, limit], row_to_task)
        .ctx("listing tasks")?;
    rows.collect::<Result<_, _>>().ctx("listing tasks")
}

/// Open and taken tasks per task (`refill`: 2), for the heartbeat.
pub fn open_counts(
    conn: &Connection,
) -> Result<std::collections::BTreeMap<String, i64>, StoreError> {
    let mut st = conn
        .prepare_cached(
            "SELECT task, count(*) FROM tasks WHERE state IN ('open', 'taken') GROUP BY task",
        )
        .ctx("counting open tasks")?;
    let rows = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .ctx("counting open tasks")?;
    rows.collect::<Result<_, _>>().ctx("counting open tasks")
}
