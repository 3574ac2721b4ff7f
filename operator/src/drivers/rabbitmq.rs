//! RabbitMQ on the official `rabbitmq` image. Nodes form a cluster from the list of their stable
//! pod names (`classic_config` peer discovery; 3.13 and later, which pick one seed among nodes
//! that start together): it needs no API access, where the Kubernetes backend needs a token and
//! RBAC before 4.1. New queues are quorum queues by default. With TLS (the default) clients
//! reach amqps on 5671 only; the nodes' own distribution links stay in Erlang's plaintext
//! (inside the pod network, behind the NetworkPolicy that admits only the peers).
//!
//! The admin credentials and the Erlang cookie live in the `<name>-credentials` Secret that the
//! controller creates once; `start.sh` installs the cookie before handing over to the image.
//! Users, virtual hosts and permissions (the admin, and a user and virtual host per tenant) come
//! from definitions in the tenants Secret, imported at every boot; a change of tenants changes
//! `rabbitmq.conf`, which rolls the pods onto the new definitions.

use std::fmt::Write as _;

use k8s_openapi::api::core::v1::EnvVar;
use oms_crds::common::{Capabilities, Dedup, Ordering};

use super::{
    ADMIN_PASSWORD_ENV, ADMIN_USER_ENV, BrokerDriver, BrokerInput, BrokerPod, PreStop, SecretFile, credentials_secret,
    env, passthrough_lines, ready_probe, secret_env,
};
use crate::tenancy;

pub struct Rabbitmq;

