//! Price book, labels and price conflicts against a real database.

use chrono::{DateTime, Duration, Utc};
use storegate::config::{Config, Durability};
use storegate::db::{self, Writer, WriterThread};
use storegate::domain::{Projections, alerts, labels, prices};
use storegate::event::{Event, EventBody, LabelAck, LabelStatus, NewEvent, SaleLine};

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

struct Shop {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    writer: Writer,
    _thread: WriterThread,
}

impl Shop {
    fn new() -> Shop {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("storegate.db");
        let config = Config::parse(
            "store_id = \"t\"\n[pricing]\nconflict_grace_s = 120\n",
            std::path::Path::new("t.toml"),
            &Default::default(),
        )
        .unwrap();
        let conn = db::open_write(&path, Durability::Normal).unwrap();
        let (writer, thread) = Writer::spawn(conn, Box::new(Projections::new(&config))).unwrap();
        Shop {
            _dir: dir,
            path,
            writer,
            _thread: thread,
        }
    }

    async fn pull(&self, json: serde_json::Value, now: DateTime<Utc>) -> Vec<String> {
        let pull: prices::PricePull = serde_json::from_value(json).unwrap();
        self.writer
            .transact(move |w| prices::apply_pull(w.conn(), &pull, now, "de-DE"))
            .await
            .unwrap()
    }

    async fn sale(&self, receipt: &str, sku: &str, price: i64, at: DateTime<Utc>) {
        let body = EventBody::Sale(SaleLine {
            receipt_id: receipt.into(),
            line: 1,
            sku: sku.into(),
            gtin: None,
            qty: 1,
            unit_price_minor: price,
            currency: "EUR".into(),
            pos: "1".into(),
            member_hash: None,
        });
        self.writer
            .append(vec![NewEvent::new(at, "pos-1", body)])
            .await
            .unwrap();
    }

    async fn ack(&self, label: &str, version: i64, status: LabelStatus) {
        let body = EventBody::LabelAck(LabelAck {
            label_id: label.into(),
            sku: "SKU-1001".into(),
            price_version: version,
            status,
            battery_mv: Some(2900),
            rssi: Some(-60),
        });
        self.writer
            .append(vec![NewEvent::new(
                storegate::event::now_millis(),
                "esl",
                body,
            )])
            .await
            .unwrap();
    }

    async fn q<R: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> R + Send + 'static,
    ) -> R {
        self.writer
            .transact(move |w| Ok(f(w.conn())))
            .await
            .unwrap()
    }

    fn events(&self) -> Vec<Event> {
        let conn = db::open_read(&self.path).unwrap();
        db::journal::events_after(&conn, 0, 100_000).unwrap()
    }

    fn conflicts(&self) -> Vec<storegate::event::PriceConflict> {
        self.events()
            .into_iter()
            .filter_map(|e| match e.body {
                EventBody::PriceConflict(c) => Some(c),
                _ => None,
            })
            .collect()
    }
}

/// The journal-derived projections, as text rows (alert ids left out: a
/// rebuild numbers them anew).
fn projections(conn: &rusqlite::Connection) -> Vec<String> {
    let mut rows = Vec::new();
    for sql in [
        "SELECT code, subject, severity, message, context, opened_seq, opened_ms, resolved_seq, resolved_ms FROM alerts ORDER BY opened_seq",
        "SELECT label_id, sku, state, confirmed_version, confirmed_price_minor, confirmed_currency, confirmed_at_ms, battery_mv, rssi FROM labels ORDER BY label_id",
        "SELECT sku, on_hand FROM stock ORDER BY sku",
        "SELECT sku, session_id, zone, counted, expected, method, at_ms FROM last_counts ORDER BY sku",
        "SELECT epc, zone, reader, sku, first_seen_ms FROM tags ORDER BY epc",
    ] {
        let mut st = conn.prepare(sql).unwrap();
        let n = st.column_count();
        let mut q = st.query([]).unwrap();
        while let Some(r) = q.next().unwrap() {
            let cols: Vec<String> = (0..n)
                .map(|i| format!("{:?}", r.get_ref(i).unwrap()))
                .collect();
            rows.push(format!("{sql}: {}", cols.join("|")));
        }
    }
    rows
}

impl Shop {
    /// Rebuild from the journal and check it gives what the live
    /// projections hold.
    async fn assert_rebuild_is_identical(&self) {
        let (before, after) = self
            .writer
            .transact(|w| {
                let before = projections(w.conn());
                storegate::domain::rebuild(w.conn())?;
                Ok((before, projections(w.conn())))
            })
            .await
            .unwrap();
        assert!(!before.is_empty());
        assert_eq!(before, after);
    }
}

