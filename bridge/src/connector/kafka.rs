//! Kafka through librdkafka. Source: a consumer group whose offsets are stored only for messages
//! the target confirmed and committed by librdkafka's auto-commit of stored offsets. Sink: an
//! idempotent producer (acks=all), so retries inside the client never duplicate or reorder.
//!
//! Start position: `earliest` and `latest` are the group's reset policy; a timestamp is turned into
//! offsets (`offsets_for_times`) and committed for the group before it first subscribes, so it
//! applies once, to a group without positions, like the other two.
//!
//! Exactly-once into Kafka ([`TransactionalSink`]): the source reads only committed records and
//! never commits by itself; the records of a batch and the source offsets after them are committed
//! in one Kafka transaction (see `crate::transactional`).
//!
//! Gaps: a partition's offsets run on from the last one the bridge saw (or the group's committed
//! offset). When they jump and the partition's log now starts past the expected offset, retention
//! or truncation removed messages before they were bridged: the jump is reported, never silent.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::Message as _;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::{Offset, TopicPartitionList};

use super::{Confirm, ConnectorError, Delivered, Durable, Received, Start};
use crate::message::{MESSAGE_ID_HEADER, Message, MessageIds, PROVENANCE_HEADER, take_bridge_headers};
use oms_bridge_config::{Endpoint, Protocol};

fn servers(endpoint: &Endpoint) -> String {
    endpoint.servers.iter().map(|(h, p)| format!("{h}:{p}")).collect::<Vec<_>>().join(",")
}

/// A client of the endpoint's brokers: with credentials, logged in with the mechanism of the
/// credentials directory's `sasl_mechanism` file (SCRAM-SHA-512 without one, what managed Kafka
/// access points serve); over TLS with the endpoint's CA bundle (and certificate) where it has
/// them, each broker checked against the host it advertises. librdkafka reads the files once per
/// client: the operator rolls the workers when they change.
fn client(endpoint: &Endpoint) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", servers(endpoint));
    let login = super::credentials(endpoint);
    if let Some((user, password)) = &login {
        let mechanism = super::credential_file(endpoint, "sasl_mechanism").unwrap_or_else(|| "SCRAM-SHA-512".into());
        config
            .set("security.protocol", "SASL_PLAINTEXT")
            .set("sasl.mechanism", mechanism)
            .set("sasl.username", user)
            .set("sasl.password", password);
    }
    if let Some(tls) = &endpoint.tls {
        config
            .set("security.protocol", if login.is_some() { "SASL_SSL" } else { "SSL" })
            .set("ssl.ca.location", tls.ca_file.display().to_string());
        if let Some((cert, key)) = &tls.identity {
            config
                .set("ssl.certificate.location", cert.display().to_string())
                .set("ssl.key.location", key.display().to_string());
        }
    }
    config
}

fn connect_error(endpoint: &Endpoint, error: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::Connect { protocol: Protocol::Kafka, servers: servers(endpoint), message: error.to_string() }
}

/// How long a metadata or offset request to the brokers may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub struct KafkaSource {
    consumer: StreamConsumer,
    topic: String,
    /// Partition and offset: the same for every delivery of a record.
    ids: MessageIds,
    /// Per partition, the offset the next message should have; absent until the first message.
    expected: HashMap<i32, i64>,
    /// Offsets move only inside the target's transactions, never by a commit of the source's own.
    transactional: bool,
}

