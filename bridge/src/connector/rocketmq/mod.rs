//! RocketMQ 5 through its proxy's gRPC API (`proto/rocketmq.proto`), the API RocketMQ's own 5.x
//! clients speak; the official Rust client pins a tonic three majors old and is not maintained.
//!
//! Source: a simple consumer. The group's positions are set first ([`positions`]); a task then
//! receives in long polls and hands messages on; each is acknowledged only after the target
//! confirmed it, in batches by another task. The proxy keeps what this worker holds invisible for
//! as long as it holds it (auto renew, up to 3 hours); what a crashed worker held comes again once
//! the proxy counts it gone (its heartbeats stop for 2 minutes), a stopping one gives it back at
//! once. A message is delivered again as a duplicate, never lost.
//! Sink: one SendMessage per message; confirmed when the proxy answers OK (the broker stored it).

mod positions;

use std::io::Read as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use super::{Ack, Confirm, ConnectorError, Delivered, Durable, Received, Start, connect_error};
use crate::message::{
    HeaderList, KEY_HEADER, MESSAGE_ID_HEADER, Message, MessageIds, PROVENANCE_HEADER, take_bridge_headers,
};
use oms_bridge_config::Endpoint;

#[allow(clippy::all, clippy::pedantic)]
mod proto {
    tonic::include_proto!("apache.rocketmq.v2");
}

use proto::messaging_service_client::MessagingServiceClient;

/// The message's RocketMQ tag travels as this header, and a message with this header is sent with
/// it as its tag.
pub const TAG_HEADER: &str = "rocketmq-tag";

/// How long a received message stays invisible to other receives of the group, between the
/// proxy's renewals (auto renew: the proxy uses its own setting, 60 s by default, in its place).
const INVISIBLE: Duration = Duration::from_mins(1);
/// Acknowledgements sent in one AckMessage at most.
const ACK_BATCH: usize = 128;
/// Codes of a SendMessage refusal that the same message would meet again, whatever the time:
/// its tag, keys, message group or properties are malformed (40004-40007), it is corrupted
/// (40016), too large (41300-41302) or its properties are (43101). Refusals of every message
/// (authorization, a topic of another type) are not among them: the worker stops and says so.
const REFUSED_FOR_GOOD: [i32; 9] = [40004, 40005, 40006, 40007, 40016, 41300, 41301, 41302, 43101];
/// A receive waits this long for messages before it answers empty.
const LONG_POLL: Duration = Duration::from_secs(20);
/// Messages asked for per receive (the proxy's most is 32).
const RECEIVE_BATCH: i32 = 32;
/// Deadline of one unary call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The proxy forgets a client's settings without heartbeats (after 120 s); the Java client sends
/// them every 10 s.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);

fn status_text(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

/// A RocketMQ status that is not OK, as text: `TopicNotFound (40402): ...`.
fn refused(status: Option<&proto::Status>) -> Option<String> {
    let status = status?;
    match status.code() {
        proto::Code::Ok => None,
        code => Some(format!("{code:?} ({}): {}", status.code, status.message)),
    }
}

/// The proxy and who we are to it: every request carries the client id (the proxy keys a
/// consumer's settings by it), the language, the time and, with a login, a signature of the time.
#[derive(Clone)]
struct Proxy {
    client: MessagingServiceClient<Channel>,
    client_id: String,
    /// The name servers and brokers behind the proxy, reached with the same TLS, and the login
    /// that signs requests to the proxy and the brokers.
    remoting: positions::Remoting,
    endpoints: proto::Endpoints,
    requests: Arc<AtomicU64>,
}

impl Proxy {
    async fn connect(endpoint: &Endpoint, client_id: &str) -> Result<Self, ConnectorError> {
        let tls = endpoint
            .tls
            .as_ref()
            .map(crate::gateway::tls::broker_client_config)
            .transpose()
            .map_err(|e| connect_error(endpoint, e))?;
        let settings = |grpc: tonic::transport::Endpoint| {
            grpc.connect_timeout(Duration::from_secs(10))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(20))
        };
        let channel = super::grpc::channel(endpoint, settings, tls.clone()).await?;
        let host = endpoint.servers.first().map(|(host, _)| host.clone()).unwrap_or_default();
        let addresses = endpoint
            .servers
            .iter()
            .map(|(host, port)| proto::Address { host: host.clone(), port: i32::from(*port) })
            .collect();
        let scheme = if host.parse::<std::net::Ipv4Addr>().is_ok() {
            proto::AddressScheme::IPv4
        } else {
            proto::AddressScheme::DomainName
        };
        let remoting = positions::Remoting {
            name_servers: endpoint.name_servers.clone(),
            login: super::credentials(endpoint),
            tls: tls.map(Arc::new),
        };
        Ok(Self {
            client: MessagingServiceClient::new(channel),
            client_id: client_id.to_owned(),
            remoting,
            endpoints: proto::Endpoints { scheme: scheme.into(), addresses },
            requests: Arc::new(AtomicU64::new(0)),
        })
    }

    /// `message` with the headers every request carries.
    fn request<T>(&self, message: T, timeout: Option<Duration>) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(timeout) = timeout {
            request.set_timeout(timeout);
        }
        let now = time::OffsetDateTime::now_utc();
        let date_time = format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second()
        );
        let number = self.requests.fetch_add(1, AtomicOrdering::Relaxed);
        let mut headers = vec![
            ("x-mq-client-id", self.client_id.clone()),
            ("x-mq-language", "RUST".to_owned()),
            ("x-mq-protocol", "v2".to_owned()),
            ("x-mq-client-version", env!("CARGO_PKG_VERSION").to_owned()),
            ("x-mq-request-id", format!("{}-{number}", self.client_id)),
        ];
        if let Some((user, password)) = &self.remoting.login {
            headers.push(("authorization", oms_probe::rocketmq::grpc_authorization(user, password, &date_time)));
        }
        headers.push(("x-mq-date-time", date_time));
        for (name, value) in headers {
            if let Ok(value) = MetadataValue::try_from(value.as_str()) {
                request.metadata_mut().insert(name, value);
            }
        }
        request
    }
}

