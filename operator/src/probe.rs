//! Reachability of an external broker, proved with the first exchange of its real protocol (a
//! TCP connect alone would call a load balancer with no broker behind it "ready"): over TLS when
//! the access point says so, and with its login where the probe speaks it (NATS, MQTT), so that a
//! wrong CA, an expired certificate, a wrong name or a wrong password is named as such.

use std::time::Duration;

use base64::Engine as _;
use oms_crds::access_point::{Driver, SaslMechanism};
use rdkafka::consumer::Consumer as _;
use rustls::{AlertDescription, CertificateError};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::admin::NatsLogin;
use crate::binding::Credentials;
use crate::broker_tls::BrokerTls;

/// How long one server may take to answer the handshake.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// How the probe logs in: the access point's credentials and TLS settings, where it has them.
#[derive(Clone, Copy, Debug, Default)]
pub struct Login<'a> {
    pub credentials: Option<&'a Credentials>,
    /// NATS: a token or credentials file instead of a user and password.
    pub nats_login: Option<&'a NatsLogin>,
    pub tls: Option<&'a BrokerTls>,
    /// Kafka: the SASL mechanism of the credentials.
    pub sasl_mechanism: Option<SaslMechanism>,
}

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
    #[error("TLS: the broker's certificate is signed by no CA of spec.external.tls ({0})")]
    TlsUnknownAuthority(String),
    #[error("TLS: the broker's certificate has expired or is not valid yet ({0})")]
    TlsExpired(String),
    #[error(
        "TLS: the broker's certificate is not valid for the name checked ({0}); set spec.external.tls.serverName to a name it carries"
    )]
    TlsNameMismatch(String),
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    #[error("the broker refused the login: {0}; check spec.external.credentialsSecretRef")]
    LoginRefused(String),
    #[error("the broker refused the connection: {0}")]
    Refused(String),
}

impl ProbeError {
    /// The reason of a Ready=False condition that this failure explains.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            ProbeError::TlsUnknownAuthority(_) => "TlsUnknownAuthority",
            ProbeError::TlsExpired(_) => "TlsCertificateExpired",
            ProbeError::TlsNameMismatch(_) => "TlsNameMismatch",
            ProbeError::Tls(_) => "TlsHandshakeFailed",
            ProbeError::LoginRefused(_) => "LoginRefused",
            ProbeError::Connect(_)
            | ProbeError::Timeout(_)
            | ProbeError::WrongProtocol { .. }
            | ProbeError::Io(_)
            | ProbeError::Refused(_) => "Unreachable",
        }
    }
}

/// Performs `driver`'s handshake against `host:port`, as `login` says; then, where the probe
/// does not speak the login itself (Kafka's SASL, RabbitMQ's), the login through the operator's
/// own clients, with a deadline of its own.
pub async fn probe(driver: Driver, host: &str, port: u16, login: &Login<'_>) -> Result<(), ProbeError> {
    let timed_out = |_| ProbeError::Timeout(PROBE_TIMEOUT);
    tokio::time::timeout(PROBE_TIMEOUT, handshake(driver, host, port, login)).await.map_err(timed_out)??;
    match (driver, login.credentials) {
        (Driver::Kafka, Some(_)) => {
            tokio::time::timeout(PROBE_TIMEOUT, kafka_login(host, port, login)).await.map_err(timed_out)?
        }
        (Driver::Rabbitmq, Some(_)) => {
            tokio::time::timeout(PROBE_TIMEOUT, rabbitmq_login(host, port, login)).await.map_err(timed_out)?
        }
        _ => Ok(()),
    }
}

/// A connection, plaintext or TLS.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// An I/O error of the exchange; one that TLS raised is named by its cause (with TLS 1.3 a
/// refused client certificate shows only at the first read).
impl From<std::io::Error> for ProbeError {
    fn from(error: std::io::Error) -> Self {
        if error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()).is_some() {
            tls_failure(&error)
        } else {
            ProbeError::Io(error.to_string())
        }
    }
}

