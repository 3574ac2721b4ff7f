//! `Queue`: a queue or topic provisioned on a MessagingAccessPoint.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{AccessPointRef, Capabilities};
use crate::quantity::{duration_message, duration_rule, size_message, size_rule};

/// The desired state of a Queue.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "openmessaging.cloud",
    version = "v1alpha1",
    kind = "Queue",
    doc = "A queue or topic on a MessagingAccessPoint, provisioned and kept in shape through the broker's admin protocol.",
    namespaced,
    status = "QueueStatus",
    category = "oms",
    shortname = "omsq",
    printcolumn = r#"{"name":"Access point","type":"string","jsonPath":".spec.accessPointRef.name"}"#,
    printcolumn = r#"{"name":"Partitions","type":"integer","jsonPath":".status.partitions"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Broker name","type":"string","priority":1,"jsonPath":".status.brokerName"}"#,
    printcolumn = r#"{"name":"Retention","type":"string","priority":1,"jsonPath":".status.retention.time"}"#,
    printcolumn = r#"{"name":"Replication","type":"integer","priority":1,"jsonPath":".status.replication"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.name) == has(oldSelf.name) && (!has(self.name) || self.name == oldSelf.name)")
        .message("spec.name is immutable (brokers cannot rename a queue); create a new Queue instead"),
)]
pub struct QueueSpec {
    /// The access point the queue lives on. Immutable: the data stays on the broker it is on; to
    /// move a queue, create a new Queue on the other access point and bridge the messages over.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.accessPointRef is immutable (the messages stay on their broker); create a new Queue on the other access point and bridge them over"))]
    pub access_point_ref: AccessPointRef,

    /// Broker-side name; defaults to `metadata.name`. On an access point shared when the Queue is
    /// first reconciled, the tenant prefix is added. The name is decided once and kept in
    /// `status.brokerName`: sharing the access point later never renames the queue. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 200), regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"))]
    pub name: Option<String>,

    /// Number of partitions (Kafka partitions, NATS/RabbitMQ: 1). May grow, never shrink.
    #[serde(default = "default_partitions")]
    #[schemars(range(min = 1, max = 10000))]
    #[x_kube(validation = Rule::new("self >= oldSelf").message("spec.partitions cannot decrease (brokers cannot remove partitions); create a new Queue to get fewer"))]
    pub partitions: i32,

    /// Copies of each message kept by the broker cluster; the driver's default when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 7))]
    pub replication: Option<i32>,

    /// How long and how much the broker keeps; unlimited where omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,

    /// Whether messages survive a broker restart.
    #[serde(default)]
    pub durability: Durability,

    /// Largest message the queue accepts, e.g. 1Mi; the broker's default when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = Rule::new(size_rule()).message(size_message("spec.maxMessageSize").as_str()))]
    pub max_message_size: Option<String>,

    /// Defaults applied to messages that do not set their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_defaults: Option<MessageDefaults>,

    /// What happens on the broker when this Queue is deleted: Retain (default) keeps the queue
    /// and its messages, Delete removes it, DeleteIfEmpty removes it only when no message is left.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// What to do when the broker's settings drift from the spec: Enforce (default) corrects
    /// them, Report only sets a condition.
    #[serde(default)]
    pub drift_policy: DriftPolicy,
}

fn default_partitions() -> i32 {
    1
}

/// Retention limits of a queue.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// Keep messages at most this long, e.g. 7d or 12h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = Rule::new(duration_rule()).message(duration_message("spec.retention.time").as_str()))]
    pub time: Option<String>,

    /// Keep at most this many bytes (per partition on Kafka), e.g. 10Gi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = Rule::new(size_rule()).message(size_message("spec.retention.bytes").as_str()))]
    pub bytes: Option<String>,
}

/// Whether messages survive a broker restart.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum Durability {
    /// Stored on disk and replicated.
    #[default]
    Persistent,
    /// Kept in memory where the broker allows it; lost on restart.
    Transient,
}

