//! Topics on RocketMQ through its remoting protocol. The name servers say which brokers lead each
//! broker group (the masters); every master holds the topic with the same read and write queues,
//! as `mqadmin updateTopic -c` makes it. Deleting takes the topic off the masters, then the name
//! servers' routes (a broker never removes a route it registered).

use std::collections::BTreeMap;
use std::net::ToSocketAddrs as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use oms_probe::net::Tls;
use oms_probe::rocketmq::{Answer, RemotingConnection, answer, code, masters_of, standard_json};
use serde_json::Value;

use super::{ADMIN_TIMEOUT, AdminError, Deleted, Endpoint, Observed, TenantChanges};
use crate::queue::plan::{Drift, QueuePlan, ROCKETMQ_MESSAGE_TYPE, ROCKETMQ_PERM, ROCKETMQ_READ_QUEUES};

/// How long one name server may take to answer before the next is asked.
const NAME_SERVER_TIMEOUT: Duration = Duration::from_secs(3);

/// Queues whose messages are counted one by one (two requests each); past this the count is
/// not known.
const MAX_COUNTED_QUEUES: i32 = 1024;

/// The name servers and the login of one RocketMQ cluster.
pub struct RocketAdmin {
    endpoint: Endpoint,
}

/// A topic as one master holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct TopicConfig {
    read_queues: i32,
    write_queues: i32,
    perm: i32,
    message_type: String,
}

impl TopicConfig {
    /// The queues a master reads or writes, whichever are more.
    fn queues(&self) -> i32 {
        self.read_queues.max(self.write_queues)
    }
}

/// The masters by broker name that the first answering name server of `endpoint` lists.
pub async fn masters(endpoint: &Endpoint) -> Result<BTreeMap<String, String>, AdminError> {
    RocketAdmin { endpoint: endpoint.clone() }.session("list the brokers", |_, masters| Ok(masters.clone())).await
}

impl RocketAdmin {
    /// Checks that a name server answers and lists a broker.
    pub async fn connect(endpoint: &Endpoint) -> Result<Self, AdminError> {
        let admin = RocketAdmin { endpoint: endpoint.clone() };
        admin.session("list the brokers", |_, _| Ok(())).await?;
        Ok(admin)
    }

    pub async fn observe(&self, plan: &QueuePlan) -> Result<Option<Observed>, AdminError> {
        let topic = plan.broker_name.clone();
        self.session("read the topic", move |session, masters| {
            let held = held(session, masters, &topic)?;
            let Some(first) = held.values().next().cloned() else { return Ok(None) };
            let mut reported_drift = Vec::new();
            if held.len() < masters.len() {
                reported_drift.push(Drift {
                    setting: "brokers".into(),
                    desired: Some(masters.keys().cloned().collect::<Vec<_>>().join(",")),
                    actual: Some(held.keys().cloned().collect::<Vec<_>>().join(",")),
                });
            }
            // Brokers that differ show as drift of the one that differs from the first.
            let config = held.values().find(|c| **c != first).unwrap_or(&first);
            let total: i32 = held.values().map(TopicConfig::queues).sum();
            let messages =
                if total <= MAX_COUNTED_QUEUES { Some(messages_in(session, masters, &topic, &held)?) } else { None };
            Ok(Some(Observed {
                // The most queues any master reads or writes: what a smaller plan would take away.
                partitions: held.values().map(TopicConfig::queues).max().unwrap_or_default(),
                settings: settings(config),
                messages,
                reported_drift,
                ..Observed::default()
            }))
        })
        .await
    }

    pub async fn create(&self, plan: &QueuePlan) -> Result<(), AdminError> {
        let plan = plan.clone();
        self.session("create the topic", move |session, masters| {
            for addr in masters.values() {
                put_topic(&mut session.broker(addr)?, &plan)?;
            }
            Ok(())
        })
        .await
    }

