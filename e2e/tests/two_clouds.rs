//! The product's loop across two clouds, on two real API servers with an operator each: a Bridge in
//! cloud-a from a Kafka queue to a NATS queue that cloud-b serves through its gateway. The worker
//! and the gateway run from exactly the ConfigMaps and Secrets the operators wrote (mounted where a
//! pod mounts them); the Bridge's status comes from the worker; a real Prometheus scrapes both
//! operators, the worker and the gateway.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use oms_e2e::{
    Broker, Cluster, DEADLINE, Operator, PodProcess, TlsPaths, condition, free_server_port, poll, run, run_ok,
};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;

const MESSAGES: usize = 10_000;
const MESSAGES_U64: u64 = 10_000;
/// Messages produced while the worker is stopped.
const WHILE_STOPPED: usize = 100;
const STALLED_AFTER_SECONDS: u64 = 10;
/// How often the operator reads the worker.
const OBSERVE_SECONDS: &str = "2";

fn get(cluster: &Cluster, namespace: &str, object: &str) -> anyhow::Result<Option<Value>> {
    let output = run(cluster.kubectl().args(["-n", namespace, "get", object, "-o", "json"]))?;
    Ok(output.status.success().then(|| serde_json::from_slice(&output.stdout)).transpose()?)
}

fn condition_is(object: &Value, type_: &str, status: &str) -> bool {
    condition(object, type_).is_some_and(|c| c["status"] == status)
}

/// A ConfigMap's file and a Secret's keys as `(path under /etc/oms, content)`, as the pod mounts them.
async fn pod_files(
    client: &kube::Client,
    namespace: &str,
    config_map: &str,
    file: &str,
    tls_secret: &str,
) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let config = config_maps.get(config_map).await?.data.unwrap_or_default();
    let mut files = vec![(format!("config/{file}"), config.get(file).context("config file")?.as_bytes().to_vec())];
    for (key, value) in secrets.get(tls_secret).await?.data.unwrap_or_default() {
        files.push((format!("tls/{key}"), value.0));
    }
    Ok(files)
}

async fn produce(kafka: &Broker, topic: &str, from: usize, count: usize) -> anyhow::Result<()> {
    let producer: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", kafka.address()).set("enable.idempotence", "true").create()?;
    let mut deliveries = Vec::with_capacity(count);
    for i in from..from + count {
        let (key, payload) = (format!("k{}", i % 8), format!("msg-{i}"));
        deliveries.push(producer.send_result(FutureRecord::to(topic).key(&key).payload(&payload)).map_err(|(e, _)| e)?);
    }
    for delivery in deliveries {
        delivery.await?.map_err(|(e, _)| e)?;
    }
    Ok(())
}

/// How often each payload arrived on the stream, reading until `expected` distinct ones or the deadline.
async fn arrivals(
    nats: &Broker,
    stream: &str,
    expected: usize,
    deadline: Duration,
) -> anyhow::Result<HashMap<String, usize>> {
    let js = jetstream::new(async_nats::connect(format!("nats://{}", nats.address())).await?);
    let consumer = js.get_stream(stream).await?.create_consumer(jetstream::consumer::pull::Config::default()).await?;
    let mut messages = consumer.messages().await?;
    let started = Instant::now();
    let mut seen: HashMap<String, usize> = HashMap::new();
    while seen.len() < expected && started.elapsed() < deadline {
        let Ok(Some(Ok(message))) = tokio::time::timeout(Duration::from_secs(2), messages.next()).await else {
            continue;
        };
        message.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        *seen.entry(String::from_utf8_lossy(&message.payload).into_owned()).or_default() += 1;
    }
    Ok(seen)
}

/// A Prometheus server from Debian scraping `targets` every 2 seconds.
struct Prometheus {
    child: std::process::Child,
    address: std::net::SocketAddr,
}

