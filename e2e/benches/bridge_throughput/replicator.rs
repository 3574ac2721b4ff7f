//! The replicators under test, each started for one run between a source and a target queue:
//! oms-bridge and MirrorMaker 2 as processes of their own (their peak RSS and CPU time are read
//! from /proc), the Shovel plugin and JetStream stream sourcing inside the target broker (no
//! process of their own to measure). oms-bridge also runs as a worker in "cloud-a" writing through
//! an `oms-bridge gateway` of "cloud-b" over mTLS: two processes, both measured.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use async_nats::jetstream;
use oms_e2e::{FaultProxy, free_server_port, repo_root, run_ok, workspace_binary};

use crate::gateway;
use crate::load::{Endpoint, NATS_STREAM_MAX_BYTES, nats_context};

/// Messages a replicator may hold unconfirmed: oms-bridge's `inFlight` and the Shovel's
/// prefetch, so the two run with the same window (also the producers' window).
pub const WINDOW: u32 = 1000;

/// The window of a worker on a link with added round trip, as its user would size it: the bench's
/// window plus what the link holds at ~70,000 msg/s (20 ms: 1,400), rounded up.
pub const LONG_LINK_WINDOW: u32 = 4000;

/// The worker's window on a route with `added_rtt_ms` more round trip; `OMS_BENCH_WINDOW` sets
/// it for every route while developing (an A/B of the window alone: producers, the Shovel's
/// prefetch and the documents keep theirs).
pub fn window_for(added_rtt_ms: u32) -> u32 {
    if let Some(window) = std::env::var("OMS_BENCH_WINDOW").ok().and_then(|w| w.parse().ok()) {
        return window;
    }
    if added_rtt_ms > 0 { LONG_LINK_WINDOW } else { WINDOW }
}

/// How long a started gateway may take to listen.
const LISTEN_DEADLINE: Duration = Duration::from_secs(20);

/// The JetStream domain of the source NATS server; the target reaches its API over a leafnode.
pub const NATS_SOURCE_DOMAIN: &str = "src";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replicator {
    /// No replicator: the producer writes to the target broker itself (the ceiling).
    Raw,
    OmsBridge,
    /// The same worker, writing to the target through an mTLS gateway (a cloud boundary).
    OmsBridgeViaGateway,
    /// MirrorMaker 2 on Connect's defaults.
    MirrorMaker2,
    /// MirrorMaker 2 as a user tunes it for throughput: a task per partition, an idempotent
    /// producer with larger batches and 5 requests in flight, bigger fetches and polls.
    MirrorMaker2Tuned,
    Shovel,
    JetStreamSourcing,
}

impl Replicator {
    pub fn label(self) -> &'static str {
        match self {
            Replicator::Raw => "raw target (ceiling)",
            // The same replicator as the direct run: the route, not the label, tells them apart.
            Replicator::OmsBridge | Replicator::OmsBridgeViaGateway => "oms-bridge",
            Replicator::MirrorMaker2 => "Kafka MirrorMaker 2",
            Replicator::MirrorMaker2Tuned => "Kafka MirrorMaker 2 (tuned)",
            Replicator::Shovel => "RabbitMQ Shovel",
            Replicator::JetStreamSourcing => "JetStream sourcing",
        }
    }

    /// Where the replicator runs, as the report says it.
    pub fn runs_in(self) -> &'static str {
        match self {
            Replicator::Raw => "none",
            Replicator::OmsBridge => "own process (release build)",
            Replicator::OmsBridgeViaGateway => "two own processes: worker + mTLS gateway (release build)",
            Replicator::MirrorMaker2 => "own process (JVM, dedicated mode, Connect defaults)",
            Replicator::MirrorMaker2Tuned => "own process (JVM, dedicated mode, tuned)",
            Replicator::Shovel => "in broker (rabbitmq_shovel on the target node)",
            Replicator::JetStreamSourcing => "in broker (the target nats-server)",
        }
    }

    /// MirrorMaker 2 with the identity policy keeps the topic's name; the others copy into a
    /// queue of their own name (NATS needs distinct subjects: the two servers share an account
    /// over the leafnode).
    pub fn target_queue(self, source_queue: &str) -> String {
        match self {
            Replicator::MirrorMaker2 | Replicator::MirrorMaker2Tuned => source_queue.to_owned(),
            _ => format!("{source_queue}-copy"),
        }
    }

    /// JetStream sourcing is a property of the target stream: the replicator creates it.
    pub fn creates_target_queue(self) -> bool {
        self == Replicator::JetStreamSourcing
    }
}

