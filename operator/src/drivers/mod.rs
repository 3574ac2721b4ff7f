//! Broker drivers: how each vendor's broker is rendered when the operator runs it, and what each
//! can and cannot do. One trait, one unit struct per vendor; everything here is pure.

mod images;
pub mod kafka;
mod mqtt;
mod nats;
pub mod rabbitmq;
pub mod rocketmq;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::EnvVar;
use oms_crds::access_point::Driver;
use oms_crds::common::Capabilities;

pub use images::{DefaultImages, broker_image};
pub use kafka::{Kafka, controller_voters};
pub use mqtt::Mqtt;
pub use nats::Nats;
pub use rabbitmq::Rabbitmq;
pub use rocketmq::Rocketmq;

/// Name of the Secret with a managed access point's server certificate, from the operator's CA.
#[must_use]
pub fn tls_secret(access_point: &str) -> String {
    format!("{access_point}-broker-tls")
}

/// Name of the Secret with the operator's own broker user, generated once (`username`,
/// `password`, and for RabbitMQ `erlang-cookie`, the cookie its nodes share).
#[must_use]
pub fn credentials_secret(access_point: &str) -> String {
    format!("{access_point}-credentials")
}

/// The data of the generated credentials Secret ([`credentials_secret`]).
#[must_use]
pub fn generated_credentials(username: &str, password: &str, cookie: &str) -> [(&'static str, String); 3] {
    [("username", username.to_owned()), ("password", password.to_owned()), ("erlang-cookie", cookie.to_owned())]
}

/// What a driver renders from: a validated managed access point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerInput {
    pub name: String,
    pub namespace: String,
    pub replicas: i32,
    /// Passthrough config, already checked against [`BrokerDriver::owned_config_keys`].
    pub config: BTreeMap<String, String>,
    /// Stable identity of the cluster (Kafka's cluster id), derived from the object's uid.
    pub cluster_id: String,
    /// The container image; its tag tells the broker version where settings differ by version.
    pub image: String,
    /// The namespaces served, each a broker user of its own ([`crate::tenancy`]).
    pub tenants: Vec<String>,
    /// Whether queue names carry their tenant's prefix (the access point shares).
    pub shared: bool,
    /// Whether the listeners speak TLS with the certificate mounted at [`BrokerDriver::tls_dir`].
    pub tls: bool,
    /// Kafka's controller quorum (the other drivers have none).
    pub kafka_quorum: Option<kafka::Quorum>,
}

/// DNS name of pod `ordinal` of the brokers of access point `name` through its headless Service.
#[must_use]
pub fn pod_host(name: &str, namespace: &str, ordinal: i32) -> String {
    format!("{name}-{ordinal}.{name}.{namespace}.svc")
}

impl BrokerInput {
    /// Major and minor version from the image tag (`rabbitmq:3.10.8-management` -> 3.10); `None`
    /// for a tag without one (`latest`, a digest), which renders for the newest version.
    #[must_use]
    pub fn image_version(&self) -> Option<(u32, u32)> {
        image_version(&self.image)
    }

    /// DNS name of pod `ordinal` through the headless Service.
    #[must_use]
    pub fn pod_host(&self, ordinal: i32) -> String {
        pod_host(&self.name, &self.namespace, ordinal)
    }
}

