//! cert-manager as the signer (`--pki-issuer-kind`/`--pki-issuer-name`, chart `pki.issuer`):
//! instead of signing with a CA of its own, the operator asks cert-manager for each certificate
//! with a `Certificate` object, then copies what cert-manager issued into the Secret that pods
//! mount, beside the trust bundle (cert-manager owns its Secret's `ca.crt`, which holds the
//! issuer's CA alone, and the peer clouds' CAs must join it). Pods, status and metrics stay the
//! same as with our own CA. Rendering and the copy decision are pure; `certificates` does the I/O.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::discovery::ApiResource;
use oms_pki::{Issued, SpiffeId};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::pki::IDENTITY_ANNOTATION;

/// Which cert-manager issuer signs: an `Issuer` in each certificate's namespace, or a
/// `ClusterIssuer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IssuerKind {
    #[value(name = "Issuer")]
    Issuer,
    #[value(name = "ClusterIssuer")]
    ClusterIssuer,
}

impl IssuerKind {
    fn as_str(self) -> &'static str {
        match self {
            IssuerKind::Issuer => "Issuer",
            IssuerKind::ClusterIssuer => "ClusterIssuer",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerRef {
    pub kind: IssuerKind,
    pub name: String,
}

impl std::fmt::Display for IssuerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind.as_str(), self.name)
    }
}

/// cert-manager's `Certificate` kind, for a dynamic API.
#[must_use]
pub fn certificate_resource() -> ApiResource {
    ApiResource {
        group: "cert-manager.io".to_owned(),
        version: "v1".to_owned(),
        api_version: "cert-manager.io/v1".to_owned(),
        kind: "Certificate".to_owned(),
        plural: "certificates".to_owned(),
    }
}

/// The Secret cert-manager writes for the certificate whose copy pods mount as `secret`.
#[must_use]
pub fn issued_secret_name(secret: &str) -> String {
    format!("{secret}-issued")
}

/// What a certificate is for: the same facts our own CA signs.
pub struct Request<'a> {
    pub namespace: &'a str,
    /// The Secret pods mount; the Certificate takes its name.
    pub secret: &'a str,
    pub identity: &'a SpiffeId,
    pub dns_names: &'a [String],
    pub lifetime: Duration,
    pub owner: &'a OwnerReference,
}

/// The `Certificate` asking `issuer` for the request: the SPIFFE id as a URI SAN, the server
/// names, an ECDSA P-256 key in PKCS#8 (what every broker and our bridge read) made afresh at
/// each renewal, renewed at two thirds of the lifetime as our own CA does.
#[must_use]
pub fn certificate(request: &Request<'_>, issuer: &IssuerRef) -> Value {
    let seconds = request.lifetime.as_secs();
    let mut spec = json!({
        "secretName": issued_secret_name(request.secret),
        "secretTemplate": {
            "labels": {"app.kubernetes.io/managed-by": "oms-operator"},
            "annotations": {IDENTITY_ANNOTATION: request.identity.to_string()},
        },
        "uris": [request.identity.to_string()],
        "duration": format!("{seconds}s"),
        "renewBefore": format!("{}s", seconds / 3),
        "privateKey": {"algorithm": "ECDSA", "size": 256, "encoding": "PKCS8", "rotationPolicy": "Always"},
        "usages": ["digital signature", "server auth", "client auth"],
        "issuerRef": {"group": "cert-manager.io", "kind": issuer.kind.as_str(), "name": issuer.name},
    });
    if !request.dns_names.is_empty() {
        spec["dnsNames"] = json!(request.dns_names);
    }
    json!({
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": {
            "name": request.secret,
            "namespace": request.namespace,
            "labels": {"app.kubernetes.io/managed-by": "oms-operator"},
            "ownerReferences": [request.owner],
        },
        "spec": spec,
    })
}

/// Whether cert-manager says the Secret holds a certificate for the Certificate's current spec
/// (`Ready` true, observed at its generation); otherwise why not, in its own words.
pub fn issued_for_current_spec(generation: Option<i64>, status: &Value) -> Result<(), String> {
    let conditions = status["conditions"].as_array().cloned().unwrap_or_default();
    let Some(ready) = conditions.iter().find(|c| c["type"] == "Ready") else {
        return Err("cert-manager has not looked at it yet".to_owned());
    };
    let message = ready["message"].as_str().unwrap_or_default();
    if ready["status"] != "True" {
        return Err(format!("Ready is {}: {message}", ready["status"].as_str().unwrap_or("Unknown")));
    }
    if ready["observedGeneration"].as_i64() < generation {
        return Err("cert-manager has not caught up with the latest change of its spec".to_owned());
    }
    Ok(())
}

/// What cert-manager issued, read from its Secret: the leaf with its key and the issuer's CA.
pub struct FromIssuer {
    pub issued: Issued,
    pub ca_pem: String,
}

