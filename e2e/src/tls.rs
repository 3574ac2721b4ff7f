//! Certificates from a test CA of our own PKI, and brokers that take TLS only with them.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::broker::Broker;
use crate::gateway::TlsPaths;
use crate::process::{free_server_port, poll, repo_root, tool};

/// A certificate's usual lifetime in these tests.
pub const HOUR: Duration = Duration::from_hours(1);

/// Certificate files for one test, written like a mounted Secret (replaced by rename).
pub struct Certs {
    pub dir: PathBuf,
    pub ca: oms_pki::Ca,
}

impl Certs {
    pub fn new(tag: &str) -> anyhow::Result<Self> {
        let dir = repo_root().join(format!("e2e/.state/gateway/{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let ca = oms_pki::Ca::generate(&format!("{tag} test CA"), HOUR * 24)?;
        std::fs::write(dir.join("ca.crt"), ca.cert_pem())?;
        Ok(Self { dir, ca })
    }

    /// Issues `identity` (and `dns` names) valid from `from` for `valid_for`, into `<stem>.crt/.key`.
    pub fn issue(
        &self,
        stem: &str,
        identity: &str,
        dns: &[&str],
        from: time::OffsetDateTime,
        valid_for: Duration,
    ) -> anyhow::Result<TlsPaths> {
        let leaf = oms_pki::Leaf {
            common_name: stem.to_owned(),
            spiffe_id: Some(identity.to_owned()),
            dns_names: dns.iter().map(|d| (*d).to_owned()).collect(),
            not_before: from,
            valid_for,
        };
        let issued = self.ca.issue(&leaf)?;
        let paths = TlsPaths {
            ca: self.dir.join("ca.crt"),
            cert: self.dir.join(format!("{stem}.crt")),
            key: self.dir.join(format!("{stem}.key")),
        };
        for (path, text) in [(&paths.key, &issued.key_pem), (&paths.cert, &issued.cert_pem)] {
            let partial = path.with_extension("tmp");
            std::fs::write(&partial, text)?;
            std::fs::rename(&partial, path)?;
        }
        Ok(paths)
    }

    /// A directory `<stem>` with `server.crt` and `server.key` (`identity`, for `localhost`, valid
    /// for an hour) and the CA as `ca.crt`: what broker.sh reads for a broker's TLS listeners.
    pub fn server_dir(&self, stem: &str, identity: &str) -> anyhow::Result<PathBuf> {
        let server = self.issue(stem, identity, &["localhost"], Self::now(), HOUR)?;
        let dir = self.dir.join(stem);
        std::fs::create_dir_all(&dir)?;
        for (from, to) in [(&server.cert, "server.crt"), (&server.key, "server.key"), (&server.ca, "ca.crt")] {
            std::fs::copy(from, dir.join(to))?;
        }
        Ok(dir)
    }

    #[must_use]
    pub fn now() -> time::OffsetDateTime {
        time::OffsetDateTime::now_utc() - time::Duration::minutes(1)
    }
}

/// The brokers [`TlsBroker`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsBrokerKind {
    /// nats-server with JetStream.
    Nats,
    /// A Mosquitto listener.
    Mqtt,
}

/// How clients of a NATS [`TlsBroker`] log in.
#[derive(Clone, Debug)]
pub enum NatsAuth {
    /// A user and password.
    Password(String, String),
    /// An authorization token.
    Token(String),
    /// Credentials files of the operator and account in these server config lines
    /// ([`crate::NatsAccounts::server_config`]).
    Operator(String),
}

/// How a [`TlsBroker`] is set up.
#[derive(Clone, Debug)]
pub struct TlsBrokerSpec {
    pub kind: TlsBrokerKind,
    /// DNS names in the server certificate.
    pub dns: Vec<String>,
    /// When the server certificate starts to be valid, and for how long.
    pub valid_from: time::OffsetDateTime,
    pub valid_for: Duration,
    /// How every client must log in (NATS only).
    pub login: Option<NatsAuth>,
    /// Whether clients must present a certificate of the CA (NATS `verify`).
    pub verify_clients: bool,
}

impl TlsBrokerSpec {
    /// A certificate for `localhost`, valid now, no login, no client certificates.
    #[must_use]
    pub fn localhost(kind: TlsBrokerKind) -> Self {
        Self {
            kind,
            dns: vec!["localhost".into()],
            valid_from: Certs::now(),
            valid_for: HOUR,
            login: None,
            verify_clients: false,
        }
    }
}

/// A broker of the test's own that takes TLS only, with a server certificate from `certs`' CA;
/// killed on drop.
pub struct TlsBroker {
    child: Child,
    pub port: u16,
    /// The server certificate the broker reads at start.
    pub server: TlsPaths,
    program: PathBuf,
    conf: PathBuf,
}

impl TlsBroker {
    pub fn start(certs: &Certs, spec: &TlsBrokerSpec) -> anyhow::Result<Self> {
        let name = match spec.kind {
            TlsBrokerKind::Nats => "nats",
            TlsBrokerKind::Mqtt => "mqtt",
        };
        let port = free_server_port();
        let stem = format!("{name}-{port}");
        let dns: Vec<&str> = spec.dns.iter().map(String::as_str).collect();
        let server = certs.issue(&stem, &format!("spiffe://e2e.test/{name}"), &dns, spec.valid_from, spec.valid_for)?;
        let dir = certs.dir.join(&stem);
        std::fs::create_dir_all(&dir)?;
        let (dir_text, cert, key, ca) = (
            dir.display(),
            server.cert.display(),
            server.key.display(),
            certs.dir.join("ca.crt").display().to_string(),
        );
        let (program, conf) = match spec.kind {
            TlsBrokerKind::Nats => {
                let verify =
                    if spec.verify_clients { format!(", ca_file: '{ca}', verify: true") } else { String::new() };
                let login = match &spec.login {
                    Some(NatsAuth::Password(user, password)) => {
                        format!("authorization {{ user: '{user}', password: '{password}' }}\n")
                    }
                    Some(NatsAuth::Token(token)) => format!("authorization {{ token: '{token}' }}\n"),
                    Some(NatsAuth::Operator(config)) => config.clone(),
                    None => String::new(),
                };
                (
                    tool("nats-server"),
                    format!(
                        "listen: 127.0.0.1:{port}\njetstream {{ store_dir: '{dir_text}' }}\n\
                         tls {{ cert_file: '{cert}', key_file: '{key}'{verify} }}\n{login}"
                    ),
                )
            }
            TlsBrokerKind::Mqtt => {
                anyhow::ensure!(
                    spec.login.is_none() && !spec.verify_clients,
                    "no login or client certificates for Mosquitto here"
                );
                (
                    PathBuf::from("/usr/sbin/mosquitto"),
                    format!(
                        "user root\npersistence false\nlog_dest file {dir_text}/broker.log\nlistener {port} 127.0.0.1\n\
                         allow_anonymous true\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n"
                    ),
                )
            }
        };
        let path = dir.join("broker.conf");
        std::fs::write(&path, conf)?;
        let child = Self::spawn(&program, &path)?;
        let broker = Self { child, port, server, program, conf: path };
        broker.wait_listening()?;
        Ok(broker)
    }

