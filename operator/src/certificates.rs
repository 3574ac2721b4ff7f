//! Certificate Secrets the operator issues and keeps fresh: the I/O edge of [`crate::pki`], shared
//! by every controller that gives an object a workload identity (bridges, gateways).

use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Api;
use kube::runtime::events::EventType;
use oms_pki::SpiffeId;
use time::OffsetDateTime;

use crate::apply::apply;
use crate::context::Context;
use crate::pki::{Pki, PkiError, Renewal, certificate_secret, renewal};

#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("cannot read or write Secret {name}: {source}")]
    Secret { name: String, source: kube::Error },
    #[error(transparent)]
    Pki(#[from] PkiError),
}

impl CertificateError {
    /// The `result` label of `oms_operator_reconcile_total`.
    #[must_use]
    pub fn metric_label(&self) -> &'static str {
        match self {
            CertificateError::Secret { .. } => "secret",
            CertificateError::Pki(_) => "pki",
        }
    }
}

/// Who gets a certificate, under which name, owned by what.
pub struct Subject {
    pub namespace: String,
    pub secret: String,
    pub identity: SpiffeId,
    /// Names a server answers to; empty for a client.
    pub dns_names: Vec<String>,
    pub owner: OwnerReference,
    /// Where Events about the certificate go.
    pub object: ObjectReference,
}

/// Issues the subject's certificate when it is missing, changed or due, records its expiry, and
/// returns how long until it should be looked at again.
pub async fn ensure(ctx: &Context, pki: &Pki, subject: Subject) -> Result<Duration, CertificateError> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &subject.namespace);
    let secret_error = |source| CertificateError::Secret { name: subject.secret.clone(), source };
    let existing = secrets.get_opt(&subject.secret).await.map_err(secret_error)?;
    let (not_after, renew_at) = match renewal(
        existing.as_ref(),
        &subject.identity,
        &pki.bundle,
        OffsetDateTime::now_utc(),
    ) {
        Renewal::KeepUntil { renew_at, not_after } => (not_after, renew_at),
        Renewal::IssueNow(reason) => {
            let issued = pki.issue(&subject.identity, subject.dns_names.clone())?;
            let secret = certificate_secret(
                &subject.secret,
                &subject.namespace,
                subject.owner.clone(),
                &subject.identity,
                &issued,
                &pki.bundle,
            );
            apply(&ctx.client, &secret).await.map_err(secret_error)?;
            let verb = if existing.is_some() { "Renewed" } else { "Issued" };
            tracing::info!(message = "Certificate issued.", secret = %subject.secret, identity = %subject.identity, reason, not_after = %issued.not_after);
            let note = format!(
                "{verb} certificate {} for {} ({reason}), valid until {}",
                subject.secret, subject.identity, issued.not_after
            );
            ctx.publish(&subject.object, EventType::Normal, &format!("Certificate{verb}"), &note).await;
            (issued.not_after, oms_pki::renew_at(issued.not_before, issued.not_after))
        }
    };
    record_expiry(ctx, &subject.namespace, &subject.secret, not_after);
    Ok(until(renew_at))
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