    /// Puts the planned topic on every master again, unless that would take queues away on any
    /// of them (`observed.partitions` is the most any master reads or writes): the messages in
    /// those would no longer be read.
    pub async fn converge(
        &self,
        plan: &QueuePlan,
        observed: &Observed,
        drift: &[Drift],
    ) -> Result<Vec<String>, AdminError> {
        if observed.partitions > plan.partitions {
            return Ok(drift
                .iter()
                .map(|d| {
                    format!(
                        "{d} (the operator does not take queues away: the messages in them would no longer be read)"
                    )
                })
                .collect());
        }
        self.create(plan).await?;
        Ok(Vec::new())
    }

    pub async fn delete(&self, topic: &str, if_empty: bool) -> Result<Deleted, AdminError> {
        let topic = topic.to_owned();
        let name_servers = self.endpoint.name_servers.clone();
        self.session("delete the topic", move |session, masters| {
            let held = held(session, masters, &topic)?;
            if held.is_empty() {
                // A delete that failed at a name server after the brokers: the route may be left.
                delete_routes(session, &name_servers, &topic)?;
                return Ok(Deleted::AlreadyGone);
            }
            if if_empty {
                let messages = messages_in(session, masters, &topic, &held)?;
                if messages > 0 {
                    return Ok(Deleted::NotEmpty { messages: Some(messages) });
                }
            }
            for addr in masters.values() {
                let answer = session.broker(addr)?.call(code::DELETE_TOPIC_IN_BROKER, &[("topic", &topic)], &[])?;
                succeeded(&answer, "DELETE_TOPIC_IN_BROKER")?;
            }
            delete_routes(session, &name_servers, &topic)?;
            Ok(Deleted::Deleted)
        })
        .await
    }

    /// Makes every master's users and ACLs those of the tenants (ACL 2.0, kept in each broker's
    /// own store): `users` (user to password) are made, or set again where the broker holds
    /// another password; each user gets every action on the resources `grants` names and loses
    /// its other grants; normal users no longer served are removed. Super users (`keep`, the
    /// operator's own, among them) are never touched.
    pub async fn apply_tenants(
        &self,
        users: &BTreeMap<String, String>,
        grants: &BTreeMap<String, Vec<String>>,
        keep: &str,
    ) -> Result<TenantChanges, AdminError> {
        let (users, grants, keep) = (users.clone(), grants.clone(), keep.to_owned());
        self.session("apply tenant users", move |session, masters| {
            let mut changes = TenantChanges::default();
            for addr in masters.values() {
                apply_tenants_on(&mut session.broker(addr)?, &users, &grants, &keep, &mut changes)
                    .map_err(|e| format!("broker {addr}: {e}"))?;
            }
            Ok(changes)
        })
        .await
    }

    /// Runs `work` on a blocking thread, within [`ADMIN_TIMEOUT`], with the masters by broker
    /// name as a name server lists them.
    async fn session<T: Send + 'static>(
        &self,
        action: &'static str,
        work: impl FnOnce(&mut Session, &BTreeMap<String, String>) -> Result<T, String> + Send + 'static,
    ) -> Result<T, AdminError> {
        let endpoint = self.endpoint.clone();
        tokio::task::spawn_blocking(move || {
            let mut session = Session { endpoint, deadline: Instant::now() + ADMIN_TIMEOUT };
            let masters = session.masters()?;
            work(&mut session, &masters)
        })
        .await
        .map_err(|e| AdminError::operation(action, e))?
        .map_err(|message| AdminError::Operation { action, message })
    }
}

/// Connections made for one admin operation, all ending by its deadline.
struct Session {
    endpoint: Endpoint,
    deadline: Instant,
}

impl Session {
    /// A connection to a name server: within [`NAME_SERVER_TIMEOUT`], so that one that does not
    /// answer leaves time to ask the next.
    fn name_server(&self, server: &str) -> Result<RemotingConnection, String> {
        let deadline = self.deadline.min(Instant::now() + NAME_SERVER_TIMEOUT);
        self.connect_by(server, None, deadline)
    }

