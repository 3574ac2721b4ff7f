//! Pure rendering of an access point's gateway: its config file (the format
//! `oms-bridge gateway --config` reads), the Deployment that runs it, the Service in front of it
//! and the NetworkPolicy that admits only its port and the admin port.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{ConfigMap, ContainerPort, PodTemplateSpec, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use oms_bridge_config::{BackendFile, GatewayFile, Protocol};
use oms_crds::access_point::ServiceType;

use crate::exposure::{self, Gateway};
use crate::workload::{
    self, ADMIN_PORT, CONFIG_DIR, CONFIG_HASH_ANNOTATION, CREDENTIALS_DIR, MountedBinding, TLS_DIR, config_hash,
};

/// Where each tenant's broker user is mounted: `<dir>/<tenant>/username`, `password`.
const TENANTS_DIR: &str = "/etc/oms/tenants";

/// What a gateway needs to know, resolved from its access point, its binding Secret and the PKI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayInput {
    pub namespace: String,
    pub access_point: String,
    /// The protocol of the broker behind it.
    pub protocol: Protocol,
    pub servers: Vec<String>,
    /// The binding Secret mounted for the broker's login and TLS settings, if it has either.
    pub binding: Option<MountedBinding>,
    /// Other namespaces whose bridges may use the access point (`spec.sharing.tenants`).
    pub shared_with: Vec<String>,
    /// Where tenants have broker users of their own (managed NATS and Mosquitto): the tenants
    /// Secret and the tenants in it. Peers then reach the broker as their tenant.
    pub tenant_users: Option<(String, Vec<String>)>,
    pub exposure: Gateway,
    pub trust_domain: String,
    pub peer_trust_domains: Vec<String>,
}

/// The gateway config file.
#[must_use]
pub fn gateway_file(input: &GatewayInput) -> GatewayFile {
    let (credentials_dir, tls) = input.binding.as_ref().map(|b| b.files(CREDENTIALS_DIR)).unwrap_or_default();
    let backend = BackendFile {
        access_point: format!("{}/{}", input.namespace, input.access_point),
        driver: input.protocol,
        servers: input.servers.clone(),
        tls,
        credentials_dir,
        tenant_credentials_dir: input.tenant_users.as_ref().map(|_| TENANTS_DIR.into()),
        shared_with: input.shared_with.clone(),
    };
    GatewayFile {
        listen: format!("0.0.0.0:{}", input.exposure.port),
        trust_domain: input.trust_domain.clone(),
        peer_trust_domains: input.peer_trust_domains.clone(),
        tls: workload::mounted_tls(),
        backends: vec![backend],
        admin: Some(workload::admin_file()),
    }
}

/// The gateway config as the ConfigMap holds it (YAML).
#[must_use]
pub fn gateway_config(input: &GatewayInput) -> String {
    let body = serde_yaml_ng::to_string(&gateway_file(input)).unwrap_or_default();
    format!(
        "# Rendered by oms-operator for the gateway of MessagingAccessPoint {}/{}; edits are overwritten.\n{body}",
        input.namespace, input.access_point
    )
}

fn labels(access_point: &str) -> BTreeMap<String, String> {
    let mut labels = selector(access_point);
    labels.insert("app.kubernetes.io/name".into(), "oms-gateway".into());
    labels.insert("app.kubernetes.io/managed-by".into(), "oms-operator".into());
    labels
}

fn selector(access_point: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/instance".to_owned(), access_point.to_owned()),
        ("app.kubernetes.io/component".to_owned(), "gateway".to_owned()),
    ])
}

fn metadata(input: &GatewayInput, owner: &OwnerReference) -> ObjectMeta {
    ObjectMeta {
        name: Some(exposure::service_name(&input.access_point)),
        namespace: Some(input.namespace.clone()),
        labels: Some(labels(&input.access_point)),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    }
}

/// The ConfigMap holding `gateway.yaml`.
#[must_use]
pub fn config_map(input: &GatewayInput, config: &str, owner: &OwnerReference) -> ConfigMap {
    ConfigMap {
        metadata: metadata(input, owner),
        data: Some(BTreeMap::from([("gateway.yaml".to_owned(), config.to_owned())])),
        ..ConfigMap::default()
    }
}

