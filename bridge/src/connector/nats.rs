//! NATS JetStream. Source: a durable pull consumer with explicit acks on the stream named by the
//! queue. Sink: publishes to the stream's subject with `Nats-Msg-Id` set to the message id, so
//! JetStream drops repeats inside its duplicate window.
//!
//! One holder at a time where order is kept: the consumer pins one pull client of the group
//! [`PIN_GROUP`] and holds the other workers back. A worker whose messages carry a pin it has not
//! seen before has just become the holder; it resets the consumer to its ack floor, so that what
//! an earlier holder took and never acknowledged comes again, in stream order, before anything
//! newer, and it drops (unacknowledged) what was delivered to it before the reset.
//!
//! Gaps: stream sequences run on from the consumer's ack floor. When a message arrives past the
//! next expected sequence and the stream now starts past it too, limits or a purge removed
//! messages before they were bridged: reported, never silent. (A redelivery arriving later, or
//! another subject's messages, make sequences jump without a gap; the stream's first sequence
//! tells the two apart.)

use async_nats::HeaderMap;
use async_nats::jetstream::stream::{ConsumerResetError, ConsumerResetResponse};
use async_nats::jetstream::{self, consumer};
use futures::{FutureExt, StreamExt};

use super::{Confirm, ConnectorError, Delivered, Received, Start};
use crate::message::{
    KEY_HEADER, MESSAGE_ID_HEADER, Message, MessageIds, NATS_MSG_ID_HEADER, PROVENANCE_HEADER, is_text_header_value,
    take_bridge_headers,
};
use oms_bridge_config::{Endpoint, Protocol};

mod batch;

/// Messages per pull request at least, and the idle heartbeat of a pull (the client's defaults).
const PULL_BATCH: usize = 200;
const PULL_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(15);

/// How long a shutdown waits to write queued acks to the connection.
const FLUSH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// The priority group whose pin says which worker of a Bridge takes the messages.
const PIN_GROUP: &str = "oms-bridge";
/// How long a pin outlives its holder's last pull request: a standby takes over this long after
/// its holder was killed (a holder that stops cleanly gives the pin up at once). Above the pull
/// expiry plus the 5 s the client waits before pulling again when nobody reads its messages, so
/// a holder with a full window keeps its pin.
const PIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// A holder renews its pin with every pull request, so pulls expire well inside [`PIN_TIMEOUT`];
/// the heartbeat must be under half the expiry.
const PINNED_PULL_EXPIRY: std::time::Duration = std::time::Duration::from_secs(2);
const PINNED_PULL_HEARTBEAT: std::time::Duration = std::time::Duration::from_millis(900);

async fn client(endpoint: &Endpoint) -> Result<async_nats::Client, ConnectorError> {
    let servers: Vec<String> = endpoint.servers.iter().map(|(h, p)| format!("nats://{h}:{p}")).collect();
    let fail =
        |message: String| ConnectorError::Connect { protocol: Protocol::Nats, servers: servers.join(","), message };
    // The binding's login: a user and password, a token, or a credentials file (JWT and seed).
    let mut options = if let Some((user, password)) = super::credentials(endpoint) {
        async_nats::ConnectOptions::with_user_and_password(user, password)
    } else if let Some(token) = super::credential_file(endpoint, "token") {
        async_nats::ConnectOptions::with_token(token)
    } else if let Some(creds) = super::credential_file(endpoint, "nats.creds") {
        // The client's parser wants a line end after the seed's closing marker.
        async_nats::ConnectOptions::with_credentials(&format!("{creds}\n"))
            .map_err(|e| fail(format!("nats.creds: {e}")))?
    } else {
        async_nats::ConnectOptions::new()
    };
    // With a CA bundle the connection is TLS or nothing: the server's certificate is checked
    // against it and the name dialled, never against the system roots.
    if let Some(files) = &endpoint.tls {
        let config = crate::gateway::tls::broker_client_config(files).map_err(|e| fail(e.to_string()))?;
        options = options.tls_client_config(config).require_tls(true);
    }
    options.connect(servers.clone()).await.map_err(|e| fail(e.to_string()))
}

