//! The Bridge controller. So far it gives each Bridge its workload identity: a certificate Secret
//! `<bridge>-oms-tls` (`tls.crt`, `tls.key`, trust bundle `ca.crt`) for
//! `spiffe://<trust-domain>/ns/<namespace>/bridge/<name>`, owned by the Bridge (garbage-collected
//! with it) and renewed at two thirds of its lifetime. The worker Deployment, its config and the
//! status from the data path come with the rest of this controller; [`render`] already renders
//! the worker's config and Deployment.

pub mod render;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::Action;
use kube::runtime::{Controller, watcher};
use kube::{Resource, ResourceExt};
use oms_crds::bridge::Bridge;
use tokio_util::sync::CancellationToken;

use crate::certificates::{self, CertificateError, Subject};
use crate::context::Context;
use crate::pki::Pki;

/// The `kind` label of this controller's metrics.
const KIND: &str = "Bridge";
/// Retry soon after a failure that time may fix (API server busy).
const RETRY_SOON: Duration = Duration::from_secs(15);

/// The certificate Secret of a Bridge.
#[must_use]
pub fn certificate_secret_name(bridge: &str) -> String {
    format!("{bridge}-oms-tls")
}

/// Runs until `shutdown`; watches the Secrets it owns, so a deleted or edited one is put back.
pub async fn run(ctx: Arc<Context>, pki: Arc<Pki>, namespace: Option<String>, shutdown: CancellationToken) {
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=oms-operator");
    Controller::new(ctx.api::<Bridge>(namespace.as_deref()), watcher::Config::default())
        .owns(ctx.api::<Secret>(namespace.as_deref()), owned)
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, Arc::new((ctx, pki)))
        .for_each(|_| futures::future::ready(()))
        .await;
}

async fn reconcile(bridge: Arc<Bridge>, state: Arc<(Arc<Context>, Arc<Pki>)>) -> Result<Action, CertificateError> {
    let (ctx, pki) = (&state.0, &state.1);
    let started = Instant::now();
    let result = ensure_identity(&bridge, ctx, pki).await;
    let label = match &result {
        Ok(_) => "success",
        Err(CertificateError::Secret { .. }) => "secret",
        Err(CertificateError::Pki(_)) => "pki",
    };
    ctx.metrics.observe_reconcile(KIND, label, started);
    result
}

// The signature is the error policy callback of kube-runtime.
#[allow(clippy::needless_pass_by_value)]
fn error_policy(bridge: Arc<Bridge>, error: &CertificateError, _state: Arc<(Arc<Context>, Arc<Pki>)>) -> Action {
    tracing::warn!(message = "Bridge reconcile failed; retrying.", bridge = %bridge.name_any(), %error);
    Action::requeue(RETRY_SOON)
}

async fn ensure_identity(bridge: &Bridge, ctx: &Context, pki: &Pki) -> Result<Action, CertificateError> {
    let Some(owner) = bridge.controller_owner_ref(&()) else { return Ok(Action::await_change()) };
    if bridge.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let (namespace, name) = (bridge.namespace().unwrap_or_default(), bridge.name_any());
    let subject = Subject {
        identity: pki.identity(&namespace, "bridge", &name),
        secret: certificate_secret_name(&name),
        namespace,
        dns_names: Vec::new(),
        owner,
        object: bridge.object_ref(&()),
    };
    Ok(Action::requeue(certificates::ensure(ctx, pki, subject).await?))
}
