//! Test harness over the real parts: local control planes started by `e2e/harness/cluster.sh`,
//! the pinned tools in `.bin/`, and our own binaries run as subprocesses.
//!
//! A test asks for a cluster by name ([`Cluster::up`], idempotent), makes a fresh namespace
//! ([`Cluster::fresh_namespace`], deleted on drop), and drives it with the real kubectl and helm.

// A test harness: a missing tool or path should stop the test loudly, not be handled.
#![allow(clippy::missing_panics_doc, clippy::expect_used)]

mod admin;
mod broker;
mod cert_manager;
mod cluster;
mod fault;
mod gateway;
mod nats_jwt;
mod pod;
mod process;
mod rocketmq;
mod tls;
mod verdict;

pub use admin::{admin_address, cpu_model_and_memory_kib, http_get, metric, proc_status_kib, wait_metric};
pub use broker::{Broker, TestBroker, broker_script};
pub use cert_manager::{CertManager, ca_issuer};
pub use cluster::{CRD_NAMES, Cluster, Namespace, Operator, Scenario, condition};
pub use fault::FaultProxy;
pub use gateway::{TlsPaths, gateway_consume_attempt, gateway_end, gateway_publish_attempt};
pub use nats_jwt::NatsAccounts;
pub use pod::{POD_MOUNT_ROOT, PodProcess, deployment_files};
pub use process::{
    DEADLINE, free_server_port, poll, poll_interval, repo_root, run, run_ok, state_dir, tool, workspace_binary,
};
pub use rocketmq::{rocketmq_client, rocketmq_name_server};
pub use tls::{AmqpsRabbit, Certs, HOUR, NatsAuth, SaslSslKafka, TlsBroker, TlsBrokerKind, TlsBrokerSpec, TlsRocketmq};
pub use verdict::Verdict;
