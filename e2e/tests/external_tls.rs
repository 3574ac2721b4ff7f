//! External access points over TLS against real TLS-only brokers: the probe does the handshake
//! and the login and names the cause of a failure; the operator provisions streams over TLS; a
//! Bridge's worker, run with exactly the files its pod would mount, forwards MQTT over TLS into
//! NATS over mutual TLS with a token, Kafka over SASL_SSL into NATS with a credentials file,
//! RabbitMQ over amqps into Kafka, and RocketMQ over TLS into NATS and back.

use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use oms_e2e::{
    AmqpsRabbit, Certs, Cluster, NatsAccounts, NatsAuth, Operator, SaslSslKafka, Scenario, TlsBroker, TlsBrokerKind,
    TlsBrokerSpec, TlsRocketmq, condition,
};
use serde_json::Value;

/// A NATS server that takes TLS only, a Secret with its CA (`nats-ca`), and an operator that
/// probes every second.
struct TlsNats {
    s: Scenario,
    certs: Certs,
    nats: TlsBroker,
}

impl TlsNats {
    fn start(prefix: &str, spec: impl FnOnce(&mut TlsBrokerSpec)) -> anyhow::Result<Self> {
        let cluster = Cluster::up("cloud-a")?;
        cluster.install_crds()?;
        let ns = cluster.fresh_namespace(prefix)?;
        let name = ns.name.clone();
        // The namespace holds the PKI too: Bridges get their certificates from it.
        let args = [
            "--namespace",
            &name,
            "--leader-election=false",
            "--probe-interval-seconds",
            "1",
            "--pki-namespace",
            &name,
        ];
        let operator = Operator::start(&cluster, &args)?;
        let s = Scenario { cluster, ns, operator };
        let certs = Certs::new(prefix)?;
        let mut nats_spec = TlsBrokerSpec::localhost(TlsBrokerKind::Nats);
        spec(&mut nats_spec);
        let nats = TlsBroker::start(&certs, &nats_spec)?;
        secret_from_files(&s, "nats-ca", &[("ca.crt", &certs.dir.join("ca.crt"))])?;
        Ok(Self { s, certs, nats })
    }

    /// Declares access point `name` at `host` with `tls` (a YAML flow mapping) and extra fields
    /// of `spec.external`; returns its Ready condition once it has `reason`.
    /// Queue `name`'s name on its broker, once the operator has provisioned it.
    fn provisioned(&self, queue: &str) -> anyhow::Result<String> {
        let queue = self.s.wait_for(&format!("queue/{queue}"), "provisioned", |o| {
            condition(o, "Ready").is_some_and(|c| c["status"] == "True")
        })?;
        Ok(queue["status"]["brokerName"].as_str().context("brokerName")?.to_owned())
    }

    /// A Secret `name` with keys `username` and `password`.
    fn login_secret(&self, name: &str, username: &str, password: &str) -> anyhow::Result<()> {
        let (username, password) =
            (format!("--from-literal=username={username}"), format!("--from-literal=password={password}"));
        self.s.kubectl(&["create", "secret", "generic", name, &username, &password])?;
        Ok(())
    }

    /// The files a Deployment's pod mounts, once the operator has rendered it.
    async fn pod_files(&self, deployment: &str) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        self.s.wait_for(&format!("deployment/{deployment}"), "rendered", |_| true)?;
        let kube = self.s.cluster.client().await?;
        oms_e2e::deployment_files(&kube, &self.s.ns.name, deployment).await
    }

    /// A bridge worker run with `files` where its pod has them, ready; and its admin address.
    fn run_worker(&self, files: &[(String, Vec<u8>)]) -> anyhow::Result<(oms_e2e::PodProcess, std::net::SocketAddr)> {
        let admin = oms_e2e::admin_address()?;
        let mut worker = oms_e2e::PodProcess::start(
            &format!("{}-worker", self.s.ns.name),
            files,
            &["worker", "--config", "/etc/oms/config/worker.yaml", "--admin-listen", &admin.to_string()],
        )?;
        worker.wait_ready(admin)?;
        Ok((worker, admin))
    }

    fn declare(&self, name: &str, host: &str, external: &str, reason: &str) -> anyhow::Result<Value> {
        let ap = self.declare_on("nats", name, &format!("{host}:{}", self.nats.port), external, reason)?;
        Ok(condition(&ap, "Ready").cloned().unwrap_or_default())
    }

    /// Declares access point `name` of `driver` at `server` with extra fields of
    /// `spec.external`; returns it once its Ready condition has `reason`.
    fn declare_on(
        &self,
        driver: &str,
        name: &str,
        server: &str,
        external: &str,
        reason: &str,
    ) -> anyhow::Result<Value> {
        self.s.apply(&format!(
            "apiVersion: openmessaging.cloud/v1alpha1\nkind: MessagingAccessPoint\nmetadata: {{name: {name}}}\n\
             spec: {{driver: {driver}, external: {{servers: ['{server}'], {external}}}}}\n"
        ))?;
        self.s.wait_for(&format!("messagingaccesspoint/{name}"), reason, |o| {
            condition(o, "Ready").is_some_and(|c| c["reason"] == reason)
        })
    }
}

