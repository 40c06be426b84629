//! `storegate run`: the daemon. Opens the database, starts the writer, the
//! devices and the background tasks; on SIGTERM/SIGINT stops taking input,
//! lets the writer commit what is queued, and exits. Under systemd it
//! reports readiness, status and liveness ([`crate::notify`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinSet;

use crate::config::{CentralTransport, Transport};
use crate::db::quota::Quota;
use crate::db::{self, Writer};
use crate::devices::label_sender::{self, Routes};
use crate::devices::{self, DeviceSpec, Ingest, mqtt};
use crate::domain::privacy::MemberKey;
use crate::domain::{Projections, rfid::TagTracker};
use crate::health::HealthBoard;
use crate::metrics::{Metrics, Sources};
use crate::notify::{self, Notifier, Timing};
use crate::setup::Setup;
use crate::shutdown::Shutdown;
use crate::sync::config_pull::ConfigPuller;
use crate::sync::pull::{Puller, What};
use crate::sync::push::PushStats;
use crate::sync::uplink::{Triggers, Uplink, UplinkStats};
use crate::sync::{self, Central, Link};

/// Errors that stop the daemon from starting.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] db::StoreError),
    #[error(transparent)]
    Config(#[from] crate::setup::SetupError),
    #[error("cannot listen for signals: {0}")]
    Signals(std::io::Error),
    #[error("MQTT: {0}")]
    Mqtt(String),
    #[error("central: {0}")]
    Sync(String),
    #[error("cannot listen on {0}: {1} (is another storegate running, or change [api] listen)")]
    Listen(std::net::SocketAddr, std::io::Error),
}

/// How often departed tags are swept and tag sightings flushed.
const TAG_PERIOD: Duration = Duration::from_secs(5);

mod pickup_expiry;
mod reconfigure;

pub use reconfigure::supervise;

/// Run until SIGTERM or SIGINT with the local file alone (no config from
/// central); `storegate run` uses [`supervise`].
pub async fn run(setup: Setup) -> Result<(), DaemonError> {
    run_until(setup, stop_signal()?).await
}

/// A future that completes at SIGTERM or SIGINT, logging which.
fn stop_signal() -> Result<impl std::future::Future<Output = ()>, DaemonError> {
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    Ok(async move {
        let which = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(
            signal = which,
            "shutting down: stopping devices, draining the journal writer"
        );
    })
}

/// Run until `stop` completes (signals for `run`, a timer for `demo`),
/// then stop taking input, let the writer commit what is queued, and return.
pub async fn run_until(
    setup: Setup,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), DaemonError> {
    run_once(setup, None, stop).await.map(|_| ())
}

/// How one run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// `stop` completed: the process ends.
    Stopped,
    /// A central config was accepted or rolled back: run again with what
    /// the database now says.
    Reconfigure,
}

