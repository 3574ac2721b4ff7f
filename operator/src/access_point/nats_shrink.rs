//! Shrinking a managed NATS cluster, one server at a time, the way NATS retires a server: the
//! JetStream meta leader moves off it, its stream and consumer replicas are evacuated onto the
//! staying servers, it is removed from the meta group while it still runs (so the group keeps
//! its quorum), and only then does the StatefulSet run one pod fewer, with routes to the staying
//! servers alone. Each reconcile decides one step from what the servers say, and does it; the
//! last server left runs JetStream on its own (a clustered server alone never elects a leader).

use super::credentials::{Logins, admin_endpoint};
use super::validate::AccessPoint;
use crate::admin::nats_system::{JetStreamServer, NatsSystem};
use crate::broker_tls::BrokerTls;

/// The next thing to do on the way from `running` servers to fewer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The shrink cannot be done safely: the servers keep running, and this says why.
    Refuse(String),
    /// The cluster is not settled enough for the next step; look again soon.
    Wait(String),
    /// Ask the meta leader, the leaving server, to hand the leadership to `to`.
    MoveMetaLeader { leaving: String, to: String },
    /// Move the `assets` stream and consumer replicas off `leaving`.
    Evacuate { leaving: String, assets: u64 },
    /// Remove `leaving`, which holds no replica now, from the meta group.
    Remove { leaving: String },
    /// `leaving` has left the meta group: run one server fewer.
    Stop { leaving: String },
}

impl Step {
    /// The Event action of a step taken on the servers, and the server it is about.
    #[must_use]
    pub fn action(&self) -> Option<(&'static str, &str)> {
        match self {
            Step::MoveMetaLeader { leaving, .. } => Some(("MoveMetaLeader", leaving)),
            Step::Evacuate { leaving, .. } => Some(("Evacuate", leaving)),
            Step::Remove { leaving } => Some(("RemovePeer", leaving)),
            Step::Stop { leaving } => Some(("StopServer", leaving)),
            Step::Refuse(_) | Step::Wait(_) => None,
        }
    }

    /// What the Progressing condition says while this step is under way.
    #[must_use]
    pub fn progress(&self, running: i32, desired: i32) -> String {
        let shrinking = format!("scaling NATS from {running} to {desired} servers");
        match self {
            Step::Refuse(why) | Step::Wait(why) => format!("{shrinking}: {why}"),
            Step::MoveMetaLeader { leaving, to } => {
                format!("{shrinking}: the JetStream meta leader moves from {leaving} to {to}")
            }
            Step::Evacuate { leaving, assets } => {
                format!("{shrinking}: {assets} stream and consumer replica(s) move off {leaving}")
            }
            Step::Remove { leaving } => format!("{shrinking}: {leaving} leaves the JetStream meta group"),
            Step::Stop { leaving } => format!("{shrinking}: {leaving} stops"),
        }
    }
}

/// The next step from `running` servers of access point `name` towards `desired`, from the
/// answers of its `servers`. The leaving server is always the highest ordinal.
#[must_use]
pub fn next_step(name: &str, running: i32, desired: i32, servers: &[JetStreamServer]) -> Step {
    let leaving = format!("{name}-{}", running - 1);
    let mut too_wide: Vec<String> = servers
        .iter()
        .flat_map(|s| &s.streams)
        .filter(|s| i32::try_from(s.replicas).unwrap_or(i32::MAX) > desired)
        .map(|s| format!("{} ({} copies)", s.name, s.replicas))
        .collect();
    too_wide.sort();
    too_wide.dedup();
    if !too_wide.is_empty() {
        return Step::Refuse(format!(
            "refused: stream(s) {} keep more copies than {desired} servers can hold; keeping {running}. Lower their \
             replicas (a Queue's spec.replication) to {desired} or fewer first, or set spec.managed.replicas back to \
             {running}",
            too_wide.join(", ")
        ));
    }
    // The meta group as its leader sees it: the others may lag behind.
    let Some((leader, meta)) = servers
        .iter()
        .find_map(|s| s.meta.as_ref().filter(|m| m.leader.as_deref() == Some(s.name.as_str())).map(|m| (&s.name, m)))
    else {
        return Step::Wait("waiting for a JetStream meta leader to answer".into());
    };
    let is_peer = |server: &str| leader == server || meta.others.iter().any(|p| p.name == server);
    let answer = |server: &str| servers.iter().find(|s| s.name == server);
    if !is_peer(&leaving) && meta.size == usize::try_from(running - 1).unwrap_or_default() {
        return match answer(&leaving) {
            Some(still) if still.meta.is_some() => Step::Wait(format!("waiting for {leaving} to turn JetStream off")),
            _ => Step::Stop { leaving },
        };
    }
    // Every server must have answered: one that has not may hold replicas nobody else has.
    let silent: Vec<String> = (0..running).map(|i| format!("{name}-{i}")).filter(|n| answer(n).is_none()).collect();
    if !silent.is_empty() {
        return Step::Wait(format!("waiting for {} to answer", silent.join(", ")));
    }
    if let Some(peer) = meta.others.iter().find(|p| p.offline || !p.current) {
        return Step::Wait(format!("waiting for {} to catch up with the JetStream meta group", peer.name));
    }
    if let Some(stream) = servers.iter().flat_map(|s| &s.streams).find(|s| s.settling) {
        return Step::Wait(format!("waiting for the replicas of stream {} to settle", stream.name));
    }
    if *leader == leaving {
        return Step::MoveMetaLeader { leaving, to: format!("{name}-0") };
    }
    match answer(&leaving).map_or(0, |s| s.assets) {
        0 => Step::Remove { leaving },
        assets => Step::Evacuate { leaving, assets },
    }
}