    /// A connection to `server`, over TLS when the endpoint says so, signing with `login`.
    fn connect(&self, server: &str, login: Option<(String, String)>) -> Result<RemotingConnection, String> {
        self.connect_by(server, login, self.deadline)
    }

    fn connect_by(
        &self,
        server: &str,
        login: Option<(String, String)>,
        deadline: Instant,
    ) -> Result<RemotingConnection, String> {
        let host = server.rsplit_once(':').map_or(server, |(host, _)| host);
        let tls = match &self.endpoint.tls {
            Some(tls) => {
                Some(Tls { config: Arc::new(crate::broker_tls::client_config(tls)?), server_name: host.to_owned() })
            }
            None => None,
        };
        let addr = server
            .to_socket_addrs()
            .map_err(|e| format!("{server}: {e}"))?
            .next()
            .ok_or_else(|| format!("{server}: no address"))?;
        RemotingConnection::open(addr, tls.as_ref(), login, deadline).map_err(|e| format!("{server}: {e}"))
    }

    /// A connection to the broker at `addr`, signed with the access point's login.
    fn broker(&self, addr: &str) -> Result<RemotingConnection, String> {
        let login = self.endpoint.username.clone().zip(self.endpoint.password.clone());
        self.connect(addr, login)
    }

    /// The masters (broker id 0) by broker name, from the first name server that answers.
    fn masters(&self) -> Result<BTreeMap<String, String>, String> {
        if self.endpoint.name_servers.is_empty() {
            return Err("no name server to ask (spec.external.nameServers)".into());
        }
        let mut failures = Vec::new();
        for name_server in &self.endpoint.name_servers {
            let answer =
                self.name_server(name_server).and_then(|mut c| c.call(code::GET_BROKER_CLUSTER_INFO, &[], &[]));
            let listed = answer
                .and_then(|a| succeeded(&a, "GET_BROKER_CLUSTER_INFO").map(|()| a))
                .and_then(|a| masters_of(&a.body));
            match listed {
                Ok(masters) if !masters.is_empty() => return Ok(masters),
                Ok(_) => failures.push(format!("name server {name_server}: lists no master broker")),
                Err(error) => failures.push(format!("name server {name_server}: {error}")),
            }
        }
        Err(failures.join("; "))
    }
}

/// The topic as each master that holds it holds it, by broker name.
fn held(
    session: &Session,
    masters: &BTreeMap<String, String>,
    topic: &str,
) -> Result<BTreeMap<String, TopicConfig>, String> {
    let mut held = BTreeMap::new();
    for (broker, addr) in masters {
        if let Some(config) = topic_config(&mut session.broker(addr)?, topic)? {
            held.insert(broker.clone(), config);
        }
    }
    Ok(held)
}

/// Messages the masters that hold the topic keep in it.
fn messages_in(
    session: &Session,
    masters: &BTreeMap<String, String>,
    topic: &str,
    held: &BTreeMap<String, TopicConfig>,
) -> Result<u64, String> {
    let mut messages = 0;
    for (broker, config) in held {
        messages += stored_messages(&mut session.broker(&masters[broker])?, topic, config.queues())?;
    }
    Ok(messages)
}

/// Takes the topic's route off every name server (a broker never removes a route it registered).
fn delete_routes(session: &Session, name_servers: &[String], topic: &str) -> Result<(), String> {
    for name_server in name_servers {
        let answer = session.name_server(name_server)?.call(code::DELETE_TOPIC_IN_NAMESRV, &[("topic", topic)], &[])?;
        succeeded(&answer, &format!("DELETE_TOPIC_IN_NAMESRV at {name_server}"))?;
    }
    Ok(())
}

/// A user as a broker lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct BrokerUser {
    password: Option<String>,
    super_user: bool,
}

