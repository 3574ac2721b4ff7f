//! The worker role: connect both ends, forward, and on any failure reconnect with backoff and
//! jitter (our own supervision; the clients' auto-recovery is not relied on).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::WorkerConfig;
use crate::connector::{Durable, Sink, Source, Start};
use crate::metrics::BridgeMetrics;
use crate::pipeline::{Hops, Route, forward};

/// First and longest wait between reconnection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

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
    let mut backoff = BACKOFF_MIN;
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
                backoff = BACKOFF_MIN;
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
            tracing::warn!(message = "Forwarding stopped; reconnecting.", %error, backoff_ms = backoff.as_millis());
            let jitter = Duration::from_millis(u64::from(std::process::id() % 100));
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = tokio::time::sleep(backoff + jitter) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
    tracing::info!(message = "Worker stopped; confirmed messages were acknowledged.");
}