/// A Secret of `files` (key, path) in the scenario's namespace.
fn secret_from_files(s: &Scenario, name: &str, files: &[(&str, &std::path::Path)]) -> anyhow::Result<()> {
    let mut args = vec!["create".to_owned(), "secret".to_owned(), "generic".to_owned(), name.to_owned()];
    args.extend(files.iter().map(|(key, path)| format!("--from-file={key}={}", path.display())));
    s.kubectl(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
    Ok(())
}

/// Records `message-<i>` for each i of `range`, keyed `k<i mod 7>`, into `topic` through the
/// plaintext listener at `address` (the test's own client), each acknowledged.
async fn produce(address: &str, topic: &str, range: std::ops::Range<usize>) -> anyhow::Result<()> {
    let producer: rdkafka::producer::FutureProducer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", address).set("enable.idempotence", "true").create()?;
    let records: Vec<(String, String)> = range.map(|i| (format!("k{}", i % 7), format!("message-{i}"))).collect();
    let sends = records.iter().map(|(key, payload)| {
        producer.send(rdkafka::producer::FutureRecord::to(topic).payload(payload).key(key), Duration::from_secs(10))
    });
    for delivery in futures::future::join_all(sends).await {
        delivery.map_err(|(e, _)| e)?;
    }
    Ok(())
}

fn message(ready: &Value) -> String {
    ready["message"].as_str().unwrap_or_default().to_owned()
}

const CA: &str = "tls: {caSecretRef: {name: nats-ca, key: ca.crt}}";

#[test]
fn a_broker_certificate_of_another_ca_is_named_tls_unknown_authority() -> anyhow::Result<()> {
    let t = TlsNats::start("tls-ca", |_| {})?;
    let stranger = Certs::new("tls-ca-stranger")?;
    secret_from_files(&t.s, "stranger-ca", &[("ca.crt", &stranger.dir.join("ca.crt"))])?;
    let ready = t.declare(
        "wrong-ca",
        "localhost",
        "tls: {caSecretRef: {name: stranger-ca, key: ca.crt}}",
        "TlsUnknownAuthority",
    )?;
    println!("external tls: another CA: {}", message(&ready));
    assert!(message(&ready).contains("signed by no CA of spec.external.tls"), "{ready}");
    t.declare("right-ca", "localhost", CA, "Reachable")?;
    Ok(())
}

#[test]
fn an_expired_broker_certificate_is_named_tls_certificate_expired() -> anyhow::Result<()> {
    let t = TlsNats::start("tls-expired", |spec| {
        spec.valid_from = Certs::now() - time::Duration::hours(3);
        spec.valid_for = Duration::from_hours(1);
    })?;
    let ready = t.declare("expired", "localhost", CA, "TlsCertificateExpired")?;
    println!("external tls: expired certificate: {}", message(&ready));
    assert!(message(&ready).contains("has expired"), "{ready}");
    Ok(())
}

#[test]
fn a_name_the_certificate_lacks_is_named_and_server_name_fixes_it() -> anyhow::Result<()> {
    let t = TlsNats::start("tls-name", |spec| spec.dns = vec!["nats.internal.example".into()])?;
    let ready = t.declare("by-ip", "127.0.0.1", CA, "TlsNameMismatch")?;
    println!("external tls: wrong name: {}", message(&ready));
    assert!(message(&ready).contains("spec.external.tls.serverName"), "the message says the fix: {ready}");
    let named = "tls: {caSecretRef: {name: nats-ca, key: ca.crt}, serverName: nats.internal.example}";
    t.declare("by-ip", "127.0.0.1", named, "Reachable")?;
    Ok(())
}

#[test]
fn a_wrong_password_is_named_login_refused() -> anyhow::Result<()> {
    let t = TlsNats::start("tls-login", |spec| spec.login = Some(NatsAuth::Password("app".into(), "right".into())))?;
    for (name, password) in [("wrong", "wrong"), ("right", "right")] {
        t.login_secret(name, "app", password)?;
    }
    let wrong = t.declare(
        "wrong-password",
        "localhost",
        &format!("{CA}, credentialsSecretRef: {{name: wrong}}"),
        "LoginRefused",
    )?;
    println!("external tls: wrong password: {}", message(&wrong));
    assert!(message(&wrong).contains("Authorization Violation"), "{wrong}");
    t.declare("right-password", "localhost", &format!("{CA}, credentialsSecretRef: {{name: right}}"), "Reachable")?;
    Ok(())
}

/// NATS logins besides a password: a token, and a credentials file of an operator's account.
/// The probe and the operator's admin client log in with each; a wrong token and a user of an
/// account the server does not know are named LoginRefused; Kafka takes neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_token_or_credentials_file_logs_in_and_a_wrong_one_is_named_login_refused() -> anyhow::Result<()> {
    let t = TlsNats::start("tls-nats-token", |spec| spec.login = Some(NatsAuth::Token("s3cret-token".into())))?;
    for (name, token) in [("token-right", "s3cret-token"), ("token-wrong", "guess")] {
        t.s.kubectl(&["create", "secret", "generic", name, &format!("--from-literal=token={token}")])?;
    }
    let external = |secret: &str| format!("{CA}, credentialsSecretRef: {{name: {secret}}}");
    let wrong = t.declare("token-wrong", "localhost", &external("token-wrong"), "LoginRefused")?;
    println!("external tls: nats wrong token: {}", message(&wrong));
    t.declare("token-right", "localhost", &external("token-right"), "Reachable")?;

    // An operator's server: it knows account acme, not strangers.
    let (acme, strangers) = (NatsAccounts::new("acme")?, NatsAccounts::new("strangers")?);
    let mut spec = TlsBrokerSpec::localhost(TlsBrokerKind::Nats);
    spec.login = Some(NatsAuth::Operator(acme.server_config()));
    let accounts_nats = TlsBroker::start(&t.certs, &spec)?;
    let server = format!("localhost:{}", accounts_nats.port);
    let creds = acme.user_creds("app")?;
    for (name, file) in [("creds-right", creds.clone()), ("creds-stranger", strangers.user_creds("app")?)] {
        let path = t.certs.dir.join(format!("{name}.creds"));
        std::fs::write(&path, file)?;
        secret_from_files(&t.s, name, &[("creds", &path)])?;
    }
    let stranger = t.declare_on("nats", "creds-stranger", &server, &external("creds-stranger"), "LoginRefused")?;
    let stranger = condition(&stranger, "Ready").cloned().unwrap_or_default();
    println!("external tls: nats credentials file of an unknown account: {}", message(&stranger));
    t.declare_on("nats", "creds-right", &server, &external("creds-right"), "Reachable")?;

    // The operator's admin client logs in the same ways: it makes the streams.
    t.s.apply(
        "apiVersion: openmessaging.cloud/v1alpha1\nkind: Queue\nmetadata: {name: by-token}\n\
         spec: {accessPointRef: {name: token-right}}\n---\n\
         apiVersion: openmessaging.cloud/v1alpha1\nkind: Queue\nmetadata: {name: by-creds}\n\
         spec: {accessPointRef: {name: creds-right}}\n",
    )?;
    t.provisioned("by-token")?;
    let stream = t.provisioned("by-creds")?;
    let ca = t.certs.dir.join("ca.crt");
    let js = accounts_nats.jetstream(&ca, async_nats::ConnectOptions::with_credentials(&creds)?).await?;
    assert!(js.get_stream(&stream).await.is_ok(), "the stream {stream} is in account acme");

    // Kafka takes neither: said before any connection.
    let kafka = t.declare_on(
        "kafka",
        "kafka-token",
        "localhost:9",
        "credentialsSecretRef: {name: token-right}",
        "CredentialsNotUsable",
    )?;
    let kafka = condition(&kafka, "Ready").cloned().unwrap_or_default();
    println!("external tls: a token for kafka: {}", message(&kafka));
    assert!(message(&kafka).contains("only NATS"), "{kafka}");
    Ok(())
}

