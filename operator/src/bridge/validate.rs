//! Whether a Bridge's worker would start: the rendered worker config goes through the worker's
//! own validation (`oms_bridge_config::validate_worker`: the filter's grammar, the start position
//! against the source, the in-flight bounds, mTLS to a gateway) before anything is deployed, and a
//! refusal is reported on the Bridge, named by its spec field, instead of as a crash-looping pod.
//! A guarantee the pair of ends cannot keep (`delivery: ExactlyOnce` where the source's ids are not
//! stable or the target does not drop repeats) is `Unsupported`, as are worker replicas the
//! source cannot share without breaking sessions; anything else the worker refuses is
//! `InvalidSpec`.

use std::time::Duration;

use oms_bridge_config::{ConfigError, Delivery, Protocol, WorkerFile, in_kafka_transactions};
use oms_crds::quantity::format_duration;

/// Condition reasons of a refused Bridge.
pub const INVALID_SPEC: &str = "InvalidSpec";
pub const UNSUPPORTED: &str = "Unsupported";
/// A Queue at one end has not reported what the Bridge needs to know yet.
pub const QUEUE_NOT_READY: &str = "QueueNotReady";

/// A Bridge the worker would refuse; `field` is the Bridge's, `message` the worker's reason,
/// `reason` the condition reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidBridge {
    pub reason: &'static str,
    pub field: String,
    pub message: String,
}

/// Checks the worker config rendered for a Bridge that asks for `replicas` workers.
pub fn check(file: &WorkerFile, replicas: i32) -> Result<(), InvalidBridge> {
    let name = format!("Bridge {}/{}", file.bridge.namespace, file.bridge.name);
    oms_bridge_config::validate_worker(&name, file.clone()).map_err(|error| blame(&error))?;
    match replicas_unsupported(file.source.driver) {
        Some(why) if replicas > 1 => Err(InvalidBridge {
            reason: UNSUPPORTED,
            field: "spec.replicas".into(),
            message: format!(
                "{replicas} workers from a {} source are unsupported: {why}; use replicas: 1",
                file.source.driver.name()
            ),
        }),
        _ => Ok(()),
    }
}

/// The shortest duplicate window `delivery: ExactlyOnce` into JetStream accepts: JetStream's
/// default, time enough for a killed worker's successor to start and send the same ids again.
pub const LEAST_DUPLICATE_WINDOW: Duration = Duration::from_mins(2);

/// Checks that a JetStream target drops repeats long enough for `delivery: ExactlyOnce`:
/// `window` is the target stream's duplicate window as its Queue reports it (`None`: not yet).
pub fn check_target_window(file: &WorkerFile, window: Option<Duration>) -> Result<(), InvalidBridge> {
    let relies_on_window = file.delivery == Delivery::ExactlyOnce
        && file.target.driver == Protocol::Nats
        && !in_kafka_transactions(file.source.driver, file.target.driver);
    let stream = &file.target.queue;
    match window {
        _ if !relies_on_window => Ok(()),
        None => Err(InvalidBridge {
            reason: QUEUE_NOT_READY,
            field: "spec.target".into(),
            message: format!("the target Queue has not reported stream {stream}'s duplicate window yet"),
        }),
        Some(window) if window < LEAST_DUPLICATE_WINDOW => Err(InvalidBridge {
            reason: UNSUPPORTED,
            field: "spec.delivery".into(),
            message: format!(
                "ExactlyOnce into stream {stream} needs a duplicate window of at least {least}, the time a \
                 restarted worker may take to send the same ids again; the stream drops repeats for {window} \
                 only (status.duplicateWindow of the target Queue; JetStream caps it at the stream's max age). \
                 Give the target Queue a spec.retention.time of at least {least}, or use delivery: AtLeastOnce",
                least = format_duration(LEAST_DUPLICATE_WINDOW),
                window = format_duration(window),
            ),
        }),
        Some(_) => Ok(()),
    }
}