impl Prometheus {
    fn start(targets: &[(&str, std::net::SocketAddr)]) -> anyhow::Result<Self> {
        let dir = oms_e2e::repo_root().join(format!("e2e/.state/prometheus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let jobs: Vec<String> = targets
            .iter()
            .map(|(job, address)| format!("  - job_name: {job}\n    static_configs: [{{targets: ['{address}']}}]\n"))
            .collect();
        let jobs = jobs.concat();
        std::fs::write(
            dir.join("prometheus.yml"),
            format!("global: {{scrape_interval: 2s, scrape_timeout: 2s}}\nscrape_configs:\n{jobs}"),
        )?;
        let address: std::net::SocketAddr = format!("127.0.0.1:{}", free_server_port()).parse()?;
        let child = std::process::Command::new(oms_e2e::tool("prometheus"))
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={address}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log"))?)
            .spawn()
            .context("cannot start prometheus")?;
        Ok(Self { child, address })
    }

    /// The value of an instant query with one whole-number sample (a count), if any.
    fn query(&self, promql: &str) -> anyhow::Result<Option<u64>> {
        let encoded: String = promql
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"_-.".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let (code, body) = oms_e2e::http_get(self.address, &format!("/api/v1/query?query={encoded}"))?;
        anyhow::ensure!(code == 200, "prometheus answered {code}: {body}");
        let answer: Value = serde_json::from_str(&body)?;
        Ok(answer["data"]["result"][0]["value"][1].as_str().and_then(|v| v.parse().ok()))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Who signs each cloud's certificates.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Signing {
    /// Each cloud its own CA (brought by the user), trusting the other's.
    OwnCas,
    /// cert-manager in each cloud (`--pki-issuer-kind`), a CA Issuer on one root both share,
    /// certificates of 30 s so that cert-manager renews them within the test.
    CertManager,
}

/// Two clusters with an operator each, one tenant namespace present in both, each cloud's
/// certificates signed as [`Signing`] says; Kafka for cloud-a and NATS for cloud-b.
struct Clouds {
    kafka: Broker,
    nats: Broker,
    a: Cluster,
    b: Cluster,
    client_a: kube::Client,
    client_b: kube::Client,
    /// The tenant: the same namespace name in both clouds, which is what the gateway authorizes by.
    ns: String,
    operator_a: Operator,
    operator_b: Operator,
    worker_admin: std::net::SocketAddr,
    gateway_admin: std::net::SocketAddr,
    /// The CAs of cloud-a and cloud-b, and where their certificates are written.
    cas: (oms_pki::Ca, oms_pki::Ca),
    state: std::path::PathBuf,
    _namespaces: (oms_e2e::Namespace, oms_e2e::Namespace),
    _cert_managers: Vec<oms_e2e::CertManager>,
}

impl Clouds {
    /// Everything for one test, each cloud with a CA of its own; `tag` keeps its brokers and
    /// namespace apart from other tests'.
    async fn start(tag: &str) -> anyhow::Result<Self> {
        Self::start_with(tag, Signing::OwnCas).await
    }

    async fn start_with(tag: &str, signing: Signing) -> anyhow::Result<Self> {
        let (kafka, nats) = (Broker::up("kafka", &format!("{tag}-k"))?, Broker::up("nats", &format!("{tag}-n"))?);
        let (a, b) = (Cluster::up("cloud-a")?, Cluster::up("cloud-b")?);
        a.install_crds()?;
        b.install_crds()?;
        let ns_b = b.fresh_namespace(tag)?;
        let ns_a = a.namespace(&ns_b.name)?;
        let ns = ns_b.name.clone();
        let state = oms_e2e::repo_root().join(format!("e2e/.state/{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&state)?;
        let (client_a, client_b) = (a.client().await?, b.client().await?);
        let mut cas = Vec::new();
        let mut cert_managers = Vec::new();
        let root = oms_pki::Ca::generate("Shared root", Duration::from_hours(24))?;
        for ((client, cluster), domain) in
            [(&client_a, &a), (&client_b, &b)].into_iter().zip(["cloud-a.oms", "cloud-b.oms"])
        {
            let ca = match signing {
                Signing::OwnCas => {
                    let ca = oms_pki::Ca::generate(&format!("OMS CA {domain}"), Duration::from_hours(24))?;
                    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
                    secrets.create(&kube::api::PostParams::default(), &oms_operator::pki::ca_secret(&ns, &ca)).await?;
                    ca
                }
                Signing::CertManager => {
                    let log = state.join(format!("cert-manager-{domain}.log"));
                    cert_managers.push(oms_e2e::CertManager::start(cluster, &log)?);
                    oms_e2e::ca_issuer(cluster, &ns, "corp-ca", &root)?;
                    oms_pki::Ca::from_pem(root.cert_pem(), root.key_pem())?
                }
            };
            std::fs::write(state.join(format!("{domain}.pem")), ca.cert_pem())?;
            cas.push(ca);
        }
        let ca_b = cas.pop().context("cloud-b's CA")?;
        let ca_a = cas.pop().context("cloud-a's CA")?;
        let peer = |domain: &str| state.join(format!("{domain}.pem")).display().to_string();
        let (worker_admin, gateway_admin) = (oms_e2e::admin_address()?, oms_e2e::admin_address()?);
        let worker_url = format!("http://{worker_admin}");
        let (peer_a, peer_b) = (peer("cloud-a.oms"), peer("cloud-b.oms"));
        let common =
            ["--leader-election=false", "--bridge-observe-interval-seconds", OBSERVE_SECONDS, "--namespace", &ns];
        // With one root, each cloud already trusts the other's certificates.
        let (trust_a, trust_b): (Vec<&str>, Vec<&str>) = match signing {
            Signing::OwnCas => (vec!["--peer-trust-bundle", &peer_b], vec!["--peer-trust-bundle", &peer_a]),
            Signing::CertManager => {
                let issuer = vec![
                    "--pki-issuer-kind",
                    "Issuer",
                    "--pki-issuer-name",
                    "corp-ca",
                    "--certificate-lifetime-seconds",
                    "30",
                ];
                (issuer.clone(), issuer)
            }
        };
        let operator_b = Operator::start(
            &b,
            &[
                &common[..],
                &["--pki-namespace", &ns, "--trust-domain", "cloud-b.oms", "--peer-trust-domains", "cloud-a.oms"],
                &trust_b,
            ]
            .concat(),
        )?;
        // The worker does not run as a pod here: tell the operator where its admin port is.
        let operator_a = Operator::start(
            &a,
            &[
                &common[..],
                &["--pki-namespace", &ns, "--trust-domain", "cloud-a.oms", "--bridge-admin-url", &worker_url],
                &trust_a,
            ]
            .concat(),
        )?;
        Ok(Self {
            kafka,
            nats,
            a,
            b,
            client_a,
            client_b,
            ns,
            operator_a,
            operator_b,
            worker_admin,
            gateway_admin,
            cas: (ca_a, ca_b),
            state,
            _namespaces: (ns_a, ns_b),
            _cert_managers: cert_managers,
        })
    }

    /// cloud-b: NATS behind a gateway, and the queue bridges of cloud-a write into; returns the
    /// gateway endpoint its status publishes.
    fn declare_cloud_b(&self) -> anyhow::Result<String> {
        let (b, ns) = (&self.b, self.ns.as_str());
        let gateway_port = free_server_port();
        b.apply(
            ns,
            &format!(
                "apiVersion: openmessaging.cloud/v1alpha1\nkind: MessagingAccessPoint\nmetadata: {{name: edge-nats}}\n\
                 spec: {{driver: nats, external: {{servers: ['{}']}}, gateway: {{enabled: true, port: {gateway_port}, advertisedHost: localhost}}}}\n---\n\
                 apiVersion: openmessaging.cloud/v1alpha1\nkind: Queue\nmetadata: {{name: orders-edge}}\n\
                 spec: {{accessPointRef: {{name: edge-nats}}}}\n",
                self.nats.address()
            ),
        )?;
        let edge = poll("status.gatewayEndpoint of edge-nats", DEADLINE, || {
            Ok(get(b, ns, "messagingaccesspoint/edge-nats")?.filter(|m| m["status"]["gatewayEndpoint"].is_string()))
        })?;
        let endpoint = edge["status"]["gatewayEndpoint"].as_str().unwrap_or_default().to_owned();
        assert_eq!(endpoint, format!("localhost:{gateway_port}"));
        for object in ["configmap", "deployment", "service", "networkpolicy"] {
            poll(&format!("gateway {object}"), DEADLINE, || get(b, ns, &format!("{object}/edge-nats-oms-gateway")))?;
        }
        poll("the NATS stream", DEADLINE, || {
            Ok(get(b, ns, "queue/orders-edge")?.filter(|q| condition_is(q, "Ready", "True")))
        })?;
        Ok(endpoint)
    }

    /// cloud-a: Kafka, cloud-b's gateway as an access point with a queue behind it, and the Bridge.
    fn declare_cloud_a(&self, gateway_endpoint: &str) -> anyhow::Result<()> {
        let (a, ns) = (&self.a, self.ns.as_str());
        a.apply(
            ns,
            &format!(
                "apiVersion: openmessaging.cloud/v1alpha1\nkind: MessagingAccessPoint\nmetadata: {{name: orders-kafka}}\n\
                 spec: {{driver: kafka, external: {{servers: ['{}']}}}}\n---\n\
                 apiVersion: openmessaging.cloud/v1alpha1\nkind: Queue\nmetadata: {{name: orders}}\n\
                 spec: {{accessPointRef: {{name: orders-kafka}}}}\n---\n\
                 apiVersion: openmessaging.cloud/v1alpha1\nkind: MessagingAccessPoint\nmetadata: {{name: cloud-b}}\n\
                 spec: {{driver: gateway, endpoint: '{gateway_endpoint}', remote: {{namespace: {ns}, name: edge-nats}}}}\n---\n\
                 apiVersion: openmessaging.cloud/v1alpha1\nkind: Queue\nmetadata: {{name: orders-b}}\n\
                 spec: {{accessPointRef: {{name: cloud-b}}, name: orders-edge}}\n---\n\
                 apiVersion: openmessaging.cloud/v1alpha1\nkind: Bridge\nmetadata: {{name: to-b}}\n\
                 spec: {{source: {{queueRef: {{name: orders}}}}, target: {{queueRef: {{name: orders-b}}}}, stalledAfter: {STALLED_AFTER_SECONDS}s}}\n",
                self.kafka.address()
            ),
        )?;
        poll("the Kafka topic", DEADLINE, || {
            Ok(get(a, ns, "queue/orders")?.filter(|q| condition_is(q, "Ready", "True")))
        })?;
        poll("the worker's certificate", DEADLINE, || get(a, ns, "secret/to-b-oms-tls"))?;
        poll("the worker's NetworkPolicy", DEADLINE, || get(a, ns, "networkpolicy/to-b-oms-bridge"))?;
        Ok(())
    }

    /// The gateway, from what cloud-b's operator wrote.
    async fn start_gateway(&self) -> anyhow::Result<PodProcess> {
        let files =
            pod_files(&self.client_b, &self.ns, "edge-nats-oms-gateway", "gateway.yaml", "edge-nats-oms-gateway-tls")
                .await?;
        let admin = self.gateway_admin.to_string();
        PodProcess::start(
            &format!("{}-gateway", self.ns),
            &files,
            &["gateway", "--config", "/etc/oms/config/gateway.yaml", "--admin-listen", &admin],
        )
    }

    /// The worker's files, from what cloud-a's operator wrote.
    async fn worker_files(&self) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        pod_files(&self.client_a, &self.ns, "to-b-oms-bridge", "worker.yaml", "to-b-oms-tls").await
    }

    fn start_worker(&self, files: &[(String, Vec<u8>)]) -> anyhow::Result<PodProcess> {
        let admin = self.worker_admin.to_string();
        PodProcess::start(
            &format!("{}-worker", self.ns),
            files,
            &["worker", "--config", "/etc/oms/config/worker.yaml", "--admin-listen", &admin],
        )
    }

    fn bridge(&self) -> anyhow::Result<Option<Value>> {
        get(&self.a, &self.ns, "bridge/to-b")
    }

    /// A real Prometheus scraping both operators, the worker and the gateway has the bridged count.
    fn check_prometheus(&self) -> anyhow::Result<Prometheus> {
        let prometheus = Prometheus::start(&[
            ("operator-a", self.operator_a.admin),
            ("operator-b", self.operator_b.admin),
            ("bridge", self.worker_admin),
            ("gateway", self.gateway_admin),
        ])?;
        let at_least = |query: &'static str, goal: u64| {
            poll(query, DEADLINE, || Ok(prometheus.query(query)?.filter(|v| *v >= goal)))
        };
        let sent = at_least("sum(oms_bridge_messages_sent_total)", MESSAGES_U64)?;
        let published = at_least("sum(oms_gateway_messages_published_total)", MESSAGES_U64)?;
        let reconciles = at_least("sum(oms_operator_reconcile_total)", 1)?;
        println!("two clouds: Prometheus: bridged {sent}, gateway published {published}, reconciles {reconciles}");
        assert_eq!(sent, MESSAGES_U64, "the bridge's count in Prometheus is the number of messages bridged");
        assert_eq!(published, MESSAGES_U64, "the gateway wrote each once");
        // Every target answered its latest scrape (a busy machine may miss one; the next one counts).
        poll("all four targets up", DEADLINE, || Ok(prometheus.query("count(up == 1)")?.filter(|n| *n == 4)))?;
        Ok(prometheus)
    }
}

/// Both clouds declared, cloud-b's gateway and cloud-a's worker running and ready: where each
/// stream through the gateway starts. `worker_files` start the worker again; `endpoint` is the
/// gateway's, as cloud-b's status publishes it.
struct Streaming {
    clouds: Clouds,
    endpoint: String,
    gateway: PodProcess,
    worker: PodProcess,
    worker_files: Vec<(String, Vec<u8>)>,
}

impl Streaming {
    async fn start(tag: &str, signing: Signing) -> anyhow::Result<Self> {
        let clouds = Clouds::start_with(tag, signing).await?;
        let endpoint = clouds.declare_cloud_b()?;
        clouds.declare_cloud_a(&endpoint)?;
        let mut gateway = clouds.start_gateway().await?;
        gateway.wait_ready(clouds.gateway_admin)?;
        let worker_files = clouds.worker_files().await?;
        let mut worker = clouds.start_worker(&worker_files)?;
        worker.wait_ready(clouds.worker_admin)?;
        Ok(Self { clouds, endpoint, gateway, worker, worker_files })
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bridge_in_cloud_a_feeds_a_queue_of_cloud_b_through_its_gateway_with_truthful_status() -> anyhow::Result<()> {
    let Streaming { clouds, gateway, mut worker, worker_files, .. } =
        Streaming::start("clouds", Signing::OwnCas).await?;

    let started = Instant::now();
    produce(&clouds.kafka, "orders", 0, MESSAGES).await?;
    let seen = arrivals(&clouds.nats, "orders-edge", MESSAGES, Duration::from_mins(2)).await?;
    let repeats = seen.values().filter(|n| **n > 1).count();
    println!(
        "two clouds: {} of {MESSAGES} arrived in cloud-b in {:.1}s, {repeats} more than once",
        seen.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        seen.len(),
        MESSAGES,
        "every message arrives; logs: worker {}, gateway {}",
        worker.log.display(),
        gateway.log.display()
    );
    assert_eq!(repeats, 0, "each message once");

    // The status tells what the worker did.
    let bridge = poll("Bridge status: forwarded all, lag 0, 1 active, Ready", Duration::from_mins(1), || {
        Ok(clouds.bridge()?.filter(|b| {
            b["status"]["forwardedTotal"] == MESSAGES
                // A Kafka source marks no redeliveries: the count is there, and 0.
                && b["status"]["duplicatesTotal"] == 0
                // One worker, with the topic's partitions: active, none standing by.
                && b["status"]["activeReplicas"] == 1
                && b["status"]["standbyReplicas"] == 0
                && b["status"]["lagMessages"] == 0
                && condition_is(b, "Ready", "True")
        }))
    })?;
    assert!(condition_is(&bridge, "Connected", "True") && condition_is(&bridge, "Stalled", "False"), "{bridge}");
    assert!(bridge["status"]["lastForwardedTime"].is_string(), "{bridge}");
    let columns = run_ok(clouds.a.kubectl().args(["-n", &clouds.ns, "get", "bridges"]))?;
    println!("two clouds: kubectl get bridges\n{columns}");
    assert!(columns.contains("LAG") && columns.contains("STALLED") && columns.contains("to-b"), "{columns}");
    let wide = run_ok(clouds.a.kubectl().args(["-n", &clouds.ns, "get", "bridges", "-o", "wide"]))?;
    assert!(["FORWARDED", "DUPLICATES", "ACTIVE", "STANDBY"].iter().all(|c| wide.contains(c)), "{wide}");
    let prometheus = clouds.check_prometheus()?;

    // Stop the worker: lag grows, nothing moves; Stalled within stalledAfter (plus a read or two).
    worker.kill();
    let stopped = Instant::now();
    produce(&clouds.kafka, "orders", MESSAGES, WHILE_STOPPED).await?;
    let bridge = poll("Stalled", Duration::from_secs(STALLED_AFTER_SECONDS * 3), || {
        Ok(clouds.bridge()?.filter(|b| condition_is(b, "Stalled", "True")))
    })?;
    let stalled_in = stopped.elapsed();
    println!(
        "two clouds: Stalled after {:.1}s (stalledAfter {STALLED_AFTER_SECONDS}s): {}",
        stalled_in.as_secs_f64(),
        condition(&bridge, "Stalled").map(ToString::to_string).unwrap_or_default()
    );
    assert!(stalled_in >= Duration::from_secs(STALLED_AFTER_SECONDS), "not before stalledAfter");
    assert!(condition_is(&bridge, "Ready", "False") && condition_is(&bridge, "Connected", "False"), "{bridge}");
    let gauge = format!("oms_operator_bridge_stalled{{namespace=\"{}\",bridge=\"to-b\"}}", clouds.ns);
    poll("the operator's stalled gauge in Prometheus", DEADLINE, || Ok(prometheus.query(&gauge)?.filter(|v| *v == 1)))?;

    // Start it again: it catches up and Stalled clears; the total counts both runs.
    let _worker = clouds.start_worker(&worker_files)?;
    let bridge = poll("Stalled clears and the total counts both runs", Duration::from_mins(1), || {
        Ok(clouds.bridge()?.filter(|b| {
            condition_is(b, "Stalled", "False") && b["status"]["forwardedTotal"] == MESSAGES + WHILE_STOPPED
        }))
    })?;
    assert!(condition_is(&bridge, "Ready", "True"), "{bridge}");
    let seen = arrivals(&clouds.nats, "orders-edge", MESSAGES + WHILE_STOPPED, Duration::from_mins(1)).await?;
    assert_eq!(seen.len(), MESSAGES + WHILE_STOPPED, "the messages produced while it was stopped arrive too");
    println!("two clouds: restarted worker caught up; forwardedTotal {}", bridge["status"]["forwardedTotal"]);
    Ok(())
}

/// Files as a pod mounts them: the path under `/etc/oms`, the content.
type MountedFiles = Vec<(String, Vec<u8>)>;

/// A certificate Secret's `tls.crt`, `tls.key` and `ca.crt` as a pod mounts them.
fn tls_files(cluster: &Cluster, namespace: &str, secret: &str) -> anyhow::Result<Option<MountedFiles>> {
    let Some(json) = get(cluster, namespace, &format!("secret/{secret}"))? else { return Ok(None) };
    let secret: Secret = serde_json::from_value(json)?;
    Ok(Some(secret.data.unwrap_or_default().into_iter().map(|(key, value)| (format!("tls/{key}"), value.0)).collect()))
}

/// cert-manager as the CA of both clouds (a CA Issuer on one shared root in each): the worker and
/// the gateway run from the Secrets the operators copied from cert-manager's and the stream
/// flows. cert-manager renews both certificates (30 s lifetime, at 20 s); each operator copies the
/// new one into the Secret it mounts; the test plays the kubelet and rewrites the mounted files;
/// the rest of the stream flows with neither process restarted, and the gateway then serves the
/// certificate cert-manager renewed.
#[tokio::test(flavor = "multi_thread")]
async fn with_cert_manager_as_both_clouds_ca_the_stream_flows_through_its_renewals() -> anyhow::Result<()> {
    let Streaming { clouds, endpoint, gateway, worker, .. } =
        Streaming::start("cm-clouds", Signing::CertManager).await?;
    let half = MESSAGES / 2;
    produce(&clouds.kafka, "orders", 0, half).await?;
    let seen = arrivals(&clouds.nats, "orders-edge", half, Duration::from_mins(1)).await?;
    assert_eq!(seen.len(), half, "the first half arrives; logs: {}, {}", worker.log.display(), gateway.log.display());

    let started = Instant::now();
    let mut renewed = HashMap::new();
    for (cluster, secret, process) in
        [(&clouds.a, "to-b-oms-tls", &worker), (&clouds.b, "edge-nats-oms-gateway-tls", &gateway)]
    {
        let mounted = process.file("tls/tls.crt")?;
        let files = poll(&format!("cert-manager's renewal copied into {secret}"), Duration::from_mins(1), || {
            Ok(tls_files(cluster, &clouds.ns, secret)?
                .filter(|files| files.iter().any(|(path, pem)| path == "tls/tls.crt" && *pem != mounted)))
        })?;
        // What the kubelet does when a mounted Secret changes.
        for (path, content) in &files {
            process.update_file(path, content)?;
        }
        renewed.insert(secret, files.into_iter().collect::<HashMap<_, _>>());
    }
    println!(
        "two clouds with cert-manager: both renewals copied {:.1}s after the first half",
        started.elapsed().as_secs_f64()
    );
    produce(&clouds.kafka, "orders", half, MESSAGES - half).await?;
    let seen = arrivals(&clouds.nats, "orders-edge", MESSAGES, Duration::from_mins(1)).await?;
    let repeats = seen.values().filter(|n| **n > 1).count();
    println!(
        "two clouds with cert-manager: {} of {MESSAGES} arrived across the renewals, {repeats} more than once",
        seen.len()
    );
    assert_eq!(
        seen.len(),
        MESSAGES,
        "every message arrives; logs: {}, {}",
        worker.log.display(),
        gateway.log.display()
    );

    // The gateway, never restarted, now serves the renewed certificate (asked with the worker's).
    let renewed_path = clouds.state.join("gateway-renewed.crt");
    std::fs::write(&renewed_path, &renewed["edge-nats-oms-gateway-tls"]["tls/tls.crt"])?;
    let fingerprint = |path: &std::path::Path| {
        run_ok(
            std::process::Command::new("openssl").args(["x509", "-noout", "-fingerprint", "-sha256", "-in"]).arg(path),
        )
    };
    let served = clouds.state.join("gateway-served.crt");
    let client = clouds.state.join("client");
    std::fs::create_dir_all(&client)?;
    for (path, content) in &renewed["to-b-oms-tls"] {
        std::fs::write(client.join(path.trim_start_matches("tls/")), content)?;
    }
    run_ok(std::process::Command::new("sh").arg("-c").arg(format!(
        "openssl s_client -connect {endpoint} -cert {dir}/tls.crt -key {dir}/tls.key </dev/null 2>/dev/null \
         | openssl x509 -out {served}",
        dir = client.display(),
        served = served.display()
    )))?;
    let (served, renewed) = (fingerprint(&served)?, fingerprint(&renewed_path)?);
    println!("two clouds with cert-manager: the gateway serves {}", served.trim());
    assert_eq!(served, renewed, "the gateway serves the certificate cert-manager renewed");
    Ok(())
}

/// A client identity for the gateway: `spiffe://<domain>/ns/<namespace>/bridge/probe` signed by
/// `ca`, trusting cloud-b's CA for the gateway's certificate.
fn identity(clouds: &Clouds, label: &str, ca: &oms_pki::Ca, domain: &str, namespace: &str) -> anyhow::Result<TlsPaths> {
    let id = oms_pki::SpiffeId {
        trust_domain: domain.to_owned(),
        namespace: namespace.to_owned(),
        kind: "bridge".to_owned(),
        name: "probe".to_owned(),
    };
    let issued = ca.issue(&oms_pki::Leaf::new(&id, Vec::new(), Duration::from_hours(1)))?;
    let (cert, key) = (clouds.state.join(format!("{label}.crt")), clouds.state.join(format!("{label}.key")));
    std::fs::write(&cert, issued.cert_pem)?;
    std::fs::write(&key, issued.key_pem)?;
    Ok(TlsPaths { ca: clouds.state.join("cloud-b.oms.pem"), cert, key })
}

#[tokio::test(flavor = "multi_thread")]
async fn through_the_other_clouds_gateway_a_peer_reaches_only_its_own_tenants_queues() -> anyhow::Result<()> {
    const ATTEMPTS: usize = 3;
    let clouds = Clouds::start("tenancy").await?;
    let endpoint = clouds.declare_cloud_b()?;
    let mut gateway = clouds.start_gateway().await?;
    gateway.wait_ready(clouds.gateway_admin)?;
    let access_point = format!("{}/edge-nats", clouds.ns);
    let stranger = oms_pki::Ca::generate("a CA nobody trusts", Duration::from_hours(1))?;
    let (ca_a, ns) = (&clouds.cas.0, clouds.ns.as_str());
    // Who knocks, and whether they may in: only the queue's own tenant, from a peered cloud.
    let peers = [
        ("own tenant, cloud-a", identity(&clouds, "own", ca_a, "cloud-a.oms", ns)?, true),
        ("other tenant, cloud-a", identity(&clouds, "other", ca_a, "cloud-a.oms", "globex")?, false),
        ("own tenant, unpeered trust domain", identity(&clouds, "unpeered", ca_a, "cloud-c.oms", ns)?, false),
        ("own tenant, untrusted CA", identity(&clouds, "untrusted", &stranger, "cloud-a.oms", ns)?, false),
    ];
    let mut refused_successes = 0;
    for (who, tls, allowed) in &peers {
        let mut successes = 0;
        for _ in 0..ATTEMPTS {
            successes +=
                usize::from(oms_e2e::gateway_publish_attempt(&endpoint, &access_point, "orders-edge", tls).await);
            successes +=
                usize::from(oms_e2e::gateway_consume_attempt(&endpoint, &access_point, "orders-edge", tls).await);
        }
        println!("two clouds tenancy: {who}: {} attempts (publish, consume), {successes} succeeded", 2 * ATTEMPTS);
        if *allowed {
            assert_eq!(successes, 2 * ATTEMPTS, "{who}: the queue's own tenant gets in");
        } else {
            refused_successes += successes;
        }
    }
    println!(
        "two clouds tenancy: {} attempts by peers without the right, {refused_successes} succeeded",
        2 * ATTEMPTS * 3
    );
    assert_eq!(refused_successes, 0, "no peer without the right gets in");
    let denied = oms_e2e::metric(clouds.gateway_admin, "oms_gateway_denied_total", Some("publish"));
    assert!(denied >= ATTEMPTS as u64, "the gateway counts its authorization denials: {denied}");
    Ok(())
}
