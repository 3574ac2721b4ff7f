//! `Bridge`: replication of one queue into another, on any two access points, in this cloud or
//! through another cloud's gateway.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Ordering, QueueRef};
use crate::quantity::{duration_message, duration_rule};

/// The desired state of a Bridge.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "openmessaging.cloud",
    version = "v1alpha1",
    kind = "Bridge",
    doc = "Replication of a source Queue into a target Queue, across vendors and clouds, acknowledged at the source only after the target confirmed.",
    namespaced,
    status = "BridgeStatus",
    category = "oms",
    shortname = "omsb",
    printcolumn = r#"{"name":"Source","type":"string","jsonPath":".spec.source.queueRef.name"}"#,
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.target.queueRef.name"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Stalled","type":"string","jsonPath":".status.conditions[?(@.type==\"Stalled\")].status"}"#,
    printcolumn = r#"{"name":"Lag","type":"integer","jsonPath":".status.lagMessages"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Forwarded","type":"integer","priority":1,"jsonPath":".status.forwardedTotal"}"#,
    printcolumn = r#"{"name":"Duplicates","type":"integer","priority":1,"jsonPath":".status.duplicatesTotal"}"#,
    printcolumn = r#"{"name":"Delivery","type":"string","priority":1,"jsonPath":".status.delivery"}"#,
    printcolumn = r#"{"name":"Active","type":"integer","priority":1,"jsonPath":".status.activeReplicas"}"#,
    printcolumn = r#"{"name":"Standby","type":"integer","priority":1,"jsonPath":".status.standbyReplicas"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    // `namespace` is a CEL keyword: Kubernetes exposes the property as `__namespace__`.
    validation = Rule::new("self.source.queueRef.name != self.target.queueRef.name || has(self.source.queueRef.__namespace__) != has(self.target.queueRef.__namespace__) || (has(self.source.queueRef.__namespace__) && self.source.queueRef.__namespace__ != self.target.queueRef.__namespace__)")
        .message("spec.target must name a different queue than spec.source: a bridge into its own source would loop"),
    validation = Rule::new("(self.startFrom == 'Timestamp') == has(self.startTimestamp)")
        .message("spec.startTimestamp is required when spec.startFrom is Timestamp, and only then"),
)]
pub struct BridgeSpec {
    /// The queue messages are read from.
    pub source: BridgeEndpoint,

    /// The queue messages are written to; may live on a gateway access point of another cloud.
    pub target: BridgeEndpoint,

    /// AtLeastOnce (default) acknowledges at the source after the target confirmed; repeats after
    /// a failure are possible and counted. ExactlyOnce: Kafka to Kafka in Kafka transactions, or a
    /// source whose ids are stable (Kafka, NATS) into a target that drops repeats by id (NATS
    /// JetStream); any other pair is `Ready=False`, reason `Unsupported`, and gets no worker.
    #[serde(default)]
    pub delivery: Delivery,

    /// Ordering kept through retries: PerKey (default), PerPartition or None.
    #[serde(default)]
    pub ordering: Ordering,

    /// Only messages for which this expression is true are forwarded, e.g.
    /// `headers['region'] == 'eu'`. All messages when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub filter: Option<String>,

    /// Where a new bridge starts reading: Earliest (default), Latest or Timestamp.
    #[serde(default)]
    pub start_from: StartFrom,

    /// With `startFrom: Timestamp`, the first message time to forward (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_timestamp: Option<Time>,

    /// Worker pods; 0 pauses the bridge without losing its position. More than one shares a Kafka
    /// source through its consumer group, or a NATS or AMQP source as competing workers with
    /// `ordering: None`; on an AMQP or NATS source with order kept, one worker consumes (the AMQP
    /// queue's exclusive consumer, the JetStream consumer's pin) and the others stand by to take
    /// over. A JetStream consumer made while order was kept acks in runs and keeps one worker
    /// consuming under `ordering: None` too (delete it to have the workers compete). On an MQTT
    /// source the workers take turns through a Lease the operator makes (an MQTT session belongs
    /// to one client). A gateway source is `Unsupported` with more than one.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 16))]
    pub replicas: i32,

    /// The bridge is `Stalled` when it has lag and forwarded nothing for this long.
    #[serde(default = "default_stalled_after")]
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = Rule::new(duration_rule()).message(duration_message("spec.stalledAfter").as_str()))]
    pub stalled_after: String,
}

fn default_replicas() -> i32 {
    1
}

fn default_stalled_after() -> String {
    "5m".to_owned()
}

/// One end of a bridge.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BridgeEndpoint {
    /// The Queue at this end.
    pub queue_ref: QueueRef,
}

/// Delivery guarantee of a bridge.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum Delivery {
    /// No message is lost; repeats are possible, bounded by the in-flight window and counted.
    #[default]
    AtLeastOnce,
    /// No message is lost and the target drops repeats by `oms-message-id`.
    ExactlyOnce,
}

/// Where a new bridge starts reading.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum StartFrom {
    /// The oldest message the source still holds.
    #[default]
    Earliest,
    /// Only messages published after the bridge started.
    Latest,
    /// Messages from `spec.startTimestamp` on.
    Timestamp,
}

/// The observed state of a Bridge, read from its workers' admin endpoints.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BridgeStatus {
    /// Messages in the source not yet forwarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_messages: Option<i64>,
    /// When the target last confirmed a message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_forwarded_time: Option<Time>,
    /// Messages forwarded since the bridge was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarded_total: Option<i64>,
    /// Of those, messages the target may hold twice, counted where the bridge can tell: the source
    /// delivered them again after a failed or killed worker and the target stored them again.
    /// Kafka and gateway sources mark no redeliveries (0 here says nothing for them); targets
    /// that drop repeats by id (JetStream) and Kafka to Kafka in transactions add none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicates_total: Option<i64>,
    /// The delivery guarantee in force: ExactlyOnce only where spec.delivery asks for it and the
    /// two ends keep it (otherwise the Bridge is `Unsupported` and runs no worker); else AtLeastOnce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Delivery>,
    /// Workers taking messages from the source, as they report it: all of them where they share
    /// the source (a Kafka group's members with partitions; AMQP or JetStream with ordering None,
    /// but for a JetStream consumer made while order was kept),
    /// one where the source keeps order by having one reader (an AMQP queue or a JetStream
    /// consumer with ordering kept, an MQTT session whose Lease one worker holds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_replicas: Option<i32>,
    /// Workers that answer but take no messages: they stand by to take over the source when the
    /// active one goes (or, on Kafka, wait for a partition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standby_replicas: Option<i32>,
    /// The `metadata.generation` the controller last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The latest observations of the bridge's state (`Ready`, `Connected`, `Stalled`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
