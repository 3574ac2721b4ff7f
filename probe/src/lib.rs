//! Readiness probes that speak the broker's protocol, for the kubelet to run in a broker's pod.
//!
//! A TCP connect says the port is open, not that the broker serves: a Kafka broker accepts
//! connections before it has caught up with the metadata log, and a stopped or wedged process
//! still completes handshakes in the kernel. Each probe here logs in as a client does and asks
//! the broker something only a serving broker answers. Each checks its own pod only: cluster
//! health is the roll's business, or every pod would leave its Services at once.

pub mod amqp;
pub mod http2;
pub mod kafka;
pub mod mqtt;
pub mod net;
pub mod rocketmq;
pub mod scram;

use std::net::SocketAddr;
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::rand::SecureRandom as _;

use crate::net::{Connection, Tls};
use crate::scram::{Exchange, Hash};

/// Largest answer read: Metadata of a few hundred brokers fits.
const ANSWER_LIMIT: usize = 1 << 20;

/// The broker in this pod, as its own clients reach it, and the login the probe uses. No `Debug`:
/// it holds a password.
pub struct LoginTarget<'a> {
    pub addr: SocketAddr,
    pub tls: Option<Tls>,
    pub user: &'a str,
    pub password: &'a str,
}

/// Logs in with SCRAM-SHA-512 and checks that the broker lists itself as serving, as `me`: its
/// node id at its advertised address.
pub fn probe_kafka(target: &LoginTarget<'_>, me: &kafka::Broker, deadline: Instant) -> Result<(), String> {
    let mut connection = KafkaConnection::open(target.addr, target.tls.as_ref(), deadline)?;
    connection.log_in(target.user, target.password)?;
    let metadata = connection.call(kafka::metadata)?;
    let brokers = kafka::metadata_brokers(&metadata).map_err(|e| e.to_string())?;
    kafka::check_listed(&brokers, me)
}

/// A connection to a Kafka broker that numbers its requests and checks that each answer is to
/// the request just sent.
pub struct KafkaConnection {
    connection: Connection,
    correlation_id: i32,
}

impl KafkaConnection {
    pub fn open(addr: SocketAddr, tls: Option<&Tls>, deadline: Instant) -> Result<Self, String> {
        Ok(KafkaConnection { connection: Connection::open(addr, tls, deadline)?, correlation_id: 0 })
    }

    /// Sends the request `request` makes for the next correlation id; the answer after its id.
    pub fn call(&mut self, request: impl Fn(i32) -> Vec<u8>) -> Result<Vec<u8>, String> {
        self.correlation_id += 1;
        let answer = self.connection.exchange(&request(self.correlation_id), ANSWER_LIMIT)?;
        let (echoed, body) = kafka::split_header(&answer).map_err(|e| e.to_string())?;
        if echoed != self.correlation_id {
            return Err(format!("answer to request {echoed}, not {}", self.correlation_id));
        }
        Ok(body.to_vec())
    }

    /// Logs in as `user` with SCRAM-SHA-512, checking the server's proof too.
    pub fn log_in(&mut self, user: &str, password: &str) -> Result<(), String> {
        let handshake = self.call(|id| kafka::sasl_handshake(id, "SCRAM-SHA-512"))?;
        kafka::sasl_handshake_response(&handshake).map_err(|e| e.to_string())?.map_err(|offered| {
            format!("SCRAM-SHA-512 not offered on this listener (offered: {})", offered.join(", "))
        })?;
        let exchange = Exchange::new(Hash::Sha512, user, password, &nonce()?);
        let login = |body: &[u8]| {
            kafka::sasl_authenticate_response(body)
                .map_err(|e| e.to_string())?
                .map_err(|refused| format!("login as {user:?} refused: {refused}"))
        };
        let client_first = exchange.client_first();
        let server_first = login(&self.call(|id| kafka::sasl_authenticate(id, client_first.as_bytes()))?)?;
        let client_final = exchange.client_final(&server_first).map_err(|e| format!("SCRAM: {e}"))?;
        let server_final = login(&self.call(|id| kafka::sasl_authenticate(id, client_final.message.as_bytes()))?)?;
        client_final.check_server_final(&server_final).map_err(|e| format!("SCRAM: {e}"))
    }
}

/// 24 random bytes in base64: printable and without commas, as SCRAM wants.
fn nonce() -> Result<String, String> {
    let mut bytes = [0u8; 24];
    ring::rand::SystemRandom::new().fill(&mut bytes).map_err(|_| "no randomness for the SCRAM nonce".to_owned())?;
    Ok(BASE64.encode(bytes))
}

