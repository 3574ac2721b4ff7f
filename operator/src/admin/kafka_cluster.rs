//! What the operator asks a managed Kafka's controller, through the probe crate's codec
//! (librdkafka has none of it), as the operator's user on a broker, which forwards changes to the
//! active controller: the brokers registered and the partitions being moved, moving partitions,
//! forgetting a broker whose pod is gone, the controller quorum, and `metadata.version`.
//!
//! After its brokers have all rolled to a new release, a cluster still writes metadata at the old
//! release's level until the level is raised ("finalized"), and features of the new release stay
//! off. The operator raises it to the highest level the brokers support once a roll is over, as
//! `kafka-features.sh upgrade --metadata` would. The controller checks the level against every
//! registered broker and controller, so a broker still on the old release makes it refuse, not
//! half-apply. The operator never lowers it, and refuses a `spec.managed.version` older than the
//! level ([`release`]).

use std::net::ToSocketAddrs as _;
use std::sync::Arc;
use std::time::Instant;

use oms_probe::KafkaConnection;
use oms_probe::kafka::cluster::{self, Reassignment, RegisteredBroker};
use oms_probe::kafka::features::{self, METADATA_VERSION, MetadataVersion};
use oms_probe::kafka::quorum::{self, Quorum, Voter};
use oms_probe::net::Tls;

use super::{ADMIN_TIMEOUT, Endpoint};

/// The names of `metadata.version`'s levels from 7 (3.3-IV3, the lowest KRaft runs) on, as
/// Kafka 4.1.1's `MetadataVersion` lists them.
const LEVEL_NAMES: [&str; 23] = [
    "3.3-IV3", "3.4-IV0", "3.5-IV0", "3.5-IV1", "3.5-IV2", "3.6-IV0", "3.6-IV1", "3.6-IV2", "3.7-IV0", "3.7-IV1",
    "3.7-IV2", "3.7-IV3", "3.7-IV4", "3.8-IV0", "3.9-IV0", "4.0-IV0", "4.0-IV1", "4.0-IV2", "4.0-IV3", "4.1-IV0",
    "4.1-IV1", "4.2-IV0", "4.2-IV1",
];
const LOWEST_NAMED_LEVEL: i16 = 7;

/// A level as Kafka names it (`4.1-IV1`), or `level N` when it is newer than the names here.
#[must_use]
pub fn level_name(level: i16) -> String {
    level
        .checked_sub(LOWEST_NAMED_LEVEL)
        .and_then(|i| usize::try_from(i).ok())
        .and_then(|i| LEVEL_NAMES.get(i))
        .map_or_else(|| format!("level {level}"), |name| (*name).to_owned())
}

/// The release (major, minor) a level's name belongs to: the oldest Kafka that can run it.
#[must_use]
pub fn release(name: &str) -> Option<(u32, u32)> {
    let (major, rest) = name.split_once('.')?;
    let minor = rest.split('-').next()?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// The cluster's finalized level, and the one it had before, if this call raised it.
#[derive(Debug, PartialEq, Eq)]
pub struct Finalized {
    pub level: i16,
    pub raised_from: Option<i16>,
}

/// The level to raise a finalized `metadata.version` to, if it is behind what the broker
/// supports; an error when the broker reports none (it does not run KRaft).
pub fn level_to_raise(levels: MetadataVersion) -> Result<Option<(i16, i16)>, String> {
    match levels {
        MetadataVersion { supported_max: Some(supported), finalized: Some(finalized) } => {
            Ok((finalized < supported).then_some((finalized, supported)))
        }
        _ => Err(format!("the broker reports no finalized {METADATA_VERSION} (it does not run KRaft)")),
    }
}

/// Reads the finalized `metadata.version` from one of `endpoint`'s brokers and raises it to the
/// highest level that broker supports.
pub async fn finalize_metadata_version(endpoint: &Endpoint) -> Result<Finalized, String> {
    in_session(endpoint, |connection| {
        let answer = connection.call(|id| features::api_versions_v3(id, "oms-operator", env!("CARGO_PKG_VERSION")))?;
        let levels = features::api_versions_metadata_version(&answer)
            .map_err(|e| e.to_string())?
            .map_err(|code| format!("ApiVersions v3 refused: error {code}"))?;
        let Some((from, to)) = level_to_raise(levels)? else {
            return Ok(Finalized { level: levels.finalized.unwrap_or_default(), raised_from: None });
        };
        let answer = connection.call(|id| features::update_features(id, METADATA_VERSION, to, false, timeout_ms()))?;
        features::update_features_response(&answer).map_err(|e| e.to_string())?.map_err(|(code, message)| {
            format!("the controller refused {METADATA_VERSION} {} (error {code}): {message}", level_name(to))
        })?;
        Ok(Finalized { level: to, raised_from: Some(from) })
    })
    .await
}

/// What the controller says of where partitions may go: the brokers it has registered, and the
/// partitions being moved (`topic-partition`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Placement {
    pub registered: Vec<RegisteredBroker>,
    pub moving: Vec<String>,
}

