//! The `oms-operator` binary: wires settings, the Kubernetes client, the admin server and the
//! shutdown signal; the work lives in the library.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use kube::Client;
use std::sync::Arc;
use std::time::Duration;

use kube::runtime::events::{Recorder, Reporter};
use oms_lease::{Candidate, Timing};
use oms_operator::admin::AdminCache;
use oms_operator::cli::Args;
use oms_operator::context::Context;
use oms_operator::drivers::DefaultImages;
use oms_operator::metrics::Metrics;
use oms_operator::preflight;
use oms_operator::{access_point, bridge, gateway, queue};
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
    let metrics = Metrics::register(&registry).context("cannot register metrics")?;
    let readiness = Readiness::default();
    let admin = AdminServer::bind(args.admin_addr, registry, readiness.clone()).await?;
    tracing::info!(
        message = "Operator started.",
        admin = %admin.local_addr()?,
        namespaces = ?args.namespaces,
        leader_election = args.leader_election,
    );
    let reporter = Reporter {
        controller: "oms-operator".into(),
        // The pod name in a cluster (set by the chart); the host name elsewhere.
        instance: std::env::var("POD_NAME").or_else(|_| std::env::var("HOSTNAME")).ok(),
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder: Recorder::new(client, reporter),
        metrics,
        images: DefaultImages {
            kafka: args.broker_images.kafka_image.clone(),
            nats: args.broker_images.nats_image.clone(),
            rabbitmq: args.broker_images.rabbitmq_image.clone(),
            mqtt: args.broker_images.mqtt_image.clone(),
            rocketmq: args.broker_images.rocketmq_image.clone(),
            probe: args.probe_image.clone(),
        },
        bridge_image: args.bridge_image.clone(),
        image_pull_secrets: args.image_pull_secrets.clone(),
        operator_namespace: own_namespace(),
        bridge_observe_interval: Duration::from_secs(args.bridge_observe_interval_seconds),
        bridge_admin_url: args.bridge_admin_url.clone(),
        probe_interval: Duration::from_secs(args.probe_interval_seconds),
        drift_interval: Duration::from_secs(args.drift_interval_seconds),
        admins: AdminCache::default(),
    });
    // The admin server answers while this replica waits to lead (it is alive and healthy).
    let admin_task = tokio::spawn(admin.serve(shutdown.clone()));
    readiness.set(true);
    let mut leadership = None;
    if args.leader_election {
        let candidate = Candidate::new(
            ctx.client.clone(),
            &lease_namespace(&args),
            LEASE_NAME,
            identity(),
            Timing::new(Duration::from_secs(args.lease_duration_seconds)),
        );
        if !candidate.acquire(&shutdown).await {
            admin_task.await??;
            return Ok(());
        }
        let token = shutdown.clone();
        leadership = Some(tokio::spawn(async move {
            let lost = candidate.hold(token).await;
            (candidate, lost)
        }));
    }
    let pki = Arc::new(load_pki(&args, &ctx).await?);
    // One watch over all namespaces, or one per watched namespace.
    let scopes: Vec<Option<String>> =
        if args.namespaces.is_empty() { vec![None] } else { args.namespaces.iter().cloned().map(Some).collect() };
    let access_points: Vec<_> = scopes
        .iter()
        .cloned()
        .map(|scope| access_point::run(ctx.clone(), pki.clone(), scope, shutdown.clone()))
        .collect();
    let queues: Vec<_> = scopes.iter().cloned().map(|scope| queue::run(ctx.clone(), scope, shutdown.clone())).collect();
    let bridges: Vec<_> =
        scopes.iter().cloned().map(|scope| bridge::run(ctx.clone(), pki.clone(), scope, shutdown.clone())).collect();
    let gateways: Vec<_> =
        scopes.into_iter().map(|scope| gateway::run(ctx.clone(), pki.clone(), scope, shutdown.clone())).collect();
    let controllers = futures::future::join4(
        futures::future::join_all(access_points),
        futures::future::join_all(queues),
        futures::future::join_all(bridges),
        futures::future::join_all(gateways),
    );
    // After SIGTERM, reconciles in flight get a few seconds to finish; one stuck on an unreachable
    // broker must not hold the pod past its grace period (every reconcile is safe to repeat).
    let grace = async {
        shutdown.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        _ = controllers => {}
        () = grace => tracing::warn!(message = "Reconciles still running after the shutdown grace; stopping anyway.", grace = ?SHUTDOWN_GRACE),
    }
    admin_task.await??;
    if let Some(leadership) = leadership {
        let (candidate, lost) = leadership.await?;
        if lost {
            anyhow::bail!("lost the leader-election Lease; exiting so that this replica starts again as a candidate");
        }
        // Every controller has stopped: the next leader may start now.
        candidate.release().await;
    }
    tracing::info!(message = "Operator stopped cleanly.");
    Ok(())
}

/// The cluster CA from its Secret (created on first start), the trust bundle and the CA's expiry
/// metric, or the cert-manager issuer that signs instead; and the lifetimes and peers of what it
/// issues.
// The CA's expiry in seconds since the epoch fits an f64 exactly.
#[allow(clippy::cast_precision_loss)]
async fn load_pki(args: &Args, ctx: &oms_operator::context::Context) -> anyhow::Result<oms_operator::pki::Pki> {
    let client = &ctx.client;
    let namespace = args.pki_namespace.clone().unwrap_or_else(own_namespace);
    let peers = match &args.peer_trust_bundle {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --peer-trust-bundle {}", path.display()))?,
        None => String::new(),
    };
    let lifetime = Duration::from_secs(args.certificate_lifetime_seconds);
    let mut pki = match (args.pki_issuer_kind, &args.pki_issuer_name) {
        (Some(kind), Some(name)) => {
            let issuer = oms_operator::pki::IssuerRef { kind, name: name.clone() };
            tracing::info!(message = "cert-manager signs the certificates.", %issuer);
            let signer = oms_operator::pki::Signer::CertManager(issuer);
            oms_operator::pki::Pki::new(signer, &namespace, &args.trust_domain, &peers, lifetime)
        }
        _ => oms_operator::pki::Pki::load_or_create(client, &namespace, &args.trust_domain, &peers, lifetime).await?,
    };
    pki.broker_lifetime = Duration::from_secs(args.broker_certificate_lifetime_seconds);
    pki.peer_trust_domains.clone_from(&args.peer_trust_domains);
    if let Some(ca_not_after) = pki.ca_not_after()? {
        ctx.metrics
            .certificate_expiry_timestamp_seconds
            .with_label_values(&[pki.namespace.as_str(), oms_operator::pki::CA_SECRET])
            .set(ca_not_after.unix_timestamp() as f64);
    }
    Ok(pki)
}

/// How long reconciles in flight may finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Name of the Lease the replicas elect their leader with.
const LEASE_NAME: &str = "oms-operator-leader";

/// Where the Lease lives: the flag, else the operator's own namespace.
fn lease_namespace(args: &Args) -> String {
    args.leader_election_namespace.clone().unwrap_or_else(own_namespace)
}

/// The pod's namespace, else the in-cluster service account's, else `default`.
fn own_namespace() -> String {
    std::env::var("POD_NAMESPACE")
        .ok()
        .or_else(|| std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace").ok())
        .map_or_else(|| "default".to_owned(), |ns| ns.trim().to_owned())
}

/// This replica's identity in the Lease: the pod name, else host name and process id.
fn identity() -> String {
    std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    })
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