pub struct NatsSource {
    /// Kept to flush the acks it queued before a shutdown.
    client: async_nats::Client,
    /// `None` after a shutdown: a holder stops pulling before it gives its pin up.
    messages: Option<consumer::pull::Stream>,
    consumer: consumer::PullConsumer,
    stream: jetstream::stream::Stream,
    /// Stream sequences: the same for every delivery of a message.
    ids: MessageIds,
    /// Highest stream sequence accounted for: acked before this run, received, or reported lost.
    seen_through: Option<u64>,
    /// Where order is kept: this worker's standing in the consumer's priority group.
    pin: Option<Pin>,
    /// A reset to the ack floor under way.
    resetting: Option<tokio::task::JoinHandle<Result<ConsumerResetResponse, ConsumerResetError>>>,
    /// A message taken from the stream, with its stream sequence, while its gap check reads the
    /// stream's first sequence: `next` may be dropped at that await (the pipeline selects on it),
    /// and the message waits here for the next call instead of coming again only after the ack
    /// wait, behind later ones of its key.
    parked: Option<(u64, Received)>,
    /// The stream's first sequence, read for the parked message's gap check.
    first_sequence: Option<u64>,
    /// Acks held back where one covers every earlier message (`AckPolicy::All`).
    acks: AckRun<jetstream::Message>,
    /// Counts the consumer's resets. An ack names a delivery number, which a reset starts again
    /// at 1; a cumulative ack of an older, higher one would make the server ignore the acks after
    /// it until deliveries pass that number. So acks from before the last reset are not sent (the
    /// reset brings their messages again).
    epoch: u64,
}

/// How a JetStream message is acknowledged: the message (its ack subject) and the consumer's
/// reset count when it was received.
pub struct NatsAck {
    message: jetstream::Message,
    epoch: u64,
}

/// Acks of an `AckPolicy::All` consumer: the pipeline acknowledges in delivery order and only
/// what the target confirmed, so one ack of the latest covers a run of them, as AMQP's `multiple`
/// does. Sent when no message is ready (the source waits anyway) or when the run is long; lost on
/// kill -9, which only brings those messages again.
struct AckRun<T> {
    /// The latest acknowledged message not yet told to the server.
    latest: Option<T>,
    held: u32,
    /// The longest run held: with the window unconfirmed besides, under the consumer's
    /// ack-pending limit, so the server never stops delivering for acks held here.
    longest: u32,
    /// `false` for a consumer with explicit acks: each message is acked alone.
    covers_earlier: bool,
}

impl<T> AckRun<T> {
    fn new(covers_earlier: bool, in_flight: u32) -> Self {
        Self { latest: None, held: 0, longest: (in_flight / 2).max(1), covers_earlier }
    }

    /// Holds `message`'s ack, or gives back what to send now.
    fn hold(&mut self, message: T) -> Option<T> {
        if !self.covers_earlier {
            return Some(message);
        }
        self.latest = Some(message);
        self.held += 1;
        if self.held >= self.longest { self.take() } else { None }
    }

    /// The ack to send for the run held, if any.
    fn take(&mut self) -> Option<T> {
        self.held = 0;
        self.latest.take()
    }
}

/// A worker's standing in the consumer's priority group, and what a new pin still asks of it.
#[derive(Debug, Default)]
struct Pin {
    /// The `Nats-Pin-Id` of the messages delivered to this worker.
    id: Option<String>,
    /// The pin the server names as held, at the last backlog read.
    held: Option<String>,
    /// Reset: what was delivered before it is dropped until the first delivery after it.
    stale: bool,
    /// Stream sequences an earlier holder was given: they come again as redeliveries.
    redelivered_through: u64,
}

