//! Tasks against the real writer and projections on a database on disk:
//! which alerts open which tasks where, what the store's evidence does to
//! them, the checks of a person's done, staff steps racing, and a rebuild
//! from the journal giving the same tasks.

use std::path::Path;

use chrono::{Duration, Utc};

use super::{Task, actions, get, list, verify};
use crate::config::{Config, Durability};
use crate::db::{self, StoreError, WriteTx, Writer, WriterThread};
use crate::domain::{Projections, alerts};
use crate::event::{Count, EventBody, NewEvent, Severity, TagTransition, now_millis};

/// A writer with the projections of a config whose shelf is in zone A1,
/// and whose RFID counts may be 3 units off.
fn store(dir: &Path) -> (Writer, WriterThread) {
    // The config only needs the profile's name to exist.
    let profiles: std::collections::BTreeSet<String> = ["loadcell-shelf-modbus".to_string()].into();
    let text = r#"store_id = "t"
[tasks]
count_threshold = 3
[[device]]
id = "shelf-1"
profile = "loadcell-shelf-modbus"
transport = "modbus-tcp"
address = "127.0.0.1:1502"
zone = "A1"
slots = { 0 = "SKU-1" }
"#;
    let config = Config::parse(text, Path::new("t.toml"), &profiles).unwrap();
    let conn = db::open_write(&dir.join("storegate.db"), Durability::Normal).unwrap();
    conn.execute(
        "INSERT INTO catalog (sku, name, min_stock, max_stock) VALUES ('SKU-1', 'x', 5, 12)",
        [],
    )
    .unwrap();
    Writer::spawn(conn, Box::new(Projections::new(&config))).unwrap()
}

fn tx<R: Send + 'static>(
    writer: &Writer,
    f: impl FnOnce(&mut WriteTx<'_>) -> Result<R, StoreError> + Send + 'static,
) -> R {
    writer.blocking_transact(f).unwrap()
}

fn all(writer: &Writer) -> Vec<Task> {
    tx(writer, |w| list(w.conn(), None, false, 100))
}

fn only(writer: &Writer, task: &str) -> Task {
    let found: Vec<Task> = all(writer).into_iter().filter(|t| t.task == task).collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found.into_iter().next().unwrap()
}

fn raise(writer: &Writer, code: &'static str, subject: &'static str, sku: Option<&'static str>) {
    tx(writer, move |w| {
        let mut context = serde_json::Map::new();
        if let Some(sku) = sku {
            context.insert("sku".into(), sku.into());
        }
        alerts::raise(
            w,
            "dev",
            code,
            subject,
            Severity::Warning,
            format!("{code} {subject}"),
            context,
        )
    });
}

fn resolve(writer: &Writer, code: &'static str, subject: &'static str) {
    tx(writer, move |w| {
        alerts::resolve(w, "dev", code, subject, "fixed".into())
    });
}

fn append(writer: &Writer, device: &'static str, body: EventBody) {
    tx(writer, move |w| {
        w.append(NewEvent::new(now_millis(), device, body))
    });
}

fn tag(epc: &str, zone: &str, from_zone: Option<&str>) -> TagTransition {
    TagTransition {
        epc: epc.into(),
        gtin: None,
        serial: None,
        sku: Some("SKU-1".into()),
        zone: zone.into(),
        from_zone: from_zone.map(String::from),
        reader: "r".into(),
        antenna: None,
        rssi_dbm: None,
        first_seen: now_millis(),
        last_seen: now_millis(),
    }
}

fn count(session: &str, method: &str, counted: i64) -> EventBody {
    EventBody::Count(Count {
        session_id: session.into(),
        zone: "B2".into(),
        sku: "SKU-1".into(),
        counted,
        expected: 10,
        method: method.into(),
    })
}