    fn spawn(program: &std::path::Path, conf: &std::path::Path) -> anyhow::Result<Child> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(conf.with_file_name("stderr.log"))?;
        Ok(Command::new(program).arg("-c").arg(conf).stdout(Stdio::null()).stderr(log).spawn()?)
    }

    fn wait_listening(&self) -> anyhow::Result<()> {
        poll("the TLS-only broker listens", Duration::from_secs(20), || {
            Ok(std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok().then_some(()))
        })
    }

    /// Stops the broker (SIGKILL) and starts it again on the same port and storage with the
    /// server certificate now in [`TlsBroker::server`]'s files: every client reconnects.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(&self.program, &self.conf)?;
        self.wait_listening()
    }
}

impl TlsBroker {
    /// JetStream of this (NATS) broker over TLS, at `localhost`, trusting `ca` only; `options`
    /// bring the login and client certificate, if any.
    pub async fn jetstream(
        &self,
        ca: &std::path::Path,
        options: async_nats::ConnectOptions,
    ) -> anyhow::Result<async_nats::jetstream::Context> {
        let client = options
            .add_root_certificates(ca.to_owned())
            .require_tls(true)
            .connect(format!("localhost:{}", self.port))
            .await?;
        Ok(async_nats::jetstream::new(client))
    }