#[test]
fn a_missing_ca_is_named_and_no_binding_is_published_until_it_exists() -> anyhow::Result<()> {
    let t = TlsNats::start("tls-missing", |_| {})?;
    let ready =
        t.declare("no-ca", "localhost", "tls: {caConfigMapRef: {name: absent, key: ca.crt}}", "TlsSettingsNotFound")?;
    assert!(message(&ready).contains("ConfigMap absent named by spec.external.tls.caConfigMapRef"), "{ready}");
    let no_binding = t.s.cluster.kubectl().args(["-n", &t.s.ns.name, "get", "secret/no-ca-binding"]).output()?;
    assert!(
        !no_binding.status.success(),
        "no binding without its TLS settings: nothing would reach the broker in plaintext"
    );
    // The CA in a ConfigMap works as well as in a Secret.
    t.s.kubectl(&[
        "create",
        "configmap",
        "absent",
        &format!("--from-file=ca.crt={}", t.certs.dir.join("ca.crt").display()),
    ])?;
    t.s.wait_for("messagingaccesspoint/no-ca", "Reachable", |o| {
        condition(o, "Ready").is_some_and(|c| c["reason"] == "Reachable")
    })?;
    // Without spec.external.tls the probe refuses to log in to a server that asks for TLS.
    let plain = t.declare("plaintext", "localhost", "account: a", "TlsHandshakeFailed")?;
    assert!(message(&plain).contains("requires TLS: set spec.external.tls"), "{plain}");
    Ok(())
}

