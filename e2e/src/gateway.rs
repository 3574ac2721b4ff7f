//! Attempts against a gateway with a given identity, as the tenancy tests make them.

use std::path::PathBuf;
use std::time::Duration;

/// The files of a client identity towards a gateway: the CA bundle that verifies the gateway, the
/// client's certificate and its key.
#[derive(Clone, Debug)]
pub struct TlsPaths {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsPaths {
    /// As a worker config's `tls` field.
    #[must_use]
    pub fn yaml(&self) -> String {
        format!(
            "{{caFile: '{}', certFile: '{}', keyFile: '{}'}}",
            self.ca.display(),
            self.cert.display(),
            self.key.display()
        )
    }
}

/// A worker config end for `queue` of `access_point` behind the gateway at `server` (host:port).
#[must_use]
pub fn gateway_end(server: &str, access_point: &str, queue: &str, tls: &TlsPaths) -> String {
    format!(
        "{{driver: gateway, servers: ['{server}'], accessPoint: {access_point}, queue: {queue}, tls: {}}}",
        tls.yaml()
    )
}

/// One attempt to write a message through a gateway with the worker's own sink: true only if the
/// gateway stored it.
pub async fn gateway_publish_attempt(server: &str, access_point: &str, queue: &str, tls: &TlsPaths) -> bool {
    within_limit("publish", Box::pin(publish(server, access_point, queue, tls))).await
}

/// How long one attempt may take: a connection the gateway refuses after the TLS handshake (a
/// client certificate it does not take, under TLS 1.3) has been seen to leave the client waiting
/// with nothing to wake it; such an attempt did not get in.
const ATTEMPT_LIMIT: Duration = Duration::from_mins(1);

async fn within_limit(what: &str, attempt: impl Future<Output = bool>) -> bool {
    tokio::time::timeout(ATTEMPT_LIMIT, attempt).await.unwrap_or_else(|_| {
        eprintln!("gateway {what} attempt: no outcome within {ATTEMPT_LIMIT:?}, counted as refused");
        false
    })
}

async fn publish(server: &str, access_point: &str, queue: &str, tls: &TlsPaths) -> bool {
    let yaml = format!(
        "bridge: {{name: probe, namespace: probe}}\nsource: {{driver: nats, servers: ['127.0.0.1:1'], queue: x}}\ntarget: {}\n",
        gateway_end(server, access_point, queue, tls)
    );
    let Ok(config) = oms_bridge_config::parse_worker("probe.yaml", &yaml) else { return false };
    let Ok(sink) = oms_bridge::connector::Sink::connect(&config.target, "probe", 1).await else { return false };
    let message =
        oms_bridge::message::Message { id: "probe-1".into(), payload: b"probe".to_vec(), ..Default::default() };
    let Ok(confirm) = sink.send(&message).await else { return false };
    matches!(tokio::time::timeout(Duration::from_secs(10), confirm).await, Ok(Ok(_)))
}

/// One attempt to read through a gateway with the worker's own source: true only if the gateway
/// opened the stream.
pub async fn gateway_consume_attempt(server: &str, access_point: &str, queue: &str, tls: &TlsPaths) -> bool {
    within_limit("consume", Box::pin(consume(server, access_point, queue, tls))).await
}

async fn consume(server: &str, access_point: &str, queue: &str, tls: &TlsPaths) -> bool {
    let yaml = format!(
        "bridge: {{name: probe, namespace: probe}}\nsource: {}\ntarget: {{driver: nats, servers: ['127.0.0.1:1'], queue: x}}\n",
        gateway_end(server, access_point, queue, tls)
    );
    let Ok(config) = oms_bridge_config::parse_worker("probe.yaml", &yaml) else { return false };
    let start = oms_bridge::connector::Start::Earliest;
    oms_bridge::connector::Source::connect(
        &config.source,
        &oms_bridge::connector::Durable::bridge("e2e", "probe"),
        start,
        8,
        config.ordering,
    )
    .await
    .is_ok()
}
