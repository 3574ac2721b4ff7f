//! The forwarding loop: take from the source, send to the sink, and acknowledge at the source only
//! after the sink confirmed, in source order. Up to `in_flight` messages are between the two at
//! once; a full window stops reading (backpressure). Any failure ends the run without acking what
//! was not confirmed, so the supervisor's next run gets those messages again: nothing is lost,
//! repeats are bounded by the window and dropped by targets that deduplicate. A message whose
//! provenance names the target's access point is acknowledged without being sent (no echo).

use std::collections::VecDeque;

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use tokio_util::sync::CancellationToken;

use crate::connector::{Ack, ConnectorError, Sink, Source};
use crate::metrics::BridgeMetrics;

/// Forwards until `shutdown` or the first failure; returns after acknowledging every confirmed
/// message.
/// The access points at both ends, for loop prevention (`oms-provenance`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Hops<'a> {
    pub source: Option<&'a str>,
    pub target: Option<&'a str>,
}

/// Whether a message that has passed `provenance` must not go to `target`: it came from there.
#[must_use]
pub fn would_loop(provenance: &[String], target: Option<&str>) -> bool {
    target.is_some_and(|target| provenance.iter().any(|hop| hop == target))
}

pub async fn forward(
    source: &mut Source,
    sink: &Sink,
    hops: Hops<'_>,
    in_flight: usize,
    metrics: &BridgeMetrics,
    shutdown: &CancellationToken,
) -> Result<(), ConnectorError> {
    let mut confirms = FuturesOrdered::new();
    let mut acks: VecDeque<(Ack, usize, String)> = VecDeque::with_capacity(in_flight);
    let result = loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break Ok(()),
            confirmed = confirms.next(), if !confirms.is_empty() => {
                // `confirms` and `acks` are pushed together, so the front ack is this message's.
                let Some((ack, bytes, id)) = acks.pop_front() else { break Ok(()) };
                match confirmed {
                    // Refused for good: skipped, counted and logged, never retried in a loop.
                    Some(Err(ConnectorError::Rejected { reason, message })) => {
                        metrics.failed.with_label_values(&[reason]).inc();
                        tracing::warn!(message = "The target refused a message; skipping it.", id = %id, reason, detail = %message);
                        if let Err(error) = source.ack(ack).await {
                            metrics.failed.with_label_values(&["ack"]).inc();
                            break Err(error);
                        }
                        continue;
                    }
                    Some(Err(error)) => {
                        metrics.failed.with_label_values(&["send"]).inc();
                        break Err(error);
                    }
                    _ => {}
                }
                if let Err(error) = source.ack(ack).await {
                    metrics.failed.with_label_values(&["ack"]).inc();
                    break Err(error);
                }
                metrics.sent.inc();
                metrics.bytes_sent.inc_by(bytes as u64);
            }
            received = source.next(), if acks.len() < in_flight => {
                let received = match received {
                    Ok(received) => received,
                    Err(error) => break Err(error),
                };
                metrics.received.inc();
                let mut message = received.message;
                if would_loop(&message.provenance, hops.target) {
                    // Acknowledged in order like any other, with nothing sent.
                    metrics.skipped.with_label_values(&["loop"]).inc();
                    confirms.push_back(Box::pin(async { Ok(()) }) as crate::connector::Confirm);
                    acks.push_back((received.ack, 0, message.id));
                    continue;
                }
                if let Some(hops) = message.provenance_after(hops.source) {
                    message.provenance = hops.split(',').map(str::to_owned).collect();
                }
                let bytes = message.payload.len();
                match sink.send(&message).await {
                    Ok(confirm) => {
                        confirms.push_back(confirm);
                        acks.push_back((received.ack, bytes, message.id));
                    }
                    Err(error) => {
                        metrics.failed.with_label_values(&["send"]).inc();
                        break Err(error);
                    }
                }
            }
        }
    };
    // On shutdown, what the sink confirms of the window is acknowledged, in order, up to the first
    // failure. After a failure nothing more is: acknowledging a later message would move a Kafka
    // offset past the failed one, and the failed message would never come again.
    if result.is_ok() {
        while let (Some(Ok(())), Some((ack, bytes, _))) = (confirms.next().await, acks.pop_front()) {
            if source.ack(ack).await.is_err() {
                break;
            }
            metrics.sent.inc();
            metrics.bytes_sent.inc_by(bytes as u64);
        }
    }
    source.flush();
    result
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
