//! storegate: the in-store edge agent. Devices -> events -> journal ->
//! projections -> outputs; see DESIGN.md in the docs for the invariants.

pub mod api;
pub mod backoff;
// The simulators, the demo and the benches: developer tools, not the
// agent. A store's build leaves them out (`--no-default-features`), so the
// agent it runs links no fake central.
#[cfg(feature = "devtools")]
pub mod bench;
pub mod cli;
pub mod codecs;
pub mod config;
pub mod daemon;
pub mod db;
#[cfg(feature = "devtools")]
pub mod demo;
pub mod devices;
pub mod domain;
pub mod epcis;
pub mod event;
pub mod health;
pub mod metrics;
pub mod notify;
pub mod profiles;
pub mod retention;
pub mod setup;
pub mod shutdown;
#[cfg(feature = "devtools")]
pub mod sim;
pub mod status;
pub mod sync;

/// The version central and `--version` see.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
