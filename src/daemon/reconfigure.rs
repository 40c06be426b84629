//! Central-managed configuration, the daemon's side (spec/fleet.md 4):
//! [`supervise`] runs the daemon with the config the database says
//! (central's on trial or active, merged over the local file; else the
//! local file alone) and runs it again whenever the config puller
//! accepted a new one or a trial was rolled back. Each restart drains
//! like a clean shutdown (devices finish their current delivery and its
//! commit, the writer commits what is queued), so applying a config
//! loses no acknowledged event; the local API is closed for the moment
//! of the restart.
//!
//! A trial ([`watch_trial`]): the devices that were up when the config
//! was accepted, and that it still has, must be up again within
//! `central.config_rollback_s`; then it becomes the active config.
//! Otherwise the agent goes back to the newest active one (or the local
//! file), opens `config_rolled_back`, journals `config_applied` with
//! source `rollback`, and never tries that config again. The trial is in
//! the database: an agent killed during one runs it again after restart,
//! with a fresh window (the devices need one to come up after a start).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use toml::Table;

use super::{DaemonError, Ended, run_once, stop_signal};
use crate::config::layered;
use crate::db::{self, StoreError, Writer, central_config};
use crate::domain::alerts;
use crate::event::{ConfigApplied, EventBody, NewEvent, now_millis};
use crate::health::HealthBoard;
use crate::setup::{self, Setup};
use crate::shutdown::Shutdown;

/// What one run needs to take part in central-managed configuration.
pub(super) struct Reconfig {
    /// The local file: what central's config goes over.
    pub local: Table,
    /// Notified to end the run and start again with the stored config.
    pub apply: Arc<Notify>,
    /// Set when the run is a trial of central's config.
    pub trial: Option<Trial>,
}

/// A central config on trial.
pub(super) struct Trial {
    pub id: i64,
    pub version: i64,
    /// Devices that were up before and are in this config.
    pub must_come_back: Vec<String>,
    pub window: Duration,
}

/// `storegate run`: the daemon with central-managed configuration, until
/// SIGTERM or SIGINT.
pub async fn supervise(config_path: &Path, local: Setup) -> Result<(), DaemonError> {
    let table = setup::read_table(config_path)
        .map_err(|e| DaemonError::Config(setup::SetupError(vec![e])))?;
    let (stopped_tx, stopped) = tokio::sync::watch::channel(false);
    let signals = stop_signal()?;
    tokio::spawn(async move {
        signals.await;
        let _ = stopped_tx.send(true);
    });
    loop {
        let (setup, trial) = effective(&local, &table, config_path)?;
        let reconfig = Reconfig {
            local: table.clone(),
            apply: Arc::new(Notify::new()),
            trial,
        };
        let mut rx = stopped.clone();
        let stop = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        match run_once(setup, Some(reconfig), stop).await? {
            Ended::Stopped => return Ok(()),
            Ended::Reconfigure => {
                if *stopped.borrow() {
                    return Ok(());
                }
                tracing::info!("starting again with the new config");
            }
        }
    }
}

/// The setup a start runs, from what the database says, and the trial
/// when it is one. A stored config that no longer validates over the
/// local file (the file changed since) is rolled back on the spot.
fn effective(
    local: &Setup,
    table: &Table,
    config_path: &Path,
) -> Result<(Setup, Option<Trial>), DaemonError> {
    let conn = db::open_write(&local.config.db_path(), local.config.durability)?;
    let Some(stored) = central_config::running(&conn)? else {
        tracing::info!(file = %config_path.display(), "config: the local file");
        return Ok((clone_setup(local), None));
    };
    let label = PathBuf::from(format!("central config v{}", stored.version));
    let checked = layered::merge(table, &stored.toml)
        .map_err(|problems| {
            problems
                .iter()
                .map(|p| format!("{}: {}", p.key, p.message))
                .collect::<Vec<_>>()
                .join("; ")
        })
        .and_then(|merged| setup::from_table(&merged, &label).map_err(|e| e.to_string()));
    match checked {
        Ok(setup) => {
            tracing::info!(
                version = stored.version,
                state = %stored.state,
                "config: central config v{} over {}",
                stored.version,
                config_path.display()
            );
            let trial = (stored.state == central_config::TRIAL).then(|| {
                let window = setup
                    .config
                    .central
                    .as_ref()
                    .map_or(120, |c| c.config_rollback_s);
                Trial {
                    id: stored.id,
                    version: stored.version,
                    must_come_back: stored
                        .up_before
                        .iter()
                        .filter(|id| setup.config.devices.iter().any(|d| &d.id == *id))
                        .cloned()
                        .collect(),
                    window: Duration::from_secs(window),
                }
            });
            Ok((setup, trial))
        }
        Err(why) => {
            tracing::error!(
                version = stored.version,
                error = %why,
                "the stored central config no longer validates over {}; rolling it back",
                config_path.display()
            );
            central_config::decide(&conn, stored.id, false, Some(&why))?;
            drop(conn);
            effective(local, table, config_path)
        }
    }
}

