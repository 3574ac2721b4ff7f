//! The OMS PKI, as pure functions over PEM text: a CA (generated, or supplied by the user),
//! leaf certificates for gateways and bridges carrying a SPIFFE identity, and reading a peer's
//! identity and a certificate's lifetime back. The operator keeps the PEM in Secrets; the data
//! plane only reads it.
//!
//! Identities: `spiffe://<trust-domain>/ns/<namespace>/<kind>/<name>`, kind `bridge` or `gateway`.
//! The namespace is the tenant.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot create the certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("not a PEM certificate: {0}")]
    Parse(String),
    #[error("{0}")]
    Identity(String),
}

/// A certificate authority: its certificate and key as PEM.
pub struct Ca {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// A new self-signed CA named `name`, valid from now for `valid_for`.
    pub fn generate(name: &str, valid_for: Duration) -> Result<Self, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = OffsetDateTime::now_utc();
        // A little in the past: clocks of two clouds are never exactly the same.
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + valid_for;
        let cert_pem = params.self_signed(&key)?.pem();
        let key_pem = key.serialize_pem();
        Ok(Self { cert_pem, key_pem, issuer: Issuer::new(params, key) })
    }

    /// A CA from its PEM certificate and key (kept in a Secret, or supplied by the user).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(Self { cert_pem: cert_pem.to_owned(), key_pem: key_pem.to_owned(), issuer })
    }

    #[must_use]
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    #[must_use]
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Issues a leaf certificate with a fresh key.
    pub fn issue(&self, leaf: &Leaf) -> Result<Issued, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(leaf.dns_names.clone())?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, leaf.common_name.as_str());
        if let Some(uri) = &leaf.spiffe_id {
            params.subject_alt_names.push(SanType::URI(uri.as_str().try_into()?));
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        // X.509 times have whole seconds; `Issued` reports what the certificate says.
        let not_before = leaf.not_before.replace_nanosecond(0).unwrap_or(leaf.not_before);
        params.not_before = not_before;
        params.not_after = not_before + leaf.valid_for;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            not_before: params.not_before,
            not_after: params.not_after,
        })
    }
}

/// What a leaf certificate says.
#[derive(Clone, Debug)]
pub struct Leaf {
    pub common_name: String,
    /// `spiffe://...` identity (URI SAN).
    pub spiffe_id: Option<String>,
    /// DNS names a server answers to (a client certificate may have none).
    pub dns_names: Vec<String>,
    pub not_before: OffsetDateTime,
    pub valid_for: Duration,
}

impl Leaf {
    /// A leaf for `identity`, valid from now for `valid_for`; its start is moved back by a tenth of
    /// that (at most five minutes) so that a peer whose clock is a little behind accepts it too.
    #[must_use]
    pub fn new(identity: &SpiffeId, dns_names: Vec<String>, valid_for: Duration) -> Self {
        let skew = (valid_for / 10).min(Duration::from_mins(5));
        Self {
            common_name: format!("{}/{}", identity.namespace, identity.name),
            spiffe_id: Some(identity.to_string()),
            dns_names,
            not_before: OffsetDateTime::now_utc() - skew,
            valid_for: valid_for + skew,
        }
    }
}

/// An issued certificate, its key and lifetime.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

/// A workload identity: `spiffe://<trust_domain>/ns/<namespace>/<kind>/<name>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpiffeId {
    pub trust_domain: String,
    pub namespace: String,
    /// `bridge` or `gateway`.
    pub kind: String,
    pub name: String,
}

impl SpiffeId {
    /// Parses an identity URI; refuses anything but the exact shape above.
    pub fn parse(uri: &str) -> Result<Self, PkiError> {
        let bad = |why: &str| PkiError::Identity(format!("{uri:?} is not an OMS identity: {why}"));
        let rest = uri.strip_prefix("spiffe://").ok_or_else(|| bad("it must start with spiffe://"))?;
        let parts: Vec<&str> = rest.split('/').collect();
        let [trust_domain, "ns", namespace, kind, name] = parts.as_slice() else {
            return Err(bad("expected spiffe://<trust-domain>/ns/<namespace>/<bridge|gateway>/<name>"));
        };
        if ![*trust_domain, *namespace, *name].iter().all(|p| is_name(p)) {
            return Err(bad("each part must be a lowercase DNS-style name"));
        }
        if !matches!(*kind, "bridge" | "gateway") {
            return Err(bad("the kind must be bridge or gateway"));
        }
        Ok(Self {
            trust_domain: (*trust_domain).to_owned(),
            namespace: (*namespace).to_owned(),
            kind: (*kind).to_owned(),
            name: (*name).to_owned(),
        })
    }
}

