//! RabbitMQ on the official `rabbitmq` image. Nodes form a cluster through RabbitMQ's Kubernetes
//! peer discovery (since 4.0 it derives the seed node from the StatefulSet ordinal, so the pods
//! need no API access); new queues are quorum queues by default.
//!
//! The admin credentials and the Erlang cookie live in the `<name>-credentials` Secret that the
//! controller creates once; `start.sh` installs the cookie before handing over to the image.

use std::fmt::Write as _;

use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, SecretKeySelector};
use oms_crds::common::{Capabilities, Dedup, Ordering};

use super::{BrokerDriver, BrokerInput, BrokerPod, SecretFile, env, passthrough_lines};

pub struct Rabbitmq;

const CLIENT_PORT: u16 = 5672;
const MANAGEMENT_PORT: u16 = 15672;
const DISTRIBUTION_PORT: u16 = 25672;
const PROMETHEUS_PORT: u16 = 15692;
const CONFIG_DIR: &str = "/etc/oms/rabbitmq";
const DATA_DIR: &str = "/var/lib/rabbitmq";

/// Name of the Secret with `username`, `password`, `erlang-cookie` and `credentials.conf`.
#[must_use]
pub fn credentials_secret(access_point: &str) -> String {
    format!("{access_point}-credentials")
}

impl BrokerDriver for Rabbitmq {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            partitions: false,
            ordering: Ordering::PerPartition,
            dedup: Dedup::None,
            delay: false,
            priority: true,
            headers: true,
            queue_objects: true,
        }
    }

    fn client_port(&self) -> u16 {
        CLIENT_PORT
    }

    fn ports(&self) -> &'static [(&'static str, u16)] {
        &[
            ("amqp", CLIENT_PORT),
            ("management", MANAGEMENT_PORT),
            ("epmd", 4369),
            ("distribution", DISTRIBUTION_PORT),
            ("prometheus", PROMETHEUS_PORT),
        ]
    }

    fn owned_config_keys(&self) -> &'static [&'static str] {
        &[
            "cluster_formation.peer_discovery_backend",
            "cluster_formation.k8s.host",
            "cluster_formation.k8s.address_type",
            "cluster_formation.k8s.service_name",
            "cluster_formation.k8s.hostname_suffix",
            "listeners.tcp.default",
            "management.tcp.port",
            "default_user",
            "default_pass",
            "loopback_users.guest",
        ]
    }

    fn config_dir(&self) -> &'static str {
        CONFIG_DIR
    }

    fn data_dir(&self) -> &'static str {
        DATA_DIR
    }

    fn fs_group(&self) -> Option<i64> {
        // The image runs as `rabbitmq` (uid/gid 999).
        Some(999)
    }

    fn render(&self, broker: &BrokerInput) -> BrokerPod {
        let mut conf = String::from("# Rendered by oms-operator; credentials come from conf.d.\n");
        let _ = write!(
            conf,
            "cluster_formation.peer_discovery_backend = k8s\n\
             cluster_formation.k8s.service_name = {name}\n\
             cluster_formation.k8s.hostname_suffix = .{name}.{namespace}.svc\n\
             listeners.tcp.default = {CLIENT_PORT}\n\
             management.tcp.port = {MANAGEMENT_PORT}\n\
             default_queue_type = quorum\n\
             loopback_users.guest = false\n",
            name = broker.name,
            namespace = broker.namespace,
        );
        conf.push_str(&passthrough_lines(&broker.config, " = "));
        let start = format!(
            "#!/bin/sh\n\
             # Rendered by oms-operator: installs the shared Erlang cookie, then starts RabbitMQ.\n\
             set -eu\n\
             umask 077\n\
             printf %s \"$RABBITMQ_COOKIE\" > {DATA_DIR}/.erlang.cookie\n\
             unset RABBITMQ_COOKIE\n\
             exec docker-entrypoint.sh rabbitmq-server\n"
        );
        let secret = credentials_secret(&broker.name);
        BrokerPod {
            files: [
                ("rabbitmq.conf".to_owned(), conf),
                (
                    "enabled_plugins".to_owned(),
                    "[rabbitmq_peer_discovery_k8s,rabbitmq_management,rabbitmq_prometheus].\n".to_owned(),
                ),
                ("start.sh".to_owned(), start),
            ]
            .into(),
            command: vec!["/bin/sh".into(), format!("{CONFIG_DIR}/start.sh")],
            env: vec![
                env("RABBITMQ_CONFIG_FILES", format!("{CONFIG_DIR}/rabbitmq.conf")),
                env("RABBITMQ_ENABLED_PLUGINS_FILE", format!("{CONFIG_DIR}/enabled_plugins")),
                env("RABBITMQ_USE_LONGNAME", "true"),
                env("RABBITMQ_NODENAME", format!("rabbit@$(POD_NAME).{}.{}.svc", broker.name, broker.namespace)),
                EnvVar {
                    name: "RABBITMQ_COOKIE".into(),
                    value: None,
                    value_from: Some(EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            name: secret.clone(),
                            key: "erlang-cookie".into(),
                            optional: Some(false),
                        }),
                        ..EnvVarSource::default()
                    }),
                },
            ],
            // The image reads every file of conf.d after rabbitmq.conf.
            secret_file: Some(SecretFile {
                secret,
                key: "credentials.conf".into(),
                mount_dir: "/etc/rabbitmq/conf.d".into(),
                file: "20-credentials.conf".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_discovered_through_the_headless_service_and_queues_default_to_quorum() {
        let input = BrokerInput {
            name: "billing-rabbit".into(),
            namespace: "acme".into(),
            replicas: 3,
            config: [("vm_memory_high_watermark.relative".to_owned(), "0.6".to_owned())].into(),
            cluster_id: "x".into(),
        };
        let pod = Rabbitmq.render(&input);
        let conf = &pod.files["rabbitmq.conf"];
        assert!(conf.contains("cluster_formation.peer_discovery_backend = k8s\n"));
        assert!(conf.contains("cluster_formation.k8s.hostname_suffix = .billing-rabbit.acme.svc\n"));
        assert!(conf.contains("default_queue_type = quorum\n"));
        assert!(conf.ends_with("vm_memory_high_watermark.relative = 0.6\n"));
        let node = pod.env.iter().find(|e| e.name == "RABBITMQ_NODENAME").and_then(|e| e.value.clone());
        assert_eq!(node.as_deref(), Some("rabbit@$(POD_NAME).billing-rabbit.acme.svc"));
    }
}
