//! Pure rendering of a Bridge's worker: its config file (the format `oms-bridge worker --config`
//! reads, see bridge/README.md) and the Deployment that runs it. Inputs are the Bridge and its two
//! ends already resolved from their Queues and access points; no I/O here.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec, PodTemplateSpec, ServiceAccount, Volume, VolumeMount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use oms_bridge_config::{BridgeName, EndpointFile, Protocol, WorkerFile};
use oms_crds::bridge::{BridgeSpec, Delivery, StartFrom};
use oms_crds::common::Ordering;

use crate::workload::{
    self, ADMIN_PORT, CONFIG_DIR, CONFIG_HASH_ANNOTATION, CREDENTIALS_DIR, MountedBinding, TLS_DIR, config_hash,
};

/// One end of a bridge as the worker needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedEnd {
    /// How the worker talks to this end: a broker's protocol, or another cloud's gateway.
    pub driver: Protocol,
    /// `host:port` of the brokers, or of the other cloud's gateway.
    pub servers: Vec<String>,
    /// The broker-side queue name.
    pub queue: String,
    /// `<namespace>/<name>` of the access point serving the queue (for a gateway end: the one
    /// behind the gateway).
    pub access_point: String,
    /// RocketMQ: `host:port` of the name servers (the worker sets its group's positions there).
    pub name_servers: Vec<String>,
    /// The binding Secret the worker mounts for this end's login and TLS settings, if it has either.
    pub binding: Option<MountedBinding>,
    /// How long the queue's broker drops a repeated message id, as its Queue reports it (not
    /// rendered; [`super::validate::check_target_window`] reads it).
    pub duplicate_window: Option<std::time::Duration>,
}

/// Names of everything rendered for a Bridge.
#[must_use]
pub fn worker_name(bridge: &str) -> String {
    format!("{bridge}-oms-bridge")
}

/// The worker config file of a Bridge whose ends are resolved. `oms_bridge_config::validate_worker`
/// says whether the worker would accept it.
#[must_use]
pub fn worker_file(
    namespace: &str,
    name: &str,
    spec: &BridgeSpec,
    source: &ResolvedEnd,
    target: &ResolvedEnd,
) -> WorkerFile {
    WorkerFile {
        bridge: BridgeName { name: name.to_owned(), namespace: namespace.to_owned() },
        source: end_file("source", source),
        target: end_file("target", target),
        delivery: match spec.delivery {
            Delivery::AtLeastOnce => oms_bridge_config::Delivery::AtLeastOnce,
            Delivery::ExactlyOnce => oms_bridge_config::Delivery::ExactlyOnce,
        },
        ordering: match spec.ordering {
            Ordering::PerKey => oms_bridge_config::Ordering::PerKey,
            Ordering::PerPartition => oms_bridge_config::Ordering::PerPartition,
            Ordering::None => oms_bridge_config::Ordering::None,
        },
        filter: spec.filter.clone(),
        start_from: match spec.start_from {
            StartFrom::Earliest => oms_bridge_config::StartFrom::Earliest,
            StartFrom::Latest => oms_bridge_config::StartFrom::Latest,
            StartFrom::Timestamp => oms_bridge_config::StartFrom::Timestamp,
        },
        start_timestamp: spec.start_timestamp.as_ref().map(|time| time.0.to_string()),
        in_flight: None,
        lease: takes_turns(spec, source).then(|| worker_name(name)),
        admin: Some(workload::admin_file()),
    }
}

/// What rolls the workers when it changes: the config, and the TLS material of the ends' mounted
/// bindings.
fn hashed_files(config: &str, source: &ResolvedEnd, target: &ResolvedEnd) -> BTreeMap<String, String> {
    let mut files = BTreeMap::from([("worker.yaml".to_owned(), config.to_owned())]);
    for (role, end) in [("source", source), ("target", target)] {
        if let Some(tls) = end.binding.as_ref().and_then(|b| b.tls.as_ref()) {
            files.insert(format!("{role}-tls"), tls.digest.clone());
        }
    }
    files
}

/// Whether the Bridge's workers take turns through a Lease: several of them on a source with no
/// lock of its own (an MQTT session belongs to one client). The others have one: a Kafka group,
/// an AMQP queue's exclusive consumer, a JetStream consumer's pin.
#[must_use]
pub fn takes_turns(spec: &BridgeSpec, source: &ResolvedEnd) -> bool {
    spec.replicas > 1 && source.driver == Protocol::Mqtt
}