impl std::fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "spiffe://{}/ns/{}/{}/{}", self.trust_domain, self.namespace, self.kind, self.name)
    }
}

/// Lowercase letters, digits, '-' and '.', not empty, at most 253 characters.
fn is_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// The OMS identity in a DER certificate's URI SANs (exactly one is allowed).
pub fn identity_of(der: &[u8]) -> Result<SpiffeId, PkiError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| PkiError::Parse(e.to_string()))?;
    let mut uris = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::URI(uri) = name {
                uris.push(*uri);
            }
        }
    }
    match uris.as_slice() {
        [uri] => SpiffeId::parse(uri),
        [] => Err(PkiError::Identity("the certificate has no URI SAN identity".into())),
        _ => Err(PkiError::Identity("the certificate has more than one URI SAN".into())),
    }
}

/// Not-before and not-after of the first certificate in `pem`.
pub fn lifetime(pem: &str) -> Result<(OffsetDateTime, OffsetDateTime), PkiError> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| PkiError::Parse(e.to_string()))?;
    let cert = block.parse_x509().map_err(|e| PkiError::Parse(e.to_string()))?;
    Ok((cert.validity().not_before.to_datetime(), cert.validity().not_after.to_datetime()))
}

/// When a certificate valid from `not_before` to `not_after` is renewed: at two thirds of its
/// lifetime, which leaves a third for retries and for every reader to reload.
#[must_use]
pub fn renew_at(not_before: OffsetDateTime, not_after: OffsetDateTime) -> OffsetDateTime {
    not_before + (not_after - not_before) * 2 / 3
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bridge(ns: &str) -> SpiffeId {
        SpiffeId {
            trust_domain: "cloud-a.oms".into(),
            namespace: ns.into(),
            kind: "bridge".into(),
            name: "orders".into(),
        }
    }

    fn der(pem: &str) -> Vec<u8> {
        x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("pem").1.contents
    }

    #[test]
    fn an_issued_leaf_carries_its_identity_and_lifetime() {
        let ca = Ca::generate("oms test CA", Duration::from_hours(24)).expect("ca");
        let leaf = Leaf::new(&bridge("acme"), vec![], Duration::from_hours(1));
        let issued = ca.issue(&leaf).expect("issued");
        assert_eq!(identity_of(&der(&issued.cert_pem)).expect("identity"), bridge("acme"));
        let (from, to) = lifetime(&issued.cert_pem).expect("lifetime");
        // An hour from now, and five minutes (a tenth, capped) before now for clock skew.
        assert_eq!((to - from).whole_seconds(), 3600 + 300);
    }

    #[test]
    fn a_ca_read_back_from_pem_issues_certificates_too() {
        let ca = Ca::generate("oms test CA", Duration::from_hours(24)).expect("ca");
        let again = Ca::from_pem(ca.cert_pem(), ca.key_pem()).expect("from pem");
        let issued = again.issue(&Leaf::new(&bridge("acme"), vec!["gw.example".into()], Duration::from_mins(1)));
        assert!(issued.is_ok());
    }

    #[test]
    fn identities_round_trip_and_malformed_ones_are_refused() {
        let id = bridge("acme");
        assert_eq!(SpiffeId::parse(&id.to_string()).expect("parses"), id);
        for bad in [
            "https://cloud-a.oms/ns/acme/bridge/orders",
            "spiffe://cloud-a.oms/ns/acme/bridge",
            "spiffe://cloud-a.oms/ns/acme/bridge/orders/extra",
            "spiffe://cloud-a.oms/tenant/acme/bridge/orders",
            "spiffe://cloud-a.oms/ns/ACME/bridge/orders",
            "spiffe://cloud-a.oms/ns/acme/user/orders",
            "spiffe://cloud-a.oms/ns//bridge/orders",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn renewal_is_due_at_two_thirds_of_the_lifetime() {
        let from = OffsetDateTime::UNIX_EPOCH;
        let to = from + time::Duration::hours(3);
        assert_eq!(renew_at(from, to), from + time::Duration::hours(2));
    }
}