impl KafkaSource {
    /// A consumer of the group of `durable`; `transactional`: for [`TransactionalSink`], which
    /// commits its offsets.
    pub fn connect(
        endpoint: &Endpoint,
        durable: &Durable,
        start: Start,
        transactional: bool,
    ) -> Result<Self, ConnectorError> {
        let consumer: StreamConsumer = client(endpoint)
            .set("group.id", durable.kafka_group())
            // Offsets are stored by `ack` only, after the target confirmed; librdkafka commits
            // the stored ones in the background. Transactions commit them instead.
            .set("enable.auto.commit", if transactional { "false" } else { "true" })
            // Records of aborted transactions are never bridged (librdkafka's default, said).
            .set("isolation.level", "read_committed")
            .set("enable.auto.offset.store", "false")
            // What a reconnect after a failed commit repeats: at most this much of the stream
            // (default 5 s). One small request a second.
            .set("auto.commit.interval.ms", "1000")
            .set("auto.offset.reset", if matches!(start, Start::Latest) { "latest" } else { "earliest" })
            // A crashed worker's partitions move to its successor after this long (default 45 s).
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "3000")
            // With its prefetch queue full, librdkafka waits this long before fetching again
            // (default 1 s): a worker that empties the queue in 0.4 s then sat idle for 0.6 s.
            .set("fetch.queue.backoff.ms", "20")
            .create()
            .map_err(|e| connect_error(endpoint, e))?;
        // Groups of earlier versions were named without the tenant's prefix: a group without
        // positions takes theirs, once. Best effort: without them it starts as configured.
        if let Err(error) = tokio::task::block_in_place(|| {
            adopt_legacy_positions(&consumer, endpoint, &endpoint.queue, &durable.flat())
        }) {
            tracing::warn!(message = "Cannot read the positions of the group's earlier name.", legacy = %durable.flat(), %error);
        }
        if let Start::Timestamp(ms) = start {
            tokio::task::block_in_place(|| seed_positions_at(&consumer, &endpoint.queue, ms))
                .map_err(|e| connect_error(endpoint, format!("cannot find offsets for startTimestamp: {e}")))?;
        }
        consumer.subscribe(&[endpoint.queue.as_str()]).map_err(|e| connect_error(endpoint, e))?;
        let ids = MessageIds::positional(endpoint.access_point.as_deref(), &endpoint.queue);
        Ok(Self { consumer, topic: endpoint.queue.clone(), ids, expected: HashMap::new(), transactional })
    }

    /// Messages removed from `partition` before they were bridged, judged at a message with
    /// `offset`: 0 unless the offsets jumped past where the log now starts.
    fn gap_before(&mut self, partition: i32, offset: i64) -> u64 {
        let expected = match self.expected.insert(partition, offset + 1) {
            Some(expected) => expected,
            // First message of the partition in this run: compare with the group's position.
            None => match tokio::task::block_in_place(|| self.committed(partition)) {
                Some(committed) => committed,
                None => return 0,
            },
        };
        if offset <= expected {
            return 0;
        }
        // A jump alone can be a transaction marker or compaction; it is a loss only if the log
        // no longer holds the expected offset.
        let low =
            tokio::task::block_in_place(|| self.consumer.fetch_watermarks(&self.topic, partition, REQUEST_TIMEOUT));
        match low {
            Ok((low, _)) if low > expected => u64::try_from(low.min(offset) - expected).unwrap_or(0),
            Ok(_) => 0,
            Err(error) => {
                tracing::warn!(message = "Cannot read the partition's first offset to check for a gap.", partition, %error);
                0
            }
        }
    }

    fn committed(&self, partition: i32) -> Option<i64> {
        let mut list = TopicPartitionList::new();
        list.add_partition(&self.topic, partition);
        let committed = self.consumer.committed_offsets(list, REQUEST_TIMEOUT).ok()?;
        match committed.find_partition(&self.topic, partition)?.offset() {
            Offset::Offset(offset) => Some(offset),
            _ => None,
        }
    }

    /// Partitions the group gave this consumer.
    #[must_use]
    pub fn assigned_partitions(&self) -> usize {
        self.consumer.assignment().map_or(0, |list| list.count())
    }

    /// Messages in the assigned partitions not yet taken: high watermark minus position (one
    /// short request per partition, every few seconds).
    #[must_use]
    pub fn backlog(&self) -> Option<u64> {
        let positions = self.consumer.position().ok()?;
        let mut total = 0u64;
        for element in positions.elements() {
            let watermarks = tokio::task::block_in_place(|| {
                self.consumer.fetch_watermarks(element.topic(), element.partition(), REQUEST_TIMEOUT)
            });
            let Ok((_, high)) = watermarks else { continue };
            if let Offset::Offset(position) = element.offset() {
                total += u64::try_from(high - position).unwrap_or(0);
            }
        }
        Some(total)
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
            id: self.ids.id(own.id, i64::from(record.partition()), offset),
            provenance: own.provenance,
        };
        let (partition, offset) = (record.partition(), record.offset());
        drop(record);
        let gap = self.gap_before(partition, offset);
        Ok(Received { message, ack: super::Ack::Kafka { partition, offset }, gap, redelivered: false })
    }

    /// Stores the offset of a message the target confirmed. `rd_kafka_offset_store` itself
    /// records offset + 1 (the next to read): passing offset + 1 here would skip a message after
    /// every restart.
    pub fn ack(&self, partition: i32, offset: i64) -> Result<(), ConnectorError> {
        self.consumer.store_offset(&self.topic, partition, offset).map_err(|e| ConnectorError::Ack(e.to_string()))
    }

    /// Commits the stored offsets synchronously (at shutdown); nothing under transactions.
    pub fn commit_now(&self) {
        if self.transactional {
            return;
        }
        if let Err(error) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::warn!(message = "Failed to commit offsets.", %error);
        }
    }
}

