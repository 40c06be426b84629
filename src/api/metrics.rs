//! A basic `/metrics` rendering (Prometheus text format) from what the API
//! can see by itself: the database, the writer's counters and the health
//! board. The daemon may replace it with a richer one (ingest counters per
//! kind and device, the commit latency histogram, sync attempts) through
//! [`super::ApiState::metrics`].

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::db::{self, Writer, journal};
use crate::devices::health::HealthBoard;

/// Renders the `/metrics` text. Called on a blocking thread, so it may
/// read the database.
pub type MetricsFn = Arc<dyn Fn() -> String + Send + Sync>;

/// The default metrics: journal head and backlog, sync failures, device
/// up/down and frame counters, quarantined frames, database size, writer
/// commit counters.
pub fn basic(db_path: PathBuf, writer: Writer, health: HealthBoard) -> MetricsFn {
    Arc::new(move || render(&db_path, &writer, &health))
}

fn render(db_path: &std::path::Path, writer: &Writer, health: &HealthBoard) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, kind: &str, samples: &[(String, f64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };

    // Database figures; when the database cannot be read they are left
    // out and `storegate_db_up` says so.
    let figures = db::open_read(db_path).and_then(|conn| {
        let head = journal::head(&conn)?;
        let sync = crate::sync::state::read(&conn)?;
        let quarantined = journal::quarantined(&conn)?;
        Ok((head, sync, quarantined))
    });
    gauge(
        "storegate_db_up",
        "Whether the database could be read.",
        "gauge",
        &[(String::new(), f64::from(u8::from(figures.is_ok())))],
    );
    if let Ok((head, sync, quarantined)) = &figures {
        gauge(
            "storegate_journal_head_seq",
            "Last journal seq assigned.",
            "gauge",
            &[(String::new(), *head as f64)],
        );
        gauge(
            "storegate_sync_backlog_events",
            "Journaled events central has not acknowledged yet.",
            "gauge",
            &[(String::new(), (head - sync.last_acked_seq) as f64)],
        );
        gauge(
            "storegate_sync_consecutive_failures",
            "Failed sync attempts since the last success.",
            "gauge",
            &[(String::new(), sync.consecutive_failures as f64)],
        );
        gauge(
            "storegate_quarantined_frames",
            "Device input kept in quarantine because it did not parse.",
            "gauge",
            &[(String::new(), *quarantined as f64)],
        );
    }
    gauge(
        "storegate_db_size_bytes",
        "Database file plus WAL on disk.",
        "gauge",
        &[(String::new(), db::size_on_disk(db_path) as f64)],
    );

    let stats = writer.stats();
    gauge(
        "storegate_writer_groups_total",
        "Commit groups written.",
        "counter",
        &[(String::new(), stats.groups.load(Ordering::Relaxed) as f64)],
    );
    gauge(
        "storegate_writer_events_total",
        "Events committed since start.",
        "counter",
        &[(String::new(), stats.events.load(Ordering::Relaxed) as f64)],
    );
    gauge(
        "storegate_writer_failed_groups_total",
        "Commit groups that failed.",
        "counter",
        &[(
            String::new(),
            stats.failed_groups.load(Ordering::Relaxed) as f64,
        )],
    );
    gauge(
        "storegate_writer_last_group_seconds",
        "Duration of the last commit group.",
        "gauge",
        &[(
            String::new(),
            stats.last_group_us.load(Ordering::Relaxed) as f64 / 1e6,
        )],
    );

    let devices = health.snapshot();
    let up: Vec<(String, f64)> = devices
        .iter()
        .map(|d| {
            (
                format!("{{device=\"{}\"}}", escape(&d.id)),
                f64::from(u8::from(d.up)),
            )
        })
        .collect();
    gauge(
        "storegate_device_up",
        "Whether a device is connected.",
        "gauge",
        &up,
    );
    let frames: Vec<(String, f64)> = devices
        .iter()
        .flat_map(|d| {
            let id = escape(&d.id);
            [
                (
                    format!("{{device=\"{id}\",result=\"ok\"}}"),
                    d.frames_ok as f64,
                ),
                (
                    format!("{{device=\"{id}\",result=\"bad\"}}"),
                    d.frames_bad as f64,
                ),
            ]
        })
        .collect();
    gauge(
        "storegate_device_frames_total",
        "Frames received per device, parsed or not.",
        "counter",
        &frames,
    );
    out
}

/// Escape a Prometheus label value.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