async fn handshake(driver: Driver, host: &str, port: u16, login: &Login<'_>) -> Result<(), ProbeError> {
    let tcp = TcpStream::connect((host, port)).await.map_err(|e| ProbeError::Connect(e.to_string()))?;
    let wrong = |detail: String| ProbeError::WrongProtocol { driver, detail };
    // NATS greets in plaintext and turns to TLS after its INFO; the others speak TLS at once.
    if driver == Driver::Nats {
        return nats(tcp, host, login).await;
    }
    let mut stream: Box<dyn Stream> = match login.tls {
        Some(tls) => Box::new(upgrade(tcp, host, tls, driver).await?),
        None => Box::new(tcp),
    };
    match driver {
        Driver::Kafka => {
            stream.write_all(&oms_probe::kafka::api_versions(CORRELATION_ID)).await?;
            let mut header = [0u8; 8];
            stream.read_exact(&mut header).await?;
            check_kafka_response(header).map_err(wrong)
        }
        Driver::Rabbitmq => {
            stream.write_all(oms_probe::amqp::PROTOCOL_HEADER).await?;
            let mut frame = [0u8; 11];
            stream.read_exact(&mut frame).await?;
            check_amqp_connection_start(&frame).map_err(wrong)
        }
        Driver::Mqtt => {
            let login_pair = login.credentials.map(|c| (c.username.as_str(), c.password.as_str()));
            stream.write_all(&oms_probe::mqtt::connect("oms-probe", login_pair)).await?;
            let mut connack = [0u8; 4];
            stream.read_exact(&mut connack).await?;
            check_mqtt_connack(connack)?;
            // DISCONNECT, so that the broker does not log an unexpected close.
            let _ = stream.write_all(&[0xe0, 0x00]).await;
            Ok(())
        }
        // RocketMQ's proxy serves gRPC: HTTP/2 answers the client's preface with its SETTINGS.
        Driver::Rocketmq => {
            stream.write_all(oms_probe::http2::CLIENT_PREFACE).await?;
            let mut frame = [0u8; 9];
            stream.read_exact(&mut frame).await?;
            oms_probe::http2::check_server_settings(frame).map_err(wrong)
        }
        Driver::Nats | Driver::Gateway => {
            Err(wrong("gateways are probed with mTLS by the bridges that use them".into()))
        }
    }
}

/// Where and as whom the probe logs in, as the admin clients take it.
fn login_endpoint(host: &str, port: u16, login: &Login<'_>) -> crate::admin::Endpoint {
    crate::admin::Endpoint {
        servers: vec![format!("{host}:{port}")],
        username: login.credentials.map(|c| c.username.clone()),
        password: login.credentials.map(|c| c.password.clone()),
        sasl_mechanism: login.sasl_mechanism,
        tls: login.tls.cloned(),
        nats_login: login.nats_login.cloned(),
        ..crate::admin::Endpoint::default()
    }
}

/// RabbitMQ's login (inside TLS where set), by the operator's own admin client: a refusal is
/// the broker's ACCESS_REFUSED.
async fn rabbitmq_login(host: &str, port: u16, login: &Login<'_>) -> Result<(), ProbeError> {
    match crate::admin::Admin::connect(Driver::Rabbitmq, &login_endpoint(host, port, login)).await {
        Ok(_) => Ok(()),
        Err(error) if error.to_string().contains("ACCESS_REFUSED") => Err(ProbeError::LoginRefused(error.to_string())),
        Err(error) => Err(ProbeError::Io(format!("login: {error}"))),
    }
}

/// Kafka's login (SASL, inside TLS where set), tried by librdkafka as the operator's admin
/// client and the workers log in: a metadata request, and the authentication error its error
/// callback reports if the broker refused.
async fn kafka_login(host: &str, port: u16, login: &Login<'_>) -> Result<(), ProbeError> {
    let endpoint = login_endpoint(host, port, login);
    let mut config = crate::admin::kafka_client_config(&endpoint);
    config.set("client.id", "oms-probe");
    tokio::task::spawn_blocking(move || {
        let consumer: rdkafka::consumer::BaseConsumer<LoginErrors> = config
            .create_with_context(LoginErrors::default())
            .map_err(|e| ProbeError::Io(format!("cannot make a Kafka client: {e}")))?;
        let result = consumer.fetch_metadata(None, PROBE_TIMEOUT.saturating_sub(Duration::from_secs(2)));
        let refused = || consumer.context().refused.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        if result.is_err() {
            // Error callbacks are served by polling, one event at a time: a transport error may
            // come before the authentication error.
            let deadline = std::time::Instant::now() + Duration::from_secs(1);
            while refused().is_none() && std::time::Instant::now() < deadline {
                let _ = consumer.poll(Duration::from_millis(100));
            }
        }
        let refused = refused();
        match (result, refused) {
            (_, Some(reason)) => Err(ProbeError::LoginRefused(reason)),
            (Ok(_), None) => Ok(()),
            (Err(error), None) => Err(ProbeError::Io(format!("metadata request after the login: {error}"))),
        }
    })
    .await
    .map_err(|e| ProbeError::Io(e.to_string()))?
}

/// Keeps the authentication error librdkafka reports through its error callback.
#[derive(Default)]
struct LoginErrors {
    refused: std::sync::Mutex<Option<String>>,
}

impl rdkafka::ClientContext for LoginErrors {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::Authentication) {
            *self.refused.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(reason.to_owned());
        }
    }
}

impl rdkafka::consumer::ConsumerContext for LoginErrors {}

