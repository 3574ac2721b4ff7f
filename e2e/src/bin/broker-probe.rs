//! The operator's own broker handshake (`oms_operator::probe`), for the shell harness: broker.sh
//! waits on it until a test broker really answers clients.
//!
//!   broker-probe <kafka|nats|rabbitmq|mqtt> <host> <port>
//!
//! Exits 0 when the broker answered the first exchange of its protocol, 1 (saying why) when not.

use anyhow::Context as _;
use oms_crds::access_point::Driver;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [driver, host, port] = args.as_slice() else {
        anyhow::bail!("usage: broker-probe <kafka|nats|rabbitmq|mqtt> <host> <port>");
    };
    let driver = match driver.as_str() {
        "kafka" => Driver::Kafka,
        "nats" => Driver::Nats,
        "rabbitmq" => Driver::Rabbitmq,
        "mqtt" => Driver::Mqtt,
        other => anyhow::bail!("unknown driver '{other}' (kafka, nats, rabbitmq, mqtt)"),
    };
    let port: u16 = port.parse().context("<port> is a TCP port")?;
    oms_operator::probe::probe(driver, host, port, &oms_operator::probe::Login::default())
        .await
        .with_context(|| format!("{driver} at {host}:{port}"))
}
