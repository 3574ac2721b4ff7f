//! The broker harness: each broker kind starts as a real local process, a real client round-trips
//! a message through it, and `down` leaves none of its processes behind.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use oms_e2e::{free_server_port, poll, repo_root, run, run_ok};

fn broker(args: &[&str]) -> Command {
    let mut command = oms_e2e::broker_script();
    command.args(args);
    command
}

/// Processes whose command line mentions the broker's state directory.
fn leftovers(name: &str) -> anyhow::Result<String> {
    let dir = repo_root().join("e2e/.state/brokers").join(name);
    let output = run(Command::new("pgrep").arg("-af").arg(dir.to_string_lossy().as_ref()))?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn round_trip(kind: &str) -> anyhow::Result<()> {
    let name = format!("t-{kind}-{}", std::process::id());
    let port = free_server_port().to_string();
    run_ok(&mut broker(&["up", kind, &name, &port]))?;
    let smoke = run(&mut broker(&["smoke", &name]));
    // Stopped whatever the smoke test said, so that a failure leaves nothing running.
    run_ok(&mut broker(&["down", &name]))?;
    let smoke = smoke?;
    assert!(
        smoke.status.success(),
        "{kind} smoke failed:\n{}\n{}",
        String::from_utf8_lossy(&smoke.stdout),
        String::from_utf8_lossy(&smoke.stderr)
    );
    let left = leftovers(&name)?;
    assert!(left.trim().is_empty(), "{kind}: processes left after down:\n{left}");
    Ok(())
}

#[test]
fn kafka_round_trips_a_message_and_stops_cleanly() -> anyhow::Result<()> {
    round_trip("kafka")
}

#[test]
fn nats_round_trips_a_message_and_stops_cleanly() -> anyhow::Result<()> {
    round_trip("nats")
}

#[test]
fn rabbitmq_round_trips_a_message_and_stops_cleanly() -> anyhow::Result<()> {
    round_trip("rabbitmq")
}

#[test]
fn mqtt_round_trips_a_message_and_stops_cleanly() -> anyhow::Result<()> {
    round_trip("mqtt")
}

/// A Kafka node of [`kafka_opens_its_client_port_only_once_its_controller_unfenced_it`], killed
/// when dropped.
struct KafkaNode(Child);

impl KafkaNode {
    fn start(dir: &Path, role: &str) -> anyhow::Result<Self> {
        let log = std::fs::File::create(dir.join(format!("{role}.log")))?;
        let child = kafka_java(dir)
            .args(["-Xmx256m", "kafka.Kafka"])
            .arg(dir.join(format!("{role}.properties")))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        Ok(Self(child))
    }
}

impl Drop for KafkaNode {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether process `pid` has a socket listening on `port`: a LISTEN entry of /proc's tcp tables
/// (tcp6 too: Java binds 127.0.0.1 on an IPv6 socket) whose inode is one of its descriptors.
fn listens(pid: u32, port: u16) -> bool {
    let table = ["tcp", "tcp6"].map(|t| std::fs::read_to_string(format!("/proc/{pid}/net/{t}")).unwrap_or_default());
    let listening: Vec<String> = table
        .iter()
        .flat_map(|t| t.lines().skip(1))
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields.get(1)?.rsplit_once(':').and_then(|(_, p)| u16::from_str_radix(p, 16).ok())?;
            let inode = fields.get(9)?;
            (local_port == port && fields.get(3) == Some(&"0A")).then(|| format!("socket:[{inode}]"))
        })
        .collect();
    std::fs::read_dir(format!("/proc/{pid}/fd")).into_iter().flatten().flatten().any(|fd| {
        std::fs::read_link(fd.path()).is_ok_and(|target| listening.iter().any(|l| target.as_os_str() == l.as_str()))
    })
}

