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
use oms_probe::kafka::Broker;
use oms_probe::net::Tls;
use oms_probe::{KafkaTarget, probe_kafka};

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
    Kafka {
        #[arg(long, default_value_t = 9092)]
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
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Install { dest } => install(&dest),
        Command::Kafka { port, domain, ca, user_env, password_env, timeout_seconds } => {
            let deadline = Instant::now() + Duration::from_secs(timeout_seconds);
            kafka(port, &domain, ca.as_deref(), &user_env, &password_env, deadline)
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

fn kafka(
    port: u16,
    domain: &str,
    ca: Option<&Path>,
    user_env: &str,
    password_env: &str,
    deadline: Instant,
) -> Result<(), String> {
    let env = |name: &str| std::env::var(name).map_err(|_| format!("environment variable {name} is not set"));
    let pod = env("POD_NAME")?;
    let node_id = pod
        .rsplit_once('-')
        .and_then(|(_, ordinal)| ordinal.parse().ok())
        .ok_or_else(|| format!("POD_NAME {pod:?} does not end in a StatefulSet ordinal"))?;
    let host = format!("{pod}.{domain}");
    let (user, password) = (env(user_env)?, env(password_env)?);
    let target = KafkaTarget {
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        tls: ca.map(|ca_file| Tls { ca_file, server_name: host.clone() }),
        me: Broker { node_id, host, port: i32::from(port) },
        user: &user,
        password: &password,
    };
    probe_kafka(&target, deadline)
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
