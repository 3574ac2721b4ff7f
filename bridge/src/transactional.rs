//! Exactly-once from Kafka to Kafka. The worker takes a batch from the source (up to the in-flight
//! bound and [`MAX_WINDOW_BYTES`], or what arrives within [`LINGER`] of its first message), sends
//! it to the target inside one Kafka transaction and adds the source offsets after the batch to
//! that same transaction. So a batch is in the target with the group moved past it, or it is not
//! (read_committed consumers never see an aborted transaction) and is read again. A worker killed
//! in the middle of a batch leaves its transaction open: the next worker with its transactional id
//! aborts it when it starts, any other after the transaction timeout.
//!
//! Loops and the filter skip messages as in the pipeline; their offsets move with the batch. A
//! message the target refuses for good (too large) fails the whole transaction: it is aborted,
//! the message counted and skipped, and the rest of the batch sent again in a new one.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::connector::{Ack, ConnectorError, KafkaSource, Received, TransactionalSink};
use crate::message::Message;
use crate::metrics::BridgeMetrics;
use crate::pipeline::{
    LAG_INTERVAL, MAX_WINDOW_BYTES, Route, add_source_hop, count_received, count_sent, report_lag, skip_reason,
};

/// How long a batch waits for more messages after its first: a transaction costs a few round
/// trips to the broker, so under load batches fill up, and when idle a message waits this long.
pub const LINGER: Duration = Duration::from_millis(100);

/// Forwards in transactions until `shutdown` or the first failure. After a failure nothing of
/// the open transaction stays: the caller reconnects and reads again from the committed offsets.
pub async fn forward_in_transactions(
    source: &mut KafkaSource,
    sink: &TransactionalSink,
    route: Route<'_>,
    metrics: &BridgeMetrics,
    shutdown: &CancellationToken,
) -> Result<(), ConnectorError> {
    let mut lag_tick = tokio::time::interval(LAG_INTERVAL);
    loop {
        let first = tokio::select! {
            biased;
            () = shutdown.cancelled() => return Ok(()),
            first = source.next() => first?,
            _ = lag_tick.tick() => {
                // Between batches nothing is in flight.
                report_lag(metrics, source.backlog(), 0);
                metrics.active.set(i64::from(source.assigned_partitions() > 0));
                continue;
            }
        };
        // A batch cut short by the shutdown was neither sent nor committed: it comes again.
        let batch = tokio::select! {
            biased;
            () = shutdown.cancelled() => return Ok(()),
            batch = take_batch(source, first, route.in_flight, metrics) => batch?,
        };
        commit_batch(source, sink, batch, route, metrics).await?;
    }
}

/// `first` and the messages that follow it within [`LINGER`], up to `max`.
async fn take_batch(
    source: &mut KafkaSource,
    first: Received,
    max: usize,
    metrics: &BridgeMetrics,
) -> Result<Vec<Received>, ConnectorError> {
    count_received(metrics, &first);
    let mut bytes = first.message.payload.len();
    let mut batch = vec![first];
    let deadline = tokio::time::Instant::now() + LINGER;
    while batch.len() < max && bytes < MAX_WINDOW_BYTES {
        let Ok(received) = tokio::time::timeout_at(deadline, source.next()).await else { break };
        let received = received?;
        count_received(metrics, &received);
        bytes += received.message.payload.len();
        batch.push(received);
    }
    Ok(batch)
}

/// Per partition, the offset after the last message of `batch`: where the group goes on.
fn next_offsets(batch: &[Received]) -> BTreeMap<i32, i64> {
    let mut next = BTreeMap::new();
    for received in batch {
        if let Ack::Kafka { partition, offset } = received.ack {
            let after = next.entry(partition).or_insert(offset + 1);
            *after = (*after).max(offset + 1);
        }
    }
    next
}

/// Sends `batch` and commits it with its offsets, in one transaction, leaving out what the
/// target refuses for good.
async fn commit_batch(
    source: &KafkaSource,
    sink: &TransactionalSink,
    batch: Vec<Received>,
    route: Route<'_>,
    metrics: &BridgeMetrics,
) -> Result<(), ConnectorError> {
    let offsets = next_offsets(&batch);
    let mut skipped = Vec::new();
    let mut outgoing: Vec<Message> = Vec::new();
    for received in batch {
        let mut message = received.message;
        if let Some(reason) = skip_reason(&message, route) {
            skipped.push(reason);
        } else {
            add_source_hop(&mut message, route);
            outgoing.push(message);
        }
    }
    let mut refused = BTreeSet::new();
    loop {
        sink.begin()?;
        let sending: Vec<usize> = (0..outgoing.len()).filter(|index| !refused.contains(index)).collect();
        let confirms: Vec<_> = sending.iter().map(|&index| (index, sink.send(&outgoing[index]))).collect();
        let mut failure = None;
        let mut newly_refused = false;
        for (index, confirm) in confirms {
            match confirm.await {
                Ok(_) => {}
                Err(ConnectorError::Rejected { reason, message }) => {
                    metrics.failed.with_label_values(&[reason]).inc();
                    tracing::warn!(message = "The target refused a message; skipping it.", id = %outgoing[index].id, reason, detail = %message);
                    refused.insert(index);
                    newly_refused = true;
                }
                Err(error) => {
                    failure.get_or_insert(error);
                }
            }
        }
        let outcome = match failure {
            Some(error) => Err(error),
            // The refused message failed the transaction: the rest go again without it.
            None if newly_refused => {
                sink.abort();
                continue;
            }
            None => sink.commit(source, &offsets),
        };
        if let Err(error) = outcome {
            sink.abort();
            metrics.failed.with_label_values(&["send"]).inc();
            metrics.resent.inc_by(sending.len() as u64);
            return Err(error);
        }
        for reason in skipped {
            metrics.skipped.with_label_values(&[reason]).inc();
        }
        for &index in &sending {
            count_sent(metrics, outgoing[index].payload.len(), outgoing[index].timestamp_ms);
        }
        return Ok(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(partition: i32, offset: i64) -> Received {
        Received { message: Message::default(), ack: Ack::Kafka { partition, offset }, gap: 0, redelivered: false }
    }

    #[test]
    fn a_batch_moves_each_partition_to_the_offset_after_its_last_message() {
        let batch = [at(0, 7), at(2, 40), at(0, 8), at(0, 9), at(2, 41)];
        assert_eq!(next_offsets(&batch), BTreeMap::from([(0, 10), (2, 42)]));
        assert!(next_offsets(&[]).is_empty());
    }
}
