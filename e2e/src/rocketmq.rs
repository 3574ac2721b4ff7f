//! RocketMQ from a test's side: topics made, messages produced and read back by RocketMQ's own
//! Java client (`e2e/tools/rocketmq/RocketmqClient.java`, compiled against the Maven classpath of
//! `tools.sh rocketmq`), not by anything of ours.

use std::process::Command;

use crate::{Broker, repo_root, run, tool};

/// `127.0.0.1:<port>` of a RocketMQ broker's name server.
pub fn rocketmq_name_server(broker: &Broker) -> anyhow::Result<String> {
    Ok(format!("127.0.0.1:{}", broker.port_of("NAMESRV_PORT")?))
}

/// Runs one command of the client (`topic`, `produce`, `consume`) against `broker`'s name server;
/// its standard output. Blocking: a JVM start costs a second or two. The commands that may run
/// twice (`topic` makes the same topic again, `consume` only reads) run up to three times: on a
/// machine loaded by every tier at once, a name server has been seen to take 5 s to answer.
pub fn rocketmq_client(broker: &Broker, args: &[&str]) -> anyhow::Result<String> {
    let runs = if matches!(args.first(), Some(&("topic" | "consume"))) { 3 } else { 1 };
    let mut attempt = 1;
    loop {
        match run_client(broker, args) {
            Err(error) if attempt < runs => {
                println!(
                    "RocketmqClient {args:?} failed, again: {}",
                    error.to_string().lines().next().unwrap_or_default()
                );
                attempt += 1;
            }
            outcome => return outcome,
        }
    }
}

fn run_client(broker: &Broker, args: &[&str]) -> anyhow::Result<String> {
    let home = repo_root().join("e2e/.state/brokers").join(&broker.name).join("home/e2e-client");
    std::fs::create_dir_all(&home)?;
    // A broker that takes TLS only is spoken to in TLS (the test's own client checks nothing).
    let tls = broker.recorded("TLS_DIR")?.is_some();
    let output = run(Command::new("java")
        .args(["-Xmx128m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"])
        .args(tls.then_some("-Dtls.enable=true"))
        .arg(format!("-Duser.home={}", home.display()))
        .arg("-cp")
        .arg(format!("{}:{}", tool("rocketmq-client").display(), tool("rocketmq-libs").join("libs/*").display()))
        .arg("RocketmqClient")
        .arg(args[0])
        .arg(rocketmq_name_server(broker)?)
        .args(&args[1..]))?;
    anyhow::ensure!(
        output.status.success(),
        "RocketmqClient {args:?}: {}",
        String::from_utf8_lossy(&output.stderr).lines().take(20).collect::<Vec<_>>().join("\n")
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
