//! Types shared by the three kinds: references, conditions and driver capabilities.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Condition types the controllers set.
pub mod condition_type {
    /// The object does what it declares (brokers ready, queue provisioned, bridge forwarding).
    pub const READY: &str = "Ready";
    /// A bridge holds working connections to both its source and its target.
    pub const CONNECTED: &str = "Connected";
    /// A bridge has lag and forwarded nothing for longer than `spec.stalledAfter`.
    pub const STALLED: &str = "Stalled";
    /// A field the driver cannot honour; the message names the field.
    pub const UNSUPPORTED: &str = "Unsupported";
}

/// A reference to a `MessagingAccessPoint`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessPointRef {
    /// Name of the MessagingAccessPoint.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace of the MessagingAccessPoint; defaults to the referring object's namespace.
    /// Another namespace works only where that access point's `spec.sharing.tenants` lists ours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub namespace: Option<String>,
}

/// A reference to a `Queue`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueRef {
    /// Name of the Queue.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace of the Queue; defaults to the Bridge's namespace. Another namespace works only
    /// where the queue's access point shares with ours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub namespace: Option<String>,
}

/// A reference to a key of a Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// A reference to a key of a ConfigMap in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKeyRef {
    /// Name of the ConfigMap.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the ConfigMap.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// A reference to a Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Message ordering a driver or a bridge keeps.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum Ordering {
    /// Messages with the same key arrive in the order they were sent.
    #[default]
    PerKey,
    /// Messages of one partition arrive in order.
    PerPartition,
    /// No ordering promise; allows the most parallelism.
    None,
}

/// Deduplication a driver offers to writers.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Dedup {
    /// The broker drops repeats of a message id (NATS `Nats-Msg-Id`).
    MessageId,
    /// An idempotent or transactional producer (Kafka).
    IdempotentProducer,
    /// The broker cannot deduplicate; duplicates are bounded by the bridge's in-flight window.
    None,
}

/// What a driver can and cannot do; controllers publish it so that nothing is silently dropped.
// Independent yes/no facts of a protocol, not a state machine: bools are the honest shape.
#[allow(clippy::struct_excessive_bools)]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    /// Whether queues can have several partitions.
    pub partitions: bool,
    /// The strongest ordering the driver keeps.
    pub ordering: Ordering,
    /// How writers can avoid duplicates.
    pub dedup: Dedup,
    /// Whether the broker can delay delivery.
    pub delay: bool,
    /// Whether the broker honours message priority.
    pub priority: bool,
    /// Whether messages carry headers (MQTT 3.1.1 does not).
    pub headers: bool,
    /// Whether the broker has a server-side queue object to provision (MQTT does not).
    pub queue_objects: bool,
}
