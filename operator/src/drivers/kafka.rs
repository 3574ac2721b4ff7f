//! Apache Kafka in KRaft mode (no ZooKeeper), on the official `apache/kafka` image.
//!
//! All pods share one StatefulSet template, so the per-pod parts (node id, roles, listeners,
//! advertised address) are derived at start from the pod's ordinal by a rendered script. The
//! first `voters` pods (an odd number, at most 5) form the controller quorum.
//!
//! New clusters run KRaft's dynamic quorum ([`Quorum::Dynamic`]): every pod is a controller too,
//! brokers find the active one through `controller.quorum.bootstrap.servers`, and which of them vote
//! lives in the metadata log, where the operator adds and removes voters as the size changes; the
//! others follow as observers. The bootstrap list and the first voters are files outside the
//! config hash, so changing them rolls no pod.
//!
//! Every connection authenticates. Clients and brokers use SCRAM-SHA-512 on the client listener
//! (brokers as the operator's own user, a super user; tenants as their own users, which the
//! operator creates with prefixed ACLs through the admin API); controllers use PLAIN (SCRAM
//! credentials live in the metadata log the controllers serve, so they cannot check them). The
//! operator's user gets its SCRAM credential when the storage is formatted. Its name and password
//! come from the credentials Secret as environment and are written into the pod's own copy of
//! the properties, never into the ConfigMap.
//!
//! With TLS (the default) every listener is SASL_SSL with the pod's certificate from the
//! operator's CA, and brokers and controllers check each other's names against it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use oms_crds::common::{Capabilities, Dedup, Ordering};

use super::{
    ADMIN_PASSWORD_ENV, ADMIN_USER_ENV, BrokerDriver, BrokerInput, BrokerPod, credentials_secret, passthrough_lines,
    ready_probe, secret_env,
};

pub struct Kafka;

const CLIENT_PORT: u16 = 9092;
const CONTROLLER_PORT: u16 = 9093;
const CONFIG_DIR: &str = "/etc/oms/kafka";
const TLS_DIR: &str = "/etc/oms/kafka-tls";
const DATA_DIR: &str = "/var/lib/kafka/data";
/// The pod's own copy of its key and certificate as Kafka reads them (start.sh writes it).
const KEYSTORE: &str = "/tmp/keystore.pem";

/// Files of the config ConfigMap outside the config hash (dynamic quorum): the voters' addresses
/// for `controller.quorum.bootstrap.servers`, and the first voters a controller among them formats
/// with (`--initial-controllers`), emptied once they have all started; every other format joins as
/// an observer.
const BOOTSTRAP_SERVERS_FILE: &str = "bootstrap-servers";
pub const INITIAL_CONTROLLERS_FILE: &str = "initial-controllers";

/// How a cluster's controllers know who votes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quorum {
    /// KRaft's dynamic quorum (`kraft.version` 1), what new clusters run, while it forms: the
    /// first voters (ordinals below the number) format with each other as the voters.
    Dynamic { first_voters: i32 },
    /// The same, formed: the operator changes its voters, and a format joins as an observer.
    DynamicFormed,
    /// `controller.quorum.voters` in every broker's configuration, the first pods the
    /// controllers: clusters the operator made before it formatted dynamic ones keep it, as their
    /// metadata was written that way.
    Static,
}

/// The log directory id controller `ordinal` formats with while the quorum forms, derived from
/// the cluster id so that every render names the same one: 16 bytes, the first below 0x80 so
/// that its text never starts with `-` or `_` (as Kafka's own random ids).
#[must_use]
pub fn directory_id(cluster_id: &str, ordinal: i32) -> [u8; 16] {
    let digest = Sha256::digest(format!("{cluster_id}/controller/{ordinal}"));
    let mut id = [0; 16];
    id.copy_from_slice(&digest[..16]);
    id[0] &= 0x7f;
    id
}

/// A directory id as Kafka writes it: unpadded URL-safe base64.
#[must_use]
pub fn directory_id_text(id: &[u8; 16]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id)
}

