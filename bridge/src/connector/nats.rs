//! NATS JetStream. Source: a durable pull consumer with explicit acks on the stream named by the
//! queue. Sink: publishes to the stream's subject with `Nats-Msg-Id` set to the message id, so
//! JetStream drops repeats inside its duplicate window.
//!
//! Gaps: stream sequences run on from the consumer's ack floor. When a message arrives past the
//! next expected sequence and the stream now starts past it too, limits or a purge removed
//! messages before they were bridged: reported, never silent. (A redelivery arriving later, or
//! another subject's messages, make sequences jump without a gap; the stream's first sequence
//! tells the two apart.)

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer};
use futures::StreamExt;

use super::{Confirm, ConnectorError, Delivered, Received, Start};
use crate::message::{
    KEY_HEADER, MESSAGE_ID_HEADER, Message, MessageIds, NATS_MSG_ID_HEADER, PROVENANCE_HEADER, is_text_header_value,
    take_bridge_headers,
};
use oms_bridge_config::{Endpoint, Protocol};

/// Messages per pull request at least, and the idle heartbeat of a pull (the client's defaults).
const PULL_BATCH: usize = 200;
const PULL_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(15);

/// How long a shutdown waits to write queued acks to the connection.
const FLUSH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

async fn client(endpoint: &Endpoint) -> Result<async_nats::Client, ConnectorError> {
    let servers: Vec<String> = endpoint.servers.iter().map(|(h, p)| format!("nats://{h}:{p}")).collect();
    let options = match super::credentials(endpoint) {
        Some((user, password)) => async_nats::ConnectOptions::with_user_and_password(user, password),
        None => async_nats::ConnectOptions::new(),
    };
    options.connect(servers.clone()).await.map_err(|e| ConnectorError::Connect {
        protocol: Protocol::Nats,
        servers: servers.join(","),
        message: e.to_string(),
    })
}

pub struct NatsSource {
    /// Kept to flush the acks it queued before a shutdown.
    client: async_nats::Client,
    messages: consumer::pull::Stream,
    consumer: consumer::PullConsumer,
    stream: jetstream::stream::Stream,
    /// Stream sequences: the same for every delivery of a message.
    ids: MessageIds,
    /// Highest stream sequence accounted for: acked before this run, received, or reported lost.
    seen_through: Option<u64>,
}

