//! The config puller (spec/fleet.md 4): `GET /v1/stores/{s}/config` at
//! start, on the `pull_config` command and every `central.poll_config_s`.
//! A new config is merged over the local file and validated with the
//! rules `storegate check` runs. Rejected, it is recorded with every
//! problem and a `config_rejected` alert, and never tried again.
//! Accepted, it is recorded on trial with the devices that are up now,
//! journaled as `config_applied`, and the daemon is asked to restart its
//! run with it (the daemon's reconfigure loop does the rest).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Notify;
use toml::Table;

use super::client::{Central, snippet};
use crate::config::layered;
use crate::db::{StoreError, Writer, central_config};
use crate::domain::alerts;
use crate::event::{ConfigApplied, EventBody, NewEvent, now_millis};
use crate::health::HealthBoard;
use crate::shutdown::Shutdown;

/// What central answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Fetched {
    /// 304: the config we hold (or last refused) is still central's.
    Unchanged,
    /// 404: central manages no config for this store.
    None,
    /// 200: a config.
    Config(CentralToml),
}

/// The body of a 200: `{"version": N, "toml": "..."}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CentralToml {
    pub version: i64,
    pub toml: String,
}

/// GET the config, sending the sha256 we last got as `If-None-Match`.
pub async fn fetch(central: &Central, held: Option<&str>) -> Result<Fetched, String> {
    let (status, body) = central.get_config(held).await.map_err(|e| e.to_string())?;
    match status {
        304 => Ok(Fetched::Unchanged),
        404 => Ok(Fetched::None),
        200 => serde_json::from_str(&body).map(Fetched::Config).map_err(|e| {
            format!(
                "config answer does not parse ({e}); expected {{\"version\": N, \"toml\": \"...\"}}: {}",
                snippet(&body)
            )
        }),
        s => Err(format!("GET config answered {s}: {}", snippet(&body))),
    }
}

/// Merge central's config over the local table and validate the result
/// as `storegate check` does. `Err` lists every problem, one a line.
pub fn validate(local: &Table, c: &CentralToml) -> Result<(), Vec<String>> {
    let label = PathBuf::from(format!("central config v{}", c.version));
    let merged = layered::merge(local, &c.toml).map_err(|problems| {
        problems
            .iter()
            .map(|p| format!("{}: {}", p.key, p.message))
            .collect::<Vec<_>>()
    })?;
    crate::setup::from_table(&merged, &label)
        .map(|_| ())
        .map_err(|e| {
            e.0.iter()
                .flat_map(|ce| {
                    ce.problems.iter().map(move |p| {
                        let file = ce.file.display();
                        if p.key.is_empty() {
                            format!("{file}: {}", p.message)
                        } else {
                            format!("{file}: {}: {}", p.key, p.message)
                        }
                    })
                })
                .collect()
        })
}

/// What the puller needs.
pub struct ConfigPuller {
    pub central: Arc<Central>,
    pub writer: Writer,
    pub health: HealthBoard,
    /// The local file as read at start: what central's config goes over.
    pub local: Table,
    pub every: Duration,
    /// At start, how long the first pull waits for the devices to come up,
    /// so that the devices a new config must bring back are known.
    pub settle: Duration,
    /// Notified by the `pull_config` command.
    pub now: Arc<Notify>,
    /// Notified once an accepted config is recorded: the daemon restarts
    /// its run with it.
    pub apply: Arc<Notify>,
}

/// Pull at once, then on command and every `every`, until shutdown or
/// until a config was accepted (the run that started this ends then).
pub async fn run(p: ConfigPuller, mut shutdown: Shutdown) {
    let settled = tokio::time::Instant::now() + p.settle;
    while tokio::time::Instant::now() < settled && p.health.counts().1 > 0 {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = p.now.notified() => break,
            _ = shutdown.wait() => return,
        }
    }
    loop {
        match pull_once(&p).await {
            Ok(true) => {
                p.apply.notify_one();
                return;
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "config pull failed; will retry"),
        }
        tokio::select! {
            _ = tokio::time::sleep(p.every) => {}
            _ = p.now.notified() => tracing::info!("central asked for a config pull; pulling now"),
            _ = shutdown.wait() => return,
        }
    }
}

/// One pull. Returns whether a new config was accepted (recorded on
/// trial, to be applied by a restart).
pub async fn pull_once(p: &ConfigPuller) -> Result<bool, String> {
    let held = p
        .writer
        .transact(|w| Ok(central_config::newest(w.conn())?.map(|c| c.sha256)))
        .await
        .map_err(|e| e.to_string())?;
    let c = match fetch(&p.central, held.as_deref()).await? {
        Fetched::Unchanged | Fetched::None => return Ok(false),
        Fetched::Config(c) => c,
    };
    let sha = layered::sha256_hex(&c.toml);
    let known = {
        let sha = sha.clone();
        p.writer
            .transact(move |w| central_config::state_of(w.conn(), &sha))
            .await
            .map_err(|e| e.to_string())?
    };
    if let Some(state) = known {
        // Refused ones are never tried again; a trial or active one is
        // what runs already.
        tracing::debug!(version = c.version, state, "central config already known");
        return Ok(false);
    }
    match validate(&p.local, &c) {
        Err(problems) => {
            tracing::warn!(
                version = c.version,
                problems = problems.len(),
                "central config rejected; keeping the current one:\n  {}",
                problems.join("\n  ")
            );
            record_rejected(&p.writer, c, sha, problems)
                .await
                .map_err(|e| e.to_string())?;
            Ok(false)
        }
        Ok(()) => {
            let up: Vec<String> = p
                .health
                .snapshot()
                .into_iter()
                .filter(|d| d.up)
                .map(|d| d.id)
                .collect();
            let (version, devices_up) = (c.version, up.len());
            record_accepted(&p.writer, c, sha.clone(), up)
                .await
                .map_err(|e| e.to_string())?;
            tracing::info!(
                version,
                sha256 = %sha,
                devices_up,
                "applying central config v{version}: restarting devices, sync and API with it"
            );
            Ok(true)
        }
    }
}

async fn record_rejected(
    writer: &Writer,
    c: CentralToml,
    sha: String,
    problems: Vec<String>,
) -> Result<(), StoreError> {
    writer
        .transact(move |w| {
            let text = problems.join("\n");
            central_config::insert(
                w.conn(),
                c.version,
                &sha,
                &c.toml,
                central_config::REJECTED,
                Some(&text),
                &[],
            )?;
            alerts::config_rejected(w, c.version, &sha, &problems)
        })
        .await
}

async fn record_accepted(
    writer: &Writer,
    c: CentralToml,
    sha: String,
    up: Vec<String>,
) -> Result<(), StoreError> {
    writer
        .transact(move |w| {
            central_config::insert(
                w.conn(),
                c.version,
                &sha,
                &c.toml,
                central_config::TRIAL,
                None,
                &up,
            )?;
            alerts::config_accepted(w, c.version)?;
            w.append(NewEvent::new(
                now_millis(),
                "agent",
                EventBody::ConfigApplied(ConfigApplied {
                    version: Some(c.version),
                    sha256: Some(sha),
                    source: "central".into(),
                }),
            ))?;
            Ok(())
        })
        .await
}
