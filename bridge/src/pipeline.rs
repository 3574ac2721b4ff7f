//! The forwarding loop: take from the source, send to the sink, and acknowledge at the source only
//! after the sink confirmed, in source order. Up to `in_flight` messages are between the two at
//! once; a full window stops reading (backpressure). Any failure ends the run without acking what
//! was not confirmed, so the supervisor's next run gets those messages again: nothing is lost,
//! repeats are bounded by the window and dropped by targets that deduplicate. A message whose
//! provenance names the target's access point, or that the filter does not match, is acknowledged
//! without being sent.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use tokio_util::sync::CancellationToken;

use crate::connector::{Ack, Confirm, ConnectorError, Delivered, Sink, Source};
use crate::filter::Filter;
use crate::metrics::BridgeMetrics;

/// How often the source's backlog is read for `oms_bridge_source_lag_messages`.
const LAG_INTERVAL: Duration = Duration::from_secs(5);
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
}

/// Whether a message that has passed `provenance` must not go to `target`: it came from there.
#[must_use]
pub fn would_loop(provenance: &[String], target: Option<&str>) -> bool {
    target.is_some_and(|target| provenance.iter().any(|hop| hop == target))
}

/// A message between send and acknowledgement.
struct Pending {
    ack: Ack,
    bytes: usize,
    id: String,
    timestamp_ms: Option<i64>,
    /// Skipped (loop, filter): acknowledged in order, not counted as sent.
    skipped: bool,
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
    let mut confirms = FuturesOrdered::new();
    let mut window: VecDeque<Pending> = VecDeque::with_capacity(route.in_flight);
    let mut lag_tick = tokio::time::interval(LAG_INTERVAL);
    let result = loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break Ok(()),
            confirmed = confirms.next(), if !confirms.is_empty() => {
                // `confirms` and `window` are pushed together, so the front is this message.
                let Some(pending) = window.pop_front() else { break Ok(()) };
                let outcome = match confirmed {
                    Some(Ok(delivered)) => delivered,
                    // Refused for good: skipped, counted and logged, never retried in a loop.
                    Some(Err(ConnectorError::Rejected { reason, message })) => {
                        metrics.failed.with_label_values(&[reason]).inc();
                        tracing::warn!(message = "The target refused a message; skipping it.", id = %pending.id, reason, detail = %message);
                        if let Err(error) = source.ack(pending.ack).await {
                            metrics.failed.with_label_values(&["ack"]).inc();
                            break Err(error);
                        }
                        continue;
                    }
                    Some(Err(error)) => {
                        metrics.failed.with_label_values(&["send"]).inc();
                        break Err(error);
                    }
                    None => break Ok(()),
                };
                if let Err(error) = acknowledge(source, pending, outcome, metrics).await {
                    break Err(error);
                }
            }
            received = source.next(), if window.len() < route.in_flight => {
                let received = match received {
                    Ok(received) => received,
                    Err(error) => break Err(error),
                };
                metrics.received.inc();
                if received.gap > 0 {
                    metrics.gap_detected.inc_by(received.gap);
                    tracing::error!(message = "The source lost messages before they were bridged.", lost = received.gap, next = %received.message.id);
                }
                let mut message = received.message;
                let skip = skip_reason(&message, route);
                let pending = Pending {
                    ack: received.ack,
                    bytes: message.payload.len(),
                    id: message.id.clone(),
                    timestamp_ms: message.timestamp_ms,
                    skipped: skip.is_some(),
                };
                if let Some(reason) = skip {
                    // Acknowledged in order like any other, with nothing sent.
                    metrics.skipped.with_label_values(&[reason]).inc();
                    confirms.push_back(Box::pin(async { Ok(Delivered::Stored) }) as Confirm);
                    window.push_back(pending);
                    continue;
                }
                if let Some(hops) = message.provenance_after(route.hops.source) {
                    message.provenance = hops.split(',').map(str::to_owned).collect();
                }
                match sink.send(&message).await {
                    Ok(confirm) => {
                        confirms.push_back(confirm);
                        window.push_back(pending);
                    }
                    Err(error) => {
                        metrics.failed.with_label_values(&["send"]).inc();
                        break Err(error);
                    }
                }
            }
            _ = lag_tick.tick() => {
                if let Some(backlog) = source.backlog().await {
                    let in_flight = u64::try_from(window.len()).unwrap_or(u64::MAX);
                    metrics.source_lag.set(i64::try_from(backlog.saturating_add(in_flight)).unwrap_or(i64::MAX));
                }
            }
        }
    };
    // On shutdown, what the sink confirms of the window within the deadline is acknowledged, in
    // order, up to the first failure. After a failure nothing more is: acknowledging a later
    // message would move a Kafka offset past the failed one, and it would never come again.
    if result.is_ok() {
        let drain = async {
            while let (Some(Ok(outcome)), Some(pending)) = (confirms.next().await, window.pop_front()) {
                if acknowledge(source, pending, outcome, metrics).await.is_err() {
                    break;
                }
            }
        };
        if tokio::time::timeout(DRAIN_DEADLINE, drain).await.is_err() {
            tracing::warn!(message = "Shutdown deadline passed with messages in flight; they will be sent again.");
        }
    }
    if result.is_err() {
        // Sent but unconfirmed: these come again from the source on the next run.
        metrics.resent.inc_by(window.iter().filter(|pending| !pending.skipped).count() as u64);
    }
    source.flush();
    result
}

/// Why a message is acknowledged without being sent: it would go back where it came from, or
/// the filter does not match.
fn skip_reason(message: &crate::message::Message, route: Route<'_>) -> Option<&'static str> {
    if would_loop(&message.provenance, route.hops.target) {
        Some("loop")
    } else if route.filter.is_some_and(|filter| !filter.matches(message)) {
        Some("filtered")
    } else {
        None
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
    if outcome == Delivered::Duplicate {
        metrics.deduplicated.inc();
    }
    metrics.sent.inc();
    metrics.last_forwarded.set(crate::metrics::unix_seconds());
    metrics.bytes_sent.inc_by(pending.bytes as u64);
    if let Some(ms) = pending.timestamp_ms {
        metrics.latency.observe(seconds_since(ms));
    }
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
}
