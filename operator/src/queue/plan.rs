//! What a Queue means on its access point's broker: the broker-side name (with the tenant prefix
//! on shared access points), the settings each driver can honour, and the fields it cannot.
//! Pure: the controller feeds it the Queue and the access point, and acts on the result.

use std::collections::BTreeMap;

use oms_crds::access_point::Driver;
use oms_crds::quantity::{parse_duration, parse_size};
use oms_crds::queue::{Durability, QueueSpec};

/// The settings of a queue as the broker will hold them, by the driver's own keys (Kafka topic
/// configs, NATS stream fields, RabbitMQ queue arguments), with the values as the broker reports
/// them; drift is the difference between these and what the broker holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuePlan {
    pub driver: Driver,
    pub broker_name: String,
    pub partitions: i32,
    pub replication: Option<i32>,
    pub settings: BTreeMap<String, String>,
    /// Fields this driver cannot honour, each with the reason: they raise `Unsupported`.
    pub unsupported: Vec<String>,
}

/// An invalid Queue for its driver (only the broker's rules, the schema has checked the rest).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidQueue {
    pub field: String,
    pub message: String,
}

/// A queue's spec with sizes and durations parsed.
struct Parsed {
    retention_ms: Option<u64>,
    retention_bytes: Option<u64>,
    max_message: Option<u64>,
    expire_ms: Option<u64>,
    priority: Option<i32>,
    transient: bool,
    replication: Option<i32>,
}

/// Plans `spec` for `driver`; `broker_name` already carries any tenant prefix.
pub fn plan(driver: Driver, broker_name: String, spec: &QueueSpec) -> Result<QueuePlan, InvalidQueue> {
    check_name(driver, &broker_name)?;
    let defaults = spec.message_defaults.as_ref();
    let parsed = Parsed {
        retention_ms: duration_ms(spec.retention.as_ref().and_then(|r| r.time.as_deref()), "spec.retention.time")?,
        retention_bytes: size(spec.retention.as_ref().and_then(|r| r.bytes.as_deref()), "spec.retention.bytes")?,
        max_message: size(spec.max_message_size.as_deref(), "spec.maxMessageSize")?,
        expire_ms: duration_ms(defaults.and_then(|d| d.expire.as_deref()), "spec.messageDefaults.expire")?,
        priority: defaults.and_then(|d| d.priority),
        transient: spec.durability == Durability::Transient,
        replication: spec.replication,
    };
    let mut unsupported = Vec::new();
    if defaults.and_then(|d| d.delay.as_deref()).is_some() {
        unsupported.push(if driver == Driver::Rocketmq {
            "spec.messageDefaults.delay: the operator makes no DELAY topics on rocketmq yet".to_owned()
        } else {
            format!("spec.messageDefaults.delay: {driver} has no delayed delivery")
        });
    }
    let partitioned = matches!(driver, Driver::Kafka | Driver::Rocketmq);
    if spec.partitions > 1 && !partitioned {
        unsupported
            .push(format!("spec.partitions: {driver} queues have one partition; use Kafka or RocketMQ for more"));
    }
    let settings = match driver {
        Driver::Kafka => kafka_settings(&parsed, &mut unsupported),
        Driver::Nats => nats_settings(&parsed, &mut unsupported),
        Driver::Rabbitmq => rabbitmq_settings(&parsed, &mut unsupported),
        Driver::Mqtt => {
            mqtt_unsupported(spec, &parsed, &mut unsupported);
            BTreeMap::new()
        }
        Driver::Rocketmq => rocketmq_settings(spec, &parsed, &mut unsupported),
        Driver::Gateway => BTreeMap::new(),
    };
    if spec.replication.is_some() && !matches!(driver, Driver::Kafka | Driver::Nats | Driver::Gateway) {
        unsupported.push(format!("spec.replication: {driver} replicates by the broker cluster's own policy"));
    }
    Ok(QueuePlan {
        driver,
        broker_name,
        // What the broker can have: a partition count named unsupported above is not planned,
        // so it is never reported as drift nor "corrected".
        partitions: if partitioned { spec.partitions } else { 1 },
        replication: spec.replication,
        settings,
        unsupported,
    })
}

fn set(settings: &mut BTreeMap<String, String>, key: &str, value: Option<impl ToString>) {
    if let Some(value) = value {
        settings.insert(key.to_owned(), value.to_string());
    }
}