#[test]
fn alerts_open_tasks_where_they_belong_and_evidence_closes_them() {
    let dir = tempfile::tempdir().unwrap();
    let (writer, _thread) = store(dir.path());

    // A device offline: a check in its zone; back online: done.
    raise(&writer, "device_offline", "shelf-1", None);
    let check = only(&writer, "check_device");
    assert_eq!(
        (check.zone.as_deref(), check.state.as_str()),
        (Some("A1"), "open")
    );
    resolve(&writer, "device_offline", "shelf-1");
    let check = tx(&writer, move |w| get(w.conn(), &check.task_id)).unwrap();
    assert_eq!(check.state, "done");
    assert_eq!(check.confirmed_by.as_deref(), Some("device"));

    // Alerts nobody can act on open no task.
    raise(&writer, "antenna_quiet", "r/antenna-1", None);
    assert_eq!(all(&writer).len(), 1);

    // RFID counts: 3 off is within the threshold, 4 off is a count task
    // in the counted zone; a person's count settles it.
    append(&writer, "rfid", count("S-1", "rfid", 13));
    assert_eq!(all(&writer).len(), 1);
    append(&writer, "rfid", count("S-2", "rfid", 6));
    let counting = only(&writer, "count");
    assert_eq!(counting.zone.as_deref(), Some("B2"));
    assert_eq!(counting.subject, "SKU-1@B2");
    append(&writer, "api", count("S-3", "scan", 7));
    let counting = tx(&writer, move |w| get(w.conn(), &counting.task_id)).unwrap();
    assert_eq!(counting.confirmed_by.as_deref(), Some("count"));

    // Books low with two tags in the backroom: a refill up to max_stock
    // 12 saying so; a tag moving from the backroom to the floor confirms it.
    append(
        &writer,
        "r",
        EventBody::TagArrived(tag("E1", "backroom", None)),
    );
    append(
        &writer,
        "r",
        EventBody::TagArrived(tag("E2", "backroom", None)),
    );
    raise(&writer, "low_stock", "SKU-1", Some("SKU-1"));
    let refill = only(&writer, "refill");
    assert_eq!(refill.zone, None, "the books are no zone's");
    assert_eq!(refill.shelf_units, Some(0));
    assert_eq!(refill.suggested_qty, Some(12));
    assert_eq!(refill.backroom_qty, Some(2));
    let id = refill.task_id.clone();
    tx(&writer, move |w| actions::take(w, "api", &id, "anna")).unwrap();
    append(
        &writer,
        "r",
        EventBody::TagMoved(tag("E1", "salesfloor", Some("backroom"))),
    );
    let refill = tx(&writer, move |w| get(w.conn(), &refill.task_id)).unwrap();
    assert_eq!(refill.state, "done");
    assert_eq!(refill.done_by.as_deref(), Some("anna"));
    assert_eq!(refill.confirmed_by.as_deref(), Some("rfid_zone"));
}

#[test]
fn a_persons_done_is_checked_and_steps_race_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (writer, _thread) = store(dir.path());
    raise(&writer, "label_stale", "L-1", Some("SKU-1"));
    let relabel = only(&writer, "relabel");
    assert_eq!(relabel.sku.as_deref(), Some("SKU-1"));
    let id = relabel.task_id.clone();

    // Anna takes it; Ben cannot; unknown tasks are said to be unknown.
    let (i, j, k) = (id.clone(), id.clone(), id.clone());
    assert!(tx(&writer, move |w| actions::take(w, "api", &i, "anna")).is_ok());
    assert!(matches!(
        tx(&writer, move |w| actions::take(w, "api", &j, "ben")),
        Err(actions::Refusal::TakenBy { by, .. }) if by == "anna"
    ));
    assert!(matches!(
        tx(&writer, |w| actions::take(w, "api", "T-404", "ben")),
        Err(actions::Refusal::Unknown(_))
    ));

    // Done with the label still stale: at its check the task reopens.
    let past = Utc::now() - Duration::seconds(1);
    let done = tx(&writer, move |w| actions::done(w, "api", &k, None, past)).unwrap();
    assert_eq!(done.done_by.as_deref(), Some("anna"));
    assert_eq!(
        tx(&writer, |w| verify::check_due(
            w,
            Utc::now().timestamp_millis()
        )),
        1
    );
    let t = tx(&writer, {
        let id = id.clone();
        move |w| get(w.conn(), &id)
    })
    .unwrap();
    assert_eq!(
        (t.state.as_str(), t.reopened, t.taken_by),
        ("open", 1, None)
    );

    // Done again, and this time the label confirms before the check.
    let later = Utc::now() + Duration::seconds(600);
    let i = id.clone();
    tx(&writer, move |w| {
        actions::done(w, "api", &i, Some("ben".into()), later)
    })
    .unwrap();
    resolve(&writer, "label_stale", "L-1");
    let i = id.clone();
    let t = tx(&writer, move |w| get(w.conn(), &i)).unwrap();
    assert_eq!(t.state, "done");
    assert_eq!(t.confirmed_by.as_deref(), Some("label"));
    assert_eq!(tx(&writer, |w| verify::check_due(w, i64::MAX)), 0);
    let i = id.clone();
    assert!(matches!(
        tx(&writer, move |w| actions::dismiss(
            w,
            "api",
            &i,
            None,
            "no".into()
        )),
        Err(actions::Refusal::Closed { .. })
    ));

    // A price conflict clears on the next sale, whenever that is: its
    // relabel's done is not checked against the clock.
    raise(&writer, "price_conflict", "SKU-1", Some("SKU-1"));
    let conflict = all(&writer)
        .into_iter()
        .find(|t| t.alert_code == "price_conflict")
        .unwrap();
    let soon = Utc::now();
    let done = tx(&writer, move |w| {
        actions::done(w, "api", &conflict.task_id, Some("ben".into()), soon)
    })
    .unwrap();
    assert_eq!((done.state.as_str(), done.check_at), ("done", None));
    assert_eq!(tx(&writer, |w| verify::check_due(w, i64::MAX)), 0);

    // The journal is the truth: a rebuild gives the same tasks.
    let before = all(&writer);
    tx(&writer, |w| crate::domain::rebuild(w.conn()));
    assert_eq!(all(&writer), before);
}
