//! Pure pieces shared by the two workloads that run `oms-bridge`: bridge workers and gateways.
//! Both mount a config, a certificate and broker credentials read-only, serve `/metrics`,
//! `/healthz` and `/readyz` on the admin port, and run as non-root with nothing they do not need.
//! Also the config hash that rolls any pod of ours (brokers too) when its config changes, and the
//! error of a workload's reconcile.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, HTTPGetAction, KeyToPath,
    LocalObjectReference, PodSecurityContext, PodSpec, Probe, ProjectedVolumeSource, SeccompProfile, SecretProjection,
    SecretVolumeSource, SecurityContext, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPort, NetworkPolicySpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use oms_bridge_config::{AdminFile, Protocol, TlsFile};
use oms_crds::access_point::Driver;
use sha2::{Digest, Sha256};

use crate::binding;
use crate::certificates::CertificateError;

/// Pod template annotation with the hash of the pod's config: a changed config rolls the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "openmessaging.cloud/config-hash";

/// Hash of everything that must roll the pods when it changes: config files and image.
#[must_use]
pub fn config_hash(files: &BTreeMap<String, String>, image: &str) -> String {
    let mut hasher = Sha256::new();
    for (file, content) in files {
        hasher.update(file.as_bytes());
        hasher.update([0]);
        hasher.update(content.as_bytes());
        hasher.update([0]);
    }
    hasher.update(image.as_bytes());
    format!("{:x}", hasher.finalize())
}

/// The `oms-bridge` protocol of a driver's brokers; `None` for another cloud's gateway (a
/// Bridge reaches it as `Protocol::Gateway`, a gateway never fronts one).
#[must_use]
pub fn protocol(driver: Driver) -> Option<Protocol> {
    match driver {
        Driver::Kafka => Some(Protocol::Kafka),
        Driver::Nats => Some(Protocol::Nats),
        Driver::Rabbitmq => Some(Protocol::Amqp),
        Driver::Mqtt => Some(Protocol::Mqtt),
        Driver::Rocketmq => Some(Protocol::Rocketmq),
        Driver::Gateway => None,
    }
}

/// What fails a reconcile of a workload the operator runs (bridge workers, gateways).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Certificate(#[from] CertificateError),
    #[error("cannot read {what}: {source}")]
    Read { what: String, source: kube::Error },
    #[error("cannot write {what}: {source}")]
    Write { what: String, source: kube::Error },
}

impl Error {
    /// The `result` label of `oms_operator_reconcile_total`.
    #[must_use]
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Certificate(error) => error.metric_label(),
            Error::Read { .. } => "read",
            Error::Write { .. } => "write",
        }
    }
}

/// The admin port (`/metrics`, `/healthz`, `/readyz`) of workers and gateways.
pub const ADMIN_PORT: i32 = 9090;
/// Where the process finds its config, its certificate and its broker credentials.
pub const CONFIG_DIR: &str = "/etc/oms/config";
pub const TLS_DIR: &str = "/etc/oms/tls";
pub const CREDENTIALS_DIR: &str = "/etc/oms/credentials";

/// The workload's certificate Secret (trust bundle, certificate, key) as mounted at [`TLS_DIR`],
/// in the terms of a worker or gateway config file.
#[must_use]
pub fn mounted_tls() -> TlsFile {
    TlsFile {
        ca_file: format!("{TLS_DIR}/ca.crt").into(),
        cert_file: Some(format!("{TLS_DIR}/tls.crt").into()),
        key_file: Some(format!("{TLS_DIR}/tls.key").into()),
        server_name: None,
    }
}

/// The admin server (metrics, probes) on every interface at [`ADMIN_PORT`], as a config file names it.
#[must_use]
pub fn admin_file() -> AdminFile {
    AdminFile { listen: format!("0.0.0.0:{ADMIN_PORT}") }
}

