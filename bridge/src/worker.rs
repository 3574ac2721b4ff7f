//! The worker role: connect both ends, forward, and on any failure reconnect with backoff and
//! jitter (our own supervision; the clients' auto-recovery is not relied on).

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio_util::sync::CancellationToken;

use crate::connector::{ConnectorError, Durable, KafkaSource, Sink, Source, Start, TransactionalSink};
use crate::metrics::BridgeMetrics;
use crate::pipeline::{Hops, Route, forward};
use crate::transactional::forward_in_transactions;
use oms_bridge_config::{Delivery, WorkerConfig, in_kafka_transactions};
use oms_lease::{Candidate, Timing};

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

/// How often a standby worker asks for the source again. Its holder's connection ending frees
/// the source at once (kill -9 closes the socket; a lost host within the heartbeat timeout).
const STANDBY_RETRY: Duration = Duration::from_secs(1);

/// What a worker does while another worker of the Bridge holds the source: it is healthy (ready,
/// both brokers answer) and not active; it asks again every [`STANDBY_RETRY`] until shutdown.
struct Standby<'a> {
    metrics: &'a BridgeMetrics,
    ready: &'a oms_telemetry::admin::Readiness,
    shutdown: &'a CancellationToken,
    said: bool,
}

impl Standby<'_> {
    /// Says so (once) and in the metrics: ready, connected, not active.
    fn show(&mut self, why: &str) {
        if !self.said {
            tracing::info!(message = "Standing by: another worker of this Bridge holds the source.", why);
            self.said = true;
        }
        self.metrics.active.set(0);
        self.metrics.source_lag.set(0);
        self.metrics.link_up.set(1);
        self.ready.set(true);
    }

    /// Waits before the next try; false on shutdown.
    async fn wait(&mut self, why: &str) -> bool {
        self.show(why);
        tokio::select! {
            () = self.shutdown.cancelled() => false,
            () = tokio::time::sleep(STANDBY_RETRY) => true,
        }
    }
}

/// The two ends of a run: any source and sink through the pipeline, or Kafka to Kafka in
/// transactions (`ExactlyOnce`).
enum Ends {
    Pipeline(Source, Sink),
    Transactions(KafkaSource, TransactionalSink),
}

impl Ends {
    /// Connects the sink, then the source; while another worker holds the source (or the
    /// Bridge's Lease), stands by with the sink connected.
    async fn connect(
        config: &WorkerConfig,
        durable: &Durable,
        start: Start,
        standby: &mut Standby<'_>,
        lease: Option<&Candidate>,
    ) -> Result<Self, ConnectorError> {
        if config.delivery == Delivery::ExactlyOnce
            && in_kafka_transactions(config.source.protocol, config.target.protocol)
        {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".to_owned());
            let sink = TransactionalSink::connect(&config.target, &durable.kafka_transactional_id(&host))?;
            let source = KafkaSource::connect(&config.source, durable, start, true)?;
            return Ok(Ends::Transactions(source, sink));
        }
        let sink = Sink::connect(&config.target, &durable.flat(), config.in_flight).await?;
        if let Some(lease) = lease {
            standby.show("another worker holds the Bridge's Lease");
            if !lease.acquire(standby.shutdown).await {
                return Err(ConnectorError::Standby("shut down while waiting for the Lease".into()));
            }
        }
        loop {
            match Source::connect(&config.source, durable, start, config.in_flight, config.ordering).await {
                Err(ConnectorError::Standby(why)) => {
                    if !standby.wait(&why).await {
                        return Err(ConnectorError::Standby(why));
                    }
                }
                source => return Ok(Ends::Pipeline(source?, sink)),
            }
        }
    }

    fn takes_messages(&self) -> bool {
        match self {
            Ends::Pipeline(source, _) => source.takes_messages(),
            Ends::Transactions(source, _) => source.assigned_partitions() > 0,
        }
    }