/// `java` with Kafka's jars (tools.sh kafka) and a log4j2 configuration that logs to stdout.
fn kafka_java(dir: &Path) -> Command {
    let mut java = Command::new("java");
    java.arg(format!("-Dlog4j2.configurationFile={}", dir.join("log4j2.properties").display()))
        .arg("-cp")
        .arg(format!("{}/libs/*", oms_e2e::tool("kafka-libs").display()));
    java
}

/// Why a TCP readiness probe on a managed Kafka pod's client port means "serving": Kafka 4 binds a
/// broker's client listener only once the controller has unfenced it. A broker-only node whose
/// controller is down runs and waits for it with that port closed; once the controller starts,
/// the port opens, and by then the broker has logged that it was unfenced.
#[test]
fn kafka_opens_its_client_port_only_once_its_controller_unfenced_it() -> anyhow::Result<()> {
    const DEADLINE: Duration = Duration::from_mins(2);
    let dir = oms_e2e::state_dir(&format!("kafka-unfenced-{}", std::process::id()))?;
    let (client_port, controller_port) = (free_server_port(), free_server_port());
    std::fs::write(
        dir.join("log4j2.properties"),
        "rootLogger.level = INFO\nrootLogger.appenderRef.out.ref = OUT\nappender.out.type = Console\n\
         appender.out.name = OUT\nappender.out.layout.type = PatternLayout\n\
         appender.out.layout.pattern = %d{HH:mm:ss.SSS} %p %m (%c)%n\n",
    )?;
    for (role, node_id, listener) in [
        ("controller", 1, format!("CONTROLLER://127.0.0.1:{controller_port}")),
        ("broker", 2, format!("PLAINTEXT://127.0.0.1:{client_port}")),
    ] {
        std::fs::write(
            dir.join(format!("{role}.properties")),
            format!(
                "process.roles={role}\nnode.id={node_id}\ncontroller.quorum.voters=1@127.0.0.1:{controller_port}\n\
                 listeners={listener}\ncontroller.listener.names=CONTROLLER\n\
                 listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\n\
                 offsets.topic.replication.factor=1\nlog.dirs={}\n\
                 initial.broker.registration.timeout.ms={}\n",
                dir.join(role).display(),
                // The broker waits for a controller that starts later: on a busy machine the
                // default minute can pass before it serves, and the broker would give up.
                DEADLINE.as_millis() * 2,
            ),
        )?;
    }
    let cluster_id = run_ok(kafka_java(&dir).args(["kafka.tools.StorageTool", "random-uuid"]))?;
    for role in ["controller", "broker"] {
        run_ok(
            kafka_java(&dir)
                .args(["kafka.tools.StorageTool", "format", "-t", cluster_id.trim(), "-c"])
                .arg(dir.join(format!("{role}.properties"))),
        )?;
    }
    let broker_log = || std::fs::read_to_string(dir.join("broker.log")).unwrap_or_default();

    let broker = KafkaNode::start(&dir, "broker")?;
    // The broker's own listener: the port was free when drawn, and another test's process may take
    // it meanwhile, which a connect alone would count.
    let client_port_open =
        || listens(broker.0.id(), client_port) && TcpStream::connect(("127.0.0.1", client_port)).is_ok();
    poll("the broker waiting for its controller", DEADLINE, || {
        Ok(broker_log().contains("Waiting for the controller to acknowledge that we are caught up").then_some(()))
    })?;
    assert!(!client_port_open(), "the client port is open while the broker waits for its controller");
    let waiting = broker_log().lines().count();

    let _controller = KafkaNode::start(&dir, "controller")?;
    poll("the broker's client port open", DEADLINE, || Ok(client_port_open().then_some(())))?;
    let log = broker_log();
    assert!(
        log.contains("The broker has been unfenced"),
        "the client port opened before the broker logged that it was unfenced:\n{log}"
    );
    println!(
        "kafka: client port {client_port} refused while the broker waited for its controller (log line {waiting}); \
         open once unfenced"
    );
    Ok(())
}
