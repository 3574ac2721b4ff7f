//! RocketMQ from the test's side: topics made, messages produced and read back by RocketMQ's own
//! Java client (`e2e/tools/rocketmq/RocketmqClient.java`), not by the bridge's.

use std::time::Duration;

use super::{Brokers, Kind, Seen};

/// Runs one command of the client against the test's RocketMQ; its standard output. The JVM
/// runs while the runtime's other thread goes on (the tests run on a multi-thread runtime).
pub fn client(brokers: &Brokers, args: &[&str]) -> anyhow::Result<String> {
    let broker = brokers.broker(Kind::Rocketmq);
    tokio::task::block_in_place(|| oms_e2e::rocketmq_client(broker, args))
}

/// Every message of `topic` from the start of its queues, until `expected` distinct payloads or
/// the deadline.
pub fn consume(brokers: &Brokers, topic: &str, expected: usize, deadline: Duration) -> anyhow::Result<Vec<Seen>> {
    let (expected, seconds) = (expected.to_string(), deadline.as_secs().to_string());
    let lines = client(brokers, &["consume", topic, &expected, &seconds])?;
    lines
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line)?;
            let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
            Ok(Seen {
                // RocketMQ's keys, as the bridge writes a message's key.
                key: text(&value["key"]),
                payload: text(&value["payload"]).unwrap_or_default(),
                headers: value["headers"]
                    .as_object()
                    .map(|h| h.iter().filter_map(|(k, v)| Some((k.clone(), text(v)?))).collect())
                    .unwrap_or_default(),
            })
        })
        .collect()
}