/// The TLS handshake over `tcp`, its failure named by cause; towards RocketMQ's proxy with ALPN
/// `h2`, which its gRPC server asks for.
async fn upgrade(
    tcp: TcpStream,
    host: &str,
    tls: &BrokerTls,
    driver: Driver,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ProbeError> {
    let mut config = crate::broker_tls::client_config(tls).map_err(ProbeError::Tls)?;
    if driver == Driver::Rocketmq {
        config.alpn_protocols = vec![b"h2".to_vec()];
    }
    let name = rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|e| ProbeError::Tls(e.to_string()))?;
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp).await.map_err(|e| tls_failure(&e))
}

/// What a failed handshake says about its cause.
fn tls_failure(error: &std::io::Error) -> ProbeError {
    let detail = error.to_string();
    match error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(cause)) => match cause {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => ProbeError::TlsUnknownAuthority(detail),
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => ProbeError::TlsExpired(detail),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                ProbeError::TlsNameMismatch(detail)
            }
            _ => ProbeError::Tls(detail),
        },
        Some(rustls::Error::AlertReceived(
            AlertDescription::CertificateRequired | AlertDescription::BadCertificate | AlertDescription::UnknownCA,
        )) => ProbeError::Tls(format!(
            "{detail}: the broker refused our client certificate (spec.external.tls.clientCertificateSecretRef)"
        )),
        _ => ProbeError::Tls(detail),
    }
}

