//! Connectors: one source and one sink per protocol, behind two enums so that any source pairs
//! with any sink. A source hands out messages with an [`Ack`] that the pipeline returns only after
//! the sink confirmed; a sink's `send` enqueues and returns the confirmation to await.

mod amqp;
mod gateway;
mod grpc;
mod kafka;
mod mqtt;
mod nats;
mod rocketmq;

use futures::future::BoxFuture;

pub use kafka::{KafkaSource, TransactionalSink};

use crate::message::Message;
use oms_bridge_config::{Endpoint, Ordering, Protocol, StartFrom};

/// User and password from the endpoint's credentials directory (files `username` and `password`,
/// as the operator mounts a binding Secret), when it has one.
#[must_use]
pub fn credentials(endpoint: &Endpoint) -> Option<(String, String)> {
    Some((credential_file(endpoint, "username")?, credential_file(endpoint, "password")?))
}

/// A file of the endpoint's credentials directory, trimmed; `None` without the directory or file.
#[must_use]
pub fn credential_file(endpoint: &Endpoint, file: &str) -> Option<String> {
    let dir = endpoint.credentials_dir.as_ref()?;
    std::fs::read_to_string(dir.join(file)).ok().map(|v| v.trim().to_owned())
}

/// A failed connect to `endpoint`, naming its protocol and servers.
fn connect_error(endpoint: &Endpoint, message: impl std::fmt::Display) -> ConnectorError {
    let servers = endpoint.servers.iter().map(|(h, p)| format!("{h}:{p}")).collect::<Vec<_>>().join(",");
    ConnectorError::Connect { protocol: endpoint.protocol, servers, message: message.to_string() }
}

/// Whose durable position a source keeps (consumer group, durable consumer): a tenant
/// (namespace), what keeps it (`oms-bridge`, `oms-gw`) and its name there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Durable {
    pub tenant: String,
    pub kind: &'static str,
    pub name: String,
}

impl Durable {
    /// A bridge worker's: the position belongs to the Bridge object.
    #[must_use]
    pub fn bridge(namespace: &str, bridge: &str) -> Self {
        Self { tenant: namespace.to_owned(), kind: "oms-bridge", name: bridge.to_owned() }
    }

    /// A gateway's, for a peer of tenant `namespace` and the consumer name it asked for.
    #[must_use]
    pub fn gateway(namespace: &str, consumer: &str) -> Self {
        Self { tenant: namespace.to_owned(), kind: "oms-gw", name: consumer.to_owned() }
    }

    /// The name on NATS, AMQP and MQTT (NATS names take no dot), and a Kafka group's before groups
    /// carried their tenant's prefix: `<kind>-<tenant>-<name>`.
    #[must_use]
    pub fn flat(&self) -> String {
        format!("{}-{}-{}", self.kind, self.tenant, self.name)
    }

    /// The Kafka consumer group: `<tenant>.<kind>.<name>`, under the prefix a tenant's ACLs allow
    /// on a shared managed Kafka (no namespace has a dot, so no tenant's prefix is another's).
    #[must_use]
    pub fn kafka_group(&self) -> String {
        format!("{}.{}.{}", self.tenant, self.kind, self.name)
    }

    /// The Kafka transactional id of the worker on `host`: under the group's name, so the same
    /// ACL prefix covers it, and one per host, so that replicas never fence each other while a
    /// worker restarted on its host fences off its own earlier self.
    #[must_use]
    pub fn kafka_transactional_id(&self, host: &str) -> String {
        format!("{}.{host}", self.kafka_group())
    }
}

/// A message taken from a source, with what acknowledges it there.
pub struct Received {
    pub message: Message,
    pub ack: Ack,
    /// Messages the source lost right before this one, before they could be bridged.
    pub gap: u64,
    /// The source delivers this message again (an earlier delivery was not acknowledged: a worker
    /// that failed or was killed): the target may hold it already. Kafka and the gateway cannot
    /// tell, and say false.
    pub redelivered: bool,
}