/// Kafka topic configs.
fn kafka_settings(parsed: &Parsed, unsupported: &mut Vec<String>) -> BTreeMap<String, String> {
    let mut settings = BTreeMap::new();
    set(&mut settings, "retention.ms", parsed.retention_ms);
    set(&mut settings, "retention.bytes", parsed.retention_bytes);
    set(&mut settings, "max.message.bytes", parsed.max_message);
    if parsed.expire_ms.is_some() {
        // Kafka expires by retention only; a per-message default TTL has no equivalent.
        unsupported.push("spec.messageDefaults.expire: kafka expires messages by spec.retention.time only".into());
    }
    if parsed.priority.is_some() {
        unsupported.push("spec.messageDefaults.priority: kafka has no message priority".into());
    }
    if parsed.transient {
        unsupported.push("spec.durability: kafka always persists messages".into());
    }
    settings
}

/// JetStream stream limits.
fn nats_settings(parsed: &Parsed, unsupported: &mut Vec<String>) -> BTreeMap<String, String> {
    let mut settings = BTreeMap::new();
    let age = match (parsed.retention_ms, parsed.expire_ms) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    set(&mut settings, "max_age_ms", age);
    set(&mut settings, "max_bytes", parsed.retention_bytes);
    set(&mut settings, "max_msg_size", parsed.max_message);
    set(&mut settings, "storage", Some(if parsed.transient { "memory" } else { "file" }));
    set(&mut settings, "num_replicas", parsed.replication);
    if parsed.priority.is_some() {
        unsupported.push("spec.messageDefaults.priority: nats has no message priority".into());
    }
    settings
}

/// RabbitMQ queue arguments.
fn rabbitmq_settings(parsed: &Parsed, unsupported: &mut Vec<String>) -> BTreeMap<String, String> {
    let mut settings = BTreeMap::new();
    // Quorum queues are durable by definition; a transient queue is a classic one.
    set(&mut settings, "x-queue-type", Some(if parsed.transient { "classic" } else { "quorum" }));
    set(&mut settings, "x-message-ttl", parsed.expire_ms.or(parsed.retention_ms));
    set(&mut settings, "x-max-length-bytes", parsed.retention_bytes);
    match (parsed.priority, parsed.transient) {
        (Some(priority), true) => set(&mut settings, "x-max-priority", Some(priority)),
        (Some(_), false) => unsupported.push(
            "spec.messageDefaults.priority: quorum queues know only two priorities; set durability Transient for a classic priority queue".into(),
        ),
        (None, _) => {}
    }
    if parsed.max_message.is_some() {
        unsupported.push(
            "spec.maxMessageSize: rabbitmq limits message size per node (max_message_size), not per queue".into(),
        );
    }
    settings
}

/// RocketMQ topic fields: read queues as many as write queues (the partitions, on every broker),
/// readable and writable, and normal messages. Retention and sizes are the brokers' own settings.
fn rocketmq_settings(spec: &QueueSpec, parsed: &Parsed, unsupported: &mut Vec<String>) -> BTreeMap<String, String> {
    let mut settings = BTreeMap::new();
    set(&mut settings, ROCKETMQ_READ_QUEUES, Some(spec.partitions));
    set(&mut settings, ROCKETMQ_PERM, Some(ROCKETMQ_READ_WRITE));
    set(&mut settings, ROCKETMQ_MESSAGE_TYPE, Some("NORMAL"));
    for (field, set, why) in [
        ("spec.retention", spec.retention.is_some(), "keeps messages by its brokers' fileReservedTime, not per topic"),
        ("spec.maxMessageSize", parsed.max_message.is_some(), "limits message size per broker (maxMessageSize)"),
        ("spec.messageDefaults.expire", parsed.expire_ms.is_some(), "has no per-message expiry"),
        ("spec.messageDefaults.priority", parsed.priority.is_some(), "has no message priority"),
        ("spec.durability", parsed.transient, "always persists messages"),
    ] {
        if set {
            unsupported.push(format!("{field}: rocketmq {why}"));
        }
    }
    settings
}

/// The RocketMQ topic fields a plan sets: its read queues, its permission and its message type.
pub const ROCKETMQ_READ_QUEUES: &str = "readQueueNums";
pub const ROCKETMQ_PERM: &str = "perm";
pub const ROCKETMQ_MESSAGE_TYPE: &str = "message.type";
/// RocketMQ's permission bits for a topic that is read and written (READ 4 | WRITE 2).
pub const ROCKETMQ_READ_WRITE: i32 = 6;

/// MQTT has no server-side queue object to hold any setting.
fn mqtt_unsupported(spec: &QueueSpec, parsed: &Parsed, unsupported: &mut Vec<String>) {
    for (field, set) in [
        ("spec.retention", spec.retention.is_some()),
        ("spec.maxMessageSize", parsed.max_message.is_some()),
        ("spec.messageDefaults.expire", parsed.expire_ms.is_some()),
        ("spec.messageDefaults.priority", parsed.priority.is_some()),
    ] {
        if set {
            unsupported.push(format!("{field}: mqtt has no server-side queue object to hold this setting"));
        }
    }
}

