//! The replicators under test, each started for one run between a source and a target queue:
//! oms-bridge and MirrorMaker 2 as processes of their own (their peak RSS and CPU time are read
//! from /proc), the Shovel plugin and JetStream stream sourcing inside the target broker (no
//! process of their own to measure).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use anyhow::{Context as _, bail};
use async_nats::jetstream;
use oms_e2e::{free_server_port, repo_root, run_ok, workspace_binary};

use crate::load::{Endpoint, nats_context};

/// Messages a replicator may hold unconfirmed: oms-bridge's `inFlight` and the Shovel's
/// prefetch, so the two run with the same window (also the producers' window).
pub const WINDOW: u32 = 1000;

/// The JetStream domain of the source NATS server; the target reaches its API over a leafnode.
pub const NATS_SOURCE_DOMAIN: &str = "src";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replicator {
    /// No replicator: the producer writes to the target broker itself (the ceiling).
    Raw,
    OmsBridge,
    MirrorMaker2,
    Shovel,
    JetStreamSourcing,
}

impl Replicator {
    pub fn label(self) -> &'static str {
        match self {
            Replicator::Raw => "raw target (ceiling)",
            Replicator::OmsBridge => "oms-bridge",
            Replicator::MirrorMaker2 => "Kafka MirrorMaker 2",
            Replicator::Shovel => "RabbitMQ Shovel",
            Replicator::JetStreamSourcing => "JetStream sourcing",
        }
    }

    /// Where the replicator runs, as the report says it.
    pub fn runs_in(self) -> &'static str {
        match self {
            Replicator::Raw => "none",
            Replicator::OmsBridge => "own process (release build)",
            Replicator::MirrorMaker2 => "own process (JVM, dedicated mode)",
            Replicator::Shovel => "in broker (rabbitmq_shovel on the target node)",
            Replicator::JetStreamSourcing => "in broker (the target nats-server)",
        }
    }

    /// MirrorMaker 2 with the identity policy keeps the topic's name; the others copy into a
    /// queue of their own name (NATS needs distinct subjects: the two servers share an account
    /// over the leafnode).
    pub fn target_queue(self, source_queue: &str) -> String {
        match self {
            Replicator::MirrorMaker2 => source_queue.to_owned(),
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
    child: Option<Child>,
    log: Option<PathBuf>,
    /// The target broker's management port and the shovel's name.
    shovel: Option<(u16, String)>,
}

/// Where configs and logs of the bench's own processes go.
pub fn state_dir() -> anyhow::Result<PathBuf> {
    let dir = repo_root().join("e2e/.state/bench");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

pub async fn start(
    replicator: Replicator,
    name: &str,
    source: &Endpoint,
    target: &Endpoint,
    target_management_port: Option<u16>,
) -> anyhow::Result<Running> {
    let mut running = Running { child: None, log: None, shovel: None };
    match replicator {
        Replicator::Raw => {}
        Replicator::OmsBridge => {
            let config = state_dir()?.join(format!("{name}.yaml"));
            std::fs::write(
                &config,
                format!(
                    "bridge: {{name: {name}, namespace: bench}}\n\
                     source: {{driver: {}, servers: ['{}'], queue: {}}}\n\
                     target: {{driver: {}, servers: ['{}'], queue: {}}}\n\
                     inFlight: {WINDOW}\nadmin: {{listen: '127.0.0.1:{}'}}\n",
                    source.kind.driver(),
                    source.address,
                    source.queue,
                    target.kind.driver(),
                    target.address,
                    target.queue,
                    free_server_port(),
                ),
            )?;
            let mut command = Command::new(workspace_binary("oms-bridge"));
            command.args(["worker", "--config"]).arg(&config);
            running.spawn(command, &config.with_extension("log"))?;
        }
        Replicator::MirrorMaker2 => {
            let dir = state_dir()?;
            let properties = dir.join(format!("{name}-mm2.properties"));
            std::fs::write(&properties, mirror_maker_properties(source, target))?;
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
            running.spawn(command, &dir.join(format!("{name}-mm2.stdout.log")))?;
            running.log = Some(log);
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
    fn spawn(&mut self, mut command: Command, log: &Path) -> anyhow::Result<()> {
        let file = std::fs::File::create(log)?;
        let child = command
            .stdout(file.try_clone()?)
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {command:?}"))?;
        self.child = Some(child);
        self.log.get_or_insert_with(|| log.to_owned());
        Ok(())
    }

    /// Fails, with the end of its log, if the replicator's process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(child) = &mut self.child
            && let Some(status) = child.try_wait()?
        {
            let log = self.log.as_ref().and_then(|l| std::fs::read_to_string(l).ok()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            bail!("the replicator exited ({status}):\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
        Ok(())
    }

    /// Peak resident set (VmHWM) of the replicator's process, if it has one.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().trim_end_matches("kB").trim().parse().ok()
    }

    /// CPU time (user + system) the replicator's process has used, in seconds.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let pid = self.child.as_ref()?.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name, which may hold spaces: utime and stime are 14 and 15.
        let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split(' ').collect();
        let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        Some(ticks / clock_ticks_per_second())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
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

/// MirrorMaker 2 in dedicated mode, one direction (src -> dst), one topic, one task, the
/// topic's name kept. Replication factors are 1: each cluster is a single broker.
fn mirror_maker_properties(source: &Endpoint, target: &Endpoint) -> String {
    format!(
        "clusters = src, dst\n\
         src.bootstrap.servers = {}\n\
         dst.bootstrap.servers = {}\n\
         src->dst.enabled = true\n\
         src->dst.topics = {}\n\
         dst->src.enabled = false\n\
         replication.policy.class = org.apache.kafka.connect.mirror.IdentityReplicationPolicy\n\
         tasks.max = 1\n\
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
    )
}

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
