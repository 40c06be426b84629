//! Simulators that speak the real formats over the real transports, for
//! `storegate demo`, `storegate sim ...` and the tests.

pub mod catalog;
pub mod central;
pub mod central_config;
mod central_labels;
pub mod central_mqtt;
pub mod central_orders;
pub mod cli;
pub mod esl;
pub mod impinj;
pub mod m100;
pub mod mqtt;
pub mod nats_cluster;
pub mod oepl;
pub mod pos;
pub mod pty;
pub mod say;
pub mod shelf;
pub mod zebra;
