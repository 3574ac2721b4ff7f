//! NATS with JetStream on the official `nats` image: file storage on the data volume, and with
//! more than one replica a cluster whose routes name every pod through the headless Service.
//! With TLS (the default) clients and routes speak TLS with the pod's certificate from the
//! operator's CA; routes present it to each other too. Each tenant is an account; the operator's
//! own user is in the system account.

use std::fmt::Write as _;

use oms_crds::common::{Capabilities, Dedup, Ordering};

use super::{
    ADMIN_PASSWORD_ENV, BrokerDriver, BrokerInput, BrokerPod, Health, credentials_secret, passthrough_lines, secret_env,
};
use crate::tenancy;

pub struct Nats;

const CLIENT_PORT: u16 = 4222;
const CLUSTER_PORT: u16 = 6222;
const MONITOR_PORT: u16 = 8222;
const CONFIG_DIR: &str = "/etc/oms/nats";
const TLS_DIR: &str = "/etc/oms/nats-tls";
const DATA_DIR: &str = "/data";

impl BrokerDriver for Nats {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            partitions: false,
            ordering: Ordering::PerPartition,
            dedup: Dedup::MessageId,
            delay: false,
            priority: false,
            headers: true,
            queue_objects: true,
        }
    }

    fn ports(&self, _tls: bool) -> Vec<(&'static str, u16)> {
        vec![("client", CLIENT_PORT), ("cluster", CLUSTER_PORT), ("monitor", MONITOR_PORT)]
    }

    /// NATS's own health endpoint: after a start `/healthz` answers 200 once JetStream has a meta
    /// leader and this server's streams and consumers have caught up, so a roll moves on only
    /// then; afterwards only JetStream being on is asked, so that a follower lagging under load
    /// is not taken out of its Services.
    fn health(&self) -> Health {
        Health::Http { port: MONITOR_PORT, started: "/healthz", ready: "/healthz?js-enabled-only=true" }
    }

    fn owned_config_keys(&self) -> &'static [&'static str] {
        &[
            "server_name",
            "port",
            "listen",
            "http",
            "http_port",
            "cluster",
            "routes",
            "jetstream",
            "store_dir",
            "accounts",
            "authorization",
            "no_auth_user",
            "tls",
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

    fn run_as(&self) -> i64 {
        // The image has no user of its own (it runs as root by default): any non-root id works,
        // its data volume is made writable through fsGroup.
        65_532
    }

    fn render(&self, broker: &BrokerInput) -> BrokerPod {
        let mut conf = String::from("# Rendered by oms-operator.\nserver_name: $POD_NAME\n");
        let _ = write!(
            conf,
            "port: {CLIENT_PORT}\nhttp_port: {MONITOR_PORT}\njetstream {{\n  store_dir: \"{DATA_DIR}/jetstream\"\n}}\n"
        );
        if broker.tls {
            conf.push_str(&tls_block(""));
        }
        if broker.replicas > 1 {
            let _ = write!(conf, "cluster {{\n  name: \"{}\"\n  port: {CLUSTER_PORT}\n  routes: [\n", broker.name);
            for ordinal in 0..broker.replicas {
                let _ = writeln!(conf, "    \"nats://{}:{CLUSTER_PORT}\"", broker.pod_host(ordinal));
            }
            conf.push_str("  ]\n");
            if broker.tls {
                conf.push_str(&tls_block("  "));
            }
            conf.push_str("}\n");
        }
        // A tenant is an account: its streams and subjects are invisible to every other one.
        // Passwords are variables the server reads from the environment (the tenants Secret).
        let secret = tenancy::tenants_secret_name(&broker.name);
        let mut env = Vec::with_capacity(broker.tenants.len() + 1);
        // The operator's own user is in the system account, which asks every server about
        // JetStream and retires a server from it when the cluster shrinks. It is the server's
        // default system account, named as it is: another name would move the meta group's
        // files and make the servers start a new, empty one.
        let _ = write!(
            conf,
            "accounts {{\n  \"$SYS\" {{\n    users: [{{user: \"{}\", password: ${ADMIN_PASSWORD_ENV}}}]\n  }}\n",
            tenancy::ADMIN_USER
        );
        env.push(secret_env(ADMIN_PASSWORD_ENV, &credentials_secret(&broker.name), "password"));
        for tenant in &broker.tenants {
            let variable = tenancy::password_env(tenant);
            let _ = write!(
                conf,
                "  \"{tenant}\" {{\n    jetstream: enabled\n    users: [{{user: \"{tenant}\", password: ${variable}}}]\n  }}\n"
            );
            env.push(secret_env(&variable, &secret, tenant));
        }
        conf.push_str("}\n");
        conf.push_str(&passthrough_lines(&broker.config, ": "));
        BrokerPod {
            files: [("nats.conf".to_owned(), conf)].into(),
            command: vec!["nats-server".into(), "--config".into(), format!("{CONFIG_DIR}/nats.conf")],
            // `server_name: $POD_NAME` reads the variable every broker pod gets.
            env,
            secret_file: None,
            ..BrokerPod::default()
        }
    }
}

/// A `tls` block with the mounted certificate, indented by `indent`. The handshake may take
/// seconds on a loaded node (the server's default allows half of one).
fn tls_block(indent: &str) -> String {
    format!(
        "{indent}tls {{\n\
         {indent}  cert_file: \"{TLS_DIR}/tls.crt\"\n\
         {indent}  key_file: \"{TLS_DIR}/tls.key\"\n\
         {indent}  ca_file: \"{TLS_DIR}/ca.crt\"\n\
         {indent}  timeout: 5\n\
         {indent}}}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(replicas: i32) -> BrokerInput {
        BrokerInput {
            name: "edge-nats".into(),
            namespace: "acme".into(),
            replicas,
            config: [("max_payload".to_owned(), "2097152".to_owned())].into(),
            cluster_id: "x".into(),
            image: "img:1.0".into(),
            tenants: vec!["acme".into()],
            shared: false,
            tls: true,
            kafka_quorum: None,
        }
    }

    #[test]
    fn three_replicas_route_to_every_pod() {
        let conf = &Nats.render(&input(3)).files["nats.conf"];
        for ordinal in 0..3 {
            assert!(conf.contains(&format!("\"nats://edge-nats-{ordinal}.edge-nats.acme.svc:6222\"")), "{conf}");
        }
        assert!(conf.contains("store_dir: \"/data/jetstream\""));
        assert!(conf.ends_with("max_payload: 2097152\n"), "{conf}");
    }

    #[test]
    fn each_tenant_is_an_account_whose_password_comes_from_the_secret() {
        let pod = Nats.render(&BrokerInput { tenants: vec!["acme".into(), "globex".into()], shared: true, ..input(1) });
        let conf = &pod.files["nats.conf"];
        assert!(
            conf.contains(
                "\"globex\" {\n    jetstream: enabled\n    users: [{user: \"globex\", password: $OMS_TENANT_GLOBEX}]"
            ),
            "{conf}"
        );
        let from = |name: &str| {
            pod.env.iter().find(|e| e.name == name).and_then(|e| e.value_from.clone()).and_then(|f| f.secret_key_ref)
        };
        let globex = from("OMS_TENANT_GLOBEX").expect("from the Secret");
        assert_eq!((globex.name.as_str(), globex.key.as_str()), ("edge-nats-tenants", "globex"));
        assert!(!conf.contains(&globex.key.to_uppercase().repeat(2)), "no password in the ConfigMap");
    }

    #[test]
    fn clients_and_routes_speak_tls_with_the_mounted_certificate() {
        let conf = &Nats.render(&input(3)).files["nats.conf"];
        assert!(conf.contains("port: 4222\nhttp_port: 8222\n"));
        assert!(conf.contains("\ntls {\n  cert_file: \"/etc/oms/nats-tls/tls.crt\"\n"), "{conf}");
        assert!(conf.contains("  ]\n  tls {\n    cert_file: \"/etc/oms/nats-tls/tls.crt\"\n"), "routes too: {conf}");
        assert!(conf.contains("    ca_file: \"/etc/oms/nats-tls/ca.crt\"\n    timeout: 5\n  }\n}\n"), "{conf}");
        let plain = &Nats.render(&BrokerInput { tls: false, ..input(3) }).files["nats.conf"];
        assert!(!plain.contains("tls {"), "{plain}");
    }

    #[test]
    fn the_operator_logs_in_to_the_system_account_with_the_password_of_its_secret() {
        let pod = Nats.render(&input(3));
        let conf = &pod.files["nats.conf"];
        assert!(
            conf.contains(
                "accounts {\n  \"$SYS\" {\n    users: [{user: \"oms_admin\", password: $OMS_ADMIN_PASSWORD}]\n  }\n"
            ),
            "{conf}"
        );
        assert!(!conf.contains("system_account"), "the default system account keeps its name: {conf}");
        let from = pod.env.iter().find(|e| e.name == "OMS_ADMIN_PASSWORD").and_then(|e| e.value_from.clone());
        let key = from.and_then(|f| f.secret_key_ref).expect("from the Secret");
        assert_eq!((key.name.as_str(), key.key.as_str()), ("edge-nats-credentials", "password"));
    }

    #[test]
    fn a_single_server_has_no_cluster_block() {
        assert!(!Nats.render(&input(1)).files["nats.conf"].contains("cluster {"));
    }
}
