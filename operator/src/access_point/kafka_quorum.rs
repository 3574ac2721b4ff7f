//! Which controller quorum a managed Kafka runs, and when a dynamic one has formed.
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

use k8s_openapi::api::apps::v1::StatefulSet;
use oms_probe::kafka::quorum::Quorum as Described;

pub use crate::drivers::kafka::INITIAL_CONTROLLERS_FILE;
use crate::drivers::kafka::{Quorum, directory_id, directory_id_text};

/// On a managed Kafka's StatefulSet: `dynamic` where the operator formatted a dynamic quorum.
pub const QUORUM_ANNOTATION: &str = "openmessaging.cloud/kafka-quorum";
const DYNAMIC: &str = "dynamic";

/// The quorum of a cluster whose StatefulSet is `existing` (none yet: a new cluster) and whose
/// config ConfigMap holds `initial_controllers` (`None` where it has no such file).
#[must_use]
pub fn quorum_of(existing: Option<&StatefulSet>, initial_controllers: Option<&str>) -> Quorum {
    let Some(stateful_set) = existing else { return Quorum::Dynamic };
    let annotations = stateful_set.metadata.annotations.as_ref();
    if annotations.and_then(|a| a.get(QUORUM_ANNOTATION)).is_none_or(|value| value != DYNAMIC) {
        return Quorum::Static;
    }
    match initial_controllers {
        Some(initial) if !initial.is_empty() => Quorum::Dynamic,
        // Formed, or the file is gone: formatting as an observer is the safe side.
        _ => Quorum::DynamicFormed,
    }
}

/// Marks a dynamic quorum's StatefulSet about to be applied.
pub fn mark(stateful_set: &mut StatefulSet, quorum: Quorum) {
    if quorum != Quorum::Static {
        let annotations = stateful_set.metadata.annotations.get_or_insert_with(Default::default);
        annotations.insert(QUORUM_ANNOTATION.to_owned(), DYNAMIC.to_owned());
    }
}

/// Whether the quorum `described` has formed: a leader, and the first `voters` controllers all
/// voting with the directories they formatted.
#[must_use]
pub fn formed(described: &Described, cluster_id: &str, voters: i32) -> bool {
    described.leader >= 0
        && (0..voters).all(|ordinal| {
            let directory = directory_id(cluster_id, ordinal);
            described.voters.iter().any(|v| v.id == ordinal && v.directory_id == directory)
        })
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

    #[test]
    fn new_clusters_are_dynamic_and_unmarked_ones_keep_their_static_voters() {
        assert_eq!(quorum_of(None, None), Quorum::Dynamic);
        assert_eq!(quorum_of(Some(&stateful_set(None)), None), Quorum::Static);
        assert_eq!(quorum_of(Some(&stateful_set(None)), Some("0@a:9093:x")), Quorum::Static);
        let dynamic = stateful_set(Some(DYNAMIC));
        assert_eq!(quorum_of(Some(&dynamic), Some("0@a:9093:x")), Quorum::Dynamic);
        assert_eq!(quorum_of(Some(&dynamic), Some("")), Quorum::DynamicFormed);
        assert_eq!(quorum_of(Some(&dynamic), None), Quorum::DynamicFormed, "a lost file never re-forms");

        let mut applied = StatefulSet::default();
        mark(&mut applied, Quorum::DynamicFormed);
        assert_eq!(quorum_of(Some(&applied), Some("")), Quorum::DynamicFormed);
        let mut old = StatefulSet::default();
        mark(&mut old, Quorum::Static);
        assert_eq!(old.metadata.annotations, None);
    }

    #[test]
    fn formed_once_every_first_controller_votes_with_its_own_directory() {
        let replica = |id: i32, directory_id| Replica { id, directory_id, log_end_offset: 10 };
        let first: Vec<Replica> = (0..3).map(|i| replica(i, directory_id("cluster", i))).collect();
        let described = |leader, voters: &[Replica]| Described {
            leader,
            high_watermark: 10,
            voters: voters.to_vec(),
            observers: Vec::new(),
        };
        assert!(formed(&described(1, &first), "cluster", 3));
        assert!(!formed(&described(-1, &first), "cluster", 3), "no leader yet");
        assert!(!formed(&described(1, &first[..2]), "cluster", 3), "a voter missing");
        let mut replaced = first.clone();
        replaced[2] = replica(2, [9; 16]);
        assert!(!formed(&described(1, &replaced), "cluster", 3), "another directory under a first voter's id");
        assert_eq!(
            describe(&described(0, &first[..1])),
            format!("voters 0 ({}), leader 0", directory_id_text(&directory_id("cluster", 0)))
        );
    }
}
