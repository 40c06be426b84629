//! `storegate bench ...`: figures measured on this machine, printed, never
//! asserted by tests. Each benchmark compares against the physical limit
//! measured in the same run where one exists.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use rusqlite::params;

use crate::config::Durability;
use crate::db::{self, StoreError, Writer, writer::NoProjections};
use crate::event::{EventBody, NewEvent, SaleLine, TagTransition};

pub mod backlog;
pub mod cli;
pub mod epcis;
pub mod labels;
pub mod mqtt;
pub mod offline;
pub mod rss;
pub mod tags;
pub mod uplink;

/// Options of `storegate bench journal`.
#[derive(Debug, Clone, clap::Args)]
pub struct JournalBench {
    /// Directory for the scratch databases (use the production filesystem).
    #[arg(long, default_value = "./bench-data")]
    pub dir: PathBuf,
    #[arg(long, default_value_t = 200_000)]
    pub events: usize,
    /// Concurrent producers (devices with messages in flight).
    #[arg(long, default_value_t = 512)]
    pub producers: usize,
    #[arg(long, default_value_t = 5)]
    pub latency_seconds: u64,
    /// `durability = "full"` (fsync each commit group) or `"normal"`.
    #[arg(long, value_enum, default_value_t = Durability::Full)]
    pub durability: Durability,
    /// Events per submitted job (1: every event its own job, the worst
    /// case; adapters submit a whole message or poll per job).
    #[arg(long, default_value_t = 1)]
    pub per_job: usize,
}

#[derive(Debug, Clone)]
pub struct JournalFigures {
    pub ingest_per_s: f64,
    pub raw_per_s: f64,
    pub groups: u64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_samples: usize,
}

impl JournalFigures {
    pub fn ratio(&self) -> f64 {
        self.ingest_per_s / self.raw_per_s
    }
}

/// One till line of one unit at 2.49 EUR: the sale every bench uses.
pub fn sample_sale(receipt_id: String, sku: String) -> EventBody {
    EventBody::Sale(SaleLine {
        receipt_id,
        line: 1,
        sku,
        gtin: None,
        qty: 1,
        unit_price_minor: 249,
        currency: "EUR".into(),
        pos: "1".into(),
        member_hash: None,
    })
}

/// A realistic mix: mostly RFID transitions, every tenth event a sale line
/// (which carries a natural key and so costs a second index insert).
pub fn sample_event(i: usize) -> NewEvent {
    let now = crate::event::now_millis();
    let body = if i % 10 == 0 {
        sample_sale(format!("R-{}", i / 10), format!("SKU-{}", 1000 + i % 500))
    } else {
        EventBody::TagArrived(TagTransition {
            epc: format!("30742{:019X}", i),
            gtin: Some("80614141123458".into()),
            serial: Some(i.to_string()),
            sku: Some(format!("SKU-{}", 1000 + i % 500)),
            zone: "salesfloor".into(),
            from_zone: None,
            reader: "door-reader".into(),
            antenna: Some(1),
            rssi_dbm: Some(-55),
            first_seen: now,
            last_seen: now,
        })
    };
    NewEvent::new(now, "bench", body)
}

pub async fn journal(opts: &JournalBench) -> Result<JournalFigures, StoreError> {
    std::fs::create_dir_all(&opts.dir).map_err(|source| StoreError::CreateDir {
        path: opts.dir.clone(),
        source,
    })?;
    let raw_per_s = raw_insert_rate(&opts.dir.join("bench-raw.db"), opts.events, opts.durability)?;
    let (ingest_per_s, groups) = ingest_rate(&opts.dir.join("bench-ingest.db"), opts).await?;
    let (p50, p99, samples) =
        latency_at_fixed_rate(&opts.dir.join("bench-latency.db"), opts).await?;
    Ok(JournalFigures {
        ingest_per_s,
        raw_per_s,
        groups,
        latency_p50_ms: p50,
        latency_p99_ms: p99,
        latency_samples: samples,
    })
}

fn fresh_db(path: &Path, durability: Durability) -> Result<rusqlite::Connection, StoreError> {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    db::open_write(path, durability)
}