/// Per-message defaults.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageDefaults {
    /// Delay delivery by this long, e.g. 30s. Brokers without delayed delivery raise `Unsupported`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = Rule::new(duration_rule()).message(duration_message("spec.messageDefaults.delay").as_str()))]
    pub delay: Option<String>,

    /// Expire undelivered messages after this long, e.g. 1h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = Rule::new(duration_rule()).message(duration_message("spec.messageDefaults.expire").as_str()))]
    pub expire: Option<String>,

    /// Priority 0 (lowest) to 9. Brokers without priorities raise `Unsupported`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 9))]
    pub priority: Option<i32>,
}

/// What happens on the broker when a Queue is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum DeletionPolicy {
    /// Keep the broker-side queue and its messages.
    #[default]
    Retain,
    /// Delete the broker-side queue and its messages.
    Delete,
    /// Delete the broker-side queue only when it holds no message; otherwise keep it and say so.
    DeleteIfEmpty,
}

/// What to do about drift between the spec and the broker.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum DriftPolicy {
    /// Put the broker's settings back to the spec.
    #[default]
    Enforce,
    /// Leave the broker alone and report the drift in a condition.
    Report,
}

impl Queue {
    /// Whether this Queue lives on the MessagingAccessPoint `namespace`/`name` (a reference
    /// without a namespace names one in the Queue's own namespace).
    #[must_use]
    pub fn is_on(&self, namespace: &str, name: &str) -> bool {
        let reference = &self.spec.access_point_ref;
        reference.name == name
            && reference.namespace.as_deref().or(self.metadata.namespace.as_deref()) == Some(namespace)
    }
}

/// The observed state of a Queue.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueStatus {
    /// The name of the queue on the broker, with any tenant prefix: decided at the first
    /// reconcile and kept (Bridges and deletion use it), whatever later happens to sharing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_name: Option<String>,
    /// Partitions the broker reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<i32>,
    /// How long and how much the broker keeps, as it reports it (absent where the broker keeps no
    /// such limit for a queue: MQTT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionStatus>,
    /// Copies of each message the broker reports keeping (absent where it does not say: RabbitMQ
    /// and MQTT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<i32>,
    /// How long the broker drops a repeat of a message id it stored (JetStream's duplicate window,
    /// e.g. 2m): what `delivery: ExactlyOnce` into this queue rests on. Absent where the broker
    /// keeps no such window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate_window: Option<String>,
    /// What the access point's driver can and cannot do for this queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
    /// A Secret in this namespace with this namespace's own broker user for the queue, when the
    /// access point is another namespace's (its binding Secret holds that namespace's user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding_secret: Option<String>,
    /// The `metadata.generation` the controller last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The latest observations of the queue's state (`Ready`, `Unsupported`, drift).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Retention limits as the broker reports them, written as in a spec (`7d`, `10Gi`) or `unlimited`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionStatus {
    /// How long the broker keeps a message (`7d`), or `unlimited`.
    pub time: String,
    /// How much the broker keeps of this queue (`10Gi`), or `unlimited`.
    pub bytes: String,
}

/// What a status says of a limit the broker does not set.
pub const UNLIMITED: &str = "unlimited";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_is_on_the_access_point_its_reference_names_in_its_namespace_by_default() {
        let mut queue: Queue = serde_json::from_value(serde_json::json!({
            "apiVersion": "openmessaging.cloud/v1alpha1", "kind": "Queue",
            "metadata": {"name": "orders", "namespace": "acme"},
            "spec": {"accessPointRef": {"name": "kafka"}}
        }))
        .expect("a Queue");
        assert!(queue.is_on("acme", "kafka"));
        assert!(!queue.is_on("globex", "kafka") && !queue.is_on("acme", "nats"));
        queue.spec.access_point_ref.namespace = Some("shared".into());
        assert!(queue.is_on("shared", "kafka") && !queue.is_on("acme", "kafka"));
    }
}
