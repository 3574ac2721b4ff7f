//! The forwarding loop: take from the source, send to the sink, and acknowledge at the source only
//! after the sink confirmed, in source order. Up to `in_flight` messages are between the two at
//! once; a full window stops reading (backpressure). Any failure ends the run without acking what
//! was not confirmed, so the supervisor's next run gets those messages again: nothing is lost,
//! repeats are bounded by the window and dropped by targets that deduplicate.

use std::collections::VecDeque;

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use tokio_util::sync::CancellationToken;

use crate::connector::{Ack, ConnectorError, Sink, Source};
use crate::metrics::BridgeMetrics;

/// Forwards until `shutdown` or the first failure; returns after acknowledging every confirmed
/// message.
pub async fn forward(
    source: &mut Source,
    sink: &Sink,
    in_flight: usize,
    metrics: &BridgeMetrics,
    shutdown: &CancellationToken,
) -> Result<(), ConnectorError> {
    let mut confirms = FuturesOrdered::new();
    let mut acks: VecDeque<(Ack, usize)> = VecDeque::with_capacity(in_flight);
    let result = loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break Ok(()),
            confirmed = confirms.next(), if !confirms.is_empty() => {
                // `confirms` and `acks` are pushed together, so the front ack is this message's.
                let Some((ack, bytes)) = acks.pop_front() else { break Ok(()) };
                if let Some(Err(error)) = confirmed {
                    metrics.failed.with_label_values(&["send"]).inc();
                    break Err(error);
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
                let bytes = received.message.payload.len();
                match sink.send(&received.message).await {
                    Ok(confirm) => {
                        confirms.push_back(confirm);
                        acks.push_back((received.ack, bytes));
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
        while let (Some(Ok(())), Some((ack, bytes))) = (confirms.next().await, acks.pop_front()) {
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