/// What a worker does with a message delivered under a pin.
#[derive(Debug, PartialEq, Eq)]
enum Under {
    /// Forward it.
    Take,
    /// Drop it unacknowledged: the reset brings it again.
    Drop,
    /// First message of a new pin: reset the consumer, then drop it. `next` reads nothing more
    /// until the reset is over.
    Reset,
}

impl Pin {
    /// What to do with a message that carries `pin`, with its stream sequence, delivery count and
    /// consumer (delivery) sequence: a reset starts the consumer sequence at 1 again.
    fn judge(&mut self, pin: Option<&str>, sequence: u64, delivered: i64, consumer_sequence: u64) -> Under {
        if pin.is_some() && pin != self.id.as_deref() {
            self.id = pin.map(str::to_owned);
            // JetStream hands out new messages in stream order: every sequence before the first
            // new one given to this worker went to an earlier holder.
            self.redelivered_through = if delivered > 1 { sequence } else { sequence.saturating_sub(1) };
            return Under::Reset;
        }
        if self.stale && consumer_sequence != 1 {
            return Under::Drop;
        }
        self.stale = false;
        Under::Take
    }

    /// The reset asked for by a new pin is over: `done` when the server reset the consumer, so
    /// what was delivered before it is dropped; not done where the server cannot reset.
    fn reset_over(&mut self, done: bool) {
        self.stale = done;
    }
}

/// Unacknowledged messages the server lets a worker with window `in_flight` hold: twice the
/// window. With exactly the window, every ack still on its way to the server and every message
/// on its way to the worker is one the window cannot take, and the server stops delivering until
/// the acks land. The window still bounds what the bridge holds unconfirmed; this bounds what
/// comes again after a kill -9.
fn max_ack_pending(in_flight: u32) -> i64 {
    i64::from(in_flight).saturating_mul(2)
}

/// The consumer's priority settings: one pinned holder where order is kept, none otherwise.
fn set_priority(config: &mut consumer::pull::Config, pinned: bool) {
    config.priority_policy = priority_policy(pinned);
    (config.priority_groups, config.priority_timeout) =
        if pinned { (vec![PIN_GROUP.to_owned()], PIN_TIMEOUT) } else { (Vec::new(), std::time::Duration::ZERO) };
}

fn priority_policy(pinned: bool) -> consumer::PriorityPolicy {
    if pinned { consumer::PriorityPolicy::PinnedClient } else { consumer::PriorityPolicy::None }
}

