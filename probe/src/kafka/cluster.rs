//! The operator's requests about a managed Kafka's brokers and where partitions live, none of
//! which librdkafka offers: which brokers the controller has registered, fenced or not
//! (DescribeCluster v2), moving partitions' replicas (AlterPartitionReassignments v0), the moves
//! under way (ListPartitionReassignments v0), and forgetting a broker whose pod is gone
//! (UnregisterBroker v0). All are flexible versions; a broker forwards the changes to the active
//! controller.

use std::collections::BTreeMap;

use super::{
    DecodeError, NO_TAGGED_FIELDS, Reader, put_compact_ids, put_compact_string, put_uvarint, request_flexible,
};

const ALTER_PARTITION_REASSIGNMENTS: i16 = 45;
const LIST_PARTITION_REASSIGNMENTS: i16 = 46;
const DESCRIBE_CLUSTER: i16 = 60;
const UNREGISTER_BROKER: i16 = 64;
/// UnregisterBroker's answer for a broker the controller does not know (any more).
const BROKER_ID_NOT_REGISTERED: i16 = 102;
/// DescribeCluster's endpoint type of brokers (2 is controllers).
const BROKERS: i8 = 1;

/// A refusal: the error code and the broker's message.
pub type Refused = (i16, String);

/// A broker the controller has registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegisteredBroker {
    pub id: i32,
    /// Fenced: not serving (stopped, or not caught up with the metadata).
    pub fenced: bool,
}

/// A partition's replicas to be: the first is its preferred leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reassignment {
    pub topic: String,
    pub partition: i32,
    pub replicas: Vec<i32>,
}

/// DescribeCluster v2 of the brokers, fenced ones too.
#[must_use]
pub fn describe_cluster(correlation_id: i32) -> Vec<u8> {
    // No authorized operations; brokers; include fenced ones.
    let body = [0, BROKERS.to_be_bytes()[0], 1, NO_TAGGED_FIELDS];
    request_flexible(DESCRIBE_CLUSTER, 2, correlation_id, &body)
}

/// DescribeCluster v2's answer (after the correlation id): the registered brokers.
pub fn describe_cluster_brokers(answer: &[u8]) -> Result<Result<Vec<RegisteredBroker>, Refused>, DecodeError> {
    let mut reader = Reader { bytes: answer };
    if let Some(refused) = reader.flexible_error()? {
        return Ok(Err(refused));
    }
    reader.take(1, "endpoint type")?;
    reader.compact_string("cluster id")?;
    reader.i32("controller id")?;
    let brokers = (0..reader.compact_count("brokers")?.unwrap_or(0))
        .map(|_| {
            let id = reader.i32("broker id")?;
            reader.compact_string("host")?;
            reader.i32("port")?;
            reader.compact_string("rack")?;
            let fenced = reader.take(1, "is fenced")?[0] != 0;
            reader.tagged_fields("broker's tagged fields")?;
            Ok(RegisteredBroker { id, fenced })
        })
        .collect::<Result<_, DecodeError>>()?;
    Ok(Ok(brokers))
}

/// AlterPartitionReassignments v0: move each partition to its replicas.
#[must_use]
pub fn alter_partition_reassignments(correlation_id: i32, moves: &[Reassignment], timeout_ms: i32) -> Vec<u8> {
    let mut by_topic: BTreeMap<&str, Vec<&Reassignment>> = BTreeMap::new();
    for reassignment in moves {
        by_topic.entry(&reassignment.topic).or_default().push(reassignment);
    }
    let mut body = timeout_ms.to_be_bytes().to_vec();
    put_uvarint(&mut body, u32::try_from(by_topic.len() + 1).unwrap_or(u32::MAX));
    for (topic, partitions) in by_topic {
        put_compact_string(&mut body, topic.as_bytes());
        put_uvarint(&mut body, u32::try_from(partitions.len() + 1).unwrap_or(u32::MAX));
        for reassignment in partitions {
            body.extend_from_slice(&reassignment.partition.to_be_bytes());
            put_compact_ids(&mut body, &reassignment.replicas);
            body.push(NO_TAGGED_FIELDS);
        }
        body.push(NO_TAGGED_FIELDS);
    }
    body.push(NO_TAGGED_FIELDS);
    request_flexible(ALTER_PARTITION_REASSIGNMENTS, 0, correlation_id, &body)
}

