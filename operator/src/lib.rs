//! `oms-operator`: turns MessagingAccessPoints, Queues and Bridges into running brokers,
//! provisioned queues and replication bridges.
//!
//! Start-up flows `cli` (validated settings) -> `preflight` (API server reachable, CRDs installed)
//! -> admin server with `metrics` -> controllers, until the shutdown signal.

pub mod cli;
pub mod metrics;
pub mod preflight;