fn resource(name: &str) -> proto::Resource {
    proto::Resource { resource_namespace: String::new(), name: name.to_owned() }
}

/// The consumer group of a durable position: RocketMQ names take no dot, and a tenant's sit under
/// its namespace prefix (`<namespace>%`), as its topics do.
#[must_use]
pub fn consumer_group(durable: &Durable) -> String {
    format!("{}%{}-{}", durable.tenant, durable.kind, durable.name).replace('.', "_")
}

/// What a receive task hands the source.
type Delivery = Result<proto::Message, ConnectorError>;

pub struct RocketmqSource {
    proxy: Proxy,
    group: proto::Resource,
    topic: proto::Resource,
    deliveries: mpsc::Receiver<Delivery>,
    ids: MessageIds,
    /// To the task that sends acknowledgements in batches.
    acks: mpsc::Sender<AckCommand>,
    /// Why that task stopped, once it has.
    ack_failure: Arc<std::sync::Mutex<Option<String>>>,
    /// The receive loop, the heartbeats, the telemetry stream and the acks; stopped with the source.
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// What the ack task is told.
enum AckCommand {
    Ack {
        message_id: String,
        receipt_handle: String,
    },
    /// Answered once every acknowledgement before it went out.
    Flush(oneshot::Sender<()>),
}

impl Drop for RocketmqSource {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl RocketmqSource {
    pub async fn connect(
        endpoint: &Endpoint,
        durable: &Durable,
        start: Start,
        in_flight: u32,
    ) -> Result<Self, ConnectorError> {
        let group = consumer_group(durable);
        // A client id of this connection's own: what an earlier one held is given back once the
        // proxy counts that client gone, never renewed for this one.
        let connection = getrandom::u32().unwrap_or_else(|_| std::process::id());
        let proxy = Proxy::connect(endpoint, &format!("{group}@{}#{connection:08x}", hostname())).await?;
        let (remoting, topic, named) = (proxy.remoting.clone(), endpoint.queue.clone(), group.clone());
        let prepared = tokio::task::spawn_blocking(move || positions::prepare(&remoting, &topic, &named, start))
            .await
            .map_err(|e| connect_error(endpoint, e))?
            .map_err(|e| connect_error(endpoint, format!("preparing consumer group {group}: {e}")))?;
        tracing::info!(
            message = "RocketMQ consumer group ready.",
            group,
            queues = prepared.queues,
            started = prepared.started
        );
        let (group, topic) = (resource(&group), resource(&endpoint.queue));
        let mut tasks = vec![
            telemetry(&proxy, subscription_settings(&proxy, &group, &topic))
                .await
                .map_err(|e| connect_error(endpoint, e))?,
        ];
        tasks.push(tokio::spawn(heartbeats(proxy.clone(), group.clone())));
        let assignment = proto::QueryAssignmentRequest {
            topic: Some(topic.clone()),
            group: Some(group.clone()),
            endpoints: Some(proxy.endpoints.clone()),
        };
        let answer = proxy
            .client
            .clone()
            .query_assignment(proxy.request(assignment, Some(CALL_TIMEOUT)))
            .await
            .map_err(|s| connect_error(endpoint, status_text(&s)))?
            .into_inner();
        if let Some(why) = refused(answer.status.as_ref()) {
            return Err(connect_error(endpoint, format!("assignment of topic {}: {why}", endpoint.queue)));
        }
        let queues: Vec<proto::MessageQueue> = answer.assignments.into_iter().filter_map(|a| a.message_queue).collect();
        if queues.is_empty() {
            return Err(connect_error(
                endpoint,
                format!("no broker serves topic {} to group {}", endpoint.queue, group.name),
            ));
        }
        // A small buffer: what waits here is invisible too, and counts against the invisible time.
        let (handed, deliveries) = mpsc::channel(usize::try_from(in_flight.min(64)).unwrap_or(64));
        tasks.push(tokio::spawn(receive_loop(proxy.clone(), group.clone(), queues, handed)));
        let (acks, commands) = mpsc::channel(ACK_BATCH * 8);
        let ack_failure = Arc::new(std::sync::Mutex::new(None));
        let acker = Acker { proxy: proxy.clone(), group: group.clone(), topic: topic.clone() };
        tasks.push(tokio::spawn(acker.run(commands, ack_failure.clone())));
        let ids = MessageIds::positional(endpoint.access_point.as_deref(), &endpoint.queue);
        Ok(Self { proxy, group, topic, deliveries, ids, acks, ack_failure, tasks })
    }

