//! Apache Kafka in KRaft mode (no ZooKeeper), on the official `apache/kafka` image.
//!
//! All pods share one StatefulSet template, so the per-pod parts (node id, roles, listeners,
//! advertised address) are derived at start from the pod's ordinal by a rendered script. The
//! first `voters` pods (an odd number, at most 5) form the controller quorum.

use std::fmt::Write as _;

use oms_crds::common::{Capabilities, Dedup, Ordering};

use super::{BrokerDriver, BrokerInput, BrokerPod, passthrough_lines};

pub struct Kafka;

const CLIENT_PORT: u16 = 9092;
const CONTROLLER_PORT: u16 = 9093;
const CONFIG_DIR: &str = "/etc/oms/kafka";
const DATA_DIR: &str = "/var/lib/kafka/data";

/// Controller voters for a cluster of `replicas` brokers: the largest odd number up to 5.
#[must_use]
pub fn controller_voters(replicas: i32) -> i32 {
    let capped = replicas.clamp(1, 5);
    if capped % 2 == 0 { capped - 1 } else { capped }
}

impl BrokerDriver for Kafka {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            partitions: true,
            ordering: Ordering::PerPartition,
            dedup: Dedup::IdempotentProducer,
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
        &[("kafka", CLIENT_PORT), ("controller", CONTROLLER_PORT)]
    }

    fn owned_config_keys(&self) -> &'static [&'static str] {
        &[
            "node.id",
            "broker.id",
            "process.roles",
            "listeners",
            "advertised.listeners",
            "listener.security.protocol.map",
            "inter.broker.listener.name",
            "controller.listener.names",
            "controller.quorum.voters",
            "controller.quorum.bootstrap.servers",
            "log.dirs",
            "log.dir",
            "metadata.log.dir",
            "cluster.id",
        ]
    }

    fn config_dir(&self) -> &'static str {
        CONFIG_DIR
    }

    fn data_dir(&self) -> &'static str {
        DATA_DIR
    }

    fn run_as(&self) -> i64 {
        // The image's `appuser`.
        1000
    }

    fn render(&self, broker: &BrokerInput) -> BrokerPod {
        let voters = controller_voters(broker.replicas);
        let quorum: Vec<String> =
            (0..voters).map(|i| format!("{i}@{}:{CONTROLLER_PORT}", broker.pod_host(i))).collect();
        // Internal topics replicate as far as the cluster allows, up to the usual 3 copies.
        let copies = broker.replicas.min(3);
        let min_isr = broker.replicas.clamp(1, 2);
        let mut properties = String::from("# Rendered by oms-operator; per-pod keys are added by start.sh.\n");
        let _ = write!(
            properties,
            "controller.listener.names=CONTROLLER\n\
             listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n\
             inter.broker.listener.name=PLAINTEXT\n\
             controller.quorum.voters={}\n\
             log.dirs={DATA_DIR}\n\
             offsets.topic.replication.factor={copies}\n\
             transaction.state.log.replication.factor={copies}\n\
             transaction.state.log.min.isr={min_isr}\n\
             default.replication.factor={copies}\n\
             min.insync.replicas={min_isr}\n",
            quorum.join(",")
        );
        properties.push_str(&passthrough_lines(&broker.config, "="));

        let start = format!(
            r#"#!/bin/sh
# Rendered by oms-operator: derives this pod's node id and roles from its StatefulSet ordinal.
set -eu
ordinal="${{HOSTNAME##*-}}"
if [ "$ordinal" -lt {voters} ]; then
  roles=broker,controller
  listeners="PLAINTEXT://:{CLIENT_PORT},CONTROLLER://:{CONTROLLER_PORT}"
else
  roles=broker
  listeners="PLAINTEXT://:{CLIENT_PORT}"
fi
{{
  cat {CONFIG_DIR}/server.properties
  echo "node.id=$ordinal"
  echo "process.roles=$roles"
  echo "listeners=$listeners"
  echo "advertised.listeners=PLAINTEXT://$HOSTNAME.{name}.{namespace}.svc:{CLIENT_PORT}"
}} > /tmp/server.properties
if [ ! -f {DATA_DIR}/meta.properties ]; then
  /opt/kafka/bin/kafka-storage.sh format --cluster-id {cluster_id} --config /tmp/server.properties --ignore-formatted
fi
exec /opt/kafka/bin/kafka-server-start.sh /tmp/server.properties
"#,
            name = broker.name,
            namespace = broker.namespace,
            cluster_id = broker.cluster_id,
        );
        BrokerPod {
            files: [("server.properties".to_owned(), properties), ("start.sh".to_owned(), start)].into(),
            command: vec!["/bin/sh".into(), format!("{CONFIG_DIR}/start.sh")],
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
            name: "orders-kafka".into(),
            namespace: "acme".into(),
            replicas,
            config: [("log.retention.hours".to_owned(), "48".to_owned())].into(),
            cluster_id: "AAAAAAAAAAAAAAAAAAAAAA".into(),
            image: "img:1.0".into(),
            tenants: vec!["acme".into()],
            shared: false,
        }
    }

    #[test]
    fn quorum_is_the_largest_odd_number_up_to_five() {
        let voters: Vec<_> = (1..=8).map(controller_voters).collect();
        assert_eq!(voters, [1, 1, 3, 3, 5, 5, 5, 5]);
    }

    #[test]
    fn three_brokers_form_a_three_voter_quorum_over_the_headless_service() {
        let pod = Kafka.render(&input(3));
        let properties = &pod.files["server.properties"];
        assert!(properties.contains(
            "controller.quorum.voters=0@orders-kafka-0.orders-kafka.acme.svc:9093,\
             1@orders-kafka-1.orders-kafka.acme.svc:9093,2@orders-kafka-2.orders-kafka.acme.svc:9093\n"
        ));
        assert!(properties.contains("offsets.topic.replication.factor=3\n"));
        assert!(properties.contains("min.insync.replicas=2\n"));
        assert!(properties.ends_with("# From spec.managed.config:\nlog.retention.hours=48\n"), "{properties}");
        let start = &pod.files["start.sh"];
        assert!(start.contains(r#"if [ "$ordinal" -lt 3 ]; then"#));
        assert!(start.contains("advertised.listeners=PLAINTEXT://$HOSTNAME.orders-kafka.acme.svc:9092"));
        assert!(start.contains("--cluster-id AAAAAAAAAAAAAAAAAAAAAA"));
    }

    #[test]
    fn a_single_broker_keeps_one_copy_of_internal_topics() {
        let properties = &Kafka.render(&input(1)).files["server.properties"];
        assert!(properties.contains("offsets.topic.replication.factor=1\n"));
        assert!(properties.contains("transaction.state.log.min.isr=1\n"));
    }
}