fn oat_milk(version: i64, price: i64, from: &str, promo: Option<(i64, &str)>) -> serde_json::Value {
    serde_json::json!({
        "version": version,
        "items": [{
            "sku": "SKU-1001", "gtins": ["04006381333931"], "name": "Oat milk 1L",
            "price_minor": price, "currency": "EUR", "effective_from": from,
            "promo": promo.map(|(p, until)| serde_json::json!({"price_minor": p, "until": until})),
            "unit_weight_g": 1040, "labels": ["0000021A4B3C5D6E"], "min_stock": 6
        }],
        "removed": []
    })
}

#[tokio::test]
async fn a_price_change_makes_a_pending_update_confirmed_by_its_ack() {
    let shop = Shop::new();
    let now = t("2026-11-22T08:00:00Z");
    let changed = shop
        .pull(oat_milk(57, 249, "2026-11-22T00:00:00.000Z", None), now)
        .await;
    assert_eq!(changed, vec!["SKU-1001"]);
    let due = shop.q(move |c| labels::due(c, now).unwrap()).await;
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].price_text, "2,49\u{a0}€");
    assert_eq!(due[0].version, 57);
    assert_eq!(due[0].name, "Oat milk 1L");
    shop.q(move |c| labels::mark_sent(c, "0000021A4B3C5D6E", 57, now).unwrap())
        .await;
    assert!(
        shop.q(move |c| labels::due(c, now).unwrap())
            .await
            .is_empty(),
        "sent, awaiting ack"
    );
    shop.ack("0000021A4B3C5D6E", 57, LabelStatus::Ok).await;
    let l = shop.q(|c| labels::labels_of(c, "SKU-1001").unwrap()).await;
    assert_eq!(l[0].state, "ok");
    assert_eq!(l[0].shows_price_minor, Some(249));

    // The same pull again changes nothing.
    assert!(
        shop.pull(oat_milk(57, 249, "2026-11-22T00:00:00.000Z", None), now)
            .await
            .is_empty()
    );

    // A new price: a new version; a late ack of the old one keeps the old
    // price of record and the label pending.
    shop.pull(oat_milk(58, 279, "2026-11-22T00:00:00.000Z", None), now)
        .await;
    shop.ack("0000021A4B3C5D6E", 57, LabelStatus::Ok).await;
    let l = shop.q(|c| labels::labels_of(c, "SKU-1001").unwrap()).await;
    assert_eq!(
        (
            l[0].state.as_str(),
            l[0].shows_price_minor,
            l[0].want_version
        ),
        ("pending", Some(249), Some(58))
    );
    shop.ack("0000021A4B3C5D6E", 58, LabelStatus::Ok).await;
    let l = shop.q(|c| labels::labels_of(c, "SKU-1001").unwrap()).await;
    assert_eq!(
        (l[0].state.as_str(), l[0].shows_price_minor),
        ("ok", Some(279))
    );
}

#[tokio::test]
async fn no_ack_fails_the_label_raises_label_stale_and_a_retry_resolves_it() {
    let shop = Shop::new();
    let now = t("2026-11-22T08:00:00Z");
    shop.pull(oat_milk(57, 249, "2026-11-22T00:00:00.000Z", None), now)
        .await;
    shop.q(move |c| labels::mark_sent(c, "0000021A4B3C5D6E", 57, now).unwrap())
        .await;
    let later = now + Duration::seconds(61);
    let timeouts = shop
        .q(move |c| labels::timed_out(c, later, 60, &|_| true).unwrap())
        .await;
    assert_eq!(timeouts.len(), 1);
    shop.writer.append(timeouts).await.unwrap();
    let open = shop.q(|c| alerts::open_alerts(c).unwrap()).await;
    assert_eq!(open.len(), 1);
    assert_eq!(
        (open[0].code.as_str(), open[0].subject.as_str()),
        ("label_stale", "0000021A4B3C5D6E")
    );
    let l = shop.q(|c| labels::labels_of(c, "SKU-1001").unwrap()).await;
    assert_eq!(l[0].state, "failed");
    // Not retried at once (backoff), but later.
    assert!(
        shop.q(move |c| labels::due(c, later).unwrap())
            .await
            .is_empty()
    );
    let retry_at = chrono::Utc::now() + Duration::hours(2);
    let due = shop.q(move |c| labels::due(c, retry_at).unwrap()).await;
    assert_eq!(due.len(), 1);
    shop.q(move |c| labels::mark_sent(c, "0000021A4B3C5D6E", 57, retry_at).unwrap())
        .await;
    shop.ack("0000021A4B3C5D6E", 57, LabelStatus::Ok).await;
    assert!(
        shop.q(|c| alerts::open_alerts(c).unwrap()).await.is_empty(),
        "label_stale resolved"
    );
    let kinds: Vec<String> = shop
        .events()
        .iter()
        .map(|e| e.body.kind().to_string())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| *k == "alert").count(),
        2,
        "{kinds:?}"
    );
    shop.assert_rebuild_is_identical().await;
}

