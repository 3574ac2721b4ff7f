//! Where a managed Kafka's partition replicas live as it changes size. Kafka places a partition's
//! replicas when its topic is created and never moves them by itself: a new broker gets none, and
//! a broker that goes takes its replicas along, leaving its partitions a copy short. The operator
//! moves them, as `kafka-reassign-partitions.sh` would:
//! - scaling down, one broker at a time, the highest ordinal: its replicas move to the staying
//!   brokers, and only once it holds none and every partition is in sync, and it no longer votes
//!   in the controller quorum, does its pod stop ([`next_step`], [`Shrinking::ask`]);
//! - once the brokers are settled ([`tend`]): replicas left on brokers that are gone (a topic made
//!   while the last one was leaving) move to running ones; then replicas spread until no broker
//!   holds more than one more than another, so that new brokers take their share; then the
//!   controller forgets brokers whose pods are gone (a stale registration blocks feature upgrades).
//!
//! A replica is replaced in its place in the list, so a partition's preferred leader changes only
//! when the leader's broker is the one that gives up the replica. Kafka adds the new replica, waits
//! until it is in sync, then drops the old one: producers with acks=all keep their in-sync copies
//! throughout. One batch of moves at a time.

use std::collections::{BTreeMap, BTreeSet};

use oms_probe::kafka::cluster::Reassignment;

use super::roll::first_few;
use crate::admin::kafka_cluster::{self, Placement};
use crate::admin::{Admin, AdminCache, Endpoint, PartitionReplicas};
use oms_crds::access_point::Driver;

/// Moves sent in one request; the rest follow once these are done.
const MOVES_PER_BATCH: usize = 50;

/// The next thing to do on the way from `running` brokers to fewer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The shrink cannot be done safely: the brokers keep running, and this says why.
    Refuse(String),
    /// The cluster is not settled enough for the next step; look again soon.
    Wait(String),
    /// Move these replicas off the leaving broker, of pod `pod`.
    Move { pod: String, moves: Vec<Reassignment> },
    /// The leaving broker holds no replica but votes in the controller quorum: it stops voting.
    RemoveVoter { pod: String, id: i32, directory_id: [u8; 16] },
    /// The leaving broker holds no replica: its pod stops.
    Stop { pod: String },
}

impl Step {
    /// The Event action of a step taken on the brokers, and the pod it is about.
    #[must_use]
    pub fn action(&self) -> Option<(&'static str, &str)> {
        match self {
            Step::Move { pod, .. } => Some(("ReassignPartitions", pod)),
            Step::RemoveVoter { pod, .. } => Some(("RemoveVoter", pod)),
            Step::Stop { pod } => Some(("StopBroker", pod)),
            Step::Refuse(_) | Step::Wait(_) => None,
        }
    }

    /// What the Progressing condition says while this step is under way.
    #[must_use]
    pub fn progress(&self, running: i32, desired: i32) -> String {
        let shrinking = format!("scaling Kafka from {running} to {desired} brokers");
        match self {
            Step::Refuse(why) | Step::Wait(why) => format!("{shrinking}: {why}"),
            Step::Move { pod, moves } => format!("{shrinking}: {} move off {pod}", describe(moves)),
            Step::RemoveVoter { pod, .. } => {
                format!("{shrinking}: {pod} holds no replica and stops voting in the controller quorum")
            }
            Step::Stop { pod } => format!("{shrinking}: {pod} holds no replica and stops"),
        }
    }
}

/// The next step from `running` brokers of access point `name`, from the partitions' replicas and
/// the partitions being moved. The leaving broker is the highest ordinal.
#[must_use]
pub fn next_step(name: &str, running: i32, partitions: &[PartitionReplicas], moving: &[String]) -> Step {
    let leaving = running - 1;
    let pod = format!("{name}-{leaving}");
    if !moving.is_empty() {
        return Step::Wait(format!("waiting for {} partition move(s) to finish ({})", moving.len(), first_few(moving)));
    }
    if let Some(why) = metadata_behind(partitions) {
        return Step::Wait(why);
    }
    let staying: Vec<i32> = (0..leaving).collect();
    match moves_off(partitions, &staying) {
        Err(why) => {
            Step::Refuse(format!("refused: {why}; keeping {running}. Set spec.managed.replicas back to {running}"))
        }
        Ok(moves) if !moves.is_empty() => Step::Move { pod, moves },
        Ok(_) => {
            let short = out_of_sync(partitions, &staying);
            if short.is_empty() {
                Step::Stop { pod }
            } else {
                Step::Wait(format!(
                    "{} partition(s) have a replica out of sync ({}): {pod} stops once they catch up",
                    short.len(),
                    first_few(&short)
                ))
            }
        }
    }
}

