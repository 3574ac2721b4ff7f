//! Status from the data path: the operator reads each worker's admin endpoint (`/metrics`; a pull,
//! so the data plane cannot write arbitrary status) and decides `Connected` and `Stalled`, the lag
//! and the forwarded and duplicate counts. Parsing and deciding are pure; [`read_workers`] is the I/O edge.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Api;
use kube::api::ListParams;
use oms_crds::common::condition_type::{CONNECTED, STALLED};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::conditions::{Decided, Status};
use crate::workload::ADMIN_PORT;

/// How long one admin endpoint may take to answer.
const READ_TIMEOUT: Duration = Duration::from_secs(3);

/// One worker process, as its `/metrics` tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reading {
    /// `oms_bridge_messages_sent_total`: confirmed by the target since this process started.
    pub sent: u64,
    /// `oms_bridge_messages_redelivered_total`: redeliveries the target stored again (0 from
    /// workers that do not count them).
    pub redelivered: u64,
    /// `oms_bridge_source_lag_messages`; `None` where the source cannot tell (MQTT).
    pub lag: Option<i64>,
    /// Unix seconds of the last confirmed forward; `None` before the first.
    pub last_forwarded: Option<i64>,
    /// Unix seconds this process started.
    pub started: i64,
    /// `oms_bridge_link_up`: both ends connected.
    pub link_up: bool,
    /// `oms_bridge_worker_active`: takes messages from the source (a worker too old to say is
    /// active while its link is up).
    pub active: bool,
}

/// A worker's metrics page (Prometheus text format), or `None` when it is not one.
#[must_use]
pub fn parse(text: &str) -> Option<Reading> {
    let mut sums: BTreeMap<&str, f64> = BTreeMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let value = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        if let Some(value) = value {
            *sums.entry(&line[..name_end]).or_default() += value;
        }
    }
    // Counters and Unix times are whole numbers well inside f64's exact range.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let whole = |name: &str| sums.get(name).map(|v| *v as i64);
    let sent = whole("oms_bridge_messages_sent_total")?;
    let started = whole("oms_bridge_start_timestamp_seconds")?;
    Some(Reading {
        sent: u64::try_from(sent).unwrap_or(0),
        redelivered: whole("oms_bridge_messages_redelivered_total").and_then(|v| u64::try_from(v).ok()).unwrap_or(0),
        lag: whole("oms_bridge_source_lag_messages"),
        last_forwarded: whole("oms_bridge_last_forwarded_timestamp_seconds").filter(|t| *t > 0),
        started,
        link_up: whole("oms_bridge_link_up").is_some_and(|v| v > 0),
        active: whole("oms_bridge_worker_active").map_or(whole("oms_bridge_link_up").is_some_and(|v| v > 0), |v| v > 0),
    })
}

/// Which counter of a worker's reading a [`Ledger`] adds up.
pub type Counter = fn(&Reading) -> u64;

/// `status.forwardedTotal`: what the target confirmed.
#[must_use]
pub fn forwarded(reading: &Reading) -> u64 {
    reading.sent
}

/// `status.duplicatesTotal`: redeliveries the target stored again.
#[must_use]
pub fn duplicates(reading: &Reading) -> u64 {
    reading.redelivered
}

/// One counter over a Bridge's life, across worker restarts (each restart resets the worker's
/// counter): what ended processes counted, plus what each live one has counted so far.
#[derive(Clone, Debug)]
pub struct Ledger {
    counter: Counter,
    /// Forwarded by processes that have ended, and what the status held before we looked.
    committed: u64,
    /// Per worker (pod): its start time and its counter when last read.
    processes: BTreeMap<String, (i64, u64)>,
}

impl Ledger {
    /// Continues from the status's total after an operator restart (0 for a new Bridge): what the
    /// workers report now is taken as already counted (what they counted since the last status
    /// write is lost from the total; nothing is counted twice).
    #[must_use]
    pub fn resume(counter: Counter, total: u64, readings: &[(String, Reading)]) -> Self {
        let live: u64 = readings.iter().map(|(_, r)| counter(r)).sum();
        let processes = readings.iter().map(|(key, r)| (key.clone(), (r.started, counter(r)))).collect();
        Self { counter, committed: total.saturating_sub(live), processes }
    }