/// A ConfigMap volume.
#[must_use]
pub fn config_volume(name: &str, config_map: &str) -> Volume {
    Volume {
        name: name.into(),
        config_map: Some(ConfigMapVolumeSource { name: config_map.into(), ..ConfigMapVolumeSource::default() }),
        ..Volume::default()
    }
}

/// A volume of a whole Secret (a certificate Secret: `tls.crt`, `tls.key`, `ca.crt`).
#[must_use]
pub fn secret_volume(name: &str, secret: &str) -> Volume {
    Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource { secret_name: Some(secret.into()), ..SecretVolumeSource::default() }),
        ..Volume::default()
    }
}

/// A broker's binding Secret as a workload mounts it: its login (`USERNAME`, `PASSWORD`, and
/// RabbitMQ's `VHOST`; or NATS's `TOKEN` or `NATS_CREDS`), its TLS settings (`CA_CERT`, and
/// `TLS_CERT`, `TLS_KEY` for a client certificate), or both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountedBinding {
    pub secret: String,
    pub login: Option<LoginFiles>,
    /// Whether the brokers speak TLS, with the client certificate and the name to check.
    pub tls: Option<BrokerTlsMount>,
}

/// The login a binding holds, by the files `oms-bridge` reads it from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginFiles {
    /// `username` and `password`.
    Password,
    /// NATS: `token`.
    Token,
    /// NATS: `nats.creds`, a credentials file.
    NatsCreds,
}

/// What of a binding's TLS settings a workload mounts and names in its config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerTlsMount {
    pub client_certificate: bool,
    pub server_name: Option<String>,
    /// A digest of the CA bundle, certificate and key: part of the pod template's config hash,
    /// so that new ones roll the pods (librdkafka reads the files once per client).
    pub digest: String,
}

impl MountedBinding {
    /// The binding Secret `secret` as `endpoint` (read from it) says to mount it; `None` for a
    /// broker with neither a login nor TLS.
    #[must_use]
    pub fn of(secret: String, endpoint: &crate::admin::Endpoint) -> Option<Self> {
        let tls = endpoint.tls.as_ref().map(|tls| BrokerTlsMount {
            client_certificate: tls.client.is_some(),
            server_name: tls.server_name.clone(),
            digest: {
                let (cert, key) = tls.client.clone().unwrap_or_default();
                config_hash(
                    &BTreeMap::from([("ca".into(), tls.ca_pem.clone()), ("cert".into(), cert), ("key".into(), key)]),
                    "",
                )
            },
        });
        let login = match (&endpoint.username, &endpoint.nats_login) {
            (Some(_), _) => Some(LoginFiles::Password),
            (None, Some(crate::admin::NatsLogin::Token(_))) => Some(LoginFiles::Token),
            (None, Some(crate::admin::NatsLogin::Creds(_))) => Some(LoginFiles::NatsCreds),
            (None, None) => None,
        };
        (login.is_some() || tls.is_some()).then_some(Self { secret, login, tls })
    }

    /// The volume: the keys used as the files `oms-bridge` reads (`username`, `password` or
    /// `token` or `nats.creds`, `vhost`, `sasl_mechanism`, `ca.crt`, `tls.crt`, `tls.key`);
    /// nothing else of the Secret.
    #[must_use]
    pub fn volume(&self, name: &str) -> Volume {
        let item = |key: &str, path: &str| KeyToPath { key: key.into(), path: path.into(), mode: None };
        let mut required = match self.login {
            Some(LoginFiles::Password) => vec![item("USERNAME", "username"), item("PASSWORD", "password")],
            Some(LoginFiles::Token) => vec![item(binding::TOKEN_KEY, "token")],
            Some(LoginFiles::NatsCreds) => vec![item(binding::NATS_CREDS_KEY, "nats.creds")],
            None => Vec::new(),
        };
        if let Some(tls) = &self.tls {
            required.push(item(binding::CA_CERT_KEY, "ca.crt"));
            if tls.client_certificate {
                required.extend([item(binding::TLS_CERT_KEY, "tls.crt"), item(binding::TLS_KEY_KEY, "tls.key")]);
            }
        }
        // Kafka's mechanism: optional, a binding Secret written by an older operator has none.
        let optional = vec![item("VHOST", "vhost"), item(binding::SASL_MECHANISM_KEY, "sasl_mechanism")];
        projected_secret(name, &self.secret, required, optional)
    }

