//! `MessagingAccessPoint`: a broker cluster the operator runs (`managed`), one that exists
//! elsewhere (`external`), or another cloud's OMS gateway (driver `gateway`, `endpoint`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Capabilities, ConfigMapKeyRef, SecretKeyRef, SecretRef};
use crate::quantity::{size_message, size_rule};

/// CEL: a `host:port` address (DNS name, IPv4 or bracketed IPv6) with a port from 1 to 65535,
/// what the operator's own address parser accepts.
pub(crate) const HOST_PORT_RULE: &str = r"self.matches('^(\\[[0-9a-fA-F:.]+\\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?):([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$')";

/// The broker family behind an access point.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// Apache Kafka (KRaft mode when managed).
    Kafka,
    /// NATS with JetStream.
    Nats,
    /// RabbitMQ (AMQP 0.9.1), quorum queues by default.
    Rabbitmq,
    /// An MQTT broker (Eclipse Mosquitto when managed).
    Mqtt,
    /// Apache RocketMQ 5: clients reach its proxy (gRPC), the operator its name servers.
    Rocketmq,
    /// The OMS gateway of another cloud, reached over mTLS at `spec.endpoint`.
    Gateway,
}

impl Driver {
    /// The name used in specs, URLs and labels.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Kafka => "kafka",
            Driver::Nats => "nats",
            Driver::Rabbitmq => "rabbitmq",
            Driver::Mqtt => "mqtt",
            Driver::Rocketmq => "rocketmq",
            Driver::Gateway => "gateway",
        }
    }
}

impl std::fmt::Display for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The desired state of a MessagingAccessPoint.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "openmessaging.cloud",
    version = "v1alpha1",
    kind = "MessagingAccessPoint",
    doc = "A messaging system that queues live on: a broker cluster the operator runs, one that already exists, or another cloud's OMS gateway.",
    namespaced,
    status = "MessagingAccessPointStatus",
    category = "oms",
    shortname = "map",
    shortname = "accesspoint",
    printcolumn = r#"{"name":"Driver","type":"string","jsonPath":".spec.driver"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"TLS","type":"string","jsonPath":".status.tls"}"#,
    printcolumn = r#"{"name":"Access point","type":"string","jsonPath":".status.accessPoint"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.driver == 'gateway' || has(self.managed) != has(self.external)")
        .message("set exactly one of spec.managed (the operator runs the broker) and spec.external (the broker already exists)"),
    validation = Rule::new("self.driver != 'gateway' || (has(self.endpoint) && !has(self.managed) && !has(self.external))")
        .message("driver gateway needs spec.endpoint (host:port of the other cloud's gateway) and neither spec.managed nor spec.external"),
    validation = Rule::new("self.driver == 'gateway' || !has(self.endpoint)")
        .message("spec.endpoint is only for driver gateway; use spec.external.servers to reach an existing broker"),
    validation = Rule::new("(self.driver == 'gateway') == has(self.remote)")
        .message("driver gateway needs spec.remote (the namespace and name of the access point behind the other cloud's gateway); other drivers must not set it"),
    validation = Rule::new("self.driver != 'mqtt' || !has(self.managed) || self.managed.replicas <= 1")
        .message("driver mqtt (Mosquitto) does not cluster: set spec.managed.replicas to 1"),
    validation = Rule::new("!has(self.external) || !has(self.external.tls) || !has(self.external.tls.serverName) || self.driver in ['nats', 'mqtt', 'rocketmq']")
        .message(SERVER_NAME_REFUSED),
    validation = Rule::new("!has(self.external) || !has(self.external.saslMechanism) || self.driver == 'kafka'")
        .message("spec.external.saslMechanism is for driver kafka: the SASL mechanism of a Kafka login"),
    validation = Rule::new("self.driver != 'rocketmq' || !has(self.gateway)")
        .message("spec.gateway is not available for driver rocketmq yet: the gateway has no RocketMQ connector"),
    validation = Rule::new("self.driver != 'rocketmq' || !has(self.managed) || self.managed.replicas <= 1")
        .message("driver rocketmq runs one broker per access point: each broker's proxy serves only that broker (RocketMQ's local mode), so clients of one address would miss the others' messages; set spec.managed.replicas to 1"),
    validation = Rule::new("self.driver != 'rocketmq' || !has(self.managed) || !has(self.sharing) || size(self.sharing.tenants) == 0")
        .message(ROCKETMQ_SHARING_REFUSED),
    validation = Rule::new("!has(self.external) || (self.driver == 'rocketmq') == has(self.external.nameServers)")
        .message("spec.external.nameServers (host:port of RocketMQ's name servers) is required for driver rocketmq and only for it"),
    validation = Rule::new("!has(self.tls) || has(self.managed)")
        .message("spec.tls is for managed access points (the brokers the operator runs); for a broker that already exists set spec.external.tls"),
)]
pub struct MessagingAccessPointSpec {
    /// The broker family: kafka, nats, rabbitmq, mqtt, rocketmq, or gateway (another cloud's OMS
    /// gateway).
    /// Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.driver is immutable; create a new MessagingAccessPoint instead"))]
    pub driver: Driver,