/// What settled brokers need next, if anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tend {
    /// Every replica is on a running broker, spread evenly, and no gone broker is registered.
    Settled,
    /// Moves under way, or a partition that cannot move; look again soon.
    Wait(String),
    /// Move these replicas; `why` says to where.
    Move { why: &'static str, moves: Vec<Reassignment> },
    /// The controller forgets these brokers: their pods are gone and they hold no replica.
    Unregister(Vec<i32>),
}

impl Tend {
    /// What the Progressing condition says while this is under way.
    #[must_use]
    pub fn progress(&self) -> Option<String> {
        match self {
            Tend::Settled => None,
            Tend::Wait(why) => Some(why.clone()),
            Tend::Move { why, moves } => Some(format!("{} move {why}", describe(moves))),
            Tend::Unregister(brokers) => Some(format!("the controller forgets gone broker(s) {brokers:?}")),
        }
    }
}

/// What the `brokers` running (ids `0..brokers`) need, from the partitions' replicas and what the
/// controller says.
#[must_use]
pub fn tend(partitions: &[PartitionReplicas], brokers: i32, placement: &Placement) -> Tend {
    if !placement.moving.is_empty() {
        let moving = &placement.moving;
        return Tend::Wait(format!("{} partition move(s) under way ({})", moving.len(), first_few(moving)));
    }
    if let Some(why) = metadata_behind(partitions) {
        return Tend::Wait(why);
    }
    let running: Vec<i32> = (0..brokers).collect();
    match moves_off(partitions, &running) {
        Err(why) => return Tend::Wait(why),
        Ok(moves) if !moves.is_empty() => return Tend::Move { why: "off brokers that are gone", moves },
        Ok(_) => {}
    }
    let moves = level(partitions, &running);
    if !moves.is_empty() {
        return Tend::Move { why: "to spread replicas evenly over the brokers", moves };
    }
    // A broker past the size still registered unfenced is shutting down: forget it once fenced.
    if let Some(stopping) = placement.registered.iter().find(|b| b.id >= brokers && !b.fenced) {
        return Tend::Wait(format!("broker {} is stopping", stopping.id));
    }
    let held: BTreeSet<i32> = partitions.iter().flat_map(|p| p.replicas.iter().copied()).collect();
    let gone: Vec<i32> = placement
        .registered
        .iter()
        .filter(|b| b.id >= brokers && b.fenced && !held.contains(&b.id))
        .map(|b| b.id)
        .collect();
    if gone.is_empty() { Tend::Settled } else { Tend::Unregister(gone) }
}

/// Moves that take every replica off brokers not in `staying`, each replaced in its place by the
/// staying broker with the fewest replicas that the partition lacks; an error names a partition
/// with more replicas than there are staying brokers.
pub fn moves_off(partitions: &[PartitionReplicas], staying: &[i32]) -> Result<Vec<Reassignment>, String> {
    let mut load = loads(partitions, staying);
    let mut moves = Vec::new();
    for partition in partitions {
        if partition.replicas.iter().all(|r| staying.contains(r)) {
            continue;
        }
        let mut replicas = partition.replicas.clone();
        for slot in 0..replicas.len() {
            if staying.contains(&replicas[slot]) {
                continue;
            }
            let target = staying
                .iter()
                .filter(|b| !replicas.contains(b))
                .min_by_key(|b| (load.get(b).copied().unwrap_or(0), **b))
                .copied()
                .ok_or_else(|| {
                    format!(
                        "partition {} has {} replicas, and only {} broker(s) would run",
                        partition.name(),
                        replicas.len(),
                        staying.len()
                    )
                })?;
            *load.entry(target).or_default() += 1;
            replicas[slot] = target;
        }
        moves.push(Reassignment { topic: partition.topic.clone(), partition: partition.partition, replicas });
    }
    moves.truncate(MOVES_PER_BATCH);
    Ok(moves)
}