/// The controller listener of broker `ordinal` of access point `name`: its name, host and port, as
/// the broker advertises it in a dynamic quorum.
#[must_use]
pub fn controller_listener(name: &str, namespace: &str, ordinal: i32) -> (String, String, u16) {
    ("CONTROLLER".to_owned(), super::pod_host(name, namespace, ordinal), CONTROLLER_PORT)
}

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

    fn ports(&self, _tls: bool) -> Vec<(&'static str, u16)> {
        vec![("kafka", CLIENT_PORT), ("controller", CONTROLLER_PORT)]
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
            "authorizer.class.name",
            "super.users",
            "allow.everyone.if.no.acl.found",
            "sasl.enabled.mechanisms",
            "sasl.mechanism.inter.broker.protocol",
            "sasl.mechanism.controller.protocol",
            "listener.name.client.sasl.enabled.mechanisms",
            "listener.name.controller.sasl.enabled.mechanisms",
            "listener.name.client.scram-sha-512.sasl.jaas.config",
            "listener.name.controller.plain.sasl.jaas.config",
            "ssl.keystore.type",
            "ssl.keystore.location",
            "ssl.keystore.certificate.chain",
            "ssl.keystore.key",
            "ssl.truststore.type",
            "ssl.truststore.location",
            "ssl.truststore.certificates",
            "ssl.endpoint.identification.algorithm",
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
        // The image's `appuser`.
        1000
    }

    fn render(&self, broker: &BrokerInput) -> BrokerPod {
        let voters = controller_voters(broker.replicas);
        let quorum = broker.kafka_quorum.unwrap_or(Quorum::Static);
        let dynamic = quorum != Quorum::Static;
        let voters_line = if dynamic {
            String::new()
        } else {
            let listed: Vec<String> =
                (0..voters).map(|i| format!("{i}@{}:{CONTROLLER_PORT}", broker.pod_host(i))).collect();
            format!("controller.quorum.voters={}\n", listed.join(","))
        };
        // Internal topics replicate as far as the cluster allows, up to the usual 3 copies.
        let copies = broker.replicas.min(3);
        let min_isr = broker.replicas.clamp(1, 2);
        let mut properties = String::from("# Rendered by oms-operator; per-pod keys are added by start.sh.\n");
        // Every link (clients, brokers, controllers) is SASL over TLS, or SASL in plaintext when
        // TLS is off; brokers check each other's names like any client.
        let protocol = if broker.tls { "SASL_SSL" } else { "SASL_PLAINTEXT" };
        let _ = write!(
            properties,
            "controller.listener.names=CONTROLLER\n\
             listener.security.protocol.map=CLIENT:{protocol},CONTROLLER:{protocol}\n\
             inter.broker.listener.name=CLIENT\n\
             listener.name.client.sasl.enabled.mechanisms=SCRAM-SHA-512\n\
             sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512\n\
             listener.name.controller.sasl.enabled.mechanisms=PLAIN\n\
             sasl.mechanism.controller.protocol=PLAIN\n\
             authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer\n\
             allow.everyone.if.no.acl.found=false\n\
             {voters_line}\
             log.dirs={DATA_DIR}\n\
             offsets.topic.replication.factor={copies}\n\
             transaction.state.log.replication.factor={copies}\n\
             transaction.state.log.min.isr={min_isr}\n\
             default.replication.factor={copies}\n\
             min.insync.replicas={min_isr}\n"
        );
        if broker.tls {
            let _ = write!(
                properties,
                "ssl.keystore.type=PEM\n\
                 ssl.keystore.location={KEYSTORE}\n\
                 ssl.truststore.type=PEM\n\
                 ssl.truststore.location={TLS_DIR}/ca.crt\n\
                 ssl.endpoint.identification.algorithm=https\n"
            );
        }
        properties.push_str(&passthrough_lines(&broker.config, "="));
        // Kafka reads a PEM key store as one file, the key and its certificate chain.
        let keystore =
            if broker.tls { format!("cat {TLS_DIR}/tls.key {TLS_DIR}/tls.crt > {KEYSTORE}\n") } else { String::new() };

        let ScriptQuorum { roles, advertised_more, bootstrap, format_quorum, quorum_flag } =
            ScriptQuorum::new(broker, voters, dynamic);
        let start = format!(
            r#"#!/bin/sh
# Rendered by oms-operator: derives this pod's node id and roles from its StatefulSet ordinal, and
# adds the operator's user (OMS_ADMIN_USER, OMS_ADMIN_PASSWORD from the credentials Secret).
set -eu
umask 077
ordinal="${{HOSTNAME##*-}}"
{roles}{{
  cat {CONFIG_DIR}/server.properties
  echo "node.id=$ordinal"
  echo "process.roles=$roles"
  echo "listeners=$listeners"
  echo "advertised.listeners=CLIENT://$HOSTNAME.{name}.{namespace}.svc:{CLIENT_PORT}{advertised_more}"
{bootstrap}  echo "super.users=User:$OMS_ADMIN_USER"
  echo "listener.name.client.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"$OMS_ADMIN_USER\" password=\"$OMS_ADMIN_PASSWORD\";"
  echo "listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username=\"$OMS_ADMIN_USER\" password=\"$OMS_ADMIN_PASSWORD\" user_$OMS_ADMIN_USER=\"$OMS_ADMIN_PASSWORD\";"
}} > /tmp/server.properties
{keystore}if [ ! -f {DATA_DIR}/meta.properties ]; then
{format_quorum}  /opt/kafka/bin/kafka-storage.sh format --cluster-id {cluster_id} --config /tmp/server.properties --ignore-formatted \
    --add-scram "SCRAM-SHA-512=[name=$OMS_ADMIN_USER,password=$OMS_ADMIN_PASSWORD]"{quorum_flag}
fi
unset OMS_ADMIN_PASSWORD
exec /opt/kafka/bin/kafka-server-start.sh /tmp/server.properties
"#,
            name = broker.name,
            namespace = broker.namespace,
            cluster_id = broker.cluster_id,
        );
        let credentials = credentials_secret(&broker.name);
        let discovery_files = if dynamic { quorum_files(broker, voters, quorum) } else { BTreeMap::new() };
        BrokerPod {
            files: [("server.properties".to_owned(), properties), ("start.sh".to_owned(), start)].into(),
            discovery_files,
            command: vec!["/bin/sh".into(), format!("{CONFIG_DIR}/start.sh")],
            env: vec![
                secret_env(ADMIN_USER_ENV, &credentials, "username"),
                secret_env(ADMIN_PASSWORD_ENV, &credentials, "password"),
            ],
            secret_file: None,
            // Ready when the broker takes the operator's SCRAM login and lists itself as serving:
            // a TCP connect succeeds long before it has caught up with the metadata log.
            ready_probe: Some(ready_probe("kafka", broker, CLIENT_PORT, (ADMIN_USER_ENV, ADMIN_PASSWORD_ENV), TLS_DIR)),
            ..BrokerPod::default()
        }
    }
}