    /// An MQTT client of this (Mosquitto) broker over TLS that trusts `ca`.
    pub fn mqtt_client(
        &self,
        client_id: &str,
        ca: &std::path::Path,
        clean: bool,
    ) -> anyhow::Result<(rumqttc::AsyncClient, rumqttc::EventLoop)> {
        let files = oms_bridge_config::TlsFiles { ca_file: ca.to_owned(), identity: None, server_name: None };
        let config = oms_bridge::gateway::tls::broker_client_config(&files)?;
        let mut options = rumqttc::MqttOptions::new(client_id, "localhost", self.port);
        options.set_clean_session(clean);
        options.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(
            std::sync::Arc::new(config),
        )));
        Ok(rumqttc::AsyncClient::new(options, 64))
    }
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Kafka broker with a SASL_SSL listener on `localhost:<tls_port>` (server certificate from
/// `certs`' CA, the user `user` with PLAIN and SCRAM credentials for the mechanisms in `scram`
/// only), as managed Kafka services serve; its plaintext listener (`broker.port`) is for the
/// test's own clients.
pub struct SaslSslKafka {
    pub broker: Broker,
    pub tls_port: u16,
}

impl SaslSslKafka {
    pub fn start(certs: &Certs, name: &str, (user, password): (&str, &str), scram: &[&str]) -> anyhow::Result<Self> {
        let tls_port = free_server_port();
        let server =
            certs.issue(&format!("kafka-{tls_port}"), "spiffe://e2e.test/kafka", &["localhost"], Certs::now(), HOUR)?;
        let dir = certs.dir.join(format!("kafka-{tls_port}"));
        std::fs::create_dir_all(&dir)?;
        let pem = [std::fs::read_to_string(&server.key)?, std::fs::read_to_string(&server.cert)?].concat();
        std::fs::write(dir.join("server.pem"), pem)?;
        std::fs::copy(&server.ca, dir.join("ca.crt"))?;
        let env = [
            ("KAFKA_SASL_SSL_PORT", tls_port.to_string()),
            ("KAFKA_TLS_DIR", dir.display().to_string()),
            ("KAFKA_SASL_USER", user.to_owned()),
            ("KAFKA_SASL_PASSWORD", password.to_owned()),
            ("KAFKA_SCRAM_MECHANISMS", scram.join(" ")),
        ];
        Ok(Self { broker: Broker::up_with("kafka", name, &env)?, tls_port })
    }
}

/// A RocketMQ 5 (name server, broker and proxy) that takes TLS only on every port, with a
/// server certificate for `localhost` from `certs`' CA; the test's own client
/// ([`crate::rocketmq_client`]) speaks TLS to it too.
pub struct TlsRocketmq {
    pub broker: Broker,
}

impl TlsRocketmq {
    pub fn start(certs: &Certs, name: &str) -> anyhow::Result<Self> {
        let dir = certs.server_dir(&format!("rocketmq-{name}"), "spiffe://e2e.test/rocketmq")?;
        let env = [("ROCKETMQ_TLS_DIR", dir.display().to_string())];
        Ok(Self { broker: Broker::up_with("rocketmq", name, &env)? })
    }

    /// `localhost:<port>` of the proxy (gRPC), the name the certificate carries.
    #[must_use]
    pub fn proxy(&self) -> String {
        format!("localhost:{}", self.broker.port)
    }

    /// `localhost:<port>` of the name server.
    pub fn name_server(&self) -> anyhow::Result<String> {
        Ok(format!("localhost:{}", self.broker.port_of("NAMESRV_PORT")?))
    }
}

/// A RabbitMQ broker with an amqps listener on `127.0.0.1:<tls_port>` (server certificate for
/// `localhost` from `certs`' CA; no client certificates asked); its plaintext listener
/// (`broker.port`) is for the test's own clients.
pub struct AmqpsRabbit {
    pub broker: Broker,
    pub tls_port: u16,
}

impl AmqpsRabbit {
    pub fn start(certs: &Certs, name: &str) -> anyhow::Result<Self> {
        let tls_port = free_server_port();
        let dir = certs.server_dir(&format!("rabbitmq-{tls_port}"), "spiffe://e2e.test/rabbitmq")?;
        let env = [("RABBITMQ_SSL_PORT", tls_port.to_string()), ("RABBITMQ_TLS_DIR", dir.display().to_string())];
        Ok(Self { broker: Broker::up_with("rabbitmq", name, &env)?, tls_port })
    }
}