/// A NATS shrink under way: the step the servers' answers decided, and the connection to take it.
pub(super) struct Shrinking {
    system: Option<NatsSystem>,
    pub step: Step,
}

impl Shrinking {
    /// Takes the step on the servers (a refusal, a wait or a stop has nothing to ask of them).
    pub async fn take(&self) -> Result<(), String> {
        let Some(system) = &self.system else { return Ok(()) };
        let taken = match &self.step {
            Step::MoveMetaLeader { to, .. } => system.move_meta_leader(to).await,
            Step::Evacuate { leaving, .. } => system.evacuate(leaving).await,
            Step::Remove { leaving } => system.remove(leaving).await,
            Step::Refuse(_) | Step::Wait(_) | Step::Stop { .. } => Ok(()),
        };
        taken.map_err(|error| error.to_string())
    }
}

/// Asks the servers of NATS access point `ap`, shrinking from `running` to `desired`, what they
/// hold, as the operator's user in the system account, and decides the next step.
pub(super) async fn ask_servers(
    ap: &AccessPoint,
    hosts: &[(String, u16)],
    logins: &Logins,
    tls: Option<&BrokerTls>,
    (running, desired): (i32, i32),
) -> Shrinking {
    let waiting = |why: String| Shrinking { system: None, step: Step::Wait(why) };
    let Some(admin) = &logins.admin else { return waiting("the operator's user is not known yet".into()) };
    let system = match NatsSystem::connect(&admin_endpoint(hosts, admin, tls)).await {
        Ok(system) => system,
        Err(error) => return waiting(format!("cannot reach the servers as the operator's user: {error}")),
    };
    let names: Vec<String> = (0..running).map(|i| format!("{}-{i}", ap.name)).collect();
    let step = match system.servers(&names).await {
        Ok(servers) => next_step(&ap.name, running, desired, &servers),
        Err(error) => Step::Wait(error.to_string()),
    };
    Shrinking { system: Some(system), step }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::nats_system::{MetaGroup, Peer, StreamReplicas};

    /// Servers `n-0` .. `n-{count-1}` of one healthy meta group led by `leader`, the last one
    /// holding `on_last` replicas; every stream with 1 copy.
    fn cluster(count: usize, leader: &str, on_last: u64) -> Vec<JetStreamServer> {
        let names: Vec<String> = (0..count).map(|i| format!("n-{i}")).collect();
        names
            .iter()
            .enumerate()
            .map(|(i, name)| JetStreamServer {
                name: name.clone(),
                assets: if i + 1 == count { on_last } else { 0 },
                meta: Some(MetaGroup {
                    leader: Some(leader.into()),
                    size: count,
                    others: names
                        .iter()
                        .filter(|n| *n != name)
                        .map(|n| Peer { name: n.clone(), current: true, offline: false })
                        .collect(),
                }),
                streams: vec![StreamReplicas { name: "acme/ORDERS".into(), replicas: 1, settling: false }],
            })
            .collect()
    }

    #[test]
    fn a_server_leaves_in_order_leadership_then_replicas_then_membership_then_its_pod() {
        let step = |servers: &[JetStreamServer]| next_step("n", 3, 2, servers);
        assert_eq!(step(&cluster(3, "n-2", 4)), Step::MoveMetaLeader { leaving: "n-2".into(), to: "n-0".into() });
        assert_eq!(step(&cluster(3, "n-0", 4)), Step::Evacuate { leaving: "n-2".into(), assets: 4 });
        assert_eq!(step(&cluster(3, "n-0", 0)), Step::Remove { leaving: "n-2".into() });
        // Removed: the leader counts 2 peers; n-2 still answers, with JetStream off.
        let mut removed = cluster(2, "n-0", 0);
        removed.push(JetStreamServer { name: "n-2".into(), ..JetStreamServer::default() });
        assert_eq!(step(&removed), Step::Stop { leaving: "n-2".into() });
        removed[2].meta = removed[0].meta.clone();
        assert!(matches!(step(&removed), Step::Wait(w) if w.contains("n-2 to turn JetStream off")));
    }

    #[test]
    fn a_server_that_does_not_answer_is_never_taken_for_an_empty_one() {
        let mut servers = cluster(3, "n-0", 4);
        servers.pop();
        assert!(matches!(next_step("n", 3, 2, &servers), Step::Wait(w) if w.contains("n-2 to answer")));
        // After a stop: 2 run, the stopped pod's server still answers and n-1 has not yet.
        let mut after_stop = cluster(3, "n-0", 0);
        after_stop.remove(1);
        assert!(matches!(next_step("n", 2, 1, &after_stop), Step::Wait(w) if w.contains("n-1 to answer")));
    }

    #[test]
    fn the_last_but_one_server_leaves_the_same_way() {
        assert_eq!(next_step("n", 2, 1, &cluster(2, "n-0", 0)), Step::Remove { leaving: "n-1".into() });
        assert_eq!(next_step("n", 2, 1, &cluster(1, "n-0", 0)), Step::Stop { leaving: "n-1".into() });
    }

    #[test]
    fn streams_wider_than_the_new_size_refuse_the_shrink_and_are_named() {
        let mut servers = cluster(3, "n-0", 0);
        servers[1].streams.push(StreamReplicas { name: "acme/PAYMENTS".into(), replicas: 3, settling: false });
        servers[2].streams.push(StreamReplicas { name: "acme/PAYMENTS".into(), replicas: 3, settling: false });
        let Step::Refuse(why) = next_step("n", 3, 2, &servers) else { panic!("refused") };
        assert!(
            why.contains("acme/PAYMENTS (3 copies)") && !why.contains("ORDERS") && why.contains("keeping 3"),
            "{why}"
        );
        assert_eq!(why.matches("PAYMENTS").count(), 1, "named once: {why}");
        assert_eq!(next_step("n", 3, 2, &cluster(3, "n-0", 0)), Step::Remove { leaving: "n-2".into() });
    }

    #[test]
    fn an_unsettled_cluster_waits() {
        let mut lagging = cluster(3, "n-0", 0);
        lagging[0].meta.as_mut().expect("meta").others[0].current = false;
        assert!(matches!(next_step("n", 3, 2, &lagging), Step::Wait(w) if w.contains("n-1 to catch up")));
        let mut moving = cluster(3, "n-0", 0);
        moving[1].streams[0].settling = true;
        assert!(matches!(next_step("n", 3, 2, &moving), Step::Wait(w) if w.contains("acme/ORDERS")));
        let leaderless: Vec<_> = cluster(3, "n-0", 0)
            .into_iter()
            .map(|mut s| {
                s.meta.as_mut().expect("meta").leader = None;
                s
            })
            .collect();
        assert!(matches!(next_step("n", 3, 2, &leaderless), Step::Wait(w) if w.contains("meta leader")));
    }

    #[test]
    fn each_step_says_what_is_under_way() {
        let evacuating = Step::Evacuate { leaving: "n-2".into(), assets: 4 };
        assert_eq!(
            evacuating.progress(3, 1),
            "scaling NATS from 3 to 1 servers: 4 stream and consumer replica(s) move off n-2"
        );
    }
}