    pub async fn next(&mut self) -> Result<Received, ConnectorError> {
        let message = self
            .deliveries
            .recv()
            .await
            .ok_or_else(|| ConnectorError::Receive("the receive loop stopped".into()))??;
        let system = message.system_properties.clone().unwrap_or_default();
        let receipt = system.receipt_handle.clone().unwrap_or_default();
        let redelivered = system.delivery_attempt.unwrap_or(1) > 1;
        let message_id = system.message_id.clone();
        let message = incoming(message, &self.ids).map_err(ConnectorError::Receive)?;
        Ok(Received { message, ack: Ack::Rocketmq(Box::new((message_id, receipt))), gap: 0, redelivered })
    }

    /// Messages waiting for this worker: those the group has not popped yet, and those popped
    /// into this source's buffer (the pipeline counts what it has in flight); `None` when the
    /// brokers cannot be asked.
    pub async fn backlog(&self) -> Option<u64> {
        let buffered = u64::try_from(self.deliveries.len()).unwrap_or(0);
        let (remoting, topic, group) = (self.proxy.remoting.clone(), self.topic.name.clone(), self.group.name.clone());
        let read = tokio::task::spawn_blocking(move || positions::backlog(&remoting, &topic, &group));
        match read.await {
            Ok(Ok(waiting)) => Some(waiting + buffered),
            Ok(Err(error)) => {
                tracing::debug!(message = "Cannot read the RocketMQ backlog.", error);
                None
            }
            Err(_) => None,
        }
    }

    /// Queues the acknowledgement of one message for the ack task; fails once that task has
    /// stopped (the proxy refused a batch), with its reason.
    pub async fn ack(&mut self, message_id: String, receipt_handle: String) -> Result<(), ConnectorError> {
        if self.acks.send(AckCommand::Ack { message_id, receipt_handle }).await.is_ok() {
            return Ok(());
        }
        let failure = self.ack_failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        Err(ConnectorError::Ack(failure.unwrap_or_else(|| "the ack task stopped".into())))
    }

