//! What each subcommand does, for `main.rs` to call. This is the edge of
//! the program: errors become messages for a person and an exit code.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use crate::bench::{self, JournalBench};
use crate::config::{Broker, Config, Transport};
use crate::db::{self, Writer, writer::NoProjections};
use crate::event::NewEvent;
use crate::setup;

/// `storegate check`: print what would run, or every problem.
pub fn check(path: &Path) -> ExitCode {
    match setup::load(path) {
        Ok(s) => {
            print!("{}", describe(path, &s.config));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            eprintln!(
                "storegate check: {} is not usable; nothing was started",
                path.display()
            );
            ExitCode::from(2)
        }
    }
}

fn describe(path: &Path, c: &Config) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(o, "{}: OK", path.display());
    let _ = writeln!(o, "store      {}", c.store_id);
    let _ = writeln!(
        o,
        "database   {} (durability {:?})",
        c.db_path().display(),
        c.durability
    );
    let _ = writeln!(
        o,
        "mqtt       {}",
        match &c.mqtt.broker {
            Broker::Embedded(addr) => format!("embedded broker on {addr}"),
            Broker::External { url } => url.clone(),
        }
    );
    let _ = writeln!(o, "api        {}", c.api.listen);
    let _ = writeln!(
        o,
        "central    {}",
        c.central
            .as_ref()
            .map_or("none: store-only".to_string(), |c| c.url.clone())
    );
    let _ = writeln!(o, "devices    {}", c.devices.len());
    for d in &c.devices {
        let _ = writeln!(
            o,
            "  {:<16} {:<24} {:<11} {}{}",
            d.id,
            d.profile,
            d.transport.name(),
            d.transport.endpoint(),
            d.zone
                .as_ref()
                .map_or(String::new(), |z| format!("  zone {z}"))
        );
        if let Transport::ModbusTcp { unit, poll_ms, .. }
        | Transport::ModbusRtu { unit, poll_ms, .. } = &d.transport
        {
            let _ = writeln!(o, "  {:<16} unit {unit}, every {poll_ms} ms", "");
        }
    }
    o
}

/// `storegate run`.
pub fn run(path: &Path) -> anyhow::Result<()> {
    let setup = setup::load(path)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(crate::daemon::run(setup))?;
    Ok(())
}

/// `storegate status`.
pub fn status(path: &Path) -> anyhow::Result<()> {
    let setup = setup::load(path)?;
    print!("{}", crate::status::report(&setup.config.db_path())?);
    Ok(())
}

/// `storegate bench journal`.
pub fn bench_journal(opts: JournalBench) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let f = runtime.block_on(bench::journal(&opts))?;
    println!(
        "storegate bench journal  ({}, {} cores, dir {})",
        bench::stamp(),
        num_cpus(),
        opts.dir.display()
    );
    println!("  events                      {}", opts.events);
    println!(
        "  producers                   {} ({} events per job)",
        opts.producers,
        opts.per_job.max(1)
    );
    println!("  durability                  {:?}", opts.durability);
    println!(
        "  durable ingest (writer)     {:>10.0} events/s in {} commit groups",
        f.ingest_per_s, f.groups
    );
    println!(
        "  raw rusqlite batched insert {:>10.0} events/s  (1024 rows per transaction)",
        f.raw_per_s
    );
    println!("  ratio ingest / raw          {:>10.2}", f.ratio());
    println!(
        "  commit latency at 1000 ev/s p50 {:.2} ms, p99 {:.2} ms  ({} samples)",
        f.latency_p50_ms, f.latency_p99_ms, f.latency_samples
    );
    Ok(())
}

/// `storegate bench sync`.
pub fn bench_sync(dir: &Path, events: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let f = runtime
        .block_on(bench::sync_drain(dir, events))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "storegate bench sync  ({}, {} cores)",
        bench::stamp(),
        num_cpus()
    );
    println!(
        "  backlog drained             {} events in {} batches",
        f.events, f.batches
    );
    println!("  time                        {:.2} s", f.seconds);
    println!(
        "  rate                        {:>10.0} events/s  (gzip, loopback reference central)",
        f.per_s
    );
    Ok(())
}

