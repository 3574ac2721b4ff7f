//! The worker role: connect both ends, forward, and on any failure reconnect with backoff and
//! jitter (our own supervision; the clients' auto-recovery is not relied on).

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio_util::sync::CancellationToken;

use crate::connector::{Durable, Sink, Source, Start};
use crate::metrics::BridgeMetrics;
use crate::pipeline::{Hops, Route, forward};
use oms_bridge_config::WorkerConfig;

/// First and longest wait between reconnection attempts, before jitter.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Waits between reconnection attempts: doubling from `BACKOFF_MIN` to `BACKOFF_MAX`, each
/// stretched by a random share of itself (up to double), so that workers cut off by the same
/// broker restart do not all come back in the same instant.
fn reconnect_waits() -> ExponentialBackoff {
    ExponentialBuilder::new()
        .with_min_delay(BACKOFF_MIN)
        .with_max_delay(BACKOFF_MAX)
        .with_jitter()
        .without_max_times()
        .build()
}

/// Runs until `shutdown`; `ready` is true while both ends are connected.
pub async fn run(
    config: &WorkerConfig,
    metrics: &BridgeMetrics,
    ready: &oms_telemetry::admin::Readiness,
    shutdown: &CancellationToken,
) {
    let durable = Durable::bridge(&config.namespace, &config.name);
    let consumer = durable.flat();
    let start = Start::from_config(config.start_from, config.start_timestamp_ms);
    let in_flight = usize::try_from(config.in_flight).unwrap_or(1);
    let mut waits = reconnect_waits();
    while !shutdown.is_cancelled() {
        let connected = async {
            let sink = Sink::connect(&config.target, &consumer).await?;
            let source = Source::connect(&config.source, &durable, start, config.in_flight).await?;
            Ok::<_, crate::connector::ConnectorError>((source, sink))
        };
        let outcome = match connected.await {
            Ok((mut source, sink)) => {
                metrics.link_up.set(1);
                ready.set(true);
                tracing::info!(message = "Forwarding.", source = %config.source.queue, target = %config.target.queue);
                waits = reconnect_waits();
                let route = Route {
                    hops: Hops {
                        source: config.source.access_point.as_deref(),
                        target: config.target.access_point.as_deref(),
                    },
                    filter: config.filter.as_ref(),
                    in_flight,
                    ordering: config.ordering,
                };
                let result = forward(&mut source, &sink, route, metrics, shutdown).await;
                metrics.link_up.set(0);
                ready.set(false);
                result
            }
            Err(error) => Err(error),
        };
        if let Err(error) = outcome {
            metrics.failed.with_label_values(&["link"]).inc();
            let wait = waits.next().unwrap_or(BACKOFF_MAX);
            tracing::warn!(message = "Forwarding stopped; reconnecting.", %error, backoff_ms = wait.as_millis());
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
    tracing::info!(message = "Worker stopped; confirmed messages were acknowledged.");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_waits_double_up_to_the_cap_with_jitter_that_differs_between_workers() {
        let first: Vec<Duration> = reconnect_waits().take(12).collect();
        for (attempt, wait) in first.iter().enumerate() {
            let base = BACKOFF_MIN.saturating_mul(1 << attempt.min(10)).min(BACKOFF_MAX);
            assert!(
                *wait >= base && *wait <= base * 2,
                "attempt {attempt}: {wait:?} outside [{base:?}, {:?}]",
                base * 2
            );
        }
        // Twelve random stretches that all match another worker's would mean no jitter at all.
        let second: Vec<Duration> = reconnect_waits().take(12).collect();
        assert_ne!(first, second, "two workers' waits should differ");
    }
}
