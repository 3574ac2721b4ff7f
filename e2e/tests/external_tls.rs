//! External access points over TLS against real TLS-only brokers: the probe does the handshake
//! and the login and names the cause of a failure; the operator provisions streams over TLS; a
//! Bridge's worker, run with exactly the files its pod would mount, forwards MQTT over TLS into
//! NATS over mutual TLS with a login.

use std::time::Duration;

use anyhow::Context as _;
use oms_e2e::{Certs, Cluster, Operator, Scenario, TlsBroker, TlsBrokerKind, TlsBrokerSpec, condition};
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
    fn declare(&self, name: &str, host: &str, external: &str, reason: &str) -> anyhow::Result<Value> {
        self.s.apply(&format!(
            "apiVersion: openmessaging.cloud/v1alpha1\nkind: MessagingAccessPoint\nmetadata: {{name: {name}}}\n\
             spec: {{driver: nats, external: {{servers: ['{host}:{}'], {external}}}}}\n",
            self.nats.port
        ))?;
        let ap = self.s.wait_for(&format!("messagingaccesspoint/{name}"), reason, |o| {
            condition(o, "Ready").is_some_and(|c| c["reason"] == reason)
        })?;
        Ok(condition(&ap, "Ready").cloned().unwrap_or_default())
    }
}

/// A Secret of `files` (key, path) in the scenario's namespace.
fn secret_from_files(s: &Scenario, name: &str, files: &[(&str, &std::path::Path)]) -> anyhow::Result<()> {
    let mut args = vec!["create".to_owned(), "secret".to_owned(), "generic".to_owned(), name.to_owned()];
    args.extend(files.iter().map(|(key, path)| format!("--from-file={key}={}", path.display())));
    s.kubectl(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
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
    let t = TlsNats::start("tls-login", |spec| spec.login = Some(("app".into(), "right".into())))?;
    for (name, password) in [("wrong", "wrong"), ("right", "right")] {
        t.s.kubectl(&[
            "create",
            "secret",
            "generic",
            name,
            "--from-literal=username=app",
            &format!("--from-literal=password={password}"),
        ])?;
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

#[test]
fn a_missing_ca_secret_is_named_and_nothing_connects_in_plaintext() -> anyhow::Result<()> {
    let t = TlsNats::start("tls-missing", |_| {})?;
    let ready =
        t.declare("no-ca", "localhost", "tls: {caConfigMapRef: {name: absent, key: ca.crt}}", "TlsSettingsNotFound")?;
    assert!(message(&ready).contains("ConfigMap absent named by spec.external.tls.caConfigMapRef"), "{ready}");
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
/// Bridge the operator renders; the worker runs with the files its pod would mount.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_forwards_mqtt_over_tls_into_nats_over_mutual_tls_with_a_login() -> anyhow::Result<()> {
    const COUNT: usize = 1000;
    let t = TlsNats::start("tls-bridge", |spec| {
        spec.login = Some(("app".into(), "secret".into()));
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
    s.kubectl(&[
        "create",
        "secret",
        "generic",
        "nats-user",
        "--from-literal=username=app",
        "--from-literal=password=secret",
    ])?;
    s.apply(&format!(
        "apiVersion: openmessaging.cloud/v1alpha1\nkind: MessagingAccessPoint\nmetadata: {{name: sensors}}\n\
         spec: {{driver: mqtt, external: {{servers: ['localhost:{mqtt}'], {CA}}}}}\n---\n\
         apiVersion: openmessaging.cloud/v1alpha1\nkind: MessagingAccessPoint\nmetadata: {{name: hub}}\n\
         spec: {{driver: nats, external: {{servers: ['localhost:{nats}'], credentialsSecretRef: {{name: nats-user}}, \
         tls: {{caSecretRef: {{name: nats-ca, key: ca.crt}}, clientCertificateSecretRef: {{name: nats-client}}}}}}}}\n---\n\
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
    // The stream was made through the operator's admin client, over mutual TLS with the login.
    let queue = s.wait_for("queue/readings-hub", "provisioned", |o| {
        condition(o, "Ready").is_some_and(|c| c["status"] == "True")
    })?;
    let stream = queue["status"]["brokerName"].as_str().context("brokerName")?.to_owned();
    let readings = s.wait_for("queue/readings", "named", |o| o["status"]["brokerName"].is_string())?;
    let topic = readings["status"]["brokerName"].as_str().context("brokerName")?.to_owned();
    let binding = s.json("secret/hub-binding")?;
    let key = |k: &str| binding["data"][k].as_str().is_some();
    assert!(key("CA_CERT") && key("TLS_CERT") && key("TLS_KEY"), "the binding carries the TLS settings: {binding}");
    assert_eq!(binding["data"]["TLS"], "dHJ1ZQ==", "TLS=true");

    s.wait_for("deployment/to-hub-oms-bridge", "rendered", |_| true)?;
    let kube = s.cluster.client().await?;
    let files = oms_e2e::deployment_files(&kube, &s.ns.name, "to-hub-oms-bridge").await?;
    let names: Vec<&str> = files.iter().map(|(path, _)| path.as_str()).collect();
    println!("external tls: the worker pod mounts {names:?}");
    for expected in [
        "credentials/source/ca.crt",
        "credentials/target/ca.crt",
        "credentials/target/tls.key",
        "credentials/target/password",
    ] {
        assert!(names.contains(&expected), "{expected} in {names:?}");
    }
    let admin = oms_e2e::admin_address()?;
    let mut worker = oms_e2e::PodProcess::start(
        &format!("{}-worker", s.ns.name),
        &files,
        &["worker", "--config", "/etc/oms/config/worker.yaml", "--admin-listen", &admin.to_string()],
    )?;
    worker.wait_ready(admin)?;
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
    let nats = async_nats::ConnectOptions::with_user_and_password("app".into(), "secret".into())
        .add_root_certificates(t.certs.dir.join("ca.crt"))
        .add_client_certificate(client.cert.clone(), client.key.clone())
        .require_tls(true)
        .connect(format!("localhost:{}", t.nats.port))
        .await?;
    let held = async_nats::jetstream::new(nats).get_stream(&stream).await?.info().await?.state.messages;
    println!(
        "external tls: mqtt (TLS) -> nats (mTLS + login): published {COUNT}, sent {sent}, the stream holds {held}"
    );
    assert_eq!(held, COUNT as u64, "each reading once");
    worker.kill();
    Ok(())
}