/// MQTT over TLS into NATS over mutual TLS with a login, through access points, Queues and a
/// Bridge the operator renders; the worker runs with the files its pod would mount. NATS is
/// dialled by IP with `serverName: localhost`, the name its certificate carries: the probe, the
/// stream provisioning and the worker all check that name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_forwards_mqtt_over_tls_into_nats_over_mutual_tls_with_a_token() -> anyhow::Result<()> {
    const COUNT: usize = 1000;
    let t = TlsNats::start("tls-bridge", |spec| {
        spec.login = Some(NatsAuth::Token("s3cret-token".into()));
        spec.verify_clients = true;
    })?;
    let s = &t.s;
    let mqtt = TlsBroker::start(&t.certs, &TlsBrokerSpec::localhost(TlsBrokerKind::Mqtt))?;
    let client = t.certs.issue("client", "spiffe://e2e.test/client", &[], Certs::now(), oms_e2e::HOUR)?;
    s.kubectl(&[
        "create",
        "secret",
        "tls",
        "nats-client",
        &format!("--cert={}", client.cert.display()),
        &format!("--key={}", client.key.display()),
    ])?;
    s.kubectl(&["create", "secret", "generic", "nats-user", "--from-literal=token=s3cret-token"])?;
    s.apply(&format!(
        "apiVersion: openmessaging.cloud/v1alpha1\nkind: MessagingAccessPoint\nmetadata: {{name: sensors}}\n\
         spec: {{driver: mqtt, external: {{servers: ['localhost:{mqtt}'], {CA}}}}}\n---\n\
         apiVersion: openmessaging.cloud/v1alpha1\nkind: MessagingAccessPoint\nmetadata: {{name: hub}}\n\
         spec: {{driver: nats, external: {{servers: ['127.0.0.1:{nats}'], credentialsSecretRef: {{name: nats-user}}, \
         tls: {{caSecretRef: {{name: nats-ca, key: ca.crt}}, clientCertificateSecretRef: {{name: nats-client}}, \
         serverName: localhost}}}}}}\n---\n\
         apiVersion: openmessaging.cloud/v1alpha1\nkind: Queue\nmetadata: {{name: readings}}\n\
         spec: {{accessPointRef: {{name: sensors}}}}\n---\n\
         apiVersion: openmessaging.cloud/v1alpha1\nkind: Queue\nmetadata: {{name: readings-hub}}\n\
         spec: {{accessPointRef: {{name: hub}}}}\n---\n\
         apiVersion: openmessaging.cloud/v1alpha1\nkind: Bridge\nmetadata: {{name: to-hub}}\n\
         spec: {{source: {{queueRef: {{name: readings}}}}, target: {{queueRef: {{name: readings-hub}}}}}}\n",
        mqtt = mqtt.port,
        nats = t.nats.port,
    ))?;
    for ap in ["sensors", "hub"] {
        s.wait_for(&format!("messagingaccesspoint/{ap}"), "Reachable over TLS", |o| {
            condition(o, "Ready").is_some_and(|c| c["reason"] == "Reachable")
        })?;
    }
    // The stream was made through the operator's admin client, over mutual TLS with the token.
    let stream = t.provisioned("readings-hub")?;
    let readings = s.wait_for("queue/readings", "named", |o| o["status"]["brokerName"].is_string())?;
    let topic = readings["status"]["brokerName"].as_str().context("brokerName")?.to_owned();
    let binding = s.json("secret/hub-binding")?;
    let key = |k: &str| binding["data"][k].as_str().is_some();
    assert!(key("CA_CERT") && key("TLS_CERT") && key("TLS_KEY"), "the binding carries the TLS settings: {binding}");
    assert_eq!(binding["data"]["TLS"], "dHJ1ZQ==", "TLS=true");

    let files = t.pod_files("to-hub-oms-bridge").await?;
    let names: Vec<&str> = files.iter().map(|(path, _)| path.as_str()).collect();
    println!("external tls: the worker pod mounts {names:?}");
    for expected in [
        "credentials/source/ca.crt",
        "credentials/target/ca.crt",
        "credentials/target/tls.key",
        "credentials/target/token",
    ] {
        assert!(names.contains(&expected), "{expected} in {names:?}");
    }
    let config = files.iter().find(|(path, _)| path == "config/worker.yaml").map(|(_, v)| String::from_utf8_lossy(v));
    assert!(config.as_deref().is_some_and(|c| c.contains("serverName: localhost")), "{config:?}");
    let (mut worker, admin) = t.run_worker(&files)?;
    oms_e2e::poll("the worker's link is up", Duration::from_mins(1), || {
        Ok((oms_e2e::metric(admin, "oms_bridge_link_up", None) == 1).then_some(()))
    })?;

    let (publisher, mut events) = mqtt.mqtt_client("tls-bridge-publisher", &t.certs.dir.join("ca.crt"), true)?;
    let polling = tokio::spawn(async move { while events.poll().await.is_ok() {} });
    for i in 0..COUNT {
        publisher.publish(topic.as_str(), rumqttc::QoS::AtLeastOnce, false, format!("reading-{i}")).await?;
    }
    let sent = oms_e2e::poll("every reading in the stream", Duration::from_mins(2), || {
        let sent = oms_e2e::metric(admin, "oms_bridge_messages_sent_total", None);
        Ok((sent >= COUNT as u64).then_some(sent))
    })?;
    polling.abort();
    let options = async_nats::ConnectOptions::with_token("s3cret-token".into())
        .add_client_certificate(client.cert.clone(), client.key.clone());
    let js = t.nats.jetstream(&t.certs.dir.join("ca.crt"), options).await?;
    let held = js.get_stream(&stream).await?.info().await?.state.messages;
    println!(
        "external tls: mqtt (TLS) -> nats (mTLS + token): published {COUNT}, sent {sent}, the stream holds {held}"
    );
    assert_eq!(held, COUNT as u64, "each reading once");
    worker.kill();
    // Without its client certificate the same token is refused by TLS, and said so.
    let without = t.declare(
        "no-client-cert",
        "localhost",
        &format!("{CA}, credentialsSecretRef: {{name: nats-user}}"),
        "TlsHandshakeFailed",
    )?;
    assert!(message(&without).contains("refused our client certificate"), "{without}");
    Ok(())
}

/// Kafka over SASL_SSL, as managed Kafka services serve it: Ready with the mechanisms the broker
/// holds credentials for, LoginRefused with one it does not and with a wrong password.
#[test]
fn a_kafka_over_sasl_ssl_logs_in_with_the_mechanism_asked_and_names_a_refused_login() -> anyhow::Result<()> {
    let t = TlsNats::start("tls-kafka", |_| {})?;
    // SCRAM credentials for SHA-256 only: a client that ignored the mechanism asked for would
    // log in with the default, SCRAM-SHA-512, and be refused.
    let kafka = SaslSslKafka::start(&t.certs, "tls-kafka", ("app", "secret"), &["SCRAM-SHA-256"])?;
    for (name, password) in [("kafka-user", "secret"), ("kafka-wrong", "wrong")] {
        t.login_secret(name, "app", password)?;
    }
    let server = format!("localhost:{}", kafka.tls_port);
    let declare = |name: &str, user: &str, mechanism: &str, reason: &str| {
        let external = format!("{CA}, credentialsSecretRef: {{name: {user}}}, saslMechanism: {mechanism}");
        t.declare_on("kafka", name, &server, &external, reason)
    };
    for mechanism in ["PLAIN", "SCRAM-SHA-256"] {
        let ap = declare(&format!("kafka-{}", mechanism.to_lowercase()), "kafka-user", mechanism, "Reachable")?;
        let binding = t.s.json(&format!("secret/{}", ap["status"]["bindingSecret"].as_str().unwrap_or_default()))?;
        let written = binding["data"]["SASL_MECHANISM"].as_str().context("SASL_MECHANISM")?;
        assert_eq!(base64::engine::general_purpose::STANDARD.decode(written)?, mechanism.as_bytes(), "{binding}");
    }
    let unserved = declare("kafka-sha-512", "kafka-user", "SCRAM-SHA-512", "LoginRefused")?;
    let ready = condition(&unserved, "Ready").cloned().unwrap_or_default();
    println!("external tls: kafka mechanism without credentials on the broker: {}", message(&ready));
    assert!(message(&ready).contains("SCRAM-SHA-512"), "the mechanism asked for is the one tried: {ready}");
    let wrong = declare("kafka-wrong", "kafka-wrong", "SCRAM-SHA-256", "LoginRefused")?;
    let ready = condition(&wrong, "Ready").cloned().unwrap_or_default();
    println!("external tls: kafka wrong password: {}", message(&ready));
    assert!(message(&ready).contains("Authentication failed"), "{ready}");
    Ok(())
}

