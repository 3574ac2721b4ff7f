//! KRaft's controller quorum as DescribeQuorum v2 tells it: the leader, the voters and the
//! observers of the metadata log, each with its directory id (the id `kafka-storage format`
//! gave its log directory, which a dynamic quorum names its voters by); and changing a dynamic
//! quorum's voters one at a time (AddRaftVoter v0, RemoveRaftVoter v0). Flexible versions; a
//! broker forwards each to the active controller.

use super::{DecodeError, NO_TAGGED_FIELDS, Reader, put_compact_string, request_flexible};

const DESCRIBE_QUORUM: i16 = 55;
const ADD_RAFT_VOTER: i16 = 80;
const REMOVE_RAFT_VOTER: i16 = 81;
/// The metadata log's topic, whose one partition the controllers replicate.
const METADATA_TOPIC: &[u8] = b"__cluster_metadata";

/// A replica of the metadata log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replica {
    pub id: i32,
    /// Its log directory's id, 16 bytes (all zero where the quorum is static).
    pub directory_id: [u8; 16],
    /// How far its log reaches, -1 when the leader does not know.
    pub log_end_offset: i64,
    /// When it last fetched from the leader, in the leader's milliseconds; -1 for the leader
    /// itself or when unknown. A replica gone (a removed voter, a lost directory) stays listed for
    /// a while with an old time.
    pub last_fetch_ms: i64,
}

/// The metadata log's quorum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quorum {
    /// The active controller, -1 while there is none.
    pub leader: i32,
    pub high_watermark: i64,
    pub voters: Vec<Replica>,
    /// Replicas that follow the log without a vote: the brokers, and controllers not (yet) voters.
    pub observers: Vec<Replica>,
}

/// DescribeQuorum v2 of the metadata log's partition.
#[must_use]
pub fn describe_quorum(correlation_id: i32) -> Vec<u8> {
    let mut body = vec![2];
    put_compact_string(&mut body, METADATA_TOPIC);
    body.push(2);
    body.extend_from_slice(&0i32.to_be_bytes());
    body.extend_from_slice(&[NO_TAGGED_FIELDS, NO_TAGGED_FIELDS, NO_TAGGED_FIELDS]);
    request_flexible(DESCRIBE_QUORUM, 2, correlation_id, &body)
}

/// DescribeQuorum v2's answer (after the correlation id): the quorum, or the refusal (the
/// answer's error, or its partition's).
pub fn describe_quorum_response(answer: &[u8]) -> Result<Result<Quorum, (i16, String)>, DecodeError> {
    let mut reader = Reader { bytes: answer };
    reader.tagged_fields("response header's tagged fields")?;
    // No throttle time in this answer: the error comes first.
    let error = reader.i16("error code")?;
    let message = reader.compact_string("error message")?.unwrap_or_default();
    if error != 0 {
        return Ok(Err((error, message)));
    }
    let mut quorum = None;
    for _ in 0..reader.compact_count("topics")?.unwrap_or(0) {
        reader.compact_string("topic")?;
        for _ in 0..reader.compact_count("partitions")?.unwrap_or(0) {
            reader.i32("partition")?;
            let error = reader.i16("partition's error code")?;
            let message = reader.compact_string("partition's error message")?.unwrap_or_default();
            if error != 0 {
                return Ok(Err((error, message)));
            }
            let leader = reader.i32("leader id")?;
            reader.i32("leader epoch")?;
            let high_watermark = reader.i64("high watermark")?;
            let voters = replicas(&mut reader, "voters")?;
            let observers = replicas(&mut reader, "observers")?;
            reader.tagged_fields("partition's tagged fields")?;
            quorum = Some(Quorum { leader, high_watermark, voters, observers });
        }
        reader.tagged_fields("topic's tagged fields")?;
    }
    // The nodes' listeners follow; what is above is all the operator reads.
    quorum.map(Ok).ok_or_else(|| DecodeError("no partition of the metadata log in the answer".into()))
}

/// A controller to add as a voter: its node id, log directory, and where it takes votes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Voter {
    pub id: i32,
    pub directory_id: [u8; 16],
    /// The controller listener's name, host and port.
    pub listener: (String, String, u16),
}

/// AddRaftVoter v0: `voter` votes from now on, once it has caught up (the controller waits up to
/// `timeout_ms`).
#[must_use]
pub fn add_raft_voter(correlation_id: i32, cluster_id: &str, voter: &Voter, timeout_ms: i32) -> Vec<u8> {
    let mut body = Vec::new();
    put_compact_string(&mut body, cluster_id.as_bytes());
    body.extend_from_slice(&timeout_ms.to_be_bytes());
    body.extend_from_slice(&voter.id.to_be_bytes());
    body.extend_from_slice(&voter.directory_id);
    let (name, host, port) = &voter.listener;
    body.push(2);
    put_compact_string(&mut body, name.as_bytes());
    put_compact_string(&mut body, host.as_bytes());
    body.extend_from_slice(&port.to_be_bytes());
    body.extend_from_slice(&[NO_TAGGED_FIELDS, NO_TAGGED_FIELDS]);
    request_flexible(ADD_RAFT_VOTER, 0, correlation_id, &body)
}

