//! The gateway server: accepts TLS connections itself (so that certificates reload and the peer's
//! identity is read once per connection), then serves the gRPC API over them.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use oms_pki::SpiffeId;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;
use tonic::{Request, Response, Status, Streaming};

use super::authz::{self, Denial, Operation};
use super::proto::{self, consume_frame, publish_frame, publish_reply};
use super::{
    BATCH_BYTES, DedupWindow, MAX_STREAM_BYTES, STREAM_CREDIT, batches, frames_of, from_wire, publish_credit, tls,
};
use crate::connector::{Ack, ConnectorError, Delivered, Durable, Sink, Source, Start};
use crate::metrics::GatewayMetrics;
use oms_bridge_config::{Backend, GatewayConfig, Ordering};

/// A TLS handshake must finish within this, or the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Ids remembered for deduplication, across all queues of the gateway.
const DEDUP_WINDOW: usize = 100_000;
/// After a shutdown signal, how long streams get to end before their connections are dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Who is on the other end of a connection, read from its certificate once at the handshake.
#[derive(Clone, Debug)]
pub struct Peer {
    pub identity: Result<SpiffeId, String>,
}

/// An accepted TLS connection with its peer; tonic hands `Peer` to each request.
pub struct PeerStream {
    inner: TlsStream<TcpStream>,
    peer: Peer,
}

impl Connected for PeerStream {
    type ConnectInfo = Peer;
    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves until `shutdown`; `ready` turns true once the TLS material is loaded and the port is
/// bound, not before: a peer (or a kubelet) told "ready" must find the port open.
pub async fn run(
    config: GatewayConfig,
    metrics: GatewayMetrics,
    ready: &oms_telemetry::admin::Readiness,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let acceptor = TlsAcceptor::from(Arc::new(tls::server_config(&config.tls)?));
    let listener = TcpListener::bind(config.listen).await?;
    tracing::info!(message = "Gateway listening.", address = %listener.local_addr()?, trust_domain = %config.trust_domain);
    ready.set(true);
    let (connections, incoming) = mpsc::channel::<Result<PeerStream, std::io::Error>>(64);
    tokio::spawn(accept(listener, acceptor, connections, metrics.clone(), shutdown.clone()));
    let service = GatewayService {
        config: Arc::new(config),
        dedup: Arc::new(Mutex::new(DedupWindow::new(DEDUP_WINDOW))),
        metrics,
        shutdown: shutdown.clone(),
    };
    let serving = tonic::transport::Server::builder()
        // Dead peers are noticed even on an idle stream.
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .initial_connection_window_size(super::CONNECTION_WINDOW)
        .initial_stream_window_size(super::STREAM_WINDOW)
        .add_service(proto::gateway_server::GatewayServer::new(service))
        .serve_with_incoming_shutdown(ReceiverStream::new(incoming), shutdown.cancelled());
    // Streams end themselves at shutdown (their peers reconnect elsewhere); a connection that
    // still lingers after the grace period is dropped.
    tokio::select! {
        result = serving => result?,
        () = async {
            shutdown.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => tracing::info!(message = "Connections still open after the grace period; closing them."),
    }
    Ok(())
}

async fn accept(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    connections: mpsc::Sender<Result<PeerStream, std::io::Error>>,
    metrics: GatewayMetrics,
    shutdown: CancellationToken,
) {
    loop {
        let (tcp, address) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(message = "Accepting a connection failed.", %error);
                    continue;
                }
            },
        };
        // Acks are small and the peer's sends wait on them: Nagle would hold each behind the last.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::warn!(message = "Cannot turn off Nagle's algorithm.", %address, %error);
        }
        let (acceptor, connections, metrics) = (acceptor.clone(), connections.clone(), metrics.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let identity = match stream.get_ref().1.peer_certificates().and_then(|c| c.first()) {
                        Some(cert) => oms_pki::identity_of(cert.as_ref()).map_err(|e| e.to_string()),
                        None => Err("no client certificate".to_owned()),
                    };
                    let _ = connections.send(Ok(PeerStream { inner: stream, peer: Peer { identity } })).await;
                }
                Ok(Err(error)) => {
                    metrics.handshake_failures.inc();
                    tracing::info!(message = "TLS handshake refused.", %address, %error);
                }
                Err(_) => {
                    metrics.handshake_failures.inc();
                    tracing::info!(message = "TLS handshake timed out.", %address);
                }
            }
        });
    }
}

