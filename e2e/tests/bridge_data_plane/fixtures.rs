//! What the bridge data-plane tests share: the brokers of a test, a worker process, the
//! gateway and its certificates, and the verdicts (lost, duplicated, overtaken, round-tripped).

use async_nats::jetstream;
use futures::StreamExt;
use oms_e2e::{Broker, Certs, HOUR, TestBroker, TlsPaths, repo_root, workspace_binary};
use rdkafka::ClientConfig;
use rdkafka::Message as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::{BTreeMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "rocketmq.rs"]
mod rocketmq;

pub const KEYS: usize = 8;
/// Messages per pair in the round trip, and in the kill -9 run.
pub const PAIR_COUNT: usize = 200;
pub const KILL_COUNT: usize = 3000;
pub const KILLS: usize = 3;
/// Publish acks the test producer awaits at once (async-nats allows a few thousand pending).
pub const NATS_ACK_BATCH: usize = 1000;

/// One message as the test sees it on the target.
#[derive(Debug, Clone)]
pub struct Seen {
    pub key: Option<String>,
    pub payload: String,
    pub headers: BTreeMap<String, String>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Kafka,
    Nats,
    Amqp,
    Mqtt,
    Rocketmq,
}

impl Kind {
    /// The worker config's driver name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Kafka => "kafka",
            Kind::Nats => "nats",
            Kind::Amqp => "amqp",
            Kind::Mqtt => "mqtt",
            Kind::Rocketmq => "rocketmq",
        }
    }

    /// MQTT 3.1.1 carries neither headers nor keys (see bridge/README.md).
    pub fn carries_headers(self) -> bool {
        self != Kind::Mqtt
    }
}

pub struct Brokers {
    pub kafka: TestBroker,
    pub nats: TestBroker,
    pub rabbitmq: Option<TestBroker>,
    pub mosquitto: Option<TestBroker>,
    /// Started by tests that bridge RocketMQ ([`Brokers::with_rocketmq`]).
    pub rocketmq: Option<TestBroker>,
    /// `127.0.0.1:<port>` of that RocketMQ's name server.
    pub name_server: String,
}

impl Brokers {
    /// Brokers of the test's own, for a test that restarts them.
    pub fn up(tag: &str, with_rabbitmq: bool) -> anyhow::Result<Self> {
        let own = |kind, suffix| Broker::up(kind, &format!("{tag}-{suffix}")).map(TestBroker::Own);
        Ok(Self {
            kafka: own("kafka", "k")?,
            nats: own("nats", "n")?,
            rabbitmq: with_rabbitmq.then(|| own("rabbitmq", "r")).transpose()?,
            mosquitto: with_rabbitmq.then(|| own("mqtt", "m")).transpose()?,
            rocketmq: None,
            name_server: String::new(),
        })
    }

    /// The brokers this binary's tests share: for a test that leaves them running as they are
    /// and names its queues, bridges and sessions after itself.
    pub fn shared(with_rabbitmq: bool) -> anyhow::Result<Self> {
        let shared = |kind| Broker::shared(kind).map(TestBroker::Shared);
        Ok(Self {
            kafka: shared("kafka")?,
            nats: shared("nats")?,
            rabbitmq: with_rabbitmq.then(|| shared("rabbitmq")).transpose()?,
            mosquitto: with_rabbitmq.then(|| shared("mqtt")).transpose()?,
            rocketmq: None,
            name_server: String::new(),
        })
    }

    /// These brokers and a RocketMQ (name server, broker and proxy): the binary's shared one, or
    /// with `tag` one of the test's own.
    pub fn with_rocketmq(mut self, tag: Option<&str>) -> anyhow::Result<Self> {
        let broker = match tag {
            Some(tag) => TestBroker::Own(Broker::up("rocketmq", &format!("{tag}-q"))?),
            None => TestBroker::Shared(Broker::shared("rocketmq")?),
        };
        self.name_server = oms_e2e::rocketmq_name_server(&broker)?;
        self.rocketmq = Some(broker);
        Ok(self)
    }