/// A started replicator; stopped (killed, or its broker-side definition deleted) on drop.
pub struct Running {
    /// The replicator's own processes by role (`worker`, `gateway`, `mirror-maker`), if any.
    processes: Vec<OwnProcess>,
    /// The target broker's management port and the shovel's name.
    shovel: Option<(u16, String)>,
    /// The link between the worker and the gateway where a run adds round-trip time (the
    /// network, not the replicator: its CPU counts in the whole run's only).
    link: Option<FaultProxy>,
}

/// One process of a replicator, and the log that says why it exited.
struct OwnProcess {
    role: &'static str,
    child: Child,
    log: PathBuf,
}

/// Starts `replicator` from `source` to `target`; `added_rtt_ms` slows the gateway route's link.
pub async fn start(
    replicator: Replicator,
    name: &str,
    source: &Endpoint,
    target: &Endpoint,
    target_management_port: Option<u16>,
    added_rtt_ms: u32,
) -> anyhow::Result<Running> {
    let mut running = Running { processes: Vec::new(), shovel: None, link: None };
    match replicator {
        Replicator::Raw => {}
        Replicator::OmsBridge => {
            let target_yaml = format!(
                "{{driver: {}, servers: ['{}'], queue: {}}}",
                target.kind.driver(),
                target.address,
                target.queue
            );
            running.start_worker(name, "bench", source, &target_yaml, window_for(0))?;
        }
        Replicator::OmsBridgeViaGateway => {
            let gateway = gateway::prepare(name, target)?;
            let mut command = Command::new(workspace_binary("oms-bridge"));
            command.args(["gateway", "--config"]).arg(&gateway.config);
            let log = gateway.config.with_extension("log");
            running.spawn("gateway", command, &log, &log)?;
            running.wait_listening(gateway.port).await?;
            let mut port = gateway.port;
            if added_rtt_ms > 0 {
                let link = FaultProxy::start(&format!("127.0.0.1:{}", gateway.port))?;
                link.add_round_trip(added_rtt_ms)?;
                port = link.listen;
                running.link = Some(link);
            }
            // Tenant acme's worker in cloud-a, dialling the gateway by the name on its certificate.
            let target_yaml = format!(
                "{{driver: gateway, servers: ['localhost:{port}'], accessPoint: {}, queue: {}, tls: {}}}",
                gateway::ACCESS_POINT,
                target.queue,
                gateway.bridge_tls.yaml()
            );
            running.start_worker(name, gateway::TENANT, source, &target_yaml, window_for(added_rtt_ms))?;
        }
        Replicator::MirrorMaker2 | Replicator::MirrorMaker2Tuned => {
            let dir = oms_e2e::state_dir("bench")?;
            let properties = dir.join(format!("{name}-mm2.properties"));
            let tuned = replicator == Replicator::MirrorMaker2Tuned;
            std::fs::write(&properties, mirror_maker_properties(source, target, tuned))?;
            let log = dir.join(format!("{name}-mm2.log"));
            let log4j = dir.join(format!("{name}-mm2-log4j2.properties"));
            std::fs::write(&log4j, log4j_to_file(&log))?;
            let mut command = Command::new("java");
            // The heap and collector of Kafka's own connect-mirror-maker.sh.
            command
                .args(["-Xms256m", "-Xmx2g", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true"])
                .arg(format!("-Dlog4j2.configurationFile={}", log4j.display()))
                .arg("-cp")
                .arg(repo_root().join(".bin/kafka-mirror-libs/libs/*"))
                .arg("org.apache.kafka.connect.mirror.MirrorMaker")
                .arg(&properties);
            running.spawn("mirror-maker", command, &dir.join(format!("{name}-mm2.stdout.log")), &log)?;
        }
        Replicator::Shovel => {
            let port = target_management_port.context("the Shovel needs the target's management port")?;
            let definition = serde_json::json!({"value": {
                "src-protocol": "amqp091",
                "src-uri": format!("amqp://guest:guest@{}", source.address),
                "src-queue": source.queue,
                "src-prefetch-count": WINDOW,
                "dest-protocol": "amqp091",
                // The node the shovel runs on (the target), through a direct connection.
                "dest-uri": "amqp://",
                "dest-queue": target.queue,
                // Like oms-bridge: ack the source only after the target confirmed.
                "ack-mode": "on-confirm",
            }});
            management(port, "PUT", &format!("/api/parameters/shovel/%2F/{name}"), Some(&definition.to_string()))?;
            running.shovel = Some((port, name.to_owned()));
        }
        Replicator::JetStreamSourcing => {
            let source_api = format!("$JS.{NATS_SOURCE_DOMAIN}.API");
            nats_context(&target.address)
                .await?
                .create_stream(jetstream::stream::Config {
                    name: target.queue.clone(),
                    max_bytes: NATS_STREAM_MAX_BYTES,
                    sources: Some(vec![jetstream::stream::Source {
                        name: source.queue.clone(),
                        external: Some(jetstream::stream::External { api_prefix: source_api, delivery_prefix: None }),
                        ..Default::default()
                    }]),
                    ..Default::default()
                })
                .await?;
        }
    }
    Ok(running)
}

impl Running {
    /// An `oms-bridge worker` of tenant `namespace` from `source` into `target_yaml` (a config
    /// endpoint), with `window` messages in flight at most.
    fn start_worker(
        &mut self,
        name: &str,
        namespace: &str,
        source: &Endpoint,
        target_yaml: &str,
        window: u32,
    ) -> anyhow::Result<()> {
        let config = oms_e2e::state_dir("bench")?.join(format!("{name}.yaml"));
        std::fs::write(
            &config,
            format!(
                "bridge: {{name: {name}, namespace: {namespace}}}\n\
                 source: {{driver: {}, servers: ['{}'], queue: {}}}\n\
                 target: {target_yaml}\n\
                 inFlight: {window}\nadmin: {{listen: '127.0.0.1:{}'}}\n",
                source.kind.driver(),
                source.address,
                source.queue,
                free_server_port(),
            ),
        )?;
        let mut command = Command::new(workspace_binary("oms-bridge"));
        command.args(["worker", "--config"]).arg(&config);
        let log = config.with_extension("log");
        self.spawn("worker", command, &log, &log)
    }

    /// Starts `command` with its output in `output`; `log` is what `check_alive` shows if it exits.
    fn spawn(&mut self, role: &'static str, command: Command, output: &Path, log: &Path) -> anyhow::Result<()> {
        self.processes.push(OwnProcess::spawn(role, command, output, log)?);
        Ok(())
    }

    /// Until the gateway accepts connections, so the worker's first dial finds it. (Its readiness
    /// turns true before it binds; the probe's bare connection shows in its log as a refused
    /// handshake.)
    async fn wait_listening(&mut self, port: u16) -> anyhow::Result<()> {
        let started = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            self.check_alive()?;
            anyhow::ensure!(started.elapsed() < LISTEN_DEADLINE, "nothing listens on port {port}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Fails, with the end of its log, if one of the replicator's processes has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for process in &mut self.processes {
            if let Some(status) = process.child.try_wait()? {
                let log = std::fs::read_to_string(&process.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                bail!(
                    "the replicator's {} exited ({status}):\n{}",
                    process.role,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
        Ok(())
    }

    /// Peak resident set (VmHWM) of each of the replicator's own processes, by role.
    pub fn peak_rss_kib(&self) -> Vec<(&'static str, Option<u64>)> {
        self.processes.iter().map(|p| (p.role, p.peak_rss_kib())).collect()
    }

    /// CPU time (user + system) each of the replicator's own processes has used, by role.
    pub fn cpu_seconds(&self) -> Vec<(&'static str, Option<f64>)> {
        self.processes.iter().map(|p| (p.role, p.cpu_seconds())).collect()
    }
}

impl OwnProcess {
    fn spawn(role: &'static str, mut command: Command, output: &Path, log: &Path) -> anyhow::Result<Self> {
        let file = std::fs::File::create(output)?;
        let child = command
            .stdout(file.try_clone()?)
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {command:?}"))?;
        Ok(Self { role, child, log: log.to_owned() })
    }

    fn peak_rss_kib(&self) -> Option<u64> {
        oms_e2e::proc_status_kib(self.child.id(), "VmHWM:").ok()
    }

    fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        // Fields after the command name, which may hold spaces: utime and stime are 14 and 15.
        let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split(' ').collect();
        let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        Some(ticks / clock_ticks_per_second())
    }
}

impl Drop for OwnProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // The worker before the gateway it writes through: no refused-connection noise at the end.
        while let Some(process) = self.processes.pop() {
            drop(process);
        }
        drop(self.link.take());
        if let Some((port, name)) = &self.shovel {
            let _ = management(*port, "DELETE", &format!("/api/parameters/shovel/%2F/{name}"), None);
        }
    }
}

pub fn clock_ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        run_ok(Command::new("getconf").arg("CLK_TCK")).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(100.0)
    })
}

