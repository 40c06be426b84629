//! `storegate bench offline-disk`: how much disk the store needs to ride
//! out a long central outage. Days of RFID traffic are pushed through the
//! real ingest path (tag table, transitions, journal) and the daemon's tag
//! housekeeping on a simulated clock, with no central: nothing is
//! acknowledged, so nothing may be trimmed, and everything stays on disk.
//!
//! The floor model (printed with the figures): `tags` tagged items on the
//! floor at any time, split over two zones; `rate` reads per second, each
//! of a random item in its zone; every hour `turnover` of the items leave
//! (sold) and as many new ones arrive (restocked); every hour 1% of the
//! items move zone (backroom to salesfloor).

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::fresh_db;
use crate::codecs::{Decoded, TagRead};
use crate::config::Durability;
use crate::db::{StoreError, Writer, journal};
use crate::devices::ingest::{Ingest, Source};
use crate::domain::Projections;
use crate::domain::rfid::TagTracker;
use crate::domain::sgtin::encode_sgtin96;
use crate::health::HealthBoard;

/// How often the simulated clock runs the tag housekeeping. The daemon
/// runs it every 5 s of real time; once a simulated minute keeps the
/// bench fast and changes only when, within that minute, a departure is
/// journaled, not how many bytes it takes.
const SWEEP_EVERY_S: i64 = 60;
const ZONES: [&str; 2] = ["salesfloor", "backroom"];

/// Options of `storegate bench offline-disk`.
#[derive(Debug, Clone, clap::Args)]
pub struct OfflineDiskParams {
    /// Days offline (simulated clock).
    #[arg(long, default_value_t = 4.0)]
    pub days: f64,
    /// Tag reads per second.
    #[arg(long, default_value_t = 200)]
    pub rate: u32,
    /// Tagged items on the floor at any time.
    #[arg(long, default_value_t = 5000)]
    pub tags: usize,
    /// Share of the items sold and restocked every hour (0.10 = 10%).
    #[arg(long, default_value_t = 0.10)]
    pub turnover: f64,
}

#[derive(Debug, Clone)]
pub struct OfflineDiskFigures {
    pub reads: u64,
    pub simulated_s: i64,
    pub events: i64,
    pub tag_rows: i64,
    /// Database + WAL + shared memory files, as they are on disk.
    pub disk_bytes: u64,
    /// The same after a checkpoint truncated the WAL.
    pub disk_after_checkpoint_bytes: u64,
    pub wall_s: f64,
}

/// One tagged item on the floor.
struct Item {
    epc: String,
    zone: usize,
}

fn new_item(serial: u64, rng: &mut StdRng) -> Item {
    // 500 products, each item an SGTIN-96 with its own serial.
    let first13 = format!("0{:012}", 400_638_100_000u64 + serial % 500);
    let check = crate::domain::sgtin::gtin_check_digit(&first13).unwrap_or(0);
    let epc = encode_sgtin96(&format!("{first13}{check}"), 5, 1, serial)
        .unwrap_or_else(|_| format!("E200{serial:020X}"));
    Item {
        epc,
        zone: usize::from(rng.random_bool(0.3)),
    }
}

fn file_size(path: &Path, suffix: &str) -> u64 {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    std::fs::metadata(p).map_or(0, |m| m.len())
}

fn disk_bytes(db: &Path) -> u64 {
    ["", "-wal", "-shm"].iter().map(|s| file_size(db, s)).sum()
}

