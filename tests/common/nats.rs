//! The real nats-server cluster harness lives in the library
//! (`storegate::sim::nats_cluster`), shared with `storegate bench uplink`.

#[allow(unused_imports)]
pub use storegate::sim::nats_cluster::NatsCluster;