    /// The config's credentials directory and TLS files, for the volume mounted at `dir`.
    #[must_use]
    pub fn files(&self, dir: &str) -> (Option<PathBuf>, Option<TlsFile>) {
        let tls = self.tls.as_ref().map(|tls| TlsFile {
            ca_file: format!("{dir}/ca.crt").into(),
            cert_file: tls.client_certificate.then(|| format!("{dir}/tls.crt").into()),
            key_file: tls.client_certificate.then(|| format!("{dir}/tls.key").into()),
            server_name: tls.server_name.clone(),
        });
        (self.login.map(|_| dir.into()), tls)
    }
}

/// Each tenant's broker user from the tenants Secret as `<tenant>/username`, `<tenant>/password`
/// and (optional, as above) `<tenant>/vhost`.
#[must_use]
pub fn tenants_volume(name: &str, tenants_secret: &str, tenants: &[String]) -> Volume {
    let item = |key: String, path: String| KeyToPath { key, path, mode: None };
    let required = tenants
        .iter()
        .flat_map(|t| {
            [item(crate::tenancy::username_key(t), format!("{t}/username")), item(t.clone(), format!("{t}/password"))]
        })
        .collect();
    let optional = tenants.iter().map(|t| item(crate::tenancy::vhost_key(t), format!("{t}/vhost"))).collect();
    projected_secret(name, tenants_secret, required, optional)
}

/// Asserts what the chart's PodMonitor (templates/podmonitor.yaml) selects and scrapes in a pod
/// template the operator renders: its labels and the named admin port.
///
/// # Panics
/// When the template lacks one of them.
#[cfg(test)]
pub fn assert_pod_monitor_finds(template: &k8s_openapi::api::core::v1::PodTemplateSpec, component: &str) {
    let labels = template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
    assert_eq!(labels.get("app.kubernetes.io/managed-by").map(String::as_str), Some("oms-operator"), "{labels:?}");
    assert_eq!(labels.get("app.kubernetes.io/component").map(String::as_str), Some(component), "{labels:?}");
    let containers = template.spec.as_ref().map(|pod| pod.containers.clone()).unwrap_or_default();
    let ports: Vec<_> = containers.iter().flat_map(|c| c.ports.clone().unwrap_or_default()).collect();
    assert!(ports.iter().any(|p| p.name.as_deref() == Some("admin") && p.container_port == ADMIN_PORT), "{ports:?}");
}

/// The Secrets a pod's volumes mount, in volume order (renderers' tests check that a pod mounts
/// only the Secrets it uses).
#[must_use]
pub fn mounted_secrets(pod: &PodSpec) -> Vec<String> {
    pod.volumes
        .iter()
        .flatten()
        .filter_map(|volume| match (&volume.secret, &volume.projected) {
            (Some(secret), _) => secret.secret_name.clone(),
            // A projected volume here is always of one Secret (`projected_secret`).
            (None, Some(projected)) => {
                projected.sources.iter().flatten().find_map(|source| Some(source.secret.as_ref()?.name.clone()))
            }
            (None, None) => None,
        })
        .collect()
}

/// A volume of one Secret's `required` keys and, where the Secret has them, its `optional` ones.
fn projected_secret(name: &str, secret: &str, required: Vec<KeyToPath>, optional: Vec<KeyToPath>) -> Volume {
    let source = |items: Vec<KeyToPath>, optional: bool| VolumeProjection {
        secret: Some(SecretProjection { name: secret.into(), items: Some(items), optional: Some(optional) }),
        ..VolumeProjection::default()
    };
    Volume {
        name: name.into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![source(required, false), source(optional, true)]),
            ..ProjectedVolumeSource::default()
        }),
        ..Volume::default()
    }
}