/// `storegate bench mqtt`.
pub fn bench_mqtt(dir: &Path, reads: usize, rounds: usize) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let f = runtime
        .block_on(bench::mqtt::run(dir, reads, rounds))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "storegate bench mqtt  ({}, {} cores, embedded rumqttd, QoS 1)",
        bench::stamp(),
        num_cpus()
    );
    println!(
        "  tag reads                   {} per round, {} rounds taken in turns (Zebra IoT Connector JSON, {} distinct tags)",
        f.reads,
        f.bare_per_s.len(),
        bench::mqtt::TAGS
    );
    println!(
        "  first sightings            {:>10.0} reads/s  (warm-up: every tag once, each an arrival journaled before its PUBACK)",
        f.first_sightings_per_s
    );
    println!(
        "  bare rumqttc subscriber     {:>10.0} reads/s  median (rounds: {}; counts only: the physical limit)",
        f.bare_median(),
        rates(&f.bare_per_s),
    );
    println!(
        "  bare, parsing each payload  {:>10.0} reads/s  median (rounds: {}; to a serde_json::Value: the baseline)",
        f.bare_parsing_median(),
        rates(&f.bare_parsing_per_s),
    );
    println!(
        "  storegate end to end        {:>10.0} reads/s  median (rounds: {}; broker -> parsed -> tag state, PUBACK after)",
        f.agent_median(),
        rates(&f.agent_per_s)
    );
    println!(
        "  ratio to the baseline       {:>10.2}  (median of the rounds' ratios to the parsing subscriber)",
        f.ratio()
    );
    println!(
        "  ratio to the limit          {:>10.2}  (the same against the subscriber that parses nothing)",
        f.ratio_to_limit()
    );
    Ok(())
}

/// `storegate bench backlog`.
pub fn bench_backlog(
    dir: &Path,
    messages: usize,
    rounds: usize,
    receipts: bool,
    inflight: u32,
) -> anyhow::Result<()> {
    use bench::backlog::Payload;
    let payload = if receipts {
        Payload::Receipts
    } else {
        Payload::Zebra
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let f = runtime
        .block_on(bench::backlog::run(
            dir, messages, rounds, payload, inflight,
        ))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "storegate bench backlog  ({}, {} cores, mosquitto, QoS 1, persistent sessions, max_inflight_messages {inflight})",
        bench::stamp(),
        num_cpus()
    );
    println!(
        "  backlog                     {} messages per round, {} rounds taken in turns ({})",
        f.messages,
        f.bare_per_s.len(),
        match f.payload {
            Payload::Zebra => "Zebra IoT Connector reads over 5,000 tags",
            Payload::Receipts => "POS receipts, each journaled",
        }
    );
    println!(
        "  mosquitto_sub               {:>10.0} msgs/s  median (rounds: {})",
        f.bare_median(),
        rates(&f.bare_per_s)
    );
    println!(
        "  storegate                   {:>10.0} msgs/s  median (rounds: {}; start to the last PUBACK)",
        f.agent_median(),
        rates(&f.agent_per_s)
    );
    println!(
        "  ratio                       {:>10.2}  (median of the rounds' ratios)",
        f.ratio()
    );
    println!("  agent reconnects            {:>10}", f.reconnects);
    Ok(())
}

/// `storegate bench labels`.
pub fn bench_labels(dir: &Path, changes: usize) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let f = runtime
        .block_on(bench::labels::run(dir, changes))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "storegate bench labels  ({}, {} cores, esl-mqtt over embedded rumqttd)",
        bench::stamp(),
        num_cpus()
    );
    println!("  price changes               {}", f.changes);
    println!(
        "  commit -> label update      p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms  (received by a subscriber on the broker)",
        f.p50_ms, f.p99_ms, f.max_ms
    );
    Ok(())
}

