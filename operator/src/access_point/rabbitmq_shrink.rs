//! Shrinking a managed RabbitMQ cluster, one node at a time, in the order RabbitMQ's maintainers
//! give for retiring a node:
//! 1. A quorum queue with a member on the leaving node, and fewer members on the staying nodes
//!    than its group size allows, gets a voting member on a staying node (Raft keeps a committed
//!    message on a majority of voters, caught up or not).
//! 2. The leaving node's quorum queue members are removed while it still runs (a queue of two
//!    members loses its leader once one is stopped, and then takes no membership change).
//! 3. In one step: the node is drained (its clients reconnect elsewhere, no queue is placed on
//!    it), checked to hold nothing, its app stopped, and the cluster forgets it; its volume claim
//!    is deleted, so that a later node of its name starts blank instead of on the data of a
//!    cluster that forgot it (the claim goes once the pod has); the StatefulSet runs one pod
//!    fewer. A stopped app does not stay stopped for long (the liveness probe restarts it), and
//!    a forgotten node must not come back as one: so nothing waits between these.
//!
//! Each reconcile decides one step from what a staying node's CLI says, and takes it. A node
//! that stopped by itself is waited for, never forgotten: it may hold queues no listing shows.
//! Refused: classic queues and streams living on the leaving node (the operator does not move
//! them), a member without a pod, a leaving node running apart from the cluster, and the Khepri
//! metadata store (forgetting a node there takes a quorum this order does not keep).

use crate::admin::rabbitmq_cluster::{ClusterView, RabbitmqCluster};
use crate::drivers::rabbitmq::node_name;

/// The next thing to do on the way from `running` nodes to fewer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The shrink cannot be done safely: the nodes keep running, and this says why.
    Refuse(String),
    /// The cluster is not settled enough for the next step; look again soon.
    Wait(String),
    /// Give quorum queue `vhost`/`queue` a voting member on `node` (of pod `pod`), so that it
    /// keeps its copies once the leaving node's member goes.
    AddMember { vhost: String, queue: String, node: String, pod: String },
    /// Remove the leaving node's `queues` quorum queue members.
    RemoveMembers { pod: String, node: String, queues: usize },
    /// Drain the leaving node `node`, which holds nothing now, stop its app, have the cluster
    /// forget it, delete its volume claim, and run one pod fewer.
    Retire { pod: String, node: String },
    /// The leaving node is forgotten already: delete its volume claim, run one pod fewer.
    Stop { pod: String },
}

impl Step {
    /// The step takes a node out: the StatefulSet runs one pod fewer once it is taken.
    #[must_use]
    pub fn stops_one(&self) -> bool {
        matches!(self, Step::Retire { .. } | Step::Stop { .. })
    }

    /// The Event action of a step taken on the nodes, and the pod it is about.
    #[must_use]
    pub fn action(&self) -> Option<(&'static str, &str)> {
        match self {
            Step::AddMember { pod, .. } => Some(("AddQueueMember", pod)),
            Step::RemoveMembers { pod, .. } => Some(("RemoveQueueMembers", pod)),
            Step::Retire { pod, .. } => Some(("ForgetNode", pod)),
            Step::Stop { pod } => Some(("StopServer", pod)),
            Step::Refuse(_) | Step::Wait(_) => None,
        }
    }

    /// What the Progressing condition says while this step is under way.
    #[must_use]
    pub fn progress(&self, running: i32, desired: i32) -> String {
        let shrinking = format!("scaling RabbitMQ from {running} to {desired} nodes");
        match self {
            Step::Refuse(why) | Step::Wait(why) => format!("{shrinking}: {why}"),
            Step::AddMember { vhost, queue, node, .. } => {
                format!("{shrinking}: quorum queue {vhost}/{queue} gets a member on {node}")
            }
            Step::RemoveMembers { node, queues, .. } => {
                format!("{shrinking}: {queues} quorum queue member(s) leave {node}")
            }
            Step::Retire { node, .. } => {
                format!("{shrinking}: {node} is drained and stopped, the cluster forgets it, its pod stops")
            }
            Step::Stop { pod } => format!("{shrinking}: {pod} stops"),
        }
    }
}