/// Major and minor version from an image's tag (`rabbitmq:3.10.8-management` -> 3.10); `None` for
/// a tag without one (`latest`, a digest), which renders for the newest version.
#[must_use]
pub fn image_version(image: &str) -> Option<(u32, u32)> {
    let name = image.split('@').next().unwrap_or_default();
    let tag = name.rsplit_once(':').map(|(_, tag)| tag).filter(|tag| !tag.contains('/'))?;
    let mut numbers = tag.split(|c: char| !c.is_ascii_digit());
    let major = numbers.next()?.parse().ok()?;
    let minor = numbers.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

/// The broker container as a driver renders it; the common renderer wraps it in a StatefulSet.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BrokerPod {
    /// Files of the config ConfigMap, mounted at [`BrokerDriver::config_dir`].
    pub files: BTreeMap<String, String>,
    /// Files of the same ConfigMap that only a broker's first boot reads (peer lists): outside
    /// the config hash, so that changing them rolls no pod.
    pub discovery_files: BTreeMap<String, String>,
    /// Container command; the image's entrypoint when empty.
    pub command: Vec<String>,
    /// Extra environment; `POD_NAME` and `POD_NAMESPACE` are always set.
    pub env: Vec<EnvVar>,
    /// A file from a Secret the broker reads its credentials from.
    pub secret_file: Option<SecretFile>,
    /// What runs before the broker is stopped, where stopping it at once could cost its peers.
    pub pre_stop: Option<PreStop>,
    /// Arguments of `oms-probe` (copied into the pod from the operator's image) that tell this
    /// broker serves: its readiness check in place of [`BrokerDriver::health`]'s.
    pub ready_probe: Option<Vec<String>>,
}

/// A command the kubelet runs in the broker's container before stopping it (a roll, a pod
/// deletion), and how long the pod may take to stop, the command included.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreStop {
    pub command: Vec<String>,
    pub grace_seconds: i64,
}

/// One key of a Secret mounted as a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretFile {
    pub secret: String,
    pub key: String,
    /// Directory the file appears in, and its name there.
    pub mount_dir: String,
    pub file: String,
}

/// How the kubelet tells that a broker serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// The client port accepts TCP connections: all a broker without a health endpoint offers.
    ClientPort,
    /// The broker's own HTTP health endpoint on `port`: `started` must answer 200 once after each
    /// start (it may wait until the broker has caught up with its peers), `ready` from then on.
    Http { port: u16, started: &'static str, ready: &'static str },
}

/// A broker family the operator can run.
pub trait BrokerDriver: Sync {
    /// What the driver can and cannot do.
    fn capabilities(&self) -> Capabilities;
    /// Every container port by name, the client port first; `tls` where it differs (amqps, MQTT
    /// over TLS).
    fn ports(&self, tls: bool) -> Vec<(&'static str, u16)>;
    /// The port clients connect to.
    fn client_port(&self, tls: bool) -> u16 {
        self.ports(tls)[0].1
    }
    /// Every port the tenants' applications, bridges and gateways use: the client port, and
    /// where clients also reach the brokers another way (RocketMQ's name servers and brokers).
    fn tenant_ports(&self, tls: bool) -> Vec<u16> {
        vec![self.client_port(tls)]
    }
    /// Config keys the operator sets itself; a user may not pass them through. A key ending in
    /// `.*` owns every key under it.
    fn owned_config_keys(&self) -> &'static [&'static str];
    /// Whether the operator sets `key` itself ([`BrokerDriver::owned_config_keys`]).
    fn owns_config_key(&self, key: &str) -> bool {
        self.owned_config_keys().iter().any(|owned| match owned.strip_suffix('*') {
            Some(prefix) => key.starts_with(prefix),
            None => key == *owned,
        })
    }
    /// How the kubelet checks the broker: started, ready, alive.
    fn health(&self) -> Health {
        Health::ClientPort
    }
    /// Most replicas the broker can cluster.
    fn max_replicas(&self) -> i32 {
        32
    }
    /// Why no more than [`BrokerDriver::max_replicas`] run, for the refusal of more.
    fn max_replicas_reason(&self) -> &'static str {
        "the broker does not cluster"
    }
    /// The first version whose brokers form a cluster as rendered; older ones run one replica.
    fn clusters_since(&self) -> Option<(u32, u32)> {
        None
    }
    /// Where the ConfigMap is mounted.
    fn config_dir(&self) -> &'static str;
    /// Where the certificate Secret ([`tls_secret`]: `tls.crt`, `tls.key`, and `ca.crt`, the
    /// operator's CA) is mounted when the broker serves TLS.
    fn tls_dir(&self) -> &'static str;
    /// Where the broker keeps its data (the PVC's mount).
    fn data_dir(&self) -> &'static str;
    /// The user (and group) the broker runs as: the image's own non-root user, which also owns
    /// the data volume (fsGroup).
    fn run_as(&self) -> i64;
    /// Renders config files and the container's command and environment.
    fn render(&self, broker: &BrokerInput) -> BrokerPod;
}