    async fn forward(
        &mut self,
        route: Route<'_>,
        metrics: &BridgeMetrics,
        shutdown: &CancellationToken,
    ) -> Result<(), ConnectorError> {
        match self {
            Ends::Pipeline(source, sink) => forward(source, sink, route, metrics, shutdown).await,
            Ends::Transactions(source, sink) => forward_in_transactions(source, sink, route, metrics, shutdown).await,
        }
    }
}

/// How long a worker's Lease stays valid without renewal (renewed every fifth of it): a killed
/// holder's standby takes over this long after the last renewal.
const LEASE_DURATION: Duration = Duration::from_secs(10);

/// The Bridge's Lease, where the config names one, with this pod as the candidate.
async fn lease_candidate(config: &WorkerConfig) -> Result<Option<Candidate>, ConnectorError> {
    let Some(name) = &config.lease else { return Ok(None) };
    let identity = std::env::var("HOSTNAME").unwrap_or_else(|_| format!("worker-{}", std::process::id()));
    Candidate::from_environment(&config.namespace, name, identity, Timing::new(LEASE_DURATION))
        .await
        .map(Some)
        .map_err(|error| ConnectorError::Lease(error.to_string()))
}

/// Forwards until `shutdown`; with a Lease, while it is held: its renewals run beside the
/// forwarding and stop it before the Lease could pass to another worker. Returns whether the
/// Lease was lost.
async fn forward_holding(
    ends: &mut Ends,
    lease: Option<&Candidate>,
    route: Route<'_>,
    metrics: &BridgeMetrics,
    shutdown: &CancellationToken,
) -> (Result<(), ConnectorError>, bool) {
    let Some(lease) = lease else { return (ends.forward(route, metrics, shutdown).await, false) };
    let holding = shutdown.child_token();
    let forwarding = async {
        let result = ends.forward(route, metrics, &holding).await;
        holding.cancel();
        result
    };
    tokio::join!(forwarding, lease.hold(holding.clone()))
}

/// Runs until `shutdown`; `ready` is true while both ends are connected.
pub async fn run(
    config: &WorkerConfig,
    metrics: &BridgeMetrics,
    ready: &oms_telemetry::admin::Readiness,
    shutdown: &CancellationToken,
) {
    let durable = Durable::bridge(&config.namespace, &config.name);
    let start = Start::from_config(config.start_from, config.start_timestamp_ms);
    let in_flight = usize::try_from(config.in_flight).unwrap_or(1);
    let mut waits = reconnect_waits();
    let mut lease = None;
    while !shutdown.is_cancelled() {
        let mut standby = Standby { metrics, ready, shutdown, said: false };
        if config.lease.is_some() && lease.is_none() {
            lease = match lease_candidate(config).await {
                Ok(candidate) => candidate,
                Err(error) => {
                    tracing::warn!(message = "Cannot reach the Bridge's Lease; retrying.", %error);
                    tokio::select! {
                        () = shutdown.cancelled() => {}
                        () = tokio::time::sleep(waits.next().unwrap_or(BACKOFF_MAX)) => {}
                    }
                    continue;
                }
            };
        }
        let outcome = match Ends::connect(config, &durable, start, &mut standby, lease.as_ref()).await {
            Ok(mut ends) => {
                metrics.link_up.set(1);
                metrics.active.set(i64::from(ends.takes_messages()));
                ready.set(true);
                tracing::info!(message = "Forwarding.", source = %config.source.queue, target = %config.target.queue, delivery = ?config.delivery);
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
                let (result, lost) = forward_holding(&mut ends, lease.as_ref(), route, metrics, shutdown).await;
                metrics.link_up.set(0);
                metrics.active.set(0);
                ready.set(false);
                if lost {
                    tracing::warn!(message = "Lost the Bridge's Lease; standing by.");
                }
                result
            }
            // Only a shutdown ends a standby.
            Err(ConnectorError::Standby(_)) => Ok(()),
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
    // The source is closed: a standby may take it at once instead of after the lease duration.
    if let Some(lease) = &lease {
        lease.release().await;
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
