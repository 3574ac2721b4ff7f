//! Which controller quorum a managed Kafka runs, when a dynamic one has formed, and which of its
//! controllers vote.
//!
//! The operator formats new clusters with KRaft's dynamic quorum ([`Quorum::Dynamic`]) and marks
//! their StatefulSet with [`QUORUM_ANNOTATION`]; a StatefulSet without it is a cluster an earlier
//! version made with static voters, which keeps them (its metadata was written that way).
//!
//! While a dynamic quorum forms, its first controllers format with the voters they start as. Once
//! every one of them has started and the controller lists them as voters, each with the log
//! directory it formatted, the operator empties that list ([`INITIAL_CONTROLLERS_FILE`]): a
//! controller that formats after that (its disk lost) joins as an observer, instead of voting
//! with an empty log under a directory id the others still count on.
//!
//! From then on the voters follow the size ([`next_voter_step`]), one change at a time, as
//! `kafka-metadata-quorum.sh add-controller` and `remove-controller` would: every broker is a
//! controller too, the first `controller_voters(size)` of them vote and the others observe; a
//! voter whose directory was replaced (a lost disk) is removed and its new directory added.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use oms_probe::kafka::quorum::{Quorum as Described, Replica};

use crate::drivers::controller_voters;
pub use crate::drivers::kafka::INITIAL_CONTROLLERS_FILE;
use crate::drivers::kafka::{Quorum, directory_id, directory_id_text};

/// On a managed Kafka's StatefulSet: `dynamic` where the operator formatted a dynamic quorum.
pub const QUORUM_ANNOTATION: &str = "openmessaging.cloud/kafka-quorum";
const DYNAMIC: &str = "dynamic";

/// The quorum of a cluster of `replicas` whose StatefulSet is `existing` and whose config
/// ConfigMap holds `config` (its files, if it exists). With neither, the cluster is new; with only
/// the ConfigMap (the StatefulSet deleted, its pods' volumes left), it is as the ConfigMap was
/// rendered: a dynamic quorum's has the first voters' file, a static one's not.
#[must_use]
pub fn quorum_of(existing: Option<&StatefulSet>, config: Option<&BTreeMap<String, String>>, replicas: i32) -> Quorum {
    let initial = config.and_then(|files| files.get(INITIAL_CONTROLLERS_FILE));
    let dynamic = match (existing, config) {
        (Some(stateful_set), _) => is_dynamic(stateful_set),
        (None, Some(files)) if files.contains_key("server.properties") => initial.is_some(),
        (None, _) => return Quorum::Dynamic { first_voters: controller_voters(replicas) },
    };
    match initial {
        _ if !dynamic => Quorum::Static,
        // Forming: the first voters stay the ones the list names, whatever the size is now.
        Some(list) if !list.is_empty() => {
            Quorum::Dynamic { first_voters: i32::try_from(list.split(',').count()).unwrap_or(i32::MAX) }
        }
        // Formed, or the file is gone: formatting as an observer is the safe side.
        _ => Quorum::DynamicFormed,
    }
}

/// Whether the operator formatted this StatefulSet's cluster with a dynamic quorum.
#[must_use]
pub fn is_dynamic(stateful_set: &StatefulSet) -> bool {
    let annotations = stateful_set.metadata.annotations.as_ref();
    annotations.and_then(|a| a.get(QUORUM_ANNOTATION)).is_some_and(|value| value == DYNAMIC)
}

/// Marks a dynamic quorum's StatefulSet about to be applied.
pub fn mark(stateful_set: &mut StatefulSet, quorum: Quorum) {
    if quorum != Quorum::Static {
        let annotations = stateful_set.metadata.annotations.get_or_insert_with(Default::default);
        annotations.insert(QUORUM_ANNOTATION.to_owned(), DYNAMIC.to_owned());
    }
}

