//! The bridge's Prometheus metrics (DESIGN.md section 7), labelled by bridge and drivers.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct BridgeMetrics {
    pub received: IntCounter,
    pub sent: IntCounter,
    pub bytes_sent: IntCounter,
    pub failed: IntCounterVec,
    pub skipped: IntCounterVec,
    pub link_up: IntGauge,
}

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
        };
        registry.register(Box::new(metrics.received.clone()))?;
        registry.register(Box::new(metrics.sent.clone()))?;
        registry.register(Box::new(metrics.bytes_sent.clone()))?;
        registry.register(Box::new(metrics.failed.clone()))?;
        registry.register(Box::new(metrics.skipped.clone()))?;
        registry.register(Box::new(metrics.link_up.clone()))?;
        Ok(metrics)
    }
}
