//! HTTP/2 channels of the gRPC ends (the gateway, a RocketMQ proxy): to the first of the end's
//! servers that answers, over our own rustls configuration where the end speaks TLS.

use std::sync::Arc;

use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Uri};

use super::{ConnectorError, connect_error};
use oms_bridge_config::Endpoint;

/// ALPN of gRPC over TLS: grpc-java's servers (RocketMQ's proxy) refuse a handshake without it.
const ALPN_H2: &[u8] = b"h2";

/// A host as TLS names and sockets take it: an IPv6 address without its brackets.
pub(super) fn bare_host(host: &str) -> &str {
    host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host)
}

/// An error with its causes: tonic's own messages ("transport error") say little alone.
pub(super) fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

/// A channel to the first of the end's servers that answers, in their order, with `settings`
/// (timeouts, windows); over TLS with `tls`, the server's certificate checked as `tls` says
/// (against the host dialled unless it names another), in plaintext without. When none answers,
/// the error names each server's failure.
pub(super) async fn channel(
    endpoint: &Endpoint,
    settings: impl Fn(tonic::transport::Endpoint) -> tonic::transport::Endpoint,
    tls: Option<ClientConfig>,
) -> Result<Channel, ConnectorError> {
    if endpoint.servers.is_empty() {
        return Err(connect_error(endpoint, "no server"));
    }
    let mut failures = Vec::new();
    for (host, port) in &endpoint.servers {
        match server_channel(host, *port, &settings, tls.clone()).await {
            Ok(channel) => return Ok(channel),
            Err(failure) => failures.push(format!("{host}:{port}: {failure}")),
        }
    }
    Err(connect_error(endpoint, failures.join("; ")))
}

async fn server_channel(
    host: &str,
    port: u16,
    settings: impl Fn(tonic::transport::Endpoint) -> tonic::transport::Endpoint,
    tls: Option<ClientConfig>,
) -> Result<Channel, String> {
    let grpc = tonic::transport::Endpoint::from_shared(format!("http://{host}:{port}")).map_err(|e| e.to_string())?;
    let grpc = settings(grpc);
    let Some(mut tls) = tls else {
        return grpc.connect().await.map_err(|e| with_causes(&e));
    };
    tls.alpn_protocols = vec![ALPN_H2.to_vec()];
    let connector = TlsConnector::from(Arc::new(tls));
    let host = bare_host(host).to_owned();
    let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
    grpc.connect_with_connector(tower::service_fn(move |_: Uri| {
        let (connector, name, host) = (connector.clone(), name.clone(), host.clone());
        async move {
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            // Frames are small and acks wait on them: Nagle would hold each behind the last ack.
            tcp.set_nodelay(true)?;
            let stream = connector.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    }))
    .await
    .map_err(|e| with_causes(&e))
}