/// What workers that take turns need to hold the Bridge's Lease `<bridge>-oms-bridge`, and no
/// more: the Lease itself (made here, so that no worker needs to create one), a ServiceAccount,
/// and a Role to read and renew that one Lease, bound to it.
#[must_use]
pub fn lease_access(
    namespace: &str,
    bridge: &str,
    owner: OwnerReference,
) -> (Lease, ServiceAccount, Role, RoleBinding) {
    let name = worker_name(bridge);
    let metadata = ObjectMeta {
        name: Some(name.clone()),
        namespace: Some(namespace.to_owned()),
        labels: Some(labels(bridge)),
        owner_references: Some(vec![owner]),
        ..ObjectMeta::default()
    };
    let role = Role {
        metadata: metadata.clone(),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["coordination.k8s.io".into()]),
            resources: Some(vec!["leases".into()]),
            resource_names: Some(vec![name.clone()]),
            verbs: vec!["get".into(), "update".into()],
            ..PolicyRule::default()
        }]),
    };
    let binding = RoleBinding {
        metadata: metadata.clone(),
        role_ref: RoleRef { api_group: "rbac.authorization.k8s.io".into(), kind: "Role".into(), name: name.clone() },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: name.clone(),
            namespace: Some(namespace.to_owned()),
            ..Subject::default()
        }]),
    };
    let service_account = ServiceAccount { metadata: metadata.clone(), ..ServiceAccount::default() };
    (Lease { metadata, spec: None }, service_account, role, binding)
}

/// One end as the worker reads it; `role` (`source`, `target`) names its mounts in the pod.
fn end_file(role: &str, end: &ResolvedEnd) -> EndpointFile {
    let (credentials_dir, broker_tls) =
        end.binding.as_ref().map(|b| b.files(&format!("{CREDENTIALS_DIR}/{role}"))).unwrap_or_default();
    EndpointFile {
        driver: end.driver,
        servers: end.servers.clone(),
        queue: end.queue.clone(),
        access_point: Some(end.access_point.clone()),
        // A gateway end is reached with the Bridge's own certificate.
        tls: if end.driver == Protocol::Gateway { Some(workload::mounted_tls()) } else { broker_tls },
        name_servers: end.name_servers.clone(),
        credentials_dir,
    }
}

/// The worker config as the ConfigMap holds it (YAML).
#[must_use]
pub fn worker_config(file: &WorkerFile) -> String {
    let body = serde_yaml_ng::to_string(file).unwrap_or_default();
    let WorkerFile { bridge: BridgeName { namespace, name }, .. } = file;
    format!("# Rendered by oms-operator for Bridge {namespace}/{name}; edits are overwritten.\n{body}")
}

fn labels(bridge: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "oms-bridge".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), bridge.to_owned()),
        ("app.kubernetes.io/component".to_owned(), "bridge-worker".to_owned()),
        ("app.kubernetes.io/managed-by".to_owned(), "oms-operator".to_owned()),
    ])
}

/// The ConfigMap holding `worker.yaml`.
#[must_use]
pub fn config_map(namespace: &str, bridge: &str, config: &str, owner: OwnerReference) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(worker_name(bridge)),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels(bridge)),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([("worker.yaml".to_owned(), config.to_owned())])),
        ..ConfigMap::default()
    }
}

/// The labels that select a Bridge's worker pods.
fn selector(bridge: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/instance".to_owned(), bridge.to_owned()),
        ("app.kubernetes.io/component".to_owned(), "bridge-worker".to_owned()),
    ])
}