/// Whether the quorum `described` of `replicas` brokers has formed: a leader, and the
/// `first_voters` that still run all voting with the directories they formatted (a shrink before
/// the quorum formed may have taken the highest of them).
#[must_use]
pub fn formed(described: &Described, cluster_id: &str, first_voters: i32, replicas: i32) -> bool {
    described.leader >= 0
        && (0..first_voters.min(replicas)).all(|ordinal| {
            let directory = directory_id(cluster_id, ordinal);
            described.voters.iter().any(|v| v.id == ordinal && v.directory_id == directory)
        })
}

/// The next change of a formed quorum's voters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VoterStep {
    /// The voters are the controllers the size wants.
    Settled,
    /// A change is due that cannot be made yet; this says why.
    Wait(String),
    /// Make controller `id` (its directory) a voter.
    Add { id: i32, directory_id: [u8; 16] },
    /// Take controller `id`'s vote; `why` says why.
    Remove { id: i32, directory_id: [u8; 16], why: &'static str },
}

impl VoterStep {
    /// The Event reason and what the Progressing condition says, while a change is due.
    #[must_use]
    pub fn progress(&self) -> Option<(&'static str, String)> {
        match self {
            VoterStep::Settled => None,
            VoterStep::Wait(why) => Some(("", why.clone())),
            VoterStep::Add { id, directory_id } => {
                Some(("AddVoter", format!("controller {id} ({}) becomes a voter", directory_id_text(directory_id))))
            }
            VoterStep::Remove { id, directory_id, why } => Some((
                "RemoveVoter",
                format!("controller {id} ({}) stops voting: {why}", directory_id_text(directory_id)),
            )),
        }
    }
}

/// How recently, in the leader's milliseconds, a replica fetched the metadata log to count as
/// running: a removed voter or a lost directory stays listed for minutes with an old time, and
/// replicas fetch many times a second.
const RUNNING_WITHIN_MS: i64 = 15_000;

/// The next change toward voters `0..wanted` (the controllers a size keeps), one at a time: a voter
/// whose broker runs another directory now goes first, then voters past `wanted`, highest first,
/// then each missing controller is added once it follows the metadata log.
#[must_use]
pub fn next_voter_step(described: &Described, wanted: i32) -> VoterStep {
    if described.leader < 0 {
        return VoterStep::Wait("the controllers have no leader".into());
    }
    // The leader's clock: the latest fetch it has seen.
    let replicas = || described.voters.iter().chain(&described.observers);
    let now = replicas().map(|r| r.last_fetch_ms).max().unwrap_or(-1);
    let running = |r: &Replica| r.last_fetch_ms >= 0 && now - r.last_fetch_ms <= RUNNING_WITHIN_MS;
    // The directory broker `id` runs now, as an observer.
    let observer =
        |id: i32| described.observers.iter().filter(|o| o.id == id && running(o)).max_by_key(|o| o.last_fetch_ms);
    let replaced = described.voters.iter().find(|v| {
        v.id != described.leader && !running(v) && observer(v.id).is_some_and(|o| o.directory_id != v.directory_id)
    });
    if let (Some(voter), false) = (replaced, described.voters.len() <= 1) {
        let why = "its broker runs a new log directory (the old one is lost)";
        return VoterStep::Remove { id: voter.id, directory_id: voter.directory_id, why };
    }
    if let Some(voter) = described.voters.iter().filter(|v| v.id >= wanted).max_by_key(|v| v.id) {
        let why = "the size keeps fewer voters";
        return VoterStep::Remove { id: voter.id, directory_id: voter.directory_id, why };
    }
    let Some(missing) = (0..wanted).find(|id| described.voters.iter().all(|v| v.id != *id)) else {
        return VoterStep::Settled;
    };
    match observer(missing) {
        Some(o) if o.log_end_offset >= 0 => VoterStep::Add { id: missing, directory_id: o.directory_id },
        Some(_) => VoterStep::Wait(format!("controller {missing} has not fetched the metadata log yet")),
        None => VoterStep::Wait(format!("controller {missing} does not follow the metadata log yet")),
    }
}

