//! The worker's ends through another cloud's gateway (`proto/gateway.proto`), over mTLS with our
//! bridge certificate. Sink: a publish stream; a message counts as sent when the gateway acked it
//! (after its local broker confirmed). Source: a consume stream with a durable consumer on the
//! gateway's side; an ack goes back once our target confirmed.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tonic::Streaming;
use tonic::transport::Channel;

use super::{Ack, Confirm, ConnectorError, Delivered, Received, Start, connect_error};
use crate::gateway::proto::gateway_client::GatewayClient;
use crate::gateway::proto::{self, consume_frame, publish_frame, publish_reply};
use crate::gateway::{BATCH_BYTES, CONNECTION_WINDOW, STREAM_CREDIT, STREAM_WINDOW, batches, from_wire, tls};
use crate::message::Message;
use oms_bridge_config::Endpoint;

/// The queue behind the gateway: the access point it names and the queue.
fn queue_ref(endpoint: &Endpoint) -> proto::QueueRef {
    proto::QueueRef { access_point: endpoint.access_point.clone().unwrap_or_default(), queue: endpoint.queue.clone() }
}

/// An HTTP/2 channel over our own TLS (our certificate required) to the first server; the
/// gateway's certificate must match the host name dialled.
async fn channel(endpoint: &Endpoint) -> Result<Channel, ConnectorError> {
    let files = endpoint.tls.as_ref().ok_or_else(|| connect_error(endpoint, "no tls files for the gateway"))?;
    let config = tls::client_config(files).map_err(|e| connect_error(endpoint, e))?;
    let settings = |grpc: tonic::transport::Endpoint| {
        grpc.connect_timeout(Duration::from_secs(10))
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(20))
            .initial_connection_window_size(CONNECTION_WINDOW)
            .initial_stream_window_size(STREAM_WINDOW)
    };
    super::grpc::channel(endpoint, settings, Some(config)).await
}

type Waiter = oneshot::Sender<Result<Delivered, ConnectorError>>;

pub struct GatewaySink {
    /// Messages for the stream, which sends what it holds in batches.
    messages: mpsc::Sender<proto::Message>,
    /// Messages the gateway still lets us send.
    credit: Arc<Semaphore>,
    /// Sends awaiting their ack, in send order (the gateway acks in order).
    waiting: Arc<Mutex<VecDeque<Waiter>>>,
    /// The gateway's broker keeps order through failures: then so does this stream, which stops
    /// at the first failure (see `Sink::keeps_order`).
    keeps_order: bool,
}

impl GatewaySink {
    /// Opens a publish stream asking for credit for `window` messages (the worker's window).
    pub async fn connect(endpoint: &Endpoint, window: u32) -> Result<Self, ConnectorError> {
        let mut client = GatewayClient::new(channel(endpoint).await?);
        let (messages, outgoing) = mpsc::channel(STREAM_CREDIT as usize);
        let open = proto::PublishFrame { frame: Some(publish_frame::Frame::Open(queue_ref(endpoint))), window };
        let batched = batches(outgoing, prost::Message::encoded_len, BATCH_BYTES).map(|messages| proto::PublishFrame {
            frame: Some(publish_frame::Frame::Messages(proto::Messages { messages })),
            window: 0,
        });
        // The gateway answers only after it authorized us and reached its broker.
        let refused =
            |status: tonic::Status| connect_error(endpoint, format!("{:?}: {}", status.code(), status.message()));
        let mut replies =
            client.publish(futures::stream::iter([open]).chain(batched)).await.map_err(refused)?.into_inner();
        // The first reply grants credit and says whether the gateway's broker keeps order.
        let Some(proto::PublishReply { reply: Some(publish_reply::Reply::Credit(granted)), keeps_order }) =
            replies.message().await.map_err(refused)?
        else {
            return Err(connect_error(endpoint, "the gateway did not grant credit first"));
        };
        let credit = Arc::new(Semaphore::new(granted as usize));
        let waiting = Arc::new(Mutex::new(VecDeque::new()));
        tokio::spawn(read_acks(replies, credit.clone(), waiting.clone()));
        Ok(Self { messages, credit, waiting, keeps_order })
    }

    pub fn keeps_order(&self) -> bool {
        self.keeps_order
    }

    pub async fn send(&self, message: &Message) -> Result<Confirm, ConnectorError> {
        let ended = || ConnectorError::Send("the gateway stream ended".into());
        self.credit.acquire().await.map_err(|_| ended())?.forget();
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push_back(tx);
        self.messages.send(message.into()).await.map_err(|_| ended())?;
        Ok(Box::pin(async move { rx.await.unwrap_or_else(|_| Err(ended())) }))
    }
}