    pub fn broker(&self, kind: Kind) -> &Broker {
        match kind {
            Kind::Kafka => &self.kafka,
            Kind::Nats => &self.nats,
            Kind::Amqp => self.rabbitmq.as_ref().unwrap_or(&self.nats),
            Kind::Mqtt => self.mosquitto.as_ref().unwrap_or(&self.nats),
            // A test that bridges RocketMQ starts one (`with_rocketmq`).
            Kind::Rocketmq => self.rocketmq.as_ref().unwrap_or(&self.nats),
        }
    }

    /// An MQTT persistent session subscribed to `topic`: the broker queues QoS 1 messages for it
    /// from now on, which is what makes an MQTT topic a queue for the bridge and for the test.
    pub async fn mqtt_session(&self, client_id: &str, topic: &str) -> anyhow::Result<()> {
        let mut options = rumqttc::MqttOptions::new(client_id, "127.0.0.1", self.broker(Kind::Mqtt).port);
        options.set_clean_session(false);
        let (client, mut events) = rumqttc::AsyncClient::new(options, 16);
        client.subscribe(topic, rumqttc::QoS::AtLeastOnce).await?;
        loop {
            if let rumqttc::Event::Incoming(rumqttc::Incoming::SubAck(_)) = events.poll().await? {
                break;
            }
        }
        client.disconnect().await?;
        while events.poll().await.is_ok() {}
        Ok(())
    }

    /// A worker config from `source` to `target` with 64 in flight, plus `extra` top-level YAML.
    pub fn config(
        &self,
        name: &str,
        (source, source_queue): (Kind, &str),
        (target, target_queue): (Kind, &str),
        admin: std::net::SocketAddr,
        extra: &str,
    ) -> String {
        format!(
            "bridge: {{name: {name}, namespace: e2e}}\n\
             source: {{driver: {}, servers: ['{}'], queue: {source_queue}{}}}\n\
             target: {{driver: {}, servers: ['{}'], queue: {target_queue}{}}}\n\
             inFlight: 64\nadmin: {{listen: '{admin}'}}\n{extra}",
            source.name(),
            self.broker(source).address(),
            self.name_servers(source),
            target.name(),
            self.broker(target).address(),
            self.name_servers(target),
        )
    }

    /// `, nameServers: [...]` for a RocketMQ end, else nothing.
    fn name_servers(&self, kind: Kind) -> String {
        match kind {
            Kind::Rocketmq => format!(", nameServers: ['{}']", self.name_server),
            _ => String::new(),
        }
    }

    pub async fn amqp_channel(&self) -> anyhow::Result<lapin::Channel> {
        let uri = format!("amqp://guest:guest@{}/%2f", self.broker(Kind::Amqp).address());
        let connection = lapin::Connection::connect(&uri, lapin::ConnectionProperties::default()).await?;
        Ok(connection.create_channel().await?)
    }

    pub async fn create_queue(&self, kind: Kind, name: &str) -> anyhow::Result<()> {
        match kind {
            Kind::Kafka => self.create_topic(name, 3).await?,
            Kind::Nats => {
                let js = jetstream::new(async_nats::connect(format!("nats://{}", self.nats.address())).await?);
                // As the Queue controller makes them: taking fast batches, which the bridge uses.
                js.create_stream(jetstream::stream::Config {
                    name: name.to_owned(),
                    subjects: vec![name.to_owned(), format!("{name}.>")],
                    allow_batch_publish: true,
                    ..Default::default()
                })
                .await?;
            }
            Kind::Amqp => {
                let options = lapin::options::QueueDeclareOptions { durable: true, ..Default::default() };
                self.amqp_channel()
                    .await?
                    .queue_declare(name.into(), options, lapin::types::FieldTable::default())
                    .await?;
            }
            // The sessions that read the topic are made by the test (`mqtt_session`).
            Kind::Mqtt => {}
            // One queue: RocketMQ keeps order per queue, and the test checks order per key.
            Kind::Rocketmq => rocketmq::client(self, &["topic", name, "1"]).map(drop)?,
        }
        Ok(())
    }

