//! `storegate run`: the daemon. Opens the database, starts the writer and
//! (as later parts land) devices, sync and API; on SIGTERM/SIGINT stops
//! taking input, lets the writer commit what is queued, and exits.

use tokio::signal::unix::{SignalKind, signal};

use crate::config::Config;
use crate::db::{self, Writer, writer::NoProjections};

/// Errors that stop the daemon from starting.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] db::StoreError),
    #[error("cannot listen for signals: {0}")]
    Signals(std::io::Error),
}

pub async fn run(config: Config) -> Result<(), DaemonError> {
    let path = config.db_path();
    let conn = db::open_write(&path, config.durability)?;
    let (writer, writer_thread) = Writer::spawn(conn, Box::new(NoProjections))?;
    tracing::info!(
        store = %config.store_id,
        db = %path.display(),
        devices = config.devices.len(),
        "storegate is running"
    );

    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let which = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = which, "shutting down: draining the journal writer");
    // Dropping the last handle closes the queue; the writer commits what is
    // still queued and its thread ends.
    drop(writer);
    tokio::task::spawn_blocking(move || writer_thread.join())
        .await
        .ok();
    tracing::info!("stopped cleanly");
    Ok(())
}