/// Turns the gateway's replies into credit and confirmations; when the stream ends, every send
/// still waiting fails (the worker reconnects and the source resends).
async fn read_acks(
    mut replies: Streaming<proto::PublishReply>,
    credit: Arc<Semaphore>,
    waiting: Arc<Mutex<VecDeque<Waiter>>>,
) {
    let ended = loop {
        match replies.message().await {
            Ok(Some(proto::PublishReply { reply: Some(publish_reply::Reply::Credit(more)), .. })) => {
                credit.add_permits(more as usize);
            }
            Ok(Some(proto::PublishReply { reply: Some(publish_reply::Reply::Acks(acks)), .. })) => {
                let count = acks.acks.len();
                for ack in acks.acks {
                    let waiter = waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop_front();
                    let outcome = match ack.outcome() {
                        proto::Outcome::Stored => Ok(Delivered::Stored),
                        proto::Outcome::Duplicate => Ok(Delivered::Duplicate),
                        proto::Outcome::Rejected => {
                            Err(ConnectorError::Rejected { reason: "rejected_by_gateway", message: ack.detail })
                        }
                    };
                    if let Some(waiter) = waiter {
                        let _ = waiter.send(outcome);
                    }
                }
                credit.add_permits(count);
            }
            // A reply this client does not know (a gateway of another protocol version): waiting
            // for acks that never come would stall the stream without a word.
            Ok(Some(_)) => break "the gateway sent a reply this worker does not know".to_owned(),
            Ok(None) => break "the gateway closed the stream".to_owned(),
            Err(status) => break format!("{:?}: {}", status.code(), status.message()),
        }
    };
    credit.close();
    let waiters: Vec<Waiter> = waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner).drain(..).collect();
    for waiter in waiters {
        let _ = waiter.send(Err(ConnectorError::Send(ended.clone())));
    }
}

pub struct GatewaySource {
    /// Delivery ids to ack, which the stream sends in batches.
    acks: mpsc::Sender<u64>,
    replies: Streaming<proto::ConsumeReply>,
    /// Deliveries of the last reply not yet taken.
    deliveries: VecDeque<proto::Delivery>,
}

impl GatewaySource {
    pub async fn connect(
        endpoint: &Endpoint,
        consumer: &str,
        start: Start,
        in_flight: u32,
    ) -> Result<Self, ConnectorError> {
        let mut client = GatewayClient::new(channel(endpoint).await?);
        let (acks, outgoing) = mpsc::channel(STREAM_CREDIT as usize);
        let (start, start_timestamp_ms) = match start {
            Start::Earliest => (proto::Start::Earliest, 0),
            Start::Latest => (proto::Start::Latest, 0),
            Start::Timestamp(ms) => (proto::Start::Timestamp, ms),
        };
        let open = proto::OpenConsumer {
            queue: Some(queue_ref(endpoint)),
            consumer: consumer.to_owned(),
            start: start.into(),
            start_timestamp_ms,
        };
        let first = [consume_frame::Frame::Open(open), consume_frame::Frame::Credit(in_flight)]
            .map(|frame| proto::ConsumeFrame { frame: Some(frame) });
        let batched = batches(outgoing, |_| std::mem::size_of::<u64>(), BATCH_BYTES).map(|delivery_ids| {
            proto::ConsumeFrame { frame: Some(consume_frame::Frame::Acks(proto::DeliveryAcks { delivery_ids })) }
        });
        let replies = client
            .consume(futures::stream::iter(first).chain(batched))
            .await
            .map_err(|status| connect_error(endpoint, format!("{:?}: {}", status.code(), status.message())))?
            .into_inner();
        Ok(Self { acks, replies, deliveries: VecDeque::new() })
    }

    pub async fn next(&mut self) -> Result<Received, ConnectorError> {
        while self.deliveries.is_empty() {
            let reply = self
                .replies
                .message()
                .await
                .map_err(|status| ConnectorError::Receive(format!("{:?}: {}", status.code(), status.message())))?
                .ok_or_else(|| ConnectorError::Receive("the gateway closed the stream".into()))?;
            // An empty reply is one of another protocol version; skipping it would stall the
            // stream, the server waiting for acks of deliveries this worker never saw.
            if reply.deliveries.is_empty() {
                return Err(ConnectorError::Receive("the gateway sent a reply without deliveries".into()));
            }
            self.deliveries.extend(reply.deliveries);
        }
        let delivery =
            self.deliveries.pop_front().ok_or_else(|| ConnectorError::Receive("an empty delivery".into()))?;
        let message = delivery.message.ok_or_else(|| ConnectorError::Receive("a delivery without a message".into()))?;
        let message = from_wire(message).map_err(ConnectorError::Receive)?;
        Ok(Received { message, ack: Ack::Gateway(delivery.delivery_id), gap: delivery.gap, redelivered: false })
    }

    pub async fn ack(&self, delivery_id: u64) -> Result<(), ConnectorError> {
        self.acks.send(delivery_id).await.map_err(|_| ConnectorError::Ack("the gateway stream ended".into()))
    }
}