/// How a source is told that a message is safe at the target.
pub enum Ack {
    /// Kafka: the message's partition and offset (librdkafka commits offset + 1 for it).
    Kafka { partition: i32, offset: i64 },
    /// JetStream: the message itself carries its ack subject.
    Nats(Box<nats::NatsAck>),
    /// AMQP: the delivery's acker (channel and delivery tag).
    Amqp(Box<lapin::Acker>),
    /// MQTT: the PUBLISH to acknowledge with a PUBACK.
    Mqtt(Box<rumqttc::Publish>),
    /// Through a gateway: the delivery id of the consume stream.
    Gateway(u64),
    /// RocketMQ: the message id and the receipt handle of this delivery.
    Rocketmq(Box<(String, String)>),
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("cannot connect to {protocol:?} at {servers}: {message}")]
    Connect { protocol: Protocol, servers: String, message: String },
    #[error("receiving failed: {0}")]
    Receive(String),
    #[error("sending failed: {0}")]
    Send(String),
    #[error("acknowledging at the source failed: {0}")]
    Ack(String),
    /// Another worker of the Bridge holds the source (an AMQP queue's exclusive consumer): this
    /// one stands by and tries again.
    #[error("standing by: {0}")]
    Standby(String),
    /// The Bridge's Lease cannot be read or written (no API server, no permission).
    #[error("the Bridge's Lease: {0}")]
    Lease(String),
    /// The target refused this one message for good (e.g. too large): retrying cannot help.
    #[error("the target refused the message ({reason}): {message}")]
    Rejected { reason: &'static str, message: String },
}

/// What the target did with a message it confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivered {
    Stored,
    /// The target already held a message with this id and dropped the repeat (JetStream).
    Duplicate,
}

/// The confirmation of one send: resolves when the target holds the message.
pub type Confirm = BoxFuture<'static, Result<Delivered, ConnectorError>>;

/// Where a new consumer starts, in the terms every source understands.
#[derive(Clone, Copy, Debug)]
pub enum Start {
    Earliest,
    Latest,
    /// Milliseconds since the epoch.
    Timestamp(i64),
}

impl Start {
    #[must_use]
    pub fn from_config(start: StartFrom, timestamp_ms: Option<i64>) -> Self {
        match (start, timestamp_ms) {
            (StartFrom::Latest, _) => Start::Latest,
            (StartFrom::Timestamp, Some(ms)) => Start::Timestamp(ms),
            _ => Start::Earliest,
        }
    }
}

pub enum Source {
    Kafka(kafka::KafkaSource),
    Amqp(Box<amqp::AmqpSource>),
    Mqtt(Box<mqtt::MqttSource>),
    // Boxed: the JetStream consumer stream is large; one source per worker, so the box is free.
    Nats(Box<nats::NatsSource>),
    Gateway(Box<gateway::GatewaySource>),
    Rocketmq(Box<rocketmq::RocketmqSource>),
}

impl Source {
    /// Connects to the source queue, keeping the position of `durable`. Where `ordering` is kept,
    /// one worker at a time takes the messages: an AMQP queue's exclusive consumer (the others get
    /// [`ConnectorError::Standby`]), a JetStream consumer's pin (the others wait in its group).
    pub async fn connect(
        endpoint: &Endpoint,
        durable: &Durable,
        start: Start,
        in_flight: u32,
        ordering: Ordering,
    ) -> Result<Self, ConnectorError> {
        let consumer = &durable.flat();
        let keep_order = ordering != Ordering::None;
        match endpoint.protocol {
            Protocol::Kafka => Ok(Source::Kafka(kafka::KafkaSource::connect(endpoint, durable, start, false)?)),
            Protocol::Nats => Ok(Source::Nats(Box::new(
                nats::NatsSource::connect(endpoint, consumer, start, in_flight, keep_order).await?,
            ))),
            Protocol::Amqp => {
                Ok(Source::Amqp(Box::new(amqp::AmqpSource::connect(endpoint, consumer, in_flight, keep_order).await?)))
            }
            Protocol::Mqtt => {
                Ok(Source::Mqtt(Box::new(mqtt::MqttSource::connect(endpoint, consumer, in_flight).await?)))
            }
            Protocol::Gateway => Ok(Source::Gateway(Box::new(
                gateway::GatewaySource::connect(endpoint, consumer, start, in_flight).await?,
            ))),
            Protocol::Rocketmq => Ok(Source::Rocketmq(Box::new(
                rocketmq::RocketmqSource::connect(endpoint, durable, start, in_flight).await?,
            ))),
        }
    }

