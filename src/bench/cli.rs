//! `storegate bench ...` and the hidden `storegate debug ...`: their
//! arguments (defined once, here) and the figures they print.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::JournalBench;
use crate::db::{self, Writer, writer::NoProjections};
use crate::event::NewEvent;

/// Where the benches put their scratch databases by default.
const DIR: &str = "./bench-data";

/// `storegate bench`: measure performance on this machine and print the
/// figures, each beside the physical limit measured in the same run.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Durable ingest vs raw SQLite, and commit latency at 1,000 events/s.
    Journal(JournalBench),
    /// Drain a journal backlog to a reference central on loopback.
    Sync {
        #[arg(long, default_value = DIR)]
        dir: PathBuf,
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
    },
    /// A journal backlog drained over the MQTT uplink through a 3-node
    /// nats-server cluster vs over HTTP, in the same run.
    Uplink {
        #[arg(long, default_value = DIR)]
        dir: PathBuf,
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
    },
    /// RFID reads over MQTT end to end vs a bare subscriber on the same broker.
    Mqtt {
        #[arg(long, default_value = DIR)]
        dir: PathBuf,
        /// Reads per round.
        #[arg(long, default_value_t = 100_000)]
        reads: usize,
        /// Rounds of each, bare subscriber and agent taking turns.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// A backlog queued at mosquitto for the agent's persistent session,
    /// drained by the agent vs by mosquitto_sub on the same broker.
    Backlog {
        #[arg(long, default_value = DIR)]
        dir: PathBuf,
        /// Messages in the backlog.
        #[arg(long, default_value_t = 100_000)]
        messages: usize,
        /// Rounds of each, mosquitto_sub and agent taking turns.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// POS receipts (each journaled) instead of Zebra tag reads.
        #[arg(long)]
        receipts: bool,
        /// mosquitto's max_inflight_messages (QoS 1 messages sent to a
        /// client and not yet acknowledged); its default is 20.
        #[arg(long, default_value_t = 20)]
        inflight: u32,
    },
    /// Time from a committed price change to the label update leaving.
    Labels {
        #[arg(long, default_value = DIR)]
        dir: PathBuf,
        #[arg(long, default_value_t = 200)]
        changes: usize,
    },
    /// Resident memory of a running agent with many readers under load.
    Rss {
        #[arg(long, default_value = DIR)]
        dir: PathBuf,
        #[arg(long, default_value_t = 50)]
        devices: usize,
        /// Tag reads per second, spread over the devices.
        #[arg(long, default_value_t = 10_000)]
        rate: usize,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    /// Peak resident memory of a running agent while a burst of distinct
    /// tags arrives, optionally with many tags already known.
    Tags {
        #[arg(long, default_value = DIR)]
        dir: PathBuf,
        /// Distinct tags in the burst (published as fast as the broker takes them).
        #[arg(long, default_value_t = 100_000)]
        tags: usize,
        /// Tags already in the database when the agent starts: the burst's
        /// first ones (read again, as after a restart), the rest arrive new.
        #[arg(long, default_value_t = 0)]
        known: usize,
    },
    /// Start-up time of `storegate run` on a large journal.
    Startup {
        #[arg(long, default_value = DIR)]
        dir: PathBuf,
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
    },
    /// One RFID count over a large tag table.
    RfidCount {
        #[arg(long, default_value = DIR)]
        dir: PathBuf,
        #[arg(long, default_value_t = 50_000)]
        tags: usize,
        #[arg(long, default_value_t = 500)]
        skus: usize,
    },
    /// The journal as an EPCIS 2.0 document vs as NDJSON, events/s.
    Epcis {
        #[arg(long, default_value = DIR)]
        dir: PathBuf,
        #[arg(long, default_value_t = 200_000)]
        events: usize,
        /// Rounds of each, taking turns.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Disk used after days offline under RFID traffic (simulated clock).
    OfflineDisk {
        #[arg(long, default_value = DIR)]
        dir: PathBuf,
        #[command(flatten)]
        params: super::offline::OfflineDiskParams,
    },
}

/// Tools for tests and debugging (`storegate debug`, hidden).
#[derive(Debug, clap::Subcommand)]
pub enum DebugCommand {
    /// Ingest synthetic events forever, printing each acknowledged event.
    Ingest {
        #[arg(long)]
        db: PathBuf,
        #[arg(long, default_value_t = 4)]
        producers: usize,
        /// Also push to this central (the real pusher, store id `crash-test`).
        #[arg(long)]
        central: Option<String>,
        /// Stop producing after this many batches per producer (0: never).
        #[arg(long, default_value_t = 0)]
        batches: usize,
    },
}

/// Run one bench and print its figures.
pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Journal(opts) => bench_journal(opts),
        BenchCommand::Sync { dir, events } => bench_sync(&dir, events),
        BenchCommand::Startup { dir, events } => bench_startup(&dir, events),
        BenchCommand::Uplink { dir, events } => bench_uplink(&dir, events.max(1)),
        BenchCommand::Mqtt { dir, reads, rounds } => bench_mqtt(&dir, reads.max(1), rounds.max(1)),
        BenchCommand::Backlog {
            dir,
            messages,
            rounds,
            receipts,
            inflight,
        } => bench_backlog(&dir, messages.max(1), rounds.max(1), receipts, inflight),
        BenchCommand::Labels { dir, changes } => bench_labels(&dir, changes.max(1)),
        BenchCommand::Epcis {
            dir,
            events,
            rounds,
        } => bench_epcis(&dir, events.max(1), rounds.max(1)),
        BenchCommand::Rss {
            dir,
            devices,
            rate,
            seconds,
        } => bench_rss(&dir, devices.max(1), rate, seconds),
        BenchCommand::Tags { dir, tags, known } => bench_tags(&dir, tags.max(1), known),
        BenchCommand::RfidCount { dir, tags, skus } => bench_rfid_count(&dir, tags, skus),
        BenchCommand::OfflineDisk { dir, params } => bench_offline_disk(
            &dir,
            &super::offline::OfflineDiskParams {
                rate: params.rate.max(1),
                tags: params.tags.max(1),
                ..params
            },
        ),
    }
}

