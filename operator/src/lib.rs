//! `oms-operator`: turns MessagingAccessPoints, Queues and Bridges into running brokers,
//! provisioned queues and replication bridges.
//!
//! Start-up flows `cli` (validated settings) -> `preflight` (API server reachable, CRDs installed)
//! -> admin server with `metrics` -> leader election (`oms_lease`) -> `pki` (the cluster CA) -> controllers
//! (`access_point`, `queue`, `bridge`, `gateway`), until the shutdown signal. `drivers` render managed brokers; `admin` provisions queues on them.

pub mod access_point;
pub mod admin;
pub mod apply;
pub mod binding;
pub mod bridge;
pub mod broker_tls;
pub mod cert_manager;
pub mod certificates;
pub mod cli;
pub mod conditions;
pub mod context;
pub mod drivers;
pub mod exposure;
pub mod gateway;
pub mod metrics;
pub mod pki;
pub mod pod_exec;
pub mod preflight;
pub mod probe;
pub mod queue;
pub mod tenancy;
pub mod workload;