pub async fn read_placement(endpoint: &Endpoint) -> Result<Placement, String> {
    in_session(endpoint, |connection| {
        let answer = connection.call(cluster::describe_cluster)?;
        let registered = refused("DescribeCluster", cluster::describe_cluster_brokers(&answer))?;
        let answer = connection.call(|id| cluster::list_partition_reassignments(id, timeout_ms()))?;
        let moving = refused("ListPartitionReassignments", cluster::partitions_being_moved(&answer))?;
        Ok(Placement { registered, moving })
    })
    .await
}

/// The controller quorum: its leader, voters and observers.
pub async fn read_quorum(endpoint: &Endpoint) -> Result<Quorum, String> {
    in_session(endpoint, |connection| {
        let answer = connection.call(quorum::describe_quorum)?;
        refused("DescribeQuorum", quorum::describe_quorum_response(&answer))
    })
    .await
}

/// Makes `voter` a voter of cluster `cluster_id`'s controller quorum.
pub async fn add_voter(endpoint: &Endpoint, cluster_id: String, voter: Voter) -> Result<(), String> {
    in_session(endpoint, move |connection| {
        let answer = connection.call(|id| quorum::add_raft_voter(id, &cluster_id, &voter, timeout_ms()))?;
        refused(&format!("AddRaftVoter {}", voter.id), quorum::voter_change_response(&answer))
    })
    .await
}

/// Takes controller `voter`'s (of log directory `directory_id`) vote in cluster `cluster_id`.
pub async fn remove_voter(
    endpoint: &Endpoint,
    cluster_id: String,
    voter: i32,
    directory_id: [u8; 16],
) -> Result<(), String> {
    in_session(endpoint, move |connection| {
        let answer = connection.call(|id| quorum::remove_raft_voter(id, &cluster_id, voter, &directory_id))?;
        refused(&format!("RemoveRaftVoter {voter}"), quorum::voter_change_response(&answer))
    })
    .await
}

/// Moves each partition of `moves` to its replicas.
pub async fn reassign(endpoint: &Endpoint, moves: Vec<Reassignment>) -> Result<(), String> {
    in_session(endpoint, move |connection| {
        let answer = connection.call(|id| cluster::alter_partition_reassignments(id, &moves, timeout_ms()))?;
        refused("AlterPartitionReassignments", cluster::alter_partition_reassignments_response(&answer))
    })
    .await
}

/// Has the controller forget `brokers`, none of which runs.
pub async fn unregister(endpoint: &Endpoint, brokers: Vec<i32>) -> Result<(), String> {
    in_session(endpoint, move |connection| {
        for broker in brokers {
            let answer = connection.call(|id| cluster::unregister_broker(id, broker))?;
            refused(&format!("UnregisterBroker {broker}"), cluster::unregister_broker_response(&answer))?;
        }
        Ok(())
    })
    .await
}

