//! How an access point's own gateway is exposed: the validated `spec.gateway`, the endpoint other
//! clouds dial, and the names of its Service and certificate. Read by the access point controller
//! (`status.gatewayEndpoint`) and the gateway controller (the workload). Pure.

use oms_crds::access_point::{GatewayExposure, ServiceType};

/// Our own gateway in front of this access point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gateway {
    pub port: i32,
    pub service_type: ServiceType,
    pub node_port: Option<i32>,
    /// The DNS name other clouds dial; in the certificate besides the Service's names.
    pub advertised_host: Option<String>,
}

impl Gateway {
    /// The gateway a spec asks for; `None` unless enabled.
    #[must_use]
    pub fn from_spec(exposure: Option<&GatewayExposure>) -> Option<Self> {
        let g = exposure.filter(|g| g.enabled)?;
        Some(Self {
            port: g.port,
            service_type: g.service.as_ref().map(|s| s.type_).unwrap_or_default(),
            node_port: g.service.as_ref().and_then(|s| s.node_port),
            advertised_host: g.advertised_host.clone(),
        })
    }

    /// Where other clouds reach this gateway (`status.gatewayEndpoint`): the advertised host, else
    /// the Service's cluster name; the node port when the Service has a fixed one.
    #[must_use]
    pub fn endpoint(&self, access_point: &str, namespace: &str) -> String {
        let host =
            self.advertised_host.clone().unwrap_or_else(|| format!("{}.{namespace}.svc", service_name(access_point)));
        let port = match (self.service_type, self.node_port) {
            (ServiceType::NodePort, Some(node_port)) => node_port,
            _ => self.port,
        };
        format!("{host}:{port}")
    }
}

/// The gateway's Service name, and the name of its certificate Secret.
#[must_use]
pub fn service_name(access_point: &str) -> String {
    format!("{access_point}-oms-gateway")
}

#[must_use]
pub fn certificate_secret_name(access_point: &str) -> String {
    format!("{access_point}-oms-gateway-tls")
}

/// The names the gateway answers to inside the cluster.
#[must_use]
pub fn dns_names(access_point: &str, namespace: &str) -> Vec<String> {
    let service = service_name(access_point);
    vec![
        service.clone(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_certificate_names_its_service_at_every_depth() {
        assert_eq!(
            dns_names("edge", "acme"),
            [
                "edge-oms-gateway",
                "edge-oms-gateway.acme",
                "edge-oms-gateway.acme.svc",
                "edge-oms-gateway.acme.svc.cluster.local"
            ]
        );
    }
}
