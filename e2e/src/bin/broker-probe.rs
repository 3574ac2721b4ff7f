//! The operator's own broker handshake (`oms_operator::probe`), for the shell harness: broker.sh
//! waits on it until a test broker really answers clients.
//!
//!   broker-probe <kafka|nats|rabbitmq|mqtt|rocketmq|rocketmq-namesrv> <host> <port>
//!
//! Exits 0 when the broker answered the first exchange of its protocol, 1 (saying why) when not.
//! `rocketmq` is RocketMQ's proxy (gRPC); `rocketmq-namesrv` a name server, which passes once it
//! lists a master broker.

use anyhow::Context as _;
use oms_crds::access_point::Driver;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [driver, host, port] = args.as_slice() else {
        anyhow::bail!("usage: broker-probe <kafka|nats|rabbitmq|mqtt|rocketmq|rocketmq-namesrv> <host> <port>");
    };
    if driver == "rocketmq-namesrv" {
        let endpoint = oms_operator::admin::Endpoint {
            name_servers: vec![format!("{host}:{port}")],
            ..oms_operator::admin::Endpoint::default()
        };
        let masters = oms_operator::admin::rocketmq_masters(&endpoint).await?;
        println!("{masters:?}");
        return Ok(());
    }
    let driver = match driver.as_str() {
        "kafka" => Driver::Kafka,
        "nats" => Driver::Nats,
        "rabbitmq" => Driver::Rabbitmq,
        "mqtt" => Driver::Mqtt,
        "rocketmq" => Driver::Rocketmq,
        other => anyhow::bail!("unknown driver '{other}' (kafka, nats, rabbitmq, mqtt, rocketmq, rocketmq-namesrv)"),
    };
    let port: u16 = port.parse().context("<port> is a TCP port")?;
    oms_operator::probe::probe(driver, host, port, &oms_operator::probe::Login::default())
        .await
        .with_context(|| format!("{driver} at {host}:{port}"))
}
