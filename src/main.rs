//! The `storegate` command line. Parses arguments and calls the library;
//! nothing else lives here. Each command's arguments are defined once, on
//! the library's own option types.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use storegate::cli;
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

#[derive(clap::Args)]
struct CheckArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Also fetch central's config for this store, merge it over the file
    /// and check the result, without applying it.
    #[arg(long)]
    central: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent until SIGTERM/SIGINT.
    Run(ConfigArg),
    /// Validate the configuration and print the devices it would start.
    Check(CheckArgs),
    /// Show the journal, sync state and event counts.
    Status(ConfigArg),
    /// Import data for store-only operation.
    #[command(subcommand)]
    Import(ImportCommand),
    /// Write the journal as NDJSON (one event per line, push API shape),
    /// or as a GS1 EPCIS 2.0 document.
    Export {
        /// Start after this seq (0: everything still in the journal).
        #[arg(long, default_value_t = 0)]
        since: i64,
        /// ndjson: every event as the push API has it; epcis: one
        /// EPCISDocument (JSON-LD) of the events EPCIS has a word for,
        /// which needs the [epcis] table in the configuration.
        #[arg(long, value_enum, default_value_t = cli::ExportFormat::Ndjson)]
        format: cli::ExportFormat,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Recompute every projection (stock, alerts, tags, counts, label
    /// confirmations) from the journal and the stored baselines.
    Rebuild(ConfigArg),
    /// Measure performance on this machine and print the figures.
    #[cfg(feature = "devtools")]
    #[command(subcommand)]
    Bench(storegate::bench::cli::BenchCommand),
    /// The whole store on this machine, no hardware: simulated devices and
    /// central platform around the real agent, with a scripted store day.
    #[cfg(feature = "devtools")]
    Demo(storegate::demo::DemoArgs),
    /// A simulated device or central platform, for checking an installation.
    #[cfg(feature = "devtools")]
    #[command(subcommand)]
    Sim(storegate::sim::cli::SimCommand),
    /// Man pages and shell completions from these definitions (for the
    /// packages, scripts/build-deb.sh).
    #[command(subcommand, hide = true)]
    Generate(cli::generate::GenerateCommand),
    /// Tools for tests and debugging.
    #[cfg(feature = "devtools")]
    #[command(subcommand, hide = true)]
    Debug(storegate::bench::cli::DebugCommand),
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    #[cfg(feature = "devtools")]
    if let Command::Demo(args) = cli.command {
        // The demo logs to a file in its data directory.
        return storegate::demo::main(args, matches!(cli.log_format, LogFormat::Json));
    }
    init_logging(cli.log_format);
    if prints_for_a_pipe(&cli.command) {
        end_quietly_when_the_reader_goes();
    }
    let result = match cli.command {
        Command::Check(c) if c.central => return cli::check_central(&c.config.config),
        Command::Check(c) => return cli::check(&c.config.config),
        Command::Run(c) => cli::run(&c.config),
        Command::Status(c) => cli::status(&c.config),
        Command::Import(ImportCommand::Prices { file, config }) => {
            cli::import_prices(&config.config, &file)
        }
        Command::Rebuild(c) => cli::rebuild(&c.config),
        Command::Generate(g) => cli::generate::run(g, Cli::command()),
        Command::Export {
            since,
            format,
            config,
        } => cli::export(&config.config, since, format),
        #[cfg(feature = "devtools")]
        Command::Demo(_) => Ok(()),
        #[cfg(feature = "devtools")]
        Command::Sim(s) => storegate::sim::cli::run(s),
        #[cfg(feature = "devtools")]
        Command::Bench(b) => storegate::bench::cli::run(b),
        #[cfg(feature = "devtools")]
        Command::Debug(d) => storegate::bench::cli::debug(d),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("storegate: {e:#}");
            cli::exit_code(&e)
        }
    }
}

/// The commands that print a report and end, often into `head` or `less`.
/// Not the daemon, the demo or the simulators: their sockets must see a
/// closed peer as an error to handle, not a signal that ends the process.
fn prints_for_a_pipe(command: &Command) -> bool {
    matches!(
        command,
        Command::Check(_)
            | Command::Status(_)
            | Command::Export { .. }
            | Command::Import(_)
            | Command::Rebuild(_)
            | Command::Generate(_)
    )
}

/// `storegate check | head` should end the way other Unix tools do when
/// the reader goes: quietly, by SIGPIPE. Rust ignores SIGPIPE, so the next
/// println! would panic ("failed printing to stdout") and exit 101.
fn end_quietly_when_the_reader_goes() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: restores the default disposition before any thread starts;
    // no handler function is installed.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STOREGATE_LOG")
        // rumqttd logs every device connection at info: keep it for warnings.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rumqttd=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour_wanted())
        .with_writer(std::io::stderr);
    let quiet = storegate::devices::broker::without_broker_spans();
    match format {
        LogFormat::Text => builder.finish().with(quiet).init(),
        LogFormat::Json => builder.json().finish().with(quiet).init(),
    }
}

/// Colour in the log only for a person at a terminal: under systemd, in a
/// pipe or a file, escape codes are noise in journalctl and grep. NO_COLOR
/// (https://no-color.org: set and not empty) turns it off everywhere.
fn colour_wanted() -> bool {
    use std::io::IsTerminal;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stderr().is_terminal()
}
