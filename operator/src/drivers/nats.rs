//! NATS with JetStream on the official `nats` image: file storage on the data volume, and with
//! more than one replica a cluster whose routes name every pod through the headless Service.

use std::fmt::Write as _;

use oms_crds::common::{Capabilities, Dedup, Ordering};

use super::{BrokerDriver, BrokerInput, BrokerPod, passthrough_lines};

pub struct Nats;

const CLIENT_PORT: u16 = 4222;
const CLUSTER_PORT: u16 = 6222;
const MONITOR_PORT: u16 = 8222;
const CONFIG_DIR: &str = "/etc/oms/nats";
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

    fn client_port(&self) -> u16 {
        CLIENT_PORT
    }

    fn ports(&self) -> &'static [(&'static str, u16)] {
        &[("client", CLIENT_PORT), ("cluster", CLUSTER_PORT), ("monitor", MONITOR_PORT)]
    }

    fn owned_config_keys(&self) -> &'static [&'static str] {
        &["server_name", "port", "listen", "http", "http_port", "cluster", "routes", "jetstream", "store_dir"]
    }

    fn config_dir(&self) -> &'static str {
        CONFIG_DIR
    }

    fn data_dir(&self) -> &'static str {
        DATA_DIR
    }

    fn fs_group(&self) -> Option<i64> {
        None
    }

    fn render(&self, broker: &BrokerInput) -> BrokerPod {
        let mut conf = String::from("# Rendered by oms-operator.\nserver_name: $POD_NAME\n");
        let _ = write!(
            conf,
            "port: {CLIENT_PORT}\nhttp_port: {MONITOR_PORT}\njetstream {{\n  store_dir: \"{DATA_DIR}/jetstream\"\n}}\n"
        );
        if broker.replicas > 1 {
            let _ = write!(conf, "cluster {{\n  name: \"{}\"\n  port: {CLUSTER_PORT}\n  routes: [\n", broker.name);
            for ordinal in 0..broker.replicas {
                let _ = writeln!(conf, "    \"nats://{}:{CLUSTER_PORT}\"", broker.pod_host(ordinal));
            }
            conf.push_str("  ]\n}\n");
        }
        conf.push_str(&passthrough_lines(&broker.config, ": "));
        BrokerPod {
            files: [("nats.conf".to_owned(), conf)].into(),
            command: vec!["nats-server".into(), "--config".into(), format!("{CONFIG_DIR}/nats.conf")],
            // `server_name: $POD_NAME` reads the variable every broker pod gets.
            env: Vec::new(),
            secret_file: None,
        }
    }
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
    fn a_single_server_has_no_cluster_block() {
        assert!(!Nats.render(&input(1)).files["nats.conf"].contains("cluster {"));
    }
}
