//! Certificate Secrets the operator issues and keeps fresh: the I/O edge of [`crate::pki`], shared
//! by every controller that gives an object a workload identity (bridges, gateways) or serves
//! TLS from it (managed brokers). It signs with our CA, or has cert-manager sign and copies.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Api;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams};
use kube::runtime::events::EventType;
use oms_pki::{Ca, Issued, Leaf, SpiffeId};
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

use crate::apply::{FIELD_MANAGER, apply};
use crate::cert_manager::{self, IssuerRef};
use crate::context::Context;
use crate::pki::{Pki, PkiError, Renewal, Signer, Trusts, certificate_secret, renewal};

#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("cannot read or write Secret {name}: {source}")]
    Secret { name: String, source: kube::Error },
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("cannot read or write cert-manager Certificate {name}: {source}{}", not_installed_hint(.source))]
    Certificate { name: String, source: kube::Error },
    #[error("waiting for cert-manager to issue Certificate {name} ({issuer}): {why}")]
    NotIssued { name: String, issuer: IssuerRef, why: String },
}

/// What a 404 on a Certificate means: cert-manager's kind is not installed.
fn not_installed_hint(source: &kube::Error) -> &'static str {
    match source {
        kube::Error::Api(status) if status.code == 404 => {
            " (cert-manager's Certificate kind is not installed: install cert-manager, or unset pki.issuer)"
        }
        _ => "",
    }
}

impl CertificateError {
    /// The `result` label of `oms_operator_reconcile_total`.
    #[must_use]
    pub fn metric_label(&self) -> &'static str {
        match self {
            CertificateError::Secret { .. } => "secret",
            CertificateError::Pki(_) => "pki",
            CertificateError::Certificate { .. } | CertificateError::NotIssued { .. } => "certificate",
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
    /// What the holder trusts, its Secret's `ca.crt`.
    pub trusts: Trusts,
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
    /// The certificate of the CA that signed it (PEM), what its clients check it against.
    pub signer_ca_pem: String,
}

/// Issues the subject's certificate when it is missing, changed or due (or has cert-manager
/// issue it and copies it), and records its expiry.
pub async fn ensure(ctx: &Context, pki: &Pki, subject: Subject) -> Result<Ensured, CertificateError> {
    match &pki.signer {
        Signer::Own(ca) => ensure_signed(ctx, pki, ca, subject).await,
        Signer::CertManager(issuer) => ensure_from_cert_manager(ctx, pki, issuer, subject).await,
    }
}

async fn ensure_signed(ctx: &Context, pki: &Pki, ca: &Ca, subject: Subject) -> Result<Ensured, CertificateError> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &subject.namespace);
    let secret_error = |source| CertificateError::Secret { name: subject.secret.clone(), source };
    let existing = secrets.get_opt(&subject.secret).await.map_err(secret_error)?;
    let trusts = pki.trusted(subject.trusts, ca.cert_pem());
    let (not_after, renew_at, cert_pem) =
        match renewal(existing.as_ref(), &subject.identity, &trusts, OffsetDateTime::now_utc()) {
            Renewal::KeepUntil { renew_at, not_after } => {
                let cert = existing.as_ref().and_then(|s| s.data.as_ref()).and_then(|d| d.get("tls.crt"));
                (not_after, renew_at, cert.map(|c| c.0.clone()).unwrap_or_default())
            }
            Renewal::IssueNow(reason) => {
                let leaf = Leaf::new(&subject.identity, subject.dns_names.clone(), subject.lifetime);
                let issued = ca.issue(&leaf).map_err(PkiError::from)?;
                let verb = if existing.is_some() { "Renewed" } else { "Issued" };
                write_certificate(ctx, &subject, &issued, &trusts, verb, reason).await?;
                (issued.not_after, oms_pki::renew_at(issued.not_before, issued.not_after), issued.cert_pem.into_bytes())
            }
        };
    record_expiry(ctx, &subject.namespace, &subject.secret, not_after);
    Ok(Ensured {
        recheck_in: until(renew_at),
        digest: format!("{:x}", Sha256::digest(&cert_pem)),
        signer_ca_pem: ca.cert_pem().to_owned(),
    })
}