/// The voters as an Event says them: `0 (directory id), ...` and the leader.
#[must_use]
pub fn describe(described: &Described) -> String {
    let voters: Vec<String> =
        described.voters.iter().map(|v| format!("{} ({})", v.id, directory_id_text(&v.directory_id))).collect();
    format!("voters {}, leader {}", voters.join(", "), described.leader)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use oms_probe::kafka::quorum::Replica;

    use super::*;

    fn stateful_set(annotation: Option<&str>) -> StatefulSet {
        let annotations = annotation.map(|v| BTreeMap::from([(QUORUM_ANNOTATION.to_owned(), v.to_owned())]));
        StatefulSet { metadata: ObjectMeta { annotations, ..ObjectMeta::default() }, ..StatefulSet::default() }
    }

    fn files(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
        entries.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn new_clusters_are_dynamic_and_unmarked_ones_keep_their_static_voters() {
        assert_eq!(quorum_of(None, None, 4), Quorum::Dynamic { first_voters: 3 });
        let first = "0@a:9093:x,1@b:9093:y,2@c:9093:z";
        let forming = files(&[("server.properties", ""), (INITIAL_CONTROLLERS_FILE, first)]);
        let sealed = files(&[("server.properties", ""), (INITIAL_CONTROLLERS_FILE, "")]);
        let static_files = files(&[("server.properties", "controller.quorum.voters=0@a:9093\n")]);
        let unmarked = stateful_set(None);
        assert_eq!(quorum_of(Some(&unmarked), Some(&static_files), 4), Quorum::Static);
        assert_eq!(quorum_of(Some(&unmarked), Some(&forming), 4), Quorum::Static, "the mark decides");
        let dynamic = stateful_set(Some(DYNAMIC));
        assert_eq!(quorum_of(Some(&dynamic), Some(&forming), 5), Quorum::Dynamic { first_voters: 3 }, "as formatted");
        assert_eq!(quorum_of(Some(&dynamic), Some(&sealed), 4), Quorum::DynamicFormed);
        assert_eq!(quorum_of(Some(&dynamic), None, 4), Quorum::DynamicFormed, "a lost file never re-forms");
        // The StatefulSet deleted, the volumes and the ConfigMap left: as the ConfigMap was rendered.
        assert_eq!(quorum_of(None, Some(&sealed), 4), Quorum::DynamicFormed);
        assert_eq!(quorum_of(None, Some(&forming), 4), Quorum::Dynamic { first_voters: 3 });
        assert_eq!(quorum_of(None, Some(&static_files), 4), Quorum::Static);

        let mut applied = StatefulSet::default();
        mark(&mut applied, Quorum::DynamicFormed);
        assert!(is_dynamic(&applied));
        let mut old = StatefulSet::default();
        mark(&mut old, Quorum::Static);
        assert_eq!(old.metadata.annotations, None);
    }

    /// A replica that fetched at `fetched` ms of the leader's clock (now is 100,000; -1 unknown).
    fn replica(id: i32, directory: u8, log_end_offset: i64, fetched: i64) -> Replica {
        Replica { id, directory_id: [directory; 16], log_end_offset, last_fetch_ms: fetched }
    }

    const NOW: i64 = 100_000;
    const LONG_AGO: i64 = NOW - 60_000;

    /// Voters (the first the leader, its fetch time unknown) and observers.
    fn quorum(voters: &[Replica], observers: &[Replica]) -> Described {
        let mut all = vec![replica(99, 99, 100, NOW)];
        all.extend_from_slice(observers);
        Described { leader: voters[0].id, high_watermark: 100, voters: voters.to_vec(), observers: all }
    }

    #[test]
    fn voters_grow_one_at_a_time_as_their_controllers_follow_the_log() {
        let three = [replica(0, 0, 100, -1), replica(1, 1, 100, NOW), replica(2, 2, 100, NOW)];
        assert_eq!(next_voter_step(&quorum(&three, &[]), 3), VoterStep::Settled);
        let observers = [replica(3, 3, 90, NOW), replica(4, 4, -1, NOW)];
        assert_eq!(next_voter_step(&quorum(&three, &observers), 5), VoterStep::Add { id: 3, directory_id: [3; 16] });
        let four = [&three[..], &[replica(3, 3, 100, NOW)]].concat();
        assert_eq!(
            next_voter_step(&quorum(&four, &observers[1..]), 5),
            VoterStep::Wait("controller 4 has not fetched the metadata log yet".into())
        );
        assert_eq!(
            next_voter_step(&quorum(&four, &[]), 5),
            VoterStep::Wait("controller 4 does not follow the metadata log yet".into())
        );
        // Broker 4 removed a while ago is still listed, with its old directory: not added back.
        assert_eq!(
            next_voter_step(&quorum(&four, &[replica(4, 4, 100, LONG_AGO)]), 5),
            VoterStep::Wait("controller 4 does not follow the metadata log yet".into())
        );
        let mut leaderless = quorum(&three, &observers);
        leaderless.leader = -1;
        assert!(matches!(next_voter_step(&leaderless, 5), VoterStep::Wait(_)));
    }

    #[test]
    fn voters_past_the_size_go_highest_first_and_a_lost_directory_is_replaced() {
        let five: Vec<Replica> =
            (0..5).map(|i| replica(i, u8::try_from(i).expect("small"), 100, if i == 0 { -1 } else { NOW })).collect();
        let step = next_voter_step(&quorum(&five, &[]), 3);
        assert_eq!(step, VoterStep::Remove { id: 4, directory_id: [4; 16], why: "the size keeps fewer voters" });
        assert_eq!(step.progress().map(|p| p.0), Some("RemoveVoter"));
        // Broker 1 came back on an empty disk: its old directory, silent, stops voting; then the
        // new one is added, though the old one lingers among the observers.
        let silent = replica(1, 1, 100, LONG_AGO);
        let lost = quorum(&[five[0].clone(), silent.clone(), five[2].clone()], &[replica(1, 9, 100, NOW)]);
        let why = "its broker runs a new log directory (the old one is lost)";
        assert_eq!(next_voter_step(&lost, 3), VoterStep::Remove { id: 1, directory_id: [1; 16], why });
        let removed = quorum(&[five[0].clone(), five[2].clone()], &[silent.clone(), replica(1, 9, 100, NOW)]);
        assert_eq!(next_voter_step(&removed, 3), VoterStep::Add { id: 1, directory_id: [9; 16] });
        let replaced = quorum(&[five[0].clone(), replica(1, 9, 100, NOW), five[2].clone()], &[silent]);
        assert_eq!(next_voter_step(&replaced, 3), VoterStep::Settled, "the lingering old directory is no reason");
        // A voter that still fetches is not replaced, nor is the leader, nor a lone voter.
        let both = quorum(&five[..3], &[replica(1, 9, 100, NOW)]);
        assert_eq!(next_voter_step(&both, 3), VoterStep::Settled);
        let lone = quorum(&five[..1], &[replica(0, 9, 100, NOW)]);
        assert_eq!(next_voter_step(&lone, 1), VoterStep::Settled, "the only voter stays");
    }

    #[test]
    fn formed_once_every_first_controller_votes_with_its_own_directory() {
        let first: Vec<Replica> = (0..3)
            .map(|i| Replica {
                id: i,
                directory_id: directory_id("cluster", i),
                log_end_offset: 10,
                last_fetch_ms: NOW,
            })
            .collect();
        let described = |leader, voters: &[Replica]| Described {
            leader,
            high_watermark: 10,
            voters: voters.to_vec(),
            observers: Vec::new(),
        };
        assert!(formed(&described(1, &first), "cluster", 3, 3));
        assert!(!formed(&described(-1, &first), "cluster", 3, 3), "no leader yet");
        assert!(!formed(&described(1, &first[..2]), "cluster", 3, 3), "a voter missing");
        let mut replaced = first.clone();
        replaced[2] = replica(2, 9, 10, NOW);
        assert!(!formed(&described(1, &replaced), "cluster", 3, 3), "another directory under a first voter's id");
        assert!(formed(&described(1, &first[..2]), "cluster", 3, 2), "the third shrunk away before it formed");
        assert_eq!(
            describe(&described(0, &first[..1])),
            format!("voters 0 ({}), leader 0", directory_id_text(&directory_id("cluster", 0)))
        );
    }
}
