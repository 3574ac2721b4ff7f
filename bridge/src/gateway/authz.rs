//! Who may touch which queue through the gateway: a pure decision over the peer's identity (from
//! its certificate), the gateway's trust domains and the access points it serves.

use oms_pki::SpiffeId;

use oms_bridge_config::Backend;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Publish,
    Consume,
}

impl Operation {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Publish => "publish",
            Operation::Consume => "consume",
        }
    }
}

/// Why a request is refused; `NotFound` only for peers that could use the access point if it
/// existed, so that names of other tenants' access points do not leak.
#[derive(Debug, PartialEq, Eq)]
pub enum Denial {
    PermissionDenied(String),
    NotFound(String),
    InvalidArgument(String),
}

/// The backend serving `access_point` (`<namespace>/<name>`) if `peer` may `operation` on `queue`
/// there: the peer is a bridge of a trusted domain, and the access point is in the peer's
/// namespace or shared with it.
pub fn authorize<'a>(
    peer: &SpiffeId,
    trusted_domains: &[&str],
    backends: &'a [Backend],
    access_point: &str,
    queue: &str,
    operation: Operation,
) -> Result<&'a Backend, Denial> {
    let who = peer.to_string();
    if !trusted_domains.contains(&peer.trust_domain.as_str()) {
        return Err(Denial::PermissionDenied(format!(
            "{who}: trust domain {} is not accepted here (peerTrustDomains)",
            peer.trust_domain
        )));
    }
    if peer.kind != "bridge" {
        return Err(Denial::PermissionDenied(format!("{who}: only bridges may {}", operation.as_str())));
    }
    if queue.is_empty() {
        return Err(Denial::InvalidArgument("the queue name is empty".into()));
    }
    let Some((namespace, name)) = access_point.split_once('/') else {
        return Err(Denial::InvalidArgument(format!("access point {access_point:?} is not <namespace>/<name>")));
    };
    let allowed = |ns: &str| ns == peer.namespace;
    let backend = backends.iter().find(|b| b.namespace == namespace && b.access_point == name);
    match backend {
        // On a shared access point every tenant's queues carry its prefix: a peer names only its own.
        Some(backend)
            if !backend.shared_with.is_empty() && !queue.starts_with(&backend.tenant_prefix(&peer.namespace)) =>
        {
            Err(Denial::PermissionDenied(format!(
                "{who} may not {} queue {queue:?} of access point {access_point}: on a shared access point the queues of tenant {} start with {:?}",
                operation.as_str(),
                peer.namespace,
                backend.tenant_prefix(&peer.namespace)
            )))
        }
        Some(backend)
            if allowed(&backend.namespace)
                || backend.shared_with.iter().any(|ns| ns == "*" || ns == &peer.namespace) =>
        {
            Ok(backend)
        }
        Some(_) => Err(Denial::PermissionDenied(format!(
            "{who} may not {} queue {queue:?} of access point {access_point}: it belongs to tenant {namespace}, \
             which has not shared it with {} (sharing)",
            operation.as_str(),
            peer.namespace
        ))),
        None if allowed(namespace) => {
            Err(Denial::NotFound(format!("no access point {access_point} behind this gateway")))
        }
        None => {
            Err(Denial::PermissionDenied(format!("{who} may not {} queues of tenant {namespace}", operation.as_str())))
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use oms_bridge_config::Protocol;

    fn backend(namespace: &str, name: &str, shared_with: &[&str]) -> Backend {
        Backend {
            namespace: namespace.into(),
            access_point: name.into(),
            protocol: Protocol::Nats,
            servers: vec![("nats".into(), 4222)],
            tls: None,
            credentials_dir: None,
            tenant_credentials_dir: None,
            shared_with: shared_with.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn peer(domain: &str, namespace: &str, kind: &str) -> SpiffeId {
        SpiffeId { trust_domain: domain.into(), namespace: namespace.into(), kind: kind.into(), name: "b".into() }
    }

    const TRUSTED: &[&str] = &["cloud-b.oms", "cloud-a.oms"];

    #[test]
    fn a_bridge_of_the_tenant_may_use_its_access_point() {
        let backends = [backend("acme", "edge", &[])];
        let ok =
            authorize(&peer("cloud-a.oms", "acme", "bridge"), TRUSTED, &backends, "acme/edge", "q", Operation::Publish);
        assert_eq!(ok.map(|b| b.access_point.as_str()), Ok("edge"));
    }

    #[test]
    fn another_tenant_is_denied_unless_shared() {
        let private = [backend("acme", "edge", &[])];
        let shared = [backend("acme", "edge", &["globex"])];
        let globex = peer("cloud-a.oms", "globex", "bridge");
        let denied = authorize(&globex, TRUSTED, &private, "acme/edge", "q", Operation::Consume);
        assert!(matches!(denied, Err(Denial::PermissionDenied(m)) if m.contains("has not shared it with globex")));
        assert!(authorize(&globex, TRUSTED, &shared, "acme/edge", "globex_q", Operation::Consume).is_ok());
    }

    #[test]
    fn on_a_shared_access_point_a_tenant_names_only_its_own_queues() {
        let shared = [backend("acme", "edge", &["globex"])];
        let globex = peer("cloud-a.oms", "globex", "bridge");
        for queue in ["acme_orders", "orders", "globexorders"] {
            let denied = authorize(&globex, TRUSTED, &shared, "acme/edge", queue, Operation::Publish);
            assert!(
                matches!(denied, Err(Denial::PermissionDenied(m)) if m.contains("start with \"globex_\"")),
                "{queue}"
            );
        }
        let acme = peer("cloud-a.oms", "acme", "bridge");
        assert!(authorize(&acme, TRUSTED, &shared, "acme/edge", "acme_orders", Operation::Publish).is_ok());
        assert!(authorize(&acme, TRUSTED, &shared, "acme/edge", "globex_orders", Operation::Publish).is_err());
    }

    #[test]
    fn unknown_domains_and_non_bridges_are_denied() {
        let backends = [backend("acme", "edge", &["*"])];
        for who in [peer("evil.oms", "acme", "bridge"), peer("cloud-a.oms", "acme", "gateway")] {
            let result = authorize(&who, TRUSTED, &backends, "acme/edge", "q", Operation::Publish);
            assert!(matches!(result, Err(Denial::PermissionDenied(_))), "{who}");
        }
    }

    #[test]
    fn a_missing_access_point_is_not_found_only_for_its_own_tenant() {
        let backends = [backend("acme", "edge", &[])];
        let own =
            authorize(&peer("cloud-a.oms", "acme", "bridge"), TRUSTED, &backends, "acme/none", "q", Operation::Publish);
        assert!(matches!(own, Err(Denial::NotFound(_))));
        let other = authorize(
            &peer("cloud-a.oms", "globex", "bridge"),
            TRUSTED,
            &backends,
            "acme/none",
            "q",
            Operation::Publish,
        );
        assert!(matches!(other, Err(Denial::PermissionDenied(_))));
    }

    proptest! {
        // Fuzz of the authorization: whatever the names, a peer is granted only an access point of
        // its own namespace or one shared with it, of a trusted domain, as a bridge.
        #[test]
        fn grants_never_cross_tenants(
            peer_ns in "[a-c]", ap_ns in "[a-c]", shared in proptest::collection::vec("[a-c*]", 0..3),
            domain in prop_oneof![Just("cloud-a.oms"), Just("x.oms")], kind in prop_oneof![Just("bridge"), Just("gateway")],
            target in "[a-c]/(edge|core)", queue in "([a-c]_)?q",
        ) {
            let shared: Vec<&str> = shared.iter().map(String::as_str).collect();
            let backends = [backend(&ap_ns, "edge", &shared)];
            let who = peer(domain, &peer_ns, kind);
            if let Ok(granted) = authorize(&who, TRUSTED, &backends, &target, &queue, Operation::Publish) {
                prop_assert_eq!(format!("{}/{}", granted.namespace, granted.access_point), target);
                prop_assert!(domain == "cloud-a.oms" && kind == "bridge");
                prop_assert!(granted.namespace == peer_ns || shared.iter().any(|s| *s == "*" || *s == peer_ns));
                let prefix = format!("{peer_ns}_");
                prop_assert!(shared.is_empty() || queue.starts_with(&prefix));
            }
        }
    }
}
