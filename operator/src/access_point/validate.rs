//! Validation of a MessagingAccessPoint's spec into a typed plan. Everything the schema could
//! not refuse at admission is checked here; downstream code never reads the raw spec.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use oms_crds::access_point::{Driver, MessagingAccessPointSpec};
use oms_crds::access_point_url::parse_host_port;
use oms_crds::quantity::parse_size;

use crate::admin::kafka_cluster::release;
use crate::drivers::{BrokerDriver, DefaultImages, broker_image, controller_voters, image_version, managed_driver};
use crate::exposure::Gateway;

/// A spec the operator cannot act on; `field` names where, `message` says how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidSpec {
    pub field: String,
    pub message: String,
}

/// An external broker's plan; RocketMQ's needs its name servers, the others have none.
fn external_plan(driver: Driver, external: &oms_crds::access_point::ExternalBroker) -> Result<External, InvalidSpec> {
    let name_servers = external.name_servers.as_deref().unwrap_or_default();
    if (driver == Driver::Rocketmq) == name_servers.is_empty() {
        return Err(invalid(
            "spec.external.nameServers",
            "host:port of RocketMQ's name servers is required for driver rocketmq and only for it",
        ));
    }
    Ok(External {
        servers: host_ports(&external.servers, "spec.external.servers")?,
        account: external.account.clone(),
        credentials_secret: external.credentials_secret_ref.as_ref().map(|r| r.name.clone()),
        tls: external.tls.clone(),
        sasl_mechanism: external.sasl_mechanism,
        name_servers: host_ports(name_servers, "spec.external.nameServers")?,
    })
}

/// `host:port` addresses of `field`, each parsed; an error names the entry.
fn host_ports(addresses: &[String], field: &str) -> Result<Vec<(String, u16)>, InvalidSpec> {
    addresses
        .iter()
        .enumerate()
        .map(|(i, s)| parse_host_port(s).map_err(|e| invalid(&format!("{field}[{i}]"), e.to_string())))
        .collect()
}

fn invalid(field: &str, message: impl Into<String>) -> InvalidSpec {
    InvalidSpec { field: field.to_owned(), message: message.into() }
}

/// The validated access point.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessPoint {
    pub name: String,
    pub namespace: String,
    pub driver: Driver,
    pub region: String,
    pub plan: Plan,
    /// Namespaces allowed to use this access point besides its own; `*` for all.
    pub shared_with: Vec<String>,
    pub gateway: Option<Gateway>,
}

/// How the broker behind the access point exists.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    Managed(Managed),
    External(External),
    /// Another cloud's gateway.
    Gateway {
        endpoint: (String, u16),
    },
}

impl Plan {
    /// Kafka: the SASL mechanism of an external access point's login, as its spec names it.
    #[must_use]
    pub fn sasl_mechanism(&self) -> Option<oms_crds::access_point::SaslMechanism> {
        match self {
            Plan::External(external) => external.sasl_mechanism,
            _ => None,
        }
    }

    /// RocketMQ: an external access point's name servers; none for the others.
    #[must_use]
    pub fn name_servers(&self) -> &[(String, u16)] {
        match self {
            Plan::External(external) => &external.name_servers,
            _ => &[],
        }
    }

    /// Whether the brokers the operator runs speak TLS (`spec.tls`, on by default).
    #[must_use]
    pub fn serves_tls(&self) -> bool {
        matches!(self, Plan::Managed(Managed { tls: true, .. }))
    }
}

/// A broker cluster the operator runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Managed {
    /// Brokers to run: `spec.managed.replicas`, or the current size when the change is refused.
    pub replicas: i32,
    /// Why the requested size is not the one run, when the cluster may not change to it.
    pub resize_refused: Option<String>,
    /// NATS or RabbitMQ asked to shrink: the size its brokers are retired towards, one at a time
    /// ([`super::shrink`]); `replicas` stays the current size until a step stops one.
    pub steps_down_to: Option<i32>,
    pub image: String,
    /// Image `oms-probe` is copied from, where the broker's readiness needs it: the operator's.
    pub probe_image: String,
    /// Size (as written, e.g. `10Gi`) and StorageClass of each pod's volume; None: emptyDir.
    pub storage: Option<(String, Option<String>)>,
    pub resources: Option<ResourceRequirements>,
    pub config: BTreeMap<String, String>,
    /// Whether the volume claims go with the access point.
    pub delete_claims: bool,
    /// Whether the listeners speak TLS with a certificate from the operator's CA (`spec.tls`).
    pub tls: bool,
}