    pub async fn create_topic(&self, name: &str, partitions: i32) -> anyhow::Result<()> {
        let admin: AdminClient<DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", self.kafka.address()).create()?;
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        for result in admin.create_topics(&[topic], &AdminOptions::new()).await? {
            result.map_err(|(topic, code)| anyhow::anyhow!("create {topic}: {code}"))?;
        }
        Ok(())
    }

    /// Publishes `count` messages with keys `k0..`, headers `region` and `seq`.
    pub async fn produce(&self, kind: Kind, queue: &str, from: usize, count: usize) -> anyhow::Result<()> {
        match kind {
            Kind::Kafka => {
                let producer: FutureProducer = ClientConfig::new()
                    .set("bootstrap.servers", self.kafka.address())
                    .set("enable.idempotence", "true")
                    .create()?;
                let mut deliveries = Vec::with_capacity(count);
                for i in from..from + count {
                    let (key, payload, seq) = (format!("k{}", i % KEYS), format!("msg-{i}"), i.to_string());
                    let headers = OwnedHeaders::new()
                        .insert(Header { key: "region", value: Some("eu") })
                        .insert(Header { key: "seq", value: Some(seq.as_str()) });
                    let record = FutureRecord::to(queue).key(&key).payload(&payload).headers(headers);
                    deliveries.push(producer.send_result(record).map_err(|(e, _)| e)?);
                }
                // Pipelined like any real producer; each delivery must still succeed.
                for delivery in deliveries {
                    delivery.await?.map_err(|(e, _)| e)?;
                }
            }
            Kind::Nats => {
                let js = jetstream::new(async_nats::connect(format!("nats://{}", self.nats.address())).await?);
                let mut acks = Vec::with_capacity(count);
                for i in from..from + count {
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert("region", "eu");
                    headers.insert("seq", i.to_string().as_str());
                    headers.insert("oms-key", format!("k{}", i % KEYS).as_str());
                    acks.push(js.publish_with_headers(queue.to_owned(), headers, format!("msg-{i}").into()).await?);
                    // The client holds a bounded number of unawaited acks; await them in batches.
                    if acks.len() == NATS_ACK_BATCH {
                        for ack in acks.drain(..) {
                            ack.await?;
                        }
                    }
                }
                for ack in acks {
                    ack.await?;
                }
            }
            Kind::Amqp => {
                use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
                let channel = self.amqp_channel().await?;
                channel.confirm_select(lapin::options::ConfirmSelectOptions::default()).await?;
                let mut confirms = Vec::with_capacity(count);
                for i in from..from + count {
                    let headers: std::collections::BTreeMap<ShortString, AMQPValue> =
                        [("region", "eu".to_owned()), ("seq", i.to_string()), ("oms-key", format!("k{}", i % KEYS))]
                            .into_iter()
                            .map(|(k, v)| (ShortString::from(k), AMQPValue::LongString(LongString::from(v))))
                            .collect();
                    let properties = lapin::BasicProperties::default().with_headers(FieldTable::from(headers));
                    let payload = format!("msg-{i}");
                    confirms.push(
                        channel
                            .basic_publish(
                                "".into(),
                                queue.into(),
                                lapin::options::BasicPublishOptions::default(),
                                payload.as_bytes(),
                                properties,
                            )
                            .await?,
                    );
                }
                for confirm in confirms {
                    confirm.await?;
                }
            }
            Kind::Mqtt => {
                let options =
                    rumqttc::MqttOptions::new(format!("producer-{queue}"), "127.0.0.1", self.broker(Kind::Mqtt).port);
                let (client, mut events) = rumqttc::AsyncClient::new(options, 256);
                let mut acked = 0;
                let publishing = async {
                    for i in from..from + count {
                        client.publish(queue, rumqttc::QoS::AtLeastOnce, false, format!("msg-{i}")).await?;
                    }
                    anyhow::Ok(())
                };
                let confirming = async {
                    while acked < count {
                        if let rumqttc::Event::Incoming(rumqttc::Incoming::PubAck(_)) = events.poll().await? {
                            acked += 1;
                        }
                    }
                    anyhow::Ok(())
                };
                let (published, confirmed) = tokio::join!(publishing, confirming);
                published?;
                confirmed?;
            }
            Kind::Rocketmq => {
                let (from, count, keys) = (from.to_string(), count.to_string(), KEYS.to_string());
                rocketmq::client(self, &["produce", queue, &from, &count, &keys])?;
            }
        }
        Ok(())
    }