/// A difference between the plan and what the broker holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drift {
    pub setting: String,
    pub desired: Option<String>,
    pub actual: Option<String>,
}

impl std::fmt::Display for Drift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "unset".into());
        write!(f, "{}: broker has {}, spec wants {}", self.setting, show(&self.actual), show(&self.desired))
    }
}

/// Differences between `plan` and what the broker reports (`partitions`, `settings`). Settings
/// the plan does not name are the broker's own business and never drift.
#[must_use]
pub fn drift(plan: &QueuePlan, partitions: i32, settings: &BTreeMap<String, String>) -> Vec<Drift> {
    let mut out = Vec::new();
    if partitions != plan.partitions {
        out.push(Drift {
            setting: "partitions".into(),
            desired: Some(plan.partitions.to_string()),
            actual: Some(partitions.to_string()),
        });
    }
    for (key, desired) in &plan.settings {
        let actual = settings.get(key);
        if actual != Some(desired) {
            out.push(Drift { setting: key.clone(), desired: Some(desired.clone()), actual: actual.cloned() });
        }
    }
    out
}

fn check_name(driver: Driver, name: &str) -> Result<(), InvalidQueue> {
    let invalid = |message: String| InvalidQueue { field: "spec.name".into(), message };
    match driver {
        Driver::Kafka if name.len() > 249 => Err(invalid(format!("{name:?} is longer than Kafka's 249 characters"))),
        Driver::Kafka if name == "." || name == ".." => Err(invalid("Kafka refuses the topic names . and ..".into())),
        Driver::Nats if name.contains(['.', '*', '>', '/', '\\']) => {
            Err(invalid(format!("{name:?}: NATS stream names may not contain . * > / or \\")))
        }
        Driver::Mqtt if name.contains(['+', '#']) => {
            Err(invalid(format!("{name:?}: MQTT wildcards + and # cannot name a topic namespace")))
        }
        Driver::Rabbitmq if name.starts_with("amq.") => {
            Err(invalid(format!("{name:?}: RabbitMQ reserves names starting with amq.")))
        }
        Driver::Rocketmq => rocketmq_name_refusal(name).map_or(Ok(()), |why| Err(invalid(format!("{name:?}: {why}")))),
        _ => Ok(()),
    }
}

/// Why RocketMQ refuses a topic name: its brokers take letters, digits, `_`, `-`, `%` and `|`, at
/// most 127 of them, and keep some names for themselves.
fn rocketmq_name_refusal(name: &str) -> Option<&'static str> {
    const SYSTEM: [&str; 9] = [
        "TBW102",
        "SCHEDULE_TOPIC_XXXX",
        "BenchmarkTest",
        "RMQ_SYS_TRANS_HALF_TOPIC",
        "RMQ_SYS_TRACE_TOPIC",
        "RMQ_SYS_TRANS_OP_HALF_TOPIC",
        "TRANS_CHECK_MAX_TIME_TOPIC",
        "SELF_TEST_TOPIC",
        "OFFSET_MOVED_EVENT",
    ];
    if name.len() > 127 {
        Some("longer than RocketMQ's 127 characters")
    } else if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '%' | '|')) {
        Some("RocketMQ topic names take only letters, digits and _ - % | (no dot)")
    } else if SYSTEM.contains(&name)
        || name.starts_with("rmq_sys_")
        || name.starts_with("%RETRY%")
        || name.starts_with("%DLQ%")
    {
        Some("RocketMQ keeps this name for its own topics")
    } else {
        None
    }
}

fn duration_ms(text: Option<&str>, field: &str) -> Result<Option<u64>, InvalidQueue> {
    text.map(|t| {
        parse_duration(t)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .map_err(|e| InvalidQueue { field: field.into(), message: e.to_string() })
    })
    .transpose()
}

