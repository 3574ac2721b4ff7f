//! The load: one producer client and one consumer client per protocol, the same ones for a raw
//! run and for every replicator, so that only the replicator differs between runs.
//!
//! A payload starts with its send time (nanoseconds since the epoch) and a sequence number whose
//! top bit marks warm-up messages; the rest is random filler up to the workload's message size
//! (random, so that no compression flatters a run). The consumer reads both back: the end-to-end
//! latency is its receive time minus the send time. At a fixed rate the send time is the one the
//! schedule gave the message, not when the producer got to it: a producer held up by a slow
//! broker adds that wait to the latency instead of hiding it (no coordinated omission).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer};
use futures::StreamExt as _;
use futures::future::BoxFuture;
use rdkafka::ClientConfig;
use rdkafka::Message as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::workload::{MAX_MESSAGE_SIZE, STAMP_BYTES};

/// Wire protocol of one end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Kafka,
    Nats,
    Amqp,
}

impl Kind {
    /// The broker kind for `broker.sh` and the worker config's driver name.
    pub fn broker(self) -> &'static str {
        match self {
            Kind::Kafka => "kafka",
            Kind::Nats => "nats",
            Kind::Amqp => "rabbitmq",
        }
    }

    pub fn driver(self) -> &'static str {
        match self {
            Kind::Kafka => "kafka",
            Kind::Nats => "nats",
            Kind::Amqp => "amqp",
        }
    }
}

/// A queue on a broker: a Kafka topic, a JetStream stream (whose subject is its name, as the
/// bridge's NATS driver expects) or a durable RabbitMQ queue.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub kind: Kind,
    pub address: String,
    pub queue: String,
}

/// A bench stream keeps at most this much (the oldest goes first), so that minutes at a fixed rate
/// fit on the disk; far more than a replicator that keeps up ever leaves unread.
pub const NATS_STREAM_MAX_BYTES: i64 = 4 << 30;

/// Messages per JetStream pull request of the consumer.
const NATS_PULL_BATCH: usize = 2000;

/// The header that carries a message's key where the protocol has no key of its own (the
/// bridge's `oms-key`).
const KEY_HEADER: &str = "oms-key";

/// Top bit of the sequence number: a warm-up message, not counted.
const WARM_UP: u64 = 1 << 63;

/// What a payload says about itself.
#[derive(Clone, Copy, Debug)]
pub struct Stamp {
    pub sent_ns: u64,
    pub sequence: u64,
    pub warm_up: bool,
}

pub fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Random bytes, made once: every payload's filler is a slice of them.
fn filler() -> &'static [u8] {
    static FILLER: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    FILLER.get_or_init(|| {
        // xorshift64: enough to defeat compression, and no dependency for it.
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        (0..MAX_MESSAGE_SIZE)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()[0]
            })
            .collect()
    })
}

/// A payload stamped with `sent_ns` (the schedule's send time) and `sequence`.
pub fn payload(size: usize, sequence: u64, warm_up: bool, sent_ns: u64) -> Vec<u8> {
    let mut bytes = filler()[..size].to_vec();
    bytes[..8].copy_from_slice(&sent_ns.to_be_bytes());
    let sequence = if warm_up { sequence | WARM_UP } else { sequence };
    bytes[8..STAMP_BYTES].copy_from_slice(&sequence.to_be_bytes());
    bytes
}

fn stamp(payload: &[u8]) -> Option<Stamp> {
    let sent_ns = u64::from_be_bytes(payload.get(..8)?.try_into().ok()?);
    let sequence = u64::from_be_bytes(payload.get(8..STAMP_BYTES)?.try_into().ok()?);
    Some(Stamp { sent_ns, sequence: sequence & !WARM_UP, warm_up: sequence & WARM_UP != 0 })
}

/// Creates the queue; `partitions` only matters for Kafka.
pub async fn create_queue(endpoint: &Endpoint, partitions: u32) -> anyhow::Result<()> {
    match endpoint.kind {
        Kind::Kafka => {
            let admin = kafka_admin(&endpoint.address)?;
            let partitions = i32::try_from(partitions)?;
            let topic = NewTopic::new(&endpoint.queue, partitions, TopicReplication::Fixed(1));
            for result in admin.create_topics(&[topic], &AdminOptions::new()).await? {
                result.map_err(|(topic, code)| anyhow::anyhow!("create topic {topic}: {code}"))?;
            }
        }
        Kind::Nats => {
            nats_context(&endpoint.address)
                .await?
                .create_stream(jetstream::stream::Config {
                    name: endpoint.queue.clone(),
                    subjects: vec![endpoint.queue.clone()],
                    max_bytes: NATS_STREAM_MAX_BYTES,
                    // As the Queue controller makes them.
                    allow_batch_publish: true,
                    ..Default::default()
                })
                .await?;
        }
        Kind::Amqp => {
            let options = lapin::options::QueueDeclareOptions { durable: true, ..Default::default() };
            amqp_channel(&endpoint.address)
                .await?
                .queue_declare(endpoint.queue.as_str().into(), options, lapin::types::FieldTable::default())
                .await?;
        }
    }
    Ok(())
}