    /// Takes in this round's readings; returns the total.
    pub fn record(&mut self, readings: &[(String, Reading)]) -> u64 {
        for (key, reading) in readings {
            match self.processes.get(key) {
                // The same process: its counter only grows.
                Some((started, _)) if *started == reading.started => {}
                // A restarted process: what the old one sent is kept.
                Some((_, sent)) => self.committed += sent,
                None => {}
            }
            self.processes.insert(key.clone(), (reading.started, (self.counter)(reading)));
        }
        self.total()
    }

    #[must_use]
    pub fn total(&self) -> u64 {
        self.committed + self.processes.values().map(|(_, sent)| sent).sum::<u64>()
    }
}

/// What this round of reads saw, for the conditions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    /// Worker pods the Bridge asks for (`spec.replicas`).
    pub expected: i32,
    pub readings: Vec<Reading>,
}

impl Observation {
    /// Total lag over the workers that report one.
    #[must_use]
    pub fn lag(&self) -> Option<i64> {
        self.readings.iter().filter_map(|r| r.lag).reduce(|a, b| a + b)
    }

    /// Workers taking messages, and workers standing by.
    #[must_use]
    pub fn active_and_standby(&self) -> (i32, i32) {
        let active = self.readings.iter().filter(|r| r.active).count();
        let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
        (count(active), count(self.readings.len() - active))
    }

    #[must_use]
    pub fn last_forwarded(&self) -> Option<i64> {
        self.readings.iter().filter_map(|r| r.last_forwarded).max()
    }
}

/// `Connected` and `Stalled` from an observation. `Stalled` is True when there is lag and nothing
/// was forwarded for `stalled_after` (counting from the newest worker start when none forwarded
/// yet), or when no worker has answered for that long (counted from when `Connected` turned False).
#[must_use]
pub fn decide(observation: &Observation, previous: &[Condition], now: i64, stalled_after: Duration) -> [Decided; 2] {
    let after = i64::try_from(stalled_after.as_secs()).unwrap_or(i64::MAX);
    let threshold = format!("Stalled after {}", humantime(stalled_after));
    if observation.expected == 0 {
        return [
            Decided::new(CONNECTED, Status::False, "Paused", "spec.replicas is 0"),
            Decided::new(STALLED, Status::False, "Paused", "spec.replicas is 0; the position is kept"),
        ];
    }
    if observation.readings.is_empty() {
        let down_since = previous
            .iter()
            .find(|c| c.type_ == CONNECTED && c.status == "False")
            .map_or(now, |c| c.last_transition_time.0.as_second());
        let down_for = now - down_since;
        let connected =
            Decided::new(CONNECTED, Status::False, "WorkerUnreachable", "no worker answers on its admin port");
        let stalled = if down_for >= after {
            Decided::new(STALLED, Status::True, "WorkerUnreachable", format!("no worker has answered for {down_for}s"))
        } else {
            Decided::new(STALLED, Status::False, "WorkerUnreachable", format!("no worker answers; {threshold}"))
        };
        return [connected, stalled];
    }
    let connected = if observation.readings.iter().all(|r| r.link_up) {
        Decided::new(CONNECTED, Status::True, "Connected", "every worker is connected to both ends")
    } else {
        Decided::new(CONNECTED, Status::False, "Disconnected", "a worker is not connected to its source or its target")
    };
    let lag = observation.lag().unwrap_or(0);
    let newest_start = observation.readings.iter().map(|r| r.started).max().unwrap_or(now);
    let progress = observation.last_forwarded().map_or(newest_start, |t| t.max(newest_start));
    let idle_for = now - progress;
    let stalled = if lag > 0 && idle_for >= after {
        Decided::new(
            STALLED,
            Status::True,
            "NoProgress",
            format!("{lag} message(s) waiting and nothing forwarded for {idle_for}s"),
        )
    } else if lag > 0 {
        Decided::new(STALLED, Status::False, "Forwarding", format!("{lag} message(s) waiting; {threshold}"))
    } else {
        Decided::new(STALLED, Status::False, "CaughtUp", "nothing waiting at the source")
    };
    [connected, stalled]
}

fn humantime(duration: Duration) -> String {
    format!("{}s", duration.as_secs())
}