    /// The region written into the access point URL. Defaults to the node label
    /// `topology.kubernetes.io/region`, or `local` when nodes have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub region: Option<String>,

    /// Run the broker cluster in this namespace (a StatefulSet the operator owns).
    /// Exactly one of `managed` and `external` is set, except for driver gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<ManagedBroker>,

    /// Use a broker cluster that already exists. Exactly one of `managed` and `external` is set,
    /// except for driver gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalBroker>,

    /// host:port of another cloud's OMS gateway; required for driver gateway, refused otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 260))]
    #[x_kube(validation = Rule::new(HOST_PORT_RULE).message("spec.endpoint must be host:port, e.g. oms-gateway.cloud-b.example.com:7443"))]
    pub endpoint: Option<String>,

    /// For driver gateway: the access point in the other cloud that the gateway fronts, as that
    /// cloud names it (its `status.gatewayEndpoint` belongs in `spec.endpoint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteAccessPoint>,

    /// Expose an mTLS OMS gateway in front of this access point, for bridges in other clouds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayExposure>,

    /// Other namespaces (tenants) allowed to put Queues and Bridges on this access point.
    /// Default: only this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sharing: Option<Sharing>,

    /// TLS of the brokers the operator runs (managed only). Default: every client listener
    /// (and Kafka's and NATS's links between brokers) speaks TLS with a certificate from the
    /// operator's CA, and the binding Secret carries that CA (`CA_CERT`) with `TLS=true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ManagedTls>,
}

/// TLS of a managed access point's brokers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedTls {
    /// `false` keeps the listeners in plaintext (passwords then travel in clear text), said in
    /// `status.tls`. Default true.
    #[serde(default = "enabled")]
    pub enabled: bool,
}

fn enabled() -> bool {
    true
}

/// A broker cluster the operator runs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.storage) == has(oldSelf.storage) && (!has(self.storage) || self.storage == oldSelf.storage)")
        .message("spec.managed.storage cannot change after creation (the StatefulSet's volume claims are immutable); create a new access point to move the data"),
)]
pub struct ManagedBroker {
    /// Number of broker pods. Kafka derives its controller voters from it (1 for 1 or 2 brokers,
    /// 3 for 3 or 4, 5 from 5): a cluster of this operator changes them with the size, one voter at
    /// a time, while one an earlier version made keeps static voters and refuses a size that would
    /// change them. NATS and RabbitMQ cluster all pods. Growing is allowed, except a
    /// running single NATS server (it would delete its streams on joining a cluster: start NATS
    /// with the size it will need). Kafka shrinks only while enough brokers stay for every copy
    /// of its data. NATS 2.15 and later shrinks one server at a time (`Progressing` True, reason
    /// `ScalingDown`): the highest pod hands over the JetStream meta leadership, its stream
    /// replicas are evacuated, it leaves the meta group, then it stops; a last server runs on its
    /// own. A NATS shrink is refused while a stream keeps more copies than the new size. RabbitMQ
    /// shrinks one node at a time the same way: quorum queues that would lose a copy get a member
    /// on a staying node, the highest node's members are removed, it is drained, stopped and
    /// forgotten by the cluster, then its pod and volume claim go; a classic queue or a stream
    /// living on it, or the Khepri metadata store, refuses the shrink. A change of size rolls no
    /// RabbitMQ pod. A refused change keeps the current size, with `Progressing` False, reason
    /// `ResizeRefused`.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 32))]
    pub replicas: i32,