/// The driver of a managed broker; `None` for `gateway`, which is never run by us.
#[must_use]
pub fn managed_driver(driver: Driver) -> Option<&'static dyn BrokerDriver> {
    match driver {
        Driver::Kafka => Some(&Kafka),
        Driver::Nats => Some(&Nats),
        Driver::Rabbitmq => Some(&Rabbitmq),
        Driver::Mqtt => Some(&Mqtt),
        Driver::Rocketmq => Some(&Rocketmq),
        Driver::Gateway => None,
    }
}

/// Capabilities of any driver, including `gateway` (which forwards to the other cloud's broker
/// and deduplicates by message id in its window).
#[must_use]
pub fn capabilities(driver: Driver) -> Capabilities {
    match managed_driver(driver) {
        Some(d) => d.capabilities(),
        None => Capabilities {
            partitions: false,
            ordering: oms_crds::common::Ordering::PerKey,
            dedup: oms_crds::common::Dedup::MessageId,
            delay: false,
            priority: false,
            headers: true,
            queue_objects: true,
        },
    }
}

/// Renders `key<sep>value` lines of passthrough config, sorted, after a marker comment.
fn passthrough_lines(config: &BTreeMap<String, String>, separator: &str) -> String {
    if config.is_empty() {
        return String::new();
    }
    let mut out = String::from("# From spec.managed.config:\n");
    for (key, value) in config {
        out.push_str(key);
        out.push_str(separator);
        out.push_str(value);
        out.push('\n');
    }
    out
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.to_owned(), value: Some(value.into()), value_from: None }
}

/// An environment variable from a key of a Secret.
/// The environment variables a broker container gets the operator's user from (Kafka, RabbitMQ,
/// NATS's system account). Kafka's and RabbitMQ's start scripts unset the password before the
/// broker starts (NATS reads it from there); the readiness probe, which the kubelet runs with the
/// container's environment, still reads it.
pub const ADMIN_USER_ENV: &str = "OMS_ADMIN_USER";
pub const ADMIN_PASSWORD_ENV: &str = "OMS_ADMIN_PASSWORD";

/// Arguments of `oms-probe <protocol>` for the broker of this pod on `port`, logging in as the
/// environment variables `login_env` (user, password) say; with TLS, the broker's certificate is
/// checked against the operator's CA in `tls_dir`.
fn ready_probe(protocol: &str, broker: &BrokerInput, port: u16, login_env: (&str, &str), tls_dir: &str) -> Vec<String> {
    let mut args: Vec<String> = [
        protocol,
        "--port",
        &port.to_string(),
        "--domain",
        &format!("{}.{}.svc", broker.name, broker.namespace),
        "--user-env",
        login_env.0,
        "--password-env",
        login_env.1,
    ]
    .map(str::to_owned)
    .into();
    if broker.tls {
        args.extend(["--ca".to_owned(), format!("{tls_dir}/ca.crt")]);
    }
    args
}

fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(k8s_openapi::api::core::v1::EnvVarSource {
            secret_key_ref: Some(k8s_openapi::api::core::v1::SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                optional: Some(false),
            }),
            ..k8s_openapi::api::core::v1::EnvVarSource::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_managed_driver_owns_its_cluster_keys_and_has_a_client_port_first() {
        for driver in [Driver::Kafka, Driver::Nats, Driver::Rabbitmq, Driver::Mqtt, Driver::Rocketmq] {
            let d = managed_driver(driver).expect("managed");
            assert_eq!(d.ports(true)[0].1, d.client_port(true), "{driver}");
            assert!(!d.owned_config_keys().is_empty(), "{driver}");
        }
        assert!(managed_driver(Driver::Gateway).is_none());
    }

    #[test]
    fn mqtt_says_it_has_no_queue_objects_and_no_headers() {
        let caps = capabilities(Driver::Mqtt);
        assert!(!caps.queue_objects && !caps.headers && !caps.partitions);
    }
}