impl NatsSource {
    /// Connects to the stream named by the endpoint's queue through the durable consumer
    /// `durable`; where `keep_order`, only the worker holding the consumer's pin gets messages.
    pub async fn connect(
        endpoint: &Endpoint,
        durable: &str,
        start: Start,
        in_flight: u32,
        keep_order: bool,
    ) -> Result<Self, ConnectorError> {
        let connection = client(endpoint).await?;
        // Acks that cover earlier messages need the reset a new holder does (NATS 2.14): without
        // it, the new holder's first ack would cover what a killed holder was given and never sent.
        let can_reset = oms_bridge_config::nats_2_14_or_later(&connection.server_info().version);
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
        let max_ack_pending = max_ack_pending(in_flight);
        let mut config = consumer::pull::Config {
            durable_name: Some(durable_name.clone()),
            // One holder: an ack covers the earlier messages, all of them its own. Competing
            // workers (ordering None) ack each message alone: an ack of one would cover another
            // worker's unconfirmed ones.
            ack_policy: if keep_order && can_reset { consumer::AckPolicy::All } else { consumer::AckPolicy::Explicit },
            deliver_policy,
            max_ack_pending,
            ..consumer::pull::Config::default()
        };
        set_priority(&mut config, keep_order);
        let mut consumer = stream.get_or_create_consumer(&durable_name, config).await.map_err(|e| fail(&e))?;
        // A consumer made while order was kept acks in runs, and JetStream cannot change an ack
        // policy: competing workers on it would ack each other's unconfirmed messages, and making
        // it again would lose its position (or an interest stream's messages). Its workers keep
        // taking turns.
        let acks_cover_earlier = consumer.cached_info().config.ack_policy == consumer::AckPolicy::All;
        if acks_cover_earlier && !keep_order {
            tracing::warn!(
                message = "Ordering None, but the consumer acks in runs (made while order was kept): workers take turns on it instead of competing. Delete the consumer to have them compete; it is made again from the Bridge's start position.",
                consumer = %durable_name
            );
        }
        let keep_order = keep_order || acks_cover_earlier;
        let wanted_policy = priority_policy(keep_order);
        // A consumer made by an earlier version, under the other ordering or with another window
        // takes this one's priority settings and ack-pending limit (JetStream updates them in
        // place, keeping the position).
        let existing = &consumer.cached_info().config;
        if existing.priority_policy != wanted_policy || existing.max_ack_pending != max_ack_pending {
            let mut updated =
                <consumer::pull::Config as consumer::FromConsumer>::try_from_consumer_config(existing.clone())
                    .map_err(|e| fail(&e))?;
            set_priority(&mut updated, keep_order);
            updated.max_ack_pending = max_ack_pending;
            consumer = stream.update_consumer(updated).await.map_err(|e| fail(&e))?;
        }
        // A consumer with progress continues from its ack floor; a new one has nothing to lose yet.
        let floor = consumer.cached_info().ack_floor.stream_sequence;
        // One pull request asks for as many messages as the window may hold (the client's default
        // is 200): fewer requests per message, and the server can fill the window at once.
        let pull =
            consumer.stream().max_messages_per_batch(usize::try_from(in_flight).unwrap_or(PULL_BATCH).max(PULL_BATCH));
        let pull = if keep_order {
            pull.group(PIN_GROUP).expires(PINNED_PULL_EXPIRY).heartbeat(PINNED_PULL_HEARTBEAT)
        } else {
            pull.heartbeat(PULL_HEARTBEAT)
        };
        let messages = pull.messages().await.map_err(|e| fail(&e))?;
        Ok(Self {
            client: connection,
            messages: Some(messages),
            consumer,
            stream,
            ids: MessageIds::positional(endpoint.access_point.as_deref(), &endpoint.queue),
            seen_through: (floor > 0).then_some(floor),
            pin: keep_order.then(Pin::default),
            resetting: None,
            parked: None,
            first_sequence: None,
            acks: AckRun::new(acks_cover_earlier, in_flight),
            epoch: 0,
        })
    }

    /// Whether this worker gets messages: always without pins; with them, while the server names
    /// this worker's pin as held (read with the backlog).
    pub fn takes_messages(&self) -> bool {
        self.pin.as_ref().is_none_or(|pin| pin.id.is_some() && pin.id == pin.held)
    }

    /// Writes the acks still queued in the client to the connection (acks do not wait for the
    /// server, and ones left behind at exit would bring their messages again after the ack wait),
    /// then stops pulling and gives up the pin, so that a standby takes over at once.
    pub async fn flush(&mut self) {
        if let Some(latest) = self.acks.take()
            && let Err(error) = ack(&latest).await
        {
            tracing::warn!(message = "Acks not sent before shutdown; their messages come again.", %error);
        }
        let unsent = match tokio::time::timeout(FLUSH_DEADLINE, self.client.flush()).await {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(error.to_string()),
            Err(_) => Some(format!("not written within {FLUSH_DEADLINE:?}")),
        };
        if let Some(unsent) = unsent {
            tracing::warn!(message = "Acks not flushed before shutdown; their messages come again.", error = %unsent);
        }
        if self.pin.as_ref().is_some_and(|pin| pin.id.is_some()) {
            self.messages = None;
            let name = self.consumer.cached_info().name.clone();
            if let Err(error) = self.stream.unpin_consumer(&name, PIN_GROUP).await {
                tracing::warn!(message = "Cannot give up the pin; a standby takes over after the pin timeout.", %error, timeout_s = PIN_TIMEOUT.as_secs());
            }
        }
    }

