//! Kafka through librdkafka. Source: a consumer group whose offsets are stored only for messages
//! the target confirmed and committed by librdkafka's auto-commit of stored offsets. Sink: an
//! idempotent producer (acks=all), so retries inside the client never duplicate or reorder.

use rdkafka::ClientConfig;
use rdkafka::Message as _;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::{Confirm, ConnectorError, Received, Start};
use crate::config::{Endpoint, Protocol};
use crate::message::{MESSAGE_ID_HEADER, Message, PROVENANCE_HEADER, take_bridge_headers};

fn servers(endpoint: &Endpoint) -> String {
    endpoint.servers.iter().map(|(h, p)| format!("{h}:{p}")).collect::<Vec<_>>().join(",")
}

fn connect_error(endpoint: &Endpoint, error: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::Connect { protocol: Protocol::Kafka, servers: servers(endpoint), message: error.to_string() }
}

pub struct KafkaSource {
    consumer: StreamConsumer,
    topic: String,
}

impl KafkaSource {
    pub fn connect(endpoint: &Endpoint, group: &str, start: Start) -> Result<Self, ConnectorError> {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", servers(endpoint))
            .set("group.id", group)
            // Offsets are stored by `ack` only, after the target confirmed; librdkafka commits
            // the stored ones in the background.
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", if matches!(start, Start::Latest) { "latest" } else { "earliest" })
            // A crashed worker's partitions move to its successor after this long (default 45 s).
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "3000")
            .create()
            .map_err(|e| connect_error(endpoint, e))?;
        consumer.subscribe(&[endpoint.queue.as_str()]).map_err(|e| connect_error(endpoint, e))?;
        Ok(Self { consumer, topic: endpoint.queue.clone() })
    }

    pub async fn next(&mut self) -> Result<Received, ConnectorError> {
        let record = self.consumer.recv().await.map_err(|e| ConnectorError::Receive(e.to_string()))?;
        let mut headers = Vec::new();
        if let Some(list) = record.headers() {
            for header in list.iter() {
                headers.push((header.key.to_owned(), header.value.map(<[u8]>::to_vec).unwrap_or_default()));
            }
        }
        let (own, headers) = take_bridge_headers(headers);
        let offset = u64::try_from(record.offset()).unwrap_or(0);
        let message = Message {
            key: record.key().map(<[u8]>::to_vec),
            payload: record.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            headers,
            timestamp_ms: record.timestamp().to_millis(),
            id: Message::stable_id(own.id.as_deref(), &self.topic, i64::from(record.partition()), offset),
            provenance: own.provenance,
        };
        Ok(Received { message, ack: super::Ack::Kafka { partition: record.partition(), offset: record.offset() } })
    }

    /// Stores the offset of a message the target confirmed. `rd_kafka_offset_store` itself
    /// records offset + 1 (the next to read): passing offset + 1 here would skip a message after
    /// every restart.
    pub fn ack(&self, partition: i32, offset: i64) -> Result<(), ConnectorError> {
        self.consumer.store_offset(&self.topic, partition, offset).map_err(|e| ConnectorError::Ack(e.to_string()))
    }

    /// Commits the stored offsets synchronously (at shutdown).
    pub fn commit_now(&self) {
        if let Err(error) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::warn!(message = "Failed to commit offsets.", %error);
        }
    }
}

pub struct KafkaSink {
    producer: FutureProducer,
    topic: String,
}

impl KafkaSink {
    pub fn connect(endpoint: &Endpoint) -> Result<Self, ConnectorError> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", servers(endpoint))
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .create()
            .map_err(|e| connect_error(endpoint, e))?;
        Ok(Self { producer, topic: endpoint.queue.clone() })
    }

    /// Enqueues `message`; every error, even at enqueueing, arrives through the confirmation.
    pub fn send(&self, message: &Message) -> Confirm {
        let provenance = message.provenance.join(",");
        let mut headers = OwnedHeaders::new_with_capacity(message.headers.len() + 2)
            .insert(Header { key: MESSAGE_ID_HEADER, value: Some(message.id.as_bytes()) });
        if !provenance.is_empty() {
            headers = headers.insert(Header { key: PROVENANCE_HEADER, value: Some(provenance.as_bytes()) });
        }
        for (name, value) in &message.headers {
            headers = headers.insert(Header { key: name, value: Some(value.as_slice()) });
        }
        let mut record = FutureRecord::to(&self.topic).payload(&message.payload).headers(headers);
        if let Some(key) = &message.key {
            record = record.key(key);
        }
        if let Some(ms) = message.timestamp_ms {
            record = record.timestamp(ms);
        }
        let producer = self.producer.clone();
        let delivery = match producer.send_result(record) {
            Ok(delivery) => delivery,
            Err((error, _)) => {
                let error = classify(&error);
                return Box::pin(async move { Err(error) });
            }
        };
        Box::pin(async move {
            match delivery.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err((error, _))) => Err(classify(&error)),
                Err(_) => Err(ConnectorError::Send("the producer dropped the delivery".into())),
            }
        })
    }
}

/// A produce error as the pipeline needs it: a message too large for the client or the broker is
/// refused for good; anything else may pass on a retry.
fn classify(error: &rdkafka::error::KafkaError) -> ConnectorError {
    use rdkafka::error::RDKafkaErrorCode::MessageSizeTooLarge;
    if matches!(error.rdkafka_error_code(), Some(MessageSizeTooLarge)) {
        ConnectorError::Rejected { reason: "too_large", message: error.to_string() }
    } else {
        ConnectorError::Send(error.to_string())
    }
}