/// Kafka over SASL_SSL (SCRAM-SHA-256) into NATS over TLS with a credentials file: the operator
/// makes the topic over SASL_SSL, and the worker reads it with exactly its pod's files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_forwards_kafka_over_sasl_ssl_into_nats_over_tls_with_a_credentials_file() -> anyhow::Result<()> {
    const COUNT: usize = 2000;
    // The NATS end logs in with a credentials file of an operator's account.
    let accounts = NatsAccounts::new("hub")?;
    let t = TlsNats::start("tls-kafka-bridge", |spec| spec.login = Some(NatsAuth::Operator(accounts.server_config())))?;
    let creds = accounts.user_creds("bridge")?;
    let creds_file = t.certs.dir.join("hub.creds");
    std::fs::write(&creds_file, &creds)?;
    secret_from_files(&t.s, "hub-creds", &[("creds", &creds_file)])?;
    let s = &t.s;
    // SCRAM-SHA-256 credentials only: the operator and the worker must log in with the mechanism
    // asked for, not the default.
    let kafka = SaslSslKafka::start(&t.certs, "tls-kafka-bridge", ("app", "secret"), &["SCRAM-SHA-256"])?;
    t.login_secret("kafka-user", "app", "secret")?;
    s.apply(&format!(
        "apiVersion: openmessaging.cloud/v1alpha1\nkind: MessagingAccessPoint\nmetadata: {{name: payments}}\n\
         spec: {{driver: kafka, external: {{servers: ['localhost:{kafka}'], {CA}, credentialsSecretRef: {{name: kafka-user}}, \
         saslMechanism: SCRAM-SHA-256}}}}\n---\n\
         apiVersion: openmessaging.cloud/v1alpha1\nkind: MessagingAccessPoint\nmetadata: {{name: hub}}\n\
         spec: {{driver: nats, external: {{servers: ['localhost:{nats}'], {CA}, credentialsSecretRef: {{name: hub-creds}}}}}}\n---\n\
         apiVersion: openmessaging.cloud/v1alpha1\nkind: Queue\nmetadata: {{name: payments}}\n\
         spec: {{accessPointRef: {{name: payments}}, partitions: 3}}\n---\n\
         apiVersion: openmessaging.cloud/v1alpha1\nkind: Queue\nmetadata: {{name: payments-hub}}\n\
         spec: {{accessPointRef: {{name: hub}}}}\n---\n\
         apiVersion: openmessaging.cloud/v1alpha1\nkind: Bridge\nmetadata: {{name: to-hub}}\n\
         spec: {{source: {{queueRef: {{name: payments}}}}, target: {{queueRef: {{name: payments-hub}}}}}}\n",
        kafka = kafka.tls_port,
        nats = t.nats.port,
    ))?;
    // The topic was made by the operator's admin client over SASL_SSL.
    let topic = t.provisioned("payments")?;
    let stream = t.provisioned("payments-hub")?;
    let files = t.pod_files("to-hub-oms-bridge").await?;
    let mechanism = files.iter().find(|(path, _)| path == "credentials/source/sasl_mechanism").map(|(_, v)| v.clone());
    assert_eq!(
        mechanism.as_deref(),
        Some(&b"SCRAM-SHA-256"[..]),
        "the worker logs in with the access point's mechanism"
    );
    let mounted = files.iter().find(|(path, _)| path == "credentials/target/nats.creds").map(|(_, v)| v.clone());
    assert_eq!(mounted.as_deref(), Some(creds.as_bytes()), "the worker logs in to NATS with the credentials file");
    let (mut worker, admin) = t.run_worker(&files)?;

    // Produced through the broker's plaintext listener, the test's own; read over SASL_SSL.
    produce(&kafka.broker.address(), &topic, 0..COUNT).await?;
    let sent = oms_e2e::poll("every payment in the stream", Duration::from_mins(2), || {
        let sent = oms_e2e::metric(admin, "oms_bridge_messages_sent_total", None);
        Ok((sent >= COUNT as u64).then_some(sent))
    })?;
    let js =
        t.nats.jetstream(&t.certs.dir.join("ca.crt"), async_nats::ConnectOptions::with_credentials(&creds)?).await?;
    let held = js.get_stream(&stream).await?.info().await?.state.messages;
    println!(
        "external tls: kafka (SASL_SSL, SCRAM-SHA-256) -> nats (TLS, credentials file): produced {COUNT}, sent {sent}, the stream holds {held}"
    );
    assert_eq!(held, COUNT as u64, "each payment once");
    worker.kill();
    Ok(())
}