struct GatewayService {
    config: Arc<GatewayConfig>,
    dedup: Arc<Mutex<DedupWindow>>,
    metrics: GatewayMetrics,
    shutdown: CancellationToken,
}

impl GatewayService {
    /// The peer's identity, or UNAUTHENTICATED for a certificate without a valid one.
    fn peer<T>(request: &Request<T>) -> Result<SpiffeId, Status> {
        match request.extensions().get::<Peer>().map(|p| p.identity.clone()) {
            Some(Ok(identity)) => Ok(identity),
            Some(Err(problem)) => Err(Status::unauthenticated(format!("certificate identity refused: {problem}"))),
            None => Err(Status::unauthenticated("no peer certificate")),
        }
    }

    fn authorize(&self, peer: &SpiffeId, queue: &proto::QueueRef, operation: Operation) -> Result<Backend, Status> {
        let mut trusted = vec![self.config.trust_domain.as_str()];
        trusted.extend(self.config.peer_trust_domains.iter().map(String::as_str));
        authz::authorize(peer, &trusted, &self.config.backends, &queue.access_point, &queue.queue, operation)
            .cloned()
            .map_err(|denial| match denial {
                    Denial::PermissionDenied(message) => {
                        self.metrics.denied.with_label_values(&[operation.as_str()]).inc();
                        tracing::warn!(message = "Denied.", peer = %peer, operation = operation.as_str(), reason = %message);
                        Status::permission_denied(message)
                    }
                    Denial::NotFound(message) => Status::not_found(message),
                    Denial::InvalidArgument(message) => Status::invalid_argument(message),
            })
    }
}

type ReplyStream<T> = Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send>>;

/// Bytes a reply takes in a batch: a rejected ack carries the broker's reason, so acks are not
/// all the same size.
fn encoded_len<T: prost::Message>(reply: &Result<T, Status>) -> usize {
    reply.as_ref().map_or(0, prost::Message::encoded_len)
}

/// What the replies channel of a stream sends, batched into frames by `frame`.
fn reply_frames<T: Send + 'static, F: Send + 'static>(
    replies: mpsc::Receiver<Result<T, Status>>,
    bytes: fn(&Result<T, Status>) -> usize,
    frame: fn(Vec<T>) -> F,
) -> impl futures::Stream<Item = Result<F, Status>> + Send {
    batches(replies, bytes, BATCH_BYTES).flat_map(move |batch| futures::stream::iter(frames_of(batch, frame)))
}

#[tonic::async_trait]
impl proto::gateway_server::Gateway for GatewayService {
    type PublishStream = ReplyStream<proto::PublishReply>;
    type ConsumeStream = ReplyStream<proto::ConsumeReply>;

