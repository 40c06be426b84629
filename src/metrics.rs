//! `/metrics`: the agent's figures for Prometheus (spec/local-api.md),
//! kept in a prometheus-client registry and rendered as text.
//!
//! Nothing here costs the ingest path more than a few relaxed atomic adds:
//!
//! - Events per kind and device are derived from the journal at scrape
//!   time, incrementally: each scrape counts only the rows committed since
//!   the previous one (one range query on the journal's primary key), so
//!   the writer does no bookkeeping at all and only committed events are
//!   ever counted. Counted from when the agent started, like any counter.
//! - Commit latency comes from the writer's per-group timings, a lock-free
//!   histogram in [`WriterStats`].
//! - Sync attempts and failures are atomics the pusher bumps
//!   ([`PushStats`]).
//! - Devices come from the health board; backlog, quarantine, labels and
//!   alerts are read at scrape time on a read-only connection (WAL: it
//!   never waits for the writer nor holds it up).
//!
//! The output is the OpenMetrics text format that prometheus-client
//! writes, served under its own content type ([`CONTENT_TYPE`]): under
//! Prometheus' older `text/plain; version=0.0.4` a strict parser rejects
//! the `# EOF` line and the `info` type.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};
use rusqlite::Connection;
use tokio::sync::watch;

use crate::db::writer::WriterStats;
use crate::db::{self, SqlContext, StoreError, Writer, journal};
use crate::event::Seq;
use crate::health::HealthBoard;
use crate::sync::Link;
use crate::sync::push::PushStats;
use crate::sync::uplink::UplinkStats;

/// Journal rows one scrape counts at most. A scrape after a long pause
/// (or a burst beyond this per scrape interval) catches up over several
/// scrapes instead of holding the request for long.
const EVENTS_PER_SCRAPE: i64 = 100_000;

/// The content type of what [`Metrics::render`] writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Which build is running, as `storegate_build_info`'s labels: a fleet
/// dashboard shows which stores still run an old version or which
/// architecture a problem is on.
fn build_info() -> prometheus_client::metrics::info::Info<Vec<(&'static str, String)>> {
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    prometheus_client::metrics::info::Info::new(vec![
        ("version", env!("CARGO_PKG_VERSION").to_string()),
        // The architecture and OS it was built for (`x86_64-linux`,
        // `aarch64-linux`, `arm-linux`), from the compiler's constants:
        // no build script needed.
        (
            "target",
            format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS),
        ),
        ("profile", profile.to_string()),
    ])
}

/// What the metrics are read from.
pub struct Sources {
    /// The database; every scrape opens a read-only connection.
    pub db_path: PathBuf,
    /// The writer's counters and commit timings.
    pub writer: Arc<WriterStats>,
    /// The last committed seq: events after it at start-up are counted.
    pub head: watch::Receiver<Seq>,
    pub health: HealthBoard,
    /// Whether central is reachable; `None` leaves `central_online` out.
    pub link: Option<watch::Receiver<Link>>,
    /// The pusher's counters (zero when there is no pusher).
    pub push: Arc<PushStats>,
    /// The MQTT uplink's figures, when central is reached over MQTT.
    pub uplink: Option<Arc<UplinkStats>>,
    /// `[central] transport`, when there is a central.
    pub transport: Option<&'static str>,
}

impl Sources {
    /// Sources without a link to central and with fresh push counters.
    /// Holds no [`Writer`] handle, so it never keeps the writer running.
    pub fn new(db_path: PathBuf, writer: &Writer, health: HealthBoard) -> Sources {
        Sources {
            db_path,
            writer: writer.stats().clone(),
            head: writer.head(),
            health,
            link: None,
            push: Arc::new(PushStats::default()),
            uplink: None,
            transport: None,
        }
    }
}

/// Renders the `/metrics` text. Called on a blocking thread, so it may
/// read the database.
pub type MetricsFn = Arc<dyn Fn() -> String + Send + Sync>;

/// Every family over what the API sees by itself: sync attempts stay 0
/// and `central_online` is left out. The daemon replaces it with one that
/// shares the pusher's counters and the link.
pub fn basic(db_path: PathBuf, writer: &Writer, health: HealthBoard) -> MetricsFn {
    Metrics::new(Sources::new(db_path, writer, health)).into_fn()
}