    /// Broker version; picks the default image tag of the driver (e.g. 4.1.1 for Kafka).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub version: Option<String>,

    /// Container image; overrides the driver's default image and `version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// Persistent storage per broker pod. Omitted: an emptyDir, and data is lost with the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<Storage>,

    /// CPU and memory requests and limits of each broker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Broker configuration passed through as key/value pairs (e.g. `log.retention.hours`).
    /// Keys the operator owns (listeners, node ids, paths, cluster membership) are refused with
    /// a condition that names them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 256))]
    pub config: BTreeMap<String, String>,

    /// Delete the brokers' PersistentVolumeClaims (and their data) when the access point is
    /// deleted. Default false: the claims stay, so a recreated access point finds its data.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delete_claims: bool,
}

fn default_replicas() -> i32 {
    1
}

/// Persistent storage of a managed broker.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Storage {
    /// Volume size per broker pod, e.g. 10Gi.
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = Rule::new(size_rule()).message(size_message("spec.managed.storage.size").as_str()))]
    pub size: String,

    /// StorageClass of the volumes; the cluster default when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,
}

/// Why a managed RocketMQ may not be shared (RocketMQ 5.3's authorization leaves the broker's config
/// open to any user, and its name server has no login).
pub const ROCKETMQ_SHARING_REFUSED: &str = "spec.sharing is not available for a managed rocketmq: RocketMQ 5.3 \
lets any user it knows read and change the broker's config (those requests name no resource to authorize) and its \
name server takes no login, so tenants would not be kept apart; run an access point per namespace";

/// Why `spec.external.tls.serverName` is refused for Kafka and RabbitMQ.
const SERVER_NAME_REFUSED: &str = "spec.external.tls.serverName is supported for drivers nats, mqtt and \
rocketmq: the Kafka and AMQP clients check each broker's certificate against the host they dial (for Kafka, the \
host each broker advertises); give the brokers certificates for those names";

/// A broker cluster that already exists.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.saslMechanism) || has(self.credentialsSecretRef)")
        .message("spec.external.saslMechanism needs spec.external.credentialsSecretRef: the user and password it logs in with"),
)]
pub struct ExternalBroker {
    /// Bootstrap addresses as host:port (for RocketMQ, its proxy's gRPC endpoints).
    #[schemars(length(min = 1, max = 64), inner(length(min = 1, max = 260)))]
    #[x_kube(validation = Rule::new(format!("self.all(s, {})", HOST_PORT_RULE.replace("self.", "s.")))
        .message("every entry of spec.external.servers must be host:port, e.g. b1.example.com:9092"))]
    pub servers: Vec<String>,

    /// Driver rocketmq: its name servers as host:port, where the operator finds the brokers it
    /// provisions topics on (required for rocketmq, refused for the other drivers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 16), inner(length(min = 1, max = 260)))]
    #[x_kube(validation = Rule::new(format!("self.all(s, {})", HOST_PORT_RULE.replace("self.", "s.")))
        .message("every entry of spec.external.nameServers must be host:port, e.g. namesrv.example.com:9876"))]
    pub name_servers: Option<Vec<String>>,

    /// The account (user or tenant id) written into the access point URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub account: Option<String>,

    /// TLS towards the brokers: the probe, the operator's admin client, bridge workers and
    /// gateways all connect over TLS (Kafka SASL_SSL or SSL, amqps) and check the brokers'
    /// certificates against this CA bundle. Without it they connect in plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTls>,

    /// Secret with keys `username` and `password` for the brokers; for NATS instead `token`, or
    /// `creds` (a credentials file: the user's JWT and nkey seed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,

    /// Driver kafka: the SASL mechanism of that login; SCRAM-SHA-512 when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl_mechanism: Option<SaslMechanism>,
}

/// SASL mechanisms of a Kafka login (what managed Kafka services offer).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default, JsonSchema)]
pub enum SaslMechanism {
    /// The password in the clear, inside TLS: use it with spec.external.tls.
    #[serde(rename = "PLAIN")]
    Plain,
    /// Salted challenge and response with SHA-256.
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// Salted challenge and response with SHA-512, what managed access points serve.
    #[default]
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// Every mechanism.
    pub const ALL: [SaslMechanism; 3] = [SaslMechanism::Plain, SaslMechanism::ScramSha256, SaslMechanism::ScramSha512];

