//! A managed Kafka takes a change of its pods one broker at a time, each only once the cluster is
//! whole again. A StatefulSet's rolling update replaces, from the highest ordinal down, the pods at
//! or above its partition, waiting only for each to be Ready. The operator holds the partition at
//! the number of brokers, so that a new template replaces no pod by itself (a template changed in
//! the middle of a roll starts it again from there: the StatefulSet carries the hash of the template
//! it was given), and lowers it by one
//! when every pod above it runs the new template, is Ready, and the brokers report every partition
//! fully in sync: a broker Ready again but still catching up is a replica that the next broker's
//! partitions would be short of (with min.insync.replicas 2 of 3, producers with acks=all stop).
//! [`look`] and [`short_without`] are pure; [`step`] asks the brokers when a next pod may go.

use k8s_openapi::api::apps::v1::{RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetUpdateStrategy};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use sha2::{Digest, Sha256};

use crate::admin::{Admin, AdminCache, Endpoint, PartitionReplicas};
use oms_crds::access_point::Driver;

/// The label a StatefulSet puts on its pods with the revision of the template they run.
const REVISION_LABEL: &str = "controller-revision-hash";
/// StatefulSet annotation with the hash of the pod template the operator applied.
pub const TEMPLATE_HASH_ANNOTATION: &str = "openmessaging.cloud/template-hash";
/// Partitions named in a message at most.
const NAMED: usize = 3;

/// What a StatefulSet and its pods say about a rolling change.
#[derive(Debug, PartialEq, Eq)]
pub enum Roll {
    /// No change under way: the partition holds here.
    Hold(i32),
    /// The roll waits, at this partition, for what `why` says.
    Wait { partition: i32, why: String },
    /// Every pod at or above the partition runs the new template, and every pod but the next
    /// is Ready: the next one (broker id `ordinal`) may go once no partition would be short of an
    /// in-sync replica without it.
    NextIfInSync { partition: i32, next: String, ordinal: i32 },
}

/// The hash of a rendered pod template, for [`TEMPLATE_HASH_ANNOTATION`].
#[must_use]
pub fn template_hash(template: &PodTemplateSpec) -> String {
    let rendered = serde_json::to_vec(template).unwrap_or_default();
    format!("{:x}", Sha256::digest(rendered))
}

