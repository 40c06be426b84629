//! `storegate status`: what the database says, read beside a running
//! daemon through a read-only connection.

use std::fmt::Write as _;
use std::path::Path;

use rusqlite::Connection;

use crate::db::{self, SqlContext, StoreError, journal};
use crate::event::ts_from_millis;

/// Render the status report of the database at `path`.
pub fn report(path: &Path) -> Result<String, StoreError> {
    let conn = db::open_read(path)?;
    let mut out = String::new();
    let head = journal::head(&conn)?;
    let oldest = journal::oldest(&conn)?;
    let _ = writeln!(
        out,
        "database   {} ({})",
        path.display(),
        human_bytes(db::size_on_disk(path))
    );
    let _ = writeln!(
        out,
        "journal    head seq {head}, oldest kept {}",
        oldest.map_or("none (empty)".to_string(), |s| s.to_string())
    );
    config_lines(&conn, &mut out)?;
    sync_lines(&conn, head, &mut out)?;
    device_lines(&conn, &mut out)?;
    let (pending, ok, failed) = crate::domain::labels::summary(&conn)?;
    let _ = writeln!(
        out,
        "labels     {ok} ok, {pending} pending, {failed} failed"
    );
    let p = crate::domain::pickup::summary(&conn)?;
    let _ = writeln!(
        out,
        "pickups    {} to pick, {} ready for the customer, {} to put back on the shelf; orders version {}",
        p.to_pick, p.ready, p.to_return, p.orders_version
    );
    let alerts = crate::domain::alerts::open_alerts(&conn)?;
    if alerts.is_empty() {
        let _ = writeln!(out, "alerts     none open");
    } else {
        let _ = writeln!(out, "alerts     {} open:", alerts.len());
        for a in &alerts {
            let _ = writeln!(out, "  {:<14} {:<8} {}", a.code, a.severity, a.message);
        }
    }
    let tasks = crate::domain::tasks::open_counts(&conn)?;
    if tasks.is_empty() {
        let _ = writeln!(out, "tasks      none open");
    } else {
        let each: Vec<String> = tasks.iter().map(|(t, n)| format!("{t} {n}")).collect();
        let total: i64 = tasks.values().sum();
        let _ = writeln!(out, "tasks      {total} open: {}", each.join(", "));
    }
    let _ = writeln!(out, "quarantine {} frames", journal::quarantined(&conn)?);
    let counts = journal::counts_per_kind(&conn)?;
    if counts.is_empty() {
        let _ = writeln!(out, "events     none yet");
    } else {
        let _ = writeln!(out, "events per kind:");
        for (kind, n) in counts {
            let _ = writeln!(out, "  {kind:<16} {n}");
        }
    }
    Ok(out)
}

fn sync_lines(conn: &Connection, head: i64, out: &mut String) -> Result<(), StoreError> {
    let (acked, pv, sv, success, error, failures): (i64, i64, i64, Option<i64>, Option<String>, i64) = conn
        .query_row(
            "SELECT last_acked_seq, price_version, stock_version, last_success_ms, last_error, consecutive_failures
             FROM sync_state WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
        )
        .ctx("reading the sync state")?;
    let _ = writeln!(
        out,
        "sync       acked through {acked}, backlog {}, price version {pv}, stock version {sv}",
        head - acked
    );
    let _ = writeln!(
        out,
        "           last success {}, consecutive failures {failures}{}",
        success.map_or("never".into(), |ms| crate::event::format_ts(
            &ts_from_millis(ms)
        )),
        error.map_or(String::new(), |e| format!(", last error: {e}"))
    );
    Ok(())
}

/// Which config runs and where it came from (spec/fleet.md 4), and a
/// newer central config that was refused.
fn config_lines(conn: &Connection, out: &mut String) -> Result<(), StoreError> {
    use crate::db::central_config as cc;
    match cc::running(conn)? {
        None => {
            let _ = writeln!(out, "config     the local file");
        }
        Some(c) => {
            let _ = writeln!(
                out,
                "config     central v{} over the local file ({}, sha256 {}, since {})",
                c.version,
                if c.state == cc::TRIAL {
                    "ON TRIAL: waiting for its devices"
                } else {
                    "active"
                },
                &c.sha256[..c.sha256.len().min(12)],
                crate::event::format_ts(&ts_from_millis(c.at_ms))
            );
        }
    }
    if let Some(n) =
        cc::newest(conn)?.filter(|n| n.state == cc::REJECTED || n.state == cc::ROLLED_BACK)
    {
        let _ = writeln!(
            out,
            "           central v{} {}: {}",
            n.version,
            n.state.replace('_', " "),
            n.problems.unwrap_or_default().replace('\n', "; ")
        );
    }
    Ok(())
}

/// How the journal goes to central; over MQTT, the uplink as the running
/// daemon last wrote it beside the database (broker, unacknowledged
/// batches, last ack).
pub fn central_lines(central: Option<&crate::config::CentralConfig>, db_path: &Path) -> String {
    let Some(c) = central else {
        return "central    none (store-only)\n".into();
    };
    let mut out = format!("central    transport {}", c.transport.name());
    if let crate::config::CentralTransport::Mqtt(m) = &c.transport {
        let file = crate::sync::uplink::status_file(db_path);
        let snapshot = std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice::<crate::sync::uplink::Snapshot>(&b).ok());
        match snapshot {
            None => {
                let _ = write!(
                    out,
                    ", brokers {} (no uplink status yet: is the daemon running?)",
                    m.brokers.join(", ")
                );
            }
            Some(s) => {
                let _ = write!(
                    out,
                    ", {}, {} unacknowledged batch{}, last ack {}",
                    match (&s.broker, s.connected) {
                        (Some(b), true) => format!("connected to {b}"),
                        _ => "not connected".into(),
                    },
                    s.unacked_batches,
                    if s.unacked_batches == 1 { "" } else { "es" },
                    match (s.last_ack, &s.last_ack_at) {
                        (Some(n), Some(at)) => format!("{n} at {at}"),
                        _ => "none since start".into(),
                    }
                );
                if let Some(seq) = s.oversize_seq {
                    let _ = write!(
                        out,
                        "; HELD UP by event {seq}, bigger than max_payload_bytes"
                    );
                }
            }
        }
    } else {
        let _ = write!(out, ", {}", c.url);
    }
    out.push('\n');
    out
}

fn device_lines(conn: &Connection, out: &mut String) -> Result<(), StoreError> {
    let board = crate::devices::watch::read_persisted(conn)?;
    if board.is_empty() {
        let _ = writeln!(out, "devices    none reported yet");
        return Ok(());
    }
    let up = board.iter().filter(|h| h.up).count();
    let _ = writeln!(out, "devices    {up} up, {} down:", board.len() - up);
    for h in &board {
        let _ = writeln!(
            out,
            "  {:<16} {:<5} since {}  frames ok {} bad {}  reconnects {}{}",
            h.id,
            if h.up { "up" } else { "DOWN" },
            crate::event::format_ts(&h.since),
            h.frames_ok,
            h.frames_bad,
            h.reconnects,
            h.last_error
                .as_ref()
                .filter(|_| !h.up)
                .map_or(String::new(), |e| format!("  ({e})"))
        );
    }
    Ok(())
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
