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
    /// 1 while a Bridge's `Stalled` condition is True, by bridge.
    pub bridge_stalled: IntGaugeVec,
    /// A Bridge's `status.lagMessages`, by bridge.
    pub bridge_lag_messages: IntGaugeVec,
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
            bridge_stalled: IntGaugeVec::new(
                Opts::new(
                    "oms_operator_bridge_stalled",
                    "1 while the Bridge is Stalled: lag and nothing forwarded, or no worker answering, for spec.stalledAfter.",
                ),
                &["namespace", "bridge"],
            )?,
            bridge_lag_messages: IntGaugeVec::new(
                Opts::new("oms_operator_bridge_lag_messages", "Messages at a Bridge's source not yet forwarded."),
                &["namespace", "bridge"],
            )?,
        };
        registry.register(Box::new(metrics.reconcile_total.clone()))?;
        registry.register(Box::new(metrics.reconcile_duration_seconds.clone()))?;
        registry.register(Box::new(metrics.resources.clone()))?;
        registry.register(Box::new(metrics.certificate_expiry_timestamp_seconds.clone()))?;
        registry.register(Box::new(metrics.bridge_stalled.clone()))?;
        registry.register(Box::new(metrics.bridge_lag_messages.clone()))?;
        Ok(metrics)
    }
}

impl Metrics {
    /// Counts one reconciliation of `kind` with its result label, and its duration since `started`.
    pub fn observe_reconcile(&self, kind: &str, result: &str, started: std::time::Instant) {
        self.reconcile_total.with_label_values(&[kind, result]).inc();
        self.reconcile_duration_seconds.with_label_values(&[kind]).observe(started.elapsed().as_secs_f64());
    }
}

/// How often `oms_operator_resources` is recomputed from a controller's cache.
const COUNT_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Keeps `oms_operator_resources{kind,ready}` in step with a controller's cached objects, until
/// `shutdown`. Several scopes (watched namespaces) share the gauge, so each adds the change of
/// its own counts.
pub async fn keep_resources_gauge<K>(
    store: kube::runtime::reflector::Store<K>,
    metrics: Metrics,
    kind: &'static str,
    ready: fn(&K) -> Option<String>,
    shutdown: tokio_util::sync::CancellationToken,
) where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    const LABELS: [&str; 3] = ["True", "False", "Unknown"];
    let mut last = [0i64; 3];
    loop {
        let mut counts = [0i64; 3];
        for object in store.state() {
            let slot = match ready(&object).as_deref() {
                Some("True") => 0,
                Some("False") => 1,
                _ => 2,
            };
            counts[slot] += 1;
        }
        for ((label, now), before) in LABELS.iter().zip(counts).zip(last) {
            metrics.resources.with_label_values(&[kind, label]).add(now - before);
        }
        last = counts;
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(COUNT_EVERY) => {}
        }
    }
}