/// Logs in to RabbitMQ (AMQP 0-9-1, PLAIN) and opens `vhost`, then closes as a client does.
pub fn probe_amqp(target: &LoginTarget<'_>, vhost: &str, deadline: Instant) -> Result<(), String> {
    let mut connection = Connection::open(target.addr, target.tls.as_ref(), deadline)?;
    connection.send(amqp::PROTOCOL_HEADER)?;
    amqp_method(&mut connection, amqp::START)?;
    connection.send(&amqp::start_ok(target.user, target.password))?;
    // A refused login ends the connection (RabbitMQ closes it, with or without a Close).
    let tune =
        amqp_method(&mut connection, amqp::TUNE).map_err(|e| format!("login as {:?} refused: {e}", target.user))?;
    connection.send(&amqp::tune_ok(&tune))?;
    connection.send(&amqp::open(vhost))?;
    amqp_method(&mut connection, amqp::OPEN_OK).map_err(|e| format!("virtual host {vhost:?} not opened: {e}"))?;
    connection.send(&amqp::close())?;
    amqp_method(&mut connection, amqp::CLOSE_OK).map(drop)
}

/// Logs in to Mosquitto (MQTT 3.1.1, a client id the broker assigns) and says goodbye.
pub fn probe_mqtt(target: &LoginTarget<'_>, deadline: Instant) -> Result<(), String> {
    let mut connection = Connection::open(target.addr, target.tls.as_ref(), deadline)?;
    connection.send(&mqtt::connect("", Some((target.user, target.password))))?;
    match mqtt::connack_code(connection.read_array()?)? {
        0 => connection.send(&mqtt::DISCONNECT),
        code @ (4 | 5) => Err(format!("login as {:?} refused: CONNACK return code {code}", target.user)),
        code => Err(format!("the broker refused the connection: CONNACK return code {code}")),
    }
}

/// RocketMQ in this pod as its readiness probe sees it: the proxy in the broker's process, the
/// name server beside it, and the name and address this pod's broker registers.
pub struct RocketmqPod<'a> {
    pub proxy: SocketAddr,
    pub name_server: SocketAddr,
    pub tls: Option<Tls>,
    pub broker_name: &'a str,
    pub broker_address: &'a str,
}

/// Ready when the proxy answers HTTP/2 as a gRPC server does (with ALPN `h2` under TLS), and
/// the name server lists this pod's broker as its group's master at its address: both processes
/// serve, and clients routed to the broker find it.
pub fn probe_rocketmq(pod: &RocketmqPod<'_>, deadline: Instant) -> Result<(), String> {
    let grpc_tls = pod.tls.as_ref().map(|tls| tls.offering(b"h2"));
    let mut proxy = Connection::open(pod.proxy, grpc_tls.as_ref(), deadline).map_err(|e| format!("proxy: {e}"))?;
    proxy.send(http2::CLIENT_PREFACE).map_err(|e| format!("proxy: {e}"))?;
    http2::check_server_settings(proxy.read_array().map_err(|e| format!("proxy: {e}"))?)
        .map_err(|e| format!("proxy: {e}"))?;
    let mut name_server = rocketmq::RemotingConnection::open(pod.name_server, pod.tls.as_ref(), None, deadline)
        .map_err(|e| format!("name server: {e}"))?;
    let answer = name_server.call(rocketmq::code::GET_BROKER_CLUSTER_INFO, &[], &[])?;
    if answer.code != rocketmq::answer::SUCCESS {
        return Err(format!("name server: cluster info refused, {}", answer.describe()));
    }
    let masters = rocketmq::masters_of(&answer.body)?;
    match masters.get(pod.broker_name) {
        Some(address) if address == pod.broker_address => Ok(()),
        Some(address) => Err(format!(
            "the name server lists broker {} at {address}, not at {} (brokerIP1)",
            pod.broker_name, pod.broker_address
        )),
        None => Err(format!("the name server does not list broker {} as a master (yet)", pod.broker_name)),
    }
}

/// The next Connection method from the broker: `expected`'s arguments, or why not.
fn amqp_method(connection: &mut Connection, expected: u16) -> Result<Vec<u8>, String> {
    let size = amqp::method_frame_size(connection.read_array()?)?;
    let frame = connection.read(size + 1, ANSWER_LIMIT)?;
    let (method, arguments) = amqp::connection_method(&frame)?;
    if method == expected {
        Ok(arguments.to_vec())
    } else if method == amqp::CLOSE {
        Err(format!("the broker closed the connection: {}", amqp::close_reason(arguments)))
    } else {
        Err(format!("expected Connection method {expected}, got {method}"))
    }
}
