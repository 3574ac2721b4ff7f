//! The NATS system account, as the operator's own user: what every server says about JetStream
//! (the meta group as it sees it, and the stream and consumer replicas it holds), and the three
//! requests that retire a server: hand the meta leadership over, evacuate its replicas onto the
//! other servers, remove it from the meta group.

use std::time::Duration;

use futures::StreamExt as _;
use serde::Deserialize;
use serde_json::json;

use super::{AdminError, Endpoint, timed};

/// How long the servers have to answer a ping; a server that has not answered by then counts as
/// not answering.
const PING_WINDOW: Duration = Duration::from_secs(2);

/// What one server says about JetStream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JetStreamServer {
    pub name: String,
    /// Stream and consumer replicas this server holds.
    pub assets: u64,
    /// The meta group as this server sees it; `None` when it is in no meta group.
    pub meta: Option<MetaGroup>,
    /// The streams with a replica on this server.
    pub streams: Vec<StreamReplicas>,
}

/// The JetStream meta group as one server sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetaGroup {
    pub leader: Option<String>,
    /// Peers the group counts, the answering server included.
    pub size: usize,
    /// Every peer but the answering server.
    pub others: Vec<Peer>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    /// Seen recently and caught up.
    pub current: bool,
    pub offline: bool,
}

/// A stream's copies, as a server holding one of them reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamReplicas {
    /// `account/stream`.
    pub name: String,
    pub replicas: usize,
    /// Its replicas are moving, or (as its leader reports) one of them is offline.
    pub settling: bool,
}

/// A connection to a NATS cluster as a user of its system account.
pub struct NatsSystem {
    client: async_nats::Client,
}

impl NatsSystem {
    pub async fn connect(endpoint: &Endpoint) -> Result<Self, AdminError> {
        Ok(Self { client: super::nats::connect(endpoint).await? })
    }

    /// What the servers named `names` say about JetStream: their answers within [`PING_WINDOW`],
    /// or as soon as each has answered. Answers of other servers (one whose pod is still going)
    /// are left out.
    pub async fn servers(&self, names: &[String]) -> Result<Vec<JetStreamServer>, AdminError> {
        const ACTION: &str = "ask the servers about JetStream";
        let inbox = self.client.new_inbox();
        let mut answers = self.client.subscribe(inbox.clone()).await.map_err(|e| AdminError::operation(ACTION, e))?;
        let options = json!({"accounts": true, "streams": true, "config": true}).to_string();
        self.client
            .publish_with_reply("$SYS.REQ.SERVER.PING.JSZ", inbox, options.into())
            .await
            .map_err(|e| AdminError::operation(ACTION, e))?;
        let mut servers: Vec<JetStreamServer> = Vec::with_capacity(names.len());
        let window = tokio::time::sleep(PING_WINDOW);
        tokio::pin!(window);
        while !names.iter().all(|name| servers.iter().any(|s| &s.name == name)) {
            tokio::select! {
                () = &mut window => break,
                answer = answers.next() => match answer.map(|a| jetstream_server(&a.payload)) {
                    Some(Ok(server)) if names.contains(&server.name) && !servers.iter().any(|s| s.name == server.name) => {
                        servers.push(server);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(message)) => {
                        tracing::debug!(message = "A server's JetStream report is left out.", reason = %message);
                    }
                    None => break,
                },
            }
        }
        Ok(servers)
    }

    /// Asks the meta leader to hand the leadership to `preferred`.
    pub async fn move_meta_leader(&self, preferred: &str) -> Result<(), AdminError> {
        let request = json!({"placement": {"preferred": preferred}});
        self.request("move the JetStream meta leader", "$JS.API.META.LEADER.STEPDOWN", &request).await
    }

    /// Starts moving every stream and consumer replica off `server` (NATS 2.15 and later).
    pub async fn evacuate(&self, server: &str) -> Result<(), AdminError> {
        self.request("evacuate a server", "$JS.API.SERVER.EVACUATE", &json!({"peer": server})).await
    }