/// RabbitMQ over amqps: Ready with the right login, and a wrong password named.
#[test]
fn a_rabbitmq_over_amqps_is_ready_and_a_wrong_password_is_named() -> anyhow::Result<()> {
    let t = TlsNats::start("tls-rabbit", |_| {})?;
    let rabbit = AmqpsRabbit::start(&t.certs, "tls-rabbit")?;
    for (name, password) in [("guest-right", "guest"), ("guest-wrong", "wrong")] {
        t.login_secret(name, "guest", password)?;
    }
    let server = format!("localhost:{}", rabbit.tls_port);
    let declare = |name: &str, user: &str, reason: &str| {
        t.declare_on("rabbitmq", name, &server, &format!("{CA}, credentialsSecretRef: {{name: {user}}}"), reason)
    };
    declare("rabbit-right", "guest-right", "Reachable")?;
    let wrong = declare("rabbit-wrong", "guest-wrong", "LoginRefused")?;
    let ready = condition(&wrong, "Ready").cloned().unwrap_or_default();
    println!("external tls: rabbitmq wrong password: {}", message(&ready));
    assert!(message(&ready).contains("ACCESS_REFUSED"), "{ready}");
    Ok(())
}

/// RabbitMQ over amqps into Kafka over SASL_SSL: the operator declares the queue over amqps
/// and makes the topic over SASL_SSL; the worker runs with exactly its pod's files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_forwards_rabbitmq_over_amqps_into_kafka_over_sasl_ssl() -> anyhow::Result<()> {
    const COUNT: usize = 1000;
    let t = TlsNats::start("tls-rabbit-bridge", |_| {})?;
    let s = &t.s;
    let rabbit = AmqpsRabbit::start(&t.certs, "tls-rabbit-bridge-r")?;
    let kafka = SaslSslKafka::start(&t.certs, "tls-rabbit-bridge-k", ("app", "secret"), &["SCRAM-SHA-512"])?;
    t.login_secret("rabbit-user", "guest", "guest")?;
    t.login_secret("kafka-user", "app", "secret")?;
    s.apply(&format!(
        "apiVersion: openmessaging.cloud/v1alpha1\nkind: MessagingAccessPoint\nmetadata: {{name: orders}}\n\
         spec: {{driver: rabbitmq, external: {{servers: ['localhost:{rabbit}'], {CA}, credentialsSecretRef: {{name: rabbit-user}}}}}}\n---\n\
         apiVersion: openmessaging.cloud/v1alpha1\nkind: MessagingAccessPoint\nmetadata: {{name: ledger}}\n\
         spec: {{driver: kafka, external: {{servers: ['localhost:{kafka}'], {CA}, credentialsSecretRef: {{name: kafka-user}}}}}}\n---\n\
         apiVersion: openmessaging.cloud/v1alpha1\nkind: Queue\nmetadata: {{name: orders}}\n\
         spec: {{accessPointRef: {{name: orders}}}}\n---\n\
         apiVersion: openmessaging.cloud/v1alpha1\nkind: Queue\nmetadata: {{name: orders-ledger}}\n\
         spec: {{accessPointRef: {{name: ledger}}, partitions: 1}}\n---\n\
         apiVersion: openmessaging.cloud/v1alpha1\nkind: Bridge\nmetadata: {{name: to-ledger}}\n\
         spec: {{source: {{queueRef: {{name: orders}}}}, target: {{queueRef: {{name: orders-ledger}}}}}}\n",
        rabbit = rabbit.tls_port,
        kafka = kafka.tls_port,
    ))?;
    // Declared by the operator over amqps, made by it over SASL_SSL.
    let queue = t.provisioned("orders")?;
    let topic = t.provisioned("orders-ledger")?;
    let files = t.pod_files("to-ledger-oms-bridge").await?;
    let (mut worker, admin) = t.run_worker(&files)?;

    // Published through the broker's plaintext listener, the test's own; read over amqps.
    let connection = lapin::Connection::connect(
        &format!("amqp://guest:guest@127.0.0.1:{}/%2f", rabbit.broker.port),
        lapin::ConnectionProperties::default(),
    )
    .await?;
    let channel = connection.create_channel().await?;
    channel.confirm_select(lapin::options::ConfirmSelectOptions::default()).await?;
    for i in 0..COUNT {
        channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                lapin::options::BasicPublishOptions::default(),
                format!("order-{i}").as_bytes(),
                lapin::BasicProperties::default(),
            )
            .await?
            .await?;
    }
    let sent = oms_e2e::poll("every order in the topic", Duration::from_mins(2), || {
        let sent = oms_e2e::metric(admin, "oms_bridge_messages_sent_total", None);
        Ok((sent >= COUNT as u64).then_some(sent))
    })?;
    let consumer: rdkafka::consumer::BaseConsumer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", kafka.broker.address()).create()?;
    let (low, high) = rdkafka::consumer::Consumer::fetch_watermarks(&consumer, &topic, 0, Duration::from_secs(10))?;
    let held = u64::try_from(high - low)?;
    println!(
        "external tls: rabbitmq (amqps) -> kafka (SASL_SSL): published {COUNT}, sent {sent}, the topic holds {held}"
    );
    assert_eq!(held, COUNT as u64, "each order once");
    worker.kill();
    Ok(())
}