/// The next step from `running` nodes of access point `name` in `namespace`, from what a staying
/// node says of the cluster. The leaving node is always the highest ordinal.
#[must_use]
pub fn next_step(name: &str, namespace: &str, running: i32, view: &ClusterView) -> Step {
    let node = |ordinal: i32| node_name(name, namespace, ordinal);
    let pod = format!("{name}-{}", running - 1);
    let leaving = node(running - 1);
    let staying: Vec<String> = (0..running - 1).map(node).collect();
    let is_running = |n: &str| view.running.iter().any(|r| r == n);
    let is_member = |n: &str| view.members.iter().any(|m| m == n);
    let keeping = |why: String| {
        Step::Refuse(format!("refused: {why}; keeping {running}. Set spec.managed.replicas back to {running}"))
    };

    if view.khepri {
        return keeping(
            "the cluster keeps its metadata in Khepri (feature flag khepri_db), where forgetting a node takes a \
             quorum of the metadata store that the operator does not keep yet"
                .into(),
        );
    }
    if let Some(absent) = staying.iter().find(|n| !is_member(n) || !is_running(n)) {
        return Step::Wait(format!("waiting for {absent} to run in the cluster"));
    }
    if let Some(ghost) = view.members.iter().find(|m| **m != leaving && !staying.contains(m)) {
        return keeping(format!(
            "{ghost} is a member of the cluster without a pod of this size, and may hold a queue's only copy. Run \
             `rabbitmqctl forget_cluster_node {ghost}` in {name}-0 once its data is not needed"
        ));
    }
    if !is_member(&leaving) {
        if view.leaving_apart {
            return keeping(format!("{leaving} runs apart from the cluster of {name}-0, holding data of its own"));
        }
        return Step::Stop { pod };
    }
    if !is_running(&leaving) {
        return Step::Wait(format!("waiting for {leaving} to run"));
    }
    if let Some(queue) = view.lives_only_on(&leaving) {
        return keeping(format!(
            "{queue}, which the operator does not move. Delete it or move its messages (a Bridge to a quorum \
             queue) first"
        ));
    }
    let holding: Vec<_> = view.holding(&leaving).collect();
    if let Some(queue) = holding.iter().find(|q| !q.available) {
        return Step::Wait(format!("waiting for quorum queue {}/{} to have a leader", queue.vhost, queue.name));
    }
    // Each quorum queue keeps as many copies as its group size and the staying nodes allow.
    for queue in &holding {
        let (members, group_size) = (queue.members(), queue.group_size());
        if members.iter().filter(|m| staying.contains(m)).count() < group_size.min(staying.len()) {
            let target = least_loaded(view, &staying, members);
            return Step::AddMember {
                vhost: queue.vhost.clone(),
                queue: queue.name.clone(),
                pod: pod_of(&target),
                node: target,
            };
        }
    }
    if !holding.is_empty() {
        return Step::RemoveMembers { pod, node: leaving, queues: holding.len() };
    }
    Step::Retire { pod, node: leaving }
}

/// The staying node, not yet among `members`, that holds the fewest quorum queue members.
fn least_loaded(view: &ClusterView, staying: &[String], members: &[String]) -> String {
    let load = |node: &String| view.queues.iter().filter(|q| q.members().contains(node)).count();
    staying.iter().filter(|n| !members.contains(n)).min_by_key(|n| load(n)).cloned().unwrap_or_default()
}

/// The pod of node `rabbit@<pod>.<headless>.<namespace>.svc`.
fn pod_of(node: &str) -> String {
    node.trim_start_matches("rabbit@").split('.').next().unwrap_or_default().to_owned()
}

/// A RabbitMQ shrink under way: the step a staying node's answers decided, and the CLI to take it.
pub(super) struct Shrinking {
    cluster: RabbitmqCluster,
    pub step: Step,
}

impl Shrinking {
    /// Takes the step on the nodes (a refusal or a wait has nothing to ask of them).
    pub async fn take(&self) -> Result<(), String> {
        let cluster = &self.cluster;
        let taken = match &self.step {
            Step::AddMember { vhost, queue, node, .. } => cluster.add_member(vhost, queue, node).await,
            Step::RemoveMembers { node, .. } => cluster.remove_members(node).await,
            Step::Retire { pod, node } => cluster.retire(pod, node).await,
            Step::Stop { pod } => cluster.delete_claim(pod).await,
            Step::Refuse(_) | Step::Wait(_) => Ok(()),
        };
        taken.map_err(|error| error.to_string())
    }
}