/// The registry behind `/metrics`. Every family is produced at scrape time
/// by a collector over [`Sources`].
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    pub fn new(sources: Sources) -> Metrics {
        let mut registry = Registry::with_prefix("storegate");
        registry.register("build", "The running build (always 1)", build_info());
        let after = *sources.head.borrow();
        registry.register_collector(Box::new(StoreCollector {
            db_path: sources.db_path,
            events: Mutex::new(EventTotals {
                after,
                counts: BTreeMap::new(),
            }),
        }));
        registry.register_collector(Box::new(WriterCollector(sources.writer)));
        registry.register_collector(Box::new(DeviceCollector(sources.health)));
        registry.register_collector(Box::new(SyncCollector {
            link: sources.link,
            push: sources.push,
            uplink: sources.uplink,
            transport: sources.transport,
        }));
        Metrics { registry }
    }

    /// The text exposition. Reads the database: call it off the runtime
    /// (the API does, on a blocking thread).
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding the metrics failed");
        }
        out
    }

    /// As the function `/metrics` calls.
    pub fn into_fn(self) -> MetricsFn {
        Arc::new(move || self.render())
    }
}

// ------------------------------------------------------------ collectors

/// Events per (kind, device) counted so far, and up to which seq.
struct EventTotals {
    after: Seq,
    counts: BTreeMap<(String, String), u64>,
}

/// Figures from one read snapshot of the database.
struct StoreFigures {
    head: Seq,
    last_acked: Seq,
    quarantined: i64,
    labels: BTreeMap<String, i64>,
    alerts: BTreeMap<String, i64>,
    pickup_orders: BTreeMap<String, i64>,
    tasks_open: BTreeMap<String, i64>,
}

/// Journal, sync backlog, quarantine, labels, alerts and database size.
struct StoreCollector {
    db_path: PathBuf,
    /// Locked for the whole scrape, so that two scrapes at once (main and
    /// ops listener) never count the same rows twice.
    events: Mutex<EventTotals>,
}

impl fmt::Debug for StoreCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreCollector")
            .field("db_path", &self.db_path)
            .finish_non_exhaustive()
    }
}

impl Collector for StoreCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let mut totals = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        let figures = read_store(&self.db_path, &mut totals);
        if let Err(e) = &figures {
            tracing::warn!(error = %e, "metrics: the database cannot be read");
        }
        gauge(
            &mut enc,
            "db_up",
            "Whether the database could be read for this scrape.",
            None,
            i64::from(figures.is_ok()),
        )?;
        gauge(
            &mut enc,
            "db",
            "Database file plus WAL on disk.",
            Some(&Unit::Bytes),
            i64::try_from(db::size_on_disk(&self.db_path)).unwrap_or(i64::MAX),
        )?;
        counter_family(
            &mut enc,
            "events",
            "Events journaled since the agent started, per kind and device.",
            totals.counts.iter().map(|((kind, device), n)| {
                ([("kind", kind.as_str()), ("device", device.as_str())], *n)
            }),
        )?;
        let Ok(f) = figures else {
            return Ok(());
        };
        gauge(
            &mut enc,
            "journal_head_seq",
            "Last journal seq assigned.",
            None,
            f.head,
        )?;
        gauge(
            &mut enc,
            "backlog_events",
            "Journaled events central has not acknowledged yet.",
            None,
            f.head - f.last_acked,
        )?;
        gauge(
            &mut enc,
            "quarantined_frames",
            "Device input kept in quarantine because it did not parse (newest 10000 kept).",
            None,
            f.quarantined,
        )?;
        gauge_family(
            &mut enc,
            "labels",
            "Shelf labels per state: pending (update not yet confirmed), ok, failed.",
            f.labels
                .iter()
                .map(|(state, n)| ([("state", state.as_str())], *n)),
        )?;
        gauge_family(
            &mut enc,
            "alerts_open",
            "Open alerts per code (0 for codes that had alerts, all resolved).",
            f.alerts
                .iter()
                .map(|(code, n)| ([("code", code.as_str())], *n)),
        )?;
        gauge_family(
            &mut enc,
            "pickup_orders",
            "Pickup orders the store holds per state: open (reserved, to pick), picked (waiting for the customer), handed_over, expired, cancelled.",
            f.pickup_orders
                .iter()
                .map(|(state, n)| ([("state", state.as_str())], *n)),
        )?;
        gauge_family(
            &mut enc,
            "tasks_open",
            "Staff tasks open or taken, per task (refill, relabel, count, check_device, return_to_shelf).",
            f.tasks_open
                .iter()
                .map(|(task, n)| ([("task", task.as_str())], *n)),
        )
    }
}

