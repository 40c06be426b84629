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
    println!("  producers                   {}", opts.producers);
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

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `storegate debug ingest`: appends events from several producers and
/// prints each one as JSON once its commit is acknowledged. The crash
/// tests kill it with SIGKILL and compare what it printed with the database.
pub fn debug_ingest(db_path: &Path, producers: usize) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let conn = db::open_write(db_path, crate::config::Durability::Full)?;
        let (writer, _thread) = Writer::spawn(conn, Box::new(NoProjections))?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        for p in 0..producers.max(1) {
            let writer = writer.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                for i in 0usize.. {
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
        Ok(())
    })
}
