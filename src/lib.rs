//! storegate: the in-store edge agent. Devices -> events -> journal ->
//! projections -> outputs; see DESIGN.md in the docs for the invariants.

pub mod api;
pub mod backoff;
pub mod bench;
pub mod cli;
pub mod codecs;
pub mod config;
pub mod daemon;
pub mod db;
pub mod demo;
pub mod devices;
pub mod domain;
pub mod event;
pub mod health;
pub mod metrics;
pub mod notify;
pub mod profiles;
pub mod retention;
pub mod setup;
pub mod shutdown;
pub mod sim;
pub mod status;
pub mod sync;

/// The version central and `--version` see.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
