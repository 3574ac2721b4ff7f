//! The config files as written: the operator renders these types into a worker's or gateway's
//! ConfigMap, and `oms-bridge` reads the same types back before validating them
//! ([`crate::validate_worker`], [`crate::validate_gateway`]). A field renamed here is renamed for
//! both, or the build breaks. Keys are camelCase, like the CRDs; unknown keys are refused.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Wire protocol of one end of a bridge, or of a gateway's backend.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Kafka,
    Nats,
    /// AMQP 0.9.1 (RabbitMQ).
    Amqp,
    Mqtt,
    /// Another cloud's OMS gateway, over mTLS.
    Gateway,
    /// RocketMQ 5, through its proxy's gRPC API (and its name servers for the group's positions).
    Rocketmq,
}

impl Protocol {
    /// The name as the config file writes it.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Kafka => "kafka",
            Protocol::Nats => "nats",
            Protocol::Amqp => "amqp",
            Protocol::Mqtt => "mqtt",
            Protocol::Gateway => "gateway",
            Protocol::Rocketmq => "rocketmq",
        }
    }
}

/// Where a new worker starts reading.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StartFrom {
    #[default]
    Earliest,
    Latest,
    Timestamp,
}

/// Delivery guarantee.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Delivery {
    #[default]
    AtLeastOnce,
    ExactlyOnce,
}

/// Ordering kept through retries.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Ordering {
    #[default]
    PerKey,
    PerPartition,
    None,
}

/// A worker's config file (`oms-bridge worker --config`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkerFile {
    /// The Bridge this worker runs.
    pub bridge: BridgeName,
    pub source: EndpointFile,
    pub target: EndpointFile,
    #[serde(default)]
    pub delivery: Delivery,
    #[serde(default)]
    pub ordering: Ordering,
    /// A filter expression (see [`crate::filter`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    #[serde(default)]
    pub start_from: StartFrom,
    /// RFC 3339, with `startFrom: Timestamp` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_timestamp: Option<String>,
    /// Messages between source and target at most; 1,000 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<u32>,
    /// A Lease in the Bridge's namespace that one worker at a time holds while it reads the
    /// source, for several workers of a source with no lock of its own (an MQTT session); the
    /// others stand by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<AdminFile>,
}

/// Namespace and name of a Bridge.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BridgeName {
    pub name: String,
    pub namespace: String,
}

/// One end of a bridge.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EndpointFile {
    pub driver: Protocol,
    /// `host:port` of the brokers, or of the other cloud's gateway.
    pub servers: Vec<String>,
    /// The broker-side queue name.
    pub queue: String,
    /// `<namespace>/<name>` of the access point serving the queue (for a gateway end: the one
    /// behind the gateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_point: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFile>,
    /// RocketMQ: `host:port` of the name servers (`servers` are its proxies).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub name_servers: Vec<String>,
    /// A directory with `username` and `password` files (NATS: or `token`, or `nats.creds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_dir: Option<PathBuf>,
}

/// TLS files: the CA bundle, and the certificate and key of this side (both or neither).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsFile {
    pub ca_file: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Towards a broker: the name checked in its certificate, where it is not the host dialled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

/// The admin server (metrics, probes); `0.0.0.0:9090` when absent.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    pub listen: String,
}

/// A gateway's config file (`oms-bridge gateway --config`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GatewayFile {
    /// `ip:port` the gateway serves on.
    pub listen: String,
    /// This cloud's trust domain (`spiffe://<trust domain>/...` identities).
    pub trust_domain: String,
    /// Other clouds whose bridges this gateway accepts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peer_trust_domains: Vec<String>,
    /// The gateway's server certificate and the trust bundle it checks clients against.
    pub tls: TlsFile,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<BackendFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<AdminFile>,
}

/// A local broker the gateway fronts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackendFile {
    /// `<namespace>/<name>` of the MessagingAccessPoint this backend serves.
    pub access_point: String,
    pub driver: Protocol,
    pub servers: Vec<String>,
    /// TLS towards the brokers (NATS and MQTT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_dir: Option<PathBuf>,
    /// `<dir>/<tenant>/username` and `password` per tenant, where tenants have broker users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_credentials_dir: Option<PathBuf>,
    /// Namespaces (tenants) besides the owner whose bridges may use it; `*` for all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared_with: Vec<String>,
}