/// A broker cluster that already exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct External {
    pub servers: Vec<(String, u16)>,
    pub account: Option<String>,
    pub credentials_secret: Option<String>,
    /// Where the TLS settings towards the brokers are, when they speak TLS.
    pub tls: Option<oms_crds::access_point::ClientTls>,
    /// Kafka: the SASL mechanism of the login.
    pub sasl_mechanism: Option<oms_crds::access_point::SaslMechanism>,
    /// RocketMQ: its name servers, where the operator finds the brokers.
    pub name_servers: Vec<(String, u16)>,
}

/// A managed broker cluster as it runs now, for deciding whether it may change size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Running {
    /// Brokers in its StatefulSet.
    pub replicas: i32,
    /// Kafka: (namespace/name, `spec.replication`) of the Queues on it; read only when shrinking
    /// is asked.
    pub queues: Vec<(String, i32)>,
    /// Kafka: the `metadata.version` it has finalized, as its status says.
    pub metadata_version: Option<String>,
    /// Kafka: its controllers are listed in every broker's configuration (a cluster an earlier
    /// operator made), so its voters cannot change.
    pub static_quorum: bool,
}

/// Why brokers of `image` could not run a cluster whose `metadata.version` is finalized at a newer
/// release, if they could not: they refuse to start, and Kafka cannot lower the level safely.
fn older_than_metadata(running: Option<&Running>, image: &str) -> Option<String> {
    let finalized = running?.metadata_version.as_deref()?;
    let (major, minor) = release(finalized)?;
    let version = image_version(image)?;
    (version < (major, minor)).then(|| {
        format!(
            "{image} is older than Kafka {major}.{minor}, and this cluster's metadata.version is finalized at {finalized}: \
             its brokers would not start. Set {major}.{minor} or later"
        )
    })
}

/// Why `replicas` brokers of `image` would not form one cluster, if they would not.
fn cluster_refusal(broker: &dyn BrokerDriver, driver: Driver, replicas: i32, image: &str) -> Option<String> {
    let (major, minor) = broker.clusters_since().filter(|since| image_version(image).is_some_and(|v| v < *since))?;
    (replicas > 1).then(|| {
        format!(
            "{driver} before {major}.{minor} does not form a cluster when its nodes start together ({image}); set \
             spec.managed.version to {major}.{minor} or later, or replicas: 1"
        )
    })
}

/// Why a new Kafka cluster of `image` could not start, if it could not: before 3.9 Kafka cannot
/// format the dynamic controller quorum new clusters run.
fn kafka_quorum_refusal(driver: Driver, running: Option<&Running>, image: &str) -> Option<String> {
    let old = image_version(image).is_some_and(|version| version < (3, 9));
    (driver == Driver::Kafka && running.is_none() && old).then(|| {
        format!(
            "{image} is older than Kafka 3.9, which new clusters need for their dynamic controller quorum; set \
             spec.managed.version to 3.9 or later"
        )
    })
}

/// Why `driver`'s brokers of `image` could not run the cluster (`running`, or a new one), if so.
fn version_refusal(driver: Driver, running: Option<&Running>, image: &str) -> Option<String> {
    older_than_metadata(running, image).or_else(|| kafka_quorum_refusal(driver, running, image))
}