    async fn publish(
        &self,
        request: Request<Streaming<proto::PublishFrame>>,
    ) -> Result<Response<Self::PublishStream>, Status> {
        let peer = Self::peer(&request)?;
        let mut frames = request.into_inner();
        let Some(proto::PublishFrame { frame: Some(publish_frame::Frame::Open(queue)), window }) =
            frames.message().await?
        else {
            return Err(Status::invalid_argument("the first frame must be `open`"));
        };
        let credit = publish_credit(window);
        let backend = self.authorize(&peer, &queue, Operation::Publish)?;
        let sink = Sink::connect(
            &backend.endpoint(&queue.queue, &peer.namespace),
            &Durable::gateway(&peer.namespace, &peer.name).flat(),
            credit,
        )
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
        let (acks, outgoing) = mpsc::channel(credit as usize + 1);
        let granted =
            proto::PublishReply { reply: Some(publish_reply::Reply::Credit(credit)), keeps_order: sink.keeps_order() };
        let acks_as_frames = |acks| proto::PublishReply {
            reply: Some(publish_reply::Reply::Acks(proto::PublishAcks { acks })),
            keeps_order: false,
        };
        let replies =
            futures::stream::once(async { Ok(granted) }).chain(reply_frames(outgoing, encoded_len, acks_as_frames));
        let key = format!("{}/{}", queue.access_point, queue.queue);
        tracing::info!(message = "Publish stream opened.", peer = %peer, queue = %key);
        let publishing = PublishStream { queue: key, credit, dedup: self.dedup.clone(), metrics: self.metrics.clone() };
        tokio::spawn(publishing.run(frames, sink, acks, self.shutdown.clone()));
        Ok(Response::new(Box::pin(replies)))
    }

    async fn consume(
        &self,
        request: Request<Streaming<proto::ConsumeFrame>>,
    ) -> Result<Response<Self::ConsumeStream>, Status> {
        let peer = Self::peer(&request)?;
        let mut frames = request.into_inner();
        let Some(proto::ConsumeFrame { frame: Some(consume_frame::Frame::Open(open)) }) = frames.message().await?
        else {
            return Err(Status::invalid_argument("the first frame must be `open`"));
        };
        let queue = open.queue.clone().ok_or_else(|| Status::invalid_argument("`open` names no queue"))?;
        let backend = self.authorize(&peer, &queue, Operation::Consume)?;
        if open.consumer.is_empty() {
            return Err(Status::invalid_argument("`open` names no consumer"));
        }
        let start = match open.start() {
            proto::Start::Earliest => Start::Earliest,
            proto::Start::Latest => Start::Latest,
            proto::Start::Timestamp => Start::Timestamp(open.start_timestamp_ms),
        };
        // The durable position belongs to the peer's tenant and its consumer name.
        let durable = Durable::gateway(&peer.namespace, &open.consumer);
        // One worker reads a queue through a gateway (replicas > 1 is refused there), so the stream
        // needs no exclusive consumer; one would only keep a reconnect out until the old one closed.
        let endpoint = backend.endpoint(&queue.queue, &peer.namespace);
        let source = Source::connect(&endpoint, &durable, start, STREAM_CREDIT, Ordering::None)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let (deliveries, outgoing) = mpsc::channel(STREAM_CREDIT as usize + 1);
        let replies = reply_frames(outgoing, encoded_len, |deliveries| proto::ConsumeReply { deliveries });
        tracing::info!(message = "Consume stream opened.", peer = %peer, queue = %queue.queue, consumer = %durable.flat());
        tokio::spawn(consume_stream(frames, source, deliveries, self.metrics.clone(), self.shutdown.clone()));
        Ok(Response::new(Box::pin(replies)))
    }
}

type Outcome = (u64, String, Result<Delivered, ConnectorError>);

/// One publish stream's queue and the gateway state it shares.
struct PublishStream {
    /// `<access point>/<queue>`, the dedup window's key.
    queue: String,
    /// Messages the peer may have in flight: the credit granted.
    credit: u32,
    dedup: Arc<Mutex<DedupWindow>>,
    metrics: GatewayMetrics,
}

impl PublishStream {
    fn remembered(&self, id: &str) -> bool {
        self.dedup.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(&self.queue, id)
    }

    fn remember(&self, id: &str) {
        self.dedup.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(&self.queue, id);
    }