/// The label selector of a Bridge's worker pods, for listing them.
#[must_use]
pub fn pod_selector(bridge: &str) -> String {
    selector(bridge).iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// The worker Deployment: the config, the Bridge's certificate (`<bridge>-oms-tls`) and the ends'
/// credentials mounted read-only; probes on the admin port; a pod that runs as non-root with
/// nothing it does not need.
#[must_use]
pub fn deployment(
    namespace: &str,
    bridge: &str,
    spec: &BridgeSpec,
    image: &str,
    config: &str,
    (source, target): (&ResolvedEnd, &ResolvedEnd),
    owner: OwnerReference,
) -> Deployment {
    let name = worker_name(bridge);
    let (volumes, mounts) = volumes_and_mounts(bridge, source, target);
    let args = vec!["worker".into(), "--config".into(), format!("{CONFIG_DIR}/worker.yaml")];
    let container = workload::container("worker", image, args, Vec::new(), mounts);
    Deployment {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels(bridge)),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(spec.replicas),
            selector: LabelSelector { match_labels: Some(selector(bridge)), ..LabelSelector::default() },
            // One worker at a time per bridge: the old one stops (and commits) before the new starts.
            strategy: Some(DeploymentStrategy { type_: Some("Recreate".into()), ..DeploymentStrategy::default() }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(bridge)),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_HASH_ANNOTATION.to_owned(),
                        config_hash(&hashed_files(config, source, target), image),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(container, volumes, takes_turns(spec, source).then(|| worker_name(bridge)))),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// The worker's pod: one that never talks to the API server, unless it takes turns through the
/// Bridge's Lease; then as the ServiceAccount `service_account` of [`lease_access`], with its token.
fn pod_spec(container: Container, volumes: Vec<Volume>, service_account: Option<String>) -> PodSpec {
    let mut pod = workload::pod_spec(container, volumes);
    if service_account.is_some() {
        pod.service_account_name = service_account;
        pod.automount_service_account_token = Some(true);
    }
    pod
}

/// Nothing reaches a worker but scrapes and probes of its admin port.
#[must_use]
pub fn network_policy(namespace: &str, bridge: &str, owner: OwnerReference) -> NetworkPolicy {
    workload::ingress_policy(&worker_name(bridge), namespace, labels(bridge), selector(bridge), &[ADMIN_PORT], owner)
}

/// The config, the Bridge's certificate, and the login and TLS settings of the ends that have them.
fn volumes_and_mounts(bridge: &str, source: &ResolvedEnd, target: &ResolvedEnd) -> (Vec<Volume>, Vec<VolumeMount>) {
    let mut volumes = vec![
        workload::config_volume("config", &worker_name(bridge)),
        workload::secret_volume("tls", &super::certificate_secret_name(bridge)),
    ];
    let mut mounts = vec![workload::read_only_mount("config", CONFIG_DIR), workload::read_only_mount("tls", TLS_DIR)];
    for (role, end) in [("source", source), ("target", target)] {
        if let Some(binding) = &end.binding {
            volumes.push(binding.volume(&format!("{role}-credentials")));
            mounts
                .push(workload::read_only_mount(&format!("{role}-credentials"), &format!("{CREDENTIALS_DIR}/{role}")));
        }
    }
    (volumes, mounts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> BridgeSpec {
        serde_yaml_ng::from_str(yaml).expect("a valid spec")
    }

    fn kafka_end() -> ResolvedEnd {
        ResolvedEnd {
            driver: Protocol::Kafka,
            servers: vec!["orders-kafka-0.orders-kafka.acme.svc:9092".into()],
            queue: "orders".into(),
            access_point: "acme/orders".into(),
            name_servers: Vec::new(),
            binding: None,
            duplicate_window: None,
        }
    }

    fn gateway_end() -> ResolvedEnd {
        ResolvedEnd {
            driver: Protocol::Gateway,
            servers: vec!["gateway.cloud-b.example:7443".into()],
            queue: "orders-eu".into(),
            access_point: "acme/eu-nats".into(),
            name_servers: Vec::new(),
            binding: Some(MountedBinding {
                secret: "eu-binding".into(),
                login: Some(workload::LoginFiles::Password),
                tls: None,
            }),
            duplicate_window: None,
        }
    }

    const SPEC: &str = "source: {queueRef: {name: orders}}\ntarget: {queueRef: {name: orders-eu}}\n\
                        filter: \"headers['region'] == 'eu'\"\nstartFrom: Timestamp\nstartTimestamp: '2026-01-31T08:00:00Z'\n";

    fn rendered_config(namespace: &str, name: &str, spec: &BridgeSpec) -> String {
        worker_config(&worker_file(namespace, name, spec, &kafka_end(), &gateway_end()))
    }

    #[test]
    fn the_rendered_config_is_one_the_worker_accepts() {
        let config = rendered_config("acme", "orders-to-eu", &spec(SPEC));
        let parsed = oms_bridge_config::parse_worker("rendered", &config).unwrap_or_else(|e| panic!("{e}\n{config}"));
        assert_eq!(parsed.target.queue, "orders-eu");
        assert_eq!(parsed.target.access_point.as_deref(), Some("acme/eu-nats"));
        assert!(parsed.filter.is_some(), "the filter travels");
        assert_eq!(parsed.start_timestamp_ms, Some(1_769_846_400_000));
        assert!(parsed.target.tls.is_some(), "a gateway end gets the bridge's certificate");
        assert_eq!(parsed.target.credentials_dir.as_deref(), Some(std::path::Path::new("/etc/oms/credentials/target")));
    }

    #[test]
    fn a_changed_config_changes_the_pod_template_so_the_worker_rolls() {
        let owner = OwnerReference::default();
        let bridge = spec(SPEC);
        let render = |filter: &str| {
            let mut bridge = bridge.clone();
            bridge.filter = Some(filter.to_owned());
            let config = rendered_config("acme", "b", &bridge);
            deployment("acme", "b", &bridge, "oms-bridge:test", &config, (&kafka_end(), &gateway_end()), owner.clone())
        };
        let hash = |d: &Deployment| {
            d.spec.as_ref().and_then(|s| s.template.metadata.as_ref()).and_then(|m| m.annotations.clone())
        };
        assert_ne!(hash(&render("key == 'a'")), hash(&render("key == 'b'")));
        assert_eq!(hash(&render("key == 'a'")), hash(&render("key == 'a'")));
    }

    #[test]
    fn worker_pods_are_found_and_scraped_by_the_charts_pod_monitor() {
        let bridge = spec(SPEC);
        let config = rendered_config("acme", "b", &bridge);
        let worker =
            deployment("acme", "b", &bridge, "img", &config, (&kafka_end(), &gateway_end()), OwnerReference::default());
        crate::workload::assert_pod_monitor_finds(&worker.spec.expect("spec").template, "bridge-worker");
    }

    fn mqtt_end() -> ResolvedEnd {
        ResolvedEnd {
            driver: Protocol::Mqtt,
            servers: vec!["sensors-mqtt.acme.svc:1883".into()],
            queue: "readings".into(),
            access_point: "acme/sensors".into(),
            name_servers: Vec::new(),
            binding: None,
            duplicate_window: None,
        }
    }

    #[test]
    fn workers_of_an_mqtt_source_take_turns_through_a_lease_only_they_may_renew() {
        let mut three = spec(SPEC);
        three.replicas = 3;
        let file = worker_file("acme", "b", &three, &mqtt_end(), &kafka_end());
        assert_eq!(file.lease.as_deref(), Some("b-oms-bridge"));
        let config = worker_config(&file);
        let deployment =
            deployment("acme", "b", &three, "img", &config, (&mqtt_end(), &kafka_end()), OwnerReference::default());
        let pod = deployment.spec.and_then(|s| s.template.spec).expect("pod");
        assert_eq!(pod.service_account_name.as_deref(), Some("b-oms-bridge"));
        assert_eq!(pod.automount_service_account_token, Some(true), "its token renews the Lease");
        let (lease, account, role, binding) = lease_access("acme", "b", OwnerReference::default());
        assert_eq!(lease.metadata.name.as_deref(), Some("b-oms-bridge"));
        assert_eq!(account.metadata.name, lease.metadata.name);
        let rules = role.rules.expect("rules");
        assert_eq!(rules.len(), 1, "{rules:?}");
        assert_eq!(rules[0].resource_names, Some(vec!["b-oms-bridge".to_owned()]), "that Lease alone");
        assert_eq!(rules[0].verbs, ["get", "update"]);
        assert_eq!(binding.role_ref.name, "b-oms-bridge");
        assert_eq!(binding.subjects.expect("subjects")[0].name, "b-oms-bridge");
        // One worker, or a source with a lock of its own: no Lease, no token.
        for (replicas, source) in [(1, mqtt_end()), (3, kafka_end())] {
            let mut bridge = spec(SPEC);
            bridge.replicas = replicas;
            assert!(!takes_turns(&bridge, &source), "{replicas} workers of {:?}", source.driver);
            assert!(worker_file("acme", "b", &bridge, &source, &kafka_end()).lease.is_none());
        }
    }

    #[test]
    fn new_tls_material_of_an_end_rolls_the_worker() {
        let bridge = spec(SPEC);
        let config = rendered_config("acme", "b", &bridge);
        let render = |digest: &str| {
            let mut kafka = kafka_end();
            kafka.binding = Some(MountedBinding {
                secret: "orders-binding".into(),
                login: Some(workload::LoginFiles::Password),
                tls: Some(workload::BrokerTlsMount {
                    client_certificate: false,
                    server_name: None,
                    digest: digest.into(),
                }),
            });
            let deployment =
                deployment("acme", "b", &bridge, "img", &config, (&kafka, &gateway_end()), OwnerReference::default());
            deployment.spec.and_then(|s| s.template.metadata).and_then(|m| m.annotations).unwrap_or_default()
        };
        assert_ne!(render("ca-1"), render("ca-2"), "librdkafka reads a new CA only in a new client");
        assert_eq!(render("ca-1"), render("ca-1"));
    }

    #[test]
    fn the_worker_mounts_its_config_certificate_and_only_the_credentials_it_uses() {
        let bridge = spec(SPEC);
        let config = rendered_config("acme", "b", &bridge);
        let deployment =
            deployment("acme", "b", &bridge, "img", &config, (&kafka_end(), &gateway_end()), OwnerReference::default());
        let pod = deployment.spec.and_then(|s| s.template.spec).expect("pod");
        let secrets = workload::mounted_secrets(&pod);
        assert_eq!(secrets, ["b-oms-tls", "eu-binding"]);
        assert_eq!(pod.automount_service_account_token, Some(false), "the worker never talks to the API server");
    }
}