/// Validates `spec`; `default_region` is used when the spec names none; `running` is the managed
/// cluster as it is now, if there is one.
pub fn validate(
    name: &str,
    namespace: &str,
    spec: &MessagingAccessPointSpec,
    default_region: &str,
    running: Option<&Running>,
    images: &DefaultImages,
) -> Result<AccessPoint, InvalidSpec> {
    let plan = match (spec.driver, &spec.managed, &spec.external, &spec.endpoint) {
        (Driver::Gateway, _, _, _) if spec.remote.is_none() => {
            return Err(invalid(
                "spec.remote",
                "driver gateway needs spec.remote: the namespace and name of the access point behind the gateway",
            ));
        }
        (Driver::Gateway, None, None, Some(endpoint)) => {
            Plan::Gateway { endpoint: parse_host_port(endpoint).map_err(|e| invalid("spec.endpoint", e.to_string()))? }
        }
        (Driver::Gateway, ..) => {
            return Err(invalid(
                "spec.endpoint",
                "driver gateway needs spec.endpoint and neither managed nor external",
            ));
        }
        (driver, Some(managed), None, None) => {
            let broker = managed_driver(driver).ok_or_else(|| invalid("spec.driver", "cannot be managed"))?;
            if managed.replicas > broker.max_replicas() {
                return Err(invalid(
                    "spec.managed.replicas",
                    format!(
                        "{driver} runs at most {} replica(s): {}; set replicas: {}",
                        broker.max_replicas(),
                        broker.max_replicas_reason(),
                        broker.max_replicas()
                    ),
                ));
            }
            passthrough_refusal(driver, broker, &managed.config)
                .map_or(Ok(()), |refusal| Err(invalid("spec.managed.config", refusal)))?;
            if let Some(storage) = &managed.storage {
                parse_size(&storage.size).map_err(|e| invalid("spec.managed.storage.size", e.to_string()))?;
            }
            let default_image = images.for_driver(driver).unwrap_or_default();
            let image = broker_image(default_image, managed.version.as_deref(), managed.image.as_deref());
            if let Some(refusal) = cluster_refusal(broker, driver, managed.replicas, &image) {
                return Err(invalid("spec.managed.replicas", refusal));
            }
            if let Some(refusal) = version_refusal(driver, running, &image) {
                let field = if managed.image.is_some() { "spec.managed.image" } else { "spec.managed.version" };
                return Err(invalid(field, refusal));
            }
            let Size { replicas, resize_refused, steps_down_to } = size(driver, running, managed.replicas, &image);
            Plan::Managed(Managed {
                replicas,
                resize_refused,
                steps_down_to,
                image,
                probe_image: images.probe.clone(),
                storage: managed.storage.as_ref().map(|s| (s.size.clone(), s.storage_class_name.clone())),
                resources: managed.resources.clone(),
                config: managed.config.clone(),
                delete_claims: managed.delete_claims,
                tls: spec.tls.as_ref().is_none_or(|tls| tls.enabled),
            })
        }
        (driver, None, Some(external), None) => Plan::External(external_plan(driver, external)?),
        _ => return Err(invalid("spec", "set exactly one of spec.managed and spec.external")),
    };
    if spec.tls.is_some() && !matches!(plan, Plan::Managed(_)) {
        return Err(invalid(
            "spec.tls",
            "spec.tls is for managed access points (the brokers the operator runs); for a broker that already exists set \
             spec.external.tls",
        ));
    }
    let shared = spec.sharing.as_ref().is_some_and(|s| !s.tenants.is_empty());
    if spec.driver == Driver::Rocketmq && matches!(plan, Plan::Managed(_)) && shared {
        return Err(invalid("spec.sharing", oms_crds::access_point::ROCKETMQ_SHARING_REFUSED));
    }
    let gateway = match &spec.gateway {
        Some(g) if g.enabled && spec.driver == Driver::Gateway => {
            return Err(invalid("spec.gateway", "a gateway access point cannot expose a gateway of its own"));
        }
        gateway => Gateway::from_spec(gateway.as_ref()),
    };
    Ok(AccessPoint {
        name: name.to_owned(),
        namespace: namespace.to_owned(),
        driver: spec.driver,
        region: spec.region.clone().unwrap_or_else(|| default_region.to_owned()),
        plan,
        shared_with: spec.sharing.as_ref().map(|s| s.tenants.clone()).unwrap_or_default(),
        gateway,
    })
}

/// Why `spec.managed.config` cannot be passed through, if it cannot: a key or value that could
/// start a line of its own would set keys the operator owns, and those keys are refused by name.
fn passthrough_refusal(driver: Driver, broker: &dyn BrokerDriver, config: &BTreeMap<String, String>) -> Option<String> {
    let malformed: Vec<&str> = config
        .iter()
        .filter(|(k, v)| {
            k.is_empty()
                || !k.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
                || v.chars().any(char::is_control)
        })
        .map(|(k, _)| k.as_str())
        .collect();
    if !malformed.is_empty() {
        return Some(format!(
            "{}: keys are letters, digits, '.', '_' and '-', values one line without control characters",
            malformed.join(", ")
        ));
    }
    let owned: Vec<&str> = config.keys().map(String::as_str).filter(|k| broker.owns_config_key(k)).collect();
    (!owned.is_empty())
        .then(|| format!("{} set by the operator for {driver}; remove them from the passthrough", owned.join(", ")))
}

