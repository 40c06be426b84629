//! Simulators that speak the real formats over the real transports, for
//! `storegate demo`, `storegate sim ...` and the tests.

pub mod central;