    /// Removes `server` from the meta group; answers once the removal has committed.
    pub async fn remove(&self, server: &str) -> Result<(), AdminError> {
        self.request("remove a server from the meta group", "$JS.API.SERVER.REMOVE", &json!({"peer": server})).await
    }

    async fn request(&self, action: &'static str, subject: &str, body: &serde_json::Value) -> Result<(), AdminError> {
        timed(action, async {
            let reply = self
                .client
                .request(subject.to_owned(), body.to_string().into())
                .await
                .map_err(|e| AdminError::operation(action, e))?;
            api_outcome(&reply.payload).map_err(|message| AdminError::Operation { action, message })
        })
        .await
    }
}

/// The outcome of a JetStream API request: `{"success":true}`, or an error with a description.
fn api_outcome(payload: &[u8]) -> Result<(), String> {
    #[derive(Deserialize)]
    struct Outcome {
        #[serde(default)]
        success: bool,
        error: Option<ApiError>,
    }
    let outcome: Outcome = serde_json::from_slice(payload).map_err(|e| format!("unreadable answer: {e}"))?;
    match (outcome.success, outcome.error) {
        (_, Some(error)) => Err(format!("{} (code {})", error.description, error.err_code)),
        (true, None) => Ok(()),
        (false, None) => Err("the server did not say it succeeded".into()),
    }
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(default)]
    err_code: u32,
    #[serde(default)]
    description: String,
}

