//! mTLS for the gateway and its clients, and TLS towards brokers, with certificates that reload
//! from their files: every
//! handshake checks the files' modification times and, when they changed (the operator renewed a
//! Secret, the kubelet swapped the mounted files), reads them again. Established connections and
//! their streams are untouched; the next handshake uses the new certificate and trust bundle. A
//! file that cannot be read or parsed keeps the previous material and is logged.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme};

use oms_bridge_config::TlsFiles;

#[derive(Debug, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct TlsError {
    pub path: String,
    pub problem: String,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS 1.3 first, 1.2 as the floor.
const VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// gRPC runs on HTTP/2, negotiated by ALPN.
const ALPN_H2: &[u8] = b"h2";

/// The server side: our certificate, and client certificates required and checked against the CA
/// bundle (which may hold the roots of several clouds).
pub fn server_config(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let (cert, key) = files.identity.clone().ok_or_else(|| TlsError {
        path: files.ca_file.display().to_string(),
        problem: "a server needs certFile and keyFile".into(),
    })?;
    let identity = Arc::new(Reloading::new(IdentityFiles { cert, key })?);
    let trust = Arc::new(Reloading::new(ClientTrust { ca_file: files.ca_file.clone() })?);
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| TlsError { path: String::new(), problem: e.to_string() })?
        .with_client_cert_verifier(Arc::new(ReloadingClientVerifier(trust)))
        .with_cert_resolver(Arc::new(ReloadingCert(identity)));
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// The client side towards the gateway: our certificate, required, and ALPN for gRPC; the rest
/// as towards a broker.
pub fn client_config(files: &TlsFiles) -> Result<ClientConfig, TlsError> {
    if files.identity.is_none() {
        return Err(TlsError {
            path: files.ca_file.display().to_string(),
            problem: "a gateway client needs certFile and keyFile".into(),
        });
    }
    let mut config = broker_client_config(files)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// The client side towards a broker: its certificate checked against the CA bundle and the name
/// dialled (or the files' server name); ours where the files name one (a broker that asks for
/// client certificates).
pub fn broker_client_config(files: &TlsFiles) -> Result<ClientConfig, TlsError> {
    let trust = Arc::new(Reloading::new(ServerTrust { ca_file: files.ca_file.clone() })?);
    let name = files
        .server_name
        .as_ref()
        .map(|name| ServerName::try_from(name.clone()))
        .transpose()
        .map_err(|e| TlsError { path: files.ca_file.display().to_string(), problem: format!("serverName: {e}") })?;
    let verifying = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| TlsError { path: String::new(), problem: e.to_string() })?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ReloadingServerVerifier { trust, name }));
    Ok(match &files.identity {
        Some((cert, key)) => {
            let identity = Arc::new(Reloading::new(IdentityFiles { cert: cert.clone(), key: key.clone() })?);
            verifying.with_client_cert_resolver(Arc::new(ReloadingCert(identity)))
        }
        None => verifying.with_no_client_auth(),
    })
}

/// Something built from files, rebuilt when any of them changes.
trait FromFiles: Send + Sync {
    type Built: Send + Sync;
    fn files(&self) -> Vec<&Path>;
    fn build(&self) -> Result<Self::Built, TlsError>;
}

struct Reloading<F: FromFiles> {
    source: F,
    current: ArcSwap<F::Built>,
    stamps: Mutex<Vec<Option<SystemTime>>>,
}

impl<F: FromFiles> Reloading<F> {
    fn new(source: F) -> Result<Self, TlsError> {
        let stamps = Mutex::new(modified(&source.files()));
        let current = ArcSwap::from_pointee(source.build()?);
        Ok(Self { source, current, stamps })
    }

    /// The material as of now: rebuilt first if a file changed since the last look.
    fn get(&self) -> Arc<F::Built> {
        let now = modified(&self.source.files());
        let mut stamps = self.stamps.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if *stamps != now {
            match self.source.build() {
                Ok(built) => {
                    self.current.store(Arc::new(built));
                    *stamps = now;
                    tracing::info!(message = "Reloaded TLS material.", files = ?self.source.files());
                }
                // Half-written files during a swap fail here; the next handshake tries again.
                Err(error) => tracing::warn!(message = "Keeping the previous TLS material.", %error),
            }
        }
        self.current.load_full()
    }
}

fn modified(paths: &[&Path]) -> Vec<Option<SystemTime>> {
    paths.iter().map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok()).collect()
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |problem: String| TlsError { path: path.display().to_string(), problem };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

fn read_roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots.add(cert).map_err(|e| TlsError { path: path.display().to_string(), problem: e.to_string() })?;
    }
    Ok(Arc::new(roots))
}

struct IdentityFiles {
    cert: PathBuf,
    key: PathBuf,
}

impl FromFiles for IdentityFiles {
    type Built = CertifiedKey;
    fn files(&self) -> Vec<&Path> {
        vec![&self.cert, &self.key]
    }
    fn build(&self) -> Result<CertifiedKey, TlsError> {
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| TlsError { path: self.key.display().to_string(), problem: e.to_string() })?;
        CertifiedKey::from_der(read_certs(&self.cert)?, key, &provider())
            .map_err(|e| TlsError { path: self.cert.display().to_string(), problem: e.to_string() })
    }
}

struct ClientTrust {
    ca_file: PathBuf,
}

impl FromFiles for ClientTrust {
    type Built = Arc<dyn ClientCertVerifier>;
    fn files(&self) -> Vec<&Path> {
        vec![&self.ca_file]
    }
    fn build(&self) -> Result<Self::Built, TlsError> {
        WebPkiClientVerifier::builder_with_provider(read_roots(&self.ca_file)?, provider())
            .build()
            .map_err(|e| TlsError { path: self.ca_file.display().to_string(), problem: e.to_string() })
    }
}

struct ServerTrust {
    ca_file: PathBuf,
}

impl FromFiles for ServerTrust {
    type Built = Arc<WebPkiServerVerifier>;
    fn files(&self) -> Vec<&Path> {
        vec![&self.ca_file]
    }
    fn build(&self) -> Result<Self::Built, TlsError> {
        WebPkiServerVerifier::builder_with_provider(read_roots(&self.ca_file)?, provider())
            .build()
            .map_err(|e| TlsError { path: self.ca_file.display().to_string(), problem: e.to_string() })
    }
}

/// Our certificate, for either side of the handshake.
struct ReloadingCert(Arc<Reloading<IdentityFiles>>);

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReloadingCert")
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.get())
    }
}

impl ResolvesClientCert for ReloadingCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.get())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

struct ReloadingClientVerifier(Arc<Reloading<ClientTrust>>);

impl fmt::Debug for ReloadingClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReloadingClientVerifier")
    }
}

impl ClientCertVerifier for ReloadingClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    // No CA names in the request: the bundle changes under us, and our clients hold one
    // certificate each anyway.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0.get().verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.get().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.get().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.get().supported_verify_schemes()
    }
}

/// Checks against the CA bundle as it is now, and against `name` instead of the host dialled
/// where one is set.
struct ReloadingServerVerifier {
    trust: Arc<Reloading<ServerTrust>>,
    name: Option<ServerName<'static>>,
}

impl fmt::Debug for ReloadingServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReloadingServerVerifier")
    }
}

impl ServerCertVerifier for ReloadingServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let name = self.name.as_ref().unwrap_or(server_name);
        self.trust.get().verify_server_cert(end_entity, intermediates, name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.trust.get().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.trust.get().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.trust.get().supported_verify_schemes()
    }
}