/// What rolls the gateway when it changes: the config, and the TLS material of the backend's
/// mounted binding.
fn hashed_files(input: &GatewayInput, config: &str) -> BTreeMap<String, String> {
    let mut files = BTreeMap::from([("gateway.yaml".to_owned(), config.to_owned())]);
    if let Some(tls) = input.binding.as_ref().and_then(|b| b.tls.as_ref()) {
        files.insert("backend-tls".to_owned(), tls.digest.clone());
    }
    files
}

/// The gateway Deployment: one pod (the dedup window lives in it), rolled when its config changes.
#[must_use]
pub fn deployment(input: &GatewayInput, image: &str, config: &str, owner: &OwnerReference) -> Deployment {
    let name = exposure::service_name(&input.access_point);
    let mut volumes = vec![
        workload::config_volume("config", &name),
        workload::secret_volume("tls", &exposure::certificate_secret_name(&input.access_point)),
    ];
    let mut mounts = vec![workload::read_only_mount("config", CONFIG_DIR), workload::read_only_mount("tls", TLS_DIR)];
    if let Some(binding) = &input.binding {
        volumes.push(binding.volume("credentials"));
        mounts.push(workload::read_only_mount("credentials", CREDENTIALS_DIR));
    }
    if let Some((secret, tenants)) = &input.tenant_users {
        volumes.push(workload::tenants_volume("tenants", secret, tenants));
        mounts.push(workload::read_only_mount("tenants", TENANTS_DIR));
    }
    let args = vec!["gateway".into(), "--config".into(), format!("{CONFIG_DIR}/gateway.yaml")];
    let port =
        ContainerPort { name: Some("gateway".into()), container_port: input.exposure.port, ..ContainerPort::default() };
    let container = workload::container("gateway", image, args, vec![port], mounts);
    Deployment {
        metadata: metadata(input, owner),
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector { match_labels: Some(selector(&input.access_point)), ..LabelSelector::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(&input.access_point)),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_HASH_ANNOTATION.to_owned(),
                        config_hash(&hashed_files(input, config), image),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(workload::pod_spec(container, volumes)),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// The Service other clouds reach the gateway through (type and node port from the spec).
#[must_use]
pub fn service(input: &GatewayInput, owner: &OwnerReference) -> Service {
    let type_ = match input.exposure.service_type {
        ServiceType::ClusterIP => "ClusterIP",
        ServiceType::NodePort => "NodePort",
        ServiceType::LoadBalancer => "LoadBalancer",
    };
    Service {
        metadata: metadata(input, owner),
        spec: Some(ServiceSpec {
            type_: Some(type_.into()),
            selector: Some(selector(&input.access_point)),
            ports: Some(vec![ServicePort {
                name: Some("gateway".into()),
                port: input.exposure.port,
                target_port: Some(IntOrString::Int(input.exposure.port)),
                node_port: input.exposure.node_port.filter(|_| input.exposure.service_type != ServiceType::ClusterIP),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// Peers reach the gateway port, Prometheus and probes the admin port; nothing else comes in.
#[must_use]
pub fn network_policy(input: &GatewayInput, owner: &OwnerReference) -> NetworkPolicy {
    workload::ingress_policy(
        &exposure::service_name(&input.access_point),
        &input.namespace,
        labels(&input.access_point),
        selector(&input.access_point),
        &[input.exposure.port, ADMIN_PORT],
        owner.clone(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> GatewayInput {
        GatewayInput {
            namespace: "acme".into(),
            access_point: "eu-nats".into(),
            protocol: Protocol::Nats,
            servers: vec!["eu-nats.acme.svc:4222".into()],
            binding: Some(MountedBinding {
                secret: "eu-nats-binding".into(),
                login: Some(workload::LoginFiles::Password),
                tls: None,
            }),
            shared_with: vec!["globex".into()],
            tenant_users: Some(("eu-nats-tenants".into(), vec!["acme".into(), "globex".into()])),
            exposure: Gateway {
                port: 7443,
                service_type: ServiceType::NodePort,
                node_port: Some(30743),
                advertised_host: Some("gw.cloud-b.example".into()),
            },
            trust_domain: "cloud-b.oms".into(),
            peer_trust_domains: vec!["cloud-a.oms".into()],
        }
    }

    #[test]
    fn the_rendered_config_is_one_the_gateway_accepts() {
        let config = gateway_config(&input());
        let parsed = oms_bridge_config::parse_gateway("rendered", &config).unwrap_or_else(|e| panic!("{e}\n{config}"));
        assert_eq!(parsed.trust_domain, "cloud-b.oms");
        assert_eq!(parsed.peer_trust_domains, ["cloud-a.oms"]);
        assert_eq!(parsed.listen.port(), 7443);
        let backend = &parsed.backends[0];
        assert_eq!((backend.namespace.as_str(), backend.access_point.as_str()), ("acme", "eu-nats"));
        assert_eq!(backend.shared_with, ["globex"]);
        assert_eq!(backend.credentials_dir.as_deref(), Some(std::path::Path::new(CREDENTIALS_DIR)));
        let globex = backend.endpoint("globex_orders", "globex").credentials_dir;
        assert_eq!(globex.as_deref(), Some(std::path::Path::new("/etc/oms/tenants/globex")), "a peer is its tenant");
        assert_eq!(backend.tls, None, "plaintext where the binding says so");
    }

    #[test]
    fn a_backend_over_tls_gets_the_bindings_ca_and_every_peer_uses_it() {
        let mut over_tls = input();
        over_tls.binding = Some(MountedBinding {
            secret: "eu-nats-binding".into(),
            login: Some(workload::LoginFiles::Password),
            tls: Some(workload::BrokerTlsMount { client_certificate: false, server_name: None, digest: "d".into() }),
        });
        let config = gateway_config(&over_tls);
        let parsed = oms_bridge_config::parse_gateway("rendered", &config).unwrap_or_else(|e| panic!("{e}\n{config}"));
        let tls = parsed.backends[0].endpoint("globex_orders", "globex").tls.expect("tls");
        assert_eq!(tls.ca_file, std::path::Path::new("/etc/oms/credentials/ca.crt"));
        assert_eq!(tls.identity, None);
    }

    #[test]
    fn the_service_takes_its_type_and_node_port_from_the_spec() {
        let service = service(&input(), &OwnerReference::default());
        let spec = service.spec.expect("spec");
        assert_eq!(spec.type_.as_deref(), Some("NodePort"));
        assert_eq!(spec.ports.expect("ports")[0].node_port, Some(30743));
        let mut cluster_ip = input();
        cluster_ip.exposure.service_type = ServiceType::ClusterIP;
        let ports = super::service(&cluster_ip, &OwnerReference::default()).spec.and_then(|s| s.ports).expect("ports");
        assert_eq!(ports[0].node_port, None, "a ClusterIP Service has no node port");
    }

    #[test]
    fn the_gateway_mounts_its_certificate_and_rolls_when_its_config_changes() {
        let owner = OwnerReference::default();
        let render = |shared: &str| {
            let mut input = input();
            input.shared_with = vec![shared.to_owned()];
            deployment(&input, "img", &gateway_config(&input), &owner)
        };
        let pod = render("globex").spec.and_then(|s| s.template.spec).expect("pod");
        let secrets = workload::mounted_secrets(&pod);
        assert_eq!(secrets, ["eu-nats-oms-gateway-tls", "eu-nats-binding", "eu-nats-tenants"]);
        let hash =
            |d: Deployment| d.spec.and_then(|s| s.template.metadata).and_then(|m| m.annotations).unwrap_or_default();
        assert_ne!(hash(render("globex")), hash(render("initech")));
    }

    #[test]
    fn gateway_pods_are_found_and_scraped_by_the_charts_pod_monitor() {
        let input = input();
        let gateway = deployment(&input, "img", &gateway_config(&input), &OwnerReference::default());
        workload::assert_pod_monitor_finds(&gateway.spec.expect("spec").template, "gateway");
    }
}