/// The roll the StatefulSet (as read before this reconcile's apply, if there is one) is in, for
/// `replicas` brokers that are to run the template of `template_hash`.
#[must_use]
pub fn look(existing: Option<&StatefulSet>, template_hash: &str, replicas: i32, pods: &[Pod]) -> Roll {
    let Some(stateful_set) = existing else { return Roll::Hold(replicas) };
    let applied = stateful_set.metadata.annotations.as_ref().and_then(|a| a.get(TEMPLATE_HASH_ANNOTATION));
    if applied.map(String::as_str) != Some(template_hash) {
        // This apply changes the template: no pod is replaced before the first may go.
        return Roll::Hold(replicas);
    }
    let status = stateful_set.status.clone().unwrap_or_default();
    let partition = stateful_set
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .unwrap_or(0)
        .clamp(0, replicas);
    if status.observed_generation.unwrap_or(0) < stateful_set.metadata.generation.unwrap_or(0) {
        let why = "the StatefulSet controller has yet to take the last change".to_owned();
        return Roll::Wait { partition, why };
    }
    let Some(update) = status.update_revision else { return Roll::Hold(replicas) };
    let name = stateful_set.metadata.name.clone().unwrap_or_default();
    let pod_name = |ordinal: i32| format!("{name}-{ordinal}");
    let pod = |ordinal: i32| pods.iter().find(|p| p.metadata.name.as_deref() == Some(pod_name(ordinal).as_str()));
    let updated = |ordinal: i32| {
        pod(ordinal).and_then(|p| p.metadata.labels.as_ref()).and_then(|l| l.get(REVISION_LABEL)) == Some(&update)
    };
    // A change taken back halfway leaves the revisions equal and some pods on the other one.
    if (0..replicas).all(updated) {
        return Roll::Hold(replicas);
    }
    for ordinal in (partition..replicas).rev() {
        if !(updated(ordinal) && pod(ordinal).is_some_and(ready)) {
            let why =
                format!("{} is being replaced: waiting for it to run the new template and be Ready", pod_name(ordinal));
            return Roll::Wait { partition, why };
        }
    }
    if partition == 0 {
        // Every pod runs the new template (so the check above has held already).
        return Roll::Hold(replicas);
    }
    // A broker down below the partition would be a second one down once the next goes.
    if let Some(down) = (0..partition - 1).find(|o| !pod(*o).is_some_and(ready)) {
        let why = format!("{} is not Ready: {} waits for it", pod_name(down), pod_name(partition - 1));
        return Roll::Wait { partition, why };
    }
    Roll::NextIfInSync { partition, next: pod_name(partition - 1), ordinal: partition - 1 }
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The partitions that would be short of an in-sync replica if broker `leaving` stopped: those
/// with a replica other than it out of sync. Replicas on brokers past the `brokers` that run (left
/// by a scale-down) are not counted: no roll could bring them back.
#[must_use]
pub fn short_without(partitions: &[PartitionReplicas], leaving: i32, brokers: i32) -> Vec<String> {
    partitions
        .iter()
        .filter(|p| p.replicas.iter().any(|r| *r != leaving && *r < brokers && !p.in_sync.contains(r)))
        .map(PartitionReplicas::name)
        .collect()
}

/// The first few of `items`, comma-separated, and `...` when there are more: what a message
/// names of many partitions.
pub(super) fn first_few<T: std::fmt::Display>(items: &[T]) -> String {
    let named: Vec<String> = items.iter().take(NAMED).map(ToString::to_string).collect();
    let more = if items.len() > NAMED { ", ..." } else { "" };
    format!("{}{more}", named.join(", "))
}

/// The update strategy that holds the roll at `partition`.
#[must_use]
pub fn strategy(partition: i32) -> StatefulSetUpdateStrategy {
    StatefulSetUpdateStrategy {
        type_: Some("RollingUpdate".into()),
        rolling_update: Some(RollingUpdateStatefulSetStrategy { partition: Some(partition), max_unavailable: None }),
    }
}

/// The partition to apply, and, while a roll is under way, what it waits for or just did (for the
/// Progressing condition); `let_go` names the pod a step let go (for an Event).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Step {
    pub partition: i32,
    pub progress: Option<String>,
    pub let_go: Option<String>,
}