impl NatsSource {
    pub async fn connect(
        endpoint: &Endpoint,
        durable: &str,
        start: Start,
        in_flight: u32,
    ) -> Result<Self, ConnectorError> {
        let connection = client(endpoint).await?;
        let js = jetstream::new(connection.clone());
        let fail = |e: &dyn std::fmt::Display| ConnectorError::Connect {
            protocol: Protocol::Nats,
            servers: format!("{:?}", endpoint.servers),
            message: e.to_string(),
        };
        let stream = js.get_stream(&endpoint.queue).await.map_err(|e| fail(&e))?;
        let deliver_policy = match start {
            Start::Earliest => consumer::DeliverPolicy::All,
            Start::Latest => consumer::DeliverPolicy::New,
            Start::Timestamp(ms) => consumer::DeliverPolicy::ByStartTime {
                start_time: time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                    .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
            },
        };
        let durable_name = durable.replace(['.', '*', '>', '/'], "_");
        let consumer = stream
            .get_or_create_consumer(
                &durable_name,
                consumer::pull::Config {
                    durable_name: Some(durable_name.clone()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    deliver_policy,
                    // Unacknowledged messages the server lets us hold: the bridge's window.
                    max_ack_pending: i64::from(in_flight),
                    ..consumer::pull::Config::default()
                },
            )
            .await
            .map_err(|e| fail(&e))?;
        // A consumer with progress continues from its ack floor; a new one has nothing to lose yet.
        let floor = consumer.cached_info().ack_floor.stream_sequence;
        // One pull request asks for as many messages as the window may hold (the client's default
        // is 200): fewer requests per message, and the server can fill the window at once.
        let messages = consumer
            .stream()
            .max_messages_per_batch(usize::try_from(in_flight).unwrap_or(PULL_BATCH).max(PULL_BATCH))
            .heartbeat(PULL_HEARTBEAT)
            .messages()
            .await
            .map_err(|e| fail(&e))?;
        Ok(Self {
            client: connection,
            messages,
            consumer,
            stream,
            ids: MessageIds::positional(endpoint.access_point.as_deref(), &endpoint.queue),
            seen_through: (floor > 0).then_some(floor),
        })
    }

    /// Writes the acks still queued in the client to the connection: acks do not wait for the
    /// server, and ones left behind at exit would bring their messages again after the ack wait.
    pub async fn flush(&self) {
        let unsent = match tokio::time::timeout(FLUSH_DEADLINE, self.client.flush()).await {
            Ok(Ok(())) => return,
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("not written within {FLUSH_DEADLINE:?}"),
        };
        tracing::warn!(message = "Acks not flushed before shutdown; their messages come again.", error = %unsent);
    }

    /// Messages removed from the stream before they were bridged, judged at a message with
    /// `sequence`.
    async fn gap_before(&mut self, sequence: u64) -> u64 {
        let Some(seen) = self.seen_through else {
            self.seen_through = Some(sequence);
            return 0;
        };
        if sequence <= seen + 1 {
            self.seen_through = Some(seen.max(sequence));
            return 0;
        }
        let first = match self.stream.get_info().await {
            Ok(info) => info.state.first_sequence,
            Err(error) => {
                tracing::warn!(message = "Cannot read the stream's first sequence to check for a gap.", %error);
                0
            }
        };
        self.seen_through = Some(sequence);
        first.min(sequence).saturating_sub(seen + 1)
    }

    /// Messages in the stream the consumer has not handed out yet.
    pub async fn backlog(&self) -> Option<u64> {
        self.consumer.get_info().await.ok().map(|info| info.num_pending)
    }

    pub async fn next(&mut self) -> Result<Received, ConnectorError> {
        let message = self
            .messages
            .next()
            .await
            .ok_or_else(|| ConnectorError::Receive("the consumer stream ended".into()))?
            .map_err(|e| ConnectorError::Receive(e.to_string()))?;
        let info = message.info().map_err(|e| ConnectorError::Receive(e.to_string()))?;
        let (sequence, redelivered) = (info.stream_sequence, info.delivered > 1);
        let timestamp_ms = i64::try_from(info.published.unix_timestamp_nanos() / 1_000_000).ok();
        let mut headers = Vec::new();
        if let Some(map) = &message.headers {
            for (name, values) in map.iter() {
                for value in values {
                    headers.push((name.to_string(), value.as_str().as_bytes().to_vec()));
                }
            }
        }
        let (own, headers) = take_bridge_headers(headers);
        let converted = Message {
            key: own.key,
            payload: message.payload.to_vec(),
            headers,
            timestamp_ms,
            id: self.ids.id(own.id, 0, sequence),
            provenance: own.provenance,
        };
        let gap = self.gap_before(sequence).await;
        Ok(Received { message: converted, ack: super::Ack::Nats(Box::new(message)), gap, redelivered })
    }
}

/// Acks at the server without waiting for its reply: a lost ack only means the message comes
/// again after the ack wait (a repeat the window bounds and JetStream targets drop), never a loss,
/// while waiting for a round trip per message would cap a source at a few hundred a second.
pub async fn ack(message: &jetstream::Message) -> Result<(), ConnectorError> {
    message.ack().await.map_err(|e| ConnectorError::Ack(e.to_string()))
}

pub struct NatsSink {
    jetstream: jetstream::Context,
    subject: String,
}

impl NatsSink {
    pub async fn connect(endpoint: &Endpoint) -> Result<Self, ConnectorError> {
        Ok(Self { jetstream: jetstream::new(client(endpoint).await?), subject: endpoint.queue.clone() })
    }

    pub async fn send(&self, message: &Message) -> Result<Confirm, ConnectorError> {
        let mut headers = HeaderMap::new();
        headers.insert(MESSAGE_ID_HEADER, message.id.as_str());
        headers.insert(NATS_MSG_ID_HEADER, message.id.as_str());
        if !message.provenance.is_empty() {
            headers.insert(PROVENANCE_HEADER, message.provenance.join(",").as_str());
        }
        if let Some(key) = &message.key
            && is_text_header_value(key)
        {
            headers.insert(KEY_HEADER, String::from_utf8_lossy(key).as_ref());
        }
        for (name, value) in &message.headers {
            // NATS headers are text; binary values cannot travel (see bridge/README.md).
            if is_text_header_value(value) {
                headers.append(name.as_str(), String::from_utf8_lossy(value).as_ref());
            }
        }
        let pending = match self
            .jetstream
            .publish_with_headers(self.subject.clone(), headers, message.payload.clone().into())
            .await
        {
            Ok(pending) => pending,
            Err(error) => {
                let error = classify(&error);
                return Ok(Box::pin(async move { Err(error) }));
            }
        };
        Ok(Box::pin(async move {
            match pending.await {
                // Inside JetStream's duplicate window the stream already holds this id.
                Ok(ack) if ack.duplicate => Ok(Delivered::Duplicate),
                Ok(_) => Ok(Delivered::Stored),
                Err(error) => Err(classify(&error)),
            }
        }))
    }
}

/// A publish error as the pipeline needs it: a message too large for the server or the stream
/// is refused for good; anything else may pass on a retry.
fn classify(error: &jetstream::context::PublishError) -> ConnectorError {
    use std::error::Error as _;
    let too_large = error.kind() == jetstream::context::PublishErrorKind::MaxPayloadExceeded
        || error
            .source()
            .and_then(|source| source.downcast_ref::<jetstream::Error>())
            .is_some_and(|e| e.error_code() == jetstream::ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM);
    if too_large {
        ConnectorError::Rejected { reason: "too_large", message: error.to_string() }
    } else {
        ConnectorError::Send(error.to_string())
    }
}