    /// Becomes the holder: the consumer starts again after its ack floor, so what an earlier
    /// holder was given and did not acknowledge comes first, in stream order. The reset runs as
    /// a task that [`Self::finish_reset`] awaits: `next` may be dropped mid-way (the pipeline
    /// selects on it), and a reset sent twice would deliver the stream twice.
    fn start_reset(&mut self) {
        self.forget_acks_before_reset();
        let mut consumer = self.consumer.clone();
        self.resetting = Some(tokio::spawn(async move { consumer.reset(None).await }));
    }

    /// A reset starts the consumer's delivery numbers again: acks held or still to come for what
    /// was delivered before it are not sent (see the `epoch` field).
    fn forget_acks_before_reset(&mut self) {
        self.epoch += 1;
        self.acks.take();
    }

    /// Awaits a reset [`Self::start_reset`] began, if one runs; cancel-safe (the task goes on
    /// and its handle stays).
    async fn finish_reset(&mut self) -> Result<(), ConnectorError> {
        let Some(resetting) = self.resetting.as_mut() else { return Ok(()) };
        let outcome = resetting.await;
        self.resetting = None;
        let Some(pin) = self.pin.as_mut() else { return Ok(()) };
        match outcome {
            Ok(Ok(reset)) => {
                let floor = reset.info.ack_floor.stream_sequence;
                self.seen_through = (floor > 0).then_some(floor);
                pin.reset_over(true);
                tracing::info!(
                    message = "Holding the source; its consumer starts again after the ack floor.",
                    ack_floor = floor
                );
            }
            // A server before 2.14 has no consumer reset: an earlier holder's messages come
            // again after the ack wait, maybe behind newer ones of their key.
            Ok(Err(error)) if matches!(error.kind(), jetstream::stream::ConsumerResetErrorKind::JetStream(e) if e.error_code() == jetstream::ErrorCode::BAD_REQUEST) =>
            {
                if self.acks.covers_earlier {
                    return Err(ConnectorError::Receive(format!(
                        "the consumer acks in runs and the NATS server cannot reset it to its ack floor (needs 2.14; was the server downgraded?): {error}"
                    )));
                }
                tracing::warn!(message = "The NATS server cannot reset a consumer (needs 2.14): order may break at this takeover.", %error);
                pin.reset_over(false);
            }
            Ok(Err(error)) => {
                return Err(ConnectorError::Receive(format!("resetting the consumer to its ack floor: {error}")));
            }
            Err(error) => return Err(ConnectorError::Receive(format!("resetting the consumer: {error}"))),
        }
        Ok(())
    }

    /// Messages removed from the stream before they were bridged, judged at a message with
    /// `sequence`; `None` while that needs the stream's first sequence and it is not read yet.
    fn gap_before(&mut self, sequence: u64) -> Option<u64> {
        let Some(seen) = self.seen_through else {
            self.seen_through = Some(sequence);
            return Some(0);
        };
        if sequence <= seen + 1 {
            self.seen_through = Some(seen.max(sequence));
            return Some(0);
        }
        let first = self.first_sequence.take()?;
        self.seen_through = Some(sequence);
        Some(first.min(sequence).saturating_sub(seen + 1))
    }