    /// Reads everything on the target queue until `expected` distinct payloads arrived or the
    /// deadline passed; returns all messages seen, repeats included, in arrival order.
    pub async fn consume(
        &self,
        kind: Kind,
        queue: &str,
        expected: usize,
        deadline: Duration,
    ) -> anyhow::Result<Vec<Seen>> {
        let started = Instant::now();
        let mut seen = Vec::new();
        let mut distinct = HashSet::new();
        match kind {
            Kind::Kafka => {
                let consumer = self.kafka_reader(queue, "verify")?;
                consumer.subscribe(&[queue])?;
                while distinct.len() < expected && started.elapsed() < deadline {
                    let Ok(Ok(record)) = tokio::time::timeout(Duration::from_secs(2), consumer.recv()).await else {
                        continue;
                    };
                    let record = seen_kafka(&record);
                    distinct.insert(record.payload.clone());
                    seen.push(record);
                }
            }
            Kind::Nats => {
                let js = jetstream::new(async_nats::connect(format!("nats://{}", self.nats.address())).await?);
                let stream = js.get_stream(queue).await?;
                let consumer = stream.create_consumer(jetstream::consumer::pull::Config::default()).await?;
                let mut messages = consumer.messages().await?;
                while distinct.len() < expected && started.elapsed() < deadline {
                    let Ok(Some(Ok(message))) = tokio::time::timeout(Duration::from_secs(2), messages.next()).await
                    else {
                        continue;
                    };
                    message.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
                    let mut headers = BTreeMap::new();
                    if let Some(map) = &message.headers {
                        for (name, values) in map.iter() {
                            if let Some(value) = values.first() {
                                headers.insert(name.to_string(), value.as_str().to_owned());
                            }
                        }
                    }
                    let payload = String::from_utf8_lossy(&message.payload).into_owned();
                    distinct.insert(payload.clone());
                    seen.push(Seen { key: headers.get("oms-key").cloned(), payload, headers });
                }
            }
            Kind::Amqp => self.consume_amqp(queue, expected, deadline, &mut seen, &mut distinct).await?,
            Kind::Mqtt => self.consume_mqtt(queue, expected, deadline, &mut seen, &mut distinct).await?,
            Kind::Rocketmq => seen = rocketmq::consume(self, queue, expected, deadline)?,
        }
        Ok(seen)
    }

