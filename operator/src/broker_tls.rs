//! The operator's TLS client towards brokers (probe, admin clients), built from the PEM text of
//! an access point's binding: the brokers' certificates checked against its CA bundle and the
//! name dialled (or its server name), our certificate where it has one.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// How to speak TLS to the brokers: the CA bundle their certificates are checked against, the
/// client certificate where they ask for one, and the name to check where it is not the host
/// dialled.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BrokerTls {
    pub ca_pem: String,
    /// Certificate and key (PEM).
    pub client: Option<(String, String)>,
    pub server_name: Option<String>,
}

/// A client config for `tls`; the error says which PEM is unusable.
pub fn client_config(tls: &BrokerTls) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    let certs = |pem: &str, what: &str| {
        let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{what}: {e}"))?;
        if certs.is_empty() { Err(format!("{what}: no PEM certificate")) } else { Ok(certs) }
    };
    for cert in certs(&tls.ca_pem, "the CA bundle")? {
        roots.add(cert).map_err(|e| format!("the CA bundle: {e}"))?;
    }
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("the CA bundle: {e}"))?;
    let verifier: Arc<dyn ServerCertVerifier> = match &tls.server_name {
        Some(name) => {
            let name = ServerName::try_from(name.clone()).map_err(|e| format!("server name {name}: {e}"))?;
            Arc::new(NameOverride { inner: verifier, name })
        }
        None => verifier,
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match &tls.client {
        Some((cert, key)) => {
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| format!("the client key: {e}"))?;
            builder.with_client_auth_cert(certs(cert, "the client certificate")?, key).map_err(|e| e.to_string())
        }
        None => Ok(builder.with_no_client_auth()),
    }
}

/// The standard checks, against the name the access point says the brokers' certificates carry
/// instead of the host dialled.
#[derive(Debug)]
struct NameOverride {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for NameOverride {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _dialled: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner.verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