/// Moves that spread replicas over `brokers` until no broker holds more than one more than
/// another: each from the broker with the most to the one with the fewest, of a partition that
/// has one on the first and none on the second.
#[must_use]
pub fn level(partitions: &[PartitionReplicas], brokers: &[i32]) -> Vec<Reassignment> {
    let mut load = loads(partitions, brokers);
    let mut placed: Vec<Vec<i32>> = partitions.iter().map(|p| p.replicas.clone()).collect();
    let mut moved = BTreeSet::new();
    while moved.len() < MOVES_PER_BATCH {
        let (Some((&most, &high)), Some((&fewest, &low))) =
            (load.iter().max_by_key(|(b, n)| (**n, -**b)), load.iter().min_by_key(|(b, n)| (**n, **b)))
        else {
            break;
        };
        if high <= low + 1 {
            break;
        }
        let candidate = (0..placed.len())
            .find(|i| !moved.contains(i) && placed[*i].contains(&most) && !placed[*i].contains(&fewest));
        let Some(index) = candidate else { break };
        for replica in &mut placed[index] {
            if *replica == most {
                *replica = fewest;
            }
        }
        *load.entry(most).or_default() -= 1;
        *load.entry(fewest).or_default() += 1;
        moved.insert(index);
    }
    moved
        .into_iter()
        .map(|i| Reassignment {
            topic: partitions[i].topic.clone(),
            partition: partitions[i].partition,
            replicas: placed[i].clone(),
        })
        .collect()
}

/// Replicas held by each of `brokers`.
fn loads(partitions: &[PartitionReplicas], brokers: &[i32]) -> BTreeMap<i32, usize> {
    let mut load: BTreeMap<i32, usize> = brokers.iter().map(|b| (*b, 0)).collect();
    for replica in partitions.iter().flat_map(|p| &p.replicas) {
        if let Some(count) = load.get_mut(replica) {
            *count += 1;
        }
    }
    load
}

/// Why the replicas the brokers list cannot be planned from yet: a partition with more replicas
/// than another of its topic. While a move runs, a partition lists its old and new replicas
/// together, and a broker's metadata shows the move's end a little after the controller says it
/// ended: planning from that list would give the partition a replica more for good.
fn metadata_behind(partitions: &[PartitionReplicas]) -> Option<String> {
    let mut fewest: BTreeMap<&str, usize> = BTreeMap::new();
    for partition in partitions {
        let count = fewest.entry(partition.topic.as_str()).or_insert(usize::MAX);
        *count = (*count).min(partition.replicas.len());
    }
    let uneven: Vec<String> = partitions
        .iter()
        .filter(|p| p.replicas.len() > fewest[p.topic.as_str()])
        .map(PartitionReplicas::name)
        .collect();
    (!uneven.is_empty()).then(|| {
        format!(
            "{} partition(s) list more replicas than others of their topic ({}): waiting for a move's end to \
             reach the brokers' metadata (a topic made uneven on purpose must be made even first)",
            uneven.len(),
            first_few(&uneven)
        )
    })
}

/// Partitions with a replica on one of `brokers` out of sync.
fn out_of_sync(partitions: &[PartitionReplicas], brokers: &[i32]) -> Vec<String> {
    partitions
        .iter()
        .filter(|p| p.replicas.iter().any(|r| brokers.contains(r) && !p.in_sync.contains(r)))
        .map(PartitionReplicas::name)
        .collect()
}

/// `N partition(s) (a-0 to [0, 1, 3], ...)`.
fn describe(moves: &[Reassignment]) -> String {
    let named: Vec<String> = moves.iter().map(|m| format!("{}-{} to {:?}", m.topic, m.partition, m.replicas)).collect();
    format!("{} partition(s) ({})", moves.len(), first_few(&named))
}

/// What the brokers and the controller say, for [`next_step`] and [`tend`]. The moves under way
/// are read first: a move that ends between the two reads then shows as done in the replicas, not
/// as its old and new replicas together with nothing under way (planning from that list would
/// change the partition's number of replicas).
pub(super) async fn read(
    admins: &AdminCache,
    endpoint: &Endpoint,
) -> Result<(Vec<PartitionReplicas>, Placement), String> {
    let placement = kafka_cluster::read_placement(endpoint).await?;
    let partitions = match admins.get(Driver::Kafka, endpoint).await.map_err(|e| e.to_string())?.as_ref() {
        Admin::Kafka(kafka) => kafka.partition_replicas().await.map_err(|e| e.to_string())?,
        _ => Vec::new(),
    };
    Ok((partitions, placement))
}

/// A step of a shrink decided from what the brokers say, and where to take it.
pub(super) struct Shrinking {
    pub step: Step,
    endpoint: Option<Endpoint>,
    cluster_id: String,
}