/// Why Kafka may not shrink from `current` to `desired` brokers, if it may not: the internal
/// topics keep up to 3 copies, and each Queue its `spec.replication`; fewer brokers than copies
/// would lose data. `queues` lists (namespace/name, replication) of the Queues on the cluster.
#[must_use]
pub fn kafka_scale_down_refusal(current: i32, desired: i32, queues: &[(String, i32)]) -> Option<String> {
    if desired >= current {
        return None;
    }
    let internal = current.min(3);
    let widest = queues.iter().max_by_key(|(_, r)| *r);
    let needed = widest.map_or(internal, |(_, r)| (*r).max(internal));
    if desired >= needed {
        return None;
    }
    let because = match widest {
        Some((queue, replication)) if *replication >= internal => {
            format!("Queue {queue} keeps {replication} copies of each message")
        }
        _ => format!("the internal topics keep {internal} copies"),
    };
    Some(format!(
        "scaling Kafka from {current} to {desired} brokers is refused: {because}, so at least {needed} brokers are needed; \
         keeping {current}. Lower the replication first, or create a new access point and bridge the data over"
    ))
}

/// Why a Kafka of a static quorum may not change from `current` to `desired` brokers when that
/// changes its controller voters: they are listed in every broker's configuration, and new voters
/// with empty logs could form a majority that has lost committed metadata (users, ACLs, topics).
/// A dynamic quorum changes its voters one at a time instead ([`super::kafka_quorum`]).
fn kafka_voters_refusal(current: i32, desired: i32) -> Option<String> {
    let (now, then) = (controller_voters(current), controller_voters(desired));
    (now != then).then(|| {
        let keeping = match now {
            1 => "1 or 2".to_owned(),
            3 => "3 or 4".to_owned(),
            _ => format!("{now} or more"),
        };
        format!(
            "scaling Kafka from {current} to {desired} brokers is refused: it would change the controller quorum from \
             {now} to {then} voters, and this cluster's quorum is static (an earlier operator made it), which cannot \
             change its voters safely; keeping {current}. Sizes of {keeping} keep the voters; or create a new access \
             point of {desired}, whose quorum is dynamic, and bridge the data over"
        )
    })
}

/// Why NATS of `image` may not shrink: before 2.15 a server cannot be evacuated. From 2.15 the
/// shrink goes step by step ([`super::nats_shrink`]), and what the servers say may still refuse it.
fn nats_scale_down_refusal(current: i32, desired: i32, image: &str) -> Option<String> {
    let evacuates = image_version(image).is_none_or(|version| version >= (2, 15));
    (desired < current && !evacuates).then(|| {
        format!(
            "scaling NATS from {current} to {desired} servers is refused: NATS before 2.15 cannot move a server's \
             stream replicas onto the others ($JS.API.SERVER.EVACUATE); keeping {current}. Set spec.managed.version \
             to 2.15 or later first, or set spec.managed.replicas back to {current}"
        )
    })
}

/// The size a managed cluster runs at, and why when it is not the one asked for.
struct Size {
    replicas: i32,
    resize_refused: Option<String>,
    steps_down_to: Option<i32>,
}

/// The size `driver`'s cluster of `image` runs at when `desired` brokers are asked for and
/// `running` (if any) run now: the current size when the operator cannot change it safely, or
/// while NATS or RabbitMQ retires one broker at a time, as its brokers allow (a step stops one).
fn size(driver: Driver, running: Option<&Running>, desired: i32, image: &str) -> Size {
    let resize_refused = running.and_then(|now| resize_refusal(driver, now, desired, image));
    let now = running.map(|r| r.replicas);
    let steps_down_to = Some(desired)
        .filter(|_| matches!(driver, Driver::Nats | Driver::Rabbitmq | Driver::Kafka) && resize_refused.is_none())
        .filter(|desired| now.is_some_and(|n| *desired < n));
    let replicas = match now {
        Some(now) if resize_refused.is_some() || steps_down_to.is_some() => now,
        _ => desired,
    };
    Size { replicas, resize_refused, steps_down_to }
}

