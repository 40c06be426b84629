//! Central sync (spec/sync-api.md): push the journal exactly once, pull
//! prices and stock baselines.

pub mod client;
pub mod heartbeat;
pub mod pull;
pub mod push;
pub mod state;
pub mod uplink;

pub use client::{Central, SyncError};
pub use push::Link;