fn apply_tenants_on(
    broker: &mut RemotingConnection,
    users: &BTreeMap<String, String>,
    grants: &BTreeMap<String, Vec<String>>,
    keep: &str,
    changes: &mut TenantChanges,
) -> Result<(), String> {
    let listed = broker.call(code::AUTH_LIST_USER, &[], &[])?;
    succeeded(&listed, "AUTH_LIST_USER")?;
    let existing = broker_users(&listed.body)?;
    for (user, password) in users {
        let request = match existing.get(user) {
            None => code::AUTH_CREATE_USER,
            Some(found) if found.password.as_deref() != Some(password.as_str()) => code::AUTH_UPDATE_USER,
            Some(_) => continue,
        };
        let body =
            serde_json::json!({"username": user, "password": password, "userType": "Normal", "userStatus": "enable"});
        let answer = broker.call(request, &[("username", user)], body.to_string().as_bytes())?;
        succeeded(&answer, &format!("setting user {user}"))?;
        changes.users_set.push(user.clone());
    }
    for (user, found) in &existing {
        if user != keep && !found.super_user && !users.contains_key(user) {
            succeeded(
                &broker.call(code::AUTH_DELETE_USER, &[("username", user)], &[])?,
                &format!("removing user {user}"),
            )?;
            changes.users_removed.push(user.clone());
        }
    }
    for (user, resources) in grants {
        let subject = format!("User:{user}");
        let got = broker.call(code::AUTH_GET_ACL, &[("subject", &subject)], &[])?;
        succeeded(&got, &format!("AUTH_GET_ACL of {subject}"))?;
        let observed = granted(&got.body)?;
        let missing = resources.iter().filter(|r| !observed.get(*r).is_some_and(|everything| *everything)).count();
        if missing > 0 {
            let body = acl_body(&subject, resources);
            succeeded(
                &broker.call(code::AUTH_CREATE_ACL, &[("subject", &subject)], body.as_bytes())?,
                &format!("granting {subject}"),
            )?;
            changes.acls_created += missing;
        }
        for resource in observed.keys().filter(|r| !resources.contains(r)) {
            let fields = [("subject", subject.as_str()), ("policyType", "Custom"), ("resource", resource.as_str())];
            succeeded(
                &broker.call(code::AUTH_DELETE_ACL, &fields, &[])?,
                &format!("revoking {resource} of {subject}"),
            )?;
            changes.acls_deleted += 1;
        }
    }
    Ok(())
}

/// The users of an AUTH_LIST_USER answer (a JSON list of `UserInfo`; empty when there are none).
fn broker_users(body: &[u8]) -> Result<BTreeMap<String, BrokerUser>, String> {
    if body.is_empty() {
        return Ok(BTreeMap::new());
    }
    let list: Vec<Value> =
        serde_json::from_str(&standard_json(&String::from_utf8_lossy(body))).map_err(|e| format!("user list: {e}"))?;
    Ok(list
        .iter()
        .filter_map(|user| {
            let name = user.get("username")?.as_str()?.to_owned();
            let password = user.get("password").and_then(Value::as_str).map(str::to_owned);
            let super_user =
                user.get("userType").and_then(Value::as_str).is_some_and(|t| t.eq_ignore_ascii_case("super"));
            Some((name, BrokerUser { password, super_user }))
        })
        .collect())
}

