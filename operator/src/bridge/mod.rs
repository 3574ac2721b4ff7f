//! The Bridge controller. So far it gives each Bridge its workload identity: a certificate Secret
//! `<bridge>-oms-tls` (`tls.crt`, `tls.key`, trust bundle `ca.crt`) for
//! `spiffe://<trust-domain>/ns/<namespace>/bridge/<name>`, owned by the Bridge (garbage-collected
//! with it) and renewed at two thirds of its lifetime. The worker Deployment, its config and the
//! status from the data path come with the rest of this controller.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::{Controller, watcher};
use kube::{Api, Resource, ResourceExt};
use oms_crds::bridge::Bridge;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::apply::apply;
use crate::context::Context;
use crate::pki::{Pki, PkiError, Renewal, certificate_secret, renewal};

/// The `kind` label of this controller's metrics.
const KIND: &str = "Bridge";
/// Retry soon after a failure that time may fix (API server busy).
const RETRY_SOON: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read or write Secret {name}: {source}")]
    Secret { name: String, source: kube::Error },
    #[error(transparent)]
    Pki(#[from] PkiError),
}

impl Error {
    fn metric_label(&self) -> &'static str {
        match self {
            Error::Secret { .. } => "secret",
            Error::Pki(_) => "pki",
        }
    }
}

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

async fn reconcile(bridge: Arc<Bridge>, state: Arc<(Arc<Context>, Arc<Pki>)>) -> Result<Action, Error> {
    let (ctx, pki) = (&state.0, &state.1);
    let started = Instant::now();
    let result = ensure_certificate(&bridge, ctx, pki).await;
    ctx.metrics.observe_reconcile(KIND, result.as_ref().map_or_else(Error::metric_label, |_| "success"), started);
    result
}

// The signature is the error policy callback of kube-runtime.
#[allow(clippy::needless_pass_by_value)]
fn error_policy(bridge: Arc<Bridge>, error: &Error, _state: Arc<(Arc<Context>, Arc<Pki>)>) -> Action {
    tracing::warn!(message = "Bridge reconcile failed; retrying.", bridge = %bridge.name_any(), %error);
    Action::requeue(RETRY_SOON)
}

/// Issues the Bridge's certificate when it is missing, changed or due, and requeues for the
/// moment the current one is due.
async fn ensure_certificate(bridge: &Bridge, ctx: &Context, pki: &Pki) -> Result<Action, Error> {
    if bridge.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let (namespace, name) = (bridge.namespace().unwrap_or_default(), bridge.name_any());
    let secret_name = certificate_secret_name(&name);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let secret_error = |source| Error::Secret { name: secret_name.clone(), source };
    let existing = secrets.get_opt(&secret_name).await.map_err(secret_error)?;
    let identity = pki.bridge_identity(&namespace, &name);
    let not_after = match renewal(existing.as_ref(), &identity, &pki.bundle, OffsetDateTime::now_utc()) {
        Renewal::KeepUntil { renew_at, not_after } => {
            record_expiry(ctx, &namespace, &secret_name, not_after);
            return Ok(Action::requeue(until(renew_at)));
        }
        Renewal::IssueNow(reason) => {
            let issued = pki.issue(&identity, Vec::new())?;
            let Some(owner) = bridge.controller_owner_ref(&()) else { return Ok(Action::await_change()) };
            let secret = certificate_secret(&secret_name, &namespace, owner, &identity, &issued, &pki.bundle);
            apply(&ctx.client, &secret).await.map_err(secret_error)?;
            let verb = if existing.is_some() { "Renewed" } else { "Issued" };
            tracing::info!(message = "Certificate issued.", secret = %secret_name, %identity, reason, not_after = %issued.not_after);
            let note =
                format!("{verb} certificate {secret_name} for {identity} ({reason}), valid until {}", issued.not_after);
            ctx.publish(&bridge.object_ref(&()), EventType::Normal, &format!("Certificate{verb}"), &note).await;
            issued.not_after
        }
    };
    record_expiry(ctx, &namespace, &secret_name, not_after);
    // Look again when the new certificate is due.
    let (now, lifetime) = (OffsetDateTime::now_utc(), pki.leaf_lifetime);
    Ok(Action::requeue(until(now + lifetime * 2 / 3)))
}

#[allow(clippy::cast_precision_loss)] // seconds since the epoch fit an f64 exactly
fn record_expiry(ctx: &Context, namespace: &str, secret: &str, not_after: OffsetDateTime) {
    ctx.metrics
        .certificate_expiry_timestamp_seconds
        .with_label_values(&[namespace, secret])
        .set(not_after.unix_timestamp() as f64);
}

/// From now until `at`, at least a second.
fn until(at: OffsetDateTime) -> Duration {
    Duration::try_from(at - OffsetDateTime::now_utc()).unwrap_or_default().max(Duration::from_secs(1))
}