impl Shrinking {
    /// Decides the next step of access point `name` (Kafka cluster `cluster_id`) from `running`
    /// brokers to fewer.
    pub async fn ask(
        admins: &AdminCache,
        endpoint: Option<Endpoint>,
        name: &str,
        cluster_id: String,
        running: i32,
    ) -> Self {
        let Some(endpoint) = endpoint else {
            let step = Step::Wait("the operator's user is not known yet".into());
            return Shrinking { step, endpoint: None, cluster_id };
        };
        let step = match read(admins, &endpoint).await {
            Ok((partitions, placement)) => next_step(name, running, &partitions, &placement.moving),
            Err(error) => Step::Wait(format!("cannot read where the partitions are: {error}")),
        };
        // A voter stops voting before its broker stops: the others keep their majority.
        let step = match step {
            Step::Stop { pod } => match kafka_cluster::read_quorum(&endpoint).await {
                Ok(quorum) => match quorum.voters.iter().find(|v| v.id == running - 1) {
                    Some(voter) => Step::RemoveVoter { pod, id: voter.id, directory_id: voter.directory_id },
                    None => Step::Stop { pod },
                },
                Err(error) => Step::Wait(format!("cannot read the controller quorum before {pod} stops: {error}")),
            },
            other => other,
        };
        Shrinking { step, endpoint: Some(endpoint), cluster_id }
    }