/// NATS: read the server's INFO, turn to TLS if asked, then CONNECT (with the login) and PING;
/// a PONG proves the login, `-ERR` refuses it.
async fn nats(tcp: TcpStream, host: &str, login: &Login<'_>) -> Result<(), ProbeError> {
    let wrong = |detail: String| ProbeError::WrongProtocol { driver: Driver::Nats, detail };
    let mut plain = BufReader::new(tcp);
    let info = read_line(&mut plain).await?;
    if !info.starts_with("INFO ") {
        return Err(wrong(format!("greeting {:?}", info.chars().take(16).collect::<String>())));
    }
    let server_wants_tls = info.contains("\"tls_required\":true");
    let mut stream: BufReader<Box<dyn Stream>> = match login.tls {
        Some(tls) => BufReader::new(Box::new(upgrade(plain.into_inner(), host, tls, Driver::Nats).await?)),
        None if server_wants_tls => {
            return Err(ProbeError::Tls("the broker requires TLS: set spec.external.tls".into()));
        }
        None => BufReader::new(Box::new(plain.into_inner())),
    };
    // A credentials file signs the nonce of the server's INFO.
    let nonce = serde_json::from_str::<serde_json::Value>(&info["INFO ".len()..])
        .ok()
        .and_then(|info| info["nonce"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let connect = nats_connect(login, &nonce).map_err(ProbeError::LoginRefused)?;
    stream.get_mut().write_all(connect.as_bytes()).await?;
    // Asynchronous INFOs and PINGs may come first.
    for _ in 0..4 {
        let line = read_line(&mut stream).await?;
        match line.as_str() {
            "PONG" => return Ok(()),
            error
                if error.starts_with("-ERR")
                    && (error.contains("Authorization") || error.contains("Authentication")) =>
            {
                return Err(ProbeError::LoginRefused(error.to_owned()));
            }
            error if error.starts_with("-ERR") => {
                return Err(ProbeError::Refused(error.to_owned()));
            }
            _ => {}
        }
    }
    Err(wrong("no PONG after CONNECT".into()))
}

async fn read_line<R: AsyncBufReadExt + Unpin>(reader: &mut R) -> Result<String, ProbeError> {
    let mut line = String::new();
    // INFO lines are a few KiB at most; a server sending more is not NATS.
    let mut limited = (&mut *reader).take(64 * 1024);
    limited.read_line(&mut line).await?;
    Ok(line.trim_end().to_owned())
}

/// CONNECT (quiet, with the login there is: a user and password, a token, or a credentials
/// file's JWT and its seed's signature of `nonce`) and a PING; an unusable credentials file is
/// the error.
fn nats_connect(login: &Login<'_>, nonce: &str) -> Result<String, String> {
    let tls = login.tls.is_some();
    let mut fields = serde_json::json!({"verbose": false, "pedantic": false, "tls_required": tls, "name": "oms-probe"});
    if let Some(credentials) = login.credentials {
        fields["user"] = credentials.username.clone().into();
        fields["pass"] = credentials.password.clone().into();
    }
    match login.nats_login {
        Some(NatsLogin::Token(token)) => fields["auth_token"] = token.clone().into(),
        Some(NatsLogin::Creds(creds)) => {
            let (jwt, seed) = creds_parts(creds).ok_or("the credentials file holds no user JWT and nkey seed")?;
            let key = nkeys::KeyPair::from_seed(&seed).map_err(|e| format!("the credentials file's seed: {e}"))?;
            let signature = key.sign(nonce.as_bytes()).map_err(|e| format!("signing the nonce: {e}"))?;
            fields["jwt"] = jwt.into();
            fields["sig"] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signature).into();
        }
        None => {}
    }
    Ok(format!("CONNECT {fields}\r\nPING\r\n"))
}

/// The user JWT and nkey seed of a NATS credentials file: each the first line inside its
/// `-----BEGIN ...-----` / `------END ...------` markers.
fn creds_parts(creds: &str) -> Option<(String, String)> {
    let after = |marker: &str| {
        let mut lines = creds.lines().map(str::trim);
        lines.find(|l| l.starts_with("---") && l.contains(marker))?;
        lines.find(|l| !l.is_empty()).filter(|l| !l.starts_with("---")).map(str::to_owned)
    };
    Some((after("NATS USER JWT")?, after("USER NKEY SEED")?))
}

const CORRELATION_ID: i32 = 0x4f4d_5301;

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

/// CONNACK: 0 accepts; 4 (bad user name or password) and 5 (not authorized) refuse the login.
fn check_mqtt_connack(connack: [u8; 4]) -> Result<(), ProbeError> {
    match oms_probe::mqtt::connack_code(connack) {
        Ok(0) => Ok(()),
        Ok(code @ (4 | 5)) => Err(ProbeError::LoginRefused(format!("CONNACK return code {code}"))),
        Ok(code) => Err(ProbeError::WrongProtocol {
            driver: Driver::Mqtt,
            detail: format!("broker refused the connection with return code {code}"),
        }),
        Err(detail) => Err(ProbeError::WrongProtocol { driver: Driver::Mqtt, detail }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_connack_codes_name_a_refused_login_apart() {
        assert_eq!(check_mqtt_connack([0x20, 2, 0, 0]), Ok(()));
        assert!(matches!(check_mqtt_connack([0x20, 2, 0, 5]), Err(ProbeError::LoginRefused(_))));
        assert!(matches!(check_mqtt_connack([0x20, 2, 0, 2]), Err(ProbeError::WrongProtocol { .. })));
    }

    #[test]
    fn nats_connect_carries_the_login_only_when_there_is_one() {
        let anonymous = nats_connect(&Login::default(), "n").expect("connect");
        assert!(anonymous.starts_with("CONNECT {") && anonymous.ends_with("}\r\nPING\r\n"), "{anonymous}");
        assert!(!anonymous.contains("\"user\""), "{anonymous}");
        let credentials = Credentials { username: "a\"b".into(), password: "p".into() };
        let tls = BrokerTls { ca_pem: "CA".into(), client: None, server_name: None };
        let login = Login { credentials: Some(&credentials), tls: Some(&tls), ..Login::default() };
        let with_login = nats_connect(&login, "n").expect("connect");
        assert!(
            with_login.contains(r#""user":"a\"b""#) && with_login.contains(r#""tls_required":true"#),
            "{with_login}"
        );
        let token = NatsLogin::Token("t0k".into());
        let with_token = nats_connect(&Login { nats_login: Some(&token), ..Login::default() }, "n").expect("connect");
        assert!(with_token.contains(r#""auth_token":"t0k""#), "{with_token}");
    }

    #[test]
    fn a_credentials_file_signs_the_servers_nonce_with_its_seed() {
        let user = nkeys::KeyPair::new_user();
        let creds = format!(
            "-----BEGIN NATS USER JWT-----\nJWT.OF.USER\n------END NATS USER JWT------\n\n* IMPORTANT *\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
            user.seed().expect("seed")
        );
        let login = NatsLogin::Creds(creds);
        let connect = nats_connect(&Login { nats_login: Some(&login), ..Login::default() }, "n0nce").expect("connect");
        let fields: serde_json::Value =
            serde_json::from_str(connect.trim_start_matches("CONNECT ").trim_end_matches("\r\nPING\r\n"))
                .expect("json");
        assert_eq!(fields["jwt"], "JWT.OF.USER");
        let signature =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(fields["sig"].as_str().expect("sig")).expect("b64");
        assert!(user.verify(b"n0nce", &signature).is_ok(), "signed by the seed, over the nonce");
        let broken = NatsLogin::Creds("no markers".into());
        assert!(nats_connect(&Login { nats_login: Some(&broken), ..Login::default() }, "n").is_err());
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
        assert!(matches!(probe(Driver::Nats, "127.0.0.1", port, &Login::default()).await, Err(ProbeError::Connect(_))));
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
        assert!(matches!(
            probe(Driver::Nats, "127.0.0.1", port, &Login::default()).await,
            Err(ProbeError::WrongProtocol { .. })
        ));
    }
}
