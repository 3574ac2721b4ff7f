//! Command-line and environment settings of the operator.

use std::net::SocketAddr;
use std::path::PathBuf;

use oms_telemetry::logging::LogArgs;

/// Kubernetes operator for OpenMessaging: MessagingAccessPoint, Queue and Bridge.
#[derive(Debug, clap::Parser)]
#[command(name = "oms-operator", version)]
pub struct Args {
    /// Kubeconfig file; without it, KUBECONFIG, ~/.kube/config or the in-cluster service account.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Address of the admin server (`/metrics`, `/healthz`, `/readyz`).
    #[arg(long, env = "OMS_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    pub admin_addr: SocketAddr,

    /// Namespaces to watch; repeat or separate with commas. All namespaces when empty.
    #[arg(long = "namespace", env = "OMS_WATCH_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,

    /// Elect a leader over a coordination.k8s.io Lease so that only one replica reconciles.
    #[arg(long, env = "OMS_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,

    /// Namespace of the leader-election Lease; defaults to the operator's own namespace
    /// (POD_NAMESPACE, or the in-cluster service account's), else `default`.
    #[arg(long, env = "OMS_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,

    /// Seconds a leader's Lease stays valid without renewal; a standby takes over after that.
    #[arg(long, env = "OMS_LEASE_DURATION_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(2..=300))]
    pub lease_duration_seconds: u64,

    /// Seconds between handshakes with the brokers of external access points.
    #[arg(long, env = "OMS_PROBE_INTERVAL_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub probe_interval_seconds: u64,

    /// Seconds between comparisons of each Queue with its broker (drift detection).
    #[arg(long, env = "OMS_DRIFT_INTERVAL_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub drift_interval_seconds: u64,

    /// Trust domain of this cluster's identities: spiffe://<trust-domain>/ns/<namespace>/bridge/<name>.
    /// Give each cloud its own (e.g. cloud-a.example); gateways accept other clouds by theirs.
    #[arg(long, env = "OMS_TRUST_DOMAIN", default_value = "cluster.oms")]
    pub trust_domain: String,

    /// Namespace of the CA Secret (`oms-ca`) and the trust-bundle ConfigMap (`oms-trust-bundle`);
    /// defaults to the operator's own namespace. Create `oms-ca` there before the first start to
    /// use your own CA (e.g. a root shared by two clouds).
    #[arg(long, env = "OMS_PKI_NAMESPACE")]
    pub pki_namespace: Option<String>,

    /// Kind of the cert-manager issuer that signs every certificate instead of our own CA
    /// (bridge and gateway identities, managed brokers' server certificates); with
    /// --pki-issuer-name. No `oms-ca` is made then.
    #[arg(long, env = "OMS_PKI_ISSUER_KIND", value_enum, requires = "pki_issuer_name")]
    pub pki_issuer_kind: Option<crate::cert_manager::IssuerKind>,

    /// Name of that cert-manager Issuer (in each certificate's namespace) or ClusterIssuer.
    #[arg(long, env = "OMS_PKI_ISSUER_NAME", requires = "pki_issuer_kind")]
    pub pki_issuer_name: Option<String>,

    /// PEM file with the CA certificates of peer clouds to trust besides our own (added to the
    /// trust bundle every bridge and gateway gets).
    #[arg(long, env = "OMS_PEER_TRUST_BUNDLE")]
    pub peer_trust_bundle: Option<PathBuf>,

    /// Trust domains of peer clouds whose bridges our gateways accept (their CAs belong in
    /// --peer-trust-bundle); repeat or separate with commas.
    #[arg(long, env = "OMS_PEER_TRUST_DOMAINS", value_delimiter = ',')]
    pub peer_trust_domains: Vec<String>,

    /// Seconds between reads of each bridge worker's admin endpoint (lag, forwarded, Stalled).
    #[arg(long, env = "OMS_BRIDGE_OBSERVE_INTERVAL_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub bridge_observe_interval_seconds: u64,

    /// Where to read bridge workers' admin endpoints when they do not run as pods of this cluster
    /// (e.g. `http://127.0.0.1:9090`; `{namespace}` and `{name}` are replaced). Default: each
    /// worker pod's IP on the admin port.
    #[arg(long, env = "OMS_BRIDGE_ADMIN_URL")]
    pub bridge_admin_url: Option<String>,

    /// Lifetime of the certificates issued to bridges and gateways; renewed at two thirds of it.
    #[arg(long, env = "OMS_CERTIFICATE_LIFETIME_SECONDS", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(15..=31_536_000))]
    pub certificate_lifetime_seconds: u64,

    /// Lifetime of managed brokers' server certificates; renewed at two thirds of it, which rolls
    /// the brokers one pod at a time.
    #[arg(long, env = "OMS_BROKER_CERTIFICATE_LIFETIME_SECONDS", default_value_t = 7_776_000, value_parser = clap::value_parser!(u64).range(15..=31_536_000))]
    pub broker_certificate_lifetime_seconds: u64,

    /// Image of oms-bridge, used for bridge workers and gateways; defaults to this release's.
    #[arg(long, env = "OMS_BRIDGE_IMAGE", default_value = concat!("ghcr.io/openmessaging/oms-bridge:", env!("CARGO_PKG_VERSION")))]
    pub bridge_image: String,

    /// Image the brokers' readiness probe (`oms-probe`) is copied from into their pods: this
    /// release's operator image.
    #[arg(long, env = "OMS_PROBE_IMAGE", default_value = concat!("ghcr.io/openmessaging/oms-operator:", env!("CARGO_PKG_VERSION")))]
    pub probe_image: String,

    /// Secrets (in each pod's namespace) the pods the operator starts pull their images with:
    /// bridge workers, gateways and managed brokers; repeat or separate with commas.
    #[arg(long, env = "OMS_IMAGE_PULL_SECRETS", value_delimiter = ',')]
    pub image_pull_secrets: Vec<String>,

    /// Default images of managed brokers, per driver.
    #[command(flatten)]
    pub broker_images: BrokerImages,

    #[command(flatten)]
    pub log: LogArgs,
}

/// Default broker images; a MessagingAccessPoint's `spec.managed.image` overrides them.
#[derive(Debug, Clone, clap::Args)]
pub struct BrokerImages {
    /// Default Kafka image (KRaft).
    #[arg(long, env = "OMS_KAFKA_IMAGE", default_value = "apache/kafka:4.1.1")]
    pub kafka_image: String,
    /// Default NATS image.
    #[arg(long, env = "OMS_NATS_IMAGE", default_value = "nats:2.15.2")]
    pub nats_image: String,
    /// Default RabbitMQ image.
    #[arg(long, env = "OMS_RABBITMQ_IMAGE", default_value = "rabbitmq:4.1.4")]
    pub rabbitmq_image: String,
    /// Default MQTT image (Eclipse Mosquitto).
    #[arg(long, env = "OMS_MQTT_IMAGE", default_value = "eclipse-mosquitto:2.0.22")]
    pub mqtt_image: String,
    /// Default RocketMQ image (name server, broker and proxy in one image).
    #[arg(long, env = "OMS_ROCKETMQ_IMAGE", default_value = "apache/rocketmq:5.3.3")]
    pub rocketmq_image: String,
}
