//! A managed RabbitMQ cluster as its nodes' CLI tells it, and the CLI calls that retire a node.
//! They run in the broker containers, as `kubectl exec` would: RabbitMQ has no network API to
//! drain a node, move quorum queue members or forget a node, and its CLI reaches the nodes with
//! the Erlang cookie the containers hold. Queries go to pod 0, which a shrink always keeps.

use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::DeleteParams;
use kube::{Api, Client};
use serde_json::Value;

use crate::access_point::render::data_claim;
use crate::pod_exec::{self, ExecError};

/// The container the renderer names for every broker.
const CONTAINER: &str = "broker";
/// How long a CLI command may take: one that waits on a cluster without a quorum must not hold
/// a reconcile for good.
const CLI_TIMEOUT: Duration = Duration::from_mins(1);
/// Seconds a new quorum queue member may take to join: a voter joining a queue of one member
/// must take in its whole log first.
const ADD_MEMBER_SECONDS: u64 = 300;
/// A quorum queue's group size when it names none: RabbitMQ's `quorum_cluster_size` default.
const DEFAULT_GROUP_SIZE: usize = 3;

/// What a staying node says of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterView {
    /// Nodes in the cluster, running or not: a node stays one until the cluster forgets it.
    pub members: Vec<String>,
    pub running: Vec<String>,
    /// The metadata store is Khepri (feature flag `khepri_db`), not Mnesia.
    pub khepri: bool,
    /// Queues of every virtual host.
    pub queues: Vec<QueueView>,
    /// The leaving node, not a member, runs a cluster of its own (it never joined, or left).
    pub leaving_apart: bool,
}

