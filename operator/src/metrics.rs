//! The operator's Prometheus metrics (DESIGN.md section 7), registered in one registry that the
//! admin server exposes.

use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Operator metrics; cheap to clone (each field is a shared handle).
#[derive(Clone)]
pub struct Metrics {
    /// Reconciliations by kind and result (`success`, or the error's metric label).
    pub reconcile_total: IntCounterVec,
    /// Reconcile duration by kind.
    pub reconcile_duration_seconds: HistogramVec,
    /// Objects by kind and readiness.
    pub resources: IntGaugeVec,
    /// Expiry time of each certificate the operator issued, by secret.
    pub certificate_expiry_timestamp_seconds: GaugeVec,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = Self {
            reconcile_total: IntCounterVec::new(
                Opts::new("oms_operator_reconcile_total", "Reconciliations by kind and result."),
                &["kind", "result"],
            )?,
            reconcile_duration_seconds: HistogramVec::new(
                HistogramOpts::new("oms_operator_reconcile_duration_seconds", "Duration of one reconciliation.")
                    .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
                &["kind"],
            )?,
            resources: IntGaugeVec::new(
                Opts::new("oms_operator_resources", "Objects the operator manages, by kind and readiness."),
                &["kind", "ready"],
            )?,
            certificate_expiry_timestamp_seconds: GaugeVec::new(
                Opts::new(
                    "oms_operator_certificate_expiry_timestamp_seconds",
                    "Unix time at which a certificate issued by the operator expires.",
                ),
                &["namespace", "secret"],
            )?,
        };
        registry.register(Box::new(metrics.reconcile_total.clone()))?;
        registry.register(Box::new(metrics.reconcile_duration_seconds.clone()))?;
        registry.register(Box::new(metrics.resources.clone()))?;
        registry.register(Box::new(metrics.certificate_expiry_timestamp_seconds.clone()))?;
        Ok(metrics)
    }
}
