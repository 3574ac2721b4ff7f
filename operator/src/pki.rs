//! The operator's PKI (DESIGN.md section 6): one CA per cluster, kept in a Secret in the operator's
//! namespace (generated at first start, or supplied by the user before it), a trust-bundle
//! ConfigMap beside it (our CA plus the peer clouds' bundles we accept), and short-lived leaf
//! certificates with SPIFFE identities for bridges and gateways, renewed at two thirds of their
//! lifetime. Or, with `pki.issuer`, no CA of ours: cert-manager signs (`cert_manager`).
//! Rendering and the renewal decision are pure; reading and writing are at the edges.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::PostParams;
use kube::{Api, Client};
use oms_pki::{Ca, Issued, SpiffeId};

pub use crate::cert_manager::IssuerRef;
use time::OffsetDateTime;

use crate::apply::apply;

/// Secret holding the cluster's CA (`tls.crt`, `tls.key`).
pub const CA_SECRET: &str = "oms-ca";
/// ConfigMap holding the trust bundle (`ca.crt`) that peers of other clouds import.
pub const TRUST_BUNDLE: &str = "oms-trust-bundle";
/// How long a CA the operator generates is valid.
const CA_LIFETIME: Duration = Duration::from_hours(10 * 365 * 24);
/// Annotation naming the identity in an issued Secret, for people reading it.
pub const IDENTITY_ANNOTATION: &str = "openmessaging.cloud/identity";

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot read or write Secret {namespace}/{name}: {source}")]
    Api { namespace: String, name: String, source: kube::Error },
    #[error("Secret {namespace}/{name} does not hold a usable CA (tls.crt and tls.key, PEM): {problem}")]
    BadCa { namespace: String, name: String, problem: String },
    #[error("cannot issue a certificate: {0}")]
    Issue(#[from] oms_pki::PkiError),
}

/// Who signs the certificates: a CA of our own, or cert-manager through one of its issuers.
pub enum Signer {
    Own(Box<Ca>),
    CertManager(IssuerRef),
}

/// Whom a certificate's holder trusts (its Secret's `ca.crt`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trusts {
    /// The signing CA and the peer clouds' CAs: bridges and gateways.
    Bundle,
    /// The signing CA alone: brokers (a peer cloud's certificate must not join our broker cluster).
    SignerAlone,
}

/// The cluster's signer and what it issues.
pub struct Pki {
    pub signer: Signer,
    pub trust_domain: String,
    /// The peer clouds' CAs (PEM) we accept besides the signer's.
    pub peer_bundles: String,
    pub leaf_lifetime: Duration,
    /// Lifetime of managed brokers' server certificates: a renewal rolls the brokers, so it is
    /// longer than the bridges' and gateways', which reload theirs.
    pub broker_lifetime: Duration,
    /// Where the CA and the trust-bundle ConfigMap live.
    pub namespace: String,
    /// Trust domains of other clouds whose bridges our gateways accept.
    pub peer_trust_domains: Vec<String>,
    /// The trust bundle last written to the ConfigMap, so that it is written once per change.
    published_bundle: std::sync::Mutex<Option<String>>,
}

