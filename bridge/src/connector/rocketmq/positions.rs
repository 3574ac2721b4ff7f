//! The consumer group's positions, set over RocketMQ's remoting protocol before the first receive.
//! A 5.x proxy starts a new simple consumer group at the last message of each queue but one, or at
//! the first where the broker still holds it in memory: neither is `startFrom`. So the worker makes
//! its group on every master that holds the topic and gives each queue where the group has no
//! position yet the one `startFrom` asks for; a queue with a position keeps it (a restart resumes).
//! The same positions tell the group's backlog.

use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::time::{Duration, Instant};

use oms_probe::net::Tls;
use oms_probe::rocketmq::{Answer, RemotingConnection, Route, answer, code};
use rustls::ClientConfig;

use crate::connector::Start;

/// Time for the whole preparation: a route, then a few requests per queue.
const PREPARE_TIMEOUT: Duration = Duration::from_secs(20);
/// Time for one backlog read: the pipeline waits for it every few seconds.
const BACKLOG_TIMEOUT: Duration = Duration::from_secs(2);

/// How often a message is delivered before the broker moves it to the group's dead-letter topic.
/// RocketMQ's default (16 retries) ends after about 16 invisible times (16 minutes here) of a
/// target that cannot take it; a bridge holds a message until its target has it, so that limit is
/// set out of reach (a year of minutes).
const RETRY_MAX_TIMES: i32 = 525_600;

/// How the worker reaches the name servers and the brokers: their addresses (the brokers' come
/// from the name servers), its login, and TLS where the end speaks it (the same CA, and the same
/// server name if the end names one, as towards the proxy).
#[derive(Clone)]
pub struct Remoting {
    pub name_servers: Vec<(String, u16)>,
    pub login: Option<(String, String)>,
    pub tls: Option<Arc<ClientConfig>>,
}

/// What the preparation found and did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Prepared {
    /// Queues (over all masters) the group reads.
    pub queues: u32,
    /// Of those, queues that had no position and were given `startFrom`'s.
    pub started: u32,
}

/// Makes `group` on every master that routes `topic` and sets the position of each queue that has
/// none. Blocking: run it off the async runtime.
pub fn prepare(remoting: &Remoting, topic: &str, group: &str, start: Start) -> Result<Prepared, String> {
    let deadline = Instant::now() + PREPARE_TIMEOUT;
    let route = route(remoting, topic, deadline)?;
    if route.masters.is_empty() {
        return Err(format!("no master broker holds topic {topic}"));
    }
    let mut prepared = Prepared::default();
    for (broker, (addr, queues)) in &route.masters {
        let mut connection = open(addr, remoting, true, deadline)?;
        let made =
            connection.call(code::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, &[], &group_config(group).into_bytes())?;
        succeeded(&made, &format!("creating consumer group {group} on {broker}"))?;
        for queue in 0..*queues {
            prepared.queues += 1;
            if position(&mut connection, topic, group, queue)?.is_none() {
                let offset = start_offset(&mut connection, topic, queue, start)?;
                let (queue, offset) = (queue.to_string(), offset.to_string());
                let fields =
                    [("consumerGroup", group), ("topic", topic), ("queueId", &queue), ("commitOffset", &offset)];
                let set = connection.call(code::UPDATE_CONSUMER_OFFSET, &fields, &[])?;
                succeeded(&set, &format!("setting the position of queue {queue} on {broker}"))?;
                prepared.started += 1;
            }
        }
    }
    Ok(prepared)
}

/// Messages of `topic` that `group` has not taken yet: each queue's end minus the group's position
/// there, over every master. Blocking, like [`prepare`].
pub fn backlog(remoting: &Remoting, topic: &str, group: &str) -> Result<u64, String> {
    let deadline = Instant::now() + BACKLOG_TIMEOUT;
    let route = route(remoting, topic, deadline)?;
    let mut waiting = 0;
    for (addr, queues) in route.masters.values() {
        let mut connection = open(addr, remoting, true, deadline)?;
        for queue in 0..*queues {
            let end = start_offset(&mut connection, topic, queue, Start::Latest)?;
            let taken = position(&mut connection, topic, group, queue)?.unwrap_or(end);
            waiting += u64::try_from(end - taken).unwrap_or(0);
        }
    }
    Ok(waiting)
}