/// Commits, for each partition of `topic` the group has no position in, the first offset at or
/// after `ms` (the end where nothing is that recent). Partitions with a position keep it. Runs
/// before the group's first subscribe; when other members are active the commit is refused, and
/// then the group has positions anyway.
/// Every partition of `topic`.
fn partitions(consumer: &StreamConsumer, topic: &str) -> rdkafka::error::KafkaResult<TopicPartitionList> {
    let metadata = consumer.fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
    let mut all = TopicPartitionList::new();
    for partition in metadata.topics().iter().flat_map(rdkafka::metadata::MetadataTopic::partitions) {
        all.add_partition(topic, partition.id());
    }
    Ok(all)
}

/// Commits for `consumer`'s group the positions group `legacy` committed, when the group has none.
fn adopt_legacy_positions(
    consumer: &StreamConsumer,
    endpoint: &Endpoint,
    topic: &str,
    legacy: &str,
) -> rdkafka::error::KafkaResult<()> {
    let all = partitions(consumer, topic)?;
    let own = consumer.committed_offsets(all.clone(), REQUEST_TIMEOUT)?;
    if own.elements().iter().any(|e| matches!(e.offset(), Offset::Offset(_))) {
        return Ok(());
    }
    let earlier: BaseConsumer = client(endpoint).set("group.id", legacy).create()?;
    let theirs = earlier.committed_offsets(all, REQUEST_TIMEOUT)?;
    let mut adopted = TopicPartitionList::new();
    for element in theirs.elements() {
        if let Offset::Offset(offset) = element.offset() {
            adopted.add_partition_offset(topic, element.partition(), Offset::Offset(offset))?;
        }
    }
    if adopted.count() == 0 {
        return Ok(());
    }
    tracing::info!(
        message = "Continuing where the group's earlier name stopped.",
        legacy,
        partitions = adopted.count()
    );
    consumer.commit(&adopted, CommitMode::Sync)
}

fn seed_positions_at(consumer: &StreamConsumer, topic: &str, ms: i64) -> rdkafka::error::KafkaResult<()> {
    let committed = consumer.committed_offsets(partitions(consumer, topic)?, REQUEST_TIMEOUT)?;
    let mut wanted = TopicPartitionList::new();
    for element in committed.elements() {
        if !matches!(element.offset(), Offset::Offset(_)) {
            wanted.add_partition_offset(topic, element.partition(), Offset::Offset(ms))?;
        }
    }
    if wanted.count() == 0 {
        return Ok(());
    }
    let found = consumer.offsets_for_times(wanted, REQUEST_TIMEOUT)?;
    let mut start = TopicPartitionList::new();
    for element in found.elements() {
        let offset = match element.offset() {
            Offset::Offset(offset) => offset,
            // Nothing at or after the time yet: start at the end.
            _ => consumer.fetch_watermarks(topic, element.partition(), REQUEST_TIMEOUT)?.1,
        };
        start.add_partition_offset(topic, element.partition(), Offset::Offset(offset))?;
    }
    tracing::info!(message = "Starting from startTimestamp.", topic, ms, partitions = start.count());
    consumer.commit(&start, CommitMode::Sync)
}