    /// Messages in the stream the consumer has not handed out yet: 0 for a standby, which holds
    /// none of them. Reads which pin the server names as held, too.
    pub async fn backlog(&mut self) -> Option<u64> {
        let info = self.consumer.get_info().await.ok()?;
        if let Some(pin) = self.pin.as_mut() {
            pin.held =
                info.priority_groups.iter().find(|g| g.group == PIN_GROUP).and_then(|g| g.pinned_client_id.clone());
            // A holder that is gone left messages it was given. A pin goes with a delivery, and a
            // consumer whose ack-pending limit they fill delivers nothing until the ack wait (30 s)
            // brings them back: any worker resets it to the ack floor, the next delivery pins a
            // new holder, and that one resets once more.
            if pin.held.is_none() && info.num_ack_pending > 0 {
                match self.consumer.reset(None).await {
                    Ok(_) => {
                        self.forget_acks_before_reset();
                        tracing::info!(
                            message = "No worker holds the pin and a gone one's messages are pending: the consumer starts again after its ack floor.",
                            pending = info.num_ack_pending
                        );
                    }
                    Err(error) => {
                        tracing::warn!(message = "Cannot reset the consumer whose holder is gone; its messages come again after the ack wait.", %error);
                    }
                }
            }
        }
        // An ack from before a reset (of a holder that lost the pin while alive) named a delivery
        // number above this holder's: the server ignores this holder's acks until its deliveries
        // pass it. A reset starts the numbers again.
        if self.acks.covers_earlier
            && self.takes_messages()
            && self.resetting.is_none()
            && info.ack_floor.consumer_sequence > info.delivered.consumer_sequence
        {
            tracing::warn!(
                message =
                    "The consumer's ack floor is past its deliveries (a late ack of an earlier holder): resetting it.",
                ack_floor = info.ack_floor.consumer_sequence,
                delivered = info.delivered.consumer_sequence
            );
            self.start_reset();
        }
        Some(if self.takes_messages() { info.num_pending } else { 0 })
    }

    /// The next message with the messages lost right before it; cancel-safe.
    pub async fn next(&mut self) -> Result<Received, ConnectorError> {
        loop {
            let (sequence, received) = match self.parked.take() {
                Some(parked) => parked,
                None => self.receive().await?,
            };
            if let Some(gap) = self.gap_before(sequence) {
                return Ok(Received { gap, ..received });
            }
            self.parked = Some((sequence, received));
            let first = match self.stream.get_info().await {
                Ok(info) => info.state.first_sequence,
                Err(error) => {
                    tracing::warn!(message = "Cannot read the stream's first sequence to check for a gap.", %error);
                    0
                }
            };
            self.first_sequence = Some(first);
        }
    }