impl Pki {
    /// Loads the CA from its Secret, creating it first if there is none (another replica racing
    /// to create it wins, and this one loads theirs). Then writes the trust bundle.
    pub async fn load_or_create(
        client: &Client,
        namespace: &str,
        trust_domain: &str,
        peer_bundles: &str,
        leaf_lifetime: Duration,
    ) -> Result<Self, PkiError> {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let api_error = |source| PkiError::Api { namespace: namespace.to_owned(), name: CA_SECRET.to_owned(), source };
        let secret = if let Some(secret) = secrets.get_opt(CA_SECRET).await.map_err(api_error)? {
            secret
        } else {
            let ca = Ca::generate(&format!("OMS CA {trust_domain}"), CA_LIFETIME)?;
            match secrets.create(&PostParams::default(), &ca_secret(namespace, &ca)).await {
                Ok(created) => {
                    tracing::info!(message = "Created the cluster CA.", namespace, secret = CA_SECRET, trust_domain);
                    created
                }
                // Another replica created it first: use theirs.
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    secrets.get(CA_SECRET).await.map_err(api_error)?
                }
                Err(error) => return Err(api_error(error)),
            }
        };
        let ca = read_ca(&secret).map_err(|problem| PkiError::BadCa {
            namespace: namespace.to_owned(),
            name: CA_SECRET.to_owned(),
            problem,
        })?;
        let pki = Self::new(Signer::Own(Box::new(ca)), namespace, trust_domain, peer_bundles, leaf_lifetime);
        if let Signer::Own(ca) = &pki.signer {
            pki.publish_bundle(client, ca.cert_pem()).await?;
        }
        Ok(pki)
    }

    /// A PKI signing with `signer`. With cert-manager the trust bundle is published once the
    /// issuer's CA is known, from its first certificate.
    #[must_use]
    pub fn new(
        signer: Signer,
        namespace: &str,
        trust_domain: &str,
        peer_bundles: &str,
        leaf_lifetime: Duration,
    ) -> Self {
        Self {
            signer,
            trust_domain: trust_domain.to_owned(),
            peer_bundles: peer_bundles.to_owned(),
            leaf_lifetime,
            broker_lifetime: leaf_lifetime,
            namespace: namespace.to_owned(),
            peer_trust_domains: Vec::new(),
            published_bundle: std::sync::Mutex::new(None),
        }
    }

    /// When our own CA expires; none when cert-manager signs.
    pub fn ca_not_after(&self) -> Result<Option<OffsetDateTime>, PkiError> {
        match &self.signer {
            Signer::Own(ca) => Ok(Some(oms_pki::lifetime(ca.cert_pem())?.1)),
            Signer::CertManager(_) => Ok(None),
        }
    }

    /// What a holder trusting `trusts` gets as `ca.crt`, given the signing CA.
    #[must_use]
    pub fn trusted(&self, trusts: Trusts, signer_ca_pem: &str) -> String {
        match trusts {
            Trusts::Bundle => trust_bundle(signer_ca_pem, &self.peer_bundles),
            Trusts::SignerAlone => signer_ca_pem.to_owned(),
        }
    }

    /// Writes the trust-bundle ConfigMap that peers of other clouds import, unless this replica
    /// already wrote that bundle.
    pub async fn publish_bundle(&self, client: &Client, signer_ca_pem: &str) -> Result<(), PkiError> {
        let bundle = self.trusted(Trusts::Bundle, signer_ca_pem);
        if self.published_bundle.lock().is_ok_and(|published| published.as_deref() == Some(bundle.as_str())) {
            return Ok(());
        }
        apply(client, &trust_bundle_config_map(&self.namespace, &bundle)).await.map_err(|source| PkiError::Api {
            namespace: self.namespace.clone(),
            name: TRUST_BUNDLE.to_owned(),
            source,
        })?;
        if let Ok(mut published) = self.published_bundle.lock() {
            *published = Some(bundle);
        }
        Ok(())
    }

    /// The identity of a `kind` (`bridge`, `gateway`) object in this cluster's trust domain.
    #[must_use]
    pub fn identity(&self, namespace: &str, kind: &str, name: &str) -> SpiffeId {
        SpiffeId {
            trust_domain: self.trust_domain.clone(),
            namespace: namespace.to_owned(),
            kind: kind.to_owned(),
            name: name.to_owned(),
        }
    }

    /// Our CA's certificate alone (PEM): what clients of the brokers we run check them against.
    /// None when cert-manager signs: then it is the `ca.crt` of the brokers' certificate Secret.
    #[must_use]
    pub fn ca_pem(&self) -> Option<&str> {
        match &self.signer {
            Signer::Own(ca) => Some(ca.cert_pem()),
            Signer::CertManager(_) => None,
        }
    }
}

/// Our CA followed by the peer bundles, each ending in a newline.
#[must_use]
pub fn trust_bundle(ca_pem: &str, peer_bundles: &str) -> String {
    let mut bundle = ca_pem.trim_end().to_owned();
    bundle.push('\n');
    if !peer_bundles.trim().is_empty() {
        bundle.push_str(peer_bundles.trim_end());
        bundle.push('\n');
    }
    bundle
}

/// The Secret `oms-ca` holding a CA; create one before the first start to bring your own CA.
#[must_use]
pub fn ca_secret(namespace: &str, ca: &Ca) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(CA_SECRET.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(managed_labels()),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(BTreeMap::from([
            ("tls.crt".to_owned(), ByteString(ca.cert_pem().as_bytes().to_vec())),
            ("tls.key".to_owned(), ByteString(ca.key_pem().as_bytes().to_vec())),
        ])),
        ..Secret::default()
    }
}

fn read_ca(secret: &Secret) -> Result<Ca, String> {
    let field = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
            .ok_or_else(|| format!("{key} is missing"))
    };
    Ca::from_pem(&field("tls.crt")?, &field("tls.key")?).map_err(|e| e.to_string())
}

fn managed_labels() -> BTreeMap<String, String> {
    BTreeMap::from([("app.kubernetes.io/managed-by".to_owned(), "oms-operator".to_owned())])
}

#[must_use]
pub fn trust_bundle_config_map(namespace: &str, bundle: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(TRUST_BUNDLE.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(managed_labels()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([("ca.crt".to_owned(), bundle.to_owned())])),
        ..ConfigMap::default()
    }
}

/// A certificate Secret as pods mount it: `tls.crt`, `tls.key` and the trust bundle `ca.crt`.
#[must_use]
pub fn certificate_secret(
    name: &str,
    namespace: &str,
    owner: OwnerReference,
    identity: &SpiffeId,
    issued: &Issued,
    bundle: &str,
) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(managed_labels()),
            annotations: Some(BTreeMap::from([(IDENTITY_ANNOTATION.to_owned(), identity.to_string())])),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(BTreeMap::from([
            ("tls.crt".to_owned(), ByteString(issued.cert_pem.as_bytes().to_vec())),
            ("tls.key".to_owned(), ByteString(issued.key_pem.as_bytes().to_vec())),
            ("ca.crt".to_owned(), ByteString(bundle.as_bytes().to_vec())),
        ])),
        ..Secret::default()
    }
}

