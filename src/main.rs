//! The `storegate` command line. Parses arguments and calls the library;
//! nothing else lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use storegate::bench::JournalBench;
use storegate::cli;
use storegate::config::Durability;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

const EXAMPLES: &str = "\
Examples:
  storegate check --config examples/store.toml     validate a config, list its devices
  storegate run --config /etc/storegate/storegate.toml
  storegate status                                 journal, sync and counts (daemon may run)
  storegate bench journal                          measure durable ingest on this box
  storegate demo                                   the whole store simulated on this machine
  storegate sim m100 --port /dev/ttyUSB1           a simulated device for checking an installation";

#[derive(Parser)]
#[command(name = "storegate", version, about = "In-store edge agent: devices -> local SQLite journal -> central", after_help = EXAMPLES)]
struct Cli {
    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args)]
struct ConfigArg {
    /// Configuration file.
    #[arg(
        long,
        short,
        env = "STOREGATE_CONFIG",
        default_value = "/etc/storegate/storegate.toml"
    )]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent until SIGTERM/SIGINT.
    Run(ConfigArg),
    /// Validate the configuration and print the devices it would start.
    Check(ConfigArg),
    /// Show the journal, sync state and event counts.
    Status(ConfigArg),
    /// Import data for store-only operation.
    #[command(subcommand)]
    Import(ImportCommand),
    /// Write the journal as NDJSON (one event per line, push API shape).
    Export {
        /// Start after this seq (0: everything still in the journal).
        #[arg(long, default_value_t = 0)]
        since: i64,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Recompute every projection (stock, alerts, tags, counts, label
    /// confirmations) from the journal and the stored baselines.
    Rebuild(ConfigArg),
    /// Measure performance on this machine and print the figures.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// The whole store on this machine, no hardware: simulated devices and
    /// central platform around the real agent, with a scripted store day.
    Demo(storegate::demo::DemoArgs),
    /// A simulated device or central platform, for checking an installation.
    #[command(subcommand)]
    Sim(storegate::sim::cli::SimCommand),
    /// Tools for tests and debugging.
    #[command(subcommand, hide = true)]
    Debug(DebugCommand),
}

#[derive(Subcommand)]
enum ImportCommand {
    /// A price book JSON file in the shape of central's price pull.
    Prices {
        file: PathBuf,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Durable ingest vs raw SQLite, and commit latency at 1,000 events/s.
    Journal {
        /// Directory for the scratch databases (use the production filesystem).
        #[arg(long, default_value = "./bench-data")]
        dir: PathBuf,
        #[arg(long, default_value_t = 200_000)]
        events: usize,
        #[arg(long, default_value_t = 512)]
        producers: usize,
        #[arg(long, default_value_t = 5)]
        latency_seconds: u64,
        /// Measure with durability = "normal" instead of "full".
        #[arg(long)]
        normal: bool,
        /// Events per submitted job (1 is the worst case).
        #[arg(long, default_value_t = 1)]
        per_job: usize,
    },
    /// Drain a journal backlog to a reference central on loopback.
    Sync {
        #[arg(long, default_value = "./bench-data")]
        dir: PathBuf,
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
    },
    /// RFID reads over MQTT end to end vs a bare subscriber on the same broker.
    Mqtt {
        #[arg(long, default_value = "./bench-data")]
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
        #[arg(long, default_value = "./bench-data")]
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
        #[arg(long, default_value = "./bench-data")]
        dir: PathBuf,
        #[arg(long, default_value_t = 200)]
        changes: usize,
    },
    /// Resident memory of a running agent with many readers under load.
    Rss {
        #[arg(long, default_value = "./bench-data")]
        dir: PathBuf,
        #[arg(long, default_value_t = 50)]
        devices: usize,
        /// Tag reads per second, spread over the devices.
        #[arg(long, default_value_t = 10_000)]
        rate: usize,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    /// Start-up time of `storegate run` on a large journal.
    Startup {
        #[arg(long, default_value = "./bench-data")]
        dir: PathBuf,
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
    },
    /// One RFID count over a large tag table.
    RfidCount {
        #[arg(long, default_value = "./bench-data")]
        dir: PathBuf,
        #[arg(long, default_value_t = 50_000)]
        tags: usize,
        #[arg(long, default_value_t = 500)]
        skus: usize,
    },
    /// Disk used after days offline under RFID traffic (simulated clock).
    OfflineDisk {
        #[arg(long, default_value = "./bench-data")]
        dir: PathBuf,
        #[arg(long, default_value_t = 4.0)]
        days: f64,
        /// Tag reads per second.
        #[arg(long, default_value_t = 200)]
        rate: u32,
        /// Tagged items on the floor at any time.
        #[arg(long, default_value_t = 5000)]
        tags: usize,
        /// Share of the items sold and restocked every hour.
        #[arg(long, default_value_t = 0.10)]
        turnover: f64,
    },
}

#[derive(Subcommand)]
enum DebugCommand {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Demo(args) = cli.command {
        // The demo logs to a file in its data directory.
        return storegate::demo::main(args, matches!(cli.log_format, LogFormat::Json));
    }
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Demo(_) => Ok(()),
        Command::Sim(s) => storegate::sim::cli::run(s),
        Command::Check(c) => return cli::check(&c.config),
        Command::Run(c) => cli::run(&c.config),
        Command::Status(c) => cli::status(&c.config),
        Command::Import(ImportCommand::Prices { file, config }) => {
            cli::import_prices(&config.config, &file)
        }
        Command::Rebuild(c) => cli::rebuild(&c.config),
        Command::Export { since, config } => cli::export(&config.config, since),
        Command::Bench(BenchCommand::Journal {
            dir,
            events,
            producers,
            latency_seconds,
            normal,
            per_job,
        }) => cli::bench_journal(JournalBench {
            per_job,
            dir,
            events,
            producers,
            latency_seconds,
            durability: if normal {
                Durability::Normal
            } else {
                Durability::Full
            },
        }),
        Command::Bench(BenchCommand::Sync { dir, events }) => cli::bench_sync(&dir, events),
        Command::Bench(BenchCommand::Startup { dir, events }) => cli::bench_startup(&dir, events),
        Command::Bench(BenchCommand::Mqtt { dir, reads, rounds }) => {
            cli::bench_mqtt(&dir, reads.max(1), rounds.max(1))
        }
        Command::Bench(BenchCommand::Backlog {
            dir,
            messages,
            rounds,
            receipts,
            inflight,
        }) => cli::bench_backlog(&dir, messages.max(1), rounds.max(1), receipts, inflight),
        Command::Bench(BenchCommand::Labels { dir, changes }) => {
            cli::bench_labels(&dir, changes.max(1))
        }
        Command::Bench(BenchCommand::Rss {
            dir,
            devices,
            rate,
            seconds,
        }) => cli::bench_rss(&dir, devices.max(1), rate, seconds),
        Command::Bench(BenchCommand::RfidCount { dir, tags, skus }) => {
            cli::bench_rfid_count(&dir, tags, skus)
        }
        Command::Bench(BenchCommand::OfflineDisk {
            dir,
            days,
            rate,
            tags,
            turnover,
        }) => cli::bench_offline_disk(
            &dir,
            &storegate::bench::offline::OfflineDiskParams {
                days,
                rate: rate.max(1),
                tags: tags.max(1),
                turnover,
            },
        ),
        Command::Debug(DebugCommand::Ingest {
            db,
            producers,
            central,
            batches,
        }) => cli::debug_ingest(&db, producers, central, batches),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("storegate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STOREGATE_LOG")
        // rumqttd logs every device connection at info: keep it for warnings.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rumqttd=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let quiet = storegate::devices::broker::without_broker_spans();
    match format {
        LogFormat::Text => builder.finish().with(quiet).init(),
        LogFormat::Json => builder.json().finish().with(quiet).init(),
    }
}
