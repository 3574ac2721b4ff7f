//! The forwarding loop: take from the source, send to the sink, and acknowledge at the source only
//! after the sink confirmed, in source order. Up to `in_flight` messages are between the two at
//! once; a full window stops reading (backpressure). Any failure ends the run without acking what
//! was not confirmed, so the supervisor's next run gets those messages again: nothing is lost,
//! repeats are bounded by the window and dropped by targets that deduplicate. A message whose
//! provenance names the target's access point, or that the filter does not match, is acknowledged
//! without being sent.
//!
//! Ordering through retries: a sink may store a later message while an earlier one fails (a
//! client that reconnects and sends on, a JetStream leader change), and the retry then lands
//! after it. So at most one message per ordering lane (its key under `PerKey`, its source
//! partition under `PerPartition`) is sent and unconfirmed at a time; later ones of that lane take
//! their place in the window unsent and go out, in order, as the one before them is confirmed.
//! Different lanes, and keyless messages under `PerKey`, stay pipelined. A sink that keeps order
//! through failures itself (Kafka's idempotent, gapless producer) needs no lanes: a hot key then
//! keeps the window full instead of one message per round trip.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use std::collections::HashMap;

use crate::connector::{Ack, Confirm, ConnectorError, Delivered, Sink, Source};
use crate::message::Message;
use crate::metrics::BridgeMetrics;
use oms_bridge_config::Ordering;
use oms_bridge_config::filter::Filter;

/// How often the source's backlog is read for `oms_bridge_source_lag_messages`.
pub const LAG_INTERVAL: Duration = Duration::from_secs(5);
/// How long a shutdown waits for the target to confirm what is in flight.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// The access points at both ends, for loop prevention (`oms-provenance`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Hops<'a> {
    pub source: Option<&'a str>,
    pub target: Option<&'a str>,
}

/// What decides where a message goes, and how many may be in flight.
#[derive(Clone, Copy, Debug)]
pub struct Route<'a> {
    pub hops: Hops<'a>,
    pub filter: Option<&'a Filter>,
    pub in_flight: usize,
    pub ordering: Ordering,
}

/// What a message must not overtake through a retry: the earlier messages of its lane.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Lane {
    Key(Vec<u8>),
    Partition(i32),
}

/// The ordering the pipeline must enforce with lanes: none where the sink keeps order itself.
#[must_use]
pub fn enforced(ordering: Ordering, sink_keeps_order: bool) -> Ordering {
    if sink_keeps_order { Ordering::None } else { ordering }
}

/// The lane of a message under `ordering`; `None` when it may overtake and be overtaken.
#[must_use]
pub fn lane_of(ordering: Ordering, message: &Message, ack: &Ack) -> Option<Lane> {
    match ordering {
        Ordering::PerKey => message.key.clone().map(Lane::Key),
        // Kafka has partitions; every other source is one ordered stream.
        Ordering::PerPartition => Some(Lane::Partition(match ack {
            Ack::Kafka { partition, .. } => *partition,
            _ => 0,
        })),
        Ordering::None => None,
    }
}

/// Lanes with a message sent and not yet confirmed, each with the messages of that lane received
/// after it (oldest first), which wait to be sent.
#[derive(Debug)]
pub struct Lanes<T>(HashMap<Lane, VecDeque<T>>);

impl<T> Default for Lanes<T> {
    fn default() -> Self {
        Self(HashMap::new())
    }
}

impl<T> Lanes<T> {
    /// Whether a message of `lane` may be sent now; if so, the lane is busy until `settle` finds
    /// nothing more waiting in it. Messages without a lane always may.
    pub fn take(&mut self, lane: Option<&Lane>) -> bool {
        let Some(lane) = lane else { return true };
        if self.0.contains_key(lane) {
            return false;
        }
        self.0.insert(lane.clone(), VecDeque::new());
        true
    }

    /// Queues a message of a busy lane behind the ones already waiting there.
    pub fn defer(&mut self, lane: &Lane, waiting: T) {
        self.0.entry(lane.clone()).or_default().push_back(waiting);
    }