/// Decides the partition: where the roll is, and for a next broker, whether every partition of
/// the `brokers` would keep its in-sync replicas without it (asked as the operator's user, through
/// `endpoint`).
pub async fn step(roll: Roll, brokers: i32, admins: &AdminCache, endpoint: &Endpoint) -> Step {
    let (partition, next, ordinal) = match roll {
        Roll::Hold(partition) => return Step { partition, ..Step::default() },
        Roll::Wait { partition, why } => return Step { partition, progress: Some(why), let_go: None },
        Roll::NextIfInSync { partition, next, ordinal } => (partition, next, ordinal),
    };
    let partitions = match admins.get(Driver::Kafka, endpoint).await {
        Ok(admin) => match admin.as_ref() {
            Admin::Kafka(kafka) => kafka.partition_replicas().await,
            _ => Ok(Vec::new()),
        },
        Err(error) => Err(error),
    };
    match partitions.map(|p| short_without(&p, ordinal, brokers)) {
        Ok(short) if short.is_empty() => Step {
            partition: partition - 1,
            progress: Some(format!("every partition keeps its in-sync replicas without {next}: replacing it")),
            let_go: Some(next),
        },
        Ok(short) => {
            let progress = format!(
                "{} partition(s) have a replica out of sync ({}): {next} waits until they catch up",
                short.len(),
                first_few(&short)
            );
            Step { partition, progress: Some(progress), let_go: None }
        }
        Err(error) => {
            let progress = format!("cannot read the partitions' in-sync replicas ({error}): {next} waits");
            Step { partition, progress: Some(progress), let_go: None }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::apps::v1::{StatefulSetSpec, StatefulSetStatus};
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    const TEMPLATE: &str = "t1";

    fn stateful_set(current: &str, update: &str, partition: Option<i32>) -> StatefulSet {
        StatefulSet {
            metadata: ObjectMeta {
                name: Some("k".into()),
                annotations: Some(BTreeMap::from([(TEMPLATE_HASH_ANNOTATION.to_owned(), TEMPLATE.to_owned())])),
                ..ObjectMeta::default()
            },
            spec: Some(StatefulSetSpec { update_strategy: partition.map(strategy), ..StatefulSetSpec::default() }),
            status: Some(StatefulSetStatus {
                current_revision: Some(current.into()),
                update_revision: Some(update.into()),
                ..StatefulSetStatus::default()
            }),
        }
    }

    fn pod(ordinal: i32, revision: &str, ready: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(format!("k-{ordinal}")),
                labels: Some(BTreeMap::from([(REVISION_LABEL.to_owned(), revision.to_owned())])),
                ..ObjectMeta::default()
            },
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    fn next(partition: i32) -> Roll {
        Roll::NextIfInSync { partition, next: format!("k-{}", partition - 1), ordinal: partition - 1 }
    }

    fn waits_for(roll: &Roll, pod: &str) -> bool {
        matches!(roll, Roll::Wait { why, .. } if why.starts_with(pod))
    }

    #[test]
    fn without_a_change_the_partition_holds_at_the_size() {
        let pods = [pod(0, "a", true), pod(1, "a", true), pod(2, "a", true)];
        assert_eq!(look(Some(&stateful_set("a", "a", Some(0))), TEMPLATE, 3, &pods), Roll::Hold(3));
        assert_eq!(look(None, TEMPLATE, 3, &[]), Roll::Hold(3));
    }

    #[test]
    fn a_new_template_waits_at_the_size_until_the_first_broker_may_go() {
        let pods = [pod(0, "a", true), pod(1, "a", true), pod(2, "a", true)];
        assert_eq!(look(Some(&stateful_set("a", "b", Some(3))), TEMPLATE, 3, &pods), next(3));
    }

    #[test]
    fn a_replaced_broker_must_run_the_new_template_and_be_ready_before_the_next_may_go() {
        let set = stateful_set("a", "b", Some(2));
        let starting = [pod(0, "a", true), pod(1, "a", true), pod(2, "b", false)];
        assert!(waits_for(&look(Some(&set), TEMPLATE, 3, &starting), "k-2 is being replaced"));
        let not_yet_replaced = [pod(0, "a", true), pod(1, "a", true), pod(2, "a", true)];
        assert!(waits_for(&look(Some(&set), TEMPLATE, 3, &not_yet_replaced), "k-2 is being replaced"));
        let gone = [pod(0, "a", true), pod(1, "a", true)];
        assert!(waits_for(&look(Some(&set), TEMPLATE, 3, &gone), "k-2 is being replaced"));
        let ready = [pod(0, "a", true), pod(1, "a", true), pod(2, "b", true)];
        assert_eq!(look(Some(&set), TEMPLATE, 3, &ready), next(2));
    }

    #[test]
    fn a_broker_down_below_the_partition_holds_the_next() {
        let pods = [pod(0, "a", false), pod(1, "a", true), pod(2, "b", true)];
        assert!(waits_for(&look(Some(&stateful_set("a", "b", Some(2))), TEMPLATE, 3, &pods), "k-0 is not Ready"));
        // The next broker itself may be down: replacing it is what may bring it back.
        let next_down = [pod(0, "a", true), pod(1, "a", false), pod(2, "b", true)];
        assert_eq!(look(Some(&stateful_set("a", "b", Some(2))), TEMPLATE, 3, &next_down), next(2));
    }

    #[test]
    fn the_last_broker_is_left_to_the_stateful_set() {
        let set = stateful_set("a", "b", Some(0));
        let last = [pod(0, "a", true), pod(1, "b", true), pod(2, "b", true)];
        assert!(waits_for(&look(Some(&set), TEMPLATE, 3, &last), "k-0 is being replaced"));
        // Every pod runs the new template: the partition holds at the size again, whether or not
        // the last one is Ready yet (the StatefulSet waits for it by itself).
        let starting = [pod(0, "b", false), pod(1, "b", true), pod(2, "b", true)];
        assert_eq!(look(Some(&set), TEMPLATE, 3, &starting), Roll::Hold(3));
        let done = [pod(0, "b", true), pod(1, "b", true), pod(2, "b", true)];
        assert_eq!(look(Some(&set), TEMPLATE, 3, &done), Roll::Hold(3));
    }

    #[test]
    fn a_template_changed_in_the_middle_of_a_roll_holds_it_at_the_size_again() {
        let pods = [pod(0, "a", true), pod(1, "a", true), pod(2, "b", true)];
        assert_eq!(look(Some(&stateful_set("a", "b", Some(2))), "t2", 3, &pods), Roll::Hold(3));
        let unannotated = StatefulSet { metadata: ObjectMeta::default(), ..stateful_set("a", "b", Some(2)) };
        assert_eq!(look(Some(&unannotated), TEMPLATE, 3, &pods), Roll::Hold(3));
    }

    #[test]
    fn a_change_taken_back_halfway_rolls_the_changed_pods_back() {
        // Back to revision a, which is current again; k-2 still runs b, below the held partition.
        let pods = [pod(0, "a", true), pod(1, "a", true), pod(2, "b", true)];
        assert_eq!(look(Some(&stateful_set("a", "a", Some(3))), TEMPLATE, 3, &pods), next(3));
    }

    #[test]
    fn a_change_the_controller_has_yet_to_see_holds_the_partition() {
        let mut set = stateful_set("a", "b", Some(2));
        set.metadata.generation = Some(5);
        set.status.as_mut().expect("status").observed_generation = Some(4);
        let pods = [pod(0, "a", true), pod(1, "a", true), pod(2, "b", true)];
        assert!(matches!(look(Some(&set), TEMPLATE, 3, &pods), Roll::Wait { partition: 2, .. }));
    }

    #[test]
    fn the_template_hash_follows_the_template() {
        let changed = PodTemplateSpec {
            metadata: Some(ObjectMeta { name: Some("x".into()), ..ObjectMeta::default() }),
            spec: None,
        };
        assert_eq!(template_hash(&PodTemplateSpec::default()), template_hash(&PodTemplateSpec::default()));
        assert_ne!(template_hash(&PodTemplateSpec::default()), template_hash(&changed));
    }

    #[test]
    fn a_partition_above_the_size_counts_as_the_size() {
        // After a scale-down, the partition held at the old size.
        let pods = [pod(0, "a", true), pod(1, "a", true)];
        assert_eq!(look(Some(&stateful_set("a", "b", Some(3))), TEMPLATE, 2, &pods), next(2));
    }

    fn partition(name: &str, replicas: &[i32], in_sync: &[i32]) -> PartitionReplicas {
        let (topic, partition) = name.rsplit_once('-').expect("topic-partition");
        PartitionReplicas {
            topic: topic.into(),
            partition: partition.parse().expect("partition"),
            replicas: replicas.to_vec(),
            in_sync: in_sync.to_vec(),
        }
    }

    #[test]
    fn a_broker_may_go_when_every_other_replica_is_in_sync() {
        let partitions = [partition("t-0", &[0, 1, 2], &[0, 1, 2]), partition("t-1", &[1, 2, 0], &[1, 0])];
        // Broker 2 lags on t-1: stopping it costs t-1 nothing, stopping 0 would leave one copy.
        assert_eq!(short_without(&partitions, 2, 3), Vec::<String>::new());
        assert_eq!(short_without(&partitions, 0, 3), ["t-1"]);
    }

    #[test]
    fn replicas_on_brokers_a_scale_down_removed_are_not_waited_for() {
        let partitions = [partition("t-0", &[0, 1, 3], &[0, 1])];
        assert_eq!(short_without(&partitions, 2, 3), Vec::<String>::new());
        assert_eq!(short_without(&partitions, 2, 4), ["t-0"]);
    }
}
