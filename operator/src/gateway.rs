//! The gateway of a MessagingAccessPoint (`spec.gateway.enabled`). So far it gives the gateway its
//! server certificate: a Secret `<access-point>-oms-gateway-tls` for
//! `spiffe://<trust-domain>/ns/<namespace>/gateway/<name>`, with the DNS names of its Service,
//! owned by the access point and renewed at two thirds of its lifetime. The gateway Deployment and
//! Service come with the Bridge controller issue.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::DeleteParams;
use kube::runtime::controller::Action;
use kube::runtime::{Controller, watcher};
use kube::{Api, Resource, ResourceExt};
use oms_crds::access_point::MessagingAccessPoint;
use tokio_util::sync::CancellationToken;

use crate::certificates::{self, CertificateError, Subject};
use crate::context::Context;
use crate::pki::Pki;

/// The `kind` label of this controller's metrics.
const KIND: &str = "Gateway";
const RETRY_SOON: Duration = Duration::from_secs(15);

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

/// Runs until `shutdown`.
pub async fn run(ctx: Arc<Context>, pki: Arc<Pki>, namespace: Option<String>, shutdown: CancellationToken) {
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=oms-operator");
    Controller::new(ctx.api::<MessagingAccessPoint>(namespace.as_deref()), watcher::Config::default())
        .owns(ctx.api::<Secret>(namespace.as_deref()), owned)
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, Arc::new((ctx, pki)))
        .for_each(|_| futures::future::ready(()))
        .await;
}

async fn reconcile(
    map: Arc<MessagingAccessPoint>,
    state: Arc<(Arc<Context>, Arc<Pki>)>,
) -> Result<Action, CertificateError> {
    let (ctx, pki) = (&state.0, &state.1);
    let started = Instant::now();
    let result = ensure_identity(&map, ctx, pki).await;
    ctx.metrics.observe_reconcile(
        KIND,
        result.as_ref().map_or_else(CertificateError::metric_label, |_| "success"),
        started,
    );
    result
}

// The signature is the error policy callback of kube-runtime.
#[allow(clippy::needless_pass_by_value)]
fn error_policy(
    map: Arc<MessagingAccessPoint>,
    error: &CertificateError,
    _state: Arc<(Arc<Context>, Arc<Pki>)>,
) -> Action {
    tracing::warn!(message = "Gateway reconcile failed; retrying.", access_point = %map.name_any(), %error);
    Action::requeue(RETRY_SOON)
}

async fn ensure_identity(map: &MessagingAccessPoint, ctx: &Context, pki: &Pki) -> Result<Action, CertificateError> {
    let Some(owner) = map.controller_owner_ref(&()) else { return Ok(Action::await_change()) };
    let (namespace, name) = (map.namespace().unwrap_or_default(), map.name_any());
    let secret = certificate_secret_name(&name);
    let enabled = map.spec.gateway.as_ref().is_some_and(|g| g.enabled);
    if !enabled || map.metadata.deletion_timestamp.is_some() {
        // A gateway switched off keeps no certificate around.
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
        if let Err(error) = secrets.delete(&secret, &DeleteParams::default()).await
            && !matches!(&error, kube::Error::Api(status) if status.code == 404)
        {
            return Err(CertificateError::Secret { name: secret, source: error });
        }
        return Ok(Action::await_change());
    }
    let subject = Subject {
        identity: pki.identity(&namespace, "gateway", &name),
        dns_names: dns_names(&name, &namespace),
        secret,
        namespace,
        owner,
        object: map.object_ref(&()),
    };
    Ok(Action::requeue(certificates::ensure(ctx, pki, subject).await?))
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