/// RocketMQ that takes TLS only on its client ports, into NATS over TLS and back: the probe
/// reaches the proxy and the name server over TLS, the operator makes the topics over TLS, one
/// worker receives through the proxy and sets its group's positions at the name server and the
/// broker over TLS, another sends through the proxy. The certificate names `localhost`; the
/// broker registers itself at 127.0.0.1, so serverName says which name to check. In plaintext,
/// or with another CA, the access point is not Ready and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_forwards_rocketmq_over_tls_into_nats_and_back_over_tls() -> anyhow::Result<()> {
    const COUNT: usize = 500;
    let t = TlsNats::start("tls-rmq-bridge", |_| {})?;
    let s = &t.s;
    let rocketmq = TlsRocketmq::start(&t.certs, "tls-rmq-bridge")?;
    let name_servers = format!("nameServers: ['{}']", rocketmq.name_server()?);
    let rocketmq_tls =
        format!("{name_servers}, tls: {{caSecretRef: {{name: nats-ca, key: ca.crt}}, serverName: localhost}}");
    // Two access points on the same RocketMQ: a bridge never writes back into the access point
    // a message came from.
    for name in ["events", "events-b"] {
        t.declare_on("rocketmq", name, &rocketmq.proxy(), &rocketmq_tls, "Reachable")?;
    }
    s.apply(&format!(
        "apiVersion: openmessaging.cloud/v1alpha1\nkind: MessagingAccessPoint\nmetadata: {{name: hub}}\n\
         spec: {{driver: nats, external: {{servers: ['localhost:{nats}'], {CA}}}}}\n---\n\
         apiVersion: openmessaging.cloud/v1alpha1\nkind: Queue\nmetadata: {{name: events}}\n\
         spec: {{accessPointRef: {{name: events}}, partitions: 2}}\n---\n\
         apiVersion: openmessaging.cloud/v1alpha1\nkind: Queue\nmetadata: {{name: events-hub}}\n\
         spec: {{accessPointRef: {{name: hub}}}}\n---\n\
         apiVersion: openmessaging.cloud/v1alpha1\nkind: Queue\nmetadata: {{name: events-back}}\n\
         spec: {{accessPointRef: {{name: events-b}}, partitions: 1}}\n---\n\
         apiVersion: openmessaging.cloud/v1alpha1\nkind: Bridge\nmetadata: {{name: to-hub}}\n\
         spec: {{source: {{queueRef: {{name: events}}}}, target: {{queueRef: {{name: events-hub}}}}, ordering: None}}\n---\n\
         apiVersion: openmessaging.cloud/v1alpha1\nkind: Bridge\nmetadata: {{name: back}}\n\
         spec: {{source: {{queueRef: {{name: events-hub}}}}, target: {{queueRef: {{name: events-back}}}}}}\n",
        nats = t.nats.port,
    ))?;
    // Made by the operator's remoting client over TLS.
    let topic = t.provisioned("events")?;
    let stream = t.provisioned("events-hub")?;
    let back = t.provisioned("events-back")?;
    let (mut out, admin) = t.run_worker(&t.pod_files("to-hub-oms-bridge").await?)?;
    let (mut home, back_admin) = t.run_worker(&t.pod_files("back-oms-bridge").await?)?;

    // Produced and read back by RocketMQ's own client, over TLS too: the broker takes nothing else.
    let count = COUNT.to_string();
    tokio::task::block_in_place(|| oms_e2e::rocketmq_client(&rocketmq.broker, &["produce", &topic, "0", &count, "7"]))?;
    let sent = |admin| {
        oms_e2e::poll("every event through", Duration::from_mins(2), || {
            let sent = oms_e2e::metric(admin, "oms_bridge_messages_sent_total", None);
            Ok((sent >= COUNT as u64).then_some(sent))
        })
    };
    let (sent_out, sent_back) = (sent(admin)?, sent(back_admin)?);
    let js = t.nats.jetstream(&t.certs.dir.join("ca.crt"), async_nats::ConnectOptions::new()).await?;
    let held = js.get_stream(&stream).await?.info().await?.state.messages;
    let returned =
        tokio::task::block_in_place(|| oms_e2e::rocketmq_client(&rocketmq.broker, &["consume", &back, &count, "60"]))?;
    let distinct: std::collections::HashSet<String> = returned
        .lines()
        .filter_map(|line| Some(serde_json::from_str::<Value>(line).ok()?["payload"].as_str()?.to_owned()))
        .collect();
    println!(
        "external tls: rocketmq (TLS, serverName) -> nats (TLS) -> rocketmq (TLS): produced {COUNT}, sent {sent_out}, \
         the stream holds {held}; sent back {sent_back}, the topic holds {} ({} distinct)",
        returned.lines().count(),
        distinct.len()
    );
    assert_eq!(held, COUNT as u64, "each event once in NATS");
    assert_eq!(distinct.len(), COUNT, "each event back in RocketMQ");
    out.kill();
    home.kill();

    // The same RocketMQ in plaintext: the proxy and the name server refuse it, so everything above
    // went over TLS; with another CA the certificate is named.
    let plain = t.declare_on("rocketmq", "events-plain", &rocketmq.proxy(), &name_servers, "Unreachable")?;
    let said = message(&condition(&plain, "Ready").cloned().unwrap_or_default());
    println!("external tls: rocketmq in plaintext: {said}");
    assert!(said.contains("eof") && said.contains("closed the connection"), "proxy and name server: {said}");
    let other = Certs::new("tls-rmq-other")?;
    secret_from_files(s, "other-ca", &[("ca.crt", &other.dir.join("ca.crt"))])?;
    let other_ca =
        format!("{name_servers}, tls: {{caSecretRef: {{name: other-ca, key: ca.crt}}, serverName: localhost}}");
    let refused = t.declare_on("rocketmq", "events-other-ca", &rocketmq.proxy(), &other_ca, "TlsUnknownAuthority")?;
    println!(
        "external tls: rocketmq with another CA: {}",
        message(&condition(&refused, "Ready").cloned().unwrap_or_default())
    );
    Ok(())
}