    /// Before a shutdown: sends the acknowledgements queued, then tells the proxy this client
    /// ends, so that what it still holds is given back at once instead of after its heartbeats
    /// lapse.
    pub async fn flush(&mut self) {
        let (done, flushed) = oneshot::channel();
        if self.acks.send(AckCommand::Flush(done)).await.is_ok() {
            let _ = tokio::time::timeout(CALL_TIMEOUT, flushed).await;
        }
        let ending = proto::NotifyClientTerminationRequest { group: Some(self.group.clone()) };
        let request = self.proxy.request(ending, Some(CALL_TIMEOUT));
        if let Err(status) = self.proxy.client.clone().notify_client_termination(request).await {
            tracing::warn!(message = "Could not tell RocketMQ this client ends.", error = status_text(&status));
        }
    }
}

/// Sends acknowledgements in batches: what the pipeline acknowledged while the last batch was
/// on its way goes in the next.
struct Acker {
    proxy: Proxy,
    group: proto::Resource,
    topic: proto::Resource,
}

impl Acker {
    async fn run(self, mut commands: mpsc::Receiver<AckCommand>, failure: Arc<std::sync::Mutex<Option<String>>>) {
        while let Some(first) = commands.recv().await {
            let mut batch = vec![first];
            while batch.len() < ACK_BATCH {
                match commands.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            let mut entries = Vec::with_capacity(batch.len());
            let mut flushed = Vec::new();
            for command in batch {
                match command {
                    AckCommand::Ack { message_id, receipt_handle } => {
                        entries.push(proto::AckMessageEntry { message_id, receipt_handle });
                    }
                    AckCommand::Flush(done) => flushed.push(done),
                }
            }
            if !entries.is_empty()
                && let Err(why) = self.send(entries).await
            {
                *failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(why);
                return;
            }
            for done in flushed {
                let _ = done.send(());
            }
        }
    }

    /// One AckMessage. A receipt that expired (the message was given to another receive) cannot
    /// be acknowledged: the message comes again, a duplicate, and that is no failure.
    async fn send(&self, entries: Vec<proto::AckMessageEntry>) -> Result<(), String> {
        let count = entries.len();
        let request =
            proto::AckMessageRequest { group: Some(self.group.clone()), topic: Some(self.topic.clone()), entries };
        let answer = self
            .proxy
            .client
            .clone()
            .ack_message(self.proxy.request(request, Some(CALL_TIMEOUT)))
            .await
            .map_err(|s| format!("acknowledging {count} messages: {}", status_text(&s)))?
            .into_inner();
        let mut expired = 0;
        for entry in &answer.entries {
            match entry.status.as_ref().map(proto::Status::code) {
                Some(proto::Code::Ok) | None => {}
                Some(proto::Code::InvalidReceiptHandle) => expired += 1,
                Some(_) => {
                    let why = refused(entry.status.as_ref()).unwrap_or_default();
                    return Err(format!("acknowledging message {}: {why}", entry.message_id));
                }
            }
        }
        if expired > 0 {
            tracing::warn!(message = "Receipts expired before their ack; those messages come again.", expired);
        }
        match refused(answer.status.as_ref()) {
            // MULTIPLE_RESULTS: the entries say each one's outcome, read above.
            Some(_) if answer.status.as_ref().is_some_and(|s| s.code == 30000) => Ok(()),
            Some(why) if expired == 0 => Err(format!("acknowledging {count} messages: {why}")),
            _ => Ok(()),
        }
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| format!("pid{}", std::process::id()))
}

fn user_agent() -> proto::Ua {
    proto::Ua {
        language: proto::Language::Rust.into(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        platform: std::env::consts::OS.to_owned(),
        hostname: hostname(),
    }
}

fn duration(d: Duration) -> proto::Duration {
    proto::Duration { seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX), nanos: 0 }
}

fn subscription_settings(proxy: &Proxy, group: &proto::Resource, topic: &proto::Resource) -> proto::Settings {
    proto::Settings {
        client_type: Some(proto::ClientType::SimpleConsumer.into()),
        access_point: Some(proxy.endpoints.clone()),
        request_timeout: Some(duration(CALL_TIMEOUT)),
        pub_sub: Some(proto::settings::PubSub::Subscription(proto::Subscription {
            group: Some(group.clone()),
            subscriptions: vec![proto::SubscriptionEntry {
                topic: Some(topic.clone()),
                expression: Some(proto::FilterExpression {
                    r#type: proto::FilterType::Tag.into(),
                    expression: "*".into(),
                }),
            }],
            fifo: Some(false),
            receive_batch_size: Some(RECEIVE_BATCH),
            long_polling_timeout: Some(duration(LONG_POLL)),
        })),
        user_agent: Some(user_agent()),
    }
}

/// Opens the telemetry stream and sends `settings`; returns once the proxy answered (then it
/// holds them), with the task that keeps the stream open.
async fn telemetry(proxy: &Proxy, settings: proto::Settings) -> Result<tokio::task::JoinHandle<()>, String> {
    let (commands, outgoing) = mpsc::channel(4);
    let first =
        proto::TelemetryCommand { status: None, command: Some(proto::telemetry_command::Command::Settings(settings)) };
    commands.send(first).await.map_err(|_| "the telemetry stream closed".to_owned())?;
    let stream = tokio_stream::wrappers::ReceiverStream::new(outgoing);
    let mut replies = proxy
        .client
        .clone()
        .telemetry(proxy.request(stream, None))
        .await
        .map_err(|s| format!("telemetry: {}", status_text(&s)))?
        .into_inner();
    let answer = tokio::time::timeout(CALL_TIMEOUT, replies.message())
        .await
        .map_err(|_| "the proxy did not answer the client settings".to_owned())?
        .map_err(|s| format!("telemetry: {}", status_text(&s)))?;
    if let Some(why) = answer.as_ref().and_then(|a| refused(a.status.as_ref())) {
        return Err(format!("client settings refused: {why}"));
    }
    Ok(tokio::spawn(async move {
        // Held so that the stream stays open; the proxy's commands (stack traces, message
        // verification) are not answered.
        let _commands = commands;
        while let Ok(Some(_)) = replies.message().await {}
    }))
}

async fn heartbeats(proxy: Proxy, group: proto::Resource) {
    let mut every = tokio::time::interval(HEARTBEAT_EVERY);
    loop {
        every.tick().await;
        let beat = proto::HeartbeatRequest {
            group: Some(group.clone()),
            client_type: proto::ClientType::SimpleConsumer.into(),
        };
        if let Err(status) = proxy.client.clone().heartbeat(proxy.request(beat, Some(CALL_TIMEOUT))).await {
            tracing::warn!(message = "RocketMQ heartbeat failed.", error = status_text(&status));
        }
    }
}

/// Receives from the assigned queues in turn and hands each message on; a failed receive is
/// handed on as an error and ends the loop (the worker reconnects).
async fn receive_loop(
    proxy: Proxy,
    group: proto::Resource,
    queues: Vec<proto::MessageQueue>,
    handed: mpsc::Sender<Delivery>,
) {
    // Each worker starts at another broker, so that one which keeps failing first starves none.
    let first = usize::try_from(getrandom::u64().unwrap_or(0) % queues.len() as u64).unwrap_or(0);
    for queue in queues.iter().cycle().skip(first) {
        let request = proto::ReceiveMessageRequest {
            group: Some(group.clone()),
            message_queue: Some(queue.clone()),
            filter_expression: Some(proto::FilterExpression {
                r#type: proto::FilterType::Tag.into(),
                expression: "*".into(),
            }),
            batch_size: RECEIVE_BATCH,
            invisible_duration: Some(duration(INVISIBLE)),
            auto_renew: true,
            long_polling_timeout: Some(duration(LONG_POLL)),
        };
        let received = receive(&proxy, request).await;
        let stop = received.is_err();
        for delivery in received.map_or_else(|e| vec![Err(e)], |messages| messages.into_iter().map(Ok).collect()) {
            if handed.send(delivery).await.is_err() {
                return;
            }
        }
        if stop {
            return;
        }
    }
}

/// One long poll: the messages it brought (none when the queue stayed empty, or after a second's
/// pause when the proxy is busy). Any other failure, a poll that outlives its deadline included,
/// ends the connection: the proxy renews what it handed this client while the client lives, so
/// messages lost on the way are only given back once the client is gone.
async fn receive(proxy: &Proxy, request: proto::ReceiveMessageRequest) -> Result<Vec<proto::Message>, ConnectorError> {
    let fail = |status: tonic::Status| ConnectorError::Receive(status_text(&status));
    let deadline = LONG_POLL + CALL_TIMEOUT;
    let mut answers =
        proxy.client.clone().receive_message(proxy.request(request, Some(deadline))).await.map_err(fail)?.into_inner();
    let mut messages = Vec::new();
    while let Some(answer) = answers.message().await.map_err(fail)? {
        match answer.content {
            Some(proto::receive_message_response::Content::Message(message)) => messages.push(message),
            Some(proto::receive_message_response::Content::Status(status)) => match status.code() {
                proto::Code::Ok | proto::Code::MessageNotFound => {}
                // Too many long polls waiting at the proxy, or it timed out on the broker.
                proto::Code::TooManyRequests | proto::Code::ProxyTimeout => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                _ => return Err(ConnectorError::Receive(refused(Some(&status)).unwrap_or_default())),
            },
            Some(proto::receive_message_response::Content::DeliveryTimestamp(_)) | None => {}
        }
    }
    Ok(messages)
}

/// A received message as the bridge carries it. The key is the first of RocketMQ's keys, the
/// tag travels as [`TAG_HEADER`], user properties as headers; the id is the one it arrived with,
/// else `<access point>/<topic>/<RocketMQ message id>` (the same on every delivery).
fn incoming(message: proto::Message, ids: &MessageIds) -> Result<Message, String> {
    let system = message.system_properties.unwrap_or_default();
    let payload = match system.body_encoding() {
        proto::Encoding::Gzip => inflate(&message.body)
            .map_err(|e| format!("message {} is compressed in a way the bridge cannot read: {e}", system.message_id))?,
        _ => message.body,
    };
    let mut headers: HeaderList =
        message.user_properties.into_iter().map(|(name, value)| (name, value.into_bytes())).collect();
    headers.sort();
    if let Some(tag) = system.tag.filter(|t| !t.is_empty()) {
        headers.push((TAG_HEADER.to_owned(), tag.into_bytes()));
    }
    let (own, headers) = take_bridge_headers(headers);
    let key = own.key.or_else(|| system.keys.into_iter().next().map(String::into_bytes));
    let born = system.born_timestamp.map(|t| t.seconds * 1000 + i64::from(t.nanos / 1_000_000));
    Ok(Message {
        key,
        payload,
        headers,
        timestamp_ms: born,
        id: ids.id_named(own.id, &system.message_id),
        provenance: own.provenance,
    })
}

/// A body RocketMQ marks compressed: gzip (5.x gRPC producers) or zlib (remoting producers).
fn inflate(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    if body.starts_with(&[0x1f, 0x8b]) {
        flate2::read::GzDecoder::new(body).read_to_end(&mut out)?;
    } else {
        flate2::read::ZlibDecoder::new(body).read_to_end(&mut out)?;
    }
    Ok(out)
}

pub struct RocketmqSink {
    proxy: Proxy,
    topic: proto::Resource,
    /// The topic takes FIFO messages only: each is sent in the message group of its key.
    fifo: bool,
}

impl RocketmqSink {
    pub async fn connect(endpoint: &Endpoint, client_id: &str) -> Result<Self, ConnectorError> {
        let proxy = Proxy::connect(endpoint, &format!("{client_id}-out@{}", hostname())).await?;
        let topic = resource(&endpoint.queue);
        let route = proto::QueryRouteRequest { topic: Some(topic.clone()), endpoints: Some(proxy.endpoints.clone()) };
        let answer = proxy
            .client
            .clone()
            .query_route(proxy.request(route, Some(CALL_TIMEOUT)))
            .await
            .map_err(|s| connect_error(endpoint, status_text(&s)))?
            .into_inner();
        if let Some(why) = refused(answer.status.as_ref()) {
            return Err(connect_error(endpoint, format!("route of topic {}: {why}", endpoint.queue)));
        }
        let accepts = |kind: proto::MessageType| {
            answer.message_queues.iter().any(|q| q.accept_message_types.contains(&i32::from(kind)))
        };
        let fifo = accepts(proto::MessageType::Fifo) && !accepts(proto::MessageType::Normal);
        Ok(Self { proxy, topic, fifo })
    }

