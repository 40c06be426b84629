//! `storegate demo`: the whole store on one machine, no hardware.
//!
//! A data directory (temporary unless `--dir`), the embedded MQTT broker,
//! and simulated devices that speak the real formats over the real
//! transports: an M100 UHF module and a POS receipt-printer tap on
//! pseudo-terminals, a Zebra reader and shelf labels on MQTT, a load-cell
//! shelf and an XY-MD02 sensor on Modbus TCP, and the reference central
//! platform in process. The real agent ([`crate::daemon::run_until`]) runs
//! in between, exactly as `storegate run` would.
//!
//! A scripted story runs through a store day in fast motion (deliveries,
//! sales, a promo, a price conflict, a shelf running low and its refill
//! task, a click-and-collect order picked and handed over, an RFID count,
//! central going offline and coming back with a price change), scaled to
//! `--duration`. A live summary shows what the store knows; at the end
//! the store must have handed everything to central, and central and store
//! must agree on the stock of every SKU (the exit code says whether).
//!
//! This file runs the demo (data directory, logging, the agent, how it
//! ends); `demo/rig.rs` starts what the agent talks to, `demo/story.rs`
//! is the scripted day (with `demo/pickup.rs` and `demo/tasks.rs` for
//! its click-and-collect and staff-task beats) and `demo/summary.rs`
//! what the terminal shows of the store.

mod pickup;
mod rig;
mod story;
mod summary;
mod tasks;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use std::time::{Duration, Instant};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use anyhow::{Context, anyhow};
use tokio::signal::unix::{SignalKind, signal};

use crate::sim::cli::run_tag;
use rig::Rig;
use story::story;

/// `storegate demo` options.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Run this many seconds, then print the final summary and exit
    /// (the story is scaled to fit). Without it: until Ctrl-C.
    #[arg(long)]
    pub duration: Option<u64>,
    /// Keep the store's data (database, config, tokens, log, central's
    /// state) in this directory instead of a temporary one.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// The story's length when no `--duration` is given; the store keeps
/// trading after it until Ctrl-C.
const OPEN_ENDED_STORY: Duration = Duration::from_secs(90);

/// Run the demo; the exit code is 0 only when central and store agree.
pub fn main(args: DemoArgs, json_logs: bool) -> ExitCode {
    let (dir, keep) = match data_dir(args.dir.as_deref()) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("storegate demo: {e:#}");
            return ExitCode::from(2);
        }
    };
    init_logging(&dir, json_logs);
    let outcome = tokio::runtime::Runtime::new()
        .context("starting the async runtime")
        .and_then(|rt| {
            let r = rt.block_on(run(&dir, keep, args.duration.map(Duration::from_secs)));
            // The broker thread and blocking reads must not hold up the exit.
            rt.shutdown_timeout(Duration::from_secs(2));
            r
        });
    if !keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("storegate demo: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The data directory and whether to keep it. A kept directory must not
/// hold an earlier demo: its journal would not match a fresh central.
fn data_dir(dir: Option<&Path>) -> anyhow::Result<(PathBuf, bool)> {
    match dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            if d.join("storegate.db").exists() {
                anyhow::bail!(
                    "{} holds the data of an earlier demo; remove it or choose another --dir",
                    d.display()
                );
            }
            Ok((std::path::absolute(d)?, true))
        }
        None => {
            let d = std::env::temp_dir().join(format!(
                "storegate-demo-{}-{}",
                std::process::id(),
                run_tag()
            ));
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
            Ok((d, false))
        }
    }
}

/// The agent's log goes to `storegate.log` in the data directory: the
/// terminal belongs to the story and the live summary.
fn init_logging(dir: &Path, json: bool) {
    let Ok(file) = std::fs::File::create(dir.join("storegate.log")) else {
        return;
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("STOREGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(Mutex::new(file));
    let quiet = crate::devices::broker::without_broker_spans();
    let _ = if json {
        builder.json().finish().with(quiet).try_init()
    } else {
        builder.finish().with(quiet).try_init()
    };
}

/// Prints story lines with the time since the demo started.
#[derive(Clone, Copy)]
struct Narrator {
    start: Instant,
}

impl Narrator {
    fn line(&self, what: impl std::fmt::Display) {
        println!("{:>6.1}s  {what}", self.start.elapsed().as_secs_f64());
    }
}

async fn run(dir: &Path, keep: bool, duration: Option<Duration>) -> anyhow::Result<bool> {
    let started = Instant::now();
    let say = Narrator { start: started };
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;

    let rig = Arc::new(Rig::build(dir).await?);
    rig.banner(keep, duration);
    let setup = crate::setup::load(&rig.config_path).map_err(|e| anyhow!("{e}"))?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut daemon = tokio::spawn(crate::daemon::run_until(setup, async move {
        let _ = stop_rx.await;
    }));

    let day = async {
        rig.open(&say).await;
        let story_len = match duration {
            // The last 15 % of the time is plain trading, so the story's
            // last effects (label confirmations, the backlog draining) are
            // visible before the end.
            Some(d) => (started + d.mul_f64(0.85)).saturating_duration_since(Instant::now()),
            None => OPEN_ENDED_STORY,
        };
        story(rig.clone(), story_len, say).await;
    };
    let time_up = async {
        match duration {
            Some(d) => tokio::time::sleep_until((started + d).into()).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = day => {}
        () = time_up => say.line("time is up: closing the store"),
        _ = term.recv() => say.line("SIGTERM: closing the store"),
        _ = int.recv() => say.line("Ctrl-C: closing the store"),
        () = rig.live_summary(say) => {}
        r = &mut daemon => {
            return Err(match r {
                Ok(Ok(())) => anyhow!("the agent stopped unexpectedly"),
                Ok(Err(e)) => anyhow!("the agent stopped: {e}"),
                Err(e) => anyhow!("the agent failed: {e}"),
            });
        }
    }

    // Close the store: readers and tills stop, central is reachable.
    rig.field.set(Vec::new());
    rig.central.lock().behaviour.down = false;
    let agree = rig.final_summary(say).await;
    let _ = stop_tx.send(());
    match tokio::time::timeout(Duration::from_secs(30), daemon).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => eprintln!("storegate demo: the agent reported on stopping: {e}"),
        Ok(Err(e)) => eprintln!("storegate demo: the agent failed: {e}"),
        Err(_) => eprintln!("storegate demo: the agent did not stop within 30 s"),
    }
    if keep {
        let path = dir.join("central.json");
        match rig.central.save(&path) {
            Ok(()) => println!(
                "central's state is in {} (storegate sim central --state {} serves it again)",
                path.display(),
                path.display()
            ),
            Err(e) => eprintln!("storegate demo: cannot save {}: {e}", path.display()),
        }
    }
    agree
}
