//! What each subcommand does, for `main.rs` to call. This is the edge of
//! the program: errors become messages for a person and an exit code.

pub mod generate;

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use crate::config::{Broker, Config, Transport};
use crate::db::{self, Writer};
use crate::setup;

/// The exit status of `check`, `run` and every other command when the
/// configuration is not usable: EX_CONFIG from sysexits.h. The systemd
/// unit does not restart on it (RestartPreventExitStatus=78): restarting
/// cannot fix a config file.
pub const EX_CONFIG: u8 = 78;

/// The exit code for an error of a command: [`EX_CONFIG`] when the
/// configuration is the problem, 1 otherwise.
pub fn exit_code(error: &anyhow::Error) -> ExitCode {
    if error.downcast_ref::<setup::SetupError>().is_some()
        || error
            .downcast_ref::<crate::epcis::NotConfigured>()
            .is_some()
    {
        ExitCode::from(EX_CONFIG)
    } else {
        ExitCode::FAILURE
    }
}

/// `storegate check`: print what would run, or every problem; warnings
/// (a serial port not there yet) go to stderr and do not fail the check.
pub fn check(path: &Path) -> ExitCode {
    match setup::load(path) {
        Ok(s) => {
            for w in setup::warnings(path, &s.config) {
                eprintln!("warning: {w}");
            }
            print!("{}", describe(path, &s.config));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            eprintln!(
                "storegate check: {} is not usable; nothing was started",
                path.display()
            );
            ExitCode::from(EX_CONFIG)
        }
    }
}

/// `storegate check --central`: fetch central's config for this store,
/// merge it over the local file and validate the result as `check` does,
/// without applying anything. Exit 78 (EX_CONFIG) on problems in either.
pub fn check_central(path: &Path) -> ExitCode {
    let local = match setup::load(path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            eprintln!("storegate check: {} is not usable", path.display());
            return ExitCode::from(EX_CONFIG);
        }
    };
    let Some(c) = local.config.central.as_ref().filter(|c| !c.url.is_empty()) else {
        eprintln!(
            "storegate check --central: {} has no [central] url to fetch a config from; add url = \"https://central.example.com/api\"",
            path.display()
        );
        return ExitCode::from(EX_CONFIG);
    };
    let fetched = tokio::runtime::Runtime::new()
        .map_err(|e| e.to_string())
        .and_then(|rt| {
            rt.block_on(async {
                let central = crate::sync::Central::new(c, &local.config.store_id)
                    .map_err(|e| e.to_string())?;
                crate::sync::config_pull::fetch(&central, None).await
            })
        });
    use crate::sync::config_pull::{Fetched, validate};
    let c = match fetched {
        Ok(Fetched::Config(c)) => c,
        Ok(Fetched::None | Fetched::Unchanged) => {
            println!(
                "central manages no config for store {}: the local file runs as it is",
                local.config.store_id
            );
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("storegate check --central: cannot fetch central's config: {e}");
            return ExitCode::FAILURE;
        }
    };
    let sha = crate::config::layered::sha256_hex(&c.toml);
    let table = match setup::read_table(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    if let Err(problems) = validate(&table, &c) {
        eprintln!(
            "central config v{} (sha256 {sha}): {} problem{}",
            c.version,
            problems.len(),
            if problems.len() == 1 { "" } else { "s" }
        );
        for p in &problems {
            eprintln!("  {p}");
        }
        eprintln!(
            "storegate check --central: the agent would reject it and keep its current config"
        );
        return ExitCode::from(EX_CONFIG);
    }
    let merged = crate::config::layered::merge(&table, &c.toml)
        .ok()
        .and_then(|m| setup::from_table(&m, path).ok());
    let label = std::path::PathBuf::from(format!(
        "central config v{} over {}",
        c.version,
        path.display()
    ));
    if let Some(s) = merged {
        print!("{}", describe(&label, &s.config));
    }
    println!("sha256     {sha} (not applied: the agent applies it itself)");
    ExitCode::SUCCESS
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
    // The device will be retried until its port appears; say now why it
    // is down, with the ports that do exist.
    for w in setup::warnings(path, &setup.config) {
        tracing::warn!("{w}");
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(crate::daemon::supervise(path, setup))?;
    Ok(())
}

/// `storegate status`.
pub fn status(path: &Path) -> anyhow::Result<()> {
    let setup = setup::load(path)?;
    print!("{}", crate::status::report(&setup.config.db_path())?);
    print!(
        "{}",
        crate::status::central_lines(setup.config.central.as_ref(), &setup.config.db_path())
    );
    Ok(())
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

/// What `storegate export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// NDJSON, one event per line in the push API's shape.
    Ndjson,
    /// One GS1 EPCIS 2.0 EPCISDocument (JSON-LD).
    Epcis,
}

/// `storegate export --since SEQ [--format F]`: the journal on stdout
/// from the seq after `since`: as NDJSON, one event per line in the push
/// API's shape, or as one EPCISDocument (refused without `[epcis]`).
pub fn export(config_path: &Path, since: i64, format: ExportFormat) -> anyhow::Result<()> {
    let setup = setup::load(config_path)?;
    let epcis = match format {
        ExportFormat::Ndjson => None,
        ExportFormat::Epcis => Some(
            crate::epcis::Setup::from_config(&setup.config)
                .with_context(|| format!("{}: cannot export EPCIS", config_path.display()))?,
        ),
    };
    let conn = db::open_read(&setup.config.db_path())?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if let Some(epcis) = epcis {
        let done = crate::epcis::document::write_export(
            &conn,
            &epcis,
            since,
            chrono::Utc::now(),
            &mut out,
        )?;
        out.write_all(b"\n")?;
        out.flush()?;
        eprintln!(
            "exported {} EPCIS events up to seq {}; {} journal events have no EPCIS mapping and were left out",
            done.mapped, done.last_seq, done.skipped
        );
        return Ok(());
    }
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