/// Applies the subject's cert-manager `Certificate`, then copies what cert-manager issued into
/// the subject's Secret with the trust bundle whenever either changed.
async fn ensure_from_cert_manager(
    ctx: &Context,
    pki: &Pki,
    issuer: &IssuerRef,
    subject: Subject,
) -> Result<Ensured, CertificateError> {
    let request = cert_manager::Request {
        namespace: &subject.namespace,
        secret: &subject.secret,
        identity: &subject.identity,
        dns_names: &subject.dns_names,
        lifetime: subject.lifetime,
        owner: &subject.owner,
    };
    let certificate_error = |source| CertificateError::Certificate { name: subject.secret.clone(), source };
    let certificates: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &subject.namespace, &cert_manager::certificate_resource());
    let applied = certificates
        .patch(
            &subject.secret,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(cert_manager::certificate(&request, issuer)),
        )
        .await
        .map_err(certificate_error)?;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &subject.namespace);
    let issued_name = cert_manager::issued_secret_name(&subject.secret);
    let issued_secret = secrets
        .get_opt(&issued_name)
        .await
        .map_err(|source| CertificateError::Secret { name: issued_name.clone(), source })?;
    let not_issued = |why: String| CertificateError::NotIssued {
        name: format!("{}/{}", subject.namespace, subject.secret),
        issuer: issuer.clone(),
        why,
    };
    // Only what cert-manager issued for the spec just applied is copied: not a certificate of
    // an earlier identity, names or issuer.
    cert_manager::issued_for_current_spec(applied.metadata.generation, &applied.data["status"]).map_err(not_issued)?;
    let from = cert_manager::read_issued(issued_secret.as_ref()).map_err(|why| not_issued(why.to_owned()))?;
    let trusts = pki.trusted(subject.trusts, &from.ca_pem);
    let secret_error = |source| CertificateError::Secret { name: subject.secret.clone(), source };
    let mounted = secrets.get_opt(&subject.secret).await.map_err(secret_error)?;
    if !cert_manager::copy_is_current(mounted.as_ref(), &from, &subject.identity, &trusts) {
        let verb = if mounted.is_some() { "Renewed" } else { "Issued" };
        write_certificate(ctx, &subject, &from.issued, &trusts, verb, "issued by cert-manager").await?;
    }
    if subject.trusts == Trusts::Bundle {
        pki.publish_bundle(&ctx.client, &from.ca_pem).await?;
    }
    let Issued { cert_pem, not_before, not_after, .. } = from.issued;
    record_expiry(ctx, &subject.namespace, &subject.secret, not_after);
    let renew_at = oms_pki::renew_at(not_before, not_after);
    Ok(Ensured {
        recheck_in: cert_manager::recheck_in(renew_at, OffsetDateTime::now_utc()),
        digest: format!("{:x}", Sha256::digest(cert_pem.as_bytes())),
        signer_ca_pem: from.ca_pem,
    })
}

/// Removes the subject's certificate Secret and, when cert-manager signs, its Certificate and
/// the Secret cert-manager wrote: for a holder switched off while its object stays.
pub async fn remove(ctx: &Context, pki: &Pki, namespace: &str, secret: &str) -> Result<(), CertificateError> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let secret_error = |name: &str| {
        let name = name.to_owned();
        move |source| CertificateError::Secret { name, source }
    };
    if matches!(pki.signer, Signer::CertManager(_)) {
        let certificates: Api<DynamicObject> =
            Api::namespaced_with(ctx.client.clone(), namespace, &cert_manager::certificate_resource());
        delete_if_present(&certificates, secret)
            .await
            .map_err(|source| CertificateError::Certificate { name: secret.to_owned(), source })?;
        let issued = cert_manager::issued_secret_name(secret);
        delete_if_present(&secrets, &issued).await.map_err(secret_error(&issued))?;
    }
    delete_if_present(&secrets, secret).await.map_err(secret_error(secret))
}

/// Whether cert-manager has a Certificate of ours for `secret` (never, with our own CA): one may
/// be there before any certificate was copied.
pub async fn requested(ctx: &Context, pki: &Pki, namespace: &str, secret: &str) -> Result<bool, CertificateError> {
    if !matches!(pki.signer, Signer::CertManager(_)) {
        return Ok(false);
    }
    let certificates: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), namespace, &cert_manager::certificate_resource());
    let found = certificates.get_opt(secret).await;
    Ok(found.map_err(|source| CertificateError::Certificate { name: secret.to_owned(), source })?.is_some())
}

/// Deletes `name`; one already gone is fine.
async fn delete_if_present<K>(api: &Api<K>, name: &str) -> Result<(), kube::Error>
where
    K: Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error),
    }
}

/// Writes the Secret pods mount and tells the subject's object.
async fn write_certificate(
    ctx: &Context,
    subject: &Subject,
    issued: &Issued,
    trusts: &str,
    verb: &str,
    reason: &str,
) -> Result<(), CertificateError> {
    let secret = certificate_secret(
        &subject.secret,
        &subject.namespace,
        subject.owner.clone(),
        &subject.identity,
        issued,
        trusts,
    );
    apply(&ctx.client, &secret)
        .await
        .map_err(|source| CertificateError::Secret { name: subject.secret.clone(), source })?;
    tracing::info!(message = "Certificate issued.", secret = %subject.secret, identity = %subject.identity, reason, not_after = %issued.not_after);
    let note = format!(
        "{verb} certificate {} for {} ({reason}), valid until {}",
        subject.secret, subject.identity, issued.not_after
    );
    ctx.publish(&subject.object, EventType::Normal, &format!("Certificate{verb}"), &note).await;
    Ok(())
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