const CLIENT_PORT: u16 = 5672;
const TLS_CLIENT_PORT: u16 = 5671;
const MANAGEMENT_PORT: u16 = 15672;
const DISTRIBUTION_PORT: u16 = 25672;
const PROMETHEUS_PORT: u16 = 15692;
const CONFIG_DIR: &str = "/etc/oms/rabbitmq";
const TLS_DIR: &str = "/etc/oms/rabbitmq-tls";
const DATA_DIR: &str = "/var/lib/rabbitmq";
const DEFINITIONS_DIR: &str = "/etc/oms/rabbitmq-users";
/// The peer discovery settings, beside rabbitmq.conf.
const PEERS_FILE: &str = "peers.conf";
/// How long a node about to stop waits for its quorum queues to keep a quorum without it: longer
/// than a peer takes to restart and catch up, short of holding a deletion for good.
const STOP_WAIT_SECONDS: i64 = 600;
/// Peer discovery tries (2 s apart) before a node gives up on its peers: 10 minutes.
const DISCOVERY_RETRIES: u32 = 300;
/// The first release whose rabbitmq.conf knows `default_queue_type` (older ones refuse to start).
const DEFAULT_QUEUE_TYPE_SINCE: (u32, u32) = (3, 13);

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

    fn ports(&self, tls: bool) -> Vec<(&'static str, u16)> {
        vec![
            if tls { ("amqps", TLS_CLIENT_PORT) } else { ("amqp", CLIENT_PORT) },
            ("management", MANAGEMENT_PORT),
            ("epmd", 4369),
            ("distribution", DISTRIBUTION_PORT),
            ("prometheus", PROMETHEUS_PORT),
        ]
    }

    fn owned_config_keys(&self) -> &'static [&'static str] {
        &[
            "cluster_formation.*",
            "listeners.tcp",
            "listeners.tcp.default",
            "listeners.ssl.default",
            "ssl_options.cacertfile",
            "ssl_options.certfile",
            "ssl_options.keyfile",
            "ssl_options.verify",
            "ssl_options.fail_if_no_peer_cert",
            "management.tcp.port",
            "default_user",
            "default_pass",
            "load_definitions",
            "loopback_users.guest",
            "log.console",
            "log.file",
        ]
    }

    fn config_dir(&self) -> &'static str {
        CONFIG_DIR
    }

    fn tls_dir(&self) -> &'static str {
        TLS_DIR
    }

    fn data_dir(&self) -> &'static str {
        DATA_DIR
    }

    fn clusters_since(&self) -> Option<(u32, u32)> {
        // Before 3.13 a blank node joins only a peer already running: nodes that all start at
        // once each wait for another, then run alone.
        Some((3, 13))
    }

    fn run_as(&self) -> i64 {
        // The image's `rabbitmq` user; as it, the entrypoint does not switch users.
        999
    }

    fn render(&self, broker: &BrokerInput) -> BrokerPod {
        let mut conf = format!(
            "# Rendered by oms-operator. Users and virtual hosts (definitions): the admin, and per tenant: {}.\n\
             load_definitions = {DEFINITIONS_DIR}/definitions.json\n",
            broker.tenants.join(", ")
        );
        if broker.tls {
            // amqps only: no plaintext listener. Clients show no certificate (they log in).
            let _ = write!(
                conf,
                "listeners.tcp = none\n\
                 listeners.ssl.default = {TLS_CLIENT_PORT}\n\
                 ssl_options.cacertfile = {TLS_DIR}/ca.crt\n\
                 ssl_options.certfile = {TLS_DIR}/tls.crt\n\
                 ssl_options.keyfile = {TLS_DIR}/tls.key\n\
                 ssl_options.verify = verify_none\n\
                 ssl_options.fail_if_no_peer_cert = false\n"
            );
        } else {
            let _ = writeln!(conf, "listeners.tcp.default = {CLIENT_PORT}");
        }
        let _ = write!(
            conf,
            "management.tcp.port = {MANAGEMENT_PORT}\n\
             loopback_users.guest = false\n\
             log.console = true\n\
             log.file = false\n"
        );
        // Queues the operator declares are quorum queues by their arguments on every version;
        // this makes them the default for applications too, where the broker knows the setting.
        if broker.image_version().is_none_or(|version| version >= DEFAULT_QUEUE_TYPE_SINCE) {
            conf.push_str("default_queue_type = quorum\n");
        }
        conf.push_str(&passthrough_lines(&broker.config, " = "));
        // Peer discovery runs only on a node's first boot, to find a cluster to join among the
        // listed nodes; nodes that joined never read the list again. So it is a file of its own,
        // outside the config hash: a change of size rolls no pod (a shrink retires its nodes
        // one by one, and a roll at the same time would stop the nodes it keeps). A node that
        // finds none of its peers within the retries runs alone for good, so the retries outlast
        // a slow start of all nodes at once (Parallel pods) rather than RabbitMQ's default 30 s.
        let mut peers = "cluster_formation.peer_discovery_backend = classic_config\n".to_owned();
        for ordinal in 0..broker.replicas {
            let node = node_name(&broker.name, &broker.namespace, ordinal);
            let _ = writeln!(peers, "cluster_formation.classic_config.nodes.{} = {node}", ordinal + 1);
        }
        if broker.replicas > 1 {
            let _ = write!(
                peers,
                "cluster_formation.discovery_retry_limit = {DISCOVERY_RETRIES}\n\
                 cluster_formation.discovery_retry_interval = 2000\n"
            );
        }
        let start = format!(
            "#!/bin/sh\n\
             # Rendered by oms-operator: installs the shared Erlang cookie, then starts RabbitMQ.\n\
             set -eu\n\
             umask 077\n\
             # A new file, not the old one rewritten: a volume's fsGroup may have opened up the old\n\
             # one's mode, and Erlang refuses a cookie that others can read.\n\
             rm -f {DATA_DIR}/.erlang.cookie\n\
             printf %s \"$RABBITMQ_COOKIE\" > {DATA_DIR}/.erlang.cookie\n\
             # The admin's password is the readiness probe's (the kubelet runs it with the\n\
             # container's environment), not the broker's.\n\
             unset RABBITMQ_COOKIE {ADMIN_PASSWORD_ENV}\n\
             exec docker-entrypoint.sh rabbitmq-server\n"
        );
        let secret = credentials_secret(&broker.name);
        BrokerPod {
            files: [
                ("rabbitmq.conf".to_owned(), conf),
                ("enabled_plugins".to_owned(), "[rabbitmq_management,rabbitmq_prometheus].\n".to_owned()),
                ("start.sh".to_owned(), start),
            ]
            .into(),
            discovery_files: [(PEERS_FILE.to_owned(), peers)].into(),
            command: vec!["/bin/sh".into(), format!("{CONFIG_DIR}/start.sh")],
            env: container_env(broker, &secret),
            secret_file: Some(SecretFile {
                secret: tenancy::tenants_secret_name(&broker.name),
                key: tenancy::RABBITMQ_DEFINITIONS_KEY.into(),
                mount_dir: DEFINITIONS_DIR.into(),
                file: "definitions.json".into(),
            }),
            // Rendered for any size: a node alone in its cluster passes the check at once, and a
            // size change leaves the pod template as it is.
            pre_stop: Some(wait_for_quorum_plus_one()),
            // Ready when the node takes the operator's login and opens the default virtual host
            // (down on this node, the Open fails).
            ready_probe: Some(ready_probe(
                "amqp",
                broker,
                self.client_port(broker.tls),
                (ADMIN_USER_ENV, ADMIN_PASSWORD_ENV),
                TLS_DIR,
            )),
        }
    }
}

