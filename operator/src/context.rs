//! What every reconcile shares: the client, the event recorder, metrics and settings.

use kube::Client;
use kube::runtime::events::Recorder;

use crate::access_point::validate::DefaultImages;
use crate::metrics::Metrics;

/// Shared state of the controllers.
pub struct Context {
    pub client: Client,
    /// Publishes Kubernetes Events for state changes.
    pub recorder: Recorder,
    pub metrics: Metrics,
    /// Default broker images per driver.
    pub images: DefaultImages,
    /// How often external brokers are probed.
    pub probe_interval: std::time::Duration,
}
