//! The bridge's Prometheus metrics (DESIGN.md section 7), labelled by bridge and drivers.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct BridgeMetrics {
    pub received: IntCounter,
    pub sent: IntCounter,
    pub bytes_sent: IntCounter,
    pub failed: IntCounterVec,
    pub skipped: IntCounterVec,
    pub link_up: IntGauge,
    /// 1 while this worker takes messages from the source, 0 while it stands by.
    pub active: IntGauge,
    /// 1 while the pipeline keeps order with lanes, 0 where the target keeps it or none is asked.
    pub ordering_lanes: IntGauge,
    pub deduplicated: IntCounter,
    pub resent: IntCounter,
    pub redelivered: IntCounter,
    pub latency: Histogram,
    pub source_lag: IntGauge,
    pub gap_detected: IntCounter,
    /// Unix time of the last confirmed forward; the operator's `Stalled` reads it.
    pub last_forwarded: IntGauge,
    /// Unix time this worker started: a counter reset shows as a new start.
    pub started: IntGauge,
}

/// Latency buckets in seconds: from a fast local hop to a cross-cloud link after a backlog.
const LATENCY_BUCKETS: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

impl BridgeMetrics {
    /// Registers the metrics with constant labels naming the bridge.
    pub fn register(registry: &Registry, labels: &[(&str, String)]) -> prometheus::Result<Self> {
        let opts = |name: &str, help: &str| {
            let mut opts = Opts::new(name, help);
            for (key, value) in labels {
                opts = opts.const_label(*key, value.clone());
            }
            opts
        };
        let metrics = Self {
            received: IntCounter::with_opts(opts(
                "oms_bridge_messages_received_total",
                "Messages taken from the source.",
            ))?,
            sent: IntCounter::with_opts(opts(
                "oms_bridge_messages_sent_total",
                "Messages the target confirmed and the source acknowledged.",
            ))?,
            bytes_sent: IntCounter::with_opts(opts(
                "oms_bridge_bytes_sent_total",
                "Payload bytes confirmed by the target.",
            ))?,
            failed: IntCounterVec::new(opts("oms_bridge_messages_failed_total", "Failures by step."), &["reason"])?,
            skipped: IntCounterVec::new(
                opts("oms_bridge_messages_skipped_total", "Messages acknowledged without being sent, by reason."),
                &["reason"],
            )?,
            link_up: IntGauge::with_opts(opts("oms_bridge_link_up", "1 while both ends are connected."))?,
            active: IntGauge::with_opts(opts(
                "oms_bridge_worker_active",
                "1 while this worker takes messages from the source; 0 while it stands by (another worker of \
                 the Bridge holds the source, or a Kafka group gave it no partition) or is disconnected.",
            ))?,
            ordering_lanes: IntGauge::with_opts(opts(
                "oms_bridge_ordering_lanes",
                "1 while the worker keeps at most one unconfirmed message per ordering lane (key or partition); \
                 0 where the target keeps order through failures itself (Kafka, JetStream in fast batches) or \
                 ordering is None.",
            ))?,
            deduplicated: IntCounter::with_opts(opts(
                "oms_bridge_messages_deduplicated_total",
                "Repeats the target recognised by message id and dropped (resends after a failure); not counted \
                 for a JetStream target taking fast batches, which skips repeats without saying so.",
            ))?,
            resent: IntCounter::with_opts(opts(
                "oms_bridge_messages_resent_total",
                "Messages sent but unconfirmed when a run failed: the source delivers them again, so a target \
                 that does not deduplicate may hold them twice.",
            ))?,
            redelivered: IntCounter::with_opts(opts(
                "oms_bridge_messages_redelivered_total",
                "Messages the source delivered again after an unacknowledged delivery (a failed or killed \
                 worker) and the target stored again: repeats the target may hold. Sources that mark no \
                 redelivery (Kafka, a gateway) add none.",
            ))?,
            latency: Histogram::with_opts(
                HistogramOpts::from(opts(
                    "oms_bridge_replication_latency_seconds",
                    "From the source's timestamp of a message to the target's confirmation.",
                ))
                .buckets(LATENCY_BUCKETS.to_vec()),
            )?,
            source_lag: IntGauge::with_opts(opts(
                "oms_bridge_source_lag_messages",
                "Messages at the source not yet confirmed by the target (waiting plus in flight).",
            ))?,
            gap_detected: IntCounter::with_opts(opts(
                "oms_bridge_gap_detected_total",
                "Messages the source lost (retention, truncation) before the bridge could forward them.",
            ))?,
            last_forwarded: IntGauge::with_opts(opts(
                "oms_bridge_last_forwarded_timestamp_seconds",
                "Unix time the target last confirmed a message; 0 before the first.",
            ))?,
            started: IntGauge::with_opts(opts(
                "oms_bridge_start_timestamp_seconds",
                "Unix time this worker process started.",
            ))?,
        };
        metrics.started.set(unix_seconds());
        registry.register(Box::new(metrics.received.clone()))?;
        registry.register(Box::new(metrics.sent.clone()))?;
        registry.register(Box::new(metrics.bytes_sent.clone()))?;
        registry.register(Box::new(metrics.failed.clone()))?;
        registry.register(Box::new(metrics.skipped.clone()))?;
        registry.register(Box::new(metrics.link_up.clone()))?;
        registry.register(Box::new(metrics.active.clone()))?;
        registry.register(Box::new(metrics.ordering_lanes.clone()))?;
        registry.register(Box::new(metrics.deduplicated.clone()))?;
        registry.register(Box::new(metrics.resent.clone()))?;
        registry.register(Box::new(metrics.redelivered.clone()))?;
        registry.register(Box::new(metrics.latency.clone()))?;
        registry.register(Box::new(metrics.source_lag.clone()))?;
        registry.register(Box::new(metrics.gap_detected.clone()))?;
        registry.register(Box::new(metrics.last_forwarded.clone()))?;
        registry.register(Box::new(metrics.started.clone()))?;
        Ok(metrics)
    }
}