    /// A consumer of `topic` from its start, in a group of its own, that sees only committed
    /// records (as consumers of a transactional producer's topic must read).
    fn kafka_reader(&self, topic: &str, role: &str) -> anyhow::Result<StreamConsumer> {
        Ok(ClientConfig::new()
            .set("bootstrap.servers", self.kafka.address())
            .set("group.id", format!("{role}-{topic}-{}", std::process::id()))
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "true")
            .create()?)
    }

    /// Every committed record of `topic`, read to the end of each partition: for a topic that
    /// nobody writes to any more and that has no transaction open.
    pub async fn kafka_read_to_end(&self, topic: &str, deadline: Duration) -> anyhow::Result<Vec<Seen>> {
        let consumer = self.kafka_reader(topic, "to-end")?;
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let partitions = metadata.topics().first().map_or(0, |t| t.partitions().len());
        anyhow::ensure!(partitions > 0, "topic {topic} has no partitions");
        consumer.subscribe(&[topic])?;
        let (mut seen, mut at_end) = (Vec::new(), HashSet::new());
        let started = Instant::now();
        while at_end.len() < partitions {
            anyhow::ensure!(
                started.elapsed() < deadline,
                "{topic}: {} of {partitions} partitions read to the end",
                at_end.len()
            );
            match tokio::time::timeout(Duration::from_secs(2), consumer.recv()).await {
                Ok(Ok(record)) => seen.push(seen_kafka(&record)),
                Ok(Err(rdkafka::error::KafkaError::PartitionEOF(partition))) => {
                    at_end.insert(partition);
                }
                Ok(Err(error)) => anyhow::bail!("{topic}: {error}"),
                Err(_) => {}
            }
        }
        Ok(seen)
    }

    pub async fn consume_amqp(
        &self,
        queue: &str,
        expected: usize,
        deadline: Duration,
        seen: &mut Vec<Seen>,
        distinct: &mut HashSet<String>,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        let channel = self.amqp_channel().await?;
        let mut consumer = channel
            .basic_consume(
                queue.into(),
                "verify".into(),
                lapin::options::BasicConsumeOptions::default(),
                lapin::types::FieldTable::default(),
            )
            .await?;
        while distinct.len() < expected && started.elapsed() < deadline {
            let Ok(Some(Ok(delivery))) = tokio::time::timeout(Duration::from_secs(2), consumer.next()).await else {
                continue;
            };
            delivery.acker.ack(lapin::options::BasicAckOptions::default()).await?;
            let mut headers = BTreeMap::new();
            if let Some(table) = delivery.properties.headers() {
                for (name, value) in table.inner() {
                    if let lapin::types::AMQPValue::LongString(text) = value {
                        headers.insert(name.to_string(), String::from_utf8_lossy(text.as_bytes()).into_owned());
                    }
                }
            }
            let payload = String::from_utf8_lossy(&delivery.data).into_owned();
            distinct.insert(payload.clone());
            seen.push(Seen { key: headers.get("oms-key").cloned(), payload, headers });
        }
        Ok(())
    }

    pub async fn consume_mqtt(
        &self,
        queue: &str,
        expected: usize,
        deadline: Duration,
        seen: &mut Vec<Seen>,
        distinct: &mut HashSet<String>,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut options =
            rumqttc::MqttOptions::new(format!("verify-{queue}"), "127.0.0.1", self.broker(Kind::Mqtt).port);
        options.set_clean_session(false);
        let (client, mut events) = rumqttc::AsyncClient::new(options, 256);
        client.subscribe(queue, rumqttc::QoS::AtLeastOnce).await?;
        while distinct.len() < expected && started.elapsed() < deadline {
            let Ok(Ok(event)) = tokio::time::timeout(Duration::from_secs(2), events.poll()).await else {
                continue;
            };
            if let rumqttc::Event::Incoming(rumqttc::Incoming::Publish(publish)) = event {
                let payload = String::from_utf8_lossy(&publish.payload).into_owned();
                distinct.insert(payload.clone());
                seen.push(Seen { key: None, payload, headers: BTreeMap::new() });
            }
        }
        Ok(())
    }
}

/// A worker process with its config file; SIGKILL on drop.
pub struct Worker {
    pub child: Child,
}

impl Worker {
    pub fn start(
        name: &str,
        brokers: &Brokers,
        (source, source_queue): (Kind, &str),
        (target, target_queue): (Kind, &str),
    ) -> anyhow::Result<Self> {
        let admin = "127.0.0.1:0".parse()?;
        // A RocketMQ source keeps no order through redeliveries: the worker refuses any other.
        let extra = if source == Kind::Rocketmq { "ordering: None\n" } else { "" };
        Self::start_with(name, &brokers.config(name, (source, source_queue), (target, target_queue), admin, extra))
    }

    /// Starts a worker with a config of the caller's.
    pub fn start_with(name: &str, yaml: &str) -> anyhow::Result<Self> {
        Self::start_with_env(name, yaml, &[])
    }

    /// Starts a worker with a config of the caller's and environment variables (`KUBECONFIG`,
    /// `HOSTNAME`: what a pod gives it).
    pub fn start_with_env(name: &str, yaml: &str, env: &[(&str, &std::ffi::OsStr)]) -> anyhow::Result<Self> {
        let dir = repo_root().join("e2e/.state/bridges");
        std::fs::create_dir_all(&dir)?;
        let config = dir.join(format!("{name}-{}.yaml", std::process::id()));
        std::fs::write(&config, yaml)?;
        let log = std::fs::File::create(config.with_extension("log"))?;
        let child = Command::new(workspace_binary("oms-bridge"))
            .args(["worker", "--config"])
            .arg(&config)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        Ok(Self { child })
    }

