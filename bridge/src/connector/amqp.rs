//! AMQP 0.9.1 (RabbitMQ) through lapin. Source: a consumer with manual acks and a prefetch equal to
//! the window. Sink: publishes through the default exchange to the queue, persistent, with
//! publisher confirms: a message counts as sent when the broker confirmed it.
//!
//! lapin writes to the socket from a thread of its own: awaiting each publish or ack until that
//! thread wrote it would make every message wait for two thread handoffs in turn. So a publish is
//! only queued when sent (its write is awaited with its confirmation), and acks are held back and
//! sent as one `multiple` ack for a run of them, as the Shovel does.

use std::task::Poll;

use futures::{FutureExt, StreamExt};
use lapin::Confirmation;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::uri::{AMQPAuthority, AMQPScheme, AMQPUri, AMQPUserInfo};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};

use super::{Ack, Confirm, ConnectorError, Delivered, Received};
use crate::message::{
    HeaderList, KEY_HEADER, MESSAGE_ID_HEADER, Message, MessageIds, PROVENANCE_HEADER, take_bridge_headers,
};
use oms_bridge_config::{Endpoint, Protocol};

/// Persistent delivery: RabbitMQ writes the message to disk before confirming it.
const PERSISTENT: u8 = 2;

/// How long a shutdown waits to write the acks held back.
const FLUSH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

async fn channel(endpoint: &Endpoint) -> Result<Channel, ConnectorError> {
    let (host, port) = endpoint.servers.first().cloned().unwrap_or_default();
    let (username, password) = read_credentials(endpoint);
    // The URI as parts: user, password and virtual host go in as they are, nothing to escape.
    let uri = AMQPUri {
        scheme: if endpoint.tls.is_some() { AMQPScheme::AMQPS } else { AMQPScheme::AMQP },
        authority: AMQPAuthority { userinfo: AMQPUserInfo { username, password }, host: host.clone(), port },
        vhost: read_vhost(endpoint),
        ..AMQPUri::default()
    };
    let fail = |message: String| ConnectorError::Connect {
        protocol: Protocol::Amqp,
        servers: format!("{host}:{port}"),
        message,
    };
    let lapin_fail = |e: lapin::Error| fail(e.to_string());
    let connection = match &endpoint.tls {
        None => Connection::connect_uri(uri, ConnectionProperties::default()).await.map_err(lapin_fail)?,
        Some(files) => {
            let runtime = lapin::runtime::default_runtime().map_err(lapin_fail)?;
            let config = tls_config(files).map_err(fail)?;
            Connection::connect_uri_with_config(uri, ConnectionProperties::default(), config, runtime)
                .await
                .map_err(lapin_fail)?
        }
    };
    connection.create_channel().await.map_err(lapin_fail)
}

/// amqps with the CA bundle of the files as the only trust (lapin's rustls has no roots of its
/// own) and their certificate, if any; read at each connect, so a renewed CA counts from the
/// next reconnect.
fn tls_config(files: &oms_bridge_config::TlsFiles) -> Result<OwnedTLSConfig, String> {
    let read = |path: &std::path::Path| std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()));
    let cert_chain =
        String::from_utf8(read(&files.ca_file)?).map_err(|e| format!("{}: {e}", files.ca_file.display()))?;
    let identity = match &files.identity {
        Some((cert, key)) => Some(OwnedIdentity::PKCS8 { pem: read(cert)?, key: read(key)? }),
        None => None,
    };
    Ok(OwnedTLSConfig { identity, cert_chain: Some(cert_chain) })
}

/// User and password from the credentials directory, else RabbitMQ's guest account.
fn read_credentials(endpoint: &Endpoint) -> (String, String) {
    super::credentials(endpoint).unwrap_or_else(|| ("guest".into(), "guest".into()))
}

/// The virtual host from the credentials directory's `vhost` file (a tenant's on a managed
/// broker), else `/`.
fn read_vhost(endpoint: &Endpoint) -> String {
    super::credential_file(endpoint, "vhost").filter(|v| !v.is_empty()).unwrap_or_else(|| "/".to_owned())
}

pub struct AmqpSource {
    consumer: Consumer,
    queue: String,
    /// The channel the consumer lives on; also asked for the queue's depth.
    channel: Channel,
    /// Delivery tags count from 1 on every channel: ids carry this channel's epoch.
    ids: MessageIds,
    /// The latest delivery acknowledged and not yet told to the broker. The pipeline acknowledges
    /// in delivery order and only what the target confirmed, so one `multiple` ack of it covers
    /// every earlier delivery of this channel. Sent before waiting for a delivery and at flush;
    /// lost on kill -9, which only brings those messages again.
    unacked: Option<lapin::Acker>,
    /// The `multiple` ack written last, until the broker has it. One at a time: lapin writes
    /// concurrent acks in either order, and a multiple ack of an older tag after a newer one names
    /// a tag the broker no longer knows, which closes the channel.
    acking: Option<AckWrite>,
}