/// AlterPartitionReassignments v0's answer: every move taken, or the first refusal (a
/// partition's is named `topic-partition: message`).
pub fn alter_partition_reassignments_response(answer: &[u8]) -> Result<Result<(), Refused>, DecodeError> {
    let mut reader = Reader { bytes: answer };
    if let Some(refused) = reader.flexible_error()? {
        return Ok(Err(refused));
    }
    let mut first_refusal = None;
    for _ in 0..reader.compact_count("topics")?.unwrap_or(0) {
        let topic = reader.compact_string("topic")?.unwrap_or_default();
        for _ in 0..reader.compact_count("partitions")?.unwrap_or(0) {
            let partition = reader.i32("partition")?;
            let error = reader.i16("error code")?;
            let message = reader.compact_string("error message")?.unwrap_or_default();
            reader.tagged_fields("partition's tagged fields")?;
            if error != 0 && first_refusal.is_none() {
                first_refusal = Some((error, format!("{topic}-{partition}: {message}")));
            }
        }
        reader.tagged_fields("topic's tagged fields")?;
    }
    Ok(first_refusal.map_or(Ok(()), Err))
}

/// ListPartitionReassignments v0 of every topic.
#[must_use]
pub fn list_partition_reassignments(correlation_id: i32, timeout_ms: i32) -> Vec<u8> {
    let mut body = timeout_ms.to_be_bytes().to_vec();
    body.push(0); // topics: null, all of them
    body.push(NO_TAGGED_FIELDS);
    request_flexible(LIST_PARTITION_REASSIGNMENTS, 0, correlation_id, &body)
}

/// ListPartitionReassignments v0's answer: the partitions being moved, as `topic-partition`.
pub fn partitions_being_moved(answer: &[u8]) -> Result<Result<Vec<String>, Refused>, DecodeError> {
    let mut reader = Reader { bytes: answer };
    if let Some(refused) = reader.flexible_error()? {
        return Ok(Err(refused));
    }
    let mut moving = Vec::new();
    for _ in 0..reader.compact_count("topics")?.unwrap_or(0) {
        let topic = reader.compact_string("topic")?.unwrap_or_default();
        for _ in 0..reader.compact_count("partitions")?.unwrap_or(0) {
            let partition = reader.i32("partition")?;
            for what in ["replicas", "adding replicas", "removing replicas"] {
                reader.compact_ids(what)?;
            }
            reader.tagged_fields("partition's tagged fields")?;
            moving.push(format!("{topic}-{partition}"));
        }
        reader.tagged_fields("topic's tagged fields")?;
    }
    Ok(Ok(moving))
}

/// UnregisterBroker v0: the controller forgets broker `broker` (it must not run).
#[must_use]
pub fn unregister_broker(correlation_id: i32, broker: i32) -> Vec<u8> {
    let mut body = broker.to_be_bytes().to_vec();
    body.push(NO_TAGGED_FIELDS);
    request_flexible(UNREGISTER_BROKER, 0, correlation_id, &body)
}