/// One server's answer to `$SYS.REQ.SERVER.PING.JSZ`.
fn jetstream_server(payload: &[u8]) -> Result<JetStreamServer, String> {
    #[derive(Deserialize)]
    struct Answer {
        server: Server,
        #[serde(default)]
        data: Jsz,
        error: Option<ApiError>,
    }
    #[derive(Deserialize)]
    struct Server {
        name: String,
    }
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Jsz {
        disabled: bool,
        streams: u64,
        consumers: u64,
        meta_cluster: Option<Meta>,
        account_details: Vec<Account>,
    }
    #[derive(Deserialize)]
    struct Meta {
        #[serde(default)]
        leader: String,
        #[serde(default)]
        replicas: Vec<JszPeer>,
        cluster_size: usize,
    }
    #[derive(Deserialize)]
    struct JszPeer {
        name: String,
        #[serde(default)]
        current: bool,
        #[serde(default)]
        offline: bool,
    }
    #[derive(Deserialize)]
    struct Account {
        name: String,
        #[serde(default)]
        stream_detail: Vec<Stream>,
    }
    #[derive(Deserialize)]
    struct Stream {
        name: String,
        config: Option<StreamConfig>,
        cluster: Option<Cluster>,
    }
    #[derive(Deserialize)]
    struct StreamConfig {
        num_replicas: usize,
    }
    #[derive(Deserialize)]
    struct Cluster {
        #[serde(default)]
        leader: String,
        #[serde(default)]
        replicas: Vec<JszPeer>,
        desired: Option<serde_json::Value>,
    }

    let answer: Answer = serde_json::from_slice(payload).map_err(|e| format!("unreadable JetStream report: {e}"))?;
    if let Some(error) = answer.error {
        return Err(format!("server {} cannot report on JetStream: {}", answer.server.name, error.description));
    }
    let (name, data) = (answer.server.name, answer.data);
    let peer = |p: JszPeer| Peer { name: p.name, current: p.current, offline: p.offline };
    let streams = data
        .account_details
        .into_iter()
        .flat_map(|account| {
            let name = &name;
            account.stream_detail.into_iter().map(move |stream| {
                // Only a stream's leader knows whether its other replicas keep up; a follower
                // reports the others as not current.
                let (moving, behind) = stream.cluster.as_ref().map_or((false, false), |c| {
                    (c.desired.is_some(), c.leader == *name && c.replicas.iter().any(|r| r.offline))
                });
                StreamReplicas {
                    name: format!("{}/{}", account.name, stream.name),
                    replicas: stream.config.map_or(1, |c| c.num_replicas),
                    settling: moving || behind,
                }
            })
        })
        .collect();
    Ok(JetStreamServer {
        name,
        assets: data.streams + data.consumers,
        // A server removed from the meta group turns JetStream off, and says so.
        meta: data.meta_cluster.filter(|_| !data.disabled).map(|m| MetaGroup {
            leader: Some(m.leader).filter(|l| !l.is_empty()),
            size: m.cluster_size,
            others: m.replicas.into_iter().map(peer).collect(),
        }),
        streams,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_servers_report_gives_its_meta_group_and_the_copies_of_its_streams() {
        let answer = br#"{"server":{"name":"orders-nats-2","id":"N1"},"data":{"streams":2,"consumers":1,
            "meta_cluster":{"name":"g","leader":"orders-nats-2","replicas":[
                {"name":"orders-nats-0","current":true,"active":1,"peer":"a"},
                {"name":"orders-nats-1","current":false,"offline":true,"active":1,"peer":"b"}],
              "cluster_size":3,"quorum_needed":2},
            "account_details":[{"name":"acme","id":"acme","stream_detail":[
                {"name":"ORDERS","config":{"num_replicas":3},"cluster":{"leader":"orders-nats-2","replicas":[
                    {"name":"orders-nats-0","current":true,"active":1,"peer":"a"},
                    {"name":"orders-nats-1","current":false,"offline":true,"active":1,"peer":"b"}]}},
                {"name":"BILLING","config":{"num_replicas":3},"cluster":{"leader":"orders-nats-0","replicas":[
                    {"name":"orders-nats-1","current":false,"active":1,"peer":"b"}]}},
                {"name":"LOGS","config":{"num_replicas":1},"cluster":{"leader":"orders-nats-2",
                    "desired":{"replicas":[]}}}]}]}}"#;
        let server = jetstream_server(answer).expect("read");
        assert_eq!((server.name.as_str(), server.assets), ("orders-nats-2", 3));
        let meta = server.meta.expect("clustered");
        assert_eq!((meta.leader.as_deref(), meta.size), (Some("orders-nats-2"), 3));
        assert_eq!(meta.others[1], Peer { name: "orders-nats-1".into(), current: false, offline: true });
        assert_eq!(
            server.streams,
            [
                StreamReplicas { name: "acme/ORDERS".into(), replicas: 3, settling: true },
                StreamReplicas { name: "acme/BILLING".into(), replicas: 3, settling: false },
                StreamReplicas { name: "acme/LOGS".into(), replicas: 1, settling: true },
            ],
            "as the leader of ORDERS it sees orders-nats-1 offline; of BILLING it is a follower, which sees too little"
        );
    }

    #[test]
    fn a_standalone_or_removed_server_has_no_meta_group_and_an_error_is_said() {
        let standalone = jetstream_server(br#"{"server":{"name":"n-0"},"data":{"streams":0,"consumers":0}}"#);
        assert_eq!(standalone.expect("read").meta, None);
        let removed = jetstream_server(
            br#"{"server":{"name":"n-2"},"data":{"disabled":true,"streams":0,"consumers":0,
                "meta_cluster":{"leader":"n-0","cluster_size":2,"quorum_needed":2}}}"#,
        );
        assert_eq!(removed.expect("read").meta, None, "JetStream off");
        let refused = jetstream_server(
            br#"{"server":{"name":"n-0"},"error":{"code":503,"description":"jetstream not enabled"}}"#,
        );
        assert!(refused.is_err_and(|e| e.contains("n-0") && e.contains("jetstream not enabled")));
    }

    #[test]
    fn an_api_answer_succeeds_only_when_it_says_so() {
        assert_eq!(
            api_outcome(br#"{"type":"io.nats.jetstream.api.v1.meta_server_remove_response","success":true}"#),
            Ok(())
        );
        let error = api_outcome(
            br#"{"error":{"code":400,"err_code":10044,"description":"server is not a member of the cluster"}}"#,
        );
        assert_eq!(error, Err("server is not a member of the cluster (code 10044)".into()));
        assert!(api_outcome(b"{}").is_err());
    }
}