/// Asks a staying node of RabbitMQ `cluster`, shrinking from `running` nodes, what the cluster
/// holds, and decides the next step.
pub(super) async fn ask_nodes(cluster: RabbitmqCluster, running: i32) -> Shrinking {
    let leaving =
        (format!("{}-{}", cluster.name(), running - 1), node_name(cluster.name(), cluster.namespace(), running - 1));
    let step = match cluster.view(&leaving.0, &leaving.1).await {
        Ok(view) => next_step(cluster.name(), cluster.namespace(), running, &view),
        Err(error) => Step::Wait(format!("cannot ask the nodes: {error}")),
    };
    Shrinking { cluster, step }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::rabbitmq_cluster::{QueueKind, QueueView};

    fn node(ordinal: i32) -> String {
        node_name("r", "acme", ordinal)
    }

    /// A quorum queue of group size 3 with members on `members`.
    fn quorum(name: &str, members: &[i32]) -> QueueView {
        QueueView {
            vhost: "acme".into(),
            name: name.into(),
            available: true,
            kind: QueueKind::Quorum { members: members.iter().map(|o| node(*o)).collect(), group_size: 3 },
        }
    }

    /// `count` running members holding `queues`.
    fn cluster(count: i32, queues: Vec<QueueView>) -> ClusterView {
        let nodes: Vec<String> = (0..count).map(node).collect();
        ClusterView { members: nodes.clone(), running: nodes, khepri: false, queues, leaving_apart: false }
    }

    #[test]
    fn a_node_leaves_in_order_members_then_the_node_itself() {
        let invoices = cluster(3, vec![quorum("invoices", &[0, 1, 2])]);
        assert_eq!(
            next_step("r", "acme", 3, &invoices),
            Step::RemoveMembers { pod: "r-2".into(), node: node(2), queues: 1 }
        );
        let emptied = cluster(3, vec![quorum("invoices", &[0, 1])]);
        let retire = next_step("r", "acme", 3, &emptied);
        assert_eq!(retire, Step::Retire { pod: "r-2".into(), node: node(2) });
        assert!(retire.stops_one(), "the pod goes in the same step");
        // Forgotten, but its pod still runs (a step that failed after the cluster forgot it).
        let mut forgotten = emptied.clone();
        forgotten.members.pop();
        forgotten.running.pop();
        assert_eq!(next_step("r", "acme", 3, &forgotten), Step::Stop { pod: "r-2".into() });
        // The next node, with one pod fewer.
        let two = cluster(2, vec![quorum("invoices", &[0, 1])]);
        assert_eq!(
            next_step("r", "acme", 2, &two),
            Step::RemoveMembers { pod: "r-1".into(), node: node(1), queues: 1 }
        );
    }

    #[test]
    fn a_node_that_stopped_by_itself_is_waited_for_never_forgotten() {
        for queues in [vec![quorum("invoices", &[0, 1, 2])], Vec::new()] {
            let mut crashed = cluster(3, queues);
            crashed.running.pop();
            let step = next_step("r", "acme", 3, &crashed);
            assert!(matches!(&step, Step::Wait(w) if w.contains("r-2") && w.contains("to run")), "{step:?}");
        }
    }

    #[test]
    fn a_queue_that_would_lose_copies_gets_a_member_on_a_staying_node_first() {
        // Five nodes to four: the queue on 2, 3, 4 keeps three copies, the new one on the
        // staying node holding the fewest.
        let view = cluster(5, vec![quorum("a", &[0, 1]), quorum("c", &[0]), quorum("b", &[2, 3, 4])]);
        let Step::AddMember { queue, node: target, pod, .. } = next_step("r", "acme", 5, &view) else {
            panic!("a member is added")
        };
        assert_eq!((queue.as_str(), target, pod.as_str()), ("b", node(1), "r-1"));
        // Added: never more than its group size, so the member on the leaving node goes next.
        let grown = cluster(5, vec![quorum("a", &[0, 1]), quorum("c", &[0]), quorum("b", &[1, 2, 3, 4])]);
        assert!(matches!(next_step("r", "acme", 5, &grown), Step::RemoveMembers { queues: 1, .. }));
        // A single copy on the leaving node gets one on a staying node, and no more.
        let lone =
            QueueView { kind: QueueKind::Quorum { members: vec![node(2)], group_size: 1 }, ..quorum("lone", &[]) };
        assert!(
            matches!(next_step("r", "acme", 3, &cluster(3, vec![lone.clone()])), Step::AddMember { pod, .. } if pod == "r-0")
        );
        let added = QueueView { kind: QueueKind::Quorum { members: vec![node(0), node(2)], group_size: 1 }, ..lone };
        assert!(matches!(next_step("r", "acme", 3, &cluster(3, vec![added])), Step::RemoveMembers { .. }));
        // Three nodes: a queue of three has a member on every node already.
        assert!(matches!(
            next_step("r", "acme", 3, &cluster(3, vec![quorum("invoices", &[0, 1, 2])])),
            Step::RemoveMembers { .. }
        ));
    }

    #[test]
    fn classic_queues_and_streams_on_the_leaving_node_refuse_the_shrink() {
        let classic = QueueView {
            vhost: "acme".into(),
            name: "legacy".into(),
            available: true,
            kind: QueueKind::Classic { home: node(2), exclusive: false },
        };
        let Step::Refuse(why) = next_step("r", "acme", 3, &cluster(3, vec![classic.clone()])) else {
            panic!("refused")
        };
        assert!(
            why.contains("classic queue acme/legacy lives only on rabbit@r-2") && why.contains("keeping 3"),
            "{why}"
        );
        let exclusive = QueueView { kind: QueueKind::Classic { home: node(2), exclusive: true }, ..classic.clone() };
        let retire = Step::Retire { pod: "r-2".into(), node: node(2) };
        assert_eq!(next_step("r", "acme", 3, &cluster(3, vec![exclusive])), retire, "it dies with its connection");
        let elsewhere = QueueView { kind: QueueKind::Classic { home: node(0), exclusive: false }, ..classic.clone() };
        assert_eq!(next_step("r", "acme", 3, &cluster(3, vec![elsewhere])), retire);
        let stream = QueueView { kind: QueueKind::Stream { members: vec![node(0), node(2)] }, ..classic };
        assert!(matches!(next_step("r", "acme", 3, &cluster(3, vec![stream])),
            Step::Refuse(why) if why.contains("stream acme/legacy has a replica")));
        let khepri = ClusterView { khepri: true, ..cluster(3, Vec::new()) };
        assert!(matches!(next_step("r", "acme", 3, &khepri), Step::Refuse(why) if why.contains("Khepri")));
    }

    #[test]
    fn an_unsettled_cluster_waits_and_what_it_cannot_tell_is_refused() {
        let mut down = cluster(3, Vec::new());
        down.running.remove(0);
        assert!(matches!(next_step("r", "acme", 3, &down), Step::Wait(w) if w.contains("r-0")));
        // A staying node restarting: its classic queues show as down rows; waited for, not refused.
        let mut restarting = cluster(
            3,
            vec![QueueView {
                vhost: "acme".into(),
                name: "legacy".into(),
                available: false,
                kind: QueueKind::Classic { home: String::new(), exclusive: false },
            }],
        );
        restarting.running.remove(1);
        assert!(matches!(next_step("r", "acme", 3, &restarting), Step::Wait(_)));
        let mut leaderless = cluster(3, vec![quorum("invoices", &[0, 1, 2])]);
        leaderless.queues[0].available = false;
        assert!(matches!(next_step("r", "acme", 3, &leaderless), Step::Wait(w) if w.contains("a leader")));
        // r-2 stopped without a shrink, never forgotten.
        let mut ghost = cluster(3, Vec::new());
        ghost.running.pop();
        let Step::Refuse(why) = next_step("r", "acme", 2, &ghost) else { panic!("refused") };
        assert!(why.contains("forget_cluster_node rabbit@r-2") && why.contains("keeping 2"), "{why}");
        // The leaving node runs a cluster of its own (it never joined).
        let mut apart = cluster(2, Vec::new());
        apart.leaving_apart = true;
        assert!(matches!(next_step("r", "acme", 3, &apart), Step::Refuse(why) if why.contains("apart")));
    }

    #[test]
    fn each_step_says_what_is_under_way() {
        let step = Step::RemoveMembers { pod: "r-2".into(), node: node(2), queues: 4 };
        assert_eq!(
            step.progress(3, 1),
            "scaling RabbitMQ from 3 to 1 nodes: 4 quorum queue member(s) leave rabbit@r-2.r.acme.svc"
        );
        assert_eq!(step.action(), Some(("RemoveQueueMembers", "r-2")));
    }
}