/// Seconds since the Unix epoch, now.
#[must_use]
pub fn unix_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The gateway's metrics.
#[derive(Clone)]
pub struct GatewayMetrics {
    pub published: IntCounter,
    pub deduplicated: IntCounter,
    pub consumed: IntCounter,
    pub denied: IntCounterVec,
    pub handshake_failures: IntCounter,
    pub streams: IntGauge,
}

impl GatewayMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = Self {
            published: IntCounter::new(
                "oms_gateway_messages_published_total",
                "Messages peers wrote that the local broker confirmed.",
            )?,
            deduplicated: IntCounter::new(
                "oms_gateway_messages_deduplicated_total",
                "Messages peers resent that were already written (by oms-message-id).",
            )?,
            consumed: IntCounter::new("oms_gateway_messages_consumed_total", "Messages peers read and acknowledged.")?,
            denied: IntCounterVec::new(
                Opts::new(
                    "oms_gateway_denied_total",
                    "Requests refused because the peer's identity may not touch the queue.",
                ),
                &["operation"],
            )?,
            handshake_failures: IntCounter::new(
                "oms_gateway_tls_handshake_failures_total",
                "Connections refused at the TLS handshake (no, unknown, expired or invalid client certificate).",
            )?,
            streams: IntGauge::new("oms_gateway_streams", "Publish and consume streams open now.")?,
        };
        registry.register(Box::new(metrics.published.clone()))?;
        registry.register(Box::new(metrics.deduplicated.clone()))?;
        registry.register(Box::new(metrics.consumed.clone()))?;
        registry.register(Box::new(metrics.denied.clone()))?;
        registry.register(Box::new(metrics.handshake_failures.clone()))?;
        registry.register(Box::new(metrics.streams.clone()))?;
        Ok(metrics)
    }
}
