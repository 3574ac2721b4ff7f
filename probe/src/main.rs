//! `oms-probe`: the readiness probe the operator puts into managed brokers' pods. An init
//! container runs `oms-probe install` from the operator's image to copy it into a volume the
//! broker's container mounts; the kubelet then runs it there. It prints one line on failure (the
//! kubelet shows it in the pod's events) and exits 1; never a secret.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use oms_probe::net::Tls;
use oms_probe::{LoginTarget, RocketmqPod, kafka, probe_amqp, probe_kafka, probe_mqtt, probe_rocketmq};

#[derive(Debug, Parser)]
#[command(version, about = "Readiness probes that speak the broker's protocol")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Copies this binary to DEST (an init container filling the volume the broker mounts).
    Install { dest: PathBuf },
    /// Ready when the Kafka broker on this pod takes a SCRAM-SHA-512 login and lists itself, by
    /// the node id of this pod's ordinal (POD_NAME), at POD_NAME.DOMAIN:PORT.
    Kafka(Broker),
    /// Ready when RabbitMQ on this pod takes a PLAIN login and opens the virtual host.
    Amqp {
        #[command(flatten)]
        broker: Broker,
        #[arg(long, default_value = "/")]
        vhost: String,
    },
    /// Ready when Mosquitto on this pod accepts an MQTT 3.1.1 login.
    Mqtt(Broker),
    /// Ready when RocketMQ's proxy on this pod answers HTTP/2 (gRPC) on PORT and the name server
    /// on this pod lists this pod's broker (named POD_NAME) at POD_NAME.DOMAIN:BROKER_PORT.
    Rocketmq {
        /// The proxy's gRPC port on 127.0.0.1.
        #[arg(long)]
        port: u16,
        #[arg(long)]
        name_server_port: u16,
        #[arg(long)]
        broker_port: u16,
        /// The pods' DNS domain: `<headless service>.<namespace>.svc`.
        #[arg(long)]
        domain: String,
        /// With TLS: the CA the proxy's and name server's certificates are checked against (for
        /// POD_NAME.DOMAIN).
        #[arg(long)]
        ca: Option<PathBuf>,
        #[arg(long, default_value_t = 4)]
        timeout_seconds: u64,
    },
}

/// The broker on this pod and how to log in to it.
#[derive(Debug, clap::Args)]
struct Broker {
    /// Its client port on 127.0.0.1.
    #[arg(long)]
    port: u16,
    /// The pods' DNS domain: `<headless service>.<namespace>.svc`.
    #[arg(long)]
    domain: String,
    /// With TLS: the CA the broker's certificate is checked against (for POD_NAME.DOMAIN).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Environment variables holding the login.
    #[arg(long)]
    user_env: String,
    #[arg(long)]
    password_env: String,
    #[arg(long, default_value_t = 4)]
    timeout_seconds: u64,
}

/// What every probe reads of this pod: its name, and the login from the environment.
struct Pod {
    name: String,
    host: String,
    user: String,
    password: String,
    deadline: Instant,
}

impl Broker {
    fn pod(&self) -> Result<Pod, String> {
        let env = |name: &str| std::env::var(name).map_err(|_| format!("environment variable {name} is not set"));
        let name = env("POD_NAME")?;
        Ok(Pod {
            host: format!("{name}.{}", self.domain),
            name,
            user: env(&self.user_env)?,
            password: env(&self.password_env)?,
            deadline: Instant::now() + Duration::from_secs(self.timeout_seconds),
        })
    }

    /// The broker on 127.0.0.1, with TLS checked for the pod's own name where a CA is given.
    fn target<'a>(&self, pod: &'a Pod) -> Result<LoginTarget<'a>, String> {
        Ok(LoginTarget {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, self.port)),
            tls: self.ca.as_deref().map(|ca_file| Tls::trusting(ca_file, pod.host.clone())).transpose()?,
            user: &pod.user,
            password: &pod.password,
        })
    }
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Install { dest } => install(&dest),
        Command::Kafka(broker) => kafka(&broker),
        Command::Amqp { broker, vhost } => {
            broker.pod().and_then(|pod| probe_amqp(&broker.target(&pod)?, &vhost, pod.deadline))
        }
        Command::Mqtt(broker) => broker.pod().and_then(|pod| probe_mqtt(&broker.target(&pod)?, pod.deadline)),
        Command::Rocketmq { port, name_server_port, broker_port, domain, ca, timeout_seconds } => {
            rocketmq(port, name_server_port, broker_port, &domain, ca.as_deref(), timeout_seconds)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("not ready: {why}");
            ExitCode::FAILURE
        }
    }
}

fn kafka(broker: &Broker) -> Result<(), String> {
    let pod = broker.pod()?;
    let node_id = pod
        .name
        .rsplit_once('-')
        .and_then(|(_, ordinal)| ordinal.parse().ok())
        .ok_or_else(|| format!("POD_NAME {:?} does not end in a StatefulSet ordinal", pod.name))?;
    let me = kafka::Broker { node_id, host: pod.host.clone(), port: i32::from(broker.port) };
    probe_kafka(&broker.target(&pod)?, &me, pod.deadline)
}

fn rocketmq(
    port: u16,
    name_server_port: u16,
    broker_port: u16,
    domain: &str,
    ca: Option<&Path>,
    timeout_seconds: u64,
) -> Result<(), String> {
    let name = std::env::var("POD_NAME").map_err(|_| "environment variable POD_NAME is not set".to_owned())?;
    let host = format!("{name}.{domain}");
    let pod = RocketmqPod {
        proxy: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        name_server: SocketAddr::from((Ipv4Addr::LOCALHOST, name_server_port)),
        tls: ca.map(|ca_file| Tls::trusting(ca_file, host.clone())).transpose()?,
        broker_name: &name,
        broker_address: &format!("{host}:{broker_port}"),
    };
    probe_rocketmq(&pod, Instant::now() + Duration::from_secs(timeout_seconds))
}

/// Copies this executable to `dest` through a temporary name, so that a restarted init
/// container never leaves half a binary behind.
fn install(dest: &Path) -> Result<(), String> {
    let me = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let partial = dest.with_extension("partial");
    // A read-only leftover of an init container that died mid-way would refuse the copy.
    let _ = fs::remove_file(&partial);
    fs::copy(&me, &partial)
        .and_then(|_| fs::set_permissions(&partial, fs::Permissions::from_mode(0o555)))
        .and_then(|()| fs::rename(&partial, dest))
        .map_err(|e| format!("cannot install {} as {}: {e}", me.display(), dest.display()))
}