/// One call of RabbitMQ's management API (curl, as the fault tests call toxiproxy's).
fn management(port: u16, method: &str, path: &str, body: Option<&str>) -> anyhow::Result<String> {
    let mut command = Command::new("curl");
    command.args(["-sSf", "-u", "guest:guest", "-X", method, &format!("http://127.0.0.1:{port}{path}")]);
    if let Some(body) = body {
        command.args(["-H", "Content-Type: application/json", "-d", body]);
    }
    run_ok(&mut command)
}

/// MirrorMaker 2 in dedicated mode, one direction (src -> dst), one topic, the topic's name
/// kept; one task on Connect's defaults, else tuned. Replication factors are 1: each cluster is
/// a single broker.
fn mirror_maker_properties(source: &Endpoint, target: &Endpoint, tuned: bool) -> String {
    let mut properties = format!(
        "clusters = src, dst\n\
         src.bootstrap.servers = {}\n\
         dst.bootstrap.servers = {}\n\
         src->dst.enabled = true\n\
         src->dst.topics = {}\n\
         dst->src.enabled = false\n\
         replication.policy.class = org.apache.kafka.connect.mirror.IdentityReplicationPolicy\n\
         replication.factor = 1\n\
         checkpoints.topic.replication.factor = 1\n\
         heartbeats.topic.replication.factor = 1\n\
         offset-syncs.topic.replication.factor = 1\n\
         offset.storage.replication.factor = 1\n\
         status.storage.replication.factor = 1\n\
         config.storage.replication.factor = 1\n\
         # No authorizer on these brokers: ACL sync would only log errors.\n\
         sync.topic.acls.enabled = false\n",
        source.address, target.address, source.queue
    );
    properties.push_str(if tuned { MIRROR_MAKER_TUNED } else { "tasks.max = 1\n" });
    properties
}