type AckWrite = futures::future::BoxFuture<'static, lapin::Result<bool>>;

impl AmqpSource {
    /// An `exclusive` consumer is the queue's only one: while another worker holds the queue,
    /// RabbitMQ refuses it (ACCESS_REFUSED) and this is [`ConnectorError::Standby`]. When the holder's
    /// connection ends, RabbitMQ puts its unacknowledged messages back at the head of the queue, so
    /// the next worker takes them first and the queue's order holds.
    pub async fn connect(
        endpoint: &Endpoint,
        consumer_tag: &str,
        in_flight: u32,
        exclusive: bool,
    ) -> Result<Self, ConnectorError> {
        let channel = channel(endpoint).await?;
        let fail = |e: lapin::Error| ConnectorError::Connect {
            protocol: Protocol::Amqp,
            servers: format!("{:?}", endpoint.servers),
            message: e.to_string(),
        };
        // The window: RabbitMQ sends no more unacknowledged messages than this.
        let prefetch = u16::try_from(in_flight).unwrap_or(u16::MAX);
        channel.basic_qos(prefetch, BasicQosOptions::default()).await.map_err(fail)?;
        let options = BasicConsumeOptions { exclusive, ..BasicConsumeOptions::default() };
        let consuming =
            channel.basic_consume(endpoint.queue.as_str().into(), consumer_tag.into(), options, FieldTable::default());
        let consumer = match consuming.await {
            Err(error) if exclusive && is_access_refused(&error) => {
                return Err(ConnectorError::Standby(format!(
                    "another consumer holds queue {} (exclusive; {error})",
                    endpoint.queue
                )));
            }
            other => other.map_err(fail)?,
        };
        let ids = MessageIds::per_delivery(endpoint.access_point.as_deref(), &endpoint.queue);
        Ok(Self { consumer, queue: endpoint.queue.clone(), channel, ids, unacked: None, acking: None })
    }

    /// Messages ready in the queue (not counting those delivered to us and not yet acked).
    pub async fn backlog(&self) -> Option<u64> {
        let passive = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
        let queue =
            self.channel.queue_declare(self.queue.as_str().into(), passive, FieldTable::default()).await.ok()?;
        Some(u64::from(queue.message_count()))
    }

    /// Writes the acks held back once the previous write is done; not awaited.
    fn send_acks(&mut self) -> Result<(), ConnectorError> {
        if let Some(acking) = self.acking.as_mut() {
            match acking.now_or_never() {
                None => return Ok(()),
                Some(result) => {
                    self.acking = None;
                    result.map_err(|e| ConnectorError::Ack(e.to_string()))?;
                }
            }
        }
        if let Some(acker) = self.unacked.take() {
            self.acking = Some(Box::pin(async move { acker.ack(BasicAckOptions { multiple: true }).await }));
            // The first poll queues the ack for lapin's writer; it may finish at once.
            return self.send_acks();
        }
        Ok(())
    }