    /// SIGTERM, as Kubernetes stops a pod: the worker drains and commits, then exits.
    pub fn stop(mut self) -> anyhow::Result<()> {
        oms_e2e::run_ok(Command::new("kill").args(["-TERM", &self.child.id().to_string()]))?;
        let status = self.child.wait()?;
        anyhow::ensure!(status.success(), "the worker exited with {status} on SIGTERM");
        Ok(())
    }

    pub fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Kafka record as the test sees it.
fn seen_kafka(record: &rdkafka::message::BorrowedMessage<'_>) -> Seen {
    let mut headers = BTreeMap::new();
    if let Some(list) = record.headers() {
        for header in list.iter() {
            headers
                .insert(header.key.to_owned(), String::from_utf8_lossy(header.value.unwrap_or_default()).into_owned());
        }
    }
    Seen {
        key: record.key().map(|k| String::from_utf8_lossy(k).into_owned()),
        payload: String::from_utf8_lossy(record.payload().unwrap_or_default()).into_owned(),
        headers,
    }
}

pub fn check_round_trip(seen: &[Seen], count: usize, pair: &str, headers_travel: bool) {
    check_round_trip_with(seen, count, pair, headers_travel, true);
}

/// [`check_round_trip`], with the order per key checked only where the bridge keeps it
/// (`order_kept`: not from a source that needs `ordering: None`).
pub fn check_round_trip_with(seen: &[Seen], count: usize, pair: &str, headers_travel: bool, order_kept: bool) {
    let payloads: HashSet<&str> = seen.iter().map(|s| s.payload.as_str()).collect();
    let lost: Vec<String> = (0..count).map(|i| format!("msg-{i}")).filter(|p| !payloads.contains(p.as_str())).collect();
    assert!(lost.is_empty(), "{pair}: lost {} messages, e.g. {:?}", lost.len(), lost.first());
    if !headers_travel {
        return;
    }
    let mut last_seq: BTreeMap<String, i64> = BTreeMap::new();
    for message in seen {
        assert_eq!(message.headers.get("region").map(String::as_str), Some("eu"), "{pair}: header kept");
        assert!(message.headers.contains_key("oms-message-id"), "{pair}: message id written");
        let seq: i64 = message.headers.get("seq").and_then(|s| s.parse().ok()).unwrap_or(-1);
        let key = message.key.clone().unwrap_or_default();
        assert_eq!(key, format!("k{}", seq.rem_euclid(i64::try_from(KEYS).unwrap_or(1))), "{pair}: key mapped");
        let previous = last_seq.insert(key.clone(), seq).unwrap_or(-1);
        // A repeat after a retry may go back; a first delivery never overtakes an earlier one.
        assert!(
            !order_kept || seq > previous || seen.iter().filter(|s| s.payload == message.payload).count() > 1,
            "{pair}: key {key} out of order: {previous} then {seq}"
        );
    }
}

/// The verdict on what a target received (payload `msg-<i>`, key `k<i % KEYS>` as `produce`
/// writes them), by the rule every tier uses. Keys are checked by `check_round_trip`; here each
/// message's own key orders it, as on MQTT, which carries none.
pub fn verdict(seen: &[Seen], count: usize) -> oms_e2e::Verdict {
    let number = |s: &Seen| s.payload.strip_prefix("msg-").and_then(|n| n.parse().ok());
    oms_e2e::Verdict::of(seen.iter().map(|s| (number(s), None)), count, KEYS)
}

/// Messages of `0..count` that never arrived, and repeats.
pub fn lost_and_duplicated(seen: &[Seen], count: usize) -> (usize, usize) {
    let verdict = verdict(seen, count);
    (verdict.lost, verdict.duplicates)
}

/// First deliveries that arrived after a later message of their key.
pub fn overtaken(seen: &[Seen]) -> usize {
    verdict(seen, 0).out_of_order
}

/// An `oms-bridge gateway` process; SIGKILL on drop.
pub struct GatewayProcess {
    pub child: Child,
    pub config: std::path::PathBuf,
    pub port: u16,
    pub admin: std::net::SocketAddr,
}

impl GatewayProcess {
    /// A gateway in trust domain cloud-b.oms accepting cloud-a.oms bridges, fronting the NATS
    /// broker as `acme/edge-nats`, Kafka as `acme/edge-kafka`, and NATS again as `globex/private`.
    pub fn start(name: &str, brokers: &Brokers, tls: &TlsPaths) -> anyhow::Result<Self> {
        Self::start_reaching_nats_at(name, brokers, tls, &brokers.nats.address())
    }

