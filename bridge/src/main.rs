//! The `oms-bridge` binary: parses the command line, loads and validates the role's config and
//! runs the role.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use oms_bridge_config as config;

/// OMS bridge data plane.
///
/// `worker` replicates one queue into another: it consumes the source with the source broker's
/// protocol (Kafka, NATS JetStream, AMQP 0.9.1, MQTT), writes each message to the target (natively
/// or through another cloud's gateway) and acknowledges the source only after the target confirmed.
///
/// `gateway` is the one mTLS port a cloud exposes to bridges of other clouds: it authenticates each
/// peer by its certificate and lets it publish to and consume from the local queues of its tenant.
#[derive(Debug, Parser)]
#[command(name = "oms-bridge", version)]
struct Cli {
    #[command(subcommand)]
    role: Role,
    #[command(flatten)]
    log: oms_telemetry::logging::LogArgs,
}

#[derive(Debug, Subcommand)]
enum Role {
    /// Replicate a source queue into a target queue (config: bridge, source, target, delivery).
    Worker {
        /// Worker config file (YAML), as the operator renders it into the bridge's ConfigMap.
        #[arg(long)]
        config: PathBuf,
        /// Validate the config, print a summary and exit.
        #[arg(long)]
        check: bool,
        /// Serve the admin endpoint here instead of the config's `admin.listen` (several
        /// processes on one host).
        #[arg(long)]
        admin_listen: Option<std::net::SocketAddr>,
    },
    /// Serve the mTLS gateway for bridges of other clouds (config: listen, tls, backends).
    Gateway {
        /// Gateway config file (YAML).
        #[arg(long)]
        config: PathBuf,
        /// Validate the config, print a summary and exit.
        #[arg(long)]
        check: bool,
        /// Serve the admin endpoint here instead of the config's `admin.listen`.
        #[arg(long)]
        admin_listen: Option<std::net::SocketAddr>,
        /// Serve the gateway here instead of the config's `listen`.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(error) = oms_telemetry::logging::init(&cli.log) {
        eprintln!("oms-bridge: {error}");
        return ExitCode::from(2);
    }
    match cli.role {
        Role::Worker { config, check, admin_listen } => {
            let mut config = match config::load_worker(&config) {
                Ok(config) => config,
                Err(error) => return invalid(&error),
            };
            config.admin_listen = admin_listen.unwrap_or(config.admin_listen);
            if check {
                println!(
                    "config ok: worker {}/{}: {:?} {} -> {:?} {}",
                    config.namespace,
                    config.name,
                    config.source.protocol,
                    config.source.queue,
                    config.target.protocol,
                    config.target.queue
                );
                return ExitCode::SUCCESS;
            }
            match run_worker(config).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!(message = "Worker failed.", error = format!("{error:#}"));
                    ExitCode::FAILURE
                }
            }
        }
        Role::Gateway { config, check, admin_listen, listen } => {
            let mut config = match config::load_gateway(&config) {
                Ok(config) => config,
                Err(error) => return invalid(&error),
            };
            config.admin_listen = admin_listen.unwrap_or(config.admin_listen);
            config.listen = listen.unwrap_or(config.listen);
            let summary = format!(
                "gateway on {} for {} backend(s), trust domain {}",
                config.listen,
                config.backends.len(),
                config.trust_domain
            );
            if check {
                println!("config ok: {summary}");
                return ExitCode::SUCCESS;
            }
            match run_gateway(config).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!(message = "Gateway failed.", error = format!("{error:#}"));
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn invalid(error: &config::ConfigError) -> ExitCode {
    eprintln!("oms-bridge: invalid config: {error}");
    ExitCode::from(2)
}

async fn run_worker(config: config::WorkerConfig) -> anyhow::Result<()> {
    let shutdown = oms_telemetry::shutdown::on_signal()?;
    let registry = prometheus::Registry::new();
    let labels = [
        ("bridge", config.name.clone()),
        ("namespace", config.namespace.clone()),
        ("source_driver", format!("{:?}", config.source.protocol).to_lowercase()),
        ("target_driver", format!("{:?}", config.target.protocol).to_lowercase()),
    ];
    let metrics = oms_bridge::metrics::BridgeMetrics::register(&registry, &labels)?;
    let readiness = oms_telemetry::admin::Readiness::default();
    let admin = oms_telemetry::admin::AdminServer::bind(config.admin_listen, registry, readiness.clone()).await?;
    tracing::info!(message = "Worker started.", admin = %admin.local_addr()?);
    // The admin server outlives the drain after SIGTERM, so that what the worker forwards while
    // draining is still scraped (and counted) before the process ends.
    let admin_stop = tokio_util::sync::CancellationToken::new();
    let serving = tokio::spawn(admin.serve(admin_stop.clone()));
    // Ready only while both ends are connected; the worker flips it.
    oms_bridge::worker::run(&config, &metrics, &readiness, &shutdown).await;
    shutdown.cancel();
    admin_stop.cancel();
    serving.await??;
    Ok(())
}

async fn run_gateway(config: config::GatewayConfig) -> anyhow::Result<()> {
    let shutdown = oms_telemetry::shutdown::on_signal()?;
    let registry = prometheus::Registry::new();
    let metrics = oms_bridge::metrics::GatewayMetrics::register(&registry)?;
    let readiness = oms_telemetry::admin::Readiness::default();
    let admin = oms_telemetry::admin::AdminServer::bind(config.admin_listen, registry, readiness.clone()).await?;
    tracing::info!(message = "Gateway started.", admin = %admin.local_addr()?);
    let serving = tokio::spawn(admin.serve(shutdown.clone()));
    // `run` says ready once the TLS material is loaded and the port is bound.
    let result = oms_bridge::gateway::server::run(config, metrics, &readiness, shutdown.clone()).await;
    shutdown.cancel();
    serving.await??;
    result
}