    /// Writes each message to the local broker and answers with its outcome, in order. A broker
    /// failure or a shutdown ends the stream with UNAVAILABLE; the peer resends what was not acked.
    async fn run(
        self,
        mut frames: Streaming<proto::PublishFrame>,
        sink: Sink,
        acks: mpsc::Sender<Result<proto::PublishAck, Status>>,
        shutdown: CancellationToken,
    ) {
        let metrics = self.metrics.clone();
        metrics.streams.inc();
        let mut outcomes: FuturesOrdered<BoxFuture<'static, Outcome>> = FuturesOrdered::new();
        // Payload sizes of the messages in `outcomes`, in the same order, and their sum.
        let (mut sizes, mut bytes) = (std::collections::VecDeque::new(), 0usize);
        let mut sequence = 0u64;
        let mut closed = false;
        // Sent or answered since the sink last had the chance to get its last messages answered.
        let mut unflushed = false;
        let result: Result<(), Status> = 'stream: loop {
            if closed && outcomes.is_empty() {
                break Ok(());
            }
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break Err(Status::unavailable("the gateway is shutting down")),
                Some((sequence, id, outcome)) = outcomes.next(), if !outcomes.is_empty() => {
                    unflushed = true;
                    bytes -= sizes.pop_front().unwrap_or(0);
                    let (outcome, detail) = match outcome {
                        Ok(Delivered::Stored) => {
                            self.remember(&id);
                            metrics.published.inc();
                            (proto::Outcome::Stored, String::new())
                        }
                        Ok(Delivered::Duplicate) => {
                            self.remember(&id);
                            metrics.deduplicated.inc();
                            (proto::Outcome::Duplicate, String::new())
                        }
                        Err(ConnectorError::Rejected { message, .. }) => (proto::Outcome::Rejected, message),
                        Err(error) => break Err(Status::unavailable(error.to_string())),
                    };
                    let ack = proto::PublishAck { sequence, outcome: outcome.into(), detail };
                    if acks.send(Ok(ack)).await.is_err() {
                        break Ok(());
                    }
                }
                frame = frames.message(), if !closed => match frame {
                    Ok(Some(proto::PublishFrame { frame: Some(publish_frame::Frame::Messages(batch)), .. })) => {
                        for message in batch.messages {
                            sequence += 1;
                            if outcomes.len() >= self.credit as usize {
                                break 'stream Err(Status::resource_exhausted("more messages in flight than the credit granted"));
                            }
                            if bytes >= MAX_STREAM_BYTES {
                                break 'stream Err(Status::resource_exhausted(format!(
                                    "more than {MAX_STREAM_BYTES} bytes of payload in flight"
                                )));
                            }
                            let message = match from_wire(message) {
                                Ok(message) => message,
                                Err(problem) => break 'stream Err(Status::invalid_argument(problem)),
                            };
                            let id = message.id.clone();
                            sizes.push_back(message.payload.len());
                            bytes += message.payload.len();
                            if self.remembered(&id) {
                                outcomes.push_back(Box::pin(async move { (sequence, id, Ok(Delivered::Duplicate)) }));
                                continue;
                            }
                            unflushed = true;
                            match sink.send(&message).await {
                                Ok(confirm) => outcomes.push_back(Box::pin(async move { (sequence, id, confirm.await) })),
                                Err(error) => break 'stream Err(Status::unavailable(error.to_string())),
                            }
                        }
                    }
                    Ok(Some(_)) => break Err(Status::invalid_argument("only messages may follow `open`")),
                    // The peer finished sending: answer what is in flight, then end.
                    Ok(None) => closed = true,
                    Err(_) => break Ok(()),
                },
                // Last: only when no frame and no answer is ready.
                () = std::future::ready(()), if unflushed => {
                    unflushed = false;
                    tokio::select! {
                        () = shutdown.cancelled() => {}
                        () = sink.flush(outcomes.len() >= self.credit as usize) => {}
                    }
                }
            }
        };
        if let Err(status) = result {
            tracing::warn!(message = "Publish stream ended.", queue = %self.queue, %status);
            let _ = acks.send(Err(status)).await;
        }
        metrics.streams.dec();
    }
}