/// RemoveRaftVoter v0: controller `id` of log directory `directory_id` stops voting.
#[must_use]
pub fn remove_raft_voter(correlation_id: i32, cluster_id: &str, id: i32, directory_id: &[u8; 16]) -> Vec<u8> {
    let mut body = Vec::new();
    put_compact_string(&mut body, cluster_id.as_bytes());
    body.extend_from_slice(&id.to_be_bytes());
    body.extend_from_slice(directory_id);
    body.push(NO_TAGGED_FIELDS);
    request_flexible(REMOVE_RAFT_VOTER, 0, correlation_id, &body)
}

/// AddRaftVoter's or RemoveRaftVoter's answer: done, or the refusal.
pub fn voter_change_response(answer: &[u8]) -> Result<Result<(), (i16, String)>, DecodeError> {
    Ok((Reader { bytes: answer }).flexible_error()?.map_or(Ok(()), Err))
}

fn replicas(reader: &mut Reader<'_>, what: &str) -> Result<Vec<Replica>, DecodeError> {
    (0..reader.compact_count(what)?.unwrap_or(0))
        .map(|_| {
            let id = reader.i32("replica id")?;
            let mut directory_id = [0; 16];
            directory_id.copy_from_slice(reader.take(16, "replica directory id")?);
            let log_end_offset = reader.i64("log end offset")?;
            let last_fetch_ms = reader.i64("last fetch time")?;
            reader.i64("last caught up time")?;
            reader.tagged_fields("replica's tagged fields")?;
            Ok(Replica { id, directory_id, log_end_offset, last_fetch_ms })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::put_uvarint;

    fn put_replicas(answer: &mut Vec<u8>, replicas: &[Replica]) {
        put_uvarint(answer, u32::try_from(replicas.len() + 1).expect("count"));
        for replica in replicas {
            answer.extend_from_slice(&replica.id.to_be_bytes());
            answer.extend_from_slice(&replica.directory_id);
            answer.extend_from_slice(&replica.log_end_offset.to_be_bytes());
            answer.extend_from_slice(&replica.last_fetch_ms.to_be_bytes());
            answer.extend_from_slice(&[0xff; 8]); // caught up: -1
            answer.push(NO_TAGGED_FIELDS);
        }
    }

    #[test]
    fn describe_quorum_asks_for_the_metadata_log_and_reads_its_voters_and_observers() {
        let frame = describe_quorum(9);
        assert_eq!(&frame[4..12], &[0, 55, 0, 2, 0, 0, 0, 9]);
        let mut body = b"\x00\x09oms-probe\x00\x02\x13__cluster_metadata\x02".to_vec();
        body.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&frame[12..], &body[..]);

        let voter = |id: i32, end: i64| Replica {
            id,
            directory_id: [u8::try_from(id).expect("id"); 16],
            log_end_offset: end,
            last_fetch_ms: 1_000 + i64::from(id),
        };
        let (voters, observers) = (vec![voter(0, 120), voter(1, -1)], vec![voter(3, 118)]);
        let mut answer = vec![NO_TAGGED_FIELDS, 0, 0, 0];
        answer.push(2);
        put_compact_string(&mut answer, METADATA_TOPIC);
        answer.push(2);
        answer.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0]); // partition 0, no error, no message
        answer.extend_from_slice(&1i32.to_be_bytes());
        answer.extend_from_slice(&5i32.to_be_bytes());
        answer.extend_from_slice(&120i64.to_be_bytes());
        put_replicas(&mut answer, &voters);
        put_replicas(&mut answer, &observers);
        answer.extend_from_slice(&[NO_TAGGED_FIELDS, NO_TAGGED_FIELDS, 1, NO_TAGGED_FIELDS]);
        assert_eq!(
            describe_quorum_response(&answer),
            Ok(Ok(Quorum { leader: 1, high_watermark: 120, voters, observers }))
        );

        let mut refused = vec![NO_TAGGED_FIELDS, 0, 29];
        put_compact_string(&mut refused, b"not authorized");
        assert_eq!(describe_quorum_response(&refused), Ok(Err((29, "not authorized".into()))));
    }

    #[test]
    fn voters_are_added_at_their_controller_listener_and_removed_by_directory() {
        let voter = Voter { id: 3, directory_id: [7; 16], listener: ("CONTROLLER".into(), "k-3".into(), 9093) };
        let frame = add_raft_voter(5, "c", &voter, 1000);
        assert_eq!(&frame[4..12], &[0, 80, 0, 0, 0, 0, 0, 5]);
        let mut body = b"\x00\x09oms-probe\x00\x02c".to_vec();
        body.extend_from_slice(&1000i32.to_be_bytes());
        body.extend_from_slice(&3i32.to_be_bytes());
        body.extend_from_slice(&[7; 16]);
        body.extend_from_slice(b"\x02\x0bCONTROLLER\x04k-3\x23\x85\x00\x00");
        assert_eq!(&frame[12..], &body[..]);

        let frame = remove_raft_voter(6, "c", 3, &[7; 16]);
        assert_eq!(&frame[4..12], &[0, 81, 0, 0, 0, 0, 0, 6]);
        assert_eq!(frame.len(), 12 + 12 + 2 + 4 + 16 + 1);

        let mut done = vec![NO_TAGGED_FIELDS, 0, 0, 0, 0, 0, 0, 0, NO_TAGGED_FIELDS];
        assert_eq!(voter_change_response(&done), Ok(Ok(())));
        done = vec![NO_TAGGED_FIELDS, 0, 0, 0, 0, 0, 7];
        put_compact_string(&mut done, b"not caught up");
        assert_eq!(voter_change_response(&done), Ok(Err((7, "not caught up".into()))));
    }
}