    pub async fn next(&mut self) -> Result<Received, ConnectorError> {
        // The broker sends no more than the prefetch unacknowledged: the acks held back go out
        // while waiting for a delivery, each as soon as the one before it was written. Not
        // awaited on their own: a wait for lapin's writer per ack would stall every delivery, and
        // a lost ack only brings its messages again.
        let mut delivery = loop {
            self.send_acks()?;
            let (consumer, acking) = (&mut self.consumer, &mut self.acking);
            let written = async {
                match acking.as_mut() {
                    Some(write) => write.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                delivery = consumer.next() => break delivery,
                result = written => {
                    self.acking = None;
                    result.map_err(|e| ConnectorError::Ack(e.to_string()))?;
                }
            }
        }
        .ok_or_else(|| ConnectorError::Receive("the consumer was cancelled".into()))?
        .map_err(|e| ConnectorError::Receive(e.to_string()))?;
        let properties = &delivery.properties;
        let mut headers: HeaderList = Vec::new();
        if let Some(table) = properties.headers() {
            for (name, value) in table.inner() {
                if let Some(bytes) = header_bytes(value) {
                    headers.push((name.to_string(), bytes));
                }
            }
        }
        let (own, headers) = take_bridge_headers(headers);
        let id = own.id.or_else(|| properties.message_id().as_ref().map(ToString::to_string));
        let message = Message {
            key: own.key,
            payload: std::mem::take(&mut delivery.data),
            headers,
            timestamp_ms: properties.timestamp().and_then(|s| i64::try_from(s).ok()).map(|s| s * 1000),
            id: self.ids.id(id, 0, delivery.delivery_tag),
            provenance: own.provenance,
        };
        // A queue hands out what it holds; what it dropped is not visible to a consumer.
        let redelivered = delivery.redelivered;
        Ok(Received { message, ack: Ack::Amqp(Box::new(delivery.acker)), gap: 0, redelivered })
    }

    /// Acknowledges a delivery, and with it every earlier one, when acks are next sent: the caller
    /// acknowledges in delivery order, and only what the target confirmed.
    pub fn ack(&mut self, acker: lapin::Acker) {
        self.unacked = Some(acker);
    }

    /// Writes the acks held back before a shutdown, so that confirmed messages do not come again.
    pub async fn flush(&mut self) {
        let (acking, held) = (self.acking.take(), self.unacked.take());
        let write = async move {
            if let Some(acking) = acking {
                acking.await?;
            }
            if let Some(acker) = held {
                acker.ack(BasicAckOptions { multiple: true }).await?;
            }
            Ok::<_, lapin::Error>(())
        };
        let unsent = match tokio::time::timeout(FLUSH_DEADLINE, write).await {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(error.to_string()),
            Err(_) => Some(format!("not written within {FLUSH_DEADLINE:?}")),
        };
        if let Some(unsent) = unsent {
            tracing::warn!(message = "Acks not written before shutdown; their messages come again.", error = %unsent);
        }
    }
}

/// RabbitMQ's answer to a consumer that cannot have the queue (403: an exclusive consumer exists,
/// or other consumers exist when this one asks to be exclusive).
fn is_access_refused(error: &lapin::Error) -> bool {
    const ACCESS_REFUSED: u16 = 403;
    matches!(error.kind(), lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == ACCESS_REFUSED)
}

/// A header value as bytes; AMQP's typed values are written as text.
fn header_bytes(value: &AMQPValue) -> Option<Vec<u8>> {
    match value {
        AMQPValue::LongString(s) => Some(s.as_bytes().to_vec()),
        AMQPValue::ShortString(s) => Some(s.as_str().as_bytes().to_vec()),
        AMQPValue::ByteArray(b) => Some(b.as_slice().to_vec()),
        AMQPValue::Boolean(b) => Some(b.to_string().into_bytes()),
        AMQPValue::LongLongInt(n) => Some(n.to_string().into_bytes()),
        AMQPValue::LongInt(n) => Some(n.to_string().into_bytes()),
        AMQPValue::ShortInt(n) => Some(n.to_string().into_bytes()),
        _ => None,
    }
}

pub struct AmqpSink {
    channel: Channel,
    queue: String,
}

impl AmqpSink {
    pub async fn connect(endpoint: &Endpoint) -> Result<Self, ConnectorError> {
        let channel = channel(endpoint).await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await.map_err(|e| ConnectorError::Connect {
            protocol: Protocol::Amqp,
            servers: format!("{:?}", endpoint.servers),
            message: e.to_string(),
        })?;
        Ok(Self { channel, queue: endpoint.queue.clone() })
    }

    pub async fn send(&self, message: &Message) -> Result<Confirm, ConnectorError> {
        let mut table = std::collections::BTreeMap::new();
        table
            .insert(ShortString::from(MESSAGE_ID_HEADER), AMQPValue::LongString(LongString::from(message.id.as_str())));
        if let Some(key) = &message.key {
            table.insert(ShortString::from(KEY_HEADER), AMQPValue::LongString(LongString::from(key.clone())));
        }
        if !message.provenance.is_empty() {
            let hops = message.provenance.join(",");
            table.insert(ShortString::from(PROVENANCE_HEADER), AMQPValue::LongString(LongString::from(hops)));
        }
        for (name, value) in &message.headers {
            table.insert(ShortString::from(name.as_str()), AMQPValue::LongString(LongString::from(value.clone())));
        }
        let mut properties = BasicProperties::default()
            .with_headers(FieldTable::from(table))
            .with_message_id(ShortString::from(message.id.as_str()))
            .with_delivery_mode(PERSISTENT);
        if let Some(ms) = message.timestamp_ms.and_then(|ms| u64::try_from(ms / 1000).ok()) {
            properties = properties.with_timestamp(ms);
        }
        let (channel, queue, payload) = (self.channel.clone(), self.queue.clone(), message.payload.clone());
        let mut publish = Box::pin(async move {
            channel.basic_publish("".into(), queue.into(), BasicPublishOptions::default(), &payload, properties).await
        });
        // The first poll queues the frames and takes the confirm's number, so messages go out in
        // the order they were sent; the write itself is awaited with the confirmation, not here.
        let queued = match futures::poll!(&mut publish) {
            Poll::Ready(Err(error)) => return Err(ConnectorError::Send(error.to_string())),
            queued => queued,
        };
        Ok(Box::pin(async move {
            let confirm = match queued {
                Poll::Ready(queued) => queued,
                Poll::Pending => publish.await,
            };
            match confirm.map_err(|e| ConnectorError::Send(e.to_string()))?.await {
                Ok(Confirmation::Ack(_)) => Ok(Delivered::Stored),
                Ok(other) => Err(ConnectorError::Send(format!("the broker did not confirm: {other:?}"))),
                Err(error) => Err(ConnectorError::Send(error.to_string())),
            }
        }))
    }
}