impl ClusterView {
    /// Quorum queues with a member on `node`.
    pub fn holding<'a>(&'a self, node: &str) -> impl Iterator<Item = &'a QueueView> + use<'a> {
        let node = node.to_owned();
        self.queues.iter().filter(move |q| q.members().contains(&node))
    }

    /// A queue whose only copy is on `node`, named as a refusal says it: a classic queue homed
    /// there (forgetting the node deletes it) or on no running node, or a stream with a replica
    /// there.
    #[must_use]
    pub fn lives_only_on(&self, node: &str) -> Option<String> {
        self.queues.iter().find_map(|q| match &q.kind {
            QueueKind::Classic { home, exclusive: false } if home == node => {
                Some(format!("classic queue {}/{} lives only on {node}", q.vhost, q.name))
            }
            QueueKind::Classic { home, exclusive: false } if home.is_empty() => {
                Some(format!("classic queue {}/{} lives on a node that does not run", q.vhost, q.name))
            }
            QueueKind::Stream { members } if members.iter().any(|m| m == node) => {
                Some(format!("stream {}/{} has a replica on {node}", q.vhost, q.name))
            }
            _ => None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueView {
    pub vhost: String,
    pub name: String,
    /// Running, with a leader (a quorum queue can take a membership change).
    pub available: bool,
    pub kind: QueueKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueKind {
    /// Its home node (empty when that node does not run), and whether it dies with its
    /// connection.
    Classic {
        home: String,
        exclusive: bool,
    },
    /// Its members' nodes, and how many it is meant to have (`x-quorum-initial-group-size`).
    Quorum {
        members: Vec<String>,
        group_size: usize,
    },
    Stream {
        members: Vec<String>,
    },
}

impl QueueView {
    /// The nodes holding a member of a quorum queue; none for other queues.
    #[must_use]
    pub fn members(&self) -> &[String] {
        match &self.kind {
            QueueKind::Quorum { members, .. } => members,
            QueueKind::Classic { .. } | QueueKind::Stream { .. } => &[],
        }
    }

    /// How many members a quorum queue is meant to have.
    #[must_use]
    pub fn group_size(&self) -> usize {
        match &self.kind {
            QueueKind::Quorum { group_size, .. } => *group_size,
            QueueKind::Classic { .. } | QueueKind::Stream { .. } => 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error("cannot read what `{command}` printed: {detail}")]
    Output { command: &'static str, detail: String },
    #[error("quorum queue members stay on {node}: {failures}")]
    MembersStay { node: String, failures: String },
    #[error("{what} (found as {node} was drained); it is back in service, and looked at again")]
    ArrivedWhileDraining { node: String, what: String },
    #[error("cannot delete PersistentVolumeClaim {name}: {source}")]
    DeleteClaim { name: String, source: kube::Error },
}

/// The nodes of managed RabbitMQ access point `name` in `namespace`.
pub struct RabbitmqCluster {
    pods: Api<Pod>,
    claims: Api<PersistentVolumeClaim>,
    name: String,
    namespace: String,
}

impl RabbitmqCluster {
    #[must_use]
    pub fn new(client: Client, namespace: &str, name: &str) -> Self {
        RabbitmqCluster {
            pods: Api::namespaced(client.clone(), namespace),
            claims: Api::namespaced(client, namespace),
            name: name.to_owned(),
            namespace: namespace.to_owned(),
        }
    }

    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    #[must_use]
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Runs a RabbitMQ CLI command in `pod`, against its own node.
    async fn cli(&self, pod: &str, command: &[&str]) -> Result<String, ExecError> {
        self.cli_within(pod, command, CLI_TIMEOUT).await
    }

    async fn cli_within(&self, pod: &str, command: &[&str], limit: Duration) -> Result<String, ExecError> {
        let command: Vec<String> = command.iter().map(|part| (*part).to_owned()).collect();
        pod_exec::run(&self.pods, pod, CONTAINER, &command, limit).await
    }

    fn staying_pod(&self) -> String {
        format!("{}-0", self.name)
    }

    /// The cluster's nodes and every queue, as pod 0 sees them; and, when the leaving node of
    /// pod `leaving_pod` is not a member, whether it runs a cluster of its own.
    pub async fn view(&self, leaving_pod: &str, leaving: &str) -> Result<ClusterView, ClusterError> {
        let pod = self.staying_pod();
        let status = self.cli(&pod, &["rabbitmqctl", "cluster_status", "--formatter", "json"]).await?;
        let mut view = parse_cluster_status(&status)?;
        let vhosts = self.cli(&pod, &["rabbitmqctl", "list_vhosts", "name", "--formatter", "json"]).await?;
        for vhost in parse_vhosts(&vhosts)? {
            let command = [
                "rabbitmqctl",
                "list_queues",
                "--vhost",
                &vhost,
                "name",
                "type",
                "members",
                "leader",
                "exclusive",
                "state",
                "arguments",
                "--formatter",
                "json",
            ];
            view.queues.extend(parse_queues(&vhost, &self.cli(&pod, &command).await?)?);
        }
        if !view.members.iter().any(|m| m == leaving) {
            // A node whose app is stopped, or whose pod is gone, answers no cluster_status.
            let own = self.cli(leaving_pod, &["rabbitmqctl", "cluster_status", "--formatter", "json"]).await;
            view.leaving_apart = own
                .ok()
                .and_then(|text| parse_cluster_status(&text).ok())
                .is_some_and(|v| v.running.iter().any(|r| r == leaving));
        }
        Ok(view)
    }

    /// Adds a voting member of quorum queue `vhost`/`queue` on `node`.
    pub async fn add_member(&self, vhost: &str, queue: &str, node: &str) -> Result<(), ClusterError> {
        let seconds = ADD_MEMBER_SECONDS.to_string();
        let command = [
            "rabbitmq-queues",
            "add_member",
            "--vhost",
            vhost,
            queue,
            node,
            "--membership",
            "voter",
            "--timeout",
            &seconds,
        ];
        let limit = Duration::from_secs(ADD_MEMBER_SECONDS) + CLI_TIMEOUT;
        self.cli_within(&self.staying_pod(), &command, limit).await?;
        Ok(())
    }

    /// Removes every quorum queue member on `node`; says which could not be removed (the CLI
    /// exits 0 either way, naming them).
    pub async fn remove_members(&self, node: &str) -> Result<(), ClusterError> {
        let command = ["rabbitmq-queues", "shrink", node, "--errors-only", "--formatter", "json"];
        let failures = failed_removals(&self.cli(&self.staying_pod(), &command).await?)?;
        if failures.is_empty() {
            return Ok(());
        }
        Err(ClusterError::MembersStay { node: node.to_owned(), failures: failures.join("; ") })
    }

    /// Takes node `node` of `pod`, which holds nothing, out of the cluster: drains it (its
    /// clients go, and no queue is placed on it), checks that nothing came to it meanwhile
    /// (else brings it back into service), stops its app (the Erlang VM stays up, as forgetting
    /// needs), has the cluster forget it, and deletes its volume claim (it goes once the pod has).
    pub async fn retire(&self, pod: &str, node: &str) -> Result<(), ClusterError> {
        self.cli(pod, &["rabbitmq-upgrade", "drain"]).await?;
        let view = self.view(pod, node).await?;
        let arrived = view.lives_only_on(node).or_else(|| {
            let count = view.holding(node).count();
            (count > 0).then(|| format!("{count} quorum queue member(s) came"))
        });
        if let Some(what) = arrived {
            self.cli(pod, &["rabbitmq-upgrade", "revive"]).await?;
            return Err(ClusterError::ArrivedWhileDraining { node: node.to_owned(), what });
        }
        self.cli(pod, &["rabbitmqctl", "stop_app"]).await?;
        self.cli(&self.staying_pod(), &["rabbitmqctl", "forget_cluster_node", node]).await?;
        self.delete_claim(pod).await
    }

    /// Deletes the data volume claim of `pod` (the StatefulSet keeps it when it scales down);
    /// one in use goes once its pod has.
    pub async fn delete_claim(&self, pod: &str) -> Result<(), ClusterError> {
        let name = data_claim(pod);
        match self.claims.delete(&name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(source) => Err(ClusterError::DeleteClaim { name, source }),
        }
    }
}

fn json(command: &'static str, text: &str) -> Result<Value, ClusterError> {
    serde_json::from_str(text).map_err(|error| ClusterError::Output { command, detail: error.to_string() })
}

/// The strings of a JSON array; none for anything else (the CLI prints "" for an empty value).
fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| items.iter().filter_map(|i| i.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// `rabbitmqctl cluster_status --formatter json`: members and running nodes, and the
/// metadata store.
fn parse_cluster_status(text: &str) -> Result<ClusterView, ClusterError> {
    let status = json("rabbitmqctl cluster_status", text)?;
    let running = strings(&status["running_nodes"]);
    if running.is_empty() {
        let detail = "no running_nodes".to_owned();
        return Err(ClusterError::Output { command: "rabbitmqctl cluster_status", detail });
    }
    let mut members = strings(&status["disk_nodes"]);
    members.extend(strings(&status["ram_nodes"]));
    let khepri = status["feature_flags"]
        .as_array()
        .is_some_and(|flags| flags.iter().any(|f| f["name"] == "khepri_db" && f["state"] == "enabled"));
    Ok(ClusterView { members, running, khepri, ..ClusterView::default() })
}

/// `rabbitmqctl list_vhosts name --formatter json`.
fn parse_vhosts(text: &str) -> Result<Vec<String>, ClusterError> {
    let listed = json("rabbitmqctl list_vhosts", text)?;
    Ok(listed.as_array().into_iter().flatten().filter_map(|v| v["name"].as_str().map(str::to_owned)).collect())
}

/// `rabbitmqctl list_queues name type members leader exclusive state arguments --formatter
/// json` of `vhost`. A queue whose node does not run comes as a "down" row typed by its module,
/// with empty members and leader. Arguments come as `[key, type, value]` triples (as RabbitMQ
/// 4.0.5 prints `["x-quorum-initial-group-size","signedint",1]`).
fn parse_queues(vhost: &str, text: &str) -> Result<Vec<QueueView>, ClusterError> {
    let listed = json("rabbitmqctl list_queues", text)?;
    let queues = listed.as_array().into_iter().flatten().filter_map(|row| {
        let name = row["name"].as_str()?.to_owned();
        let leader = row["leader"].as_str().unwrap_or_default().to_owned();
        let available = row["state"] == "running" && !leader.is_empty();
        let kind = match row["type"].as_str()? {
            "quorum" | "rabbit_quorum_queue" => {
                let group_size = row["arguments"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|argument| argument[0] == "x-quorum-initial-group-size")
                    .and_then(|argument| argument[2].as_u64())
                    .and_then(|size| usize::try_from(size).ok())
                    .unwrap_or(DEFAULT_GROUP_SIZE);
                QueueKind::Quorum { members: strings(&row["members"]), group_size }
            }
            "stream" | "rabbit_stream_queue" => QueueKind::Stream { members: strings(&row["members"]) },
            _ => QueueKind::Classic { home: leader, exclusive: row["exclusive"] == true },
        };
        Some(QueueView { vhost: vhost.to_owned(), name, available, kind })
    });
    Ok(queues.collect())
}

/// The failures `rabbitmq-queues shrink --errors-only --formatter json` lists, as
/// `vhost/queue: result`.
fn failed_removals(text: &str) -> Result<Vec<String>, ClusterError> {
    let listed = json("rabbitmq-queues shrink", text)?;
    Ok(listed
        .as_array()
        .into_iter()
        .flatten()
        .map(|row| {
            let field = |key: &str| row[key].as_str().unwrap_or_default().to_owned();
            format!("{}/{}: {}", field("vhost"), field("name"), field("result"))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const N0: &str = "rabbit@r-0.r.acme.svc";
    const N1: &str = "rabbit@r-1.r.acme.svc";
    const N2: &str = "rabbit@r-2.r.acme.svc";

    #[test]
    fn cluster_status_gives_members_and_running_nodes_and_the_metadata_store() {
        let text = format!(
            r#"{{"alarms":[],"cluster_name":"{N0}","disk_nodes":["{N0}","{N1}","{N2}"],"ram_nodes":[],
            "running_nodes":["{N0}","{N2}"],"maintenance_status":{{"{N0}":"not under maintenance",
            "{N2}":"marked for maintenance"}},"feature_flags":[{{"name":"khepri_db","state":"disabled"}},
            {{"name":"quorum_queue","state":"enabled"}}],"partitions":{{}}}}"#
        );
        let view = parse_cluster_status(&text).expect("parsed");
        assert_eq!(view.members, [N0, N1, N2]);
        assert_eq!(view.running, [N0, N2]);
        assert!(!view.khepri);
        let khepri = text.replace(r#""khepri_db","state":"disabled""#, r#""khepri_db","state":"enabled""#);
        assert!(parse_cluster_status(&khepri).expect("parsed").khepri);
        assert!(parse_cluster_status("Error: this command requires the 'rabbit' app").is_err());
    }

    #[test]
    fn queues_of_each_kind_are_read_with_their_nodes() {
        let text = format!(
            "[\n{{\"name\":\"orders\",\"type\":\"quorum\",\"members\":[\"{N0}\",\"{N1}\",\"{N2}\"],\"leader\":\"{N0}\",\
             \"exclusive\":\"\",\"state\":\"running\"}}\n,{{\"name\":\"legacy\",\"type\":\"classic\",\
             \"members\":[\"{N2}\"],\"leader\":\"{N2}\",\"exclusive\":false,\"state\":\"running\"}}\n,\
             {{\"name\":\"reply\",\"type\":\"classic\",\"members\":[\"{N1}\"],\"leader\":\"{N1}\",\"exclusive\":true,\
             \"state\":\"running\"}}\n,{{\"name\":\"log\",\"type\":\"stream\",\"members\":[\"{N0}\",\"{N2}\"],\
             \"leader\":\"{N0}\",\"exclusive\":\"\",\"state\":\"running\"}}\n,{{\"name\":\"gone\",\
             \"type\":\"rabbit_classic_queue\",\"members\":\"\",\"leader\":\"\",\"exclusive\":\"\",\"state\":\"down\"}}\n]\n"
        );
        let queues = parse_queues("acme", &text).expect("parsed");
        let kinds: Vec<&QueueKind> = queues.iter().map(|q| &q.kind).collect();
        assert_eq!(
            kinds,
            [
                &QueueKind::Quorum { members: vec![N0.into(), N1.into(), N2.into()], group_size: 3 },
                &QueueKind::Classic { home: N2.into(), exclusive: false },
                &QueueKind::Classic { home: N1.into(), exclusive: true },
                &QueueKind::Stream { members: vec![N0.into(), N2.into()] },
                &QueueKind::Classic { home: String::new(), exclusive: false },
            ]
        );
        assert!(queues[0].available && !queues[4].available);
        assert_eq!(queues[0].members(), [N0, N1, N2]);
        assert!(queues[1].members().is_empty(), "a classic queue has no quorum members");
        let leaderless = r#"[{"name":"q","type":"quorum","members":["a"],"leader":"","exclusive":"","state":"running",
            "arguments":[["x-queue-type","longstr","quorum"],["x-quorum-initial-group-size","signedint",1]]}]"#;
        let leaderless = &parse_queues("acme", leaderless).expect("parsed")[0];
        assert!(!leaderless.available, "no leader to change its members");
        assert_eq!(leaderless.group_size(), 1, "its own group size");
        assert_eq!(parse_vhosts("[\n{\"name\":\"/\"}\n,{\"name\":\"acme\"}\n]\n").expect("parsed"), ["/", "acme"]);
    }

    #[test]
    fn a_shrink_says_which_members_stay() {
        assert!(failed_removals("[]\n").expect("parsed").is_empty());
        let text = r#"[{"vhost":"acme","name":"single","size":1,"result":"error: the last node cannot be removed"}]"#;
        assert_eq!(failed_removals(text).expect("parsed"), ["acme/single: error: the last node cannot be removed"]);
    }
}