/// Why more than one worker cannot share a source, if it cannot. A Kafka consumer group gives
/// each worker its own partitions; JetStream and AMQP hand their messages to whichever worker asks
/// next, which is fine only where no order is promised; where order is kept one worker holds the
/// source (an AMQP queue's exclusive consumer, a JetStream consumer's pin) and the others stand
/// by. An MQTT session belongs to one client: the workers take turns through a Lease.
fn replicas_unsupported(source: Protocol) -> Option<&'static str> {
    match source {
        // RocketMQ: the workers are simple consumers of one group, each message to one of them.
        Protocol::Kafka | Protocol::Amqp | Protocol::Nats | Protocol::Mqtt | Protocol::Rocketmq => None,
        Protocol::Gateway => Some("several workers reading through one gateway are not built or proved yet"),
    }
}

/// The spec field behind a worker config error. The ends' fields (servers, queue names, TLS) come
/// from the Queues and their access points, not from the Bridge: the message says which.
fn blame(error: &ConfigError) -> InvalidBridge {
    let field = error.field.as_str();
    let top = field.split(['.', '[']).next().unwrap_or(field);
    let spec_field = match top {
        "filter" | "startFrom" | "startTimestamp" | "delivery" | "ordering" | "inFlight" => format!("spec.{top}"),
        "source" | "target" if field == top => format!("spec.{top}"),
        "source" | "target" => {
            return InvalidBridge {
                reason: INVALID_SPEC,
                field: format!("spec.{top}"),
                message: format!(
                    "the {top} Queue's access point gives the worker an unusable {field}: {}",
                    error.problem
                ),
            };
        }
        _ => "spec".to_owned(),
    };
    let reason = if top == "delivery" { UNSUPPORTED } else { INVALID_SPEC };
    InvalidBridge { reason, field: spec_field, message: error.problem.clone() }
}

#[cfg(test)]
mod tests {
    use oms_bridge_config::{BridgeName, EndpointFile, Ordering, Protocol};

    use super::*;

    fn check1(file: &WorkerFile) -> Result<(), InvalidBridge> {
        check(file, 1)
    }

    fn file(edit: impl FnOnce(&mut WorkerFile)) -> WorkerFile {
        let end = |queue: &str| EndpointFile {
            driver: Protocol::Nats,
            servers: vec!["nats.acme.svc:4222".into()],
            queue: queue.into(),
            access_point: Some("acme/edge".into()),
            tls: None,
            name_servers: Vec::new(),
            credentials_dir: None,
        };
        let mut file = WorkerFile {
            bridge: BridgeName { name: "to-edge".into(), namespace: "acme".into() },
            source: end("orders"),
            target: end("orders-edge"),
            delivery: oms_bridge_config::Delivery::AtLeastOnce,
            ordering: Ordering::PerKey,
            filter: None,
            start_from: oms_bridge_config::StartFrom::Earliest,
            start_timestamp: None,
            in_flight: None,
            lease: None,
            admin: None,
        };
        edit(&mut file);
        file
    }

    #[test]
    fn a_bridge_the_worker_accepts_passes() {
        assert_eq!(check(&file(|_| {}), 1), Ok(()));
    }

    #[test]
    fn a_bad_filter_is_blamed_on_spec_filter_with_the_column() {
        let error = check1(&file(|f| f.filter = Some("headers['region'] = 'eu'".into()))).expect_err("refused");
        assert_eq!((error.reason, error.field.as_str()), (INVALID_SPEC, "spec.filter"));
        assert!(error.message.starts_with("at column 19"), "{error}");
    }

    #[test]
    fn a_start_position_the_source_cannot_honour_is_blamed_on_spec_start_from() {
        let error = check1(&file(|f| {
            f.source.driver = Protocol::Amqp;
            f.start_from = oms_bridge_config::StartFrom::Latest;
        }))
        .expect_err("refused");
        assert_eq!(error.field, "spec.startFrom");
        assert!(error.message.contains("no replayable log"), "{error}");
    }