/// An answer decoded, or why not: malformed, or refused with its error code and message.
fn refused<T>(
    request: &str,
    decoded: Result<Result<T, cluster::Refused>, oms_probe::kafka::DecodeError>,
) -> Result<T, String> {
    decoded
        .map_err(|e| format!("{request}: {e}"))?
        .map_err(|(code, message)| format!("{request} refused (error {code}): {message}"))
}

/// The controller's time for a request: half the session's, so that its own timeout answers
/// before the connection's deadline (which also covers connecting and the login).
fn timeout_ms() -> i32 {
    i32::try_from(ADMIN_TIMEOUT.as_millis() / 2).unwrap_or(i32::MAX)
}

/// Runs `work` on a blocking thread with a connection to one of `endpoint`'s brokers, logged in
/// as the operator's user, within [`ADMIN_TIMEOUT`].
async fn in_session<T: Send + 'static>(
    endpoint: &Endpoint,
    work: impl FnOnce(&mut KafkaConnection) -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let endpoint = endpoint.clone();
    tokio::task::spawn_blocking(move || {
        let (Some(user), Some(password)) = (&endpoint.username, &endpoint.password) else {
            return Err("no login for the operator's Kafka user".to_owned());
        };
        let mut connection = connect(&endpoint, Instant::now() + ADMIN_TIMEOUT)?;
        connection.log_in(user, password)?;
        work(&mut connection)
    })
    .await
    .map_err(|e| format!("the Kafka admin task failed: {e}"))?
}

/// A connection to the first of `endpoint`'s servers that takes one.
fn connect(endpoint: &Endpoint, deadline: Instant) -> Result<KafkaConnection, String> {
    let mut failures = Vec::new();
    for server in &endpoint.servers {
        let host = server.rsplit_once(':').map_or(server.as_str(), |(host, _)| host);
        let tls = match &endpoint.tls {
            Some(tls) => {
                Some(Tls { config: Arc::new(crate::broker_tls::client_config(tls)?), server_name: host.to_owned() })
            }
            None => None,
        };
        let addresses = server.to_socket_addrs().map_err(|e| format!("{server}: {e}"));
        match addresses.and_then(|mut a| a.next().ok_or_else(|| format!("{server}: no address"))) {
            Ok(addr) => match KafkaConnection::open(addr, tls.as_ref(), deadline) {
                Ok(connection) => return Ok(connection),
                Err(error) => failures.push(format!("{server}: {error}")),
            },
            Err(error) => failures.push(error),
        }
    }
    Err(format!("no broker answered: {}", failures.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_named_as_kafka_names_them() {
        assert_eq!(level_name(7), "3.3-IV3");
        assert_eq!(level_name(25), "4.0-IV3");
        assert_eq!(level_name(27), "4.1-IV1");
        assert_eq!(level_name(29), "4.2-IV1");
        assert_eq!(level_name(30), "level 30");
        assert_eq!(level_name(6), "level 6");
        assert_eq!(release("4.1-IV1"), Some((4, 1)));
        assert_eq!(release("3.3-IV3"), Some((3, 3)));
        assert_eq!(release("level 30"), None);
    }

    #[test]
    fn a_level_behind_what_the_broker_supports_is_raised_and_never_lowered() {
        let levels = |supported_max, finalized| MetadataVersion { supported_max, finalized };
        assert_eq!(level_to_raise(levels(Some(27), Some(25))), Ok(Some((25, 27))));
        assert_eq!(level_to_raise(levels(Some(27), Some(27))), Ok(None));
        assert_eq!(level_to_raise(levels(Some(25), Some(27))), Ok(None), "a broker of an older release");
        assert!(level_to_raise(levels(None, None)).is_err());
    }
}