/// The Erlang node name of pod `ordinal` of RabbitMQ access point `name` in `namespace`: the
/// name each node gives itself (`RABBITMQ_NODENAME`) and the one its peers know it by.
#[must_use]
pub fn node_name(name: &str, namespace: &str, ordinal: i32) -> String {
    format!("rabbit@{name}-{ordinal}.{name}.{namespace}.svc")
}

/// A node of a cluster stops only once every quorum queue it holds a member of keeps a quorum
/// without it: during a roll, the node restarted before it may not have caught up yet.
fn wait_for_quorum_plus_one() -> PreStop {
    PreStop {
        command: vec![
            "rabbitmq-upgrade".into(),
            "--timeout".into(),
            STOP_WAIT_SECONDS.to_string(),
            "await_online_quorum_plus_one".into(),
        ],
        grace_seconds: STOP_WAIT_SECONDS + 60,
    }
}

/// The broker's environment: where RabbitMQ finds its files, its node name, the shared Erlang
/// cookie, and the operator's login for the readiness probe.
fn container_env(broker: &BrokerInput, secret: &str) -> Vec<EnvVar> {
    vec![
        env("RABBITMQ_CONFIG_FILE", format!("{CONFIG_DIR}/rabbitmq.conf")),
        // The only additional file: the image's conf.d defaults are ours to set.
        env("RABBITMQ_CONFIG_FILES", format!("{CONFIG_DIR}/{PEERS_FILE}")),
        env("RABBITMQ_ENABLED_PLUGINS_FILE", format!("{CONFIG_DIR}/enabled_plugins")),
        env("RABBITMQ_USE_LONGNAME", "true"),
        env("RABBITMQ_NODENAME", format!("rabbit@$(POD_NAME).{}.{}.svc", broker.name, broker.namespace)),
        secret_env(ADMIN_USER_ENV, secret, "username"),
        secret_env(ADMIN_PASSWORD_ENV, secret, "password"),
        secret_env("RABBITMQ_COOKIE", secret, "erlang-cookie"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_listed_by_their_pod_names_and_queues_default_to_quorum() {
        let input = BrokerInput {
            name: "billing-rabbit".into(),
            namespace: "acme".into(),
            replicas: 3,
            config: [("vm_memory_high_watermark.relative".to_owned(), "0.6".to_owned())].into(),
            cluster_id: "x".into(),
            image: "rabbitmq:4.1.4".into(),
            tenants: vec!["acme".into()],
            shared: false,
            tls: true,
            kafka_quorum: None,
        };
        let pod = Rabbitmq.render(&input);
        let conf = &pod.files["rabbitmq.conf"];
        let peers = &pod.discovery_files["peers.conf"];
        assert!(peers.contains(
            "cluster_formation.peer_discovery_backend = classic_config\n\
             cluster_formation.classic_config.nodes.1 = rabbit@billing-rabbit-0.billing-rabbit.acme.svc\n\
             cluster_formation.classic_config.nodes.2 = rabbit@billing-rabbit-1.billing-rabbit.acme.svc\n\
             cluster_formation.classic_config.nodes.3 = rabbit@billing-rabbit-2.billing-rabbit.acme.svc\n\
             cluster_formation.discovery_retry_limit = 300\n"
        ));
        assert!(!pod.files["enabled_plugins"].contains("k8s"), "no plugin that needs API access");
        assert!(conf.contains("default_queue_type = quorum\n"));
        for older in ["rabbitmq:3.10.8-management", "registry.local:5000/rabbitmq:3.12"] {
            let old = Rabbitmq.render(&BrokerInput { image: older.into(), ..input.clone() });
            assert!(!old.files["rabbitmq.conf"].contains("default_queue_type"), "{older} does not know it");
        }
        assert!(conf.ends_with("vm_memory_high_watermark.relative = 0.6\n"));
        let single = Rabbitmq.render(&BrokerInput { replicas: 1, ..input.clone() });
        assert!(!single.discovery_files["peers.conf"].contains("nodes.2"), "nothing to discover");
        assert!(!single.discovery_files["peers.conf"].contains("discovery_retry_limit"), "nothing to wait for");
        // Only a first boot reads the peers: a change of size changes no hashed file.
        assert_eq!(single.files, pod.files, "a scale rolls no pod");
        let extra = pod.env.iter().find(|e| e.name == "RABBITMQ_CONFIG_FILES").and_then(|e| e.value.clone());
        assert_eq!(extra.as_deref(), Some("/etc/oms/rabbitmq/peers.conf"));
        for owned in ["cluster_formation.classic_config.nodes.7", "cluster_formation.k8s.host"] {
            assert!(Rabbitmq.owns_config_key(owned), "{owned}: cluster formation is the operator's");
        }
        assert!(!Rabbitmq.owns_config_key("vm_memory_high_watermark.relative"));
        let pre_stop = pod.pre_stop.as_ref().expect("a node waits before it stops");
        assert_eq!(pre_stop.command[3], "await_online_quorum_plus_one");
        assert!(pre_stop.grace_seconds > 600, "the pod is not killed while it waits");
        assert_eq!(single.pre_stop, pod.pre_stop, "a single node passes the check at once; a scale rolls no pod");
        // The node names in the list are the names the nodes give themselves.
        let node = pod.env.iter().find(|e| e.name == "RABBITMQ_NODENAME").and_then(|e| e.value.clone());
        assert_eq!(node.as_deref(), Some("rabbit@$(POD_NAME).billing-rabbit.acme.svc"));
    }

    /// One node of the current version, serving its own namespace over TLS.
    fn single_node() -> BrokerInput {
        BrokerInput {
            name: "billing-rabbit".into(),
            namespace: "acme".into(),
            replicas: 1,
            config: std::collections::BTreeMap::new(),
            cluster_id: "x".into(),
            image: "rabbitmq:4.1.4".into(),
            tenants: vec!["acme".into()],
            shared: false,
            tls: true,
            kafka_quorum: None,
        }
    }

    #[test]
    fn users_come_from_the_tenants_definitions_and_a_new_tenant_rolls_the_pods() {
        let input = single_node();
        let pod = Rabbitmq.render(&input);
        let file = pod.secret_file.as_ref().expect("the definitions file");
        assert_eq!((file.secret.as_str(), file.key.as_str()), ("billing-rabbit-tenants", "rabbitmq-definitions.json"));
        let conf = &pod.files["rabbitmq.conf"];
        assert!(conf.contains(&format!("load_definitions = {}/{}\n", file.mount_dir, file.file)));
        let more = Rabbitmq.render(&BrokerInput { tenants: vec!["acme".into(), "globex".into()], ..input });
        assert_ne!(more.files["rabbitmq.conf"], *conf, "the config hash changes with the tenants");
    }

    #[test]
    fn with_tls_only_amqps_listens_and_without_it_only_amqp() {
        let input = single_node();
        let conf = &Rabbitmq.render(&input).files["rabbitmq.conf"];
        assert!(conf.contains("listeners.tcp = none\nlisteners.ssl.default = 5671\n"), "{conf}");
        assert!(conf.contains("ssl_options.keyfile = /etc/oms/rabbitmq-tls/tls.key\n"), "{conf}");
        assert_eq!(Rabbitmq.ports(true)[0], ("amqps", 5671));
        let plain = &Rabbitmq.render(&BrokerInput { tls: false, ..input }).files["rabbitmq.conf"];
        assert!(plain.contains("listeners.tcp.default = 5672\n") && !plain.contains("ssl"), "{plain}");
        assert_eq!(Rabbitmq.ports(false)[0], ("amqp", 5672));
    }
}