/// The start script's lines that differ by quorum; a static quorum's are those it had before
/// dynamic ones, so that its clusters' pods do not roll.
struct ScriptQuorum {
    /// Setting `$roles` and `$listeners`.
    roles: String,
    /// What follows the client listener in `advertised.listeners`.
    advertised_more: String,
    /// The line writing `controller.quorum.bootstrap.servers`.
    bootstrap: String,
    /// Choosing the format's quorum flag, and passing it.
    format_quorum: String,
    quorum_flag: &'static str,
}

impl ScriptQuorum {
    fn new(broker: &BrokerInput, voters: i32, dynamic: bool) -> Self {
        if !dynamic {
            return ScriptQuorum {
                roles: format!(
                    r#"if [ "$ordinal" -lt {voters} ]; then
  roles=broker,controller
  listeners="CLIENT://:{CLIENT_PORT},CONTROLLER://:{CONTROLLER_PORT}"
else
  roles=broker
  listeners="CLIENT://:{CLIENT_PORT}"
fi
"#
                ),
                advertised_more: String::new(),
                bootstrap: String::new(),
                format_quorum: String::new(),
                quorum_flag: "",
            };
        }
        // Every pod a controller, advertising its controller listener (the address it votes at);
        // the voters' addresses come from the file outside the hash; a first voter's first format
        // names the first voters, any other format none (an observer until the operator adds it).
        ScriptQuorum {
            roles: format!(
                r#"# Every broker is a controller too: the operator decides which of them vote.
roles=broker,controller
listeners="CLIENT://:{CLIENT_PORT},CONTROLLER://:{CONTROLLER_PORT}"
bootstrap="$(cat {CONFIG_DIR}/{BOOTSTRAP_SERVERS_FILE})"
"#
            ),
            advertised_more: format!(
                ",CONTROLLER://$HOSTNAME.{}.{}.svc:{CONTROLLER_PORT}",
                broker.name, broker.namespace
            ),
            bootstrap: "  echo \"controller.quorum.bootstrap.servers=$bootstrap\"\n".to_owned(),
            format_quorum: format!(
                r#"  initial="$(cat {CONFIG_DIR}/{INITIAL_CONTROLLERS_FILE})"
  case ",$initial" in
    *",$ordinal@"*) quorum="--initial-controllers $initial" ;;
    *) quorum=--no-initial-controllers ;;
  esac
"#
            ),
            quorum_flag: " $quorum",
        }
    }
}