/// A CA rotated in the user's Secret reaches the worker through the binding, and a broker that
/// comes back on a certificate of the new CA, mid-stream, loses nothing: 20,000 messages from
/// Kafka into NATS over TLS, the NATS server restarted on its new certificate halfway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_ca_and_a_broker_on_a_new_certificate_lose_nothing() -> anyhow::Result<()> {
    const COUNT: usize = 20_000;
    let mut t = TlsNats::start("tls-rotate", |_| {})?;
    let kafka = oms_e2e::Broker::up("kafka", "tls-rotate-k")?;
    t.s.apply(&format!(
        "apiVersion: openmessaging.cloud/v1alpha1\nkind: MessagingAccessPoint\nmetadata: {{name: orders}}\n\
         spec: {{driver: kafka, external: {{servers: ['{kafka}']}}}}\n---\n\
         apiVersion: openmessaging.cloud/v1alpha1\nkind: MessagingAccessPoint\nmetadata: {{name: hub}}\n\
         spec: {{driver: nats, external: {{servers: ['localhost:{nats}'], {CA}}}}}\n---\n\
         apiVersion: openmessaging.cloud/v1alpha1\nkind: Queue\nmetadata: {{name: orders}}\n\
         spec: {{accessPointRef: {{name: orders}}, partitions: 1}}\n---\n\
         apiVersion: openmessaging.cloud/v1alpha1\nkind: Queue\nmetadata: {{name: orders-hub}}\n\
         spec: {{accessPointRef: {{name: hub}}}}\n---\n\
         apiVersion: openmessaging.cloud/v1alpha1\nkind: Bridge\nmetadata: {{name: to-hub}}\n\
         spec: {{source: {{queueRef: {{name: orders}}}}, target: {{queueRef: {{name: orders-hub}}}}}}\n",
        kafka = kafka.address(),
        nats = t.nats.port,
    ))?;
    let topic = t.provisioned("orders")?;
    let stream = t.provisioned("orders-hub")?;
    let files = t.pod_files("to-hub-oms-bridge").await?;
    let (worker, admin) = t.run_worker(&files)?;
    let sent_at_least = |count: usize| {
        oms_e2e::poll(&format!("{count} sent"), Duration::from_mins(2), || {
            let sent = oms_e2e::metric(admin, "oms_bridge_messages_sent_total", None);
            Ok((sent >= count as u64).then_some(sent))
        })
    };
    produce(&kafka.address(), &topic, 0..COUNT / 2).await?;
    sent_at_least(COUNT / 2)?;

    // The user adds the new CA to the bundle; the operator copies it into the binding; the
    // kubelet would update the worker's mounted file: done here from the binding itself.
    let new_ca = Certs::new("tls-rotate-new")?;
    let bundle = t.certs.dir.join("bundle.crt");
    std::fs::write(
        &bundle,
        [std::fs::read_to_string(t.certs.dir.join("ca.crt"))?, new_ca.ca.cert_pem().to_owned()].concat(),
    )?;
    let replaced = t.s.kubectl(&[
        "create",
        "secret",
        "generic",
        "nats-ca",
        &format!("--from-file=ca.crt={}", bundle.display()),
        "--dry-run=client",
        "-o",
        "yaml",
    ])?;
    t.s.apply(&replaced)?;
    let binding = t.s.wait_for("secret/hub-binding", "the bundle of both CAs", |o| {
        let pem = o["data"]["CA_CERT"].as_str().and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok());
        pem.is_some_and(|pem| String::from_utf8_lossy(&pem).matches("BEGIN CERTIFICATE").count() == 2)
    })?;
    let pem =
        base64::engine::general_purpose::STANDARD.decode(binding["data"]["CA_CERT"].as_str().unwrap_or_default())?;
    worker.update_file("credentials/target/ca.crt", &pem)?;

    // The broker comes back on a certificate of the new CA; the worker must trust it to go on.
    let renewed =
        new_ca.issue("nats-renewed", "spiffe://e2e.test/nats", &["localhost"], Certs::now(), oms_e2e::HOUR)?;
    std::fs::copy(&renewed.cert, &t.nats.server.cert)?;
    std::fs::copy(&renewed.key, &t.nats.server.key)?;
    t.nats.restart()?;
    produce(&kafka.address(), &topic, COUNT / 2..COUNT).await?;
    let sent = sent_at_least(COUNT)?;
    let js = t.nats.jetstream(&new_ca.dir.join("ca.crt"), async_nats::ConnectOptions::new()).await?;
    let held = js.get_stream(&stream).await?.info().await?.state.messages;
    let reconnects = oms_e2e::metric(admin, "oms_bridge_messages_failed_total", Some("link"));
    println!(
        "external tls: CA rotated and broker restarted on a new-CA certificate mid-stream: produced {COUNT}, sent {sent}, \
         the stream holds {held}, link failures {reconnects}"
    );
    assert_eq!(held, COUNT as u64, "lost 0, each once");
    let log = std::fs::read_to_string(&worker.log)?;
    assert!(log.contains("Reloaded TLS material."), "the worker read the new bundle:\n{log}");
    drop(worker);
    Ok(())
}