/// `storegate bench rss`.
pub fn bench_rss(dir: &Path, devices: usize, rate: usize, seconds: u64) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let f = runtime
        .block_on(bench::rss::run(dir, devices, rate, seconds))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "storegate bench rss  ({}, {} cores)",
        bench::stamp(),
        num_cpus()
    );
    println!(
        "  agent                       storegate run, {} MQTT readers (zebra profile)",
        f.devices
    );
    println!(
        "  load                        {} reads/s for {} s: {} published, {} ingested",
        f.rate, f.seconds, f.published, f.ingested
    );
    println!(
        "  resident memory             peak {:.1} MiB, at the end {:.1} MiB",
        f.peak_kib as f64 / 1024.0,
        f.final_kib as f64 / 1024.0
    );
    Ok(())
}

/// `storegate bench startup`.
pub fn bench_startup(dir: &Path, events: usize) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let f = runtime
        .block_on(bench::startup(dir, events))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "storegate bench startup  ({}, {} cores)",
        bench::stamp(),
        num_cpus()
    );
    println!("  journal                     {} events", f.events);
    let runs: Vec<String> = f.runs_ms.iter().map(|ms| format!("{ms:.0} ms")).collect();
    println!("  start to running            {}", runs.join(", "));
    Ok(())
}

/// `storegate bench rfid-count`.
pub fn bench_rfid_count(dir: &Path, tags: usize, skus: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let f = runtime
        .block_on(bench::rfid_count(dir, tags, skus.max(1)))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "storegate bench rfid-count  ({}, {} cores)",
        bench::stamp(),
        num_cpus()
    );
    println!(
        "  tags in zone                {} over {} SKUs ({} counted)",
        f.tags, f.skus, f.seen
    );
    println!("  count time                  {:.1} ms", f.ms);
    Ok(())
}

pub fn bench_offline_disk(
    dir: &Path,
    params: &bench::offline::OfflineDiskParams,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let f = runtime
        .block_on(bench::offline::offline_disk(dir, params))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "storegate bench offline-disk  ({}, {} cores)",
        bench::stamp(),
        num_cpus()
    );
    println!(
        "  offline for                 {:.1} days (simulated), central unreachable",
        f.simulated_s as f64 / 86_400.0
    );
    println!(
        "  floor                       {} tagged items in 2 zones, {:.0}% sold and restocked per hour, 1% moved per hour",
        params.tags,
        params.turnover * 100.0
    );
    println!(
        "  tag reads                   {} at {}/s",
        f.reads, params.rate
    );
    println!("  journal events              {}", f.events);
    println!("  tag table rows              {}", f.tag_rows);
    println!(
        "  disk used                   {:.1} MiB (db + WAL), {:.1} MiB after a checkpoint  [target < 100 MB]",
        mib(f.disk_bytes),
        mib(f.disk_after_checkpoint_bytes)
    );
    println!("  wall time                   {:.0} s", f.wall_s);
    Ok(())
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `storegate debug ingest`: appends events from several producers and
/// prints each one as JSON once its commit is acknowledged. The crash
/// tests kill it with SIGKILL and compare what it printed with the database.
///
/// With `central`, the real pusher runs beside the producers (store id
/// `crash-test`), so kills also land in the middle of pushes.
pub fn debug_ingest(
    db_path: &Path,
    producers: usize,
    central: Option<String>,
    batches: usize,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let conn = db::open_write(db_path, crate::config::Durability::Full)?;
        let (writer, _thread) = Writer::spawn(conn, Box::new(NoProjections))?;
        // Never triggered: this process ends by being killed.
        let (_never, shutdown) = crate::shutdown::shutdown_pair();
        if let Some(url) = central {
            let config = crate::config::CentralConfig {
                url,
                token_file: None,
                ca_file: None,
                batch_max: 500,
                max_backoff_s: 2,
                poll_prices_s: 30,
                poll_stock_s: 300,
            };
            let central = std::sync::Arc::new(crate::sync::Central::new(&config, "crash-test")?);
            let reader = std::sync::Arc::new(std::sync::Mutex::new(db::open_read(db_path)?));
            let (link, _) = tokio::sync::watch::channel(crate::sync::Link::Unknown);
            tokio::spawn(crate::sync::push::run(
                central,
                writer.clone(),
                reader,
                config.batch_max,
                std::time::Duration::from_secs(2),
                link,
                shutdown,
            ));
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        for p in 0..producers.max(1) {
            let writer = writer.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                for i in 0usize.. {
                    if batches > 0 && i >= batches {
                        // Done producing; stay alive so the pusher drains.
                        return;
                    }
                    let batch: Vec<NewEvent> = (0..1 + i % 3)
                        .map(|k| {
                            let mut e = bench::sample_event(p * 1_000_000 + i * 3 + k);
                            // Unique per run: a restarted ingester must not
                            // collide with the natural keys of the last one.
                            e.device = format!("producer-{}-{p}", std::process::id());
                            e
                        })
                        .collect();
                    match writer.append(batch.clone()).await {
                        Ok(appended) => {
                            for (e, a) in batch.into_iter().zip(appended) {
                                if a.duplicate {
                                    continue;
                                }
                                let line =
                                    serde_json::to_string(&e.with_seq(a.seq)).unwrap_or_default();
                                if tx.send(line).is_err() {
                                    return;
                                }
                            }
                        }
                        Err(e) => {
                            eprintln!("append failed: {e}");
                            return;
                        }
                    }
                }
            });
        }
        drop(tx);
        let mut out = std::io::stdout().lock();
        while let Some(line) = rx.recv().await {
            writeln!(out, "{line}")?;
            out.flush()?;
        }
        // Producers finished: keep running (for the pusher) until killed.
        std::future::pending::<()>().await;
        Ok(())
    })
}

