//! The NetworkPolicy of a managed broker (pure): a namespace is a tenant, so the client ports admit
//! only the tenants the access point serves (its own namespace and `spec.sharing.tenants`, where
//! their applications, bridge workers and gateways run); the brokers reach each other on every
//! port; the operator reaches every port (admin APIs); the metrics port, if the broker has one,
//! is open to scrapers anywhere. Everything else that comes in is refused.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::render::{labels, pod_selector};
use super::validate::AccessPoint;
use crate::drivers::BrokerDriver;

/// Label every namespace carries with its own name (set by the API server).
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// The operator's pods, as the chart labels them.
const OPERATOR_POD_LABEL: (&str, &str) = ("app.kubernetes.io/name", "oms-operator");
/// Named ports that serve metrics, open to scrapers.
const METRICS_PORTS: [&str; 2] = ["prometheus", "metrics"];

fn port(number: u16) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some("TCP".into()),
        port: Some(IntOrString::Int(i32::from(number))),
        ..NetworkPolicyPort::default()
    }
}

fn namespaces(names: Vec<String>) -> LabelSelector {
    LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: NAMESPACE_NAME_LABEL.into(),
            operator: "In".into(),
            values: Some(names),
        }]),
        ..LabelSelector::default()
    }
}

/// The broker pods' NetworkPolicy; `operator_namespace` is where the operator runs.
#[must_use]
pub fn broker_network_policy(
    ap: &AccessPoint,
    broker: &dyn BrokerDriver,
    operator_namespace: &str,
    owner: &OwnerReference,
) -> NetworkPolicy {
    let brokers = LabelSelector { match_labels: Some(pod_selector(ap)), ..LabelSelector::default() };
    let tenants = if ap.shared_with.iter().any(|t| t == "*") {
        LabelSelector::default()
    } else {
        let mut names = vec![ap.namespace.clone()];
        names.extend(ap.shared_with.iter().filter(|t| **t != ap.namespace).cloned());
        namespaces(names)
    };
    let operator = NetworkPolicyPeer {
        namespace_selector: Some(namespaces(vec![operator_namespace.to_owned()])),
        pod_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(OPERATOR_POD_LABEL.0.to_owned(), OPERATOR_POD_LABEL.1.to_owned())])),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    };
    let mut rules = vec![
        NetworkPolicyIngressRule {
            from: Some(vec![NetworkPolicyPeer { pod_selector: Some(brokers.clone()), ..NetworkPolicyPeer::default() }]),
            ports: None,
        },
        NetworkPolicyIngressRule {
            from: Some(vec![NetworkPolicyPeer { namespace_selector: Some(tenants), ..NetworkPolicyPeer::default() }]),
            ports: Some(broker.tenant_ports(ap.plan.serves_tls()).into_iter().map(port).collect()),
        },
        NetworkPolicyIngressRule { from: Some(vec![operator]), ports: None },
    ];
    let metrics: Vec<NetworkPolicyPort> = broker
        .ports(ap.plan.serves_tls())
        .iter()
        .filter(|(name, _)| METRICS_PORTS.contains(name))
        .map(|(_, number)| port(*number))
        .collect();
    if !metrics.is_empty() {
        rules.push(NetworkPolicyIngressRule { from: None, ports: Some(metrics) });
    }
    NetworkPolicy {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(ap.name.clone()),
            namespace: Some(ap.namespace.clone()),
            labels: Some(labels(ap)),
            owner_references: Some(vec![owner.clone()]),
            ..Default::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(brokers),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(rules),
            ..NetworkPolicySpec::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access_point::validate::validate;
    use crate::drivers::DefaultImages;
    use crate::drivers::managed_driver;

    fn access_point(sharing: &str) -> AccessPoint {
        of_driver("rabbitmq", 3, sharing)
    }

    fn of_driver(driver: &str, replicas: i32, sharing: &str) -> AccessPoint {
        let spec =
            serde_yaml_ng::from_str(&format!("{{driver: {driver}, managed: {{replicas: {replicas}}}{sharing}}}"))
                .expect("spec");
        let images = DefaultImages {
            kafka: "k".into(),
            nats: "n".into(),
            rabbitmq: "r:4.1".into(),
            mqtt: "m".into(),
            rocketmq: "apache/rocketmq:5.3.3".into(),
            probe: "p".into(),
        };
        validate("billing", "acme", &spec, "local", None, &images).expect("valid")
    }

    fn rules(ap: &AccessPoint) -> Vec<NetworkPolicyIngressRule> {
        let broker = managed_driver(ap.driver).expect("managed");
        let policy = broker_network_policy(ap, broker, "oms-system", &OwnerReference::default());
        policy.spec.and_then(|s| s.ingress).expect("rules")
    }

    fn client_namespaces(rules: &[NetworkPolicyIngressRule]) -> Option<Vec<String>> {
        let selector = rules[1].from.as_ref()?[0].namespace_selector.clone()?;
        Some(
            selector
                .match_expressions
                .unwrap_or_default()
                .into_iter()
                .flat_map(|e| e.values.unwrap_or_default())
                .collect(),
        )
    }

    #[test]
    fn the_client_port_admits_only_the_tenants_served() {
        let own = rules(&access_point(""));
        assert_eq!(client_namespaces(&own), Some(vec!["acme".to_owned()]));
        assert_eq!(own[1].ports.as_ref().map(Vec::len), Some(1), "the client port only");
        let shared = rules(&access_point(", sharing: {tenants: [globex, acme]}"));
        assert_eq!(client_namespaces(&shared), Some(vec!["acme".to_owned(), "globex".to_owned()]));
        let everyone = rules(&access_point(", sharing: {tenants: ['*']}"));
        assert_eq!(client_namespaces(&everyone), Some(vec![]), "an empty selector: every namespace");
    }

    #[test]
    fn rocketmq_tenants_reach_the_proxy_the_name_server_and_the_broker() {
        let rules = rules(&of_driver("rocketmq", 1, ""));
        let ports: Vec<_> = rules[1].ports.iter().flatten().filter_map(|p| p.port.clone()).collect();
        assert_eq!(ports, [8081, 9876, 10911].map(IntOrString::Int));
    }

    #[test]
    fn the_operator_and_peer_brokers_reach_every_port_and_metrics_are_open() {
        let rules = rules(&access_point(""));
        assert!(rules[0].ports.is_none() && rules[2].ports.is_none());
        let operator = &rules[2].from.as_ref().expect("peers")[0];
        assert_eq!(
            operator.namespace_selector.as_ref().and_then(|s| s.match_expressions.clone()).map(|e| e[0].values.clone()),
            Some(Some(vec!["oms-system".to_owned()]))
        );
        let metrics = rules.last().expect("metrics rule");
        assert!(metrics.from.is_none(), "scrapers from anywhere");
        assert_eq!(metrics.ports.as_ref().map(|p| p[0].port.clone()), Some(Some(IntOrString::Int(15692))));
    }
}
