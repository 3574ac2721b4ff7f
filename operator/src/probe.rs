//! Reachability of an external broker, proved with the first exchange of its real protocol (a
//! TCP connect alone would call a load balancer with no broker behind it "ready").

use std::time::Duration;

use oms_crds::access_point::Driver;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one server may take to answer the handshake.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProbeError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("not a {driver} broker: {detail}")]
    WrongProtocol { driver: Driver, detail: String },
    #[error("I/O error during the handshake: {0}")]
    Io(String),
}

/// Performs `driver`'s handshake against `host:port`.
pub async fn probe(driver: Driver, host: &str, port: u16) -> Result<(), ProbeError> {
    tokio::time::timeout(PROBE_TIMEOUT, handshake(driver, host, port))
        .await
        .map_err(|_| ProbeError::Timeout(PROBE_TIMEOUT))?
}

async fn handshake(driver: Driver, host: &str, port: u16) -> Result<(), ProbeError> {
    let mut stream = TcpStream::connect((host, port)).await.map_err(|e| ProbeError::Connect(e.to_string()))?;
    let io = |e: std::io::Error| ProbeError::Io(e.to_string());
    let wrong = |detail: String| ProbeError::WrongProtocol { driver, detail };
    match driver {
        Driver::Kafka => {
            stream.write_all(&kafka_api_versions_request(CORRELATION_ID)).await.map_err(io)?;
            let mut header = [0u8; 8];
            stream.read_exact(&mut header).await.map_err(io)?;
            check_kafka_response(header).map_err(wrong)
        }
        Driver::Nats => {
            let mut first = [0u8; 5];
            stream.read_exact(&mut first).await.map_err(io)?;
            (&first == b"INFO ").then_some(()).ok_or_else(|| wrong(format!("greeting {first:?}")))
        }
        Driver::Rabbitmq => {
            stream.write_all(b"AMQP\x00\x00\x09\x01").await.map_err(io)?;
            let mut frame = [0u8; 11];
            stream.read_exact(&mut frame).await.map_err(io)?;
            check_amqp_connection_start(&frame).map_err(wrong)
        }
        Driver::Mqtt => {
            stream.write_all(&MQTT_CONNECT).await.map_err(io)?;
            let mut connack = [0u8; 4];
            stream.read_exact(&mut connack).await.map_err(io)?;
            check_mqtt_connack(connack).map_err(wrong)?;
            // DISCONNECT, so that the broker does not log an unexpected close.
            let _ = stream.write_all(&[0xe0, 0x00]).await;
            Ok(())
        }
        Driver::Gateway => Err(wrong("gateways are probed with mTLS by the gateway issue's code".into())),
    }
}

const CORRELATION_ID: i32 = 0x4f4d_5301;

/// Kafka `ApiVersions` v0: the one request every Kafka version answers before authentication.
fn kafka_api_versions_request(correlation_id: i32) -> Vec<u8> {
    let client_id = b"oms-probe";
    let mut body = Vec::new();
    body.extend_from_slice(&18i16.to_be_bytes()); // api key: ApiVersions
    body.extend_from_slice(&0i16.to_be_bytes()); // api version 0
    body.extend_from_slice(&correlation_id.to_be_bytes());
    body.extend_from_slice(&u16::try_from(client_id.len()).unwrap_or(0).to_be_bytes());
    body.extend_from_slice(client_id);
    let mut frame = u32::try_from(body.len()).unwrap_or(0).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

/// The response starts with its length and our correlation id.
fn check_kafka_response(header: [u8; 8]) -> Result<(), String> {
    let correlation = i32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    if correlation == CORRELATION_ID { Ok(()) } else { Err(format!("unexpected correlation id {correlation:#x}")) }
}

/// A method frame (type 1) on channel 0 carrying Connection.Start (class 10, method 10).
fn check_amqp_connection_start(frame: &[u8; 11]) -> Result<(), String> {
    if frame[0] == 1 && frame[1..3] == [0, 0] && frame[7..11] == [0, 10, 0, 10] {
        Ok(())
    } else {
        Err(format!("expected Connection.Start, got frame {frame:?}"))
    }
}

/// MQTT 3.1.1 CONNECT, clean session, keep-alive 10 s, client id `oms-probe`.
const MQTT_CONNECT: [u8; 23] = [
    0x10, 21, // CONNECT, remaining length
    0, 4, b'M', b'Q', b'T', b'T', 4,    // protocol name and level 4 (3.1.1)
    0x02, // clean session
    0, 10, // keep-alive
    0, 9, b'o', b'm', b's', b'-', b'p', b'r', b'o', b'b', b'e',
];

/// CONNACK; return codes 4 and 5 (bad credentials, not authorized) still prove an MQTT broker.
fn check_mqtt_connack(connack: [u8; 4]) -> Result<(), String> {
    match connack {
        [0x20, 2, _, 0 | 4 | 5] => Ok(()),
        [0x20, 2, _, code] => Err(format!("broker refused the connection with return code {code}")),
        other => Err(format!("expected CONNACK, got {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_request_is_length_prefixed_api_versions_v0() {
        let frame = kafka_api_versions_request(7);
        assert_eq!(&frame[..4], &(u32::try_from(frame.len() - 4).expect("len")).to_be_bytes());
        assert_eq!(&frame[4..8], &[0, 18, 0, 0]);
        assert_eq!(&frame[8..12], &7i32.to_be_bytes());
    }

    #[test]
    fn mqtt_connect_remaining_length_matches_its_body() {
        assert_eq!(usize::from(MQTT_CONNECT[1]), MQTT_CONNECT.len() - 2);
        assert_eq!(check_mqtt_connack([0x20, 2, 0, 0]), Ok(()));
        assert!(check_mqtt_connack([0x20, 2, 0, 2]).is_err());
    }

    #[test]
    fn amqp_connection_start_is_recognised() {
        assert!(check_amqp_connection_start(&[1, 0, 0, 0, 0, 1, 0, 0, 10, 0, 10]).is_ok());
        assert!(check_amqp_connection_start(&[b'H', b'T', b'T', b'P', 0, 0, 0, 0, 0, 0, 0]).is_err());
    }

    #[tokio::test]
    async fn a_closed_port_is_reported_as_a_connect_error() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("addr").port()
        };
        assert!(matches!(probe(Driver::Nats, "127.0.0.1", port).await, Err(ProbeError::Connect(_))));
    }

    #[tokio::test]
    async fn a_server_speaking_another_protocol_is_not_a_nats_broker() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            if let Ok((mut socket, _)) = listener.accept().await {
                let _ = socket.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            }
        });
        assert!(matches!(probe(Driver::Nats, "127.0.0.1", port).await, Err(ProbeError::WrongProtocol { .. })));
    }
}