#[tokio::test]
async fn promo_prices_and_their_end_at_midnight() {
    let shop = Shop::new();
    let now = t("2026-11-22T08:00:00Z");
    shop.pull(
        oat_milk(
            57,
            249,
            "2026-11-22T00:00:00.000Z",
            Some((199, "2026-11-29T00:00:00.000Z")),
        ),
        now,
    )
    .await;
    let eff = shop
        .q(move |c| prices::effective(c, "SKU-1001", now).unwrap().unwrap())
        .await;
    assert_eq!(eff.price_minor, 199);
    let boundary = shop
        .q(move |c| prices::next_boundary(c, now).unwrap())
        .await;
    assert_eq!(boundary, Some(t("2026-11-29T00:00:00Z")));
    // A sale at the promo price is no conflict.
    shop.sale("R-1", "SKU-1001", 199, now).await;
    assert!(shop.conflicts().is_empty());
    // At midnight the promo ends: a new label version with the regular price.
    let midnight = t("2026-11-29T00:00:00Z");
    let changed = shop
        .q(move |c| prices::refresh_all(c, midnight, "de-DE").unwrap())
        .await;
    assert_eq!(changed, vec!["SKU-1001"]);
    let due = shop.q(move |c| labels::due(c, midnight).unwrap()).await;
    assert_eq!((due[0].price_minor, due[0].version), (249, 58));
    assert!(due[0].promo.is_none());
}

#[tokio::test]
async fn conflicts_plain_grace_window_and_unconfirmed_label() {
    let shop = Shop::new();
    let t0 = t("2026-11-22T08:00:00Z");
    shop.pull(oat_milk(57, 249, "2026-11-22T00:00:00.000Z", None), t0)
        .await;
    shop.q(move |c| labels::mark_sent(c, "0000021A4B3C5D6E", 57, t0).unwrap())
        .await;
    shop.ack("0000021A4B3C5D6E", 57, LabelStatus::Ok).await;

    // Plain mismatch: the till charges 259 for a 2,49 article.
    shop.sale("R-1", "SKU-1001", 259, t0 + Duration::minutes(1))
        .await;
    let c = shop.conflicts();
    assert_eq!(c.len(), 1);
    assert_eq!(
        (
            c[0].pos_price_minor,
            c[0].shelf_price_minor,
            c[0].label_id.as_deref()
        ),
        (259, 249, None)
    );
    let open = shop.q(|c| alerts::open_alerts(c).unwrap()).await;
    assert_eq!(
        open.iter().filter(|a| a.code == "price_conflict").count(),
        1
    );
    // The labels are re-pushed at once, as a new version: its confirmation
    // is a new fact, not taken for a redelivery of the first one.
    let l = shop.q(|c| labels::labels_of(c, "SKU-1001").unwrap()).await;
    assert_eq!(l[0].state, "pending", "labels re-pushed at once");
    let repushed = l[0].want_version.unwrap();
    assert!(repushed > 57);
    let due = shop.q(move |c| labels::due(c, t0).unwrap()).await;
    assert_eq!(
        (due.len(), due[0].version, due[0].price_minor),
        (1, repushed, 249)
    );
    shop.q(move |c| labels::mark_sent(c, "0000021A4B3C5D6E", repushed, t0).unwrap())
        .await;
    shop.ack("0000021A4B3C5D6E", repushed, LabelStatus::Ok)
        .await;
    let l = shop.q(|c| labels::labels_of(c, "SKU-1001").unwrap()).await;
    assert_eq!(
        (l[0].state.as_str(), l[0].shows_price_minor),
        ("ok", Some(249))
    );
    // A right sale resolves the alert.
    shop.sale("R-2", "SKU-1001", 249, t0 + Duration::minutes(2))
        .await;
    assert!(
        shop.q(|c| alerts::open_alerts(c).unwrap())
            .await
            .iter()
            .all(|a| a.code != "price_conflict")
    );

    // Price change at t1: the till may still charge the old price, and the
    // label may still show it, for the grace window.
    let t1 = t("2026-11-22T10:00:00Z");
    shop.pull(oat_milk(58, 279, "2026-11-22T00:00:00.000Z", None), t1)
        .await;
    shop.sale("R-3", "SKU-1001", 249, t1 + Duration::seconds(30))
        .await;
    shop.sale("R-4", "SKU-1001", 279, t1 + Duration::seconds(40))
        .await;
    assert_eq!(
        shop.conflicts().len(),
        1,
        "no new conflict inside the grace window"
    );

    // After the grace window the label still has not confirmed 2,79: the
    // till is right, the label is wrong.
    shop.sale("R-5", "SKU-1001", 279, t1 + Duration::seconds(600))
        .await;
    let c = shop.conflicts();
    assert_eq!(c.len(), 2);
    assert_eq!(
        (
            c[1].pos_price_minor,
            c[1].shelf_price_minor,
            c[1].label_id.as_deref()
        ),
        (279, 249, Some("0000021A4B3C5D6E"))
    );
    shop.assert_rebuild_is_identical().await;
}