/// The physical limit: the same rows into the same schema with plain
/// batched rusqlite inserts, 1024 rows per fsynced transaction.
fn raw_insert_rate(path: &Path, n: usize, durability: Durability) -> Result<f64, StoreError> {
    use db::SqlContext;
    let conn = fresh_db(path, durability)?;
    let rows: Vec<(String, Option<String>, i64)> = (0..n)
        .map(|i| {
            let e = sample_event(i);
            (e.body.data_json(), e.natural_key(), e.ts.timestamp_millis())
        })
        .collect();
    let kinds: Vec<&str> = (0..n).map(|i| sample_event(i).body.kind()).collect();
    let started = Instant::now();
    for (chunk_no, chunk) in rows.chunks(1024).enumerate() {
        let tx = conn.unchecked_transaction().ctx("raw bench")?;
        {
            let mut ins = tx
                .prepare_cached("INSERT INTO journal (seq, ts_ms, device, kind, data) VALUES (?1, ?2, ?3, ?4, ?5)")
                .ctx("raw bench")?;
            let mut key = tx
                .prepare_cached("INSERT INTO natural_keys (key, seq, ts_ms) VALUES (?1, ?2, ?3) ON CONFLICT (key) DO NOTHING")
                .ctx("raw bench")?;
            for (j, (data, nkey, ts)) in chunk.iter().enumerate() {
                let seq = (chunk_no * 1024 + j + 1) as i64;
                if let Some(k) = nkey {
                    key.execute(params![k, seq, ts]).ctx("raw bench")?;
                }
                ins.execute(params![seq, ts, "bench", kinds[seq as usize - 1], data])
                    .ctx("raw bench")?;
            }
        }
        tx.commit().ctx("raw bench")?;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

async fn ingest_rate(path: &Path, opts: &JournalBench) -> Result<(f64, u64), StoreError> {
    let conn = fresh_db(path, opts.durability)?;
    let (writer, thread) = Writer::spawn(conn, Box::new(NoProjections))?;
    let per_producer = opts.events / opts.producers.max(1);
    // Built before the clock starts, as the raw side's rows are.
    let inputs: Vec<Vec<NewEvent>> = (0..opts.producers.max(1))
        .map(|p| {
            (0..per_producer)
                .map(|i| sample_event(p * per_producer + i))
                .collect()
        })
        .collect();
    let started = Instant::now();
    let mut tasks = Vec::new();
    let per_job = opts.per_job.max(1);
    for events in inputs {
        let writer = writer.clone();
        tasks.push(tokio::spawn(async move {
            let mut events = events.into_iter().peekable();
            while events.peek().is_some() {
                let job: Vec<NewEvent> = events.by_ref().take(per_job).collect();
                writer.append(job).await?;
            }
            Ok::<(), StoreError>(())
        }));
    }
    for t in tasks {
        t.await
            .map_err(|e| StoreError::Rejected(format!("bench producer died: {e}")))??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let groups = writer
        .stats()
        .groups
        .load(std::sync::atomic::Ordering::Relaxed);
    drop(writer);
    tokio::task::spawn_blocking(move || thread.join())
        .await
        .ok();
    Ok((
        (per_producer * opts.producers.max(1)) as f64 / elapsed,
        groups,
    ))
}

/// Offer one event every millisecond and time each from submission to
/// committed acknowledgement.
async fn latency_at_fixed_rate(
    path: &Path,
    opts: &JournalBench,
) -> Result<(f64, f64, usize), StoreError> {
    let conn = fresh_db(path, opts.durability)?;
    let (writer, thread) = Writer::spawn(conn, Box::new(NoProjections))?;
    let samples = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let total = (opts.latency_seconds * 1000) as usize;
    let mut inflight = tokio::task::JoinSet::new();
    for i in 0..total {
        tick.tick().await;
        let writer = writer.clone();
        let samples = samples.clone();
        inflight.spawn(async move {
            let t0 = Instant::now();
            let r = writer.append(vec![sample_event(i)]).await;
            let ms = t0.elapsed().as_secs_f64() * 1000.0;
            if r.is_ok() {
                if let Ok(mut s) = samples.lock() {
                    s.push(ms);
                }
            }
        });
    }
    while inflight.join_next().await.is_some() {}
    drop(writer);
    tokio::task::spawn_blocking(move || thread.join())
        .await
        .ok();
    let mut s = samples.lock().map(|s| s.clone()).unwrap_or_default();
    s.sort_by(|a, b| a.total_cmp(b));
    let pct = |q: f64| {
        if s.is_empty() {
            0.0
        } else {
            s[((s.len() - 1) as f64 * q).round() as usize]
        }
    };
    Ok((pct(0.50), pct(0.99), s.len()))
}

/// The date and time (UTC, to the minute), for bench report headers.
pub fn stamp() -> String {
    Utc::now().format("%Y-%m-%d %H:%M UTC").to_string()
}

/// A fresh journal with `events` sample events, filled in large groups
/// (the fill is never what is measured). Returns the running writer.
pub async fn fill_journal(
    path: &Path,
    events: usize,
) -> Result<(Writer, db::WriterThread), StoreError> {
    fill_journal_with(path, events, sample_event).await
}

/// [`fill_journal`] with the events `make` makes of their index.
pub async fn fill_journal_with(
    path: &Path,
    events: usize,
    make: fn(usize) -> NewEvent,
) -> Result<(Writer, db::WriterThread), StoreError> {
    let conn = fresh_db(path, Durability::Normal)?;
    let (writer, thread) = Writer::spawn(conn, Box::new(NoProjections))?;
    let mut i = 0;
    while i < events {
        let n = 1000.min(events - i);
        let batch: Vec<NewEvent> = (i..i + n).map(make).collect();
        writer
            .transact(move |w| {
                for e in batch {
                    w.append(e)?;
                }
                Ok(())
            })
            .await?;
        i += n;
    }
    Ok((writer, thread))
}

/// Figures of `storegate bench startup`.
#[derive(Debug, Clone)]
pub struct StartupFigures {
    pub events: usize,
    pub runs_ms: Vec<f64>,
}

/// Time from starting `storegate run` on a journal of `events` rows to its
/// "storegate is running" log line (database opened and checked, tag table
/// loaded, API bound), over three starts.
pub async fn startup(
    dir: &Path,
    events: usize,
) -> Result<StartupFigures, Box<dyn std::error::Error>> {
    use std::io::BufRead;
    let data = dir.join("bench-startup");
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data)?;
    let (writer, thread) = fill_journal(&data.join("storegate.db"), events).await?;
    drop(writer);
    tokio::task::spawn_blocking(move || thread.join())
        .await
        .ok();
    let config = data.join("store.toml");
    std::fs::write(
        &config,
        format!("store_id = \"bench\"\ndata_dir = {data:?}\n[api]\nlisten = \"127.0.0.1:0\"\n"),
    )?;
    let mut runs_ms = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let mut child = std::process::Command::new(std::env::current_exe()?)
            .args(["run", "--config"])
            .arg(&config)
            .env("STOREGATE_LOG", "info")
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let mut ready = false;
        for line in std::io::BufReader::new(stderr).lines() {
            if line?.contains("storegate is running") {
                runs_ms.push(started.elapsed().as_secs_f64() * 1000.0);
                ready = true;
                break;
            }
        }
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = child.wait();
        if !ready {
            return Err("the agent exited before it was running".into());
        }
    }
    Ok(StartupFigures { events, runs_ms })
}

/// Figures of `storegate bench sync`.
#[derive(Debug, Clone)]
pub struct SyncFigures {
    pub events: i64,
    pub seconds: f64,
    pub per_s: f64,
    pub batches: usize,
}

/// Fill a journal with `events` events, then drain it to a reference
/// central on loopback with the real pusher and time it.
pub async fn sync_drain(
    dir: &Path,
    events: usize,
) -> Result<SyncFigures, Box<dyn std::error::Error>> {
    use crate::sim::central::Central as Sim;
    let path = dir.join("bench-sync.db");
    let (writer, thread) = fill_journal(&path, events).await?;
    let head = events as i64;
    let sim = Sim::default();
    sim.lock().behaviour.count_only = true;
    let (addr, _server) = sim.clone().spawn("127.0.0.1:0").await?;
    let config = crate::config::CentralConfig {
        max_backoff_s: 1,
        ..crate::config::CentralConfig::http(format!("http://{addr}"))
    };
    let central = Arc::new(crate::sync::Central::new(&config, "bench")?);
    let reader = Arc::new(std::sync::Mutex::new(db::open_read(&path)?));
    let (link, _) = tokio::sync::watch::channel(crate::sync::Link::Unknown);
    let (trigger, shutdown) = crate::shutdown::shutdown_pair();
    let started = Instant::now();
    let pusher = tokio::spawn(crate::sync::push::run(
        central,
        writer.clone(),
        reader,
        config.batch_max,
        Duration::from_secs(1),
        link,
        shutdown,
    ));
    while sim.view("bench").acked_through < head {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    trigger.trigger();
    let _ = pusher.await;
    let batches = sim.lock().batch_sizes.len();
    drop(writer);
    tokio::task::spawn_blocking(move || thread.join())
        .await
        .ok();
    Ok(SyncFigures {
        events: head,
        seconds,
        per_s: head as f64 / seconds,
        batches,
    })
}

/// Figures of `storegate bench rfid-count`.
#[derive(Debug, Clone)]
pub struct RfidCountFigures {
    pub tags: usize,
    pub skus: usize,
    pub ms: f64,
    pub seen: i64,
}

/// A tag table of `tags` SGTIN-96 tags over `skus` SKUs in one zone, then
/// one RFID count over it, timed.
pub async fn rfid_count(
    dir: &Path,
    tags: usize,
    skus: usize,
) -> Result<RfidCountFigures, Box<dyn std::error::Error>> {
    let path = dir.join("bench-rfid.db");
    let conn = fresh_db(&path, Durability::Normal)?;
    let (writer, thread) = Writer::spawn(conn, Box::new(crate::domain::Projections::default()))?;
    let now = crate::event::now_millis();
    writer
        .transact(move |w| {
            let c = w.conn();
            for s in 0..skus {
                let gtin = format!("0400638{:06}", s);
                let check = crate::domain::sgtin::gtin_check_digit(&gtin).unwrap_or(0);
                let gtin14 = crate::domain::sgtin::normalize_gtin(&format!("{gtin}{check}")).unwrap_or_default();
                c.execute(
                    "INSERT INTO gtins (gtin, sku) VALUES (?1, ?2)",
                    rusqlite::params![gtin14, format!("SKU-{s}")],
                )
                .map_err(|e| StoreError::Rejected(e.to_string()))?;
                c.execute(
                    "INSERT INTO stock (sku, on_hand) VALUES (?1, ?2)",
                    rusqlite::params![format!("SKU-{s}"), (tags / skus) as i64],
                )
                .map_err(|e| StoreError::Rejected(e.to_string()))?;
            }
            for t in 0..tags {
                c.execute(
                    "INSERT INTO tags (epc, zone, reader, sku, first_seen_ms, last_seen_ms) VALUES (?1, 'salesfloor', 'r', ?2, ?3, ?3)",
                    rusqlite::params![format!("30{t:022X}"), format!("SKU-{}", t % skus), now.timestamp_millis()],
                )
                .map_err(|e| StoreError::Rejected(e.to_string()))?;
            }
            Ok(())
        })
        .await?;
    let from = now - chrono::Duration::hours(1);
    let to = now + chrono::Duration::hours(1);
    let conn = db::open_read(&path)?;
    let started = Instant::now();
    let count = crate::domain::counts::rfid_count(&conn, "salesfloor", from, to)?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    drop(writer);
    tokio::task::spawn_blocking(move || thread.join())
        .await
        .ok();
    Ok(RfidCountFigures {
        tags,
        skus,
        ms,
        seen: count.lines.iter().map(|l| l.counted).sum(),
    })
}
