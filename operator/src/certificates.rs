//! Certificate Secrets the operator issues and keeps fresh: the I/O edge of [`crate::pki`], shared
//! by every controller that gives an object a workload identity (bridges, gateways) or serves
//! TLS from it (managed brokers).

use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Api;
use kube::runtime::events::EventType;
use oms_pki::SpiffeId;
use sha2::{Digest as _, Sha256};
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
    /// What the holder trusts, its Secret's `ca.crt`: the trust bundle for bridges and gateways,
    /// our CA alone for brokers (a peer cloud's certificate must not join our broker cluster).
    pub trusts: String,
    pub lifetime: Duration,
    pub owner: OwnerReference,
    /// Where Events about the certificate go.
    pub object: ObjectReference,
}

/// A certificate Secret as [`ensure`] left it.
pub struct Ensured {
    /// How long until it should be looked at again.
    pub recheck_in: Duration,
    /// A digest of the certificate, for holders that must restart to serve a new one.
    pub digest: String,
}

/// Issues the subject's certificate when it is missing, changed or due, and records its expiry.
pub async fn ensure(ctx: &Context, pki: &Pki, subject: Subject) -> Result<Ensured, CertificateError> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &subject.namespace);
    let secret_error = |source| CertificateError::Secret { name: subject.secret.clone(), source };
    let existing = secrets.get_opt(&subject.secret).await.map_err(secret_error)?;
    let (not_after, renew_at, cert_pem) = match renewal(
        existing.as_ref(),
        &subject.identity,
        &subject.trusts,
        OffsetDateTime::now_utc(),
    ) {
        Renewal::KeepUntil { renew_at, not_after } => {
            let cert = existing.as_ref().and_then(|s| s.data.as_ref()).and_then(|d| d.get("tls.crt"));
            (not_after, renew_at, cert.map(|c| c.0.clone()).unwrap_or_default())
        }
        Renewal::IssueNow(reason) => {
            let issued = pki.issue(&subject.identity, subject.dns_names.clone(), subject.lifetime)?;
            let secret = certificate_secret(
                &subject.secret,
                &subject.namespace,
                subject.owner.clone(),
                &subject.identity,
                &issued,
                &subject.trusts,
            );
            apply(&ctx.client, &secret).await.map_err(secret_error)?;
            let verb = if existing.is_some() { "Renewed" } else { "Issued" };
            tracing::info!(message = "Certificate issued.", secret = %subject.secret, identity = %subject.identity, reason, not_after = %issued.not_after);
            let note = format!(
                "{verb} certificate {} for {} ({reason}), valid until {}",
                subject.secret, subject.identity, issued.not_after
            );
            ctx.publish(&subject.object, EventType::Normal, &format!("Certificate{verb}"), &note).await;
            (issued.not_after, oms_pki::renew_at(issued.not_before, issued.not_after), issued.cert_pem.into_bytes())
        }
    };
    record_expiry(ctx, &subject.namespace, &subject.secret, not_after);
    Ok(Ensured { recheck_in: until(renew_at), digest: format!("{:x}", Sha256::digest(&cert_pem)) })
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
