//! `oms-operator`: turns MessagingAccessPoints, Queues and Bridges into running brokers,
//! provisioned queues and replication bridges.
//!
//! Start-up flows `cli` (validated settings) -> `preflight` (API server reachable, CRDs installed)
//! -> admin server with `metrics` -> controllers, until the shutdown signal.

pub mod access_point;
pub mod apply;
pub mod cli;
pub mod conditions;
pub mod context;
pub mod drivers;
pub mod leader;
pub mod metrics;
pub mod preflight;
pub mod probe;