#[must_use]
pub fn read_only_mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount { name: name.into(), mount_path: path.into(), read_only: Some(true), ..VolumeMount::default() }
}

/// The `oms-bridge` container: `args` pick the role; `ports` are served besides the admin port.
#[must_use]
pub fn container(
    name: &str,
    image: &str,
    args: Vec<String>,
    ports: Vec<ContainerPort>,
    mounts: Vec<VolumeMount>,
) -> Container {
    let probe = |path: &str| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(ADMIN_PORT),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(10),
        ..Probe::default()
    };
    let mut all_ports = ports;
    all_ports.push(ContainerPort {
        name: Some("admin".into()),
        container_port: ADMIN_PORT,
        ..ContainerPort::default()
    });
    Container {
        name: name.into(),
        image: Some(image.to_owned()),
        args: Some(args),
        // Structured logs for the cluster's log pipeline.
        env: Some(vec![EnvVar { name: "OMS_LOG_FORMAT".into(), value: Some("json".into()), ..EnvVar::default() }]),
        ports: Some(all_ports),
        liveness_probe: Some(probe("/healthz")),
        readiness_probe: Some(probe("/readyz")),
        volume_mounts: Some(mounts),
        security_context: Some(locked_down()),
        ..Container::default()
    }
}

/// A container's part of the restricted Pod Security Standard, and a read-only root: for our
/// own binaries (bridge workers, gateways, the brokers' probe installer), which write nowhere but
/// their volumes.
#[must_use]
pub fn locked_down() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Capabilities::default() }),
        ..SecurityContext::default()
    }
}

/// A pod of one `oms-bridge` container that never talks to the API server.
#[must_use]
pub fn pod_spec(container: Container, volumes: Vec<Volume>) -> PodSpec {
    PodSpec {
        containers: vec![container],
        volumes: Some(volumes),
        // Workers drain in flight for up to 10 s on SIGTERM, gateways end streams within 5 s.
        termination_grace_period_seconds: Some(30),
        automount_service_account_token: Some(false),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(65_532),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..SeccompProfile::default() }),
            ..PodSecurityContext::default()
        }),
        ..PodSpec::default()
    }
}

/// Gives a pod template the operator's image pull Secrets (`--image-pull-secrets`), by name: like
/// any pod's, they must exist in its namespace.
pub fn add_pull_secrets(pod: Option<&mut PodSpec>, names: &[String]) {
    if let (Some(pod), false) = (pod, names.is_empty()) {
        let references = names.iter().map(|name| LocalObjectReference { name: name.clone() });
        pod.image_pull_secrets = Some(references.collect());
    }
}