    /// The name Kafka clients and brokers use.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    /// The mechanism of that name.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == name)
    }
}

/// TLS settings of a client towards a broker. The brokers' certificates are always checked.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.caSecretRef) != has(self.caConfigMapRef)")
        .message("spec.external.tls needs exactly one of caSecretRef and caConfigMapRef: the PEM bundle of the CAs that sign the brokers' certificates"),
)]
pub struct ClientTls {
    /// A Secret key holding the PEM bundle of the CAs that sign the brokers' certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
    /// A ConfigMap key holding that PEM bundle, where the CA is not a secret (a public CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_config_map_ref: Option<ConfigMapKeyRef>,
    /// Secret of type kubernetes.io/tls (keys `tls.crt`, `tls.key`) with a client certificate,
    /// for brokers that require one (mTLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_secret_ref: Option<SecretRef>,
    /// Drivers nats, mqtt and rocketmq: the name checked in the brokers' certificates, where it is
    /// not the host of `spec.external.servers` (brokers reached through an IP or a tunnel). For
    /// RocketMQ it is checked at the proxy, the name servers and the brokers alike (the brokers
    /// are dialled at the address each registered, often an IP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?$"))]
    pub server_name: Option<String>,
}

/// An access point of another cloud, behind its gateway.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemoteAccessPoint {
    /// Its namespace in the other cloud.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub namespace: String,
    /// Its name in the other cloud.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub name: String,
}

/// How the OMS gateway of this access point is exposed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayExposure {
    /// Run the gateway.
    #[serde(default)]
    pub enabled: bool,
    /// The gateway's mTLS port.
    #[serde(default = "default_gateway_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// The Service in front of the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<GatewayService>,
    /// The DNS name other clouds dial (a load balancer's or a node's); it goes into the gateway's
    /// certificate and, with the port, into `status.gatewayEndpoint`. The Service's cluster DNS
    /// name when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub advertised_host: Option<String>,
}

fn default_gateway_port() -> i32 {
    7443
}

/// The Service in front of a gateway.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayService {
    /// Service type: ClusterIP, NodePort or LoadBalancer.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    /// Fixed node port for type NodePort; chosen by Kubernetes when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 30000, max = 32767))]
    pub node_port: Option<i32>,
}

/// Kubernetes Service types a gateway may use.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ServiceType {
    /// Reachable inside the cluster only.
    #[default]
    ClusterIP,
    /// Reachable on every node's port.
    NodePort,
    /// Reachable through the cloud's load balancer.
    LoadBalancer,
}

/// Which other namespaces may use an access point.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Sharing {
    /// Namespaces (tenants) granted use of this access point, or `*` for every namespace.
    /// Each tenant's broker-side names get its own prefix.
    #[schemars(length(max = 256), inner(length(min = 1, max = 63)))]
    #[x_kube(validation = Rule::new("self.all(t, t == '*' || t.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'))")
        .message("every entry of spec.sharing.tenants must be a namespace name or *"))]
    pub tenants: Vec<String>,
}

/// The observed state of a MessagingAccessPoint.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessagingAccessPointStatus {
    /// The OMS access point URL: `oms:<driver>://[account@]host:port[,host:port...]/<region>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_point: Option<String>,
    /// Name of the Secret that applications mount: ACCESS_POINTS, REGION, ACCOUNT_ID,
    /// DRIVER_IMPL and credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding_secret: Option<String>,
    /// What the driver can and cannot do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
    /// Broker pods that are ready (managed access points).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// How clients reach the brokers: `Enabled` (TLS, checked against the binding's `CA_CERT`)
    /// or `Disabled` (plaintext).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<String>,
    /// host:port where this access point's gateway is reachable, when enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_endpoint: Option<String>,
    /// Managed Kafka: the `metadata.version` the cluster has finalized (e.g. `4.1-IV1`). The
    /// operator raises it to the brokers' newest once every broker runs a newer release, and
    /// never lowers it: an older `spec.managed.version` is refused from then on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_version: Option<String>,
    /// The `metadata.generation` the controller last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The latest observations of the access point's state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