/// Why nothing usable is in cert-manager's Secret yet, or what is.
pub fn read_issued(secret: Option<&Secret>) -> Result<FromIssuer, &'static str> {
    let data = secret.and_then(|s| s.data.as_ref()).ok_or("no Secret yet")?;
    let text = |key: &str| data.get(key).and_then(|v| String::from_utf8(v.0.clone()).ok()).filter(|t| !t.is_empty());
    let (cert_pem, key_pem) = text("tls.crt").zip(text("tls.key")).ok_or("no tls.crt and tls.key yet")?;
    // A CA or Vault issuer fills ca.crt; without it nobody could check the certificate.
    let ca_pem = text("ca.crt").ok_or("the issuer left ca.crt empty: use one that returns its CA (CA, Vault)")?;
    let (not_before, not_after) = oms_pki::lifetime(&cert_pem).map_err(|_| "tls.crt is not a readable certificate")?;
    Ok(FromIssuer { issued: Issued { cert_pem, key_pem, not_before, not_after }, ca_pem })
}

/// Whether the Secret pods mount already holds this certificate, key and trust bundle under
/// this identity.
#[must_use]
pub fn copy_is_current(mounted: Option<&Secret>, from: &FromIssuer, identity: &SpiffeId, bundle: &str) -> bool {
    let Some(mounted) = mounted else { return false };
    let data = mounted.data.clone().unwrap_or_default();
    let holds = |key: &str, want: &str| data.get(key).is_some_and(|v| v.0 == want.as_bytes());
    let annotations: BTreeMap<String, String> = mounted.metadata.annotations.clone().unwrap_or_default();
    holds("tls.crt", &from.issued.cert_pem)
        && holds("tls.key", &from.issued.key_pem)
        && holds("ca.crt", bundle)
        && annotations.get(IDENTITY_ANNOTATION).is_some_and(|id| *id == identity.to_string())
}

/// How soon to look again at a certificate cert-manager renews at `renew_at`: then, or shortly
/// if that time has passed and cert-manager has not renewed it yet; and at least every few
/// minutes, for a reissue nobody scheduled (`cmctl renew`, a new key).
#[must_use]
pub fn recheck_in(renew_at: OffsetDateTime, now: OffsetDateTime) -> Duration {
    Duration::try_from(renew_at - now).unwrap_or_default().clamp(WAIT_FOR_RENEWAL, LOOK_AGAIN_WITHIN)
}