/// Open the configured database with a writer of our own, for offline
/// tools. Safe beside a running daemon (SQLite serialises the writers),
/// though a long rebuild makes the daemon's commits wait.
fn offline_writer(config: &Config) -> anyhow::Result<(Writer, crate::db::WriterThread)> {
    let conn = db::open_write(&config.db_path(), config.durability)?;
    Ok(Writer::spawn(
        conn,
        Box::new(crate::domain::Projections::new(config)),
    )?)
}

/// `storegate import prices FILE.json`: a price book in the shape of
/// central's price pull, for stores that run without central.
pub fn import_prices(config_path: &Path, file: &Path) -> anyhow::Result<()> {
    let setup = setup::load(config_path)?;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let pull: crate::domain::prices::PricePull = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: not a price book (expected {{\"version\": N, \"items\": [...], \"removed\": [...]}} as in docs/sync-api.md section 3)",
            file.display()
        )
    })?;
    let (writer, thread) = offline_writer(&setup.config)?;
    let locale = setup.config.locale.clone();
    let items = pull.items.len();
    let version = pull.version;
    let changed = writer.blocking_transact(move |w| {
        crate::domain::prices::apply_pull(w.conn(), &pull, chrono::Utc::now(), &locale)
    })?;
    drop(writer);
    thread.join();
    println!(
        "imported price book version {version}: {items} items, {} SKUs with label updates pending",
        changed.len()
    );
    Ok(())
}

/// `storegate rebuild`: recompute every journal-derived projection.
pub fn rebuild(config_path: &Path) -> anyhow::Result<()> {
    let setup = setup::load(config_path)?;
    let (writer, thread) = offline_writer(&setup.config)?;
    let replayed = writer.blocking_transact(|w| crate::domain::rebuild(w.conn()))?;
    drop(writer);
    thread.join();
    println!("rebuilt projections from {replayed} journal events");
    Ok(())
}

/// `storegate export --since SEQ`: the journal as NDJSON on stdout, one
/// event per line in the push API's shape, from the seq after `since`.
pub fn export(config_path: &Path, since: i64) -> anyhow::Result<()> {
    let setup = setup::load(config_path)?;
    let conn = db::open_read(&setup.config.db_path())?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut after = since;
    loop {
        let batch = db::journal::events_after(&conn, after, 10_000)?;
        let Some(last) = batch.last() else { break };
        after = last.seq;
        for e in &batch {
            serde_json::to_writer(&mut out, e)?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Per-round rates as the benches print them: `231000 198000 ...`.
fn rates(per_round: &[f64]) -> String {
    per_round
        .iter()
        .map(|r| format!("{r:.0}"))
        .collect::<Vec<_>>()
        .join(" ")
}