pub async fn offline_disk(
    dir: &Path,
    p: &OfflineDiskParams,
) -> Result<OfflineDiskFigures, StoreError> {
    let db_path = dir.join("offline.db");
    // `normal` only spares the fsyncs; the bytes on disk are the same.
    let conn = fresh_db(&db_path, Durability::Normal)?;
    let member_key = crate::domain::privacy::member_key(&conn)?;
    let (writer, thread) = Writer::spawn(conn, Box::new(Projections::default()))?;
    let tags = Arc::new(Mutex::new(TagTracker::new(5000, 600)));
    let start: DateTime<Utc> = DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default();
    // Reads are received on the simulated clock.
    let clock_ms = Arc::new(AtomicI64::new(start.timestamp_millis()));
    let ingest =
        Ingest::new(writer.clone(), HealthBoard::default(), tags, member_key).with_clock({
            let clock_ms = clock_ms.clone();
            Arc::new(move || crate::event::ts_from_millis(clock_ms.load(Ordering::Relaxed)))
        });
    let sources: Vec<Source> = ZONES
        .iter()
        .map(|z| Source {
            device: format!("reader-{z}"),
            zone: (*z).to_string(),
        })
        .collect();

    let mut rng = StdRng::seed_from_u64(42);
    let mut serial = 0u64;
    let mut floor: Vec<Item> = (0..p.tags)
        .map(|_| {
            serial += 1;
            new_item(serial, &mut rng)
        })
        .collect();
    let seconds = (p.days * 86_400.0) as i64;
    let replaced_per_hour = (p.tags as f64 * p.turnover).round() as usize;
    let moved_per_hour = p.tags / 100;
    let started = Instant::now();
    let mut reads = 0u64;

    for s in 0..seconds {
        let now = start + Duration::seconds(s);
        clock_ms.store(now.timestamp_millis(), Ordering::Relaxed);
        // Spread the hourly turnover and moves over the hour's minutes.
        if s % 60 == 0 && !floor.is_empty() {
            for _ in 0..replaced_per_hour / 60
                + usize::from((s / 60) % 60 < (replaced_per_hour % 60) as i64)
            {
                let i = rng.random_range(0..floor.len());
                serial += 1;
                floor[i] = new_item(serial, &mut rng);
            }
            for _ in
                0..moved_per_hour / 60 + usize::from((s / 60) % 60 < (moved_per_hour % 60) as i64)
            {
                let i = rng.random_range(0..floor.len());
                floor[i].zone ^= 1;
            }
        }
        let mut per_zone: [Vec<TagRead>; 2] = [Vec::new(), Vec::new()];
        for k in 0..p.rate {
            let item = &floor[rng.random_range(0..floor.len())];
            per_zone[item.zone].push(TagRead {
                epc: item.epc.clone(),
                antenna: Some(1),
                rssi_dbm: Some(-55),
                ts: now + Duration::milliseconds(i64::from(k) * 1000 / i64::from(p.rate.max(1))),
            });
        }
        reads += u64::from(p.rate);
        for (zone, zone_reads) in per_zone.into_iter().enumerate() {
            if !zone_reads.is_empty() {
                ingest
                    .deliver(&sources[zone], vec![Decoded::TagReads(zone_reads)])
                    .await?;
            }
        }
        if s % SWEEP_EVERY_S == 0 {
            ingest.sweep_tags().await?;
        }
    }
    clock_ms.store(
        (start + Duration::seconds(seconds)).timestamp_millis(),
        Ordering::Relaxed,
    );
    ingest.sweep_tags().await?;
    let wall_s = started.elapsed().as_secs_f64();

    let (events, tag_rows) = writer
        .transact(|w| {
            let head = journal::head(w.conn())?;
            let rows: i64 = w
                .conn()
                .query_row("SELECT COUNT(*) FROM tags", [], |r| r.get(0))
                .map_err(|source| StoreError::Sqlite {
                    context: "counting tags",
                    source,
                })?;
            Ok((head, rows))
        })
        .await?;
    drop(ingest);
    drop(writer);
    thread.join();
    let disk = disk_bytes(&db_path);
    crate::db::open_write(&db_path, Durability::Normal)?
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .map_err(|source| StoreError::Sqlite {
            context: "checkpointing",
            source,
        })?;
    let after = disk_bytes(&db_path);
    Ok(OfflineDiskFigures {
        reads,
        simulated_s: seconds,
        events,
        tag_rows,
        disk_bytes: disk,
        disk_after_checkpoint_bytes: after,
        wall_s,
    })
}
