//! `storegate bench tags`: the peak resident memory of a real
//! `storegate run` (a child process) while a burst of distinct tags
//! arrives as fast as the broker delivers it, optionally with many tags
//! already known (in the `tags` table at start, so loaded into the tag
//! table). The broker and the publisher live in the bench process, so the
//! figure is the agent's alone. Beside it, in the same run: the agent's
//! resident memory before the burst and the bytes the tag set needs raw.

use std::path::Path;
use std::time::{Duration, Instant};

use rumqttc::QoS;
use rusqlite::params;

use super::rss::{Agent, frames_ok, peak_rss_kib, publisher, rss_kib};

/// Readers the burst is spread over (two zones).
const DEVICES: usize = 4;

/// How long an agent runs idle before its memory is read: its first
/// health flush and the API's start are behind it.
const SETTLE: Duration = Duration::from_secs(1);

/// What a tag needs at the least: its 96-bit EPC and when it was first and
/// last seen (two u32 seconds).
pub const RAW_BYTES_PER_TAG: u64 = 12 + 4 + 4;

/// The figures of one run.
#[derive(Debug, Clone)]
pub struct TagsFigures {
    /// Distinct tags in the burst.
    pub tags: usize,
    /// Tags in the database when the agent started.
    pub known: usize,
    /// Resident memory of the same agent on an empty database, idle.
    pub empty_kib: u64,
    /// Resident memory before the burst (devices up, known tags loaded).
    pub idle_kib: u64,
    /// The high-water mark before the burst (start-up and loading).
    pub idle_peak_kib: u64,
    /// The high-water mark at the end: the figure of the bench.
    pub peak_kib: u64,
    pub final_kib: u64,
    /// From the first publish to the last tag in the `tags` table.
    pub burst: Duration,
    /// Rows in the `tags` table at the end.
    pub in_table: u64,
}

impl TagsFigures {
    /// The bytes the tag set (known and burst) needs raw.
    pub fn raw_bytes(&self) -> u64 {
        self.tags.max(self.known) as u64 * RAW_BYTES_PER_TAG
    }
}

/// An SGTIN-96 EPC, distinct for each `i` below 2^38 (the serial number).
fn epc(i: usize) -> String {
    format!("3074257BF7194E{:010X}", (1u64 << 38) | i as u64)
}

/// Put `known` tags into the database the agent will open, as a store
/// whose stock was read before the restart: the burst's first tags.
fn seed_known(db: &Path, known: usize) -> Result<(), Box<dyn std::error::Error>> {
    let mut conn = crate::db::open_write(db, crate::config::Durability::Normal)?;
    let tx = conn.transaction()?;
    {
        let mut st = tx.prepare(
            "INSERT INTO tags (epc, zone, reader, gtin, serial, sku, first_seen_ms, last_seen_ms, reads, best_rssi)
             VALUES (?1, ?2, ?3, '80614141123458', ?4, NULL, ?5, ?5, 3, -55)",
        )?;
        let now = crate::event::now_millis().timestamp_millis();
        for i in 0..known {
            let d = i % DEVICES;
            st.execute(params![
                epc(i),
                format!("zone-{}", d % 2),
                format!("reader-{d}"),
                (i as i64).to_string(),
                now
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

fn tag_rows(db: &Path) -> u64 {
    crate::db::open_read(db)
        .and_then(|c| {
            c.query_row("SELECT count(*) FROM tags", [], |r| r.get::<_, i64>(0))
                .map_err(|e| crate::db::StoreError::Sqlite {
                    context: "counting tags",
                    source: e,
                })
        })
        .map_or(0, |n| n.max(0) as u64)
}

/// Run the bench: `tags` distinct tags in a burst, `known` in the
/// database at start: the burst's first `known` tags are read again (as
/// a store's readers read its stock after a restart), the rest arrive.
pub async fn run(
    dir: &Path,
    tags: usize,
    known: usize,
) -> Result<TagsFigures, Box<dyn std::error::Error>> {
    let data = dir.join("bench-tags");
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data)?;
    let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    crate::devices::broker::start_embedded(addr)?;
    let mut config = format!(
        "store_id = \"bench\"\ndata_dir = {data:?}\n[api]\nlisten = \"127.0.0.1:0\"\n[mqtt]\nbroker = \"mqtt://{addr}\"\nclient_id = \"bench-tags-agent\"\n"
    );
    for d in 0..DEVICES {
        config.push_str(&format!(
            "[[device]]\nid = \"reader-{d}\"\nprofile = \"zebra-fx-iot-connector\"\ntransport = \"mqtt\"\ntopic = \"bench/tags/{d}\"\nzone = \"zone-{}\"\n",
            d % 2
        ));
    }
    // The floor: the same agent with no tag known, idle.
    let empty_kib = {
        let mut agent = Agent::start(&data, &config, DEVICES).await?;
        tokio::time::sleep(SETTLE).await;
        let kib = rss_kib(agent.pid).unwrap_or(0);
        agent.stop();
        kib
    };
    if known > 0 {
        seed_known(&data.join("storegate.db"), known)?;
    }
    let mut agent = Agent::start(&data, &config, DEVICES).await?;
    let (pid, db) = (agent.pid, agent.db.clone());
    tokio::time::sleep(SETTLE).await;
    let idle_kib = rss_kib(pid).unwrap_or(0);
    let idle_peak_kib = peak_rss_kib(pid).unwrap_or(0);

    let client = publisher("bench-tags-publisher", addr);
    let started = Instant::now();
    for i in 0..tags {
        let d = i % DEVICES;
        let payload = format!(
            r#"{{"data":{{"idHex":"{}","antenna":1,"peakRssi":-55}},"timestamp":"2026-11-22T10:15:30.123Z","type":"SIMPLE"}}"#,
            epc(i)
        );
        client
            .publish(format!("bench/tags/{d}"), QoS::AtLeastOnce, false, payload)
            .await?;
    }
    let want = tags.max(known) as u64;
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut in_table = 0;
    while Instant::now() < deadline {
        in_table = tag_rows(&db);
        if in_table >= want && frames_ok(&db).1 >= tags as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let burst = started.elapsed();
    let final_kib = rss_kib(pid).unwrap_or(0);
    let peak_kib = peak_rss_kib(pid).unwrap_or(0);
    agent.stop();
    if in_table < want {
        return Err(format!(
            "only {in_table} of {want} tags reached the tags table within 300 s (frames taken: {})",
            frames_ok(&db).1
        )
        .into());
    }
    Ok(TagsFigures {
        tags,
        known,
        empty_kib,
        idle_kib,
        idle_peak_kib,
        peak_kib,
        final_kib,
        burst,
        in_table,
    })
}