/// The resources an AUTH_GET_ACL answer grants (an `AclInfo`; empty when there is none), each with
/// whether the grant is every action, allowed.
fn granted(body: &[u8]) -> Result<BTreeMap<String, bool>, String> {
    if body.is_empty() {
        return Ok(BTreeMap::new());
    }
    let acl: Value =
        serde_json::from_str(&standard_json(&String::from_utf8_lossy(body))).map_err(|e| format!("ACL: {e}"))?;
    let mut granted = BTreeMap::new();
    let policies = acl.get("policies").and_then(Value::as_array).into_iter().flatten();
    for policy in policies
        .filter(|p| p.get("policyType").and_then(Value::as_str).is_none_or(|t| t.eq_ignore_ascii_case("custom")))
    {
        for entry in policy.get("entries").and_then(Value::as_array).into_iter().flatten() {
            let Some(resource) = entry.get("resource").and_then(Value::as_str) else { continue };
            let actions = entry.get("actions").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
            let everything = actions.len() == 1
                && actions[0].as_str().is_some_and(|a| a.eq_ignore_ascii_case("all"))
                && entry.get("decision").and_then(Value::as_str).is_some_and(|d| d.eq_ignore_ascii_case("allow"));
            granted.insert(resource.to_owned(), everything);
        }
    }
    Ok(granted)
}

/// An ACL of `subject` allowing every action on each of `resources`, from any address.
fn acl_body(subject: &str, resources: &[String]) -> String {
    let entries: Vec<Value> = resources
        .iter()
        .map(|resource| serde_json::json!({"resource": resource, "actions": ["All"], "decision": "Allow"}))
        .collect();
    serde_json::json!({"subject": subject, "policies": [{"policyType": "Custom", "entries": entries}]}).to_string()
}

fn succeeded(answer: &Answer, request: &str) -> Result<(), String> {
    if answer.code == answer::SUCCESS { Ok(()) } else { Err(format!("{request} refused, {}", answer.describe())) }
}

/// The topic as the broker holds it; `None` where it holds none.
fn topic_config(broker: &mut RemotingConnection, topic: &str) -> Result<Option<TopicConfig>, String> {
    let answer = broker.call(code::GET_TOPIC_CONFIG, &[("topic", topic)], &[])?;
    if answer.code == answer::TOPIC_NOT_EXIST {
        return Ok(None);
    }
    succeeded(&answer, "GET_TOPIC_CONFIG")?;
    parse_topic_config(&answer.body).map(Some)
}

fn parse_topic_config(body: &[u8]) -> Result<TopicConfig, String> {
    let config: Value = serde_json::from_slice(body).map_err(|e| format!("topic config: {e}"))?;
    let number = |name: &str| {
        config
            .get(name)
            .and_then(Value::as_i64)
            .and_then(|n| i32::try_from(n).ok())
            .ok_or(format!("topic config without {name}"))
    };
    Ok(TopicConfig {
        read_queues: number("readQueueNums")?,
        write_queues: number("writeQueueNums")?,
        perm: number("perm")?,
        // A topic without the attribute takes normal messages.
        message_type: config
            .get("attributes")
            .and_then(|a| a.get(ROCKETMQ_MESSAGE_TYPE))
            .and_then(Value::as_str)
            .unwrap_or("NORMAL")
            .to_owned(),
    })
}

/// A topic's settings by the plan's keys.
fn settings(config: &TopicConfig) -> BTreeMap<String, String> {
    BTreeMap::from([
        (ROCKETMQ_READ_QUEUES.to_owned(), config.read_queues.to_string()),
        (ROCKETMQ_PERM.to_owned(), config.perm.to_string()),
        (ROCKETMQ_MESSAGE_TYPE.to_owned(), config.message_type.clone()),
    ])
}

/// Creates or updates the planned topic on one broker (an upsert).
fn put_topic(broker: &mut RemotingConnection, plan: &QueuePlan) -> Result<(), String> {
    let setting = |key: &str| plan.settings.get(key).cloned().unwrap_or_default();
    let write_queues = plan.partitions.to_string();
    let attributes = format!("+{ROCKETMQ_MESSAGE_TYPE}={}", setting(ROCKETMQ_MESSAGE_TYPE));
    let fields = [
        ("topic", plan.broker_name.as_str()),
        // Required by the broker though unused: what its own admin tool sends.
        ("defaultTopic", "TBW102"),
        ("readQueueNums", &setting(ROCKETMQ_READ_QUEUES)),
        ("writeQueueNums", &write_queues),
        ("perm", &setting(ROCKETMQ_PERM)),
        ("topicFilterType", "SINGLE_TAG"),
        ("topicSysFlag", "0"),
        ("order", "false"),
        ("attributes", &attributes),
    ];
    succeeded(&broker.call(code::UPDATE_AND_CREATE_TOPIC, &fields, &[])?, "UPDATE_AND_CREATE_TOPIC")
}