/// One run: start everything, run until `stop` or until `reconfig` asks
/// for a restart, then drain exactly as a clean shutdown does (devices
/// finish their current delivery and its commit, the writer commits what
/// is queued) and return how it ended.
async fn run_once(
    setup: Setup,
    reconfig: Option<reconfigure::Reconfig>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<Ended, DaemonError> {
    let Setup { config, profiles } = setup;
    // Connections, devices and the database all need descriptors; the API
    // caps its connections at half of what this leaves.
    if let Err(e) = crate::api::server::raise_fd_limit() {
        tracing::warn!(error = %e, "cannot raise the open-file limit; keeping it");
    }
    let path = config.db_path();
    let conn = db::open_write(&path, config.durability)?;
    let (writer, writer_thread) = Writer::spawn(conn, Box::new(Projections::new(&config)))?;

    let tags = Arc::new(Mutex::new(TagTracker::new(
        config.rfid.dedup_window_ms,
        config.rfid.departed_after_s,
    )));
    {
        let tags = tags.clone();
        writer
            .transact(move |w| {
                tags.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .load(w.conn(), chrono::Utc::now())
            })
            .await?;
    }
    let health = HealthBoard::default();
    let quota = Quota::default();
    let member_key = MemberKey::load(&writer).await?;
    let ingest = Ingest::new(writer.clone(), health.clone(), tags.clone(), member_key)
        .with_quota(quota.clone());
    let (trigger, shutdown) = crate::shutdown::shutdown_pair();

    let specs: Vec<DeviceSpec> = config
        .devices
        .iter()
        .filter_map(|d| {
            let profile = profiles.get(&d.profile)?.clone();
            health.register(&d.id, &d.profile, d.transport.name());
            Some(DeviceSpec {
                config: d.clone(),
                profile,
            })
        })
        .collect();
    let mqtt_control = |s: &DeviceSpec| {
        s.config.control.is_some()
            && matches!(
                s.profile.control,
                Some(crate::profiles::ControlSpec::Mqtt(_))
            )
    };
    let hub = if specs
        .iter()
        .any(|s| matches!(s.config.transport, Transport::Mqtt { .. }) || mqtt_control(s))
    {
        Some(
            mqtt::Hub::start(&config.mqtt, shutdown.clone())
                .await
                .map_err(|e| DaemonError::Mqtt(e.to_string()))?,
        )
    } else {
        None
    };

    let mut tasks = JoinSet::new();
    let (controls, control_tasks) =
        devices::control::build(&specs, &config.mqtt, hub.as_ref(), &health, &shutdown);
    for task in control_tasks {
        tasks.spawn(task.run(shutdown.clone()));
    }
    let labels_changed = Arc::new(tokio::sync::Notify::new());
    let routes = Routes::from_devices(&specs);
    if !routes.is_empty() {
        tasks.spawn(label_sender::run(
            writer.clone(),
            routes.clone(),
            hub.clone(),
            labels_changed.clone(),
            shutdown.clone(),
        ));
    }
    let (link_tx, link) = tokio::sync::watch::channel(Link::Unknown);
    let push_stats = Arc::new(PushStats::default());
    let mut uplink_stats = None;
    match &config.central {
        Some(c) => {
            let central = Arc::new(
                Central::new(c, &config.store_id).map_err(|e| DaemonError::Sync(e.to_string()))?,
            );
            let reader = Arc::new(Mutex::new(db::open_read(&path)?));
            let (heartbeat_tx, heartbeat) = tokio::sync::watch::channel(None);
            tasks.spawn(sync::heartbeat::run(
                sync::heartbeat::Source {
                    db_path: path.clone(),
                    health: health.clone(),
                    store_id: config.store_id.clone(),
                    started_at: chrono::Utc::now(),
                },
                Duration::from_secs(c.heartbeat_s),
                heartbeat_tx,
                shutdown.clone(),
            ));
            let triggers = Triggers {
                can_pull: central.has_url(),
                ..Triggers::default()
            };
            if let (Some(r), true) = (&reconfig, central.has_url()) {
                tasks.spawn(sync::config_pull::run(
                    ConfigPuller {
                        central: central.clone(),
                        writer: writer.clone(),
                        health: health.clone(),
                        local: r.local.clone(),
                        every: Duration::from_secs(c.poll_config_s),
                        settle: Duration::from_secs(c.config_rollback_s.min(10)),
                        now: triggers.config.clone(),
                        apply: r.apply.clone(),
                    },
                    shutdown.clone(),
                ));
            }
            match &c.transport {
                CentralTransport::Http => {
                    tasks.spawn(sync::push::run_counted(
                        central.clone(),
                        writer.clone(),
                        reader,
                        c.batch_max,
                        Duration::from_secs(c.max_backoff_s),
                        link_tx,
                        push_stats.clone(),
                        shutdown.clone(),
                    ));
                    tasks.spawn(sync::heartbeat::run_http(
                        central.clone(),
                        heartbeat,
                        shutdown.clone(),
                    ));
                }
                CentralTransport::Mqtt(m) => {
                    let stats = Arc::new(UplinkStats::default());
                    uplink_stats = Some(stats.clone());
                    tasks.spawn(sync::uplink::run(
                        Uplink {
                            config: m.clone(),
                            ca_file: c.ca_file.clone(),
                            store_id: config.store_id.clone(),
                            writer: writer.clone(),
                            reader,
                            db_path: path.clone(),
                            batch_max: c.batch_max,
                            max_backoff: Duration::from_secs(c.max_backoff_s),
                            link: link_tx,
                            stats,
                            heartbeat,
                            triggers: triggers.clone(),
                            health: health.clone(),
                        },
                        shutdown.clone(),
                    ));
                }
            }
            if central.has_url() {
                for (what, every, now) in [
                    (What::Prices, c.poll_prices_s, triggers.prices.clone()),
                    (What::Stock, c.poll_stock_s, triggers.stock.clone()),
                    (What::Orders, c.poll_orders_s, triggers.orders.clone()),
                ] {
                    let puller = Puller {
                        central: central.clone(),
                        writer: writer.clone(),
                        what,
                        every: Duration::from_secs(every),
                        locale: config.locale.clone(),
                    };
                    tasks.spawn(sync::pull::run_triggered(
                        puller,
                        link.clone(),
                        labels_changed.clone(),
                        now,
                        shutdown.clone(),
                    ));
                }
                tasks.spawn(pickup_expiry::run(writer.clone(), shutdown.clone()));
            } else {
                tracing::info!("no central.url: prices, stock and pickup orders are not pulled");
            }
        }
        None => tracing::info!("no [central] url: running store-only"),
    }
    // The local API: bind before announcing we run, so a taken port is a
    // start-up error with the address in it, not a silent absence.
    let tokens = crate::api::Tokens::from_config(&config.api);
    // One registry for both listeners, so that they agree.
    let metrics = Metrics::new(Sources {
        link: Some(link.clone()),
        push: push_stats,
        uplink: uplink_stats,
        transport: config.central.as_ref().map(|c| c.transport.name()),
        ..Sources::new(path.clone(), &writer, health.clone())
    })
    .into_fn();
    let api_state = || {
        let mut state = crate::api::ApiState::new(
            config.store_id.clone(),
            path.clone(),
            writer.clone(),
            health.clone(),
            link.clone(),
            tokens.clone(),
        );
        state.metrics = metrics.clone();
        state.controls = controls.clone();
        state.access_points = routes.access_points();
        state.labels_changed = labels_changed.clone();
        state.epcis = crate::epcis::Setup::from_config(&config).ok();
        state.task_verify_after_s = config.tasks.verify_after_s;
        state
    };
    let listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .map_err(|e| DaemonError::Listen(config.api.listen, e))?;
    let mut main_state = api_state();
    main_state.ops_on_main = config.api.ops_listen.is_none();
    tasks.spawn(serve_logged(
        "API",
        crate::api::serve(main_state, listener, shutdown.clone()),
    ));
    if let Some(ops) = config.api.ops_listen {
        let listener = tokio::net::TcpListener::bind(ops)
            .await
            .map_err(|e| DaemonError::Listen(ops, e))?;
        tasks.spawn(serve_logged(
            "ops API",
            crate::api::serve_ops(api_state(), listener, shutdown.clone()),
        ));
    }
    let mut hangup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
    {
        let tokens = tokens.clone();
        let mut shutdown = shutdown.clone();
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = hangup.recv() => {
                        tracing::info!("SIGHUP: re-reading token files");
                        tokens.reload();
                    }
                    _ = shutdown.wait() => break,
                }
            }
        });
    }
    tasks.spawn(crate::retention::run(
        writer.clone(),
        config.journal_retention_h,
        config.disk_quota_mb,
        config.central.is_none(),
        quota,
        health.clone(),
        shutdown.clone(),
    ));
    for spec in specs {
        tasks.spawn(devices::run_device(
            spec,
            ingest.clone(),
            hub.clone(),
            shutdown.clone(),
        ));
    }
    let offline: HashMap<String, u64> = config
        .devices
        .iter()
        .map(|d| (d.id.clone(), d.offline_alert_s))
        .collect();
    tasks.spawn(devices::watch::run(
        writer.clone(),
        health.clone(),
        offline,
        shutdown.clone(),
    ));
    tasks.spawn(devices::antenna_watch::run(
        writer.clone(),
        health.antennas().clone(),
        config.rfid.quiet_after_s,
        shutdown.clone(),
    ));
    tasks.spawn(tag_housekeeping(ingest.clone(), shutdown.clone()));
    tasks.spawn(crate::domain::tasks::verify::run(
        writer.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(price_boundaries(
        writer.clone(),
        config.locale.clone(),
        labels_changed.clone(),
        shutdown.clone(),
    ));
    // Database, devices and API are up: the supervisor's first round tells
    // systemd READY=1 (once the writer has answered), then keeps the
    // status and the watchdog going.
    let notifier = Arc::new(Notifier::from_env());
    if notifier.is_enabled() {
        let status = {
            let (health, link, path) = (health.clone(), link.clone(), path.clone());
            let has_central = config.central.is_some();
            Arc::new(move || status_line(&health, *link.borrow(), has_central, &path))
        };
        tasks.spawn(notify::supervise(
            notifier.clone(),
            writer.clone(),
            Timing::for_watchdog(notify::watchdog_from_env()),
            status,
            shutdown.clone(),
        ));
    }

    let apply = reconfig.as_ref().map(|r| r.apply.clone());
    if let Some(r) = reconfig {
        if let Some(trial) = r.trial {
            tasks.spawn(reconfigure::watch_trial(
                trial,
                writer.clone(),
                health.clone(),
                r.apply.clone(),
                shutdown.clone(),
            ));
        }
    }
    tracing::info!(
        store = %config.store_id,
        db = %path.display(),
        devices = config.devices.len(),
        "storegate is running"
    );

    let ended = tokio::select! {
        _ = stop => Ended::Stopped,
        _ = async {
            match &apply {
                Some(a) => a.notified().await,
                None => std::future::pending().await,
            }
        } => Ended::Reconfigure,
    };
    if ended == Ended::Stopped {
        notifier.stopping();
    } else {
        tracing::info!("stopping devices, sync and the API to run again with the new config");
    }
    trigger.trigger();
    // Device sessions finish their current delivery (and so its commit)
    // before they return.
    let drained = tokio::time::timeout(Duration::from_secs(20), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("some tasks did not stop within 20 s; stopping anyway");
        tasks.abort_all();
    }
    drop((ingest, hub, writer));
    // Dropping the last handle closes the queue; the writer commits what is
    // still queued and its thread ends.
    tokio::task::spawn_blocking(move || writer_thread.join())
        .await
        .ok();
    tracing::info!("stopped cleanly");
    Ok(ended)
}

/// Re-decide shelf prices now (at start-up, so a boundary passed while the
/// agent was down is applied at once) and at every promo start or end, so
/// that labels change at midnight. Wakes the label dispatcher on changes.
async fn price_boundaries(
    writer: Writer,
    locale: String,
    labels_changed: Arc<tokio::sync::Notify>,
    mut shutdown: Shutdown,
) {
    loop {
        let locale = locale.clone();
        let result = writer
            .transact(move |w| {
                let now = chrono::Utc::now();
                let changed = crate::domain::prices::refresh_all(w.conn(), now, &locale)?;
                let next = crate::domain::prices::next_boundary(w.conn(), now)?;
                Ok((changed, next))
            })
            .await;
        let wait = match result {
            Ok((changed, next)) => {
                if !changed.is_empty() {
                    tracing::info!(
                        skus = changed.len(),
                        "shelf prices changed; label updates pending"
                    );
                    labels_changed.notify_one();
                }
                // Wake at the boundary (plus a hair, so it is in the past),
                // and at least every minute in case the clock jumps.
                next.map_or(Duration::from_secs(60), |t| {
                    (t - chrono::Utc::now())
                        .to_std()
                        .unwrap_or_default()
                        .saturating_add(Duration::from_millis(5))
                        .min(Duration::from_secs(60))
                })
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot re-decide shelf prices; retrying");
                Duration::from_secs(5)
            }
        };
        if !shutdown.sleep(wait).await {
            break;
        }
    }
}

/// The status line systemd shows: "12 devices, 11 up; backlog 0; central
/// online".
fn status_line(health: &HealthBoard, link: Link, has_central: bool, db: &Path) -> String {
    let (up, down) = health.counts();
    let devices = match up + down {
        1 => "1 device".to_string(),
        n => format!("{n} devices"),
    };
    let backlog = db::open_read(db)
        .and_then(|conn| Ok(db::journal::head(&conn)? - sync::state::read(&conn)?.last_acked_seq));
    let backlog = match backlog {
        Ok(n) => format!("backlog {n}"),
        Err(_) => "database unreadable".to_string(),
    };
    let central = match (has_central, link) {
        (false, _) => "store-only",
        (true, Link::Online) => "central online",
        (true, Link::Offline) => "central offline",
        (true, Link::Unknown) => "central not reached yet",
    };
    format!("{devices}, {up} up; {backlog}; {central}")
}

async fn serve_logged(
    what: &'static str,
    server: impl std::future::Future<Output = std::io::Result<()>>,
) {
    if let Err(e) = server.await {
        tracing::error!(error = %e, "{what} stopped");
    }
}

/// Journal `tag_departed` for tags not read for `departed_after_s`, and
/// flush last-seen times to the `tags` table.
async fn tag_housekeeping(ingest: Ingest, mut shutdown: Shutdown) {
    while shutdown.sleep(TAG_PERIOD).await {
        if let Err(e) = ingest.sweep_tags().await {
            tracing::warn!(error = %e, "tag housekeeping failed; will retry");
        }
    }
}