/// The topic's route from the first name server that answers.
fn route(remoting: &Remoting, topic: &str, deadline: Instant) -> Result<Route, String> {
    let mut failures = Vec::new();
    for (host, port) in &remoting.name_servers {
        let server = format!("{host}:{port}");
        let answer = open(&server, remoting, false, deadline)
            .and_then(|mut c| c.call(code::GET_ROUTEINFO_BY_TOPIC, &[("topic", topic)], &[]));
        match answer {
            Ok(answer) if answer.code == answer::SUCCESS => return Route::parse(&answer.body),
            Ok(answer) if answer.code == answer::TOPIC_NOT_EXIST => {
                return Err(format!("name server {server} knows no topic {topic} ({})", answer.describe()));
            }
            Ok(answer) => failures.push(format!("name server {server}: {}", answer.describe())),
            Err(error) => failures.push(format!("name server {server}: {error}")),
        }
    }
    Err(failures.join("; "))
}

/// A connection to `server` (`host:port`), over TLS where the end speaks it, signing its requests
/// with the login where `signed` (brokers check signatures; name servers are asked without).
fn open(server: &str, remoting: &Remoting, signed: bool, deadline: Instant) -> Result<RemotingConnection, String> {
    let addr = server
        .to_socket_addrs()
        .map_err(|e| format!("{server}: {e}"))?
        .next()
        .ok_or_else(|| format!("{server}: no address"))?;
    let host = server.rsplit_once(':').map_or(server, |(host, _)| host);
    let host = crate::connector::grpc::bare_host(host);
    let tls = remoting.tls.as_ref().map(|config| Tls { config: config.clone(), server_name: host.to_owned() });
    let login = if signed { remoting.login.clone() } else { None };
    RemotingConnection::open(addr, tls.as_ref(), login, deadline)
}

/// The group's stored position in one queue, `None` where it has none.
fn position(connection: &mut RemotingConnection, topic: &str, group: &str, queue: i32) -> Result<Option<i64>, String> {
    let queue = queue.to_string();
    let fields =
        [("consumerGroup", group), ("topic", topic), ("queueId", queue.as_str()), ("setZeroIfNotFound", "false")];
    let answer = connection.call(code::QUERY_CONSUMER_OFFSET, &fields, &[])?;
    if answer.code == answer::QUERY_NOT_FOUND {
        return Ok(None);
    }
    succeeded(&answer, &format!("reading the position of queue {queue}"))?;
    offset_of(&answer).map(Some)
}

/// Where `start` begins in one queue: its first message still held, its end, or the first
/// message stored at or after a time.
fn start_offset(connection: &mut RemotingConnection, topic: &str, queue: i32, start: Start) -> Result<i64, String> {
    let queue = queue.to_string();
    let answer = match start {
        Start::Earliest => connection.call(code::GET_MIN_OFFSET, &[("topic", topic), ("queueId", &queue)], &[])?,
        Start::Latest => connection.call(code::GET_MAX_OFFSET, &[("topic", topic), ("queueId", &queue)], &[])?,
        Start::Timestamp(ms) => {
            let ms = ms.to_string();
            let fields = [("topic", topic), ("queueId", queue.as_str()), ("timestamp", ms.as_str())];
            connection.call(code::SEARCH_OFFSET_BY_TIMESTAMP, &fields, &[])?
        }
    };
    succeeded(&answer, &format!("reading the start of queue {queue}"))?;
    offset_of(&answer)
}

fn offset_of(answer: &Answer) -> Result<i64, String> {
    answer
        .ext_fields
        .get("offset")
        .and_then(|o| o.parse().ok())
        .ok_or_else(|| format!("an answer without an offset ({})", answer.describe()))
}

fn succeeded(answer: &Answer, what: &str) -> Result<(), String> {
    if answer.code == answer::SUCCESS { Ok(()) } else { Err(format!("{what} refused, {}", answer.describe())) }
}

/// The group as the broker stores it (`SubscriptionGroupConfig`): enabled, one retry queue, and
/// retries out of reach (see [`RETRY_MAX_TIMES`]).
fn group_config(group: &str) -> String {
    serde_json::json!({
        "groupName": group,
        "consumeEnable": true,
        "consumeFromMinEnable": true,
        "consumeBroadcastEnable": false,
        "consumeMessageOrderly": false,
        "retryQueueNums": 1,
        "retryMaxTimes": RETRY_MAX_TIMES,
        "brokerId": 0,
        "whichBrokerWhenConsumeSlowly": 1,
        "notifyConsumerIdsChangedEnable": true,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_group_is_enabled_with_retries_out_of_reach() {
        let config: serde_json::Value = serde_json::from_str(&group_config("acme.oms-bridge.b")).unwrap();
        assert_eq!(config["groupName"], "acme.oms-bridge.b");
        assert_eq!(config["consumeEnable"], true);
        assert!(config["retryMaxTimes"].as_i64().unwrap() > 100_000, "a long outage must not dead-letter messages");
    }
}