    /// The next message to forward, with its stream sequence; its gap is not judged yet.
    async fn receive(&mut self) -> Result<(u64, Received), ConnectorError> {
        loop {
            self.finish_reset().await?;
            let messages =
                self.messages.as_mut().ok_or_else(|| ConnectorError::Receive("the source was shut down".into()))?;
            // The acks held back go out when the source would wait anyway.
            let next = if let Some(next) = messages.next().now_or_never() {
                next
            } else {
                // Cleared once written: a cancelled write leaves it to send again (a repeat is a no-op).
                if let Some(latest) = self.acks.latest.as_ref() {
                    ack(latest).await?;
                    self.acks.take();
                }
                messages.next().await
            };
            let message = next
                .ok_or_else(|| ConnectorError::Receive("the consumer stream ended".into()))?
                .map_err(|e| ConnectorError::Receive(e.to_string()))?;
            let info = message.info().map_err(|e| ConnectorError::Receive(e.to_string()))?;
            let (sequence, delivered) = (info.stream_sequence, info.delivered);
            let mut redelivered = delivered > 1;
            if let Some(pin) = self.pin.as_mut() {
                let id = message.headers.as_ref().and_then(|h| h.get_last(async_nats::header::NATS_PIN_ID));
                match pin.judge(id.map(async_nats::HeaderValue::as_str), sequence, delivered, info.consumer_sequence) {
                    Under::Take => redelivered |= sequence <= pin.redelivered_through,
                    Under::Drop => continue,
                    Under::Reset => {
                        self.start_reset();
                        continue;
                    }
                }
            }
            let timestamp_ms = i64::try_from(info.published.unix_timestamp_nanos() / 1_000_000).ok();
            let mut headers = Vec::new();
            if let Some(map) = &message.headers {
                for (name, values) in map.iter() {
                    // The server's pin id is for this consumer only.
                    if *name == async_nats::header::NATS_PIN_ID {
                        continue;
                    }
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
            let received = Received {
                message: converted,
                ack: super::Ack::Nats(Box::new(NatsAck { message, epoch: self.epoch })),
                gap: 0,
                redelivered,
            };
            return Ok((sequence, received));
        }
    }

    /// Acknowledges a message the target confirmed (in delivery order): at once, or held in a run.
    pub async fn ack(&mut self, acked: Box<NatsAck>) -> Result<(), ConnectorError> {
        if self.acks.covers_earlier && acked.epoch != self.epoch {
            return Ok(());
        }
        match self.acks.hold(acked.message) {
            Some(now) => ack(&now).await,
            None => Ok(()),
        }
    }
}

/// Acks at the server without waiting for its reply: a lost ack only means the message comes
/// again after the ack wait (a repeat the ack-pending limit bounds and JetStream targets drop),
/// never a loss, while waiting for a round trip per message would cap a source at a few hundred a
/// second.
async fn ack(message: &jetstream::Message) -> Result<(), ConnectorError> {
    message.ack().await.map_err(|e| ConnectorError::Ack(e.to_string()))
}

pub struct NatsSink {
    jetstream: jetstream::Context,
    subject: String,
    /// Where the stream allows fast batches (NATS 2.14+, `allow_batched`): publishes that keep
    /// order through failures.
    batches: Option<batch::BatchPublisher>,
}

impl NatsSink {
    /// A sink that may have `window` publishes awaiting their ack. The client holds a publish
    /// until one of its ack slots frees (5,000 unless told), and the pipeline frees slots only
    /// between sends: with fewer slots than the window, a full window would wait on itself forever.
    pub async fn connect(endpoint: &Endpoint, window: u32) -> Result<Self, ConnectorError> {
        let slots = usize::try_from(window).unwrap_or(usize::MAX);
        let connection = client(endpoint).await?;
        let jetstream = jetstream::ContextBuilder::new().max_ack_inflight(slots).build(connection.clone());
        let subject = endpoint.queue.clone();
        let batches = match stream_config(&jetstream, &subject).await {
            Some(config) if takes_ordered_batches(&config, &connection.server_info().version) => {
                let largest = usize::try_from(config.max_message_size).ok().filter(|size| *size > 0);
                tracing::info!(
                    message = "The target stream takes fast batches: publishing in them, in order without lanes.",
                    subject
                );
                Some(batch::BatchPublisher::start(connection, subject.clone(), largest, window).await?)
            }
            _ => None,
        };
        Ok(Self { jetstream, subject, batches })
    }

    /// Whether what the stream stores is always a prefix of what was sent (see `Sink::keeps_order`).
    pub fn keeps_order(&self) -> bool {
        self.batches.is_some()
    }

    /// Gets the last messages of a fast batch answered (see `Sink::flush`).
    pub async fn flush(&self, window_full: bool) {
        if let Some(batches) = &self.batches {
            batches.flush(window_full).await;
        }
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
        if let Some(batches) = &self.batches {
            return Ok(batches.send(headers, message.payload.clone().into()).await);
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

/// Whether fast batches into a stream of `config` on a server of `version` keep order through
/// failures. Not where the stream refuses new messages at its limits: the server could fail one
/// when storing it, after the checks that end a batch, and store the next. Not on replicated
/// streams either: there the server (2.15.2) takes a resend whose earlier copy is proposed but
/// not yet committed for a stored repeat, which a leader change can then undo.
fn takes_ordered_batches(config: &jetstream::stream::Config, version: &str) -> bool {
    config.allow_batch_publish
        && config.discard == jetstream::stream::DiscardPolicy::Old
        && !config.discard_new_per_subject
        && config.num_replicas <= 1
        && oms_bridge_config::nats_2_14_or_later(version)
}

/// The configuration of the stream that captures `subject`: whether it takes fast batches. A user
/// who may not read it publishes one message at a time, as before.
async fn stream_config(jetstream: &jetstream::Context, subject: &str) -> Option<jetstream::stream::Config> {
    let found = async {
        let name = jetstream.stream_by_subject(subject).await.ok()?;
        let stream = jetstream.get_stream(&name).await.ok()?;
        Some(stream.cached_info().config.clone())
    };
    let config = found.await;
    if config.is_none() {
        tracing::info!(
            message = "Cannot read the target stream's configuration; publishing one message at a time.",
            subject
        );
    }
    config
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_batches_only_where_they_keep_order_through_failures() {
        let allowed = jetstream::stream::Config { allow_batch_publish: true, ..Default::default() };
        assert!(takes_ordered_batches(&allowed, "2.15.2"));
        assert!(!takes_ordered_batches(&allowed, "2.13.0"), "no fast batches before 2.14");
        assert!(!takes_ordered_batches(&jetstream::stream::Config::default(), "2.15.2"), "not allowed");
        let refusing = jetstream::stream::Config { discard: jetstream::stream::DiscardPolicy::New, ..allowed.clone() };
        assert!(!takes_ordered_batches(&refusing, "2.15.2"), "a full stream could fail one and store the next");
        let per_subject = jetstream::stream::Config { discard_new_per_subject: true, ..allowed.clone() };
        assert!(!takes_ordered_batches(&per_subject, "2.15.2"));
        let replicated = jetstream::stream::Config { num_replicas: 3, ..allowed };
        assert!(!takes_ordered_batches(&replicated, "2.15.2"), "a resend of an uncommitted proposal");
    }

    #[test]
    fn a_new_pin_resets_the_consumer_once_and_drops_what_came_before_the_reset() {
        let mut pin = Pin::default();
        // An earlier holder was given sequences 1 to 40; this worker's first message is 41.
        assert_eq!(pin.judge(Some("a"), 41, 1, 41), Under::Reset);
        assert_eq!(pin.redelivered_through, 40, "what the earlier holder was given comes again");
        pin.reset_over(true);
        assert_eq!(pin.judge(Some("a"), 43, 1, 43), Under::Drop, "delivered before the reset");
        assert_eq!(pin.judge(Some("a"), 31, 1, 1), Under::Take, "the first delivery after it (ack floor 30)");
        assert_eq!(pin.judge(Some("a"), 32, 1, 2), Under::Take);
        assert_eq!(pin.judge(Some("a"), 33, 1, 3), Under::Take);
        // The pin came back to this worker after another held it: a new reset.
        assert_eq!(pin.judge(Some("b"), 90, 2, 9), Under::Reset);
        assert_eq!(pin.redelivered_through, 90, "a redelivery was given before");
        pin.reset_over(false);
        assert_eq!(pin.judge(Some("b"), 91, 1, 10), Under::Take, "a server that cannot reset: taken as it comes");
    }

    #[test]
    fn acks_that_cover_earlier_messages_go_as_one_per_run_and_explicit_ones_each_alone() {
        let mut run = AckRun::new(true, 6);
        assert_eq!((run.hold(1), run.hold(2)), (None, None), "held while the run is short");
        assert_eq!(run.hold(3), Some(3), "half the window: the latest goes, covering 1 and 2");
        assert_eq!(run.hold(4), None);
        assert_eq!(run.take(), Some(4), "sent when the source would wait");
        assert_eq!(run.take(), None, "nothing held after");
        let mut explicit = AckRun::new(false, 6);
        assert_eq!((explicit.hold(1), explicit.hold(2)), (Some(1), Some(2)));
        assert_eq!(explicit.take(), None);
        assert_eq!(AckRun::new(true, 1).hold(7), Some(7), "a window of 1 holds nothing back");
    }

    #[test]
    fn a_message_without_a_pin_is_taken_as_it_comes() {
        let mut pin = Pin::default();
        assert_eq!(pin.judge(None, 5, 1, 5), Under::Take);
        assert_eq!(pin.judge(None, 6, 1, 6), Under::Take);
    }
}