fn clone_setup(s: &Setup) -> Setup {
    Setup {
        config: s.config.clone(),
        profiles: s.profiles.clone(),
    }
}

/// How often a trial looks at the devices.
const LOOK_EVERY: Duration = Duration::from_millis(500);

/// Decide a trial: passed once every device that must come back is up;
/// rolled back (and `apply` notified, so the run starts again with the
/// previous config) when the window ends first.
pub(super) async fn watch_trial(
    trial: Trial,
    writer: Writer,
    health: HealthBoard,
    apply: Arc<Notify>,
    mut shutdown: Shutdown,
) {
    let deadline = tokio::time::Instant::now() + trial.window;
    tracing::info!(
        version = trial.version,
        devices = ?trial.must_come_back,
        window_s = trial.window.as_secs(),
        "central config on trial: waiting for the devices that were up before"
    );
    loop {
        let missing: Vec<String> = trial
            .must_come_back
            .iter()
            .filter(|id| !health.get(id).is_some_and(|h| h.up))
            .cloned()
            .collect();
        if missing.is_empty() {
            let (id, version) = (trial.id, trial.version);
            match writer
                .transact(move |w| {
                    central_config::decide(w.conn(), id, true, None)?;
                    alerts::config_passed(w, version)
                })
                .await
            {
                Ok(()) => tracing::info!(version, "central config passed its trial; it is active"),
                Err(e) => tracing::error!(error = %e, "cannot record the trial's end"),
            }
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            let why = missing
                .iter()
                .map(|id| {
                    let reason = health
                        .get(id)
                        .and_then(|h| h.last_error)
                        .unwrap_or_else(|| "not up".into());
                    format!("device {id} did not come back ({reason})")
                })
                .collect::<Vec<_>>()
                .join("; ");
            match roll_back(&writer, &trial, why.clone()).await {
                Ok(back_to) => {
                    tracing::warn!(
                        version = trial.version,
                        back_to = %back_to,
                        "central config rolled back: {why}"
                    );
                    apply.notify_one();
                }
                Err(e) => tracing::error!(error = %e, "cannot roll back the central config"),
            }
            return;
        }
        if !shutdown.sleep(LOOK_EVERY).await {
            return;
        }
    }
}

/// Record the rollback in one transaction: the trial rolled back, the
/// alert, and `config_applied` for what runs next. Returns what that is.
async fn roll_back(writer: &Writer, trial: &Trial, why: String) -> Result<String, StoreError> {
    let (id, version) = (trial.id, trial.version);
    writer
        .transact(move |w| {
            central_config::decide(w.conn(), id, false, Some(&why))?;
            let back = central_config::newest_active(w.conn())?;
            let back_to = back.as_ref().map_or("the local file".to_string(), |b| {
                format!("central config v{}", b.version)
            });
            alerts::config_rolled_back(w, version, &back_to, &why)?;
            w.append(NewEvent::new(
                now_millis(),
                "agent",
                EventBody::ConfigApplied(ConfigApplied {
                    version: back.as_ref().map(|b| b.version),
                    sha256: back.map(|b| b.sha256),
                    source: "rollback".into(),
                }),
            ))?;
            Ok(back_to)
        })
        .await
}