    #[test]
    fn exactly_once_from_a_source_without_stable_ids_is_unsupported_naming_the_pair() {
        let error = check1(&file(|f| {
            f.source.driver = Protocol::Amqp;
            f.delivery = oms_bridge_config::Delivery::ExactlyOnce;
        }))
        .expect_err("refused");
        assert_eq!((error.reason, error.field.as_str()), (UNSUPPORTED, "spec.delivery"));
        assert!(error.message.contains("from amqp to nats"), "{error}");
        let nats_to_nats = file(|f| f.delivery = oms_bridge_config::Delivery::ExactlyOnce);
        assert_eq!(check1(&nats_to_nats), Ok(()));
    }

    #[test]
    fn a_bridge_into_its_own_source_is_invalid_spec_on_spec_target() {
        let error = check1(&file(|f| f.target.queue = "orders".into())).expect_err("refused");
        assert_eq!((error.reason, error.field.as_str()), (INVALID_SPEC, "spec.target"));
        assert!(error.message.contains("would loop"), "{error}");
    }

    #[test]
    fn a_bad_end_is_blamed_on_its_queue_and_access_point() {
        let error = check1(&file(|f| f.target.servers = vec!["nats-no-port".into()])).expect_err("refused");
        assert_eq!(error.field, "spec.target");
        assert!(error.message.contains("target.servers[0]"), "{error}");
    }

    #[test]
    fn replicas_share_a_group_or_stand_by_and_only_a_gateway_source_is_refused() {
        assert_eq!(check(&file(|_| {}), 3), Ok(()), "one pinned holder, standbys");
        assert_eq!(check(&file(|f| f.ordering = Ordering::None), 3), Ok(()), "competing workers, no order");
        assert_eq!(check(&file(|f| f.source.driver = Protocol::Kafka), 4), Ok(()), "a consumer group");
        assert_eq!(check(&file(|f| f.source.driver = Protocol::Amqp), 3), Ok(()), "one exclusive consumer, standbys");
        assert_eq!(check(&file(|f| f.source.driver = Protocol::Mqtt), 3), Ok(()), "turns through a Lease");
        let gateway = file(|f| {
            f.source.driver = Protocol::Gateway;
            f.source.tls = Some(crate::workload::mounted_tls());
        });
        let refused = check(&gateway, 2).expect_err("not built");
        assert_eq!((refused.reason, refused.field.as_str()), (UNSUPPORTED, "spec.replicas"));
        assert!(refused.message.starts_with("2 workers from a gateway source are unsupported"), "{refused}");
        assert_eq!(check(&gateway, 1), Ok(()));
    }
    #[test]
    fn exactly_once_into_jetstream_needs_a_duplicate_window_of_two_minutes() {
        let exactly_once = file(|f| f.delivery = Delivery::ExactlyOnce);
        assert_eq!(check_target_window(&exactly_once, Some(Duration::from_mins(2))), Ok(()));
        let short = check_target_window(&exactly_once, Some(Duration::from_secs(30))).expect_err("too short");
        assert_eq!((short.reason, short.field.as_str()), (UNSUPPORTED, "spec.delivery"));
        assert!(short.message.contains("drops repeats for 30s only"), "{short}");
        assert!(short.message.contains("spec.retention.time of at least 2m"), "{short}");
        let unknown = check_target_window(&exactly_once, None).expect_err("not reported yet");
        assert_eq!(unknown.reason, QUEUE_NOT_READY);
        assert_eq!(check_target_window(&file(|_| {}), None), Ok(()), "at least once needs no window");
        let kafka = file(|f| {
            f.delivery = Delivery::ExactlyOnce;
            f.source.driver = Protocol::Kafka;
            f.target.driver = Protocol::Kafka;
        });
        assert_eq!(check_target_window(&kafka, None), Ok(()), "Kafka transactions need no window");
    }
}