/// Between looks at a certificate cert-manager is due to renew.
const WAIT_FOR_RENEWAL: Duration = Duration::from_secs(5);
/// The longest a reissue by cert-manager waits to be copied.
const LOOK_AGAIN_WITHIN: Duration = Duration::from_mins(5);

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use oms_pki::{Ca, Leaf};

    use super::*;

    fn identity() -> SpiffeId {
        SpiffeId {
            trust_domain: "cloud-a.oms".into(),
            namespace: "shop".into(),
            kind: "gateway".into(),
            name: "lake".into(),
        }
    }

    fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "openmessaging.cloud/v1alpha1".into(),
            kind: "MessagingAccessPoint".into(),
            name: "lake".into(),
            uid: "u-1".into(),
            controller: Some(true),
            ..OwnerReference::default()
        }
    }

    fn secret(entries: &[(&str, &str)], identity: Option<&SpiffeId>) -> Secret {
        Secret {
            metadata: ObjectMeta {
                annotations: identity.map(|id| BTreeMap::from([(IDENTITY_ANNOTATION.to_owned(), id.to_string())])),
                ..ObjectMeta::default()
            },
            data: Some(entries.iter().map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec()))).collect()),
            ..Secret::default()
        }
    }

    #[test]
    fn the_certificate_asks_the_issuer_for_the_identity_names_and_lifetime() {
        let (id, owner) = (identity(), owner());
        let names = vec!["lake-oms-gateway.shop.svc".to_owned()];
        let request = Request {
            namespace: "shop",
            secret: "lake-oms-gateway-tls",
            identity: &id,
            dns_names: &names,
            lifetime: Duration::from_hours(24),
            owner: &owner,
        };
        let issuer = IssuerRef { kind: IssuerKind::ClusterIssuer, name: "corp-ca".into() };
        let cert = certificate(&request, &issuer);
        assert_eq!(cert["metadata"]["name"], "lake-oms-gateway-tls");
        assert_eq!(cert["metadata"]["ownerReferences"][0]["uid"], "u-1");
        let spec = &cert["spec"];
        assert_eq!(spec["secretName"], "lake-oms-gateway-tls-issued");
        assert_eq!(spec["uris"][0], "spiffe://cloud-a.oms/ns/shop/gateway/lake");
        assert_eq!(spec["dnsNames"][0], "lake-oms-gateway.shop.svc");
        assert_eq!((spec["duration"].as_str(), spec["renewBefore"].as_str()), (Some("86400s"), Some("28800s")));
        assert_eq!(spec["issuerRef"], json!({"group": "cert-manager.io", "kind": "ClusterIssuer", "name": "corp-ca"}));
        assert_eq!(spec["privateKey"]["encoding"], "PKCS8");
        assert_eq!(spec["secretTemplate"]["annotations"][IDENTITY_ANNOTATION], id.to_string());
    }

    #[test]
    fn a_client_certificate_carries_no_dns_names() {
        let (id, owner) = (identity(), owner());
        let request = Request {
            namespace: "shop",
            secret: "b-oms-tls",
            identity: &id,
            dns_names: &[],
            lifetime: Duration::from_secs(90),
            owner: &owner,
        };
        let cert = certificate(&request, &IssuerRef { kind: IssuerKind::Issuer, name: "ca".into() });
        assert!(cert["spec"].get("dnsNames").is_none());
        assert_eq!(cert["spec"]["renewBefore"], "30s");
    }

    #[test]
    fn an_issued_secret_is_usable_only_with_its_certificate_key_and_ca() {
        let ca = Ca::generate("issuer", Duration::from_hours(24)).expect("ca");
        let issued = ca.issue(&Leaf::new(&identity(), vec![], Duration::from_hours(1))).expect("leaf");
        assert_eq!(read_issued(None).err(), Some("no Secret yet"));
        let no_ca = secret(&[("tls.crt", &issued.cert_pem), ("tls.key", &issued.key_pem), ("ca.crt", "")], None);
        assert!(read_issued(Some(&no_ca)).err().is_some_and(|why| why.contains("ca.crt empty")));
        let full =
            secret(&[("tls.crt", &issued.cert_pem), ("tls.key", &issued.key_pem), ("ca.crt", ca.cert_pem())], None);
        let from = read_issued(Some(&full)).expect("usable");
        assert_eq!((from.ca_pem.as_str(), from.issued.not_after), (ca.cert_pem(), issued.not_after));
    }

    #[test]
    fn the_copy_is_rewritten_when_the_certificate_bundle_or_identity_changes() {
        let ca = Ca::generate("issuer", Duration::from_hours(24)).expect("ca");
        let id = identity();
        let issued = ca.issue(&Leaf::new(&id, vec![], Duration::from_hours(1))).expect("leaf");
        let from = FromIssuer { issued, ca_pem: ca.cert_pem().to_owned() };
        let (cert, key) = (from.issued.cert_pem.as_str(), from.issued.key_pem.as_str());
        let copy = secret(&[("tls.crt", cert), ("tls.key", key), ("ca.crt", "bundle")], Some(&id));
        assert!(copy_is_current(Some(&copy), &from, &id, "bundle"));
        assert!(!copy_is_current(None, &from, &id, "bundle"), "no copy yet");
        assert!(!copy_is_current(Some(&copy), &from, &id, "bundle with a new peer"), "bundle changed");
        let renewed = ca.issue(&Leaf::new(&id, vec![], Duration::from_hours(1))).expect("leaf");
        let after_renewal = FromIssuer { issued: renewed, ca_pem: ca.cert_pem().to_owned() };
        assert!(!copy_is_current(Some(&copy), &after_renewal, &id, "bundle"), "renewed by cert-manager");
        let other = SpiffeId { name: "other".into(), ..id.clone() };
        assert!(!copy_is_current(Some(&copy), &from, &other, "bundle"), "identity changed");
    }

    #[test]
    fn a_certificate_is_looked_at_again_at_its_renewal_or_within_minutes() {
        let now = OffsetDateTime::now_utc();
        assert_eq!(recheck_in(now + time::Duration::minutes(3), now), Duration::from_mins(3));
        assert_eq!(recheck_in(now + time::Duration::days(60), now), LOOK_AGAIN_WITHIN);
        assert_eq!(recheck_in(now - time::Duration::minutes(1), now), WAIT_FOR_RENEWAL);
    }

    #[test]
    fn only_a_ready_certificate_observed_at_its_generation_is_copied() {
        let ready = |status: &str, observed: i64| json!({"conditions": [{"type": "Ready", "status": status, "observedGeneration": observed, "message": "m"}]});
        assert_eq!(issued_for_current_spec(Some(2), &ready("True", 2)), Ok(()));
        assert!(issued_for_current_spec(Some(3), &ready("True", 2)).is_err_and(|why| why.contains("latest change")));
        assert_eq!(issued_for_current_spec(Some(2), &ready("False", 2)), Err("Ready is False: m".to_owned()));
        assert!(issued_for_current_spec(Some(1), &json!({})).is_err());
    }
}
