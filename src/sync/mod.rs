//! Central sync (spec/sync-api.md): push the journal exactly once, pull
//! prices and stock baselines and central's config.

pub mod client;
pub mod config_pull;
pub mod heartbeat;
pub mod pull;
pub mod push;
pub mod state;
pub mod uplink;

pub use client::{Central, SyncError};
pub use push::Link;