/// Read everything in one snapshot and bring the event totals up to date.
/// The totals change only if the whole read succeeded.
fn read_store(path: &Path, totals: &mut EventTotals) -> Result<StoreFigures, StoreError> {
    let conn = db::open_read(path)?;
    let tx = conn
        .unchecked_transaction()
        .ctx("starting a metrics read")?;
    let head = journal::head(&tx)?;
    let last_acked = crate::sync::state::read(&tx)?.last_acked_seq;
    let quarantined = journal::quarantined(&tx)?;
    let mut labels: BTreeMap<String, i64> = ["pending", "ok", "failed"]
        .into_iter()
        .map(|s| (s.to_string(), 0))
        .collect();
    labels.extend(pairs(
        &tx,
        "SELECT state, count(*) FROM labels GROUP BY state",
    )?);
    // Every code that ever had an alert, so that a resolved one reads 0
    // instead of vanishing. The table holds a few rows per incident.
    let alerts = pairs(
        &tx,
        "SELECT code, SUM(resolved_seq IS NULL) FROM alerts GROUP BY code",
    )?
    .into_iter()
    .collect();
    let mut pickup_orders: BTreeMap<String, i64> =
        ["open", "picked", "handed_over", "expired", "cancelled"]
            .into_iter()
            .map(|s| (s.to_string(), 0))
            .collect();
    pickup_orders.extend(pairs(
        &tx,
        "SELECT state, count(*) FROM pickup_orders GROUP BY state",
    )?);
    let mut tasks_open: BTreeMap<String, i64> = [
        "refill",
        "relabel",
        "count",
        "check_device",
        "return_to_shelf",
    ]
    .into_iter()
    .map(|s| (s.to_string(), 0))
    .collect();
    tasks_open.extend(pairs(
        &tx,
        "SELECT task, count(*) FROM tasks WHERE state IN ('open', 'taken') GROUP BY task",
    )?);

    let upto = head.min(totals.after.saturating_add(EVENTS_PER_SCRAPE));
    let mut st = tx
        .prepare_cached(
            "SELECT kind, device, count(*) FROM journal WHERE seq > ?1 AND seq <= ?2 GROUP BY kind, device",
        )
        .ctx("counting new events")?;
    let new: Vec<(String, String, i64)> = st
        .query_map([totals.after, upto], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .and_then(Iterator::collect)
        .ctx("counting new events")?;
    if upto > totals.after {
        for (kind, device, n) in new {
            *totals.counts.entry((kind, device)).or_default() += n.max(0) as u64;
        }
        totals.after = upto;
    }
    Ok(StoreFigures {
        head,
        last_acked,
        quarantined,
        labels,
        alerts,
        pickup_orders,
        tasks_open,
    })
}

/// `(text, count)` rows of a two-column query.
fn pairs(conn: &Connection, sql: &str) -> Result<Vec<(String, i64)>, StoreError> {
    let mut st = conn.prepare_cached(sql).ctx("reading metrics")?;
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .and_then(Iterator::collect)
        .ctx("reading metrics")
}

/// The writer: commit latency and commit groups.
#[derive(Debug)]
struct WriterCollector(Arc<WriterStats>);

impl Collector for WriterCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let stats = &self.0;
        let (sum, count, buckets) = stats.commit_times.snapshot();
        let seconds = Unit::Seconds;
        let mut m = enc.encode_descriptor(
            "commit",
            "Time to commit one group of writes to the journal (BEGIN to COMMIT, fsync included).",
            Some(&seconds),
            MetricType::Histogram,
        )?;
        m.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        counter(
            &mut enc,
            "commit_groups",
            "Commit groups written.",
            stats.groups.load(Ordering::Relaxed),
        )?;
        counter(
            &mut enc,
            "commit_failed_groups",
            "Commit groups that failed; their producers kept their input and retried.",
            stats.failed_groups.load(Ordering::Relaxed),
        )
    }
}

/// Devices: up or down, frames parsed and not.
struct DeviceCollector(HealthBoard);

impl fmt::Debug for DeviceCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeviceCollector")
    }
}