/// Sends a local queue's messages to the peer within the credit it granted, and acknowledges each
/// at the local broker once the peer acked it.
async fn consume_stream(
    mut frames: Streaming<proto::ConsumeFrame>,
    mut source: Source,
    deliveries: mpsc::Sender<Result<proto::Delivery, Status>>,
    metrics: GatewayMetrics,
    shutdown: CancellationToken,
) {
    metrics.streams.inc();
    let mut credit = 0u64;
    let mut delivered: std::collections::VecDeque<(u64, Ack)> = std::collections::VecDeque::new();
    let mut next_id = 1u64;
    let result: Result<(), Status> = 'stream: loop {
        tokio::select! {
            () = shutdown.cancelled() => break Err(Status::unavailable("the gateway is shutting down")),
            frame = frames.message() => match frame {
                Ok(Some(proto::ConsumeFrame { frame: Some(consume_frame::Frame::Credit(more)) })) => credit += u64::from(more),
                Ok(Some(proto::ConsumeFrame { frame: Some(consume_frame::Frame::Acks(acks)) })) => {
                    for id in acks.delivery_ids {
                        let Some((expected, ack)) = delivered.pop_front().filter(|(expected, _)| *expected == id) else {
                            break 'stream Err(Status::invalid_argument(format!("ack {id} is not the oldest delivery outstanding")));
                        };
                        if let Err(error) = source.ack(ack).await {
                            break 'stream Err(Status::unavailable(format!("acknowledging delivery {expected}: {error}")));
                        }
                        credit += 1;
                        metrics.consumed.inc();
                    }
                }
                Ok(Some(_)) => break Err(Status::invalid_argument("only credit and acks may follow `open`")),
                Ok(None) | Err(_) => break Ok(()),
            },
            received = source.next(), if credit > 0 => match received {
                Ok(received) => {
                    credit -= 1;
                    let delivery = proto::Delivery {
                        delivery_id: next_id,
                        message: Some((&received.message).into()),
                        gap: received.gap,
                    };
                    delivered.push_back((next_id, received.ack));
                    next_id += 1;
                    if deliveries.send(Ok(delivery)).await.is_err() {
                        break Ok(());
                    }
                }
                Err(error) => break Err(Status::unavailable(error.to_string())),
            },
        }
    };
    // The peer hears why first; the acks then go out while it reconnects.
    if let Err(status) = result {
        tracing::warn!(message = "Consume stream ended.", %status);
        let _ = deliveries.send(Err(status)).await;
    }
    source.flush().await;
    metrics.streams.dec();
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    #[tokio::test]
    async fn rejected_acks_with_long_reasons_stay_in_frames_of_a_batch_size() {
        // A run of rejections (oversized messages, say) each carrying the broker's reason: counted
        // as fixed-size acks they once made frames past the client's 4 MiB decode limit.
        let count = 20_000;
        let (acks, outgoing) = mpsc::channel(count);
        for sequence in 1..=count as u64 {
            let detail = "x".repeat(1024);
            let ack = proto::PublishAck { sequence, outcome: proto::Outcome::Rejected.into(), detail };
            acks.send(Ok(ack)).await.expect("open");
        }
        drop(acks);
        let frame = |acks| proto::PublishReply {
            reply: Some(publish_reply::Reply::Acks(proto::PublishAcks { acks })),
            keeps_order: false,
        };
        let frames: Vec<_> = reply_frames(outgoing, encoded_len, frame).collect().await;
        let sizes: Vec<usize> = frames.iter().map(|f| f.as_ref().expect("no error").encoded_len()).collect();
        let acked: usize = frames
            .iter()
            .map(|f| match &f.as_ref().expect("no error").reply {
                Some(publish_reply::Reply::Acks(acks)) => acks.acks.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(acked, count, "every ack is in a frame");
        let largest = sizes.iter().max().copied().unwrap_or(0);
        assert!(largest <= BATCH_BYTES + 16 * 1024, "largest frame {largest} bytes, batches are {BATCH_BYTES}");
    }
}