/// Deletes the queue and its data: a minute of Kafka at full rate is ~10 GB, and the runs one
/// after another would otherwise fill the disk.
pub async fn delete_queue(endpoint: &Endpoint) -> anyhow::Result<()> {
    match endpoint.kind {
        Kind::Kafka => {
            let admin = kafka_admin(&endpoint.address)?;
            for result in admin.delete_topics(&[endpoint.queue.as_str()], &AdminOptions::new()).await? {
                result.map_err(|(topic, code)| anyhow::anyhow!("delete topic {topic}: {code}"))?;
            }
        }
        Kind::Nats => {
            nats_context(&endpoint.address).await?.delete_stream(&endpoint.queue).await?;
        }
        Kind::Amqp => {
            amqp_channel(&endpoint.address)
                .await?
                .queue_delete(endpoint.queue.as_str().into(), lapin::options::QueueDeleteOptions::default())
                .await?;
        }
    }
    Ok(())
}

fn kafka_admin(address: &str) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    Ok(ClientConfig::new().set("bootstrap.servers", address).create()?)
}

pub async fn nats_context(address: &str) -> anyhow::Result<jetstream::Context> {
    Ok(jetstream::new(async_nats::connect(format!("nats://{address}")).await?))
}

pub async fn amqp_channel(address: &str) -> anyhow::Result<lapin::Channel> {
    let uri = format!("amqp://guest:guest@{address}/%2f");
    let connection = lapin::Connection::connect(&uri, lapin::ConnectionProperties::default()).await?;
    Ok(connection.create_channel().await?)
}

/// Resolves when the broker confirmed one publish.
pub type Confirm = BoxFuture<'static, anyhow::Result<()>>;

/// A producer with the settings a careful application (and the bridge's own sinks) would use:
/// Kafka acks=all, idempotent, linger 5 ms; JetStream publish acks; RabbitMQ persistent messages
/// with publisher confirms.
pub enum Producer {
    Kafka(FutureProducer, String),
    Nats(jetstream::Context, String),
    Amqp(lapin::Channel, String),
}

impl Producer {
    pub async fn connect(endpoint: &Endpoint) -> anyhow::Result<Self> {
        Ok(match endpoint.kind {
            Kind::Kafka => Producer::Kafka(
                ClientConfig::new()
                    .set("bootstrap.servers", &endpoint.address)
                    .set("acks", "all")
                    .set("enable.idempotence", "true")
                    .set("linger.ms", "5")
                    .create()?,
                endpoint.queue.clone(),
            ),
            Kind::Nats => Producer::Nats(nats_context(&endpoint.address).await?, endpoint.queue.clone()),
            Kind::Amqp => {
                let channel = amqp_channel(&endpoint.address).await?;
                channel.confirm_select(lapin::options::ConfirmSelectOptions::default()).await?;
                Producer::Amqp(channel, endpoint.queue.clone())
            }
        })
    }

    /// Hands one message to the client, with `key` where the workload gives one (the record key
    /// for Kafka, the `oms-key` header the bridge reads elsewhere); the returned future resolves
    /// on the broker's confirm.
    pub async fn send(&self, payload: Vec<u8>, key: Option<String>) -> anyhow::Result<Confirm> {
        Ok(match self {
            Producer::Kafka(producer, topic) => {
                let mut record = FutureRecord::<str, [u8]>::to(topic).payload(&payload);
                if let Some(key) = &key {
                    record = record.key(key.as_str());
                }
                let delivery = producer.send_result(record).map_err(|(error, _)| error)?;
                Box::pin(async move {
                    delivery.await.context("the producer dropped the delivery")?.map_err(|(error, _)| error)?;
                    Ok(())
                })
            }
            Producer::Nats(context, subject) => {
                let ack = match key {
                    Some(key) => {
                        let mut headers = async_nats::HeaderMap::new();
                        headers.insert(KEY_HEADER, key.as_str());
                        context.publish_with_headers(subject.clone(), headers, payload.into()).await?
                    }
                    None => context.publish(subject.clone(), payload.into()).await?,
                };
                Box::pin(async move {
                    ack.await?;
                    Ok(())
                })
            }
            Producer::Amqp(channel, queue) => {
                let mut properties = lapin::BasicProperties::default().with_delivery_mode(2);
                if let Some(key) = key {
                    let mut headers = lapin::types::FieldTable::default();
                    headers.insert(KEY_HEADER.into(), lapin::types::AMQPValue::LongString(key.into()));
                    properties = properties.with_headers(headers);
                }
                let confirm = channel
                    .basic_publish(
                        "".into(),
                        queue.as_str().into(),
                        lapin::options::BasicPublishOptions::default(),
                        &payload,
                        properties,
                    )
                    .await?;
                Box::pin(async move {
                    match confirm.await? {
                        lapin::Confirmation::Ack(_) => Ok(()),
                        other => anyhow::bail!("the broker did not confirm: {other:?}"),
                    }
                })
            }
        })
    }
}