/// What to do with an existing certificate Secret.
#[derive(Debug, PartialEq, Eq)]
pub enum Renewal {
    /// Issue now, for this reason.
    IssueNow(&'static str),
    /// Keep it; look again at this time (two thirds of its lifetime). `not_after` for the metric.
    KeepUntil { renew_at: OffsetDateTime, not_after: OffsetDateTime },
}

/// Decides from the Secret as it is (none, unreadable, for another identity, another trust
/// bundle, or due) whether to issue a new certificate.
#[must_use]
pub fn renewal(existing: Option<&Secret>, identity: &SpiffeId, bundle: &str, now: OffsetDateTime) -> Renewal {
    let Some(data) = existing.and_then(|s| s.data.as_ref()) else { return Renewal::IssueNow("missing") };
    let text = |key: &str| data.get(key).and_then(|v| String::from_utf8(v.0.clone()).ok());
    let (Some(cert), Some(_key), Some(ca)) = (text("tls.crt"), text("tls.key"), text("ca.crt")) else {
        return Renewal::IssueNow("incomplete");
    };
    if ca != bundle {
        return Renewal::IssueNow("trust bundle changed");
    }
    let Ok((not_before, not_after)) = oms_pki::lifetime(&cert) else { return Renewal::IssueNow("unreadable") };
    let holds_identity = existing
        .and_then(|s| s.metadata.annotations.as_ref())
        .and_then(|a| a.get(IDENTITY_ANNOTATION))
        .is_some_and(|id| *id == identity.to_string());
    if !holds_identity {
        return Renewal::IssueNow("identity changed");
    }
    let renew_at = oms_pki::renew_at(not_before, not_after);
    if now >= renew_at {
        return Renewal::IssueNow("due");
    }
    Renewal::KeepUntil { renew_at, not_after }
}

#[cfg(test)]
mod tests {
    use oms_pki::Leaf;

    use super::*;

    fn pki_parts() -> (Ca, SpiffeId) {
        let ca = Ca::generate("test", Duration::from_hours(24)).expect("ca");
        let id = SpiffeId {
            trust_domain: "t.oms".into(),
            namespace: "acme".into(),
            kind: "bridge".into(),
            name: "b".into(),
        };
        (ca, id)
    }

    fn secret_for(ca: &Ca, id: &SpiffeId, lifetime: Duration, bundle: &str) -> (Secret, Issued) {
        let issued = ca.issue(&Leaf::new(id, vec![], lifetime)).expect("issued");
        (certificate_secret("b-oms-tls", "acme", OwnerReference::default(), id, &issued, bundle), issued)
    }

    #[test]
    fn a_fresh_certificate_is_kept_until_two_thirds_of_its_life() {
        let (ca, id) = pki_parts();
        let bundle = trust_bundle(ca.cert_pem(), "");
        let (secret, issued) = secret_for(&ca, &id, Duration::from_hours(3), &bundle);
        let now = issued.not_before + time::Duration::minutes(10);
        let Renewal::KeepUntil { renew_at, not_after } = renewal(Some(&secret), &id, &bundle, now) else {
            panic!("a fresh certificate is kept");
        };
        assert_eq!(not_after, issued.not_after);
        assert_eq!(renew_at, oms_pki::renew_at(issued.not_before, issued.not_after));
        assert_eq!(renewal(Some(&secret), &id, &bundle, renew_at), Renewal::IssueNow("due"));
    }

    #[test]
    fn a_missing_or_changed_certificate_is_issued_again() {
        let (ca, id) = pki_parts();
        let bundle = trust_bundle(ca.cert_pem(), "");
        let (secret, issued) = secret_for(&ca, &id, Duration::from_hours(3), &bundle);
        let now = issued.not_before;
        assert_eq!(renewal(None, &id, &bundle, now), Renewal::IssueNow("missing"));
        let other = SpiffeId { name: "renamed".into(), ..id.clone() };
        assert_eq!(renewal(Some(&secret), &other, &bundle, now), Renewal::IssueNow("identity changed"));
        let wider = trust_bundle(ca.cert_pem(), "-----BEGIN CERTIFICATE-----\npeer\n-----END CERTIFICATE-----");
        assert_eq!(renewal(Some(&secret), &id, &wider, now), Renewal::IssueNow("trust bundle changed"));
    }

    #[test]
    fn the_trust_bundle_is_our_ca_then_the_peers() {
        assert_eq!(trust_bundle("OURS\n", ""), "OURS\n");
        assert_eq!(trust_bundle("OURS", "PEER A\nPEER B\n\n"), "OURS\nPEER A\nPEER B\n");
    }
}