/// Messages the broker keeps in the topic's first `queues` queues: each queue's max offset minus
/// its min offset.
fn stored_messages(broker: &mut RemotingConnection, topic: &str, queues: i32) -> Result<u64, String> {
    let mut total = 0u64;
    for queue in 0..queues {
        let queue = queue.to_string();
        let mut offset = |request: i32, name: &str| -> Result<i64, String> {
            let answer = broker.call(request, &[("topic", topic), ("queueId", &queue)], &[])?;
            succeeded(&answer, name)?;
            answer
                .ext_fields
                .get("offset")
                .and_then(|o| o.parse().ok())
                .ok_or_else(|| format!("{name} without an offset"))
        };
        let (max, min) =
            (offset(code::GET_MAX_OFFSET, "GET_MAX_OFFSET")?, offset(code::GET_MIN_OFFSET, "GET_MIN_OFFSET")?);
        total += u64::try_from(max - min).unwrap_or(0);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_and_grants_read_from_fastjson_answers() {
        let users = br#"[{"password":"p1","userStatus":"enable","userType":"Super","username":"oms_admin"},{"password":"p2","userType":"Normal","username":"acme"}]"#;
        let users = broker_users(users).unwrap();
        assert_eq!(users["oms_admin"], BrokerUser { password: Some("p1".into()), super_user: true });
        assert_eq!(users["acme"], BrokerUser { password: Some("p2".into()), super_user: false });
        assert!(broker_users(b"").unwrap().is_empty());
        let acl = br#"{"policies":[{"entries":[{"actions":["All"],"decision":"Allow","resource":"Topic:acme%*"},{"actions":["Pub","Sub"],"decision":"Allow","resource":"Group:acme%*"}],"policyType":"Custom"},{"entries":[{"actions":["All"],"decision":"Allow","resource":"Topic:x"}],"policyType":"Default"}],"subject":"User:acme"}"#;
        let granted = granted(acl).unwrap();
        assert_eq!(
            granted.into_iter().collect::<Vec<_>>(),
            [("Group:acme%*".to_owned(), false), ("Topic:acme%*".to_owned(), true)]
        );
        let body: Value = serde_json::from_str(&acl_body("User:acme", &["Topic:acme%*".to_owned()])).unwrap();
        assert_eq!(body["policies"][0]["entries"][0]["actions"][0], "All");
        assert_eq!(body["policies"][0]["entries"][0]["resource"], "Topic:acme%*");
    }

    #[test]
    fn a_topic_config_reads_its_queues_perm_and_message_type_normal_when_unset() {
        let fifo = br#"{"attributes":{"message.type":"FIFO"},"order":false,"perm":6,"readQueueNums":8,"topicFilterType":"SINGLE_TAG","topicName":"orders","topicSysFlag":0,"writeQueueNums":4}"#;
        let config = parse_topic_config(fifo).unwrap();
        assert_eq!(config, TopicConfig { read_queues: 8, write_queues: 4, perm: 6, message_type: "FIFO".into() });
        let plain = br#"{"perm":4,"readQueueNums":1,"writeQueueNums":1,"topicName":"t"}"#;
        assert_eq!(parse_topic_config(plain).unwrap().message_type, "NORMAL");
        assert!(parse_topic_config(br#"{"perm":6}"#).unwrap_err().contains("readQueueNums"));
    }
}
