//! The operator's own broker handshake (`oms_operator::probe`), for the shell harness: broker.sh
//! waits on it until a test broker really answers clients.
//!
//!   broker-probe <kafka|nats|rabbitmq|mqtt|rocketmq|rocketmq-namesrv> <host> <port>
//!
//! Exits 0 when the broker answered the first exchange of its protocol, 1 (saying why) when not.
//! With `BROKER_PROBE_CA` (a CA file), over TLS, the broker's certificate checked against it and
//! the name in `BROKER_PROBE_SERVER_NAME` (else `<host>`).
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
    let tls = match std::env::var_os("BROKER_PROBE_CA") {
        Some(ca) => Some(oms_operator::broker_tls::BrokerTls {
            ca_pem: std::fs::read_to_string(&ca).with_context(|| format!("BROKER_PROBE_CA {}", ca.display()))?,
            client: None,
            server_name: std::env::var("BROKER_PROBE_SERVER_NAME").ok(),
        }),
        None => None,
    };
    if driver == "rocketmq-namesrv" {
        let endpoint = oms_operator::admin::Endpoint {
            name_servers: vec![format!("{host}:{port}")],
            tls,
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
    let login = oms_operator::probe::Login { tls: tls.as_ref(), ..oms_operator::probe::Login::default() };
    oms_operator::probe::probe(driver, host, port, &login).await.with_context(|| format!("{driver} at {host}:{port}"))
}