/// Run one debugging tool.
pub fn debug(command: DebugCommand) -> anyhow::Result<()> {
    match command {
        DebugCommand::Ingest {
            db,
            producers,
            central,
            batches,
        } => debug_ingest(&db, producers, central, batches),
    }
}

/// `storegate bench journal`.
fn bench_journal(opts: JournalBench) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let f = runtime.block_on(super::journal(&opts))?;
    println!(
        "storegate bench journal  ({}, {} cores, dir {})",
        super::stamp(),
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
fn bench_sync(dir: &Path, events: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let f = runtime
        .block_on(super::sync_drain(dir, events))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "storegate bench sync  ({}, {} cores)",
        super::stamp(),
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

/// `storegate bench uplink`.
fn bench_uplink(dir: &Path, events: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let f = runtime
        .block_on(super::uplink::run(dir, events))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let m = &f.mqtt;
    println!(
        "storegate bench uplink  ({}, {} cores, {} events, batches of at most 5000)",
        super::stamp(),
        num_cpus(),
        m.events
    );
    println!(
        "  HTTP  pusher -> central     {:>10.0} events/s  ({:.2} s, {} batches, gzip, loopback)",
        f.http.per_s, f.http.seconds, f.http.batches
    );
    println!(
        "  MQTT  uplink -> 3 nats      {:>10.0} events/s  ({:.2} s, QoS 1, 4 batches in flight, to central's ack)",
        m.per_s, m.seconds
    );
    println!("  ratio MQTT / HTTP           {:>10.2}", f.ratio());
    println!(
        "  payload bytes per event     {:>10.1}  ({} bytes in {} batches taken, gzip)",
        m.bytes_per_event(),
        m.payload_bytes,
        m.batches_taken
    );
    println!(
        "  broker messages per event   {:>10.5}  ({} batches published + {} acks; {} resends, {} connections)",
        m.messages_per_event(),
        m.batches_sent,
        m.batches_taken,
        m.resends,
        m.connections
    );
    Ok(())
}

/// `storegate bench mqtt`.
fn bench_mqtt(dir: &Path, reads: usize, rounds: usize) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let f = runtime
        .block_on(super::mqtt::run(dir, reads, rounds))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "storegate bench mqtt  ({}, {} cores, embedded rumqttd, QoS 1)",
        super::stamp(),
        num_cpus()
    );
    println!(
        "  tag reads                   {} per round, {} rounds taken in turns (Zebra IoT Connector JSON, {} distinct tags)",
        f.reads,
        f.bare_per_s.len(),
        super::mqtt::TAGS
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
fn bench_backlog(
    dir: &Path,
    messages: usize,
    rounds: usize,
    receipts: bool,
    inflight: u32,
) -> anyhow::Result<()> {
    use super::backlog::Payload;
    let payload = if receipts {
        Payload::Receipts
    } else {
        Payload::Zebra
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let f = runtime
        .block_on(super::backlog::run(
            dir, messages, rounds, payload, inflight,
        ))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "storegate bench backlog  ({}, {} cores, mosquitto, QoS 1, persistent sessions, max_inflight_messages {inflight})",
        super::stamp(),
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
fn bench_labels(dir: &Path, changes: usize) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let f = runtime
        .block_on(super::labels::run(dir, changes))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "storegate bench labels  ({}, {} cores, esl-mqtt over embedded rumqttd)",
        super::stamp(),
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
fn bench_rss(dir: &Path, devices: usize, rate: usize, seconds: u64) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let f = runtime
        .block_on(super::rss::run(dir, devices, rate, seconds))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "storegate bench rss  ({}, {} cores)",
        super::stamp(),
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

/// `storegate bench epcis`.
fn bench_epcis(dir: &Path, events: usize, rounds: usize) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let f = runtime.block_on(super::epcis::run(dir, events, rounds))?;
    println!(
        "storegate bench epcis  ({}, {} cores)",
        super::stamp(),
        num_cpus()
    );
    println!(
        "  journal                     {} events, {} of them EPCIS ObjectEvents",
        f.events, f.mapped
    );
    println!(
        "  EPCIS document              {} events/s  ({:.1} MiB)",
        rates(&f.epcis_per_s),
        f.epcis_bytes as f64 / (1024.0 * 1024.0)
    );
    println!(
        "  rows as JSON (the limit)    {} events/s  ({:.1} MiB)",
        rates(&f.raw_per_s),
        f.raw_bytes as f64 / (1024.0 * 1024.0)
    );
    Ok(())
}

/// `storegate bench tags`.
fn bench_tags(dir: &Path, tags: usize, known: usize) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let f = runtime
        .block_on(super::tags::run(dir, tags, known))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "storegate bench tags  ({}, {} cores)",
        super::stamp(),
        num_cpus()
    );
    println!(
        "  agent                       storegate run, 4 MQTT readers (zebra profile), 2 zones"
    );
    println!(
        "  tags                        {} known at start, {} distinct in the burst: {} in the table at the end, burst taken in {:.1} s",
        f.known,
        f.tags,
        f.in_table,
        f.burst.as_secs_f64()
    );
    println!(
        "  idle, no tag known          resident {:.1} MiB",
        mib(f.empty_kib)
    );
    println!(
        "  before the burst            resident {:.1} MiB (high-water mark {:.1} MiB)",
        mib(f.idle_kib),
        mib(f.idle_peak_kib)
    );
    println!(
        "  peak resident memory        {:.1} MiB (at the end {:.1} MiB)",
        mib(f.peak_kib),
        mib(f.final_kib)
    );
    println!(
        "  physical limit              {:.1} MiB = idle with no tag known + the tag set raw ({:.1} MiB: {} bytes a tag)",
        mib(f.empty_kib) + f.raw_bytes() as f64 / 1048576.0,
        f.raw_bytes() as f64 / 1048576.0,
        super::tags::RAW_BYTES_PER_TAG
    );
    Ok(())
}

/// `storegate bench startup`.
fn bench_startup(dir: &Path, events: usize) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let f = runtime
        .block_on(super::startup(dir, events))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "storegate bench startup  ({}, {} cores)",
        super::stamp(),
        num_cpus()
    );
    println!("  journal                     {} events", f.events);
    let runs: Vec<String> = f.runs_ms.iter().map(|ms| format!("{ms:.0} ms")).collect();
    println!("  start to running            {}", runs.join(", "));
    Ok(())
}

/// `storegate bench rfid-count`.
fn bench_rfid_count(dir: &Path, tags: usize, skus: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let f = runtime
        .block_on(super::rfid_count(dir, tags, skus.max(1)))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "storegate bench rfid-count  ({}, {} cores)",
        super::stamp(),
        num_cpus()
    );
    println!(
        "  tags in zone                {} over {} SKUs ({} counted)",
        f.tags, f.skus, f.seen
    );
    println!("  count time                  {:.1} ms", f.ms);
    Ok(())
}

fn bench_offline_disk(
    dir: &Path,
    params: &super::offline::OfflineDiskParams,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let f = runtime
        .block_on(super::offline::offline_disk(dir, params))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "storegate bench offline-disk  ({}, {} cores)",
        super::stamp(),
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
fn debug_ingest(
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
                batch_max: 500,
                max_backoff_s: 2,
                ..crate::config::CentralConfig::http(url)
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
                            let mut e = super::sample_event(p * 1_000_000 + i * 3 + k);
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

/// Per-round rates as the benches print them: `231000 198000 ...`.
fn rates(per_round: &[f64]) -> String {
    per_round
        .iter()
        .map(|r| format!("{r:.0}"))
        .collect::<Vec<_>>()
        .join(" ")
}
