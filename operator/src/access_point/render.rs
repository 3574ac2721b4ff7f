//! Desired objects of an access point, built from the validated plan: pure functions, tested
//! without a cluster. The controller applies them in the order of [`ManagedObjects`]'s fields.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, ExecAction, HTTPGetAction, KeyToPath, Lifecycle, LifecycleHandler, ObjectFieldSelector,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, Secret, SecretVolumeSource, SecurityContext, Service, ServiceAccount,
    ServicePort, ServiceSpec, TCPSocketAction, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use oms_crds::access_point::Driver;
use oms_crds::access_point_url::AccessPointUrl;

use super::validate::{AccessPoint, Managed, Plan};
use crate::binding::{self, Credentials};
use crate::drivers::kafka::Quorum;
use crate::drivers::{BrokerDriver, BrokerInput, BrokerPod, Health, tls_secret};
use crate::workload::{CONFIG_HASH_ANNOTATION, config_hash, locked_down};

/// Label naming the access point an object belongs to; orphans are found by it.
pub const ACCESS_POINT_LABEL: &str = "openmessaging.cloud/access-point";

/// Labels every child of an access point carries.
#[must_use]
pub fn labels(ap: &AccessPoint) -> BTreeMap<String, String> {
    [
        ("app.kubernetes.io/name", ap.driver.as_str()),
        ("app.kubernetes.io/instance", ap.name.as_str()),
        ("app.kubernetes.io/component", "broker"),
        ("app.kubernetes.io/managed-by", "oms-operator"),
        (ACCESS_POINT_LABEL, ap.name.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// The labels that select the broker pods.
#[must_use]
pub fn pod_selector(ap: &AccessPoint) -> BTreeMap<String, String> {
    selector(ap)
}

fn selector(ap: &AccessPoint) -> BTreeMap<String, String> {
    [("app.kubernetes.io/instance", ap.name.as_str()), (ACCESS_POINT_LABEL, ap.name.as_str())]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn meta(ap: &AccessPoint, name: String, owner: &OwnerReference) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(ap.namespace.clone()),
        labels: Some(labels(ap)),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    }
}

/// Names of an access point's children.
#[must_use]
pub fn headless_service_name(ap: &str) -> String {
    ap.to_owned()
}
#[must_use]
pub fn client_service_name(ap: &str) -> String {
    format!("{ap}-client")
}
#[must_use]
pub fn config_map_name(ap: &str) -> String {
    format!("{ap}-config")
}
/// Names the brokers' server certificate carries: every pod through the headless Service (a
/// wildcard, so that scaling needs no new certificate) and the client Service, short and long.
#[must_use]
pub fn server_names(ap: &str, namespace: &str) -> Vec<String> {
    let (headless, client) = (headless_service_name(ap), client_service_name(ap));
    vec![
        format!("*.{headless}.{namespace}.svc"),
        format!("*.{headless}.{namespace}.svc.cluster.local"),
        format!("{client}.{namespace}.svc"),
        format!("{client}.{namespace}.svc.cluster.local"),
    ]
}

/// Kafka's cluster id: the object's uid as 22 characters of unpadded URL-safe base64, so that
/// it is stable for the object's life and unique across access points. Never with a leading `-`
/// (1 uid in 64): `kafka-storage format --cluster-id -x...` takes it for an option and the
/// brokers never start, so that first character becomes `A` (Kafka's own ids avoid it too).
#[must_use]
pub fn cluster_id(uid: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let hex: String = uid.chars().filter(char::is_ascii_hexdigit).collect();
    let bytes: Vec<u8> =
        (0..16).map(|i| hex.get(i * 2..i * 2 + 2).and_then(|b| u8::from_str_radix(b, 16).ok()).unwrap_or(0)).collect();
    let mut out = String::with_capacity(22);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        let symbols = chunk.len() + 1;
        for i in 0..symbols {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    if out.starts_with('-') {
        out.replace_range(..1, "A");
    }
    out
}

/// Everything a managed access point runs, in apply order: identity and config before the
/// pods that mount them, Services before the StatefulSet that names its headless Service.
#[derive(Debug, Clone)]
pub struct ManagedObjects {
    pub service_account: ServiceAccount,
    pub config_map: ConfigMap,
    pub headless_service: Service,
    pub client_service: Service,
    pub pod_disruption_budget: PodDisruptionBudget,
    pub stateful_set: StatefulSet,
}

/// Renders a managed broker cluster; `certificate` is a digest of the server certificate the
/// brokers serve (with TLS), part of the config hash so that a renewed one rolls them.
#[must_use]
pub fn managed_objects(
    ap: &AccessPoint,
    managed: &Managed,
    broker: &dyn BrokerDriver,
    uid: &str,
    owner: &OwnerReference,
    certificate: Option<&str>,
    kafka_quorum: Option<Quorum>,
) -> ManagedObjects {
    let input = BrokerInput {
        name: ap.name.clone(),
        namespace: ap.namespace.clone(),
        replicas: managed.replicas,
        config: managed.config.clone(),
        cluster_id: cluster_id(uid),
        image: managed.image.clone(),
        tenants: crate::tenancy::tenants(&ap.namespace, &ap.shared_with),
        shared: !ap.shared_with.is_empty(),
        tls: managed.tls,
        kafka_quorum,
    };
    let mut pod = broker.render(&input);
    let mut hashed = pod.files.clone();
    if let Some(digest) = certificate {
        hashed.insert("tls".into(), digest.to_owned());
    }
    let config_hash = config_hash(&hashed, &managed.image);
    let service_ports: Vec<ServicePort> = broker
        .ports(managed.tls)
        .iter()
        .map(|(name, port)| ServicePort {
            name: Some((*name).to_owned()),
            port: i32::from(*port),
            target_port: Some(IntOrString::String((*name).to_owned())),
            ..ServicePort::default()
        })
        .collect();
    let mut files = std::mem::take(&mut pod.files);
    files.append(&mut pod.discovery_files);
    ManagedObjects {
        service_account: ServiceAccount {
            metadata: meta(ap, ap.name.clone(), owner),
            // Brokers do not talk to the API server.
            automount_service_account_token: Some(false),
            ..ServiceAccount::default()
        },
        config_map: ConfigMap {
            metadata: meta(ap, config_map_name(&ap.name), owner),
            data: Some(files),
            ..ConfigMap::default()
        },
        headless_service: Service {
            metadata: meta(ap, headless_service_name(&ap.name), owner),
            spec: Some(ServiceSpec {
                cluster_ip: Some("None".into()),
                // Peers must find each other before they are ready, to form the cluster at all.
                publish_not_ready_addresses: Some(true),
                selector: Some(selector(ap)),
                ports: Some(service_ports.clone()),
                ..ServiceSpec::default()
            }),
            status: None,
        },
        client_service: Service {
            metadata: meta(ap, client_service_name(&ap.name), owner),
            spec: Some(ServiceSpec {
                selector: Some(selector(ap)),
                ports: Some(service_ports.into_iter().take(1).collect()),
                ..ServiceSpec::default()
            }),
            status: None,
        },
        pod_disruption_budget: PodDisruptionBudget {
            metadata: meta(ap, ap.name.clone(), owner),
            spec: Some(PodDisruptionBudgetSpec {
                max_unavailable: Some(IntOrString::Int(1)),
                selector: Some(LabelSelector { match_labels: Some(selector(ap)), match_expressions: None }),
                ..PodDisruptionBudgetSpec::default()
            }),
            status: None,
        },
        stateful_set: stateful_set(ap, managed, broker, pod, config_hash, owner),
    }
}

/// The broker's data volume: an emptyDir, or the StatefulSet's claim template of that name.
const DATA_VOLUME: &str = "data";

/// The data volume claim the StatefulSet makes for `pod` (`<template>-<pod>`), which it keeps
/// when it scales down.
#[must_use]
pub fn data_claim(pod: &str) -> String {
    format!("{DATA_VOLUME}-{pod}")
}

fn stateful_set(
    ap: &AccessPoint,
    managed: &Managed,
    broker: &dyn BrokerDriver,
    pod: BrokerPod,
    config_hash: String,
    owner: &OwnerReference,
) -> StatefulSet {
    let mut volumes = volumes(ap, managed, &pod);
    let grace_seconds = pod.pre_stop.as_ref().map(|stop| stop.grace_seconds);
    let init_containers = pod.ready_probe.is_some().then(|| {
        volumes.push(Volume {
            name: PROBE_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        });
        vec![probe_installer(&managed.probe_image)]
    });
    let volume_claim_templates = if let Some((size, class)) = &managed.storage {
        Some(vec![PersistentVolumeClaim {
            metadata: ObjectMeta { name: Some(DATA_VOLUME.into()), labels: Some(labels(ap)), ..ObjectMeta::default() },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                storage_class_name: class.clone(),
                resources: Some(VolumeResourceRequirements {
                    requests: Some([("storage".to_owned(), Quantity(size.clone()))].into()),
                    limits: None,
                }),
                ..PersistentVolumeClaimSpec::default()
            }),
            status: None,
        }])
    } else {
        volumes.push(Volume {
            name: DATA_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        });
        None
    };
    let mut pod_labels = labels(ap);
    pod_labels.extend(selector(ap));
    StatefulSet {
        metadata: meta(ap, ap.name.clone(), owner),
        spec: Some(StatefulSetSpec {
            replicas: Some(managed.replicas),
            service_name: Some(headless_service_name(&ap.name)),
            // Quorum members must start together; one-by-one would wait forever for peers.
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector { match_labels: Some(selector(ap)), match_expressions: None },
            // Scaling down keeps the broker data (PVCs); deleting keeps it unless deleteClaims.
            persistent_volume_claim_retention_policy: Some(StatefulSetPersistentVolumeClaimRetentionPolicy {
                when_deleted: Some(if managed.delete_claims { "Delete" } else { "Retain" }.into()),
                when_scaled: Some("Retain".into()),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some([(CONFIG_HASH_ANNOTATION.to_owned(), config_hash)].into()),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(ap.name.clone()),
                    automount_service_account_token: Some(false),
                    // The restricted Pod Security Standard: non-root, default seccomp, no privileges.
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(broker.run_as()),
                        run_as_group: Some(broker.run_as()),
                        fs_group: Some(broker.run_as()),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    init_containers,
                    containers: vec![broker_container(managed, broker, pod)],
                    termination_grace_period_seconds: grace_seconds,
                    volumes: Some(volumes),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates,
            ..StatefulSetSpec::default()
        }),
        status: None,
    }
}

/// The pod's volumes besides its data: config, /tmp, the certificate with TLS, the credentials
/// file where the driver reads one.
fn volumes(ap: &AccessPoint, managed: &Managed, pod: &BrokerPod) -> Vec<Volume> {
    let mut volumes = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map_name(&ap.name),
                default_mode: Some(0o555),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume { name: "tmp".into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Volume::default() },
    ];
    if managed.tls {
        volumes.push(Volume {
            name: "tls".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(tls_secret(&ap.name)),
                // The broker's group (fsGroup) reads the key; nobody else does.
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    if let Some(secret_file) = &pod.secret_file {
        volumes.push(Volume {
            name: "credentials".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret_file.secret.clone()),
                items: Some(vec![KeyToPath {
                    key: secret_file.key.clone(),
                    path: secret_file.file.clone(),
                    mode: None,
                }]),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    volumes
}

fn broker_container(managed: &Managed, broker: &dyn BrokerDriver, pod: BrokerPod) -> Container {
    let mut env = vec![field_env("POD_NAME", "metadata.name"), field_env("POD_NAMESPACE", "metadata.namespace")];
    env.extend(pod.env);
    let client_probe = Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::Int(i32::from(broker.client_port(managed.tls))),
            host: None,
        }),
        period_seconds: Some(10),
        ..Probe::default()
    };
    // Started: checked often, so that a roll waits no longer than needed, and for up to 15
    // minutes, so that a broker catching up on a large stream, or waiting for its peers to form a
    // cluster (RabbitMQ opens its port only once it has joined), is not restarted for it.
    let started = |probe: Probe| Probe { period_seconds: Some(2), failure_threshold: Some(450), ..probe };
    let (startup_probe, health_ready) = match broker.health() {
        Health::ClientPort => (started(client_probe.clone()), client_probe.clone()),
        Health::Http { port, started: path, ready } => {
            (started(http_probe(port, path)), Probe { period_seconds: Some(10), ..http_probe(port, ready) })
        }
    };
    let readiness_probe = match pod.ready_probe {
        Some(args) => Probe {
            exec: Some(ExecAction { command: Some([PROBE_BINARY.to_owned()].into_iter().chain(args).collect()) }),
            period_seconds: Some(5),
            // The probe gives up after 4 s and says why; the kubelet's limit is a backstop.
            timeout_seconds: Some(5),
            failure_threshold: Some(2),
            ..Probe::default()
        },
        None => health_ready,
    };
    let mut mounts = vec![
        VolumeMount { name: "config".into(), mount_path: broker.config_dir().into(), ..VolumeMount::default() },
        VolumeMount { name: DATA_VOLUME.into(), mount_path: broker.data_dir().into(), ..VolumeMount::default() },
        VolumeMount { name: "tmp".into(), mount_path: "/tmp".into(), ..VolumeMount::default() },
    ];
    if managed.tls {
        mounts.push(VolumeMount {
            name: "tls".into(),
            mount_path: broker.tls_dir().into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    if readiness_probe.exec.is_some() {
        mounts.push(VolumeMount {
            name: PROBE_VOLUME.into(),
            mount_path: PROBE_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    if let Some(secret_file) = &pod.secret_file {
        mounts.push(VolumeMount {
            name: "credentials".into(),
            mount_path: secret_file.mount_dir.clone(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    Container {
        name: "broker".into(),
        image: Some(managed.image.clone()),
        command: (!pod.command.is_empty()).then_some(pod.command),
        env: Some(env),
        ports: Some(
            broker
                .ports(managed.tls)
                .iter()
                .map(|(name, port)| ContainerPort {
                    name: Some((*name).to_owned()),
                    container_port: i32::from(*port),
                    ..ContainerPort::default()
                })
                .collect(),
        ),
        lifecycle: pod.pre_stop.map(|stop| Lifecycle {
            pre_stop: Some(LifecycleHandler {
                exec: Some(ExecAction { command: Some(stop.command) }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        startup_probe: Some(startup_probe),
        readiness_probe: Some(readiness_probe),
        // Generous: a broker replaying its log after a crash must not be killed for it.
        liveness_probe: Some(Probe { initial_delay_seconds: Some(60), failure_threshold: Some(6), ..client_probe }),
        resources: managed.resources.clone(),
        volume_mounts: Some(mounts),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Capabilities::default() }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

/// The volume `oms-probe` is copied into, and where the broker's container sees it.
const PROBE_VOLUME: &str = "probe";
const PROBE_DIR: &str = "/opt/oms-probe";
const PROBE_BINARY: &str = "/opt/oms-probe/oms-probe";

/// The init container that copies `oms-probe` out of the operator's image (`image`), which is
/// distroless and has no `cp`: the binary copies itself. Statically linked, it runs in any
/// broker image.
fn probe_installer(image: &str) -> Container {
    Container {
        name: "oms-probe".into(),
        image: Some(image.to_owned()),
        command: Some(vec!["/usr/local/bin/oms-probe".into(), "install".into(), PROBE_BINARY.into()]),
        volume_mounts: Some(vec![VolumeMount {
            name: PROBE_VOLUME.into(),
            mount_path: PROBE_DIR.into(),
            ..VolumeMount::default()
        }]),
        resources: Some(ResourceRequirements {
            requests: Some(
                [("cpu".to_owned(), Quantity("10m".into())), ("memory".to_owned(), Quantity("16Mi".into()))].into(),
            ),
            limits: Some([("memory".to_owned(), Quantity("32Mi".into()))].into()),
            ..ResourceRequirements::default()
        }),
        security_context: Some(locked_down()),
        ..Container::default()
    }
}

fn http_probe(port: u16, path: &str) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            port: IntOrString::Int(i32::from(port)),
            path: Some(path.to_owned()),
            ..HTTPGetAction::default()
        }),
        ..Probe::default()
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: path.to_owned(), api_version: None }),
            ..EnvVarSource::default()
        }),
    }
}

/// The addresses clients use: every broker pod for managed, the servers for external, the
/// endpoint for a gateway.
#[must_use]
pub fn client_hosts(ap: &AccessPoint, broker: Option<&dyn BrokerDriver>) -> Vec<(String, u16)> {
    match (&ap.plan, broker) {
        (Plan::Managed(managed), Some(broker)) => (0..managed.replicas)
            .map(|ordinal| {
                (
                    format!("{}-{ordinal}.{}.{}.svc", ap.name, headless_service_name(&ap.name), ap.namespace),
                    broker.client_port(managed.tls),
                )
            })
            .collect(),
        (Plan::External(external), _) => external.servers.clone(),
        (Plan::Gateway { endpoint }, _) => vec![endpoint.clone()],
        (Plan::Managed(_), None) => Vec::new(),
    }
}

/// RocketMQ's name servers as host:port: an external cluster's, or one per pod of a managed one;
/// none for the other drivers.
#[must_use]
pub fn name_servers(ap: &AccessPoint) -> Vec<String> {
    match &ap.plan {
        Plan::Managed(managed) if ap.driver == Driver::Rocketmq => {
            crate::drivers::rocketmq::name_servers(&ap.name, &ap.namespace, managed.replicas)
        }
        plan => plan.name_servers().iter().map(|(h, p)| format!("{h}:{p}")).collect(),
    }
}

/// The account written into the URL and binding Secret.
#[must_use]
pub fn account(ap: &AccessPoint) -> Option<String> {
    match &ap.plan {
        Plan::External(external) => external.account.clone(),
        _ => None,
    }
}

/// The RabbitMQ virtual host applications of the access point's namespace use: their own on a
/// managed broker (a tenant's is named after it), `/` on an external one. Empty for the other
/// drivers, which have none.
#[must_use]
pub fn vhost(ap: &AccessPoint) -> String {
    match (&ap.plan, ap.driver) {
        (Plan::Managed(_), Driver::Rabbitmq) => ap.namespace.clone(),
        (Plan::External(_), Driver::Rabbitmq) => "/".to_owned(),
        _ => String::new(),
    }
}

/// The OMS access point URL of `status.accessPoint`.
#[must_use]
pub fn access_point_url(ap: &AccessPoint, hosts: &[(String, u16)]) -> String {
    AccessPointUrl {
        driver: ap.driver.as_str().to_owned(),
        account: account(ap),
        hosts: hosts.to_vec(),
        region: ap.region.clone(),
    }
    .to_string()
}

/// The binding Secret that applications mount (OpenMessaging's environment keys), with the login
/// (a user and password, or NATS's token or credentials file) and TLS settings clients use.
#[must_use]
pub fn binding_secret(
    ap: &AccessPoint,
    hosts: &[(String, u16)],
    (credentials, nats_login): (Option<&Credentials>, Option<&crate::admin::NatsLogin>),
    tls: Option<&crate::broker_tls::BrokerTls>,
    owner: &OwnerReference,
) -> Secret {
    let endpoint = crate::admin::Endpoint {
        servers: hosts.iter().map(|(h, p)| format!("{h}:{p}")).collect(),
        username: credentials.map(|c| c.username.clone()),
        password: credentials.map(|c| c.password.clone()),
        nats_login: nats_login.cloned(),
        vhost: Some(vhost(ap)),
        sasl_mechanism: ap.plan.sasl_mechanism(),
        tls: tls.cloned(),
        name_servers: name_servers(ap),
    };
    let mut data = binding::keys(&endpoint, access_point_url(ap, hosts), ap.driver);
    data.insert("REGION".into(), ap.region.clone());
    data.insert("ACCOUNT_ID".into(), account(ap).unwrap_or_default());
    Secret {
        metadata: meta(ap, binding::secret_name(&ap.name), owner),
        type_: Some("Opaque".into()),
        data: Some(data.into_iter().map(|(k, v)| (k, ByteString(v.into_bytes()))).collect()),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access_point::validate::validate;
    use crate::drivers::DefaultImages;
    use crate::drivers::managed_driver;

    fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "openmessaging.cloud/v1alpha1".into(),
            kind: "MessagingAccessPoint".into(),
            name: "orders-kafka".into(),
            uid: "0f8e2a4c-1b2d-4e5f-8a9b-0c1d2e3f4a5b".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    fn managed(yaml: &str) -> (AccessPoint, Managed) {
        let spec = serde_yaml_ng::from_str(yaml).expect("spec");
        let images = DefaultImages {
            kafka: "apache/kafka:4.1.1".into(),
            nats: "nats:2.15.2".into(),
            rabbitmq: "rabbitmq:4.1.4".into(),
            mqtt: "eclipse-mosquitto:2.0.22".into(),
            rocketmq: "apache/rocketmq:5.3.3".into(),
            probe: "oms-operator:test".into(),
        };
        let ap = validate("orders-kafka", "acme", &spec, "local", None, &images).expect("valid");
        let Plan::Managed(m) = ap.plan.clone() else { panic!("managed") };
        (ap, m)
    }

    fn render(yaml: &str) -> (AccessPoint, ManagedObjects) {
        let (ap, m) = managed(yaml);
        let broker = managed_driver(ap.driver).expect("driver");
        let objects = managed_objects(&ap, &m, broker, &owner().uid, &owner(), Some("certificate"), None);
        (ap, objects)
    }

    #[test]
    fn cluster_id_is_the_uid_in_url_safe_base64() {
        assert_eq!(cluster_id("00000000-0000-0000-0000-000000000000"), "AAAAAAAAAAAAAAAAAAAAAA");
        // base64 of the bytes 00..0f is AAECAwQFBgcICQoLDA0ODw==.
        assert_eq!(cluster_id("00010203-0405-0607-0809-0a0b0c0d0e0f"), "AAECAwQFBgcICQoLDA0ODw");
        // A leading `-` would read as an option to kafka-storage (found on a real node).
        assert_eq!(cluster_id("fbffffff-ffff-ffff-ffff-ffffffffffff"), "A____________________w");
        assert_eq!(cluster_id("fbce1b4c-99e4-46c8-afaf-9b7aebc966e8"), "A84bTJnkRsivr5t668lm6A");
    }

    #[test]
    fn kafka_stateful_set_has_storage_owner_hash_and_parallel_start() {
        let (_, objects) =
            render("{driver: kafka, managed: {replicas: 3, storage: {size: 10Gi, storageClassName: fast}}}");
        let sts = objects.stateful_set;
        assert_eq!(sts.metadata.owner_references, Some(vec![owner()]));
        let spec = sts.spec.expect("spec");
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(spec.service_name.as_deref(), Some("orders-kafka"));
        assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
        let claim = &spec.volume_claim_templates.expect("claims")[0];
        let claim_spec = claim.spec.as_ref().expect("claim spec");
        assert_eq!(claim_spec.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(
            claim_spec.resources.as_ref().and_then(|r| r.requests.as_ref()).map(|r| r["storage"].0.clone()),
            Some("10Gi".into())
        );
        let template = spec.template;
        let hash = &template.metadata.expect("meta").annotations.expect("annotations")[CONFIG_HASH_ANNOTATION];
        assert_eq!(hash.len(), 64);
        let pod = template.spec.expect("pod");
        assert_eq!(pod.security_context.as_ref().and_then(|s| s.fs_group), Some(1000));
        assert_eq!(pod.containers[0].image.as_deref(), Some("apache/kafka:4.1.1"));
    }

    #[test]
    fn every_broker_pod_meets_the_restricted_pod_security_standard() {
        for driver in ["kafka", "nats", "rabbitmq", "mqtt"] {
            let (_, objects) = render(&format!("{{driver: {driver}, managed: {{replicas: 1}}}}"));
            let pod = objects.stateful_set.spec.and_then(|s| s.template.spec).expect("pod");
            let security = pod.security_context.expect("pod security context");
            assert_eq!(security.run_as_non_root, Some(true), "{driver}");
            assert!(security.run_as_user.is_some_and(|uid| uid > 0), "{driver}");
            assert_eq!(security.seccomp_profile.map(|p| p.type_).as_deref(), Some("RuntimeDefault"), "{driver}");
            let container = pod.containers[0].security_context.clone().expect("container security context");
            assert_eq!(container.allow_privilege_escalation, Some(false), "{driver}");
            assert_eq!(container.capabilities.and_then(|c| c.drop), Some(vec!["ALL".to_owned()]), "{driver}");
        }
    }

    #[test]
    fn config_change_changes_the_pod_template_hash() {
        let hash = |yaml: &str| {
            let sts = render(yaml).1.stateful_set;
            sts.spec.and_then(|s| s.template.metadata).and_then(|m| m.annotations).expect("annotations")
                [CONFIG_HASH_ANNOTATION]
                .clone()
        };
        let base = hash("{driver: kafka, managed: {replicas: 1}}");
        assert_eq!(base, hash("{driver: kafka, managed: {replicas: 1}}"));
        assert_ne!(base, hash("{driver: kafka, managed: {replicas: 1, config: {log.retention.hours: '1'}}}"));
    }

    #[test]
    fn the_server_certificate_names_every_pod_and_the_client_service() {
        let names = server_names("orders-kafka", "acme");
        let (ap, _) = managed("{driver: kafka, managed: {replicas: 3}}");
        for (host, _) in client_hosts(&ap, managed_driver(ap.driver)) {
            let wildcard = format!("*.{}", host.split_once('.').expect("a pod host").1);
            assert!(names.contains(&wildcard), "{host} is covered by {names:?}");
        }
        assert!(names.contains(&"orders-kafka-client.acme.svc".to_owned()));
    }

    #[test]
    fn a_renewed_server_certificate_changes_the_pod_template_hash() {
        let (ap, m) = managed("{driver: nats, managed: {replicas: 3}}");
        let broker = managed_driver(ap.driver).expect("driver");
        let hash = |certificate| {
            let sts = managed_objects(&ap, &m, broker, &owner().uid, &owner(), certificate, None).stateful_set;
            sts.spec.and_then(|s| s.template.metadata).and_then(|m| m.annotations).expect("annotations")
                [CONFIG_HASH_ANNOTATION]
                .clone()
        };
        assert_eq!(hash(Some("first")), hash(Some("first")));
        assert_ne!(hash(Some("first")), hash(Some("renewed")), "a new certificate rolls the brokers");
    }

    #[test]
    fn with_tls_the_certificate_secret_is_mounted_for_the_broker_group_and_tls_ports_are_served() {
        let (ap, objects) = render("{driver: mqtt, managed: {replicas: 1}}");
        let pod = objects.stateful_set.spec.and_then(|s| s.template.spec).expect("pod");
        let volume = pod.volumes.iter().flatten().find(|v| v.name == "tls").expect("a tls volume");
        let secret = volume.secret.clone().expect("from a Secret");
        assert_eq!(
            (secret.secret_name.as_deref(), secret.default_mode),
            (Some("orders-kafka-broker-tls"), Some(0o440))
        );
        let mount = pod.containers[0].volume_mounts.iter().flatten().find(|m| m.name == "tls").expect("mounted");
        assert_eq!(mount.mount_path, "/mosquitto/tls");
        let ready = pod.containers[0].readiness_probe.clone().and_then(|p| p.exec?.command).expect("oms-probe");
        assert!(ready.windows(2).any(|w| w == ["--port", "8883"]), "{ready:?}");
        assert!(ready.windows(2).any(|w| w == ["--ca", "/mosquitto/tls/ca.crt"]), "{ready:?}");
        assert_eq!(client_hosts(&ap, managed_driver(ap.driver))[0].1, 8883);
        let client = objects.client_service.spec.and_then(|s| s.ports).expect("ports");
        assert_eq!((client[0].name.as_deref(), client[0].port), (Some("mqtts"), 8883));

        let (ap, objects) = render("{driver: mqtt, managed: {replicas: 1}, tls: {enabled: false}}");
        let pod = objects.stateful_set.spec.and_then(|s| s.template.spec).expect("pod");
        assert!(pod.volumes.iter().flatten().all(|v| v.name != "tls"), "no certificate without TLS");
        assert_eq!(client_hosts(&ap, managed_driver(ap.driver))[0].1, 1883);
    }

    #[test]
    fn nats_is_started_once_caught_up_and_ready_while_jetstream_is_on_others_by_their_port_then_oms_probe() {
        let container = |spec| {
            let (_, objects) = render(spec);
            objects.stateful_set.spec.and_then(|s| s.template.spec).expect("pod").containers[0].clone()
        };
        let http = |probe: Option<Probe>| {
            let get = probe.and_then(|p| p.http_get).expect("an HTTP probe");
            (get.port, get.path.expect("a path"))
        };
        let nats = container("{driver: nats, managed: {replicas: 3}}");
        assert_eq!(http(nats.startup_probe.clone()), (IntOrString::Int(8222), "/healthz".to_owned()));
        assert_eq!(nats.startup_probe.and_then(|p| p.failure_threshold), Some(450));
        assert_eq!(http(nats.readiness_probe), (IntOrString::Int(8222), "/healthz?js-enabled-only=true".to_owned()));
        let alive = nats.liveness_probe.and_then(|p| p.tcp_socket).expect("liveness by the client port");
        assert_eq!(alive.port, IntOrString::Int(4222));

        // The others started by their client port within the same 15 minutes (a RabbitMQ node
        // opens it only once it has found its peers), then ready by oms-probe's login.
        for (spec, protocol) in [
            ("{driver: mqtt, managed: {replicas: 1}}", "mqtt"),
            ("{driver: rabbitmq, managed: {replicas: 3}}", "amqp"),
            ("{driver: kafka, managed: {replicas: 3}}", "kafka"),
        ] {
            let broker = container(spec);
            let startup = broker.startup_probe.expect("a startup probe");
            assert!(startup.tcp_socket.is_some() && startup.failure_threshold == Some(450), "{spec}");
            let ready = broker.readiness_probe.and_then(|p| p.exec?.command).expect("oms-probe");
            assert_eq!(ready[..2], ["/opt/oms-probe/oms-probe".to_owned(), protocol.to_owned()], "{spec}");
        }
    }

    #[test]
    fn kafka_is_ready_by_oms_probe_copied_in_from_the_operator_image_with_its_login_from_the_env() {
        let (_, objects) = render("{driver: kafka, managed: {replicas: 3}}");
        let pod = objects.stateful_set.spec.and_then(|s| s.template.spec).expect("pod");
        let installer = &pod.init_containers.clone().expect("an init container")[0];
        assert_eq!(installer.image.as_deref(), Some("oms-operator:test"));
        assert_eq!(
            installer.command.clone().expect("command"),
            ["/usr/local/bin/oms-probe", "install", "/opt/oms-probe/oms-probe"]
        );
        let security = installer.security_context.clone().expect("restricted");
        assert_eq!(
            (security.allow_privilege_escalation, security.read_only_root_filesystem),
            (Some(false), Some(true))
        );
        assert!(pod.volumes.iter().flatten().any(|v| v.name == "probe" && v.empty_dir.is_some()));

        let broker = &pod.containers[0];
        let ready = broker.readiness_probe.clone().expect("readiness");
        let command = ready.exec.and_then(|e| e.command).expect("an exec probe");
        assert_eq!(command[..2], ["/opt/oms-probe/oms-probe".to_owned(), "kafka".to_owned()]);
        assert!(command.windows(2).any(|w| w == ["--domain", "orders-kafka.acme.svc"]), "{command:?}");
        assert!(command.windows(2).any(|w| w == ["--ca", "/etc/oms/kafka-tls/ca.crt"]), "{command:?}");
        assert!(command.windows(2).any(|w| w == ["--password-env", "OMS_ADMIN_PASSWORD"]), "{command:?}");
        let mount = broker.volume_mounts.iter().flatten().find(|m| m.name == "probe").expect("mounted");
        assert_eq!((mount.mount_path.as_str(), mount.read_only), ("/opt/oms-probe", Some(true)));
        // Started and alive stay by the port: a broker replaying its log is not restarted for it.
        assert!(broker.startup_probe.clone().and_then(|p| p.tcp_socket).is_some());
        assert!(broker.liveness_probe.clone().and_then(|p| p.tcp_socket).is_some());

        let (_, objects) = render("{driver: kafka, managed: {replicas: 1}, tls: {enabled: false}}");
        let pod = objects.stateful_set.spec.and_then(|s| s.template.spec).expect("pod");
        let command = pod.containers[0].readiness_probe.clone().and_then(|p| p.exec?.command).expect("exec");
        assert!(!command.contains(&"--ca".to_owned()), "plaintext without TLS: {command:?}");

        let (_, objects) = render("{driver: nats, managed: {replicas: 3}}");
        let pod = objects.stateful_set.spec.and_then(|s| s.template.spec).expect("pod");
        assert!(pod.init_containers.is_none(), "NATS keeps its own health endpoint");
    }

    #[test]
    fn rabbitmq_and_mosquitto_probes_log_in_from_secrets_the_broker_already_has() {
        let secret_of = |container: &Container, name: &str| {
            let var = container.env.iter().flatten().find(|e| e.name == name).expect(name);
            let key = var.value_from.clone().and_then(|f| f.secret_key_ref).expect("from a Secret");
            (key.name, key.key)
        };
        let (_, objects) = render("{driver: rabbitmq, managed: {replicas: 3}}");
        let rabbitmq = objects.stateful_set.spec.and_then(|s| s.template.spec).expect("pod").containers[0].clone();
        let ready = rabbitmq.readiness_probe.clone().and_then(|p| p.exec?.command).expect("oms-probe");
        assert!(ready.windows(2).any(|w| w == ["--port", "5671"]), "amqps: {ready:?}");
        assert_eq!(secret_of(&rabbitmq, "OMS_ADMIN_USER"), ("orders-kafka-credentials".into(), "username".into()));
        assert_eq!(secret_of(&rabbitmq, "OMS_ADMIN_PASSWORD"), ("orders-kafka-credentials".into(), "password".into()));
        let start = &objects.config_map.data.expect("files")["start.sh"];
        assert!(start.contains("unset RABBITMQ_COOKIE OMS_ADMIN_PASSWORD"), "not the broker's: {start}");

        let (_, objects) = render("{driver: mqtt, managed: {replicas: 1}}");
        let mosquitto = objects.stateful_set.spec.and_then(|s| s.template.spec).expect("pod").containers[0].clone();
        let ready = mosquitto.readiness_probe.clone().and_then(|p| p.exec?.command).expect("oms-probe");
        assert!(ready.windows(2).any(|w| w == ["--user-env", "OMS_PROBE_USER"]), "{ready:?}");
        // The access point's own tenant, from the tenants Secret the password file comes from.
        assert_eq!(secret_of(&mosquitto, "OMS_PROBE_USER"), ("orders-kafka-tenants".into(), "acme.username".into()));
        assert_eq!(secret_of(&mosquitto, "OMS_PROBE_PASSWORD"), ("orders-kafka-tenants".into(), "acme".into()));
    }

    #[test]
    fn without_storage_data_lives_in_an_empty_dir() {
        let (_, objects) = render("{driver: nats, managed: {replicas: 1}}");
        let spec = objects.stateful_set.spec.expect("spec");
        assert!(spec.volume_claim_templates.is_none());
        let volumes = spec.template.spec.expect("pod").volumes.expect("volumes");
        assert!(volumes.iter().any(|v| v.name == "data" && v.empty_dir.is_some()));
    }

    #[test]
    fn services_are_headless_for_peers_and_plain_for_clients() {
        let (_, objects) = render("{driver: kafka, managed: {replicas: 3}}");
        let headless = objects.headless_service.spec.expect("spec");
        assert_eq!(headless.cluster_ip.as_deref(), Some("None"));
        assert_eq!(headless.publish_not_ready_addresses, Some(true));
        let client = objects.client_service.spec.expect("spec");
        assert_eq!(client.ports.expect("ports").iter().map(|p| p.port).collect::<Vec<_>>(), vec![9092]);
    }

    #[test]
    fn binding_secret_carries_the_openmessaging_keys_and_a_valid_url() {
        let (ap, _) = managed("{driver: kafka, region: eu-west-1, managed: {replicas: 2}}");
        let hosts = client_hosts(&ap, managed_driver(ap.driver));
        let secret = binding_secret(&ap, &hosts, (None, None), None, &owner());
        let data = secret.data.expect("data");
        let get = |k: &str| String::from_utf8(data[k].0.clone()).expect("utf8");
        assert_eq!(
            get("ACCESS_POINTS"),
            "orders-kafka-0.orders-kafka.acme.svc:9092,orders-kafka-1.orders-kafka.acme.svc:9092"
        );
        assert_eq!(get("REGION"), "eu-west-1");
        assert_eq!(get("DRIVER_IMPL"), "kafka");
        let url = get("ACCESS_POINT_URL");
        assert_eq!(
            url,
            "oms:kafka://orders-kafka-0.orders-kafka.acme.svc:9092,orders-kafka-1.orders-kafka.acme.svc:9092/eu-west-1"
        );
        assert!(url.parse::<AccessPointUrl>().is_ok());
    }

    #[test]
    fn a_managed_rocketmq_binding_names_its_proxy_and_the_name_server_of_its_pod() {
        let (ap, _) = managed("{driver: rocketmq, managed: {replicas: 1}}");
        let hosts = client_hosts(&ap, managed_driver(ap.driver));
        let secret = binding_secret(&ap, &hosts, (None, None), None, &owner());
        let data = secret.data.expect("data");
        let get = |k: &str| String::from_utf8(data[k].0.clone()).expect("utf8");
        assert_eq!(get("ACCESS_POINTS"), "orders-kafka-0.orders-kafka.acme.svc:8081");
        assert_eq!(get(crate::binding::NAME_SERVERS_KEY), "orders-kafka-0.orders-kafka.acme.svc:9876");
    }
}