    /// The next message; waits until one arrives.
    pub async fn next(&mut self) -> Result<Received, ConnectorError> {
        match self {
            Source::Kafka(source) => source.next().await,
            Source::Nats(source) => source.next().await,
            Source::Amqp(source) => source.next().await,
            Source::Mqtt(source) => source.next().await,
            Source::Gateway(source) => source.next().await,
            Source::Rocketmq(source) => source.next().await,
        }
    }

    /// Whether this worker is given messages: a Kafka group member with no partition is not, nor
    /// a JetStream worker that does not hold the consumer's pin (as of the last backlog read).
    #[must_use]
    pub fn takes_messages(&self) -> bool {
        match self {
            Source::Kafka(source) => source.assigned_partitions() > 0,
            Source::Nats(source) => source.takes_messages(),
            Source::Amqp(_) | Source::Mqtt(_) | Source::Gateway(_) | Source::Rocketmq(_) => true,
        }
    }

    /// Acknowledges a message the sink confirmed; messages are acknowledged in the order they
    /// were received (an AMQP source acks runs of them at once, each covering the earlier ones).
    pub async fn ack(&mut self, ack: Ack) -> Result<(), ConnectorError> {
        match (self, ack) {
            (Source::Kafka(source), Ack::Kafka { partition, offset }) => source.ack(partition, offset),
            (Source::Nats(source), Ack::Nats(message)) => source.ack(message).await,
            (Source::Amqp(source), Ack::Amqp(acker)) => {
                source.ack(*acker);
                Ok(())
            }
            (Source::Mqtt(source), Ack::Mqtt(publish)) => source.ack(&publish).await,
            (Source::Gateway(source), Ack::Gateway(id)) => source.ack(id).await,
            (Source::Rocketmq(source), Ack::Rocketmq(delivery)) => {
                let (message_id, receipt_handle) = *delivery;
                source.ack(message_id, receipt_handle).await
            }
            _ => Err(ConnectorError::Ack("an acknowledgement from another source".into())),
        }
    }

    /// Messages waiting at the source that the bridge has not taken yet, where the source can tell
    /// (MQTT cannot).
    pub async fn backlog(&mut self) -> Option<u64> {
        match self {
            Source::Kafka(source) => source.backlog(),
            Source::Nats(source) => source.backlog().await,
            Source::Amqp(source) => source.backlog().await,
            Source::Rocketmq(source) => source.backlog().await,
            // The gateway's queue is another cloud's; its lag is reported there.
            Source::Mqtt(_) | Source::Gateway(_) => None,
        }
    }

    /// Makes stored positions durable (and sends acks held back) before a shutdown.
    pub async fn flush(&mut self) {
        match self {
            Source::Kafka(source) => source.commit_now(),
            Source::Nats(source) => source.flush().await,
            Source::Amqp(source) => source.flush().await,
            Source::Rocketmq(source) => source.flush().await,
            Source::Mqtt(_) | Source::Gateway(_) => {}
        }
    }
}

pub enum Sink {
    Kafka(kafka::KafkaSink),
    Amqp(Box<amqp::AmqpSink>),
    Mqtt(Box<mqtt::MqttSink>),
    // Boxed like the source: one per worker.
    Nats(Box<nats::NatsSink>),
    Gateway(Box<gateway::GatewaySink>),
    Rocketmq(Box<rocketmq::RocketmqSink>),
}

