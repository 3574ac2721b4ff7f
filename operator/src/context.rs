//! What every reconcile shares: the client, the event recorder, metrics and settings.

use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Client, Resource};

use crate::admin::AdminCache;
use crate::drivers::DefaultImages;
use crate::metrics::Metrics;

/// Shared state of the controllers.
pub struct Context {
    pub client: Client,
    /// Publishes Kubernetes Events for state changes.
    pub recorder: Recorder,
    pub metrics: Metrics,
    /// Default broker images per driver.
    pub images: DefaultImages,
    /// Image of oms-bridge for bridge workers and gateways.
    pub bridge_image: String,
    /// Secrets every pod the operator starts pulls its images with.
    pub image_pull_secrets: Vec<String>,
    /// Where the operator runs: brokers' NetworkPolicies admit its pods.
    pub operator_namespace: String,
    /// How often bridge workers' admin endpoints are read for status.
    pub bridge_observe_interval: Duration,
    /// Template of a worker's admin URL when workers are not pods of this cluster.
    pub bridge_admin_url: Option<String>,
    /// How often external brokers are probed.
    pub probe_interval: Duration,
    /// How often queues are compared with their brokers (drift).
    pub drift_interval: Duration,
    /// Connected broker admin clients, one per access point endpoint.
    pub admins: AdminCache,
}

impl Context {
    /// An API over one namespace, or over all.
    #[must_use]
    pub fn api<K>(&self, namespace: Option<&str>) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }

    /// Publishes an Event about `reference`; a failure is logged, never fatal.
    pub async fn publish(&self, reference: &ObjectReference, type_: EventType, reason: &str, note: &str) {
        let event = event(type_, reason, ("Reconcile", None), note);
        if let Err(error) = self.recorder.publish(&event, reference).await {
            tracing::warn!(message = "Failed to publish an event.", %error);
        }
    }

    /// Publishes an Event about `reference` for `action` on `related`, if any. The recorder
    /// folds Events of the same reason, action and related object into one series that keeps
    /// the first note: each distinct step needs its own action or related object to be seen.
    pub async fn publish_action(
        &self,
        reference: &ObjectReference,
        type_: EventType,
        reason: &str,
        (action, related): (&str, Option<ObjectReference>),
        note: &str,
    ) {
        let event = event(type_, reason, (action, related), note);
        if let Err(error) = self.recorder.publish(&event, reference).await {
            tracing::warn!(message = "Failed to publish an event.", %error);
        }
    }
}

fn event(type_: EventType, reason: &str, (action, related): (&str, Option<ObjectReference>), note: &str) -> Event {
    Event {
        type_,
        reason: reason.to_owned(),
        // The Events API caps notes at 1 kB.
        note: Some(note.chars().take(1000).collect()),
        action: action.to_owned(),
        secondary: related,
    }
}