/// UnregisterBroker v0's answer: forgotten, now or before, or the refusal.
pub fn unregister_broker_response(answer: &[u8]) -> Result<Result<(), Refused>, DecodeError> {
    match (Reader { bytes: answer }).flexible_error()? {
        None | Some((BROKER_ID_NOT_REGISTERED, _)) => Ok(Ok(())),
        Some(refused) => Ok(Err(refused)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A flexible answer's start: header tagged fields, throttle time, error code and message.
    fn answer_start(error: i16, message: Option<&str>) -> Vec<u8> {
        let mut answer = vec![NO_TAGGED_FIELDS];
        answer.extend_from_slice(&0i32.to_be_bytes());
        answer.extend_from_slice(&error.to_be_bytes());
        match message {
            Some(m) => put_compact_string(&mut answer, m.as_bytes()),
            None => answer.push(0),
        }
        answer
    }

    fn reassignment(topic: &str, partition: i32, replicas: &[i32]) -> Reassignment {
        Reassignment { topic: topic.into(), partition, replicas: replicas.to_vec() }
    }

    #[test]
    fn describe_cluster_asks_for_fenced_brokers_too_and_reads_them() {
        let frame = describe_cluster(4);
        assert_eq!(&frame[4..12], &[0, 60, 0, 2, 0, 0, 0, 4]);
        assert_eq!(&frame[frame.len() - 5..], &[0, 0, 1, 1, 0], "header tags, no operations, brokers, fenced, tags");
        let mut answer = answer_start(0, None);
        answer.push(1);
        put_compact_string(&mut answer, b"cluster");
        answer.extend_from_slice(&1i32.to_be_bytes());
        put_uvarint(&mut answer, 3);
        for (id, fenced) in [(0i32, false), (3, true)] {
            answer.extend_from_slice(&id.to_be_bytes());
            put_compact_string(&mut answer, b"kafka-0.kafka.ns.svc");
            answer.extend_from_slice(&9092i32.to_be_bytes());
            answer.push(0); // no rack
            answer.push(u8::from(fenced));
            answer.push(NO_TAGGED_FIELDS);
        }
        answer.extend_from_slice(&i32::MIN.to_be_bytes());
        answer.push(NO_TAGGED_FIELDS);
        assert_eq!(
            describe_cluster_brokers(&answer),
            Ok(Ok(vec![RegisteredBroker { id: 0, fenced: false }, RegisteredBroker { id: 3, fenced: true }]))
        );
        assert_eq!(describe_cluster_brokers(&answer_start(31, Some("no"))), Ok(Err((31, "no".into()))));
    }

    #[test]
    fn reassignments_are_grouped_by_topic() {
        let moves = [reassignment("b", 0, &[1, 2]), reassignment("a", 2, &[0, 3]), reassignment("b", 1, &[2, 0])];
        let frame = alter_partition_reassignments(6, &moves, 10_000);
        assert_eq!(&frame[4..12], &[0, 45, 0, 0, 0, 0, 0, 6]);
        let mut body = b"\x00\x09oms-probe\x00".to_vec();
        body.extend_from_slice(&10_000i32.to_be_bytes());
        body.push(3);
        put_compact_string(&mut body, b"a");
        body.push(2);
        body.extend_from_slice(&2i32.to_be_bytes());
        body.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0]);
        put_compact_string(&mut body, b"b");
        body.push(3);
        body.extend_from_slice(&0i32.to_be_bytes());
        body.extend_from_slice(&[3, 0, 0, 0, 1, 0, 0, 0, 2, 0]);
        body.extend_from_slice(&1i32.to_be_bytes());
        body.extend_from_slice(&[3, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&frame[12..], &body[..]);
    }

    #[test]
    fn a_refused_move_names_its_partition() {
        let answer = |partitions: &[(i32, i16, Option<&str>)]| {
            let mut answer = answer_start(0, None);
            answer.push(2);
            put_compact_string(&mut answer, b"orders");
            put_uvarint(&mut answer, u32::try_from(partitions.len() + 1).expect("count"));
            for (partition, error, message) in partitions {
                answer.extend_from_slice(&partition.to_be_bytes());
                answer.extend_from_slice(&error.to_be_bytes());
                match message {
                    Some(m) => put_compact_string(&mut answer, m.as_bytes()),
                    None => answer.push(0),
                }
                answer.push(NO_TAGGED_FIELDS);
            }
            answer.extend_from_slice(&[NO_TAGGED_FIELDS, NO_TAGGED_FIELDS]);
            answer
        };
        assert_eq!(alter_partition_reassignments_response(&answer(&[(0, 0, None), (1, 0, None)])), Ok(Ok(())));
        assert_eq!(
            alter_partition_reassignments_response(&answer(&[(0, 0, None), (1, 39, Some("broker 7 is not alive"))])),
            Ok(Err((39, "orders-1: broker 7 is not alive".into())))
        );
        assert_eq!(alter_partition_reassignments_response(&answer_start(41, None)), Ok(Err((41, String::new()))));
    }

    #[test]
    fn moves_under_way_are_listed_by_partition() {
        let frame = list_partition_reassignments(2, 5000);
        assert_eq!(&frame[4..12], &[0, 46, 0, 0, 0, 0, 0, 2]);
        assert_eq!(&frame[frame.len() - 6..], &[0, 0, 0x13, 0x88, 0, 0], "timeout, all topics, tags");
        let mut answer = answer_start(0, None);
        answer.push(2);
        put_compact_string(&mut answer, b"orders");
        answer.push(2);
        answer.extend_from_slice(&4i32.to_be_bytes());
        for ids in [&[0, 1, 3][..], &[3], &[2]] {
            put_compact_ids(&mut answer, ids);
        }
        answer.extend_from_slice(&[NO_TAGGED_FIELDS, NO_TAGGED_FIELDS, NO_TAGGED_FIELDS]);
        assert_eq!(partitions_being_moved(&answer), Ok(Ok(vec!["orders-4".to_owned()])));
        let mut none = answer_start(0, None);
        none.extend_from_slice(&[1, NO_TAGGED_FIELDS]);
        assert_eq!(partitions_being_moved(&none), Ok(Ok(Vec::new())));
    }

    #[test]
    fn a_broker_unregistered_before_counts_as_unregistered() {
        assert_eq!(&unregister_broker(3, 7)[4..12], &[0, 64, 0, 0, 0, 0, 0, 3]);
        assert_eq!(&unregister_broker(3, 7)[23..], &[0, 0, 0, 0, 7, 0]);
        let mut done = answer_start(0, None);
        done.push(NO_TAGGED_FIELDS);
        assert_eq!(unregister_broker_response(&done), Ok(Ok(())));
        assert_eq!(unregister_broker_response(&answer_start(102, Some("not registered"))), Ok(Ok(())));
        assert_eq!(unregister_broker_response(&answer_start(7, Some("timed out"))), Ok(Err((7, "timed out".into()))));
    }
}