/// Why a single NATS server may not grow into a cluster: it runs JetStream on its own, and once it
/// joins a cluster it deletes the streams it holds as orphans of the new meta group (nats-server
/// issue 5467; seen here with 2.15.2: 100 messages gone 30 s after the restart).
fn nats_growth_refusal(desired: i32) -> String {
    format!(
        "growing NATS from 1 to {desired} servers is refused: a single server runs JetStream on its own, and when it \
         joins a cluster it deletes its streams as orphans (nats-server issue 5467); keeping 1. Set \
         spec.managed.replicas back to 1, or create a new access point of {desired} and bridge the queues over"
    )
}

/// Why `driver`'s cluster of `image` may not change from `now` to `desired` brokers, if the
/// spec and what runs tell.
fn resize_refusal(driver: Driver, now: &Running, desired: i32, image: &str) -> Option<String> {
    match driver {
        Driver::Kafka => kafka_scale_down_refusal(now.replicas, desired, &now.queues)
            .or_else(|| kafka_voters_refusal(now.replicas, desired).filter(|_| now.static_quorum)),
        Driver::Nats if now.replicas == 1 && desired > 1 => Some(nats_growth_refusal(desired)),
        Driver::Nats => nats_scale_down_refusal(now.replicas, desired, image),
        Driver::Rabbitmq | Driver::Mqtt | Driver::Rocketmq | Driver::Gateway => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images() -> DefaultImages {
        DefaultImages {
            kafka: "apache/kafka:4.1.1".into(),
            nats: "nats:2.15.2".into(),
            rabbitmq: "rabbitmq:4.1.4".into(),
            mqtt: "eclipse-mosquitto:2.0.22".into(),
            rocketmq: "apache/rocketmq:5.3.3".into(),
            probe: "oms-operator:test".into(),
        }
    }

    fn spec(yaml: &str) -> MessagingAccessPointSpec {
        serde_yaml_ng::from_str(yaml).expect("spec parses")
    }

    #[test]
    fn managed_kafka_gets_the_default_image_with_its_version_and_the_default_region() {
        let ap = validate(
            "k",
            "acme",
            &spec("{driver: kafka, managed: {replicas: 3, version: 4.0.0}}"),
            "local",
            None,
            &images(),
        )
        .expect("valid");
        assert_eq!(ap.region, "local");
        let Plan::Managed(managed) = ap.plan else { panic!("managed") };
        assert_eq!(managed.image, "apache/kafka:4.0.0");
        assert_eq!(managed.replicas, 3);
    }

    #[test]
    fn name_servers_are_required_for_rocketmq_and_refused_for_the_others() {
        let check = |yaml: &str| validate("r", "acme", &spec(yaml), "local", None, &images());
        let rocketmq =
            check("{driver: rocketmq, external: {servers: ['p:8081'], nameServers: ['n:9876']}}").expect("valid");
        assert_eq!(rocketmq.plan.name_servers(), [("n".to_owned(), 9876)]);
        for refused in [
            "{driver: rocketmq, external: {servers: ['p:8081']}}",
            "{driver: rocketmq, external: {servers: ['p:8081'], nameServers: []}}",
            "{driver: kafka, external: {servers: ['k:9092'], nameServers: ['n:9876']}}",
        ] {
            assert_eq!(check(refused).unwrap_err().field, "spec.external.nameServers", "{refused}");
        }
    }

    #[test]
    fn config_keys_and_values_that_could_start_a_line_of_their_own_are_refused() {
        let check = |yaml: &str| validate("r", "acme", &spec(yaml), "local", None, &images());
        for refused in [
            "{driver: rocketmq, managed: {config: {'authenticationEnabled:false': x}}}",
            "{driver: rocketmq, managed: {config: {a: \"1\\nauthenticationEnabled=false\"}}}",
            "{driver: kafka, managed: {config: {'a b': '1'}}}",
        ] {
            assert_eq!(check(refused).unwrap_err().field, "spec.managed.config", "{refused}");
        }
        assert!(check("{driver: kafka, managed: {config: {log.retention.ms: '1000', a_b-c: 'x y;z'}}}").is_ok());
    }

    #[test]
    fn operator_owned_config_keys_are_refused_by_name() {
        let error = validate(
            "k",
            "acme",
            &spec("{driver: kafka, managed: {config: {listeners: 'PLAINTEXT://:1', log.retention.hours: '1'}}}"),
            "local",
            None,
            &images(),
        )
        .expect_err("refused");
        assert_eq!(error.field, "spec.managed.config");
        assert!(error.message.contains("listeners set by the operator"), "{error}");
    }

    #[test]
    fn kafka_older_than_its_finalized_metadata_version_is_refused() {
        let running = Running { replicas: 3, metadata_version: Some("4.1-IV1".into()), ..Running::default() };
        let check = |yaml: &str| validate("k", "acme", &spec(yaml), "local", Some(&running), &images());
        let error = check("{driver: kafka, managed: {replicas: 3, version: 4.0.2}}").expect_err("refused");
        assert_eq!(error.field, "spec.managed.version");
        assert!(
            error.message.contains("finalized at 4.1-IV1") && error.message.contains("Set 4.1 or later"),
            "{error}"
        );
        let image = check("{driver: kafka, managed: {replicas: 3, image: 'apache/kafka:3.9.1'}}").expect_err("refused");
        assert_eq!(image.field, "spec.managed.image");
        assert!(check("{driver: kafka, managed: {replicas: 3, version: 4.1.1}}").is_ok());
        assert!(check("{driver: kafka, managed: {replicas: 3, version: 4.2.0}}").is_ok());
        assert!(check("{driver: kafka, managed: {replicas: 3, image: 'apache/kafka:latest'}}").is_ok(), "no version");
        // A new cluster needs 3.9 for its dynamic quorum; a running one is judged by its level.
        let new = |yaml: &str| validate("k", "acme", &spec(yaml), "local", None, &images());
        let error = new("{driver: kafka, managed: {replicas: 3, version: 3.8.1}}").expect_err("refused");
        assert_eq!(error.field, "spec.managed.version");
        assert!(error.message.contains("older than Kafka 3.9") && error.message.contains("dynamic"), "{error}");
        assert!(new("{driver: kafka, managed: {replicas: 3, version: 3.9.1}}").is_ok());
    }

    #[test]
    fn rabbitmq_before_3_13_is_refused_more_than_one_replica() {
        let check = |yaml: &str| validate("r", "acme", &spec(yaml), "local", None, &images());
        let error =
            check("{driver: rabbitmq, managed: {replicas: 3, image: 'rabbitmq:3.12.14'}}").expect_err("refused");
        assert_eq!(error.field, "spec.managed.replicas");
        assert!(error.message.contains("set spec.managed.version to 3.13 or later, or replicas: 1"), "{error}");
        assert!(check("{driver: rabbitmq, managed: {replicas: 1, image: 'rabbitmq:3.12.14'}}").is_ok());
        assert!(check("{driver: rabbitmq, managed: {replicas: 3, image: 'rabbitmq:3.13.7'}}").is_ok());
        assert!(check("{driver: rabbitmq, managed: {replicas: 3}}").is_ok(), "the default image clusters");
    }

    #[test]
    fn managed_brokers_serve_tls_unless_spec_tls_turns_it_off_and_only_managed_ones_take_it() {
        let tls =
            |yaml: &str| validate("k", "acme", &spec(yaml), "local", None, &images()).map(|ap| ap.plan.serves_tls());
        assert_eq!(tls("{driver: nats, managed: {}}"), Ok(true));
        assert_eq!(tls("{driver: nats, managed: {}, tls: {}}"), Ok(true));
        assert_eq!(tls("{driver: nats, managed: {}, tls: {enabled: false}}"), Ok(false));
        let error = tls("{driver: nats, external: {servers: ['n:4222']}, tls: {enabled: true}}").expect_err("refused");
        assert_eq!(error.field, "spec.tls");
        assert!(error.message.contains("spec.external.tls"), "{error}");
    }

    #[test]
    fn mosquitto_refuses_more_than_one_replica() {
        let error = validate("m", "acme", &spec("{driver: mqtt, managed: {replicas: 2}}"), "local", None, &images())
            .expect_err("refused");
        assert_eq!(error.field, "spec.managed.replicas");
        assert!(error.message.contains("set replicas: 1"), "{error}");
    }

    #[test]
    fn external_servers_and_gateway_endpoint_are_parsed() {
        let ap = validate(
            "x",
            "acme",
            &spec("{driver: nats, region: eu, external: {servers: ['n1:4222', 'n2:4222'], account: acme}}"),
            "local",
            None,
            &images(),
        )
        .expect("valid");
        assert_eq!(ap.region, "eu");
        let Plan::External(external) = ap.plan else { panic!("external") };
        assert_eq!(external.servers, vec![("n1".to_owned(), 4222), ("n2".to_owned(), 4222)]);
        let gw = validate(
            "g",
            "acme",
            &spec("{driver: gateway, endpoint: 'gw.b:7443', remote: {namespace: acme, name: eu}}"),
            "local",
            None,
            &images(),
        )
        .expect("valid");
        assert_eq!(gw.plan, Plan::Gateway { endpoint: ("gw.b".into(), 7443) });
    }

    #[test]
    fn external_tls_is_kept_for_every_driver() {
        let tls = "tls: {caSecretRef: {name: ca, key: ca.crt}}";
        for driver in ["kafka", "nats", "rabbitmq", "mqtt"] {
            let yaml = format!("{{driver: {driver}, external: {{servers: ['n1:4222'], {tls}}}}}");
            let ap = validate("x", "acme", &spec(&yaml), "local", None, &images()).expect("valid");
            let Plan::External(external) = ap.plan else { panic!("external") };
            assert_eq!(external.tls.and_then(|t| t.ca_secret_ref).map(|r| r.name).as_deref(), Some("ca"));
        }
    }

    #[test]
    fn a_gateway_access_point_cannot_expose_a_gateway() {
        let error = validate(
            "g",
            "acme",
            &spec("{driver: gateway, endpoint: 'gw.b:7443', remote: {namespace: acme, name: eu}, gateway: {enabled: true}}"),
            "local",
            None,
            &images(),
        )
        .expect_err("refused");
        assert_eq!(error.field, "spec.gateway");
    }

    #[test]
    fn kafka_refuses_to_shrink_below_its_copies() {
        assert_eq!(kafka_scale_down_refusal(3, 5, &[]), None);
        assert_eq!(kafka_scale_down_refusal(5, 3, &[]), None);
        let internal = kafka_scale_down_refusal(3, 1, &[]).expect("refused");
        assert!(internal.contains("internal topics keep 3 copies") && internal.contains("keeping 3"), "{internal}");
        let queues = vec![("acme/orders".to_owned(), 4)];
        let queue = kafka_scale_down_refusal(5, 3, &queues).expect("refused");
        assert!(queue.contains("Queue acme/orders keeps 4 copies") && queue.contains("at least 4 brokers"), "{queue}");
        assert_eq!(kafka_scale_down_refusal(5, 4, &queues), None);
    }

    #[test]
    fn a_refused_kafka_scale_down_runs_the_current_size_and_leaves_the_spec_as_asked() {
        let asked = spec("{driver: kafka, managed: {replicas: 1}}");
        let running = Running { replicas: 3, queues: vec![("acme/orders".into(), 3)], ..Running::default() };
        let ap = validate("k", "acme", &asked, "local", Some(&running), &images()).expect("valid");
        let Plan::Managed(managed) = ap.plan else { panic!("managed") };
        assert_eq!(managed.replicas, 3, "the brokers that hold the copies keep running");
        assert!(managed.resize_refused.is_some_and(|m| m.contains("Queue acme/orders keeps 3 copies")));
        assert_eq!(asked.managed.map(|m| m.replicas), Some(1), "the spec is not rewritten");
        let growing =
            validate("k", "acme", &spec("{driver: kafka, managed: {replicas: 4}}"), "local", Some(&running), &images());
        let Ok(AccessPoint { plan: Plan::Managed(managed), .. }) = growing else { panic!("managed") };
        assert_eq!((managed.replicas, managed.resize_refused), (4, None));
    }

    #[test]
    fn kafka_of_a_static_quorum_changes_size_only_where_its_voters_stay_and_shrinks_step_by_step() {
        let size = |now: i32, asked: i32| {
            let running = Running { replicas: now, static_quorum: true, ..Running::default() };
            let yaml = format!("{{driver: kafka, managed: {{replicas: {asked}}}}}");
            let ap = validate("k", "acme", &spec(&yaml), "local", Some(&running), &images()).expect("valid");
            let Plan::Managed(managed) = ap.plan else { panic!("managed") };
            (managed.replicas, managed.steps_down_to, managed.resize_refused.unwrap_or_default())
        };
        assert_eq!(size(3, 4), (4, None, String::new()));
        assert_eq!(size(4, 3), (4, Some(3), String::new()), "the leaving broker's partitions move first");
        assert_eq!(size(6, 5), (6, Some(5), String::new()));
        let (replicas, steps, refused) = size(3, 5);
        assert_eq!((replicas, steps), (3, None));
        assert!(
            refused.contains("from 3 to 5 voters") && refused.contains("Sizes of 3 or 4 keep the voters"),
            "{refused}"
        );
        let (replicas, _, refused) = size(1, 3);
        assert_eq!(replicas, 1);
        assert!(refused.contains("Sizes of 1 or 2 keep the voters"), "{refused}");
    }

    #[test]
    fn kafka_of_a_dynamic_quorum_takes_any_size_its_copies_allow_and_shrinks_step_by_step() {
        let size = |now: i32, asked: i32| {
            let running = Running { replicas: now, ..Running::default() };
            let yaml = format!("{{driver: kafka, managed: {{replicas: {asked}}}}}");
            let ap = validate("k", "acme", &spec(&yaml), "local", Some(&running), &images()).expect("valid");
            let Plan::Managed(managed) = ap.plan else { panic!("managed") };
            (managed.replicas, managed.steps_down_to, managed.resize_refused)
        };
        assert_eq!(size(3, 5), (5, None, None), "two more voters, added one at a time");
        assert_eq!(size(1, 3), (3, None, None));
        assert_eq!(size(5, 3), (5, Some(3), None), "voters leave with their brokers");
        assert!(size(3, 1).2.is_some_and(|m| m.contains("internal topics keep 3 copies")));
    }

    #[test]
    fn nats_before_2_15_keeps_its_size_and_nats_and_rabbitmq_step_down() {
        let running = Running { replicas: 3, ..Running::default() };
        let size = |asked: &str| {
            let ap = validate("b", "acme", &spec(asked), "local", Some(&running), &images()).expect("valid");
            let Plan::Managed(managed) = ap.plan else { panic!("managed") };
            (managed.replicas, managed.resize_refused.unwrap_or_default())
        };
        let (replicas, message) = size("{driver: nats, managed: {replicas: 1, version: 2.14.5}}");
        assert_eq!(replicas, 3, "the servers keep running");
        assert!(
            message.contains("before 2.15") && message.contains("from 3 to 1") && message.contains("keeping 3"),
            "{message}"
        );
        // NATS 2.15 and RabbitMQ shrink step by step, as their brokers allow (`shrink`): the
        // current size runs until a step stops a broker.
        for driver in ["nats", "rabbitmq"] {
            let asked = format!("{{driver: {driver}, managed: {{replicas: 1}}}}");
            assert_eq!(size(&asked), (3, String::new()), "{driver}");
            let ap = validate("b", "acme", &spec(&asked), "local", Some(&running), &images());
            assert!(
                matches!(ap, Ok(AccessPoint { plan: Plan::Managed(Managed { steps_down_to: Some(1), .. }), .. })),
                "{driver}"
            );
        }
        for driver in ["rabbitmq", "nats"] {
            assert_eq!(
                size(&format!("{{driver: {driver}, managed: {{replicas: 5}}}}")),
                (5, String::new()),
                "{driver} grows"
            );
        }
    }

    #[test]
    fn a_single_nats_server_does_not_grow_but_a_cluster_and_a_new_one_do() {
        let size = |asked: &str, running: Option<i32>| {
            let running = running.map(|replicas| Running { replicas, ..Running::default() });
            let ap = validate("b", "acme", &spec(asked), "local", running.as_ref(), &images()).expect("valid");
            let Plan::Managed(managed) = ap.plan else { panic!("managed") };
            (managed.replicas, managed.resize_refused)
        };
        let (replicas, refused) = size("{driver: nats, managed: {replicas: 3}}", Some(1));
        let message = refused.unwrap_or_default();
        assert_eq!(replicas, 1, "the single server keeps its streams: {message}");
        assert!(message.contains("from 1 to 3") && message.contains("orphans"), "{message}");
        assert_eq!(size("{driver: nats, managed: {replicas: 3}}", None), (3, None), "created at 3");
        assert_eq!(size("{driver: nats, managed: {replicas: 3}}", Some(2)), (3, None), "a cluster grows");
        assert_eq!(size("{driver: rabbitmq, managed: {replicas: 3}}", Some(1)), (3, None), "RabbitMQ grows from 1");
    }
}