/// Reads every worker of a Bridge: its pods' admin ports, or the `--bridge-admin-url` template
/// for workers that do not run as pods here. Workers that do not answer are left out.
pub async fn read_workers(
    client: &kube::Client,
    admin_url: Option<&str>,
    namespace: &str,
    bridge: &str,
) -> Result<Vec<(String, Reading)>, kube::Error> {
    let targets: Vec<(String, String)> = if let Some(template) = admin_url {
        let base = template.replace("{namespace}", namespace).replace("{name}", bridge);
        vec![(base.clone(), base)]
    } else {
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let listed = pods.list(&ListParams::default().labels(&super::render::pod_selector(bridge))).await?;
        listed
            .items
            .into_iter()
            .filter_map(|pod| {
                let ip = pod.status.as_ref()?.pod_ip.clone()?;
                let name = pod.metadata.name?;
                let host = if ip.contains(':') { format!("[{ip}]") } else { ip };
                Some((name, format!("http://{host}:{ADMIN_PORT}")))
            })
            .collect()
    };
    let mut readings = Vec::with_capacity(targets.len());
    for (key, base) in targets {
        match tokio::time::timeout(READ_TIMEOUT, get_metrics(&base)).await {
            Ok(Ok(text)) => readings.extend(parse(&text).map(|reading| (key, reading))),
            Ok(Err(error)) => {
                tracing::debug!(message = "Worker admin endpoint unreadable.", bridge, url = base, %error);
            }
            Err(_) => tracing::debug!(message = "Worker admin endpoint timed out.", bridge, url = base),
        }
    }
    Ok(readings)
}