/// What a user tuning MirrorMaker 2 for throughput sets (the producer and consumer settings per
/// cluster alias, `dst.producer.*` for the producer writing to the target): one task per partition
/// of the 3-partition workloads (3 tasks), an idempotent producer with 5 requests in flight, 256 KiB batches
/// after up to 10 ms, and fetches and polls large enough to fill them.
const MIRROR_MAKER_TUNED: &str = "\
tasks.max = 3
dst.producer.enable.idempotence = true
dst.producer.acks = all
dst.producer.max.in.flight.requests.per.connection = 5
dst.producer.batch.size = 262144
dst.producer.linger.ms = 10
dst.producer.buffer.memory = 134217728
src.consumer.max.poll.records = 2000
src.consumer.fetch.min.bytes = 65536
src.consumer.max.partition.fetch.bytes = 8388608
";

fn log4j_to_file(log: &Path) -> String {
    format!(
        "status = warn\n\
         appender.file.type = File\n\
         appender.file.name = FILE\n\
         appender.file.fileName = {}\n\
         appender.file.layout.type = PatternLayout\n\
         appender.file.layout.pattern = [%d] %p %m (%c)%n\n\
         rootLogger.level = INFO\n\
         rootLogger.appenderRef.file.ref = FILE\n",
        log.display()
    )
}