impl Collector for DeviceCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let devices = self.0.snapshot();
        gauge(
            &mut enc,
            "degraded",
            "Whether /healthz says degraded (1): a device down or not ingesting, or a store-wide problem.",
            None,
            i64::from(!self.0.degraded_reasons().is_empty()),
        )?;
        gauge_family(
            &mut enc,
            "store_problem",
            "Store-wide problems that stop or threaten ingest (e.g. disk_quota), 1 while present.",
            self.0
                .problems()
                .keys()
                .map(|name| ([("problem", name.clone())], 1))
                .collect::<Vec<_>>(),
        )?;
        gauge_family(
            &mut enc,
            "device_up",
            "Whether a device is connected (1) or not (0).",
            devices
                .iter()
                .map(|d| ([("device", d.id.as_str())], i64::from(d.up))),
        )?;
        gauge_family(
            &mut enc,
            "device_stuck",
            "Whether a device's input is held because it cannot be stored (1), e.g. disk full.",
            devices
                .iter()
                .map(|d| ([("device", d.id.as_str())], i64::from(d.stuck.is_some()))),
        )?;
        let antennas = self.0.antennas().snapshot();
        let port_labels = |a: &crate::health::antennas::AntennaStats| {
            [
                ("device", a.device.clone()),
                ("antenna", a.antenna.to_string()),
                ("zone", a.zone.clone()),
            ]
        };
        counter_family(
            &mut enc,
            "antenna_reads",
            "Tag reads per antenna port of readers that report ports (llrp), since the agent started; rate() is the read rate.",
            antennas
                .iter()
                .filter(|a| a.reads > 0)
                .map(|a| (port_labels(a), a.reads)),
        )?;
        gauge_family(
            &mut enc,
            "antenna_rssi_dbm_mean",
            "Mean peak RSSI (dBm, rounded) of an antenna port's recent reads (about the last 20).",
            antennas
                .iter()
                .filter_map(|a| a.rssi_mean_dbm.map(|m| (port_labels(a), m.round() as i64))),
        )?;
        counter_family(
            &mut enc,
            "device_frames",
            "Frames received per device: result ok parsed, bad did not (and went to quarantine).",
            devices.iter().flat_map(|d| {
                [
                    ([("device", d.id.as_str()), ("result", "ok")], d.frames_ok),
                    ([("device", d.id.as_str()), ("result", "bad")], d.frames_bad),
                ]
            }),
        )
    }
}

/// Central sync: attempts, failures and the link.
#[derive(Debug)]
struct SyncCollector {
    link: Option<watch::Receiver<Link>>,
    push: Arc<PushStats>,
    uplink: Option<Arc<UplinkStats>>,
    transport: Option<&'static str>,
}

impl Collector for SyncCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        counter(
            &mut enc,
            "sync_attempts",
            "Pushes of journal batches to central attempted since start.",
            self.push.attempts.load(Ordering::Relaxed),
        )?;
        counter(
            &mut enc,
            "sync_failures",
            "Pushes that failed: central unreachable, refusing or erroring.",
            self.push.failures.load(Ordering::Relaxed),
        )?;
        if let Some(link) = &self.link {
            gauge(
                &mut enc,
                "central_online",
                "Whether the last push reached central (1) or not (0).",
                None,
                i64::from(*link.borrow() == Link::Online),
            )?;
        }
        if let Some(transport) = self.transport {
            gauge_family(
                &mut enc,
                "central_transport",
                "How the journal goes to central: 1 for the configured transport.",
                [([("transport", transport)], 1)],
            )?;
        }
        if let Some(uplink) = &self.uplink {
            let s = uplink.snapshot();
            gauge_family(
                &mut enc,
                "uplink_connected",
                "Whether the MQTT uplink is connected (1), labelled with the broker.",
                [(
                    [("broker", s.broker.as_deref().unwrap_or(""))],
                    i64::from(s.connected),
                )],
            )?;
            gauge(
                &mut enc,
                "uplink_unacked_batches",
                "Batches published to central's broker and not yet acknowledged by central.",
                None,
                s.unacked_batches as i64,
            )?;
            gauge(
                &mut enc,
                "uplink_last_ack_seq",
                "The acked_through of central's last ack over MQTT (0: none since start).",
                None,
                s.last_ack.unwrap_or(0),
            )?;
            counter(
                &mut enc,
                "uplink_batches_sent",
                "Batches published to central's broker since start.",
                s.batches_sent,
            )?;
            counter(
                &mut enc,
                "uplink_resends",
                "Times the uplink started again from central's last ack (timeout, reconnect, low ack).",
                s.resends,
            )?;
            counter(
                &mut enc,
                "uplink_connections",
                "Connections made to central's brokers since start.",
                s.connections,
            )?;
        }
        Ok(())
    }
}

// --------------------------------------------------------------- helpers

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &'static str,
    help: &str,
    unit: Option<&Unit>,
    value: i64,
) -> fmt::Result {
    let m = enc.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    ConstGauge::new(value).encode(m)
}

fn counter(enc: &mut DescriptorEncoder, name: &'static str, help: &str, value: u64) -> fmt::Result {
    let m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(value).encode(m)
}

fn gauge_family<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &'static str,
    help: &str,
    samples: impl IntoIterator<Item = (L, i64)>,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        ConstGauge::new(value).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter_family<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &'static str,
    help: &str,
    samples: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        ConstCounter::new(value).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}
