//! The `oms-operator` binary: wires settings, the Kubernetes client, the admin server and the
//! shutdown signal; the work lives in the library.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use kube::Client;
use oms_operator::cli::Args;
use oms_operator::metrics::Metrics;
use oms_operator::preflight;
use oms_telemetry::admin::{AdminServer, Readiness};
use oms_telemetry::{logging, shutdown};

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(error) = logging::init(&args.log) {
        eprintln!("oms-operator: {error}");
        return ExitCode::from(2);
    }
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Logged once, through tracing, so that JSON log pipelines see it as one record.
            tracing::error!(message = "Operator stopped.", error = format!("{error:#}"));
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let shutdown = shutdown::on_signal().context("cannot install signal handlers")?;
    let client = connect(&args).await?;
    preflight::check_crds_installed(&client).await?;

    let registry = prometheus::Registry::new();
    let _metrics = Metrics::register(&registry).context("cannot register metrics")?;
    let readiness = Readiness::default();
    let admin = AdminServer::bind(args.admin_addr, registry, readiness.clone()).await?;
    tracing::info!(
        message = "Operator started.",
        admin = %admin.local_addr()?,
        namespaces = ?args.namespaces,
        leader_election = args.leader_election,
    );
    readiness.set(true);
    admin.serve(shutdown).await?;
    tracing::info!(message = "Operator stopped cleanly.");
    Ok(())
}

async fn connect(args: &Args) -> anyhow::Result<Client> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer().await.context(
            "no Kubernetes configuration found: pass --kubeconfig, set KUBECONFIG, or run in a pod with a service account",
        )?,
    };
    Client::try_from(config).context("cannot build the Kubernetes client")
}