/// `GET <base>/metrics` over plain HTTP/1.1 (the admin port); the body when the answer is 200.
async fn get_metrics(base: &str) -> std::io::Result<String> {
    let invalid = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, what.to_owned());
    let authority =
        base.strip_prefix("http://").ok_or_else(|| invalid("only http:// admin URLs"))?.trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(authority).await?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or_else(|| invalid("no HTTP header end"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(invalid(head.lines().next().unwrap_or_default()));
    }
    Ok(body.to_owned())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    const PAGE: &str = "# HELP oms_bridge_messages_sent_total Messages.\n# TYPE oms_bridge_messages_sent_total counter\n\
        oms_bridge_messages_sent_total{bridge=\"b\",namespace=\"acme\"} 1200\n\
        oms_bridge_source_lag_messages{bridge=\"b\"} 30\n\
        oms_bridge_last_forwarded_timestamp_seconds{bridge=\"b\"} 1000\n\
        oms_bridge_start_timestamp_seconds{bridge=\"b\"} 900\n\
        oms_bridge_link_up{bridge=\"b\"} 1\n";

    fn reading(sent: u64, started: i64) -> Reading {
        Reading {
            sent,
            redelivered: sent / 10,
            lag: Some(0),
            last_forwarded: None,
            started,
            link_up: true,
            active: true,
        }
    }

    #[test]
    fn a_worker_page_is_read_and_anything_else_is_not() {
        assert_eq!(
            parse(PAGE),
            Some(Reading {
                sent: 1200,
                redelivered: 0,
                lag: Some(30),
                last_forwarded: Some(1000),
                started: 900,
                link_up: true,
                active: true,
            })
        );
        let counted = format!("{PAGE}oms_bridge_messages_redelivered_total{{bridge=\"b\"}} 7\n");
        assert_eq!(parse(&counted).map(|r| r.redelivered), Some(7));
        assert_eq!(parse("oms_operator_reconcile_total{kind=\"Bridge\"} 3\n"), None, "not a worker");
        let standby = format!("{PAGE}oms_bridge_worker_active{{bridge=\"b\"}} 0\n");
        assert_eq!(parse(&standby).map(|r| (r.link_up, r.active)), Some((true, false)), "up, standing by");
        let never = PAGE.replace("} 1000", "} 0");
        assert_eq!(parse(&never).and_then(|r| r.last_forwarded), None, "0 means never");
    }

    #[test]
    fn the_total_survives_worker_restarts_and_operator_restarts() {
        let mut ledger = Ledger::resume(forwarded, 0, &[]);
        assert_eq!(ledger.record(&[("pod-a".into(), reading(100, 1))]), 100);
        assert_eq!(ledger.record(&[("pod-a".into(), reading(250, 1))]), 250);
        // The worker restarted: its counter starts again from 0.
        assert_eq!(ledger.record(&[("pod-a".into(), reading(40, 2))]), 290);
        // A second pod.
        assert_eq!(ledger.record(&[("pod-a".into(), reading(50, 2)), ("pod-b".into(), reading(5, 3))]), 305);
        // Unanswered this round: counted as last seen, not lost.
        assert_eq!(ledger.record(&[]), 305);
        // The operator restarted with 305 in the status; the worker reports 50 it has already counted.
        let mut resumed = Ledger::resume(forwarded, 305, &[("pod-a".into(), reading(50, 2))]);
        assert_eq!(resumed.total(), 305);
        assert_eq!(resumed.record(&[("pod-a".into(), reading(60, 2))]), 315);
        // Each counter on its own ledger, by the same rules.
        let mut duplicated = Ledger::resume(duplicates, 0, &[]);
        assert_eq!(duplicated.record(&[("pod-a".into(), reading(100, 1))]), 10);
        assert_eq!(duplicated.record(&[("pod-a".into(), reading(40, 2))]), 14);
    }

    fn condition(type_: &str, status: &str, since: i64) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: "R".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: Time(Timestamp::from_second(since).expect("time")),
        }
    }

    fn stalled(decided: &[Decided; 2]) -> (Status, &'static str) {
        (decided[1].status, decided[1].reason)
    }

    #[test]
    fn lag_without_progress_for_the_threshold_is_stalled() {
        let after = Duration::from_mins(1);
        let working = Reading {
            sent: 10,
            redelivered: 0,
            lag: Some(5),
            last_forwarded: Some(1_000),
            started: 500,
            link_up: true,
            active: true,
        };
        let observation = Observation { expected: 1, readings: vec![working.clone()] };
        assert_eq!(stalled(&decide(&observation, &[], 1_059, after)), (Status::False, "Forwarding"));
        assert_eq!(stalled(&decide(&observation, &[], 1_060, after)), (Status::True, "NoProgress"));
        let caught_up = Observation { expected: 1, readings: vec![Reading { lag: Some(0), ..working.clone() }] };
        assert_eq!(stalled(&decide(&caught_up, &[], 9_999, after)), (Status::False, "CaughtUp"), "idle is not stalled");
        // Never forwarded: counted from the worker's start.
        let fresh = Observation { expected: 1, readings: vec![Reading { last_forwarded: None, ..working }] };
        assert_eq!(stalled(&decide(&fresh, &[], 559, after)), (Status::False, "Forwarding"));
        assert_eq!(stalled(&decide(&fresh, &[], 560, after)), (Status::True, "NoProgress"));
    }

    #[test]
    fn a_worker_that_does_not_answer_stalls_the_bridge_after_the_threshold() {
        let after = Duration::from_secs(30);
        let nobody = Observation { expected: 1, readings: vec![] };
        let first = decide(&nobody, &[condition(CONNECTED, "True", 0)], 1_000, after);
        assert_eq!((first[0].status, first[0].reason), (Status::False, "WorkerUnreachable"));
        assert_eq!(stalled(&first), (Status::False, "WorkerUnreachable"), "just went away");
        let down = [condition(CONNECTED, "False", 1_000)];
        assert_eq!(stalled(&decide(&nobody, &down, 1_029, after)).0, Status::False);
        assert_eq!(stalled(&decide(&nobody, &down, 1_030, after)).0, Status::True);
        let paused = Observation { expected: 0, readings: vec![] };
        assert_eq!(stalled(&decide(&paused, &down, 9_999, after)), (Status::False, "Paused"));
    }

    #[test]
    fn workers_that_answer_are_active_or_standing_by() {
        let active = reading(1, 1);
        let standby = Reading { active: false, ..reading(0, 1) };
        let observation = Observation { expected: 3, readings: vec![standby.clone(), active, standby] };
        assert_eq!(observation.active_and_standby(), (1, 2));
        assert_eq!(Observation { expected: 3, readings: vec![] }.active_and_standby(), (0, 0), "none answers");
    }

    #[test]
    fn a_worker_that_lost_an_end_is_not_connected() {
        let down = Reading {
            sent: 0,
            redelivered: 0,
            lag: None,
            last_forwarded: None,
            started: 1,
            link_up: false,
            active: false,
        };
        let decided = decide(&Observation { expected: 1, readings: vec![down] }, &[], 2, Duration::from_mins(1));
        assert_eq!((decided[0].status, decided[0].reason), (Status::False, "Disconnected"));
    }
}