    /// The same gateway, reaching `acme/edge-nats` at `nats` (a fault proxy in front of it).
    pub fn start_reaching_nats_at(name: &str, brokers: &Brokers, tls: &TlsPaths, nats: &str) -> anyhow::Result<Self> {
        let (port, admin) = (oms_e2e::free_server_port(), oms_e2e::admin_address()?);
        let yaml = format!(
            "listen: '127.0.0.1:{port}'\ntrustDomain: cloud-b.oms\npeerTrustDomains: [cloud-a.oms]\ntls: {}\n\
             backends:\n\
             - {{accessPoint: acme/edge-nats, driver: nats, servers: ['{}']}}\n\
             - {{accessPoint: acme/edge-kafka, driver: kafka, servers: ['{}']}}\n\
             - {{accessPoint: globex/private, driver: nats, servers: ['{}']}}\n\
             admin: {{listen: '{admin}'}}\n",
            tls.yaml(),
            nats,
            brokers.kafka.address(),
            brokers.nats.address(),
        );
        let config = repo_root().join(format!("e2e/.state/bridges/{name}-gateway-{}.yaml", std::process::id()));
        std::fs::create_dir_all(config.parent().unwrap_or(&repo_root()))?;
        std::fs::write(&config, yaml)?;
        let child = Self::spawn(&config)?;
        let gateway = Self { child, config, port, admin };
        gateway.wait_listening()?;
        Ok(gateway)
    }

    pub fn spawn(config: &std::path::Path) -> anyhow::Result<Child> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(config.with_extension("log"))?;
        Ok(Command::new(workspace_binary("oms-bridge"))
            .args(["gateway", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?)
    }

    pub fn wait_listening(&self) -> anyhow::Result<()> {
        oms_e2e::poll("the gateway listens", Duration::from_secs(20), || {
            Ok(std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok().then_some(()))
        })
    }

    /// SIGTERM, then the same config again on the same port.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        oms_e2e::run_ok(Command::new("kill").args(["-TERM", &self.child.id().to_string()]))?;
        self.child.wait()?;
        self.child = Self::spawn(&self.config)?;
        self.wait_listening()
    }

    pub fn metric(&self, name: &str, reason: Option<&str>) -> u64 {
        oms_e2e::metric(self.admin, name, reason)
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The worker-side endpoint of a queue behind the gateway, dialled as `host`.
pub fn gateway_end(host: &str, port: u16, access_point: &str, queue: &str, tls: &TlsPaths) -> String {
    oms_e2e::gateway_end(&format!("{host}:{port}"), access_point, queue, tls)
}

/// The gateway's server certificate and a bridge certificate of tenant acme in cloud-a.
pub fn gateway_and_bridge_certs(certs: &Certs, bridge: &str) -> anyhow::Result<(TlsPaths, TlsPaths)> {
    let server =
        certs.issue("gateway", "spiffe://cloud-b.oms/ns/acme/gateway/edge", &["localhost"], Certs::now(), HOUR)?;
    let client =
        certs.issue(bridge, &format!("spiffe://cloud-a.oms/ns/acme/bridge/{bridge}"), &[], Certs::now(), HOUR)?;
    Ok((server, client))
}