/// The dynamic quorum's files outside the config hash, for `voters` voters.
fn quorum_files(broker: &BrokerInput, voters: i32, quorum: Quorum) -> BTreeMap<String, String> {
    let address = |ordinal| format!("{}:{CONTROLLER_PORT}", broker.pod_host(ordinal));
    let bootstrap: Vec<String> = (0..voters).map(address).collect();
    let initial: Vec<String> = match quorum {
        Quorum::Dynamic { first_voters } => (0..first_voters)
            .map(|i| format!("{i}@{}:{}", address(i), directory_id_text(&directory_id(&broker.cluster_id, i))))
            .collect(),
        Quorum::DynamicFormed | Quorum::Static => Vec::new(),
    };
    [(BOOTSTRAP_SERVERS_FILE.to_owned(), bootstrap.join(",")), (INITIAL_CONTROLLERS_FILE.to_owned(), initial.join(","))]
        .into()
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
            tls: true,
            kafka_quorum: Some(Quorum::Dynamic { first_voters: controller_voters(replicas) }),
        }
    }

    #[test]
    fn quorum_is_the_largest_odd_number_up_to_five() {
        let voters: Vec<_> = (1..=8).map(controller_voters).collect();
        assert_eq!(voters, [1, 1, 3, 3, 5, 5, 5, 5]);
    }

    #[test]
    fn static_clusters_render_exactly_as_before_dynamic_quorums_so_none_of_their_pods_rolls() {
        // The digest of the files rendered for 4 brokers before dynamic quorums were added.
        let pod = Kafka.render(&BrokerInput { replicas: 4, kafka_quorum: Some(Quorum::Static), ..input(4) });
        let all: String = pod.files.iter().flat_map(|(name, text)| [name.as_str(), text.as_str()]).collect();
        assert_eq!(
            format!("{:x}", Sha256::digest(all.as_bytes())),
            "b2a0c192571c9fe193a6c79976ae054f5c266d238754f3093bba0f354e7418e2",
            "{all}"
        );
        assert!(pod.discovery_files.is_empty());
    }

    #[test]
    fn a_dynamic_quorum_makes_every_broker_a_controller_and_forms_from_the_first_voters() {
        let pod = Kafka.render(&input(4));
        let properties = &pod.files["server.properties"];
        assert!(!properties.contains("controller.quorum.voters"), "{properties}");
        let start = &pod.files["start.sh"];
        for line in [
            "\nroles=broker,controller\nlisteners=\"CLIENT://:9092,CONTROLLER://:9093\"\n",
            r#"  echo "advertised.listeners=CLIENT://$HOSTNAME.orders-kafka.acme.svc:9092,CONTROLLER://$HOSTNAME.orders-kafka.acme.svc:9093""#,
            "\nbootstrap=\"$(cat /etc/oms/kafka/bootstrap-servers)\"\n",
            r#"  echo "controller.quorum.bootstrap.servers=$bootstrap""#,
            r#"    *",$ordinal@"*) quorum="--initial-controllers $initial" ;;"#,
            "    *) quorum=--no-initial-controllers ;;",
            r#"    --add-scram "SCRAM-SHA-512=[name=$OMS_ADMIN_USER,password=$OMS_ADMIN_PASSWORD]" $quorum"#,
        ] {
            assert!(start.contains(line), "{line} in {start}");
        }
        assert!(!start.contains("roles=broker\n"), "no broker-only pod: {start}");
        let host = |i: i32| format!("orders-kafka-{i}.orders-kafka.acme.svc:9093");
        let id = |i: i32| directory_id_text(&directory_id("AAAAAAAAAAAAAAAAAAAAAA", i));
        assert_eq!(pod.discovery_files["bootstrap-servers"], format!("{},{},{}", host(0), host(1), host(2)));
        assert_eq!(
            pod.discovery_files["initial-controllers"],
            format!("0@{}:{},1@{}:{},2@{}:{}", host(0), id(0), host(1), id(1), host(2), id(2))
        );
        // Grown to 5 before the quorum formed: still the first 3 form it, the voters' list grows.
        let grown = Kafka.render(&BrokerInput { replicas: 5, ..input(4) });
        assert_eq!(grown.discovery_files["initial-controllers"], pod.discovery_files["initial-controllers"]);
        assert!(grown.discovery_files["bootstrap-servers"].ends_with(&host(4)));
        let formed = Kafka.render(&BrokerInput { kafka_quorum: Some(Quorum::DynamicFormed), ..input(4) });
        assert_eq!(formed.discovery_files["initial-controllers"], "");
        assert_eq!(formed.files, pod.files, "sealing the quorum rolls no pod");
        assert_eq!(grown.files, pod.files, "changing the voters rolls no pod");
    }

    #[test]
    fn directory_ids_are_kafka_uuids_that_never_read_as_an_option() {
        let ids: Vec<String> = (0..64).map(|i| directory_id_text(&directory_id("AAAAAAAAAAAAAAAAAAAAAA", i))).collect();
        assert!(ids.iter().all(|id| id.len() == 22 && !id.starts_with(['-', '_'])), "{ids:?}");
        assert_eq!(ids.iter().collect::<std::collections::BTreeSet<_>>().len(), 64, "one per controller");
        assert_ne!(directory_id("AAAAAAAAAAAAAAAAAAAAAA", 0), directory_id("BAAAAAAAAAAAAAAAAAAAAA", 0));
    }

    #[test]
    fn three_brokers_form_a_three_voter_quorum_over_the_headless_service() {
        let pod = Kafka.render(&BrokerInput { kafka_quorum: Some(Quorum::Static), ..input(3) });
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
        assert!(start.contains("advertised.listeners=CLIENT://$HOSTNAME.orders-kafka.acme.svc:9092"));
        assert!(start.contains("--cluster-id AAAAAAAAAAAAAAAAAAAAAA"));
    }

    #[test]
    fn every_link_is_sasl_over_tls_with_the_mounted_certificate() {
        let pod = Kafka.render(&input(3));
        let properties = &pod.files["server.properties"];
        assert!(properties.contains("listener.security.protocol.map=CLIENT:SASL_SSL,CONTROLLER:SASL_SSL\n"));
        assert!(properties.contains("ssl.keystore.location=/tmp/keystore.pem\nssl.truststore.type=PEM\n"));
        assert!(properties.contains("ssl.truststore.location=/etc/oms/kafka-tls/ca.crt\n"));
        let start = &pod.files["start.sh"];
        assert!(
            start.contains("cat /etc/oms/kafka-tls/tls.key /etc/oms/kafka-tls/tls.crt > /tmp/keystore.pem\n"),
            "{start}"
        );
        let plain = Kafka.render(&BrokerInput { tls: false, ..input(3) });
        let properties = &plain.files["server.properties"];
        assert!(
            properties.contains("listener.security.protocol.map=CLIENT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT\n")
        );
        assert!(!properties.contains("ssl.") && !plain.files["start.sh"].contains("keystore"), "{properties}");
    }

    #[test]
    fn every_listener_authenticates_and_the_operator_is_the_only_super_user() {
        let pod = Kafka.render(&BrokerInput { tls: false, ..input(3) });
        let properties = &pod.files["server.properties"];
        assert!(
            properties.contains("listener.security.protocol.map=CLIENT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT\n")
        );
        assert!(!properties.contains(":PLAINTEXT"), "no listener without authentication");
        assert!(properties.contains("allow.everyone.if.no.acl.found=false\n"));
        assert!(!properties.contains("PASSWORD"), "no password in the ConfigMap: {properties}");
        let start = &pod.files["start.sh"];
        assert!(start.contains(r#"echo "super.users=User:$OMS_ADMIN_USER""#));
        assert!(start.contains(r#"--add-scram "SCRAM-SHA-512=[name=$OMS_ADMIN_USER,password=$OMS_ADMIN_PASSWORD]""#));
        let from_secret: Vec<_> = pod
            .env
            .iter()
            .filter_map(|e| e.value_from.as_ref()?.secret_key_ref.as_ref().map(|r| (e.name.as_str(), r.name.as_str())))
            .collect();
        assert_eq!(
            from_secret,
            [("OMS_ADMIN_USER", "orders-kafka-credentials"), ("OMS_ADMIN_PASSWORD", "orders-kafka-credentials")]
        );
    }

    #[test]
    fn a_single_broker_keeps_one_copy_of_internal_topics() {
        let properties = &Kafka.render(&input(1)).files["server.properties"];
        assert!(properties.contains("offsets.topic.replication.factor=1\n"));
        assert!(properties.contains("transaction.state.log.min.isr=1\n"));
    }
}