/// Reads the target queue from its beginning, as fast as the client allows: Kafka from the
/// earliest offset, JetStream through a pull consumer without acks, RabbitMQ with auto-ack.
pub enum Consumer {
    Kafka(Box<StreamConsumer>),
    Nats(Box<consumer::pull::Stream>),
    /// The channel is kept so that it lives as long as its consumer.
    Amqp {
        consumer: Box<lapin::Consumer>,
        _channel: lapin::Channel,
    },
}

impl Consumer {
    pub async fn connect(endpoint: &Endpoint) -> anyhow::Result<Self> {
        Ok(match endpoint.kind {
            Kind::Kafka => {
                let consumer: StreamConsumer = ClientConfig::new()
                    .set("bootstrap.servers", &endpoint.address)
                    .set("group.id", format!("bench-{}", endpoint.queue))
                    .set("auto.offset.reset", "earliest")
                    .set("enable.auto.commit", "false")
                    .create()?;
                consumer.subscribe(&[endpoint.queue.as_str()])?;
                Consumer::Kafka(Box::new(consumer))
            }
            Kind::Nats => {
                let stream = nats_context(&endpoint.address).await?.get_stream(&endpoint.queue).await?;
                let consumer = stream
                    .create_consumer(consumer::pull::Config {
                        ack_policy: consumer::AckPolicy::None,
                        deliver_policy: consumer::DeliverPolicy::All,
                        ..Default::default()
                    })
                    .await?;
                // Bigger pulls than the client's default (200): the consumer must not be what
                // limits a raw run.
                Consumer::Nats(Box::new(consumer.stream().max_messages_per_batch(NATS_PULL_BATCH).messages().await?))
            }
            Kind::Amqp => {
                let channel = amqp_channel(&endpoint.address).await?;
                let options = lapin::options::BasicConsumeOptions { no_ack: true, ..Default::default() };
                let consumer = channel
                    .basic_consume(
                        endpoint.queue.as_str().into(),
                        "bench".into(),
                        options,
                        lapin::types::FieldTable::default(),
                    )
                    .await?;
                Consumer::Amqp { consumer: Box::new(consumer), _channel: channel }
            }
        })
    }

    /// The next message's stamp; `None` for a message this bench did not write.
    pub async fn next(&mut self) -> anyhow::Result<Option<Stamp>> {
        Ok(match self {
            Consumer::Kafka(consumer) => match consumer.recv().await {
                Ok(message) => stamp(message.payload().unwrap_or_default()),
                // librdkafka reports a dropped broker connection and reconnects by itself: not an
                // end of the run (a loaded broker closes idle-looking fetch connections).
                Err(rdkafka::error::KafkaError::MessageConsumption(
                    rdkafka::types::RDKafkaErrorCode::BrokerTransportFailure
                    | rdkafka::types::RDKafkaErrorCode::AllBrokersDown,
                )) => None,
                Err(error) => return Err(error.into()),
            },
            Consumer::Nats(messages) => {
                let message = messages.next().await.context("the JetStream consumer ended")?;
                stamp(&message.map_err(|e| anyhow::anyhow!("{e}"))?.payload)
            }
            Consumer::Amqp { consumer, .. } => {
                stamp(&consumer.next().await.context("the AMQP consumer was cancelled")??.data)
            }
        })
    }
}

/// Polls `check` every 200 ms until it holds or `deadline` passed; returns whether it held.
pub async fn wait_for(deadline: Duration, mut check: impl FnMut() -> bool) -> bool {
    let started = std::time::Instant::now();
    while !check() {
        if started.elapsed() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    true
}
