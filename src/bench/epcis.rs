//! `storegate bench epcis`: how fast the journal becomes an EPCIS 2.0
//! document (`storegate export --format epcis`), beside the physical limit
//! measured in the same run: the same journal rows read from SQLite and
//! written as JSON as they are (the NDJSON export).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use chrono::Utc;

use super::fill_journal_with;
use crate::config::EpcisConfig;
use crate::db::{self, StoreError, journal};
use crate::epcis::{Setup, document};
use crate::event::{Count, EventBody, NewEvent, Reading, StockReceipt, TagTransition, now_millis};

/// SKUs of the bench's catalog, each with a GTIN.
const SKUS: usize = 500;

/// Figures of `storegate bench epcis`.
#[derive(Debug, Clone)]
pub struct EpcisFigures {
    /// Journal events read per run.
    pub events: usize,
    /// ObjectEvents in the document.
    pub mapped: usize,
    /// Journal events per second into the EPCIS document, one per round.
    pub epcis_per_s: Vec<f64>,
    /// Journal events per second read and written as JSON as they are.
    pub raw_per_s: Vec<f64>,
    /// Bytes of the EPCIS document and of the NDJSON.
    pub epcis_bytes: u64,
    pub raw_bytes: u64,
}

/// A store's mix: mostly RFID transitions, then sales, readings, counts
/// and deliveries, and an alert now and then (which EPCIS leaves out).
fn mixed_event(i: usize) -> NewEvent {
    let now = now_millis();
    let sku = format!("SKU-{}", 1000 + i % SKUS);
    let tag = |from_zone: Option<&str>| TagTransition {
        // SGTIN-96 of GTIN 80614141123458 (TDS example), serial i.
        epc: format!("3074257BF7194E4{:09X}", i as u64 & 0x3F_FFFF_FFFF),
        gtin: None,
        serial: None,
        sku: None,
        zone: "salesfloor".into(),
        from_zone: from_zone.map(str::to_string),
        reader: "door-reader".into(),
        antenna: Some(1),
        rssi_dbm: Some(-55),
        first_seen: now,
        last_seen: now,
    };
    let body = match i % 20 {
        0 | 10 => super::sample_sale(format!("R-{i}"), sku),
        1 => EventBody::Reading(Reading {
            name: "temperature".into(),
            value: 4.5,
            unit: "C".into(),
        }),
        2 => EventBody::Count(Count {
            session_id: format!("C-{i}"),
            zone: "salesfloor".into(),
            sku,
            counted: 12,
            expected: 14,
            method: "rfid".into(),
        }),
        3 => EventBody::Receipt(StockReceipt {
            delivery_id: format!("D-{i}"),
            sku,
            qty: 24,
        }),
        4 => EventBody::TagMoved(tag(Some("backroom"))),
        5 => EventBody::TagDeparted(tag(None)),
        6 => EventBody::Adjustment(crate::event::Adjustment {
            sku,
            delta: -1,
            reason: "damage".into(),
            by: None,
        }),
        _ => EventBody::TagArrived(tag(None)),
    };
    NewEvent::new(now, "bench", body)
}

/// Fill a journal of `events` and time both exports `rounds` times each,
/// taking turns.
pub async fn run(dir: &Path, events: usize, rounds: usize) -> anyhow::Result<EpcisFigures> {
    std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let path = dir.join("bench-epcis.db");
    let (writer, thread) = fill_journal_with(&path, events, mixed_event).await?;
    writer
        .transact(|w| {
            for i in 0..SKUS {
                let body = format!("{:012}", 4_006_381_000_000u64 + i as u64);
                let check = crate::domain::sgtin::gtin_check_digit(&body).unwrap_or(0);
                w.conn()
                    .execute(
                        "INSERT INTO gtins (gtin, sku) VALUES (?1, ?2)",
                        rusqlite::params![format!("0{body}{check}"), format!("SKU-{}", 1000 + i)],
                    )
                    .map_err(|source| StoreError::Sqlite {
                        context: "adding the bench's catalog",
                        source,
                    })?;
            }
            Ok(())
        })
        .await?;
    drop(writer);
    tokio::task::spawn_blocking(move || thread.join())
        .await
        .ok();

    let setup = Setup::new(
        "bench",
        &EpcisConfig {
            gln: "0614141000005".into(),
            company_prefix_digits: 7,
            zones: BTreeMap::from([("salesfloor".into(), "1".into())]),
        },
        BTreeMap::from([("bench".into(), "chiller".into())]),
    );
    tokio::task::spawn_blocking(move || measure(&path, &setup, events, rounds)).await?
}

fn measure(
    path: &Path,
    setup: &Setup,
    events: usize,
    rounds: usize,
) -> anyhow::Result<EpcisFigures> {
    let conn = db::open_read(path)?;
    let mut figures = EpcisFigures {
        events,
        mapped: 0,
        epcis_per_s: Vec::new(),
        raw_per_s: Vec::new(),
        epcis_bytes: 0,
        raw_bytes: 0,
    };
    for _ in 0..rounds {
        let mut out = Counted::default();
        let started = Instant::now();
        let done = document::write_export(&conn, setup, 0, Utc::now(), &mut out)?;
        figures
            .epcis_per_s
            .push(events as f64 / started.elapsed().as_secs_f64());
        figures.mapped = done.mapped;
        figures.epcis_bytes = out.0;

        let mut out = Counted::default();
        let started = Instant::now();
        let mut after = 0;
        loop {
            let batch = journal::events_after(&conn, after, 10_000)?;
            let Some(last) = batch.last() else { break };
            after = last.seq;
            for e in &batch {
                serde_json::to_writer(&mut out, e)?;
                out.write_all(b"\n")?;
            }
        }
        figures
            .raw_per_s
            .push(events as f64 / started.elapsed().as_secs_f64());
        figures.raw_bytes = out.0;
    }
    Ok(figures)
}

/// A sink that counts what is written to it.
#[derive(Default)]
struct Counted(u64);

impl Write for Counted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