    /// Takes the step on the brokers.
    pub async fn take(&self) -> Result<(), String> {
        match (&self.step, &self.endpoint) {
            (Step::Move { moves, .. }, Some(endpoint)) => kafka_cluster::reassign(endpoint, moves.clone()).await,
            (Step::RemoveVoter { id, directory_id, .. }, Some(endpoint)) => {
                kafka_cluster::remove_voter(endpoint, self.cluster_id.clone(), *id, *directory_id).await
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use oms_probe::kafka::cluster::RegisteredBroker;

    use super::*;

    fn partition(topic: &str, partition: i32, replicas: &[i32], in_sync: &[i32]) -> PartitionReplicas {
        PartitionReplicas { topic: topic.into(), partition, replicas: replicas.to_vec(), in_sync: in_sync.to_vec() }
    }

    fn in_sync(topic: &str, index: i32, replicas: &[i32]) -> PartitionReplicas {
        partition(topic, index, replicas, replicas)
    }

    #[test]
    fn a_move_whose_end_the_metadata_has_not_shown_is_waited_for_not_planned_from() {
        // b-1 lists its old replica 3 and its new one 2 together: 3 is leaving.
        let partitions = [in_sync("b", 0, &[0, 1, 2]), in_sync("b", 1, &[2, 0, 1, 3]), in_sync("c", 0, &[3, 0])];
        let step = next_step("k", 4, &partitions, &[]);
        assert!(
            matches!(&step, Step::Wait(why) if why.starts_with("1 partition(s) list more replicas") && why.contains("b-1")),
            "{step:?}"
        );
        let placement = Placement::default();
        assert!(matches!(tend(&partitions, 4, &placement), Tend::Wait(why) if why.contains("b-1")));
        // Once the metadata shows the end, the shrink goes on.
        let partitions = [in_sync("b", 0, &[0, 1, 2]), in_sync("b", 1, &[2, 0, 1]), in_sync("c", 0, &[3, 0])];
        assert!(matches!(next_step("k", 4, &partitions, &[]), Step::Move { .. }));
    }

    fn registered(ids: &[(i32, bool)]) -> Vec<RegisteredBroker> {
        ids.iter().map(|(id, fenced)| RegisteredBroker { id: *id, fenced: *fenced }).collect()
    }

    /// The partitions once `moves` are done.
    fn after(partitions: &[PartitionReplicas], moves: &[Reassignment]) -> Vec<PartitionReplicas> {
        partitions
            .iter()
            .map(|p| {
                let reassigned = moves.iter().find(|m| m.topic == p.topic && m.partition == p.partition);
                in_sync(&p.topic, p.partition, reassigned.map_or(&p.replicas, |m| &m.replicas))
            })
            .collect()
    }

    #[test]
    fn a_leaving_brokers_replicas_move_in_place_to_the_least_loaded_staying_ones() {
        let partitions = [
            in_sync("a", 0, &[3, 0, 1]),
            in_sync("a", 1, &[0, 1, 2]),
            in_sync("a", 2, &[1, 3, 2]),
            in_sync("b", 0, &[2]),
        ];
        let moves = moves_off(&partitions, &[0, 1, 2]).expect("possible");
        assert_eq!(
            moves,
            vec![
                Reassignment { topic: "a".into(), partition: 0, replicas: vec![2, 0, 1] },
                Reassignment { topic: "a".into(), partition: 2, replicas: vec![1, 0, 2] },
            ]
        );
        let error = moves_off(&partitions, &[0, 1]).expect_err("three copies on two brokers");
        assert_eq!(error, "partition a-0 has 3 replicas, and only 2 broker(s) would run");
    }

    #[test]
    fn a_broker_stops_only_once_it_holds_nothing_and_the_rest_is_in_sync() {
        let holding = [in_sync("a", 0, &[3, 0, 1]), in_sync("a", 1, &[0, 1, 2])];
        let step = next_step("k", 4, &holding, &[]);
        assert!(matches!(&step, Step::Move { pod, moves } if pod == "k-3" && moves.len() == 1), "{step:?}");
        assert_eq!(step.action(), Some(("ReassignPartitions", "k-3")));
        assert!(
            step.progress(4, 3).contains("1 partition(s) (a-0 to [2, 0, 1]) move off k-3"),
            "{}",
            step.progress(4, 3)
        );
        let moving = next_step("k", 4, &holding, &["a-0".into()]);
        assert_eq!(moving, Step::Wait("waiting for 1 partition move(s) to finish (a-0)".into()));
        let catching_up = [partition("a", 0, &[2, 0, 1], &[0, 1]), in_sync("a", 1, &[0, 1, 2])];
        assert!(matches!(next_step("k", 4, &catching_up, &[]), Step::Wait(why) if why.contains("a-0")));
        let free = [in_sync("a", 0, &[2, 0, 1]), in_sync("a", 1, &[0, 1, 2])];
        assert_eq!(next_step("k", 4, &free, &[]), Step::Stop { pod: "k-3".into() });
        let refused = next_step("k", 3, &free, &[]);
        assert!(matches!(&refused, Step::Refuse(why) if why.contains("a-0 has 3 replicas")), "{refused:?}");
    }

    #[test]
    fn a_new_broker_takes_its_share_and_the_spread_stops_within_one() {
        let partitions: Vec<_> = (0..6).map(|i| in_sync("t", i, &[i % 3, (i + 1) % 3, (i + 2) % 3])).collect();
        let moves = level(&partitions, &[0, 1, 2, 3]);
        let spread: Vec<usize> = loads(&after(&partitions, &moves), &[0, 1, 2, 3]).into_values().collect();
        assert_eq!(spread.iter().sum::<usize>(), 18, "{spread:?}");
        assert!(spread.iter().all(|n| (4..=5).contains(n)), "18 replicas on 4 brokers: {spread:?}");
        assert!(level(&after(&partitions, &moves), &[0, 1, 2, 3]).is_empty(), "settled once spread");
        assert!(level(&partitions, &[0, 1, 2]).is_empty(), "already even");
        // Each move keeps a partition's replicas distinct.
        assert!(moves.iter().all(|m| m.replicas.iter().collect::<BTreeSet<_>>().len() == 3), "{moves:?}");
    }

    #[test]
    fn settled_brokers_move_replicas_off_gone_ones_then_spread_then_forget_gone_registrations() {
        let placement = |moving: &[&str], ids: &[(i32, bool)]| Placement {
            registered: registered(ids),
            moving: moving.iter().map(|m| (*m).to_owned()).collect(),
        };
        let even = [in_sync("a", 0, &[0, 1, 2]), in_sync("a", 1, &[1, 2, 0]), in_sync("a", 2, &[2, 0, 1])];
        assert_eq!(tend(&even, 3, &placement(&[], &[(0, false), (1, false), (2, false)])), Tend::Settled);
        assert_eq!(tend(&even, 3, &placement(&[], &[(2, false), (3, true)])), Tend::Unregister(vec![3]));
        assert_eq!(tend(&even, 3, &placement(&[], &[(3, false)])), Tend::Wait("broker 3 is stopping".into()));
        assert!(matches!(tend(&even, 3, &placement(&["a-1"], &[])), Tend::Wait(_)));
        let stranded = [in_sync("a", 0, &[0, 1, 3]), in_sync("a", 1, &[1, 2, 0])];
        let tended = tend(&stranded, 3, &placement(&[], &[(3, true)]));
        assert!(matches!(&tended, Tend::Move { why: "off brokers that are gone", moves } if moves.len() == 1));
        let grown = tend(&even, 4, &placement(&[], &[]));
        assert!(matches!(&grown, Tend::Move { why, .. } if why.contains("spread")), "{grown:?}");
        assert!(grown.progress().is_some_and(|p| p.contains("move to spread replicas")));
    }
}