impl Sink {
    /// Connects to the target queue; `client_id` names the connection where the protocol needs one,
    /// `window` is how many messages will be in flight (a gateway grants that much credit).
    pub async fn connect(endpoint: &Endpoint, client_id: &str, window: u32) -> Result<Self, ConnectorError> {
        match endpoint.protocol {
            Protocol::Kafka => Ok(Sink::Kafka(kafka::KafkaSink::connect(endpoint)?)),
            Protocol::Mqtt => Ok(Sink::Mqtt(Box::new(mqtt::MqttSink::connect(endpoint, &format!("{client_id}-out"))?))),
            Protocol::Nats => Ok(Sink::Nats(Box::new(nats::NatsSink::connect(endpoint, window).await?))),
            Protocol::Amqp => Ok(Sink::Amqp(Box::new(amqp::AmqpSink::connect(endpoint).await?))),
            Protocol::Gateway => Ok(Sink::Gateway(Box::new(gateway::GatewaySink::connect(endpoint, window).await?))),
            Protocol::Rocketmq => {
                Ok(Sink::Rocketmq(Box::new(rocketmq::RocketmqSink::connect(endpoint, client_id).await?)))
            }
        }
    }

    /// Whether what the target stores of each partition is always a prefix of what was sent to it,
    /// through any failure: then no message can land after a later one of its key, and the
    /// pipeline needs no lanes. Kafka's idempotent, gapless producer keeps it, JetStream's fast
    /// batches with gaps refused, and a gateway in front of either; the others may store a later message while an earlier one
    /// fails (a client that reconnects and sends on, a JetStream leader change, an AMQP nack).
    #[must_use]
    pub fn keeps_order(&self) -> bool {
        match self {
            Sink::Kafka(_) => true,
            Sink::Nats(sink) => sink.keeps_order(),
            // One stream that stops at the first failure, into a broker that may keep order.
            Sink::Gateway(sink) => sink.keeps_order(),
            // RocketMQ: unary sends, any of which may fail while a later one lands.
            Sink::Amqp(_) | Sink::Mqtt(_) | Sink::Rocketmq(_) => false,
        }
    }

    /// Gets what was sent confirmed where the target answers several messages at once (JetStream
    /// in fast batches), for when the caller would wait: its source has nothing ready, or its
    /// window is full (`window_full`). Without it the last messages could wait for good.
    pub async fn flush(&self, window_full: bool) {
        if let Sink::Nats(sink) = self {
            sink.flush(window_full).await;
        }
    }

    /// Enqueues `message`; the returned future resolves when the target confirmed it.
    pub async fn send(&self, message: &Message) -> Result<Confirm, ConnectorError> {
        match self {
            Sink::Kafka(sink) => Ok(sink.send(message)),
            Sink::Nats(sink) => sink.send(message).await,
            Sink::Amqp(sink) => sink.send(message).await,
            Sink::Mqtt(sink) => sink.send(message).await,
            Sink::Gateway(sink) => sink.send(message).await,
            Sink::Rocketmq(sink) => Ok(sink.send(message)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_groups_sit_under_the_tenants_prefix_and_other_names_stay_as_they_were() {
        let worker = Durable::bridge("acme", "orders-to-eu");
        assert_eq!(worker.kafka_group(), "acme.oms-bridge.orders-to-eu");
        assert_eq!(worker.flat(), "oms-bridge-acme-orders-to-eu", "the name earlier versions used everywhere");
        let gateway = Durable::gateway("acme", "oms-bridge-acme-orders-to-eu");
        assert_eq!(gateway.kafka_group(), "acme.oms-gw.oms-bridge-acme-orders-to-eu");
        assert!(!gateway.flat().contains('.'), "NATS consumer names take no dot");
        assert_eq!(worker.kafka_transactional_id("pod-1"), "acme.oms-bridge.orders-to-eu.pod-1");
    }
}