/// Admits to the pods of `selector` only TCP on `ports` (from anywhere: the gateway's peers are
/// other clouds, and Prometheus and the operator read the admin port); everything else that
/// comes in is refused. Outbound traffic is left alone: brokers and gateways may be anywhere.
#[must_use]
pub fn ingress_policy(
    name: &str,
    namespace: &str,
    labels: BTreeMap<String, String>,
    selector: BTreeMap<String, String>,
    ports: &[i32],
    owner: OwnerReference,
) -> NetworkPolicy {
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(labels),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector { match_labels: Some(selector), ..LabelSelector::default() }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: None,
                ports: Some(
                    ports
                        .iter()
                        .map(|port| NetworkPolicyPort {
                            protocol: Some("TCP".into()),
                            port: Some(IntOrString::Int(*port)),
                            ..NetworkPolicyPort::default()
                        })
                        .collect(),
                ),
            }]),
            ..NetworkPolicySpec::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_secrets_are_added_by_name_and_none_leaves_the_pod_alone() {
        let mut pod = pod_spec(Container::default(), Vec::new());
        add_pull_secrets(Some(&mut pod), &[]);
        assert_eq!(pod.image_pull_secrets, None);
        add_pull_secrets(Some(&mut pod), &["regcred".to_owned(), "mirror".to_owned()]);
        let names: Vec<_> = pod.image_pull_secrets.iter().flatten().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["regcred", "mirror"]);
    }

    fn mounted_keys(binding: &MountedBinding) -> Vec<(String, String, Option<bool>)> {
        let volume = binding.volume("c");
        let sources = volume.projected.and_then(|p| p.sources).expect("sources");
        sources
            .iter()
            .filter_map(|s| s.secret.as_ref())
            .flat_map(|s| s.items.iter().flatten().map(move |i| (i.key.clone(), i.path.clone(), s.optional)))
            .collect()
    }

    #[test]
    fn a_binding_is_mounted_as_the_files_the_bridge_reads_and_nothing_else() {
        let owned = |keys: &[(&str, &str, Option<bool>)]| -> Vec<(String, String, Option<bool>)> {
            keys.iter().map(|(k, p, o)| ((*k).to_owned(), (*p).to_owned(), *o)).collect()
        };
        let login = MountedBinding { secret: "orders-binding".into(), login: Some(LoginFiles::Password), tls: None };
        assert_eq!(
            mounted_keys(&login),
            owned(&[
                ("USERNAME", "username", Some(false)),
                ("PASSWORD", "password", Some(false)),
                ("VHOST", "vhost", Some(true)),
                ("SASL_MECHANISM", "sasl_mechanism", Some(true))
            ])
        );
        assert_eq!(login.files("/etc/oms/credentials/source"), (Some("/etc/oms/credentials/source".into()), None));
        let mtls = MountedBinding {
            secret: "orders-binding".into(),
            login: None,
            tls: Some(BrokerTlsMount {
                client_certificate: true,
                server_name: Some("nats.example".into()),
                digest: String::new(),
            }),
        };
        assert_eq!(
            mounted_keys(&mtls),
            owned(&[
                ("CA_CERT", "ca.crt", Some(false)),
                ("TLS_CERT", "tls.crt", Some(false)),
                ("TLS_KEY", "tls.key", Some(false)),
                ("VHOST", "vhost", Some(true)),
                ("SASL_MECHANISM", "sasl_mechanism", Some(true))
            ])
        );
        let (credentials, tls) = mtls.files("/d");
        assert_eq!(credentials, None, "no login, no credentials directory");
        for (nats_login, key, file) in [
            (crate::admin::NatsLogin::Token("t".into()), "TOKEN", "token"),
            (crate::admin::NatsLogin::Creds("c".into()), "NATS_CREDS", "nats.creds"),
        ] {
            let endpoint = crate::admin::Endpoint { nats_login: Some(nats_login), ..crate::admin::Endpoint::default() };
            let mounted = MountedBinding::of("hub-binding".into(), &endpoint).expect("a login to mount");
            assert_eq!(mounted_keys(&mounted)[0], ((*key).to_owned(), (*file).to_owned(), Some(false)));
            assert_eq!(mounted.files("/d").0, Some("/d".into()), "read from the credentials directory");
        }
        let tls = tls.expect("tls");
        assert_eq!(
            (tls.ca_file, tls.cert_file, tls.server_name.as_deref()),
            ("/d/ca.crt".into(), Some("/d/tls.crt".into()), Some("nats.example"))
        );
    }

    #[test]
    fn the_policy_admits_only_the_listed_ports() {
        let policy = ingress_policy(
            "p",
            "acme",
            BTreeMap::new(),
            BTreeMap::new(),
            &[7443, ADMIN_PORT],
            OwnerReference::default(),
        );
        let rules = policy.spec.and_then(|s| s.ingress).expect("rules");
        assert_eq!(rules.len(), 1);
        let ports: Vec<_> = rules[0].ports.iter().flatten().map(|p| p.port.clone()).collect();
        assert_eq!(ports, [Some(IntOrString::Int(7443)), Some(IntOrString::Int(ADMIN_PORT))]);
    }
}
