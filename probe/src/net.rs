//! One connection to the broker on this pod, plain or TLS, where every read and write ends by
//! the probe's deadline.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// TLS towards the broker: its certificate checked as `config` says, for `server_name`.
#[derive(Clone, Debug)]
pub struct Tls {
    pub config: Arc<ClientConfig>,
    pub server_name: String,
}

impl Tls {
    /// TLS that trusts the CA certificates in `ca_file` alone.
    pub fn trusting(ca_file: &Path, server_name: String) -> Result<Self, String> {
        Ok(Tls { config: Arc::new(client_config(ca_file)?), server_name })
    }

    /// The same TLS offering `protocol` by ALPN (`h2` for a gRPC server, which may insist).
    #[must_use]
    pub fn offering(&self, protocol: &[u8]) -> Self {
        let mut config = (*self.config).clone();
        config.alpn_protocols = vec![protocol.to_vec()];
        Tls { config: Arc::new(config), server_name: self.server_name.clone() }
    }
}

enum Transport {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

pub struct Connection {
    transport: Transport,
    deadline: Instant,
}

impl Connection {
    pub fn open(addr: SocketAddr, tls: Option<&Tls>, deadline: Instant) -> Result<Self, String> {
        let socket = TcpStream::connect_timeout(&addr, remaining(deadline)?)
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        socket.set_nodelay(true).map_err(|e| e.to_string())?;
        let transport = match tls {
            None => Transport::Plain(socket),
            Some(tls) => {
                let name = ServerName::try_from(tls.server_name.clone())
                    .map_err(|e| format!("TLS server name {:?}: {e}", tls.server_name))?;
                let session = ClientConnection::new(tls.config.clone(), name).map_err(|e| format!("TLS: {e}"))?;
                Transport::Tls(Box::new(StreamOwned::new(session, socket)))
            }
        };
        Ok(Connection { transport, deadline })
    }

    fn socket(&self) -> &TcpStream {
        match &self.transport {
            Transport::Plain(socket) => socket,
            Transport::Tls(stream) => &stream.sock,
        }
    }

    pub fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.io(|stream| stream.write_all(bytes).and_then(|()| stream.flush()))
    }

    /// Reads exactly `N` bytes.
    pub fn read_array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut bytes = [0u8; N];
        self.io(|stream| stream.read_exact(&mut bytes))?;
        Ok(bytes)
    }

    /// Reads `length` bytes, refusing more than `limit`.
    pub fn read(&mut self, length: usize, limit: usize) -> Result<Vec<u8>, String> {
        if length > limit {
            return Err(format!("an answer of {length} bytes, more than the {limit} expected"));
        }
        let mut bytes = vec![0u8; length];
        self.io(|stream| stream.read_exact(&mut bytes))?;
        Ok(bytes)
    }

    /// Sends `request` and reads one length-prefixed (4 bytes, big endian) answer, as Kafka
    /// frames them.
    pub fn exchange(&mut self, request: &[u8], limit: usize) -> Result<Vec<u8>, String> {
        self.send(request)?;
        let length = u32::from_be_bytes(self.read_array()?);
        self.read(usize::try_from(length).unwrap_or(usize::MAX), limit)
    }

    /// One I/O step, with whatever time is left before the deadline.
    fn io<T>(&mut self, step: impl FnOnce(&mut dyn ReadWrite) -> io::Result<T>) -> Result<T, String> {
        let left = remaining(self.deadline)?;
        let socket = self.socket();
        socket
            .set_read_timeout(Some(left))
            .and_then(|()| socket.set_write_timeout(Some(left)))
            .map_err(|e| e.to_string())?;
        let stream: &mut dyn ReadWrite = match &mut self.transport {
            Transport::Plain(socket) => socket,
            Transport::Tls(stream) => stream.as_mut(),
        };
        step(stream).map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => "no answer before the deadline".to_owned(),
            io::ErrorKind::UnexpectedEof => "the broker closed the connection".to_owned(),
            _ => format!("I/O: {e}"),
        })
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn remaining(deadline: Instant) -> Result<Duration, String> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() { Err("no answer before the deadline".to_owned()) } else { Ok(left) }
}

fn client_config(ca_file: &Path) -> Result<ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    let certificates = CertificateDer::pem_file_iter(ca_file)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| format!("CA file {}: {e}", ca_file.display()))?;
    let (added, _ignored) = roots.add_parsable_certificates(certificates);
    if added == 0 {
        return Err(format!("CA file {}: no certificate in it", ca_file.display()));
    }
    Ok(ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