pub struct KafkaSink {
    producer: FutureProducer,
    topic: String,
}

impl KafkaSink {
    pub fn connect(endpoint: &Endpoint) -> Result<Self, ConnectorError> {
        // Order through failures without a lane per key (see `Sink::keeps_order`): the idempotent
        // producer retries in order, gapless stops it at the first message that would leave a gap
        // behind a later one, and no message times out, which gapless does not cover (Kafka
        // Connect's producers never time out either, for the same reason).
        let producer: FutureProducer = client(endpoint)
            .set("enable.idempotence", "true")
            .set("enable.gapless.guarantee", "true")
            .set("message.timeout.ms", "0")
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
                Ok(Ok(_)) => Ok(Delivered::Stored),
                Ok(Err((error, _))) => Err(classify(&error)),
                Err(_) => Err(ConnectorError::Send("the producer dropped the delivery".into())),
            }
        })
    }
}

/// How long a transaction may stay open before the broker aborts it: how long a worker killed in
/// the middle of a batch holds up the offsets of its partitions when its successor has another
/// transactional id (one with the same id aborts it at once).
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the transaction calls (init, offsets, commit, abort) may take.
const TRANSACTION_CALL: Duration = Duration::from_secs(30);

/// A producer whose records commit together with the source's offsets, in Kafka transactions:
/// begin, send, then [`TransactionalSink::commit`] or [`TransactionalSink::abort`].
pub struct TransactionalSink(KafkaSink);

impl TransactionalSink {
    /// Connects as `transactional_id`, fencing off an earlier producer of that id and aborting
    /// the transaction it left open.
    pub fn connect(endpoint: &Endpoint, transactional_id: &str) -> Result<Self, ConnectorError> {
        let timeout = TRANSACTION_TIMEOUT.as_millis().to_string();
        let producer: FutureProducer = client(endpoint)
            .set("transactional.id", transactional_id)
            .set("transaction.timeout.ms", &timeout)
            .set("linger.ms", "5")
            .create()
            .map_err(|e| connect_error(endpoint, e))?;
        tokio::task::block_in_place(|| producer.init_transactions(TRANSACTION_CALL))
            .map_err(|e| connect_error(endpoint, format!("cannot start transactions as {transactional_id}: {e}")))?;
        Ok(Self(KafkaSink { producer, topic: endpoint.queue.clone() }))
    }

    pub fn begin(&self) -> Result<(), ConnectorError> {
        self.0
            .producer
            .begin_transaction()
            .map_err(|e| ConnectorError::Send(format!("cannot begin a transaction: {e}")))
    }

    /// Enqueues `message` in the open transaction; the confirmation says whether it was written.
    #[must_use]
    pub fn send(&self, message: &Message) -> Confirm {
        self.0.send(message)
    }

    /// Commits what was sent since `begin` together with `offsets` (per partition, the next to
    /// read) of `source`'s group: both happen, or neither.
    pub fn commit(&self, source: &KafkaSource, offsets: &BTreeMap<i32, i64>) -> Result<(), ConnectorError> {
        let failed = |e: rdkafka::error::KafkaError| ConnectorError::Send(format!("the transaction failed: {e}"));
        let group = source
            .consumer
            .group_metadata()
            .ok_or_else(|| ConnectorError::Send("the source's consumer has no group yet".to_owned()))?;
        let mut next = TopicPartitionList::new();
        for (partition, offset) in offsets {
            next.add_partition_offset(&source.topic, *partition, Offset::Offset(*offset)).map_err(failed)?;
        }
        let producer = &self.0.producer;
        tokio::task::block_in_place(|| {
            if next.count() > 0 {
                producer.send_offsets_to_transaction(&next, &group, TRANSACTION_CALL)?;
            }
            producer.commit_transaction(TRANSACTION_CALL)
        })
        .map_err(failed)
    }

    /// Aborts the open transaction: read_committed consumers never see what it sent.
    pub fn abort(&self) {
        if let Err(error) = tokio::task::block_in_place(|| self.0.producer.abort_transaction(TRANSACTION_CALL)) {
            tracing::warn!(message = "Cannot abort the transaction; the broker will when it times out.", %error);
        }
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