    /// Sends `message`; a message RocketMQ cannot take is refused through its confirmation, as
    /// the pipeline expects of a refusal for good.
    pub fn send(&self, message: &Message) -> Confirm {
        let wire = outgoing(message, &self.topic, self.fifo);
        let (proxy, id) = (self.proxy.clone(), message.id.clone());
        Box::pin(async move {
            let wire = wire?;
            let request = proxy.request(proto::SendMessageRequest { messages: vec![wire] }, Some(CALL_TIMEOUT));
            let answer = proxy
                .client
                .clone()
                .send_message(request)
                .await
                .map_err(|s| ConnectorError::Send(status_text(&s)))?
                .into_inner();
            let status = answer.entries.first().and_then(|e| e.status.clone()).or(answer.status);
            match status.as_ref().map(|s| (s.code(), s.code)) {
                Some((proto::Code::Ok, _)) => Ok(Delivered::Stored),
                Some((_, code)) if refused_for_good(code) => Err(ConnectorError::Rejected {
                    reason: "rejected_by_broker",
                    message: format!("message {id}: {}", refused(status.as_ref()).unwrap_or_default()),
                }),
                _ => {
                    Err(ConnectorError::Send(format!("message {id}: {}", refused(status.as_ref()).unwrap_or_default())))
                }
            }
        })
    }
}

/// Whether the same message would be refused again, whatever the time ([`REFUSED_FOR_GOOD`]).
fn refused_for_good(code: i32) -> bool {
    REFUSED_FOR_GOOD.contains(&code)
}

/// The message as RocketMQ takes it: the key as its one key (text keys only), headers as user
/// properties (text values only, as NATS headers), [`TAG_HEADER`] as the tag, and the bridge's id
/// and provenance as properties. RocketMQ's own message id is derived from the bridge's, so every
/// resend of a message carries the same one. An empty payload is refused (RocketMQ stores none).
fn outgoing(message: &Message, topic: &proto::Resource, fifo: bool) -> Result<proto::Message, ConnectorError> {
    if message.payload.is_empty() {
        return Err(ConnectorError::Rejected {
            reason: "empty",
            message: format!("message {}: RocketMQ stores no message without a body", message.id),
        });
    }
    let mut properties = std::collections::HashMap::new();
    let mut tag = None;
    for (name, value) in &message.headers {
        // RocketMQ refuses control characters in property names and values (NUL, tab, ...).
        let Some(value) = std::str::from_utf8(value).ok().filter(|v| is_text(v)).map(str::to_owned) else {
            continue;
        };
        if !is_text(name) {
            continue;
        }
        if name == TAG_HEADER {
            tag = Some(value);
        } else {
            properties.insert(name.clone(), value);
        }
    }
    properties.insert(MESSAGE_ID_HEADER.to_owned(), message.id.clone());
    if let Some(hops) = message.provenance_after(None) {
        properties.insert(PROVENANCE_HEADER.to_owned(), hops);
    }
    // RocketMQ splits its keys at spaces: a text key with one rides as property `oms-key`, which
    // the source reads first; a binary key is dropped, as on NATS.
    let text_key = message.key.as_deref().and_then(|k| std::str::from_utf8(k).ok()).filter(|k| is_text(k));
    let key = text_key.filter(|k| !k.contains(char::is_whitespace)).map(str::to_owned);
    if let (None, Some(text)) = (&key, text_key) {
        properties.insert(KEY_HEADER.to_owned(), text.to_owned());
    }
    let now_ms = i64::try_from(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis(),
    )
    .unwrap_or(0);
    let born_ms = message.timestamp_ms.unwrap_or(now_ms);
    let system = proto::SystemProperties {
        tag,
        message_group: fifo.then(|| message_group(text_key, &topic.name)),
        keys: key.into_iter().collect(),
        message_id: rocketmq_message_id(&message.id),
        body_encoding: proto::Encoding::Identity.into(),
        message_type: if fifo { proto::MessageType::Fifo } else { proto::MessageType::Normal }.into(),
        born_timestamp: Some(proto::Timestamp {
            seconds: born_ms.div_euclid(1000),
            nanos: i32::try_from(born_ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
        }),
        born_host: hostname(),
        ..proto::SystemProperties::default()
    };
    Ok(proto::Message {
        topic: Some(topic.clone()),
        user_properties: properties,
        system_properties: Some(system),
        body: message.payload.clone(),
    })
}

/// The FIFO message group of a key: the key itself where RocketMQ takes it (under 64 bytes),
/// else a digest of it; one group for every message without a key.
fn message_group(key: Option<&str>, topic: &str) -> String {
    match key {
        Some(key) if key.len() < 64 => key.to_owned(),
        Some(key) => format!("key-{}", oms_probe::rocketmq::upper_hex(&Sha256::digest(key.as_bytes())[..16])),
        None => topic.to_owned(),
    }
}

/// Text RocketMQ takes as a key, property name or value: not blank, no control character.
fn is_text(text: &str) -> bool {
    !text.trim().is_empty() && !text.chars().any(char::is_control)
}

/// RocketMQ's message id of a bridged message: `01` and 32 hex digits, as its own clients make
/// them, from a hash of the bridge's stable id.
fn rocketmq_message_id(stable_id: &str) -> String {
    let digest = Sha256::digest(stable_id.as_bytes());
    format!("01{}", oms_probe::rocketmq::upper_hex(&digest[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic() -> proto::Resource {
        resource("orders")
    }

    #[test]
    fn a_message_goes_out_with_its_key_tag_properties_and_a_message_id_of_its_stable_id() {
        let message = Message {
            key: Some(b"customer-7".to_vec()),
            payload: b"hello".to_vec(),
            headers: vec![
                ("trace".into(), b"abc".to_vec()),
                (TAG_HEADER.into(), b"paid".to_vec()),
                ("binary".into(), vec![0xff, 0x00]),
            ],
            timestamp_ms: Some(1_700_000_000_123),
            id: "acme/k/orders/0/42".into(),
            provenance: vec!["acme/k".into()],
        };
        let wire = outgoing(&message, &topic(), false).unwrap();
        let system = wire.system_properties.clone().unwrap();
        assert_eq!(system.keys, ["customer-7"]);
        assert_eq!(system.tag.as_deref(), Some("paid"));
        assert_eq!(system.message_group, None, "a NORMAL topic takes no message group");
        assert_eq!(system.message_type(), proto::MessageType::Normal);
        assert_eq!(system.born_timestamp, Some(proto::Timestamp { seconds: 1_700_000_000, nanos: 123_000_000 }));
        assert_eq!(wire.user_properties["trace"], "abc");
        assert_eq!(wire.user_properties[MESSAGE_ID_HEADER], "acme/k/orders/0/42");
        assert_eq!(wire.user_properties[PROVENANCE_HEADER], "acme/k");
        assert!(!wire.user_properties.contains_key("binary"), "binary values are not text properties");
        assert_eq!(system.message_id, rocketmq_message_id("acme/k/orders/0/42"), "a resend has the same id");
        assert_eq!(system.message_id.len(), 34);
        assert_ne!(rocketmq_message_id("a"), rocketmq_message_id("b"));

        let fifo = outgoing(&message, &topic(), true).unwrap().system_properties.unwrap();
        assert_eq!(fifo.message_group.as_deref(), Some("customer-7"), "per-key order on a FIFO topic");
        let long = Message { key: Some(vec![b'k'; 80]), ..message.clone() };
        let group = outgoing(&long, &topic(), true).unwrap().system_properties.unwrap().message_group.unwrap();
        assert!(group.len() < 64 && group.starts_with("key-"), "RocketMQ takes groups under 64 bytes: {group}");
    }

    #[test]
    fn what_rocketmq_would_refuse_is_left_out_or_carried_elsewhere_not_sent() {
        let message = Message {
            key: Some(b"two words".to_vec()),
            payload: b"p".to_vec(),
            headers: vec![
                ("tabbed".into(), b"a\tb".to_vec()),
                ("nul".into(), b"a\0".to_vec()),
                ("ok".into(), b"v".to_vec()),
            ],
            id: "i".into(),
            ..Message::default()
        };
        let wire = outgoing(&message, &topic(), false).unwrap();
        assert!(wire.system_properties.clone().unwrap().keys.is_empty(), "RocketMQ splits keys at spaces");
        assert_eq!(wire.user_properties[KEY_HEADER], "two words");
        assert_eq!(wire.user_properties["ok"], "v");
        assert!(!wire.user_properties.contains_key("tabbed") && !wire.user_properties.contains_key("nul"));
        let back = incoming(wire, &MessageIds::positional(None, "orders")).unwrap();
        assert_eq!(back.key.as_deref(), Some(&b"two words"[..]), "the key comes back whole");
        let binary = Message { key: Some(vec![0, 159, 146]), ..message };
        let wire = outgoing(&binary, &topic(), false).unwrap();
        assert!(wire.system_properties.unwrap().keys.is_empty() && !wire.user_properties.contains_key(KEY_HEADER));
    }

    #[test]
    fn only_refusals_of_the_message_itself_are_for_good() {
        for code in [40004, 40007, 41301, 43101] {
            assert!(refused_for_good(code), "{code}");
        }
        // Authorization, a missing topic, a topic of another type: every message would fail.
        for code in [40100, 40300, 40402, 40014, 50000] {
            assert!(!refused_for_good(code), "{code}");
        }
    }

    #[test]
    fn an_empty_payload_is_refused_for_good() {
        let error = outgoing(&Message { id: "x".into(), ..Message::default() }, &topic(), false).unwrap_err();
        assert!(matches!(error, ConnectorError::Rejected { reason: "empty", .. }), "{error}");
    }

    #[test]
    fn a_received_message_keeps_its_id_key_tag_and_properties_and_arrives_with_one_otherwise() {
        let ids = MessageIds::positional(Some("acme/r"), "orders");
        let sent = outgoing(
            &Message {
                key: Some(b"k1".to_vec()),
                payload: b"p".to_vec(),
                headers: vec![("h".into(), b"v".to_vec()), (TAG_HEADER.into(), b"t".to_vec())],
                timestamp_ms: Some(5_000),
                id: "upstream-id".into(),
                provenance: vec!["acme/k".into()],
            },
            &topic(),
            false,
        )
        .unwrap();
        let back = incoming(sent, &ids).unwrap();
        assert_eq!(back.key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(back.id, "upstream-id");
        assert_eq!(back.provenance, ["acme/k"]);
        assert_eq!(back.timestamp_ms, Some(5_000));
        assert_eq!(back.headers, [("h".to_owned(), b"v".to_vec()), (TAG_HEADER.to_owned(), b"t".to_vec())]);

        let native = proto::Message {
            topic: Some(topic()),
            user_properties: std::collections::HashMap::new(),
            system_properties: Some(proto::SystemProperties { message_id: "01ABC".into(), ..Default::default() }),
            body: b"x".to_vec(),
        };
        assert_eq!(
            incoming(native, &ids).unwrap().id,
            "acme/r/orders/01ABC",
            "RocketMQ's id, the same on each delivery"
        );
    }

    #[test]
    fn a_compressed_body_is_inflated_and_one_that_cannot_be_is_an_error_not_a_payload() {
        use std::io::Write as _;
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gzip.write_all(b"large body").unwrap();
        let mut system = proto::SystemProperties { message_id: "01A".into(), ..Default::default() };
        system.set_body_encoding(proto::Encoding::Gzip);
        let ids = MessageIds::positional(None, "orders");
        let message = |body: Vec<u8>| proto::Message {
            topic: Some(topic()),
            user_properties: std::collections::HashMap::new(),
            system_properties: Some(system.clone()),
            body,
        };
        assert_eq!(incoming(message(gzip.finish().unwrap()), &ids).unwrap().payload, b"large body");
        assert!(incoming(message(b"not compressed".to_vec()), &ids).unwrap_err().contains("01A"));
    }

    #[test]
    fn consumer_groups_take_no_dot_and_sit_under_the_tenants_namespace() {
        assert_eq!(consumer_group(&Durable::bridge("acme", "orders.eu")), "acme%oms-bridge-orders_eu");
    }
}