    /// The lane's sent message is settled: the next one to send in that lane (the lane stays busy
    /// with it), or `None` and the lane is free.
    pub fn settle(&mut self, lane: Option<&Lane>) -> Option<T> {
        let queue = self.0.get_mut(lane?)?;
        let next = queue.pop_front();
        if next.is_none() {
            self.0.remove(lane?);
        }
        next
    }

    /// Messages waiting, in all lanes.
    pub fn waiting(&self) -> usize {
        self.0.values().map(VecDeque::len).sum()
    }
}

/// Whether a message that has passed `provenance` must not go to `target`: it came from there.
#[must_use]
pub fn would_loop(provenance: &[String], target: Option<&str>) -> bool {
    target.is_some_and(|target| provenance.iter().any(|hop| hop == target))
}

pub use crate::message::MAX_WINDOW_BYTES;

/// A message between send and acknowledgement.
struct Pending {
    ack: Ack,
    bytes: usize,
    id: String,
    timestamp_ms: Option<i64>,
    /// Skipped (loop, filter): acknowledged in order, not counted as sent.
    skipped: bool,
    /// The source delivered it again: stored, it counts as a repeat the target may hold.
    redelivered: bool,
    lane: Option<Lane>,
}

/// The state of one run: the window in source order (sent, or waiting for its lane) and the
/// confirmations in the same order.
struct Flight {
    confirms: FuturesOrdered<Confirm>,
    window: VecDeque<Pending>,
    /// Payload bytes of the window.
    bytes: usize,
    /// A waiting message gets its confirmation through the channel once it is sent.
    lanes: Lanes<(Message, oneshot::Sender<Confirm>)>,
}

impl Flight {
    /// Sends `message` if its lane is free; else it takes its place in the window unsent.
    async fn dispatch(&mut self, sink: &Sink, pending: Pending, message: Message) -> Result<(), ConnectorError> {
        let free = self.lanes.take(pending.lane.as_ref());
        let confirm = match (&pending.lane, free) {
            (Some(lane), false) => {
                let (sent, confirmed) = oneshot::channel::<Confirm>();
                self.lanes.defer(lane, (message, sent));
                Box::pin(async move {
                    match confirmed.await {
                        Ok(confirm) => confirm.await,
                        Err(_) => Err(ConnectorError::Send("the run ended before this message was sent".to_owned())),
                    }
                }) as Confirm
            }
            _ => sink.send(&message).await?,
        };
        self.push(confirm, pending);
        Ok(())
    }

    fn push(&mut self, confirm: Confirm, pending: Pending) {
        self.bytes += pending.bytes;
        self.confirms.push_back(confirm);
        self.window.push_back(pending);
    }

    /// The front of the window, settled (its confirmation was just taken from `confirms`).
    fn pop(&mut self) -> Option<Pending> {
        let pending = self.window.pop_front()?;
        self.bytes -= pending.bytes;
        Some(pending)
    }

    /// Room for one more message: fewer than `in_flight`, and under the byte bound.
    fn has_room(&self, in_flight: usize) -> bool {
        self.window.len() < in_flight && self.bytes < MAX_WINDOW_BYTES
    }

    /// After the front message was confirmed or refused for good: sends the next of its lane.
    /// Never after a failure: the next would overtake the failed one.
    async fn send_next(&mut self, sink: &Sink, lane: Option<&Lane>) -> Result<(), ConnectorError> {
        if let Some((message, sent)) = self.lanes.settle(lane) {
            // A closed channel means the run is ending; the message comes again with the next.
            let _ = sent.send(sink.send(&message).await?);
        }
        Ok(())
    }
}

