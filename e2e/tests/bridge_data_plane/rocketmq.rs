//! RocketMQ from the test's side: topics made, messages produced and read back by RocketMQ's own
//! Java client (`e2e/tools/rocketmq/RocketmqClient.java`), not by the bridge's.

use std::process::Command;
use std::time::Duration;

use oms_e2e::{Broker, repo_root};

use super::{Brokers, Kind, Seen};

/// `127.0.0.1:<port>` of the broker's name server.
pub fn name_server(broker: &Broker) -> anyhow::Result<String> {
    Ok(format!("127.0.0.1:{}", broker.port_of("NAMESRV_PORT")?))
}

/// Runs one command of the client against the test's RocketMQ; its standard output.
pub async fn client(brokers: &Brokers, args: &[&str]) -> anyhow::Result<String> {
    let broker = brokers.broker(Kind::Rocketmq);
    let libs = repo_root().join(".bin/rocketmq-libs/libs/*");
    let home = repo_root().join("e2e/.state/brokers").join(&broker.name).join("home/e2e-client");
    std::fs::create_dir_all(&home)?;
    let mut command = Command::new("java");
    command
        .args(["-Xmx128m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"])
        .arg(format!("-Duser.home={}", home.display()))
        .arg("-cp")
        .arg(libs)
        .arg(repo_root().join("e2e/tools/rocketmq/RocketmqClient.java"))
        .arg(args[0])
        .arg(&brokers.name_server)
        .args(&args[1..]);
    let output = tokio::task::spawn_blocking(move || oms_e2e::run(&mut command)).await??;
    anyhow::ensure!(
        output.status.success(),
        "RocketmqClient {args:?}: {}",
        String::from_utf8_lossy(&output.stderr).lines().take(20).collect::<Vec<_>>().join("\n")
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Every message of `topic` from the start of its queues, until `expected` distinct payloads or
/// the deadline.
pub async fn consume(brokers: &Brokers, topic: &str, expected: usize, deadline: Duration) -> anyhow::Result<Vec<Seen>> {
    let (expected, seconds) = (expected.to_string(), deadline.as_secs().to_string());
    let lines = client(brokers, &["consume", topic, &expected, &seconds]).await?;
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