fn size(text: Option<&str>, field: &str) -> Result<Option<u64>, InvalidQueue> {
    text.map(|t| parse_size(t).map_err(|e| InvalidQueue { field: field.into(), message: e.to_string() })).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> QueueSpec {
        serde_yaml_ng::from_str(yaml).expect("spec")
    }

    #[test]
    fn rocketmq_plans_queues_per_broker_read_write_normal_and_names_what_brokers_keep() {
        let spec = spec(
            "{accessPointRef: {name: r}, partitions: 4, retention: {time: 1d}, messageDefaults: {delay: 5s, priority: 3}}",
        );
        let plan = plan(Driver::Rocketmq, "t%orders".into(), &spec).unwrap();
        assert_eq!(plan.partitions, 4);
        let settings: Vec<(&str, &str)> = plan.settings.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(settings, [("message.type", "NORMAL"), ("perm", "6"), ("readQueueNums", "4")]);
        assert_eq!(plan.unsupported.len(), 3, "{:?}", plan.unsupported);
        assert!(plan.unsupported[0].starts_with("spec.messageDefaults.delay: the operator makes no DELAY topics"));
        assert!(plan.unsupported.iter().any(|u| u.starts_with("spec.retention: rocketmq keeps messages by")));
        assert!(plan.unsupported.iter().any(|u| u.starts_with("spec.messageDefaults.priority")));
        for refused in ["a.b", "TBW102", "rmq_sys_x", "%DLQ%g"] {
            let error = super::plan(Driver::Rocketmq, refused.into(), &spec).unwrap_err();
            assert_eq!(error.field, "spec.name", "{refused}");
        }
        assert!(super::plan(Driver::Rocketmq, "x".repeat(128), &spec).is_err());
        assert!(super::plan(Driver::Rocketmq, "tenant%a-b_c|d".into(), &spec).is_ok());
    }

    #[test]
    fn kafka_maps_retention_and_size_to_topic_configs() {
        let plan = plan(
            Driver::Kafka,
            "orders".into(),
            &spec("{accessPointRef: {name: k}, partitions: 6, replication: 3, retention: {time: 7d, bytes: 1Gi}, maxMessageSize: 1Mi}"),
        )
        .expect("valid");
        assert_eq!(plan.partitions, 6);
        assert_eq!(plan.settings["retention.ms"], "604800000");
        assert_eq!(plan.settings["retention.bytes"], "1073741824");
        assert_eq!(plan.settings["max.message.bytes"], "1048576");
        assert!(plan.unsupported.is_empty());
    }

    #[test]
    fn what_a_driver_cannot_honour_is_named_never_dropped() {
        let plan = plan(
            Driver::Kafka,
            "orders".into(),
            &spec("{accessPointRef: {name: k}, messageDefaults: {delay: 30s, priority: 5}}"),
        )
        .expect("valid");
        assert_eq!(plan.unsupported.len(), 2, "{:?}", plan.unsupported);
        assert!(plan.unsupported[0].starts_with("spec.messageDefaults.delay: kafka has no delayed delivery"));
        let nats = super::plan(Driver::Nats, "orders".into(), &spec("{accessPointRef: {name: n}, partitions: 4}"))
            .expect("valid");
        assert!(nats.unsupported[0].starts_with("spec.partitions:"), "{:?}", nats.unsupported);
        assert_eq!(nats.partitions, 1, "what NATS cannot do is not planned");
        assert!(drift(&nats, 1, &nats.settings).is_empty(), "so a stream of one partition is in sync");
    }

    #[test]
    fn rabbitmq_queues_are_quorum_unless_transient() {
        let durable =
            plan(Driver::Rabbitmq, "q".into(), &spec("{accessPointRef: {name: r}, messageDefaults: {expire: 1h}}"))
                .expect("valid");
        assert_eq!(durable.settings["x-queue-type"], "quorum");
        assert_eq!(durable.settings["x-message-ttl"], "3600000");
        let transient = plan(
            Driver::Rabbitmq,
            "q".into(),
            &spec("{accessPointRef: {name: r}, durability: Transient, messageDefaults: {priority: 5}}"),
        )
        .expect("valid");
        assert_eq!(transient.settings["x-queue-type"], "classic");
        assert_eq!(transient.settings["x-max-priority"], "5");
    }

    #[test]
    fn broker_naming_rules_are_checked_per_driver() {
        assert!(plan(Driver::Nats, "a.b".into(), &spec("{accessPointRef: {name: n}}")).is_err());
        assert!(plan(Driver::Mqtt, "a/#".into(), &spec("{accessPointRef: {name: m}}")).is_err());
        assert!(plan(Driver::Rabbitmq, "amq.x".into(), &spec("{accessPointRef: {name: r}}")).is_err());
        assert!(plan(Driver::Kafka, "a.b".into(), &spec("{accessPointRef: {name: k}}")).is_ok());
    }

    #[test]
    fn drift_lists_only_what_the_plan_names() {
        let plan =
            plan(Driver::Kafka, "o".into(), &spec("{accessPointRef: {name: k}, partitions: 3, retention: {time: 1d}}"))
                .expect("valid");
        let broker: BTreeMap<String, String> =
            [("retention.ms".into(), "3600000".into()), ("cleanup.policy".into(), "delete".into())].into();
        let drift = drift(&plan, 4, &broker);
        assert_eq!(drift.len(), 2);
        assert_eq!(drift[0].to_string(), "partitions: broker has 4, spec wants 3");
        assert_eq!(drift[1].to_string(), "retention.ms: broker has 3600000, spec wants 86400000");
    }
}