/// Forwards until `shutdown` or the first failure; returns after acknowledging every confirmed
/// message.
pub async fn forward(
    source: &mut Source,
    sink: &Sink,
    route: Route<'_>,
    metrics: &BridgeMetrics,
    shutdown: &CancellationToken,
) -> Result<(), ConnectorError> {
    let mut flight = Flight {
        confirms: FuturesOrdered::new(),
        window: VecDeque::with_capacity(route.in_flight),
        bytes: 0,
        lanes: Lanes::default(),
    };
    let route = Route { ordering: enforced(route.ordering, sink.keeps_order()), ..route };
    metrics.ordering_lanes.set(i64::from(route.ordering != Ordering::None));
    let mut lag_tick = tokio::time::interval(LAG_INTERVAL);
    // Something was sent or confirmed since the sink last had the chance to get its last messages
    // answered (`Sink::flush`), which it does when nothing else is ready.
    let mut unflushed = false;
    let result = loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break Ok(()),
            confirmed = flight.confirms.next(), if !flight.confirms.is_empty() => {
                // `confirms` and `window` are pushed together, so the front is this message.
                let Some(pending) = flight.pop() else { break Ok(()) };
                let lane = pending.lane.clone();
                unflushed = true;
                let settled = match confirmed {
                    Some(Ok(delivered)) => acknowledge(source, pending, delivered, metrics).await,
                    // Refused for good: skipped, counted and logged, never retried in a loop.
                    Some(Err(ConnectorError::Rejected { reason, message })) => {
                        metrics.failed.with_label_values(&[reason]).inc();
                        tracing::warn!(message = "The target refused a message; skipping it.", id = %pending.id, reason, detail = %message);
                        source.ack(pending.ack).await.inspect_err(|_| metrics.failed.with_label_values(&["ack"]).inc())
                    }
                    Some(Err(error)) => {
                        metrics.failed.with_label_values(&["send"]).inc();
                        Err(error)
                    }
                    None => break Ok(()),
                };
                if let Err(error) = settled {
                    break Err(error);
                }
                if let Err(error) = flight.send_next(sink, lane.as_ref()).await {
                    metrics.failed.with_label_values(&["send"]).inc();
                    break Err(error);
                }
            }
            received = source.next(), if flight.has_room(route.in_flight) => {
                let received = match received {
                    Ok(received) => received,
                    Err(error) => break Err(error),
                };
                unflushed = true;
                if let Err(error) = take_in(&mut flight, sink, received, route, metrics).await {
                    metrics.failed.with_label_values(&["send"]).inc();
                    break Err(error);
                }
            }
            _ = lag_tick.tick() => {
                report_lag(metrics, source.backlog().await, flight.window.len());
                metrics.active.set(i64::from(source.takes_messages()));
            }
            // Last: only when the source has nothing ready (or the window is full) and no
            // confirmation has come.
            () = std::future::ready(()), if unflushed => {
                unflushed = false;
                // A shutdown does not wait for the answer; the drain below does, within its deadline.
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = sink.flush(!flight.has_room(route.in_flight)) => {}
                }
            }
        }
    };
    // On shutdown, what the sink confirms of the window within the deadline is acknowledged, in
    // order, up to the first failure, sending what waits for its lane as the lane frees. After a
    // failure nothing more is: acknowledging a later message would move a Kafka offset past the
    // failed one, and it would never come again.
    if result.is_ok() {
        let drain = async {
            sink.flush(false).await;
            while let Some(Ok(outcome)) = flight.confirms.next().await {
                let Some(pending) = flight.pop() else { break };
                let lane = pending.lane.clone();
                if acknowledge(source, pending, outcome, metrics).await.is_err()
                    || flight.send_next(sink, lane.as_ref()).await.is_err()
                {
                    break;
                }
            }
        };
        if tokio::time::timeout(DRAIN_DEADLINE, drain).await.is_err() {
            tracing::warn!(message = "Shutdown deadline passed with messages in flight; they will be sent again.");
        }
    }
    if result.is_err() {
        // Sent but unconfirmed: these come again from the source on the next run (as do the
        // ones that waited for their lane, never sent).
        let sent =
            flight.window.iter().filter(|pending| !pending.skipped).count().saturating_sub(flight.lanes.waiting());
        metrics.resent.inc_by(sent as u64);
    }
    source.flush().await;
    result
}

/// A received message: counted, then skipped (acknowledged in order with nothing sent), sent, or
/// kept waiting for its lane.
async fn take_in(
    flight: &mut Flight,
    sink: &Sink,
    received: crate::connector::Received,
    route: Route<'_>,
    metrics: &BridgeMetrics,
) -> Result<(), ConnectorError> {
    count_received(metrics, &received);
    let mut message = received.message;
    let skip = skip_reason(&message, route);
    let pending = Pending {
        lane: if skip.is_some() { None } else { lane_of(route.ordering, &message, &received.ack) },
        ack: received.ack,
        bytes: message.payload.len(),
        id: message.id.clone(),
        timestamp_ms: message.timestamp_ms,
        skipped: skip.is_some(),
        redelivered: received.redelivered,
    };
    if let Some(reason) = skip {
        metrics.skipped.with_label_values(&[reason]).inc();
        flight.push(Box::pin(async { Ok(Delivered::Stored) }) as Confirm, pending);
        return Ok(());
    }
    add_source_hop(&mut message, route);
    flight.dispatch(sink, pending, message).await
}

/// Why a message is acknowledged without being sent: it would go back where it came from, or
/// the filter does not match.
#[must_use]
pub fn skip_reason(message: &Message, route: Route<'_>) -> Option<&'static str> {
    if would_loop(&message.provenance, route.hops.target) {
        Some("loop")
    } else if route.filter.is_some_and(|filter| !filter.matches(message)) {
        Some("filtered")
    } else {
        None
    }
}

/// Records the source's access point in the provenance of a message about to be sent.
pub fn add_source_hop(message: &mut Message, route: Route<'_>) {
    if let Some(hops) = message.provenance_after(route.hops.source) {
        message.provenance = hops.split(',').map(str::to_owned).collect();
    }
}

/// `oms_bridge_source_lag_messages`: what waits at the source (where it can tell) plus what is
/// taken and not yet confirmed.
pub fn report_lag(metrics: &BridgeMetrics, backlog: Option<u64>, in_flight: usize) {
    if let Some(backlog) = backlog {
        let in_flight = u64::try_from(in_flight).unwrap_or(u64::MAX);
        metrics.source_lag.set(i64::try_from(backlog.saturating_add(in_flight)).unwrap_or(i64::MAX));
    }
}

/// Counts a message taken from the source, and the messages it lost right before it.
pub fn count_received(metrics: &BridgeMetrics, received: &crate::connector::Received) {
    metrics.received.inc();
    if received.gap > 0 {
        metrics.gap_detected.inc_by(received.gap);
        tracing::error!(message = "The source lost messages before they were bridged.", lost = received.gap, next = %received.message.id);
    }
}

/// Counts a message the target holds.
pub fn count_sent(metrics: &BridgeMetrics, bytes: usize, timestamp_ms: Option<i64>) {
    metrics.sent.inc();
    metrics.last_forwarded.set(crate::metrics::unix_seconds());
    metrics.bytes_sent.inc_by(bytes as u64);
    if let Some(ms) = timestamp_ms {
        metrics.latency.observe(seconds_since(ms));
    }
}

/// Acknowledges a confirmed message at the source and counts it.
async fn acknowledge(
    source: &mut Source,
    pending: Pending,
    outcome: Delivered,
    metrics: &BridgeMetrics,
) -> Result<(), ConnectorError> {
    if let Err(error) = source.ack(pending.ack).await {
        metrics.failed.with_label_values(&["ack"]).inc();
        return Err(error);
    }
    if pending.skipped {
        return Ok(());
    }
    match outcome {
        Delivered::Duplicate => metrics.deduplicated.inc(),
        Delivered::Stored if pending.redelivered => metrics.redelivered.inc(),
        Delivered::Stored => {}
    }
    count_sent(metrics, pending.bytes, pending.timestamp_ms);
    Ok(())
}

/// Seconds from `ms` (since the epoch) to now; 0 for a clock that disagrees.
#[allow(clippy::cast_precision_loss)] // milliseconds of latency fit an f64 exactly
fn seconds_since(ms: i64) -> f64 {
    let now =
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    (now.saturating_sub(ms).max(0)) as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_never_goes_back_to_an_access_point_it_came_from() {
        let came_from = vec!["acme/a".to_owned(), "acme/b".to_owned()];
        assert!(would_loop(&came_from, Some("acme/a")));
        assert!(!would_loop(&came_from, Some("acme/c")));
        assert!(!would_loop(&came_from, None));
    }

    fn pending(bytes: usize) -> Pending {
        Pending {
            ack: Ack::Gateway(1),
            bytes,
            id: "q/0/1".into(),
            timestamp_ms: None,
            skipped: false,
            redelivered: false,
            lane: None,
        }
    }

    #[test]
    fn the_window_stops_taking_at_in_flight_messages_or_the_byte_bound() {
        let mut flight =
            Flight { confirms: FuturesOrdered::new(), window: VecDeque::new(), bytes: 0, lanes: Lanes::default() };
        let stored = || Box::pin(async { Ok(Delivered::Stored) }) as Confirm;
        flight.push(stored(), pending(10));
        assert!(flight.has_room(2) && !flight.has_room(1), "counted in messages");
        flight.push(stored(), pending(MAX_WINDOW_BYTES - 10));
        assert!(!flight.has_room(1000), "two messages hold the byte bound: no room at any count");
        assert_eq!(flight.pop().map(|p| p.bytes), Some(10), "settled in order");
        assert!(flight.has_room(1000), "under the byte bound again");
    }

    fn keyed(key: Option<&str>) -> Message {
        Message { key: key.map(|k| k.as_bytes().to_vec()), ..Message::default() }
    }

    #[test]
    fn lanes_follow_the_ordering_the_bridge_keeps() {
        let kafka = |partition| Ack::Kafka { partition, offset: 7 };
        let k1 = keyed(Some("k1"));
        assert_eq!(lane_of(Ordering::PerKey, &k1, &kafka(2)), Some(Lane::Key(b"k1".to_vec())));
        // No key, no per-key promise: keyless messages stay pipelined.
        assert_eq!(lane_of(Ordering::PerKey, &keyed(None), &kafka(2)), None);
        assert_eq!(lane_of(Ordering::PerPartition, &k1, &kafka(2)), Some(Lane::Partition(2)));
        assert_eq!(lane_of(Ordering::PerPartition, &keyed(None), &Ack::Gateway(9)), Some(Lane::Partition(0)));
        assert_eq!(lane_of(Ordering::None, &k1, &kafka(2)), None);
    }

    #[test]
    fn a_sink_that_keeps_order_itself_needs_no_lanes() {
        for ordering in [Ordering::PerKey, Ordering::PerPartition, Ordering::None] {
            assert_eq!(enforced(ordering, true), Ordering::None);
            assert_eq!(enforced(ordering, false), ordering);
        }
    }

    #[test]
    fn a_lane_sends_one_message_at_a_time_and_the_waiting_ones_in_order() {
        let mut lanes = Lanes::default();
        let (k1, k2) = (Lane::Key(b"k1".to_vec()), Lane::Key(b"k2".to_vec()));
        assert!(lanes.take(Some(&k1)), "the first k1 goes at once");
        assert!(!lanes.take(Some(&k1)), "a second k1 waits for the first to be confirmed");
        lanes.defer(&k1, "k1 second");
        assert!(!lanes.take(Some(&k1)));
        lanes.defer(&k1, "k1 third");
        assert!(lanes.take(Some(&k2)), "another key goes at once");
        assert!(lanes.take(None) && lanes.take(None), "messages without a lane never wait");
        assert_eq!(lanes.waiting(), 2);
        // Each settlement hands over the next of the lane, which keeps the lane busy.
        assert_eq!(lanes.settle(Some(&k1)), Some("k1 second"));
        assert!(!lanes.take(Some(&k1)));
        lanes.defer(&k1, "k1 fourth");
        assert_eq!(lanes.settle(Some(&k1)), Some("k1 third"));
        assert_eq!(lanes.settle(Some(&k1)), Some("k1 fourth"));
        assert_eq!(lanes.settle(Some(&k1)), None, "nothing left: the lane is free");
        assert!(lanes.take(Some(&k1)));
        assert_eq!(lanes.settle(Some(&k2)), None);
        assert_eq!(lanes.settle(None), None);
        assert_eq!(lanes.waiting(), 0);
    }
}
